//! Settling reserved jobs.
//!
//! A settlement with nothing but its own job to change is one rename or unlink, without the
//! store's lock: an acknowledgement of a job without a claim (unlink), a retry or release
//! (rename back into `ready/`). Everything else (a settlement with effects, an
//! acknowledgement that releases a claim, every failure) is a move of one step of the
//! journal, all of a batch in one step: taken by its token, so a stale lease changes nothing,
//! and finished after a crash.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use queue_core::storage::{check_effects, duration_millis};
use queue_core::{Lease, Outcome, ReserveRequest, Result, Settle, SettleReply, Settled, Until};

use super::journal::{failed_name, ClaimOp, Intent, Move, Record, Take, Then};
use super::waiting::{sort_out, Op, Staged};
use super::{
    guard, read_head, read_if_there, remove_if_there, sync_files, write_new, Disk, QueuePaths,
};
use crate::error::FileError;
use crate::format::{clamp_ms, decode_job, encode_job, new_id, now_ms, ReadyName, ReservedName};
use crate::DRIVER;

/// A settlement that changes nothing but its own job's file.
enum Plain {
    /// Unlink it.
    Ack,
    /// Rename it back into `ready/`, due after `delay`, with the attempt given back or not.
    Back { delay: Duration, refund: bool },
}

/// A settlement that goes through the journal, with its effects (their jobs staged in
/// `tmp/` before the lock).
struct Journaled {
    slot: usize,
    settle: Settle,
    paths: QueuePaths,
    ops: Vec<Op>,
    staged: Staged,
    /// The job's new version (`Effect::Payload`), staged in `tmp/`: relative to the root.
    rewrite: Option<String>,
}

impl Disk {
    pub(crate) fn settle(
        &self,
        settles: Vec<Settle>,
        fetch: Option<&ReserveRequest>,
    ) -> Result<SettleReply> {
        check_effects(DRIVER, &settles)?;
        // Every effect sorted out before anything changes: one this driver does not know is
        // refused, not skipped.
        let settles = settles
            .into_iter()
            .map(|mut settle| {
                let ops = sort_out(std::mem::take(&mut settle.effects))?;
                Ok((settle, ops))
            })
            .collect::<Result<Vec<_>>>()?;
        let now = now_ms();
        let mut settled = vec![Settled::Stale; settles.len()];
        let mut seen = HashSet::new();
        let mut journaled = Vec::new();
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (slot, (settle, ops)) in settles.into_iter().enumerate() {
            let lease = &settle.lease;
            // The same lease twice in one call: the second is stale.
            if !seen.insert((lease.job_id.0.clone(), lease.token.clone())) {
                continue;
            }
            let Ok(paths) = self.paths(&lease.queue) else {
                continue;
            };
            let plain = match settle.outcome {
                _ if !ops.is_empty() => None,
                Outcome::Ack if !self.holds_claim(lease, &paths)? => Some(Plain::Ack),
                Outcome::Retry { delay } => Some(Plain::Back {
                    delay,
                    refund: false,
                }),
                Outcome::Release { delay } => Some(Plain::Back {
                    delay,
                    refund: true,
                }),
                Outcome::Ack | Outcome::Fail { .. } => None,
            };
            if let Some(plain) = plain {
                settled[slot] = self.settle_plain(lease, &paths, plain, now, &mut dirs)?;
            } else {
                journaled.push(Journaled {
                    slot,
                    settle,
                    paths,
                    ops,
                    staged: Staged::default(),
                    rewrite: None,
                });
            }
        }
        self.sync_dirs(dirs.iter().map(PathBuf::as_path))?;
        if !journaled.is_empty() {
            for (slot, result) in self.settle_journaled(journaled, now)? {
                settled[slot] = result;
            }
        }
        let reserved = match fetch {
            Some(request) => self.reserve(request)?,
            None => Vec::new(),
        };
        Ok(SettleReply { settled, reserved })
    }

    /// Whether a reserved job holds a claim: known for this process's reservations, read
    /// from the job's header otherwise. False for a stale lease (which then settles stale).
    fn holds_claim(&self, lease: &Lease, paths: &QueuePaths) -> Result<bool> {
        if let Some(held) = guard(&self.held).get(&lease.token) {
            return Ok(held.unique.is_some());
        }
        let Some(found) = self.find_reserved(paths, &lease.job_id.0, &lease.token)? else {
            return Ok(false);
        };
        let head = read_head(&paths.reserved.join(found.file_name()))
            .ok()
            .flatten();
        Ok(head.is_some_and(|h| h.unique.is_some()))
    }

    /// One unlink or one rename back to `ready/`, no lock.
    fn settle_plain(
        &self,
        lease: &Lease,
        paths: &QueuePaths,
        plain: Plain,
        now: i64,
        dirs: &mut Vec<PathBuf>,
    ) -> Result<Settled> {
        let Plain::Back { delay, refund } = plain else {
            let removed =
                self.with_reserved(lease, paths, "remove", |path, _| std::fs::remove_file(path))?;
            guard(&self.held).remove(&lease.token);
            if removed.is_none() {
                return Ok(Settled::Stale);
            }
            dirs.push(paths.reserved.clone());
            return Ok(Settled::Applied);
        };
        let at = clamp_ms(now.saturating_add(duration_millis(delay)));
        let moved = self.with_reserved(lease, paths, "rename", |path, r| {
            let to = ReadyName {
                at,
                id: r.id.clone(),
                attempts: if refund {
                    r.attempts.saturating_sub(1)
                } else {
                    r.attempts
                },
            };
            std::fs::rename(path, paths.ready.join(to.file_name())).map(|()| to)
        })?;
        guard(&self.held).remove(&lease.token);
        let Some(to) = moved else {
            return Ok(Settled::Stale);
        };
        dirs.push(paths.ready.clone());
        dirs.push(paths.reserved.clone());
        self.remember_ready(&lease.queue, to);
        Ok(Settled::Applied)
    }

    /// The settlements of a batch that need the journal, in one step.
    fn settle_journaled(
        &self,
        mut batch: Vec<Journaled>,
        now: i64,
    ) -> Result<Vec<(usize, Settled)>> {
        let id = new_id();
        // Follow-up and held jobs are written before the lock, so it is not held across
        // their writes.
        let mut files = Vec::new();
        let staged = (|| -> Result<()> {
            for j in &mut batch {
                let (payloads, ops): (Vec<Op>, Vec<Op>) = std::mem::take(&mut j.ops)
                    .into_iter()
                    .partition(|op| matches!(op, Op::Payload(_)));
                let prefix = format!("{id}.{}", j.slot);
                let job = Some(j.settle.lease.job_id.0.as_str());
                j.staged = self.stage_ops(&prefix, job, ops, now, &mut files)?;
                // The last payload effect is the one the job keeps.
                if let Some(Op::Payload(payload)) = payloads.into_iter().last() {
                    let tmp = self.tmp.join(format!("{prefix}.payload"));
                    if let Some(file) =
                        self.stage_rewrite(&j.settle.lease, &j.paths, payload, &tmp)?
                    {
                        files.push((file, tmp.clone()));
                        j.rewrite = Some(self.rel_path(&tmp));
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
                let _ = std::fs::remove_file(tmp);
            }
            return Err(e);
        }
        drop(files);

        let lock = self.lock()?;
        let mut out = Vec::with_capacity(batch.len());
        let mut moves = Vec::with_capacity(batch.len());
        let mut slots = Vec::with_capacity(batch.len());
        for j in batch {
            let lease = &j.settle.lease;
            let Some(found) = self.find_reserved(&j.paths, &lease.job_id.0, &lease.token)? else {
                for from in j.staged.files().chain(j.rewrite.as_deref()) {
                    remove_if_there(&self.abs_path(from))?;
                }
                out.push((j.slot, Settled::Stale));
                continue;
            };
            slots.push(j.slot);
            moves.push(self.settle_move(j, &found, now));
        }
        if !moves.is_empty() {
            let ran = self.run(
                &lock,
                &Intent {
                    id,
                    moves,
                    publish: Vec::new(),
                    counts: Vec::new(),
                    sets: Vec::new(),
                    plan: None,
                    records: Vec::new(),
                },
            )?;
            for (slot, taken) in slots.into_iter().zip(ran.taken) {
                out.push((
                    slot,
                    if taken {
                        Settled::Applied
                    } else {
                        Settled::Stale
                    },
                ));
            }
        }
        Ok(out)
    }

    /// The move of one settlement of a reservation found as `found`.
    fn settle_move(&self, j: Journaled, found: &ReservedName, now: i64) -> Move {
        let lease = j.settle.lease;
        let unique = match guard(&self.held).get(&lease.token) {
            Some(held) => held.unique.clone(),
            None => read_head(&j.paths.reserved.join(found.file_name()))
                .ok()
                .flatten()
                .and_then(|h| h.unique),
        };
        let job_id = lease.job_id.0.clone();
        let release = |key: &str| ClaimOp::Release {
            key: key.to_owned(),
            job_id: job_id.clone(),
        };
        let ready = |delay, attempts| Then::Ready {
            queue: lease.queue.clone(),
            name: ReadyName {
                at: clamp_ms(now.saturating_add(duration_millis(delay))),
                id: job_id.clone(),
                attempts,
            }
            .file_name(),
        };
        let (then, claims) = match j.settle.outcome {
            Outcome::Ack => (
                Then::Delete,
                unique.iter().map(|u| release(&u.key)).collect(),
            ),
            Outcome::Retry { delay } => (ready(delay, found.attempts), Vec::new()),
            Outcome::Release { delay } => {
                (ready(delay, found.attempts.saturating_sub(1)), Vec::new())
            }
            Outcome::Fail { reason } => {
                let failed_id = failed_name(now).file_name();
                let claims = unique
                    .iter()
                    .map(|u| match u.until {
                        Until::Succeeded => ClaimOp::ToFailed {
                            key: u.key.clone(),
                            job_id: job_id.clone(),
                            failed: failed_id.clone(),
                        },
                        Until::Started | Until::Terminal => release(&u.key),
                    })
                    .collect();
                let record = Record {
                    queue: lease.queue.clone(),
                    job_id: job_id.clone(),
                    attempts: found.attempts,
                    failed_at: now,
                    failed_id,
                    error: reason,
                };
                (Then::Fail(record), claims)
            }
        };
        Move {
            take: Take::Reservation {
                queue: lease.queue.clone(),
                job_id: job_id.clone(),
                token: lease.token.clone(),
            },
            then,
            claims,
            counts: j.staged.counts,
            publish: j.staged.publish,
            waits: j.staged.waits,
            replaces: false,
            records: j.staged.records,
            rewrite: j.rewrite,
        }
    }

    /// Writes the reserved job's file with a new payload (same queue, name and claim) to
    /// `tmp`, for the step to put in `ready/` in place of the old one; `None` if the
    /// reservation is gone (the lease is stale, and the step will say so).
    fn stage_rewrite(
        &self,
        lease: &Lease,
        paths: &QueuePaths,
        payload: Vec<u8>,
        tmp: &Path,
    ) -> Result<Option<std::fs::File>> {
        // A heartbeat of this process may rename the file meanwhile (a new deadline, the
        // same token): look again a few times.
        for _ in 0..5 {
            let Some(found) = self.find_reserved(paths, &lease.job_id.0, &lease.token)? else {
                return Ok(None);
            };
            let path = paths.reserved.join(found.file_name());
            let Some(bytes) = read_if_there(&path)? else {
                continue;
            };
            let mut job = decode_job(&bytes).map_err(|reason| FileError::Damaged {
                path: path.clone(),
                reason,
            })?;
            job.payload = payload;
            return Ok(Some(write_new(tmp, &encode_job(&job))?));
        }
        Ok(None)
    }
}
