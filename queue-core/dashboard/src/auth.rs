//! Who may do what: the same-origin check and the CSRF token every state-changing request
//! passes, read-only and full access, and the tokens that `runall serve` asks for.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Error;

/// What a request may do. The router reads it from the request's extensions, where the
/// application's own authentication layer (or [`require_tokens`]) puts it; without one, the
/// router's default applies ([`router`](crate::router): full, [`router_with`](crate::router_with):
/// as given).
///
/// ```
/// use axum::extract::Request;
/// use axum::middleware::{self, Next};
/// use axum::response::Response;
/// use queue_dashboard::Access;
///
/// // Support staff see everything and press nothing.
/// async fn roles(mut request: Request, next: Next) -> Response {
///     let support = request.headers().get("x-user-role").is_some_and(|r| r == "support");
///     if support {
///         request.extensions_mut().insert(Access::ReadOnly);
///     }
///     next.run(request).await
/// }
///
/// # fn demo(queue: queue_core::Queue) -> axum::Router {
/// queue_dashboard::router(queue).layer(middleware::from_fn(roles))
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Every page and every action.
    Full,
    /// Every page, no buttons; every action is refused with 403.
    ReadOnly,
}

/// The request's access and the CSRF token its forms carry (`Full` only), as the guard
/// found them.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub(crate) access: Access,
    csrf: String,
}

impl Viewer {
    /// Whether the page shows its action buttons.
    pub(crate) fn can_act(&self) -> bool {
        self.access == Access::Full
    }

    /// The token the page's forms send back.
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Viewer>().cloned().unwrap_or(Viewer {
            access: Access::ReadOnly,
            csrf: String::new(),
        }))
    }
}

/// The form field that carries the CSRF token.
pub(crate) const CSRF_FIELD: &str = "csrf";
/// The cookie naming a browser's session, whose CSRF token the forms carry.
const SESSION_COOKIE: &str = "runall_dashboard_session";
/// The most bytes of a form the guard reads (the dashboard's forms are a few fields).
const MAX_FORM: usize = 64 * 1024;

/// The router's secret for CSRF tokens: random, made when the router is, never stored (a
/// restart asks open pages to be reloaded before their next action).
#[derive(Debug)]
pub(crate) struct Guard {
    key: [u8; 32],
    default: Access,
    audit: Arc<crate::audit::Audit>,
}

impl Guard {
    pub(crate) fn new(default: Access, audit: Arc<crate::audit::Audit>) -> Self {
        Guard {
            key: rand::random(),
            default,
            audit,
        }
    }

    /// The CSRF token of a session: HMAC-SHA256 of its id under the router's key.
    fn csrf(&self, session: &str) -> String {
        // An HMAC takes a key of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(session.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every request of the router: finds its access (an [`Access`] in its extensions, else the
/// router's default) and its browser session (a cookie, made on first sight); refuses a
/// state-changing request with read-only access, or, unless it authenticates with an
/// `Authorization: Bearer` header (which a browser never adds by itself, unlike a cookie or
/// basic authentication), without its session's CSRF token in the form.
pub(crate) async fn guard(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return check(&guard, request, next).await;
    }
    // Every action is audited, refused ones included.
    let path = request.uri().path().to_owned();
    let bearer = request
        .headers()
        .get(AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "));
    let by = match cookie(request.headers(), SESSION_COOKIE) {
        _ if bearer => "a bearer token".to_owned(),
        // Only a well-formed session id is shown (the log line says nothing a client made up).
        Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("browser session {}", &s[..8])
        }
        Some(_) => "a malformed session cookie".to_owned(),
        None => "no session".to_owned(),
    };
    let response = check(&guard, request, next).await;
    guard.audit.record(path, by, response.status()).await;
    response
}

async fn check(guard: &Guard, request: Request, next: Next) -> Response {
    let access = request
        .extensions()
        .get::<Access>()
        .copied()
        .unwrap_or(guard.default);
    let session = cookie(request.headers(), SESSION_COOKIE)
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    let new_session = session.is_none();
    let session = session.unwrap_or_else(|| hex(&rand::random::<[u8; 32]>()));
    let csrf = guard.csrf(&session);
    let mut request = request;
    if !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        if access != Access::Full {
            return Error::ReadOnly.into_response();
        }
        let bearer = request
            .headers()
            .get(AUTHORIZATION)
            .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "));
        if !bearer {
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
                return Error::Refused("the form is too large".into()).into_response();
            };
            let given = form_field(&bytes, CSRF_FIELD);
            let matches = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(csrf.as_bytes())));
            if new_session || !matches {
                return Error::Csrf.into_response();
            }
            request = Request::from_parts(parts, Body::from(bytes));
        }
    }
    request.extensions_mut().insert(Viewer { access, csrf });
    let mut response = next.run(request).await;
    let html = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    // Only pages carry forms: a scrape of `metrics` or a load of the assets gets no cookie.
    if new_session && html {
        let cookie = format!("{SESSION_COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

/// The value of cookie `name`, if the request sends it.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// The first value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, _)| percent_decode(n) == name)
        .map(|(_, v)| percent_decode(v))
}

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
    fn new(token: &str) -> Result<Token, Error> {
        if token.is_empty() {
            return Err(Error::EmptyToken);
        }
        Ok(Token {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Compares in constant time, and hides the length too (digests are compared).
    fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(self.digest.ct_eq(&digest))
    }
}

/// The tokens of [`require_tokens`]: one for full access, one for read-only access; at
/// least one must be set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Opens every page and every action.
    pub full: Option<String>,
    /// Opens every page and no action (a read-only role: the buttons are not shown).
    pub read_only: Option<String>,
}

#[derive(Debug)]
struct Check {
    full: Option<Token>,
    read_only: Option<Token>,
}

impl Check {
    /// The access `given` opens, if any (the full token first).
    fn access(&self, given: &str) -> Option<Access> {
        if self.full.as_ref().is_some_and(|t| t.matches(given)) {
            Some(Access::Full)
        } else if self.read_only.as_ref().is_some_and(|t| t.matches(given)) {
            Some(Access::ReadOnly)
        } else {
            None
        }
    }
}

/// `router` with every request but `/healthz` asking for `token`, which opens full access:
/// [`require_tokens`] with that one token.
///
/// ```
/// # fn demo(queue: queue_core::Queue) -> queue_dashboard::Result<()> {
/// let app = queue_dashboard::require_token(queue_dashboard::router(queue), "s3cret")?;
/// # let _ = app; Ok(()) }
/// ```
pub fn require_token(router: Router, token: &str) -> Result<Router, Error> {
    require_tokens(
        router,
        &Tokens {
            full: Some(token.to_owned()),
            read_only: None,
        },
    )
}

/// `router` with every request but `/healthz` asking for one of `tokens`: as
/// `Authorization: Bearer TOKEN`, or as the HttpOnly, SameSite=Strict cookie that opening
/// any page with `?token=TOKEN` sets once (a browser's `EventSource` cannot send headers).
/// The token decides the request's [`Access`]. What `runall serve --token` and
/// `--read-only-token` use; an application that mounts the router usually puts its own
/// authentication layer instead.
///
/// ```
/// # fn demo(queue: queue_core::Queue) -> queue_dashboard::Result<()> {
/// use queue_dashboard::Tokens;
///
/// let tokens = Tokens { full: Some("s3cret".into()), read_only: Some("look-only".into()) };
/// let app = queue_dashboard::require_tokens(queue_dashboard::router(queue), &tokens)?;
/// # let _ = app; Ok(()) }
/// ```
pub fn require_tokens(router: Router, tokens: &Tokens) -> Result<Router, Error> {
    let check = Check {
        full: tokens.full.as_deref().map(Token::new).transpose()?,
        read_only: tokens.read_only.as_deref().map(Token::new).transpose()?,
    };
    if check.full.is_none() && check.read_only.is_none() {
        return Err(Error::EmptyToken);
    }
    Ok(router.layer(axum::middleware::from_fn_with_state(
        Arc::new(check),
        check_token,
    )))
}

async fn check_token(
    State(check): State<Arc<Check>>,
    mut request: Request,
    next: Next,
) -> Response {
    // For a load balancer's probe: it reads nothing of the store.
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let headers = request.headers();
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let access = bearer
        .and_then(|t| check.access(t))
        .or_else(|| cookie(headers, COOKIE_NAME).and_then(|t| check.access(&percent_decode(t))));
    if let Some(access) = access {
        request.extensions_mut().insert(access);
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
            if let Some(value) = given.filter(|v| check.access(&percent_decode(v)).is_some()) {
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
        let t = Token::new("s3 cret").expect("a token");
        assert!(t.matches("s3 cret"));
        assert!(!t.matches("s3"));
        assert_eq!(percent_decode("s3%20cret"), "s3 cret");
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }
}
