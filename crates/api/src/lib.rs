//! Kubernetes API machinery with no I/O, shared by the API server and its tests.
//!
//! - [`kinds`]: the served resources (group/version/kind ↔ plural resource, scope, verbs,
//!   short names, categories, subresources) — the single table discovery, routing and
//!   OpenAPI are built from;
//! - [`selector`]: label and field selectors as `kubectl -l` / `--field-selector` send them;
//! - [`patch`]: JSON patch, merge patch and strategic merge patch;
//! - [`table`]: server-side `meta.k8s.io/v1` Table output with kube-apiserver's columns;
//! - [`openapi`]: the `/openapi/v2` and `/openapi/v3` documents.

pub mod kinds;
pub mod openapi;
pub mod patch;
mod schema;
pub mod selector;
pub mod table;
