//! The operator's view: sizes, queues, listing jobs by state, clearing, the oldest waiting
//! job, and when the next job is due (for idle waits).
//!
//! Everything here lists a directory, so it costs in proportion to the queue (a page of
//! [`jobs`](Disk::jobs) included: a directory has no index to seek in).

use std::fs;
use std::time::SystemTime;

use queue_core::storage::{from_unix_millis, JobState, JobSummary, Page, PageRequest};
use queue_core::{Error, JobId, QueueSize};

use super::journal::{ClaimOp, Intent, Move, Take, Then};
use super::{list, not_found, read_if_there, remove_if_there, Disk, Result};
use crate::error::FileError;
use crate::format::{decode_job, new_id, now_ms, queue_from_dir_name, ReadyName, ReservedName};
use crate::DRIVER;

impl Disk {
    pub(crate) fn size(&self, queue: &str) -> Result<QueueSize> {
        let Ok(paths) = self.paths(queue) else {
            return Ok(QueueSize::default());
        };
        let now = now_ms();
        let mut size = QueueSize::default();
        for name in list(&paths.ready)? {
            // A stray file counts as waiting: the next reserve moves it to the failed store.
            match name.to_str().and_then(ReadyName::parse) {
                Some(r) if r.at > now => size.delayed += 1,
                _ => size.waiting += 1,
            }
        }
        size.reserved = list(&paths.reserved)?.len() as u64;
        Ok(size)
    }

    pub(crate) fn queues(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.jobs) {
            Ok(entries) => entries,
            Err(e) if not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(FileError::io("list", &self.jobs)(e)),
        };
        let mut queues = Vec::new();
        for entry in entries {
            let entry = entry.map_err(FileError::io("list", &self.jobs))?;
            let Some(queue) = entry.file_name().to_str().and_then(queue_from_dir_name) else {
                continue;
            };
            let dir = entry.path();
            let busy = |sub: &str| -> Result<bool> { Ok(!list(&dir.join(sub))?.is_empty()) };
            if busy("ready")? || busy("reserved")? {
                queues.push(queue);
            }
        }
        queues.sort();
        Ok(queues)
    }

    /// Deletes the waiting and delayed jobs of a queue: one unlink each, and for the jobs
    /// holding a claim one step of the journal that releases their keys with them.
    pub(crate) fn clear(&self, queue: &str) -> Result<u64> {
        let Ok(paths) = self.paths(queue) else {
            return Ok(0);
        };
        let mut removed = 0;
        let mut moves = Vec::new();
        for name in list(&paths.ready)? {
            let path = paths.ready.join(&name);
            let ready = name.to_str().and_then(ReadyName::parse);
            let claim = ready.as_ref().and_then(|r| {
                let head = self.head(&paths.ready, &r.file_name(), &r.id)?;
                Some((head.unique?.key, r.id.clone()))
            });
            match claim {
                Some((key, job_id)) => moves.push(Move {
                    take: Take::File {
                        path: self.rel_path(&path),
                    },
                    then: Then::Delete,
                    claims: vec![ClaimOp::Release { key, job_id }],
                    counts: Vec::new(),
                    publish: Vec::new(),
                    waits: Vec::new(),
                    replaces: false,
                    records: Vec::new(),
                    rewrite: None,
                }),
                None => {
                    if remove_if_there(&path)? {
                        removed += 1;
                    }
                }
            }
        }
        if !moves.is_empty() {
            let lock = self.lock()?;
            let ran = self.run(
                &lock,
                &Intent {
                    id: new_id(),
                    moves,
                    publish: Vec::new(),
                    counts: Vec::new(),
                    sets: Vec::new(),
                    plan: None,
                    records: Vec::new(),
                },
            )?;
            removed += ran.taken.iter().filter(|t| **t).count() as u64;
        }
        self.listings().remove(queue);
        if removed > 0 {
            self.sync_dir(&paths.ready)?;
        }
        Ok(removed)
    }

    /// Since when the longest-waiting available job of a queue has been available: a due job
    /// in `ready/` or a reservation whose lease ran out.
    pub(crate) fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        let Ok(paths) = self.paths(queue) else {
            return Ok(None);
        };
        let now = now_ms();
        let ready = list(&paths.ready)?
            .iter()
            .filter_map(|n| n.to_str().and_then(ReadyName::parse))
            .map(|r| r.at)
            .filter(|at| *at <= now)
            .min();
        let expired = list(&paths.reserved)?
            .iter()
            .filter_map(|n| n.to_str().and_then(ReservedName::parse))
            .map(|r| r.deadline)
            .filter(|at| *at <= now)
            .min();
        Ok(ready.into_iter().chain(expired).min().map(from_unix_millis))
    }

    /// A page of a queue's jobs in one state, first due first. The cursor is the last job's
    /// `DUE-ID`, as in its file name.
    pub(crate) fn jobs(
        &self,
        queue: &str,
        state: JobState,
        page: &PageRequest,
    ) -> queue_core::Result<Page<JobSummary>> {
        let after = match &page.after {
            Some(cursor) => Some(parse_cursor(cursor)?),
            None => None,
        };
        let Ok(paths) = self.paths(queue) else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        let now = now_ms();
        let limit = page.limit.max(1);
        // (due, id, attempts, file name), so the page is in due order.
        let (dir, mut keys): (_, Vec<(i64, String, u32, String)>) = match state {
            JobState::Reserved => (
                &paths.reserved,
                list(&paths.reserved)?
                    .into_iter()
                    .filter_map(|n| n.into_string().ok())
                    .filter_map(|n| {
                        ReservedName::parse(&n).map(|r| (r.deadline, r.id, r.attempts, n))
                    })
                    .collect(),
            ),
            JobState::Waiting | JobState::Delayed => (
                &paths.ready,
                list(&paths.ready)?
                    .into_iter()
                    .filter_map(|n| n.into_string().ok())
                    .filter_map(|n| ReadyName::parse(&n).map(|r| (r.at, r.id, r.attempts, n)))
                    .filter(|(at, ..)| (*at <= now) == (state == JobState::Waiting))
                    .collect(),
            ),
        };
        // After the listing: a job it shows replaced (renamed) by then has its cached name
        // dropped.
        self.check_replaced()?;
        keys.sort_unstable();
        let keys: Vec<_> = keys
            .into_iter()
            .filter(|(at, id, ..)| {
                after
                    .as_ref()
                    .is_none_or(|(a_at, a_id)| (at, id) > (a_at, a_id))
            })
            .take(limit)
            .collect();
        let mut items = Vec::with_capacity(keys.len());
        for (at, id, attempts, file) in &keys {
            // Gone: reserved, settled or deleted since the listing. Damaged: not a job.
            let Some(Ok(job)) = read_if_there(&dir.join(file))?.map(|b| decode_job(&b)) else {
                continue;
            };
            items.push(JobSummary {
                id: JobId(id.clone()),
                queue: queue.to_owned(),
                name: job.name,
                attempts: *attempts,
                state,
                due_at: from_unix_millis(*at),
                unique_key: job.unique.map(|u| u.key),
                payload: job.payload,
            });
        }
        let next = match keys.last() {
            Some((at, id, ..)) if keys.len() == limit => Some(format!("{at:015}-{id}")),
            _ => None,
        };
        Ok(Page { items, next })
    }

    /// When the next job of these queues that the last reserve did not already look at is
    /// due, as far as this process's listings know. (Looking only at the first entry would
    /// make a worker that reserves by name spin on a due job of another name.)
    pub(crate) fn next_due(&self, queues: &[String]) -> Option<i64> {
        let listings = self.listings();
        queues
            .iter()
            .filter_map(|q| listings.get(q))
            .flat_map(|l| {
                // What was due at `checked_at` (`at <= checked_at`) was looked at by that
                // reservation, so only a later `at` ends the wait: a job stamped in the same
                // millisecond as the reservation must not end it at once (and again after).
                let from = ReadyName {
                    at: l.checked_at.saturating_add(1),
                    id: String::new(),
                    attempts: 0,
                };
                [l.ready.range(from..).next().map(|r| r.at), l.next_deadline]
            })
            .flatten()
            .min()
    }
}

fn parse_cursor(cursor: &str) -> queue_core::Result<(i64, String)> {
    cursor
        .split_once('-')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.to_owned())))
        .ok_or_else(|| Error::Contract {
            driver: DRIVER,
            problem: format!("`{cursor}` is not a cursor of this store"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileOptions;

    fn ready(at: i64, id: &str) -> ReadyName {
        ReadyName {
            at,
            id: id.to_owned(),
            attempts: 0,
        }
    }

    /// A job due in the very millisecond of the last reservation was looked at by it: the
    /// next idle wait ends at the next later job, not at once. (It ended at once when a
    /// push and the reservation after it fell in the same millisecond.)
    #[test]
    fn next_due_skips_what_the_last_reservation_saw() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let disk = Disk::open(&FileOptions::new(dir.path().join("store"))).expect("open");
        let queues = ["q".to_owned()];
        {
            let mut listings = disk.listings();
            let l = listings.entry("q".to_owned()).or_default();
            l.ready.insert(ready(1_000, "other"));
            l.checked_at = 1_000;
        }
        assert_eq!(disk.next_due(&queues), None);
        disk.listings()
            .get_mut("q")
            .expect("listing")
            .ready
            .insert(ready(1_400, "later"));
        assert_eq!(disk.next_due(&queues), Some(1_400));
        disk.listings().get_mut("q").expect("listing").checked_at = 999;
        assert_eq!(disk.next_due(&queues), Some(1_000), "not yet looked at");
    }
}
