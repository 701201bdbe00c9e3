//! Routing and the generic resource handlers: every request under `/api/v1` and
//! `/apis/<group>/<version>` is parsed into a [`Target`] and served from the kinds table.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use skiff_api::kinds::{self, Kind};

use skiff_serve::metrics::LongRunning;

use crate::audit::{Record, UserInfo};
use crate::meta;
use crate::metrics::RequestInfo;
use crate::query::Query;
use crate::status::{ApiError, ApiResult};
use crate::{AppState, RemoteAddr};

mod delete;
mod events_view;
mod eviction;
pub(crate) mod list;
pub(crate) mod objects;
mod openapi;
mod priority;
pub(crate) mod proxy;
mod storage;
mod subresources;
mod watch;

pub(crate) use delete::{delete as delete_object, DeleteOptions};
pub(crate) use list::{list_items, Filter, Item};
pub(crate) use objects::bootstrap;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/version", get(version))
        .fallback(dispatch)
        .with_state(state)
}

async fn version() -> Response {
    json_response(StatusCode::OK, &crate::discovery::version())
}

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// What a resource request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: &'static Kind,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    /// The legacy `/watch/` path prefix.
    pub watch_path: bool,
}

async fn dispatch(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let info = request_info(&method, &path, req.uri().query());
    // Health checks are open to anonymous clients, as kube-apiserver's
    // system:public-info-viewer allows, and not audited.
    if let Some(resp) = health(&st, &path, req.uri().query()).await {
        st.metrics
            .observe(&info, resp.status().as_u16(), started.elapsed());
        return resp;
    }
    // The cluster CA, for joining agents that have no CA yet (they check its hash),
    // as k3s serves it.
    if path == "/cacerts" && method == Method::GET {
        let resp = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            st.ca_pem.clone(),
        )
            .into_response();
        st.metrics
            .observe(&info, resp.status().as_u16(), started.elapsed());
        return resp;
    }
    let mut req = req;
    let credentials = crate::authn::credentials(&req);
    let authenticated = crate::authn::authenticate(&st, credentials).await;
    // Who the request acts as: impersonation is checked before anything else.
    let acting = authenticated
        .clone()
        .map(|u| crate::authn::impersonate(&st, u, req.headers()));
    let user = match &acting {
        Some(Ok(u)) => Some(u.clone()),
        _ => authenticated.clone(),
    };
    if let Some(u) = &user {
        // Kinds that record their creator (CertificateSigningRequests) read it here.
        req.extensions_mut().insert(u.clone());
    }
    let record = st.audit.as_ref().map(|log| {
        let anonymous = UserInfo::anonymous();
        let ip = req.extensions().get::<RemoteAddr>().map(|a| a.0.ip());
        Record::begin(log, &req, user.as_ref().unwrap_or(&anonymous), ip)
    });
    let yaml = prefers_yaml(req.headers());
    let q = Query::parse(req.uri().query());
    let mut annotations = Vec::new();
    let mut resp = match (acting, &user) {
        (None, _) | (_, None) => ApiError::unauthorized().into_response(),
        (Some(Err(e)), _) => e.into_response(),
        (Some(Ok(_)), Some(u)) => match crate::authz::check(&st, u, &method, &path, &q).await {
            Err(e) => e.into_response(),
            Ok(()) => {
                let (r, a) = crate::audit::collecting(
                    crate::authz::REQUEST_USER.scope(u.clone(), route(&st, req)),
                )
                .await;
                annotations = a;
                r.unwrap_or_else(|e| e.into_response())
            }
        },
    };
    if yaml {
        resp = to_yaml(resp).await;
    }
    tracing::info!(target: "skiff::access", %method, %path, code = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64);
    st.metrics
        .observe(&info, resp.status().as_u16(), started.elapsed());
    if info.long_running() && resp.status().is_success() {
        // Open until its body ends; ends when shutdown starts.
        let guard = st.metrics.long_running(&info);
        resp = resp.map(|b| Body::new(LongRunning::new(b, &st.shutdown, guard)));
    }
    match record {
        Some(mut r) => {
            r.annotate(annotations);
            r.finish(resp)
        }
        None => resp,
    }
}

/// `/livez`, `/readyz`, `/healthz` and their single checks (`/readyz/etcd`).
async fn health(st: &AppState, path: &str, query: Option<&str>) -> Option<Response> {
    let rest = path.trim_start_matches('/');
    let (endpoint, check) = match rest.split_once('/') {
        Some((e, c)) => (e, Some(c)),
        None => (rest, None),
    };
    let checks = match endpoint {
        "livez" | "healthz" => &st.health.livez,
        "readyz" => &st.health.readyz,
        _ => return None,
    };
    Some(checks.respond(endpoint, check, query).await.map(Body::new))
}

/// What a request is, for the request metrics (kube-apiserver's RequestInfo).
fn request_info(method: &Method, path: &str, query: Option<&str>) -> RequestInfo {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let t = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => target("", "v1", rest).ok(),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => target(g, v, rest).ok(),
        _ => None,
    };
    let Some(t) = t else {
        return RequestInfo::non_resource(method.as_str());
    };
    let q = Query::parse(query);
    let subresource = t
        .sub
        .as_deref()
        .and_then(|s| t.kind.subresources.iter().find(|k| **k == s).copied())
        .unwrap_or_default();
    let verb = match subresource {
        "exec" | "attach" | "portforward" | "proxy" => "CONNECT",
        "" => match resource_verb(method, &t, &q) {
            Some("watch") => "WATCH",
            Some("list") => "LIST",
            Some("get") => "GET",
            Some("create") => "POST",
            Some("update") => "PUT",
            Some("patch") => "PATCH",
            Some("delete") => "DELETE",
            Some("deletecollection") => "DELETECOLLECTION",
            _ => RequestInfo::non_resource(method.as_str()).verb,
        },
        _ => RequestInfo::non_resource(method.as_str()).verb,
    };
    RequestInfo {
        verb,
        group: t.kind.group,
        version: t.kind.version,
        resource: t.kind.plural,
        subresource,
        scope: if t.name.is_some() {
            "resource"
        } else if t.namespace.is_some() {
            "namespace"
        } else {
            "cluster"
        },
        component: "apiserver",
        dry_run: if q.get("dryRun").is_some() { "All" } else { "" },
    }
}

/// Marks a response whose body never ends (watch), so it is passed on as it streams.
#[derive(Debug, Clone, Copy)]
pub struct Streaming;

/// The client's first choice in Accept is YAML (curl users; kubectl asks for JSON).
fn prefers_yaml(headers: &HeaderMap) -> bool {
    accept(headers)
        .split(',')
        .next()
        .map(|p| p.split(';').next().unwrap_or_default().trim())
        .is_some_and(is_yaml)
}

/// Re-encodes a finished JSON response (object, list or Status) as YAML.
async fn to_yaml(resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    if !is_json
        || resp.extensions().get::<Streaming>().is_some()
        || resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return ApiError::internal(format!("reading the response: {e}")).into_response(),
    };
    let yaml = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| serde_saphyr::to_string(&v).ok());
    match yaml {
        Some(y) => {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            );
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(y))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

fn accept(headers: &HeaderMap) -> String {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn route(st: &Arc<AppState>, req: Request) -> ApiResult<Response> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let accept = accept(req.headers());
    let get_only = |v: Option<Value>| -> ApiResult<Response> {
        if req.method() != Method::GET {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        v.map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(ApiError::path_not_found)
    };
    match segs.as_slice() {
        ["api"] => match crate::discovery::aggregated_version(&accept) {
            Some(v) => Ok(aggregated_response(
                crate::discovery::aggregated(true, v),
                v,
            )),
            None => get_only(Some(crate::discovery::api_versions(&st.server_address))),
        },
        ["apis"] => match crate::discovery::aggregated_version(&accept) {
            Some(v) => Ok(aggregated_response(
                crate::discovery::aggregated(false, v),
                v,
            )),
            None => get_only(Some(crate::discovery::api_group_list())),
        },
        ["api", "v1"] => get_only(crate::discovery::resource_list("", "v1")),
        ["apis", g] => get_only(crate::discovery::api_group(g)),
        ["apis", g, v] => get_only(crate::discovery::resource_list(g, v)),
        // kubectl (apply, client-side validation) asks for the gnostic protobuf form only.
        // An empty message is a valid, empty Document: kubectl then takes patch strategies
        // from its compiled-in types and validates on the server (fieldValidation).
        ["openapi", "v2"] if accept.contains("protobuf") && !accept.contains("json") => Ok((
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )],
            Vec::<u8>::new(),
        )
            .into_response()),
        ["openapi", "v2"] => openapi::serve(st, &req, openapi::Which::V2).await,
        ["metrics"] if req.method() == Method::GET => Ok(st.metrics.response()),
        [".well-known", "openid-configuration"] => {
            get_only(Some(crate::sa_token::openid_configuration()))
        }
        ["openid", "v1", "jwks"] => get_only(Some(st.signer.jwks())),
        ["openapi", "v3"] => openapi::serve(st, &req, openapi::Which::V3Index).await,
        ["openapi", "v3", rest @ ..] => {
            openapi::serve(st, &req, openapi::Which::V3(rest.join("/"))).await
        }
        ["api", "v1", rest @ ..] => {
            let t = target("", "v1", rest)?;
            resource(st, t, req).await
        }
        ["apis", g, v, rest @ ..] => {
            let (g, v) = (g.to_string(), v.to_string());
            let t = target(&g, &v, rest)?;
            if events_view::is_view(t.kind) {
                return events_view::serve(st, t, req).await;
            }
            if t.kind.group == "metrics.k8s.io" {
                return crate::resource_metrics::serve(st, t, req).await;
            }
            resource(st, t, req).await
        }
        _ => Err(ApiError::path_not_found()),
    }
}

fn aggregated_response(doc: Value, version: &str) -> Response {
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&ct).unwrap_or(HeaderValue::from_static("application/json")),
        )],
        doc.to_string(),
    )
        .into_response()
}

/// Parses the path below a group/version.
fn target(group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let (watch_path, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let lookup = |plural: &str| {
        kinds::by_resource(group, version, plural).ok_or_else(ApiError::path_not_found)
    };
    let t = |kind, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| Target {
        kind,
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
        sub: sub.map(str::to_string),
        watch_path,
    };
    let target = match rest {
        // namespaces/<ns>/<plural>[/<name>[/<sub>]] unless <plural> is a namespace subresource.
        ["namespaces", ns, plural, more @ ..]
            if group.is_empty() && ["status", "finalize"].contains(plural) && more.is_empty() =>
        {
            t(lookup("namespaces")?, None, Some(ns), Some(plural))
        }
        ["namespaces", ns, plural, more @ ..] => {
            let kind = lookup(plural)?;
            if !kind.namespaced {
                return Err(ApiError::path_not_found());
            }
            match more {
                [] => t(kind, Some(ns), None, None),
                [name] => t(kind, Some(ns), Some(name), None),
                [name, sub, ..] => t(kind, Some(ns), Some(name), Some(sub)),
            }
        }
        [plural] => t(lookup(plural)?, None, None, None),
        [plural, name] => t(lookup(plural)?, None, Some(name), None),
        [plural, name, sub, ..] => t(lookup(plural)?, None, Some(name), Some(sub)),
        [] => return Err(ApiError::path_not_found()),
    };
    if target.kind.namespaced && target.namespace.is_none() && target.name.is_some() {
        return Err(ApiError::path_not_found());
    }
    if let Some(sub) = &target.sub {
        if !target.kind.has_subresource(sub) {
            return Err(ApiError::path_not_found());
        }
    }
    Ok(target)
}

/// Reads the request body, refusing more than [`crate::MAX_BODY`].
pub async fn body_bytes(body: Body) -> ApiResult<bytes::Bytes> {
    match axum::body::to_bytes(body, crate::MAX_BODY + 1).await {
        Ok(b) if b.len() <= crate::MAX_BODY => Ok(b),
        _ => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {}", crate::MAX_BODY),
        )),
    }
}

/// Decodes a JSON, YAML or Kubernetes-protobuf request body into an object.
pub fn decode_body(st: &AppState, headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    decode_typed(&st.proto, ct, body)
}

/// [`decode_body`] for a body of media type `ct`.
pub fn decode_typed(proto: &crate::proto::Schema, ct: &str, body: &[u8]) -> ApiResult<Value> {
    if ct.starts_with("application/vnd.kubernetes.protobuf") {
        return proto.decode_body(body).map_err(|e| match e {
            crate::proto::ProtoError::UnknownType { .. } => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                e.to_string(),
            ),
            e => ApiError::bad_request(format!("the request body is not valid protobuf: {e}")),
        });
    }
    let media = ct.split(';').next().unwrap_or_default().trim();
    match media {
        "" | "application/json" | "*/*" => decode_json(body),
        m if is_yaml(m) => decode_yaml(body),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unsupported format: {ct}; send application/json, application/yaml or application/vnd.kubernetes.protobuf"
            ),
        )),
    }
}

/// Media types clients use for YAML.
pub fn is_yaml(media: &str) -> bool {
    matches!(
        media,
        "application/yaml" | "application/x-yaml" | "text/yaml"
    )
}

/// Decodes a JSON request body into an object.
pub fn decode_json(body: &[u8]) -> ApiResult<Value> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

/// One YAML document as JSON; the error says what and where (line, column).
pub fn decode_yaml_any(body: &[u8]) -> Result<Value, String> {
    serde_saphyr::from_slice(body).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        format!("{}{at}", e.without_snippet())
    })
}

/// Decodes a YAML request body (one document) into an object, as kube-apiserver converts
/// YAML to JSON before decoding.
pub fn decode_yaml(body: &[u8]) -> ApiResult<Value> {
    let v = decode_yaml_any(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a YAML mapping (an object)",
        ));
    }
    Ok(v)
}

async fn resource(st: &Arc<AppState>, t: Target, req: Request) -> ApiResult<Response> {
    let q = Query::parse(req.uri().query()).with_user_agent(
        req.headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    );
    let method = req.method().clone();
    let headers = req.headers().clone();
    let user = req.extensions().get::<UserInfo>().cloned();
    if let Some(sub) = t.sub.clone() {
        return subresources::serve(st, &t, &sub, &q, req).await;
    }
    let Some(verb) = resource_verb(&method, &t, &q) else {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    };
    if !t.kind.allows(verb) {
        return Err(ApiError::method_not_allowed(format!(
            "{} does not support {verb}",
            t.kind.plural
        )));
    }
    let accept = accept(&headers);
    match verb {
        "watch" => watch::serve(st, &t, &q, &accept).await,
        "list" => list::list(st, &t, &q, &accept).await,
        "get" => {
            let name = t.name.as_deref().unwrap_or_default();
            let obj = objects::get(&st.objects, t.kind, t.namespace.as_deref(), name).await?;
            Ok(render_one(&st.objects.crds, t.kind, obj, &accept))
        }
        "create" => {
            let body = body_bytes(req.into_body()).await?;
            let mut obj = decode_body(st, &headers, &body)?;
            match t.kind.kind {
                "SelfSubjectAccessReview"
                | "SubjectAccessReview"
                | "LocalSubjectAccessReview"
                | "SelfSubjectRulesReview"
                | "SelfSubjectReview" => {
                    let u = user.clone().unwrap_or_else(UserInfo::anonymous);
                    let o = crate::authz::review(st, t.kind.kind, t.namespace.as_deref(), &u, obj)
                        .await?;
                    return Ok(json_response(StatusCode::CREATED, &o));
                }
                "TokenReview" => {
                    let token = obj
                        .pointer("/spec/token")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let user = crate::authn::token_user(st, token).await;
                    return Ok(subresources::token_review(obj, user));
                }
                _ => {}
            }
            if let Some(u) = &user {
                skiff_api::strategy::for_kind(t.kind.kind).set_requester(
                    &mut obj,
                    &skiff_api::strategy::Requester {
                        username: &u.username,
                        uid: "",
                        groups: &u.groups,
                    },
                );
            }
            let (obj, warnings) =
                objects::create(&st.objects, t.kind, t.namespace.as_deref(), obj, &q).await?;
            let mut resp = with_warnings(json_response(StatusCode::CREATED, &obj), &warnings);
            // The audit line names the created object (the URL could not: generateName).
            resp.extensions_mut()
                .insert(crate::audit::CreatedName(meta::name(&obj).to_string()));
            Ok(resp)
        }
        "update" => {
            let body = body_bytes(req.into_body()).await?;
            let obj = decode_body(st, &headers, &body)?;
            let name = t.name.as_deref().unwrap_or_default();
            let (obj, warnings) = objects::update(
                &st.objects,
                t.kind,
                t.namespace.as_deref(),
                name,
                obj,
                &q,
                objects::Part::Main,
            )
            .await?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &obj),
                &warnings,
            ))
        }
        "patch" => {
            let body = body_bytes(req.into_body()).await?;
            let name = t.name.as_deref().unwrap_or_default();
            let (obj, warnings, created) = objects::patch_created(
                &st.objects,
                t.kind,
                t.namespace.as_deref(),
                name,
                &headers,
                &body,
                &q,
                objects::Part::Main,
            )
            .await?;
            // A server-side apply that creates answers 201, as for a create.
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(with_warnings(json_response(code, &obj), &warnings))
        }
        "delete" => {
            let body = body_bytes(req.into_body()).await?;
            let opts = delete::DeleteOptions::parse(&q, &body)?;
            let name = t.name.as_deref().unwrap_or_default();
            let (code, obj, warnings) =
                delete::delete_warned(&st.objects, t.kind, t.namespace.as_deref(), name, &opts)
                    .await?;
            Ok(with_warnings(json_response(code, &obj), &warnings))
        }
        "deletecollection" => {
            let body = body_bytes(req.into_body()).await?;
            let opts = delete::DeleteOptions::parse(&q, &body)?;
            let items = list_items(st, t.kind, t.namespace.as_deref(), &q).await?;
            let mut deleted = Vec::new();
            let mut warnings = Vec::new();
            for o in items.items.into_iter().filter_map(Item::into_value) {
                let ns = meta::namespace(&o).map(str::to_string);
                match delete::delete_warned(
                    &st.objects,
                    t.kind,
                    ns.as_deref(),
                    meta::name(&o),
                    &opts,
                )
                .await
                {
                    Ok((_, d, w)) => {
                        deleted.push(d);
                        warnings.extend(w);
                    }
                    // Gone meanwhile, or never deletable (system PriorityClasses).
                    Err(e) if [StatusCode::NOT_FOUND, StatusCode::FORBIDDEN].contains(&e.code) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(with_warnings(
                json_response(
                    StatusCode::OK,
                    &list::list_doc(t.kind, deleted, items.revision, None),
                ),
                &warnings,
            ))
        }
        _ => Err(ApiError::path_not_found()),
    }
}

/// The Kubernetes verb of a request on a resource (not a subresource).
fn resource_verb(method: &Method, t: &Target, q: &Query) -> Option<&'static str> {
    Some(match (method, &t.name) {
        (&Method::GET, _) if t.watch_path || q.flag("watch") && q.get("watch").is_some() => "watch",
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, None) => "create",
        (&Method::PUT, Some(_)) => "update",
        (&Method::PATCH, Some(_)) => "patch",
        (&Method::DELETE, Some(_)) => "delete",
        (&Method::DELETE, None) => "deletecollection",
        _ => return None,
    })
}

pub fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let v = format!("299 - {}", serde_json::Value::String(w.clone()));
        if let Ok(h) = HeaderValue::from_str(&v) {
            resp.headers_mut().append("Warning", h);
        }
    }
    resp
}

/// What the Accept header asks an object or list to be rendered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    Object,
    Table,
    Metadata,
}

pub fn render_kind(accept: &str) -> Render {
    for part in accept.split(',') {
        let p: Vec<&str> = part.split(';').map(str::trim).collect();
        if p.contains(&"g=meta.k8s.io") {
            if p.contains(&"as=Table") {
                return Render::Table;
            }
            if p.iter().any(|s| s.starts_with("as=PartialObjectMetadata")) {
                return Render::Metadata;
            }
        }
        if p.first() == Some(&"application/json") && p.len() == 1 {
            return Render::Object;
        }
    }
    Render::Object
}

fn include_object(q: &Query) -> skiff_api::table::IncludeObject {
    use skiff_api::table::IncludeObject;
    match q.get("includeObject") {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    }
}

pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(Value::Null),
    })
}

fn render_one(crds: &crate::crds::Crds, kind: &Kind, obj: Value, accept: &str) -> Response {
    let v = match render_kind(accept) {
        Render::Object => obj,
        Render::Metadata => partial(&obj),
        Render::Table => {
            let rv = obj.pointer("/metadata/resourceVersion").cloned();
            let mut t = crate::crds::table(
                crds,
                kind,
                std::slice::from_ref(&obj),
                skiff_api::table::IncludeObject::Metadata,
                SystemTime::now(),
            );
            if let Some(rv) = rv {
                t["metadata"]["resourceVersion"] = rv;
            }
            t
        }
    };
    json_response(StatusCode::OK, &v)
}
