//! Timers: the per-queue, per-second buckets that list delayed jobs' due times and
//! reservations' deadlines, the sweep that promotes due jobs and finds expired leases, and
//! the janitor that re-queues jobs of a reserver that died mid-claim.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use queue_core::storage::{duration_millis, new_token};
use queue_core::{JobId, Lease, Reserved, Result};
use tracing::{error, warn};

use super::sizes::JanitorMark;
use super::{
    bucket, parse_slot, sizes, Due, Held, MemcachedStorage, JANITOR_AFTER_MS, JANITOR_MAX_SLOTS,
    LAG_BUCKETS, MAX_SWEEP_BUCKETS, SCAN_CHUNK,
};
use crate::client::Cmd;
use crate::error::MemcachedError;
use crate::keys::QueueKeys;
use crate::record::{parse_ids, JobRecord, JobState};

/// What a sweep did and saw.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Swept {
    /// Jobs were promoted: the tail moved.
    pub(super) promoted: bool,
    /// The earliest time (Unix ms) since which a job this sweep met has been available: a
    /// promoted job's due time, or the deadline of an expired reservation left for later.
    pub(super) oldest: Option<i64>,
}

impl MemcachedStorage {
    /// Sweeps `queue`'s timer buckets: promotes due delayed jobs into slots, and finds
    /// reservations whose lease ran out. With `take`, such jobs are reserved again for the
    /// caller (up to the limit); the rest stay reserved-and-expired for the next sweep.
    pub(super) async fn sweep(
        &self,
        queue: &str,
        gen: u64,
        now: i64,
        mut take: Option<(&mut Vec<Reserved>, usize, Duration)>,
    ) -> Result<Swept> {
        self.local().swept.insert(queue.to_owned(), Instant::now());
        let qk = self.keys().queue(queue);
        let now_b = bucket(now);
        let window: Vec<i64> = (now_b - LAG_BUCKETS - 2..=now_b).collect();
        // The waiting count first: `settle_waiting` needs every update made after the head
        // and tail were read to change the count's CAS token.
        let mut cmds = vec![
            Cmd::gets(qk.waiting(gen)),
            Cmd::gets(qk.janitor()),
            Cmd::get(qk.head()),
            Cmd::get(qk.tail()),
            Cmd::gets(qk.cursor()),
        ];
        const WINDOW_AT: usize = 5;
        cmds.extend(window.iter().map(|b| Cmd::get(qk.timer_count(*b))));
        let replies = self.run(cmds).await?;
        let janitor = JanitorMark::parse(&replies[1]);
        let head = replies[2].number();
        let tail = replies[3].number().unwrap_or(0);
        self.settle_waiting(queue, &qk, gen, now, janitor, head, tail, &replies[0])
            .await?;
        self.janitor(queue, &qk, gen, now, janitor, head).await?;
        let (cursor, cursor_cas) = match (replies[4].number_i64(), replies[4].cas) {
            (Some(c), cas) => (c, cas),
            _ => {
                let init = now_b - LAG_BUCKETS;
                self.run(vec![Cmd::add(
                    qk.cursor(),
                    init.to_string().into_bytes(),
                    0,
                )])
                .await?;
                (init, None)
            }
        };
        let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
        for (b, reply) in window.iter().zip(&replies[WINDOW_AT..]) {
            if let Some(n) = reply.number() {
                counts.insert(*b, n);
            }
        }
        let end = now_b.min(cursor.saturating_add(MAX_SWEEP_BUCKETS - 1));
        let unknown: Vec<i64> = (cursor..=end)
            .filter(|b| *b < window[0] || *b > now_b)
            .collect();
        for chunk in unknown.chunks(SCAN_CHUNK as usize) {
            let replies = self
                .run(chunk.iter().map(|b| Cmd::get(qk.timer_count(*b))).collect())
                .await?;
            for (b, reply) in chunk.iter().zip(&replies) {
                if let Some(n) = reply.number() {
                    counts.insert(*b, n);
                }
            }
        }
        let live: Vec<i64> = counts
            .range(cursor..=end)
            .filter(|(_, n)| **n > 0)
            .map(|(b, _)| *b)
            .collect();
        let complete_end = end.min(now_b - LAG_BUCKETS - 1);
        let mut swept = Swept::default();
        if !live.is_empty() {
            swept = self
                .sweep_buckets(queue, &qk, gen, now, &live, complete_end, &mut take)
                .await?;
        }
        if complete_end >= cursor {
            let next = (complete_end + 1).to_string().into_bytes();
            let cmd = match cursor_cas {
                Some(cas) => Cmd::cas(qk.cursor(), next, cas, 0),
                None => Cmd::set(qk.cursor(), next),
            };
            let replies = self.run(vec![cmd]).await?;
            if replies[0].ok() {
                // The buckets behind the cursor are done with.
                let gone: Vec<Cmd> = counts
                    .range(cursor..=complete_end)
                    .flat_map(|(b, _)| [Cmd::delete(qk.timer(*b)), Cmd::delete(qk.timer_count(*b))])
                    .collect();
                self.run(gone).await?;
            }
        }
        Ok(swept)
    }

    #[allow(clippy::too_many_arguments)] // internal step of `sweep`, which owns all of these
    pub(super) async fn sweep_buckets(
        &self,
        queue: &str,
        qk: &QueueKeys,
        gen: u64,
        now: i64,
        live: &[i64],
        complete_end: i64,
        take: &mut Option<(&mut Vec<Reserved>, usize, Duration)>,
    ) -> Result<Swept> {
        let replies = self
            .run(live.iter().map(|b| Cmd::get(qk.timer(*b))).collect())
            .await?;
        let mut listed: BTreeMap<u64, i64> = BTreeMap::new();
        for (b, reply) in live.iter().zip(&replies) {
            for id in reply.value().map(parse_ids).unwrap_or_default() {
                let newest = listed.entry(id).or_insert(*b);
                *newest = (*newest).max(*b);
            }
        }
        if listed.is_empty() {
            return Ok(Swept::default());
        }
        let ids: Vec<u64> = listed.keys().copied().collect();
        let mut promote: Vec<Due> = Vec::new();
        let mut expired: Vec<Due> = Vec::new();
        let mut cleared: Vec<Cmd> = Vec::new();
        for chunk in ids.chunks(SCAN_CHUNK as usize) {
            let replies = self
                .run(
                    chunk
                        .iter()
                        .map(|id| Cmd::gets(self.keys().job(*id)))
                        .collect(),
                )
                .await?;
            for (id, reply) in chunk.iter().zip(&replies) {
                let Some((cas, record)) = self.decode_job(*id, reply) else {
                    continue;
                };
                let held = Held {
                    id: *id,
                    cas,
                    record,
                };
                let due = Due {
                    listed: listed.get(id).copied().unwrap_or_default(),
                    held,
                };
                match due.held.record.state {
                    JobState::Delayed { at } if at <= now => {
                        if due.held.record.gen < gen {
                            cleared.push(Cmd::delete_cas(self.keys().job(*id), cas));
                            cleared.push(Cmd::delete(self.keys().body(*id)));
                        } else {
                            promote.push(due);
                        }
                    }
                    JobState::Reserved { deadline, .. } if deadline <= now => expired.push(due),
                    _ => {}
                }
            }
        }
        if !cleared.is_empty() {
            self.run(cleared).await?;
        }
        let mut swept = Swept {
            promoted: !promote.is_empty(),
            oldest: promote.iter().filter_map(|d| d.held.record.timer()).min(),
        };
        if swept.promoted {
            promote.sort_by_key(|d| (d.held.record.timer(), d.held.id));
            self.promote(queue, qk, promote).await?;
        }
        if !expired.is_empty() {
            expired.sort_by_key(|d| (d.held.record.timer(), d.held.id));
            let mut surplus = expired;
            if let Some((out, limit, lease)) = take.as_mut() {
                let n = limit.saturating_sub(out.len()).min(surplus.len());
                let chosen: Vec<Due> = surplus.drain(..n).collect();
                self.take_expired(queue, qk, now, *lease, chosen, out)
                    .await?;
            }
            let left = surplus.iter().filter_map(|d| d.held.record.timer()).min();
            swept.oldest = swept.oldest.into_iter().chain(left).min();
            // Expired jobs left behind in a bucket about to be deleted are listed again in
            // the current bucket, so the next sweep finds them.
            let stranded: Vec<u64> = surplus
                .iter()
                .filter(|d| d.listed <= complete_end)
                .map(|d| d.held.id)
                .collect();
            if !stranded.is_empty() {
                let replies = self.run(self.timer_cmds(qk, now, &stranded, now)).await?;
                self.check_timer_replies(&replies, &stranded);
            }
            if !surplus.is_empty() {
                // More are due than this call could take: sweep again on the next call.
                self.local().swept.remove(queue);
            }
        }
        Ok(swept)
    }

    /// Moves due delayed jobs into new slots at the tail, in due-time order.
    pub(super) async fn promote(&self, queue: &str, qk: &QueueKeys, due: Vec<Due>) -> Result<()> {
        let count = due.len() as u64;
        let replies = self.run(vec![Cmd::incr(qk.tail(), count)]).await?;
        let end = replies[0]
            .checked("allocate slots")?
            .number()
            .ok_or_else(|| MemcachedError::Protocol("incr gave no number".into()))?;
        let first = end + 1 - count;
        let mut cmds = Vec::with_capacity(due.len() * 2);
        for (i, d) in due.iter().enumerate() {
            let slot = first + i as u64;
            let record = JobRecord {
                state: JobState::Waiting { slot },
                ..d.held.record.clone()
            };
            // The record first: a reserver that finds the slot must find the record ready.
            cmds.push(Cmd::cas(
                self.keys().job(d.held.id),
                record.encode(),
                d.held.cas,
                0,
            ));
            cmds.push(Cmd::add(
                qk.slot(slot),
                d.held.id.to_string().into_bytes(),
                0,
            ));
        }
        // The counts in the same request, as if every compare-and-swap succeeds (a process
        // killed after it leaves no count behind); those that failed are undone below.
        let mut per_gen: BTreeMap<u64, u64> = BTreeMap::new();
        for d in &due {
            *per_gen.entry(d.held.record.gen).or_default() += 1;
        }
        for (g, n) in &per_gen {
            cmds.push(sizes::minus(qk.delayed(*g), *n));
            cmds.push(sizes::plus(qk.waiting(*g), *n));
        }
        let replies = self.run(cmds).await?;
        let mut after = Vec::new();
        let mut undo: BTreeMap<u64, u64> = BTreeMap::new();
        let mut reslot = Vec::new();
        for (i, d) in due.iter().enumerate() {
            let (cas, slot) = (&replies[2 * i], &replies[2 * i + 1]);
            if !cas.ok() {
                // Someone else moved it (and counted it); our slot is a stale pointer.
                *undo.entry(d.held.record.gen).or_default() += 1;
                continue;
            }
            if let Some(at) = d.held.record.timer() {
                after.push(Cmd::decr(qk.timer_count(bucket(at)), 1));
            }
            if !slot.ok() {
                reslot.push(d.held.id);
            }
        }
        for (g, n) in undo {
            after.push(sizes::plus(qk.delayed(g), n));
            after.push(sizes::minus(qk.waiting(g), n));
        }
        self.run(after).await?;
        if !reslot.is_empty() {
            self.reslot(queue, qk, reslot).await?;
        }
        Ok(())
    }

    /// Reserves jobs whose lease ran out for a new holder.
    pub(super) async fn take_expired(
        &self,
        queue: &str,
        qk: &QueueKeys,
        now: i64,
        lease: Duration,
        chosen: Vec<Due>,
        out: &mut Vec<Reserved>,
    ) -> Result<()> {
        if chosen.is_empty() {
            return Ok(());
        }
        let bodies = self
            .run(
                chosen
                    .iter()
                    .map(|d| Cmd::get(self.keys().body(d.held.id)))
                    .collect(),
            )
            .await?;
        let deadline = now.saturating_add(duration_millis(lease));
        let mut takes = Vec::new();
        let mut lost = Vec::new();
        for (d, body) in chosen.into_iter().zip(&bodies) {
            match body.value() {
                Some(b) => takes.push((d, b.to_vec(), new_token())),
                None => {
                    error!(job = d.held.id, %queue, "a reserved job's payload is gone (evicted?): dropping the job");
                    lost.push(Cmd::delete_cas(self.keys().job(d.held.id), d.held.cas));
                }
            }
        }
        if !lost.is_empty() {
            // Only records this call deleted leave the count (another sweeper may have met
            // the same job).
            let replies = self.run(lost).await?;
            let n = replies.iter().filter(|r| r.ok()).count() as u64;
            if n > 0 {
                self.run(vec![sizes::minus(qk.reserved(), n)]).await?;
            }
        }
        if takes.is_empty() {
            return Ok(());
        }
        let ids: Vec<u64> = takes.iter().map(|t| t.0.held.id).collect();
        let mut cmds = self.timer_cmds(qk, deadline, &ids, now);
        let first_cas = cmds.len();
        for (d, _, token) in &takes {
            let record = JobRecord {
                attempts: d.held.record.attempts.saturating_add(1),
                state: JobState::Reserved {
                    token: token.clone(),
                    deadline,
                },
                ..d.held.record.clone()
            };
            cmds.push(Cmd::cas(
                self.keys().job(d.held.id),
                record.encode(),
                d.held.cas,
                0,
            ));
        }
        let replies = self.run(cmds).await?;
        self.check_timer_replies(&replies[..first_cas], &ids);
        let mut after = Vec::new();
        for ((d, body, token), reply) in takes.into_iter().zip(&replies[first_cas..]) {
            if !reply.ok() {
                continue;
            }
            if let Some(at) = d.held.record.timer() {
                after.push(Cmd::decr(qk.timer_count(bucket(at)), 1));
            }
            out.push(Reserved {
                lease: Lease {
                    job_id: JobId(d.held.id.to_string()),
                    queue: queue.to_owned(),
                    token,
                },
                name: d.held.record.name.clone(),
                payload: body,
                attempts: d.held.record.attempts.saturating_add(1),
            });
        }
        self.run(after).await?;
        Ok(())
    }

    /// Re-queues jobs whose reserver died between claiming their slots and reserving them:
    /// claimed slots still holding a waiting job's id after [`JANITOR_AFTER_MS`]. Also
    /// deletes stale slot items left behind.
    pub(super) async fn janitor(
        &self,
        queue: &str,
        qk: &QueueKeys,
        gen: u64,
        now: i64,
        record: Option<JanitorMark>,
        head: Option<u64>,
    ) -> Result<()> {
        let Some(head) = head else { return Ok(()) };
        let Some(JanitorMark {
            checked,
            mark,
            mark_ms,
            cas,
        }) = record
        else {
            // First pass (or the item was evicted): look back one pass's worth of slots.
            let from = head.saturating_sub(JANITOR_MAX_SLOTS);
            let value = format!("{from};{head};{now}");
            self.run(vec![Cmd::add(qk.janitor(), value.into_bytes(), 0)])
                .await?;
            return Ok(());
        };
        if now - mark_ms < JANITOR_AFTER_MS {
            return Ok(());
        }
        let hi = mark.min(checked + JANITOR_MAX_SLOTS);
        let next = if hi >= mark {
            format!("{mark};{head};{now}")
        } else {
            format!("{hi};{mark};{mark_ms}")
        };
        let Some(cas) = cas else { return Ok(()) };
        // Claim this pass first, so concurrent processes do not scan the same range.
        let claimed = self
            .run(vec![Cmd::cas(qk.janitor(), next.into_bytes(), cas, 0)])
            .await?;
        if !claimed[0].ok() || hi <= checked {
            return Ok(());
        }
        let mut leftovers: Vec<(u64, u64)> = Vec::new();
        let mut n = checked + 1;
        while n <= hi {
            let to = (n + SCAN_CHUNK - 1).min(hi);
            let replies = self
                .run((n..=to).map(|s| Cmd::get(qk.slot(s))).collect())
                .await?;
            for (s, reply) in (n..=to).zip(&replies) {
                if let Some(id) = reply.value().and_then(parse_slot) {
                    leftovers.push((s, id));
                }
            }
            n = to + 1;
        }
        if leftovers.is_empty() {
            return Ok(());
        }
        let replies = self
            .run(
                leftovers
                    .iter()
                    .map(|(_, id)| Cmd::gets(self.keys().job(*id)))
                    .collect(),
            )
            .await?;
        let mut orphans = Vec::new();
        let mut cleanup = Vec::new();
        for ((slot, id), reply) in leftovers.iter().zip(&replies) {
            cleanup.push(Cmd::delete(qk.slot(*slot)));
            if let Some((cas, record)) = self.decode_job(*id, reply) {
                if record.state == (JobState::Waiting { slot: *slot }) {
                    if record.gen < gen {
                        cleanup.push(Cmd::delete_cas(self.keys().job(*id), cas));
                        cleanup.push(Cmd::delete(self.keys().body(*id)));
                    } else {
                        orphans.push(*id);
                    }
                }
            }
        }
        if !orphans.is_empty() {
            warn!(%queue, jobs = ?orphans, "re-queueing jobs whose reserver stopped between claiming and reserving them");
            self.reslot(queue, qk, orphans).await?;
        }
        self.run(cleanup).await?;
        Ok(())
    }
}
