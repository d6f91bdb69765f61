//! The overview's numbers and their live refresh: one collector task per router reads the
//! store at most once a second, only while at least one browser listens on `events`, and
//! pushes the rendered table to every listener over server-sent events.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::http::header::{HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures::stream::{self, Stream};
use maud::{html, Markup};
use queue_core::storage::Inspect;
use queue_core::{Error as QueueError, Queue, QueueSize, StorageExt, WorkerInfo};
use tokio::sync::broadcast;

use crate::auth::{Viewer, CSRF_FIELD};
use crate::view::{enc, time, unsupported};
use crate::Dashboard;

/// Stands for the CSRF token in the shared rendering of the overview's table: each listener
/// gets the table with its own session's token in place of it.
pub(crate) const CSRF_MARK: &str = "__runall_csrf__";

/// The most jobs counted per queue and state: beyond it a page says "10,000+", so its cost
/// stays bounded whatever a queue holds (`/metrics` counts exactly).
pub(crate) const COUNT_CAP: u64 = 10_000;

/// A count as a page shows it: "10,000+" at the cap.
pub(crate) fn count(n: u64) -> String {
    if n >= COUNT_CAP {
        "10,000+".to_owned()
    } else {
        n.to_string()
    }
}

/// How often the collector reads the store while someone listens.
pub(crate) const EVERY: Duration = Duration::from_secs(1);

/// What the overview shows, read in one go.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) as_of: SystemTime,
    /// Each queue with its size; `Err` when the store cannot list or count.
    pub(crate) queues: Result<Vec<(String, QueueSize)>, QueueError>,
    /// The paused queues; `Err` (not supported) where the store cannot pause.
    pub(crate) paused: Result<BTreeSet<String>, QueueError>,
    pub(crate) failed: Result<u64, QueueError>,
    /// The live workers; `Err` (not supported) where the store keeps no registry.
    pub(crate) workers: Result<Vec<WorkerInfo>, QueueError>,
}

/// Reads the overview's numbers, each count capped at [`COUNT_CAP`] unless `exact` (what
/// `/metrics` asks). An operation the store lacks is kept as its `NotSupported` error, for
/// the page to say so; any other error ends the read.
pub(crate) async fn collect(queue: &Queue, exact: bool) -> Result<Snapshot, QueueError> {
    let storage = queue.storage();
    let paused = match queue.paused().await {
        Ok(names) => Ok(names.into_iter().collect::<BTreeSet<_>>()),
        Err(e @ QueueError::NotSupported { .. }) => Err(e),
        Err(e) => return Err(e),
    };
    let workers = live_workers(queue).await?;
    let queues = match storage.inspect() {
        Ok(inspect) => match inspect.queues().await {
            Ok(names) => {
                let mut names: BTreeSet<String> = names.into_iter().collect();
                if let Ok(paused) = &paused {
                    // A paused queue that is empty now is still worth a row (and a button).
                    names.extend(paused.iter().cloned());
                }
                let mut rows = Vec::with_capacity(names.len());
                for name in names {
                    let size = if exact {
                        inspect.size(&name).await?
                    } else {
                        bounded_size(inspect, &name, &workers).await?
                    };
                    rows.push((name, size));
                }
                Ok(rows)
            }
            Err(e @ QueueError::NotSupported { .. }) => Err(e),
            Err(e) => return Err(e),
        },
        Err(e) => Err(e),
    };
    let failed = match storage.failed_store() {
        Ok(store) => match store.count().await {
            Ok(n) => Ok(n),
            Err(e @ QueueError::NotSupported { .. }) => Err(e),
            Err(e) => return Err(e),
        },
        Err(e) => Err(e),
    };
    Ok(Snapshot {
        as_of: SystemTime::now(),
        queues,
        paused,
        failed,
        workers,
    })
}

/// The live workers, or the store's `NotSupported`.
pub(crate) async fn live_workers(
    queue: &Queue,
) -> Result<Result<Vec<WorkerInfo>, QueueError>, QueueError> {
    match queue.workers().await {
        Ok(w) => Ok(Ok(w)),
        Err(e @ QueueError::NotSupported { .. }) => Ok(Err(e)),
        Err(e) => Err(e),
    }
}

/// A queue's counts as pages show them, at a cost that does not grow with the queue: each
/// counted up to [`COUNT_CAP`]; where the store cannot count the reserved ones so (SQL), the
/// jobs the workers' registry says run (as of their last beat), or an exact count where it
/// keeps no registry.
pub(crate) async fn bounded_size(
    inspect: &dyn Inspect,
    name: &str,
    workers: &Result<Vec<WorkerInfo>, QueueError>,
) -> Result<QueueSize, QueueError> {
    let backlog = inspect.backlog_at_most(name, COUNT_CAP).await?;
    let reserved = match (backlog.reserved, workers) {
        (Some(n), _) => n,
        (None, Ok(workers)) => workers
            .iter()
            .flat_map(|w| w.running.iter())
            .filter(|j| j.queue == name)
            .count() as u64,
        (None, Err(_)) => inspect.size(name).await?.reserved,
    };
    Ok(QueueSize {
        waiting: backlog.waiting,
        delayed: backlog.delayed,
        reserved,
    })
}

/// The overview's live part: the queues table and the failed count, with pause and resume
/// buttons if `actions` (their forms' CSRF token is [`CSRF_MARK`]). Links are relative to
/// the mount point, which is where the overview is.
pub(crate) fn fragment(snapshot: &Result<Snapshot, QueueError>, actions: bool) -> Markup {
    let s = match snapshot {
        Ok(s) => s,
        Err(e) => {
            return html! { p.error { "The store could not be read: " (e.to_string()) } };
        }
    };
    let can_pause = actions && s.paused.is_ok();
    html! {
        p.asof { "As of " (time(s.as_of)) }
        @match &s.queues {
            Ok(rows) if rows.is_empty() => { p.empty { "No queue holds a job now." } }
            Ok(rows) => {
                table.queues {
                    thead { tr {
                        th { "Queue" } th.n { "Waiting" } th.n { "Delayed" } th.n { "Running" }
                        th { "State" } @if can_pause { th { "Action" } }
                    } }
                    tbody {
                        @for (name, size) in rows {
                            @let paused = s.paused.as_ref().is_ok_and(|p| p.contains(name));
                            tr data-queue=(name) {
                                td { a href={ "queues/" (enc(name)) } { (name) } }
                                td.n.waiting { (count(size.waiting)) }
                                td.n.delayed { (count(size.delayed)) }
                                td.n.running { (count(size.reserved)) }
                                td.state { @if paused { strong.paused { "paused" } } @else { "running" } }
                                @if can_pause { td { (pause_form(name, paused, "", "overview", CSRF_MARK)) } }
                            }
                        }
                    }
                }
            }
            Err(e) => { (unsupported(e)) }
        }
        @if let Err(e) = &s.paused { (unsupported(e)) }
        @match &s.failed {
            Ok(n) => { p.failed { a href="failed" { "Failed jobs: " span.failed-count { (n) } } } }
            Err(e) => { (unsupported(e)) }
        }
        @if let Ok(workers) = &s.workers {
            @let busy: usize = workers.iter().map(|w| w.busy).sum();
            @let slots: usize = workers.iter().map(|w| w.slots).sum();
            p.workers {
                a href="workers" { "Workers: " span.worker-count { (workers.len()) } }
                ", " span.busy-slots { (busy) } " of " (slots) " slots busy"
            }
        }
    }
}

/// The pause or resume button of a queue. `path` leads from the page to `queues/`;
/// `back` says where the action returns (`overview` or `queue`).
pub(crate) fn pause_form(name: &str, paused: bool, path: &str, back: &str, csrf: &str) -> Markup {
    let (action, label) = if paused {
        ("resume", "Resume")
    } else {
        ("pause", "Pause")
    };
    html! {
        form.inline method="post" action={ (path) "queues/" (enc(name)) "/" (action) } {
            input type="hidden" name="back" value=(back);
            input type="hidden" name=(CSRF_FIELD) value=(csrf);
            button type="submit" class=(action) { (label) }
        }
    }
}

/// The collector's shared state, one per router.
#[derive(Debug)]
pub(crate) struct Live {
    tx: broadcast::Sender<Arc<Update>>,
    state: Mutex<CollectorState>,
}

#[derive(Debug, Default)]
struct CollectorState {
    running: bool,
    /// Reads made so far (each update's SSE id).
    reads: u64,
    latest: Option<(Instant, Arc<Update>)>,
}

/// One rendered refresh.
#[derive(Debug)]
pub(crate) struct Update {
    /// The number of the read that made it.
    pub(crate) id: u64,
    /// With the buttons, their token [`CSRF_MARK`].
    pub(crate) html: String,
    /// Without the buttons, for read-only access.
    pub(crate) read_only: String,
    /// The snapshot's numbers, for a page load that comes within a second of a read.
    snapshot_ok: bool,
    /// The jobs waiting in queues that run (see [`waiting`]).
    waiting: Option<u64>,
}

/// The jobs waiting now in the queues that are not paused (and not the store's own `_`
/// queues), each counted up to the cap; `None` when the store cannot count them.
pub(crate) fn waiting(snapshot: &Result<Snapshot, QueueError>) -> Option<u64> {
    let s = snapshot.as_ref().ok()?;
    let queues = s.queues.as_ref().ok()?;
    let paused = s.paused.as_ref().ok();
    Some(
        queues
            .iter()
            .filter(|(name, _)| !name.starts_with('_'))
            .filter(|(name, _)| paused.is_none_or(|p| !p.contains(name)))
            .map(|(_, size)| size.waiting)
            .sum(),
    )
}

impl Live {
    pub(crate) fn new() -> Self {
        let (tx, _) = broadcast::channel(4);
        Live {
            tx,
            state: Mutex::new(CollectorState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CollectorState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last rendered table for `viewer` if it is less than a second old (a page load
    /// then reads nothing).
    pub(crate) fn fresh(&self, viewer: &Viewer) -> Option<(String, Option<u64>)> {
        let state = self.lock();
        let (at, update) = state.latest.as_ref()?;
        (at.elapsed() < EVERY && update.snapshot_ok)
            .then(|| (update.for_viewer(viewer), update.waiting))
    }

    /// A new listener: its receiver and the last update (if any), the collector started if
    /// it was not running.
    fn subscribe(
        self: &Arc<Self>,
        queue: &Queue,
    ) -> (broadcast::Receiver<Arc<Update>>, Option<Arc<Update>>) {
        let mut state = self.lock();
        let rx = self.tx.subscribe();
        if !state.running {
            state.running = true;
            tokio::spawn(collector(self.clone(), queue.clone()));
        }
        let latest = state.latest.as_ref().map(|(_, u)| u.clone());
        (rx, latest)
    }
}

/// Reads and broadcasts once a second; stops as soon as a tick finds nobody listening.
async fn collector(live: Arc<Live>, queue: Queue) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let id = {
            let mut state = live.lock();
            if live.tx.receiver_count() == 0 {
                // Decided under the lock a new listener takes: it either sees the collector
                // stopped and starts another, or subscribed before this check.
                state.running = false;
                return;
            }
            state.reads += 1;
            state.reads
        };
        let snapshot = collect(&queue, false).await;
        let update = Arc::new(Update {
            id,
            html: fragment(&snapshot, true).into_string(),
            read_only: fragment(&snapshot, false).into_string(),
            snapshot_ok: snapshot.is_ok(),
            waiting: waiting(&snapshot),
        });
        live.lock().latest = Some((Instant::now(), update.clone()));
        let _ = live.tx.send(update);
    }
}

/// `GET events`: the overview's table, again after every read, as `overview` events.
pub(crate) async fn events(State(dash): State<Dashboard>, viewer: Viewer) -> impl IntoResponse {
    let (rx, latest) = dash.live.subscribe(&dash.queue);
    let first = stream::iter(latest.map(|u| Ok(event(&u, &viewer))));
    let updates = stream::unfold((rx, viewer), |(mut rx, viewer)| async move {
        loop {
            match rx.recv().await {
                Ok(update) => {
                    let event = event(&update, &viewer);
                    return Some((Ok::<_, Infallible>(event), (rx, viewer)));
                }
                // A slow listener skips to the newest update.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(futures::StreamExt::chain(first, updates));
    (
        // nginx and other proxies would hold the stream back otherwise.
        [(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        )],
        Sse::new(stream).keep_alive(KeepAlive::default()),
    )
}

fn event(update: &Update, viewer: &Viewer) -> Event {
    Event::default()
        .event("overview")
        .id(update.id.to_string())
        .retry(Duration::from_secs(3))
        .data(update.for_viewer(viewer))
}

impl Update {
    /// The table as `viewer` sees it: with buttons carrying its token, or without.
    fn for_viewer(&self, viewer: &Viewer) -> String {
        if viewer.can_act() {
            self.html.replace(CSRF_MARK, viewer.csrf())
        } else {
            self.read_only.clone()
        }
    }
}
