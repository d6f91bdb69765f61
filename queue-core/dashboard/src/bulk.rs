//! Bulk actions: retry or delete the failed jobs a filter selects, and clear a queue. Each
//! has a dry run first (a GET page that counts what the action would touch, with the
//! buttons), and runs in the background of the dashboard process as a task whose progress
//! has a page of its own (`tasks/{id}`, refreshed every 2 s while it runs) and a JSON twin
//! (`api/tasks/{id}`). An action touches only what its dry run counted: failed jobs that
//! failed after the dry run are left alone.
//!
//! The filter reads the newest [`SCAN`] failed jobs, as the grouping by error does; the
//! page says when the failed store holds more. Tasks are kept in the dashboard process's
//! memory (the last [`TASKS_KEPT`]); the actions are in the audit log.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::{html, Markup};
use queue_core::storage::{unix_millis, FailedJob, PageRequest, Pushed};
use queue_core::StorageExt;
use serde::{Deserialize, Serialize};

use crate::auth::Viewer;
use crate::fingerprint::SCAN;
use crate::pages::{csrf_input, driver, see_other};
use crate::view::{enc, layout, one_line, time, Place};
use crate::{Dashboard, Error, Result};

/// How many finished tasks a dashboard process keeps.
pub(crate) const TASKS_KEPT: usize = 100;

/// What selects failed jobs: each field given must match.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub(crate) struct Filter {
    /// The job's name, exactly.
    #[serde(default)]
    name: Option<String>,
    /// The queue it came from, exactly.
    #[serde(default)]
    queue: Option<String>,
    /// A part of its error, in any case.
    #[serde(default)]
    error: Option<String>,
    /// Failed within this long (`1h`, `30m`, `7d`).
    #[serde(default)]
    since: Option<String>,
}

impl Filter {
    /// The filter without its empty fields.
    fn cleaned(mut self) -> Filter {
        for field in [
            &mut self.name,
            &mut self.queue,
            &mut self.error,
            &mut self.since,
        ] {
            if field.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *field = None;
            }
        }
        self
    }

    fn is_empty(&self) -> bool {
        self.name.is_none() && self.queue.is_none() && self.error.is_none() && self.since.is_none()
    }

    /// The oldest failure time it keeps, from `since`.
    fn after(&self, now: SystemTime) -> Result<Option<SystemTime>> {
        let Some(since) = &self.since else {
            return Ok(None);
        };
        let span = humantime::parse_duration(since.trim()).map_err(|e| {
            Error::Refused(format!(
                "`since` must be a duration such as 30m, 1h or 7d, not `{since}`: {e}"
            ))
        })?;
        Ok(Some(
            now.checked_sub(span).unwrap_or(SystemTime::UNIX_EPOCH),
        ))
    }

    fn matches(&self, job: &FailedJob, after: Option<SystemTime>) -> bool {
        self.name.as_ref().is_none_or(|n| &job.name == n)
            && self.queue.as_ref().is_none_or(|q| &job.queue == q)
            && self
                .error
                .as_ref()
                .is_none_or(|e| job.error.to_lowercase().contains(&e.to_lowercase()))
            && after.is_none_or(|a| job.failed_at >= a)
    }

    /// The filter as a query string (`name=..&queue=..`).
    fn query(&self) -> String {
        [
            ("name", &self.name),
            ("queue", &self.queue),
            ("error", &self.error),
            ("since", &self.since),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// What a filter selected from the newest [`SCAN`] failed jobs: their ids and failure
/// times, and whether the failed store holds more than was read.
struct Selection {
    jobs: Vec<FailedJob>,
    truncated: bool,
}

async fn select(dash: &Dashboard, filter: &Filter, before: Option<i64>) -> Result<Selection> {
    let store = dash.queue.storage().failed_store()?;
    let after = filter.after(SystemTime::now())?;
    let mut page = PageRequest::first(500);
    let (mut read, mut jobs) = (0usize, Vec::new());
    loop {
        let listed = store.list(page).await?;
        read += listed.items.len();
        jobs.extend(listed.items.into_iter().filter(|job| {
            filter.matches(job, after) && before.is_none_or(|b| unix_millis(job.failed_at) <= b)
        }));
        match listed.next {
            Some(next) if read < SCAN => page = PageRequest::after(next, 500),
            Some(_) => {
                return Ok(Selection {
                    jobs,
                    truncated: true,
                })
            }
            None => {
                return Ok(Selection {
                    jobs,
                    truncated: false,
                })
            }
        }
    }
}

/// `GET failed/select?name=&queue=&error=&since=`: the dry run: how many failed jobs the
/// filter selects (the newest 50 listed), with Retry all and Delete all buttons.
pub(crate) async fn dry_run(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Query(filter): Query<Filter>,
) -> Result<Response> {
    let filter = filter.cleaned();
    let now = unix_millis(SystemTime::now());
    let selection = select(&dash, &filter, None).await?;
    let n = selection.jobs.len();
    let form = |action: &str, label: &str| -> Markup {
        html! {
            form.inline method="post" action={ "select/" (action) } {
                (csrf_input(&viewer))
                @for (k, v) in [("name", &filter.name), ("queue", &filter.queue), ("error", &filter.error), ("since", &filter.since)] {
                    @if let Some(v) = v { input type="hidden" name=(k) value=(v); }
                }
                input type="hidden" name="before" value=(now);
                button type="submit" { (label) " " (n) }
            }
        }
    };
    let body = html! {
        h1 { "Failed jobs by filter" }
        form.filter method="get" action="select" {
            label { "Name " input type="text" name="name" value=[filter.name.as_deref()]; }
            " "
            label { "Queue " input type="text" name="queue" value=[filter.queue.as_deref()]; }
            " "
            label { "Error contains " input type="text" name="error" value=[filter.error.as_deref()]; }
            " "
            label { "Failed within " input type="text" name="since" placeholder="1h" value=[filter.since.as_deref()]; }
            " "
            button type="submit" { "Count" }
        }
        p.total #selected {
            strong { (n) } " failed job" @if n != 1 { "s" } " match"
            @if filter.is_empty() { " (no filter: every one)" }
            @if selection.truncated { " among the newest " (SCAN) " (the failed store holds more; they are not touched)" }
            "."
        }
        @if n > 0 {
            @if viewer.can_act() {
                p.actions {
                    (form("retry", "Retry")) " " (form("forget", "Delete"))
                }
                p.hint { "The action runs in the background and touches only these: jobs that fail from now on are left alone." }
            }
            table.failed {
                thead { tr { th { "Id" } th { "Name" } th { "Queue" } th { "Failed" } th { "Error" } } }
                tbody {
                    @for job in selection.jobs.iter().take(50) {
                        tr {
                            td { a href={ (enc(&job.id)) } { (job.id) } }
                            td { (job.name) }
                            td { (job.queue) }
                            td { (time(job.failed_at)) }
                            td.error { (one_line(&job.error, 120)) }
                        }
                    }
                }
            }
            @if n > 50 { p.hint { "The newest 50 shown." } }
        }
    };
    Ok(layout(
        &place,
        &viewer,
        false,
        "Failed jobs by filter",
        driver(&dash),
        body,
    )
    .into_response())
}

/// The form of a bulk action on failed jobs: the filter and the dry run's time.
#[derive(Debug, Deserialize)]
pub(crate) struct ActForm {
    #[serde(flatten)]
    filter: Filter,
    before: i64,
}

/// `POST failed/select/{retry|forget}`: starts the task and answers with its page.
pub(crate) async fn act(
    State(dash): State<Dashboard>,
    Path(action): Path<String>,
    form: Result<Form<ActForm>, FormRejection>,
) -> Result<Response> {
    let retry = match action.as_str() {
        "retry" => true,
        "forget" => false,
        _ => return Err(Error::NotFound("No such page in the dashboard.".into())),
    };
    let Ok(Form(form)) = form else {
        return Err(Error::Refused(
            "the form lacks `before`: count again and press the button on that page".into(),
        ));
    };
    let filter = form.filter.cleaned();
    let selection = select(&dash, &filter, Some(form.before)).await?;
    let what = format!(
        "{} the failed jobs selected by {}",
        if retry { "retry" } else { "delete" },
        if filter.is_empty() {
            "no filter".to_owned()
        } else {
            filter.query()
        }
    );
    let ids: Vec<String> = selection.jobs.into_iter().map(|j| j.id).collect();
    let task = start_on_failed(&dash, what, ids, retry);
    // From `failed/select/{action}`: `../../tasks/{id}` is the task's page.
    Ok(see_other(format!("../../tasks/{task}")))
}

/// Starts a task that retries (or deletes) the failed jobs `ids` one by one in the
/// background; returns its id.
pub(crate) fn start_on_failed(
    dash: &Dashboard,
    what: String,
    ids: Vec<String>,
    retry: bool,
) -> u64 {
    let task = dash.tasks.start(what, ids.len() as u64);
    let (queue, tasks) = (dash.queue.clone(), dash.tasks.clone());
    tokio::spawn(async move {
        let store = match queue.storage().failed_store() {
            Ok(store) => store,
            Err(e) => return tasks.end(task, Some(e.to_string())),
        };
        for id in ids {
            let step = if retry {
                queue.retry_failed(&id).await.map(|p| match p {
                    Some(Pushed::Duplicate(_)) => Step::Held,
                    Some(_) => Step::Done,
                    None => Step::Gone,
                })
            } else {
                store
                    .forget(&id)
                    .await
                    .map(|gone| if gone { Step::Done } else { Step::Gone })
            };
            match step {
                Ok(step) => tasks.step(task, step),
                Err(e) => return tasks.end(task, Some(e.to_string())),
            }
        }
        tasks.end(task, None);
    });
    task
}

/// `GET queues/{queue}/clear`: the dry run of clearing a queue: how many jobs it would
/// delete (waiting and delayed; running ones are left to finish).
pub(crate) async fn clear_dry_run(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Result<Response> {
    let size = dash.queue.storage().inspect()?.size(&name).await?;
    let n = size.waiting + size.delayed;
    let body = html! {
        h1 { "Clear " (name) }
        p.total #selected {
            strong { (n) } " job" @if n != 1 { "s" } " would be deleted: " (size.waiting) " waiting and "
            (size.delayed) " delayed. " (size.reserved) " running are left to finish. Their unique keys are released."
        }
        @if n > 0 && viewer.can_act() {
            form.inline method="post" action="clear" {
                (csrf_input(&viewer))
                button type="submit" { "Clear " (n) }
            }
        }
    };
    Ok(layout(&place, &viewer, false, "Clear a queue", driver(&dash), body).into_response())
}

/// `POST queues/{queue}/clear`: starts clearing the queue in the background.
pub(crate) async fn clear(
    State(dash): State<Dashboard>,
    Path(name): Path<String>,
) -> Result<Response> {
    let inspect_size = dash.queue.storage().inspect()?.size(&name).await?;
    let task = dash.tasks.start(
        format!("clear the queue {name}"),
        inspect_size.waiting + inspect_size.delayed,
    );
    let (queue, tasks) = (dash.queue.clone(), dash.tasks.clone());
    tokio::spawn(async move {
        match queue.clear(&name).await {
            Ok(n) => {
                tasks.add(task, n);
                tasks.end(task, None);
            }
            Err(e) => tasks.end(task, Some(e.to_string())),
        }
    });
    // From `queues/{queue}/clear`: `../../tasks/{id}` is the task's page.
    Ok(see_other(format!("../../tasks/{task}")))
}

/// What one step of a task did to one job.
#[derive(Debug, Clone, Copy)]
enum Step {
    Done,
    /// A retry whose unique key another job holds now: left in the failed store.
    Held,
    /// It was not there any more (another action took it).
    Gone,
}

/// One bulk action and how far it got.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Task {
    id: u64,
    what: String,
    total: u64,
    done: u64,
    held: u64,
    gone: u64,
    started_at: i64,
    finished_at: Option<i64>,
    error: Option<String>,
}

/// The tasks of one dashboard process.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    inner: Mutex<(u64, VecDeque<Task>)>,
}

impl Tasks {
    fn with<T>(&self, f: impl FnOnce(&mut (u64, VecDeque<Task>)) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn start(&self, what: String, total: u64) -> u64 {
        self.with(|(next, tasks)| {
            *next += 1;
            if tasks.len() >= TASKS_KEPT {
                // The oldest finished one goes; running ones stay.
                if let Some(at) = tasks.iter().position(|t| t.finished_at.is_some()) {
                    tasks.remove(at);
                }
            }
            tasks.push_back(Task {
                id: *next,
                what,
                total,
                done: 0,
                held: 0,
                gone: 0,
                started_at: unix_millis(SystemTime::now()),
                finished_at: None,
                error: None,
            });
            *next
        })
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Task)) {
        self.with(|(_, tasks)| {
            if let Some(task) = tasks.iter_mut().find(|t| t.id == id) {
                f(task);
            }
        });
    }

    fn step(&self, id: u64, step: Step) {
        self.update(id, |t| match step {
            Step::Done => t.done += 1,
            Step::Held => t.held += 1,
            Step::Gone => t.gone += 1,
        });
    }

    fn add(&self, id: u64, n: u64) {
        self.update(id, |t| t.done += n);
    }

    fn end(&self, id: u64, error: Option<String>) {
        if let Some(e) = &error {
            tracing::warn!(target: "runall_dashboard::audit", task = id, error = %e, "a bulk action stopped");
        }
        self.update(id, |t| {
            t.finished_at = Some(unix_millis(SystemTime::now()));
            t.error = error;
        });
    }

    pub(crate) fn get(&self, id: u64) -> Option<Task> {
        self.with(|(_, tasks)| tasks.iter().find(|t| t.id == id).cloned())
    }
}

fn task_id(id: &str) -> Result<u64> {
    id.parse()
        .map_err(|_| Error::NotFound(format!("No task {id} in this dashboard process.")))
}

/// `GET tasks/{id}`: a bulk action's progress, refreshed every 2 s while it runs.
pub(crate) async fn task_page(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response> {
    let task = dash.tasks.get(task_id(&id)?).ok_or_else(|| {
        Error::NotFound(format!(
            "No task {id} in this dashboard process (tasks are kept in the memory of the process that ran them)."
        ))
    })?;
    let ended = task.done + task.held + task.gone;
    let pct = if task.total == 0 {
        100.0
    } else {
        (ended.min(task.total)) as f64 * 100.0 / task.total as f64
    };
    let state = match (&task.finished_at, &task.error) {
        (None, _) => "running",
        (Some(_), None) => "done",
        (Some(_), Some(_)) => "stopped",
    };
    let body = html! {
        @if task.finished_at.is_none() { meta http-equiv="refresh" content="2"; }
        h1 { "Task " (task.id) }
        p { (task.what) }
        p.task-state { "State: " strong #task-state { (state) } }
        p { progress max="100" value=(format!("{pct:.0}")) {} " " (ended) " of " (task.total) }
        ul {
            li #task-done { (task.done) " done" }
            @if task.held > 0 { li { (task.held) " left in the failed store: another job holds their unique key" } }
            @if task.gone > 0 { li { (task.gone) " gone already (another action took them)" } }
        }
        p { "Started " (time(queue_core::storage::from_unix_millis(task.started_at)))
            @if let Some(f) = task.finished_at { ", ended " (time(queue_core::storage::from_unix_millis(f))) } "." }
        @if let Some(e) = &task.error { p.error { "Stopped: " (e) } }
    };
    Ok(layout(&place, &viewer, false, "Task", driver(&dash), body).into_response())
}

/// `GET api/tasks/{id}`: the same as JSON.
pub(crate) async fn task_json(
    State(dash): State<Dashboard>,
    Path(id): Path<String>,
) -> std::result::Result<crate::api::Json, crate::api::ApiError> {
    let task = dash
        .tasks
        .get(task_id(&id)?)
        .ok_or_else(|| Error::NotFound(format!("no task {id} in this dashboard process")))?;
    Ok(crate::api::Json(serde_json::json!(task)))
}
