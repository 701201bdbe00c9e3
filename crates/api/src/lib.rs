//! Kubernetes API machinery with no I/O, shared by the API server and its tests.
//!
//! - [`admission`]: ValidatingAdmissionPolicies and their bindings compiled and evaluated
//!   (the API server decides which apply and acts on the decisions);
//! - [`cel`]: the CEL interpreter behind CRD validation rules, admission match conditions
//!   and ValidatingAdmissionPolicies;
//! - [`cluster`]: the address plan (service, node-port and pod ranges) every component shares;
//! - [`convert`]: conversion between the served versions of one stored kind (HPA v1/v2);
//! - [`crd`]: CustomResourceDefinitions: their validation (structural schemas), and the
//!   pruning, defaulting, validation, printer columns and OpenAPI of custom objects;
//! - [`cron`]: CronJob schedules (parse, next time in a zone) with Kubernetes' messages;
//! - [`kinds`]: the served resources (group/version/kind ↔ plural resource, scope, verbs,
//!   short names, categories, subresources) — the single table discovery, routing and
//!   OpenAPI are built from;
//! - [`managed`]: field ownership (`metadata.managedFields`) and server-side apply;
//! - [`object`]: field access, defaulting and name/label syntax over JSON objects;
//! - [`strategy`]: per-kind REST strategies (defaulting, validation, status rules,
//!   graceful deletion) that the API server's generic handlers call;
//! - [`selector`]: label and field selectors as `kubectl -l` / `--field-selector` send them;
//! - [`fields`]: which field labels each kind can be selected by, and their values;
//! - [`quantity`]: resource quantities (`500m`, `128Mi`) parsed exactly, as Kubernetes does;
//! - [`patch`]: JSON patch, merge patch and strategic merge patch;
//! - [`table`]: server-side `meta.k8s.io/v1` Table output with kube-apiserver's columns;
//! - [`openapi`]: the `/openapi/v2` and `/openapi/v3` documents;
//! - [`rbac`]: RBAC authorization, escalation checks, aggregation and the bootstrap policy;
//! - [`node_authz`]: the Node authorizer (its graph of what each node needs) and the
//!   NodeRestriction admission plugin;
//! - [`service_account_token`]: service-account JWTs: the signer, and the claims and
//!   Secret conventions of legacy (Secret-based) tokens.
//!
//! The type graph behind OpenAPI and strategic merge patch comes from k8s-openapi's
//! schemars schemas (generated once, on first use). This crate enables no `v1_*` feature
//! of k8s-openapi: the binary picks the Kubernetes version (v1_33), as k8s-openapi requires.

#![forbid(unsafe_code)]

pub mod admission;
pub use crd::cel;
pub mod cluster;
pub mod convert;
pub mod crd;
pub mod cron;
pub mod fields;
pub mod kinds;
pub mod managed;
pub mod node_authz;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod quantity;
pub mod rbac;
mod schema;
pub mod selector;
pub mod service_account_token;
pub mod strategy;
pub mod table;
