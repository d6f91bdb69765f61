//! The in-memory reference driver.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::capability::{
    Capabilities, Control, FailedStore, Groups, HeldLock, Inspect, Locks, Track, Wake, Workers,
};
use super::settle::{
    check_effect_list, check_effects, Effect, Guard, LeaseStatus, Outcome, Settle, SettleReply,
    Settled,
};
use super::time::{duration_millis, from_unix_millis, new_token, unix_millis};
use super::types::{
    Availability, Cancellation, FailedJob, JobId, JobState, JobSummary, Lease, NewJob, Page,
    PageRequest, Pushed, QueueSize, RecordKey, ReserveRequest, Reserved, Unique, Until,
};
use super::Storage;
use crate::error::{Error, Result};

const DRIVER: &str = "memory";

/// A storage that lives in the process's memory: the reference driver, the default for tests,
/// and the store behind [`Queue::fake`](crate::Queue::fake).
///
/// Guarantees: every call is one atomic step under one mutex (a whole batch of settlements
/// included); nothing survives the process. Times come from the process's clock. It keeps
/// nothing of a job once the job is gone, unless made with [`MemoryStorage::recording`].
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    pushed: Notify,
    /// Every job pushed, for the assertions of a fake queue; `None` unless recording.
    history: Option<Mutex<Vec<NewJob>>>,
}

/// Who holds a unique key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Job(u64),
    Failed(u64),
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
    claims: HashMap<String, Holder>,
    groups: HashMap<String, BTreeMap<String, i64>>,
    /// Values of groups ([`Effect::Value`]) by group and name.
    values: HashMap<String, BTreeMap<String, Vec<u8>>>,
    /// Waiting jobs by key: dependencies left, and the job.
    waiting: HashMap<String, (i64, NewJob)>,
    locks: HashMap<String, (String, i64)>,
    /// Jobs parked on a lock ([`Effect::Park`]), by key, oldest (lowest id) first.
    parked: HashMap<String, BTreeSet<u64>>,
    /// Records by (job id, kind): the value and when it expires (Unix ms).
    records: HashMap<(String, String), (Vec<u8>, i64)>,
    restart: u64,
    /// The worker registry by id: the entry and when it expires (Unix ms).
    workers: BTreeMap<String, (Vec<u8>, i64)>,
}

#[derive(Debug)]
struct Job {
    queue: String,
    name: String,
    payload: Vec<u8>,
    attempts: u32,
    available_at: i64,
    lease: Option<(String, i64)>,
    unique: Option<Unique>,
    /// The lock it is parked on ([`Effect::Park`]), while in [`State::parked`].
    gate: Option<String>,
}

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

fn id_of(text: &str) -> Option<u64> {
    text.parse().ok()
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that records every job pushed to it, for
    /// [`pushed`](MemoryStorage::pushed) (the store behind a fake queue).
    pub fn recording() -> Self {
        MemoryStorage {
            inner: Arc::new(Shared {
                history: Some(Mutex::default()),
                ..Shared::default()
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the whole store, so keep going with the data as it is.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every job pushed to this store so far, in order, whether or not it ran: empty unless
    /// the store was made with [`MemoryStorage::recording`].
    pub fn pushed(&self) -> Vec<NewJob> {
        match &self.inner.history {
            Some(history) => history.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            None => Vec::new(),
        }
    }

    /// Adds the jobs `effects` push to the history of a recording store.
    fn record_pushes(&self, effects: &[Effect]) {
        if let Some(history) = &self.inner.history {
            let mut history = history.lock().unwrap_or_else(|p| p.into_inner());
            for effect in effects {
                if let Effect::Push(job) = effect {
                    history.push(job.clone());
                }
            }
        }
    }

    /// The jobs in the failed store, oldest first.
    pub(crate) fn failed_jobs(&self) -> Vec<FailedJob> {
        self.state().failed.values().cloned().collect()
    }

    /// Appends raw bytes as a job, as if another program wrote them into the store.
    pub fn push_raw(&self, queue: &str, name: &str, payload: Vec<u8>) -> JobId {
        let mut state = self.state();
        let id = state.insert(NewJob::new(queue, name, payload), now_ms());
        self.inner.pushed.notify_waiters();
        JobId(id.to_string())
    }
}

impl State {
    fn insert(&mut self, job: NewJob, available_at: i64) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        if let Some(unique) = &job.unique {
            self.claims.insert(unique.key.clone(), Holder::Job(id));
        }
        self.pending
            .entry(job.queue.clone())
            .or_default()
            .insert((available_at, id));
        self.jobs.insert(
            id,
            Job {
                queue: job.queue,
                name: job.name,
                payload: job.payload,
                attempts: 0,
                available_at,
                lease: None,
                unique: job.unique,
                gate: None,
            },
        );
        id
    }

    /// The id of the job holding `key`, if it is held.
    fn holder_id(&self, key: &str) -> Option<JobId> {
        match self.claims.get(key)? {
            Holder::Job(id) => Some(JobId(id.to_string())),
            Holder::Failed(id) => self.failed.get(id).map(|f| JobId(f.job_id.clone())),
        }
    }

    /// Pushes one job unless its key is held (or replaces the queued job holding it).
    fn push(&mut self, job: NewJob, now: i64) -> Pushed {
        let at = match job.available {
            Availability::Now => now,
            Availability::After(d) => now.saturating_add(duration_millis(d)),
            Availability::At(t) => unix_millis(t),
        };
        if let Some(unique) = &job.unique {
            if let Some(Holder::Job(id)) = self.claims.get(&unique.key).copied() {
                if unique.replace {
                    if let Some(held) = self.jobs.get_mut(&id) {
                        if held.lease.is_none() {
                            if let Some(pending) = self.pending.get_mut(&held.queue) {
                                pending.remove(&(held.available_at, id));
                                pending.insert((at, id));
                            }
                            held.name = job.name;
                            held.payload = job.payload;
                            held.available_at = at;
                            return Pushed::Replaced(JobId(id.to_string()));
                        }
                    }
                }
            }
            if let Some(existing) = self.holder_id(&unique.key) {
                return Pushed::Duplicate(existing);
            }
        }
        Pushed::Created(JobId(self.insert(job, at).to_string()))
    }

    /// Releases `key` if `holder` holds it.
    fn release_claim(&mut self, key: &str, holder: Holder) {
        if self.claims.get(key) == Some(&holder) {
            self.claims.remove(key);
        }
    }

    /// The job behind a lease if the lease is still its current one.
    fn current(&self, lease: &Lease) -> Option<u64> {
        let id = id_of(&lease.job_id.0)?;
        match self.jobs.get(&id) {
            Some(Job {
                lease: Some((token, _)),
                ..
            }) if *token == lease.token => Some(id),
            _ => None,
        }
    }

    fn unreserve(&mut self, id: u64) -> Option<Job> {
        let mut job = self.jobs.remove(&id)?;
        if let Some(key) = job.gate.take() {
            self.unpark(&key, id);
        }
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
        let first_due = |set: Option<&BTreeSet<(i64, u64)>>| {
            set.and_then(|set| {
                set.iter()
                    .take_while(|(at, _)| *at <= now)
                    .find(|(_, id)| matches(id))
                    .copied()
            })
        };
        let pending = first_due(self.pending.get(queue));
        let expired = first_due(self.reserved.get(queue));
        match (pending, expired) {
            (Some(p), Some(e)) => Some(p.min(e)),
            (p, e) => p.or(e),
        }
    }

    fn reserve(&mut self, request: &ReserveRequest, now: i64) -> Vec<Reserved> {
        let deadline = now.saturating_add(duration_millis(request.lease));
        let mut out = Vec::new();
        for queue in &request.queues {
            while out.len() < request.limit.max(1) {
                let Some((_, id)) = self.next_in(queue, now, request.name.as_deref()) else {
                    break;
                };
                let Some(mut job) = self.unreserve(id) else {
                    break;
                };
                let token = new_token();
                job.attempts += 1;
                job.lease = Some((token.clone(), deadline));
                if let Some(unique) = &job.unique {
                    if unique.until == Until::Started {
                        let key = unique.key.clone();
                        self.release_claim(&key, Holder::Job(id));
                    }
                }
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
                self.reserved
                    .entry(queue.clone())
                    .or_default()
                    .insert((deadline, id));
                self.jobs.insert(id, job);
            }
        }
        out
    }

    fn unpark(&mut self, key: &str, id: u64) {
        if let Some(ids) = self.parked.get_mut(key) {
            ids.remove(&id);
            if ids.is_empty() {
                self.parked.remove(key);
            }
        }
    }

    /// Makes the job parked on `key` longest ago due now, if one is still waiting for its
    /// delay; whether one was.
    fn wake(&mut self, key: &str, now: i64) -> bool {
        let Some(mut ids) = self.parked.remove(key) else {
            return false;
        };
        let mut woke = false;
        while let Some(id) = ids.pop_first() {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            job.gate = None;
            if job.lease.is_some() || job.available_at <= now {
                continue;
            }
            let due = std::mem::replace(&mut job.available_at, now);
            if let Some(set) = self.pending.get_mut(&job.queue) {
                set.remove(&(due, id));
                set.insert((now, id));
            }
            woke = true;
            break;
        }
        if !ids.is_empty() {
            self.parked.insert(key.to_owned(), ids);
        }
        woke
    }

    fn wait_again(&mut self, id: u64, mut job: Job, available_at: i64) {
        job.lease = None;
        job.available_at = available_at;
        self.pending
            .entry(job.queue.clone())
            .or_default()
            .insert((available_at, id));
        self.jobs.insert(id, job);
    }

    /// Applies the effects of one call, kind by kind: pushes, waiting jobs held, dependency
    /// changes (summed per key), skips, counters.
    fn apply(&mut self, effects: Vec<Effect>, now: i64) {
        let mut deps: BTreeMap<String, i64> = BTreeMap::new();
        let (mut holds, mut skips, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        for effect in effects {
            match effect {
                Effect::Push(job) => {
                    self.push(job, now);
                }
                Effect::Hold(waiting) => holds.push(waiting),
                Effect::Deps { key, delta } => *deps.entry(key).or_default() += delta,
                Effect::Skip { key } => skips.push(key),
                Effect::Count { group, deltas } => counts.push((group, deltas)),
                Effect::Value { group, name, value } => {
                    self.values.entry(group).or_default().insert(name, value);
                }
                // Written by the settle of their job; refused in an apply.
                Effect::Record { .. } | Effect::Payload(_) | Effect::Park { .. } => {}
            }
        }
        for waiting in holds {
            self.waiting
                .entry(waiting.key)
                .or_insert((i64::from(waiting.deps), waiting.job));
        }
        for (key, delta) in deps {
            let Some((left, _)) = self.waiting.get_mut(&key) else {
                continue;
            };
            *left += delta;
            if *left <= 0 {
                if let Some((_, job)) = self.waiting.remove(&key) {
                    self.push(job, now);
                }
            }
        }
        for key in skips {
            self.waiting.remove(&key);
        }
        for (group, deltas) in counts {
            let counters = self.groups.entry(group).or_default();
            for (name, delta) in deltas {
                *counters.entry(name).or_default() += delta;
            }
        }
    }

    /// Applies one settlement's transition; its effects are returned for [`apply`](Self::apply)
    /// (`None` when the lease is stale).
    fn settle(&mut self, settle: Settle, now: i64) -> Option<Vec<Effect>> {
        let id = self.current(&settle.lease)?;
        let mut job = self.unreserve(id)?;
        // Records and a new payload are of the settled job itself.
        let (own, effects): (Vec<Effect>, Vec<Effect>) =
            settle.effects.into_iter().partition(|e| {
                matches!(
                    e,
                    Effect::Record { .. } | Effect::Payload(_) | Effect::Park { .. }
                )
            });
        let mut park = None;
        for effect in own {
            match effect {
                Effect::Record { kind, value, ttl } => {
                    let expires = now.saturating_add(duration_millis(ttl));
                    self.records
                        .insert((id.to_string(), kind), (value, expires));
                }
                // Only with a retry or a release (`check_effects`): the job stays.
                Effect::Payload(payload) => job.payload = payload,
                Effect::Park { key } => park = Some(key),
                _ => {}
            }
        }
        // Only with a retry or a release (`check_effects`): the job stays, parked while the
        // lock is held; due at once if it was freed before this step (no wake-up is lost).
        // Parked, it is due by the lock's expiry at the latest: a holder that dies leaves it
        // to expire, and the job looks again then.
        let mut due_by = i64::MAX;
        if let Some(key) = park {
            match self.locks.get(&key) {
                Some((_, expires)) if *expires > now => {
                    due_by = *expires;
                    self.parked.entry(key.clone()).or_default().insert(id);
                    job.gate = Some(key);
                }
                _ => due_by = now,
            }
        }
        let after = |delay: Duration| now.saturating_add(duration_millis(delay)).min(due_by);
        match settle.outcome {
            Outcome::Ack => {
                if let Some(unique) = &job.unique {
                    self.release_claim(&unique.key, Holder::Job(id));
                }
            }
            Outcome::Retry { delay } => {
                self.wait_again(id, job, after(delay));
            }
            Outcome::Release { delay } => {
                job.attempts = job.attempts.saturating_sub(1);
                self.wait_again(id, job, after(delay));
            }
            Outcome::Fail { reason } => {
                self.next_id += 1;
                let failed_id = self.next_id;
                if let Some(unique) = &job.unique {
                    if unique.until == Until::Succeeded {
                        if self.claims.get(&unique.key) == Some(&Holder::Job(id)) {
                            self.claims
                                .insert(unique.key.clone(), Holder::Failed(failed_id));
                        }
                    } else {
                        self.release_claim(&unique.key, Holder::Job(id));
                    }
                }
                self.failed.insert(
                    failed_id,
                    FailedJob {
                        id: failed_id.to_string(),
                        job_id: id.to_string(),
                        queue: job.queue,
                        name: job.name,
                        payload: job.payload,
                        error: reason,
                        attempts: job.attempts,
                        failed_at: from_unix_millis(now),
                        unique: job.unique,
                    },
                );
            }
        }
        Some(effects)
    }

    /// The unexpired record under `key`.
    fn record(&self, job_id: &str, kind: &str, now: i64) -> Option<&Vec<u8>> {
        self.records
            .get(&(job_id.to_owned(), kind.to_owned()))
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value)
    }

    /// What `Track::job` and `cancel` say of the job `id`.
    fn summary(&self, id: u64, now: i64) -> Option<JobSummary> {
        let job = self.jobs.get(&id)?;
        let (state, due) = match &job.lease {
            Some((_, deadline)) => (JobState::Reserved, *deadline),
            None if job.available_at > now => (JobState::Delayed, job.available_at),
            None => (JobState::Waiting, job.available_at),
        };
        Some(JobSummary {
            id: JobId(id.to_string()),
            queue: job.queue.clone(),
            name: job.name.clone(),
            attempts: job.attempts,
            state,
            due_at: from_unix_millis(due),
            unique_key: job.unique.as_ref().map(|u| u.key.clone()),
            payload: job.payload.clone(),
        })
    }

    fn forget_failed(&mut self, id: u64) -> Option<FailedJob> {
        let job = self.failed.remove(&id)?;
        if let Some(unique) = &job.unique {
            self.release_claim(&unique.key, Holder::Failed(id));
        }
        Some(job)
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities::complete(DRIVER, self)
            .track(self)
            .workers(self)
            .locks(self)
            .rewrite(true)
            .park(true)
            .durable(false)
            .atomic_push(true)
    }

    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>> {
        let now = now_ms();
        if let Some(history) = &self.inner.history {
            history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(jobs.iter().cloned());
        }
        let mut state = self.state();
        let pushed = jobs.into_iter().map(|job| state.push(job, now)).collect();
        drop(state);
        self.inner.pushed.notify_waiters();
        Ok(pushed)
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        Ok(self.state().reserve(request, now_ms()))
    }

    async fn extend(&self, leases: &[Lease], duration: Duration) -> Result<Vec<LeaseStatus>> {
        let now = now_ms();
        let deadline = now.saturating_add(duration_millis(duration));
        let mut state = self.state();
        Ok(leases
            .iter()
            .map(|lease| {
                let Some(id) = state.current(lease) else {
                    return LeaseStatus::Lost;
                };
                if let Some(mut job) = state.unreserve(id) {
                    job.lease = Some((lease.token.clone(), deadline));
                    state
                        .reserved
                        .entry(job.queue.clone())
                        .or_default()
                        .insert((deadline, id));
                    state.jobs.insert(id, job);
                }
                match state.record(&id.to_string(), RecordKey::CANCEL, now) {
                    Some(_) => LeaseStatus::Cancelled,
                    None => LeaseStatus::Held,
                }
            })
            .collect())
    }

    async fn settle(
        &self,
        settles: Vec<Settle>,
        fetch: Option<&ReserveRequest>,
    ) -> Result<SettleReply> {
        check_effects(DRIVER, &settles)?;
        let now = now_ms();
        let mut state = self.state();
        let mut effects = Vec::new();
        let settled = settles
            .into_iter()
            .map(|s| match state.settle(s, now) {
                Some(mine) => {
                    effects.extend(mine);
                    Settled::Applied
                }
                None => Settled::Stale,
            })
            .collect();
        state.apply(effects, now);
        let reserved = match fetch {
            Some(request) => state.reserve(request, now),
            None => Vec::new(),
        };
        drop(state);
        // Retried and released jobs (and pushed follow-ups) may be due for another worker.
        self.inner.pushed.notify_waiters();
        Ok(SettleReply { settled, reserved })
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
                let woke = state.wake(key, now_ms());
                drop(state);
                if woke {
                    self.inner.pushed.notify_waiters();
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl Locks for MemoryStorage {
    async fn locks(&self, page: PageRequest) -> Result<Page<HeldLock>> {
        let now = now_ms();
        let state = self.state();
        let held = state
            .locks
            .iter()
            .filter(|(_, (_, expires))| *expires > now)
            .map(|(key, _)| key.clone());
        let keys = Page::of_names(held.collect::<Vec<_>>(), "", &page);
        let items = keys
            .items
            .into_iter()
            .filter_map(|key| {
                let (owner, expires) = state.locks.get(&key)?;
                Some(HeldLock {
                    owner: owner.clone(),
                    expires_at: from_unix_millis(*expires),
                    key,
                })
            })
            .collect();
        Ok(Page {
            items,
            next: keys.next,
        })
    }

    async fn release(&self, key: &str) -> Result<bool> {
        let now = now_ms();
        let mut state = self.state();
        let removed = state.locks.remove(key);
        let woke = removed.is_some() && state.wake(key, now);
        drop(state);
        if woke {
            self.inner.pushed.notify_waiters();
        }
        Ok(removed.is_some_and(|(_, expires)| expires > now))
    }
}

#[async_trait]
impl FailedStore for MemoryStorage {
    async fn list(&self, page: PageRequest) -> Result<Page<FailedJob>> {
        let state = self.state();
        let below = match &page.after {
            Some(cursor) => id_of(cursor).ok_or_else(|| Error::Contract {
                driver: DRIVER,
                problem: format!("`{cursor}` is not a cursor of this failed store"),
            })?,
            None => u64::MAX,
        };
        let limit = page.limit.max(1);
        let items: Vec<FailedJob> = state
            .failed
            .range(..below)
            .rev()
            .take(limit)
            .map(|(_, job)| job.clone())
            .collect();
        let next = match items.last() {
            Some(last) if items.len() == limit => Some(last.id.clone()),
            _ => None,
        };
        Ok(Page { items, next })
    }

    async fn get(&self, id: &str) -> Result<Option<FailedJob>> {
        let state = self.state();
        Ok(id_of(id).and_then(|id| state.failed.get(&id).cloned()))
    }

    async fn count(&self) -> Result<u64> {
        Ok(self.state().failed.len() as u64)
    }

    async fn retry(&self, id: &str) -> Result<Option<Pushed>> {
        let Some(id) = id_of(id) else {
            return Ok(None);
        };
        let mut state = self.state();
        let Some(unique) = state.failed.get(&id).map(|f| f.unique.clone()) else {
            return Ok(None);
        };
        if let Some(unique) = &unique {
            match state.claims.get(&unique.key) {
                None => {}
                Some(Holder::Failed(holder)) if *holder == id => {
                    state.claims.remove(&unique.key);
                }
                Some(_) => {
                    let existing = state.holder_id(&unique.key);
                    return Ok(existing.map(Pushed::Duplicate));
                }
            }
        }
        let Some(failed) = state.failed.remove(&id) else {
            return Ok(None);
        };
        let mut job = NewJob::new(failed.queue, failed.name, failed.payload);
        job.unique = failed.unique;
        let pushed = state.push(job, now_ms());
        drop(state);
        self.inner.pushed.notify_waiters();
        Ok(Some(pushed))
    }

    async fn forget(&self, id: &str) -> Result<bool> {
        let mut state = self.state();
        Ok(id_of(id).and_then(|id| state.forget_failed(id)).is_some())
    }

    async fn flush(&self) -> Result<u64> {
        let mut state = self.state();
        let ids: Vec<u64> = state.failed.keys().copied().collect();
        for id in &ids {
            state.forget_failed(*id);
        }
        Ok(ids.len() as u64)
    }

    async fn prune(&self, before: SystemTime) -> Result<u64> {
        let mut state = self.state();
        let ids: Vec<u64> = state
            .failed
            .iter()
            .filter(|(_, f)| f.failed_at < before)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            state.forget_failed(*id);
        }
        Ok(ids.len() as u64)
    }
}

#[async_trait]
impl Inspect for MemoryStorage {
    async fn size(&self, queue: &str) -> Result<QueueSize> {
        let now = now_ms();
        let state = self.state();
        let mut size = QueueSize::default();
        if let Some(set) = state.pending.get(queue) {
            size.waiting = set.range(..(now.saturating_add(1), 0)).count() as u64;
            size.delayed = set.len() as u64 - size.waiting;
        }
        size.reserved = state.reserved.get(queue).map_or(0, |s| s.len() as u64);
        Ok(size)
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let state = self.state();
        let queues: BTreeSet<String> = state.jobs.values().map(|j| j.queue.clone()).collect();
        Ok(queues.into_iter().collect())
    }

    async fn clear(&self, queue: &str) -> Result<u64> {
        let mut state = self.state();
        let ids: Vec<u64> = state
            .pending
            .get(queue)
            .map(|s| s.iter().map(|(_, id)| *id).collect())
            .unwrap_or_default();
        for id in &ids {
            if let Some(Job {
                unique: Some(unique),
                ..
            }) = state.unreserve(*id)
            {
                state.release_claim(&unique.key, Holder::Job(*id));
            }
        }
        Ok(ids.len() as u64)
    }

    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        let now = now_ms();
        let state = self.state();
        let first = |set: Option<&BTreeSet<(i64, u64)>>| {
            set.and_then(|s| s.first().map(|(at, _)| *at))
                .filter(|at| *at <= now)
        };
        let pending = first(state.pending.get(queue));
        let expired = first(state.reserved.get(queue));
        Ok(pending
            .into_iter()
            .chain(expired)
            .min()
            .map(from_unix_millis))
    }

    async fn jobs(
        &self,
        queue: &str,
        state_wanted: JobState,
        page: PageRequest,
    ) -> Result<Page<JobSummary>> {
        let now = now_ms();
        let state = self.state();
        let after = match &page.after {
            Some(cursor) => Some(parse_cursor(cursor)?),
            None => None,
        };
        let set = match state_wanted {
            JobState::Reserved => state.reserved.get(queue),
            JobState::Waiting | JobState::Delayed => state.pending.get(queue),
        };
        let limit = page.limit.max(1);
        let keys: Vec<(i64, u64)> = set
            .map(|set| {
                set.iter()
                    .filter(|key| after.is_none_or(|after| **key > after))
                    .filter(|(at, _)| match state_wanted {
                        JobState::Waiting => *at <= now,
                        JobState::Delayed => *at > now,
                        JobState::Reserved => true,
                    })
                    .take(limit)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let items: Vec<JobSummary> = keys
            .iter()
            .filter_map(|(at, id)| {
                let job = state.jobs.get(id)?;
                Some(JobSummary {
                    id: JobId(id.to_string()),
                    queue: job.queue.clone(),
                    name: job.name.clone(),
                    attempts: job.attempts,
                    state: state_wanted,
                    due_at: from_unix_millis(*at),
                    unique_key: job.unique.as_ref().map(|u| u.key.clone()),
                    payload: job.payload.clone(),
                })
            })
            .collect();
        let next = match keys.last() {
            Some((at, id)) if keys.len() == limit => Some(format!("{at}:{id}")),
            _ => None,
        };
        Ok(Page { items, next })
    }
}

fn parse_cursor(cursor: &str) -> Result<(i64, u64)> {
    cursor
        .split_once(':')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.parse().ok()?)))
        .ok_or_else(|| Error::Contract {
            driver: DRIVER,
            problem: format!("`{cursor}` is not a cursor of this store"),
        })
}

#[async_trait]
impl Track for MemoryStorage {
    async fn job(&self, id: &JobId) -> Result<Option<JobSummary>> {
        let Some(id) = id_of(&id.0) else {
            return Ok(None);
        };
        Ok(self.state().summary(id, now_ms()))
    }

    async fn cancel(
        &self,
        id: &JobId,
        mark_for: Duration,
        effects: Vec<Effect>,
    ) -> Result<Cancellation> {
        check_effect_list(DRIVER, &effects, "a cancel")?;
        let Some(id) = id_of(&id.0) else {
            return Ok(Cancellation::NotFound);
        };
        let now = now_ms();
        let mut state = self.state();
        let Some(summary) = state.summary(id, now) else {
            return Ok(Cancellation::NotFound);
        };
        let live = state
            .jobs
            .get(&id)
            .and_then(|job| job.lease.as_ref())
            .is_some_and(|(_, deadline)| *deadline > now);
        if live {
            let expires = now.saturating_add(duration_millis(mark_for));
            state.records.insert(
                (id.to_string(), RecordKey::CANCEL.to_owned()),
                (Vec::new(), expires),
            );
            return Ok(Cancellation::Marked(summary));
        }
        let Some(job) = state.unreserve(id) else {
            return Ok(Cancellation::NotFound);
        };
        if let Some(unique) = &job.unique {
            state.release_claim(&unique.key, Holder::Job(id));
        }
        if !effects.is_empty() {
            self.record_pushes(&effects);
            state.apply(effects, now);
            drop(state);
            self.inner.pushed.notify_waiters();
        }
        Ok(Cancellation::Removed(JobSummary {
            payload: job.payload,
            ..summary
        }))
    }

    async fn records(&self, keys: &[RecordKey]) -> Result<Vec<Option<Vec<u8>>>> {
        let now = now_ms();
        let state = self.state();
        Ok(keys
            .iter()
            .map(|key| state.record(&key.job_id.0, &key.kind, now).cloned())
            .collect())
    }

    async fn put_record(
        &self,
        key: &RecordKey,
        value: &[u8],
        ttl: Duration,
        fence: Option<&Lease>,
    ) -> Result<bool> {
        check_record(key, fence)?;
        let now = now_ms();
        let mut state = self.state();
        if let Some(lease) = fence {
            if state.current(lease).is_none() {
                return Ok(false);
            }
        }
        let expires = now.saturating_add(duration_millis(ttl));
        state.records.insert(
            (key.job_id.0.clone(), key.kind.clone()),
            (value.to_vec(), expires),
        );
        Ok(true)
    }

    async fn prune_records(&self) -> Result<u64> {
        let now = now_ms();
        let mut state = self.state();
        let before = state.records.len();
        state.records.retain(|_, (_, expires)| *expires > now);
        Ok((before - state.records.len()) as u64)
    }
}

/// Refuses a record key no driver must accept, or a fence naming another job.
fn check_record(key: &RecordKey, fence: Option<&Lease>) -> Result<()> {
    super::settle::check_record(DRIVER, key, fence)
}

#[async_trait]
impl Groups for MemoryStorage {
    async fn counters(&self, group: &str) -> Result<Vec<(String, i64)>> {
        let state = self.state();
        Ok(state
            .groups
            .get(group)
            .map(|c| c.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default())
    }

    async fn value(&self, group: &str, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .state()
            .values
            .get(group)
            .and_then(|values| values.get(name).cloned()))
    }

    async fn remove(&self, group: &str) -> Result<bool> {
        let mut state = self.state();
        state.values.remove(group);
        Ok(state.groups.remove(group).is_some())
    }

    async fn list(&self, prefix: &str, page: PageRequest) -> Result<Page<String>> {
        let names: Vec<String> = self.state().groups.keys().cloned().collect();
        Ok(Page::of_names(names, prefix, &page))
    }

    async fn apply(&self, effects: Vec<Effect>) -> Result<()> {
        check_effect_list(DRIVER, &effects, "an apply")?;
        self.record_pushes(&effects);
        self.state().apply(effects, now_ms());
        self.inner.pushed.notify_waiters();
        Ok(())
    }

    async fn apply_if(&self, guard: Guard, effects: Vec<Effect>) -> Result<bool> {
        check_effect_list(DRIVER, &effects, "an apply")?;
        {
            let mut state = self.state();
            let counters = state.groups.entry(guard.group.clone()).or_default();
            let held = counters.get(&guard.counter).copied().unwrap_or(0);
            if held != guard.expect {
                if counters.is_empty() {
                    state.groups.remove(&guard.group);
                }
                return Ok(false);
            }
            counters.insert(guard.counter, guard.set);
            self.record_pushes(&effects);
            state.apply(effects, now_ms());
        }
        self.inner.pushed.notify_waiters();
        Ok(true)
    }

    async fn waiting(&self, key: &str) -> Result<Option<i64>> {
        Ok(self.state().waiting.get(key).map(|(left, _)| *left))
    }
}

#[async_trait]
impl Control for MemoryStorage {
    async fn restart_generation(&self) -> Result<u64> {
        Ok(self.state().restart)
    }

    async fn request_restart(&self) -> Result<()> {
        self.state().restart += 1;
        Ok(())
    }
}

#[async_trait]
impl Workers for MemoryStorage {
    async fn beat(&self, id: &str, entry: &[u8], ttl: Duration) -> Result<()> {
        let now = now_ms();
        let expires = now.saturating_add(duration_millis(ttl));
        let mut state = self.state();
        state.workers.retain(|_, (_, expires)| *expires > now);
        state
            .workers
            .insert(id.to_owned(), (entry.to_vec(), expires));
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let now = now_ms();
        let mut state = self.state();
        state.workers.retain(|_, (_, expires)| *expires > now);
        Ok(state
            .workers
            .iter()
            .map(|(id, (entry, _))| (id.clone(), entry.clone()))
            .collect())
    }

    async fn leave(&self, id: &str) -> Result<bool> {
        let now = now_ms();
        Ok(self
            .state()
            .workers
            .remove(id)
            .is_some_and(|(_, expires)| expires > now))
    }
}

#[async_trait]
impl Wake for MemoryStorage {
    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let notified = self.inner.pushed.notified();
        // A job that became due while we were busy must not wait for the whole timeout.
        let next_due = {
            let state = self.state();
            queues
                .iter()
                .flat_map(|q| [state.pending.get(q), state.reserved.get(q)])
                .filter_map(|set| set.and_then(|s| s.first().map(|(at, _)| *at)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageExt;

    /// A store that is not a fake keeps nothing of a job once it is gone: a `memory://` worker
    /// runs for ever without growing.
    #[tokio::test]
    async fn keeps_nothing_of_finished_jobs() {
        let store = MemoryStorage::new();
        for round in 0..10 {
            let jobs = (0..100)
                .map(|i| NewJob::new("q", "n", format!("{round}-{i}").into_bytes()))
                .collect();
            store.push(jobs).await.unwrap();
            let got = store
                .reserve(&ReserveRequest::new(["q"], Duration::from_secs(60), 100))
                .await
                .unwrap();
            let leases: Vec<Lease> = got.into_iter().map(|r| r.lease).collect();
            assert!(store.acknowledge(&leases).await.unwrap().iter().all(|a| *a));
        }
        let state = store.state();
        assert!(state.jobs.is_empty() && state.claims.is_empty());
        assert!(state.pending.values().all(BTreeSet::is_empty));
        assert!(state.reserved.values().all(BTreeSet::is_empty));
        assert!(store.inner.history.is_none(), "no history unless recording");
    }
}
