//! The pages (GET) and the actions (POST forms, each answered with a redirect to a page).

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::{html, Markup, PreEscaped};
use queue_core::storage::{JobState as ListState, PageRequest};
use queue_core::{CancelOutcome, Error as QueueError, JobId, JobState, Pushed, StorageExt};
use serde::Deserialize;

use crate::auth::{Viewer, CSRF_FIELD};
use crate::live::{self, pause_form, CSRF_MARK};
use crate::view::{enc, layout, notice, one_line, time, unsupported, Place};
use crate::{Dashboard, Error, Result};

/// Jobs per page of a listing, unless `?limit=` asks for another (at most [`MAX_LIMIT`]).
pub(crate) const PAGE: usize = 50;
pub(crate) const MAX_LIMIT: usize = 500;
/// The most payload bytes a failed job's page shows.
const MAX_PAYLOAD: usize = 64 * 1024;

pub(crate) fn driver(dash: &Dashboard) -> &'static str {
    dash.queue.storage().driver()
}

/// A redirect to `location`, relative to the URL of the request (303: the browser GETs it).
pub(crate) fn see_other(location: String) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct NoticeQuery {
    pub(crate) notice: Option<String>,
}

/// `GET /`: every queue, the failed count, refreshed live.
pub(crate) async fn overview(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Query(q): Query<NoticeQuery>,
) -> Result<Response> {
    let (table, waiting) = match dash.live.fresh(&viewer) {
        Some((html, waiting)) => (PreEscaped(html), waiting),
        None => {
            let snapshot = Ok(live::collect(&dash.queue, false).await?);
            let html = live::fragment(&snapshot, viewer.can_act()).into_string();
            (
                PreEscaped(html.replace(CSRF_MARK, viewer.csrf())),
                live::waiting(&snapshot),
            )
        }
    };
    let history = dash.charts.history(&dash.queue).await;
    let body = html! {
        h1 { "Queues" }
        @if let Some(n) = notice(q.notice.as_deref()) { (n) }
        p.live-status #live-status aria-live="polite" {
            "Live updates need JavaScript; reload the page for new numbers."
        }
        section #live data-events="events" { (table) }
        (crate::charts::section(&history, waiting))
    };
    Ok(layout(&place, &viewer, true, "Queues", driver(&dash), body).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    state: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
    notice: Option<String>,
    /// Search: jobs whose name contains this (any case).
    name: Option<String>,
    /// Search: jobs whose payload, as text, contains this (any case).
    text: Option<String>,
}

/// The most jobs one search request looks at: a search reads pages of the listing from its
/// point on and stops at this many, so its cost is bounded however large the queue; the
/// next page goes on from where it stopped.
pub(crate) const SEARCH_SCAN: usize = 10_000;

/// A search of one state of a queue: what to look for, lowercased.
struct Search {
    name: Option<String>,
    text: Option<String>,
}

impl Search {
    fn of(q: &ListQuery) -> Option<Search> {
        let word = |w: &Option<String>| {
            w.as_deref()
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
        };
        let search = Search {
            name: word(&q.name),
            text: word(&q.text),
        };
        (search.name.is_some() || search.text.is_some()).then_some(search)
    }

    fn matches(&self, job: &queue_core::storage::JobSummary) -> bool {
        self.name
            .as_ref()
            .is_none_or(|name| job.name.to_lowercase().contains(name))
            && self.text.as_ref().is_none_or(|text| {
                String::from_utf8_lossy(&job.payload)
                    .to_lowercase()
                    .contains(text)
            })
    }

    /// The query string that keeps this search in a link.
    fn query(&self) -> String {
        let mut out = String::new();
        if let Some(name) = &self.name {
            out.push_str("&name=");
            out.push_str(&enc(name));
        }
        if let Some(text) = &self.text {
            out.push_str("&text=");
            out.push_str(&enc(text));
        }
        out
    }
}

/// Reads the listing of `state` of queue `name` from `page` on, a page at a time, keeping
/// the jobs `search` matches, until `limit` match or [`SEARCH_SCAN`] were looked at: the
/// matches (all of the last page read: possibly a few more than `limit`), how many were
/// looked at, and where the next search page starts.
async fn search_jobs(
    inspect: &dyn queue_core::storage::Inspect,
    name: &str,
    state: ListState,
    mut page: PageRequest,
    limit: usize,
    search: &Search,
) -> std::result::Result<
    (
        queue_core::storage::Page<queue_core::storage::JobSummary>,
        usize,
    ),
    QueueError,
> {
    let mut found = Vec::new();
    let mut looked = 0;
    let step = limit.max(100);
    loop {
        page.limit = step.min(SEARCH_SCAN - looked).max(1);
        let read = inspect.jobs(name, state, page.clone()).await?;
        looked += read.items.len();
        found.extend(read.items.into_iter().filter(|job| search.matches(job)));
        match read.next {
            Some(next) if found.len() < limit && looked < SEARCH_SCAN => {
                page = PageRequest::after(next, step);
            }
            next => return Ok((queue_core::storage::Page { items: found, next }, looked)),
        }
    }
}

pub(crate) fn parse_state(text: Option<&str>) -> Result<ListState> {
    match text.unwrap_or("waiting") {
        "waiting" => Ok(ListState::Waiting),
        "delayed" => Ok(ListState::Delayed),
        "running" | "reserved" => Ok(ListState::Reserved),
        other => Err(Error::NotFound(format!(
            "no job state `{other}`: waiting, delayed or running"
        ))),
    }
}

pub(crate) fn state_word(state: ListState) -> &'static str {
    match state {
        ListState::Waiting => "waiting",
        ListState::Delayed => "delayed",
        ListState::Reserved => "running",
    }
}

/// `GET queues/{queue}?state=&after=`: the queue's jobs in one state, a page at a time by
/// cursor.
pub(crate) async fn queue(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response> {
    let state = parse_state(q.state.as_deref())?;
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_LIMIT);
    let storage = dash.queue.storage();
    let paused = match dash.queue.paused().await {
        Ok(p) => Ok(p.contains(&name)),
        Err(e @ QueueError::NotSupported { .. }) => Err(e),
        Err(e) => return Err(e.into()),
    };
    let inspect = storage.inspect();
    let size = match &inspect {
        Ok(inspect) => {
            let workers = live::live_workers(&dash.queue).await?;
            Some(live::bounded_size(*inspect, &name, &workers).await?)
        }
        Err(_) => None,
    };
    let page = PageRequest {
        after: q.after.clone().filter(|a| !a.is_empty()),
        limit,
    };
    let search = Search::of(&q);
    let mut looked = None;
    let jobs = match &inspect {
        Ok(inspect) => {
            let read = match &search {
                Some(search) => search_jobs(*inspect, &name, state, page, limit, search)
                    .await
                    .map(|(page, n)| {
                        looked = Some(n);
                        page
                    }),
                None => inspect.jobs(&name, state, page).await,
            };
            match read {
                Ok(page) => Ok(page),
                Err(e @ QueueError::NotSupported { .. }) => Err(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => Err(QueueError::NotSupported {
            driver: storage.driver(),
            operation: match e {
                QueueError::NotSupported { operation, .. } => operation,
                _ => "inspection",
            },
        }),
    };
    let here = enc(&name);
    let kept = search.as_ref().map(Search::query).unwrap_or_default();
    let body = html! {
        p.crumbs { a href=(place.home) { "Queues" } " / " (name) }
        h1 { "Queue " (name) }
        @if let Some(n) = notice(q.notice.as_deref()) { (n) }
        @match paused {
            Ok(p) => {
                p.state {
                    @if p { strong.paused { "paused" } " — workers take none of its jobs. " }
                    @else { "running " }
                    @if viewer.can_act() { (pause_form(&name, p, "../", "queue", viewer.csrf())) }
                }
            }
            Err(e) => { (unsupported(&e)) }
        }
        @if viewer.can_act() && size.is_some() {
            p.bulk { a.clear href={ (enc(&name)) "/clear" } { "Clear this queue…" } " (a count first)" }
        }
        nav.tabs {
            @for s in [ListState::Waiting, ListState::Delayed, ListState::Reserved] {
                @let count = size.map(|z| match s {
                    ListState::Waiting => z.waiting,
                    ListState::Delayed => z.delayed,
                    ListState::Reserved => z.reserved,
                });
                a.current[s == state] href={ (here) "?state=" (state_word(s)) } {
                    (state_word(s)) @if let Some(c) = count { " (" (live::count(c)) ")" }
                }
            }
        }
        @if inspect.is_ok() {
            form.search method="get" action=(here) {
                input type="hidden" name="state" value=(state_word(state));
                label { "Name contains " input type="search" name="name" value=(q.name.as_deref().unwrap_or("")); }
                " "
                label { "Payload contains " input type="search" name="text" value=(q.text.as_deref().unwrap_or("")); }
                " "
                button type="submit" { "Search" }
                @if search.is_some() { " " a href={ (here) "?state=" (state_word(state)) } { "Clear" } }
            }
        }
        @if let Some(n) = looked {
            p.searched {
                @match &jobs { Ok(page) => { (page.items.len()) " matching" } Err(_) => {} }
                " among " (n) " " (state_word(state)) " jobs looked at"
                @if page_after(&q) { " from this point" }
                @if n >= SEARCH_SCAN { " (a search looks at " (SEARCH_SCAN) " at most: the next page goes on)" }
                "."
            }
        }
        @match &jobs {
            Ok(page) if page.items.is_empty() => {
                p.empty { "No " (state_word(state)) " job" @if search.is_some() { " matches" } @if page_after(&q) { " after this point" } "." }
            }
            Ok(page) => {
                table.jobs {
                    thead { tr {
                        th { "Id" } th { "Name" } th.n { "Attempts" }
                        th { @if state == ListState::Reserved { "Lease ends" } @else { "Due" } }
                        th { "Unique key" }
                    } }
                    tbody {
                        @for job in &page.items {
                            tr {
                                td { a href={ "../jobs/" (enc(&job.id.0)) } { (job.id.0) } }
                                td { (job.name) }
                                td.n { (job.attempts) }
                                td { (time(job.due_at)) }
                                td { (job.unique_key.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
            Err(e) => { (unsupported(e)) }
        }
        p.paging {
            @if page_after(&q) {
                a href={ (here) "?state=" (state_word(state)) "&limit=" (limit) (kept) } { "First page" } " "
            }
            @if let Ok(Some(next)) = jobs.as_ref().map(|p| p.next.as_ref()) {
                a.next rel="next" href={ (here) "?state=" (state_word(state)) "&limit=" (limit) (kept) "&after=" (enc(next)) } { "Next page" }
            }
        }
    };
    Ok(layout(
        &place,
        &viewer,
        false,
        &format!("Queue {name}"),
        driver(&dash),
        body,
    )
    .into_response())
}

fn page_after(q: &ListQuery) -> bool {
    q.after.as_deref().is_some_and(|a| !a.is_empty())
}

#[derive(Debug, Deserialize)]
pub(crate) struct BackForm {
    back: Option<String>,
}

/// `POST queues/{queue}/pause` and `/resume`.
async fn set_paused(
    dash: Dashboard,
    place: Place,
    name: String,
    form: Result<Form<BackForm>, FormRejection>,
    pause: bool,
) -> Result<Response> {
    let changed = if pause {
        dash.queue.pause(&name).await?
    } else {
        dash.queue.resume(&name).await?
    };
    let word = match (pause, changed) {
        (true, true) => "paused",
        (true, false) => "already-paused",
        (false, true) => "resumed",
        (false, false) => "not-paused",
    };
    let back = form.ok().and_then(|Form(f)| f.back);
    // From `queues/{queue}/pause`: `../{queue}` is the queue's page.
    Ok(see_other(match back.as_deref() {
        Some("queue") => format!("../{}?notice={word}", enc(&name)),
        _ => format!("{}?notice={word}", place.home),
    }))
}

pub(crate) async fn pause(
    State(dash): State<Dashboard>,
    place: Place,
    Path(name): Path<String>,
    form: Result<Form<BackForm>, FormRejection>,
) -> Result<Response> {
    set_paused(dash, place, name, form, true).await
}

pub(crate) async fn resume(
    State(dash): State<Dashboard>,
    place: Place,
    Path(name): Path<String>,
    form: Result<Form<BackForm>, FormRejection>,
) -> Result<Response> {
    set_paused(dash, place, name, form, false).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct FindQuery {
    id: Option<String>,
}

/// `GET jobs?id=`: the look-up form of every page.
pub(crate) async fn find_job(place: Place, Query(q): Query<FindQuery>) -> Response {
    match q.id.as_deref().map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) => see_other(format!("jobs/{}", enc(id))),
        None => see_other(place.home),
    }
}

/// `GET jobs/{id}`: a job's status.
pub(crate) async fn job(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> Result<Response> {
    let status = dash.queue.job(&JobId(id.clone())).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "No job with id {id} is known: it never existed, or it ended and its status was \
             not kept (a succeeded job's status is kept only by workers run with \
             --keep-finished) or has expired."
        ))
    })?;
    let body = html! {
        p.crumbs { a href=(place.home) { "Queues" } " / " a href={ "../queues/" (enc(&status.queue)) } { (status.queue) } " / job " (id) }
        h1 { "Job " (id) }
        @if let Some(n) = notice(q.notice.as_deref()) { (n) }
        dl.fields {
            dt { "State" } dd.job-state { (status.state.as_str()) @if status.cancel_requested && status.state != JobState::Cancelled { " (cancel requested)" } }
            dt { "Name" } dd { (status.name) }
            dt { "Queue" } dd { a href={ "../queues/" (enc(&status.queue)) } { (status.queue) } }
            dt { "Attempts" } dd { (status.attempts) }
            @if let Some(p) = status.progress {
                dt { "Progress" }
                dd {
                    @if let Some(pct) = p.percent() {
                        progress max="100" value=(format!("{pct:.0}")) {} " " (format!("{pct:.1} %")) ", "
                    }
                    (p.done) @if p.of > 0 { " of " (p.of) }
                }
            }
            @if let Some(key) = &status.unique_key { dt { "Unique key" } dd { (key) } }
            @if let Some(group) = &status.group {
                dt { "Part of" }
                dd.group {
                    @let dir = match group.kind {
                        queue_core::GroupKind::Batch => Some("batches"),
                        queue_core::GroupKind::Chain => Some("chains"),
                        queue_core::GroupKind::Workflow => Some("workflows"),
                        _ => None,
                    };
                    @if let Some(dir) = dir {
                        a href={ "../" (dir) "/" (enc(&group.id)) } { (group) }
                    } @else { (group) }
                }
            }
            @if let Some(t) = status.due_at { dt { @if status.state == JobState::Running { "Lease ends" } @else { "Due" } } dd { (time(t)) } }
            @if let Some(t) = status.dispatched_at { dt { "Dispatched" } dd { (time(t)) } }
            @if let Some(t) = status.started_at { dt { "Started" } dd { (time(t)) } }
            @if let Some(t) = status.finished_at { dt { "Finished" } dd { (time(t)) } }
        }
        @if let Some(error) = &status.error { h2 { "Error" } pre.error { (error) } }
        @if let Some(output) = &status.output {
            h2 { "Output" }
            pre.output { (serde_json::to_string_pretty(output).unwrap_or_else(|_| output.to_string())) }
        }
        @if !status.state.is_finished() && viewer.can_act() {
            form method="post" action={ (enc(&id)) "/cancel" } {
                (csrf_input(&viewer))
                button.cancel type="submit" { "Cancel job" }
            }
        }
    };
    Ok(layout(
        &place,
        &viewer,
        false,
        &format!("Job {id}"),
        driver(&dash),
        body,
    )
    .into_response())
}

/// `POST jobs/{id}/cancel`.
pub(crate) async fn cancel(
    State(dash): State<Dashboard>,
    Path(id): Path<String>,
) -> Result<Response> {
    let word = match dash.queue.cancel(&JobId(id.clone())).await? {
        CancelOutcome::Cancelled(_) => "cancelled",
        CancelOutcome::Requested(_) => "cancel-requested",
        CancelOutcome::Finished(_) => "finished",
        CancelOutcome::NotFound => {
            return Err(Error::NotFound(format!("No job with id {id} is known.")))
        }
        _ => "finished",
    };
    Ok(see_other(format!("../{}?notice={word}", enc(&id))))
}

#[derive(Debug, Deserialize)]
pub(crate) struct FailedQuery {
    pub(crate) after: Option<String>,
    pub(crate) limit: Option<usize>,
    notice: Option<String>,
}

/// `GET failed?after=`: the failed store, newest first, a page at a time.
pub(crate) async fn failed(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Query(q): Query<FailedQuery>,
) -> Result<Response> {
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_LIMIT);
    let after = q.after.clone().filter(|a| !a.is_empty());
    let listing = match dash.queue.storage().failed_store() {
        Ok(store) => {
            let total = store.count().await?;
            let page = store
                .list(PageRequest {
                    after: after.clone(),
                    limit,
                })
                .await?;
            Ok((total, page))
        }
        Err(e) => Err(e),
    };
    let body = html! {
        h1 { "Failed jobs" }
        @if let Some(n) = notice(q.notice.as_deref()) { (n) }
        @match &listing {
            Ok((total, page)) => {
                p.total { (total) " in the failed store" @if *total > 0 { " · " a href="failed/groups" { "grouped by error" } " · " a href="failed/select" { "select by filter" } } }
                @if page.items.is_empty() {
                    p.empty { "No failed job" @if after.is_some() { " after this point" } "." }
                } @else {
                    table.failed {
                        thead { tr {
                            th { "Id" } th { "Name" } th { "Queue" } th.n { "Attempts" }
                            th { "Failed" } th { "Error" } @if viewer.can_act() { th { "Action" } }
                        } }
                        tbody {
                            @for job in &page.items {
                                tr {
                                    td { a href={ "failed/" (enc(&job.id)) } { (job.id) } }
                                    td { (job.name) }
                                    td { (job.queue) }
                                    td.n { (job.attempts) }
                                    td { (time(job.failed_at)) }
                                    td.error { (one_line(&job.error, 120)) }
                                    @if viewer.can_act() { td { (failed_actions(&format!("failed/{}/", enc(&job.id)), &viewer)) } }
                                }
                            }
                        }
                    }
                }
                p.paging {
                    @if after.is_some() { a href={ "failed?limit=" (limit) } { "First page" } " " }
                    @if let Some(next) = &page.next {
                        a.next rel="next" href={ "failed?limit=" (limit) "&after=" (enc(next)) } { "Next page" }
                    }
                }
            }
            Err(e) => { (unsupported(e)) }
        }
    };
    Ok(layout(&place, &viewer, false, "Failed jobs", driver(&dash), body).into_response())
}

/// The hidden field that carries the viewer's CSRF token in a form.
pub(crate) fn csrf_input(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf()); }
}

/// Retry and forget buttons; `path` leads from the page to `failed/{id}/`.
fn failed_actions(path: &str, viewer: &Viewer) -> Markup {
    html! {
        form.inline method="post" action={ (path) "retry" } { (csrf_input(viewer)) button.retry type="submit" { "Retry" } }
        " "
        form.inline method="post" action={ (path) "forget" } { (csrf_input(viewer)) button.forget type="submit" { "Forget" } }
    }
}

/// `GET failed/{id}`: one failed job, its error and payload.
pub(crate) async fn failed_job(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response> {
    let store = dash.queue.storage().failed_store()?;
    let job = store
        .get(&id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("No failed job with id {id}.")))?;
    let batch = batch_of(&job.payload);
    let payload = payload_text(&job.payload);
    let body = html! {
        p.crumbs { a href="../failed" { "Failed jobs" } " / " (id) }
        h1 { "Failed job " (id) }
        dl.fields {
            dt { "Name" } dd { (job.name) }
            dt { "Queue" } dd { a href={ "../queues/" (enc(&job.queue)) } { (job.queue) } }
            dt { "Job id" } dd { a href={ "../jobs/" (enc(&job.job_id)) } { (job.job_id) } }
            dt { "Attempts" } dd { (job.attempts) }
            dt { "Failed" } dd { (time(job.failed_at)) }
            @if let Some(u) = &job.unique { dt { "Unique key" } dd { (u.key) } }
            @if let Some(b) = &batch { dt { "Batch" } dd { a href={ "../batches/" (enc(b)) } { (b) } } }
        }
        h2 { "Error" }
        pre.error { (job.error) }
        h2 { "Payload" }
        pre.payload { (payload) }
        @if viewer.can_act() {
            @if batch.is_some() {
                p { "Retrying it counts it pending in its batch again; the batch's callbacks wait for it." }
            }
            (failed_actions(&format!("{}/", enc(&id)), &viewer))
        }
    };
    Ok(layout(
        &place,
        &viewer,
        false,
        &format!("Failed job {id}"),
        driver(&dash),
        body,
    )
    .into_response())
}

/// The payload as text: JSON pretty-printed, anything else as UTF-8 (lossy), cut at 64 KiB.
fn payload_text(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(MAX_PAYLOAD)];
    let mut text = match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(value) if bytes.len() <= MAX_PAYLOAD => {
            serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
        }
        _ => String::from_utf8_lossy(shown).into_owned(),
    };
    if bytes.len() > MAX_PAYLOAD {
        text.push_str(&format!(
            "\n… ({} bytes in all; the first {MAX_PAYLOAD} shown)",
            bytes.len()
        ));
    }
    text
}

/// The batch a failed job was a member of, from its envelope.
fn batch_of(payload: &[u8]) -> Option<String> {
    let envelope = queue_core::envelope::Envelope::decode(payload).ok()?;
    let gate = envelope.after?.skip_if?;
    gate.group.strip_prefix("batch:").map(str::to_owned)
}

/// `POST failed/{id}/retry`.
pub(crate) async fn retry(
    State(dash): State<Dashboard>,
    Path(id): Path<String>,
) -> Result<Response> {
    // A batch member goes back counted pending in its batch, as `runall failed retry` does.
    // From `failed/{id}/retry`: `../../jobs/{new}` is the new job's page.
    Ok(match dash.queue.retry_failed(&id).await? {
        Some(Pushed::Duplicate(_)) => see_other(format!("../{}?notice=held", enc(&id))),
        Some(pushed) => see_other(format!("../../jobs/{}?notice=retried", enc(&pushed.id().0))),
        None => return Err(Error::NotFound(format!("No failed job with id {id}."))),
    })
}

/// `POST failed/{id}/forget`.
pub(crate) async fn forget(
    State(dash): State<Dashboard>,
    Path(id): Path<String>,
) -> Result<Response> {
    let store = dash.queue.storage().failed_store()?;
    if store.forget(&id).await? {
        Ok(see_other("../../failed?notice=forgotten".into()))
    } else {
        Err(Error::NotFound(format!("No failed job with id {id}.")))
    }
}

/// Any other URL.
pub(crate) async fn not_found() -> Error {
    Error::NotFound("No such page in the dashboard.".into())
}
