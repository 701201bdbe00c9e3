//! Authentication: who a request comes from, as kube-apiserver's authenticator chain
//! decides it — a client certificate signed by the cluster CA (CN = user, O = groups), the
//! cluster's join token, or a service-account token (a JWT this cluster signed, whose
//! service account, and bound pod or secret, still exist with the uids it names; or a
//! legacy token that the Secret it names still holds) — and
//! then who it acts as: impersonation headers (`kubectl --as`, `--as-group`, `--as-uid`),
//! honoured only when the authorizer lets the real user `impersonate` each of them.

use axum::extract::Request;
use axum::http::{header, HeaderMap};
use serde_json::Value;
use skiff_api::kinds;
use skiff_api::service_account_token as sat;

use crate::audit::UserInfo;
use crate::authz::{self, Attributes};
use crate::handlers::objects;
use crate::status::ApiError;
use crate::{AppState, Peer};

/// Who the cluster token authenticates as (agents and benchmarks use it; it may do
/// everything, like the admin certificate).
pub const TOKEN_USER: &str = "skiff:token";

/// What a request presents to authenticate with.
pub enum Credentials {
    /// A client certificate signed by the cluster CA, read as a user.
    Certificate(UserInfo),
    Bearer(String),
    None,
}

/// The credentials of a request (read before any await: a request is not shared).
pub fn credentials(req: &Request) -> Credentials {
    if req.extensions().get::<Peer>() == Some(&Peer::ClientCert) {
        return Credentials::Certificate(req.extensions().get::<UserInfo>().cloned().unwrap_or(
            UserInfo {
                groups: vec!["system:authenticated".into()],
                ..Default::default()
            },
        ));
    }
    match req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "))
    {
        Some(t) => Credentials::Bearer(t.to_string()),
        None => Credentials::None,
    }
}

/// The user credentials authenticate as, if any.
pub async fn authenticate(st: &AppState, c: Credentials) -> Option<UserInfo> {
    match c {
        Credentials::Certificate(u) => Some(u),
        Credentials::Bearer(t) => token_user(st, &t).await.ok(),
        Credentials::None => None,
    }
}

/// Who a bearer token authenticates as (a TokenReview asks the same), or why it does not.
pub async fn token_user(st: &AppState, token: &str) -> Result<UserInfo, String> {
    let token = token.trim();
    if token.is_empty() {
        return Err("no token".into());
    }
    // Constant-time comparison: the token is a secret.
    if constant_time_eq(token.as_bytes(), st.token.as_bytes()) {
        return Ok(UserInfo {
            username: TOKEN_USER.into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..Default::default()
        });
    }
    let claims = st
        .signer
        .verify_signature(token, &[crate::sa_token::ISSUER, sat::LEGACY_ISSUER])
        .map_err(|e| e.to_string())?;
    if claims.get("iss").and_then(Value::as_str) == Some(sat::LEGACY_ISSUER) {
        return legacy_user(st, token, &claims).await;
    }
    crate::sa_token::check_bound(
        &claims,
        crate::sa_token::unix_now(),
        &[crate::sa_token::ISSUER],
    )
    .map_err(|e| e.to_string())?;
    service_account_user(st, &claims).await
}

/// The service account of a legacy token (verified claims), as kube-apiserver's legacy
/// validator decides it: its Secret still exists, is not being deleted or marked
/// invalid, and holds exactly this token; its ServiceAccount still exists with the uid
/// the token names. The Secret's last-used label is brought to today's date.
async fn legacy_user(st: &AppState, token: &str, claims: &Value) -> Result<UserInfo, String> {
    let c = sat::LegacyClaims::parse(claims)
        .ok_or("the legacy token does not name its namespace, secret and service account")?;
    let ns = c.namespace.as_str();
    let get = |kind: &'static str, name: String| async move {
        let k = kinds::by_kind("v1", kind).ok_or_else(|| format!("no kind {kind}"))?;
        match objects::get(&st.objects, k, Some(ns), &name).await {
            Ok(o) => Ok((k, o)),
            Err(e) if e.code == axum::http::StatusCode::NOT_FOUND => Err(format!(
                "{} {ns}/{name} no longer exists",
                kind.to_lowercase()
            )),
            Err(e) => Err(format!(
                "reading {} {ns}/{name}: {}",
                kind.to_lowercase(),
                e.message
            )),
        }
    };
    let (secret_kind, secret) = get("Secret", c.secret.clone()).await?;
    let what = format!("secret {ns}/{}", c.secret);
    if secret.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(format!("{what} is being deleted"));
    }
    let held = crate::meta::str_at(&secret, "/data/token")
        .and_then(|t| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(t).ok()
        })
        .unwrap_or_default();
    if !constant_time_eq(&held, token.as_bytes()) {
        return Err(format!("{what} does not hold this token"));
    }
    let label = |l: &str| {
        secret
            .pointer("/metadata/labels")
            .and_then(|m| m.get(l))
            .and_then(Value::as_str)
    };
    if let Some(since) = label(sat::INVALID_SINCE_LABEL) {
        return Err(format!("{what}'s token was invalidated on {since}"));
    }
    let (_, sa) = get("ServiceAccount", c.service_account.clone()).await?;
    if crate::meta::str_at(&sa, "/metadata/uid") != Some(c.service_account_uid.as_str()) {
        return Err(format!(
            "serviceaccount {ns}/{} has changed since the token was issued (uid mismatch)",
            c.service_account
        ));
    }
    if sa.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(format!(
            "serviceaccount {ns}/{} is being deleted",
            c.service_account
        ));
    }
    let today = crate::meta::rfc3339(st.objects.clock.now());
    let today = today.get(..10).unwrap_or_default();
    if label(sat::LAST_USED_LABEL) != Some(today) {
        // At most once a day per Secret; a concurrent writer wins (the next request
        // tries again), and a failure never fails the request.
        let mut marked = secret.clone();
        marked["metadata"]["labels"][sat::LAST_USED_LABEL] = Value::String(today.to_string());
        let q = crate::query::Query::parse(Some("fieldManager=kube-apiserver"));
        if let Err(e) = objects::update(
            &st.objects,
            secret_kind,
            Some(ns),
            &c.secret,
            marked,
            &q,
            objects::Part::Main,
        )
        .await
        {
            tracing::debug!(secret = %what, error = %e.message, "marking a legacy token used");
        }
    }
    Ok(UserInfo {
        username: format!("system:serviceaccount:{ns}:{}", c.service_account),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        uid: c.service_account_uid.clone(),
        extra: Default::default(),
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The service account a verified token names, if it (and what the token is bound to)
/// still exists with the uid the token names.
async fn service_account_user(st: &AppState, claims: &Value) -> Result<UserInfo, String> {
    let s = |p: &str| {
        claims
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let ns = s("/kubernetes.io/namespace");
    let name = s("/kubernetes.io/serviceaccount/name");
    let uid = s("/kubernetes.io/serviceaccount/uid");
    if ns.is_empty() || name.is_empty() {
        return Err("the token names no service account".into());
    }
    let exists = |kind: &'static str, obj_name: &str, want_uid: &str| {
        let (ns, obj_name, want_uid) = (ns.to_string(), obj_name.to_string(), want_uid.to_string());
        async move {
            let k = kinds::by_kind("v1", kind).ok_or_else(|| format!("no kind {kind}"))?;
            match objects::get(&st.objects, k, Some(&ns), &obj_name).await {
                Ok(o)
                    if want_uid.is_empty()
                        || crate::meta::str_at(&o, "/metadata/uid") == Some(&want_uid) =>
                {
                    Ok(o)
                }
                Ok(_) => Err(format!(
                    "{} {ns}/{obj_name} has changed since the token was issued (uid mismatch)",
                    kind.to_lowercase()
                )),
                Err(_) => Err(format!(
                    "{} {ns}/{obj_name} no longer exists",
                    kind.to_lowercase()
                )),
            }
        }
    };
    exists("ServiceAccount", name, uid).await?;
    let mut extra = std::collections::BTreeMap::new();
    if !s("/kubernetes.io/pod/name").is_empty() {
        let pod = exists(
            "Pod",
            s("/kubernetes.io/pod/name"),
            s("/kubernetes.io/pod/uid"),
        )
        .await?;
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(format!(
                "pod {ns}/{} is being deleted",
                s("/kubernetes.io/pod/name")
            ));
        }
        extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec![s("/kubernetes.io/pod/name").to_string()],
        );
        extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            vec![s("/kubernetes.io/pod/uid").to_string()],
        );
    }
    if !s("/kubernetes.io/secret/name").is_empty() {
        exists(
            "Secret",
            s("/kubernetes.io/secret/name"),
            s("/kubernetes.io/secret/uid"),
        )
        .await?;
    }
    if !s("/jti").is_empty() {
        extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            vec![format!("JTI={}", s("/jti"))],
        );
    }
    Ok(UserInfo {
        username: format!("system:serviceaccount:{ns}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        uid: uid.to_string(),
        extra,
    })
}

/// The user `user` acts as after the request's impersonation headers, each checked with
/// the authorizer as kube-apiserver does (verb `impersonate` on users, groups,
/// serviceaccounts, uids or userextras/<key>).
pub fn impersonate(
    st: &AppState,
    user: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let as_user = values("impersonate-user");
    let as_groups = values("impersonate-group");
    let as_uid = values("impersonate-uid");
    let extras: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix("impersonate-extra-")?;
            Some((key.to_string(), v.to_str().ok()?.to_string()))
        })
        .collect();
    if as_user.is_empty() {
        if !as_groups.is_empty() || !as_uid.is_empty() || !extras.is_empty() {
            return Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Internal error occurred: requested [] without impersonating a user",
            ));
        }
        return Ok(user);
    }
    let name = &as_user[0];
    let check = |attrs: Attributes| -> Result<(), ApiError> {
        if authz::allowed(st, &attrs) {
            Ok(())
        } else {
            Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "Forbidden",
                authz::impersonation_message(&user, &attrs),
            ))
        }
    };
    let base = |resource: &str, name: &str, group: &str, ns: &str| Attributes {
        user: user.username.clone(),
        groups: user.groups.clone(),
        verb: "impersonate".into(),
        namespace: ns.into(),
        api_group: group.into(),
        resource: resource.into(),
        subresource: String::new(),
        name: name.into(),
        path: String::new(),
        resource_request: true,
        field_selector: String::new(),
    };
    let mut groups = Vec::new();
    if let Some(rest) = name.strip_prefix("system:serviceaccount:") {
        let (ns, sa) = rest.split_once(':').unwrap_or((rest, ""));
        check(base("serviceaccounts", sa, "", ns))?;
        if as_groups.is_empty() {
            groups.push("system:serviceaccounts".to_string());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
    } else {
        check(base("users", name, "", ""))?;
    }
    for g in &as_groups {
        check(base("groups", g, "", ""))?;
        groups.push(g.clone());
    }
    for u in &as_uid {
        check(base("uids", u, "authentication.k8s.io", ""))?;
    }
    let mut extra = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (k, v) in &extras {
        let mut a = base("userextras", v, "authentication.k8s.io", "");
        a.subresource = k.clone();
        check(a)?;
        extra.entry(k.clone()).or_default().push(v.clone());
    }
    if name != "system:anonymous" && !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Ok(UserInfo {
        username: name.clone(),
        groups,
        uid: as_uid.first().cloned().unwrap_or_default(),
        extra,
    })
}
