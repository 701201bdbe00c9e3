//! Server-side `meta.k8s.io/v1` Table output (what `kubectl get` prints), with the columns
//! kube-apiserver prints for each kind, `-o wide` ones at priority 1.
//!
//! PLACEHOLDER (owned by the api-machinery work): only Name and Age so far.

use std::time::SystemTime;

use serde_json::{json, Value};

/// What each row carries in `object` (the `includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

/// Builds the Table for `items` (full objects of `kind`, e.g. `Pod`, as JSON). The caller
/// fills `metadata.resourceVersion`/`continue`. `now` ages the rows.
pub fn to_table(kind: &str, items: &[Value], include: IncludeObject, now: SystemTime) -> Value {
    let _ = (kind, now);
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let name = o.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
            let object = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or(Value::Null),
                }),
                IncludeObject::Object => o.clone(),
            };
            json!({ "cells": [name, "<unknown>"], "object": object })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0},
            {"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0},
        ],
        "rows": rows,
    })
}
