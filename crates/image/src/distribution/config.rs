//! Credentials where docker keeps them: `$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`, under `"auths": {"host:port": {"auth": base64(user:pass)}}`,
//! so logins made with docker, podman or skopeo work here and the other way round.
//!
//! Only the `auths` entry of one registry is touched on save or remove; every other key
//! of the file is kept as it was. The file is replaced atomically with mode 0600.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{Map, Value};

use super::DistributionError;

/// Docker Hub's key in `auths` (what `docker login` writes).
const HUB_KEY: &str = "https://index.docker.io/v1/";

/// A docker `config.json`.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
}

/// A user name and password (or identity token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password, not even in debug logs.
        write!(f, "Credentials({:?}, ***)", self.username)
    }
}

fn key_for(registry: &str) -> &str {
    if matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        HUB_KEY
    } else {
        registry
    }
}

/// Strips what docker tolerates around a key (`https://host/v2/`) down to `host[:port]`.
fn normalize(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

impl DockerConfig {
    /// The file docker would use: `$DOCKER_CONFIG/config.json` or `$HOME/.docker/config.json`.
    pub fn default_location() -> Self {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .unwrap_or_else(|| PathBuf::from("/root/.docker"));
        Self::at(dir.join("config.json"))
    }

    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Map<String, Value>, DistributionError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(e) => return Err(DistributionError::io("read", &self.path)(e)),
        };
        match serde_json::from_slice::<Value>(&text) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(self.bad("not a JSON object".to_string())),
            Err(e) => Err(self.bad(format!("invalid JSON: {e}"))),
        }
    }

    fn bad(&self, detail: String) -> DistributionError {
        DistributionError::DockerConfig {
            path: self.path.clone(),
            detail,
        }
    }

    /// The stored credentials of a registry, if any.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, DistributionError> {
        let cfg = self.read()?;
        let Some(auths) = cfg.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        let want = normalize(key_for(registry));
        let entry = auths.get(key_for(registry)).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| normalize(k) == want)
                .map(|(_, v)| v)
        });
        let Some(entry) = entry else {
            return Ok(None);
        };
        if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
            let raw = STANDARD
                .decode(auth.trim())
                .map_err(|_| self.bad(format!("auths.{registry}.auth is not base64")))?;
            let text = String::from_utf8(raw)
                .map_err(|_| self.bad(format!("auths.{registry}.auth is not UTF-8")))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| self.bad(format!("auths.{registry}.auth is not user:password")))?;
            return Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
        match (
            entry.get("username").and_then(Value::as_str),
            entry.get("password").and_then(Value::as_str),
        ) {
            (Some(u), Some(p)) => Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            })),
            _ => Ok(None),
        }
    }

    /// Saves credentials for a registry.
    pub fn store(&self, registry: &str, creds: &Credentials) -> Result<(), DistributionError> {
        let mut cfg = self.read()?;
        let auths = cfg
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let auth = STANDARD.encode(format!("{}:{}", creds.username, creds.password));
        if let Some(m) = auths.as_object_mut() {
            m.insert(
                key_for(registry).to_string(),
                serde_json::json!({ "auth": auth }),
            );
        }
        self.write(&cfg)
    }

    /// Removes a registry's credentials; returns whether there were any.
    pub fn remove(&self, registry: &str) -> Result<bool, DistributionError> {
        let mut cfg = self.read()?;
        let want = normalize(key_for(registry)).to_string();
        let removed = match cfg.get_mut("auths").and_then(Value::as_object_mut) {
            Some(auths) => {
                let keys: Vec<String> = auths
                    .keys()
                    .filter(|k| normalize(k) == want)
                    .cloned()
                    .collect();
                for k in &keys {
                    auths.remove(k);
                }
                !keys.is_empty()
            }
            None => false,
        };
        if removed {
            self.write(&cfg)?;
        }
        Ok(removed)
    }

    fn write(&self, cfg: &Map<String, Value>) -> Result<(), DistributionError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(DistributionError::io("create", dir))?;
        let tmp = dir.join(format!(".config.json.{}", std::process::id()));
        let mut bytes = serde_json::to_vec_pretty(cfg).map_err(|e| self.bad(e.to_string()))?;
        bytes.push(b'\n');
        let res = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res.map_err(DistributionError::io("write", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_read_remove_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"other:1":{"auth":"dTpw"}},"credsStore":"x"}"#,
        )
        .unwrap();
        let c = DockerConfig::at(&path);
        let creds = Credentials {
            username: "al".into(),
            password: "p:w".into(),
        };
        c.store("127.0.0.1:5000", &creds).unwrap();
        assert_eq!(c.credentials("127.0.0.1:5000").unwrap(), Some(creds));
        assert_eq!(
            c.credentials("other:1").unwrap().unwrap().username,
            "u".to_string()
        );
        assert!(c.remove("127.0.0.1:5000").unwrap());
        assert!(!c.remove("127.0.0.1:5000").unwrap());
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["credsStore"], "x");
        assert!(v["auths"]["other:1"].is_object());
    }
}
