//! The work queue of one controller, in the shape of client-go's rate-limited delaying
//! queue: keys, not objects; a key added many times before a worker takes it is handed
//! out once; a key being reconciled is never handed to a second worker (an add meanwhile
//! marks it dirty and it is handed out again after [`Queue::done`]); failed keys come
//! back after a per-key exponential backoff (5 ms doubling to 1000 s) until
//! [`Queue::forget`]; [`Queue::add_after`] delays a key, keeping the earliest time asked.
//!
//! All delayed keys share one timer task, so ten thousand waiting keys cost ten thousand
//! map entries, not ten thousand timers.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1000);

#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Wakes workers waiting for a key.
    ready: Notify,
    /// Wakes the timer when an earlier deadline arrives or on shutdown.
    timer: Notify,
}

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
    waiting: BTreeMap<(Instant, u64), String>,
    deadline_of: HashMap<String, (Instant, u64)>,
    seq: u64,
    shut_down: bool,
    timer_running: bool,
}

impl Default for Queue {
    fn default() -> Self {
        Self::new()
    }
}

impl Queue {
    pub fn new() -> Queue {
        Queue {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                ready: Notify::new(),
                timer: Notify::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `key` now (a no-op if it already waits to be handed out).
    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.state();
        if s.shut_down || s.dirty.contains(&key) {
            return;
        }
        s.dirty.insert(key.clone());
        if s.processing.contains(&key) {
            return;
        }
        s.queue.push_back(key);
        drop(s);
        self.inner.ready.notify_one();
    }

    /// Queues `key` once `delay` has passed (the earlier time wins if it already waits).
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let key = key.into();
        let at = Instant::now() + delay;
        let mut s = self.state();
        if s.shut_down {
            return;
        }
        if let Some(&(t, seq)) = s.deadline_of.get(&key) {
            if t <= at {
                return;
            }
            s.waiting.remove(&(t, seq));
        }
        s.seq += 1;
        let slot = (at, s.seq);
        s.waiting.insert(slot, key.clone());
        s.deadline_of.insert(key, slot);
        let first = s.waiting.keys().next() == Some(&slot);
        let start_timer = !s.timer_running;
        s.timer_running = true;
        drop(s);
        if start_timer {
            tokio::spawn(timer(Arc::downgrade(&self.inner)));
        } else if first {
            self.inner.timer.notify_one();
        }
    }

    /// Queues `key` after its backoff, which doubles with each call until [`Queue::forget`].
    pub fn add_rate_limited(&self, key: impl Into<String>) {
        let key = key.into();
        let n = {
            let mut s = self.state();
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        self.add_after(key, backoff(n));
    }

    /// Clears `key`'s backoff (it was reconciled successfully).
    pub fn forget(&self, key: &str) {
        self.state().failures.remove(key);
    }

    /// How many times `key` failed since its last success.
    pub fn failures(&self, key: &str) -> u32 {
        self.state().failures.get(key).copied().unwrap_or(0)
    }

    /// The next key to reconcile; None once the queue is shut down.
    pub async fn next(&self) -> Option<String> {
        loop {
            let notified = self.inner.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.state();
                if s.shut_down {
                    return None;
                }
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` reconciled; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &str) {
        let mut s = self.state();
        s.processing.remove(key);
        if s.dirty.contains(key) && !s.shut_down {
            s.queue.push_back(key.to_string());
            drop(s);
            self.inner.ready.notify_one();
        }
    }

    /// Keys waiting to be handed out now.
    pub fn len(&self) -> usize {
        self.state().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out keys: every [`Queue::next`] returns None.
    pub fn shut_down(&self) {
        self.state().shut_down = true;
        self.inner.ready.notify_waiters();
        self.inner.timer.notify_one();
    }
}

fn backoff(failures: u32) -> Duration {
    BASE_DELAY
        .checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY)
}

/// Moves delayed keys to the queue when their time comes; ends with the queue.
async fn timer(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let q = Queue { inner: strong };
        let notified = q.inner.timer.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = {
            let mut s = q.state();
            if s.shut_down {
                s.timer_running = false;
                return;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some((&slot, _)) = s.waiting.iter().next() {
                if slot.0 > now {
                    break;
                }
                if let Some(k) = s.waiting.remove(&slot) {
                    s.deadline_of.remove(&k);
                    due.push(k);
                }
            }
            let next = s.waiting.keys().next().map(|(t, _)| *t);
            if next.is_none() && due.is_empty() {
                s.timer_running = false;
                return;
            }
            drop(s);
            for k in due {
                q.add(k);
            }
            next
        };
        let Some(next) = next else { continue };
        // Holding the queue while asleep is fine: the timer ends on shutdown or when no
        // key waits.
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = &mut notified => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_handed_out_once_and_never_to_two_workers() {
        let q = Queue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.next().await.unwrap();
        assert_eq!(a, "a");
        // Added while processing: held back until done.
        q.add("a");
        assert_eq!(q.next().await.unwrap(), "b");
        assert!(q.is_empty());
        q.done("a");
        assert_eq!(q.next().await.unwrap(), "a");
        q.done("a");
        q.done("b");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_keys_keep_the_earliest_time() {
        let q = Queue::new();
        q.add_after("x", Duration::from_secs(10));
        q.add_after("x", Duration::from_secs(2));
        q.add_after("y", Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(q.next().await.unwrap(), "x");
        assert_eq!(start.elapsed().as_secs(), 2);
        assert_eq!(q.next().await.unwrap(), "y");
        assert_eq!(start.elapsed().as_secs(), 5);
        q.done("x");
        q.done("y");
        // The 10 s entry was replaced, not kept: nothing more comes.
        let more = tokio::time::timeout(Duration::from_secs(30), q.next()).await;
        assert!(more.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_until_forgotten() {
        assert_eq!(backoff(0), Duration::from_millis(5));
        assert_eq!(backoff(3), Duration::from_millis(40));
        assert_eq!(backoff(40), MAX_DELAY);
        let q = Queue::new();
        for _ in 0..3 {
            q.add_rate_limited("k");
            let k = q.next().await.unwrap();
            q.done(&k);
        }
        assert_eq!(q.failures("k"), 3);
        q.forget("k");
        assert_eq!(q.failures("k"), 0);
    }

    #[tokio::test]
    async fn shut_down_releases_waiting_workers() {
        let q = Queue::new();
        let w = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(w.await.unwrap(), None);
    }
}
