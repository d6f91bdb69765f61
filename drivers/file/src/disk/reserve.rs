//! Reserving and extending: `ready/` (or an expired reservation) to `reserved/` with a fresh
//! token, one rename per job, no lock. Only a job whose claim ends when it starts takes the
//! store's lock afterwards, to release its key.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use queue_core::storage::{duration_millis, new_token};
use queue_core::{JobId, Lease, LeaseStatus, ReserveRequest, Reserved, Until};

use super::journal::{Intent, Move, Record, Take, Then};
use super::{
    guard, list, not_found, parse_names, read_file, Disk, Held, Listing, QueuePaths, Result,
};
use crate::error::FileError;
use crate::format::{clamp_ms, decode_job, now_ms, ReadyName, ReservedName};

/// How long a process trusts its listing of a queue's `ready/` directory while it still holds
/// due jobs. Jobs other processes add later are due later, so they sort after the listed ones
/// anyway; the bound only limits how long a job pushed with a time in the past could wait.
const LISTING_AGE: Duration = Duration::from_secs(1);
/// How many entries of a queue's `ready/` directory a process keeps in memory: the first ones
/// in order, which are the next to reserve. Past them it lists the directory again.
const LISTING_MAX: usize = 10_000;

impl Disk {
    pub(crate) fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        self.maybe_sweep();
        let now = now_ms();
        let deadline = clamp_ms(now.saturating_add(duration_millis(request.lease)));
        let limit = request.limit.max(1);
        let mut out = Vec::new();
        let mut started = Vec::new();
        for queue in &request.queues {
            if out.len() >= limit {
                break;
            }
            let Ok(paths) = self.paths(queue) else {
                continue; // no job can have been pushed to it
            };
            let mut expired: VecDeque<ReservedName> = self.expired(queue, &paths, now)?.into();
            let mut named: Option<VecDeque<ReadyName>> = None;
            if let Some(name) = &request.name {
                let listed = self.relist(queue, &paths)?;
                // After both listings: a job they show replaced (renamed) by then has its
                // cached name dropped.
                self.check_replaced()?;
                named = Some(self.ready_named(&paths, listed, now, name).into());
                expired.retain(|r| {
                    self.head(&paths.reserved, &r.file_name(), &r.id)
                        .is_some_and(|h| h.name == *name)
                });
            }
            let mut relisted = false;
            while out.len() < limit {
                let ready = match &named {
                    Some(list) => list.front().cloned(),
                    None => self.peek_ready(queue, &paths, now, &mut relisted)?,
                };
                let take_ready = match (&ready, expired.front()) {
                    (Some(r), Some(e)) => (r.at, &r.id) <= (e.deadline, &e.id),
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                let token = new_token();
                let mut was_ready = None;
                let (from, to) = match (take_ready, ready) {
                    (true, Some(r)) => {
                        was_ready = Some(r.clone());
                        if let Some(list) = &mut named {
                            list.pop_front();
                        }
                        if let Some(listing) = self.listings().get_mut(queue) {
                            listing.ready.remove(&r);
                        }
                        let to = ReservedName {
                            deadline,
                            id: r.id.clone(),
                            attempts: r.attempts.saturating_add(1),
                            token,
                        };
                        (paths.ready.join(r.file_name()), to)
                    }
                    _ => {
                        let Some(e) = expired.pop_front() else { break };
                        let to = ReservedName {
                            deadline,
                            id: e.id.clone(),
                            attempts: e.attempts.saturating_add(1),
                            token,
                        };
                        (paths.reserved.join(e.file_name()), to)
                    }
                };
                match self.rename_into(queue, &paths, &from, &paths.reserved.join(to.file_name())) {
                    Ok(()) => {}
                    Err(e) if not_found(&e) => continue, // another worker took it
                    Err(e) => return Err(FileError::io("rename", from)(e)),
                }
                let reserved_at = paths.reserved.join(to.file_name());
                if let Some((job, until)) = self.load_reserved(queue, &paths, to)? {
                    if request.name.as_ref().is_some_and(|name| *name != job.name) {
                        // Replaced by a push under another name since its name was looked
                        // at: put back as it was, unreserved.
                        guard(&self.held).remove(&job.lease.token);
                        guard(&self.heads).remove(&job.lease.job_id.0);
                        fs::rename(&reserved_at, &from)
                            .map_err(FileError::io("rename", &reserved_at))?;
                        if let Some(r) = was_ready {
                            self.remember_ready(queue, r);
                        }
                        continue;
                    }
                    if let Some(key) = until.filter(|u| u.until == Until::Started) {
                        started.push((key.key, job.lease.job_id.0.clone()));
                    }
                    out.push(job);
                }
            }
            self.listings().entry(queue.clone()).or_default().checked_at = now;
        }
        if !started.is_empty() {
            // A claim held until the job starts ends with the reservation. After a crash
            // just before this, the key stays held until the job is reserved again or leaves.
            let lock = self.lock()?;
            for (key, job_id) in &started {
                self.release_claim(&lock, key, job_id)?;
            }
            self.sync_dir(&self.claims)?;
        }
        Ok(out)
    }

    /// Reservations in `reserved/` whose lease ran out, oldest deadline first. Moves files
    /// with foreign names to the failed store.
    fn expired(&self, queue: &str, paths: &QueuePaths, now: i64) -> Result<Vec<ReservedName>> {
        let (names, bad) = parse_names(list(&paths.reserved)?, ReservedName::parse);
        for name in bad {
            self.bury_stray(queue, &paths.reserved, &name)?;
        }
        self.listings()
            .entry(queue.to_owned())
            .or_default()
            .next_deadline = names.iter().map(|r| r.deadline).find(|d| *d > now);
        Ok(names
            .into_iter()
            .take_while(|r| r.deadline <= now)
            .collect())
    }

    /// The first due job of a queue from this process's listing, listing `ready/` again when
    /// the listing is old or holds nothing due (at most once per reserve call).
    fn peek_ready(
        &self,
        queue: &str,
        paths: &QueuePaths,
        now: i64,
        relisted: &mut bool,
    ) -> Result<Option<ReadyName>> {
        let due = |l: &Listing| l.ready.first().is_some_and(|r| r.at <= now);
        {
            let listings = self.listings();
            if let Some(listing) = listings.get(queue) {
                let fresh = listing.listed_at.is_some_and(|t| t.elapsed() < LISTING_AGE);
                if *relisted || (fresh && due(listing)) {
                    return Ok(listing.ready.first().filter(|r| r.at <= now).cloned());
                }
            }
        }
        *relisted = true;
        self.relist(queue, paths)?;
        Ok(self
            .listings()
            .get(queue)
            .and_then(|l| l.ready.first().filter(|r| r.at <= now).cloned()))
    }

    /// Lists a queue's `ready/` directory into this process's listing (its first
    /// [`LISTING_MAX`] entries), moving files with foreign names to the failed store. Returns
    /// the whole listing, in order.
    fn relist(&self, queue: &str, paths: &QueuePaths) -> Result<Vec<ReadyName>> {
        let listed_at = Instant::now();
        let (names, bad) = parse_names(list(&paths.ready)?, ReadyName::parse);
        for name in bad {
            self.bury_stray(queue, &paths.ready, &name)?;
        }
        let mut listings = self.listings();
        let listing = listings.entry(queue.to_owned()).or_default();
        listing.ready = names.iter().take(LISTING_MAX).cloned().collect();
        listing.listed_at = Some(listed_at);
        Ok(names)
    }

    /// The due jobs of a queue's listing with this name, in order (reading each job's header
    /// once).
    fn ready_named(
        &self,
        paths: &QueuePaths,
        listed: Vec<ReadyName>,
        now: i64,
        name: &str,
    ) -> Vec<ReadyName> {
        listed
            .into_iter()
            .take_while(|r| r.at <= now)
            .filter(|r| {
                self.head(&paths.ready, &r.file_name(), &r.id)
                    .is_some_and(|h| h.name == name)
            })
            .collect()
    }

    /// Reads a job this process just reserved, with its claim. A damaged file goes to the
    /// failed store with the reason instead of stopping the queue.
    fn load_reserved(
        &self,
        queue: &str,
        paths: &QueuePaths,
        name: ReservedName,
    ) -> Result<Option<(Reserved, Option<queue_core::Unique>)>> {
        let file_name = name.file_name();
        let path = paths.reserved.join(&file_name);
        let problem = match read_file(&path) {
            Ok(bytes) => match decode_job(&bytes) {
                Ok(job) => {
                    guard(&self.held).insert(
                        name.token.clone(),
                        Held {
                            file: file_name,
                            unique: job.unique.clone(),
                        },
                    );
                    let reserved = Reserved {
                        lease: Lease {
                            job_id: JobId(name.id),
                            queue: queue.to_owned(),
                            token: name.token,
                        },
                        name: job.name,
                        payload: job.payload,
                        attempts: name.attempts,
                    };
                    return Ok(Some((reserved, job.unique)));
                }
                // The reason is added when the record is written.
                Err(_) => format!("the job file {} is damaged", path.display()),
            },
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => format!("the job file {} could not be read: {e}", path.display()),
        };
        tracing::error!(queue, job = %name.id, "{problem}: moved to the failed store");
        self.bury(queue, &path, name.id, name.attempts, problem)?;
        Ok(None)
    }

    /// Moves a file whose name this driver never writes out of a queue and into the failed
    /// store, so it can neither wedge the queue nor be lost.
    fn bury_stray(&self, queue: &str, dir: &Path, name: &OsStr) -> Result<()> {
        let path = dir.join(name);
        tracing::error!(queue, file = %path.display(), "stray file moved to the failed store");
        let error = format!(
            "{} is not a job file name this driver writes, so it was moved to the failed store",
            path.display()
        );
        self.bury(queue, &path, name.to_string_lossy().into_owned(), 0, error)
    }

    /// Moves one file of a queue to the failed store in one step of the journal.
    fn bury(
        &self,
        queue: &str,
        path: &Path,
        job_id: String,
        attempts: u32,
        error: String,
    ) -> Result<()> {
        let at = now_ms();
        let intent = Intent {
            id: crate::format::new_id(),
            moves: vec![Move {
                take: Take::File {
                    path: self.rel_path(path),
                },
                then: Then::Fail(Record {
                    queue: queue.to_owned(),
                    job_id,
                    attempts,
                    failed_at: at,
                    failed_id: super::journal::failed_name(at).file_name(),
                    error,
                }),
                claims: Vec::new(),
                counts: Vec::new(),
                publish: Vec::new(),
                waits: Vec::new(),
                replaces: false,
                records: Vec::new(),
                rewrite: None,
            }],
            publish: Vec::new(),
            counts: Vec::new(),
            sets: Vec::new(),
            plan: None,
            records: Vec::new(),
        };
        let lock = self.lock()?;
        self.run(&lock, &intent)?;
        Ok(())
    }

    /// The current file of a reservation: from memory, else by listing `reserved/`.
    pub(super) fn find_reserved(
        &self,
        paths: &QueuePaths,
        job_id: &str,
        token: &str,
    ) -> Result<Option<ReservedName>> {
        let matches = |r: &ReservedName| r.id == job_id && r.token == token;
        let known = guard(&self.held).get(token).map(|h| h.file.clone());
        if let Some(r) = known
            .as_deref()
            .and_then(ReservedName::parse)
            .filter(matches)
        {
            if paths.reserved.join(r.file_name()).exists() {
                return Ok(Some(r));
            }
        }
        let (names, _) = parse_names(list(&paths.reserved)?, ReservedName::parse);
        Ok(names.into_iter().find(matches))
    }

    /// Runs `op` on the file of a current reservation; `None` if the lease is stale.
    pub(super) fn with_reserved<T>(
        &self,
        lease: &Lease,
        paths: &QueuePaths,
        op_name: &'static str,
        mut op: impl FnMut(&Path, &ReservedName) -> std::io::Result<T>,
    ) -> Result<Option<T>> {
        let matches = |r: &ReservedName| r.id == lease.job_id.0 && r.token == lease.token;
        let known = guard(&self.held).get(&lease.token).map(|h| h.file.clone());
        if let Some(r) = known
            .as_deref()
            .and_then(ReservedName::parse)
            .filter(matches)
        {
            let path = paths.reserved.join(r.file_name());
            match op(&path, &r) {
                Ok(t) => return Ok(Some(t)),
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(FileError::io(op_name, path)(e)),
            }
        }
        let (names, _) = parse_names(list(&paths.reserved)?, ReservedName::parse);
        if let Some(r) = names.into_iter().find(matches) {
            let path = paths.reserved.join(r.file_name());
            return match op(&path, &r) {
                Ok(t) => Ok(Some(t)),
                Err(e) if not_found(&e) => Ok(None),
                Err(e) => Err(FileError::io(op_name, path)(e)),
            };
        }
        Ok(None)
    }

    /// Renews leases: each one rename within `reserved/` (a new deadline, the same token),
    /// then a look for the job's `cancel` record: a renewed lease of a job carrying one is
    /// `Cancelled`.
    pub(crate) fn extend(&self, leases: &[Lease], duration: Duration) -> Result<Vec<LeaseStatus>> {
        let deadline = clamp_ms(now_ms().saturating_add(duration_millis(duration)));
        let mut out = Vec::with_capacity(leases.len());
        for lease in leases {
            let Ok(paths) = self.paths(&lease.queue) else {
                out.push(LeaseStatus::Lost);
                continue;
            };
            let moved = self.with_reserved(lease, &paths, "rename", |path, r| {
                let to = ReservedName {
                    deadline,
                    ..r.clone()
                };
                std::fs::rename(path, paths.reserved.join(to.file_name())).map(|()| to)
            })?;
            match moved {
                Some(to) => {
                    if let Some(held) = guard(&self.held).get_mut(&lease.token) {
                        held.file = to.file_name();
                    }
                    out.push(if self.cancel_marked(&lease.job_id.0)? {
                        LeaseStatus::Cancelled
                    } else {
                        LeaseStatus::Held
                    });
                }
                None => out.push(LeaseStatus::Lost),
            }
        }
        Ok(out)
    }
}
