//! Single jobs by id (`Track`): finding a job in its queue, cancelling it, and the records
//! kept for jobs in `records/`.
//!
//! A job id names no queue, so a job is found by listing every queue's `ready/` and then
//! `reserved/` for a file name with its id (twice before answering that it is not there: a
//! job can move between the two listings). Its file name says its state, due time and
//! attempts; its header, its name and claim.
//!
//! A record is one file, `records/JOB.KIND` ([`record_file_name`]), holding its job id,
//! kind, expiry and value ([`RecordFile`]). Every write of one is made under the store's
//! lock, staged in `tmp/` (synced) and renamed over the file whole, so a reader takes no
//! lock and sees the old record or the new. A settle's records ([`PutRecord`]) are staged
//! before the lock and put by its step of the journal when (and only when) its move is
//! taken; [`Disk::put_record`] and the mark of [`Disk::cancel`] are their own steps, with
//! nothing to finish after a crash (the rename is the write). An expired record is never
//! read; [`Disk::prune_records`] deletes them, checking each again under the lock so that
//! a record written again meanwhile stays.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use queue_core::storage::{
    check_effect_list, check_record, duration_millis, from_unix_millis, Cancellation, JobState,
    JobSummary, RecordKey,
};
use queue_core::{Effect, JobId, Lease};

use super::journal::{ClaimOp, Intent, Locked, Move, PutRecord, Take, Then};
use super::waiting::{sort_out, Staged};
use super::{
    guard, list, make_dir, not_found, read_if_there, remove_if_there, sync_files, write_new, Disk,
    QueuePaths, Result,
};
use crate::error::FileError;
use crate::format::{
    decode_job, decode_record, encode_record, is_id, new_id, now_ms, queue_from_dir_name,
    record_file_name, Head, ReadyName, RecordFile, ReservedName,
};
use crate::DRIVER;

/// How many times a cancel looks for a job that moves under it (each move is another
/// worker's reservation, extension or settlement) before it gives up with an error.
const CANCEL_TRIES: usize = 20;
/// How many expired records one hold of the store's lock deletes.
const PRUNE_CHUNK: usize = 500;

/// The error of a job that moved every time it was looked at.
fn moved_too_often(jobs: &Path, id: &str, doing: &str) -> FileError {
    FileError::Damaged {
        path: jobs.to_path_buf(),
        reason: format!(
            "job {id} moved {CANCEL_TRIES} times while it was being {doing}: try again"
        ),
    }
}

/// Where a job was found.
enum Place {
    Ready(ReadyName),
    Reserved(ReservedName),
}

/// A job found by its id.
struct Found {
    queue: String,
    paths: QueuePaths,
    place: Place,
    /// Its name and claim; `None` for a file whose header is damaged.
    head: Option<Head>,
}

impl Found {
    /// The job's file.
    fn path(&self) -> PathBuf {
        match &self.place {
            Place::Ready(r) => self.paths.ready.join(r.file_name()),
            Place::Reserved(r) => self.paths.reserved.join(r.file_name()),
        }
    }

    /// What `Track::job` says of it at `now`, its file holding `payload`: the state and due
    /// time as a listing of its queue says them.
    fn summary(&self, id: &str, payload: Vec<u8>, now: i64) -> JobSummary {
        let (state, due, attempts) = match &self.place {
            Place::Ready(r) if r.at > now => (JobState::Delayed, r.at, r.attempts),
            Place::Ready(r) => (JobState::Waiting, r.at, r.attempts),
            Place::Reserved(r) => (JobState::Reserved, r.deadline, r.attempts),
        };
        JobSummary {
            id: JobId(id.to_owned()),
            queue: self.queue.clone(),
            name: self
                .head
                .as_ref()
                .map(|h| h.name.clone())
                .unwrap_or_default(),
            attempts,
            state,
            due_at: from_unix_millis(due),
            unique_key: self
                .head
                .as_ref()
                .and_then(|h| h.unique.as_ref())
                .map(|u| u.key.clone()),
            payload,
        }
    }

    /// The payload in its file, `None` if the file moved (a worker reserved, extended or
    /// settled the job) since it was found; empty for a file that is not a readable job.
    fn payload(&self) -> Result<Option<Vec<u8>>> {
        Ok(read_if_there(&self.path())?.map(|bytes| {
            decode_job(&bytes)
                .map(|job| job.payload)
                .unwrap_or_default()
        }))
    }
}

impl Disk {
    /// The job with this id while it is in a queue; `None` for an id this store never makes.
    pub(crate) fn job(&self, id: &JobId) -> Result<Option<JobSummary>> {
        if !is_id(&id.0) {
            return Ok(None);
        }
        for _ in 0..CANCEL_TRIES {
            let Some(found) = self.find_job(&id.0)? else {
                return Ok(None);
            };
            if let Some(payload) = found.payload()? {
                return Ok(Some(found.summary(&id.0, payload, now_ms())));
            }
        }
        Err(moved_too_often(&self.jobs, &id.0, "looked up"))
    }

    /// Cancels a job under the store's lock: a job in `ready/`, or in `reserved/` under a
    /// lease that ran out, is taken out of its directory (an unlink, or for a job with a
    /// claim or with `effects` one step of the journal that releases the claim and carries
    /// the effects, staged as a settle's are, with it), which fails if a worker moved it
    /// first, and then the job is looked for again; a job reserved under a live lease gets
    /// its `cancel` record, kept for `mark_for`, and none of the effects.
    pub(crate) fn cancel(
        &self,
        id: &JobId,
        mark_for: Duration,
        effects: Vec<Effect>,
    ) -> queue_core::Result<Cancellation> {
        check_effect_list(DRIVER, &effects, "a cancel")?;
        sort_out(effects.clone())?;
        Ok(self.cancel_with(id, mark_for, &effects)?)
    }

    fn cancel_with(
        &self,
        id: &JobId,
        mark_for: Duration,
        effects: &[Effect],
    ) -> Result<Cancellation> {
        if !is_id(&id.0) {
            return Ok(Cancellation::NotFound);
        }
        let id = id.0.as_str();
        let lock = self.lock()?;
        for _ in 0..CANCEL_TRIES {
            let Some(found) = self.find_job(id)? else {
                return Ok(Cancellation::NotFound);
            };
            // Read before the removal, which fails if a worker took the file meanwhile (the
            // loop then looks again).
            let Some(payload) = found.payload()? else {
                continue;
            };
            let now = now_ms();
            let summary = found.summary(id, payload, now);
            if let Place::Reserved(r) = &found.place {
                if r.deadline > now {
                    let record = RecordFile {
                        job_id: id.to_owned(),
                        kind: RecordKey::CANCEL.to_owned(),
                        expires: now.saturating_add(duration_millis(mark_for)),
                        value: Vec::new(),
                    };
                    let staged = self.stage_record(&record)?;
                    self.place_record(&lock, &staged, &record)?;
                    return Ok(Cancellation::Marked(summary));
                }
            }
            let path = found.path();
            let claim = found.head.as_ref().and_then(|h| h.unique.as_ref());
            let removed = if claim.is_some() || !effects.is_empty() {
                let step = new_id();
                let staged = self.stage_cancel(&step, id, effects)?;
                let ran = self.run(
                    &lock,
                    &Intent {
                        id: step,
                        moves: vec![Move {
                            take: Take::File {
                                path: self.rel_path(&path),
                            },
                            then: Then::Delete,
                            claims: claim
                                .map(|unique| ClaimOp::Release {
                                    key: unique.key.clone(),
                                    job_id: id.to_owned(),
                                })
                                .into_iter()
                                .collect(),
                            counts: staged.counts,
                            publish: staged.publish,
                            waits: staged.waits,
                            replaces: false,
                            records: staged.records,
                            rewrite: None,
                        }],
                        publish: Vec::new(),
                        counts: Vec::new(),
                        sets: Vec::new(),
                        plan: None,
                        records: Vec::new(),
                    },
                )?;
                ran.taken.first().copied().unwrap_or(false)
            } else {
                // The unlink is the fence: it fails if a worker renamed the file first.
                let removed = remove_if_there(&path)?;
                if removed {
                    if let Some(dir) = path.parent() {
                        self.sync_dir(dir)?;
                    }
                }
                removed
            };
            if removed {
                match &found.place {
                    Place::Ready(r) => self.forget_ready(&found.queue, r),
                    Place::Reserved(r) => {
                        guard(&self.held).remove(&r.token);
                    }
                }
                guard(&self.heads).remove(id);
                return Ok(Cancellation::Removed(summary));
            }
        }
        Err(moved_too_often(&self.jobs, id, "cancelled"))
    }

    /// Stages the effects of a cancel of job `id` in `tmp/`, synced, as a settle's are.
    fn stage_cancel(&self, step: &str, id: &str, effects: &[Effect]) -> Result<Staged> {
        if effects.is_empty() {
            return Ok(Staged::default());
        }
        let ops = sort_out(effects.to_vec()).map_err(|e| FileError::Damaged {
            path: self.tmp.clone(),
            reason: e.to_string(),
        })?;
        let mut files = Vec::new();
        let staged = self
            .stage_ops(step, Some(id), ops, now_ms(), &mut files)
            .and_then(|staged| {
                if self.fsync {
                    sync_files(&files)?;
                }
                Ok(staged)
            });
        if staged.is_err() {
            for (_, tmp) in &files {
                let _ = fs::remove_file(tmp);
            }
        }
        staged
    }

    /// Finds a job by its id: every queue listed twice before it counts as not there.
    fn find_job(&self, id: &str) -> Result<Option<Found>> {
        for _ in 0..2 {
            if let Some(found) = self.find_job_once(id)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// One look through every queue: its `ready/`, then its `reserved/` (where a job goes
    /// from `ready/`, so a job reserved meanwhile is seen in one or the other).
    fn find_job_once(&self, id: &str) -> Result<Option<Found>> {
        let entries = match fs::read_dir(&self.jobs) {
            Ok(entries) => entries,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(FileError::io("list", &self.jobs)(e)),
        };
        let mut queues = Vec::new();
        for entry in entries {
            let entry = entry.map_err(FileError::io("list", &self.jobs))?;
            if let Some(queue) = entry.file_name().to_str().and_then(queue_from_dir_name) {
                queues.push(queue);
            }
        }
        let needle = format!("-{id}-");
        for queue in queues {
            let Ok(paths) = self.paths(&queue) else {
                continue;
            };
            let ready = list(&paths.ready)?
                .into_iter()
                .filter_map(|n| n.into_string().ok())
                .filter(|n| n.contains(&needle))
                .find_map(|n| ReadyName::parse(&n).filter(|r| r.id == id));
            if let Some(r) = ready {
                if let Some(head) = self.head_of(&paths.ready, &r.file_name(), id)? {
                    return Ok(Some(Found {
                        queue,
                        paths,
                        place: Place::Ready(r),
                        head,
                    }));
                }
            }
            let reserved = list(&paths.reserved)?
                .into_iter()
                .filter_map(|n| n.into_string().ok())
                .filter(|n| n.contains(&needle))
                .find_map(|n| ReservedName::parse(&n).filter(|r| r.id == id));
            if let Some(r) = reserved {
                if let Some(head) = self.head_of(&paths.reserved, &r.file_name(), id)? {
                    return Ok(Some(Found {
                        queue,
                        paths,
                        place: Place::Reserved(r),
                        head,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// The header of a job file just listed: `None` if the file is gone (moved since the
    /// listing), `Some(None)` if it is there but its header is damaged.
    fn head_of(&self, dir: &Path, file: &str, id: &str) -> Result<Option<Option<Head>>> {
        // A name cached before a push replaced the job is dropped first.
        self.check_replaced()?;
        if let Some(head) = self.head(dir, file, id) {
            return Ok(Some(Some(head)));
        }
        let path = dir.join(file);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(Some(None)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(FileError::io("stat", path)(e)),
        }
    }

    /// The unexpired record `kind` of `job_id`. A damaged file (or one of another key whose
    /// name is the same hash, which nothing makes) counts as no record, and is logged.
    fn read_record(&self, job_id: &str, kind: &str, now: i64) -> Result<Option<Vec<u8>>> {
        let path = self.records.join(record_file_name(job_id, kind));
        let Some(bytes) = read_if_there(&path)? else {
            return Ok(None);
        };
        match decode_record(&bytes) {
            Ok(record) if record.job_id == job_id && record.kind == kind => {
                Ok((record.expires > now).then_some(record.value))
            }
            Ok(_) => {
                tracing::error!(path = %path.display(), "a record file of another key: no record counts as there");
                Ok(None)
            }
            Err(reason) => {
                tracing::error!(path = %path.display(), %reason, "a damaged record file: no record counts as there");
                Ok(None)
            }
        }
    }

    /// Whether a job carries an unexpired `cancel` record (for `extend`).
    pub(super) fn cancel_marked(&self, job_id: &str) -> Result<bool> {
        Ok(self
            .read_record(job_id, RecordKey::CANCEL, now_ms())?
            .is_some())
    }

    /// Reads records, one per key in order; `None` for one missing, expired, or whose key
    /// no driver must accept.
    pub(crate) fn records(&self, keys: &[RecordKey]) -> Result<Vec<Option<Vec<u8>>>> {
        let now = now_ms();
        keys.iter()
            .map(|key| match key.is_valid() {
                true => self.read_record(&key.job_id.0, &key.kind, now),
                false => Ok(None),
            })
            .collect()
    }

    /// Writes a record: staged in `tmp/` (synced) before the lock, then under the lock,
    /// after checking the fence (the reservation with the lease's token is in `reserved/`),
    /// renamed into `records/`.
    pub(crate) fn put_record(
        &self,
        key: &RecordKey,
        value: &[u8],
        ttl: Duration,
        fence: Option<&Lease>,
    ) -> queue_core::Result<bool> {
        check_record(DRIVER, key, fence)?;
        let record = RecordFile {
            job_id: key.job_id.0.clone(),
            kind: key.kind.clone(),
            expires: now_ms().saturating_add(duration_millis(ttl)),
            value: value.to_vec(),
        };
        let staged = self.stage_record(&record)?;
        let written = (|| -> Result<bool> {
            let lock = self.lock()?;
            if let Some(lease) = fence {
                let current = match self.paths(&lease.queue) {
                    Ok(paths) => self
                        .find_reserved(&paths, &lease.job_id.0, &lease.token)?
                        .is_some(),
                    Err(_) => false,
                };
                if !current {
                    return Ok(false);
                }
            }
            self.place_record(&lock, &staged, &record)?;
            Ok(true)
        })();
        if !matches!(written, Ok(true)) {
            let _ = fs::remove_file(&staged);
        }
        Ok(written?)
    }

    /// Writes a record file whole to `tmp/ID.rec`, synced.
    fn stage_record(&self, record: &RecordFile) -> Result<PathBuf> {
        let staged = self.tmp.join(format!("{}.rec", new_id()));
        let written = write_new(&staged, &encode_record(record)).and_then(|file| {
            if self.fsync {
                file.sync_data().map_err(FileError::io("sync", &staged))?;
            }
            Ok(())
        });
        match written {
            Ok(()) => Ok(staged),
            Err(e) => {
                let _ = fs::remove_file(&staged);
                Err(e)
            }
        }
    }

    /// Renames a staged record over its file in `records/` and syncs the directory.
    fn place_record(&self, lock: &Locked<'_>, staged: &Path, record: &RecordFile) -> Result<()> {
        let put = PutRecord {
            from: self.rel_path(staged),
            name: record_file_name(&record.job_id, &record.kind),
        };
        let mut dirs = Vec::new();
        self.put_staged_record(lock, &put, &mut dirs)?;
        self.sync_dirs(dirs.iter().map(PathBuf::as_path))
    }

    /// Puts a staged record into `records/` (over the record of the same key): done once
    /// its staged file is gone, so a step finished again puts it once.
    pub(super) fn put_staged_record(
        &self,
        _: &Locked<'_>,
        put: &PutRecord,
        dirs: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let from = self.abs_path(&put.from);
        let to = self.records.join(&put.name);
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if not_found(&e) && fs::symlink_metadata(&from).is_ok() => {
                // `records/` was removed by hand: made again.
                make_dir(&self.records)?;
                fs::rename(&from, &to).map_err(FileError::io("rename", &from))?;
            }
            // Put by an earlier run of the same intent.
            Err(e) if not_found(&e) => return Ok(()),
            Err(e) => return Err(FileError::io("rename", from)(e)),
        }
        dirs.push(self.records.clone());
        dirs.push(self.tmp.clone());
        Ok(())
    }

    /// Deletes expired records: read without the lock, then each one read again and
    /// deleted under it, [`PRUNE_CHUNK`] per hold of the lock. A damaged file is logged and
    /// left for an operator.
    pub(crate) fn prune_records(&self) -> Result<u64> {
        let now = now_ms();
        let mut expired = Vec::new();
        for name in list(&self.records)? {
            let path = self.records.join(&name);
            match self.expiry(&path)? {
                Some(Ok(expires)) if expires <= now => expired.push(path),
                Some(Ok(_)) | None => {}
                Some(Err(reason)) => {
                    tracing::warn!(path = %path.display(), %reason, "a damaged record file: left for an operator");
                }
            }
        }
        let mut removed = 0;
        for chunk in expired.chunks(PRUNE_CHUNK) {
            let _lock = self.lock()?;
            let now = now_ms();
            for path in chunk {
                // Written again since it was read: it stays.
                if matches!(self.expiry(path)?, Some(Ok(expires)) if expires <= now)
                    && remove_if_there(path)?
                {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            self.sync_dir(&self.records)?;
        }
        Ok(removed)
    }

    /// When the record file at `path` expires: `None` if it is gone, an error if it does not
    /// read as a record.
    fn expiry(&self, path: &Path) -> Result<Option<Result<i64, String>>> {
        Ok(read_if_there(path)?.map(|bytes| decode_record(&bytes).map(|r| r.expires)))
    }
}
