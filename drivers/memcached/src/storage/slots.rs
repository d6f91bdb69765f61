//! The slot queue: claiming slots with a compare-and-swap of the head, reserving the jobs in
//! them, skipping slots a pusher never wrote, recovering a lost head counter, and giving
//! jobs whose slot was skipped a new one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use queue_core::storage::{duration_millis, new_token};
use queue_core::{Error, Reserved, Result, Until};
use tracing::{debug, error, warn};

use super::claims::Holder;
use super::{
    incremented, parse_slot, sizes, tombstone, Ends, Held, MemcachedStorage, Timers, CAS_TRIES,
    MAX_CLAIM,
};
use crate::client::{Cmd, Reply, Status};
use crate::error::MemcachedError;
use crate::keys::QueueKeys;
use crate::record::{JobRecord, JobState};

/// Races for the head a reservation may lose in a row before it gives up.
const CLAIM_TRIES: usize = 4 * CAS_TRIES;
/// The longest pause between two tries of a claim.
const CLAIM_BACKOFF_MAX_MS: u64 = 16;

/// A random pause before the next try of a claim after `lost` races lost in a row: up to
/// 1, 2, 4, ... [`CLAIM_BACKOFF_MAX_MS`] ms, so reservers that lost together do not all
/// come back together.
fn claim_backoff(lost: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let cap = 1u64 << lost.saturating_sub(2).min(CLAIM_BACKOFF_MAX_MS.ilog2());
    // A fresh `RandomState` is seeded anew on every call: cheap jitter without a dependency.
    let noise = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_micros(noise % (cap * 1000 + 1))
}

impl MemcachedStorage {
    /// Takes jobs from `queue`'s slots until `out` holds `limit` or the queue is empty.
    pub(super) async fn take_from_queue(
        &self,
        queue: &str,
        mut ends: Ends,
        now: i64,
        lease: Duration,
        limit: usize,
        out: &mut Vec<Reserved>,
    ) -> Result<()> {
        let qk = self.keys().queue(queue);
        // Races lost in a row for the head. Each lost race means another reserver claimed
        // those slots, so the queue moves on; backing off with jitter spreads the reservers
        // out, and a reservation that still keeps losing returns what it has.
        let mut lost: u32 = 0;
        while out.len() < limit {
            let Some((head, head_cas)) = ends.head else {
                if ends.tail == 0 {
                    return Ok(());
                }
                self.recover_head(queue, &qk, ends.tail).await?;
                ends = self.read_ends(&qk).await?;
                continue;
            };
            if head > ends.tail {
                self.reset_head(queue, &qk, head, head_cas, ends.tail)
                    .await?;
                ends = self.read_ends(&qk).await?;
                continue;
            }
            if head == ends.tail {
                return Ok(());
            }
            let want = ((limit - out.len()) as u64)
                .min(ends.tail - head)
                .min(MAX_CLAIM);
            let claimed = self
                .run(vec![Cmd::cas(
                    qk.head(),
                    (head + want).to_string().into_bytes(),
                    head_cas,
                    0,
                )])
                .await?;
            match &claimed[0].status {
                Status::Ok => {
                    lost = 0;
                    ends.head = claimed[0].cas.map(|cas| (head + want, cas));
                    let (first, last) = (head + 1, head + want);
                    self.take_slots(queue, &qk, ends.gen, (first, last), now, lease, out)
                        .await?;
                    if ends.head.is_none() {
                        ends = self.read_ends(&qk).await?;
                    }
                }
                Status::Refused(message) => {
                    return Err(MemcachedError::Refused(message.clone()).into())
                }
                _ => {
                    lost += 1;
                    if lost as usize > CLAIM_TRIES {
                        if out.is_empty() {
                            let claim = format!("claim on {queue}");
                            return Err(MemcachedError::Contention(claim).into());
                        }
                        // Never drop jobs already reserved: they would wait out their lease.
                        debug!(%queue, taken = out.len(), "stopped claiming after losing many races for the head");
                        return Ok(());
                    }
                    if lost > 1 {
                        tokio::time::sleep(claim_backoff(lost)).await;
                    }
                    ends = self.read_ends(&qk).await?;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn read_ends(&self, qk: &QueueKeys) -> Result<Ends> {
        let replies = self
            .run(vec![
                Cmd::gets(qk.head()),
                Cmd::get(qk.tail()),
                Cmd::get(qk.gen()),
            ])
            .await?;
        Ok(Self::ends(&replies))
    }

    pub(super) fn ends(replies: &[Reply]) -> Ends {
        Ends {
            head: replies[0].number().zip(replies[0].cas),
            tail: replies[1].number().unwrap_or(0),
            gen: replies[2].number().unwrap_or(0),
        }
    }

    /// Reserves the jobs in the claimed slots `first..=last` (ours alone: the head moved past
    /// them with a compare-and-swap).
    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    async fn take_slots(
        &self,
        queue: &str,
        qk: &QueueKeys,
        gen: u64,
        (first, last): (u64, u64),
        now: i64,
        lease: Duration,
        out: &mut Vec<Reserved>,
    ) -> Result<()> {
        let replies = self.run((first..=last).map(|n| Cmd::get(qk.slot(n))).collect());
        // slot -> job id (None: a tombstone or garbage)
        let mut found: BTreeMap<u64, Option<u64>> = BTreeMap::new();
        let mut missing = Vec::new();
        for (n, reply) in (first..=last).zip(&replies.await?) {
            match reply.value() {
                Some(v) => drop(found.insert(n, parse_slot(v))),
                None => missing.push(n),
            }
        }
        if !missing.is_empty() {
            self.wait_for_slots(queue, qk, missing, &mut found).await?;
        }
        let entries: Vec<(u64, u64)> = found
            .iter()
            .filter_map(|(n, id)| id.map(|id| (*n, id)))
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        // The lease deadlines are listed with the reads, before any record changes: if the
        // bucket refuses them, the jobs go back to the tail at once and nothing else changed.
        let deadline = now.saturating_add(duration_millis(lease));
        let mut timers = Timers::default();
        let mut cmds = Vec::with_capacity(entries.len() * 2);
        for (_, id) in &entries {
            timers.add(queue, deadline, *id);
            cmds.push(Cmd::gets(self.keys().job(*id)));
            cmds.push(Cmd::get(self.keys().body(*id)));
        }
        let replies = match self.with_timers(&timers, cmds).await {
            Ok(replies) => replies,
            Err(e) => {
                self.reslot(queue, qk, entries.iter().map(|(n, id)| (*id, *n)).collect())
                    .await?;
                return Err(e);
            }
        };
        let mut takes: Vec<(u64, Held, Vec<u8>, String)> = Vec::new();
        let mut cleanup: Vec<Cmd> = Vec::new();
        for ((n, id), pair) in entries.iter().zip(replies.chunks(2)) {
            cleanup.push(Cmd::delete(qk.slot(*n)));
            let Some((cas, record)) = self.decode_job(*id, &pair[0]) else {
                continue;
            };
            match (
                record.state == JobState::Waiting { slot: *n },
                pair[1].value(),
            ) {
                // A stale pointer: the job moved on (released again, re-slotted).
                (false, _) => {}
                // Cleared while waiting: `clear` already took it off the counts.
                _ if record.gen < gen => cleanup.extend([
                    Cmd::delete_cas(self.keys().job(*id), cas),
                    Cmd::delete(self.keys().body(*id)),
                ]),
                (true, None) => {
                    error!(job = id, %queue, "a waiting job's payload is gone (evicted?): dropping the job");
                    cleanup.push(Cmd::delete_cas(self.keys().job(*id), cas));
                    cleanup.push(sizes::minus(qk.waiting(record.gen), 1));
                }
                (true, Some(body)) => {
                    let held = Held {
                        id: *id,
                        cas,
                        record,
                    };
                    takes.push((*n, held, body.to_vec(), new_token()));
                }
            }
        }
        // The records, then (as if every compare-and-swap succeeds; the rare failure is
        // undone below) the counts and the slot deletions.
        let mut cmds: Vec<Cmd> = takes
            .iter()
            .map(|(_, held, _, token)| held.reserve(self.keys(), token, deadline))
            .collect();
        let mut per_gen: BTreeMap<u64, u64> = BTreeMap::new();
        for (_, held, _, _) in &takes {
            *per_gen.entry(held.record.gen).or_default() += 1;
        }
        for (g, count) in &per_gen {
            cmds.push(sizes::minus(qk.waiting(*g), *count));
        }
        cmds.push(sizes::plus(qk.reserved(), takes.len() as u64));
        cmds.extend(cleanup);
        let replies = self.run(cmds).await?;
        let mut undo = Vec::new();
        let mut started = Vec::new();
        for ((n, held, body, token), reply) in takes.into_iter().zip(&replies) {
            if !reply.ok() {
                // Someone changed the record between our read and write. Put the slot back
                // so the janitor can look at it, and the counts as they were.
                debug!(job = held.id, status = ?reply.status, "lost a race for a claimed job");
                undo.push(Cmd::add(qk.slot(n), held.id.to_string().into_bytes(), 0));
                undo.push(sizes::plus(qk.waiting(held.record.gen), 1));
                undo.push(sizes::minus(qk.reserved(), 1));
                continue;
            }
            if let Some(u) = held
                .record
                .unique
                .as_ref()
                .filter(|u| u.until == Until::Started)
            {
                started.push((u.key.clone(), Holder::Job(held.id)));
            }
            out.push(held.reserved(queue, token, body));
        }
        self.run(undo).await?;
        // Claims held until the job starts: released now that it has.
        self.release_claims(started).await
    }

    /// Claimed slots whose item is missing: a pusher between `incr tail` and writing the
    /// slot, or an evicted item. Waits up to `missing_slot_wait`, then writes a tombstone
    /// with `add`: a pusher that writes later gets "not stored" and uses a new slot, so
    /// nothing is lost by skipping.
    pub(super) async fn wait_for_slots(
        &self,
        queue: &str,
        qk: &QueueKeys,
        mut missing: Vec<u64>,
        found: &mut BTreeMap<u64, Option<u64>>,
    ) -> Result<()> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        while !missing.is_empty() && started.elapsed() < self.inner.options.missing_slot_wait {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
            let replies = self
                .run(missing.iter().map(|n| Cmd::get(qk.slot(*n))).collect())
                .await?;
            let mut still = Vec::new();
            for (n, reply) in missing.iter().zip(&replies) {
                match reply.value() {
                    Some(v) => {
                        found.insert(*n, parse_slot(v));
                    }
                    None => still.push(*n),
                }
            }
            missing = still;
        }
        if missing.is_empty() {
            return Ok(());
        }
        let replies = self
            .run(missing.iter().map(|n| tombstone(qk.slot(*n))).collect())
            .await?;
        let mut late = Vec::new();
        for (n, reply) in missing.iter().zip(&replies) {
            if reply.ok() {
                warn!(
                    %queue,
                    slot = n,
                    waited = ?started.elapsed(),
                    "skipping a claimed slot that stayed empty (a pusher died mid-push, or memcached evicted it)"
                );
            } else {
                late.push(*n);
            }
        }
        if !late.is_empty() {
            let replies = self
                .run(late.iter().map(|n| Cmd::get(qk.slot(*n))).collect())
                .await?;
            for (n, reply) in late.iter().zip(&replies) {
                if let Some(v) = reply.value() {
                    found.insert(*n, parse_slot(v));
                }
            }
        }
        Ok(())
    }

    /// The head counter is missing while the tail exists: a queue's first reservation, or
    /// an evicted head. Finds the lowest slot that still holds a job (claimed slots are
    /// deleted, so they form a prefix of missing items) and starts just before it.
    pub(super) async fn recover_head(&self, queue: &str, qk: &QueueKeys, tail: u64) -> Result<()> {
        const BLOCK: u64 = 64;
        let probe = |block: u64| {
            let lo = 1 + block * BLOCK;
            let hi = ((block + 1) * BLOCK).min(tail);
            (lo, hi)
        };
        let blocks = tail.div_ceil(BLOCK);
        let first_in = |lo: u64, hi: u64| {
            let cmds: Vec<Cmd> = (lo..=hi).map(|n| Cmd::exists(qk.slot(n))).collect();
            async move {
                let replies = self.run(cmds).await?;
                Ok::<_, Error>(
                    (lo..=hi)
                        .zip(&replies)
                        .find(|(_, r)| r.ok())
                        .map(|(n, _)| n),
                )
            }
        };
        let (lo, hi) = probe(0);
        let mut first = first_in(lo, hi).await?;
        if first.is_none() && blocks > 1 {
            // Binary search for the first block holding anything.
            let (mut low, mut high) = (1, blocks);
            let mut hit = None;
            while low < high {
                let mid = low + (high - low) / 2;
                let (lo, hi) = probe(mid);
                match first_in(lo, hi).await? {
                    Some(n) => {
                        hit = Some(n);
                        high = mid;
                    }
                    None => low = mid + 1,
                }
            }
            first = hit;
        }
        let mut first = first.unwrap_or(tail + 1);
        // Missing slots just below it may belong to pushers still writing: tombstone them,
        // so that such a pusher re-slots its job instead of writing behind the head.
        let from = first.saturating_sub(4096).max(1);
        if from < first {
            let range: Vec<u64> = (from..first).collect();
            let replies = self
                .run(range.iter().map(|n| tombstone(qk.slot(*n))).collect())
                .await?;
            if let Some((n, _)) = range.iter().zip(&replies).find(|(_, r)| !r.ok()) {
                first = *n;
            }
        }
        let head = first - 1;
        self.run(vec![Cmd::add(qk.head(), head.to_string().into_bytes(), 0)])
            .await?;
        if head > 0 {
            warn!(%queue, tail, head, "the queue had no head counter (first use, or memcached evicted it): starting after slot {head}");
        }
        Ok(())
    }

    /// The head is past the tail: the tail counter was lost (evicted) and started again.
    pub(super) async fn reset_head(
        &self,
        queue: &str,
        qk: &QueueKeys,
        head: u64,
        cas: u64,
        tail: u64,
    ) -> Result<()> {
        error!(
            %queue,
            head,
            tail,
            "the queue's tail counter went backwards (memcached evicted it): restarting the head at 0; jobs slotted before may be lost"
        );
        self.run(vec![Cmd::cas(qk.head(), b"0".to_vec(), cas, 0)])
            .await?;
        Ok(())
    }

    /// Gives waiting jobs a new slot at the tail: `(id, slot)` for each job whose record
    /// still says it waits in `slot` but cannot be reached there (its slot write failed on a
    /// tombstone, its reserver died or gave up). A record that moved on is left alone.
    pub(super) async fn reslot(
        &self,
        queue: &str,
        qk: &QueueKeys,
        mut jobs: Vec<(u64, u64)>,
    ) -> Result<()> {
        for _ in 0..CAS_TRIES {
            if jobs.is_empty() {
                return Ok(());
            }
            let cmds = jobs.iter().map(|(id, _)| Cmd::gets(self.keys().job(*id)));
            let replies = self.run(cmds.collect()).await?;
            let held: Vec<Held> = jobs
                .iter()
                .zip(&replies)
                .filter_map(|((id, slot), reply)| {
                    let (cas, record) = self.decode_job(*id, reply)?;
                    let stuck = record.state == JobState::Waiting { slot: *slot };
                    stuck.then_some(Held {
                        id: *id,
                        cas,
                        record,
                    })
                })
                .collect();
            if held.is_empty() {
                return Ok(());
            }
            let count = held.len() as u64;
            let replies = self.run(vec![Cmd::incr(qk.tail(), count)]).await?;
            let first = incremented(&replies[0], "allocate slots")? + 1 - count;
            let mut cmds = Vec::new();
            for (slot, h) in (first..).zip(&held) {
                let record = JobRecord {
                    state: JobState::Waiting { slot },
                    ..h.record.clone()
                };
                cmds.push(Cmd::cas(self.keys().job(h.id), record.encode(), h.cas, 0));
                cmds.push(Cmd::add(qk.slot(slot), h.id.to_string().into_bytes(), 0));
            }
            let replies = self.run(cmds).await?;
            // Moved, but the new slot was skipped too: once more. Not moved: someone else
            // changed the record, which is no longer ours to move.
            jobs = (first..)
                .zip(&held)
                .zip(replies.chunks(2))
                .filter(|(_, pair)| pair[0].ok() && !pair[1].ok())
                .map(|((slot, h), _)| (h.id, slot))
                .collect();
            debug!(%queue, count, "re-slotted jobs that could not be reached in their slot");
        }
        Err(MemcachedError::Contention(format!("re-slotting jobs of {queue}")).into())
    }
}
