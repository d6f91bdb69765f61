//! Timers: the per-queue, per-second buckets that list delayed jobs' due times and
//! reservations' deadlines, the sweep that promotes due jobs and finds expired leases, and
//! the janitor that re-queues jobs of a reserver that died mid-claim.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use queue_core::storage::{duration_millis, new_token};
use queue_core::{Reserved, Result};
use tracing::{error, warn};

use super::{
    bucket, incremented, now_ms, parse_slot, sizes, Held, MemcachedStorage, JANITOR_AFTER_MS,
    JANITOR_MAX_SLOTS, LAG_BUCKETS, MAX_SWEEP_BUCKETS, SCAN_CHUNK,
};
use crate::client::{Cmd, Reply};
use crate::error::MemcachedError;
use crate::keys::QueueKeys;
use crate::record::{parse_ids, JobRecord, JobState};

/// Sub-buckets of one second: a job is listed in `t:B:{id mod 16}`, so a second of one queue
/// holds sixteen items' worth of ids (about 1.8 million at the default 1 MiB item size).
pub(super) const SUB_BUCKETS: u64 = 16;
/// Records written per request when promoting due jobs.
const PROMOTE_CHUNK: usize = 4096;

/// Timer entries to write: job ids under the bucket of their time, per queue.
#[derive(Debug, Default)]
pub(super) struct Timers {
    lists: BTreeMap<(String, i64), Vec<u64>>,
}

impl Timers {
    pub(super) fn add(&mut self, queue: &str, at: i64, id: u64) {
        let list = self.lists.entry((queue.to_owned(), bucket(at)));
        list.or_default().push(id);
    }
}

/// What a sweep did and saw.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Swept {
    /// Jobs were promoted: the tail moved.
    pub(super) promoted: bool,
    /// The earliest time (Unix ms) since which a job this sweep met has been available: a
    /// promoted job's due time, or the deadline of an expired reservation left for later.
    pub(super) oldest: Option<i64>,
}

/// One timer entry found due by a sweep.
#[derive(Debug)]
struct Due {
    held: Held,
    /// The newest bucket listing it.
    listed: i64,
}

/// Where the janitor stands, as it records it (`{prefix}:q:{queue}:jan`): every claimed slot
/// up to `checked` has been looked at by the pass that started at `mark_ms`, when the head
/// was at `mark`. `cas` is the record's CAS token as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct JanitorMark {
    checked: u64,
    mark: u64,
    mark_ms: i64,
    cas: Option<u64>,
}

impl JanitorMark {
    fn parse(reply: &Reply) -> Option<JanitorMark> {
        let text = std::str::from_utf8(reply.value()?).ok()?;
        let mut parts = text.split(';').map(|p| p.parse::<i64>().ok());
        let (checked, mark, mark_ms) = (parts.next()??, parts.next()??, parts.next()??);
        Some(JanitorMark {
            checked: checked.max(0) as u64,
            mark: mark.max(0) as u64,
            mark_ms,
            cas: reply.cas,
        })
    }
}

/// Ends a sweep of one queue by this process, however it ends (an error, a dropped future).
struct Sweeping<'a>(&'a MemcachedStorage, &'a str);

impl Drop for Sweeping<'_> {
    fn drop(&mut self) {
        self.0.local().sweeping.remove(self.1);
    }
}

impl MemcachedStorage {
    /// Lists `timers` in their buckets and then runs `reads` (commands without effects) in
    /// the same request. Fails if an entry could not be listed (its sub-bucket is full): the
    /// caller then changes nothing, since a job no bucket lists would never be found again.
    pub(super) async fn with_timers(&self, timers: &Timers, reads: Vec<Cmd>) -> Result<Vec<Reply>> {
        let now = now_ms();
        let mut cmds = Vec::new();
        let mut appends = Vec::new();
        for ((queue, b), ids) in &timers.lists {
            let qk = self.keys().queue(queue);
            let mut subs: BTreeMap<u64, String> = BTreeMap::new();
            for id in ids {
                let _ = write!(subs.entry(id % SUB_BUCKETS).or_default(), ",{id}");
            }
            for (k, list) in subs {
                cmds.push(Cmd::add(qk.timer(*b, k), Vec::new(), 0));
                appends.push((cmds.len(), qk.timer(*b, k)));
                cmds.push(Cmd::append(qk.timer(*b, k), list.into_bytes()));
            }
            cmds.push(Cmd::incr(qk.timer_count(*b), ids.len() as u64));
            let cursor = (bucket(now) - LAG_BUCKETS).to_string().into_bytes();
            cmds.push(Cmd::add(qk.cursor(), cursor, 0));
        }
        let first = cmds.len();
        cmds.extend(reads);
        let mut replies = self.run(cmds).await?;
        if let Some((i, key)) = appends.iter().find(|(i, _)| !replies[*i].ok()) {
            error!(%key, status = ?replies[*i].status, "a timer bucket refused more entries");
            return Err(MemcachedError::Refused(format!(
                "could not list jobs in the timer bucket `{key}` ({:?}); nothing was changed",
                replies[*i].status
            ))
            .into());
        }
        Ok(replies.split_off(first))
    }

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
        {
            let mut local = self.local();
            local.swept.insert(queue.to_owned(), Instant::now());
            if !local.sweeping.insert(queue.to_owned()) {
                return Ok(Swept::default());
            }
        }
        let _sweeping = Sweeping(self, queue);
        let qk = self.keys().queue(queue);
        let now_b = bucket(now);
        let window: Vec<i64> = (now_b - LAG_BUCKETS - 2..=now_b).collect();
        let mut cmds = vec![
            Cmd::gets(qk.janitor()),
            Cmd::get(qk.head()),
            Cmd::gets(qk.cursor()),
        ];
        const WINDOW_AT: usize = 3;
        cmds.extend(window.iter().map(|b| Cmd::get(qk.timer_count(*b))));
        let replies = self.run(cmds).await?;
        let janitor = JanitorMark::parse(&replies[0]);
        self.janitor(queue, &qk, gen, now, janitor, replies[1].number())
            .await?;
        let (cursor, cursor_cas) = match (replies[2].number_i64(), replies[2].cas) {
            (Some(c), cas) => (c, cas),
            _ => {
                let init = now_b - LAG_BUCKETS;
                let value = init.to_string().into_bytes();
                self.run(vec![Cmd::add(qk.cursor(), value, 0)]).await?;
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
                let mut gone = Vec::new();
                for (b, _) in counts.range(cursor..=complete_end) {
                    gone.push(Cmd::delete(qk.timer_count(*b)));
                    gone.extend((0..SUB_BUCKETS).map(|k| Cmd::delete(qk.timer(*b, k))));
                }
                self.run(gone).await?;
            }
        }
        Ok(swept)
    }

    #[allow(clippy::too_many_arguments)] // internal step of `sweep`, which owns all of these
    async fn sweep_buckets(
        &self,
        queue: &str,
        qk: &QueueKeys,
        gen: u64,
        now: i64,
        live: &[i64],
        complete_end: i64,
        take: &mut Option<(&mut Vec<Reserved>, usize, Duration)>,
    ) -> Result<Swept> {
        let subs: Vec<(i64, u64)> = live
            .iter()
            .flat_map(|b| (0..SUB_BUCKETS).map(move |k| (*b, k)))
            .collect();
        let mut listed: BTreeMap<u64, i64> = BTreeMap::new();
        for chunk in subs.chunks(SCAN_CHUNK as usize) {
            let replies = self
                .run(
                    chunk
                        .iter()
                        .map(|(b, k)| Cmd::get(qk.timer(*b, *k)))
                        .collect(),
                )
                .await?;
            for ((b, _), reply) in chunk.iter().zip(&replies) {
                for id in reply.value().map(parse_ids).unwrap_or_default() {
                    let newest = listed.entry(id).or_insert(*b);
                    *newest = (*newest).max(*b);
                }
            }
        }
        let ids: Vec<u64> = listed.keys().copied().collect();
        let mut promote: Vec<Due> = Vec::new();
        let mut expired: Vec<Due> = Vec::new();
        let mut cleared: Vec<Cmd> = Vec::new();
        for chunk in ids.chunks(SCAN_CHUNK as usize) {
            let cmds = chunk.iter().map(|id| Cmd::gets(self.keys().job(*id)));
            let replies = self.run(cmds.collect()).await?;
            for (id, reply) in chunk.iter().zip(&replies) {
                let Some((cas, record)) = self.decode_job(*id, reply) else {
                    continue;
                };
                let listed = listed.get(id).copied().unwrap_or_default();
                let held = Held {
                    id: *id,
                    cas,
                    record,
                };
                match held.record.state {
                    JobState::Delayed { at } if at <= now && held.record.gen < gen => {
                        cleared.push(Cmd::delete_cas(self.keys().job(*id), cas));
                        cleared.push(Cmd::delete(self.keys().body(*id)));
                    }
                    JobState::Delayed { at } if at <= now => promote.push(Due { held, listed }),
                    JobState::Reserved { deadline, .. } if deadline <= now => {
                        expired.push(Due { held, listed })
                    }
                    _ => {}
                }
            }
        }
        self.run(cleared).await?;
        let mut swept = Swept {
            promoted: !promote.is_empty(),
            oldest: promote.iter().filter_map(|d| d.held.record.timer()).min(),
        };
        promote.sort_by_key(|d| (d.held.record.timer(), d.held.id));
        for chunk in promote.chunks(PROMOTE_CHUNK) {
            self.promote(queue, qk, chunk).await?;
        }
        if !expired.is_empty() {
            expired.sort_by_key(|d| (d.held.record.timer(), d.held.id));
            let mut surplus = expired;
            if let Some((out, limit, lease)) = take.as_mut() {
                let n = limit.saturating_sub(out.len()).min(surplus.len());
                let chosen: Vec<Due> = surplus.drain(..n).collect();
                self.take_expired(queue, now, *lease, chosen, out).await?;
            }
            let left = surplus.iter().filter_map(|d| d.held.record.timer()).min();
            swept.oldest = swept.oldest.into_iter().chain(left).min();
            // Expired jobs left behind in a bucket about to be deleted are listed again in
            // the current bucket, so the next sweep finds them (if that fails, the sweep
            // fails and the cursor stays).
            let mut stranded = Timers::default();
            for d in surplus.iter().filter(|d| d.listed <= complete_end) {
                stranded.add(queue, now, d.held.id);
            }
            self.with_timers(&stranded, Vec::new()).await?;
            if !surplus.is_empty() {
                // More are due than this call could take: sweep again on the next call.
                self.local().swept.remove(queue);
            }
        }
        Ok(swept)
    }

    /// Moves due delayed jobs into new slots at the tail, in due-time order.
    async fn promote(&self, queue: &str, qk: &QueueKeys, due: &[Due]) -> Result<()> {
        let count = due.len() as u64;
        let replies = self.run(vec![Cmd::incr(qk.tail(), count)]).await?;
        let first = incremented(&replies[0], "allocate slots")? + 1 - count;
        let mut cmds = Vec::with_capacity(due.len() * 2);
        for (slot, d) in (first..).zip(due) {
            let record = JobRecord {
                state: JobState::Waiting { slot },
                ..d.held.record.clone()
            };
            // The record first: a reserver that finds the slot must find the record ready.
            let key = self.keys().job(d.held.id);
            cmds.push(Cmd::cas(key, record.encode(), d.held.cas, 0));
            cmds.push(Cmd::add(
                qk.slot(slot),
                d.held.id.to_string().into_bytes(),
                0,
            ));
        }
        // The counts in the same request, as if every compare-and-swap succeeds (a process
        // killed after it leaves no count behind); those that failed are undone below.
        let mut per_gen: BTreeMap<u64, u64> = BTreeMap::new();
        for d in due {
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
        for ((slot, d), pair) in (first..).zip(due).zip(replies.chunks(2)) {
            if !pair[0].ok() {
                // Someone else moved it (and counted it); our slot is a stale pointer.
                *undo.entry(d.held.record.gen).or_default() += 1;
                continue;
            }
            if let Some(at) = d.held.record.timer() {
                after.push(Cmd::decr(qk.timer_count(bucket(at)), 1));
            }
            if !pair[1].ok() {
                reslot.push((d.held.id, slot));
            }
        }
        for (g, n) in undo {
            after.push(sizes::plus(qk.delayed(g), n));
            after.push(sizes::minus(qk.waiting(g), n));
        }
        self.run(after).await?;
        self.reslot(queue, qk, reslot).await
    }

    /// Reserves jobs whose lease ran out for a new holder.
    async fn take_expired(
        &self,
        queue: &str,
        now: i64,
        lease: Duration,
        chosen: Vec<Due>,
        out: &mut Vec<Reserved>,
    ) -> Result<()> {
        if chosen.is_empty() {
            return Ok(());
        }
        let qk = self.keys().queue(queue);
        let deadline = now.saturating_add(duration_millis(lease));
        let mut timers = Timers::default();
        for d in &chosen {
            timers.add(queue, deadline, d.held.id);
        }
        // The new deadline is listed with the payload reads, before any record changes.
        let reads = chosen.iter().map(|d| Cmd::get(self.keys().body(d.held.id)));
        let bodies = self.with_timers(&timers, reads.collect()).await?;
        let mut takes = Vec::new();
        let mut cmds = Vec::new();
        for (d, body) in chosen.into_iter().zip(&bodies) {
            let token = new_token();
            match body.value() {
                Some(b) => {
                    cmds.push(d.held.reserve(self.keys(), &token, deadline));
                    takes.push((cmds.len() - 1, d.held, b.to_vec(), token));
                }
                None => {
                    error!(job = d.held.id, %queue, "a reserved job's payload is gone (evicted?): dropping the job");
                    cmds.push(Cmd::delete_cas(self.keys().job(d.held.id), d.held.cas));
                    cmds.push(sizes::minus(qk.reserved(), 1));
                }
            }
        }
        let replies = self.run(cmds).await?;
        let mut after = Vec::new();
        for (at, held, body, token) in takes {
            if replies[at].ok() {
                if let Some(at) = held.record.timer() {
                    after.push(Cmd::decr(qk.timer_count(bucket(at)), 1));
                }
                out.push(held.reserved(queue, token, body));
            }
        }
        self.run(after).await?;
        Ok(())
    }

    /// Re-queues jobs whose reserver died between claiming their slots and reserving them:
    /// claimed slots still holding a waiting job's id after [`JANITOR_AFTER_MS`]. Also
    /// deletes stale slot items left behind.
    async fn janitor(
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
        let cmds = leftovers
            .iter()
            .map(|(_, id)| Cmd::gets(self.keys().job(*id)));
        let replies = self.run(cmds.collect()).await?;
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
                        orphans.push((*id, *slot));
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
