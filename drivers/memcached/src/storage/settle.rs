//! The transitions of a reserved job, each fenced by its lease token: acknowledge (a batch),
//! retry and release, fail, extend (a batch), the push effects that go before them and the
//! records that go right after them.

use std::time::Duration;

use queue_core::storage::duration_millis;
use queue_core::{Effect, Error, Lease, LeaseStatus, Outcome, Result, Settle, Storage as _, Until};
use tracing::error;

use super::claims::Holder;
use super::{
    bucket, incremented, now_ms, sizes, tombstone, Held, MemcachedStorage, Timers, CAS_TRIES,
    KEY_ROOM,
};
use crate::client::{Cmd, Reply, Status};
use crate::error::MemcachedError;
use crate::record::{truncate_text, FailedRecord, JobRecord, JobState};

/// A settle with push effects renews a lease that ends sooner than this before pushing them,
/// so the lease cannot run out between the effects and the transition (workers' clocks may
/// disagree by up to 10 s).
const EFFECT_MARGIN_MS: i64 = 15_000;
/// What such a lease is renewed to.
const EFFECT_LEASE: Duration = Duration::from_secs(30);

/// The first refusal among the replies to a settle's record writes, as an error. Those
/// writes come after the transition, which stands: the settle reports the error.
fn refused(replies: &[Reply]) -> Option<Error> {
    replies.iter().find_map(|reply| match &reply.status {
        Status::Refused(m) => {
            error!(message = %m, "memcached refused a record of a settled job");
            let what = format!("write a record of a settled job: {m}");
            Some(MemcachedError::Refused(what).into())
        }
        _ => None,
    })
}

/// What one try of a compare-and-swap step came to.
enum Step {
    Done,
    Stale,
    /// Someone changed the record between the read and the write: read again.
    Again,
}

impl MemcachedStorage {
    /// Pushes a settle's follow-up jobs, before its transition, if its lease is current:
    /// false when it is stale (then nothing is pushed). Each follow-up is pushed with its
    /// claim, so a replay, or a second settle of the job after a crash in between, pushes
    /// nothing while the first follow-up holds its key.
    pub(super) async fn apply_effects(&self, settle: &Settle) -> Result<bool> {
        let lease = &settle.lease;
        let Some(id) = Self::lease_id(lease) else {
            return Ok(false);
        };
        let replies = self.run(vec![Cmd::gets(self.keys().job(id))]).await?;
        let Some(held) = self.check_lease(lease, id, &replies[0]) else {
            return Ok(false);
        };
        if let JobState::Reserved { deadline, .. } = held.record.state {
            if deadline - now_ms() < EFFECT_MARGIN_MS {
                let renewed = self.extend_leases(std::slice::from_ref(lease), EFFECT_LEASE);
                // A job marked for cancellation is still this lease's to settle.
                if !matches!(
                    renewed.await?[..],
                    [LeaseStatus::Held | LeaseStatus::Cancelled]
                ) {
                    return Ok(false);
                }
            }
        }
        let jobs = settle.effects.iter().filter_map(|effect| match effect {
            Effect::Push(job) => Some(job.clone()),
            _ => None,
        });
        self.push(jobs.collect()).await?;
        Ok(true)
    }

    /// Deletes finished jobs (one compare-and-swap delete each, in one request), writes the
    /// record effects of those deleted (`records[i]` for `leases[i]`, if given) in the next
    /// request, and releases their claims. For each lease, whether it was current.
    pub(super) async fn acknowledge(
        &self,
        leases: &[Lease],
        records: &[&[Effect]],
    ) -> Result<Vec<bool>> {
        let keys = self.keys();
        let mut done = vec![false; leases.len()];
        let mut pending: Vec<(usize, u64)> = leases
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Self::lease_id(l).map(|id| (i, id)))
            .collect();
        let mut claims = Vec::new();
        let mut failure = None;
        for _ in 0..CAS_TRIES {
            if pending.is_empty() {
                break;
            }
            let reads = pending.iter().map(|(_, id)| Cmd::gets(keys.job(*id)));
            let replies = self.run(reads.collect()).await?;
            let current: Vec<(usize, Held)> = pending
                .iter()
                .zip(&replies)
                .filter_map(|((i, id), reply)| {
                    Some((*i, self.check_lease(&leases[*i], *id, reply)?))
                })
                .collect();
            // Each delete and, in the same request, its count as if it succeeds: a process
            // killed after it leaves no count behind. Failures are undone below.
            let cmds = current.iter().flat_map(|(_, h)| {
                let reserved = keys.queue(&h.record.queue).reserved();
                [
                    Cmd::delete_cas(keys.job(h.id), h.cas),
                    sizes::minus(reserved, 1),
                ]
            });
            let replies = self.run(cmds.collect()).await?;
            let mut retry = Vec::new();
            // The records of the jobs deleted, first in the request right after the deletes.
            let mut after = Vec::new();
            for ((i, _), reply) in current.iter().zip(replies.iter().step_by(2)) {
                if reply.ok() {
                    let effects = records.get(*i).copied().unwrap_or_default();
                    after.extend(self.record_effects(&leases[*i].job_id.0, effects));
                }
            }
            let written = after.len();
            for ((i, held), reply) in current.iter().zip(replies.iter().step_by(2)) {
                let qk = keys.queue(&held.record.queue);
                if reply.status != Status::Ok {
                    after.push(sizes::plus(qk.reserved(), 1));
                    if reply.status == Status::Exists {
                        retry.push((*i, held.id));
                    }
                    continue;
                }
                done[*i] = true;
                after.push(Cmd::delete(keys.body(held.id)));
                if let Some(at) = held.record.timer() {
                    after.push(Cmd::decr(qk.timer_count(bucket(at)), 1));
                }
                if let Some(u) = held
                    .record
                    .unique
                    .as_ref()
                    .filter(|u| u.until != Until::Started)
                {
                    claims.push((u.key.clone(), Holder::Job(held.id)));
                }
            }
            let replies = self.run(after).await?;
            failure = failure.or_else(|| refused(&replies[..written]));
            pending = retry;
        }
        self.release_claims(claims).await?;
        match failure {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Retries, releases or fails a reserved job, writing the record effects among
    /// `effects` right after its own step; false when the lease is stale. Retry and release
    /// keep the job's claim; fail hands a claim held until the job succeeds to the failed
    /// job and releases one held until it leaves the queue.
    pub(super) async fn transition(
        &self,
        lease: &Lease,
        outcome: &Outcome,
        effects: &[Effect],
    ) -> Result<bool> {
        let Some(id) = Self::lease_id(lease) else {
            return Ok(false);
        };
        for _ in 0..CAS_TRIES {
            let step = match outcome {
                Outcome::Retry { delay } => {
                    self.release_once(lease, id, *delay, false, effects).await?
                }
                Outcome::Release { delay } => {
                    self.release_once(lease, id, *delay, true, effects).await?
                }
                Outcome::Fail { reason } => self.fail_once(lease, id, reason, effects).await?,
                Outcome::Ack => {
                    let leases = std::slice::from_ref(lease);
                    return Ok(self.acknowledge(leases, &[effects]).await?[0]);
                }
            };
            match step {
                Step::Done => return Ok(true),
                Step::Stale => return Ok(false),
                Step::Again => {}
            }
        }
        Err(MemcachedError::Contention(format!("settle job {id}")).into())
    }

    async fn release_once(
        &self,
        lease: &Lease,
        id: u64,
        delay: Duration,
        refund: bool,
        effects: &[Effect],
    ) -> Result<Step> {
        let now = now_ms();
        let at = now.saturating_add(duration_millis(delay));
        let qk = self.keys().queue(&lease.queue);
        let mut cmds = vec![Cmd::gets(self.keys().job(id)), Cmd::get(qk.gen())];
        let mut timers = Timers::default();
        if at <= now {
            // Allocated before we know the lease is good, to save a round trip.
            cmds.push(Cmd::incr(qk.tail(), 1));
        } else {
            // Listed before the record points at it; nothing changes if the bucket is full.
            timers.add(&lease.queue, at, id);
        }
        let replies = self.with_timers(&timers, cmds).await?;
        let slot = replies.get(2).map(|r| incremented(r, "allocate a slot"));
        let slot = slot.transpose()?;
        let Some(held) = self.check_lease(lease, id, &replies[0]) else {
            if let Some(n) = slot {
                self.run(vec![tombstone(qk.slot(n))]).await?;
            }
            return Ok(Step::Stale);
        };
        let gen = replies[1].number().unwrap_or(0);
        let (state, target) = match slot {
            Some(slot) => (JobState::Waiting { slot }, qk.waiting(gen)),
            None => (JobState::Delayed { at }, qk.delayed(gen)),
        };
        let attempts = held.record.attempts.saturating_sub(u32::from(refund));
        let record = JobRecord {
            gen,
            attempts,
            state,
            due: at,
            ..held.record.clone()
        };
        let mut cmds = vec![Cmd::cas(self.keys().job(id), record.encode(), held.cas, 0)];
        if let Some(n) = slot {
            cmds.push(Cmd::add(qk.slot(n), id.to_string().into_bytes(), 0));
        }
        // The counts in the same request, as if the compare-and-swap succeeds (a process
        // killed after it leaves no count behind); undone if it did not.
        cmds.push(sizes::minus(qk.reserved(), 1));
        cmds.push(sizes::plus(target.clone(), 1));
        let replies = self.run(cmds).await?;
        if !replies[0].ok() {
            // A slot written for nothing is a stale pointer, which reservers skip.
            self.run(vec![sizes::plus(qk.reserved(), 1), sizes::minus(target, 1)])
                .await?;
            return match &replies[0].status {
                Status::Exists => Ok(Step::Again),
                Status::Refused(m) => Err(MemcachedError::Refused(m.clone()).into()),
                _ => Ok(Step::Stale),
            };
        }
        // The records first in the request right after the compare-and-swap, then a new
        // payload over the job's body if it still has one (a job reserved, run and
        // acknowledged meanwhile by another worker has none to bring back; the payload is
        // the same job's, so a worker that read the old one runs the same job).
        let mut after = self.record_effects(&lease.job_id.0, effects);
        let written = after.len();
        for effect in effects {
            if let Effect::Payload(payload) = effect {
                after.push(Cmd::replace(self.keys().body(id), payload.clone()));
            }
        }
        if let Some(old) = held.record.timer() {
            after.push(Cmd::decr(qk.timer_count(bucket(old)), 1));
        }
        let failure = refused(&self.run(after).await?[..written]);
        if let (Some(n), false) = (slot, replies[1].ok()) {
            self.reslot(&lease.queue, &qk, vec![(id, n)]).await?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(Step::Done),
        }
    }

    async fn fail_once(
        &self,
        lease: &Lease,
        id: u64,
        reason: &str,
        effects: &[Effect],
    ) -> Result<Step> {
        let keys = self.keys();
        let replies = self
            .run(vec![
                Cmd::gets(keys.job(id)),
                Cmd::get(keys.body(id)),
                Cmd::incr(keys.failed_next(), 1),
            ])
            .await?;
        let Some(held) = self.check_lease(lease, id, &replies[0]) else {
            return Ok(Step::Stale);
        };
        let failed_id = incremented(&replies[2], "allocate a failed id")?;
        let payload = replies[1].value().map(<[u8]>::to_vec).unwrap_or_else(|| {
            error!(
                job = id,
                "the failed job's payload is gone (evicted?): storing it empty"
            );
            Vec::new()
        });
        let mut record = FailedRecord {
            failed_at: now_ms(),
            attempts: held.record.attempts,
            job_id: id.to_string(),
            queue: held.record.queue.clone(),
            name: held.record.name.clone(),
            error: String::new(),
            unique: held.record.unique.clone(),
            payload,
        };
        // The error is what may be cut for the record to fit in one item.
        let room = self
            .inner
            .item_size_max
            .saturating_sub(KEY_ROOM + record.encode().len());
        record.error = truncate_text(reason, room);
        // Stored before the job is deleted: a crash in between leaves a duplicate in the
        // failed store, never a lost job.
        let stored = self
            .run(vec![Cmd::set(keys.failed(failed_id), record.encode())])
            .await?;
        stored[0].checked("store the failed job")?;
        // The count in the same request, as if the delete succeeds; undone if it did not.
        let qk = keys.queue(&held.record.queue);
        let deleted = self
            .run(vec![
                Cmd::delete_cas(keys.job(id), held.cas),
                sizes::minus(qk.reserved(), 1),
            ])
            .await?;
        if !deleted[0].ok() {
            self.run(vec![
                Cmd::delete(keys.failed(failed_id)),
                sizes::plus(qk.reserved(), 1),
            ])
            .await?;
            return match deleted[0].status {
                Status::Exists => Ok(Step::Again),
                _ => Ok(Step::Stale),
            };
        }
        // The records first in the request right after the delete.
        let mut after = self.record_effects(&lease.job_id.0, effects);
        let written = after.len();
        after.push(Cmd::delete(keys.body(id)));
        if let Some(old) = held.record.timer() {
            after.push(Cmd::decr(qk.timer_count(bucket(old)), 1));
        }
        let failure = refused(&self.run(after).await?[..written]);
        // After the job's own step: a crash before this leaves the claim to a job that no
        // longer exists, which the next push of the key takes over.
        match held.record.unique {
            Some(u) if u.until == Until::Succeeded => {
                let to = Holder::Failed(failed_id, id.to_string());
                self.move_claim(&u.key, Holder::Job(id), to).await?;
            }
            Some(u) if u.until == Until::Terminal => {
                self.release_claims(vec![(u.key, Holder::Job(id))]).await?;
            }
            _ => {}
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(Step::Done),
        }
    }

    /// Renews leases to `duration` from now: the new deadline is listed first (if its bucket
    /// refuses it, nothing changes and the call fails), then each record is rewritten with
    /// compare-and-swap. A lease renewed whose job carries a cancel mark (read with the
    /// record) is reported `Cancelled`.
    pub(super) async fn extend_leases(
        &self,
        leases: &[Lease],
        duration: Duration,
    ) -> Result<Vec<LeaseStatus>> {
        let mut status = vec![LeaseStatus::Lost; leases.len()];
        let mut pending: Vec<(usize, u64)> = leases
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Self::lease_id(l).map(|id| (i, id)))
            .collect();
        for _ in 0..CAS_TRIES {
            if pending.is_empty() {
                return Ok(status);
            }
            let deadline = now_ms().saturating_add(duration_millis(duration));
            let mut timers = Timers::default();
            for (i, id) in &pending {
                timers.add(&leases[*i].queue, deadline, *id);
            }
            let reads = pending
                .iter()
                .map(|(_, id)| Cmd::gets(self.keys().job(*id)));
            let marks = pending
                .iter()
                .map(|(i, _)| self.read_mark(&leases[*i].job_id));
            let mut replies = self
                .with_timers(&timers, reads.chain(marks).collect())
                .await?;
            let marks = replies.split_off(pending.len());
            let marked: Vec<bool> = pending
                .iter()
                .zip(&marks)
                .map(|((i, _), reply)| self.marked(&leases[*i].job_id, reply))
                .collect();
            let current: Vec<(usize, Held, bool)> = pending
                .iter()
                .zip(&replies)
                .zip(marked)
                .filter_map(|(((i, id), reply), marked)| {
                    Some((*i, self.check_lease(&leases[*i], *id, reply)?, marked))
                })
                .collect();
            let cmds = current.iter().map(|(i, held, _)| {
                let state = JobState::Reserved {
                    token: leases[*i].token.clone(),
                    deadline,
                };
                let record = JobRecord {
                    state,
                    ..held.record.clone()
                };
                Cmd::cas(self.keys().job(held.id), record.encode(), held.cas, 0)
            });
            let replies = self.run(cmds.collect()).await?;
            let mut after = Vec::new();
            pending = Vec::new();
            for ((i, held, marked), reply) in current.iter().zip(&replies) {
                match reply.status {
                    Status::Ok => {
                        status[*i] = match marked {
                            true => LeaseStatus::Cancelled,
                            false => LeaseStatus::Held,
                        };
                        if let Some(old) = held.record.timer() {
                            let qk = self.keys().queue(&held.record.queue);
                            after.push(Cmd::decr(qk.timer_count(bucket(old)), 1));
                        }
                    }
                    Status::Exists => pending.push((*i, held.id)),
                    _ => {}
                }
            }
            self.run(after).await?;
        }
        match pending.first() {
            None => Ok(status),
            Some((_, id)) => Err(MemcachedError::Contention(format!("extend job {id}")).into()),
        }
    }
}
