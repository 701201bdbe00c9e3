//! Service-account tokens as JWTs, shared by the API server (which issues bound tokens
//! through TokenRequest and verifies every token on every request) and the controller
//! manager's token controller (which fills legacy token Secrets).
//!
//! [`Signer`] signs ES256 JWTs with an ECDSA P-256 key (skiff uses the cluster CA's key,
//! which every server on one store shares) and checks their signatures; what a token's
//! claims must say beyond its signature (expiry and audiences of bound tokens; the Secret
//! and ServiceAccount of legacy ones) is the verifier's to decide.
//!
//! Legacy tokens are what Kubernetes before 1.24 put in a Secret for every
//! ServiceAccount, and since then only in a Secret that asks for one: type
//! [`SECRET_TYPE`] with the [`NAME_ANNOTATION`] naming the account. Their claims
//! ([`legacy_claims`]) name the Secret and the account under issuer [`LEGACY_ISSUER`] and
//! carry no expiry: the token is valid while its Secret holds it and the account exists
//! with the uid it names.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{json, Value};

/// The issuer of legacy (Secret-based) tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// The type of a Secret holding a legacy token.
pub const SECRET_TYPE: &str = "kubernetes.io/service-account-token";
/// The annotation of a token Secret naming its ServiceAccount (required).
pub const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// The annotation of a token Secret holding its ServiceAccount's uid (the token
/// controller sets it; a Secret naming another uid than the account's is deleted).
pub const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";
/// The label the API server sets on a token Secret to the day (UTC, `2006-01-02`) its
/// token was last used, at most once a day.
pub const LAST_USED_LABEL: &str = "kubernetes.io/legacy-token-last-used";
/// The label marking a token Secret's token invalid since that day (Kubernetes'
/// legacy-token cleaner sets it; a token of such a Secret is refused).
pub const INVALID_SINCE_LABEL: &str = "kubernetes.io/legacy-token-invalid-since";

const CLAIM_NAMESPACE: &str = "kubernetes.io/serviceaccount/namespace";
const CLAIM_SECRET: &str = "kubernetes.io/serviceaccount/secret.name";
const CLAIM_NAME: &str = "kubernetes.io/serviceaccount/service-account.name";
const CLAIM_UID: &str = "kubernetes.io/serviceaccount/service-account.uid";

/// The DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Signs service-account tokens and checks their signatures.
pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// The key id: base64url of the SHA-256 of the public key's DER, as kube derives it.
    kid: String,
}

impl std::fmt::Debug for Signer {
    // The key is a secret: only its id is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

/// Why a key cannot sign service-account tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM private key")]
    NotPem,
    #[error("not an ECDSA P-256 PKCS#8 key ({why}); service-account tokens need one")]
    NotP256 { why: String },
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
    /// The signer of a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Signer, KeyError> {
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        if body.trim().is_empty() {
            return Err(KeyError::NotPem);
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|_| KeyError::NotPem)?;
        Signer::from_pkcs8(&der).map_err(|why| KeyError::NotP256 { why })
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Signer, String> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| e.to_string())?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let kid = B64.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
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

    /// The claims of a token this key signed whose issuer is one of `issuers`. Anything
    /// else that is not even a JWT of one of them is [`Invalid::NotOurs`] (another
    /// authenticator's token); a bad signature is [`Invalid::Signature`].
    pub fn verify_signature(&self, token: &str, issuers: &[&str]) -> Result<Value, Invalid> {
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
        let issuer = claims.get("iss").and_then(Value::as_str);
        if header.get("alg").and_then(Value::as_str) != Some("ES256")
            || !issuer.is_some_and(|i| issuers.contains(&i))
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
        Ok(claims)
    }

    /// The key id tokens name in their header.
    pub fn kid(&self) -> &str {
        &self.kid
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
}

/// The claims of the legacy token of `secret` for ServiceAccount `sa` (uid `sa_uid`) in
/// `ns`: no audience, no expiry.
pub fn legacy_claims(ns: &str, sa: &str, sa_uid: &str, secret: &str) -> Value {
    json!({
        "iss": LEGACY_ISSUER,
        CLAIM_NAMESPACE: ns,
        CLAIM_SECRET: secret,
        CLAIM_NAME: sa,
        CLAIM_UID: sa_uid,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
    })
}

/// What a legacy token's claims name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyClaims {
    pub namespace: String,
    pub secret: String,
    pub service_account: String,
    pub service_account_uid: String,
}

impl LegacyClaims {
    /// The names in legacy `claims`; None if one is missing or empty (kube refuses such
    /// a token).
    pub fn parse(claims: &Value) -> Option<LegacyClaims> {
        let s = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        let parsed = LegacyClaims {
            namespace: s(CLAIM_NAMESPACE)?,
            secret: s(CLAIM_SECRET)?,
            service_account: s(CLAIM_NAME)?,
            service_account_uid: s(CLAIM_UID)?,
        };
        // The subject must be the account the private claims name.
        let sub = format!(
            "system:serviceaccount:{}:{}",
            parsed.namespace, parsed.service_account
        );
        (s("sub").as_deref() == Some(sub.as_str())).then_some(parsed)
    }
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
    fn legacy_tokens_verify_and_name_their_secret_and_account() {
        let s = signer();
        let t = s.sign(&legacy_claims("default", "bot", "u1", "bot-token"));
        let claims = s.verify_signature(&t, &[LEGACY_ISSUER]).unwrap();
        assert_eq!(
            LegacyClaims::parse(&claims),
            Some(LegacyClaims {
                namespace: "default".into(),
                secret: "bot-token".into(),
                service_account: "bot".into(),
                service_account_uid: "u1".into(),
            })
        );
        // Another issuer's tokens are not legacy ones; another key's are forged.
        assert_eq!(
            s.verify_signature(&t, &["https://kubernetes.default.svc"]),
            Err(Invalid::NotOurs)
        );
        assert_eq!(
            signer().verify_signature(&t, &[LEGACY_ISSUER]),
            Err(Invalid::Signature)
        );
        // Claims that do not name everything, or a subject of another account.
        let mut partial = legacy_claims("default", "bot", "u1", "bot-token");
        partial[CLAIM_UID] = json!("");
        assert_eq!(LegacyClaims::parse(&partial), None);
        let mut other = legacy_claims("default", "bot", "u1", "bot-token");
        other["sub"] = json!("system:serviceaccount:kube-system:admin");
        assert_eq!(LegacyClaims::parse(&other), None);
    }

    #[test]
    fn keys_must_be_p256_pkcs8_pem() {
        assert_eq!(Signer::from_pem("hello").unwrap_err(), KeyError::NotPem);
        let rsa_like = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            Signer::from_pem(rsa_like),
            Err(KeyError::NotP256 { .. })
        ));
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        );
        let s = Signer::from_pem(&pem).unwrap();
        assert!(format!("{s:?}").contains(s.kid()));
    }
}
