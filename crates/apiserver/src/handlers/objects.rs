//! Object lifecycle: create, get, update (main resource or status), patch and delete
//! with Kubernetes' semantics — server-set metadata, defaulting, validation, optimistic
//! concurrency, finalizers and deletion propagation.

use axum::http::{header, HeaderMap, StatusCode};
use serde_json::{json, Value};
use skiff_api::kinds::{self, Kind};
use skiff_store::{Revision, Store, StoreError};

use crate::meta;
use crate::query::Query;
use crate::status::{ApiError, ApiResult, Cause};
use crate::AppState;

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything but status (for kinds with a status subresource).
    Main,
    /// Only status.
    Status,
}

pub(super) const BUILTIN_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

pub(super) fn ns_kind() -> &'static Kind {
    kinds::by_resource("", "v1", "namespaces").expect("namespaces are served")
}

/// Creates the built-in namespaces (and the `kubernetes` service) if missing.
pub async fn bootstrap(store: &dyn Store) -> Result<(), StoreError> {
    let kind = ns_kind();
    for ns in BUILTIN_NAMESPACES {
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        stamp_new(kind, &mut obj);
        crate::defaults::apply("Namespace", &mut obj);
        match store
            .create(&meta::key(kind, None, ns), obj.to_string().into_bytes(), 0)
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let svc = kinds::by_resource("", "v1", "services").expect("services are served");
    let mut obj = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": "10.43.0.1", "clusterIPs": ["10.43.0.1"], "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
    });
    stamp_new(svc, &mut obj);
    crate::defaults::apply("Service", &mut obj);
    match store
        .create(
            &meta::key(svc, Some("default"), "kubernetes"),
            obj.to_string().into_bytes(),
            0,
        )
        .await
    {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Server-set metadata of a new object.
fn stamp_new(kind: &Kind, obj: &mut Value) {
    let md = meta::metadata_mut(obj);
    md.insert("uid".into(), json!(meta::uid()));
    md.insert("creationTimestamp".into(), json!(meta::now()));
    md.remove("resourceVersion");
    md.remove("deletionTimestamp");
    md.remove("deletionGracePeriodSeconds");
    md.remove("selfLink");
    if has_generation(kind) {
        md.insert("generation".into(), json!(1));
    } else {
        md.remove("generation");
    }
}

/// Kinds whose spec changes bump metadata.generation.
fn has_generation(kind: &Kind) -> bool {
    !matches!(
        kind.kind,
        "ConfigMap"
            | "Secret"
            | "Event"
            | "Endpoints"
            | "EndpointSlice"
            | "Lease"
            | "ServiceAccount"
            | "ControllerRevision"
    )
}

/// The part of an object whose change bumps generation: everything but metadata and status.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

fn has_status(kind: &Kind) -> bool {
    kind.has_subresource("status")
}

fn group_res(kind: &Kind) -> (&'static str, &'static str) {
    (kind.group, kind.plural)
}

pub async fn get(st: &AppState, kind: &Kind, ns: Option<&str>, name: &str) -> ApiResult<Value> {
    get_kv(st, kind, ns, name).await.map(|(v, _)| v)
}

pub(super) async fn get_kv(
    st: &AppState,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
) -> ApiResult<(Value, Revision)> {
    let (g, r) = group_res(kind);
    let res = st.store.get(&meta::key(kind, ns, name), None).await?;
    let kv = res.kv.ok_or_else(|| ApiError::not_found(g, r, name))?;
    let mut obj = crate::raw::decode(&kv.value, kv.mod_revision)
        .ok_or_else(|| ApiError::internal(format!("stored object {} is not valid JSON", kv.key)))?;
    // One storage for several versions (autoscaling v1/v2): answer in the one asked for.
    obj["apiVersion"] = json!(kind.api_version());
    Ok((obj, kv.mod_revision))
}

/// Checks the object's apiVersion/kind against the URL and fills them in when missing.
fn check_type(kind: &Kind, obj: &mut Value) -> ApiResult<()> {
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let k = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if k.is_empty() {
        obj["kind"] = json!(kind.kind);
    } else if k != kind.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the body ({k}) does not match the expected kind ({}) of {}; post {k} objects to its own resource path",
            kind.kind, kind.plural
        )));
    }
    if api_version.is_empty() {
        obj["apiVersion"] = json!(kind.api_version());
    } else if api_version != kind.api_version() {
        let (g, _) = kinds::split_api_version(&api_version);
        // Same group, other served version of the kind: store in the URL's version.
        if g != kind.group || kinds::by_kind(&api_version, kind.kind).is_none() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                kind.api_version()
            )));
        }
        obj["apiVersion"] = json!(kind.api_version());
    }
    Ok(())
}

/// Refuses fields whose JSON type does not fit the kind (400, as kube's decoding does).
fn check_shapes(st: &AppState, kind: &Kind, obj: &Value) -> ApiResult<()> {
    match crate::validate::type_error(kind, obj, &st.definitions) {
        None => Ok(()),
        Some((_, msg)) => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {msg}",
            kind.kind,
            kind.api_version(),
            kind.kind
        ))),
    }
}

/// Applies `fieldValidation` (Strict: 400, Warn: warnings, Ignore: nothing).
fn field_validation(st: &AppState, kind: &Kind, obj: &Value, q: &Query) -> ApiResult<Vec<String>> {
    let mode = q.get("fieldValidation").unwrap_or("Warn");
    if mode == "Ignore" {
        return Ok(Vec::new());
    }
    let unknown = crate::validate::unknown_fields(kind, obj, &st.definitions);
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    match mode {
        "Strict" => {
            let list: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field {f:?}"))
                .collect();
            Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                kind.kind,
                kind.api_version(),
                kind.kind,
                list.join(", ")
            )))
        }
        "Warn" => Ok(unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect()),
        other => Err(ApiError::bad_request(format!(
            "invalid fieldValidation {other:?}: use Strict, Warn or Ignore"
        ))),
    }
}

fn invalid(kind: &Kind, obj: &Value, causes: Vec<Cause>) -> ApiResult<()> {
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            kind.kind,
            kind.group,
            meta::name(obj),
            causes,
        ))
    }
}

async fn check_namespace(st: &AppState, ns: &str, creating: bool) -> ApiResult<()> {
    let kind = ns_kind();
    let res = st.store.get(&meta::key(kind, None, ns), None).await?;
    let Some(kv) = res.kv else {
        return Err(ApiError::not_found("", "namespaces", ns));
    };
    if creating {
        let v: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if v.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ));
        }
    }
    Ok(())
}

pub async fn create(
    st: &AppState,
    kind: &Kind,
    ns: Option<&str>,
    mut obj: Value,
    q: &Query,
) -> ApiResult<(Value, Vec<String>)> {
    check_type(kind, &mut obj)?;
    check_shapes(st, kind, &obj)?;
    let warnings = field_validation(st, kind, &obj, q)?;
    if kind.namespaced {
        let ns = ns.ok_or_else(ApiError::path_not_found)?;
        match meta::namespace(&obj) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {}
        }
        meta::metadata_mut(&mut obj).insert("namespace".into(), json!(ns));
        check_namespace(st, ns, true).await?;
    } else {
        meta::metadata_mut(&mut obj).remove("namespace");
    }
    if meta::str_at(&obj, "/metadata/resourceVersion").is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let generate = meta::name(&obj)
        .is_empty()
        .then(|| meta::str_at(&obj, "/metadata/generateName").map(str::to_string))
        .flatten();
    stamp_new(kind, &mut obj);
    // Status is the controllers' to write; a create starts from the kind's initial status.
    if has_status(kind) && kind.kind != "Namespace" {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    let dry_run = q.get("dryRun") == Some("All");
    for attempt in 0..8 {
        let mut o = obj.clone();
        if let Some(g) = &generate {
            meta::metadata_mut(&mut o)
                .insert("name".into(), json!(format!("{g}{}", meta::name_suffix())));
        }
        if kind.kind == "Job" {
            job_selector(&mut o);
        }
        crate::defaults::apply(kind.kind, &mut o);
        if kind.kind == "Pod" {
            crate::defaults::pod_admission(&mut o);
        }
        invalid(kind, &o, crate::validate::object(kind, &o))?;
        let _guard = if kind.kind == "Service" {
            let g = st.alloc.lock().await;
            allocate_service(st, &mut o).await?;
            Some(g)
        } else {
            None
        };
        let name = meta::name(&o).to_string();
        let key = meta::key(kind, ns, &name);
        if dry_run {
            return Ok((o, warnings));
        }
        let lease = st.event_leases.for_write(st, kind).await?;
        match st
            .store
            .create(&key, o.to_string().into_bytes(), lease)
            .await
        {
            Err(StoreError::LeaseNotFound { lease }) if attempt < 7 => {
                st.event_leases.forget(lease).await;
                continue;
            }
            Ok(rev) => {
                meta::metadata_mut(&mut o).insert("resourceVersion".into(), json!(rev.to_string()));
                return Ok((o, warnings));
            }
            Err(StoreError::AlreadyExists { .. }) if generate.is_some() && attempt < 7 => continue,
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(ApiError::already_exists(kind.group, kind.plural, &name))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal(
        "could not generate a unique name; try again",
    ))
}

/// Jobs select their pods by the job's uid, as kube's job strategy does.
fn job_selector(obj: &mut Value) {
    if obj.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return;
    }
    let uid = meta::str_at(obj, "/metadata/uid")
        .unwrap_or_default()
        .to_string();
    let name = meta::name(obj).to_string();
    let labels = json!({
        "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
        "controller-uid": uid, "job-name": name,
    });
    if obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        meta::default_at(obj, &["spec", "template", "metadata", "labels"], json!({}));
        if let Some(m) = obj
            .pointer_mut("/spec/template/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            for (k, v) in labels.as_object().into_iter().flatten() {
                m.insert(k.clone(), v.clone());
            }
        }
    }
}

/// ClusterIP from 10.43.0.0/16 and node ports from 30000–32767, avoiding those in use.
async fn allocate_service(st: &AppState, obj: &mut Value) -> ApiResult<()> {
    let ty = meta::str_at(obj, "/spec/type")
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "ExternalName" {
        return Ok(());
    }
    let svc = kinds::by_resource("", "v1", "services").expect("services are served");
    let all = st
        .store
        .list(&meta::kind_prefix(svc), &Default::default())
        .await?;
    let mut ips = std::collections::HashSet::new();
    let mut node_ports = std::collections::HashSet::new();
    for kv in all.kvs {
        let v: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if let Some(ip) = meta::str_at(&v, "/spec/clusterIP") {
            ips.insert(ip.to_string());
        }
        for p in v
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                node_ports.insert(n);
            }
        }
    }
    let requested = meta::str_at(obj, "/spec/clusterIP")
        .unwrap_or("")
        .to_string();
    if requested.is_empty() {
        // .1 is the kubernetes service, .10 by convention cluster DNS.
        let ip = (11u32..65_534)
            .map(|n| format!("10.43.{}.{}", n / 256, n % 256))
            .find(|ip| !ips.contains(ip))
            .ok_or_else(|| ApiError::internal("the service IP range 10.43.0.0/16 is full"))?;
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
    } else if requested == "None" {
        obj["spec"]["clusterIPs"] = json!(["None"]);
    } else {
        let ok = requested
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.octets()[0] == 10 && a.octets()[1] == 43);
        if !ok {
            return Err(ApiError::invalid(
                "Service",
                "",
                meta::name(obj),
                vec![Cause::invalid(
                    "spec.clusterIPs[0]",
                    &requested,
                    "provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16",
                )],
            ));
        }
        if ips.contains(&requested) {
            return Err(ApiError::invalid(
                "Service",
                "",
                meta::name(obj),
                vec![Cause::invalid(
                    "spec.clusterIPs",
                    &requested,
                    "failed to allocate IP: provided IP is already allocated",
                )],
            ));
        }
        obj["spec"]["clusterIPs"] = json!([requested]);
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        if let Some(Value::Array(ports)) = obj.pointer_mut("/spec/ports") {
            let mut next = 30000i64;
            for p in ports {
                if p.get("nodePort").and_then(Value::as_i64).is_none() {
                    while node_ports.contains(&next) {
                        next += 1;
                    }
                    if next > 32767 {
                        return Err(ApiError::internal(
                            "the node port range 30000-32767 is full",
                        ));
                    }
                    p["nodePort"] = json!(next);
                    node_ports.insert(next);
                }
            }
        }
    }
    Ok(())
}

/// Update the whole object (`Part::Main`) or its status.
pub async fn update(
    st: &AppState,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    mut obj: Value,
    q: &Query,
    part: Part,
) -> ApiResult<(Value, Vec<String>)> {
    check_type(kind, &mut obj)?;
    check_shapes(st, kind, &obj)?;
    let warnings = field_validation(st, kind, &obj, q)?;
    if meta::name(&obj) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta::name(&obj)
        )));
    }
    if let (Some(ns), Some(n)) = (ns, meta::namespace(&obj)) {
        if !n.is_empty() && n != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    let (old, old_rev) = get_kv(st, kind, ns, name).await?;
    let expected = match meta::str_at(&obj, "/metadata/resourceVersion").filter(|s| !s.is_empty()) {
        Some(rv) => {
            let rv: Revision = rv.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {rv:?}: must be a number"))
            })?;
            if rv != old_rev {
                return Err(ApiError::conflict(kind.group, kind.plural, name));
            }
            rv
        }
        None => old_rev,
    };
    let dry_run = q.get("dryRun") == Some("All");
    let new = write_update(st, kind, ns, name, &old, obj, expected, part, dry_run).await?;
    Ok((new, warnings))
}

/// Merges `incoming` over `old` per `part`, defaults, validates and writes guarded by
/// `expected`. Returns the stored object.
#[allow(clippy::too_many_arguments)]
async fn write_update(
    st: &AppState,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    old: &Value,
    incoming: Value,
    expected: Revision,
    part: Part,
    dry_run: bool,
) -> ApiResult<Value> {
    let mut new = match part {
        Part::Status => {
            let mut n = old.clone();
            n["status"] = incoming.get("status").cloned().unwrap_or(Value::Null);
            if n["status"].is_null() {
                if let Some(m) = n.as_object_mut() {
                    m.remove("status");
                }
            }
            n
        }
        Part::Main => {
            let mut n = incoming;
            if has_status(kind) {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            n
        }
    };
    // Server-owned metadata always comes from the stored object.
    {
        let old_md = old.get("metadata").cloned().unwrap_or_default();
        let md = meta::metadata_mut(&mut new);
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old_md.get(k) {
                Some(v) => {
                    md.insert(k.into(), v.clone());
                }
                None => {
                    md.remove(k);
                }
            }
        }
        md.remove("resourceVersion");
        md.remove("selfLink");
    }
    crate::defaults::apply(kind.kind, &mut new);
    if kind.kind == "Pod" {
        crate::defaults::pod_admission(&mut new);
    }
    if part == Part::Main {
        let mut causes = crate::validate::object(kind, &new);
        causes.extend(crate::validate::immutable(kind, old, &new));
        invalid(kind, &new, causes)?;
        if kind.kind == "Service" && meta::str_at(&new, "/spec/clusterIP").is_none() {
            for k in ["clusterIP", "clusterIPs"] {
                if let Some(v) = old.pointer(&format!("/spec/{k}")) {
                    new["spec"][k] = v.clone();
                }
            }
        }
    }
    if has_generation(kind) && spec_part(&new) != spec_part(old) {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta::metadata_mut(&mut new).insert("generation".into(), json!(g));
    }
    let mut old_cmp = old.clone();
    meta::metadata_mut(&mut old_cmp).remove("resourceVersion");
    if old_cmp == new {
        // No change: kube-apiserver skips the write, the resourceVersion stays.
        return Ok(old.clone());
    }
    if dry_run {
        return Ok(new);
    }
    let key = meta::key(kind, ns, name);
    // A terminating object whose last finalizer went away is removed now.
    let finalizers_empty = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty());
    if new.pointer("/metadata/deletionTimestamp").is_some()
        && finalizers_empty
        && kind.kind != "Namespace"
    {
        let kv = st
            .store
            .delete(&key, Some(expected))
            .await
            .map_err(|e| map_write(kind, name, e))?;
        let _ = kv;
        let rev = st.store.current_revision().await?;
        meta::metadata_mut(&mut new).insert("resourceVersion".into(), json!(rev.to_string()));
        return Ok(new);
    }
    // Every write of an Event restarts its TTL, as in kube-apiserver.
    let lease = st.event_leases.for_write(st, kind).await?;
    let kv = match st
        .store
        .update(&key, new.to_string().into_bytes(), Some(expected), lease)
        .await
    {
        Err(StoreError::LeaseNotFound { lease }) => {
            // The shared lease expired unused between writes: take a new one, once.
            st.event_leases.forget(lease).await;
            let lease = st.event_leases.for_write(st, kind).await?;
            st.store
                .update(&key, new.to_string().into_bytes(), Some(expected), lease)
                .await
        }
        r => r,
    }
    .map_err(|e| map_write(kind, name, e))?;
    meta::metadata_mut(&mut new)
        .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    Ok(new)
}

pub(super) fn map_write(kind: &Kind, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict { .. } => ApiError::conflict(kind.group, kind.plural, name),
        StoreError::NotFound { .. } => ApiError::not_found(kind.group, kind.plural, name),
        e => e.into(),
    }
}

/// PATCH of the main resource or status; retried on conflicts unless the patch pins a
/// resourceVersion.
#[allow(clippy::too_many_arguments)]
pub async fn patch(
    st: &AppState,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
    q: &Query,
    part: Part,
) -> ApiResult<(Value, Vec<String>)> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ptype = skiff_api::patch::PatchType::from_content_type(ct).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"),
        )
    })?;
    if ptype == skiff_api::patch::PatchType::Apply {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "server-side apply is not supported yet; use client-side `kubectl apply` (without --server-side)",
        ));
    }
    let body = &*patch_json(body)?;
    let dry_run = q.get("dryRun") == Some("All");
    for _ in 0..16 {
        let (old, old_rev) = get_kv(st, kind, ns, name).await?;
        let patched = apply_patch(kind, name, &old, ptype, body)?;
        if !patched.is_object() {
            return Err(ApiError::bad_request("the patch result is not an object"));
        }
        let mut patched = patched;
        check_type(kind, &mut patched)?;
        check_shapes(st, kind, &patched)?;
        let warnings = field_validation(st, kind, &patched, q)?;
        if meta::name(&patched) != name {
            return Err(ApiError::bad_request(
                "the patch may not change metadata.name",
            ));
        }
        let pinned = meta::str_at(&patched, "/metadata/resourceVersion")
            .filter(|rv| *rv != old_rev.to_string())
            .map(str::to_string);
        if pinned.is_some() {
            return Err(ApiError::conflict(kind.group, kind.plural, name));
        }
        match write_update(st, kind, ns, name, &old, patched, old_rev, part, dry_run).await {
            Err(e) if e.reason == "Conflict" && !body_pins_rv(body) => continue,
            r => return r.map(|o| (o, warnings)),
        }
    }
    Err(ApiError::conflict(kind.group, kind.plural, name))
}

/// The patch body as JSON: patches may be written in YAML (a superset of JSON), as
/// `kubectl patch -p` accepts them; a body that is neither gets both parsers' errors.
fn patch_json(body: &[u8]) -> ApiResult<std::borrow::Cow<'_, [u8]>> {
    let json_err = match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) => return Ok(body.into()),
        Err(e) => e,
    };
    match crate::handlers::decode_yaml_any(body) {
        Ok(v) => Ok(v.to_string().into_bytes().into()),
        Err(yaml_err) => Err(ApiError::bad_request(format!(
            "the patch body is neither valid JSON ({json_err}) nor valid YAML ({yaml_err})"
        ))),
    }
}

/// Applies a patch to `current` (an object of `kind` named `name`) by the kind's schema:
/// a malformed patch is a 400, one that does not fit the object a 422.
pub(super) fn apply_patch(
    kind: &Kind,
    name: &str,
    current: &Value,
    ptype: skiff_api::patch::PatchType,
    body: &[u8],
) -> ApiResult<Value> {
    skiff_api::patch::apply_patch(kind.openapi_name, current, ptype, body).map_err(|e| match e {
        skiff_api::patch::PatchError::Malformed(_) => ApiError::bad_request(e.to_string()),
        e => ApiError::invalid(
            kind.kind,
            kind.group,
            name,
            vec![Cause {
                reason: "FieldValueInvalid",
                field: String::new(),
                message: e.to_string(),
            }],
        ),
    })
}

fn body_pins_rv(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/metadata/resourceVersion").cloned())
        .is_some()
}
