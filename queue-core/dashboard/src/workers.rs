//! The workers page: every live worker process of the store, from its worker registry
//! ([`Queue::workers`](queue_core::Queue::workers)), with the jobs each is running.

use std::time::SystemTime;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use queue_core::{Error as QueueError, WorkerInfo};

use crate::auth::Viewer;
use crate::pages::driver;
use crate::view::{enc, layout, time, unsupported, Place};
use crate::{Dashboard, Result};

/// The queues a worker takes jobs from, as a page shows them.
pub(crate) fn queues_of(w: &WorkerInfo) -> String {
    if w.every_queue {
        "every queue".to_owned()
    } else {
        w.queues.join(", ")
    }
}

/// `GET workers`: each live worker (host, pid, queues, busy slots, started, last beat,
/// jobs done and failed by this process) and the jobs it runs now.
pub(crate) async fn page(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
) -> Result<Response> {
    let workers = match dash.queue.workers().await {
        Ok(w) => Ok(w),
        Err(e @ QueueError::NotSupported { .. }) => Err(e),
        Err(e) => return Err(e.into()),
    };
    let now = SystemTime::now();
    let body = html! {
        h1 { "Workers" }
        @match &workers {
            Ok(list) if list.is_empty() => {
                p.empty { "No worker is running (a worker announces itself when it starts, then every 10 s)." }
            }
            Ok(list) => {
                @let busy: usize = list.iter().map(|w| w.busy).sum();
                @let slots: usize = list.iter().map(|w| w.slots).sum();
                p.total { (list.len()) " worker" @if list.len() != 1 { "s" } ", " (busy) " of " (slots) " slots busy" }
                table.workers {
                    thead { tr {
                        th { "Worker" } th { "Host" } th.n { "Pid" } th { "Queues" }
                        th.n { "Busy" } th { "Started" } th { "Last beat" }
                        th.n { "Done" } th.n { "Failed" } th { "Version" }
                    } }
                    tbody {
                        @for w in list {
                            tr data-worker=(w.id) {
                                td { (w.id) }
                                td { (w.host) }
                                td.n { (w.pid) }
                                td { (queues_of(w)) }
                                td.n.busy { (w.busy) " / " (w.slots) }
                                td { (time(w.started_at)) }
                                td { (time(w.beat_at)) }
                                td.n { (w.processed) }
                                td.n { (w.failed) }
                                td { (w.version) }
                            }
                        }
                    }
                }
                @let running: Vec<_> = list.iter().flat_map(|w| w.running.iter().map(move |j| (w, j))).collect();
                h2 { "Running now" }
                @if running.is_empty() {
                    p.empty { "No job is running." }
                } @else {
                    table.running {
                        thead { tr { th { "Job" } th { "Name" } th { "Queue" } th { "Worker" } th { "Running for" } } }
                        tbody {
                            @for (w, j) in running {
                                tr {
                                    td { a href={ "jobs/" (enc(&j.id)) } { (j.id) } }
                                    td { (j.name) }
                                    td { a href={ "queues/" (enc(&j.queue)) } { (j.queue) } }
                                    td { (w.host) ":" (w.pid) }
                                    td { (humantime::format_duration(std::time::Duration::from_secs(now.duration_since(j.started_at).map(|d| d.as_secs()).unwrap_or(0)))) }
                                }
                            }
                        }
                    }
                }
                p { "As of each worker's last beat (every 10 s); a worker that stops without a word is gone within 30 s." }
            }
            Err(e) => { (unsupported(e)) }
        }
    };
    Ok(layout(&place, &viewer, false, "Workers", driver(&dash), body).into_response())
}
