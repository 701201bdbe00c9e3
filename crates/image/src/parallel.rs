//! Running independent layer jobs (unpack, scan) on their own threads.
//!
//! Each layer of an image unpacks into its own directory, so layers are independent;
//! most of an unpack's time is the kernel creating files and inflating data, which
//! several threads do side by side. Jobs start in order; once one fails, jobs not yet
//! started are skipped (their slot is `None`), while jobs already running finish, so
//! the caller learns about everything that was created and can remove it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// How many jobs run at once: file creation waits on the filesystem journal as much as
/// on the CPU, so a little more than one job per core keeps the cores busy.
pub fn workers(jobs: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    jobs.min(cores + 1).max(1)
}

/// Runs `f` on every item, [`workers`] at a time, and returns the results in item order.
/// A single job runs on the calling thread.
pub fn run<T, O, E, F>(items: Vec<T>, f: F) -> Vec<Option<Result<O, E>>>
where
    T: Send,
    O: Send,
    E: Send,
    F: Fn(T) -> Result<O, E> + Sync,
{
    let n = items.len();
    if n <= 1 {
        return items.into_iter().map(|t| Some(f(t))).collect();
    }
    let queue = Mutex::new(items.into_iter().enumerate());
    let failed = AtomicBool::new(false);
    let mut out: Vec<Option<Result<O, E>>> = (0..n).map(|_| None).collect();
    let done = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for _ in 0..workers(n) {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                // A poisoned lock means another worker panicked; scope re-raises that.
                let next = match queue.lock() {
                    Ok(mut q) => q.next(),
                    Err(_) => return,
                };
                let Some((i, item)) = next else { return };
                let r = f(item);
                if r.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                if let Ok(mut d) = done.lock() {
                    d.push((i, r));
                }
            });
        }
    });
    for (i, r) in done.into_inner().unwrap_or_else(|e| e.into_inner()) {
        out[i] = Some(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_in_order_and_skips_after_failure() {
        let ok = run((0..20).collect(), |i: u32| Ok::<_, ()>(i * 2));
        assert_eq!(
            ok.into_iter()
                .map(|r| r.unwrap().unwrap())
                .collect::<Vec<_>>(),
            (0..20).map(|i| i * 2).collect::<Vec<_>>()
        );
        // Every job fails: each worker stops after its first, so the rest are skipped.
        let r = run((0..50).collect(), Err::<(), u32>);
        let ran = r.iter().filter(|x| x.is_some()).count();
        assert!(ran >= 1 && ran <= workers(50), "{ran} jobs ran");
        assert!(r.iter().flatten().all(|x| x.is_err()));
        let one = run(vec![7], |i: u32| Err::<u32, _>(i));
        assert_eq!(one, vec![Some(Err(7))]);
    }
}
