//! Single jobs by id ([`Track`]): a job found through its state record, cancelled with a
//! compare-and-swap delete of that record (or marked while reserved), and the records kept
//! for it, one item each (`{prefix}:r:{id}:{kind}`). See "Jobs by id" in the crate docs.

use std::time::Duration;

use async_trait::async_trait;
use queue_core::storage::{
    check_record, duration_millis, from_unix_millis, Cancellation, JobState as Listed, JobSummary,
    RecordKey, Track,
};
use queue_core::{Effect, Error, JobId, Lease, Result};
use tracing::error;

use super::claims::Holder;
use super::{bucket, now_ms, sizes, MemcachedStorage, CAS_TRIES, KEY_ROOM, MAX_TTL};
use crate::client::{Cmd, Reply, Status};
use crate::error::MemcachedError;
use crate::record::{decode_track, encode_track, JobRecord, JobState, TRACK_OVERHEAD};
use crate::DRIVER;

/// The job number behind an id this store made: digits only, in the form the store writes
/// them (`007` or `+7` is no id of ours).
pub(super) fn job_number(id: &JobId) -> Option<u64> {
    let n: u64 = id.0.parse().ok()?;
    (n.to_string() == id.0).then_some(n)
}

/// memcached's exptime for a record that expires at `expires` (Unix ms), written at `now`.
///
/// memcached counts whole seconds on a clock that ticks once a second, so an item written
/// with exptime N may go up to a second early: the native expiry is one second later than
/// the record's, which the expiry kept in the value decides. Over 30 days memcached reads
/// the exptime as a Unix time; past what 32 bits hold (2106) the item never expires natively
/// (the expiry in the value still hides it).
fn exptime(expires: i64, now: i64) -> u32 {
    let left = u64::try_from(expires.saturating_sub(now)).unwrap_or(0);
    let secs = left.div_ceil(1000).saturating_add(1);
    if secs <= MAX_TTL {
        return u32::try_from(secs).unwrap_or(0);
    }
    let at = u64::try_from(now).unwrap_or(0) / 1000;
    u32::try_from(at.saturating_add(secs)).unwrap_or(0)
}

/// What `job` and `cancel` say of the job `id` whose state record is `record` and body
/// `payload`.
fn summary(id: u64, record: &JobRecord, payload: Vec<u8>, now: i64) -> JobSummary {
    let (state, due) = match record.state {
        JobState::Reserved { deadline, .. } => (Listed::Reserved, deadline),
        JobState::Delayed { at } if at > now => (Listed::Delayed, at),
        // Due and not yet moved into a slot by a sweep: available all the same.
        JobState::Delayed { at } => (Listed::Waiting, at),
        JobState::Waiting { .. } => (Listed::Waiting, record.due),
    };
    JobSummary {
        id: JobId(id.to_string()),
        queue: record.queue.clone(),
        name: record.name.clone(),
        attempts: record.attempts,
        state,
        due_at: from_unix_millis(due),
        unique_key: record.unique.as_ref().map(|u| u.key.clone()),
        payload,
    }
}

impl MemcachedStorage {
    /// The command that writes the record `kind` of `job_id`, kept for `ttl` from `now`.
    pub(super) fn record_cmd(
        &self,
        job_id: &str,
        kind: &str,
        value: &[u8],
        ttl: Duration,
        now: i64,
    ) -> Cmd {
        let expires = now.saturating_add(duration_millis(ttl));
        Cmd::set_ttl(
            self.keys().record(job_id, kind),
            encode_track(expires, value),
            exptime(expires, now),
        )
    }

    /// The commands that write the [`Effect::Record`]s among `effects`, records of `job_id`.
    pub(super) fn record_effects(&self, job_id: &str, effects: &[Effect]) -> Vec<Cmd> {
        let now = now_ms();
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Record { kind, value, ttl } => {
                    Some(self.record_cmd(job_id, kind, value, *ttl, now))
                }
                _ => None,
            })
            .collect()
    }

    /// Refuses a record value that cannot fit in one item, before anything is written.
    pub(super) fn check_record_size(&self, value: &[u8]) -> Result<()> {
        let limit = self
            .inner
            .item_size_max
            .saturating_sub(KEY_ROOM + TRACK_OVERHEAD);
        if value.len() > limit {
            return Err(Error::PayloadTooLarge {
                size: value.len(),
                limit,
            });
        }
        Ok(())
    }

    /// The value of a record as read at `now`: `None` if missing, expired or unreadable.
    fn live_record(&self, key: &RecordKey, reply: &Reply, now: i64) -> Option<Vec<u8>> {
        let data = reply.value()?;
        match decode_track(data) {
            Ok((expires, value)) => (expires > now).then(|| value.to_vec()),
            Err(reason) => {
                let key = self.keys().record(&key.job_id.0, &key.kind);
                error!(%key, %reason, "skipping a corrupt record");
                None
            }
        }
    }

    /// Whether the job `id` carries an unexpired cancel mark, from the reply of a read of
    /// its mark's key.
    pub(super) fn marked(&self, id: &JobId, reply: &Reply) -> bool {
        let key = RecordKey::new(id.clone(), RecordKey::CANCEL);
        self.live_record(&key, reply, now_ms()).is_some()
    }

    /// The read of the cancel mark of the job `id`.
    pub(super) fn read_mark(&self, id: &JobId) -> Cmd {
        Cmd::get(self.keys().record(&id.0, RecordKey::CANCEL))
    }

    /// The job `id` with its CAS token if it is in a queue: its record exists and, unless it
    /// is reserved, belongs to the queue's current generation (`clear` deletes the others).
    async fn find(&self, id: u64) -> Result<Option<(u64, JobRecord)>> {
        let replies = self.run(vec![Cmd::gets(self.keys().job(id))]).await?;
        let Some((cas, record)) = self.decode_job(id, &replies[0]) else {
            return Ok(None);
        };
        if matches!(record.state, JobState::Reserved { .. }) {
            return Ok(Some((cas, record)));
        }
        let gen = self.keys().queue(&record.queue).gen();
        let gen = self.run(vec![Cmd::get(gen)]).await?[0]
            .number()
            .unwrap_or(0);
        Ok((record.gen >= gen).then_some((cas, record)))
    }

    /// Deletes the job `id` if its record is still the one read with `cas` (waiting, delayed,
    /// or reserved under a lease that ran out), then its payload (returned), its timer count
    /// and its claim. `None` when the record changed since (a reservation won the race).
    async fn remove(&self, id: u64, cas: u64, record: &JobRecord) -> Result<Option<Vec<u8>>> {
        let keys = self.keys();
        let qk = keys.queue(&record.queue);
        let count = match record.state {
            JobState::Waiting { .. } => qk.waiting(record.gen),
            JobState::Delayed { .. } => qk.delayed(record.gen),
            JobState::Reserved { .. } => qk.reserved(),
        };
        // The count in the same request, as if the delete succeeds; undone if it did not.
        // The job's slot or timer entry stays: reservers and sweepers skip an entry whose
        // record is gone.
        let replies = self
            .run(vec![
                Cmd::delete_cas(keys.job(id), cas),
                sizes::minus(count.clone(), 1),
            ])
            .await?;
        if !replies[0].ok() {
            self.run(vec![sizes::plus(count, 1)]).await?;
            return match &replies[0].status {
                Status::Refused(m) => Err(MemcachedError::Refused(m.clone()).into()),
                _ => Ok(None),
            };
        }
        // The job is gone now: nothing else reads or writes its payload.
        let payload = self.run(vec![Cmd::get(keys.body(id))]).await?[0]
            .value()
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let mut after = vec![Cmd::delete(keys.body(id))];
        if let Some(at) = record.timer() {
            after.push(Cmd::decr(qk.timer_count(bucket(at)), 1));
        }
        self.run(after).await?;
        // A claim held until the job started was released when it was reserved (and may be
        // another job's now): only a claim still naming this job is deleted.
        if let Some(unique) = &record.unique {
            let claim = (unique.key.clone(), Holder::Job(id));
            self.release_claims(vec![claim]).await?;
        }
        Ok(Some(payload))
    }
}

#[async_trait]
impl Track for MemcachedStorage {
    async fn job(&self, id: &JobId) -> Result<Option<JobSummary>> {
        let Some(n) = job_number(id) else {
            return Ok(None);
        };
        let Some((_, record)) = self.find(n).await? else {
            return Ok(None);
        };
        // The body is written before the record and deleted after it: a job whose record
        // was read has its body, unless it ended in between (then it is gone).
        let body = self.run(vec![Cmd::get(self.keys().body(n))]).await?;
        Ok(body[0]
            .value()
            .map(|payload| summary(n, &record, payload.to_vec(), now_ms())))
    }

    /// Refuses effects: memcached keeps no batches, chains or workflows (no group
    /// counters), so no job of its can have any.
    async fn cancel(
        &self,
        id: &JobId,
        mark_for: Duration,
        effects: Vec<Effect>,
    ) -> Result<Cancellation> {
        if !effects.is_empty() {
            return Err(Error::NotSupported {
                driver: DRIVER,
                operation: "effects applied with a cancel (memcached keeps no group counters)",
            });
        }
        let Some(n) = job_number(id) else {
            return Ok(Cancellation::NotFound);
        };
        for _ in 0..CAS_TRIES {
            let now = now_ms();
            let Some((cas, record)) = self.find(n).await? else {
                return Ok(Cancellation::NotFound);
            };
            let summary = |payload| summary(n, &record, payload, now);
            match &record.state {
                JobState::Reserved { token, deadline } if *deadline > now => {
                    // The mark, then the job's record again in the same request: if it is
                    // still reserved under the same lease, the job was reserved when the
                    // mark was written. Otherwise the lease ended in between: look again.
                    let mark = self.record_cmd(&id.0, RecordKey::CANCEL, &[], mark_for, now);
                    let keys = self.keys();
                    let replies = self
                        .run(vec![mark, Cmd::get(keys.job(n)), Cmd::get(keys.body(n))])
                        .await?;
                    replies[0].checked("write a cancel mark")?;
                    let again = self.decode_job(n, &replies[1]);
                    if again.is_some_and(|(_, r)| r.token() == Some(token.as_str())) {
                        let payload = replies[2].value().map(<[u8]>::to_vec);
                        return Ok(Cancellation::Marked(summary(payload.unwrap_or_default())));
                    }
                }
                // Waiting, delayed, or reserved under a lease that ran out: one
                // compare-and-swap delete, which a reservation's compare-and-swap of the
                // same record excludes (whichever comes second fails).
                _ => {
                    if let Some(payload) = self.remove(n, cas, &record).await? {
                        return Ok(Cancellation::Removed(summary(payload)));
                    }
                }
            }
        }
        Err(MemcachedError::Contention(format!("cancel job {n}")).into())
    }

    async fn records(&self, keys: &[RecordKey]) -> Result<Vec<Option<Vec<u8>>>> {
        let reads = keys
            .iter()
            .map(|key| Cmd::get(self.keys().record(&key.job_id.0, &key.kind)));
        let replies = self.run(reads.collect()).await?;
        // Judged once the replies are in: a record is never returned past its expiry.
        let now = now_ms();
        Ok(keys
            .iter()
            .zip(&replies)
            .map(|(key, reply)| self.live_record(key, reply, now))
            .collect())
    }

    async fn put_record(
        &self,
        key: &RecordKey,
        value: &[u8],
        ttl: Duration,
        fence: Option<&Lease>,
    ) -> Result<bool> {
        check_record(DRIVER, key, fence)?;
        self.check_record_size(value)?;
        if let Some(lease) = fence {
            // A check, then the write: memcached has no step over two keys. A write whose
            // lease is lost between the two still lands (see "Jobs by id" in the crate docs).
            let Some(id) = job_number(&lease.job_id) else {
                return Ok(false);
            };
            let replies = self.run(vec![Cmd::get(self.keys().job(id))]).await?;
            if self.check_lease(lease, id, &replies[0]).is_none() {
                return Ok(false);
            }
        }
        let write = self.record_cmd(&key.job_id.0, &key.kind, value, ttl, now_ms());
        self.run(vec![write]).await?[0].checked("write a record")?;
        Ok(true)
    }

    async fn prune_records(&self) -> Result<u64> {
        // memcached expires items itself.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_this_store() {
        assert_eq!(job_number(&JobId("12".into())), Some(12));
        for bad in ["", "007", "+7", "-1", "1.0", "x", "q/1", " 1"] {
            assert_eq!(job_number(&JobId(bad.into())), None, "{bad:?}");
        }
    }

    #[test]
    fn native_expiry() {
        let now = 1_700_000_000_123;
        // Never before the record's own expiry, by memcached's whole-second clock.
        assert_eq!(exptime(now + 400, now), 2);
        assert_eq!(exptime(now, now), 1);
        assert_eq!(exptime(now - 5_000, now), 1);
        assert_eq!(exptime(now + 60_000, now), 61);
        let day = 24 * 3600 * 1000;
        assert_eq!(exptime(now + 30 * day - 1000, now), 30 * 24 * 3600);
        // Over 30 days: a Unix time, past the record's expiry.
        let at = exptime(now + 31 * day, now);
        assert_eq!(i64::from(at), now / 1000 + 31 * 24 * 3600 + 1);
        assert_eq!(exptime(i64::MAX, now), 0);
    }
}
