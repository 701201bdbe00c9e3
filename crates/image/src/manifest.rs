//! Image metadata: OCI image manifest, index and config; Docker v2 schema 2 manifest and
//! manifest list; layer compression; platform selection.
//!
//! Stored manifests and configs are kept as the exact bytes they arrived as (their
//! digest names them), and only parsed here for reading. Docker v2s2 documents have the
//! same shape as their OCI counterparts, so both parse into oci-spec's types; schema 1
//! is refused.

use std::io::{self, BufRead, BufReader, Read};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::digest::{Digest, DigestError};
use crate::error::Category;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Errors reading image metadata.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{what} {digest} is not valid JSON of that kind")]
    Parse {
        what: &'static str,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} {digest}: {source}")]
    BadDigest {
        what: &'static str,
        digest: String,
        #[source]
        source: DigestError,
    },
    #[error("unsupported manifest media type {media_type:?} in {digest}; skiff reads OCI image manifests/indexes and Docker v2 schema 2 manifests/lists")]
    Unsupported { media_type: String, digest: String },
    #[error("image is for {image}, but this host is {host}; pull or build an image for {host}")]
    PlatformMismatch { image: String, host: String },
    #[error("index {digest} has no manifest for {host} (it has: {available}); use an image built for {host}")]
    NoPlatform {
        digest: String,
        host: String,
        available: String,
    },
    #[error("index nesting deeper than {max} levels at {digest}")]
    TooDeep { digest: String, max: usize },
    #[error(
        "config {digest} lists {diff_ids} layer diff IDs but the manifest has {layers} layers"
    )]
    LayerCount {
        digest: String,
        diff_ids: usize,
        layers: usize,
    },
}

impl FormatError {
    pub fn category(&self) -> Category {
        Category::Invalid
    }
}

/// A top-level document a reference can point to.
#[derive(Debug, Clone)]
pub enum TopLevel {
    Manifest(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// Parses manifest or index bytes; `hint` is the media type from the descriptor that
/// pointed here (the document's own `mediaType` field wins when present).
pub fn parse_top(
    bytes: &[u8],
    hint: Option<&str>,
    digest: &Digest,
) -> Result<TopLevel, FormatError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let parse_err = |what, source| FormatError::Parse {
        what,
        digest: digest.to_string(),
        source,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| parse_err("manifest", e))?;
    let mt = probe.media_type.as_deref().or(hint);
    let is_index = match mt {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        // OCI allows omitting mediaType; decide by shape.
        None if probe.schema_version == Some(2) && probe.manifests.is_some() => true,
        None if probe.schema_version == Some(2) && probe.layers.is_some() => false,
        other => {
            return Err(FormatError::Unsupported {
                media_type: other.unwrap_or("<none>").to_string(),
                digest: digest.to_string(),
            })
        }
    };
    if is_index {
        serde_json::from_slice(bytes)
            .map(|i| TopLevel::Index(Box::new(i)))
            .map_err(|e| parse_err("image index", e))
    } else {
        serde_json::from_slice(bytes)
            .map(|m| TopLevel::Manifest(Box::new(m)))
            .map_err(|e| parse_err("image manifest", e))
    }
}

pub fn parse_manifest(bytes: &[u8], digest: &Digest) -> Result<ImageManifest, FormatError> {
    serde_json::from_slice(bytes).map_err(|source| FormatError::Parse {
        what: "image manifest",
        digest: digest.to_string(),
        source,
    })
}

pub fn parse_config(bytes: &[u8], digest: &Digest) -> Result<ImageConfiguration, FormatError> {
    serde_json::from_slice(bytes).map_err(|source| FormatError::Parse {
        what: "image config",
        digest: digest.to_string(),
        source,
    })
}

/// The digest a descriptor names, validated.
pub fn descriptor_digest(d: &Descriptor, what: &'static str) -> Result<Digest, FormatError> {
    let s = d.digest().to_string();
    Digest::parse(&s).map_err(|source| FormatError::BadDigest {
        what,
        digest: s,
        source,
    })
}

/// The diff IDs (uncompressed layer digests) a config lists, bottom layer first.
pub fn diff_ids(config: &ImageConfiguration, digest: &Digest) -> Result<Vec<Digest>, FormatError> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|s| {
            Digest::parse(s).map_err(|source| FormatError::BadDigest {
                what: "config diff ID",
                digest: format!("{s} (in config {digest})"),
                source,
            })
        })
        .collect()
}

/// An os/architecture(/variant) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// The platform this binary runs on, in OCI (Go) vocabulary.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Self {
            os: std::env::consts::OS.to_string(),
            arch: arch.to_string(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]` (as `--platform` takes it).
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('/');
        let os = it.next().filter(|s| !s.is_empty())?.to_string();
        let arch = it.next().filter(|s| !s.is_empty())?.to_string();
        let variant = it.next().map(str::to_string);
        if it.next().is_some() {
            return None;
        }
        Some(Self { os, arch, variant })
    }

    fn of_config(c: &ImageConfiguration) -> Self {
        Self {
            os: c.os().to_string(),
            arch: c.architecture().to_string(),
            variant: c.variant().clone(),
        }
    }

    /// Whether an image for `image` can run here. A variant is compared only when both
    /// sides name one: most images and hosts leave it out.
    pub fn accepts(&self, image: &Platform) -> bool {
        self.os == image.os
            && self.arch == image.arch
            && match (&self.variant, &image.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// Refuses a config whose os/architecture cannot run on `host`.
pub fn check_platform(config: &ImageConfiguration, host: &Platform) -> Result<(), FormatError> {
    let image = Platform::of_config(config);
    if host.accepts(&image) {
        Ok(())
    } else {
        Err(FormatError::PlatformMismatch {
            image: image.to_string(),
            host: host.to_string(),
        })
    }
}

/// Picks the entry of an index for `host`. Entries without a platform are accepted only
/// when they are the index's single image manifest (single-image OCI layouts written by
/// skopeo and umoci leave the platform out); the config check still applies later.
pub fn select_from_index<'a>(
    index: &'a ImageIndex,
    host: &Platform,
    digest: &Digest,
) -> Result<&'a Descriptor, FormatError> {
    let mut available = Vec::new();
    let mut unplatformed = Vec::new();
    for m in index.manifests() {
        match m.platform() {
            Some(p) => {
                let p = Platform {
                    os: p.os().to_string(),
                    arch: p.architecture().to_string(),
                    variant: p.variant().clone(),
                };
                if host.accepts(&p) {
                    return Ok(m);
                }
                // Docker's attestation manifests are tagged unknown/unknown: not images.
                if p.os != "unknown" {
                    available.push(p.to_string());
                }
            }
            None => unplatformed.push(m),
        }
    }
    if available.is_empty() && unplatformed.len() == 1 {
        return Ok(unplatformed[0]);
    }
    Err(FormatError::NoPlatform {
        digest: digest.to_string(),
        host: host.to_string(),
        available: if available.is_empty() {
            "no platform-tagged manifests".to_string()
        } else {
            available.join(", ")
        },
    })
}

/// Layer compression, detected from the first bytes rather than trusted from media
/// types (docker-archive layers carry none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a stream starting with `head` (at least 4 bytes, unless the
    /// stream is shorter) uses.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    pub fn oci_media_type(self) -> &'static str {
        match self {
            Self::None => OCI_LAYER,
            Self::Gzip => OCI_LAYER_GZIP,
            Self::Zstd => OCI_LAYER_ZSTD,
        }
    }
}

/// Wraps `r` in the decompressor its magic bytes call for.
pub fn decompress<'a, R: Read + 'a>(r: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut br = BufReader::with_capacity(256 * 1024, r);
    let c = Compression::sniff(br.fill_buf()?);
    let out: Box<dyn Read + 'a> = match c {
        // MultiGzDecoder: pigz and some tools write concatenated gzip members.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(br)?),
        Compression::None => Box::new(br),
    };
    Ok((c, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
      {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
      {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","platform":{"architecture":"amd64","os":"linux"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","platform":{"architecture":"unknown","os":"unknown"}}]}"#;

    #[test]
    fn picks_platform_from_docker_list() {
        let d = Digest::of(INDEX.as_bytes());
        let TopLevel::Index(idx) = parse_top(INDEX.as_bytes(), None, &d).unwrap() else {
            panic!("not an index")
        };
        let amd = Platform::parse("linux/amd64").unwrap();
        assert!(select_from_index(&idx, &amd, &d)
            .unwrap()
            .digest()
            .to_string()
            .ends_with("2222"));
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert!(select_from_index(&idx, &arm, &d)
            .unwrap()
            .digest()
            .to_string()
            .ends_with("1111"));
        let err =
            select_from_index(&idx, &Platform::parse("linux/s390x").unwrap(), &d).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("linux/s390x")
                && msg.contains("linux/amd64")
                && msg.contains("linux/arm64/v8"),
            "{msg}"
        );
        assert!(!msg.contains("unknown"), "{msg}");
    }

    #[test]
    fn wrong_arch_config_names_both() {
        let cfg =
            r#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = parse_config(cfg.as_bytes(), &Digest::of(cfg.as_bytes())).unwrap();
        let err = check_platform(&c, &Platform::parse("linux/amd64").unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image is for linux/arm64, but this host is linux/amd64; pull or build an image for linux/amd64"
        );
        check_platform(&c, &Platform::parse("linux/arm64").unwrap()).unwrap();
    }

    #[test]
    fn schema1_is_refused() {
        let m = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = parse_top(m.as_bytes(), None, &Digest::of(m.as_bytes())).unwrap_err();
        assert!(matches!(err, FormatError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn sniffs_compression() {
        use std::io::Write;
        let raw = b"plain tar bytes".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&raw[..], 1).unwrap();
        for (bytes, want) in [
            (raw.clone(), Compression::None),
            (gz, Compression::Gzip),
            (zs, Compression::Zstd),
        ] {
            let (c, mut r) = decompress(&bytes[..]).unwrap();
            assert_eq!(c, want);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, raw);
        }
    }
}
