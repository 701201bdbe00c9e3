//! The registry client: pull, push and login against any OCI distribution registry
//! (skiff's own, docker-registry, …), used by `skiff image push/pull`, `skiff login`,
//! `FROM` in builds and (later) the kubelet.
//!
//! A [`Client`] holds the options and one [`session::Session`] per registry (connection
//! pool, TLS roots, auth tokens). Pulls and pushes report progress through a
//! [`Progress`] sink so the CLI can draw bars and the kubelet can log events.
//!
//! Store contract: a pull makes its blobs visible only once verified (digest and size),
//! stages layer downloads as resumable partial files in the content store's ingest
//! directory, and on any error removes the blobs and unpacked layers it added, so the
//! local store is as before. The name is recorded last.

mod config;
mod error;
mod pull;
mod push;
pub mod reference;
mod session;
mod sources;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use config::{Credentials, DockerConfig};
pub use error::DistributionError;
pub use pull::Pulled;
pub use push::Pushed;
pub use reference::RemoteRef;
pub use session::ClientOptions;
use session::Session;

/// What a transfer reports as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    /// A line for the user ("Picked linux/amd64 from index", …).
    Message(String),
    /// A blob transfer begins; `total` bytes, `done` of them already present (resume).
    Start {
        id: String,
        what: &'static str,
        total: u64,
        done: u64,
    },
    /// More bytes of a blob went over the wire.
    Advance { id: String, bytes: u64 },
    /// A blob is finished: "Pull complete", "Already exists", "Pushed", "Mounted from x"…
    Done { id: String, status: String },
}

/// A sink for [`Event`]s; called from several tasks at once.
pub trait Progress: Send + Sync {
    fn event(&self, e: Event);
}

/// Drops every event.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event) {}
}

/// Registry client: options, credentials and a session per registry.
pub struct Client {
    opts: ClientOptions,
    config: DockerConfig,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl Client {
    pub fn new(opts: ClientOptions, config: DockerConfig) -> Self {
        Self {
            opts,
            config,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    pub fn docker_config(&self) -> &DockerConfig {
        &self.config
    }

    /// The session of a registry, with the credentials stored for it.
    fn session(&self, registry: &str) -> Result<Arc<Session>, DistributionError> {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(registry) {
            return Ok(s.clone());
        }
        let creds = self.config.credentials(registry)?;
        let s = Arc::new(Session::new(registry, &self.opts, creds)?);
        map.insert(registry.to_string(), s.clone());
        Ok(s)
    }

    /// Checks `creds` against the registry (Basic or the token flow); nothing is saved.
    pub async fn verify_login(
        &self,
        registry: &str,
        creds: &Credentials,
    ) -> Result<(), DistributionError> {
        let s = Session::new(registry, &self.opts, Some(creds.clone()))?;
        // A registry that challenges checks the credentials here (Basic directly, or
        // at its token endpoint); an open registry accepts anything, as with docker.
        s.ping().await
    }

    /// Verifies and saves credentials in the docker config (`skiff login`).
    pub async fn login(
        &self,
        registry: &str,
        creds: &Credentials,
    ) -> Result<(), DistributionError> {
        self.verify_login(registry, creds).await?;
        self.config.store(registry, creds)?;
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(registry);
        Ok(())
    }

    /// Removes saved credentials (`skiff logout`); returns whether there were any.
    pub fn logout(&self, registry: &str) -> Result<bool, DistributionError> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(registry);
        self.config.remove(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ImageStore;

    fn assert_send<T: Send>(_: &T) {}

    /// The kubelet will spawn pulls on a multi-threaded runtime: the futures must be Send.
    #[test]
    fn operations_are_send() {
        let client = Client::new(ClientOptions::default(), DockerConfig::at("/nonexistent"));
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ImageStore::open(dir.path()).unwrap());
        let r = RemoteRef::parse("127.0.0.1:1/a/b:c").unwrap();
        let p: Arc<dyn Progress> = Arc::new(Silent);
        let creds = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        assert_send(&client.pull(&store, &r, &p));
        assert_send(&client.push(&store, "a", &r, &p));
        assert_send(&client.login("127.0.0.1:1", &creds));
    }
}
