//! Parsing and validation of pushed manifests.
//!
//! The registry accepts the four manifest kinds clients push today: OCI image manifest
//! and index, Docker schema 2 manifest and manifest list. It stores the bytes exactly as
//! pushed (their digest is the identity clients use) and only reads out what it must
//! check or index: the blobs and child manifests referenced, and the `subject` and
//! artifact type for the referrers API.

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::{Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest accepted, as in distribution and the spec's recommendation.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// References blobs: a config and layers.
    Image,
    /// References other manifests of the same repository.
    Index,
}

pub fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    size: i64,
    #[serde(default)]
    urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A reference from a manifest that must exist in the repository before it is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub digest: Digest,
    /// True for index children (manifests), false for config and layers (blobs).
    pub manifest: bool,
}

/// What the registry needs to know about a manifest it accepts.
#[derive(Debug)]
pub struct Parsed {
    pub media_type: String,
    pub references: Vec<Reference>,
    pub subject: Option<Digest>,
    /// `artifactType`, or the config's media type for an image manifest without one.
    pub artifact_type: Option<String>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Validates `body` pushed with `content_type` (may be absent; then the body's own
/// `mediaType` decides).
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Parsed> {
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(Error::ManifestTooLarge {
            limit: MAX_MANIFEST_BYTES,
        });
    }
    let raw: RawManifest =
        serde_json::from_slice(body).map_err(|source| Error::ManifestJson { source })?;
    // A Content-Type of plain JSON carries no information; fall back to the body.
    let header_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let media_type = match (header_type, raw.media_type.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(Error::ManifestInvalid {
                reason: "the mediaType field disagrees with the Content-Type header",
            })
        }
        (Some(h), _) => h.to_string(),
        (None, Some(b)) => b.to_string(),
        // OCI allows omitting mediaType; the shape tells which kind it is.
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) if raw.config.is_some() => OCI_MANIFEST.to_string(),
        (None, None) => {
            return Err(Error::ManifestInvalid {
                reason: "no media type: send a Content-Type header or a mediaType field",
            })
        }
    };
    let kind = kind_of(&media_type).ok_or_else(|| Error::ManifestMediaType {
        media_type: media_type.clone(),
    })?;
    if raw.schema_version != Some(2) {
        return Err(Error::ManifestInvalid {
            reason: "schemaVersion must be 2",
        });
    }
    let mut references = Vec::new();
    let mut artifact_type = raw.artifact_type.clone();
    match kind {
        Kind::Image => {
            let config = raw.config.as_ref().ok_or(Error::ManifestInvalid {
                reason: "an image manifest needs a config descriptor",
            })?;
            let layers = raw.layers.as_ref().ok_or(Error::ManifestInvalid {
                reason: "an image manifest needs a layers array",
            })?;
            references.push(Reference {
                digest: descriptor_digest("config.digest", config)?,
                manifest: false,
            });
            for layer in layers {
                let digest = descriptor_digest("layers[].digest", layer)?;
                // Foreign (non-distributable) layers live at their URLs, not here.
                if !layer.urls.is_empty() {
                    continue;
                }
                references.push(Reference {
                    digest,
                    manifest: false,
                });
            }
            if artifact_type.is_none() {
                artifact_type = config.media_type.clone();
            }
        }
        Kind::Index => {
            let manifests = raw.manifests.as_ref().ok_or(Error::ManifestInvalid {
                reason: "an index needs a manifests array",
            })?;
            for m in manifests {
                references.push(Reference {
                    digest: descriptor_digest("manifests[].digest", m)?,
                    manifest: true,
                });
            }
        }
    }
    let subject = raw
        .subject
        .as_ref()
        .map(|s| descriptor_digest("subject.digest", s))
        .transpose()?;
    Ok(Parsed {
        media_type,
        references,
        subject,
        artifact_type,
        annotations: raw.annotations,
    })
}

fn descriptor_digest(field: &'static str, d: &RawDescriptor) -> Result<Digest> {
    if d.size < 0 {
        return Err(Error::ManifestInvalid {
            reason: "a descriptor has a negative size",
        });
    }
    d.digest
        .parse()
        .map_err(|source| Error::ManifestDigest { field, source })
}

/// Digests of the blobs an image manifest keeps alive, for garbage collection. Anything
/// unparsable keeps nothing alive beyond itself (it was validated on push, so this only
/// happens to hand-edited storage).
pub fn referenced_blobs(body: &[u8]) -> Vec<Digest> {
    let Ok(raw) = serde_json::from_slice::<RawManifest>(body) else {
        return Vec::new();
    };
    raw.config
        .iter()
        .chain(raw.layers.iter().flatten())
        .filter_map(|d| d.digest.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_image_and_index() {
        let d = Digest::sha256_of(b"x");
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":1}},"layers":[{{"mediaType":"l","digest":"{d}","size":1}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":1}}}}"#
        );
        let p = parse(Some(OCI_MANIFEST), m.as_bytes()).unwrap();
        assert_eq!(p.references.len(), 2);
        assert_eq!(p.subject, Some(d.clone()));
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert!(matches!(
            parse(Some(OCI_INDEX), m.as_bytes()),
            Err(Error::ManifestInvalid { .. })
        ));
        assert!(matches!(
            parse(Some("application/x-unknown"), b"{\"schemaVersion\":2}"),
            Err(Error::ManifestMediaType { .. })
        ));
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":1}}]}}"#
        );
        let p = parse(None, i.as_bytes()).unwrap();
        assert_eq!(p.media_type, OCI_INDEX);
        assert!(p.references[0].manifest);
    }
}
