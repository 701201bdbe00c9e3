//! `push`: the config and layers in parallel (skipping blobs the registry has, mounting
//! blobs known in a sibling repository), then the manifest under the tag.

use std::sync::Arc;

use hyper::header;
use hyper::{Method, StatusCode};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::session::{ReqBody, Session};
use super::{sources, Client, DistributionError, Event, Progress, RemoteRef};
use crate::content::ContentStore;
use crate::digest::Digest;
use crate::store::ImageStore;

/// What a push sent.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest: Digest,
    pub size: u64,
    /// Bytes uploaded (blobs the registry had or mounted are not counted).
    pub uploaded: u64,
}

impl Client {
    /// Pushes the local image `local` (this host's platform) as `target`.
    pub async fn push(
        &self,
        store: &Arc<ImageStore>,
        local: &str,
        target: &RemoteRef,
        progress: &Arc<dyn Progress>,
    ) -> Result<Pushed, DistributionError> {
        let top = store.resolve(local)?;
        let img = store.image(&top)?;
        let manifest_bytes = store.content().read_all(&img.manifest_digest)?;
        let s = self.session(&target.registry)?;
        let scopes = vec![format!("repository:{}:pull,push", target.repository)];
        let mut blobs: Vec<(Digest, u64, &'static str)> = vec![(
            img.config_digest.clone(),
            img.config_bytes.len() as u64,
            "config",
        )];
        for l in &img.layers {
            if !blobs.iter().any(|(d, _, _)| d == &l.blob) {
                blobs.push((l.blob.clone(), l.size, "layer"));
            }
        }
        let sem = Arc::new(Semaphore::new(self.opts.parallel.max(1)));
        let mut set = JoinSet::new();
        for (digest, size, what) in blobs.clone() {
            let job = BlobPush {
                session: s.clone(),
                repo: target.repository.clone(),
                mount_from: sources::get(store, &digest)
                    .into_iter()
                    .filter_map(|at| {
                        at.strip_prefix(&format!("{}/", target.registry))
                            .map(str::to_string)
                    })
                    .filter(|repo| repo != &target.repository)
                    .collect(),
                path: store.content().blob_path(&digest),
                digest,
                size,
                what,
                scopes: scopes.clone(),
                progress: progress.clone(),
                sem: sem.clone(),
            };
            set.spawn(job.run());
        }
        let mut uploaded = 0;
        let mut first_err = None;
        while let Some(r) = set.join_next().await {
            match r.unwrap_or_else(|e| {
                Err(DistributionError::Task {
                    detail: e.to_string(),
                })
            }) {
                Ok(n) => uploaded += n,
                Err(e) => {
                    set.abort_all();
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let reference = target
            .tag
            .clone()
            .unwrap_or_else(|| img.manifest_digest.to_string());
        let path = format!("/v2/{}/manifests/{reference}", target.repository);
        let resp = s
            .send(
                Method::PUT,
                &path,
                &[(header::CONTENT_TYPE, img.manifest_media_type.clone())],
                &ReqBody::Bytes(manifest_bytes.clone().into()),
                &scopes,
            )
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(s.status_error("PUT", &path, resp).await);
        }
        let digests: Vec<Digest> = blobs.into_iter().map(|(d, _, _)| d).collect();
        sources::record(store, &target.registry, &target.repository, &digests);
        Ok(Pushed {
            manifest: img.manifest_digest.clone(),
            size: manifest_bytes.len() as u64,
            uploaded,
        })
    }
}

struct BlobPush {
    session: Arc<Session>,
    repo: String,
    mount_from: Vec<String>,
    path: std::path::PathBuf,
    digest: Digest,
    size: u64,
    what: &'static str,
    scopes: Vec<String>,
    progress: Arc<dyn Progress>,
    sem: Arc<Semaphore>,
}

impl BlobPush {
    fn id(&self) -> String {
        self.digest.short().to_string()
    }

    fn done(&self, status: String) {
        self.progress.event(Event::Done {
            id: self.id(),
            status,
        });
    }

    /// Returns the bytes uploaded.
    async fn run(self) -> Result<u64, DistributionError> {
        let _permit = self
            .sem
            .acquire()
            .await
            .map_err(|e| DistributionError::Task {
                detail: e.to_string(),
            })?;
        let s = &self.session;
        let blob = format!("/v2/{}/blobs/{}", self.repo, self.digest);
        let resp = s
            .send(Method::HEAD, &blob, &[], &ReqBody::Empty, &self.scopes)
            .await?;
        if resp.status().is_success() {
            self.done("Layer already exists".to_string());
            return Ok(0);
        }
        let mut location = None;
        for from in &self.mount_from {
            let path = format!(
                "/v2/{}/blobs/uploads/?mount={}&from={}",
                self.repo,
                self.digest,
                super::session::percent_encode(from)
            );
            let mut scopes = self.scopes.clone();
            scopes.push(format!("repository:{from}:pull"));
            let resp = s
                .send(Method::POST, &path, &[], &ReqBody::Empty, &scopes)
                .await?;
            match resp.status() {
                StatusCode::CREATED => {
                    self.done(format!("Mounted from {from}"));
                    return Ok(0);
                }
                StatusCode::ACCEPTED => {
                    location = resp
                        .headers()
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    break;
                }
                _ => {}
            }
        }
        let location = match location {
            Some(l) => l,
            None => {
                let path = format!("/v2/{}/blobs/uploads/", self.repo);
                let resp = s
                    .send(Method::POST, &path, &[], &ReqBody::Empty, &self.scopes)
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(s.status_error("POST", &path, resp).await);
                }
                resp.headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .ok_or_else(|| DistributionError::Status {
                        registry: s.registry.clone(),
                        method: "POST".to_string(),
                        url: s.url(&path),
                        status: 202,
                        code: String::new(),
                        message: "upload started without a Location".to_string(),
                    })?
            }
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{sep}digest={}", self.digest);
        self.progress.event(Event::Start {
            id: self.id(),
            what: self.what,
            total: self.size,
            done: 0,
        });
        let (progress, id) = (self.progress.clone(), self.id());
        let body = ReqBody::File {
            path: self.path.clone(),
            len: self.size,
            sent: Some(Arc::new(move |n| {
                progress.event(Event::Advance {
                    id: id.clone(),
                    bytes: n,
                })
            })),
        };
        let resp = s
            .send(
                Method::PUT,
                &put,
                &[(header::CONTENT_TYPE, "application/octet-stream".to_string())],
                &body,
                &self.scopes,
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(s.status_error("PUT", &put, resp).await);
        }
        self.done("Pushed".to_string());
        Ok(self.size)
    }
}
