//! Uploads: blob content arriving in one or more chunks, kept under `uploads/<id>/` until
//! it is verified and published, discarded on cancel, mismatch or expiry.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use tokio::sync::Mutex;

use super::{hash_file, publish, random_hex, remove_dir, truncate, write_body, Storage};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};

#[derive(Debug)]
pub(super) struct UploadState {
    pub(super) repo: String,
    size: u64,
    /// Running sha256 of what has been received; `None` after a restart, when the hash is
    /// recomputed from disk on completion.
    hasher: Option<Hasher>,
    /// Set when the upload was completed, cancelled or expired while someone waited for it.
    gone: bool,
}

impl Storage {
    // ---- uploads -------------------------------------------------------------------

    fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    pub async fn start_upload(&self, repo: &str) -> Result<String> {
        let id = random_hex(16);
        let dir = self.upload_dir(&id);
        tokio::fs::create_dir(&dir)
            .await
            .map_err(Error::io("create upload directory", &dir))?;
        let repo_file = dir.join("repo");
        tokio::fs::write(&repo_file, repo.as_bytes())
            .await
            .map_err(Error::io("write", &repo_file))?;
        let data = dir.join("data");
        tokio::fs::File::create(&data)
            .await
            .map_err(Error::io("create", &data))?;
        let state = UploadState {
            repo: repo.to_string(),
            size: 0,
            hasher: Some(Algorithm::Sha256.hasher()),
            gone: false,
        };
        self.lock_map()
            .insert(id.clone(), Arc::new(Mutex::new(state)));
        Ok(id)
    }

    fn lock_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mutex<UploadState>>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single
        // inserts and removes), so a poisoned lock is still usable.
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds an upload of `repo`, reloading it from disk after a restart.
    async fn upload(&self, repo: &str, id: &str) -> Result<Arc<Mutex<UploadState>>> {
        let unknown = || Error::BlobUploadUnknown {
            repo: repo.to_string(),
            id: id.to_string(),
        };
        // Upload ids are our own hex strings; anything else is not a path we made.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        let found = self.lock_map().get(id).cloned();
        let state = match found {
            Some(s) => s,
            None => {
                let dir = self.upload_dir(id);
                let owner = tokio::fs::read_to_string(dir.join("repo"))
                    .await
                    .map_err(|_| unknown())?;
                let size = tokio::fs::metadata(dir.join("data"))
                    .await
                    .map_err(|_| unknown())?
                    .len();
                let s = Arc::new(Mutex::new(UploadState {
                    repo: owner,
                    size,
                    hasher: if size == 0 {
                        Some(Algorithm::Sha256.hasher())
                    } else {
                        None
                    },
                    gone: false,
                }));
                self.lock_map().entry(id.to_string()).or_insert(s).clone()
            }
        };
        if state.lock().await.repo != repo {
            return Err(unknown());
        }
        Ok(state)
    }

    /// Bytes received so far.
    pub async fn upload_status(&self, repo: &str, id: &str) -> Result<u64> {
        let s = self.upload(repo, id).await?;
        let st = s.lock().await;
        if st.gone {
            return Err(Error::BlobUploadUnknown {
                repo: repo.to_string(),
                id: id.to_string(),
            });
        }
        Ok(st.size)
    }

    /// Appends `body` to the upload. `start` (from Content-Range) must equal the bytes
    /// received so far; `expected_len` (from Content-Range) must match the body. On any
    /// failure the upload is rolled back to where it was, so the client can retry.
    pub async fn upload_append(
        &self,
        repo: &str,
        id: &str,
        start: Option<u64>,
        expected_len: Option<u64>,
        body: Body,
    ) -> Result<u64> {
        let s = self.upload(repo, id).await?;
        let mut st = s.lock().await;
        self.append_locked(id, &mut st, start, expected_len, body)
            .await?;
        Ok(st.size)
    }

    async fn append_locked(
        &self,
        id: &str,
        st: &mut UploadState,
        start: Option<u64>,
        expected_len: Option<u64>,
        body: Body,
    ) -> Result<()> {
        if st.gone {
            return Err(Error::BlobUploadUnknown {
                repo: st.repo.clone(),
                id: id.to_string(),
            });
        }
        if let Some(start) = start {
            if start != st.size {
                return Err(Error::ChunkOutOfOrder {
                    id: id.to_string(),
                    offset: st.size,
                    start,
                });
            }
        }
        let path = self.upload_dir(id).join("data");
        let file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .await
            .map_err(Error::io("open", &path))?
            .into_std()
            .await;
        let result = write_body(&path, file, body, st.hasher.clone()).await;
        let (written, hasher) = match result {
            Ok(r) => r,
            Err(e) => {
                truncate(&path, st.size).await;
                return Err(e);
            }
        };
        if let Some(expected) = expected_len {
            if expected != written {
                truncate(&path, st.size).await;
                return Err(Error::SizeInvalid {
                    what: "chunk",
                    expected,
                    actual: written,
                });
            }
        }
        st.size += written;
        st.hasher = hasher;
        Ok(())
    }

    /// Appends an optional final chunk, verifies the content against `digest`, and makes
    /// it visible as a blob linked to `repo`. A mismatch discards the upload (nothing is
    /// stored), as distribution does.
    pub async fn upload_finish(
        &self,
        repo: &str,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        body: Body,
    ) -> Result<()> {
        let s = self.upload(repo, id).await?;
        let mut st = s.lock().await;
        let res = self
            .finish_locked(repo, id, &mut st, digest, start, body)
            .await;
        // Keep the upload for a retry only when the final chunk itself was refused.
        if !matches!(
            res,
            Err(Error::ChunkOutOfOrder { .. } | Error::SizeInvalid { .. } | Error::Body { .. })
        ) {
            st.gone = true;
            drop(st);
            self.lock_map().remove(id);
            remove_dir(&self.upload_dir(id)).await;
        }
        res
    }

    async fn finish_locked(
        &self,
        repo: &str,
        id: &str,
        st: &mut UploadState,
        digest: &Digest,
        start: Option<u64>,
        body: Body,
    ) -> Result<()> {
        self.append_locked(id, st, start, None, body).await?;
        let path = self.upload_dir(id).join("data");
        let actual = match (&st.hasher, digest.algorithm()) {
            (Some(h), Algorithm::Sha256) => h.clone().finish(),
            _ => hash_file(&path, digest.algorithm()).await?,
        };
        if &actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(Error::io("open", &path))?;
        f.sync_all().await.map_err(Error::io("fsync", &path))?;
        drop(f);
        let dest = self.blob_path(digest);
        publish(&path, &dest).await?;
        self.link_blob(repo, digest).await
    }

    pub async fn upload_cancel(&self, repo: &str, id: &str) -> Result<()> {
        let s = self.upload(repo, id).await?;
        let mut st = s.lock().await;
        if st.gone {
            return Err(Error::BlobUploadUnknown {
                repo: repo.to_string(),
                id: id.to_string(),
            });
        }
        st.gone = true;
        drop(st);
        self.lock_map().remove(id);
        remove_dir(&self.upload_dir(id)).await;
        Ok(())
    }

    /// Removes uploads without activity for `max_age`; returns how many.
    pub async fn purge_stale_uploads(&self, max_age: Duration) -> Result<usize> {
        let dir = self.root.join("uploads");
        let mut rd = tokio::fs::read_dir(&dir)
            .await
            .map_err(Error::io("read directory", &dir))?;
        let now = SystemTime::now();
        let mut removed = 0;
        while let Some(entry) = rd
            .next_entry()
            .await
            .map_err(Error::io("read directory", &dir))?
        {
            let id = entry.file_name().to_string_lossy().into_owned();
            let data = entry.path().join("data");
            let last = match tokio::fs::metadata(&data).await.and_then(|m| m.modified()) {
                Ok(t) => t,
                // No data file: a half-created upload directory; judge by the directory.
                Err(_) => match entry.metadata().await.and_then(|m| m.modified()) {
                    Ok(t) => t,
                    Err(_) => continue,
                },
            };
            if now.duration_since(last).unwrap_or_default() < max_age {
                continue;
            }
            let state = self.lock_map().get(&id).cloned();
            if let Some(s) = state {
                // Busy uploads are active by definition.
                let Ok(mut st) = s.try_lock() else { continue };
                st.gone = true;
            }
            self.lock_map().remove(&id);
            remove_dir(&entry.path()).await;
            removed += 1;
        }
        Ok(removed)
    }
}
