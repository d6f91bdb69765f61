//! The pages' JSON twins under `api/`: the same reads as the HTML pages (and `runall`'s
//! `--json`), for scripts and alerting. Read-only: actions stay POST forms (a script with
//! a bearer token posts them without a CSRF token, see the crate docs).
//!
//! Errors are JSON too: `{"error": "..."}` with the page's status (404 for an unknown job,
//! 501 where the store lacks the capability, naming it).

use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::header::{HeaderValue, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use queue_core::stats::{History, Point};
use queue_core::storage::{unix_millis, PageRequest};
use queue_core::{Error as QueueError, JobId, StorageExt};
use serde_json::{json, Value};

use crate::live::{self, COUNT_CAP};
use crate::pages::{FailedQuery, MAX_LIMIT, PAGE};
use crate::{Dashboard, Error};

/// A JSON body (axum's own `Json` is a feature this crate leaves off).
pub(crate) struct Json(Value);

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        let mut response = self.0.to_string().into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

/// An error as JSON, with the status its page would have.
pub(crate) struct ApiError(Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let mut body = json!({ "error": self.0.to_string() });
        if let Error::Queue(QueueError::NotSupported { driver, .. }) = &self.0 {
            body["unsupported"] = json!(true);
            body["driver"] = json!(driver);
        }
        (status, Json(body)).into_response()
    }
}

type ApiResult = Result<Json, ApiError>;

fn millis(t: SystemTime) -> i64 {
    unix_millis(t)
}

/// An operation the store lacks as `{"unsupported": "..."}`, in place of its value.
fn unsupported(e: &QueueError) -> Value {
    json!({ "unsupported": e.to_string() })
}

/// `GET api/overview`: every queue's waiting, delayed and running jobs (each counted up to
/// [`COUNT_CAP`], as the page), whether it is paused, the failed count and the live workers.
pub(crate) async fn overview(State(dash): State<Dashboard>) -> ApiResult {
    let snapshot = live::collect(&dash.queue, false).await?;
    let paused = snapshot.paused.as_ref().ok();
    let queues = match &snapshot.queues {
        Ok(rows) => Value::Array(
            rows.iter()
                .map(|(name, size)| {
                    json!({
                        "name": name,
                        "waiting": size.waiting,
                        "delayed": size.delayed,
                        "running": size.reserved,
                        "paused": paused.map(|p| p.contains(name)),
                    })
                })
                .collect(),
        ),
        Err(e) => unsupported(e),
    };
    let failed = match &snapshot.failed {
        Ok(n) => json!(n),
        Err(e) => unsupported(e),
    };
    let workers = match &snapshot.workers {
        Ok(w) => json!(w.len()),
        Err(e) => unsupported(e),
    };
    Ok(Json(json!({
        "as_of": millis(snapshot.as_of),
        "driver": dash.queue.storage().driver(),
        "count_cap": COUNT_CAP,
        "queues": queues,
        "failed": failed,
        "workers": workers,
    })))
}

fn ms(d: Option<std::time::Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn point(p: &Point) -> Value {
    json!({
        "at": millis(p.at),
        "processed": p.processed,
        "failed": p.failed,
        "starts": p.starts,
        "wait_mean_ms": ms(p.mean_wait()),
        "wait_p50_ms": ms(p.wait_quantile(0.5)),
        "wait_p95_ms": ms(p.wait_quantile(0.95)),
        "wait_p99_ms": ms(p.wait_quantile(0.99)),
    })
}

fn history_json(history: &History) -> Value {
    let total = |points: &[Point]| Point::sum(points).map(|p| point(&p));
    json!({
        "last_hour": total(&history.minutes),
        "last_day": total(&history.hours),
        "minutes": history.minutes.iter().map(point).collect::<Vec<_>>(),
        "hours": history.hours.iter().map(point).collect::<Vec<_>>(),
    })
}

/// `GET api/history`: the throughput history of the overview's charts: the last hour by
/// minute and the last day by hour, oldest first, with each span's and the totals' waits
/// (mean and estimated p50, p95, p99, in ms; `null` with no start).
pub(crate) async fn history(State(dash): State<Dashboard>) -> ApiResult {
    let history = dash.charts.history(&dash.queue).await?;
    Ok(Json(history_json(&history)))
}

/// `GET api/jobs/{id}`: a job's status, as `runall job ID --json` prints it.
pub(crate) async fn job(State(dash): State<Dashboard>, Path(id): Path<String>) -> ApiResult {
    match dash.queue.job(&JobId(id.clone())).await? {
        Some(status) => Ok(Json(status.to_json())),
        None => Err(Error::NotFound(format!(
            "no job {id} (it never existed, or it ended and its status was not kept: see keep_finished)"
        ))
        .into()),
    }
}

/// `GET api/workers`: the live workers, as `runall workers --json` prints them.
pub(crate) async fn workers(State(dash): State<Dashboard>) -> ApiResult {
    let workers = dash.queue.workers().await?;
    Ok(Json(json!(workers)))
}

/// `GET api/failed?after=&limit=`: a page of the failed store, newest first (payloads left
/// out: `runall failed show ID` and the page `failed/{id}` show them with secrets hidden).
pub(crate) async fn failed(
    State(dash): State<Dashboard>,
    Query(q): Query<FailedQuery>,
) -> ApiResult {
    let store = dash.queue.storage().failed_store()?;
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_LIMIT);
    let total = store.count().await?;
    let page = store
        .list(PageRequest {
            after: q.after.clone().filter(|a| !a.is_empty()),
            limit,
        })
        .await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|f| {
            json!({
                "id": f.id,
                "job_id": f.job_id,
                "queue": f.queue,
                "name": f.name,
                "error": f.error,
                "attempts": f.attempts,
                "failed_at": millis(f.failed_at),
            })
        })
        .collect();
    Ok(Json(
        json!({ "total": total, "items": items, "next": page.next }),
    ))
}

/// `GET api/audit`: the audit log's newest entries, newest first, and where it is kept
/// (`"store"`, or `"process"` where the store has no group counters).
pub(crate) async fn audit(State(dash): State<Dashboard>) -> ApiResult {
    let (entries, kept) = crate::audit::entries(&dash).await?;
    Ok(Json(json!({ "kept_in": kept, "entries": entries })))
}

/// The unknown paths under `api/`, answered in JSON.
pub(crate) async fn not_found() -> ApiError {
    Error::NotFound("no such API path".to_owned()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue_core::stats::Waits;
    use std::time::Duration;

    #[test]
    fn history_carries_the_percentiles() {
        let mut waits = Waits::default();
        waits.0[Waits::bucket(200)] = 100;
        let p = Point {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(60),
            processed: 100,
            failed: 0,
            starts: 100,
            wait_ms: 17_500,
            waits,
        };
        let json = history_json(&History {
            minutes: vec![p],
            hours: vec![],
        });
        assert_eq!(json["minutes"][0]["at"], 60_000);
        assert_eq!(json["minutes"][0]["wait_p50_ms"], 175);
        assert_eq!(json["last_hour"]["wait_p50_ms"], 175);
        let p99 = json["last_hour"]["wait_p99_ms"].as_u64().unwrap();
        assert!((245..=250).contains(&p99), "{p99}");
        assert_eq!(json["last_day"], Value::Null);
        assert_eq!(json["last_hour"]["wait_mean_ms"], 175);
    }
}
