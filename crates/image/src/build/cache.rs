//! The build cache (one small JSON file per chain digest under
//! `<data>/images/build-cache/`, naming the layer that step produced) and the final
//! config and manifest. Cache entries whose blob was pruned are ignored.

use std::fs;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::{Builder, Built, LayerDesc, State, StepError};
use crate::content::ContentStore;
use crate::digest::Digest;
use crate::manifest;

impl Builder<'_> {
    pub(super) fn cache_path(&self, key: &Digest) -> PathBuf {
        self.opts
            .data_dir
            .join("images/build-cache")
            .join(key.hex())
    }

    /// A cached layer for `key` whose blob is still stored (prune may have removed it).
    pub(super) fn cached(&self, key: &Digest) -> Result<Option<LayerDesc>, StepError> {
        if self.opts.no_cache {
            return Ok(None);
        }
        let Ok(bytes) = fs::read(self.cache_path(key)) else {
            return Ok(None);
        };
        let Ok(l) = serde_json::from_slice::<LayerDesc>(&bytes) else {
            return Ok(None);
        };
        if self.store.content().stat(&l.blob)?.is_none() {
            return Ok(None);
        }
        self.unpack(&l)?;
        Ok(Some(l))
    }

    pub(super) fn save_cache(&self, key: &Digest, l: &LayerDesc) -> Result<(), StepError> {
        let p = self.cache_path(key);
        let io = |source| StepError::Io {
            op: "write build cache entry",
            path: p.clone(),
            source,
        };
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).map_err(io)?;
        }
        let bytes = serde_json::to_vec(l).map_err(|source| StepError::Json {
            what: "a build cache entry",
            source,
        })?;
        crate::reference::write_atomic(&p, &bytes).map_err(|source| StepError::Io {
            op: "write build cache entry",
            path: p.clone(),
            source,
        })
    }

    /// Stores the final config and manifest; returns their digests.
    pub(super) fn commit(&self, st: &State) -> Result<Built, StepError> {
        let mut config = st.config.clone();
        config["config"] = Value::Object(st.cfg.clone());
        let created = self.created();
        config["created"] = json!(created);
        config["rootfs"] = json!({
            "type": "layers",
            "diff_ids": st.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        });
        let cfg = serde_json::to_vec(&config).map_err(|source| StepError::Json {
            what: "the image config",
            source,
        })?;
        let cfg_info = self.store.content().put(&cfg)?;
        let m = json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "config": {"mediaType": manifest::OCI_CONFIG, "digest": cfg_info.digest.to_string(), "size": cfg.len()},
            "layers": st.layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.blob.to_string(), "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let m = serde_json::to_vec(&m).map_err(|source| StepError::Json {
            what: "the image manifest",
            source,
        })?;
        let top = self.store.content().put(&m)?;
        Ok(Built {
            manifest: top.digest,
            config: cfg_info.digest,
        })
    }
}
