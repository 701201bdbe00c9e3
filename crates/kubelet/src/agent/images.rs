//! Images for pods: pull policy as Kubernetes applies it, one pull per image however
//! many pods want it, pull secrets, and the image's config for the container spec.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_spec::image::Config as ImageConfig;
use skiff_image::distribution::{Client, ClientOptions, DockerConfig, RemoteRef};
use skiff_image::ImageStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The policy a container asks for, with Kubernetes' default (Always for `:latest`
    /// or no tag, else IfNotPresent).
    pub fn of(policy: Option<&str>, image: &str) -> PullPolicy {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ => {
                let last = image.rsplit('/').next().unwrap_or(image);
                if image.contains('@') {
                    PullPolicy::IfNotPresent
                } else if !last.contains(':') || last.ends_with(":latest") {
                    PullPolicy::Always
                } else {
                    PullPolicy::IfNotPresent
                }
            }
        }
    }
}

/// What an image resolved to.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The digest the store resolves (manifest or index digest).
    pub store_ref: String,
    /// `registry/repo@sha256:…`, as the status' imageID shows it.
    pub image_id: String,
    pub config: ImageConfig,
}

/// Why an image is not there; the reason is what the container's waiting state says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFailure {
    pub reason: &'static str,
    pub message: String,
}

pub struct ImageManager {
    pub store: Arc<ImageStore>,
    pub options: ClientOptions,
    pub auth_dir: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When each image was first seen and last used (for image GC).
    pub records: super::imagegc::ImageRecords,
    /// Pulls hold it shared, image GC exclusively (its prune must not take a pull's
    /// blobs, not yet named, for garbage).
    pub gc_lock: tokio::sync::RwLock<()>,
}

impl ImageManager {
    pub fn new(store: Arc<ImageStore>, options: ClientOptions, auth_dir: PathBuf) -> Self {
        ImageManager {
            store,
            options,
            auth_dir,
            locks: Mutex::new(HashMap::new()),
            records: Default::default(),
            gc_lock: tokio::sync::RwLock::new(()),
        }
    }

    /// The image present in the store, if it is.
    pub fn present(&self, image: &str) -> Option<Resolved> {
        let r = RemoteRef::parse(image).ok()?;
        let name = match &r.digest {
            Some(d) => d.to_string(),
            None => r.local_name()?,
        };
        let digest = self.store.resolve(&name).ok()?;
        let img = self.store.image(&digest).ok()?;
        Some(Resolved {
            store_ref: digest.to_string(),
            image_id: format!("{}/{}@{}", r.registry, r.repository, img.top),
            config: img.config.config().clone().unwrap_or_default(),
        })
    }

    /// Makes the image present as `policy` says; `Some(duration)` when it was pulled.
    /// `auths` is a docker config JSON (`{"auths": …}`) from the pod's pull secrets.
    pub async fn ensure(
        &self,
        image: &str,
        policy: PullPolicy,
        auths: Option<&serde_json::Value>,
    ) -> Result<(Resolved, Option<Duration>), ImageFailure> {
        let r = self.ensure_inner(image, policy, auths).await;
        if let Ok((img, _)) = &r {
            self.records.used(&img.store_ref);
        }
        r
    }

    async fn ensure_inner(
        &self,
        image: &str,
        policy: PullPolicy,
        auths: Option<&serde_json::Value>,
    ) -> Result<(Resolved, Option<Duration>), ImageFailure> {
        let rref = RemoteRef::parse(image).map_err(|e| ImageFailure {
            reason: "InvalidImageName",
            message: format!(
                "Failed to apply default image tag {image:?}: couldn't parse image name {image:?}: {}",
                skiff_serve::error_chain(&e)
            ),
        })?;
        if policy != PullPolicy::Always {
            if let Some(r) = self.present(image) {
                return Ok((r, None));
            }
        }
        if policy == PullPolicy::Never {
            return Err(ImageFailure {
                reason: "ErrImageNeverPull",
                message: format!(
                    "Container image {image:?} is not present with pull policy of Never"
                ),
            });
        }
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(image.to_string()).or_default().clone()
        };
        let _held = lock.lock().await;
        // Another pod's pull may have brought it while we waited.
        if policy != PullPolicy::Always {
            if let Some(r) = self.present(image) {
                return Ok((r, None));
            }
        }
        let config = match auths {
            Some(a) => {
                let _ = std::fs::create_dir_all(&self.auth_dir);
                let path = self
                    .auth_dir
                    .join(format!("{}.json", super::containers::random_id()));
                std::fs::write(&path, a.to_string()).map_err(|e| ImageFailure {
                    reason: "ErrImagePull",
                    message: format!("writing pull credentials: {e}"),
                })?;
                Some(path)
            }
            None => None,
        };
        let docker = match &config {
            Some(p) => DockerConfig::at(p),
            None => DockerConfig::default_location(),
        };
        let client = Client::new(self.options.clone(), docker);
        let t0 = Instant::now();
        tracing::info!(image, "pulling image");
        let logged = Arc::new(PullLog::new(image));
        let progress: Arc<dyn skiff_image::distribution::Progress> = logged.clone();
        let pulled = {
            let _no_gc = self.gc_lock.read().await;
            client.pull(&self.store, &rref, &progress).await
        };
        if let Some(p) = config {
            let _ = std::fs::remove_file(p);
        }
        let took = t0.elapsed();
        match pulled {
            Ok(_) => tracing::info!(
                image,
                bytes = logged.done.load(std::sync::atomic::Ordering::Relaxed),
                took_ms = took.as_millis() as u64,
                "pulled image"
            ),
            Err(e) => {
                return Err(ImageFailure {
                    reason: "ErrImagePull",
                    message: format!(
                        "failed to pull and unpack image {:?}: {}",
                        rref.to_string(),
                        skiff_serve::error_chain(&e)
                    ),
                })
            }
        }
        let r = self.present(image).ok_or_else(|| ImageFailure {
            reason: "ErrImagePull",
            message: format!("image {image:?} was pulled but is not in the store"),
        })?;
        Ok((r, Some(took)))
    }
}

/// A pull's progress in the agent's log: how far it got, every few seconds while it
/// lasts (a big image on a slow registry is not mistaken for a hang).
struct PullLog {
    image: String,
    total: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
    started: Instant,
    said: std::sync::Mutex<Instant>,
}

impl PullLog {
    fn new(image: &str) -> PullLog {
        PullLog {
            image: image.to_string(),
            total: Default::default(),
            done: Default::default(),
            started: Instant::now(),
            said: std::sync::Mutex::new(Instant::now()),
        }
    }
}

impl skiff_image::distribution::Progress for PullLog {
    fn event(&self, e: skiff_image::distribution::Event) {
        use skiff_image::distribution::Event;
        use std::sync::atomic::Ordering::Relaxed;
        match e {
            Event::Start { total, done, .. } => {
                self.total.fetch_add(total, Relaxed);
                self.done.fetch_add(done, Relaxed);
            }
            Event::Advance { bytes, .. } => {
                self.done.fetch_add(bytes, Relaxed);
            }
            _ => return,
        }
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        if said.elapsed() >= std::time::Duration::from_secs(3) {
            *said = Instant::now();
            tracing::info!(
                image = %self.image,
                done_bytes = self.done.load(Relaxed),
                total_bytes = self.total.load(Relaxed),
                elapsed_s = self.started.elapsed().as_secs(),
                "pulling image"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pull_policy_is_kubernetes() {
        assert_eq!(PullPolicy::of(None, "busybox"), PullPolicy::Always);
        assert_eq!(PullPolicy::of(None, "busybox:latest"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::of(None, "127.0.0.1:5000/kubia:1"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::of(None, "127.0.0.1:5000/kubia"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::of(
                None,
                "reg/x@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            ),
            PullPolicy::IfNotPresent
        );
        assert_eq!(PullPolicy::of(Some("Never"), "busybox"), PullPolicy::Never);
    }
}
