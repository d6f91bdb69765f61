//! The worker registry's entries: what a running worker tells the store about itself
//! ([`Workers`](crate::storage::Workers)), for `runall workers` and
//! [`Queue::workers`](crate::Queue::workers).
//!
//! A worker whose store has the capability writes its [`WorkerInfo`] when it starts, then
//! every [`BEAT_EVERY`] with a time to live of [`BEAT_TTL`], from a task of its own: the beat
//! reads counters the job tasks keep anyway (atomics, and a small map touched once when a
//! job starts and once when it ends), never holds a lock across an await, and a beat that
//! fails is logged and tried again at the next one. A worker that stops (gracefully, or
//! because a stop condition ended it) removes its entry; one that dies stops beating and its
//! entry expires after [`BEAT_TTL`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::Counters;
use crate::storage::{new_token, Storage, StorageExt};

/// How often a running worker writes its entry in the worker registry.
pub const BEAT_EVERY: Duration = Duration::from_secs(10);

/// How long a worker's entry is kept after its last beat: three beats, so a worker is listed
/// for up to this long after it died, and a beat or two may fail without it disappearing.
pub const BEAT_TTL: Duration = Duration::from_secs(30);

/// How long a stopping worker waits for the store to remove its entry (a store that is down
/// must not hold up a stop: the entry expires anyway).
const LEAVE_WITHIN: Duration = Duration::from_secs(2);

/// What a worker process tells the store about itself: the entry of the worker registry,
/// written as JSON every [`BEAT_EVERY`]. Read with [`Queue::workers`](crate::Queue::workers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker's id in the registry: `host:pid:random`, new for every run.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The queues it takes jobs from, in priority order (for a worker of every queue, those
    /// it knows of at its last beat).
    pub queues: Vec<String>,
    /// Whether it takes jobs from every queue of the store (`--queue '*'`).
    #[serde(default)]
    pub every_queue: bool,
    /// Its slots: how many jobs it runs at once (its concurrency).
    pub slots: usize,
    /// How many of its slots run a job now.
    pub busy: usize,
    /// When it started.
    #[serde(with = "unix_ms")]
    pub started_at: SystemTime,
    /// When it wrote this entry (by its own clock).
    #[serde(with = "unix_ms")]
    pub beat_at: SystemTime,
    /// Jobs it finished and acknowledged since it started.
    #[serde(default)]
    pub processed: u64,
    /// Jobs it moved to the failed store since it started.
    #[serde(default)]
    pub failed: u64,
    /// The version of `queue-core` it runs.
    #[serde(default)]
    pub version: String,
    /// The jobs it runs now, first started first (at most [`slots`](Self::slots) of them).
    #[serde(default)]
    pub running: Vec<RunningJob>,
}

/// A job a worker is running, as its [`WorkerInfo`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunningJob {
    /// The job's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its queue.
    pub queue: String,
    /// When this attempt started (by the worker's clock).
    #[serde(with = "unix_ms")]
    pub started_at: SystemTime,
}

impl WorkerInfo {
    /// Decodes an entry of the registry; `None` for bytes that are not one (written by
    /// another program, or a version that cannot be read).
    pub fn decode(id: &str, entry: &[u8]) -> Option<WorkerInfo> {
        let mut info: WorkerInfo = serde_json::from_slice(entry).ok()?;
        info.id = id.to_owned();
        Some(info)
    }

    /// How long ago it wrote its entry, by this process's clock (zero if its clock is ahead).
    pub fn beat_age(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.beat_at)
            .unwrap_or_default()
    }
}

/// Times as Unix milliseconds in the JSON.
mod unix_ms {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::storage::{from_unix_millis, unix_millis};

    pub(super) fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(unix_millis(*time))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        i64::deserialize(d).map(from_unix_millis)
    }
}

/// The name of this host: `/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `unknown`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The jobs running in this worker, kept for its beats: a counter, and a small map touched
/// once when a job starts and once when it ends.
#[derive(Debug, Default)]
pub(super) struct Running {
    busy: AtomicUsize,
    next: AtomicU64,
    jobs: Mutex<HashMap<u64, RunningJob>>,
}

impl Running {
    fn jobs(&self) -> MutexGuard<'_, HashMap<u64, RunningJob>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a job as running until the returned guard drops.
    pub(super) fn start(self: &Arc<Self>, id: &str, name: &str, queue: &str) -> RunningGuard {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.jobs().insert(
            key,
            RunningJob {
                id: id.to_owned(),
                name: name.to_owned(),
                queue: queue.to_owned(),
                started_at: SystemTime::now(),
            },
        );
        RunningGuard {
            running: self.clone(),
            key,
        }
    }

    /// How many jobs run now, and the first `most` of them started.
    fn snapshot(&self, most: usize) -> (usize, Vec<RunningJob>) {
        let busy = self.busy.load(Ordering::Relaxed);
        let mut jobs: Vec<RunningJob> = self.jobs().values().cloned().collect();
        jobs.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        jobs.truncate(most);
        (busy, jobs)
    }
}

/// A job counted as running; dropping it ends the count.
pub(super) struct RunningGuard {
    running: Arc<Running>,
    key: u64,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.running.busy.fetch_sub(1, Ordering::Relaxed);
        self.running.jobs().remove(&self.key);
    }
}

/// What a worker's beats read.
pub(super) struct Beats {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) info: WorkerInfo,
    pub(super) running: Arc<Running>,
    pub(super) counters: Arc<Counters>,
    /// The queues of a worker of every queue, as they change.
    pub(super) listed: Option<watch::Receiver<Vec<String>>>,
    /// What the throughput history has of this worker's counters so far.
    pub(super) recorded: crate::stats::Tally,
}

impl Beats {
    /// The entry of a worker starting now.
    pub(super) fn info(queues: Vec<String>, every_queue: bool, slots: usize) -> WorkerInfo {
        let host = host_name();
        let pid = std::process::id();
        let now = SystemTime::now();
        WorkerInfo {
            id: format!("{host}:{pid}:{}", &new_token()[..8]),
            host,
            pid,
            queues,
            every_queue,
            slots,
            busy: 0,
            started_at: now,
            beat_at: now,
            processed: 0,
            failed: 0,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            running: Vec::new(),
        }
    }

    /// The entry now.
    fn current(&mut self) -> WorkerInfo {
        let mut info = self.info.clone();
        if let Some(listed) = &mut self.listed {
            info.queues = listed.borrow_and_update().clone();
        }
        let (busy, running) = self.running.snapshot(info.slots);
        info.busy = busy;
        info.running = running;
        info.processed = self.counters.processed.load(Ordering::Relaxed);
        info.failed = self.counters.failed.load(Ordering::Relaxed);
        info.beat_at = SystemTime::now();
        info
    }

    /// Writes the entry once; a failure is logged, never returned.
    async fn beat_once(&mut self) {
        let info = self.current();
        let Ok(workers) = self.storage.workers() else {
            return;
        };
        let entry = match serde_json::to_vec(&info) {
            Ok(entry) => entry,
            Err(e) => {
                warn!(error = %e, "could not encode this worker's registry entry");
                return;
            }
        };
        match tokio::time::timeout(BEAT_EVERY, workers.beat(&info.id, &entry, BEAT_TTL)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %e, worker = %info.id, "could not write this worker's registry entry; trying again at the next beat")
            }
            Err(_) => {
                warn!(worker = %info.id, "writing this worker's registry entry timed out; trying again at the next beat")
            }
        }
    }

    /// Adds what this worker counted since the last time to the throughput history
    /// ([`crate::stats`]), on a store with group counters; a failure is logged, and the
    /// counts are added at the next beat instead.
    async fn record_stats(&mut self) {
        if self.storage.capabilities().groups.is_none() {
            return;
        }
        let now = self.counters.tally();
        let tally = now.since(&self.recorded);
        match tokio::time::timeout(
            BEAT_EVERY,
            crate::stats::record(self.storage.as_ref(), SystemTime::now(), tally),
        )
        .await
        {
            Ok(Ok(())) => self.recorded = now,
            Ok(Err(e)) => {
                warn!(error = %e, "could not add this worker's counts to the throughput history; trying again at the next beat")
            }
            Err(_) => {
                warn!("adding this worker's counts to the throughput history timed out; trying again at the next beat")
            }
        }
    }

    /// Beats now, then every [`BEAT_EVERY`], until `stop` turns true (a beat in flight is
    /// finished first) or the task is dropped, adding to the throughput history at each beat
    /// and when it stops. Nothing on a store without the worker registry (said once in the
    /// debug log).
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        if self.storage.capabilities().workers.is_none() {
            debug!(
                driver = self.storage.driver(),
                "this store has no worker registry: this worker is not listed by `runall workers`"
            );
            return;
        }
        let mut every = tokio::time::interval(BEAT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = every.tick() => false,
                _ = stop.wait_for(|stop| *stop) => true,
            };
            if stopping {
                self.record_stats().await;
                return;
            }
            self.beat_once().await;
            self.record_stats().await;
        }
    }

    /// Stops the beats of `task` (told by `stop`): waits for a beat in flight, at most
    /// [`LEAVE_WITHIN`], so that it cannot land after the entry is removed; then removes the
    /// entry `id`, if any. A failure is logged (the entry expires).
    pub(super) async fn stop(
        storage: &dyn Storage,
        stop: watch::Sender<bool>,
        mut task: tokio::task::JoinHandle<()>,
        id: Option<&str>,
    ) {
        stop.send_replace(true);
        if tokio::time::timeout(LEAVE_WITHIN, &mut task).await.is_err() {
            task.abort();
        }
        if let Some(id) = id {
            Self::leave(storage, id).await;
        }
    }

    /// Removes the entry `id` of a worker that stops; a failure is logged (it expires).
    async fn leave(storage: &dyn Storage, id: &str) {
        let Ok(workers) = storage.workers() else {
            return;
        };
        match tokio::time::timeout(LEAVE_WITHIN, workers.leave(id)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                warn!(error = %e, worker = %id, "could not remove this worker's registry entry; it expires on its own")
            }
            Err(_) => {
                warn!(worker = %id, "removing this worker's registry entry timed out; it expires on its own")
            }
        }
    }
}
