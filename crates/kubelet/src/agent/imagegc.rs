//! Image garbage collection by disk thresholds, as the kubelet's image GC manager does it.
//!
//! Every `--image-gc-period` (5 min) the manager looks at the image filesystem (the
//! filesystem of the image store): when its usage is at or above
//! `--image-gc-high-threshold` percent it deletes images no container record uses (the
//! least recently used first, none first seen less than `--minimum-image-ttl-duration`
//! ago) until usage would be below `--image-gc-low-threshold`; when it cannot free that
//! much it emits a `FreeDiskSpaceFailed` warning event on the node. Deleting an image
//! removes its names and then prunes the blobs and layers nothing else uses.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_serve::CancellationToken;

use super::{lock, Shared};

/// The image GC policy (`skiff agent`'s flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Percent of the image filesystem in use at which collection starts (100: never).
    pub high: u8,
    /// Percent collection frees down to.
    pub low: u8,
    /// Images first seen more recently than this are kept.
    pub min_age: Duration,
    pub period: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high: 85,
            low: 80,
            min_age: Duration::from_secs(120),
            period: Duration::from_secs(300),
        }
    }
}

impl ImageGcPolicy {
    /// Checks the thresholds as the kubelet validates them.
    pub fn validate(&self) -> Result<(), String> {
        if self.high > 100 {
            return Err(format!(
                "--image-gc-high-threshold {}: a percentage is at most 100",
                self.high
            ));
        }
        if self.low > 100 {
            return Err(format!(
                "--image-gc-low-threshold {}: a percentage is at most 100",
                self.low
            ));
        }
        if self.low >= self.high {
            return Err(format!(
                "--image-gc-low-threshold ({}) must be less than --image-gc-high-threshold ({})",
                self.low, self.high
            ));
        }
        Ok(())
    }
}

/// When an image was first seen and last used by a container (the kubelet's image
/// records; kept in memory, so an agent restart starts them again).
#[derive(Debug, Default)]
pub struct ImageRecords {
    seen: std::sync::Mutex<HashMap<String, (Instant, Instant)>>,
}

impl ImageRecords {
    /// Marks the image (its store digest) used now.
    pub fn used(&self, id: &str) {
        let now = Instant::now();
        lock(&self.seen)
            .entry(id.to_string())
            .and_modify(|e| e.1 = now)
            .or_insert((now, now));
    }
}

/// One image as the collector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// The store's digest (what container records name).
    pub id: String,
    pub size: i64,
    pub first_detected: Instant,
    pub last_used: Instant,
    pub in_use: bool,
}

/// The images to delete to free `to_free` bytes: unused ones, least recently used first
/// (then the earliest detected), none younger than `min_age`; as many as it takes, or
/// every eligible one when that is not enough.
pub fn victims(
    images: &[ImageInfo],
    to_free: i64,
    now: Instant,
    min_age: Duration,
) -> Vec<&ImageInfo> {
    let mut eligible: Vec<&ImageInfo> = images
        .iter()
        .filter(|i| !i.in_use && now.saturating_duration_since(i.first_detected) >= min_age)
        .collect();
    eligible.sort_by_key(|i| (i.last_used, i.first_detected));
    let mut freed = 0i64;
    let mut out = Vec::new();
    for i in eligible {
        if freed >= to_free {
            break;
        }
        freed = freed.saturating_add(i.size);
        out.push(i);
    }
    out
}

/// What one collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Freed {
    pub freed: i64,
    pub deleted: Vec<String>,
}

/// An image handed out for a container this recently counts as in use: the container
/// may not have its record yet (its rootfs is being unpacked).
const IN_FLIGHT: Duration = Duration::from_secs(10);

/// Deletes unused images (at least `min_age` old) until `to_free` bytes are freed.
/// Blocking: the store's locks and files.
pub fn free(sh: &Shared, to_free: i64, min_age: Duration) -> Freed {
    let store = &sh.images.store;
    let now = Instant::now();
    let recorded: HashSet<String> = sh.rt.records().into_iter().map(|r| r.image_id).collect();
    let in_flight: HashSet<String> = lock(&sh.images.records.seen)
        .iter()
        .filter(|(_, (_, last))| now.saturating_duration_since(*last) < IN_FLIGHT)
        .map(|(id, _)| id.clone())
        .collect();
    let by_digest = store.names_by_digest().unwrap_or_default();
    let mut infos = Vec::new();
    {
        let mut seen = lock(&sh.images.records.seen);
        seen.retain(|id, _| by_digest.keys().any(|d| d.to_string() == *id));
        for d in by_digest.keys() {
            let id = d.to_string();
            // First seen here (not pulled for a container): not in flight.
            let never = now.checked_sub(IN_FLIGHT).unwrap_or(now);
            let e = seen.entry(id.clone()).or_insert((now, never));
            if recorded.contains(&id) {
                e.1 = now;
            }
            let used = recorded.contains(&id) || in_flight.contains(&id);
            let size = store.image(d).map(|i| i.size() as i64).unwrap_or(0);
            infos.push(ImageInfo {
                id,
                size,
                first_detected: e.0,
                last_used: e.1,
                in_use: used,
            });
        }
    }
    let chosen: Vec<ImageInfo> = victims(&infos, to_free, now, min_age)
        .into_iter()
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Freed::default();
    }
    // No pull may write blobs while prune runs: it would see them as unreferenced.
    let _no_pulls = sh.images.gc_lock.blocking_write();
    let mut out = Freed::default();
    for i in &chosen {
        match store.untag(&i.id) {
            Ok(names) => {
                tracing::info!(image = %i.id, ?names, size = i.size, "image garbage collection: removing an unused image");
                out.freed += i.size;
                out.deleted.push(i.id.clone());
                lock(&sh.images.records.seen).remove(&i.id);
            }
            Err(e) => {
                tracing::warn!(image = %i.id, error = %skiff_serve::error_chain(&e), "removing an unused image")
            }
        }
    }
    if let Err(e) = store.prune() {
        tracing::warn!(error = %skiff_serve::error_chain(&e), "pruning the image store");
    }
    out
}

/// The image filesystem's (capacity, available) bytes.
fn image_fs(sh: &Shared) -> Option<(i64, i64)> {
    let s = nix::sys::statvfs::statvfs(&sh.cfg.data_dir.join("images")).ok()?;
    let f = s.fragment_size() as i64;
    Some((s.blocks() as i64 * f, s.blocks_available() as i64 * f))
}

/// The bytes to free for usage to drop below `low`, when usage is at or above `high`
/// (the kubelet's arithmetic: usage = 100 − available·100/capacity).
pub fn amount_to_free(capacity: i64, available: i64, high: u8, low: u8) -> Option<i64> {
    if capacity <= 0 || high >= 100 {
        return None;
    }
    let usage = 100 - available.saturating_mul(100) / capacity;
    (usage >= high as i64).then(|| capacity.saturating_mul(100 - low as i64) / 100 - available)
}

/// One collection pass by the policy; the error message when it could not free enough.
pub fn collect(sh: &Shared) -> Result<Freed, String> {
    let p = sh.cfg.image_gc;
    let Some((capacity, available)) = image_fs(sh) else {
        return Ok(Freed::default());
    };
    let Some(to_free) = amount_to_free(capacity, available, p.high, p.low) else {
        return Ok(Freed::default());
    };
    tracing::info!(
        to_free,
        "image filesystem usage is over the high threshold: freeing images"
    );
    let f = free(sh, to_free, p.min_age);
    if f.freed < to_free {
        return Err(format!(
            "Failed to garbage collect required amount of images. Attempted to free {to_free} bytes, but only found {} bytes eligible to free.",
            f.freed
        ));
    }
    Ok(f)
}

/// Runs image GC every period until `stop` (never with a high threshold of 100).
pub async fn run(sh: Arc<Shared>, stop: CancellationToken) {
    let p = sh.cfg.image_gc;
    if p.high >= 100 {
        return;
    }
    let mut failing = false;
    loop {
        let s = sh.clone();
        match tokio::task::spawn_blocking(move || collect(&s)).await {
            Ok(Err(msg)) => {
                if !failing {
                    tracing::warn!("{msg}");
                }
                failing = true;
                // Events of the same message are aggregated (counted) by the recorder.
                super::eviction::node_event(&sh, true, "FreeDiskSpaceFailed", msg);
            }
            Ok(Ok(_)) => failing = false,
            Err(_) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(p.period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn victims_are_unused_old_enough_and_least_recently_used_first() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let img = |id: &str, size, first, last, in_use| ImageInfo {
            id: id.into(),
            size,
            first_detected: at(first),
            last_used: at(last),
            in_use,
        };
        let images = vec![
            img("used", 100, 0, 500, true),
            img("recent", 100, 0, 400, false),
            img("old", 100, 0, 100, false),
            img("older", 100, 10, 50, false),
            img("new", 100, 590, 590, false),
        ];
        let now = at(600);
        let ids = |v: Vec<&ImageInfo>| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        let min = Duration::from_secs(120);
        assert_eq!(ids(victims(&images, 150, now, min)), ["older", "old"]);
        assert_eq!(ids(victims(&images, 1, now, min)), ["older"]);
        assert!(victims(&images, 0, now, min).is_empty());
        // Not enough: everything eligible, never the used or the too new one.
        assert_eq!(
            ids(victims(&images, 10_000, now, min)),
            ["older", "old", "recent"]
        );
        // A TTL of 0 lets the just-pulled one go too.
        assert_eq!(
            ids(victims(&images, 10_000, now, Duration::ZERO)),
            ["older", "old", "recent", "new"]
        );
    }

    #[test]
    fn thresholds_as_the_kubelet_computes_them() {
        // 90 % used, high 85, low 80: free down to 80 % = 10 % of the disk.
        assert_eq!(amount_to_free(1000, 100, 85, 80), Some(100));
        assert_eq!(amount_to_free(1000, 200, 85, 80), None);
        assert_eq!(amount_to_free(1000, 150, 85, 80), Some(50));
        // high 100 never collects; high 1, low 0 collects everything it can.
        assert_eq!(amount_to_free(1000, 0, 100, 80), None);
        assert_eq!(amount_to_free(1000, 600, 1, 0), Some(400));
        let ok = ImageGcPolicy::default();
        assert!(ok.validate().is_ok());
        let bad = ImageGcPolicy { low: 90, ..ok };
        assert!(bad.validate().unwrap_err().contains("must be less than"));
        let bad = ImageGcPolicy { high: 101, ..ok };
        assert!(bad.validate().unwrap_err().contains("at most 100"));
    }

    #[test]
    fn records_track_first_and_last_use() {
        let r = ImageRecords::default();
        r.used("sha256:a");
        let (first, last) = lock(&r.seen)["sha256:a"];
        std::thread::sleep(Duration::from_millis(5));
        r.used("sha256:a");
        let (first2, last2) = lock(&r.seen)["sha256:a"];
        assert_eq!(first, first2);
        assert!(last2 > last);
    }
}
