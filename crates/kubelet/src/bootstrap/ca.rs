//! The cluster CA of a joining agent: from a file, given PEM, or the server's
//! unauthenticated `/cacerts` checked against a `sha256:<hex>` hash (k3s's way).

use std::path::Path;

use super::{cert_der, io, server_uri, BootstrapError, BootstrapOptions, CaSource};

fn parse_hash(hash: &str) -> Result<String, BootstrapError> {
    let hex = hash
        .strip_prefix("sha256:")
        .unwrap_or(hash)
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(BootstrapError::BadCaHash {
            hash: hash.to_string(),
        });
    }
    Ok(hex)
}

/// The `sha256:<hex>` of a CA certificate's PEM, as `skiff agent --ca-cert-hash` takes it.
pub fn ca_cert_hash(pem: &str) -> String {
    format!("sha256:{}", sha256_hex(pem.as_bytes()))
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex_lower(&sha2::Sha256::digest(data))
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The cluster CA as PEM, from where `opts` says, checked.
pub(super) async fn load(opts: &BootstrapOptions, stored: &Path) -> Result<String, BootstrapError> {
    let (pem, source_name) = match &opts.ca {
        CaSource::File(p) => (
            std::fs::read_to_string(p).map_err(io(p, "read the CA file"))?,
            p.display().to_string(),
        ),
        CaSource::Pem(p) => (p.clone(), "the CA given".to_string()),
        CaSource::FetchWithHash(hash) => {
            let expected = hash.as_deref().map(parse_hash).transpose()?;
            // A CA kept from an earlier start is used when it still fits the hash.
            if let Ok(kept) = std::fs::read_to_string(stored) {
                if expected
                    .as_deref()
                    .is_none_or(|h| sha256_hex(kept.as_bytes()) == h)
                {
                    return Ok(kept);
                }
            }
            let fetched = fetch(opts).await?;
            let actual = sha256_hex(fetched.as_bytes());
            if let Some(expected) = expected {
                if actual != expected {
                    return Err(BootstrapError::CaHashMismatch {
                        server: opts.server.clone(),
                        expected: format!("sha256:{expected}"),
                        actual,
                    });
                }
            } else {
                tracing::warn!(server = %opts.server, "trusting the cluster CA fetched without a hash (sha256:{actual}); pass the hash to verify it");
            }
            (fetched, format!("{}/cacerts", opts.server))
        }
    };
    cert_der(pem.as_bytes()).map_err(|reason| BootstrapError::BadCa {
        source_name,
        reason,
    })?;
    Ok(pem)
}

/// `GET /cacerts` without verifying the server (its CA is what we do not have yet): the
/// caller checks the hash.
async fn fetch(opts: &BootstrapOptions) -> Result<String, BootstrapError> {
    let mut config = kube::Config::new(server_uri(opts)?);
    config.accept_invalid_certs = true;
    let client = kube::Client::try_from(config).map_err(|source| BootstrapError::Client {
        server: opts.server.clone(),
        source,
    })?;
    let req = hyper::http::Request::get("/cacerts")
        .body(Vec::new())
        .map_err(|e| BootstrapError::BadServer {
            server: opts.server.clone(),
            reason: e.to_string(),
        })?;
    client
        .request_text(req)
        .await
        .map_err(|source| BootstrapError::CaFetch {
            server: opts.server.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_hashes_are_checked_for_shape() {
        let h = "sha256:".to_string() + &"Ab".repeat(32);
        assert_eq!(parse_hash(&h).ok(), Some("ab".repeat(32)));
        assert!(matches!(
            parse_hash("sha256:xyz"),
            Err(BootstrapError::BadCaHash { .. })
        ));
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
