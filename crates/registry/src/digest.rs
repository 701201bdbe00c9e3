//! Content digests (`algorithm:hex`) as the OCI image spec defines them.
//!
//! Only `sha256` and `sha512` are accepted: they are the registered algorithms, and the
//! hex part has a fixed length for each, so a parsed digest is always safe to use as a
//! file name.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A digest algorithm the registry can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

/// A validated digest: known algorithm, lowercase hex of the right length.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Why a string is not an acceptable digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestParseError {
    #[error("digest {input:?} has no `algorithm:` prefix")]
    MissingAlgorithm { input: String },
    #[error("digest {input:?} uses algorithm {algorithm:?}; only sha256 and sha512 are supported")]
    UnsupportedAlgorithm { input: String, algorithm: String },
    #[error("digest {input:?} must have {expected} lowercase hex characters after the algorithm")]
    BadHex { input: String, expected: usize },
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `data` with `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut h = algorithm.hasher();
        h.update(data);
        h.finish()
    }

    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(input: &str) -> Result<Digest, DigestParseError> {
        let (alg, hex) =
            input
                .split_once(':')
                .ok_or_else(|| DigestParseError::MissingAlgorithm {
                    input: input.to_string(),
                })?;
        let algorithm =
            Algorithm::from_name(alg).ok_or_else(|| DigestParseError::UnsupportedAlgorithm {
                input: input.to_string(),
                algorithm: alg.to_string(),
            })?;
        let ok = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(DigestParseError::BadHex {
                input: input.to_string(),
                expected: algorithm.hex_len(),
            });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

/// An incremental hasher for one algorithm. Cloneable so an upload's state can be kept
/// between chunks without re-reading what is already on disk.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hasher::Sha256(_) => f.write_str("Hasher(sha256)"),
            Hasher::Sha512(_) => f.write_str("Hasher(sha512)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(d, Digest::sha256_of(b""));
        assert!("sha256:E3B0".parse::<Digest>().is_err());
        assert!("md5:abcd".parse::<Digest>().is_err());
        assert!("nocolon".parse::<Digest>().is_err());
        assert!("sha256:../../../../etc/passwd".parse::<Digest>().is_err());
        let s512 = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(s512.to_string().parse::<Digest>().unwrap(), s512);
    }
}
