//! The web dashboard of `queue-core`: server-rendered pages over any store, live numbers
//! over server-sent events, and POST forms for the actions. No JavaScript build step: one
//! small stylesheet and one small script are embedded in the binary, and every page works
//! with JavaScript off except the live refresh.
//!
//! # Mounting it
//!
//! [`router`] is an [`axum::Router`] an application nests under any prefix: every link and
//! asset URL is relative to the mount point.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::Router;
//! use queue_core::Queue;
//!
//! let queue = Queue::connect("sqlite://jobs.db").await?;
//! let app = Router::new().nest("/admin/jobs", queue_dashboard::router(queue));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! The overview is the mount path itself, `/admin/jobs` (axum's `nest` does not route
//! `/admin/jobs/`; mounted with `nest_service`, both are the overview).
//!
//! # Authentication and access
//!
//! The router has no authentication of its own: put the application's in front of it, as
//! any tower layer. [`router`] gives full access to every request the layer lets through;
//! [`router_with`]`(queue, Access::ReadOnly)` shows every page and refuses every action.
//! Either way the layer may decide per request by putting an [`Access`] in its extensions
//! (a support role that sees everything and presses nothing, see [`Access`]).
//!
//! ```no_run
//! use axum::extract::Request;
//! use axum::http::StatusCode;
//! use axum::middleware::{self, Next};
//! use axum::response::Response;
//!
//! async fn admins_only(request: Request, next: Next) -> Result<Response, StatusCode> {
//!     let is_admin = request.headers().get("x-user-role").is_some_and(|r| r == "admin");
//!     if !is_admin {
//!         return Err(StatusCode::FORBIDDEN);
//!     }
//!     Ok(next.run(request).await)
//! }
//!
//! # fn demo(queue: queue_core::Queue) -> axum::Router {
//! let dashboard = queue_dashboard::router(queue).layer(middleware::from_fn(admins_only));
//! axum::Router::new().nest("/admin/jobs", dashboard)
//! # }
//! ```
//!
//! `runall serve` (see [`serve`] and [`ServeOptions`]) is secure by default: without a
//! token it is read-only and binds only a loopback address (127.0.0.1:8080 by default);
//! `--token` opens full access and `--read-only-token` read-only access ([`require_tokens`]).
//!
//! Whatever the authentication, a state-changing request passes two checks:
//! - **Same origin**: a POST that a browser marks as coming from another site
//!   (`Sec-Fetch-Site`, else `Origin` against `Host`) is refused with 403.
//! - **CSRF token**: every page sets a session cookie (HttpOnly, SameSite=Strict) on first
//!   sight, and every form carries that session's token (an HMAC of the session under a key
//!   the router makes at random when it is built); a POST without it, or with another
//!   session's, is refused with 403. A request authenticated by an `Authorization: Bearer`
//!   header, which a browser never sends by itself, needs no form token (scripts, curl).
//!
//! Pages for read-only access show no button and no token, and say "read-only". The pages
//! send a strict `Content-Security-Policy` (no inline script or style).
//!
//! # Pages
//!
//! | URL (relative to the mount point) | what it shows |
//! |---|---|
//! | `` (the overview) | each queue's waiting, delayed and running jobs and whether it is paused, with pause and resume buttons; the failed count; the live workers and their busy slots (refreshed live over `events`); the throughput history charted by minute and hour ([`queue_core::stats`]), the wait from dispatch to start (mean, p50, p95, p99), and the backlog's ETA |
//! | `queues/{queue}?state=waiting\|delayed\|running` | the queue's jobs in one state, 50 a page, by cursor (`after=`); with `name=` or `text=`, only those whose name or payload text contains it (any case), each page looking at 10,000 jobs at most from its point on |
//! | `jobs/{id}` | a job's state, attempts, progress, output, error and times, with a Cancel button while it has not ended |
//! | `failed`, `failed/{id}` | the failed store, newest first, by cursor; one failed job with its error and payload, Retry and Forget buttons (a batch member is retried counted pending in its batch again, as `runall failed retry` does) |
//! | `failed/groups`, `failed/groups/{key}` | the newest 10,000 failed jobs grouped by error fingerprint (the job's name and its error's first line, numbers and ids masked), largest group first; one group with its count, its queues, its newest and oldest failure, and Retry all and Delete all buttons that start a task in the background (as the filter's do): the page is the dry run that shows how many jobs an action touches, and the action touches only those (none that failed later) |
//! | `failed/select?name=&queue=&error=&since=` | the failed jobs a filter selects among the newest 10,000 (name and queue exactly, a part of the error in any case, failed within a duration): the dry run that counts them, with Retry all and Delete all buttons that start a task touching only those |
//! | `queues/{queue}/clear` | the dry run of clearing a queue (its waiting and delayed jobs, counted), with the button that starts the task |
//! | `tasks/{id}` | a bulk action's progress (done, left in the failed store because another job holds the unique key, gone already), refreshed every 2 s while it runs; tasks live in the memory of the dashboard process that runs them (the last 100) |
//! | `batches`, `batches/{id}` | the batches by id, 50 a page, with their counts and progress; one batch with its counts, running members, rate, ETA and failed members, refreshed in place every 2 s until it has finished, with Cancel and Retry buttons. Stores without groups (memcached) say so |
//! | `chains/{id}`, `workflows/{id}` | a chain's links or a workflow's nodes by outcome, refreshed in place every 2 s until it has finished (a job's page links its batch, chain or workflow) |
//! | `locks` | the `without_overlapping` locks held (key, holder, expiry), 50 a page by key, each with a Release button, and a form that releases a lock by its key (memcached and Redis Cluster cannot list their locks: the page says so, and the form still works) |
//! | `workers` | every live worker process (the store's worker registry): host, pid, queues, busy slots, started, last beat, jobs done and failed, version; and the jobs each runs now |
//! | `audit` | the actions asked of the dashboard (the newest 200 of the last 1,000), refused ones included, with who asked, which dashboard process answered and what came of it: kept in the store where it has group counters (every dashboard process serving it, across restarts), else in this process's memory; each is also a `tracing` event at `info` level, target `runall_dashboard::audit` |
//! | `schedules` | the schedules of the serving binary (code and `job.toml`) and those stored in the store, with their next and last tick, ticks and missed ticks, and Pause, Resume and Run now buttons |
//! | `events` | the server-sent events stream of the overview |
//! | `api/overview`, `api/history`, `api/queues/{queue}?state=`, `api/jobs/{id}`, `api/workers`, `api/failed`, `api/batches`, `api/batches/{id}`, `api/schedules`, `api/locks`, `api/audit` | the JSON twins of the pages: the overview's numbers, its throughput history (by minute and hour, with the waits' mean, p50, p95 and p99), a page of a queue's jobs in one state, a job's status (`runall job ID --json`), the workers (`runall workers --json`), a page of the failed store, the batches and one batch, the schedules, the locks held, and the audit log (payloads left out everywhere); errors are `{"error": ...}` with the page's status |
//! | `healthz` | `ok`: the dashboard answers (no data, open without [`require_token`]'s token) |
//! | `metrics` | the store's numbers as Prometheus gauges (jobs per queue and state, the oldest available job's age, paused queues, the failed store), read at a scrape, and at most once every 5 s |
//!
//! Actions are POST forms answered with a redirect: `queues/{q}/pause`, `queues/{q}/resume`,
//! `jobs/{id}/cancel`, `failed/{id}/retry`, `failed/{id}/forget`,
//! `failed/groups/{key}/retry`, `failed/groups/{key}/forget`, `batches/{id}/cancel`,
//! `batches/{id}/retry`, `schedules/{id}/pause`, `schedules/{id}/resume`,
//! `schedules/{id}/run`, `locks/release` (field `key`), and the bulk actions that run in the
//! background and answer with their task's page: `failed/select/retry` and
//! `failed/select/forget` (the filter's fields and `before`, the dry run's time in Unix ms:
//! jobs that failed later are not touched), `queues/{q}/clear`.
//!
//! [`top`] is the same overview in a terminal (`runall top`), with the rate of jobs done and
//! failed from the workers' own counts.
//!
//! Where the store lacks a capability, the page says so in a plain sentence naming it
//! (memcached cannot list jobs; memcached and Redis Cluster cannot pause queues) instead of
//! showing an empty table.
//!
//! # Cost
//!
//! One collector task per router reads the overview's numbers (the queues, each one's size,
//! the paused set, the failed count, the live workers) at most once a second, and only
//! while at least one browser listens on `events`; every listener gets the same rendered
//! table. A page load within a second of a read uses that read. Pages count at most 10,000
//! jobs per queue and state
//! ([`Inspect::backlog_at_most`](queue_core::storage::Inspect::backlog_at_most)) and show
//! "10,000+" beyond, so their cost does not grow with the queues; on SQL, which cannot count
//! its reserved rows without walking the queue, "running" is what the worker registry says
//! the workers run (as of their last beat, so a job reserved by a worker that died is not
//! counted). `metrics` counts exactly. Listings read one page by cursor, never by offset;
//! on SQL a queue's running tab walks the queue's rows until it finds a page of reserved
//! ones. The grouping of failed jobs by error reads the newest 10,000. Measured with a
//! million jobs (`bench --dashboard 1000000`, BENCHMARKS.md): every page under 100 ms on
//! SQLite and PostgreSQL but that running tab (about 150 ms with 333,000 jobs in the queue);
//! `metrics` about 0.5 s and 0.8 s.

mod api;
mod assets;
mod audit;
mod auth;
mod bulk;
mod charts;
mod error;
mod fingerprint;
mod groups;
mod live;
mod locks;
mod metrics;
mod pages;
mod top;
mod view;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use queue_core::Queue;

pub use auth::{require_token, require_tokens, Access, Tokens};
pub use error::{Error, Result};
pub use top::{top, TopOptions};

/// What every handler of one router shares.
#[derive(Debug, Clone)]
struct Dashboard {
    queue: Queue,
    live: Arc<live::Live>,
    audit: Arc<audit::Audit>,
    scrapes: Arc<metrics::Scrapes>,
    charts: Arc<charts::Cache>,
    tasks: Arc<bulk::Tasks>,
}

/// The dashboard over `queue`'s store, to nest under any prefix (see the [crate docs](crate)),
/// with full access for every request that does not say otherwise (an [`Access`] in its
/// extensions). It has no authentication of its own: add the application's as a layer.
pub fn router(queue: Queue) -> Router {
    router_with(queue, Access::Full)
}

/// [`router`] with `default` access for every request that does not say otherwise:
/// `router_with(queue, Access::ReadOnly)` shows every page and refuses every action, unless
/// the application's layer grants [`Access::Full`] to a request.
pub fn router_with(queue: Queue, default: Access) -> Router {
    let audit = Arc::new(audit::Audit::new(queue.storage().clone()));
    let guard = Arc::new(auth::Guard::new(default, audit.clone()));
    let state = Dashboard {
        queue,
        live: Arc::new(live::Live::new()),
        audit,
        scrapes: Arc::default(),
        charts: Arc::default(),
        tasks: Arc::default(),
    };
    Router::new()
        .route("/", get(pages::overview))
        .route("/api/overview", get(api::overview))
        .route("/api/history", get(api::history))
        .route("/api/jobs/{id}", get(api::job))
        .route("/api/workers", get(api::workers))
        .route("/api/failed", get(api::failed))
        .route("/api/audit", get(api::audit))
        .route("/api/queues/{queue}", get(api::queue))
        .route("/api/batches", get(api::batches))
        .route("/api/batches/{id}", get(api::batch))
        .route("/api/schedules", get(api::schedules))
        .route("/api/locks", get(api::locks))
        .route("/api/tasks/{id}", get(bulk::task_json))
        .route("/failed/select", get(bulk::dry_run))
        .route("/failed/select/{action}", post(bulk::act))
        .route(
            "/queues/{queue}/clear",
            get(bulk::clear_dry_run).post(bulk::clear),
        )
        .route("/tasks/{id}", get(bulk::task_page))
        .route("/api/{*rest}", get(api::not_found))
        .route("/events", get(live::events))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(healthz))
        .route("/assets/dashboard.css", get(assets::css))
        .route("/assets/dashboard.js", get(assets::js))
        .route("/queues/{queue}", get(pages::queue))
        .route("/queues/{queue}/pause", post(pages::pause))
        .route("/queues/{queue}/resume", post(pages::resume))
        .route("/jobs", get(pages::find_job))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/cancel", post(pages::cancel))
        .route("/failed", get(pages::failed))
        .route("/failed/groups", get(fingerprint::list))
        .route("/failed/groups/{key}", get(fingerprint::group))
        .route("/failed/groups/{key}/{action}", post(fingerprint::act))
        .route("/failed/{id}", get(pages::failed_job))
        .route("/failed/{id}/retry", post(pages::retry))
        .route("/failed/{id}/forget", post(pages::forget))
        .route("/batches", get(groups::batches))
        .route("/batches/{id}", get(groups::batch))
        .route("/batches/{id}/cancel", post(groups::cancel_batch))
        .route("/batches/{id}/retry", post(groups::retry_batch))
        .route("/schedules", get(groups::schedules))
        .route("/audit", get(audit::page))
        .route("/workers", get(workers::page))
        .route("/locks", get(locks::page))
        .route("/locks/release", post(locks::release))
        .route("/chains/{id}", get(groups::chain))
        .route("/workflows/{id}", get(groups::workflow))
        .route("/schedules/{id}/{action}", post(groups::schedule_action))
        .fallback(pages::not_found)
        .layer(middleware::from_fn_with_state(guard, auth::guard))
        .layer(middleware::from_fn(auth::same_origin))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// `GET /healthz`: the dashboard answers. Empty of data, and open without the token of
/// [`require_token`], for a load balancer's probe (`runall health` checks the store).
async fn healthz() -> &'static str {
    "ok\n"
}

/// No inline script or style, no framing, no referrer to other sites.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'self'",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

/// How `runall serve` serves the dashboard.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The address to listen on (127.0.0.1:8080 by default).
    pub bind: SocketAddr,
    /// The token that opens full access ([`require_tokens`]).
    pub token: Option<String>,
    /// The token that opens read-only access: every page, no action.
    pub read_only_token: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            read_only_token: None,
        }
    }
}

impl ServeOptions {
    /// The router these options serve. Secure by default: with no token it is read-only
    /// (every action refused, no buttons) and only on a loopback address; with tokens,
    /// [`router`] behind [`require_tokens`], each token opening its [`Access`]. Refuses a
    /// non-loopback address without a token, and an empty token.
    pub fn app(&self, queue: Queue) -> Result<Router> {
        let tokens = Tokens {
            full: self.token.clone(),
            read_only: self.read_only_token.clone(),
        };
        if tokens.full.is_some() || tokens.read_only.is_some() {
            return require_tokens(router(queue), &tokens);
        }
        if !self.bind.ip().is_loopback() {
            return Err(Error::OpenToTheNetwork { addr: self.bind });
        }
        Ok(router_with(queue, Access::ReadOnly))
    }
}

/// Serves the dashboard at the root of `options.bind` until SIGINT or SIGTERM (what
/// `runall serve` runs). Refuses, before binding, an address beyond the loopback interface
/// without a token.
pub async fn serve(queue: Queue, options: ServeOptions) -> Result<()> {
    let app = options.app(queue)?;
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|source| Error::Bind {
            addr: options.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(Error::Serve)?;
    if options.token.is_some() || options.read_only_token.is_some() {
        println!("dashboard on http://{addr}/?token=... (the token opens it once)");
    } else {
        println!(
            "dashboard on http://{addr}/ (read-only: give --token to pause, cancel and retry)"
        );
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped())
        .await
        .map_err(Error::Serve)
}

/// SIGINT, or SIGTERM on Unix.
async fn stopped() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
