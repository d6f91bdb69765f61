//! Waiting jobs (`waiting/KEY`): jobs held back until their dependencies are met, the base of
//! chains, workflows and batch callbacks. Stored by `Effect::Hold`, released by
//! `Effect::Deps`, dropped by `Effect::Skip`, in a settle or in an apply with no lease.
//!
//! A waiting-job file ([`WaitingFile`]) is changed only under the store's lock, by a step of
//! the journal, and replaced whole (a staged file renamed over it), so readers take no lock.
//! A step cannot decide what its effects do before its moves are taken (a stale lease applies
//! none), nor decide it again after a crash (what it changed is then on disk, and the taken
//! files that said which moves were taken may be gone): so it decides once, into a [`Plan`]
//! written into its intent before any of it is carried out (see [`super::journal`]). A
//! released job is staged as a job file and published as a push is, with its claim.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::PathBuf;

use queue_core::storage::{check_effect_list, duration_millis, Guard};
use queue_core::{Effect, Error, NewJob, WaitingJob};

use super::journal::{Change, Intent, Locked, Plan, Publish, PutRecord, WaitOp};
use super::push::available_at;
use super::{
    make_dir, not_found, read_if_there, remove_if_there, sync_files, write_new, Disk, Result,
};
use crate::error::FileError;
use crate::format::{
    decode_waiting, encode_job, encode_record, encode_waiting, key_file_name, new_id, now_ms,
    record_file_name, JobFile, ReadyName, RecordFile, WaitingFile,
};
use crate::DRIVER;

/// An effect this driver knows. A call's effects are sorted out before anything changes, so
/// one this driver does not know (from a newer `queue-core`) is refused, never skipped.
#[derive(Debug)]
pub(super) enum Op {
    Push(NewJob),
    Count {
        group: String,
        deltas: Vec<(String, i64)>,
    },
    Hold(WaitingJob),
    Deps {
        key: String,
        delta: i64,
    },
    Skip {
        key: String,
    },
    /// A record of the settled job (only in a settle: an apply's effects are checked first).
    Record {
        kind: String,
        value: Vec<u8>,
        ttl: std::time::Duration,
    },
    /// A group's value: kept as a record that never expires (see [`value_owner`]).
    Value {
        group: String,
        name: String,
        value: Vec<u8>,
    },
    /// The settled job's new payload as it goes back to its queue (only in a settle that
    /// keeps the job: checked first); staged by the settle, not by [`Disk::stage_ops`].
    Payload(Vec<u8>),
}

/// The record kind group values are kept under.
pub(super) const VALUE_KIND: &str = "value";

/// The "job id" of the record that keeps value `name` of `group`: `values`, the group and
/// the name, each on a line of its own (a group's values share the prefix
/// [`values_prefix`]); no job id of a queue has a line break.
pub(super) fn value_owner(group: &str, name: &str) -> String {
    format!("{}{name}", values_prefix(group))
}

/// What the owners of every value of `group` start with.
pub(super) fn values_prefix(group: &str) -> String {
    format!("values\n{group}\n")
}

/// The effects as [`Op`]s, or `NotSupported` for one this driver does not know.
pub(super) fn sort_out(effects: Vec<Effect>) -> queue_core::Result<Vec<Op>> {
    effects
        .into_iter()
        .map(|effect| match effect {
            Effect::Push(job) => Ok(Op::Push(job)),
            Effect::Count { group, deltas } => Ok(Op::Count { group, deltas }),
            Effect::Hold(waiting) => Ok(Op::Hold(waiting)),
            Effect::Deps { key, delta } => Ok(Op::Deps { key, delta }),
            Effect::Skip { key } => Ok(Op::Skip { key }),
            Effect::Record { kind, value, ttl } => Ok(Op::Record { kind, value, ttl }),
            Effect::Value { group, name, value } => Ok(Op::Value { group, name, value }),
            Effect::Payload(payload) => Ok(Op::Payload(payload)),
            _ => Err(Error::NotSupported {
                driver: DRIVER,
                operation: "an effect this version of the file driver does not know",
            }),
        })
        .collect()
}

/// The effects of one settlement or one apply, their jobs staged in `tmp/`.
#[derive(Debug, Default)]
pub(super) struct Staged {
    pub(super) publish: Vec<Publish>,
    pub(super) counts: Vec<(String, Vec<(String, i64)>)>,
    pub(super) waits: Vec<WaitOp>,
    pub(super) records: Vec<PutRecord>,
}

impl Staged {
    /// The staged files, to delete when the step does not happen.
    pub(super) fn files(&self) -> impl Iterator<Item = &str> {
        let holds = self.waits.iter().filter_map(|op| match op {
            WaitOp::Hold { from, .. } => Some(from.as_str()),
            WaitOp::Deps { .. } | WaitOp::Skip { .. } => None,
        });
        let records = self.records.iter().map(|r| r.from.as_str());
        self.publish
            .iter()
            .map(|p| p.from.as_str())
            .chain(holds)
            .chain(records)
    }
}

impl WaitOp {
    fn key(&self) -> &str {
        match self {
            WaitOp::Hold { key, .. } | WaitOp::Deps { key, .. } | WaitOp::Skip { key } => key,
        }
    }
}

/// What waits under a key as a plan is decided.
struct Held<'a> {
    deps: i64,
    /// The staged hold it comes from; `None`: the file in `waiting/`.
    from: Option<&'a str>,
    /// Its dependencies changed.
    changed: bool,
}

/// One key as a plan is decided.
struct Slot<'a> {
    /// What `waiting/KEY` holds before the step.
    stored: Option<WaitingFile>,
    /// What waits under the key.
    held: Option<Held<'a>>,
    /// What the step releases from it.
    released: Option<Held<'a>>,
}

impl Disk {
    fn waiting_path(&self, key: &str) -> PathBuf {
        self.waiting.join(key_file_name(key))
    }

    /// The job waiting under `key`; a damaged file (or one of another key whose file name
    /// is the same hash, which nothing makes) counts as none, so that it stops no step.
    fn read_waiting(&self, key: &str) -> Result<Option<WaitingFile>> {
        let path = self.waiting_path(key);
        let Some(bytes) = read_if_there(&path)? else {
            return Ok(None);
        };
        match decode_waiting(&bytes) {
            Ok(waiting) if waiting.key == key => Ok(Some(waiting)),
            Ok(_) => {
                tracing::error!(path = %path.display(), "a waiting-job file of another key: no job counts as waiting under this one");
                Ok(None)
            }
            Err(reason) => {
                tracing::error!(path = %path.display(), %reason, "a damaged waiting-job file: no job counts as waiting under its key");
                Ok(None)
            }
        }
    }

    /// The dependencies left of the job waiting under `key` (read without the lock: files
    /// are replaced whole).
    pub(crate) fn waiting_deps(&self, key: &str) -> Result<Option<i64>> {
        Ok(self.read_waiting(key)?.map(|w| w.deps))
    }

    /// Writes the pushed and held jobs of `ops` to `tmp/PREFIX.K.push` and `tmp/PREFIX.K.hold`,
    /// and the records of the settled job `job` to `tmp/PREFIX.K.rec` (`K` the effect's
    /// index), added to `files` to be synced by the caller.
    pub(super) fn stage_ops(
        &self,
        prefix: &str,
        job: Option<&str>,
        ops: Vec<Op>,
        now: i64,
        files: &mut Vec<(File, PathBuf)>,
    ) -> Result<Staged> {
        let mut staged = Staged::default();
        for (k, op) in ops.into_iter().enumerate() {
            match op {
                Op::Push(job) => {
                    let tmp = self.tmp.join(format!("{prefix}.{k}.push"));
                    let job_id = new_id();
                    let publish = Publish {
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
                    staged.publish.push(publish);
                }
                Op::Hold(waiting) => {
                    // A queue no directory name can hold is refused now: at the release it
                    // would fail a step that cannot be undone.
                    self.paths(&waiting.job.queue)?;
                    let tmp = self.tmp.join(format!("{prefix}.{k}.hold"));
                    let job = waiting.job;
                    let file = write_new(
                        &tmp,
                        &encode_waiting(&WaitingFile {
                            key: waiting.key.clone(),
                            deps: i64::from(waiting.deps),
                            available: job.available,
                            job: JobFile {
                                queue: job.queue,
                                name: job.name,
                                unique: job.unique,
                                payload: job.payload,
                            },
                        }),
                    )?;
                    files.push((file, tmp.clone()));
                    staged.waits.push(WaitOp::Hold {
                        key: waiting.key,
                        deps: waiting.deps,
                        from: self.rel_path(&tmp),
                    });
                }
                Op::Deps { key, delta } => staged.waits.push(WaitOp::Deps { key, delta }),
                Op::Skip { key } => staged.waits.push(WaitOp::Skip { key }),
                Op::Count { group, deltas } => staged.counts.push((group, deltas)),
                Op::Record { kind, value, ttl } => {
                    let job_id = job.ok_or_else(|| FileError::Damaged {
                        path: self.records.clone(),
                        reason: "a record effect outside a settle names no job".into(),
                    })?;
                    let record = RecordFile {
                        job_id: job_id.to_owned(),
                        kind,
                        expires: now.saturating_add(duration_millis(ttl)),
                        value,
                    };
                    self.stage_put(format!("{prefix}.{k}.rec"), &record, files, &mut staged)?;
                }
                Op::Value { group, name, value } => {
                    let record = RecordFile {
                        job_id: value_owner(&group, &name),
                        kind: VALUE_KIND.to_owned(),
                        expires: i64::MAX,
                        value,
                    };
                    self.stage_put(format!("{prefix}.{k}.val"), &record, files, &mut staged)?;
                }
                // Checked before: a settle stages its payload itself, an apply has none.
                Op::Payload(_) => {
                    return Err(FileError::Damaged {
                        path: self.tmp.clone(),
                        reason: "a payload effect outside a settle names no job".into(),
                    })
                }
            }
        }
        Ok(staged)
    }

    /// Writes `record` to `tmp/NAME` (added to `files`, synced by the caller), to be put into
    /// `records/` by the step.
    fn stage_put(
        &self,
        name: String,
        record: &RecordFile,
        files: &mut Vec<(File, PathBuf)>,
        staged: &mut Staged,
    ) -> Result<()> {
        let tmp = self.tmp.join(name);
        let file = write_new(&tmp, &encode_record(record))?;
        files.push((file, tmp.clone()));
        staged.records.push(PutRecord {
            from: self.rel_path(&tmp),
            name: record_file_name(&record.job_id, &record.kind),
        });
        Ok(())
    }

    /// Decides what `ops`, the waiting-job effects of a step in call order, do: holds first,
    /// then the dependency changes summed per key, then skips. Reads `waiting/` as it is
    /// (the lock is held, and nothing of the step's plan is carried out yet), and stages
    /// every file the plan puts or publishes as `tmp/ID.N.wait` or `tmp/ID.N.job`, synced.
    pub(super) fn plan_waiting(
        &self,
        _: &Locked<'_>,
        id: &str,
        ops: &[&WaitOp],
        now: i64,
    ) -> Result<Plan> {
        let mut slots: BTreeMap<&str, Slot<'_>> = BTreeMap::new();
        for op in ops {
            let key = op.key();
            if !slots.contains_key(key) {
                let stored = self.read_waiting(key)?;
                let held = stored.as_ref().map(|w| Held {
                    deps: w.deps,
                    from: None,
                    changed: false,
                });
                slots.insert(
                    key,
                    Slot {
                        stored,
                        held,
                        released: None,
                    },
                );
            }
        }
        let mut plan = Plan::default();
        let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
        for op in ops {
            match op {
                WaitOp::Hold { key, deps, from } => match slots.get_mut(key.as_str()) {
                    Some(slot) if slot.held.is_none() => {
                        slot.held = Some(Held {
                            deps: i64::from(*deps),
                            from: Some(from),
                            changed: false,
                        });
                    }
                    _ => plan.unused.push(from.clone()),
                },
                WaitOp::Deps { key, delta } => {
                    let sum = sums.entry(key).or_default();
                    *sum = sum.saturating_add(*delta);
                }
                WaitOp::Skip { .. } => {}
            }
        }
        for (key, sum) in sums {
            let Some(slot) = slots.get_mut(key) else {
                continue;
            };
            let Some(held) = slot.held.as_mut() else {
                continue;
            };
            held.deps = held.deps.saturating_add(sum);
            held.changed |= sum != 0;
            if held.deps <= 0 {
                slot.released = slot.held.take();
            }
        }
        for op in ops {
            if let WaitOp::Skip { key } = op {
                if let Some(slot) = slots.get_mut(key.as_str()) {
                    slot.held = None;
                }
            }
        }

        let mut files = Vec::new();
        let staged = (|| -> Result<()> {
            for (n, (key, slot)) in slots.into_iter().enumerate() {
                let key = key.to_owned();
                if let Some(released) = slot.released {
                    let waiting = self.source(slot.stored, released.from)?;
                    plan.unused.extend(released.from.map(str::to_owned));
                    let path = self.tmp.join(format!("{id}.{n}.job"));
                    remove_if_there(&path)?;
                    files.push((write_new(&path, &encode_job(&waiting.job))?, path.clone()));
                    let job_id = new_id();
                    plan.changes.push(Change::Release {
                        key,
                        publish: Publish {
                            from: self.rel_path(&path),
                            queue: waiting.job.queue,
                            ready: ReadyName {
                                at: available_at(waiting.available, now),
                                id: job_id.clone(),
                                attempts: 0,
                            }
                            .file_name(),
                            job_id,
                            key: waiting.job.unique.map(|u| u.key),
                            retry_of: None,
                        },
                    });
                } else if let Some(held) = slot.held {
                    match (held.from, held.changed) {
                        // Waits on as it is.
                        (None, false) => {}
                        (Some(from), false) => plan.changes.push(Change::Put {
                            key,
                            from: from.to_owned(),
                        }),
                        (from, true) => {
                            let mut waiting = self.source(slot.stored, from)?;
                            waiting.deps = held.deps;
                            plan.unused.extend(from.map(str::to_owned));
                            let path = self.tmp.join(format!("{id}.{n}.wait"));
                            remove_if_there(&path)?;
                            files
                                .push((write_new(&path, &encode_waiting(&waiting))?, path.clone()));
                            plan.changes.push(Change::Put {
                                key,
                                from: self.rel_path(&path),
                            });
                        }
                    }
                } else if slot.stored.is_some() {
                    plan.changes.push(Change::Remove { key });
                }
            }
            if self.fsync {
                sync_files(&files)?;
            }
            Ok(())
        })();
        staged.map(|()| plan)
    }

    /// The waiting job a plan changes: the staged hold at `from`, or the stored one.
    fn source(&self, stored: Option<WaitingFile>, from: Option<&str>) -> Result<WaitingFile> {
        let Some(from) = from else {
            return stored.ok_or_else(|| FileError::Damaged {
                path: self.waiting.clone(),
                reason: "a waiting job vanished while the store was locked".into(),
            });
        };
        let path = self.abs_path(from);
        let bytes = read_if_there(&path)?.ok_or_else(|| FileError::Damaged {
            path: path.clone(),
            reason: "a staged waiting job vanished while its step was unfinished".into(),
        })?;
        decode_waiting(&bytes).map_err(|reason| FileError::Damaged { path, reason })
    }

    /// Carries out a plan. Each change is conditional on what is on disk (a file put once
    /// its staged file is gone, a publication once its source is), so carrying it out
    /// again changes nothing more.
    pub(super) fn carry_out(
        &self,
        lock: &Locked<'_>,
        plan: &Plan,
        dirs: &mut Vec<PathBuf>,
    ) -> Result<()> {
        for change in &plan.changes {
            match change {
                Change::Put { key, from } => {
                    let from = self.abs_path(from);
                    let to = self.waiting_path(key);
                    match fs::rename(&from, &to) {
                        Ok(()) => {}
                        Err(e) if not_found(&e) && fs::symlink_metadata(&from).is_ok() => {
                            // `waiting/` was removed by hand: made again.
                            make_dir(&self.waiting)?;
                            fs::rename(&from, &to).map_err(FileError::io("rename", &from))?;
                        }
                        // Put by an earlier run of the same intent.
                        Err(e) if not_found(&e) => continue,
                        Err(e) => return Err(FileError::io("rename", from)(e)),
                    }
                    dirs.push(self.waiting.clone());
                    dirs.push(self.tmp.clone());
                }
                Change::Release { key, publish } => {
                    if remove_if_there(&self.waiting_path(key))? {
                        dirs.push(self.waiting.clone());
                    }
                    self.publish(lock, publish, dirs)?;
                }
                Change::Remove { key } => {
                    if remove_if_there(&self.waiting_path(key))? {
                        dirs.push(self.waiting.clone());
                    }
                }
            }
        }
        for unused in &plan.unused {
            remove_if_there(&self.abs_path(unused))?;
        }
        Ok(())
    }

    /// Applies effects with no lease in one step of the journal (`Groups::apply`): pushes
    /// and held jobs staged before the lock, the plan for waiting jobs decided under it and
    /// written into the intent from the start.
    pub(crate) fn apply(&self, effects: Vec<Effect>) -> queue_core::Result<()> {
        self.apply_step(None, effects).map(|_| ())
    }

    /// Applies effects as [`apply`](Self::apply) does if `guard`'s counter holds
    /// `guard.expect` (`Groups::apply_if`), setting it to `guard.set` in the same step;
    /// otherwise changes nothing and returns false.
    pub(crate) fn apply_if(&self, guard: Guard, effects: Vec<Effect>) -> queue_core::Result<bool> {
        self.apply_step(Some(guard), effects)
    }

    /// An apply, guarded or not. The effects are checked and their jobs staged in `tmp/`
    /// (and synced) before the lock, as for an unguarded apply. The guard is checked under
    /// the lock, after the intents crashed processes left are finished and before anything
    /// is written there: a refused step deletes what it staged and writes nothing else. A
    /// winning step's intent carries the guard's new value (in `sets`) with the effects, so
    /// the counter is set in the same write of its group's file as the step's counter
    /// deltas, and finishing the intent after a crash does both or, as the file records the
    /// intent applied last, neither again.
    fn apply_step(&self, guard: Option<Guard>, effects: Vec<Effect>) -> queue_core::Result<bool> {
        check_effect_list(DRIVER, &effects, "an apply")?;
        let ops = sort_out(effects)?;
        if ops.is_empty() && guard.is_none() {
            return Ok(true);
        }
        let id = new_id();
        let mut files = Vec::new();
        let staged = self
            .stage_ops(&id, None, ops, now_ms(), &mut files)
            .and_then(|staged| {
                if self.fsync {
                    sync_files(&files)?;
                }
                Ok(staged)
            });
        let staged = match staged {
            Ok(staged) => staged,
            Err(e) => {
                for (_, tmp) in &files {
                    let _ = fs::remove_file(tmp);
                }
                return Err(e.into());
            }
        };
        drop(files);
        let planned = self.lock().and_then(|lock| {
            if let Some(guard) = &guard {
                if self.counter(&lock, &guard.group, &guard.counter)? != guard.expect {
                    return Ok(None);
                }
            }
            let plan = if staged.waits.is_empty() {
                None
            } else {
                let ops: Vec<&WaitOp> = staged.waits.iter().collect();
                Some(self.plan_waiting(&lock, &id, &ops, now_ms())?)
            };
            Ok(Some((lock, plan)))
        });
        let (lock, plan) = match planned {
            Ok(Some(planned)) => planned,
            refused_or_failed => {
                // No intent was written (the lock is released): nothing of the step
                // happened or will.
                for from in staged.files() {
                    let _ = fs::remove_file(self.abs_path(from));
                }
                return Ok(refused_or_failed.map(|_| false)?);
            }
        };
        let idle = plan
            .as_ref()
            .is_none_or(|p| p.changes.is_empty() && p.unused.is_empty());
        if staged.publish.is_empty()
            && staged.counts.is_empty()
            && staged.records.is_empty()
            && idle
            && guard.is_none()
        {
            // Dependency changes and skips of keys no job waits under: nothing to write.
            return Ok(true);
        }
        let sets = guard
            .map(|g| vec![(g.group, vec![(g.counter, g.set)])])
            .unwrap_or_default();
        self.run(
            &lock,
            &Intent {
                id,
                moves: Vec::new(),
                publish: staged.publish,
                counts: staged.counts,
                sets,
                plan,
                records: staged.records,
            },
        )?;
        Ok(true)
    }
}
