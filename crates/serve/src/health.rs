//! Named health checks served as kube-apiserver serves `/livez` and `/readyz`:
//! - `GET /readyz` answers `ok` (200) when every check passes; otherwise 500 with one
//!   line per check (`[+]ping ok`, `[-]etcd failed: reason withheld`) and
//!   `readyz check failed` — the reason goes to the log, not to the client;
//! - `?verbose` lists the checks on success too, ending `readyz check passed`;
//! - `?exclude=<name>` (repeatable) skips a check (`[+]<name> excluded: ok`);
//! - `GET /readyz/<name>` runs one check: `ok`, or 500 `internal server error: <reason>`;
//!   an unknown name is 404.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

type CheckFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// An ordered list of named checks; `ping` (always passes) comes first.
#[derive(Clone)]
pub struct Checks {
    checks: Vec<(String, CheckFn)>,
}

impl Default for Checks {
    fn default() -> Checks {
        Checks::new()
    }
}

impl std::fmt::Debug for Checks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.checks.iter().map(|(n, _)| n))
            .finish()
    }
}

impl Checks {
    pub fn new() -> Checks {
        Checks { checks: Vec::new() }.with("ping", || async { Ok(()) })
    }

    /// Adds a check: `Err(reason)` fails it.
    pub fn with<F, Fut>(mut self, name: &str, check: F) -> Checks
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let f: CheckFn = Arc::new(move || Box::pin(check()));
        self.checks.push((name.to_string(), f));
        self
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.checks.iter().map(|(n, _)| n.as_str())
    }

    /// Answers `GET /<endpoint>[/<check>]?<query>` (`endpoint` is `livez`, `readyz` or
    /// `healthz`; `check` is the path below it, if any).
    pub async fn respond(
        &self,
        endpoint: &str,
        check: Option<&str>,
        query: Option<&str>,
    ) -> Response<Full<Bytes>> {
        if let Some(name) = check.filter(|c| !c.is_empty()) {
            let Some((_, f)) = self.checks.iter().find(|(n, _)| n == name) else {
                return text(StatusCode::NOT_FOUND, "404 page not found\n".to_string());
            };
            return match f().await {
                Ok(()) => text(StatusCode::OK, "ok".to_string()),
                Err(reason) => {
                    tracing::warn!(check = name, %reason, "{endpoint} check failed");
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("internal server error: {reason}\n"),
                    )
                }
            };
        }
        let (mut verbose, mut exclude) = (false, Vec::new());
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "verbose" => verbose = v != "false" && v != "0",
                "exclude" => exclude.push(v.to_string()),
                _ => {}
            }
        }
        let mut out = String::new();
        let mut failed = false;
        for (name, f) in &self.checks {
            if exclude.iter().any(|e| e == name) {
                out.push_str(&format!("[+]{name} excluded: ok\n"));
                continue;
            }
            match f().await {
                Ok(()) => out.push_str(&format!("[+]{name} ok\n")),
                Err(reason) => {
                    tracing::warn!(check = %name, %reason, "{endpoint} check failed");
                    out.push_str(&format!("[-]{name} failed: reason withheld\n"));
                    failed = true;
                }
            }
        }
        for e in &exclude {
            if !self.checks.iter().any(|(n, _)| n == e) {
                out.push_str(&format!(
                    "warn: some health checks cannot be excluded: no matches for \"{e}\"\n"
                ));
            }
        }
        if failed {
            out.push_str(&format!("{endpoint} check failed\n"));
            return text(StatusCode::INTERNAL_SERVER_ERROR, out);
        }
        if !verbose {
            return text(StatusCode::OK, "ok".to_string());
        }
        out.push_str(&format!("{endpoint} check passed\n"));
        text(StatusCode::OK, out)
    }
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        hyper::header::HeaderName::from_static("x-content-type-options"),
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(r: Response<Full<Bytes>>) -> (u16, String) {
        let code = r.status().as_u16();
        let b = r.into_body().collect().await.map(|c| c.to_bytes());
        (
            code,
            String::from_utf8_lossy(&b.unwrap_or_default()).into_owned(),
        )
    }

    #[tokio::test]
    async fn checks_answer_as_kube_apiserver() {
        let ok = Checks::new().with("etcd", || async { Ok(()) });
        assert_eq!(
            body(ok.respond("readyz", None, None).await).await,
            (200, "ok".into())
        );
        assert_eq!(
            body(ok.respond("readyz", None, Some("verbose")).await).await,
            (200, "[+]ping ok\n[+]etcd ok\nreadyz check passed\n".into())
        );
        let bad = Checks::new().with("etcd", || async { Err("down".to_string()) });
        assert_eq!(
            body(bad.respond("readyz", None, None).await).await,
            (
                500,
                "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n".into()
            )
        );
        assert_eq!(
            body(
                bad.respond("readyz", None, Some("verbose&exclude=etcd"))
                    .await
            )
            .await,
            (
                200,
                "[+]ping ok\n[+]etcd excluded: ok\nreadyz check passed\n".into()
            )
        );
        assert_eq!(
            body(bad.respond("livez", Some("etcd"), None).await).await,
            (500, "internal server error: down\n".into())
        );
        assert_eq!(
            body(bad.respond("livez", Some("ping"), None).await).await,
            (200, "ok".into())
        );
        assert_eq!(
            body(bad.respond("livez", Some("nope"), None).await).await.0,
            404
        );
    }
}
