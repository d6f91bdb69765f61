//! Pushing: each job written whole to `tmp/`, synced, then renamed into its queue's `ready/`.
//!
//! A batch without claims takes no lock: one rename per job publishes it. A batch with claims
//! is one step of the journal, so each job is published with its claim or not at all.
//!
//! A job whose claim asks to replace (`Unique::replace`) finds its key's holder under the
//! lock. If the holder is queued (its file in `ready/`), a move of the step takes that file
//! (a rename into `tmp/`, which fails if a worker reserved it first: then the push is a
//! duplicate) and publishes the job's new version, staged and synced in `tmp/` before the
//! intent: the same id, attempts, queue and claim, the push's name, payload and due time.
//! Finishing the step after a crash publishes the new version exactly when the old one was
//! taken, so the job is one version or the other, never both nor neither.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use queue_core::storage::{duration_millis, unix_millis};
use queue_core::{Availability, JobId, NewJob, Pushed, Unique, Until};

use super::journal::{Intent, Locked, Move, Publish, Take, Then};
use super::{guard, list, remove_if_there, sync_files, write_new, Disk, QueuePaths, Result};
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
    /// The jobs of a key that one of them asks to replace with go as one [`Replacing`].
    fn push_claimed(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>> {
        let now = now_ms();
        let id = new_id();
        let mut results: Vec<Option<Pushed>> = vec![None; jobs.len()];
        let (singles, mut groups) = Replacing::split(jobs, now);
        let mut publish = Vec::new();
        let mut slots = Vec::new();
        let mut files = Vec::new();
        let staged = (|| -> Result<()> {
            for (i, job) in singles {
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
                slots.push(Slot::Single(i));
            }
            for group in &mut groups {
                match self.claim_hint(&group.key)? {
                    // A failed job cannot be replaced: a duplicate at once.
                    Some(holder) if holder.failed.is_some() => {
                        group.outcome = Some(Pushed::Duplicate(JobId(holder.job_id)));
                    }
                    // Queued or reserved: looked at under the lock.
                    Some(_) => {}
                    None => {
                        let (file, p) = self.stage_new(&id, group)?;
                        files.push((file, self.abs_path(&p.from)));
                        group.created = Some(p);
                    }
                }
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
        if !publish.is_empty() || groups.iter().any(|g| g.outcome.is_none()) {
            let lock = self.lock()?;
            let mut moves = Vec::new();
            let mut replaced = Vec::new();
            let decided = self.decide_groups(&lock, &id, &mut groups, &mut moves, &mut replaced);
            if let Err(e) = decided {
                let staged = publish
                    .iter()
                    .chain(moves.iter().flat_map(|m: &Move| &m.publish))
                    .chain(groups.iter().filter_map(|g| g.created.as_ref()));
                for p in staged {
                    let _ = fs::remove_file(self.abs_path(&p.from));
                }
                return Err(e);
            }
            for (g, group) in groups.iter_mut().enumerate() {
                if let Some(p) = group.created.take() {
                    publish.push(p);
                    slots.push(Slot::Group(g));
                }
            }
            let ran = self.run(
                &lock,
                &Intent {
                    id,
                    moves,
                    publish,
                    counts: Vec::new(),
                    sets: Vec::new(),
                    plan: None,
                    records: Vec::new(),
                },
            )?;
            drop(lock);
            for (slot, pushed) in slots.into_iter().zip(ran.published) {
                match slot {
                    Slot::Single(i) => results[i] = pushed,
                    Slot::Group(g) => groups[g].outcome = pushed,
                }
            }
            for (old, taken) in replaced.into_iter().zip(ran.taken) {
                let holder = JobId(old.name.id.clone());
                groups[old.group].outcome = Some(if taken {
                    // The old version is gone; the new one is in the listing (published).
                    self.forget_ready(&old.queue, &old.name);
                    guard(&self.heads).remove(&old.name.id);
                    Pushed::Replaced(holder)
                } else {
                    // Reserved between the look and the take.
                    Pushed::Duplicate(holder)
                });
            }
        }
        for group in groups {
            for (i, replace) in &group.members {
                results[*i] = group.outcome.as_ref().map(|lead| match lead {
                    Pushed::Created(new) if *i == group.members[0].0 => {
                        Pushed::Created(new.clone())
                    }
                    Pushed::Created(id) | Pushed::Replaced(id) if *replace => {
                        Pushed::Replaced(id.clone())
                    }
                    other => Pushed::Duplicate(other.id().clone()),
                });
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

    /// Under the lock, what becomes of each group not decided yet by its key's holder: free,
    /// its new job is published (staged now if it was not); held by a queued job, that job's
    /// new version is staged and a move replaces it; held otherwise, a duplicate.
    fn decide_groups(
        &self,
        lock: &Locked<'_>,
        id: &str,
        groups: &mut [Replacing],
        moves: &mut Vec<Move>,
        replaced: &mut Vec<OldVersion>,
    ) -> Result<()> {
        let mut files = Vec::new();
        for (g, group) in groups.iter_mut().enumerate() {
            if group.outcome.is_some() {
                continue;
            }
            let Some(holder) = self.claim_holder(lock, &group.key)? else {
                if group.created.is_none() {
                    let (file, p) = self.stage_new(id, group)?;
                    files.push((file, self.abs_path(&p.from)));
                    group.created = Some(p);
                }
                continue;
            };
            if let Some(p) = group.created.take() {
                remove_if_there(&self.abs_path(&p.from))?;
            }
            let queued = match holder.failed {
                None => self.find_queued(&holder.queue, &holder.job_id, &group.key)?,
                Some(_) => None,
            };
            let Some((paths, name, unique)) = queued else {
                group.outcome = Some(Pushed::Duplicate(JobId(holder.job_id)));
                continue;
            };
            let version = ReadyName {
                at: group.at,
                id: holder.job_id.clone(),
                attempts: name.attempts,
            };
            let tmp = self
                .tmp
                .join(format!("{id}.{}.new.push", group.members[0].0));
            let file = write_new(
                &tmp,
                &encode_job(&JobFile {
                    queue: holder.queue.clone(),
                    name: group.name.clone(),
                    unique: Some(unique),
                    payload: group.payload.clone(),
                }),
            )?;
            moves.push(Move {
                take: Take::File {
                    path: self.rel_path(&paths.ready.join(name.file_name())),
                },
                then: Then::Delete,
                claims: Vec::new(),
                counts: Vec::new(),
                // The claim stays as it is: held by the same job.
                publish: vec![Publish {
                    from: self.rel_path(&tmp),
                    queue: holder.queue.clone(),
                    ready: version.file_name(),
                    job_id: holder.job_id.clone(),
                    key: None,
                    retry_of: None,
                }],
                waits: Vec::new(),
                replaces: true,
                records: Vec::new(),
                rewrite: None,
            });
            files.push((file, tmp));
            replaced.push(OldVersion {
                group: g,
                queue: holder.queue,
                name,
            });
        }
        if self.fsync && !files.is_empty() {
            sync_files(&files)?;
            // The new versions' names in `tmp/` are durable before the intent that takes
            // the old ones: a taken move always finds the version it publishes.
            self.sync_dir(&self.tmp)?;
        }
        Ok(())
    }

    /// Stages the job a group pushes when its key is free: the first job's queue and claim,
    /// the last replacing job's name, payload and due time.
    fn stage_new(&self, id: &str, group: &Replacing) -> Result<(fs::File, Publish)> {
        let lead = group.members[0].0;
        let tmp = self.tmp.join(format!("{id}.{lead}.push"));
        let job_id = new_id();
        let p = Publish {
            from: self.rel_path(&tmp),
            queue: group.queue.clone(),
            ready: ReadyName {
                at: group.at,
                id: job_id.clone(),
                attempts: 0,
            }
            .file_name(),
            job_id,
            key: Some(group.key.clone()),
            retry_of: None,
        };
        let job = NewJob {
            queue: group.queue.clone(),
            name: group.name.clone(),
            payload: group.payload.clone(),
            available: Availability::Now,
            unique: Some(Unique::new(&group.key).until(group.until)),
        };
        let (file, _) = self.stage(job, &tmp)?;
        Ok((file, p))
    }

    /// The file in `ready/` of the job `job_id` of `queue` (queued: waiting or delayed), with
    /// its claim on `key` as its file holds it; `None` if it is not there (reserved, or
    /// gone) or its file is unreadable. This process's listing is tried first, else
    /// `ready/` is listed. Under the lock, so the job cannot leave but by a reservation, which
    /// the move's take then sees.
    fn find_queued(
        &self,
        queue: &str,
        job_id: &str,
        key: &str,
    ) -> Result<Option<(QueuePaths, ReadyName, Unique)>> {
        let Ok(paths) = self.paths(queue) else {
            return Ok(None);
        };
        let known = self
            .listings()
            .get(queue)
            .and_then(|l| l.ready.iter().find(|r| r.id == job_id).cloned());
        let known = known.filter(|r| paths.ready.join(r.file_name()).exists());
        let found = match known {
            Some(name) => Some(name),
            None => list(&paths.ready)?
                .iter()
                .filter_map(|n| n.to_str().and_then(ReadyName::parse))
                .find(|r| r.id == job_id),
        };
        let Some(name) = found else {
            return Ok(None);
        };
        let unique = self
            .head(&paths.ready, &name.file_name(), &name.id)
            .and_then(|head| head.unique)
            .filter(|u| u.key == key);
        Ok(unique.map(|u| (paths, name, u)))
    }
}

/// Where a staged publication's result goes.
enum Slot {
    Single(usize),
    Group(usize),
}

/// The old version of a job a move replaces.
struct OldVersion {
    group: usize,
    queue: String,
    name: ReadyName,
}

/// The jobs of one call with one key, one of which at least asks to replace (`replace`):
/// as in the memory driver, each in turn replaces what the one before left queued, so they
/// come to one job. If the key is free, the first is pushed and the later ones replace it;
/// if a queued job holds it, the replacing ones replace that job; else all are duplicates.
/// Either way the job holding the key ends with the last replacing job's name, payload and
/// due time.
struct Replacing {
    key: String,
    /// Index in the call, and whether it asks to replace.
    members: Vec<(usize, bool)>,
    /// The first job's queue and claim.
    queue: String,
    until: Until,
    /// The last replacing job's name, payload and due time.
    name: String,
    payload: Vec<u8>,
    at: i64,
    /// The job staged for a free key (its first job's queue and claim).
    created: Option<Publish>,
    /// What became of the first job, once known (the others follow from it).
    outcome: Option<Pushed>,
}

impl Replacing {
    /// Splits a call into the jobs that go alone (no claim, or a key none of them asks to
    /// replace) and the groups of the keys one of them asks to replace, in call order.
    fn split(jobs: Vec<NewJob>, now: i64) -> (Vec<(usize, NewJob)>, Vec<Replacing>) {
        let keys: HashSet<String> = jobs
            .iter()
            .filter_map(|j| j.unique.as_ref().filter(|u| u.replace))
            .map(|u| u.key.clone())
            .collect();
        let mut singles = Vec::with_capacity(jobs.len());
        let mut groups: Vec<Replacing> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        for (i, job) in jobs.into_iter().enumerate() {
            let Some(unique) = job.unique.as_ref().filter(|u| keys.contains(&u.key)) else {
                singles.push((i, job));
                continue;
            };
            let replace = unique.replace;
            let g = *group_of.entry(unique.key.clone()).or_insert_with(|| {
                groups.push(Replacing {
                    key: unique.key.clone(),
                    members: Vec::new(),
                    queue: job.queue.clone(),
                    until: unique.until,
                    name: String::new(),
                    payload: Vec::new(),
                    at: 0,
                    created: None,
                    outcome: None,
                });
                groups.len() - 1
            });
            let group = &mut groups[g];
            group.members.push((i, replace));
            if replace {
                group.name = job.name;
                group.payload = job.payload;
                group.at = available_at(job.available, now);
            }
        }
        (singles, groups)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_call_splits_into_singles_and_keys_replaced() {
        let at = |ms: u64| Availability::At(std::time::UNIX_EPOCH + Duration::from_millis(ms));
        let job = |queue: &str, name: &str, key: Option<Unique>| NewJob {
            unique: key,
            ..NewJob::new(queue, name, name.as_bytes().to_vec())
        };
        let k1 = || Unique::new("k1").until(Until::Started);
        let k2 = || Unique::new("k2");
        let (singles, groups) = Replacing::split(
            vec![
                job("q1", "a", Some(k1())),
                job("q2", "b", Some(k2().replacing())).available(at(5)),
                job("q3", "c", Some(k1().replacing())).available(at(7)),
                job("q", "d", None),
                job("q", "e", Some(Unique::new("k3"))),
                job("q4", "f", Some(k2())),
                job("q5", "g", Some(k2().until(Until::Succeeded).replacing())).available(at(9)),
            ],
            1,
        );
        let singles: Vec<(usize, String)> = singles.into_iter().map(|(i, j)| (i, j.name)).collect();
        assert_eq!(singles, [(3, "d".to_owned()), (4, "e".to_owned())]);
        let seen: Vec<_> = groups
            .iter()
            .map(|g| {
                (
                    g.key.as_str(),
                    g.members.clone(),
                    g.queue.as_str(),
                    g.until,
                    g.name.as_str(),
                    g.payload.as_slice(),
                    g.at,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                // The first job's queue and claim; the last replacing job's content.
                (
                    "k1",
                    vec![(0, false), (2, true)],
                    "q1",
                    Until::Started,
                    "c",
                    b"c".as_slice(),
                    7
                ),
                (
                    "k2",
                    vec![(1, true), (5, false), (6, true)],
                    "q2",
                    Until::Terminal,
                    "g",
                    b"g".as_slice(),
                    9
                ),
            ]
        );
    }
}
