//! Offline garbage collection: removes blobs that no manifest of any repository
//! references, and the repository links to them.
//!
//! Run it while the registry is stopped or read-only: a push in progress has uploaded
//! blobs that no manifest references yet, and they would be removed.

use std::path::Path;

use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
use crate::manifest::{self, Kind};
use crate::storage::{blob_path, read_dir_names};

/// What `gc` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_kept: usize,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    pub links_removed: usize,
}

/// Removes every blob no manifest in any repository references (the manifests
/// themselves, their configs and layers). Run it while the registry is stopped or
/// read-only: a push in progress has blobs that no manifest references yet.
pub fn gc(root: &Path) -> Result<GcReport> {
    use std::collections::HashSet;
    let mut live: HashSet<Digest> = HashSet::new();
    let mut repos = Vec::new();
    let repos_root = root.join("repositories");
    let mut stack = vec![repos_root];
    while let Some(dir) = stack.pop() {
        for name in read_dir_names(&dir)? {
            if name.starts_with('_') {
                continue;
            }
            let p = dir.join(&name);
            if p.join("_manifests").is_dir() || p.join("_layers").is_dir() {
                repos.push(p.clone());
            }
            stack.push(p);
        }
    }
    for repo in &repos {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let revs = repo.join("_manifests/revisions").join(alg.as_str());
            for hex in read_dir_names(&revs)? {
                let Ok(d) = format!("{}:{hex}", alg.as_str()).parse::<Digest>() else {
                    continue;
                };
                let body = match std::fs::read(blob_path(root, &d)) {
                    Ok(b) => b,
                    Err(_) => continue,
                };
                let media_type = std::fs::read_to_string(revs.join(&hex)).unwrap_or_default();
                if manifest::kind_of(&media_type) == Some(Kind::Image) || media_type.is_empty() {
                    live.extend(manifest::referenced_blobs(&body));
                }
                live.insert(d);
            }
        }
    }
    let mut report = GcReport::default();
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        let base = root.join("blobs").join(alg.as_str());
        for prefix in read_dir_names(&base)? {
            for hex in read_dir_names(&base.join(&prefix))? {
                let p = base.join(&prefix).join(&hex);
                let keep = format!("{}:{hex}", alg.as_str())
                    .parse::<Digest>()
                    .map(|d| live.contains(&d))
                    .unwrap_or(false);
                if keep {
                    report.blobs_kept += 1;
                    continue;
                }
                let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(&p).map_err(Error::io("remove", &p))?;
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }
    }
    // Links to removed blobs would make HEAD answer 200 for content we no longer have.
    for repo in &repos {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = repo.join("_layers").join(alg.as_str());
            for hex in read_dir_names(&dir)? {
                let Ok(d) = format!("{}:{hex}", alg.as_str()).parse::<Digest>() else {
                    continue;
                };
                if !live.contains(&d) {
                    let p = dir.join(&hex);
                    std::fs::remove_file(&p).map_err(Error::io("remove", &p))?;
                    report.links_removed += 1;
                }
            }
        }
    }
    Ok(report)
}
