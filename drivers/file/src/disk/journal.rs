//! Steps that touch several files: under the store's lock, announced by an intent.
//!
//! A plain transition is one rename and needs neither. A step that also changes claims,
//! group counters, waiting jobs or other jobs (a settle with effects, a fail, a push with
//! claims, a retry from the failed store, an apply of effects with no lease) goes like this:
//!
//! 1. Files it will publish, hold or put into `records/` are written to `tmp/` first and
//!    synced (before the lock, so the lock is not held across their writes).
//! 2. It takes the store's lock: an exclusive `flock(2)` on `control/lock`, held only for the
//!    step. The kernel drops it when the holder dies. Whoever takes the lock first finishes
//!    every intent left in `journal/`: while a live process holds the lock its intent is
//!    invisible to others, so an intent seen by a lock holder is one whose process died.
//! 3. It writes its intent, `journal/ID` (JSON, synced, renamed into place whole): every
//!    move, claim change, counter delta (and value set, by a guarded apply), publication,
//!    record and waiting-job effect of the step.
//! 4. Each move *takes* its job: one rename out of `reserved/` (by token) or out of `ready/`
//!    or `failed/` into `tmp/ID.N.taken`. The rename is the fence and the commit: it fails
//!    when another worker took the job first (the lease is stale), and once it is done the
//!    move happens, crash or not.
//! 5. If moves taken carry waiting-job effects, their [`Plan`] (what becomes of each waiting
//!    job: put, released, removed) is decided from `waiting/` as it is, the files it puts or
//!    publishes are staged in `tmp/` and synced, and the intent is written again with the
//!    plan in it, before any of it is carried out. (A step with no moves, an apply, has its
//!    plan in its intent from the start.)
//! 6. For the moves taken: claim changes and records of the settled jobs, then
//!    publications, then the plan, then counter deltas; then each taken file goes where its
//!    move says (deleted, back to `ready/`, into `failed/`).
//! 7. It syncs the directories it touched and deletes the intent.
//!
//! Finishing an intent after a crash does steps 5 to 7 again, judging what happened by the
//! files that are left: a move was taken if its `tmp/ID.N.taken` is there (untaken moves
//! have their staged files deleted); a publication, or a record put into `records/`, is done
//! once its source file is gone; a group counter file records the last intent applied to
//! it, so its values are set and its deltas added once;
//! claim changes are conditional (release if held by this job); a plan in the intent is
//! carried out as it stands (a waiting file is put once its staged file is gone, removing one
//! is done once it is gone), and one is decided only by an intent without it, before which
//! nothing of it was carried out. (The plan cannot be decided again instead: once taken files
//! have gone where they go, they no longer say which moves were taken.) So finishing twice
//! changes nothing more than finishing once, and no step between the crash and the finishing
//! can interfere: every step that touches claims, counters or waiting jobs takes the lock,
//! which finishes intents first, and the steps without the lock never touch them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};

use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};
use queue_core::{JobId, Pushed};
use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};

use super::claims::ClaimFile;
use super::{guard, list, not_found, read_if_there, remove_if_there, write_new, Disk, Result};
use crate::error::FileError;
use crate::format::now_ms;
use crate::format::{decode_job, decode_name, is_id, FailedFile, FailedName, JobFile, ReadyName};

/// The store's lock file, opened once per [`Disk`]. The mutex keeps this process's threads
/// apart (a `flock` is held by an open file, which all of them share); the `flock` keeps
/// processes apart.
#[derive(Debug)]
pub(super) struct StoreLock {
    file: Mutex<File>,
}

impl StoreLock {
    pub(super) fn open(path: &Path) -> Result<StoreLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(FileError::io("open", path))?;
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(FileError::io("chmod", path))?;
        Ok(StoreLock {
            file: Mutex::new(file),
        })
    }
}

/// Proof that this thread holds the store's lock; dropping it unlocks.
pub(super) struct Locked<'a> {
    file: MutexGuard<'a, File>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = flock(&*self.file, FlockOperation::Unlock);
    }
}

/// The bytes of a path written as `%XX` in an intent.
const PATH_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'_')
    .remove(b'-')
    .remove(b'.');

static CRASH_AT: OnceLock<&'static str> = OnceLock::new();

/// Not public API: makes this process abort (as if killed) when a step reaches `point`, for
/// the crash tests. Points: `written` (the intent is durable), `taken` (the moves are taken),
/// `planned` (the intent is written again with its plan for waiting jobs; only steps whose
/// moves carry waiting-job effects), `applied` (claims, publications, the plan and counters
/// are done), `finalized` (the taken files are where they go; the intent is still there).
pub(crate) fn crash_at(point: &'static str) {
    let _ = CRASH_AT.set(point);
}

fn crash_point(point: &str) {
    if CRASH_AT.get().is_some_and(|p| *p == point) {
        std::process::abort();
    }
}

/// One step's intent, `journal/ID`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Intent {
    pub(super) id: String,
    /// Transitions fenced by a take; each with what goes with it.
    #[serde(default)]
    pub(super) moves: Vec<Move>,
    /// Publications that happen in any case (a push, a retry from the failed store, the
    /// pushes of an apply).
    #[serde(default)]
    pub(super) publish: Vec<Publish>,
    /// Counter deltas that apply in any case (an apply's), group -> deltas.
    #[serde(default)]
    pub(super) counts: Vec<(String, Vec<(String, i64)>)>,
    /// Counter values that the step sets (an `apply_if`'s guard, checked under the lock
    /// before the intent was written), group -> values: set before the deltas are added,
    /// in the same write of the group's file.
    #[serde(default)]
    pub(super) sets: Vec<(String, Vec<(String, i64)>)>,
    /// What the step does to waiting jobs, once decided (see the module docs): carried out
    /// as it stands, however often the intent is finished.
    #[serde(default)]
    pub(super) plan: Option<Plan>,
    /// Record files put in any case (an apply's group values), staged whole in `tmp/`.
    /// (Absent from intents of older versions.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) records: Vec<PutRecord>,
}

/// A group's counter changes in one step: the values set, then the deltas added.
type Counts<'a> = (BTreeMap<&'a str, i64>, BTreeMap<&'a str, i64>);

/// One job's transition and its effects.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Move {
    pub(super) take: Take,
    pub(super) then: Then,
    #[serde(default)]
    pub(super) claims: Vec<ClaimOp>,
    /// Group -> counter deltas.
    #[serde(default)]
    pub(super) counts: Vec<(String, Vec<(String, i64)>)>,
    #[serde(default)]
    pub(super) publish: Vec<Publish>,
    /// Its waiting-job effects, in call order: decided into the step's [`Plan`] with those
    /// of the other moves taken.
    #[serde(default)]
    pub(super) waits: Vec<WaitOp>,
    /// The move replaces a queued job (`Unique::replace`): it takes the job's file out of
    /// `ready/` and publishes the job's new version (same id, attempts and claim; a new name,
    /// payload and due time). Once published, the store's replace generation is renewed so
    /// that every process drops the names it cached (see [`Disk::renew_replaced`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) replaces: bool,
    /// Records of the settled job (`Effect::Record`), staged whole in `tmp/`: put into
    /// `records/` when the move is taken, deleted when it is not. (Absent from intents of
    /// older versions, which had no records.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) records: Vec<PutRecord>,
    /// The job's new version (`Effect::Payload`, a retried job re-sealed), staged whole in
    /// `tmp/` (relative to the root): a taken move going back to `ready/` puts it there under
    /// the move's name and deletes the taken file; a move not taken deletes it. (Absent from
    /// intents of older versions.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) rewrite: Option<String>,
}

/// A record file to put into `records/` with a move: done once its staged file is gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PutRecord {
    /// The staged record file, relative to the store's root.
    pub(super) from: String,
    /// Its file name in `records/`.
    pub(super) name: String,
}

/// A waiting-job effect as asked, before the step decides what it does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum WaitOp {
    /// Holds the waiting-job file staged at `from` (relative to the root) under `key`,
    /// unless a job waits there already.
    Hold {
        key: String,
        deps: u32,
        from: String,
    },
    /// Adds `delta` to the dependencies left under `key`.
    Deps { key: String, delta: i64 },
    /// Removes the job waiting under `key`.
    Skip { key: String },
}

/// What a step does to `waiting/`: at most one change per key, each safe to carry out again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Plan {
    #[serde(default)]
    pub(super) changes: Vec<Change>,
    /// Staged files the changes do not use (a hold of a key that is taken, a hold whose
    /// dependencies changed in the same step): deleted once the changes are made.
    #[serde(default)]
    pub(super) unused: Vec<String>,
}

/// One waiting job's change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Change {
    /// Renames the waiting-job file staged at `from` to `waiting/KEY` (over what is there):
    /// done once `from` is gone.
    Put { key: String, from: String },
    /// Deletes `waiting/KEY` and publishes its job, staged as a job file at `publish.from`.
    Release { key: String, publish: Publish },
    /// Deletes `waiting/KEY`.
    Remove { key: String },
}

/// Which file a move takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Take {
    /// The reservation with this token, whatever its deadline (extending renames it).
    Reservation {
        queue: String,
        job_id: String,
        token: String,
    },
    /// This file, relative to the store's root.
    File { path: String },
}

/// Where a taken file goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Then {
    Delete,
    /// Back to `ready/` under this name.
    Ready {
        queue: String,
        name: String,
    },
    /// Into the failed store.
    Fail(Record),
}

/// A failed record to write from a taken file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) queue: String,
    pub(super) job_id: String,
    pub(super) attempts: u32,
    pub(super) failed_at: i64,
    /// The record's id (its file name in the failed store).
    pub(super) failed_id: String,
    pub(super) error: String,
}

/// A conditional change of a claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ClaimOp {
    /// Release `key` if the job `job_id` holds it.
    Release { key: String, job_id: String },
    /// Hand `key` to the failed record `failed` if the job `job_id` holds it.
    ToFailed {
        key: String,
        job_id: String,
        failed: String,
    },
}

/// A job file to publish into a queue's `ready/`, with its claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Publish {
    /// Where the file is, relative to the store's root: staged in `tmp/`, or a failed record.
    pub(super) from: String,
    pub(super) queue: String,
    /// Its name in `ready/`.
    pub(super) ready: String,
    pub(super) job_id: String,
    /// Its claim's key, if it has one.
    #[serde(default)]
    pub(super) key: Option<String>,
    /// The failed record being retried (`from` is that record): it may already hold the
    /// key, and on a duplicate it stays where it is.
    #[serde(default)]
    pub(super) retry_of: Option<String>,
}

/// What a step did.
#[derive(Debug, Default)]
pub(super) struct Ran {
    /// Per move: whether it was taken (else its lease was stale).
    pub(super) taken: Vec<bool>,
    /// Per unconditional publication; `None` if its file was gone already (published by an
    /// earlier run of the same intent).
    pub(super) published: Vec<Option<Pushed>>,
}

impl Disk {
    /// Takes the store's lock (waiting for it), then finishes what crashed steps left.
    pub(super) fn lock(&self) -> Result<Locked<'_>> {
        let file = guard(&self.store_lock.file);
        loop {
            match flock(&*file, FlockOperation::LockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(FileError::io("lock", self.control.join("lock"))(e.into())),
            }
        }
        let locked = Locked { file };
        self.finish_intents(&locked)?;
        Ok(locked)
    }

    /// The store's lock if nobody holds it now.
    pub(super) fn try_lock(&self) -> Result<Option<Locked<'_>>> {
        let file = match self.store_lock.file.try_lock() {
            Ok(file) => file,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(None),
        };
        match flock(&*file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => return Ok(None),
            Err(e) => return Err(FileError::io("lock", self.control.join("lock"))(e.into())),
        }
        let locked = Locked { file };
        self.finish_intents(&locked)?;
        Ok(Some(locked))
    }

    /// Finishes every intent in `journal/`, oldest first. A damaged one (it cannot be, as
    /// intents are renamed into place whole, unless the disk damaged it) is set aside as
    /// `ID.damaged` for an operator; what it took is then recovered from `tmp/`.
    fn finish_intents(&self, lock: &Locked<'_>) -> Result<()> {
        let mut names: Vec<String> = list(&self.journal)?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| is_id(n))
            .collect();
        names.sort_unstable();
        for name in names {
            let path = self.journal.join(&name);
            let Some(bytes) = read_if_there(&path)? else {
                continue;
            };
            match serde_json::from_slice::<Intent>(&bytes) {
                Ok(intent) => {
                    tracing::warn!(intent = %name, "finishing a step a crashed process left");
                    let taken = (0..intent.moves.len())
                        .map(|n| self.tombstone(&intent.id, n).exists())
                        .collect();
                    self.finish(lock, &intent, taken)?;
                }
                Err(e) => {
                    tracing::error!(intent = %name, error = %e, "a damaged intent: set aside");
                    let aside = self.journal.join(format!("{name}.damaged"));
                    fs::rename(&path, &aside).map_err(FileError::io("rename", &path))?;
                }
            }
        }
        Ok(())
    }

    /// A path under the root as an intent holds it: relative, its bytes `%`-escaped (a stray
    /// file's name need not be UTF-8).
    pub(super) fn rel_path(&self, path: &Path) -> String {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        percent_encode(rel.as_os_str().as_bytes(), PATH_ESCAPED).to_string()
    }

    /// The inverse of [`rel_path`](Self::rel_path).
    pub(super) fn abs_path(&self, rel: &str) -> PathBuf {
        let bytes: Vec<u8> = percent_decode_str(rel).collect();
        self.root.join(OsString::from_vec(bytes))
    }

    /// Where move `n` of intent `id` puts the file it takes.
    pub(super) fn tombstone(&self, id: &str, n: usize) -> PathBuf {
        self.tmp.join(format!("{id}.{n}.taken"))
    }

    /// Writes an intent durably as `journal/ID`, replacing an earlier version of it: staged
    /// in `tmp/`, synced, renamed into place whole, `journal/` synced.
    fn write_intent(&self, intent: &Intent) -> Result<()> {
        let staged = self.tmp.join(format!("{}.intent", intent.id));
        let bytes = serde_json::to_vec(intent).map_err(|e| FileError::Damaged {
            path: staged.clone(),
            reason: e.to_string(),
        })?;
        // A run of the same intent that died while writing it again left this.
        remove_if_there(&staged)?;
        let file = write_new(&staged, &bytes)?;
        if self.fsync {
            file.sync_data().map_err(FileError::io("sync", &staged))?;
        }
        drop(file);
        let path = self.journal.join(&intent.id);
        if let Err(e) = fs::rename(&staged, &path) {
            let _ = fs::remove_file(&staged);
            return Err(FileError::io("rename", path)(e));
        }
        self.sync_dir(&self.journal)
    }

    /// Runs a step: writes its intent, takes its moves, finishes it.
    pub(super) fn run(&self, lock: &Locked<'_>, intent: &Intent) -> Result<Ran> {
        self.write_intent(intent)?;
        crash_point("written");
        let result = (|| {
            let mut taken = Vec::with_capacity(intent.moves.len());
            for (n, mv) in intent.moves.iter().enumerate() {
                taken.push(self.take(&mv.take, &self.tombstone(&intent.id, n))?);
            }
            crash_point("taken");
            self.finish(lock, intent, taken)
        })();
        if result.is_err() {
            // Leave nothing half done that can be done: try once more to finish from what
            // is on disk, the intent as last written included (it may have got its plan
            // before the error, and then that plan is the one to carry out); if that fails
            // too, the next lock holder finishes it.
            let path = self.journal.join(&intent.id);
            if let Ok(Some(bytes)) = read_if_there(&path) {
                if let Ok(written) = serde_json::from_slice::<Intent>(&bytes) {
                    let taken = (0..written.moves.len())
                        .map(|n| self.tombstone(&written.id, n).exists())
                        .collect();
                    let _ = self.finish(lock, &written, taken);
                }
            }
        }
        result
    }

    /// Renames the file a move takes into its tombstone; false if it is gone (another
    /// worker took the job: the lease is stale).
    fn take(&self, take: &Take, tombstone: &Path) -> Result<bool> {
        match take {
            Take::File { path } => {
                let from = self.abs_path(path);
                match fs::rename(&from, tombstone) {
                    Ok(()) => Ok(true),
                    Err(e) if not_found(&e) => Ok(false),
                    Err(e) => Err(FileError::io("rename", from)(e)),
                }
            }
            Take::Reservation {
                queue,
                job_id,
                token,
            } => {
                let Ok(paths) = self.paths(queue) else {
                    return Ok(false);
                };
                // A heartbeat of this process may rename the file meanwhile (a new deadline,
                // the same token): look again a few times.
                for _ in 0..5 {
                    let Some(found) = self.find_reserved(&paths, job_id, token)? else {
                        return Ok(false);
                    };
                    let from = paths.reserved.join(found.file_name());
                    match fs::rename(&from, tombstone) {
                        Ok(()) => {
                            guard(&self.held).remove(token);
                            return Ok(true);
                        }
                        Err(e) if not_found(&e) => {
                            guard(&self.held).remove(token);
                        }
                        Err(e) => return Err(FileError::io("rename", from)(e)),
                    }
                }
                Ok(false)
            }
        }
    }

    /// Steps 5 to 7 for the moves `taken`: idempotent, so the same code finishes a step live
    /// and after a crash.
    fn finish(&self, lock: &Locked<'_>, intent: &Intent, taken: Vec<bool>) -> Result<Ran> {
        let planned;
        let intent = match self.plan_taken(lock, intent, &taken)? {
            Some(with_plan) => {
                planned = with_plan;
                &planned
            }
            None => intent,
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        // Group -> (values set, deltas added).
        let mut counts: BTreeMap<&str, Counts<'_>> = BTreeMap::new();
        // Every claim change of the step before any publication, as a settle applies every
        // transition before the effects of the call: a follow-up can take the key of a job
        // this same step acknowledged.
        for (mv, taken) in intent.moves.iter().zip(&taken) {
            if !*taken {
                for p in &mv.publish {
                    remove_if_there(&self.abs_path(&p.from))?;
                }
                for op in &mv.waits {
                    if let WaitOp::Hold { from, .. } = op {
                        remove_if_there(&self.abs_path(from))?;
                    }
                }
                for r in &mv.records {
                    remove_if_there(&self.abs_path(&r.from))?;
                }
                if let Some(from) = &mv.rewrite {
                    remove_if_there(&self.abs_path(from))?;
                }
                continue;
            }
            for op in &mv.claims {
                self.apply_claim(lock, op)?;
                dirs.push(self.claims.clone());
            }
            for r in &mv.records {
                self.put_staged_record(lock, r, &mut dirs)?;
            }
        }
        for r in &intent.records {
            self.put_staged_record(lock, r, &mut dirs)?;
        }
        let taken_moves = || intent.moves.iter().zip(&taken).filter(|(_, t)| **t);
        for (mv, _) in taken_moves() {
            for p in &mv.publish {
                self.publish(lock, p, &mut dirs)?;
            }
        }
        let mut published = Vec::with_capacity(intent.publish.len());
        for p in &intent.publish {
            published.push(self.publish(lock, p, &mut dirs)?);
        }
        // After the new versions are in `ready/`: a process that reads the generation after
        // it saw one of them drops the name it cached for it.
        if taken_moves().any(|(mv, _)| mv.replaces) {
            self.renew_replaced(lock)?;
        }
        // Released jobs after the pushes: a push takes a claim before a released job does.
        if let Some(plan) = &intent.plan {
            self.carry_out(lock, plan, &mut dirs)?;
        }
        let all_counts = taken_moves()
            .flat_map(|(mv, _)| &mv.counts)
            .chain(&intent.counts);
        for (group, deltas) in all_counts {
            let (_, sums) = counts.entry(group.as_str()).or_default();
            for (name, delta) in deltas {
                let sum = sums.entry(name.as_str()).or_default();
                *sum = sum.saturating_add(*delta);
            }
        }
        for (group, values) in &intent.sets {
            let (sets, _) = counts.entry(group.as_str()).or_default();
            for (name, value) in values {
                sets.insert(name.as_str(), *value);
            }
        }
        for (group, (sets, deltas)) in &counts {
            self.add_counts(lock, &intent.id, group, sets, deltas)?;
            dirs.push(self.groups.clone());
        }
        crash_point("applied");
        for (n, (mv, taken)) in intent.moves.iter().zip(&taken).enumerate() {
            if *taken {
                self.settle_taken(&intent.id, n, mv, &mut dirs)?;
            }
        }
        crash_point("finalized");
        for mv in &intent.moves {
            match &mv.take {
                Take::Reservation { queue, .. } => {
                    if let Ok(paths) = self.paths(queue) {
                        dirs.push(paths.reserved);
                    }
                }
                Take::File { path } => {
                    if let Some(dir) = self.abs_path(path).parent() {
                        dirs.push(dir.to_path_buf());
                    }
                }
            }
        }
        self.sync_dirs(dirs.iter().map(PathBuf::as_path))?;
        remove_if_there(&self.journal.join(&intent.id))?;
        Ok(Ran { taken, published })
    }

    /// Step 5: the intent with the plan of its waiting-job effects, written durably, if its
    /// moves taken have such effects and it has no plan yet; `None` otherwise.
    fn plan_taken(
        &self,
        lock: &Locked<'_>,
        intent: &Intent,
        taken: &[bool],
    ) -> Result<Option<Intent>> {
        if intent.plan.is_some() {
            return Ok(None);
        }
        let ops: Vec<&WaitOp> = intent
            .moves
            .iter()
            .zip(taken)
            .filter(|(_, t)| **t)
            .flat_map(|(mv, _)| &mv.waits)
            .collect();
        if ops.is_empty() {
            return Ok(None);
        }
        let plan = self.plan_waiting(lock, &intent.id, &ops, now_ms())?;
        let planned = Intent {
            plan: Some(plan),
            ..intent.clone()
        };
        self.write_intent(&planned)?;
        crash_point("planned");
        Ok(Some(planned))
    }

    /// Publishes a job file into its queue with its claim; `None` if it was published
    /// before (its source is gone), a duplicate if another job holds its key.
    pub(super) fn publish(
        &self,
        lock: &Locked<'_>,
        p: &Publish,
        dirs: &mut Vec<PathBuf>,
    ) -> Result<Option<Pushed>> {
        let from = self.abs_path(&p.from);
        match fs::symlink_metadata(&from) {
            Ok(_) => {}
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(FileError::io("stat", from)(e)),
        }
        if let Some(key) = &p.key {
            if let Some(holder) = self.claim_holder(lock, key)? {
                let mine = holder.job_id == p.job_id
                    || (p.retry_of.is_some() && holder.failed == p.retry_of);
                if !mine {
                    if p.retry_of.is_none() {
                        remove_if_there(&from)?;
                    }
                    return Ok(Some(Pushed::Duplicate(JobId(holder.job_id))));
                }
            }
            self.set_claim(
                lock,
                &ClaimFile {
                    key: key.clone(),
                    job_id: p.job_id.clone(),
                    queue: p.queue.clone(),
                    failed: None,
                },
            )?;
            dirs.push(self.claims.clone());
        }
        let paths = self.paths(&p.queue)?;
        self.ensure_queue(&p.queue, &paths)?;
        let to = paths.ready.join(&p.ready);
        self.rename_into(&p.queue, &paths, &from, &to)
            .map_err(FileError::io("rename", &from))?;
        if let Some(name) = ReadyName::parse(&p.ready) {
            self.remember_ready(&p.queue, name);
        }
        dirs.push(paths.ready);
        if let Some(dir) = from.parent() {
            dirs.push(dir.to_path_buf());
        }
        Ok(Some(Pushed::Created(JobId(p.job_id.clone()))))
    }

    /// Puts a taken file where its move says.
    fn settle_taken(&self, id: &str, n: usize, mv: &Move, dirs: &mut Vec<PathBuf>) -> Result<()> {
        let tombstone = self.tombstone(id, n);
        match &mv.then {
            Then::Delete => {
                remove_if_there(&tombstone)?;
            }
            Then::Ready { queue, name } => {
                let paths = self.paths(queue)?;
                self.ensure_queue(queue, &paths)?;
                // The new version in, then the old one out: done once both are gone.
                let from = match &mv.rewrite {
                    Some(staged) => self.abs_path(staged),
                    None => tombstone.clone(),
                };
                let moved = match self.rename_into(queue, &paths, &from, &paths.ready.join(name)) {
                    Ok(()) => true,
                    Err(e) if not_found(&e) => false,
                    Err(e) => return Err(FileError::io("rename", from)(e)),
                };
                if mv.rewrite.is_some() {
                    remove_if_there(&tombstone)?;
                    if let Some(dir) = from.parent() {
                        dirs.push(dir.to_path_buf());
                    }
                }
                if !moved {
                    return Ok(());
                }
                if let Some(name) = ReadyName::parse(name) {
                    self.remember_ready(queue, name);
                }
                dirs.push(paths.ready);
            }
            Then::Fail(record) => {
                let Some(bytes) = read_if_there(&tombstone)? else {
                    return Ok(());
                };
                let staged = self.tmp.join(format!("{id}.{n}.record"));
                self.write_failed(&failed_file(record, bytes), &record.failed_id, &staged)?;
                dirs.push(self.failed.clone());
                remove_if_there(&tombstone)?;
            }
        }
        Ok(())
    }

    /// Writes a failed record durably under its id (replacing one a crashed run wrote).
    pub(super) fn write_failed(&self, failed: &FailedFile, id: &str, staged: &Path) -> Result<()> {
        remove_if_there(staged)?;
        let file = write_new(staged, &crate::format::encode_failed(failed))?;
        if self.fsync {
            file.sync_data().map_err(FileError::io("sync", staged))?;
        }
        drop(file);
        let to = self.failed.join(id);
        if let Err(e) = fs::rename(staged, &to) {
            let _ = fs::remove_file(staged);
            return Err(FileError::io("rename", to)(e));
        }
        Ok(())
    }
}

/// The failed record of a taken file: the job as it was, or, when the file is not a job file
/// (a stray or damaged file), its whole bytes as the payload with the reason added.
pub(super) fn failed_file(record: &Record, bytes: Vec<u8>) -> FailedFile {
    let mut error = record.error.clone();
    let job = match decode_job(&bytes) {
        Ok(job) => JobFile {
            queue: record.queue.clone(),
            ..job
        },
        Err(reason) => {
            error.push_str(&format!(
                "; its contents are not a job file ({reason}): the payload is the whole file"
            ));
            JobFile {
                queue: record.queue.clone(),
                name: decode_name(&bytes).unwrap_or_default(),
                unique: None,
                payload: bytes,
            }
        }
    };
    FailedFile {
        job,
        job_id: record.job_id.clone(),
        attempts: record.attempts,
        failed_at: record.failed_at,
        error,
    }
}

/// A fresh failed record name for a failure at `at`.
pub(super) fn failed_name(at: i64) -> FailedName {
    FailedName {
        at: crate::format::clamp_ms(at),
        id: crate::format::new_id(),
    }
}
