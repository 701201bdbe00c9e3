//! Service-account tokens: JWTs signed with the cluster's key, as kube-apiserver issues them
//! through TokenRequest (`kubectl create token`, projected volumes) and verifies them on
//! every request.
//!
//! The signing key is the cluster CA's ECDSA P-256 key (`pki/ca.key`): every server on one
//! store already shares it, so a token one server issued verifies on all (kube-apiserver
//! takes a separate `--service-account-key-file`; skiff has one key less to distribute).
//! Tokens are ES256 with kube's claims (`iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti`
//! and the private `kubernetes.io` claim naming the namespace, service account and the
//! bound pod or secret); the public key is published as a JWKS at `/openid/v1/jwks` with
//! `/.well-known/openid-configuration` pointing at it.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{json, Value};
use sha2::Digest;

/// The issuer and default audience of service-account tokens (kube-apiserver's
/// `--service-account-issuer` as kubeadm and k3s set it).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Signs and verifies service-account tokens.
pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// The key id: base64url of the SHA-256 of the public key's DER, as kube derives it.
    kid: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("{path}: not a PEM private key")]
    NotPem { path: String },
    #[error("{path}: not an ECDSA P-256 PKCS#8 key ({why}); service-account tokens need one")]
    NotP256 { path: String, why: String },
    #[error("{path}: reading failed: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a token was not accepted (said in TokenReview answers and debug logs only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("not a service-account token")]
    NotOurs,
    #[error("invalid signature")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audiences {0:?} do not match the API audiences")]
    Audience(Vec<String>),
}

impl Signer {
    /// The signer of the key at `path` (PKCS#8 PEM).
    pub fn load(path: &std::path::Path) -> Result<Signer, SignerError> {
        let p = path.display().to_string();
        let pem = std::fs::read_to_string(path).map_err(|source| SignerError::Io {
            path: p.clone(),
            source,
        })?;
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|_| SignerError::NotPem { path: p.clone() })?;
        Signer::from_pkcs8(&der).map_err(|why| SignerError::NotP256 { path: p, why })
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Signer, String> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| e.to_string())?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let kid = B64.encode(sha2::Sha256::digest(&spki));
        Ok(Signer { key, rng, kid })
    }

    /// A signed token with these claims.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        // Signing with a valid key and the system RNG does not fail.
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map(|s| B64.encode(s.as_ref()))
            .unwrap_or_default();
        format!("{signing_input}.{sig}")
    }

    /// The claims of a token this key signed, checked for signature, time and audience.
    pub fn verify(&self, token: &str, now: i64, audiences: &[&str]) -> Result<Value, Invalid> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Invalid::NotOurs);
        };
        let header: Value = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Invalid::NotOurs)?;
        let claims: Value = B64
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Invalid::NotOurs)?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256")
            || claims.get("iss").and_then(Value::as_str) != Some(ISSUER)
        {
            return Err(Invalid::NotOurs);
        }
        let sig = B64.decode(s).map_err(|_| Invalid::Signature)?;
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        public
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| Invalid::Signature)?;
        // Kubernetes allows a minute of clock skew.
        const LEEWAY: i64 = 60;
        let at = |k: &str| claims.get(k).and_then(Value::as_i64);
        if at("exp").is_none_or(|exp| now > exp + LEEWAY) {
            return Err(Invalid::Expired);
        }
        if at("nbf").is_some_and(|nbf| now + LEEWAY < nbf) {
            return Err(Invalid::NotYetValid);
        }
        let aud: Vec<String> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        };
        if !aud.iter().any(|a| audiences.contains(&a.as_str())) {
            return Err(Invalid::Audience(aud));
        }
        Ok(claims)
    }

    /// The public key as a JSON Web Key Set (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": B64.encode(&point[1..33]),
            "y": B64.encode(&point[33..65]),
        }]})
    }

    /// The OIDC discovery document (`/.well-known/openid-configuration`).
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": ISSUER,
            "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The claims of a token for service account `sa` (its uid) in `ns`, bound to `bound`
/// (`("Pod"|"Secret", name, uid)`) if given, valid `secs` from `now`.
pub fn claims(
    ns: &str,
    sa: &str,
    sa_uid: &str,
    bound: Option<(&str, &str, &str)>,
    audiences: &[String],
    now: i64,
    secs: i64,
) -> Value {
    let mut k8s = json!({
        "namespace": ns,
        "serviceaccount": {"name": sa, "uid": sa_uid},
    });
    if let Some((kind, name, uid)) = bound {
        k8s[kind.to_lowercase()] = json!({"name": name, "uid": uid});
    }
    json!({
        "aud": audiences,
        "exp": now + secs,
        "iat": now,
        "nbf": now,
        "iss": ISSUER,
        "jti": crate::meta::uid(),
        "kubernetes.io": k8s,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        Signer::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    #[test]
    fn tokens_verify_until_they_expire_and_only_for_their_audience() {
        let s = signer();
        let c = claims(
            "default",
            "app",
            "u1",
            Some(("Pod", "p", "pu")),
            &[ISSUER.into()],
            1000,
            3600,
        );
        let t = s.sign(&c);
        let got = s.verify(&t, 1001, &[ISSUER]).unwrap();
        assert_eq!(got["sub"], "system:serviceaccount:default:app");
        assert_eq!(got["kubernetes.io"]["pod"]["uid"], "pu");
        assert_eq!(
            s.verify(&t, 1000 + 3600 + 61, &[ISSUER]),
            Err(Invalid::Expired)
        );
        assert!(matches!(
            s.verify(&t, 1001, &["vault"]),
            Err(Invalid::Audience(_))
        ));
        // Another key's token, a tampered token, garbage.
        assert_eq!(
            signer().verify(&t, 1001, &[ISSUER]),
            Err(Invalid::Signature)
        );
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = B64.encode(
            json!({"iss": ISSUER, "sub": "system:admin", "exp": 9999, "aud": [ISSUER]}).to_string(),
        );
        parts[1] = &forged;
        assert_eq!(
            s.verify(&parts.join("."), 1001, &[ISSUER]),
            Err(Invalid::Signature)
        );
        assert_eq!(s.verify("abc", 1, &[ISSUER]), Err(Invalid::NotOurs));
        assert_eq!(s.verify("a.b.c", 1, &[ISSUER]), Err(Invalid::NotOurs));
    }

    #[test]
    fn the_jwks_names_the_key_the_tokens_name() {
        let s = signer();
        let t = s.sign(&json!({}));
        let header: Value =
            serde_json::from_slice(&B64.decode(t.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(s.jwks()["keys"][0]["kid"], header["kid"]);
        assert_eq!(
            B64.decode(s.jwks()["keys"][0]["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
    }
}
