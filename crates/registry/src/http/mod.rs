//! HTTP API: OCI Distribution Spec 1.1 routes, authentication checks and the token
//! endpoint.
//!
//! Repository names contain slashes, so routes are matched by suffix
//! (`…/blobs/uploads/<id>`, `…/manifests/<ref>`, …) rather than by a router pattern.
//! Every response carries `Docker-Distribution-API-Version: registry/2.0`, which docker
//! and skopeo check on `/v2/`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::auth::{self, Auth, Identity};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{DOCKER_LIST, DOCKER_MANIFEST, MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST};
use crate::names::{valid_name, valid_tag};
use crate::storage::{Reference, Storage};

pub(crate) const API_VERSION: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS: HeaderName = HeaderName::from_static("oci-filters-applied");
const RANGE_HDR: HeaderName = HeaderName::from_static("range");

/// Referrers per response page.
const REFERRERS_PAGE: usize = 1000;

/// Read chunk for blob downloads: each read is a hop to tokio's blocking pool, so fewer,
/// larger reads serve faster (memory per download stays ~1 MiB).
const READ_CHUNK: usize = 1024 * 1024;

/// Shared state of a running registry.
#[derive(Debug)]
pub struct Registry {
    pub storage: Storage,
    pub auth: Option<Auth>,
    pub read_only: bool,
    pub tls: bool,
    pub(crate) metrics: Arc<metrics::Metrics>,
}

mod metrics;
mod query;
mod token;

pub(crate) use metrics::Metrics;

use query::Query;

pub fn router(reg: Arc<Registry>) -> axum::Router {
    axum::Router::new()
        .route(
            "/token",
            axum::routing::get(token::token_get).post(token::token_post),
        )
        .route("/metrics", axum::routing::get(serve_metrics))
        .fallback(dispatch)
        .with_state(reg)
}

async fn serve_metrics(State(reg): State<Arc<Registry>>) -> Response {
    skiff_serve::metrics::response(&reg.metrics.registry).map(Body::new)
}

pub(crate) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn dispatch(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let handler = Route::parse(&path).map_or("other", |r| r.handler());
    let tracker = reg.metrics.begin(method.as_str(), handler);
    let req = req.map(|b| tracker.request_body(b));
    let resp = match handle(&reg, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let mut resp = tracker.finish(resp);
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    resp
}

#[derive(Debug)]
enum Route<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Upload(&'a str, &'a str),
    Referrers(&'a str, &'a str),
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Route<'a>> {
        let rest = path.strip_prefix("/v2")?;
        if rest.is_empty() || rest == "/" {
            return Some(Route::Base);
        }
        let rest = rest.strip_prefix('/')?;
        if rest == "_catalog" {
            return Some(Route::Catalog);
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Some(Route::Tags(name));
        }
        let (head, last) = rest.rsplit_once('/')?;
        if let Some(name) = head.strip_suffix("/blobs/uploads") {
            return Some(Route::Upload(name, last));
        }
        if let Some(name) = head.strip_suffix("/blobs") {
            return Some(Route::Blob(name, last));
        }
        if let Some(name) = head.strip_suffix("/manifests") {
            return Some(Route::Manifest(name, last));
        }
        if let Some(name) = head.strip_suffix("/referrers") {
            return Some(Route::Referrers(name, last));
        }
        None
    }

    /// The metrics' name for the route (no repository names: they are unbounded).
    fn handler(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags(_) => "tags",
            Route::Manifest(..) => "manifest",
            Route::Blob(..) => "blob",
            Route::Upload(..) => "blob_upload",
            Route::Referrers(..) => "referrers",
        }
    }

    fn name(&self) -> Option<&'a str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::Upload(n, _)
            | Route::Referrers(n, _) => Some(n),
        }
    }
}

fn is_write(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The action a request needs on its repository (distribution's vocabulary).
fn action_for(m: &Method) -> &'static str {
    match *m {
        Method::GET | Method::HEAD => "pull",
        Method::DELETE => "delete",
        _ => "push",
    }
}

async fn handle(reg: &Registry, req: Request) -> Result<Response> {
    let path = req.uri().path().to_string();
    let Some(route) = Route::parse(&path) else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    if let Some(name) = route.name() {
        if !valid_name(name) {
            return Err(Error::NameInvalid {
                name: name.to_string(),
            });
        }
    }
    let method = req.method().clone();
    let identity = match &reg.auth {
        None => None,
        Some(auth) => Some(authorize(reg, auth, &route, &method, req.headers())?),
    };
    if reg.read_only && is_write(&method) && !matches!(route, Route::Base) {
        return Err(Error::ReadOnly);
    }
    let query = Query::parse(req.uri().query());
    match route {
        Route::Base => Ok(json_response(StatusCode::OK, &serde_json::json!({}))),
        Route::Catalog => match method {
            Method::GET => {
                let all = reg.storage.catalog().await?;
                let (page, link) = paginate(all, &query, "/v2/_catalog");
                let mut r =
                    json_response(StatusCode::OK, &serde_json::json!({ "repositories": page }));
                set_link(&mut r, link);
                Ok(r)
            }
            _ => Err(Error::Unsupported {
                what: "this method on /v2/_catalog",
            }),
        },
        Route::Tags(name) => match method {
            Method::GET => {
                let all = reg.storage.tags(name).await?;
                let (page, link) = paginate(all, &query, &format!("/v2/{name}/tags/list"));
                let mut r = json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "name": name, "tags": page }),
                );
                set_link(&mut r, link);
                Ok(r)
            }
            _ => Err(Error::Unsupported {
                what: "this method on tags/list",
            }),
        },
        Route::Blob(name, digest) => {
            let digest: Digest = digest.parse()?;
            match method {
                Method::GET | Method::HEAD => {
                    get_blob(reg, name, &digest, &method, req.headers()).await
                }
                Method::DELETE => {
                    reg.storage.delete_blob(name, &digest).await?;
                    Ok(empty(
                        StatusCode::ACCEPTED,
                        &[(CONTENT_DIGEST, digest.to_string())],
                    ))
                }
                _ => Err(Error::Unsupported {
                    what: "this method on a blob",
                }),
            }
        }
        Route::Upload(name, id) => {
            upload(reg, name, id, &method, &query, identity.as_ref(), req).await
        }
        Route::Manifest(name, reference) => {
            let reference = parse_reference(reference)?;
            manifest(reg, name, &reference, &method, req).await
        }
        Route::Referrers(name, digest) => {
            let digest: Digest = digest.parse()?;
            if method != Method::GET {
                return Err(Error::Unsupported {
                    what: "this method on referrers",
                });
            }
            let mut list = reg.storage.referrers(name, &digest).await?;
            let filter = query.get("artifactType");
            if let Some(f) = filter {
                list.retain(|d| d["artifactType"].as_str() == Some(f));
            }
            // Pages in digest order, at most REFERRERS_PAGE (or `n`) per response, the
            // rest behind a `Link: <…?last=…>; rel="next"` as the spec allows, so a
            // subject with thousands of signatures never makes a response over the
            // manifest size clients accept.
            list.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
            if let Some(last) = query.get("last") {
                list.retain(|d| d["digest"].as_str().is_some_and(|x| x > last));
            }
            let n = query
                .get("n")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(REFERRERS_PAGE)
                .min(REFERRERS_PAGE);
            let mut link = None;
            if list.len() > n {
                list.truncate(n);
                if let Some(last) = list.last().and_then(|d| d["digest"].as_str()) {
                    let mut next = format!("/v2/{name}/referrers/{digest}?last={last}&n={n}");
                    if let Some(f) = filter {
                        next.push_str(&format!("&artifactType={}", query::encode(f)));
                    }
                    link = Some(format!("<{next}>; rel=\"next\""));
                }
            }
            let mut r = json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_INDEX,
                    "manifests": list,
                }),
            );
            set_link(&mut r, link);
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
            if filter.is_some() {
                r.headers_mut()
                    .insert(OCI_FILTERS, HeaderValue::from_static("artifactType"));
            }
            Ok(r)
        }
    }
}

fn authorize(
    reg: &Registry,
    auth: &Auth,
    route: &Route<'_>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Identity> {
    let (kind, name, action, scope) = match route {
        Route::Base => ("", "", "", None),
        Route::Catalog => (
            "registry",
            "catalog",
            "*",
            Some("registry:catalog:*".to_string()),
        ),
        _ => {
            let name = route.name().unwrap_or_default();
            let action = action_for(method);
            let actions = match action {
                "pull" => "pull",
                "delete" => "delete",
                _ => "pull,push",
            };
            (
                "repository",
                name,
                action,
                Some(format!("repository:{name}:{actions}")),
            )
        }
    };
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity = auth.identify(header);
    let ok = match &identity {
        None => false,
        Some(_) if kind.is_empty() => true,
        Some(id) => id.allows(kind, name, action),
    };
    match identity {
        Some(id) if ok => Ok(id),
        other => {
            let mut challenge = format!(
                "Bearer realm=\"{}/token\",service=\"{}\"",
                origin(reg, headers),
                auth::SERVICE
            );
            if let Some(s) = scope {
                challenge.push_str(&format!(",scope=\"{s}\""));
            }
            if other.is_some() {
                challenge.push_str(",error=\"insufficient_scope\"");
            }
            Err(Error::Unauthorized { challenge })
        }
    }
}

/// `scheme://host[:port]` of this server as the client addressed it.
fn origin(reg: &Registry, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if reg.tls { "https" } else { "http" };
    format!("{scheme}://{host}")
}

fn parse_reference(r: &str) -> Result<Reference> {
    if r.contains(':') {
        Ok(Reference::Digest(r.parse()?))
    } else if valid_tag(r) {
        Ok(Reference::Tag(r.to_string()))
    } else {
        Err(Error::TagInvalid { tag: r.to_string() })
    }
}

fn empty(status: StatusCode, headers: &[(HeaderName, String)]) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k.clone(), v);
        }
    }
    r
}

fn set_link(r: &mut Response, link: Option<String>) {
    if let Some(l) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(header::LINK, l);
    }
}

/// Applies `last` and `n` to a sorted list; returns the page and a `Link` to the next one
/// when more remain.
fn paginate(all: Vec<String>, q: &Query, path: &str) -> (Vec<String>, Option<String>) {
    let mut items: Vec<String> = match q.get("last") {
        Some(last) => all.into_iter().filter(|t| t.as_str() > last).collect(),
        None => all,
    };
    let n = q.get("n").and_then(|n| n.parse::<usize>().ok());
    let Some(n) = n else { return (items, None) };
    if items.len() <= n {
        return (items, None);
    }
    items.truncate(n);
    let link = items
        .last()
        .map(|last| format!("<{path}?last={last}&n={n}>; rel=\"next\""));
    (items, link)
}

// ---- blobs -------------------------------------------------------------------------

async fn get_blob(
    reg: &Registry,
    name: &str,
    digest: &Digest,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response> {
    let d = digest.to_string();
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&d) {
        h.insert(CONTENT_DIGEST, v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{d}\"")) {
        h.insert(header::ETAG, v);
    }
    // Content never changes under a digest.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=31536000"),
    );
    if *method == Method::HEAD {
        let size = reg.storage.blob_size(name, digest).await?;
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, size.into());
        return Ok(resp);
    }
    let (mut file, size) = reg.storage.open_blob(name, digest).await?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| parse_range(r, size))
        .transpose()?;
    let body = match range {
        Some((start, end)) => {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(Error::io("seek", reg.storage.root()))?;
            let len = end - start + 1;
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = resp.headers_mut();
            h.insert(header::CONTENT_LENGTH, len.into());
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            Body::from_stream(ReaderStream::with_capacity(file.take(len), READ_CHUNK))
        }
        None => {
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, size.into());
            Body::from_stream(ReaderStream::with_capacity(file, READ_CHUNK))
        }
    };
    *resp.body_mut() = body;
    Ok(resp)
}

/// One `bytes=` range (`a-b`, `a-`, `-n`) resolved against `size`, inclusive.
fn parse_range(spec: &str, size: u64) -> Result<(u64, u64)> {
    let bad = || Error::RangeNotSatisfiable {
        range: spec.to_string(),
        size,
    };
    let r = spec.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if r.contains(',') {
        return Err(bad());
    }
    let (a, b) = r.split_once('-').ok_or_else(bad)?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        (size.saturating_sub(n), size.checked_sub(1).ok_or_else(bad)?)
    } else {
        let start: u64 = a.parse().map_err(|_| bad())?;
        let end = if b.is_empty() {
            size.checked_sub(1).ok_or_else(bad)?
        } else {
            b.parse::<u64>()
                .map_err(|_| bad())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start > end || start >= size {
        return Err(bad());
    }
    Ok((start, end))
}

// ---- uploads -----------------------------------------------------------------------

fn upload_headers(name: &str, id: &str, size: u64) -> Vec<(HeaderName, String)> {
    // distribution reports "0-0" for an empty upload as well.
    let end = size.saturating_sub(1);
    vec![
        (header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}")),
        (RANGE_HDR, format!("0-{end}")),
        (UPLOAD_UUID, id.to_string()),
    ]
}

fn blob_created(name: &str, digest: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        &[
            (header::LOCATION, format!("/v2/{name}/blobs/{digest}")),
            (CONTENT_DIGEST, digest.to_string()),
        ],
    )
}

/// `Content-Range: <start>-<end>` of a chunk → (start, length).
fn content_range(headers: &HeaderMap, id: &str) -> Result<Option<(u64, u64)>> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || Error::BlobUploadInvalid {
        id: id.to_string(),
        reason: "Content-Range must be <start>-<end> (inclusive byte offsets)",
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = b.trim().parse().map_err(|_| bad())?;
    if end < start {
        return Err(Error::BlobUploadInvalid {
            id: id.to_string(),
            reason: "Content-Range ends before it starts",
        });
    }
    Ok(Some((start, end - start + 1)))
}

async fn upload(
    reg: &Registry,
    name: &str,
    id: &str,
    method: &Method,
    query: &Query,
    identity: Option<&Identity>,
    req: Request,
) -> Result<Response> {
    let storage = &reg.storage;
    if id.is_empty() {
        if *method != Method::POST {
            return Err(Error::Unsupported {
                what: "this method on blobs/uploads/",
            });
        }
        if let (Some(mount), Some(from)) = (query.get("mount"), query.get("from")) {
            let digest: Digest = mount.parse()?;
            // Without pull access to the source, mounting would leak its blobs; the spec
            // says to fall back to an ordinary upload then.
            let may_read =
                valid_name(from) && identity.is_none_or(|i| i.allows("repository", from, "pull"));
            if may_read && storage.mount(name, from, &digest).await? {
                return Ok(blob_created(name, &digest));
            }
        }
        if let Some(d) = query.get("digest") {
            let digest: Digest = d.parse()?;
            let started = std::time::Instant::now();
            let id = storage.start_upload(name).await?;
            let res = storage
                .upload_finish(name, &id, &digest, None, req.into_body())
                .await;
            if res.is_err() {
                // Nobody knows this upload's id, so nobody could resume it.
                let _ = storage.upload_cancel(name, &id).await;
            }
            res?;
            reg.metrics.upload_took(started.elapsed());
            return Ok(blob_created(name, &digest));
        }
        let id = storage.start_upload(name).await?;
        reg.metrics.upload_started(&id);
        return Ok(empty(StatusCode::ACCEPTED, &upload_headers(name, &id, 0)));
    }
    match *method {
        Method::GET => {
            let size = storage.upload_status(name, id).await?;
            Ok(empty(
                StatusCode::NO_CONTENT,
                &upload_headers(name, id, size),
            ))
        }
        Method::PATCH => {
            let range = content_range(req.headers(), id)?;
            let size = storage
                .upload_append(
                    name,
                    id,
                    range.map(|r| r.0),
                    range.map(|r| r.1),
                    req.into_body(),
                )
                .await?;
            Ok(empty(StatusCode::ACCEPTED, &upload_headers(name, id, size)))
        }
        Method::PUT => {
            let digest: Digest = query.get("digest").ok_or(Error::DigestMissing)?.parse()?;
            let range = content_range(req.headers(), id)?;
            let res = storage
                .upload_finish(name, id, &digest, range.map(|r| r.0), req.into_body())
                .await;
            reg.metrics.upload_ended(id, res.is_ok());
            res?;
            Ok(blob_created(name, &digest))
        }
        Method::DELETE => {
            reg.metrics.upload_ended(id, false);
            storage.upload_cancel(name, id).await?;
            Ok(empty(StatusCode::NO_CONTENT, &[]))
        }
        _ => Err(Error::Unsupported {
            what: "this method on an upload",
        }),
    }
}

// ---- manifests ---------------------------------------------------------------------

/// The manifest media types an `Accept` header lists (parameters and `q` ignored).
fn accepted_manifest_types(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| crate::manifest::kind_of(t).is_some())
        .collect()
}

/// Content negotiation as distribution does it: a client whose `Accept` lists manifest
/// types but not the stored one gets MANIFEST_UNKNOWN for an OCI manifest or index, and
/// for a Docker manifest list fetched by tag the `linux/<this arch>` manifest instead (a
/// schema2-only client then still pulls). A request naming no manifest type at all (curl,
/// `*/*`) gets what is stored, where distribution would refuse OCI content.
async fn negotiate(
    reg: &Registry,
    name: &str,
    reference: &Reference,
    m: crate::storage::StoredManifest,
    headers: &HeaderMap,
) -> Result<crate::storage::StoredManifest> {
    let accepted = accepted_manifest_types(headers);
    if accepted.is_empty() || accepted.contains(&m.media_type) {
        return Ok(m);
    }
    let unknown = || Error::ManifestUnknown {
        repo: name.to_string(),
        reference: reference.to_string(),
    };
    match m.media_type.as_str() {
        OCI_MANIFEST | OCI_INDEX => Err(unknown()),
        DOCKER_LIST
            if matches!(reference, Reference::Tag(_))
                && accepted.iter().any(|a| a == DOCKER_MANIFEST) =>
        {
            let arch = match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            };
            let list: serde_json::Value = serde_json::from_slice(&m.body).unwrap_or_default();
            let pick = list["manifests"].as_array().and_then(|ms| {
                ms.iter().find(|d| {
                    d["platform"]["os"] == "linux" && d["platform"]["architecture"] == arch
                })
            });
            let Some(digest) = pick
                .and_then(|d| d["digest"].as_str())
                .and_then(|d| d.parse::<Digest>().ok())
            else {
                return Err(unknown());
            };
            reg.storage
                .get_manifest(name, &Reference::Digest(digest))
                .await
        }
        _ => Ok(m),
    }
}

async fn manifest(
    reg: &Registry,
    name: &str,
    reference: &Reference,
    method: &Method,
    req: Request,
) -> Result<Response> {
    match *method {
        Method::GET | Method::HEAD => {
            let m = reg.storage.get_manifest(name, reference).await?;
            let m = negotiate(reg, name, reference, m, req.headers()).await?;
            let len = m.body.len();
            let mut r = Response::new(if *method == Method::HEAD {
                Body::empty()
            } else {
                Body::from(m.body)
            });
            let h = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&m.media_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            h.insert(header::CONTENT_LENGTH, len.into());
            if let Ok(v) = HeaderValue::from_str(&m.digest.to_string()) {
                h.insert(CONTENT_DIGEST, v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", m.digest)) {
                h.insert(header::ETAG, v);
            }
            Ok(r)
        }
        Method::PUT => {
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = read_limited(req, MAX_MANIFEST_BYTES).await?;
            let put = reg
                .storage
                .put_manifest(name, reference, content_type.as_deref(), body)
                .await?;
            let mut headers = vec![
                (
                    header::LOCATION,
                    format!("/v2/{name}/manifests/{}", put.digest),
                ),
                (CONTENT_DIGEST, put.digest.to_string()),
            ];
            if let Some(s) = put.subject {
                headers.push((OCI_SUBJECT, s.to_string()));
            }
            Ok(empty(StatusCode::CREATED, &headers))
        }
        Method::DELETE => {
            reg.storage.delete_manifest(name, reference).await?;
            Ok(empty(StatusCode::ACCEPTED, &[]))
        }
        _ => Err(Error::Unsupported {
            what: "this method on a manifest",
        }),
    }
}

/// Reads a small request body, refusing it once it passes `limit`. The excess is read
/// and dropped (up to a bound) before answering: a client still writing when the
/// connection closes would see a reset instead of our error.
pub(crate) async fn read_limited(req: Request, limit: usize) -> Result<Bytes> {
    const DRAIN: usize = 16 * 1024 * 1024;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = req.into_body();
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    let mut too_large = declared.is_some_and(|n| n > limit as u64);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| Error::Body { source })?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > limit {
                too_large = true;
            }
            if too_large {
                if seen > DRAIN {
                    break;
                }
                continue;
            }
            buf.extend_from_slice(&data);
        }
    }
    if too_large {
        return Err(Error::ManifestTooLarge { limit });
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(Route::parse("/v2/"), Some(Route::Base)));
        assert!(matches!(Route::parse("/v2"), Some(Route::Base)));
        assert!(matches!(
            Route::parse("/v2/a/b/tags/list"),
            Some(Route::Tags("a/b"))
        ));
        assert!(matches!(
            Route::parse("/v2/x/blobs/uploads/"),
            Some(Route::Upload("x", ""))
        ));
        assert!(matches!(
            Route::parse("/v2/x/blobs/blobs/uploads/abc"),
            Some(Route::Upload("x/blobs", "abc"))
        ));
        assert!(matches!(
            Route::parse("/v2/x/blobs/uploads/blobs/sha256:1"),
            Some(Route::Blob("x/blobs/uploads", "sha256:1"))
        ));
        assert!(matches!(
            Route::parse("/v2/a/manifests/latest"),
            Some(Route::Manifest("a", "latest"))
        ));
        assert!(Route::parse("/v3/").is_none());
    }

    #[test]
    fn ranges_and_queries() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), (0, 9));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), (50, 99));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=5-1", 100).is_err());
        assert!(parse_range("items=0-1", 100).is_err());
        let q = Query::parse(Some("digest=sha256%3Aab&scope=a+b&x"));
        assert_eq!(q.get("digest"), Some("sha256:ab"));
        assert_eq!(q.get("scope"), Some("a b"));
        assert_eq!(q.get("x"), Some(""));
        let bad = Query::parse(Some("a=%&b=a%2"));
        assert_eq!(bad.get("a"), Some("%"));
        assert_eq!(bad.get("b"), Some("a%2"));
        let (page, link) = paginate(
            vec!["a".into(), "b".into(), "c".into()],
            &Query::parse(Some("n=2")),
            "/v2/x/tags/list",
        );
        assert_eq!(page, vec!["a", "b"]);
        assert_eq!(link.unwrap(), "</v2/x/tags/list?last=b&n=2>; rel=\"next\"");
    }
}
