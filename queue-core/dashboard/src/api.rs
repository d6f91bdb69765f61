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
pub(crate) struct Json(pub(crate) Value);

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
    let (entries, total) = crate::audit::entries(&dash).await?;
    let kept = if total.is_some() { "store" } else { "process" };
    Ok(Json(json!({ "kept_in": kept, "entries": entries })))
}

/// A page of a listing, and a queue's job state.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
    state: Option<String>,
}

impl ListQuery {
    fn page(&self) -> PageRequest {
        PageRequest {
            after: self.after.clone().filter(|a| !a.is_empty()),
            limit: self.limit.unwrap_or(PAGE).clamp(1, MAX_LIMIT),
        }
    }
}

fn opt_millis(t: Option<SystemTime>) -> Option<i64> {
    t.map(millis)
}

fn batch_json(id: &str, s: &queue_core::BatchStatus) -> Value {
    json!({
        "id": id,
        "total": s.total,
        "pending": s.pending,
        "succeeded": s.succeeded,
        "failed": s.failed,
        "cancelled": s.cancelled,
        "is_cancelled": s.is_cancelled,
        "is_sealed": s.is_sealed,
        "is_finished": s.is_finished(),
        "percent": s.percent(),
        "created_at": opt_millis(s.created_at),
    })
}

/// `GET api/queues/{queue}?state=waiting|delayed|running&after=&limit=`: a page of the
/// queue's jobs in one state, by cursor (payloads left out).
pub(crate) async fn queue(
    State(dash): State<Dashboard>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let state = crate::pages::parse_state(q.state.as_deref())?;
    let page = dash
        .queue
        .storage()
        .inspect()?
        .jobs(&name, state, q.page())
        .await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|j| {
            json!({
                "id": j.id.0,
                "name": j.name,
                "attempts": j.attempts,
                "due_at": millis(j.due_at),
                "unique_key": j.unique_key,
            })
        })
        .collect();
    Ok(Json(json!({
        "queue": name,
        "state": crate::pages::state_word(state),
        "items": items,
        "next": page.next,
    })))
}

/// `GET api/batches?after=&limit=`: the batches by id with their counts.
pub(crate) async fn batches(
    State(dash): State<Dashboard>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let page = queue_core::Batch::list(&dash.queue, q.page()).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|(id, s)| batch_json(&id.0, s))
        .collect();
    Ok(Json(json!({ "items": items, "next": page.next })))
}

/// `GET api/batches/{id}`: one batch's counts, and its members running now where the store
/// can tell.
pub(crate) async fn batch(State(dash): State<Dashboard>, Path(id): Path<String>) -> ApiResult {
    let batch_id = queue_core::BatchId(id.clone());
    let status = queue_core::Batch::find(&dash.queue, &batch_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no batch {id} (or it was pruned)")))?;
    let mut body = batch_json(&id, &status);
    body["running"] = match queue_core::Batch::running(&dash.queue, &batch_id).await {
        Ok(n) => json!(n),
        Err(e @ QueueError::NotSupported { .. }) => unsupported(&e),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(body))
}

/// `GET api/schedules`: every schedule with its next and last tick and its counts.
pub(crate) async fn schedules(State(dash): State<Dashboard>) -> ApiResult {
    let states = crate::groups::schedule_states(&dash).await?;
    let items: Vec<Value> = states
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "when": s.when,
                "next": opt_millis(s.next),
                "last": opt_millis(s.last),
                "first": opt_millis(s.first),
                "ticks": s.ticks,
                "missed": s.missed,
                "full": s.full,
                "paused": s.paused,
                "runs": s.runs,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `GET api/locks?after=`: the `without_overlapping` locks held, by key.
pub(crate) async fn locks(State(dash): State<Dashboard>, Query(q): Query<ListQuery>) -> ApiResult {
    let page = dash.queue.storage().locks()?.locks(q.page()).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|l| json!({ "key": l.key, "owner": l.owner, "expires_at": millis(l.expires_at) }))
        .collect();
    Ok(Json(json!({ "items": items, "next": page.next })))
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
