//! The in-memory reference driver.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{
    duration_millis, from_unix_millis, new_token, unix_millis, Availability, Capabilities,
    FailedJob, JobId, Lease, NewJob, QueueSize, ReserveRequest, Reserved, Storage,
};
use crate::error::{Error, Result};

/// A storage that lives in the process's memory: the reference driver, the default for tests,
/// and the store behind [`Queue::fake`](crate::Queue::fake).
///
/// Guarantees: atomic operations under one mutex; nothing survives the process. Times come
/// from the process's clock.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    pushed: Notify,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    jobs: HashMap<u64, Job>,
    /// Per queue: jobs not reserved, by (available at, id).
    pending: HashMap<String, BTreeSet<(i64, u64)>>,
    /// Per queue: reserved jobs, by (lease deadline, id).
    reserved: HashMap<String, BTreeSet<(i64, u64)>>,
    failed: BTreeMap<u64, FailedJob>,
    locks: HashMap<String, (String, i64)>,
    /// Counters: value and expiry (ms), if any.
    counters: BTreeMap<String, (i64, Option<i64>)>,
    /// Every job ever pushed, for [`Queue::fake`](crate::Queue::fake) assertions.
    history: Vec<NewJob>,
}

#[derive(Debug)]
struct Job {
    queue: String,
    name: String,
    payload: Vec<u8>,
    attempts: u32,
    available_at: i64,
    lease: Option<(String, i64)>,
}

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the whole store, so keep going with the data as it is.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every job pushed to this store so far, in order, whether or not it ran.
    pub fn pushed(&self) -> Vec<NewJob> {
        self.state().history.clone()
    }

    /// Appends raw bytes as a job, as if another program wrote them into the store.
    pub fn push_raw(&self, queue: &str, name: &str, payload: Vec<u8>) -> JobId {
        let mut state = self.state();
        let id = state.insert(queue, name, payload, now_ms());
        self.inner.pushed.notify_waiters();
        JobId(id.to_string())
    }
}

impl State {
    fn insert(&mut self, queue: &str, name: &str, payload: Vec<u8>, available_at: i64) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.jobs.insert(
            id,
            Job {
                queue: queue.to_owned(),
                name: name.to_owned(),
                payload,
                attempts: 0,
                available_at,
                lease: None,
            },
        );
        self.pending
            .entry(queue.to_owned())
            .or_default()
            .insert((available_at, id));
        id
    }

    /// The job behind a lease if the lease is still its current one.
    fn check(&self, lease: &Lease) -> Result<u64> {
        let lost = || Error::LeaseLost {
            job_id: lease.job_id.0.clone(),
        };
        let id: u64 = lease.job_id.0.parse().map_err(|_| lost())?;
        match self.jobs.get(&id) {
            Some(Job {
                lease: Some((token, _)),
                ..
            }) if *token == lease.token => Ok(id),
            _ => Err(lost()),
        }
    }

    fn unreserve(&mut self, id: u64) -> Option<Job> {
        let job = self.jobs.remove(&id)?;
        if let Some((_, deadline)) = &job.lease {
            if let Some(set) = self.reserved.get_mut(&job.queue) {
                set.remove(&(*deadline, id));
            }
        } else if let Some(set) = self.pending.get_mut(&job.queue) {
            set.remove(&(job.available_at, id));
        }
        Some(job)
    }

    fn next_in(&self, queue: &str, now: i64, name: Option<&str>) -> Option<(i64, u64)> {
        let matches = |id: &u64| match name {
            None => true,
            Some(n) => self.jobs.get(id).is_some_and(|j| j.name == n),
        };
        let pending = self.pending.get(queue).and_then(|set| {
            set.iter()
                .take_while(|(at, _)| *at <= now)
                .find(|(_, id)| matches(id))
                .copied()
        });
        let expired = self.reserved.get(queue).and_then(|set| {
            set.iter()
                .take_while(|(at, _)| *at <= now)
                .find(|(_, id)| matches(id))
                .copied()
        });
        match (pending, expired) {
            (Some(p), Some(e)) => Some(p.min(e)),
            (p, e) => p.or(e),
        }
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn driver(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            reserve_by_name: true,
            durable: false,
            wake_on_push: true,
        }
    }

    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        let now = now_ms();
        let mut state = self.state();
        let mut ids = Vec::with_capacity(jobs.len());
        for job in jobs {
            let at = match job.available {
                Availability::Now => now,
                Availability::After(d) => now.saturating_add(duration_millis(d)),
                Availability::At(t) => unix_millis(t),
            };
            let id = state.insert(&job.queue, &job.name, job.payload.clone(), at);
            state.history.push(job);
            ids.push(JobId(id.to_string()));
        }
        drop(state);
        self.inner.pushed.notify_waiters();
        Ok(ids)
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        let now = now_ms();
        let deadline = now.saturating_add(duration_millis(request.lease));
        let mut state = self.state();
        let mut out = Vec::new();
        for queue in &request.queues {
            while out.len() < request.limit.max(1) {
                let Some(key) = state.next_in(queue, now, request.name.as_deref()) else {
                    break;
                };
                let id = key.1;
                let Some(job) = state.unreserve(id) else {
                    break;
                };
                let token = new_token();
                let mut job = job;
                job.attempts += 1;
                job.lease = Some((token.clone(), deadline));
                out.push(Reserved {
                    lease: Lease {
                        job_id: JobId(id.to_string()),
                        queue: queue.clone(),
                        token,
                    },
                    name: job.name.clone(),
                    payload: job.payload.clone(),
                    attempts: job.attempts,
                });
                state
                    .reserved
                    .entry(queue.clone())
                    .or_default()
                    .insert((deadline, id));
                state.jobs.insert(id, job);
            }
        }
        Ok(out)
    }

    async fn extend(&self, lease: &Lease, duration: Duration) -> Result<()> {
        let mut state = self.state();
        let id = state.check(lease)?;
        let deadline = now_ms().saturating_add(duration_millis(duration));
        if let Some(mut job) = state.unreserve(id) {
            job.lease = Some((lease.token.clone(), deadline));
            state
                .reserved
                .entry(job.queue.clone())
                .or_default()
                .insert((deadline, id));
            state.jobs.insert(id, job);
        }
        Ok(())
    }

    async fn acknowledge(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        let mut state = self.state();
        Ok(leases
            .iter()
            .map(|lease| match state.check(lease) {
                Ok(id) => state.unreserve(id).is_some(),
                Err(_) => false,
            })
            .collect())
    }

    async fn release(&self, lease: &Lease, delay: Duration, refund_attempt: bool) -> Result<()> {
        let mut state = self.state();
        let id = state.check(lease)?;
        if let Some(mut job) = state.unreserve(id) {
            job.lease = None;
            job.available_at = now_ms().saturating_add(duration_millis(delay));
            if refund_attempt {
                job.attempts = job.attempts.saturating_sub(1);
            }
            state
                .pending
                .entry(job.queue.clone())
                .or_default()
                .insert((job.available_at, id));
            state.jobs.insert(id, job);
        }
        drop(state);
        self.inner.pushed.notify_waiters();
        Ok(())
    }

    async fn fail(&self, lease: &Lease, error: &str) -> Result<()> {
        let mut state = self.state();
        let id = state.check(lease)?;
        if let Some(job) = state.unreserve(id) {
            state.next_id += 1;
            let failed_id = state.next_id;
            state.failed.insert(
                failed_id,
                FailedJob {
                    id: failed_id.to_string(),
                    job_id: id.to_string(),
                    queue: job.queue,
                    name: job.name,
                    payload: job.payload,
                    error: error.to_owned(),
                    attempts: job.attempts,
                    failed_at: SystemTime::now(),
                },
            );
        }
        Ok(())
    }

    async fn size(&self, queue: &str) -> Result<QueueSize> {
        let now = now_ms();
        let state = self.state();
        let mut size = QueueSize::default();
        if let Some(set) = state.pending.get(queue) {
            for (at, _) in set {
                if *at <= now {
                    size.waiting += 1;
                } else {
                    size.delayed += 1;
                }
            }
        }
        size.reserved = state.reserved.get(queue).map_or(0, |s| s.len() as u64);
        Ok(size)
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let state = self.state();
        let mut queues: Vec<String> = state
            .jobs
            .values()
            .map(|j| j.queue.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        queues.dedup();
        Ok(queues)
    }

    async fn clear(&self, queue: &str) -> Result<u64> {
        let mut state = self.state();
        let ids: Vec<u64> = state
            .pending
            .get(queue)
            .map(|s| s.iter().map(|(_, id)| *id).collect())
            .unwrap_or_default();
        for id in &ids {
            state.unreserve(*id);
        }
        Ok(ids.len() as u64)
    }

    async fn failed_list(&self, offset: u64, limit: u64) -> Result<Vec<FailedJob>> {
        let state = self.state();
        Ok(state
            .failed
            .values()
            .rev()
            .skip(offset as usize)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn failed_get(&self, id: &str) -> Result<Option<FailedJob>> {
        let state = self.state();
        Ok(id
            .parse()
            .ok()
            .and_then(|id| state.failed.get(&id).cloned()))
    }

    async fn failed_count(&self) -> Result<u64> {
        Ok(self.state().failed.len() as u64)
    }

    async fn failed_retry(&self, id: &str) -> Result<Option<JobId>> {
        let mut state = self.state();
        let Some(job) = id.parse().ok().and_then(|id| state.failed.remove(&id)) else {
            return Ok(None);
        };
        let new_id = state.insert(&job.queue, &job.name, job.payload, now_ms());
        drop(state);
        self.inner.pushed.notify_waiters();
        Ok(Some(JobId(new_id.to_string())))
    }

    async fn failed_forget(&self, id: &str) -> Result<bool> {
        let mut state = self.state();
        Ok(id
            .parse()
            .ok()
            .and_then(|id| state.failed.remove(&id))
            .is_some())
    }

    async fn failed_flush(&self) -> Result<u64> {
        let mut state = self.state();
        let n = state.failed.len() as u64;
        state.failed.clear();
        Ok(n)
    }

    async fn failed_prune(&self, before: SystemTime) -> Result<u64> {
        let mut state = self.state();
        let n = state.failed.len();
        state.failed.retain(|_, f| f.failed_at >= before);
        Ok((n - state.failed.len()) as u64)
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let now = now_ms();
        let mut state = self.state();
        let free = match state.locks.get(key) {
            None => true,
            Some((holder, expires)) => holder == owner || *expires <= now,
        };
        if free {
            state.locks.insert(
                key.to_owned(),
                (owner.to_owned(), now.saturating_add(duration_millis(ttl))),
            );
        }
        Ok(free)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        let mut state = self.state();
        match state.locks.get(key) {
            Some((holder, _)) if holder == owner => {
                state.locks.remove(key);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        let now = now_ms();
        let state = self.state();
        let pending = state
            .pending
            .get(queue)
            .and_then(|s| s.first().map(|(at, _)| *at))
            .filter(|at| *at <= now);
        let expired = state
            .reserved
            .get(queue)
            .and_then(|s| s.first().map(|(at, _)| *at))
            .filter(|at| *at <= now);
        Ok(pending
            .into_iter()
            .chain(expired)
            .min()
            .map(from_unix_millis))
    }

    async fn add_counters(&self, deltas: &[(String, i64)], ttl: Option<Duration>) -> Result<()> {
        let now = now_ms();
        let mut state = self.state();
        for (name, delta) in deltas {
            let entry = state.counters.entry(name.clone()).or_insert((0, None));
            if entry.1.is_some_and(|expires| expires <= now) {
                *entry = (0, None);
            }
            entry.0 += delta;
            entry.1 = ttl.map(|ttl| now.saturating_add(duration_millis(ttl)));
        }
        Ok(())
    }

    async fn counters(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        let now = now_ms();
        let mut state = self.state();
        state
            .counters
            .retain(|_, (_, expires)| expires.is_none_or(|at| at > now));
        Ok(state
            .counters
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, (value, _))| (name.clone(), *value))
            .collect())
    }

    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let notified = self.inner.pushed.notified();
        // A job that became due while we were busy must not wait for the whole timeout.
        let next_due = {
            let state = self.state();
            queues
                .iter()
                .filter_map(|q| {
                    state
                        .pending
                        .get(q)
                        .and_then(|s| s.first().map(|(at, _)| *at))
                })
                .chain(queues.iter().filter_map(|q| {
                    state
                        .reserved
                        .get(q)
                        .and_then(|s| s.first().map(|(at, _)| *at))
                }))
                .min()
        };
        let timeout = match next_due {
            Some(at) => {
                let until = from_unix_millis(at)
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                if until.is_zero() {
                    // Due but not taken (say, another job name than the worker runs): pause
                    // briefly instead of returning at once and spinning.
                    timeout.min(Duration::from_millis(20))
                } else {
                    timeout.min(until)
                }
            }
            None => timeout,
        };
        let _ = tokio::time::timeout(timeout, notified).await;
        Ok(())
    }
}
