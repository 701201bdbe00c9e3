//! `events.k8s.io/v1` Events are a second view of the core/v1 Events, as in Kubernetes:
//! one storage, two shapes. An Event recorded through either group (kube-rs' recorder uses
//! `events.k8s.io/v1`; client-go's and `kubectl describe` use core/v1) is seen through both.
//!
//! The view converts at the edge: request bodies are turned into core Events before the
//! generic handlers see them, responses (objects, lists, watch lines) are turned back, and
//! field selectors are renamed. A patch is applied to the `events.k8s.io/v1` shape, since
//! that is what the client wrote it against, then stored as a core Event.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::Value;
use skiff_api::kinds::{self, Kind};

use super::{body_bytes, decode_body, json_response, objects, resource, with_warnings, Target};
use crate::query::Query;
use crate::status::{ApiError, ApiResult};
use crate::AppState;

const API_VERSION: &str = "events.k8s.io/v1";

/// Fields that differ between the two shapes: (events.k8s.io/v1, core/v1).
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

/// Whether `kind` is the `events.k8s.io/v1` Event this module serves.
pub(super) fn is_view(kind: &Kind) -> bool {
    kind.group == "events.k8s.io" && kind.kind == "Event"
}

fn core_kind() -> ApiResult<&'static Kind> {
    kinds::by_resource("", "v1", "events").ok_or_else(ApiError::path_not_found)
}

pub(super) async fn serve(st: &Arc<AppState>, t: Target, req: Request) -> ApiResult<Response> {
    let core = core_kind()?;
    let core_t = Target {
        kind: core,
        ..t.clone()
    };
    let q = Query::parse(req.uri().query());
    let watch = t.watch_path || (req.method() == Method::GET && q.flag("watch"));
    let (mut parts, body) = req.into_parts();
    if let Some(pq) = parts.uri.query() {
        let renamed = rename_selectors(pq);
        if renamed != pq {
            parts.uri = Uri::builder()
                .path_and_query(format!("{}?{renamed}", parts.uri.path()))
                .build()
                .map_err(|e| ApiError::bad_request(format!("the request URL: {e}")))?;
        }
    }
    let req = match parts.method {
        Method::PATCH => {
            let body = body_bytes(body).await?;
            return patch(st, &t, core, &parts.headers, &body, &q).await;
        }
        Method::POST | Method::PUT => {
            let bytes = body_bytes(body).await?;
            let obj = to_core(decode_body(st, &parts.headers, &bytes)?)?;
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            parts.headers.remove(header::CONTENT_LENGTH);
            Request::from_parts(parts, Body::from(obj.to_string()))
        }
        _ => Request::from_parts(parts, body),
    };
    let resp = resource(st, core_t, req).await?;
    if watch {
        Ok(convert_stream(resp))
    } else {
        convert_response(resp).await
    }
}

/// Field selectors name `events.k8s.io/v1` fields; the core list knows the core names.
fn rename_selectors(query: &str) -> String {
    query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some(("fieldSelector", sel)) => format!(
                "fieldSelector={}",
                sel.replace("regarding.", "involvedObject.")
                    .replace("reportingController", "reportingComponent")
                    .replace("deprecatedSource.", "source.")
            ),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// An `events.k8s.io/v1` Event as the core Event that stores it.
fn to_core(mut v: Value) -> ApiResult<Value> {
    let Some(m) = v.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    if let Some(av) = m.get("apiVersion").and_then(Value::as_str) {
        if av != API_VERSION {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({API_VERSION})"
            )));
        }
    }
    if let Some(k) = m.get("kind").and_then(Value::as_str) {
        if k != "Event" {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind (Event)"
            )));
        }
    }
    for (v1, core) in RENAMED {
        // A core field name in a v1 body is an unknown field there; drop it rather than let
        // it overwrite the converted value.
        m.remove(*core);
        if let Some(x) = m.remove(*v1) {
            m.insert((*core).into(), x);
        }
    }
    m.insert("apiVersion".into(), "v1".into());
    m.insert("kind".into(), "Event".into());
    Ok(v)
}

/// A stored core Event in the `events.k8s.io/v1` shape.
fn to_v1(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        for (v1, core) in RENAMED {
            m.remove(*v1);
            if let Some(x) = m.remove(*core) {
                m.insert((*v1).into(), x);
            }
        }
        m.insert("apiVersion".into(), API_VERSION.into());
    }
    v
}

/// Objects and lists get the v1 shape; Tables, Status and metadata-only answers are the
/// same for both groups and pass through.
fn convert_doc(mut v: Value) -> Value {
    match v.get("kind").and_then(Value::as_str) {
        Some("Event") => to_v1(v),
        Some("EventList") => {
            if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
                for it in items.iter_mut() {
                    *it = to_v1(std::mem::take(it));
                }
            }
            v["apiVersion"] = API_VERSION.into();
            v
        }
        _ => v,
    }
}

async fn convert_response(resp: Response) -> ApiResult<Response> {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::internal(format!("reading the events response: {e}")))?;
    let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(Response::from_parts(parts, Body::from(bytes)));
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(
        parts,
        Body::from(convert_doc(doc).to_string()),
    ))
}

/// Converts a watch stream line by line (`{"type":…,"object":…}` per line).
fn convert_stream(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let mut pending: Vec<u8> = Vec::new();
    let lines = body.into_data_stream().map(move |chunk| {
        let chunk = chunk?;
        pending.extend_from_slice(&chunk);
        let mut out = Vec::new();
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            match serde_json::from_slice::<Value>(&line) {
                Ok(mut ev) => {
                    if let Some(obj) = ev.get_mut("object") {
                        *obj = convert_doc(std::mem::take(obj));
                    }
                    out.extend_from_slice(ev.to_string().as_bytes());
                    out.push(b'\n');
                }
                Err(_) => out.extend_from_slice(&line),
            }
        }
        Ok::<_, axum::Error>(bytes::Bytes::from(out))
    });
    Response::from_parts(parts, Body::from_stream(lines))
}

async fn patch(
    st: &Arc<AppState>,
    t: &Target,
    core: &'static Kind,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    q: &Query,
) -> ApiResult<Response> {
    let name = t.name.as_deref().unwrap_or_default();
    let ns = t.namespace.as_deref();
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ptype = skiff_api::patch::PatchType::from_content_type(ct)
        .filter(|p| *p != skiff_api::patch::PatchType::Apply)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("the body of the request was in an unsupported format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"),
            )
        })?;
    let pins_rv = serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.pointer("/metadata/resourceVersion").is_some());
    for _ in 0..16 {
        let current = to_v1(objects::get(&st.objects, core, ns, name).await?);
        let patched = objects::apply_patch(t.kind, name, &current, ptype, body)?;
        if crate::meta::name(&patched) != name {
            return Err(ApiError::bad_request(
                "the patch may not change metadata.name",
            ));
        }
        match objects::update(
            &st.objects,
            core,
            ns,
            name,
            to_core(patched)?,
            q,
            objects::Part::Main,
        )
        .await
        {
            Err(e) if e.reason == "Conflict" && !pins_rv => continue,
            r => {
                let (obj, warnings) = r?;
                return Ok(with_warnings(
                    json_response(StatusCode::OK, &to_v1(obj)),
                    &warnings,
                ));
            }
        }
    }
    Err(ApiError::conflict("events.k8s.io", "events", name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_convert_both_ways() {
        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "pulled",
            "reason": "Pulled", "type": "Normal", "action": "Pull",
            "reportingController": "skiff/kubelet", "reportingInstance": "node-1",
            "eventTime": "2026-01-01T00:00:00.000000Z", "deprecatedCount": 3,
        });
        let core = to_core(v1.clone()).unwrap();
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "pulled");
        assert_eq!(core["reportingComponent"], "skiff/kubelet");
        assert_eq!(core["count"], 3);
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        assert_eq!(to_v1(core), v1);
    }

    #[test]
    fn wrong_group_or_kind_is_refused() {
        let e = to_core(json!({"apiVersion": "v1", "kind": "Event"})).unwrap_err();
        assert!(e.message.contains("events.k8s.io/v1"), "{}", e.message);
        let e = to_core(json!({"apiVersion": "events.k8s.io/v1", "kind": "Pod"})).unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn field_selectors_are_renamed() {
        assert_eq!(
            rename_selectors("limit=5&fieldSelector=regarding.name%3Dp%2CreportingController%3Dk"),
            "limit=5&fieldSelector=involvedObject.name%3Dp%2CreportingComponent%3Dk"
        );
    }
}
