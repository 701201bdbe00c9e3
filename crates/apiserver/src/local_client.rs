//! The in-process transport: a `kube::Client` whose requests go straight into this
//! server's router, for the components `skiff server` runs inside itself (scheduler,
//! controller manager).
//!
//! Contract: a request through [`LocalTransport`] is handled exactly as one over HTTPS
//! from a client certificate naming the same user — the same authentication outcome
//! (`Peer::ClientCert` + the user's [`UserInfo`]), admission, audit record and request
//! metrics — only without a socket or TLS. The transport holds the server's state, not
//! its listener, so a client made after [`crate::Server::bind`] works before, while and
//! after [`crate::Server::run`] serves; once shutdown starts its watches end like
//! everyone's.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{header, HeaderValue, Request, Response};
use axum::routing::future::RouteFuture;
use axum::Router;
use bytes::Bytes;

use crate::audit::UserInfo;
use crate::{AppState, Peer, RemoteAddr};

/// A tower service over the API server's router that authenticates every request as one
/// fixed user.
#[derive(Clone)]
pub struct LocalTransport {
    router: Router,
    user: UserInfo,
    user_agent: HeaderValue,
}

impl LocalTransport {
    pub(crate) fn new(state: Arc<AppState>, username: &str, groups: &[&str]) -> LocalTransport {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        // Every authenticated user is in system:authenticated, as a certificate's user is.
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        // kube components send `kube-scheduler/v1.33…`; the audit log's userAgent then
        // says which component (and that it ran inside skiff) without parsing the user.
        let component = username.rsplit(':').next().unwrap_or(username);
        let user_agent = HeaderValue::from_str(&format!(
            "{component}/skiff-{} (in-process)",
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("skiff (in-process)"));
        LocalTransport {
            router: crate::handlers::router(state),
            user: UserInfo {
                username: username.to_string(),
                groups,
                ..Default::default()
            },
            user_agent,
        }
    }
}

/// Requests come from this machine; the audit log shows them as loopback clients, as
/// kube-scheduler's would be in a k3s server.
const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

impl<B> tower::Service<Request<B>> for LocalTransport
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let ext = req.extensions_mut();
        ext.insert(Peer::ClientCert);
        ext.insert(self.user.clone());
        ext.insert(RemoteAddr(LOOPBACK));
        if !req.headers().contains_key(header::USER_AGENT) {
            req.headers_mut()
                .insert(header::USER_AGENT, self.user_agent.clone());
        }
        tower::Service::call(&mut self.router, req)
    }
}

/// A kube-rs client over [`LocalTransport`]. Must be called inside a tokio runtime (the
/// client's request buffer is a task).
pub(crate) fn client(state: Arc<AppState>, username: &str, groups: &[&str]) -> kube::Client {
    kube::Client::new(LocalTransport::new(state, username, groups), "default")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::{Duration, Instant};

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, ObjectMeta, PostParams};

    use crate::audit::AuditTarget;
    use crate::{Config, Server};

    /// The scheduler's in-process requests are authenticated as it and audited as it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_are_audited_as_the_injected_user() {
        let dir = tempfile::tempdir().expect("temp dir");
        let audit = dir.path().join("audit.log");
        let store = std::sync::Arc::new(skiff_store::EmbeddedStore::in_memory().expect("store"));
        let server = Server::bind(
            Config {
                data_dir: dir.path().to_path_buf(),
                listen: "127.0.0.1:0".parse().unwrap(),
                extra_sans: vec![],
                audit: Some(AuditTarget::File {
                    path: audit.clone(),
                    max_bytes: 1 << 20,
                }),
                event_ttl: None,
                kubelet_ca: None,
                cluster: Default::default(),
                advertise_address: None,
            },
            store,
        )
        .await
        .expect("bind");
        let client = server.client(
            "system:kube-scheduler",
            &["system:masters", "system:authenticated"],
        );
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("in-process".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create");
        assert_eq!(
            api.get("in-process").await.expect("get").metadata.name,
            cm.metadata.name
        );

        // The writer flushes when its queue empties; wait for the line, bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        let line = loop {
            let text = std::fs::read_to_string(&audit).unwrap_or_default();
            if let Some(l) = text.lines().find(|l| l.contains("\"verb\":\"create\"")) {
                break serde_json::from_str::<serde_json::Value>(l).expect("audit JSON");
            }
            assert!(
                Instant::now() < deadline,
                "no audit line for the create: {text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(line["user"]["username"], "system:kube-scheduler");
        assert_eq!(
            line["user"]["groups"],
            serde_json::json!(["system:masters", "system:authenticated"])
        );
        assert_eq!(line["objectRef"]["name"], "in-process");
        assert_eq!(line["responseStatus"]["code"], 201);
        assert_eq!(line["sourceIPs"][0], "127.0.0.1");
        assert!(line["userAgent"]
            .as_str()
            .unwrap()
            .starts_with("kube-scheduler/skiff-"));
    }
}
