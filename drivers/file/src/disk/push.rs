//! Pushing: each job written whole to `tmp/`, synced, then renamed into its queue's `ready/`.
//!
//! A batch without claims takes no lock: one rename per job publishes it. A batch with claims
//! is one step of the journal, so each job is published with its claim or not at all.

use std::fs;
use std::path::{Path, PathBuf};

use queue_core::storage::{duration_millis, unix_millis};
use queue_core::{Availability, JobId, NewJob, Pushed};

use super::journal::{Intent, Publish};
use super::{sync_files, write_new, Disk, QueuePaths, Result};
use crate::error::FileError;
use crate::format::{clamp_ms, encode_job, new_id, now_ms, JobFile, ReadyName};

/// When a job pushed at `now` becomes available.
pub(super) fn available_at(available: Availability, now: i64) -> i64 {
    clamp_ms(match available {
        Availability::Now => now,
        Availability::After(d) => now.saturating_add(duration_millis(d)),
        Availability::At(t) => unix_millis(t),
    })
}

impl Disk {
    pub(crate) fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>> {
        if jobs.iter().all(|job| job.unique.is_none()) {
            let ids = self.push_plain(jobs)?;
            return Ok(ids.into_iter().map(Pushed::Created).collect());
        }
        self.push_claimed(jobs)
    }

    /// Writes a job to `tmp/` under `name`, ready to be renamed into its queue.
    pub(super) fn stage(&self, job: NewJob, tmp: &Path) -> Result<(fs::File, QueuePaths)> {
        let paths = self.paths(&job.queue)?;
        self.ensure_queue(&job.queue, &paths)?;
        let file = write_new(
            tmp,
            &encode_job(&JobFile {
                queue: job.queue,
                name: job.name,
                unique: job.unique,
                payload: job.payload,
            }),
        )?;
        Ok((file, paths))
    }

    fn push_plain(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        let now = now_ms();
        struct Staged {
            queue: String,
            paths: QueuePaths,
            name: ReadyName,
            tmp: PathBuf,
        }
        let mut staged: Vec<Staged> = Vec::with_capacity(jobs.len());
        let mut files = Vec::with_capacity(jobs.len());
        let result = (|| -> Result<()> {
            for job in jobs {
                let id = new_id();
                let tmp = self.tmp.join(format!("{id}.push"));
                let name = ReadyName {
                    at: available_at(job.available, now),
                    id,
                    attempts: 0,
                };
                let queue = job.queue.clone();
                let (file, paths) = self.stage(job, &tmp)?;
                staged.push(Staged {
                    queue,
                    paths,
                    name,
                    tmp: tmp.clone(),
                });
                files.push((file, tmp));
            }
            if self.fsync {
                sync_files(&files)?;
            }
            files.clear();
            Ok(())
        })();
        if let Err(e) = result {
            for s in &staged {
                let _ = fs::remove_file(&s.tmp);
            }
            return Err(e);
        }
        let mut dirs: Vec<&Path> = Vec::new();
        for (i, s) in staged.iter().enumerate() {
            let to = s.paths.ready.join(s.name.file_name());
            if let Err(e) = self.rename_into(&s.queue, &s.paths, &s.tmp, &to) {
                // All or nothing as far as we can: take back what was published (unless a
                // worker already took it) and drop what was not.
                for done in &staged[..i] {
                    let _ = fs::remove_file(done.paths.ready.join(done.name.file_name()));
                }
                for rest in &staged[i..] {
                    let _ = fs::remove_file(&rest.tmp);
                }
                return Err(FileError::io("rename", to)(e));
            }
            dirs.push(&s.paths.ready);
        }
        self.sync_dirs(dirs)?;
        let mut ids = Vec::with_capacity(staged.len());
        for s in staged {
            self.remember_ready(&s.queue, s.name.clone());
            ids.push(JobId(s.name.id));
        }
        Ok(ids)
    }

    /// Jobs with claims: a key held now is a duplicate at once (a read without the lock);
    /// the others are staged, then published under the lock, where each key is checked again.
    fn push_claimed(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>> {
        let now = now_ms();
        let id = new_id();
        let mut results: Vec<Option<Pushed>> = vec![None; jobs.len()];
        let mut publish = Vec::new();
        let mut slots = Vec::new();
        let mut files = Vec::new();
        let staged = (|| -> Result<()> {
            for (i, job) in jobs.into_iter().enumerate() {
                if let Some(unique) = &job.unique {
                    if let Some(holder) = self.claim_hint(&unique.key)? {
                        results[i] = Some(Pushed::Duplicate(JobId(holder.job_id)));
                        continue;
                    }
                }
                let tmp = self.tmp.join(format!("{id}.{i}.push"));
                let job_id = new_id();
                let p = Publish {
                    from: self.rel_path(&tmp),
                    queue: job.queue.clone(),
                    ready: ReadyName {
                        at: available_at(job.available, now),
                        id: job_id.clone(),
                        attempts: 0,
                    }
                    .file_name(),
                    job_id,
                    key: job.unique.as_ref().map(|u| u.key.clone()),
                    retry_of: None,
                };
                let (file, _) = self.stage(job, &tmp)?;
                files.push((file, tmp));
                publish.push(p);
                slots.push(i);
            }
            if self.fsync {
                sync_files(&files)?;
            }
            Ok(())
        })();
        if let Err(e) = staged {
            for (_, tmp) in &files {
                let _ = fs::remove_file(tmp);
            }
            return Err(e);
        }
        drop(files);
        if !publish.is_empty() {
            let lock = self.lock()?;
            let ran = self.run(
                &lock,
                &Intent {
                    id,
                    moves: Vec::new(),
                    publish,
                    counts: Vec::new(),
                    plan: None,
                },
            )?;
            for (slot, pushed) in slots.into_iter().zip(ran.published) {
                results[slot] = pushed;
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.ok_or_else(|| FileError::Damaged {
                    path: self.tmp.clone(),
                    reason: "a staged job vanished while the store was locked".into(),
                })
            })
            .collect()
    }
}
