//! Container statistics in the shape `runc events --stats` prints.
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {}
