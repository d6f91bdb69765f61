//! The split paths of Redis Cluster, where one script may touch one hash slot only: a
//! queue's keys share a slot, the failed store, the registry and each claim or group have
//! slots of their own. What one script does on one server is done here per queue (each
//! call atomic), or in ordered steps that never lose a job (`fail`, `retry` of a failed
//! job); claims, group counters and waiting jobs are refused before this code runs. A
//! job's records live in its queue's slot: a settlement writes them in its queue's script.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::try_join_all;
use queue_core::{
    Effect, Error, Lease, LeaseStatus, NewJob, Outcome, Pushed, Reserved, Result, Settle,
    SettleReply, Settled,
};
use redis::Value;

use super::call::{array, bytes, items, text};
use super::{millis, repeated, Fetch, RedisStorage, CLAIMS_ON_CLUSTER};
use crate::error::{backend, RedisDriverError};
use crate::keys::job_member;
use crate::scripts::SCRIPTS;
use crate::DRIVER;

/// How long a retry of a failed job holds its claim on it (see `failed_claim.lua`): a
/// retry that died between its steps can be done again after this.
const RETRY_CLAIM: Duration = Duration::from_secs(60);

/// Indices of `items` grouped by `key`, groups in order of first appearance.
fn group_by<'a, T>(items: &'a [T], key: impl Fn(&'a T) -> &'a str) -> Vec<(&'a str, Vec<usize>)> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let k = key(item);
        let g = *index.entry(k).or_insert_with(|| {
            groups.push((k, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    groups
}

impl RedisStorage {
    /// Push: the registry first, then one script per queue (each atomic, all in flight at
    /// once). Jobs with claims are refused.
    pub(super) async fn push_split(&self, jobs: &[NewJob]) -> Result<Vec<Pushed>> {
        if jobs.iter().any(|job| job.unique.is_some()) {
            return Err(Error::NotSupported {
                driver: DRIVER,
                operation: CLAIMS_ON_CLUSTER,
            });
        }
        let queues = group_by(jobs, |job| job.queue.as_str());
        let names: Vec<&str> = queues.iter().map(|(name, _)| *name).collect();
        redis::cmd("SADD")
            .arg(self.keys().registry())
            .arg(&names)
            .exec_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let calls = queues.iter().map(|(_, positions)| async move {
            let batch: Vec<&NewJob> = positions.iter().map(|&i| &jobs[i]).collect();
            Ok::<_, Error>((positions, self.push_batch(&batch).await?))
        });
        let mut out = vec![None; jobs.len()];
        for (positions, pushed) in try_join_all(calls).await? {
            for (&i, pushed) in positions.iter().zip(pushed) {
                out[i] = Some(pushed);
            }
        }
        out.into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| RedisDriverError::unexpected("push", &Value::Nil).into())
    }

    /// Reserve: one script per queue in priority order, going on to the next only if this
    /// one had fewer available jobs than still wanted, which is what the one script does on
    /// one server.
    pub(super) async fn reserve_split(&self, fetch: Fetch<'_>) -> Result<Vec<Reserved>> {
        let mut out: Vec<Reserved> = Vec::new();
        for queue in fetch.queues {
            let want = fetch.limit - out.len();
            if want == 0 {
                break;
            }
            let one = Fetch {
                queues: std::slice::from_ref(queue),
                limit: want,
                ..fetch
            };
            let (_, got) = self.settle_batch(&[], &[], Some(one)).await?;
            let exhausted = got.len() < want;
            out.extend(got);
            if !exhausted {
                break;
            }
        }
        Ok(out)
    }

    /// Extend: one script per queue, all in flight at once.
    pub(super) async fn extend_split(
        &self,
        leases: &[Lease],
        lease: Duration,
    ) -> Result<Vec<LeaseStatus>> {
        let calls =
            group_by(leases, |l| l.queue.as_str())
                .into_iter()
                .map(|(_, positions)| async move {
                    let batch: Vec<&Lease> = positions.iter().map(|&i| &leases[i]).collect();
                    Ok::<_, Error>((positions, self.extend_batch(&batch, lease).await?))
                });
        let mut out = vec![LeaseStatus::Lost; leases.len()];
        for (positions, statuses) in try_join_all(calls).await? {
            for (i, status) in positions.into_iter().zip(statuses) {
                out[i] = status;
            }
        }
        Ok(out)
    }

    /// Settle: one script per queue for its acknowledges, retries and releases, all in
    /// flight at once, the first queue of the fetch reserving in its queue's script; each
    /// `fail` in the three steps of [`fail_split`](Self::fail_split), one after another in
    /// the call's order (so the failed store lists them as one server does), alongside the
    /// scripts; then, if the first queue had fewer jobs than wanted, the next queues as
    /// [`reserve_split`](Self::reserve_split) takes them. (Effects but records were refused
    /// before; a record is written by the script of its job's queue, with its settlement.)
    pub(super) async fn settle_split(
        &self,
        settles: &[Settle],
        fetch: Option<Fetch<'_>>,
    ) -> Result<SettleReply> {
        let mut settled = vec![Settled::Stale; settles.len()];
        let repeated = repeated(settles);
        let mut fails = Vec::new();
        let mut rest = Vec::new();
        for (i, settle) in settles.iter().enumerate() {
            if repeated.contains(&i) {
                continue;
            }
            match &settle.outcome {
                Outcome::Fail { reason } => fails.push((i, reason.as_str())),
                _ => rest.push(i),
            }
        }
        let mut groups: Vec<(&str, Vec<usize>)> =
            group_by(&rest, |&i| settles[i].lease.queue.as_str())
                .into_iter()
                .map(|(queue, at)| (queue, at.into_iter().map(|j| rest[j]).collect()))
                .collect();
        let first = fetch.and_then(|f| f.queues.first());
        if let Some(first) = first {
            if !groups.iter().any(|(queue, _)| queue == first) {
                groups.push((first, Vec::new()));
            }
        }
        let scripts = groups.iter().map(|(queue, positions)| async move {
            let batch: Vec<&Settle> = positions.iter().map(|&i| &settles[i]).collect();
            let with_fetch = fetch.filter(|_| first.is_some_and(|f| f == queue));
            let one = with_fetch.map(|f| Fetch {
                queues: &f.queues[..1],
                ..f
            });
            Ok::<_, Error>((positions, self.settle_batch(&batch, &[], one).await?))
        });
        let failing = async {
            let mut out = Vec::with_capacity(fails.len());
            for &(i, reason) in &fails {
                let settle = &settles[i];
                out.push((
                    i,
                    self.fail_split(&settle.lease, reason, &settle.effects)
                        .await?,
                ));
            }
            Ok::<_, Error>(out)
        };
        let (scripts, failing) = futures::future::try_join(try_join_all(scripts), failing).await?;
        let mut reserved = Vec::new();
        for (positions, (each, got)) in scripts {
            for (&i, s) in positions.iter().zip(each) {
                settled[i] = s;
            }
            reserved.extend(got);
        }
        for (i, s) in failing {
            settled[i] = s;
        }
        if let Some(fetch) = fetch {
            if reserved.len() < fetch.limit && fetch.queues.len() > 1 {
                let rest = Fetch {
                    queues: &fetch.queues[1..],
                    limit: fetch.limit - reserved.len(),
                    ..fetch
                };
                reserved.extend(self.reserve_split(rest).await?);
            }
        }
        Ok(SettleReply { settled, reserved })
    }

    /// `fail`, where the job's queue and the failed store are two slots: read the job
    /// (checking the lease), add it to the failed store, then delete it from its queue if the
    /// lease still holds (the settle script's acknowledge), else take the failed entry back
    /// out. The job is never lost: if the process dies after the second step, the job is in
    /// the failed store and still reserved until its lease runs out, when it runs again.
    /// The settlement's `records` (its only effects on a cluster) are written by the third
    /// step, with the job's removal from its queue, and not at all if the lease is stale.
    pub(super) async fn fail_split(
        &self,
        lease: &Lease,
        reason: &str,
        records: &[Effect],
    ) -> Result<Settled> {
        let Some(member) = job_member(&lease.queue, &lease.job_id.0) else {
            return Ok(Settled::Stale);
        };
        let fields: Vec<Value> = redis::cmd("HMGET")
            .arg(self.keys().job(&lease.queue, &member))
            .arg(&["n", "p", "a", "t"])
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let [name, payload, attempts, token] = <[Value; 4]>::try_from(fields)
            .map_err(|f| RedisDriverError::unexpected("fail", &Value::Array(f)))?;
        if text(token).as_deref() != Some(lease.token.as_str()) {
            return Ok(Settled::Stale);
        }
        let mut add = SCRIPTS.failed_add.prepare_invoke();
        add.key(self.keys().failed_seq())
            .key(self.keys().failed_index())
            .arg(&lease.job_id.0)
            .arg(&lease.queue)
            .arg(bytes(name).unwrap_or_default())
            .arg(bytes(payload).unwrap_or_default())
            .arg(reason)
            .arg(super::call::int(&attempts).unwrap_or(0));
        let reply = self.invoke(&add).await?;
        let failed = text(reply.clone())
            .filter(|m| !m.is_empty())
            .ok_or_else(|| RedisDriverError::unexpected("fail", &reply))?;
        let mut ack = Settle::ack(lease.clone());
        ack.effects = records.to_vec();
        let (done, _) = self.settle_batch(&[&ack], &[], None).await?;
        if done == [Settled::Applied] {
            return Ok(Settled::Applied);
        }
        // The lease ran out between the steps and another worker has the job: it is not
        // ours to fail.
        self.forget_failed(&failed).await?;
        Ok(Settled::Stale)
    }

    /// `retry` of a failed job: claim the failed job, push it on its queue, then delete it
    /// from the failed store. Never lost: if the process dies after the push, the job is
    /// on its queue and still in the failed store (a second retry would run it twice); if
    /// it dies before, the claim runs out after [`RETRY_CLAIM`] and the retry can be done
    /// again.
    pub(super) async fn failed_retry_split(&self, member: &str) -> Result<Option<Pushed>> {
        let mut claim = SCRIPTS.failed_claim.prepare_invoke();
        claim
            .key(self.keys().failed_job(member))
            .arg(millis(RETRY_CLAIM));
        let reply = self.invoke(&claim).await?;
        if array("failed_retry", reply.clone())?.is_empty() {
            return Ok(None);
        }
        let [queue, name, payload] = items("failed_retry", reply)?;
        let (Some(queue), Some(name), Some(payload)) = (text(queue), text(name), bytes(payload))
        else {
            return Err(RedisDriverError::unexpected("failed_retry", &Value::Nil).into());
        };
        let job = NewJob::new(queue, name, payload);
        let pushed = match self.push_split(std::slice::from_ref(&job)).await {
            Ok(mut pushed) => pushed.pop(),
            Err(e) => {
                // Give the claim back, so the retry can be done again at once (best effort:
                // otherwise it runs out by itself).
                let _: redis::RedisResult<i64> = redis::cmd("HDEL")
                    .arg(self.keys().failed_job(member))
                    .arg("r")
                    .query_async(&mut self.conn())
                    .await;
                return Err(e);
            }
        };
        let Some(Pushed::Created(id)) = pushed else {
            return Err(RedisDriverError::unexpected("failed_retry", &Value::Nil).into());
        };
        self.forget_failed(member).await?;
        Ok(Some(Pushed::Created(id)))
    }
}
