//! What the dashboard's tests share: stores on real backends, and requests through the
//! router.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use queue_core::storage::ReserveRequest;
use queue_core::{JobId, Queue, StorageExt};
use queue_database as _;
use tower::ServiceExt;

/// A queue on a fresh SQLite file (the directory is kept alive by the caller).
pub(crate) async fn sqlite() -> (Queue, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let queue = Queue::connect(&url).await.expect("SQLite opens");
    (queue, dir)
}

/// A queue on the local Redis under a fresh key prefix (`qtest<secs>_…`, which the redis
/// driver's tests sweep once stale), or `None` after the skip notice (a panic in CI).
pub(crate) async fn redis() -> Option<Queue> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let options =
        queue_redis::RedisOptions::from_env().prefix(queue_tests::unique(&format!("qtest{secs}")));
    let url = options.get_url().to_owned();
    match queue_redis::RedisStorage::connect(options).await {
        Ok(storage) => Some(Queue::new(storage)),
        Err(e) => queue_tests::server_missing(&url, e),
    }
}

/// A queue on the local memcached under a fresh prefix, or `None` after the skip notice.
pub(crate) async fn memcached() -> Option<Queue> {
    let url =
        std::env::var("MEMCACHED_URL").unwrap_or_else(|_| "memcache://127.0.0.1:11211".into());
    let options = queue_memcached::MemcachedOptions::from_url(&url)
        .expect("MEMCACHED_URL is a memcached URL")
        .prefix(queue_tests::unique("dash"));
    match queue_memcached::MemcachedStorage::connect(options).await {
        Ok(storage) => Some(Queue::new(storage)),
        Err(e) => queue_tests::server_missing(&url, e),
    }
}

/// Every store the HTTP tests run on: SQLite always, Redis when it is up (required in CI).
pub(crate) async fn stores() -> (Vec<(&'static str, Queue)>, tempfile::TempDir) {
    let (sqlite, dir) = sqlite().await;
    let mut stores = vec![("sqlite", sqlite)];
    if let Some(redis) = redis().await {
        stores.push(("redis", redis));
    }
    (stores, dir)
}

/// A response's status, `Location` and body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) location: Option<String>,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: String,
}

pub(crate) async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let location = headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .expect("a body");
    Reply {
        status,
        location,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub(crate) async fn get(app: &Router, uri: &str) -> Reply {
    send(
        app,
        Request::get(uri).body(Body::empty()).expect("a request"),
    )
    .await
}

/// A browser's session: its cookie (`name=value`) and the CSRF token of its pages, as a
/// first load of `page` gives them.
pub(crate) async fn session(app: &Router, page: &str) -> (String, String) {
    let reply = get(app, page).await;
    let cookie = reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("runall_dashboard_session="))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("{page}: no session cookie: {:?}", reply.headers))
        .to_owned();
    (cookie, csrf_of(&reply.body).unwrap_or_default())
}

/// The CSRF token a page gives a viewer with full access.
pub(crate) fn csrf_of(html: &str) -> Option<String> {
    let marker = "name=\"csrf-token\" content=\"";
    let rest = &html[html.find(marker)? + marker.len()..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// The mount point of a URL of the tests: `/admin/jobs` under the prefix, else `/`.
fn home_of(uri: &str) -> &'static str {
    if uri.starts_with("/admin/jobs") {
        "/admin/jobs"
    } else {
        "/"
    }
}

/// A form POST as a browser sends it from the same origin, from a page it loaded first
/// (the session cookie, and the CSRF token in the form).
pub(crate) async fn post(app: &Router, uri: &str, form: &str) -> Reply {
    let (cookie, csrf) = session(app, home_of(uri)).await;
    let form = match form {
        "" => format!("csrf={csrf}"),
        form => format!("{form}&csrf={csrf}"),
    };
    post_as(app, uri, &form, Some(&cookie)).await
}

/// A form POST from the same origin with exactly this form and cookie.
pub(crate) async fn post_as(app: &Router, uri: &str, form: &str, cookie: Option<&str>) -> Reply {
    let mut request = Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .header("origin", "http://dash.test")
        .header("host", "dash.test");
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    send(
        app,
        request
            .body(Body::from(form.to_owned()))
            .expect("a request"),
    )
    .await
}

/// `text` as one path segment, as the dashboard writes it (Redis ids hold a `/`).
pub(crate) fn enc(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text of the cell `class` in the overview row of `queue`.
pub(crate) fn cell(html: &str, queue: &str, class: &str) -> Option<String> {
    let row = &html[html.find(&format!("data-queue=\"{queue}\""))?..];
    let row = &row[..row.find("</tr>")?];
    let start = row.find(&format!("{class}\">"))? + class.len() + 2;
    let rest = &row[start..];
    Some(rest[..rest.find('<')?].to_owned())
}

/// Every `href`, `action` and `src` value of a page.
pub(crate) fn urls(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "action=\"", "src=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            if let Some(end) = rest.find('"') {
                out.push(rest[..end].to_owned());
            }
        }
    }
    out
}

/// Dispatches a job named `name` on `queue_name`.
pub(crate) async fn dispatch(queue: &Queue, queue_name: &str, n: u32) -> JobId {
    queue
        .dispatch_named(
            "dash-test",
            serde_json::json!({ "n": n, "html": "<b>x</b>" }),
        )
        .on_queue(queue_name)
        .await
        .expect("dispatched")
        .into_id()
}

/// Dispatches a delayed job.
pub(crate) async fn dispatch_later(queue: &Queue, queue_name: &str) -> JobId {
    queue
        .dispatch_named("dash-test", serde_json::json!({ "later": true }))
        .on_queue(queue_name)
        .delay(Duration::from_secs(3600))
        .await
        .expect("dispatched")
        .into_id()
}

/// Reserves one job of `queue_name` (it shows as running) and returns its lease.
pub(crate) async fn reserve(queue: &Queue, queue_name: &str) -> queue_core::Lease {
    let request = ReserveRequest::new([queue_name], Duration::from_secs(600), 1);
    let mut got = queue.storage().reserve(&request).await.expect("reserve");
    got.pop().expect("a job to reserve").lease
}

/// Dispatches a job and fails it for good: it is in the failed store.
pub(crate) async fn failed(queue: &Queue, queue_name: &str, n: u32) {
    dispatch(queue, queue_name, n).await;
    let lease = reserve(queue, queue_name).await;
    queue
        .storage()
        .fail(&lease, &format!("boom {n} <script>"))
        .await
        .expect("failed");
}
