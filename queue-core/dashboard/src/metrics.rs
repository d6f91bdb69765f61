//! `GET /metrics`: the store's numbers as Prometheus text, read once per scrape by this one
//! dashboard process, never by every worker (a worker serves its own counters with
//! `runall work --metrics-addr`).
//!
//! | metric | labels | holds |
//! |---|---|---|
//! | `runall_queue_jobs` | `queue`, `state` (`waiting`, `delayed`, `running`) | jobs in the queue |
//! | `runall_queue_oldest_age_seconds` | `queue` | how long the longest-waiting available job has waited (0: none) |
//! | `runall_queue_paused` | `queue` | 1 while the queue is paused |
//! | `runall_failed_jobs` | | jobs in the failed store |
//! | `runall_workers` | | live worker processes (the worker registry) |
//! | `runall_workers_busy_slots`, `runall_workers_slots` | | their busy slots and all their slots, as of their last beat |
//! | `runall_history_jobs` | `window` (`1h`, `24h`), `outcome` (`succeeded`, `failed`) | jobs the workers ended in the last hour or day ([`queue_core::stats`]) |
//! | `runall_history_starts` | `window` | first starts in that time, whose waits the next two describe |
//! | `runall_history_wait_seconds_mean` | `window` | their mean wait from dispatch (or due time) to start |
//! | `runall_history_wait_seconds` | `window`, `quantile` (`0.5`, `0.95`, `0.99`) | its percentiles, interpolated in the buckets of [`queue_core::stats::Waits`] as `histogram_quantile` does |
//!
//! The history's figures come from the store, so they cover every worker of it; they are as
//! fresh as the workers' last beats (10 s). A window without a start has no wait figures.
//!
//! What the store cannot say (memcached cannot list its queues) is left out, and named in a
//! comment line of the answer. One reading answers every scrape for [`SCRAPE_REUSE`] (5 s),
//! and scrapes that come together wait for one reading: the store is read at most once in
//! 5 s however many scrapers ask (a reading counts exactly, about 0.5 s on a million jobs).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusBuilder;
use queue_core::stats::Point;
use queue_core::{Error as QueueError, StorageExt};

use crate::live::collect;
use crate::Dashboard;

/// How long one reading of the store answers every scrape: however many scrapers there
/// are, and however often they ask, the store is read at most once in this time.
pub(crate) const SCRAPE_REUSE: Duration = Duration::from_secs(5);

/// The last reading's text and when it was made; the lock also makes concurrent scrapes
/// wait for one reading instead of each making its own.
#[derive(Debug, Default)]
pub(crate) struct Scrapes(tokio::sync::Mutex<Option<(Instant, String)>>);

pub(crate) async fn metrics(State(dashboard): State<Dashboard>) -> Response {
    let mut last = dashboard.scrapes.0.lock().await;
    let body = match last.as_ref() {
        Some((at, body)) if at.elapsed() < SCRAPE_REUSE => body.clone(),
        _ => match render(&dashboard.queue).await {
            Ok(body) => {
                *last = Some((Instant::now(), body.clone()));
                body
            }
            Err(e) => {
                let body = format!("the store could not be read: {e}\n");
                return (axum::http::StatusCode::SERVICE_UNAVAILABLE, body).into_response();
            }
        },
    };
    drop(last);
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

/// One reading of the store, as Prometheus text.
async fn render(queue: &queue_core::Queue) -> Result<String, QueueError> {
    let snapshot = collect(queue, true).await?;
    let mut oldest = Vec::new();
    let mut notes = Vec::new();
    if let (Ok(rows), Ok(inspect)) = (&snapshot.queues, queue.storage().inspect()) {
        let now = SystemTime::now();
        for (name, _) in rows {
            match inspect.oldest_available(name).await {
                Ok(since) => {
                    let age = since
                        .and_then(|at| now.duration_since(at).ok())
                        .map_or(0.0, |age| age.as_secs_f64());
                    oldest.push((name.clone(), age));
                }
                Err(e @ QueueError::NotSupported { .. }) => {
                    notes.push(e.to_string());
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    // The workers' throughput history: what ended and how long it waited, over the last
    // hour and the last day.
    let windows =
        match queue_core::stats::history(queue.storage().as_ref(), SystemTime::now()).await {
            Ok(history) => [("1h", &history.minutes), ("24h", &history.hours)]
                .into_iter()
                .filter_map(|(window, points)| Some((window, Point::sum(points)?)))
                .collect(),
            Err(e @ QueueError::NotSupported { .. }) => {
                notes.push(e.to_string());
                Vec::new()
            }
            Err(e) => return Err(e),
        };
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        match &snapshot.queues {
            Ok(rows) => {
                for (name, size) in rows {
                    for (state, n) in [
                        ("waiting", size.waiting),
                        ("delayed", size.delayed),
                        ("running", size.reserved),
                    ] {
                        metrics::gauge!("runall_queue_jobs", "queue" => name.clone(), "state" => state)
                            .set(n as f64);
                    }
                    if let Ok(paused) = &snapshot.paused {
                        metrics::gauge!("runall_queue_paused", "queue" => name.clone())
                            .set(f64::from(u8::from(paused.contains(name))));
                    }
                }
            }
            Err(e) => notes.push(e.to_string()),
        }
        if let Err(e) = &snapshot.paused {
            notes.push(e.to_string());
        }
        for (name, age) in &oldest {
            metrics::gauge!("runall_queue_oldest_age_seconds", "queue" => name.clone()).set(*age);
        }
        match &snapshot.failed {
            Ok(n) => metrics::gauge!("runall_failed_jobs").set(*n as f64),
            Err(e) => notes.push(e.to_string()),
        }
        match &snapshot.workers {
            Ok(workers) => {
                let busy: usize = workers.iter().map(|w| w.busy).sum();
                let slots: usize = workers.iter().map(|w| w.slots).sum();
                metrics::gauge!("runall_workers").set(workers.len() as f64);
                metrics::gauge!("runall_workers_busy_slots").set(busy as f64);
                metrics::gauge!("runall_workers_slots").set(slots as f64);
            }
            Err(e) => notes.push(e.to_string()),
        }
        for (window, point) in &windows {
            for (outcome, n) in [("succeeded", point.processed), ("failed", point.failed)] {
                metrics::gauge!("runall_history_jobs", "window" => *window, "outcome" => outcome)
                    .set(n as f64);
            }
            metrics::gauge!("runall_history_starts", "window" => *window).set(point.starts as f64);
            // No start, no wait: left out rather than shown as 0.
            if let Some(mean) = point.mean_wait() {
                metrics::gauge!("runall_history_wait_seconds_mean", "window" => *window)
                    .set(mean.as_secs_f64());
            }
            for (quantile, q) in [("0.5", 0.5), ("0.95", 0.95), ("0.99", 0.99)] {
                if let Some(wait) = point.wait_quantile(q) {
                    metrics::gauge!(
                        "runall_history_wait_seconds",
                        "window" => *window,
                        "quantile" => quantile
                    )
                    .set(wait.as_secs_f64());
                }
            }
        }
    });
    let mut body = String::new();
    for note in notes {
        body.push_str("# not available: ");
        body.push_str(&note.replace('\n', " "));
        body.push('\n');
    }
    body.push_str(&handle.render());
    Ok(body)
}
