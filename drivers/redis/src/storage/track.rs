//! Single jobs by id ([`Track`]): where a job is, cancelling it, and its records.
//!
//! A job's records are strings `{P:Q}:record:<member>:<kind>` with a `PX` expiry, in the
//! slot of the job's queue, so the scripts that settle, extend and cancel the job write and
//! read them in the same step on one server and on a cluster alike.

use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use queue_core::storage::{
    check_effect_list, check_record, from_unix_millis, Cancellation, JobId, JobState, JobSummary,
    Lease, RecordKey, Track,
};
use queue_core::{Effect, Result};
use redis::Value;

use super::call::{array, bytes, int, text};
use super::{millis, RedisStorage};
use crate::error::{backend, RedisDriverError};
use crate::keys::{job_member, split_job_id};
use crate::scripts::SCRIPTS;
use crate::DRIVER;

/// What the track script did with the job it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Looked,
    Removed,
    Marked,
}

/// What the track script is asked to do with the job it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// Only look.
    Look,
    /// Cancel: remove the job, or mark it, the mark kept for this long.
    Cancel(Duration),
    /// Mark the job if it is reserved under a live lease (the mark kept for this long);
    /// otherwise only look.
    Mark(Duration),
}

/// How many times a cancel with effects looks again at a job that changed between its
/// look and its removal.
const CANCEL_TRIES: usize = 5;

impl RedisStorage {
    /// One call of the track script on the job `id`, doing what `ask` says. `None` when no
    /// job of this store has the id; with what was done and the job as it was.
    async fn track_call(&self, id: &JobId, ask: Ask) -> Result<Option<(Done, JobSummary)>> {
        let Some((queue, member)) = split_job_id(&id.0) else {
            return Ok(None);
        };
        let mut call = self.call();
        call.queue(queue);
        call.arg(member.as_str());
        match ask {
            Ask::Look => call.arg(""),
            Ask::Cancel(mark) => call.arg(millis(mark).max(1)),
            Ask::Mark(mark) => call.arg(format!("m{}", millis(mark).max(1))),
        };
        let reply = self.invoke(&call.invocation(&SCRIPTS.track)).await?;
        let found = array("track", reply)?;
        if found.is_empty() {
            return Ok(None);
        }
        let bad = || RedisDriverError::unexpected("track", &Value::Array(found.clone()));
        let [done, state, due, name, attempts, unique, payload] =
            <[Value; 7]>::try_from(found.clone()).map_err(|_| bad())?;
        let parsed = (|| {
            let done = match text(done)?.as_str() {
                "j" => Done::Looked,
                "r" => Done::Removed,
                "m" => Done::Marked,
                _ => return None,
            };
            let state = match text(state)?.as_str() {
                "w" => JobState::Waiting,
                "d" => JobState::Delayed,
                "r" => JobState::Reserved,
                _ => return None,
            };
            let unique_key = match unique {
                Value::Nil => None,
                other => Some(text(other)?),
            };
            let summary = JobSummary {
                id: id.clone(),
                queue: queue.to_owned(),
                name: text(name)?,
                attempts: u32::try_from(int(&attempts)?.max(0)).unwrap_or(u32::MAX),
                state,
                due_at: from_unix_millis(int(&due)?),
                unique_key,
                payload: bytes(payload)?,
            };
            Some((done, summary))
        })();
        parsed.map(Some).ok_or_else(|| bad().into())
    }

    /// The values of `keys` (string keys of one slot on a cluster): one `MGET`.
    async fn read_records(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let reply: Value = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let values = array("records", reply)?;
        if values.len() != keys.len() {
            return Err(RedisDriverError::unexpected("records", &Value::Array(values)).into());
        }
        values
            .into_iter()
            .map(|value| match value {
                Value::Nil => Ok(None),
                other => bytes(other.clone())
                    .map(Some)
                    .ok_or_else(|| RedisDriverError::unexpected("records", &other).into()),
            })
            .collect()
    }
}

/// On one server and on a cluster alike: a job, its records and the scripts that touch them
/// share the job's queue's slot. Records expire by Redis's own `PX`.
#[async_trait]
impl Track for RedisStorage {
    /// One script reading the queue's sorted sets and the job's hash, judged by the server's
    /// clock: reserved while in `reserved` (due at its lease deadline), delayed while its
    /// available time is to come, else waiting.
    async fn job(&self, id: &JobId) -> Result<Option<JobSummary>> {
        Ok(self
            .track_call(id, Ask::Look)
            .await?
            .map(|(_, summary)| summary))
    }

    /// Without effects, one script on the job's queue: a job in `pending`, or in
    /// `reserved` past its lease deadline, is removed (hash, entry and claim, as `clear`
    /// does); one reserved under a live lease gets its `cancel` record, kept for `mark_for`
    /// (at least a millisecond).
    ///
    /// With effects, two scripts: the track script marks a job reserved under a live lease
    /// and only looks at any other; then the settle script removes the job with its effects
    /// in one step if it is still waiting, delayed or reserved under a lease that ran out
    /// (an `x` entry). A job that changed in between is looked at again. On a cluster the
    /// effects a composition needs (group counters, waiting jobs) are refused.
    async fn cancel(
        &self,
        id: &JobId,
        mark_for: Duration,
        effects: Vec<Effect>,
    ) -> Result<Cancellation> {
        if !effects.is_empty() {
            check_effect_list(DRIVER, &effects, "a cancel")?;
            self.check_supported(&effects)?;
            for _ in 0..CANCEL_TRIES {
                match self.track_call(id, Ask::Mark(mark_for)).await? {
                    None => return Ok(Cancellation::NotFound),
                    Some((Done::Marked, summary)) => return Ok(Cancellation::Marked(summary)),
                    Some((_, summary)) => {
                        let lease = Lease {
                            job_id: id.clone(),
                            queue: summary.queue.clone(),
                            token: String::new(),
                        };
                        if self.cancel_removing(lease, effects.clone()).await? {
                            return Ok(Cancellation::Removed(summary));
                        }
                    }
                }
            }
            return Err(RedisDriverError::Moved {
                id: id.0.clone(),
                tries: CANCEL_TRIES,
            }
            .into());
        }
        Ok(match self.track_call(id, Ask::Cancel(mark_for)).await? {
            None => Cancellation::NotFound,
            Some((Done::Marked, summary)) => Cancellation::Marked(summary),
            Some((Done::Removed, job)) => Cancellation::Removed(job),
            Some((Done::Looked, summary)) => {
                return Err(RedisDriverError::unexpected(
                    "cancel",
                    &Value::SimpleString(format!("{summary:?}")),
                )
                .into())
            }
        })
    }

    /// One `MGET` on one server; on a cluster one per queue (its slot), all in flight at
    /// once. A key whose job id this store could never have made, or whose kind no record
    /// may have, reads as missing.
    async fn records(&self, keys: &[RecordKey]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = vec![None; keys.len()];
        // The queue and the Redis key of each key that can name a record.
        let mut named: Vec<(usize, &str, String)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if !key.is_valid() {
                continue;
            }
            if let Some((queue, member)) = split_job_id(&key.job_id.0) {
                named.push((i, queue, self.keys().record(queue, &member, &key.kind)));
            }
        }
        if named.is_empty() {
            return Ok(out);
        }
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        if self.split() {
            for (at, (_, queue, _)) in named.iter().enumerate() {
                match groups.iter_mut().find(|(q, _)| q == queue) {
                    Some((_, members)) => members.push(at),
                    None => groups.push((queue, vec![at])),
                }
            }
        } else {
            groups.push(("", (0..named.len()).collect()));
        }
        let reads = groups.iter().map(|(_, members)| {
            let names: Vec<String> = members.iter().map(|&at| named[at].2.clone()).collect();
            async move { Ok::<_, queue_core::Error>((members, self.read_records(&names).await?)) }
        });
        for (members, values) in try_join_all(reads).await? {
            for (&at, value) in members.iter().zip(values) {
                out[named[at].0] = value;
            }
        }
        Ok(out)
    }

    /// Unfenced, a `SET ... PX` (a `DEL` for a time to live under a millisecond); fenced,
    /// one script that checks the job's token against the lease's first. A key whose job id
    /// this store could never have made is not written (`false`).
    async fn put_record(
        &self,
        key: &RecordKey,
        value: &[u8],
        ttl: Duration,
        fence: Option<&Lease>,
    ) -> Result<bool> {
        check_record(DRIVER, key, fence)?;
        let Some((queue, member)) = split_job_id(&key.job_id.0) else {
            return Ok(false);
        };
        let record = self.keys().record(queue, &member, &key.kind);
        let ttl = millis(ttl);
        if let Some(lease) = fence {
            if job_member(&lease.queue, &lease.job_id.0).as_deref() != Some(member.as_str()) {
                // A lease of another queue than the id's: never the job's current one.
                return Ok(false);
            }
            let mut invocation = SCRIPTS.record.prepare_invoke();
            invocation
                .key(self.keys().job(queue, &member))
                .key(record)
                .arg(&lease.token)
                .arg(value)
                .arg(ttl);
            let reply = self.invoke(&invocation).await?;
            return Ok(super::call::integer("put_record", &reply)? == 1);
        }
        let cmd = if ttl > 0 {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&record).arg(value).arg("PX").arg(ttl);
            cmd
        } else {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(&record);
            cmd
        };
        cmd.exec_async(&mut self.conn()).await.map_err(backend)?;
        Ok(true)
    }

    /// Redis expires records by itself (`PX`): nothing to prune.
    async fn prune_records(&self) -> Result<u64> {
        Ok(0)
    }
}
