//! Remote image references: `[registry/]repository[:tag][@digest]`, as docker reads them.
//!
//! The first path component names a registry when it looks like a host (has a `.` or a
//! `:` port, or is `localhost`); otherwise the image is on Docker Hub, whose one-word
//! repositories live under `library/`.

use super::DistributionError;
use crate::digest::Digest;

/// Docker Hub's name as users write it, and the host its API is served from.
pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed remote reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    /// `host[:port]` as written (`docker.io` for Docker Hub).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl std::fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Whether a first path component names a registry host rather than a namespace.
pub fn is_registry_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

impl RemoteRef {
    pub fn parse(s: &str) -> Result<Self, DistributionError> {
        let bad = |reason| DistributionError::Reference {
            value: s.to_string(),
            reason,
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).map_err(|_| bad("the digest must be sha256:<64 hex>"))?),
            ),
            None => (s, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            if t.is_empty()
                || t.len() > 128
                || t.starts_with(['.', '-'])
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            {
                return Err(bad("tag may contain only [A-Za-z0-9_.-], 1-128 characters"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, repo)) if is_registry_host(first) => (first.to_string(), repo.to_string()),
            _ => {
                let repo = if name.contains('/') {
                    name.to_string()
                } else {
                    format!("library/{name}")
                };
                (DOCKER_HUB.to_string(), repo)
            }
        };
        if repository.is_empty()
            || repository.split('/').any(|c| {
                c.is_empty()
                    || c.starts_with(['.', '_', '-'])
                    || c.ends_with(['.', '_', '-'])
                    || c == ".."
                    || !c.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'.' | b'_' | b'-')
                    })
            })
        {
            return Err(bad(
                "repository components may contain only lowercase letters, digits and . _ - (not at their ends)",
            ));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What a manifest request names: the digest if there is one, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The host the registry API is served from.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The name the local store keeps it under (`registry/repo:tag`), or `None` for a
    /// digest-only reference.
    pub fn local_name(&self) -> Option<String> {
        let tag = self.tag.as_ref()?;
        Some(format!("{}/{}:{tag}", self.registry, self.repository))
    }
}

pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB || registry == "index.docker.io" {
        DOCKER_HUB_API
    } else {
        registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let r = RemoteRef::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        let r = RemoteRef::parse("busybox").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = RemoteRef::parse("localhost:5000/x").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.local_name().unwrap(), "localhost:5000/x:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = RemoteRef::parse(&format!("h.io/x@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.reference(), d);
        assert!(RemoteRef::parse("h.io/X").is_err());
        assert!(RemoteRef::parse("h.io/a/../b").is_err());
        assert!(RemoteRef::parse("h.io/a:").is_err());
    }
}
