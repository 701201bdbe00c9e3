//! `/openapi/v2` and `/openapi/v3[/<group-version>]`: the built-in kinds' documents
//! (`skiff_api::openapi`) with the custom kinds served now added ([`crate::crds::Crds::openapi`]),
//! served as kube-apiserver serves them: a strong ETag on every document (304 to a
//! matching If-None-Match), and a group/version document asked for by the hash the index
//! advertises is cacheable for a year; asked for with an outdated hash (its CRD changed
//! since the client read the index) it is redirected to the current one.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use skiff_api::openapi::Documents;

use crate::status::{ApiError, ApiResult};
use crate::AppState;

/// Which document a request asks for.
pub(super) enum Which {
    V2,
    V3Index,
    /// A group/version: `api/v1`, `apis/apps/v1`.
    V3(String),
}

/// The answer to `req` (what it needs is read from it at once: a request is not shared
/// across the await).
pub(super) fn serve(
    st: &Arc<AppState>,
    req: &Request,
    which: Which,
) -> impl std::future::Future<Output = ApiResult<Response>> + Send + 'static {
    let allowed = req.method() == Method::GET || req.method() == Method::HEAD;
    let crds = st.objects.crds.clone();
    let hash = req
        .uri()
        .query()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "hash")
                .map(|(_, v)| v.into_owned())
        })
        .filter(|h| !h.is_empty());
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    let head = req.method() == Method::HEAD;
    async move {
        if !allowed {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        // Building the documents after a CRD changed walks every schema: not on an
        // async worker.
        tokio::task::spawn_blocking(move || {
            let custom = crds.openapi();
            let docs: &Documents = match &custom {
                Some(d) => d,
                None => skiff_api::openapi::builtin(),
            };
            respond(docs, &which, hash.as_deref(), if_none_match.as_ref(), head)
        })
        .await
        .map_err(|e| ApiError::internal(format!("building the OpenAPI documents: {e}")))?
    }
}

fn respond(
    docs: &Documents,
    which: &Which,
    hash: Option<&str>,
    if_none_match: Option<&HeaderValue>,
    head: bool,
) -> ApiResult<Response> {
    let (bytes, etag, immutable) = match which {
        Which::V2 => (docs.v2_bytes(), docs.v2_hash(), false),
        Which::V3Index => (docs.v3_index_bytes(), docs.v3_index_hash(), false),
        Which::V3(gv) => {
            let (bytes, etag) = docs
                .v3_group_version_bytes(gv)
                .ok_or_else(ApiError::path_not_found)?;
            match hash {
                Some(h) if h != etag => {
                    // The client's index is older than the document: send it to the
                    // current one (kube-openapi answers so too).
                    let url = docs.v3_url(gv).ok_or_else(ApiError::path_not_found)?;
                    let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
                    if let Ok(v) = HeaderValue::from_str(&url) {
                        r.headers_mut().insert(header::LOCATION, v);
                    }
                    return Ok(r);
                }
                Some(_) => (bytes, etag, true),
                None => (bytes, etag, false),
            }
        }
    };
    let quoted = format!("\"{etag}\"");
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&quoted) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    if immutable {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, immutable"),
        );
        let a_year = SystemTime::now() + Duration::from_secs(365 * 24 * 3600);
        if let Ok(v) = HeaderValue::from_str(&http_date(a_year)) {
            headers.insert(header::EXPIRES, v);
        }
    }
    if if_none_match.is_some_and(|v| matches_etag(v, &quoted)) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = if head {
        Body::empty()
    } else {
        Body::from(bytes.to_vec())
    };
    Ok((StatusCode::OK, headers, body).into_response())
}

/// Whether an If-None-Match header names `quoted` (or is `*`); weak validators match too.
fn matches_etag(v: &HeaderValue, quoted: &str) -> bool {
    let Ok(v) = v.to_str() else {
        return false;
    };
    v.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == quoted)
}

/// An HTTP date (RFC 7231's IMF-fixdate): `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rfc3339 = skiff_api::table::format_time(i64::try_from(secs).unwrap_or(0));
    // 2006-01-02T15:04:05Z
    let field = |r: std::ops::Range<usize>| rfc3339.get(r).unwrap_or("00");
    let month: usize = field(5..7).parse().unwrap_or(1);
    format!(
        "{}, {} {} {} {} GMT",
        DAYS[(secs / 86400 % 7) as usize],
        field(8..10),
        MONTHS[month.clamp(1, 12) - 1],
        field(0..4),
        field(11..19),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_imf_fixdates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn if_none_match_lists_are_read() {
        let q = "\"ABC\"";
        assert!(matches_etag(&HeaderValue::from_static("\"ABC\""), q));
        assert!(matches_etag(
            &HeaderValue::from_static("\"X\", W/\"ABC\""),
            q
        ));
        assert!(matches_etag(&HeaderValue::from_static("*"), q));
        assert!(!matches_etag(&HeaderValue::from_static("\"ABD\""), q));
    }

    #[test]
    fn group_version_documents_are_cached_by_hash_and_redirected_when_stale() {
        let docs = skiff_api::openapi::builtin();
        let url = docs.v3_url("apis/apps/v1").unwrap();
        let hash = url.split("hash=").nth(1).unwrap().to_string();
        let gv = Which::V3("apis/apps/v1".into());
        let r = respond(docs, &gv, Some(&hash), None, false).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "public, immutable");
        assert_eq!(r.headers()[header::ETAG], format!("\"{hash}\"").as_str());
        let r = respond(docs, &gv, Some("OLD"), None, false).unwrap();
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()[header::LOCATION], url.as_str());
        let etag = HeaderValue::from_str(&format!("\"{hash}\"")).unwrap();
        let r = respond(docs, &gv, None, Some(&etag), false).unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert!(r.headers().get(header::CACHE_CONTROL).is_none());
        assert!(respond(docs, &Which::V3("apis/nope/v1".into()), None, None, false).is_err());
    }
}
