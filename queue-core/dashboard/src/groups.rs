//! Batches and schedules: their pages (GET) and actions (POST forms answered with a
//! redirect).

use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use queue_core::storage::PageRequest;
use queue_core::{
    Batch, BatchId, BatchStatus, Chain, ChainId, Error as QueueError, ScheduleState, Workflow,
    WorkflowId,
};
use serde::Deserialize;

use crate::auth::Viewer;
use crate::pages::{csrf_input, driver, see_other, NoticeQuery, MAX_LIMIT, PAGE};
use crate::view::{enc, layout, notice, one_line, time, unsupported, Place};
use crate::{Dashboard, Error, Result};

/// The most failed members a batch's page lists.
const FAILURES_SHOWN: usize = 50;

#[derive(Debug, Deserialize)]
pub(crate) struct BatchesQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// A batch's state in a word.
fn batch_state(status: &BatchStatus) -> &'static str {
    if status.is_finished() {
        if status.is_cancelled {
            "cancelled"
        } else if status.failed > 0 {
            "finished with failures"
        } else {
            "finished"
        }
    } else if status.is_cancelled {
        "cancelling"
    } else if !status.is_sealed {
        "open"
    } else {
        "running"
    }
}

/// A progress bar and its percentage.
fn progress(status: &BatchStatus) -> Markup {
    let pct = status.percent();
    html! {
        progress max="100" value=(format!("{pct:.0}")) {} " " (format!("{pct:.1} %"))
    }
}

/// `GET batches?after=`: the batches, by id, a page at a time.
pub(crate) async fn batches(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Query(q): Query<BatchesQuery>,
) -> Result<Response> {
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_LIMIT);
    let after = q.after.clone().filter(|a| !a.is_empty());
    let page = PageRequest {
        after: after.clone(),
        limit,
    };
    let listing = match Batch::list(&dash.queue, page).await {
        Ok(page) => Ok(page),
        Err(e @ QueueError::NotSupported { .. }) => Err(e),
        Err(e) => return Err(e.into()),
    };
    let body = html! {
        h1 { "Batches" }
        @match &listing {
            Ok(page) if page.items.is_empty() => {
                p.empty { "No batch" @if after.is_some() { " after this point" } "." }
            }
            Ok(page) => {
                table.batches {
                    thead { tr {
                        th { "Id" } th { "State" } th { "Progress" } th.n { "Total" }
                        th.n { "Pending" } th.n { "Succeeded" } th.n { "Failed" }
                        th.n { "Cancelled" } th { "Created" }
                    } }
                    tbody {
                        @for (id, status) in &page.items {
                            tr data-batch=(id.0) {
                                td { a href={ "batches/" (enc(&id.0)) } { (id.0) } }
                                td.state { (batch_state(status)) }
                                td { (progress(status)) }
                                td.n { (status.total) }
                                td.n.pending { (status.pending) }
                                td.n.succeeded { (status.succeeded) }
                                td.n.failed { (status.failed) }
                                td.n.cancelled { (status.cancelled) }
                                td { @if let Some(t) = status.created_at { (time(t)) } }
                            }
                        }
                    }
                }
            }
            Err(e) => { (unsupported(e)) }
        }
        p.paging {
            @if after.is_some() { a href={ "batches?limit=" (limit) } { "First page" } " " }
            @if let Ok(Some(next)) = listing.as_ref().map(|p| p.next.as_ref()) {
                a.next rel="next" href={ "batches?limit=" (limit) "&after=" (enc(next)) } { "Next page" }
            }
        }
    };
    Ok(layout(&place, &viewer, false, "Batches", driver(&dash), body).into_response())
}

/// `GET batches/{id}`: one batch's counts, progress, rate and ETA, its running members and
/// its failed ones, with Cancel and Retry buttons.
pub(crate) async fn batch(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> Result<Response> {
    let batch_id = BatchId(id.clone());
    let status = Batch::find(&dash.queue, &batch_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("No batch with id {id} (or it was pruned).")))?;
    let running = match Batch::running(&dash.queue, &batch_id).await {
        Ok(n) => Ok(n),
        Err(e @ QueueError::NotSupported { .. }) => Err(e),
        Err(e) => return Err(e.into()),
    };
    let failures = if status.failed > 0 {
        match Batch::failures(&dash.queue, &batch_id).await {
            Ok(f) => f,
            Err(QueueError::NotSupported { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        }
    } else {
        Vec::new()
    };
    let now = SystemTime::now();
    let body = html! {
        p.crumbs { a href="../batches" { "Batches" } " / " (id) }
        h1 { "Batch " (id) }
        @if let Some(n) = notice(q.notice.as_deref()) { (n) }
        // Refreshed in place every 2 s by the script until the batch has finished.
        section #batch data-refresh=[(!status.is_finished()).then_some("2")] {
        dl.fields {
            dt { "State" } dd.batch-state { (batch_state(&status)) }
            dt { "Progress" } dd { (progress(&status)) ", " (status.ended()) " of " (status.total) " ended" }
            dt { "Pending" } dd.pending { (status.pending) }
            dt { "Running" } dd.running { @match &running { Ok(n) => { (n) }, Err(e) => { (unsupported(e)) } } }
            dt { "Succeeded" } dd.succeeded { (status.succeeded) }
            dt { "Failed" } dd.failed { (status.failed) }
            dt { "Cancelled" } dd.cancelled { (status.cancelled) }
            dt { "Sealed" } dd { @if status.is_sealed { "yes" } @else { "no: members may still be added" } }
            @if let Some(t) = status.created_at { dt { "Created" } dd { (time(t)) } }
            @if let Some(rate) = status.rate(now) {
                dt { "Rate" } dd { (format!("{rate:.1}")) " members a second" }
            }
            @if !status.is_finished() {
                @if let Some(eta) = status.eta(now) {
                    dt { "ETA" } dd { (humantime::format_duration(Duration::from_secs(eta.as_secs()))) }
                }
            }
        }
        @if viewer.can_act() {
            p.actions {
                @if !status.is_finished() && !status.is_cancelled {
                    form.inline method="post" action={ (enc(&id)) "/cancel" } {
                        (csrf_input(&viewer))
                        button.cancel type="submit" { "Cancel batch" }
                    }
                    " "
                }
                @if status.failed > 0 {
                    form.inline method="post" action={ (enc(&id)) "/retry" } {
                        (csrf_input(&viewer))
                        button.retry type="submit" { "Retry failed members" }
                    }
                }
            }
        }
        @if !failures.is_empty() {
            h2 { "Failed members" }
            table.failed {
                thead { tr { th { "Failed job" } th { "Name" } th { "Failed" } th { "Error" } } }
                tbody {
                    @for job in failures.iter().take(FAILURES_SHOWN) {
                        tr {
                            td { a href={ "../failed/" (enc(&job.id)) } { (job.id) } }
                            td { (job.name) }
                            td { (time(job.failed_at)) }
                            td.error { (one_line(&job.error, 120)) }
                        }
                    }
                }
            }
            @if failures.len() > FAILURES_SHOWN {
                p { "… and " (failures.len() - FAILURES_SHOWN) " more in the failed store." }
            }
        }
        }
    };
    Ok(layout(
        &place,
        &viewer,
        false,
        &format!("Batch {id}"),
        driver(&dash),
        body,
    )
    .into_response())
}

/// `POST batches/{id}/cancel`.
pub(crate) async fn cancel_batch(
    State(dash): State<Dashboard>,
    Path(id): Path<String>,
) -> Result<Response> {
    Batch::cancel(&dash.queue, &BatchId(id.clone())).await?;
    Ok(see_other(format!("../{}?notice=batch-cancelled", enc(&id))))
}

/// `POST batches/{id}/retry`.
pub(crate) async fn retry_batch(
    State(dash): State<Dashboard>,
    Path(id): Path<String>,
) -> Result<Response> {
    let n = Batch::retry(&dash.queue, &BatchId(id.clone())).await?;
    let word = if n == 0 {
        "batch-nothing-to-retry"
    } else {
        "batch-retried"
    };
    Ok(see_other(format!("../{}?notice={word}", enc(&id))))
}

/// Every schedule this dashboard's queue knows: those registered in code or `job.toml`,
/// then the stored ones (where the store keeps groups).
pub(crate) async fn schedule_states(dash: &Dashboard) -> Result<Vec<ScheduleState>> {
    let queue = &dash.queue;
    let in_code = queue.schedules();
    let mut states = Vec::new();
    for schedule in &in_code {
        states.push(queue.schedule_state(schedule.id_str()).await?);
    }
    if queue.storage().capabilities().groups.is_some() {
        let mut page = PageRequest::first(500);
        loop {
            let ids = queue.stored_schedules(page).await?;
            for id in ids.items {
                if in_code.iter().all(|s| s.id_str() != id) {
                    states.push(queue.schedule_state(&id).await?);
                }
            }
            match ids.next {
                Some(next) => page = PageRequest::after(next, 500),
                None => break,
            }
        }
    }
    Ok(states)
}

/// `GET schedules`: each schedule with its next and last tick, its counts, and Pause,
/// Resume and Run now buttons.
pub(crate) async fn schedules(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Query(q): Query<NoticeQuery>,
) -> Result<Response> {
    let states = schedule_states(&dash).await?;
    let body = html! {
        h1 { "Schedules" }
        @if let Some(n) = notice(q.notice.as_deref()) { (n) }
        @if states.is_empty() {
            p.empty {
                "No schedule: add them with [[schedule]] in job.toml, Queue::schedule or \
                 Schedules::upsert in code. This page lists the schedules of the binary that \
                 serves it and those stored in the store."
            }
        } @else {
            table.schedules {
                thead { tr {
                    th { "Id" } th { "When" } th { "State" } th { "Next" } th { "Last" }
                    th.n { "Ticks" } th.n { "Missed" }
                    @if viewer.can_act() { th { "Action" } }
                } }
                tbody {
                    @for s in &states {
                        tr data-schedule=(s.id) {
                            td { (s.id) }
                            td { (s.when) }
                            td.state { @if s.paused { strong.paused { "paused" } } @else { "active" } }
                            td.next { @match s.next { Some(t) => { (time(t)) }, None => { "-" } } }
                            td.last { @match s.last { Some(t) => { (time(t)) }, None => { "-" } } }
                            td.n.ticks { (s.ticks) }
                            td.n { (s.missed) @if s.full > 0 { " (" (s.full) " for a full queue)" } }
                            @if viewer.can_act() {
                                td {
                                    @let path = format!("schedules/{}/", enc(&s.id));
                                    @let (action, label) = if s.paused { ("resume", "Resume") } else { ("pause", "Pause") };
                                    form.inline method="post" action={ (path) (action) } {
                                        (csrf_input(&viewer))
                                        button type="submit" class=(action) { (label) }
                                    }
                                    " "
                                    form.inline method="post" action={ (path) "run" } {
                                        (csrf_input(&viewer))
                                        button.run type="submit" { "Run now" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(&place, &viewer, false, "Schedules", driver(&dash), body).into_response())
}

/// `POST schedules/{id}/pause`, `/resume` and `/run`.
pub(crate) async fn schedule_action(
    State(dash): State<Dashboard>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response> {
    let word = match action.as_str() {
        "pause" => {
            dash.queue.pause_schedule(&id).await?;
            "schedule-paused"
        }
        "resume" => {
            dash.queue.resume_schedule(&id).await?;
            "schedule-resumed"
        }
        "run" => {
            if dash.queue.run_schedule_now(&id).await? {
                "schedule-run"
            } else {
                "schedule-held"
            }
        }
        _ => return Err(Error::NotFound("No such page in the dashboard.".into())),
    };
    // From `schedules/{id}/{action}`: `../../schedules` is the list.
    Ok(see_other(format!("../../schedules?notice={word}")))
}

/// What the page of a chain or a workflow shows: its parts by outcome.
struct Parts {
    /// `chain` or `workflow`.
    kind: &'static str,
    /// `links` or `nodes`.
    unit: &'static str,
    total: u64,
    succeeded: u64,
    failed: u64,
    skipped: u64,
    created_at: Option<SystemTime>,
}

/// The page of a chain or a workflow, refreshed in place until every part has ended; 404
/// for one with no part (unknown, or pruned).
fn parts_page(
    dash: &Dashboard,
    place: &Place,
    viewer: &Viewer,
    id: &str,
    p: Parts,
) -> Result<Response> {
    if p.total == 0 {
        return Err(Error::NotFound(format!(
            "No {} with id {id} (or it was pruned).",
            p.kind
        )));
    }
    let ended = p.succeeded + p.failed + p.skipped;
    let finished = ended >= p.total;
    let title = format!("{}{} {id}", p.kind[..1].to_uppercase(), &p.kind[1..]);
    let body = html! {
        p.crumbs { (title) }
        h1 { (title) }
        section id=(p.kind) data-refresh=[(!finished).then_some("2")] {
            dl.fields {
                dt { "State" } dd class={ (p.kind) "-state" } { @if finished { "finished" } @else { "running" } }
                dt { "Progress" } dd { (shares(ended, p.total)) ", " (ended) " of " (p.total) " " (p.unit) " ended" }
                dt { "Succeeded" } dd.succeeded { (p.succeeded) }
                dt { "Failed" } dd.failed { (p.failed) }
                dt { "Skipped" } dd.skipped { (p.skipped) }
                @if let Some(t) = p.created_at { dt { "Dispatched" } dd { (time(t)) } }
            }
        }
    };
    Ok(layout(place, viewer, false, &title, driver(dash), body).into_response())
}

/// `GET chains/{id}`: a chain's links by outcome.
pub(crate) async fn chain(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response> {
    let s = Chain::status(&dash.queue, &ChainId(id.clone())).await?;
    let parts = Parts {
        kind: "chain",
        unit: "links",
        total: s.links,
        succeeded: s.succeeded,
        failed: s.failed,
        skipped: s.skipped,
        created_at: None,
    };
    parts_page(&dash, &place, &viewer, &id, parts)
}

/// `GET workflows/{id}`: a workflow's nodes by outcome.
pub(crate) async fn workflow(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response> {
    let s = Workflow::status(&dash.queue, &WorkflowId(id.clone())).await?;
    let parts = Parts {
        kind: "workflow",
        unit: "nodes",
        total: s.nodes,
        succeeded: s.succeeded,
        failed: s.failed,
        skipped: s.skipped,
        created_at: s.created_at,
    };
    parts_page(&dash, &place, &viewer, &id, parts)
}

/// A progress bar of `done` out of `of`.
fn shares(done: u64, of: u64) -> Markup {
    let pct = if of == 0 {
        100.0
    } else {
        done.min(of) as f64 * 100.0 / of as f64
    };
    html! { progress max="100" value=(format!("{pct:.0}")) {} " " (format!("{pct:.1} %")) }
}
