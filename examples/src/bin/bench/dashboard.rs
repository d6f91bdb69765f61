//! `--dashboard N`: what each dashboard page costs on a big store. N waiting jobs over three
//! queues (a third of them delayed), 1 % of N (at most 10,000) in the failed store under
//! 20 errors, one batch; then every page is asked for through the router in this process
//! (no network), several times, and its server time taken: from the request to the last
//! byte of the body. Nothing is cached between requests: no browser listens on `events`, so
//! the overview reads the store at each load, as a first visit does.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use queue_core::storage::{JobState, PageRequest, ReserveRequest};
use queue_core::{Queue, StorageExt as _};
use serde_json::json;
use tower::ServiceExt as _;

/// Requests per page.
const ROUNDS: usize = 7;

/// Fills the store: `n` jobs, the failed ones, a batch. Returns one waiting job's id.
async fn fill(queue: &Queue, n: usize) -> anyhow::Result<String> {
    let queues = ["high", "default", "low"];
    let mut left = n;
    let mut i = 0usize;
    while left > 0 {
        let chunk = left.min(1000);
        queue
            .dispatch_many((0..chunk).map(|k| {
                let at = i + k;
                let job = queue
                    .dispatch_named(
                        "dash-bench",
                        json!({ "n": at, "to": format!("user{at}@example.com") }),
                    )
                    .on_queue(queues[at % 3]);
                if at % 3 == 2 {
                    job.delay(Duration::from_secs(3600))
                } else {
                    job
                }
            }))
            .await?;
        left -= chunk;
        i += chunk;
    }
    let failed = (n / 100).clamp(1, 10_000);
    let mut done = 0;
    while done < failed {
        let want = (failed - done).min(100);
        let request = ReserveRequest::new(["high"], Duration::from_secs(600), want);
        let got = queue.storage().reserve(&request).await?;
        if got.is_empty() {
            break;
        }
        for (k, job) in got.iter().enumerate() {
            let error = format!(
                "order {} not found (error kind {})",
                done + k,
                (done + k) % 20
            );
            queue.storage().fail(&job.lease, &error).await?;
        }
        done += got.len();
    }
    if queue.storage().capabilities().groups.is_some() {
        queue_core::Batch::new()
            .add_many((0..100).map(|k| {
                queue
                    .dispatch_named("dash-bench", json!({ "member": k }))
                    .on_queue("batch")
            }))
            .via(queue)
            .dispatch()
            .await?;
    }
    let inspect = queue.storage().inspect()?;
    let page = inspect
        .jobs("default", JobState::Waiting, PageRequest::first(1))
        .await?;
    page.items
        .first()
        .map(|j| j.id.0.clone())
        .context("no waiting job to show")
}

/// One row per page: its path, median and max server time in ms, and the body's size.
pub(crate) async fn pages(queue: &Queue, n: usize) -> anyhow::Result<Vec<Vec<String>>> {
    let started = Instant::now();
    let job = fill(queue, n).await?;
    let filled = started.elapsed();
    let app = queue_dashboard::router(queue.clone());
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let failed = queue
        .storage()
        .failed_store()?
        .list(PageRequest::first(1))
        .await?
        .items
        .first()
        .map(|f| f.id.clone())
        .context("no failed job")?;
    let paths = [
        "/".to_owned(),
        "/queues/default".to_owned(),
        "/queues/low?state=delayed".to_owned(),
        "/queues/default?state=running".to_owned(),
        format!("/jobs/{}", enc(&job)),
        "/failed".to_owned(),
        format!("/failed/{}", enc(&failed)),
        "/failed/groups".to_owned(),
        "/batches".to_owned(),
        "/schedules".to_owned(),
        "/workers".to_owned(),
        "/audit".to_owned(),
        "/metrics".to_owned(),
    ];
    let mut rows = Vec::new();
    for path in paths {
        let mut times = Vec::with_capacity(ROUNDS);
        let mut bytes = 0;
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let response = app
                .clone()
                .oneshot(Request::get(path.as_str()).body(Body::empty())?)
                .await?;
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 64 << 20).await?;
            times.push(t.elapsed());
            anyhow::ensure!(
                status == StatusCode::OK,
                "{path}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
            bytes = body.len();
        }
        times.sort();
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        rows.push(vec![
            queue.storage().driver().to_owned(),
            format!("`{path}`"),
            ms(times[ROUNDS / 2]),
            format!("{}-{}", ms(times[0]), ms(times[ROUNDS - 1])),
            format!("{:.1}", bytes as f64 / 1024.0),
        ]);
    }
    // What the overview adds at most once every 5 s (its charts' cache): the throughput
    // history, 60 minute and 24 hour slots read at once.
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let history =
            queue_core::stats::history(queue.storage().as_ref(), std::time::SystemTime::now())
                .await?;
        times.push(t.elapsed());
        anyhow::ensure!(history.minutes.len() == 60, "60 minutes of history");
    }
    times.sort();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    rows.push(vec![
        queue.storage().driver().to_owned(),
        "`/`'s history read (`stats::history`, once per 5 s)".to_owned(),
        ms(times[ROUNDS / 2]),
        format!("{}-{}", ms(times[0]), ms(times[ROUNDS - 1])),
        String::new(),
    ]);
    eprintln!(
        "bench: filled {} with {n} jobs in {:.1} s",
        queue.storage().driver(),
        filled.as_secs_f64()
    );
    Ok(rows)
}
