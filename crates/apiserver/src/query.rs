//! Query-string decoding (`application/x-www-form-urlencoded`, as clients send it).

use std::collections::HashMap;

/// The query parameters; the last value of a repeated key wins.
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>, Option<String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
            None,
        )
    }

    /// The request's User-Agent, which names the field manager of writes that send no
    /// `fieldManager` (see `handlers::objects`).
    pub fn with_user_agent(mut self, ua: Option<&str>) -> Query {
        self.1 = ua.map(str::to_string);
        self
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.1.as_deref()
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// Non-empty value of `k`.
    pub fn value(&self, k: &str) -> Option<&str> {
        self.get(k).filter(|v| !v.is_empty())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1" | ""))
    }

    pub fn int(&self, k: &str) -> Option<i64> {
        self.value(k).and_then(|v| v.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&x"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert!(q.flag("x"));
        let bad = Query::parse(Some("a=%&b=a%2"));
        assert_eq!(bad.get("a"), Some("%"));
        assert_eq!(bad.get("b"), Some("a%2"));
    }
}
