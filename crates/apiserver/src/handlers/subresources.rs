//! Subresources: status, approval (CertificateSigningRequests), scale (autoscaling/v1 Scale), pods/binding, pods/eviction,
//! serviceaccounts/token, namespaces/finalize, and the access review everyone passes.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use skiff_api::kinds::Kind;

use super::objects::{self, Part};
use super::{body_bytes, decode_body, json_response, Target};
use crate::meta;
use crate::query::Query;
use crate::status::{ApiError, ApiResult};
use crate::AppState;

fn success(code: StatusCode) -> Response {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code.as_u16()}),
    )
}

pub async fn serve(
    st: &Arc<AppState>,
    t: &Target,
    sub: &str,
    q: &Query,
    req: Request,
) -> ApiResult<Response> {
    let kind = t.kind;
    let ns = t.namespace.as_deref();
    let name = t.name.clone().unwrap_or_default();
    let method = req.method().clone();
    let headers = req.headers().clone();
    match (sub, &method) {
        ("status" | "approval", &Method::GET) => Ok(json_response(
            StatusCode::OK,
            &objects::get(&st.objects, kind, ns, &name).await?,
        )),
        ("status" | "approval", &Method::PUT) => {
            let body = body_bytes(req.into_body()).await?;
            let obj = decode_body(st, &headers, &body)?;
            let part = if sub == "status" {
                Part::Status
            } else {
                Part::Approval
            };
            let (o, w) = objects::update(&st.objects, kind, ns, &name, obj, q, part).await?;
            Ok(super::with_warnings(json_response(StatusCode::OK, &o), &w))
        }
        ("status" | "approval", &Method::PATCH) => {
            let part = if sub == "status" {
                Part::Status
            } else {
                Part::Approval
            };
            let body = body_bytes(req.into_body()).await?;
            let (o, w) =
                objects::patch(&st.objects, kind, ns, &name, &headers, &body, q, part).await?;
            Ok(super::with_warnings(json_response(StatusCode::OK, &o), &w))
        }
        ("scale", &Method::GET) => {
            let obj = objects::get(&st.objects, kind, ns, &name).await?;
            Ok(json_response(StatusCode::OK, &scale_of(st, kind, &obj)?))
        }
        ("scale", &Method::PUT) | ("scale", &Method::PATCH) => {
            let body = body_bytes(req.into_body()).await?;
            let obj = objects::get(&st.objects, kind, ns, &name).await?;
            let current = scale_of(st, kind, &obj)?;
            let scale = if method == Method::PUT {
                decode_body(st, &headers, &body)?
            } else {
                let ct = headers
                    .get(axum::http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let pt = skiff_api::patch::PatchType::from_content_type(ct).ok_or_else(|| {
                    ApiError::bad_request(format!("unsupported patch type {ct:?}"))
                })?;
                skiff_api::patch::apply_patch(
                    "io.k8s.api.autoscaling.v1.Scale",
                    &current,
                    pt,
                    &body,
                )
                .map_err(|e| ApiError::bad_request(e.to_string()))?
            };
            let replicas = scale
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "Scale",
                    "autoscaling",
                    &name,
                    vec![crate::Cause::invalid(
                        "spec.replicas",
                        &replicas.to_string(),
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            if let Some(rv) =
                meta::str_at(&scale, "/metadata/resourceVersion").filter(|s| !s.is_empty())
            {
                if Some(rv) != meta::str_at(&obj, "/metadata/resourceVersion") {
                    return Err(ApiError::conflict(kind.group, kind.plural, &name));
                }
            }
            let mut updated = obj.clone();
            match st.objects.crds.get(kind).and_then(|c| c.scale.clone()) {
                Some(paths) => skiff_api::crd::set_replicas(&mut updated, &paths, replicas),
                None => updated["spec"]["replicas"] = json!(replicas),
            }
            let (o, _) = objects::update(
                &st.objects,
                kind,
                ns,
                &name,
                updated,
                // The caller's fieldManager / User-Agent own the new replica count.
                q,
                Part::Main,
            )
            .await?;
            Ok(json_response(StatusCode::OK, &scale_of(st, kind, &o)?))
        }
        ("binding", &Method::POST) => {
            let body = body_bytes(req.into_body()).await?;
            let b = decode_body(st, &headers, &body)?;
            bind(st, kind, ns, &name, &b).await?;
            Ok(success(StatusCode::CREATED))
        }
        ("eviction", &Method::POST) => {
            let body = body_bytes(req.into_body()).await?;
            super::eviction::evict(st, kind, ns, &name, q, &headers, &body).await?;
            Ok(success(StatusCode::CREATED))
        }
        ("token", &Method::POST) => {
            let body = body_bytes(req.into_body()).await?;
            let mut tr = if body.is_empty() {
                json!({})
            } else {
                decode_body(st, &headers, &body)?
            };
            // NodeRestriction: a node's tokens are bound to its own pods.
            crate::node_authz::admit(
                &st.objects,
                kind,
                "token",
                "CREATE",
                ns,
                &name,
                Some(&tr),
                None,
            )
            .await?;
            let sa = objects::get(&st.objects, kind, ns, &name).await?;
            let secs = tr
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(3600);
            let ns = ns.unwrap_or_default();
            let invalid = |field: &str, value: &str, why: &str| {
                ApiError::invalid(
                    "TokenRequest",
                    "authentication.k8s.io",
                    &name,
                    vec![crate::status::Cause::invalid_raw(field, value, why)],
                )
            };
            if secs < 600 {
                return Err(invalid(
                    "spec.expirationSeconds",
                    &secs.to_string(),
                    "may not specify a duration less than 10 minutes",
                ));
            }
            if secs > 1 << 32 {
                return Err(invalid(
                    "spec.expirationSeconds",
                    &secs.to_string(),
                    "may not specify a duration larger than 2^32 seconds",
                ));
            }
            // The object the token is bound to must exist with the uid named.
            let bound = match tr.pointer("/spec/boundObjectRef") {
                Some(r) if r.is_object() => {
                    let bkind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
                    if !["Pod", "Secret"].contains(&bkind) {
                        return Err(invalid(
                            "spec.boundObjectRef.kind",
                            &format!("{bkind:?}"),
                            "supported values: \"Pod\", \"Secret\"",
                        ));
                    }
                    let bname = r
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let k = skiff_api::kinds::by_kind("v1", bkind)
                        .ok_or_else(ApiError::path_not_found)?;
                    let o = objects::get(&st.objects, k, Some(ns), &bname).await?;
                    let uid = meta::str_at(&o, "/metadata/uid")
                        .unwrap_or_default()
                        .to_string();
                    if let Some(want) = r.get("uid").and_then(Value::as_str) {
                        if !want.is_empty() && want != uid {
                            return Err(ApiError::conflict(
                                "",
                                &format!("{}s", bkind.to_lowercase()),
                                &bname,
                            ));
                        }
                    }
                    Some((bkind.to_string(), bname, uid))
                }
                _ => None,
            };
            let audiences: Vec<String> = tr
                .pointer("/spec/audiences")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .filter(|a: &Vec<String>| !a.is_empty())
                .unwrap_or_else(|| vec![crate::sa_token::ISSUER.to_string()]);
            let now = crate::sa_token::unix_now();
            let claims = crate::sa_token::claims(
                ns,
                &name,
                meta::str_at(&sa, "/metadata/uid").unwrap_or_default(),
                bound
                    .as_ref()
                    .map(|(k, n, u)| (k.as_str(), n.as_str(), u.as_str())),
                &audiences,
                now,
                secs,
            );
            let exp = std::time::UNIX_EPOCH + std::time::Duration::from_secs((now + secs) as u64);
            tr["apiVersion"] = json!("authentication.k8s.io/v1");
            tr["kind"] = json!("TokenRequest");
            meta::default_at(&mut tr, &["metadata", "name"], json!(name));
            meta::default_at(&mut tr, &["metadata", "namespace"], json!(ns));
            meta::default_at(&mut tr, &["metadata", "creationTimestamp"], Value::Null);
            tr["spec"]["audiences"] = json!(audiences);
            tr["spec"]["expirationSeconds"] = json!(secs);
            tr["status"] = json!({
                "token": st.signer.sign(&claims),
                "expirationTimestamp": meta::rfc3339(exp),
            });
            Ok(json_response(StatusCode::CREATED, &tr))
        }
        ("finalize", &Method::PUT) => {
            let body = body_bytes(req.into_body()).await?;
            let obj = decode_body(st, &headers, &body)?;
            let mut cur = objects::get(&st.objects, kind, ns, &name).await?;
            cur["spec"]["finalizers"] = obj
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            let (o, _) = objects::update(
                &st.objects,
                kind,
                ns,
                &name,
                cur,
                &Query::default(),
                Part::Main,
            )
            .await?;
            Ok(json_response(StatusCode::OK, &o))
        }
        ("log" | "exec" | "attach" | "portforward", _) if kind.kind == "Pod" => {
            super::proxy::serve(st, t, sub, req).await
        }
        ("proxy", _) if kind.kind == "Node" => super::proxy::serve_node(st, t, req).await,
        ("log" | "exec" | "attach" | "portforward" | "proxy", _) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "{}/{sub} needs the node's kubelet, which this server does not run yet",
                kind.plural
            ),
        )),
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on {}/{sub}",
            kind.plural
        ))),
    }
}

/// `pods/binding`, as kube's BindingREST: the pod gets `spec.nodeName`, the binding's
/// annotations and `PodScheduled=True` in one write, retried on conflicts. A pod that is
/// being deleted, is already bound or still has scheduling gates is refused (409).
async fn bind(
    st: &AppState,
    kind: &'static Kind,
    ns: Option<&str>,
    name: &str,
    binding: &Value,
) -> ApiResult<()> {
    let node = meta::str_at(binding, "/target/name").unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "Binding",
            "",
            name,
            vec![crate::Cause::required("target.name")],
        ));
    }
    let refuse = |why: String| {
        ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on pods/binding {name:?}: {why}"),
        )
    };
    for _ in 0..16 {
        let (pod, rev) = objects::get_kv(&st.objects, kind, ns, name).await?;
        if let Some(uid) = meta::str_at(binding, "/metadata/uid").filter(|u| !u.is_empty()) {
            let have = meta::str_at(&pod, "/metadata/uid").unwrap_or_default();
            if uid != have {
                return Err(refuse(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                )));
            }
        }
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(refuse(format!(
                "pod {name} is being deleted, cannot be assigned to a host"
            )));
        }
        if let Some(n) = meta::str_at(&pod, "/spec/nodeName").filter(|n| !n.is_empty()) {
            return Err(refuse(format!(
                "pod {name} is already assigned to node {n:?}"
            )));
        }
        if pod
            .pointer("/spec/schedulingGates")
            .and_then(Value::as_array)
            .is_some_and(|g| !g.is_empty())
        {
            return Err(refuse(format!(
                "pod {name} has non-empty .spec.schedulingGates"
            )));
        }
        let mut p = pod.clone();
        p["spec"]["nodeName"] = json!(node);
        if let Some(a) = binding
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
        {
            for (k, v) in a {
                meta::default_at(&mut p, &["metadata", "annotations"], json!({}));
                p["metadata"]["annotations"][k] = v.clone();
            }
        }
        set_condition(&mut p, "PodScheduled", "True");
        // The pod as read is the object written over: no second read, no schema walk
        // of a body that came from the store.
        match objects::write_update(&st.objects, kind, ns, name, &pod, p, rev, Part::All, false)
            .await
        {
            Err(e) if e.reason == "Conflict" => continue,
            r => return r.map(|_| ()),
        }
    }
    Err(ApiError::conflict(kind.group, kind.plural, name))
}

/// kube's `UpdatePodCondition`: the condition becomes `{type, status}`, its
/// lastTransitionTime now unless the status stays the same.
fn set_condition(pod: &mut Value, type_: &str, status: &str) {
    meta::default_at(pod, &["status", "conditions"], json!([]));
    let Some(conds) = pod
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    let old = conds
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(type_));
    let since = match old.map(|i| &conds[i]) {
        Some(c) if c.get("status").and_then(Value::as_str) == Some(status) => c
            .get("lastTransitionTime")
            .cloned()
            .unwrap_or_else(|| json!(meta::now())),
        _ => json!(meta::now()),
    };
    let cond = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    match old {
        Some(i) => conds[i] = cond,
        None => conds.push(cond),
    }
}

/// The autoscaling/v1 Scale view of a workload.
/// The Scale of an object: a custom kind's from its CRD's scale paths.
fn scale_of(st: &AppState, kind: &Kind, obj: &Value) -> ApiResult<Value> {
    match st.objects.crds.get(kind).and_then(|c| c.scale.clone()) {
        Some(paths) => skiff_api::crd::scale(obj, &paths).map_err(ApiError::internal),
        None => Ok(to_scale(kind, obj)),
    }
}

fn to_scale(kind: &Kind, obj: &Value) -> Value {
    let md = obj.get("metadata").cloned().unwrap_or_default();
    // An RC's selector is the label map itself; the apps kinds' is a LabelSelector,
    // written out in the query-string form (matchExpressions included), as kube does.
    let selector = if kind.kind == "ReplicationController" {
        obj.pointer("/spec/selector")
            .and_then(Value::as_object)
            .map(|m| {
                let mut pairs: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect();
                pairs.sort();
                pairs.join(",")
            })
            .unwrap_or_default()
    } else {
        obj.pointer("/spec/selector")
            .and_then(|s| skiff_api::selector::LabelSelector::from_object(s).ok())
            .filter(|s| !s.matches_nothing())
            .map(|s| s.to_string())
            .unwrap_or_default()
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": md.get("name"), "namespace": md.get("namespace"), "uid": md.get("uid"),
            "resourceVersion": md.get("resourceVersion"), "creationTimestamp": md.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// The admin is allowed everything until RBAC lands.
/// `tokenreviews` (create only): whether `spec.token` authenticates, and as whom, as
/// kube-apiserver answers webhook authenticators such as the kubelet's.
pub fn token_review(mut obj: Value, user: Result<crate::audit::UserInfo, String>) -> Response {
    obj["status"] = match user {
        Ok(u) => {
            let mut user = json!({"username": u.username, "groups": u.groups});
            if !u.uid.is_empty() {
                user["uid"] = json!(u.uid);
            }
            if !u.extra.is_empty() {
                user["extra"] = json!(u.extra);
            }
            json!({"authenticated": true, "user": user,
                "audiences": [crate::sa_token::ISSUER]})
        }
        Err(why) => json!({"authenticated": false, "error": why}),
    };
    if obj.pointer("/spec/token").is_some() {
        // Not echoed back: the answer may be logged.
        obj["spec"]["token"] = json!("");
    }
    meta::default_at(&mut obj, &["metadata", "creationTimestamp"], Value::Null);
    json_response(StatusCode::CREATED, &obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_selector_carries_match_expressions() {
        let dep = skiff_api::kinds::by_kind("apps/v1", "Deployment").unwrap();
        let obj = json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}},
            "status": {"replicas": 2}});
        let s = to_scale(dep, &obj);
        assert_eq!(s["status"]["selector"], "app=web,tier in (a,b)");
        let rc = skiff_api::kinds::by_kind("v1", "ReplicationController").unwrap();
        let obj = json!({"metadata": {"name": "web"}, "spec": {"selector": {"b": "2", "a": "1"}}});
        assert_eq!(to_scale(rc, &obj)["status"]["selector"], "a=1,b=2");
    }
}
