//! Multi-valued query strings (`command=sh&command=-c&…`).

/// The pairs of a query string, in order, decoded.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    /// `1`/`true` (and a bare key) are true, as Kubernetes' boolean query params.
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1" | "true" | "True" | "TRUE" | ""))
    }

    pub fn u64(&self, k: &str) -> Result<Option<u64>, String> {
        match self.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{k}={v:?} is not a non-negative integer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_encoded() {
        let q = Query::parse(Some(
            "command=sh&command=-c&command=echo+a%3Bexit%203&input=1&x",
        ));
        assert_eq!(q.all("command"), vec!["sh", "-c", "echo a;exit 3"]);
        assert!(q.flag("input"));
        assert!(q.flag("x"));
        assert!(!q.flag("output"));
        let odd = Query::parse(Some("a=%&b=a%2&c=%41"));
        assert_eq!(odd.get("a"), Some("%"));
        assert_eq!(odd.get("b"), Some("a%2"));
        assert_eq!(odd.get("c"), Some("A"));
    }
}
