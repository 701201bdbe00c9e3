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
//! `/.well-known/openid-configuration` pointing at it. The signer itself, and the claims of
//! legacy tokens (which the controller manager's token controller signs with the same key
//! into Secrets that ask for one; see `authn`), are `skiff_api::service_account_token`'s.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
pub use skiff_api::service_account_token::{Invalid, Signer};

/// The issuer and default audience of service-account tokens (kube-apiserver's
/// `--service-account-issuer` as kubeadm and k3s set it).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("{path}: {source}")]
    Key {
        path: String,
        #[source]
        source: skiff_api::service_account_token::KeyError,
    },
    #[error("{path}: reading failed: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The signer of the key at `path` (PKCS#8 PEM).
pub fn load_signer(path: &std::path::Path) -> Result<Signer, SignerError> {
    let p = path.display().to_string();
    let pem = std::fs::read_to_string(path).map_err(|source| SignerError::Io {
        path: p.clone(),
        source,
    })?;
    Signer::from_pem(&pem).map_err(|source| SignerError::Key { path: p, source })
}

/// The time and audience checks of a bound token's verified claims.
pub fn check_bound(claims: &Value, now: i64, audiences: &[&str]) -> Result<(), Invalid> {
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
    Ok(())
}

/// The OIDC discovery document (`/.well-known/openid-configuration`).
pub fn openid_configuration() -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
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
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair};

    /// The claims of a bound token (TokenRequest's) `signer` signed, checked for time and
    /// audience.
    fn verify(
        signer: &Signer,
        token: &str,
        now: i64,
        audiences: &[&str],
    ) -> Result<Value, Invalid> {
        let claims = signer.verify_signature(token, &[ISSUER])?;
        check_bound(&claims, now, audiences)?;
        Ok(claims)
    }

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
        let got = verify(&s, &t, 1001, &[ISSUER]).unwrap();
        assert_eq!(got["sub"], "system:serviceaccount:default:app");
        assert_eq!(got["kubernetes.io"]["pod"]["uid"], "pu");
        assert_eq!(
            verify(&s, &t, 1000 + 3600 + 61, &[ISSUER]),
            Err(Invalid::Expired)
        );
        assert!(matches!(
            verify(&s, &t, 1001, &["vault"]),
            Err(Invalid::Audience(_))
        ));
        // Another key's token, a tampered token, garbage.
        assert_eq!(
            verify(&signer(), &t, 1001, &[ISSUER]),
            Err(Invalid::Signature)
        );
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = B64.encode(
            json!({"iss": ISSUER, "sub": "system:admin", "exp": 9999, "aud": [ISSUER]}).to_string(),
        );
        parts[1] = &forged;
        assert_eq!(
            verify(&s, &parts.join("."), 1001, &[ISSUER]),
            Err(Invalid::Signature)
        );
        assert_eq!(verify(&s, "abc", 1, &[ISSUER]), Err(Invalid::NotOurs));
        assert_eq!(verify(&s, "a.b.c", 1, &[ISSUER]), Err(Invalid::NotOurs));
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
