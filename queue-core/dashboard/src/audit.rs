//! The audit log: every action asked of the dashboard (a POST), with who asked it (a
//! browser session, by the first 8 hex digits of its cookie, or a bearer token), when, from
//! which dashboard process, and what came of it, refused actions included. Each is logged as
//! a `tracing` event at `info` level with the target `runall_dashboard::audit`, for the
//! application's log pipeline to keep, and kept for the `audit` page:
//!
//! - **In the store**, where it has group counters: the last [`KEPT`] actions of every
//!   dashboard process serving it, across restarts. A ring of values of the group
//!   [`GROUP`]: an action takes the next sequence number by a compare-and-set on the
//!   group's counter `n` and stores itself in the slot `n % KEPT` in the same step, so it
//!   never grows. Two round trips per action; the page reads the newest [`SHOWN`] at once.
//! - **In memory** otherwise (memcached, Redis Cluster), or when the store could not be
//!   written (logged): this process's last [`KEPT`], lost when it stops. The page says
//!   which.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use queue_core::storage::{counter, from_unix_millis, unix_millis, Effect, Groups, Guard};
use queue_core::{Error as QueueError, Storage, StorageExt};
use serde::{Deserialize, Serialize};

use crate::auth::Viewer;
use crate::pages::driver;
use crate::view::{layout, time, Place};
use crate::{Dashboard, Result};

/// How many entries are kept, in the store or in memory.
pub(crate) const KEPT: i64 = 1_000;

/// How many of the newest the page shows.
pub(crate) const SHOWN: i64 = 200;

/// The group of the store that holds the log.
pub(crate) const GROUP: &str = "dashboard-audit";

/// How many times an action is written again when another process took its number first.
const TRIES: usize = 8;

/// One action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Its number in the store's log (0 in memory).
    #[serde(default)]
    seq: i64,
    /// When, in Unix ms.
    at: i64,
    /// The path asked for, inside the dashboard (`/queues/mail/pause`).
    path: String,
    by: String,
    status: u16,
    /// The dashboard process that answered: host and pid.
    process: String,
}

impl Entry {
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The log of one router.
#[derive(Debug)]
pub(crate) struct Audit {
    storage: Arc<dyn Storage>,
    entries: Mutex<VecDeque<Entry>>,
    process: String,
}

/// The slot of entry `seq` in the store's ring.
fn slot(seq: i64) -> String {
    format!("{:04}", seq.rem_euclid(KEPT))
}

impl Audit {
    pub(crate) fn new(storage: Arc<dyn Storage>) -> Self {
        Audit {
            storage,
            entries: Mutex::default(),
            process: format!("{}:{}", queue_core::worker::host_name(), std::process::id()),
        }
    }

    pub(crate) async fn record(&self, path: String, by: String, status: StatusCode) {
        let outcome = outcome(status);
        tracing::info!(
            target: "runall_dashboard::audit",
            action = %path,
            by = %by,
            status = status.as_u16(),
            outcome,
            "dashboard action"
        );
        let entry = Entry {
            seq: 0,
            at: unix_millis(SystemTime::now()),
            path,
            by,
            status: status.as_u16(),
            process: self.process.clone(),
        };
        if let Ok(groups) = self.storage.groups() {
            match append(groups, entry.clone()).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(
                    target: "runall_dashboard::audit",
                    error = %e,
                    "could not add the action to the audit log in the store; kept in this process's"
                ),
            }
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() as i64 == KEPT {
            entries.pop_back();
        }
        entries.push_front(entry);
    }

    fn in_memory(&self) -> Vec<Entry> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.iter().cloned().collect()
    }
}

/// Adds `entry` to the store's ring under the next number.
async fn append(groups: &dyn Groups, mut entry: Entry) -> Result<(), QueueError> {
    for _ in 0..TRIES {
        let n = counter(&groups.counters(GROUP).await?, "n");
        entry.seq = n;
        let value = serde_json::to_vec(&entry).map_err(|e| QueueError::Payload(e.to_string()))?;
        let effects = vec![Effect::Value {
            group: GROUP.to_owned(),
            name: slot(n),
            value,
        }];
        if groups
            .apply_if(Guard::new(GROUP, "n", n, n + 1), effects)
            .await?
        {
            return Ok(());
        }
    }
    Err(QueueError::Config(format!(
        "the audit log's counter changed under {TRIES} writes in a row"
    )))
}

/// The newest `limit` entries of the store's log, newest first, and how many it ever had.
pub(crate) async fn newest(
    groups: &dyn Groups,
    limit: i64,
) -> Result<(Vec<Entry>, i64), QueueError> {
    let n = counter(&groups.counters(GROUP).await?, "n");
    let seqs: Vec<i64> = (n.saturating_sub(limit.min(KEPT)).max(0)..n)
        .rev()
        .collect();
    let reads = seqs.iter().map(|seq| {
        let name = slot(*seq);
        async move { groups.value(GROUP, &name).await }
    });
    let values = futures::future::try_join_all(reads).await?;
    let entries = seqs
        .iter()
        .zip(values)
        .filter_map(|(seq, value)| {
            let entry: Entry = serde_json::from_slice(&value?).ok()?;
            // A slot a later lap of the ring took over holds another number.
            (entry.seq == *seq).then_some(entry)
        })
        .collect();
    Ok((entries, n))
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

/// `GET audit`: the actions, newest first: the store's log where it has one, else this
/// process's.
pub(crate) async fn page(
    State(dash): State<Dashboard>,
    place: Place,
    viewer: Viewer,
) -> Result<Response> {
    let (entries, total) = entries(&dash).await?;
    let intro = match total {
        Some(total) => html! {
            p {
                "Every action asked of any dashboard serving this store, kept in the store (the last "
                (KEPT) "; " (total) " in all), refused ones included; the newest " (SHOWN)
                " are shown. Each is also logged at info level with the target runall_dashboard::audit."
            }
        },
        None => html! {
            p {
                "Every action asked of this dashboard process since it started (the last "
                (KEPT) "), refused ones included. This store has no group counters, so the log is kept in this process only. Each is also logged at info level with the "
                "target runall_dashboard::audit."
            }
        },
    };
    let body = html! {
        h1 { "Audit log" }
        (intro)
        @if entries.is_empty() {
            p.empty { "No action yet." }
        } @else {
            table.audit {
                thead { tr { th { "When" } th { "Action" } th { "By" } th { "Dashboard" } th { "Outcome" } } }
                tbody {
                    @for e in &entries {
                        tr {
                            td { (time(from_unix_millis(e.at))) }
                            td.action { code { "POST " (e.path) } }
                            td { (e.by) }
                            td { (e.process) }
                            td.outcome { (outcome(e.status())) " (" (e.status) ")" }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(&place, &viewer, false, "Audit log", driver(&dash), body).into_response())
}

/// The entries the `audit` page shows, newest first, and how many the store's log ever had
/// (`None`: the store has no group counters, and the entries are this process's).
pub(crate) async fn entries(dash: &Dashboard) -> Result<(Vec<Entry>, Option<i64>), QueueError> {
    match dash.queue.storage().groups() {
        Ok(groups) => {
            let (entries, total) = newest(groups, SHOWN).await?;
            Ok((entries, Some(total)))
        }
        Err(_) => Ok((dash.audit.in_memory(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue_core::storage::MemoryStorage;

    fn entry(path: &str) -> Entry {
        Entry {
            seq: 0,
            at: 1,
            path: path.to_owned(),
            by: "a test".to_owned(),
            status: 303,
            process: "here:1".to_owned(),
        }
    }

    #[tokio::test]
    async fn the_ring_keeps_the_newest_and_never_grows() {
        let storage = MemoryStorage::new();
        let groups = storage.groups().unwrap();
        assert_eq!(newest(groups, 10).await.unwrap(), (vec![], 0));
        for i in 0..KEPT + 5 {
            append(groups, entry(&format!("/a/{i}"))).await.unwrap();
        }
        let (five, total) = newest(groups, 5).await.unwrap();
        assert_eq!(total, KEPT + 5);
        assert_eq!(
            five.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["/a/1004", "/a/1003", "/a/1002", "/a/1001", "/a/1000"],
            "newest first"
        );
        let (all, _) = newest(groups, 5 * KEPT).await.unwrap();
        assert_eq!(all.len() as i64, KEPT, "the ring holds the last {KEPT}");
        assert_eq!(
            all.last().map(|e| e.seq),
            Some(5),
            "entries 0 to 4 were overwritten"
        );
    }

    #[tokio::test]
    async fn concurrent_writers_each_get_a_number() {
        let storage = Arc::new(MemoryStorage::new());
        let writers = (0..8).map(|w| {
            let storage = storage.clone();
            tokio::spawn(async move {
                for i in 0..5 {
                    let groups = storage.groups().unwrap();
                    append(groups, entry(&format!("/w{w}/{i}"))).await.unwrap();
                }
            })
        });
        for w in writers {
            w.await.unwrap();
        }
        let (all, total) = newest(storage.groups().unwrap(), 100).await.unwrap();
        assert_eq!((all.len(), total), (40, 40));
        let mut paths: Vec<_> = all.iter().map(|e| e.path.clone()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 40, "none lost, none twice");
    }
}
