//! The failed store: `failed/FAILED_AT-ID`, one record per failed job; the file name is the
//! record's id, so listing the directory in reverse name order is newest first.
//!
//! A record is a job file with more header lines, so a retry is one rename back into a
//! queue's `ready/` (with its claim, in one step of the journal, when it has one). Every
//! change takes the store's lock, so a retry and a deletion of one record never cross.

use std::time::SystemTime;

use queue_core::storage::{from_unix_millis, unix_millis};
use queue_core::storage::{Page, PageRequest};
use queue_core::{Error, FailedJob, JobId, Pushed};

use super::journal::{Intent, Publish};
use super::{list, not_found, parse_names, read_if_there, remove_if_there, Disk, Result};
use crate::error::FileError;
use crate::format::{decode_failed, decode_name, new_id, now_ms, FailedName, ReadyName};
use crate::DRIVER;

impl Disk {
    fn failed_names(&self) -> Result<Vec<FailedName>> {
        Ok(parse_names(list(&self.failed)?, FailedName::parse).0)
    }

    fn read_failed(&self, name: &FailedName) -> Result<Option<FailedJob>> {
        let path = self.failed.join(name.file_name());
        let Some(bytes) = read_if_there(&path)? else {
            return Ok(None);
        };
        let job = match decode_failed(&bytes, name) {
            Ok(f) => FailedJob {
                id: name.file_name(),
                job_id: f.job_id,
                queue: f.job.queue,
                name: f.job.name,
                payload: f.job.payload,
                error: f.error,
                attempts: f.attempts,
                failed_at: from_unix_millis(f.failed_at),
                unique: f.job.unique,
            },
            Err(reason) => FailedJob {
                id: name.file_name(),
                job_id: String::new(),
                queue: String::new(),
                name: decode_name(&bytes).unwrap_or_default(),
                payload: bytes,
                error: format!(
                    "the failed record {} is damaged ({reason}); the payload is the whole file",
                    path.display()
                ),
                attempts: 0,
                failed_at: from_unix_millis(name.at),
                unique: None,
            },
        };
        Ok(Some(job))
    }

    /// A page of records, newest first; the cursor is the last record's id.
    pub(crate) fn failed_list(&self, page: &PageRequest) -> queue_core::Result<Page<FailedJob>> {
        let before = match &page.after {
            Some(cursor) => Some(FailedName::parse(cursor).ok_or_else(|| Error::Contract {
                driver: DRIVER,
                problem: format!("`{cursor}` is not a cursor of this failed store"),
            })?),
            None => None,
        };
        let limit = page.limit.max(1);
        let mut names = self.failed_names()?;
        if let Some(before) = &before {
            names.retain(|n| n < before);
        }
        let mut items = Vec::with_capacity(limit.min(names.len()));
        for name in names.iter().rev() {
            if items.len() >= limit {
                break;
            }
            if let Some(job) = self.read_failed(name)? {
                items.push(job);
            }
        }
        let next = match items.last() {
            Some(last) if items.len() == limit => Some(last.id.clone()),
            _ => None,
        };
        Ok(Page { items, next })
    }

    pub(crate) fn failed_get(&self, id: &str) -> Result<Option<FailedJob>> {
        match FailedName::parse(id) {
            Some(name) => self.read_failed(&name),
            None => Ok(None),
        }
    }

    pub(crate) fn failed_count(&self) -> Result<u64> {
        Ok(self.failed_names()?.len() as u64)
    }

    /// Puts a record back into its queue as a new job: one rename; with a claim, one step of
    /// the journal that claims the key again first, or a duplicate (the record stays) when
    /// another job holds it.
    pub(crate) fn failed_retry(&self, id: &str) -> Result<Option<Pushed>> {
        let Some(name) = FailedName::parse(id) else {
            return Ok(None);
        };
        let lock = self.lock()?;
        let path = self.failed.join(name.file_name());
        let Some(bytes) = read_if_there(&path)? else {
            return Ok(None);
        };
        let failed = decode_failed(&bytes, &name).map_err(|reason| FileError::Damaged {
            path: path.clone(),
            reason: format!("the failed record is damaged: {reason}"),
        })?;
        let queue = failed.job.queue;
        let paths = self.paths(&queue)?;
        self.ensure_queue(&queue, &paths)?;
        let ready = ReadyName {
            at: crate::format::clamp_ms(now_ms()),
            id: new_id(),
            attempts: 0,
        };
        let Some(unique) = failed.job.unique else {
            match self.rename_into(&queue, &paths, &path, &paths.ready.join(ready.file_name())) {
                Ok(()) => {}
                Err(e) if not_found(&e) => return Ok(None),
                Err(e) => return Err(FileError::io("rename", path)(e)),
            }
            self.sync_dir(&paths.ready)?;
            self.sync_dir(&self.failed)?;
            let id = JobId(ready.id.clone());
            self.remember_ready(&queue, ready);
            return Ok(Some(Pushed::Created(id)));
        };
        if let Some(holder) = self.claim_holder(&lock, &unique.key)? {
            if holder.failed.as_deref() != Some(id) {
                return Ok(Some(Pushed::Duplicate(JobId(holder.job_id))));
            }
        }
        let intent = Intent {
            id: new_id(),
            moves: Vec::new(),
            publish: vec![Publish {
                from: self.rel_path(&path),
                queue,
                job_id: ready.id.clone(),
                ready: ready.file_name(),
                key: Some(unique.key),
                retry_of: Some(id.to_owned()),
            }],
            counts: Vec::new(),
            sets: Vec::new(),
            plan: None,
            records: Vec::new(),
        };
        // `None` only if the record vanished under the lock, which nothing does.
        Ok(self.run(&lock, &intent)?.published.pop().flatten())
    }

    fn remove_failed(&self, names: impl IntoIterator<Item = FailedName>) -> Result<u64> {
        let mut removed = 0;
        for name in names {
            if remove_if_there(&self.failed.join(name.file_name()))? {
                removed += 1;
            }
        }
        if removed > 0 {
            self.sync_dir(&self.failed)?;
        }
        Ok(removed)
    }

    // A record holding a key releases it by being gone (see `claims`): deleting is enough.

    pub(crate) fn failed_forget(&self, id: &str) -> Result<bool> {
        let Some(name) = FailedName::parse(id) else {
            return Ok(false);
        };
        let _lock = self.lock()?;
        Ok(self.remove_failed([name])? == 1)
    }

    pub(crate) fn failed_flush(&self) -> Result<u64> {
        let _lock = self.lock()?;
        let names = self.failed_names()?;
        self.remove_failed(names)
    }

    pub(crate) fn failed_prune(&self, before: SystemTime) -> Result<u64> {
        let cutoff = unix_millis(before);
        let _lock = self.lock()?;
        let names = self.failed_names()?;
        self.remove_failed(names.into_iter().filter(|n| n.at < cutoff))
    }
}
