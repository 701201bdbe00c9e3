//! Which repositories of which registries a blob is known to be in, so a push can
//! cross-mount a blob from a sibling repository instead of uploading it again (docker
//! keeps the same "distribution metadata"). It is a hint: a wrong entry only costs a
//! mount request that the registry answers with an upload session.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::digest::Digest;
use crate::store::ImageStore;

fn path(store: &ImageStore) -> PathBuf {
    store
        .content()
        .root()
        .parent()
        .map(|p| p.join("distribution-sources.json"))
        .unwrap_or_else(|| store.content().root().join("distribution-sources.json"))
}

type Map = BTreeMap<String, BTreeSet<String>>;

fn read(store: &ImageStore) -> Map {
    std::fs::read(path(store))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Repositories (`registry/repo`) known to hold `digest`.
pub(crate) fn get(store: &ImageStore, digest: &Digest) -> Vec<String> {
    read(store)
        .remove(&digest.to_string())
        .map(|s| s.into_iter().collect())
        .unwrap_or_default()
}

/// Records that `registry/repo` holds these blobs. Best effort: losing a record costs
/// only a mount opportunity.
pub(crate) fn record(store: &ImageStore, registry: &str, repo: &str, digests: &[Digest]) {
    let mut m = read(store);
    let at = format!("{registry}/{repo}");
    for d in digests {
        let set = m.entry(d.to_string()).or_default();
        set.insert(at.clone());
        // Bounded: a blob in hundreds of repositories needs only a few mount sources.
        while set.len() > 8 {
            let first = set.iter().next().cloned();
            if let Some(f) = first {
                set.remove(&f);
            }
        }
    }
    if let Ok(bytes) = serde_json::to_vec(&m) {
        let _ = crate::reference::write_atomic(&path(store), &bytes);
    }
}
