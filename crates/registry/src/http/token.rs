//! The token endpoint of the Docker token flow (`GET /token` with Basic credentials, and
//! the OAuth2 password grant on `POST /token`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::query::Query;
use super::{json_response, read_limited, Registry, API_VERSION};
use crate::auth::{self, Access};
use crate::error::Error;
use crate::names::valid_name;

/// Requested scopes, keeping only the kinds of access this registry grants.
fn requested_access(scopes: Vec<&str>) -> Vec<Access> {
    scopes
        .into_iter()
        .flat_map(|s| s.split(' '))
        .filter_map(Access::parse)
        .filter_map(|mut a| {
            match a.kind.as_str() {
                "repository" if valid_name(&a.name) => {
                    a.actions
                        .retain(|x| matches!(x.as_str(), "pull" | "push" | "delete" | "*"));
                }
                "registry" if a.name == "catalog" => {}
                _ => return None,
            }
            Some(a)
        })
        .collect()
}

fn token_unauthorized() -> Response {
    let mut r = Error::Unauthorized {
        challenge: format!("Basic realm=\"{}\"", auth::SERVICE),
    }
    .into_response();
    r.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    r
}

pub(super) async fn token_get(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let query = Query::parse(req.uri().query());
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = match &reg.auth {
        None => "anonymous".to_string(),
        Some(a) => match header.and_then(|h| a.check_basic(h)) {
            Some(u) => u,
            None => return token_unauthorized(),
        },
    };
    issue_token(&reg, &user, requested_access(query.all("scope")), false)
}

/// The OAuth2 password grant docker uses when it holds no refresh token.
pub(super) async fn token_post(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let body = match read_limited(req, 64 * 1024).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let form = Query::parse(std::str::from_utf8(&body).ok());
    if form.get("grant_type") != Some("password") {
        return Error::Unsupported {
            what: "grant types other than password",
        }
        .into_response();
    }
    let (user, password) = (
        form.get("username").unwrap_or_default(),
        form.get("password").unwrap_or_default(),
    );
    if let Some(a) = &reg.auth {
        if !a.check_password(user, password) {
            return token_unauthorized();
        }
    }
    issue_token(&reg, user, requested_access(form.all("scope")), true)
}

fn issue_token(reg: &Registry, user: &str, access: Vec<Access>, oauth: bool) -> Response {
    let Some(auth) = &reg.auth else {
        // No authentication configured: any token is as good as none.
        return json_response(
            StatusCode::OK,
            &serde_json::json!({ "token": "anonymous", "access_token": "anonymous" }),
        );
    };
    let scope = access
        .iter()
        .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
        .collect::<Vec<_>>()
        .join(" ");
    let (token, expires_in, iat) = auth.issue(user, access);
    let mut body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
        "issued_at": auth::rfc3339(iat),
    });
    if oauth {
        body["scope"] = scope.into();
    }
    json_response(StatusCode::OK, &body)
}
