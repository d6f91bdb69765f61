//! The same-origin check every state-changing request passes, and the token that
//! `runall serve` asks for.

use std::sync::Arc;

use axum::extract::{OriginalUri, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Error;

/// Refuses a state-changing request (any method but GET, HEAD, OPTIONS) that a browser
/// says comes from another origin, with 403. The rule of Go's `CrossOriginProtection`:
/// `Sec-Fetch-Site` if the browser sends it (`same-origin` or `none` pass), else `Origin`
/// against `Host`; a request with neither header is not from a browser (curl, a script) and
/// passes.
pub(crate) async fn same_origin(request: Request, next: Next) -> Response {
    if is_cross_origin(request.method(), request.headers()) {
        return Error::CrossOrigin.into_response();
    }
    next.run(request).await
}

fn is_cross_origin(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return false;
    };
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), headers.get(HOST).map(|h| h.to_str()))
    else {
        return true;
    };
    // `http://host:port` or `https://host:port` against the Host header (the scheme may
    // differ behind a TLS-terminating proxy).
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host != Some(host)
}

/// The cookie a `?token=` sets.
const COOKIE_NAME: &str = "runall_dashboard_token";

#[derive(Debug)]
struct Token {
    digest: [u8; 32],
}

impl Token {
    /// Compares in constant time, and hides the length too (digests are compared).
    fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(self.digest.ct_eq(&digest))
    }
}

/// `router` with every request but `/healthz` asking for `token`: as `Authorization:
/// Bearer TOKEN`, or as the HttpOnly, SameSite=Strict cookie that opening any page with
/// `?token=TOKEN` sets once (a browser's `EventSource` cannot send headers). What `runall serve --token` uses; an
/// application that mounts the router usually puts its own authentication layer instead.
///
/// ```
/// # fn demo(queue: queue_core::Queue) -> queue_dashboard::Result<()> {
/// let app = queue_dashboard::require_token(queue_dashboard::router(queue), "s3cret")?;
/// # let _ = app; Ok(()) }
/// ```
pub fn require_token(router: Router, token: &str) -> Result<Router, Error> {
    if token.is_empty() {
        return Err(Error::EmptyToken);
    }
    let token = Arc::new(Token {
        digest: Sha256::digest(token.as_bytes()).into(),
    });
    Ok(router.layer(axum::middleware::from_fn_with_state(token, check_token)))
}

async fn check_token(State(token): State<Arc<Token>>, request: Request, next: Next) -> Response {
    // For a load balancer's probe: it reads nothing of the store.
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let headers = request.headers();
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value);
    if bearer.is_some_and(|t| token.matches(t))
        || cookie.is_some_and(|t| token.matches(&percent_decode(t)))
    {
        return next.run(request).await;
    }
    // `?token=` once: set the cookie and come back without it in the URL.
    let uri = request
        .extensions()
        .get::<OriginalUri>()
        .map(|o| o.0.clone())
        .unwrap_or_else(|| request.uri().clone());
    if request.method() == Method::GET {
        if let Some(query) = uri.query() {
            let mut given = None;
            let rest: Vec<&str> = query
                .split('&')
                .filter(|pair| match pair.strip_prefix("token=") {
                    Some(value) => {
                        given = Some(value);
                        false
                    }
                    None => true,
                })
                .collect();
            if let Some(value) = given.filter(|v| token.matches(&percent_decode(v))) {
                let mut location = uri.path().to_owned();
                if !rest.is_empty() {
                    location.push('?');
                    location.push_str(&rest.join("&"));
                }
                let cookie = format!(
                    "{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/",
                    crate::view::enc(&percent_decode(value))
                );
                return (
                    StatusCode::SEE_OTHER,
                    [(LOCATION, location), (SET_COOKIE, cookie)],
                )
                    .into_response();
            }
        }
    }
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", "Bearer")],
        "This dashboard needs its token: open it once as ...?token=TOKEN (a cookie keeps it), \
         or send Authorization: Bearer TOKEN.\n",
    )
        .into_response()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |at: usize| bytes.get(at).and_then(|b| char::from(*b).to_digit(16));
    while let Some(&b) = bytes.get(i) {
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cross_origin_rules() {
        let post = Method::POST;
        assert!(!is_cross_origin(
            &Method::GET,
            &headers(&[("sec-fetch-site", "cross-site")])
        ));
        assert!(is_cross_origin(
            &post,
            &headers(&[("sec-fetch-site", "cross-site")])
        ));
        assert!(is_cross_origin(
            &post,
            &headers(&[("sec-fetch-site", "same-site")])
        ));
        assert!(!is_cross_origin(
            &post,
            &headers(&[("sec-fetch-site", "same-origin")])
        ));
        assert!(!is_cross_origin(&post, &headers(&[])));
        let same = [("origin", "http://a.test:8080"), ("host", "a.test:8080")];
        assert!(!is_cross_origin(&post, &headers(&same)));
        let other = [("origin", "http://evil.test"), ("host", "a.test:8080")];
        assert!(is_cross_origin(&post, &headers(&other)));
        assert!(is_cross_origin(
            &post,
            &headers(&[("origin", "null"), ("host", "a")])
        ));
    }

    #[test]
    fn tokens_and_decoding() {
        let t = Token {
            digest: Sha256::digest(b"s3 cret").into(),
        };
        assert!(t.matches("s3 cret"));
        assert!(!t.matches("s3"));
        assert_eq!(percent_decode("s3%20cret"), "s3 cret");
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }
}
