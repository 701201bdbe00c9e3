//! Label and field selectors as `kubectl -l` and `--field-selector` send them.
//!
//! PLACEHOLDER (owned by the api-machinery work): only `k=v` terms joined by commas are
//! understood so far; the full grammar (==, !=, in, notin, exists, !exists) replaces this.

use std::collections::BTreeMap;

use serde_json::Value;

/// A selector string that could not be parsed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("invalid selector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    terms: Vec<(String, String)>,
}

impl LabelSelector {
    /// Parses the query-string form (`app=web,tier in (a,b),!canary`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, v) = t.split_once('=').ok_or_else(|| SelectorError {
                selector: s.to_string(),
                reason: format!("unsupported term {t:?}"),
            })?;
            terms.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(LabelSelector { terms })
    }

    /// Converts a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`), as
    /// found in deployment/replicaset/service specs. A null selector matches nothing.
    pub fn from_object(sel: &Value) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                terms.push((k.clone(), v.as_str().unwrap_or_default().to_string()));
            }
        }
        Ok(LabelSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A parsed field selector (`metadata.name=x,status.phase!=Running`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(String, String)>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        LabelSelector::parse(s).map(|l| FieldSelector { terms: l.terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The field paths the selector mentions, so the server can refuse unsupported ones.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|(k, _)| k.as_str())
    }

    /// `get` returns the object's value for a field path, `None` if it has none.
    pub fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        self.terms
            .iter()
            .all(|(k, v)| get(k).unwrap_or_default() == *v)
    }
}
