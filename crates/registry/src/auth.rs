//! Authentication: htpasswd (bcrypt) users, Basic auth, and the Docker token flow.
//!
//! With an htpasswd file every request needs credentials. Clients may send them as Basic
//! auth on each request, or follow the `WWW-Authenticate: Bearer realm=…` challenge to our
//! `/token` endpoint, which checks Basic credentials and returns a short-lived token
//! scoped to the repository actions asked for. A token is `base64url(claims) "."
//! base64url(HMAC-SHA256(claims))`, keyed with a secret generated once and kept in the
//! data directory, so tokens survive a restart and nothing else can mint them.
//!
//! Every user in the file may pull, push and delete everywhere: the file says who may
//! use the registry, not what they may do.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// Source of the current time, injectable so tests can move it.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

pub const SERVICE: &str = "skiff-registry";

/// How long a token is valid; clients fetch a new one when it runs out.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("reading htpasswd file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Entry {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("htpasswd file {path} has no users")]
    Empty { path: PathBuf },
    #[error("token signing key {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One granted or requested access: `type:name:actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    /// Parses one scope (`repository:library/x:pull,push`); the name may hold colons only
    /// in theory, so the type is before the first and the actions after the last.
    pub fn parse(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Access {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind
            && self.name == name
            && self.actions.iter().any(|a| a == action || a == "*")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    pub access: Vec<Access>,
}

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Identity {
    /// Valid Basic credentials: full access.
    User(String),
    /// A valid token: access as its claims say.
    Token(Claims),
}

impl Identity {
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        match self {
            Identity::User(_) => true,
            Identity::Token(c) => c.access.iter().any(|a| a.allows(kind, name, action)),
        }
    }
}

pub struct Auth {
    users: HashMap<String, String>,
    key: ring::hmac::Key,
    /// Fingerprints of credentials that passed bcrypt: bcrypt costs tens of milliseconds
    /// by design, and clients using Basic auth send it on every request.
    verified: Mutex<HashSet<[u8; 32]>>,
    clock: Clock,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Loads users from an htpasswd file (bcrypt entries only, as `htpasswd -B` writes
    /// them) and the token key from `data_dir/token.key`, creating the key if missing.
    pub fn load(htpasswd: &Path, data_dir: &Path, clock: Clock) -> Result<Auth, AuthSetupError> {
        let text = std::fs::read_to_string(htpasswd).map_err(|source| AuthSetupError::Read {
            path: htpasswd.to_path_buf(),
            source,
        })?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = |reason| AuthSetupError::Entry {
                path: htpasswd.to_path_buf(),
                line: i + 1,
                reason,
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| entry("expected user:hash"))?;
            if !(hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$")) {
                return Err(entry(
                    "only bcrypt hashes are supported; create the entry with `htpasswd -B`",
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err(AuthSetupError::Empty {
                path: htpasswd.to_path_buf(),
            });
        }
        let key = load_or_create_key(&data_dir.join("token.key"))?;
        Ok(Auth {
            users,
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            verified: Mutex::new(HashSet::new()),
            clock,
        })
    }

    /// Checks `user`/`password` against the file.
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let mut h = sha2::Sha256::new();
        for part in [
            user.as_bytes(),
            b"\0",
            password.as_bytes(),
            b"\0",
            hash.as_bytes(),
        ] {
            h.update(part);
        }
        let fp: [u8; 32] = h.finalize().into();
        let cache = |s: &Self| {
            s.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&fp)
        };
        if cache(self) {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if ok {
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(fp);
        }
        ok
    }

    /// Decodes a Basic `Authorization` value and checks it; returns the user.
    pub fn check_basic(&self, header: &str) -> Option<String> {
        let (user, password) = decode_basic(header)?;
        self.check_password(&user, &password).then_some(user)
    }

    /// Identity of a request from its `Authorization` header, if valid.
    pub fn identify(&self, header: Option<&str>) -> Option<Identity> {
        let header = header?;
        if let Some(tok) = strip_scheme(header, "Bearer") {
            return self.verify_token(tok).map(Identity::Token);
        }
        self.check_basic(header).map(Identity::User)
    }

    fn now_secs(&self) -> u64 {
        (self.clock)()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    }

    /// A token for `user` granting `access`, and its lifetime in seconds.
    pub fn issue(&self, user: &str, access: Vec<Access>) -> (String, u64, u64) {
        let iat = self.now_secs();
        let claims = Claims {
            iss: SERVICE.to_string(),
            sub: user.to_string(),
            exp: iat + TOKEN_TTL.as_secs(),
            iat,
            access,
        };
        // Serializing a struct of strings and numbers cannot fail.
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let sig = ring::hmac::sign(&self.key, &payload);
        let token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        );
        (token, TOKEN_TTL.as_secs(), iat)
    }

    pub fn verify_token(&self, token: &str) -> Option<Claims> {
        let (payload, sig) = token.trim().split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        ring::hmac::verify(&self.key, &payload, &sig).ok()?;
        let claims: Claims = serde_json::from_slice(&payload).ok()?;
        (claims.exp > self.now_secs()).then_some(claims)
    }
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.trim().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest.trim())
}

/// `Basic base64(user:password)` → (user, password).
pub fn decode_basic(header: &str) -> Option<(String, String)> {
    let b64 = strip_scheme(header, "Basic")?;
    let raw = STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn load_or_create_key(path: &Path) -> Result<Vec<u8>, AuthSetupError> {
    let err = |source| AuthSetupError::Key {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read(path) {
        Ok(k) if k.len() >= 32 => return Ok(k),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let key = hex::decode(crate::storage::random_hex(32)).unwrap_or_default();
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&key).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(key)
}

/// RFC 3339 UTC time for unix seconds, as token responses carry it.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_tokens() {
        let a = Access::parse("repository:a/b:pull,push").unwrap();
        assert!(a.allows("repository", "a/b", "push"));
        assert!(!a.allows("repository", "a/c", "pull"));
        assert!(Access::parse("registry:catalog:*")
            .unwrap()
            .allows("registry", "catalog", "pull"));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");

        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("secret", 4).unwrap();
        std::fs::write(dir.path().join("htpasswd"), format!("alice:{hash}\n")).unwrap();
        let now = Arc::new(Mutex::new(SystemTime::now()));
        let n2 = now.clone();
        let auth = Auth::load(
            &dir.path().join("htpasswd"),
            dir.path(),
            Arc::new(move || *n2.lock().unwrap()),
        )
        .unwrap();
        assert!(auth.check_password("alice", "secret"));
        assert!(auth.check_password("alice", "secret"));
        assert!(!auth.check_password("alice", "wrong"));
        assert!(!auth.check_password("bob", "secret"));
        let (tok, _, _) = auth.issue("alice", vec![a]);
        let c = auth.verify_token(&tok).unwrap();
        assert_eq!(c.sub, "alice");
        let mut forged = tok.clone();
        forged.replace_range(2..3, if &tok[2..3] == "A" { "B" } else { "A" });
        assert!(auth.verify_token(&forged).is_none());
        *now.lock().unwrap() += TOKEN_TTL + Duration::from_secs(1);
        assert!(auth.verify_token(&tok).is_none());
        // The key persists: a second load accepts tokens of the first.
        let (tok2, _, _) = auth.issue("alice", vec![]);
        let auth2 = Auth::load(
            &dir.path().join("htpasswd"),
            dir.path(),
            Arc::new(move || *now.lock().unwrap()),
        )
        .unwrap();
        assert!(auth2.verify_token(&tok2).is_some());

        std::fs::write(dir.path().join("md5"), "bob:$apr1$abc$def\n").unwrap();
        assert!(matches!(
            Auth::load(
                &dir.path().join("md5"),
                dir.path(),
                Arc::new(SystemTime::now)
            ),
            Err(AuthSetupError::Entry { line: 1, .. })
        ));
    }
}
