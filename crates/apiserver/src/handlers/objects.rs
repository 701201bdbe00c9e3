//! Object lifecycle: create, get, update (main resource or status), patch and delete
//! with Kubernetes' semantics — server-set metadata, defaulting, validation, optimistic
//! concurrency, finalizers and deletion propagation — plus field ownership: every write
//! records its field manager in `metadata.managedFields`, and PATCH with
//! `application/apply-patch+yaml` is server-side apply (see `skiff_api::managed`).

use axum::http::{header, HeaderMap, StatusCode};
use serde_json::{json, Value};
use skiff_api::kinds::{self, Kind};
use skiff_api::strategy;
use skiff_store::{Revision, Store, StoreError};

use crate::meta;
use crate::query::Query;
use crate::status::{ApiError, ApiResult, Cause};
use crate::Objects;

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything but status (for kinds with a status subresource).
    Main,
    /// Only status.
    Status,
    /// The approval conditions (the `approval` subresource of CertificateSigningRequests).
    Approval,
    /// Spec and status in one write (pods/binding: `spec.nodeName` with the
    /// `PodScheduled` condition), validated as an update of the main resource.
    All,
}

pub(super) const BUILTIN_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

pub(crate) fn ns_kind() -> &'static Kind {
    kinds::by_resource("", "v1", "namespaces").expect("namespaces are served")
}

/// Creates the built-in namespaces and the `default/kubernetes` Service if missing (the
/// Service with the range's first address and this server's port as its target), and
/// brings the address allocations in line with the stored Services.
pub async fn bootstrap(
    store: &dyn Store,
    alloc: &crate::alloc::Allocator,
    port: u16,
) -> Result<(), ApiError> {
    let kind = ns_kind();
    for ns in BUILTIN_NAMESPACES {
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        stamp_new(kind, &mut obj);
        strategy::for_kind("Namespace").default(&mut obj);
        match store
            .create(&meta::key(kind, None, ns), obj.to_string().into_bytes(), 0)
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    super::priority::bootstrap(store).await?;
    let svc = kinds::by_resource("", "v1", "services").expect("services are served");
    crate::alloc::repair(store, &meta::kind_prefix(svc)).await?;
    let key = meta::key(svc, Some("default"), "kubernetes");
    let ip = alloc.config.kubernetes_service_ip().to_string();
    for _ in 0..5 {
        match store.get(&key, None).await?.kv {
            None => {
                let mut obj = json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                    "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
                });
                stamp_new(svc, &mut obj);
                strategy::for_kind("Service").default(&mut obj);
                match alloc.create(store, &key, &mut obj, false).await? {
                    Ok(_) | Err(StoreError::AlreadyExists { .. }) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
            Some(kv) => {
                // Point the Service at the port this server really listens on.
                let Ok(old) = serde_json::from_slice::<Value>(&kv.value) else {
                    return Ok(());
                };
                if old.pointer("/spec/ports/0/targetPort") == Some(&json!(port)) {
                    return Ok(());
                }
                let mut new = old.clone();
                new["spec"]["ports"][0]["targetPort"] = json!(port);
                match alloc
                    .update(store, &key, &old, &mut new, kv.mod_revision, false)
                    .await?
                {
                    Ok(_) => return Ok(()),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

/// Server-set metadata of a new object.
pub(super) fn stamp_new(kind: &Kind, obj: &mut Value) {
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
    strategy::for_kind(kind.kind).has_generation()
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

pub async fn get(st: &Objects, kind: &Kind, ns: Option<&str>, name: &str) -> ApiResult<Value> {
    get_kv(st, kind, ns, name).await.map(|(v, _)| v)
}

pub(super) async fn get_kv(
    st: &Objects,
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
    skiff_api::convert::to_version(&mut obj, &kind.api_version());
    Ok((obj, kv.mod_revision))
}

/// Every object stored under `prefix`, decoded (what does not decode is left out).
pub(crate) async fn list_values(store: &dyn Store, prefix: &str) -> ApiResult<Vec<Value>> {
    // In pages of 1,000 at one revision: etcd's client refuses responses over 4 MiB, which
    // 20,000 pods exceed (a server could not start on such a store).
    let mut out = Vec::new();
    let mut opts = skiff_store::ListOptions {
        revision: None,
        limit: Some(1000),
        continue_after: None,
    };
    loop {
        let res = store.list(prefix, &opts).await?;
        out.extend(
            res.kvs
                .iter()
                .filter_map(|kv| serde_json::from_slice(&kv.value).ok()),
        );
        match res.kvs.last() {
            Some(last) if res.more => {
                opts.revision = Some(res.revision);
                opts.continue_after = Some(last.key.clone());
            }
            _ => return Ok(out),
        }
    }
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
fn check_shapes(st: &Objects, kind: &Kind, obj: &Value) -> ApiResult<()> {
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
fn field_validation(st: &Objects, kind: &Kind, obj: &Value, q: &Query) -> ApiResult<Vec<String>> {
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

async fn check_namespace(st: &Objects, ns: &str, creating: bool) -> ApiResult<()> {
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
    st: &Objects,
    kind: &Kind,
    ns: Option<&str>,
    obj: Value,
    q: &Query,
) -> ApiResult<(Value, Vec<String>)> {
    let manager = field_manager(q, "CreateOptions")?;
    create_with(st, kind, ns, obj, q, Some(&manager)).await
}

/// A create; `manager` records the created fields as its (None: the object already
/// carries its managedFields, as a server-side apply that creates).
async fn create_with(
    st: &Objects,
    kind: &Kind,
    ns: Option<&str>,
    mut obj: Value,
    q: &Query,
    manager: Option<&str>,
) -> ApiResult<(Value, Vec<String>)> {
    // Writes through a kind stored in another version are converted to it and back.
    let Some(skind) = skiff_api::convert::storage_kind(kind) else {
        return create_as(st, kind, ns, obj, q, manager).await;
    };
    // Checked in the version sent, then created in the storage version.
    check_type(kind, &mut obj)?;
    check_shapes(st, kind, &obj)?;
    let mut warnings = field_validation(st, kind, &obj, q)?;
    skiff_api::convert::to_version(&mut obj, &skind.api_version());
    let (mut created, more) = create_as(st, skind, ns, obj, q, manager).await?;
    warnings.extend(more);
    skiff_api::convert::to_version(&mut created, &kind.api_version());
    Ok((created, warnings))
}

async fn create_as(
    st: &Objects,
    kind: &Kind,
    ns: Option<&str>,
    mut obj: Value,
    q: &Query,
    manager: Option<&str>,
) -> ApiResult<(Value, Vec<String>)> {
    check_type(kind, &mut obj)?;
    check_shapes(st, kind, &obj)?;
    let mut warnings = field_validation(st, kind, &obj, q)?;
    let custom = st.crds.get(kind);
    if let Some(c) = &custom {
        warnings.extend(crate::crds::prune_and_default(c, &mut obj));
    }
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
    let strategy = strategy::for_kind(kind.kind);
    if has_status(kind) && strategy.resets_status_on_create() {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    super::priority::admit(st, kind, &mut obj, true).await?;
    super::storage::admit(st, kind, &mut obj).await?;
    let dry_run = q.get("dryRun") == Some("All");
    for attempt in 0..8 {
        let mut o = obj.clone();
        if let Some(g) = &generate {
            meta::metadata_mut(&mut o)
                .insert("name".into(), json!(format!("{g}{}", meta::name_suffix())));
        }
        strategy.prepare_for_create(&mut o);
        strategy.default(&mut o);
        strategy.admit(&mut o, &st.alloc.config);
        if let Some(m) = manager {
            record(kind, None, &mut o, m, Part::Main);
        }
        invalid(kind, &o, strategy::validate(kind.kind, &o))?;
        if let Some(c) = &custom {
            invalid(kind, &o, crate::crds::validate(c, &o, None))?;
        }
        if kind.group == "rbac.authorization.k8s.io" {
            crate::authz::check_grant(&st.authz, kind.kind, &o, None)?;
        }
        let name = meta::name(&o).to_string();
        let request = crate::admission::Request {
            kind,
            subresource: "",
            operation: "CREATE",
            namespace: ns,
            name: &name,
            dry_run,
        };
        let admitted = crate::admission::admit(st, &request, Some(&mut o), None).await?;
        warnings.extend(admitted.warnings);
        if admitted.mutated {
            invalid(kind, &o, strategy::validate(kind.kind, &o))?;
        }
        let key = meta::key(kind, ns, &name);
        if kind.kind == "Service" {
            // Addresses are allocated in the same store transaction as the create.
            match st.alloc.create(&*st.store, &key, &mut o, dry_run).await? {
                Ok(rev) => {
                    if !dry_run {
                        meta::metadata_mut(&mut o)
                            .insert("resourceVersion".into(), json!(rev.to_string()));
                    }
                    return Ok((o, warnings));
                }
                Err(StoreError::AlreadyExists { .. }) if generate.is_some() && attempt < 7 => {
                    continue
                }
                Err(StoreError::AlreadyExists { .. }) => {
                    return Err(ApiError::already_exists(kind.group, kind.plural, &name))
                }
                Err(e) => return Err(e.into()),
            }
        }
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

/// Update the whole object (`Part::Main`) or its status.
pub async fn update(
    st: &Objects,
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
    let manager = field_manager(q, "UpdateOptions")?;
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
    record(kind, Some(&old), &mut obj, &manager, part);
    let (new, more) =
        write_update_warned(st, kind, ns, name, &old, obj, expected, part, dry_run).await?;
    Ok((new, [warnings, more].concat()))
}

/// Merges `incoming` over `old` per `part`, defaults, validates, admits and writes
/// guarded by `expected`. Returns the stored object.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_update(
    st: &Objects,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    old: &Value,
    incoming: Value,
    expected: Revision,
    part: Part,
    dry_run: bool,
) -> ApiResult<Value> {
    write_update_warned(st, kind, ns, name, old, incoming, expected, part, dry_run)
        .await
        .map(|(new, _)| new)
}

/// [`write_update`] with the admission webhooks' warnings.
#[allow(clippy::too_many_arguments)]
async fn write_update_warned(
    st: &Objects,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    old: &Value,
    incoming: Value,
    expected: Revision,
    part: Part,
    dry_run: bool,
) -> ApiResult<(Value, Vec<String>)> {
    let mut warnings = Vec::new();
    let new = write_update_inner(
        st,
        kind,
        ns,
        name,
        old,
        incoming,
        expected,
        part,
        dry_run,
        &mut warnings,
    )
    .await?;
    Ok((new, warnings))
}

#[allow(clippy::too_many_arguments)]
async fn write_update_inner(
    st: &Objects,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    old: &Value,
    incoming: Value,
    expected: Revision,
    part: Part,
    dry_run: bool,
    warnings: &mut Vec<String>,
) -> ApiResult<Value> {
    if let Some(skind) = skiff_api::convert::storage_kind(kind) {
        let (mut old, mut incoming) = (old.clone(), incoming);
        let version = skind.api_version();
        skiff_api::convert::to_version(&mut old, &version);
        skiff_api::convert::to_version(&mut incoming, &version);
        let mut new = Box::pin(write_update_inner(
            st, skind, ns, name, &old, incoming, expected, part, dry_run, warnings,
        ))
        .await?;
        skiff_api::convert::to_version(&mut new, &kind.api_version());
        return Ok(new);
    }
    let strategy = strategy::for_kind(kind.kind);
    // The subresources' prepare starts from the stored object: keep the managedFields
    // the write recorded.
    let managed = incoming.pointer("/metadata/managedFields").cloned();
    let mut new = incoming;
    match part {
        Part::Status => strategy.prepare_for_status_update(&mut new, old),
        Part::Main => {
            if has_status(kind) {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            strategy.prepare_for_update(&mut new, old);
        }
        Part::Approval => strategy.prepare_for_approval_update(&mut new, old),
        Part::All => strategy.prepare_for_update(&mut new, old),
    }
    if matches!(part, Part::Status | Part::Approval) {
        if let Some(m) = managed.and_then(|m| m.as_array().cloned()) {
            set_managed(&mut new, m);
        }
    }
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
    let custom = st.crds.get(kind);
    if let Some(c) = &custom {
        crate::crds::prune_and_default(c, &mut new);
    }
    strategy.default(&mut new);
    strategy.admit(&mut new, &st.alloc.config);
    if let Some(c) = &custom {
        invalid(kind, &new, crate::crds::validate(c, &new, Some(old)))?;
    }
    if kind.group == "rbac.authorization.k8s.io" && matches!(part, Part::Main | Part::All) {
        crate::authz::check_grant(&st.authz, kind.kind, &new, Some(old))?;
    }
    if matches!(part, Part::Status | Part::Approval) {
        invalid(
            kind,
            &new,
            strategy::validate_status_update(kind.kind, old, &new),
        )?;
    } else {
        super::priority::admit(st, kind, &mut new, false).await?;
        invalid(kind, &new, strategy::validate_update(kind.kind, old, &new))?;
    }
    // pods/binding (Part::All) is a CREATE of a Binding in kube: not sent as an update.
    let subresource = match part {
        Part::Main => Some(""),
        Part::Status => Some("status"),
        Part::Approval => Some("approval"),
        Part::All => None,
    };
    if let Some(subresource) = subresource {
        let request = crate::admission::Request {
            kind,
            subresource,
            operation: "UPDATE",
            namespace: ns,
            name,
            dry_run,
        };
        let admitted = crate::admission::admit(st, &request, Some(&mut new), Some(old)).await?;
        warnings.extend(admitted.warnings);
        if admitted.mutated {
            let causes = if subresource.is_empty() {
                strategy::validate_update(kind.kind, old, &new)
            } else {
                strategy::validate_status_update(kind.kind, old, &new)
            };
            invalid(kind, &new, causes)?;
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
    if unchanged(old, &new) {
        // No change: kube-apiserver skips the write, the resourceVersion stays; a write
        // that would only move a manager's timestamp is no change either (kube's
        // IgnoreManagedFieldsTimestampsTransformer), or controllers re-writing an
        // unchanged status would make an event per attempt.
        return Ok(old.clone());
    }
    let key = meta::key(kind, ns, name);
    // A terminating object whose last finalizer went away is removed now.
    let finalizers_empty = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty());
    // ... unless it is being deleted gracefully: then the grace period runs out first
    // (its owner, a kubelet, deletes it with grace 0).
    let grace = new
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    // A namespace also waits for its `spec.finalizers` (the namespace controller's
    // `kubernetes`, removed through `finalize` once the namespace is empty).
    let spec_finalizers_empty = new
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty());
    let remove = new.pointer("/metadata/deletionTimestamp").is_some()
        && finalizers_empty
        && grace == 0
        && (!strategy.terminates_before_delete() || spec_finalizers_empty);
    if kind.kind == "Service" && !remove {
        // Addresses the update gains or drops change in the same transaction.
        let rev = st
            .alloc
            .update(&*st.store, &key, old, &mut new, expected, dry_run)
            .await?
            .map_err(|e| map_write(kind, name, e))?;
        if !dry_run {
            meta::metadata_mut(&mut new).insert("resourceVersion".into(), json!(rev.to_string()));
        }
        return Ok(new);
    }
    if dry_run {
        return Ok(new);
    }
    if remove {
        let rev = crate::alloc::delete_with_holdings(&*st.store, kind.kind, &key, expected, old)
            .await
            .map_err(|e| map_write(kind, name, e))?;
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
    st: &Objects,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
    q: &Query,
    part: Part,
) -> ApiResult<(Value, Vec<String>)> {
    patch_created(st, kind, ns, name, headers, body, q, part)
        .await
        .map(|(o, w, _)| (o, w))
}

/// [`patch`], also saying whether the patch (a server-side apply) created the object.
#[allow(clippy::too_many_arguments)]
pub async fn patch_created(
    st: &Objects,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
    q: &Query,
    part: Part,
) -> ApiResult<(Value, Vec<String>, bool)> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ptype = skiff_api::patch::PatchType::from_content_type(ct).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {ct:?})"),
        )
    })?;
    if ptype == skiff_api::patch::PatchType::Apply {
        return server_side_apply(st, kind, ns, name, body, q, part).await;
    }
    if q.get("force").is_some() {
        return Err(patch_options_invalid(Cause {
            reason: "FieldValueForbidden",
            field: "force".into(),
            message: "Forbidden: may not be specified for non-apply patch".into(),
        }));
    }
    let manager = field_manager(q, "PatchOptions")?;
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
        record(kind, Some(&old), &mut patched, &manager, part);
        match write_update_warned(st, kind, ns, name, &old, patched, old_rev, part, dry_run).await {
            Err(e) if e.reason == "Conflict" && !body_pins_rv(body) => continue,
            r => return r.map(|(o, more)| (o, [warnings, more].concat(), false)),
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

// ---------------------------------------------------------------------------------------
// Field ownership (managedFields) and server-side apply; see `skiff_api::managed`.

/// Longest `fieldManager` kube-apiserver accepts.
const FIELD_MANAGER_MAX_LENGTH: usize = 128;

fn options_invalid(options_kind: &str, cause: Cause) -> ApiError {
    ApiError::invalid(options_kind, "meta.k8s.io", "", vec![cause])
}

fn patch_options_invalid(cause: Cause) -> ApiError {
    options_invalid("PatchOptions", cause)
}

/// Checks `?fieldManager=` as kube-apiserver does (at most 128 bytes, printable).
fn validate_field_manager(m: &str, options_kind: &str) -> ApiResult<()> {
    if m.len() > FIELD_MANAGER_MAX_LENGTH {
        return Err(options_invalid(
            options_kind,
            Cause {
                reason: "FieldValueTooLong",
                field: "fieldManager".into(),
                message: format!("Too long: may not be more than {FIELD_MANAGER_MAX_LENGTH} bytes"),
            },
        ));
    }
    if let Some((i, c)) = m.char_indices().find(|(_, c)| c.is_control()) {
        return Err(options_invalid(
            options_kind,
            Cause {
                reason: "FieldValueInvalid",
                field: "fieldManager".into(),
                message: format!(
                    "Invalid value: {m:?}: invalid character U+{:04X} (at position {i})",
                    c as u32
                ),
            },
        ));
    }
    Ok(())
}

/// The manager a write is recorded for: `?fieldManager=`, else the User-Agent up to its
/// first `/` (`kubectl-create/v1.33.0 (linux/amd64) …` → `kubectl-create`).
fn field_manager(q: &Query, options_kind: &str) -> ApiResult<String> {
    if let Some(m) = q.value("fieldManager") {
        validate_field_manager(m, options_kind)?;
        return Ok(m.to_string());
    }
    let ua = q.user_agent().unwrap_or_default();
    Ok(ua.split('/').next().unwrap_or_default().to_string())
}

fn managed_scope(kind: &Kind, part: Part) -> skiff_api::managed::Scope {
    use skiff_api::managed::Scope;
    match part {
        Part::Main if has_status(kind) => Scope::Main,
        Part::Main | Part::All => Scope::Whole,
        Part::Status => Scope::Subresource("status"),
        Part::Approval => Scope::Subresource("approval"),
    }
}

/// Whether `new` is `old` but for `old`'s resourceVersion and the `time` of managedFields
/// entries (no-op detection; compared in place, nothing cloned).
fn unchanged(old: &Value, new: &Value) -> bool {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return old == new;
    };
    if o.len() != n.len() {
        return false;
    }
    o.iter().all(|(k, ov)| match n.get(k) {
        None => false,
        Some(nv) if k == "metadata" => same_metadata(ov, nv),
        Some(nv) => ov == nv,
    })
}

fn same_metadata(old: &Value, new: &Value) -> bool {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return old == new;
    };
    let counted = o.len() - usize::from(o.contains_key("resourceVersion"));
    if counted != n.len() {
        return false;
    }
    o.iter()
        .filter(|(k, _)| *k != "resourceVersion")
        .all(|(k, ov)| match n.get(k) {
            None => false,
            Some(nv) if k == "managedFields" => same_entries(ov, nv),
            Some(nv) => ov == nv,
        })
}

/// managedFields lists equal but for their entries' `time`.
fn same_entries(old: &Value, new: &Value) -> bool {
    let (Some(o), Some(n)) = (old.as_array(), new.as_array()) else {
        return old == new;
    };
    o.len() == n.len()
        && o.iter()
            .zip(n)
            .all(|(a, b)| match (a.as_object(), b.as_object()) {
                (Some(a), Some(b)) => {
                    let len = |m: &serde_json::Map<String, Value>| {
                        m.len() - usize::from(m.contains_key("time"))
                    };
                    len(a) == len(b)
                        && a.iter()
                            .filter(|(k, _)| *k != "time")
                            .all(|(k, v)| b.get(k) == Some(v))
                }
                _ => a == b,
            })
}

fn set_managed(obj: &mut Value, managed: Vec<Value>) {
    let md = meta::metadata_mut(obj);
    if managed.is_empty() {
        md.remove("managedFields");
    } else {
        md.insert("managedFields".into(), Value::Array(managed));
    }
}

/// Records a create (`old` None) or update of `new` by `manager` in its managedFields.
fn record(kind: &Kind, old: Option<&Value>, new: &mut Value, manager: &str, part: Part) {
    let base = skiff_api::managed::base_entries(old, new);
    let time = meta::now();
    let api_version = kind.api_version();
    let w = skiff_api::managed::Writer {
        manager,
        api_version: &api_version,
        time: &time,
        openapi_name: Some(kind.openapi_name),
        scope: managed_scope(kind, part),
    };
    let managed = skiff_api::managed::on_update(&base, old, new, &w);
    set_managed(new, managed);
}

fn apply_conflict(e: skiff_api::managed::ApplyConflicts) -> ApiError {
    let causes: Vec<Value> = e
        .causes()
        .into_iter()
        .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
        .collect();
    ApiError {
        details: Some(json!({"causes": causes})),
        ..ApiError::new(StatusCode::CONFLICT, "Conflict", e.to_string())
    }
}

/// PATCH with `application/apply-patch+yaml`: merges the applied configuration as
/// `fieldManager`'s (conflicts are a 409 unless `force=true`), creating the object if
/// it does not exist (then the flag is true).
async fn server_side_apply(
    st: &Objects,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    body: &[u8],
    q: &Query,
    part: Part,
) -> ApiResult<(Value, Vec<String>, bool)> {
    let manager = q.get("fieldManager").unwrap_or_default();
    if manager.is_empty() {
        return Err(patch_options_invalid(Cause {
            reason: "FieldValueRequired",
            field: "fieldManager".into(),
            message: "Required value: is required for apply patch".into(),
        }));
    }
    validate_field_manager(manager, "PatchOptions")?;
    let force = q.flag("force");
    let mut applied: Value = serde_json::from_slice(&patch_json(body)?)
        .map_err(|e| ApiError::bad_request(format!("the apply body is not valid: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the apply body must be an object (a mapping)",
        ));
    }
    check_type(kind, &mut applied)?;
    match meta::name(&applied) {
        "" => {
            meta::metadata_mut(&mut applied).insert("name".into(), json!(name));
        }
        n if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
        _ => {}
    }
    let api_version = kind.api_version();
    let dry_run = q.get("dryRun") == Some("All");
    for _ in 0..16 {
        let live = match get_kv(st, kind, ns, name).await {
            Ok(l) => Some(l),
            Err(e) if e.code == StatusCode::NOT_FOUND && part == Part::Main => None,
            Err(e) => return Err(e),
        };
        let time = meta::now();
        let w = skiff_api::managed::Writer {
            manager,
            api_version: &api_version,
            time: &time,
            openapi_name: Some(kind.openapi_name),
            scope: managed_scope(kind, part),
        };
        let Some((old, rev)) = live else {
            let (mut obj, managed) = skiff_api::managed::apply(None, &[], &applied, force, &w)
                .map_err(apply_conflict)?;
            set_managed(&mut obj, managed);
            match create_with(st, kind, ns, obj, q, None).await {
                Err(e) if e.reason == "AlreadyExists" => continue,
                r => return r.map(|(o, w)| (o, w, true)),
            }
        };
        let managed = old
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let (mut obj, managed) =
            skiff_api::managed::apply(Some(&old), &managed, &applied, force, &w)
                .map_err(apply_conflict)?;
        set_managed(&mut obj, managed);
        check_type(kind, &mut obj)?;
        check_shapes(st, kind, &obj)?;
        let warnings = field_validation(st, kind, &obj, q)?;
        match write_update_warned(st, kind, ns, name, &old, obj, rev, part, dry_run).await {
            Err(e) if e.reason == "Conflict" => continue,
            r => return r.map(|(o, more)| (o, [warnings, more].concat(), false)),
        }
    }
    Err(ApiError::conflict(kind.group, kind.plural, name))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::unchanged;

    fn obj(
        rv: Option<&str>,
        time: &str,
        label: &str,
        fields: serde_json::Value,
    ) -> serde_json::Value {
        let mut o = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "a",
                "labels": {"l": label},
                "managedFields": [{"manager": "m", "operation": "Update", "time": time, "fieldsV1": fields}],
            },
            "data": {"k": "v"},
        });
        if let Some(rv) = rv {
            o["metadata"]["resourceVersion"] = json!(rv);
        }
        o
    }

    #[test]
    fn a_write_that_only_moves_times_or_the_old_revision_is_no_change() {
        let f = json!({"f:data": {"f:k": {}}});
        let old = obj(Some("5"), "2026-01-01T00:00:00Z", "x", f.clone());
        assert!(unchanged(
            &old,
            &obj(None, "2026-01-01T00:00:00Z", "x", f.clone())
        ));
        assert!(unchanged(
            &old,
            &obj(None, "2027-01-01T00:00:00Z", "x", f.clone())
        ));
        assert!(!unchanged(
            &old,
            &obj(None, "2026-01-01T00:00:00Z", "y", f.clone())
        ));
        assert!(!unchanged(
            &old,
            &obj(Some("5"), "2026-01-01T00:00:00Z", "x", f.clone())
        ));
        let g = json!({"f:data": {"f:k": {}, "f:j": {}}});
        assert!(!unchanged(&old, &obj(None, "2026-01-01T00:00:00Z", "x", g)));
        let mut more = obj(None, "2026-01-01T00:00:00Z", "x", f);
        more["data"]["j"] = json!("w");
        assert!(!unchanged(&old, &more));
    }
}
