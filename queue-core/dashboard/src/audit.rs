//! The audit log: every action asked of this dashboard process (a POST), with who asked it
//! (a browser session, by the first 8 hex digits of its cookie, or a bearer token), when,
//! and what came of it, refused actions included. The last 1,000 are kept in memory for the
//! `audit` page, and each is logged as a `tracing` event at `info` level with the target
//! `runall_dashboard::audit`, for the application's log pipeline to keep.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::auth::Viewer;
use crate::pages::driver;
use crate::view::{layout, time, Place};
use crate::{Dashboard, Result};

/// How many entries the page keeps.
const KEPT: usize = 1_000;

/// One action.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    at: SystemTime,
    /// The path asked for, inside the dashboard (`/queues/mail/pause`).
    path: String,
    by: String,
    status: StatusCode,
}

/// The log of one router.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    entries: Mutex<VecDeque<Entry>>,
}

impl Audit {
    pub(crate) fn record(&self, path: String, by: String, status: StatusCode) {
        let outcome = outcome(status);
        tracing::info!(
            target: "runall_dashboard::audit",
            action = %path,
            by = %by,
            status = status.as_u16(),
            outcome,
            "dashboard action"
        );
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() == KEPT {
            entries.pop_back();
        }
        entries.push_front(Entry {
            at: SystemTime::now(),
            path,
            by,
            status,
        });
    }

    fn newest_first(&self) -> Vec<Entry> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.iter().cloned().collect()
    }
}

/// An answer's status in words.
fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "done",
        401 => "refused: no token",
        403 => "refused: read-only, cross-site or no CSRF token",
        404 => "not found",
        409 => "refused",
        _ => "failed",
    }
}

/// `GET audit`: the actions asked of this process, newest first.
pub(crate) async fn page(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
) -> Result<Response> {
    let entries = dash.audit.newest_first();
    let body = html! {
        h1 { "Audit log" }
        p {
            "Every action asked of this dashboard process since it started (the last "
            (KEPT) "), refused ones included. Each is also logged at info level with the "
            "target runall_dashboard::audit."
        }
        @if entries.is_empty() {
            p.empty { "No action yet." }
        } @else {
            table.audit {
                thead { tr { th { "When" } th { "Action" } th { "By" } th { "Outcome" } } }
                tbody {
                    @for e in &entries {
                        tr {
                            td { (time(e.at)) }
                            td.action { code { "POST " (e.path) } }
                            td { (e.by) }
                            td.outcome { (outcome(e.status)) " (" (e.status.as_u16()) ")" }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(&place, &viewer, false, "Audit log", driver(&dash), body).into_response())
}
