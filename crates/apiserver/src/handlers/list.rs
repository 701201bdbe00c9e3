//! LIST: reads objects from the store, filters them by label and field selectors and
//! answers in pages (limit/continue). Plain lists are written from the stored bytes with
//! each item's resourceVersion spliced in (see [`crate::raw`]); only selectors, Tables and
//! PartialObjectMetadata decode the objects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use skiff_api::kinds::Kind;
use skiff_store::{ListOptions, Revision, StoreError};

use super::{include_object, json_response, partial, render_kind, Render, Target};
use crate::meta;
use crate::query::Query;
use crate::raw;
use crate::status::{ApiError, ApiResult, Cause};
use crate::watch_cache::ObjectView;
use crate::AppState;

/// Objects read from the store per call. Reads are paged at the first page's revision, so
/// the list stays consistent; a single read of 20k pods (30 MB) exceeds what an etcd
/// client takes in one gRPC message (4 MiB by default). Pages shrink when even one is too
/// big (large objects).
const STORE_PAGE: usize = 1000;

/// One listed object: its stored bytes, decoded only when something needs the fields.
pub struct Item {
    pub key: String,
    json: Vec<u8>,
    rv: Revision,
    /// Where the resourceVersion goes, when the bytes can be spliced as they are.
    splice: Option<raw::Splice>,
    /// The decoded object (with resourceVersion), when decoding was needed anyway.
    value: Option<Value>,
}

impl Item {
    /// `None` if the stored value is not a JSON object (it is left out of lists).
    fn new(key: String, json: Vec<u8>, rv: Revision, kind: &Kind) -> Option<Item> {
        let mut item = Item {
            key,
            splice: raw::scan(&json),
            json,
            rv,
            value: None,
        };
        let same_version = item
            .splice
            .is_some_and(|sp| sp.api_version(&item.json) == kind.api_version().as_bytes());
        if !same_version {
            // One storage for several versions (autoscaling v1/v2): answer in the one
            // asked for, as a get does.
            let mut v = raw::decode(&item.json, rv)?;
            skiff_api::convert::to_version(&mut v, &kind.api_version());
            item.splice = None;
            item.value = Some(v);
        }
        Some(item)
    }

    /// The object's name (the last segment of its key).
    pub fn name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or_default()
    }

    fn decoded(&mut self) -> Option<&Value> {
        if self.value.is_none() {
            self.value = raw::decode(&self.json, self.rv);
        }
        self.value.as_ref()
    }

    pub fn into_value(mut self) -> Option<Value> {
        self.decoded()?;
        self.value
    }

    /// Appends the object's JSON (with resourceVersion) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match (&self.value, self.splice) {
            (Some(v), _) => {
                // Writing a Value into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, v);
            }
            (None, Some(sp)) => raw::write_spliced(out, &self.json, sp, self.rv),
            (None, None) => {
                raw::write_with_rv(out, &self.json, self.rv);
            }
        }
    }

    /// Whether `filter` selects this object, decoding no more than the filter needs.
    fn selected(&mut self, filter: &Filter) -> bool {
        if filter.is_empty() {
            return true;
        }
        if filter.fields.is_empty() && self.value.is_none() {
            if let Some(labels) = labels_only(&self.json) {
                return filter.labels.matches(&labels);
            }
        }
        match self.decoded() {
            Some(v) => filter.matches(v),
            None => false,
        }
    }
}

/// `metadata.labels` of a stored object without decoding the rest; `None` when the
/// object's shape needs the general path.
fn labels_only(json: &[u8]) -> Option<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Obj {
        metadata: Option<Md>,
    }
    #[derive(serde::Deserialize)]
    struct Md {
        labels: Option<BTreeMap<String, Value>>,
    }
    let o: Obj = serde_json::from_slice(json).ok()?;
    Some(
        o.metadata
            .and_then(|m| m.labels)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect(),
    )
}

pub struct Listed {
    pub items: Vec<Item>,
    pub revision: Revision,
    pub continue_token: Option<String>,
}

pub(super) fn list_doc(
    kind: &Kind,
    items: Vec<Value>,
    rev: Revision,
    cont: Option<String>,
) -> Value {
    json!({
        "kind": format!("{}List", kind.kind),
        "apiVersion": kind.api_version(),
        "metadata": list_meta(rev, cont),
        "items": items,
    })
}

fn list_meta(rev: Revision, cont: Option<String>) -> Value {
    let mut md = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        md["continue"] = json!(c);
    }
    md
}

/// The `<Kind>List` document written straight from the items' bytes.
fn raw_list_doc(kind: &Kind, listed: &Listed) -> Vec<u8> {
    let size: usize = listed.items.iter().map(|i| i.json.len() + 40).sum();
    let mut out = Vec::with_capacity(size + 256);
    let head = json!({
        "kind": format!("{}List", kind.kind),
        "apiVersion": kind.api_version(),
        "metadata": list_meta(listed.revision, listed.continue_token.clone()),
    })
    .to_string();
    // The head is an object; reopen it to append the items.
    out.extend_from_slice(head.strip_suffix('}').unwrap_or(&head).as_bytes());
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in listed.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item.write_json(&mut out);
    }
    out.extend_from_slice(b"]}");
    out
}

/// The resourceVersion-related list options of a LIST or WATCH, validated as
/// kube-apiserver does (`ListOptions.meta.k8s.io "" is invalid: …`, 422).
pub struct VersionOptions {
    /// `sendInitialEvents`, when given.
    pub send_initial_events: Option<bool>,
    pub allow_watch_bookmarks: bool,
}

const NOT_OLDER_THAN: &str = "NotOlderThan";

impl VersionOptions {
    pub fn parse(q: &Query, watch: bool) -> ApiResult<VersionOptions> {
        let send_initial_events = bool_param(q, "sendInitialEvents")?;
        let allow_watch_bookmarks = bool_param(q, "allowWatchBookmarks")?.unwrap_or(false);
        let rv = q.value("resourceVersion");
        let matching = q.value("resourceVersionMatch");
        let continued = q.value("continue").is_some();
        let rvm = "resourceVersionMatch";
        let mut causes = Vec::new();
        if watch {
            if send_initial_events.is_some() && matching != Some(NOT_OLDER_THAN) {
                causes.push(Cause::forbidden(
                    rvm,
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            // The initial-events-end bookmark is how clients learn the list is complete.
            if send_initial_events == Some(true) && !allow_watch_bookmarks {
                causes.push(Cause::forbidden(
                    "allowWatchBookmarks",
                    "sendInitialEvents requires setting allowWatchBookmarks to true",
                ));
            }
            if let Some(m) = matching {
                if send_initial_events.is_none() {
                    causes.push(Cause::forbidden(
                        rvm,
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    ));
                }
                if m != NOT_OLDER_THAN {
                    causes.push(not_supported(rvm, m, &[NOT_OLDER_THAN]));
                }
                if continued {
                    causes.push(Cause::forbidden(
                        rvm,
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
            }
        } else {
            if let Some(m) = matching {
                if rv.is_none() {
                    causes.push(Cause::forbidden(
                        rvm,
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                if continued {
                    causes.push(Cause::forbidden(
                        rvm,
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
                match m {
                    "Exact" if rv == Some("0") => causes.push(Cause::forbidden(
                        rvm,
                        "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    )),
                    "Exact" | NOT_OLDER_THAN => {}
                    _ => causes.push(not_supported(rvm, m, &["Exact", NOT_OLDER_THAN, ""])),
                }
            }
            if send_initial_events.is_some() {
                causes.push(Cause::forbidden(
                    "sendInitialEvents",
                    "sendInitialEvents is forbidden for list",
                ));
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid("ListOptions", "meta.k8s.io", "", causes));
        }
        Ok(VersionOptions {
            send_initial_events,
            allow_watch_bookmarks,
        })
    }
}

/// A boolean query parameter as Go's strconv.ParseBool reads it; absent or empty is None.
fn bool_param(q: &Query, k: &str) -> ApiResult<Option<bool>> {
    match q.value(k) {
        None => Ok(None),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(Some(true)),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(Some(false)),
        Some(v) => Err(ApiError::bad_request(format!(
            "invalid value {v:?} for query parameter {k}: must be true or false"
        ))),
    }
}

fn not_supported(field: &str, value: &str, supported: &[&str]) -> Cause {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    Cause {
        reason: "FieldValueNotSupported",
        field: field.to_string(),
        message: format!(
            "Unsupported value: {value:?}: supported values: {}",
            list.join(", ")
        ),
    }
}

pub(super) async fn list(
    st: &Arc<AppState>,
    t: &Target,
    q: &Query,
    accept: &str,
) -> ApiResult<Response> {
    VersionOptions::parse(q, false)?;
    let listed = list_items(st, t.kind, t.namespace.as_deref(), q).await?;
    let v = match render_kind(accept) {
        Render::Object => {
            return Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                raw_list_doc(t.kind, &listed),
            )
                .into_response())
        }
        Render::Metadata => {
            let items = listed
                .items
                .into_iter()
                .filter_map(Item::into_value)
                .map(|o| partial(&o))
                .collect();
            let mut d = list_doc(t.kind, items, listed.revision, listed.continue_token);
            d["kind"] = json!("PartialObjectMetadataList");
            d["apiVersion"] = json!("meta.k8s.io/v1");
            d
        }
        Render::Table => {
            let items: Vec<Value> = listed
                .items
                .into_iter()
                .filter_map(Item::into_value)
                .collect();
            let mut table = crate::crds::table(
                &st.objects.crds,
                t.kind,
                &items,
                include_object(q),
                SystemTime::now(),
            );
            table["metadata"]["resourceVersion"] = json!(listed.revision.to_string());
            if let Some(c) = listed.continue_token {
                table["metadata"]["continue"] = json!(c);
            }
            table
        }
    };
    Ok(json_response(StatusCode::OK, &v))
}

/// Label and field selectors of a request, parsed once.
pub struct Filter {
    kind: &'static Kind,
    labels: skiff_api::selector::LabelSelector,
    fields: skiff_api::selector::FieldSelector,
}

impl Filter {
    pub fn parse(kind: &'static Kind, q: &Query) -> ApiResult<Filter> {
        let labels =
            skiff_api::selector::LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields =
            skiff_api::selector::FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
                .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
        fields
            .check_supported(kind)
            .map_err(|e| ApiError::bad_request(e.reason))?;
        Ok(Filter {
            kind,
            labels,
            fields,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        (self.labels.is_empty() || self.labels.matches(&meta::labels(obj)))
            && (self.fields.is_empty() || self.fields.matches_object(self.kind, obj))
    }

    /// [`Filter::matches`] on the watch cache's view of an object.
    pub fn matches_view(&self, v: &ObjectView) -> bool {
        (self.labels.is_empty() || self.labels.matches(&v.labels))
            && (self.fields.is_empty() || self.fields.matches(&|f| v.field(f)))
    }
}

/// Continue tokens carry the list's revision and the last key returned.
fn encode_continue(rev: Revision, key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": rev, "start": key}).to_string())
}

fn decode_continue(tok: &str) -> ApiResult<(Revision, String)> {
    use base64::Engine;
    let bad = || ApiError::bad_request(format!("continue key is not valid: {tok:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["rv"].as_i64().ok_or_else(bad)?,
        v["start"].as_str().ok_or_else(bad)?.to_string(),
    ))
}

/// Reads objects matching the request's selectors, honouring limit/continue and
/// resourceVersion/resourceVersionMatch.
pub async fn list_items(
    st: &AppState,
    kind: &'static Kind,
    ns: Option<&str>,
    q: &Query,
) -> ApiResult<Listed> {
    let filter = Filter::parse(kind, q)?;
    let prefix = meta::list_prefix(kind, ns);
    let limit = q.int("limit").filter(|l| *l > 0).map(|l| l as usize);
    let (mut revision, mut after) = match q.value("continue") {
        Some(c) => {
            let (rv, key) = decode_continue(c)?;
            (Some(rv), Some(key))
        }
        None => (None, None),
    };
    if revision.is_none() {
        if let Some(rv) = q.value("resourceVersion") {
            let n: Revision = rv.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {rv:?}: must be a number"))
            })?;
            if q.get("resourceVersionMatch") == Some("Exact") && n > 0 {
                revision = Some(n);
            }
        }
    }
    let mut items = Vec::new();
    let mut read_at: Revision;
    let mut page = STORE_PAGE;
    loop {
        let want = limit.map(|l| l.saturating_sub(items.len()));
        let opts = ListOptions {
            revision,
            limit: Some(
                want.map(|w| if filter.is_empty() { w } else { w.max(256) })
                    .unwrap_or(page)
                    .min(page),
            ),
            continue_after: after.clone(),
        };
        let res = match st.objects.store.list(&prefix, &opts).await {
            Ok(r) => r,
            Err(StoreError::Compacted { .. }) if q.value("continue").is_some() => return Err(ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            )),
            Err(e @ (StoreError::Compacted { .. } | StoreError::FutureRevision { .. })) => {
                return Err(ApiError::gone(format!("too old resource version: {e}")))
            }
            // Large objects can make a page bigger than one etcd response may be: read
            // smaller pages before giving up.
            Err(e) if page > 1 => {
                tracing::debug!(error = %e, page, "store list failed; retrying with smaller pages");
                page = (page / 4).max(1);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        read_at = res.revision;
        revision = Some(res.revision);
        let mut last_key = None;
        for kv in res.kvs {
            // Past this key even if its value is unreadable, so the next page moves on.
            last_key = Some(kv.key.clone());
            let Some(mut item) = Item::new(kv.key, kv.value, kv.mod_revision, kind) else {
                continue;
            };
            if item.selected(&filter) {
                let key = item.key.clone();
                items.push(item);
                if limit.is_some_and(|l| items.len() >= l) {
                    return Ok(Listed {
                        items,
                        revision: read_at,
                        continue_token: next_token(st, &prefix, read_at, &key).await?,
                    });
                }
            }
        }
        if !res.more {
            break;
        }
        after = last_key;
        if after.is_none() {
            break;
        }
    }
    Ok(Listed {
        items,
        revision: read_at,
        continue_token: None,
    })
}

/// A continue token if any key follows `key` at `rev`.
async fn next_token(
    st: &AppState,
    prefix: &str,
    rev: Revision,
    key: &str,
) -> ApiResult<Option<String>> {
    let res = st
        .objects
        .store
        .list(
            prefix,
            &ListOptions {
                revision: Some(rev),
                limit: Some(1),
                continue_after: Some(key.to_string()),
            },
        )
        .await?;
    Ok((!res.kvs.is_empty()).then(|| encode_continue(rev, key)))
}
