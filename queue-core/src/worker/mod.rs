//! The worker engine: reserve, run, keep the lease, settle.
//!
//! One loop talks to the store. Whenever it has free slots or room in its prefetch buffer it
//! sends the settlements of the jobs that finished since its last call together with a
//! request for as many new jobs as fit: one [`settle`](Storage::settle) call, one round trip
//! where the driver allows it. Jobs beyond the free slots wait in the buffer (prefetch,
//! [`WorkerOptions::prefetch`]), ordered by queue priority, so a slot that frees starts its
//! next job without waiting for the store; a stop puts them back unstarted. Up to two calls
//! are in flight at once, but only one of them fetches: the settlements of jobs that finish
//! while a fetching call is on its way go at once in a call of their own, and the next
//! fetch goes as soon as the last one is back. Two fetching calls would overlap in the
//! store, and the later one could take (and start) jobs that come after the ones the
//! earlier one holds, so jobs start in the store's order: strict queue priority, and each
//! queue first due first. The buffer is sized from how long a fetch takes and how long a
//! job holds its slot, so it covers one fetch and stays empty for jobs that outlast one.
//! Each reserved job
//! runs in a task of its own (`job.rs`): it decodes the envelope, takes the job's lock if it
//! has one, runs the body under its timeout in its own tokio task (so a panic is caught)
//! while a keeper renews the lease and the lock (`lease.rs`, stopping the body as soon as
//! either is lost), and hands its settlement back to the loop.
//!
//! Stopping: a stop condition (`--once`, `--max-jobs`, `--max-time`, `--memory`) stops
//! reserving and lets the jobs in hand finish, however long they take; a signal,
//! [`StopHandle::stop`] or `runall restart` gives them the grace period, then interrupts them
//! and puts them back with the attempt counted, so a job that always outlives the grace still
//! ends in the failed store after its tries.

mod control;
mod job;
mod lease;
mod limit;
mod metrics;
#[cfg(feature = "cli")]
pub(crate) use metrics::BUCKETS as METRIC_BUCKETS;
mod options;
mod presence;
mod system;

#[cfg(feature = "cli")]
pub(crate) use job::job_body_panicked;
pub use options::WorkerOptions;
pub use presence::{host_name, RunningJob, WorkerInfo, BEAT_EVERY, BEAT_TTL};
pub use system::{peak_memory_mb, resident_memory_mb, stop_signal};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::dispatcher::{Dispatcher, QueueSettings};
use crate::error::{Error, Result};
use crate::registry::{Handler, Registry};
use crate::storage::{ReserveRequest, Reserved, Settle, Settled, Storage, StorageExt};

/// Why a worker stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// [`StopHandle::stop`] was called or a signal arrived.
    Stopped,
    /// `--stop-when-empty` and the queues were empty, or `--once` found nothing.
    Empty,
    /// `--once` processed its job.
    Once,
    /// `--max-jobs` was reached.
    MaxJobs,
    /// `--max-time` was reached.
    MaxTime,
    /// `--memory` was exceeded.
    Memory,
    /// `runall restart` was called.
    Restart,
}

impl StopReason {
    /// Whether running jobs get only the grace period (a signal, a stop, a restart), rather
    /// than all the time they need (a stop condition).
    fn is_urgent(self) -> bool {
        matches!(self, StopReason::Stopped | StopReason::Restart)
    }
}

/// What a worker did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Jobs that finished and were acknowledged.
    pub processed: u64,
    /// Jobs moved to the failed store.
    pub failed: u64,
    /// Failed attempts put back for a retry (and jobs that released themselves).
    pub retried: u64,
    /// Jobs put back without finishing (lock held, interrupted by shutdown, unknown name).
    pub released: u64,
    /// Jobs stopped because their lease or lock was lost.
    pub interrupted: u64,
    /// Jobs that ended with [`JobError::discard`](crate::JobError::discard).
    pub discarded: u64,
    /// Jobs cancelled while they ran ([`Queue::cancel`](crate::Queue::cancel)).
    pub cancelled: u64,
    /// Why it stopped.
    pub reason: StopReason,
}

/// Stops a running worker: it stops reserving, lets running jobs finish within the grace
/// period, puts the rest back and returns.
#[derive(Debug, Clone)]
pub struct StopHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl StopHandle {
    /// Asks the worker to stop.
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }
}

/// What a worker may not reserve from: every queue (paused locally, [`PauseHandle`]), or
/// the queues paused for every worker of the store (`runall pause`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Paused {
    local: bool,
    queues: std::collections::BTreeSet<String>,
}

/// Pauses and resumes one worker's reservations from another task: while paused, it
/// reserves nothing and its running jobs finish (for every worker of a store, pause a queue
/// with [`Queue::pause`](crate::Queue::pause)).
#[derive(Debug, Clone)]
pub struct PauseHandle {
    tx: Arc<watch::Sender<Paused>>,
}

impl PauseHandle {
    /// Stops reserving jobs until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.tx
            .send_if_modified(|p| !std::mem::replace(&mut p.local, true));
    }

    /// Reserves jobs again.
    pub fn resume(&self) {
        self.tx
            .send_if_modified(|p| std::mem::replace(&mut p.local, false));
    }
}

/// How often a worker of every queue ([`WorkerOptions::all_queues`]) reads the store's list
/// of queues.
const QUEUE_LIST_POLL: Duration = Duration::from_secs(1);

/// Where a queue stands in an every-queue worker's order: `high`, `default`, `low`, then
/// the others (by name).
fn standing(queue: &str) -> u8 {
    match queue {
        "high" => 0,
        "default" => 1,
        "low" => 2,
        _ => 3,
    }
}

/// `known` with the queues of `listed` it lacks, in an every-queue worker's order: `high`,
/// `default`, `low`, then the others by name. Queues whose names start with `_` are the
/// store's own (`_schedules`) and are left out.
pub(crate) fn every_queue(known: &[String], listed: Vec<String>) -> Vec<String> {
    let mut queues: Vec<String> = known
        .iter()
        .cloned()
        .chain(listed.into_iter().filter(|q| !q.starts_with('_')))
        .collect();
    queues.sort_by(|a, b| (standing(a), a).cmp(&(standing(b), b)));
    queues.dedup();
    queues
}

/// Reads the store's queues about once a second, until dropped, adding new ones to the list
/// of an every-queue worker.
async fn watch_queues(storage: Arc<dyn Storage>, tx: watch::Sender<Vec<String>>) {
    let mut failing = false;
    loop {
        tokio::time::sleep(QUEUE_LIST_POLL).await;
        let listed = match storage.inspect() {
            Ok(inspect) => inspect.queues().await,
            Err(e) => Err(e),
        };
        match listed {
            Ok(listed) => {
                failing = false;
                tx.send_if_modified(|queues| {
                    let all = every_queue(queues, listed);
                    let changed = *queues != all;
                    if changed {
                        info!(queues = %all.join(","), "new queues: taking their jobs too");
                        *queues = all;
                    }
                    changed
                });
            }
            Err(e) if !failing => {
                failing = true;
                warn!(error = %e, "could not list the store's queues: working the ones known");
            }
            Err(_) => {}
        }
    }
}

/// How often a worker deletes expired job records (statuses, progress, cancel marks) from a
/// store that does not expire them itself.
const PRUNE_RECORDS: Duration = Duration::from_secs(300);

/// Deletes expired job records every [`PRUNE_RECORDS`] (the first time a minute after the
/// start), until dropped. Every worker does: the deletes are chunked, and a second worker
/// finds nothing left.
async fn prune_records(storage: Arc<dyn Storage>) {
    tokio::time::sleep(Duration::from_secs(60)).await;
    loop {
        if let Ok(track) = storage.track() {
            match track.prune_records().await {
                Ok(0) => {}
                Ok(n) => debug!(records = n, "deleted expired job records"),
                Err(e) => {
                    warn!(error = %e, "could not delete expired job records; trying again later")
                }
            }
        }
        tokio::time::sleep(PRUNE_RECORDS).await;
    }
}

/// Reads which queues are paused for every worker, about once a second, until dropped.
async fn watch_paused(storage: Arc<dyn Storage>, tx: Arc<watch::Sender<Paused>>) {
    let mut failing = false;
    loop {
        tokio::time::sleep(crate::pause::POLL).await;
        match crate::pause::paused(storage.as_ref()).await {
            Ok(queues) => {
                failing = false;
                tx.send_if_modified(|p| {
                    let changed = p.queues != queues;
                    if changed {
                        info!(paused = ?queues, "paused queues changed");
                        p.queues = queues;
                    }
                    changed
                });
            }
            Err(e) if !failing => {
                failing = true;
                warn!(error = %e, "could not read which queues are paused; keeping the last answer");
            }
            Err(_) => {}
        }
    }
}

/// A worker: runs jobs from a store until told to stop. Build it with
/// [`Queue::worker`](crate::Queue::worker) or [`Worker::new`].
#[derive(Debug)]
pub struct Worker {
    storage: Arc<dyn Storage>,
    registry: Registry,
    options: WorkerOptions,
    stop_tx: Arc<watch::Sender<bool>>,
    counters: Arc<Counters>,
    dispatcher: Option<Dispatcher>,
    schedules: Vec<Arc<crate::schedule::Schedule>>,
    pauses: Arc<watch::Sender<Paused>>,
    /// The default queue of the job bodies' dispatches, if set (an inline queue's).
    job_scope: Option<Dispatcher>,
}

/// Reads a running worker's counts (for a progress display).
#[derive(Debug, Clone)]
pub struct ProgressHandle {
    counters: Arc<Counters>,
}

/// A running worker's counts so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Jobs finished and acknowledged.
    pub processed: u64,
    /// Jobs moved to the failed store.
    pub failed: u64,
    /// Failed attempts put back for a retry.
    pub retried: u64,
}

impl ProgressHandle {
    /// The counts now.
    pub fn get(&self) -> Progress {
        Progress {
            processed: self.counters.processed.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            retried: self.counters.retried.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    processed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    released: AtomicU64,
    interrupted: AtomicU64,
    discarded: AtomicU64,
    cancelled: AtomicU64,
    /// First attempts started, and their waits from dispatch summed in ms (the throughput
    /// history's latency, [`crate::stats`]).
    starts: AtomicU64,
    wait_ms: AtomicU64,
    /// Those waits by bucket ([`crate::stats::WAIT_BOUNDS_MS`]).
    waits: [AtomicU64; crate::stats::WAIT_BUCKETS],
}

impl Counters {
    /// What the throughput history records of these counters.
    fn tally(&self) -> crate::stats::Tally {
        crate::stats::Tally {
            processed: self.processed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            starts: self.starts.load(Ordering::Relaxed),
            wait_ms: self.wait_ms.load(Ordering::Relaxed),
            waits: crate::stats::Waits(std::array::from_fn(|i| {
                self.waits[i].load(Ordering::Relaxed)
            })),
        }
    }
}

/// A settlement on its way to the store, and who waits for its result (`None`: the store
/// could not be reached).
struct Pending {
    settle: Settle,
    done: oneshot::Sender<Option<Settled>>,
    /// How long the job held its slot (zero for a job put back unstarted).
    ran: Duration,
}

/// A group's counters as read for a loose skip gate, and when.
type GateCopy = (tokio::time::Instant, Vec<(String, i64)>);

/// Group counters read for loose skip gates (a batch's cancel flag), by group, with when
/// they were read: a copy serves for [`job::LOOSE_GATE`].
#[derive(Debug, Default)]
pub(crate) struct Gates(std::sync::Mutex<HashMap<String, GateCopy>>);

impl Gates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, GateCopy>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The copy of `group`'s counters, if one was read less than `LOOSE_GATE` ago.
    pub(crate) fn fresh(&self, group: &str) -> Option<Vec<(String, i64)>> {
        self.lock()
            .get(group)
            .filter(|(at, _)| at.elapsed() < job::LOOSE_GATE)
            .map(|(_, counters)| counters.clone())
    }

    /// Keeps `counters`, just read, as `group`'s copy.
    pub(crate) fn store(&self, group: &str, counters: Vec<(String, i64)>) {
        let mut gates = self.lock();
        if gates.len() > 1024 {
            gates.clear();
        }
        gates.insert(group.to_owned(), (tokio::time::Instant::now(), counters));
    }

    /// Forgets every copy (this worker changed a group).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

/// What every job task shares.
struct Shared {
    storage: Arc<dyn Storage>,
    handlers: HashMap<String, Handler>,
    options: WorkerOptions,
    counters: Arc<Counters>,
    settles: mpsc::UnboundedSender<Pending>,
    hard_stop: watch::Receiver<bool>,
    /// Group counters read for loose skip gates; a member reading its batch's refreshes them.
    gates: Arc<Gates>,
    /// What jobs dispatch through from their context (adding to their batch).
    dispatcher: Dispatcher,
    /// The default queue of the job bodies' dispatches, if set.
    job_scope: Option<Dispatcher>,
    /// The jobs running now, for the worker registry's beats.
    running: Arc<presence::Running>,
}

impl Shared {
    /// Hands a settlement to the loop (with how long the job held its slot) and waits for
    /// the store's answer.
    async fn settle(&self, settle: Settle, ran: Duration) -> Option<Settled> {
        let (done, result) = oneshot::channel();
        self.settles.send(Pending { settle, done, ran }).ok()?;
        result.await.ok().flatten()
    }
}

impl Worker {
    /// A worker over `storage` running the job types and listeners of `registry`.
    pub fn new(storage: Arc<dyn Storage>, registry: Registry, options: WorkerOptions) -> Self {
        let (tx, _) = watch::channel(false);
        Worker {
            storage,
            registry,
            options,
            stop_tx: Arc::new(tx),
            counters: Arc::default(),
            dispatcher: None,
            schedules: Vec::new(),
            pauses: Arc::new(watch::channel(Paused::default()).0),
            job_scope: None,
        }
    }

    /// Runs each job body inside [`Queue::scope`](crate::Queue::scope) of `dispatcher`: the
    /// dispatches it makes without `.via(..)` go there (an inline queue's jobs see the
    /// default of the code that dispatched them).
    pub(crate) fn with_job_scope(mut self, dispatcher: Dispatcher) -> Self {
        self.job_scope = Some(dispatcher);
        self
    }

    /// Jobs dispatch through `dispatcher` (with its settings) from their context, as when
    /// they add members to their batch. A [`Queue`](crate::Queue)'s worker uses the queue's;
    /// by default, one over the worker's store with default settings.
    pub fn with_dispatcher(mut self, dispatcher: Dispatcher) -> Self {
        self.dispatcher = Some(dispatcher);
        self
    }

    /// The schedules whose ticks this worker claims while it runs (those of the
    /// [`Queue`](crate::Queue) it was made from), unless [`WorkerOptions::schedules`] is off.
    pub(crate) fn with_schedules(mut self, schedules: Vec<Arc<crate::schedule::Schedule>>) -> Self {
        self.schedules = schedules;
        self
    }

    /// A handle that reads this worker's counts while it runs.
    pub fn progress_handle(&self) -> ProgressHandle {
        ProgressHandle {
            counters: self.counters.clone(),
        }
    }

    /// A handle that pauses and resumes this worker's reservations from another task.
    pub fn pause_handle(&self) -> PauseHandle {
        PauseHandle {
            tx: self.pauses.clone(),
        }
    }

    /// A handle that stops this worker from another task.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            tx: self.stop_tx.clone(),
        }
    }

    /// Runs until SIGINT or SIGTERM (or a stop condition of the options), then shuts down
    /// gracefully.
    pub async fn run_until_signal(self) -> Result<WorkerSummary> {
        self.run_until(stop_signal()).await
    }

    /// Runs until `stop` completes (or a stop condition of the options), then shuts down
    /// gracefully, as on a signal: running jobs get the grace period, the rest are put back.
    pub async fn run_until<F>(self, stop: F) -> Result<WorkerSummary>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = self.stop_handle();
        let signals = tokio::spawn(async move {
            stop.await;
            info!("stop signal received: finishing running jobs");
            handle.stop();
        });
        let result = self.run().await;
        signals.abort();
        result
    }

    /// Runs until a stop condition of the options or [`StopHandle::stop`].
    ///
    /// Refuses to start when two linked job types share a name, or when asked to run only
    /// one job name on a driver that cannot reserve by name.
    pub async fn run(self) -> Result<WorkerSummary> {
        let storage = self.storage.clone();
        let handlers = self.registry.handlers()?;
        metrics::slots(self.options.concurrency);
        let caps = storage.capabilities();
        if self.options.only.is_some() && !caps.reserve_by_name {
            return Err(Error::NotSupported {
                driver: caps.driver,
                operation:
                    "running only one job name (`runall run NAME`): it cannot reserve by name",
            });
        }
        let queue_limits = self.options.queue_limits.values();
        for limit in queue_limits {
            limit.validate()?;
            if matches!(limit, crate::Limit::Rate(_)) && caps.groups.is_none() {
                return Err(Error::NotSupported {
                    driver: caps.driver,
                    operation: "rate limits (they keep their state in group counters)",
                });
            }
        }
        for (name, limit) in &self.options.limits {
            crate::limit::check_name(name)?;
            limit.validate()?;
            if matches!(limit, crate::Limit::Rate(_)) && caps.groups.is_none() {
                return Err(Error::NotSupported {
                    driver: caps.driver,
                    operation: "rate limits (they keep their state in group counters)",
                });
            }
        }
        let mut options = self.options.clone();
        // Every queue: read the list now, then about once a second.
        let mut listing = None;
        if options.all_queues {
            match storage.inspect() {
                Ok(inspect) => {
                    options.queues = match inspect.queues().await {
                        Ok(listed) => every_queue(&[], listed),
                        Err(e) => {
                            warn!(error = %e, "could not list the store's queues: trying again in a second");
                            Vec::new()
                        }
                    };
                    let (tx, rx) = watch::channel(options.queues.clone());
                    listing = Some((tokio::spawn(watch_queues(storage.clone(), tx)), rx));
                }
                Err(_) => {
                    warn!(
                        driver = caps.driver,
                        "this store cannot list its queues: taking jobs from {} only (name the \
                         queues to work with --queue, or WorkerOptions::queues)",
                        options.queues.join(", ")
                    );
                    options.all_queues = false;
                }
            }
        }
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let (hard_tx, hard_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            storage: storage.clone(),
            handlers,
            options: options.clone(),
            counters: self.counters.clone(),
            settles: settle_tx,
            hard_stop: hard_rx,
            gates: Arc::default(),
            dispatcher: self
                .dispatcher
                .clone()
                .unwrap_or_else(|| Dispatcher::new(storage.clone(), QueueSettings::default())),
            job_scope: self.job_scope.clone(),
            running: Arc::default(),
        });
        let restarted = Arc::new(AtomicBool::new(false));
        let scheduler = (options.schedules && caps.groups.is_some() && caps.claims
            || options.schedules && !self.schedules.is_empty())
        .then(|| {
            tokio::spawn(crate::schedule::run(
                shared.dispatcher.clone(),
                self.schedules.clone(),
                self.stop_tx.subscribe(),
            ))
        });
        // Queues paused for every worker: read before the first reservation, then about
        // once a second.
        let pause_watch = if caps.groups.is_some() {
            match crate::pause::paused(storage.as_ref()).await {
                Ok(queues) => {
                    self.pauses.send_modify(|p| p.queues = queues);
                }
                Err(e) => warn!(error = %e, "could not read which queues are paused"),
            }
            Some(tokio::spawn(watch_paused(
                storage.clone(),
                self.pauses.clone(),
            )))
        } else {
            None
        };
        let pruner = caps
            .track
            .is_some()
            .then(|| tokio::spawn(prune_records(storage.clone())));
        let restart_watch = tokio::spawn(control::watch_restart(
            storage.clone(),
            self.stop_handle(),
            restarted.clone(),
        ));
        info!(
            driver = caps.driver,
            queues = %options.queues.join(","),
            every_queue = options.all_queues,
            concurrency = options.concurrency.max(1),
            "worker started"
        );
        let (queue_watch, listed) = listing.unzip();
        // The worker registry: an entry now, then every `BEAT_EVERY`, from a task of its own.
        let info = presence::Beats::info(
            options.queues.clone(),
            options.all_queues,
            options.concurrency.max(1),
        );
        let worker_id = caps.workers.is_some().then(|| info.id.clone());
        let (beats_stop, beats_stopped) = watch::channel(false);
        let beats = tokio::spawn(
            presence::Beats {
                storage: storage.clone(),
                info,
                running: shared.running.clone(),
                counters: self.counters.clone(),
                listed: listed.clone(),
                recorded: self.counters.tally(),
            }
            .run(beats_stopped),
        );
        let request = ReserveRequest {
            queues: options.queues.clone(),
            lease: options.lease,
            limit: 1,
            name: options.only.clone(),
        };
        let mut engine = Engine {
            storage,
            slots: Arc::new(Semaphore::new(options.concurrency.max(1))),
            options,
            shared,
            tasks: JoinSet::new(),
            settles: settle_rx,
            pending: Vec::new(),
            stop: self.stop_tx.subscribe(),
            hard_stop: hard_tx,
            request,
            taken: 0,
            started: Instant::now(),
            buffer: VecDeque::new(),
            fetch_trip: 0.0,
            job_time: 0.0,
            trips: JoinSet::new(),
            asking: 0,
            asked_by: HashMap::new(),
            pauses: self.pauses.subscribe(),
            listed,
        };
        engine.pauses.mark_changed();
        let reason = engine.run().await;
        engine.drain(reason).await;
        presence::Beats::stop(
            self.storage.as_ref(),
            beats_stop,
            beats,
            worker_id.as_deref(),
        )
        .await;
        restart_watch.abort();
        if let Some(pruner) = pruner {
            pruner.abort();
        }
        if let Some(watch) = queue_watch {
            watch.abort();
        }
        if let Some(watch) = pause_watch {
            watch.abort();
        }
        if let Some(scheduler) = scheduler {
            scheduler.abort();
        }
        let reason = if reason == StopReason::Stopped && restarted.load(Ordering::SeqCst) {
            StopReason::Restart
        } else {
            reason
        };
        let c = &self.counters;
        let summary = WorkerSummary {
            processed: c.processed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            released: c.released.load(Ordering::Relaxed),
            interrupted: c.interrupted.load(Ordering::Relaxed),
            discarded: c.discarded.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            reason,
        };
        info!(
            processed = summary.processed,
            failed = summary.failed,
            retried = summary.retried,
            reason = ?summary.reason,
            "worker stopped"
        );
        Ok(summary)
    }
}

/// The loop that talks to the store.
struct Engine {
    storage: Arc<dyn Storage>,
    options: WorkerOptions,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
    settles: mpsc::UnboundedReceiver<Pending>,
    /// Settlements received and not yet sent.
    pending: Vec<Pending>,
    stop: watch::Receiver<bool>,
    hard_stop: watch::Sender<bool>,
    /// What to reserve: the worker's queues, lease and job name; `limit` set per call.
    request: ReserveRequest,
    /// Jobs started so far.
    taken: u64,
    started: Instant,
    /// Prefetched jobs: reserved, waiting for a slot, in the order they start (strict queue
    /// priority, then the order the store gave them), each with when it was asked for.
    buffer: VecDeque<(Reserved, Instant)>,
    /// How long a fetching call takes and how long a job holds its slot, in seconds, on
    /// average (exponentially weighted; 0 before the first). The adaptive prefetch holds
    /// twice ([`PREFETCH_GAIN`]) the jobs the slots finish during one fetch. (Counting the
    /// jobs that finish during a call instead cannot grow from nothing with one fetching
    /// call at a time: an empty buffer leaves nothing to finish during the call.)
    fetch_trip: f64,
    job_time: f64,
    /// Settle-and-fetch calls in flight (at most [`MAX_TRIPS`]).
    trips: JoinSet<Trip>,
    /// Jobs asked for by the calls in flight, in all and per call.
    asking: usize,
    asked_by: HashMap<tokio::task::Id, usize>,
    /// What the worker may not reserve from; `request.queues` follows it.
    pauses: watch::Receiver<Paused>,
    /// Every queue of the store, for a worker of every queue ([`WorkerOptions::all_queues`]):
    /// `options.queues` follows it.
    listed: Option<watch::Receiver<Vec<String>>>,
}

/// The store's answers to settlements, held back until the jobs fetched in the same call
/// are spawned.
struct Answers(Vec<(oneshot::Sender<Option<Settled>>, Option<Settled>)>);

impl Answers {
    fn send(self) {
        for (done, settled) in self.0 {
            let _ = done.send(settled);
        }
    }
}

/// The adaptive prefetch holds this many times the jobs that the slots finish during one
/// fetching call: quick jobs get a buffer that outlasts the call (each call then carries
/// more settlements and fetches more jobs, so the store does fewer, larger steps), and jobs
/// that outlast a call get none (a worker that starts later gets them instead).
const PREFETCH_GAIN: f64 = 2.0;

/// The most jobs the adaptive prefetch holds (or `concurrency`, if larger).
const MAX_ADAPTIVE_PREFETCH: usize = 128;

/// The most settlements sent in one call.
const MAX_SETTLE_BATCH: usize = 512;

/// At most this many settle-and-fetch calls in flight at once, only one of them fetching:
/// while it is on its way, the settlements of the jobs that finish meanwhile go at once.
const MAX_TRIPS: usize = 2;

/// An exponentially weighted average (the first sample taken as it is).
fn ewma(average: f64, sample: f64) -> f64 {
    if average == 0.0 {
        sample
    } else {
        0.8 * average + 0.2 * sample
    }
}

/// A settle-and-fetch call that came back.
struct Trip {
    reserved: Result<Vec<Reserved>>,
    answers: Answers,
    /// When it was sent (prefetched jobs are timed from there).
    asked: Instant,
}

/// What the loop does after a call came back.
enum Landed {
    /// Jobs came (or only settlements went).
    Jobs,
    /// The store had nothing.
    Nothing,
    /// The call failed: wait before the next.
    Failed,
}

impl Engine {
    /// Reserves and settles until a stop condition or a stop request.
    async fn run(&mut self) -> StopReason {
        let mut backend_wait = Duration::from_millis(100);
        let mut pause_until: Option<Instant> = None;
        let mut idle = false;
        // Calls that came back while the loop waited.
        let mut arrived = Vec::new();
        loop {
            let mut queues_changed = false;
            if let Some(listed) = &mut self.listed {
                if listed.has_changed().unwrap_or(false) {
                    self.options.queues = listed.borrow_and_update().clone();
                    queues_changed = true;
                }
            }
            if queues_changed || self.pauses.has_changed().unwrap_or(false) {
                let paused = self.pauses.borrow_and_update().clone();
                self.request.queues = if paused.local {
                    Vec::new()
                } else {
                    self.options
                        .queues
                        .iter()
                        .filter(|q| !paused.queues.contains(*q))
                        .cloned()
                        .collect()
                };
                idle = false;
            }
            let closed = self.request.queues.is_empty();
            while self.tasks.try_join_next().is_some() {}
            self.collect();
            let mut landed: Vec<_> = std::mem::take(&mut arrived);
            while let Some(done) = self.trips.try_join_next_with_id() {
                landed.push(done);
            }
            for done in landed {
                match self.landed(done) {
                    Landed::Jobs => {
                        idle = false;
                        backend_wait = Duration::from_millis(100);
                    }
                    Landed::Nothing => {
                        backend_wait = Duration::from_millis(100);
                        if let Some(reason) = self.empty_stop().await {
                            return reason;
                        }
                        idle = true;
                    }
                    Landed::Failed => {
                        pause_until = Some(Instant::now() + backend_wait);
                        backend_wait = (backend_wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
            if *self.stop.borrow() {
                return StopReason::Stopped;
            }
            if let Some(reason) = self.stop_condition() {
                return reason;
            }
            self.start_buffered();
            let paused = pause_until.is_some_and(|at| Instant::now() < at);
            if !paused {
                pause_until = None;
            }
            let free = self.free_slots();
            let want = if closed {
                0
            } else {
                (free + self.prefetch_room(free)).saturating_sub(self.asking)
            };
            let none_listed = self.options.once && self.options.queues.is_empty();
            if closed && (self.options.stop_when_empty || none_listed) {
                // Every queue is paused (or, for a worker of every queue, the store holds
                // none): nothing may be taken, as when they are empty.
                if let Some(reason) = self.empty_stop().await {
                    return reason;
                }
            }
            // One call at a time asks for jobs, so they start in the store's order. Two
            // fetching calls overlap in the store: the later one skips the rows the earlier
            // one holds (`SKIP LOCKED`) or simply runs first, takes the next ones, and may
            // come back first, so its jobs would start first (a lower queue before a higher
            // one, or a queue's second job before its first).
            let fetching = self.asking > 0;
            if !paused && self.trips.len() < MAX_TRIPS {
                // Ask for jobs when slots or buffer room are not yet asked for and no call
                // is asking (after a reservation that found nothing, only along with
                // settlements); else send settlements alone when nothing is on its way or
                // while the call on its way is fetching.
                if want > 0 && !fetching && (!idle || !self.pending.is_empty()) {
                    self.send_trip(want);
                    continue;
                }
                if !self.pending.is_empty() && (self.trips.is_empty() || fetching) {
                    self.send_trip(0);
                    continue;
                }
            }
            let waiting =
                idle && !paused && want > 0 && self.pending.is_empty() && self.trips.is_empty();
            // Nothing was available: wait for a wake-up (or poll after `--sleep`), a
            // settlement to send (its call fetches too), or a stop.
            let storage = self.storage.clone();
            let queues = self.request.queues.clone();
            let sleep = self.options.sleep;
            let wait = async move {
                match storage.capabilities().wake {
                    Some(wake) => {
                        if let Err(e) = wake.wait(&queues, sleep).await {
                            warn!(error = %e, "waiting for jobs failed");
                            tokio::time::sleep(sleep).await;
                        }
                    }
                    None => tokio::time::sleep(sleep).await,
                }
            };
            tokio::select! {
                Some(done) = self.trips.join_next_with_id(), if !self.trips.is_empty() => {
                    // Handled at the top of the loop, with any other that came back.
                    arrived.push(done);
                }
                Some(p) = self.settles.recv() => self.received(p),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                _ = self.stop.changed() => {}
                _ = sleep_until_some(pause_until), if paused => {}
                _ = wait, if waiting => idle = false,
                // Seen here, so marked again for the top of the loop to apply it.
                Ok(()) = self.pauses.changed() => self.pauses.mark_changed(),
                Some(()) = changed(&mut self.listed) => {
                    if let Some(listed) = &mut self.listed {
                        listed.mark_changed();
                    }
                }
                // Paused: look at the stop conditions now and then.
                _ = tokio::time::sleep(self.options.sleep), if closed => {}
            }
        }
    }

    /// What a stop condition that depends on empty queues says after a call found nothing.
    async fn empty_stop(&mut self) -> Option<StopReason> {
        let quiet = self.tasks.is_empty()
            && self.pending.is_empty()
            && self.buffer.is_empty()
            && self.trips.is_empty();
        if self.options.once && quiet {
            return Some(StopReason::Empty);
        }
        if self.options.stop_when_empty && quiet {
            match self.queues_empty().await {
                Ok(true) => return Some(StopReason::Empty),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "could not read queue sizes"),
            }
        }
        None
    }

    /// Sends the pending settlements (up to a batch) and asks for `limit` jobs in the same
    /// call (none: settlements only), in a task of its own so the loop goes on meanwhile.
    /// A backend error is retried a few times (a blip must not cost the jobs an attempt);
    /// after that the settlements are given up: their jobs run again after their leases.
    fn send_trip(&mut self, limit: usize) {
        let take = self.pending.len().min(MAX_SETTLE_BATCH);
        let batch: Vec<Pending> = self.pending.drain(..take).collect();
        let fetch = (limit > 0).then(|| ReserveRequest {
            limit,
            ..self.request.clone()
        });
        let storage = self.storage.clone();
        let asked = Instant::now();
        let trip = async move {
            let (reserved, answers) = if batch.is_empty() {
                let reserved = match &fetch {
                    Some(request) => storage.reserve(request).await,
                    None => Ok(Vec::new()),
                };
                (reserved, Answers(Vec::new()))
            } else {
                let settles: Vec<Settle> = batch.iter().map(|p| p.settle.clone()).collect();
                let fetch = fetch.as_ref();
                match retrying("settle", || storage.settle(settles.clone(), fetch)).await {
                    Ok(reply) => {
                        let mut results = reply.settled.into_iter();
                        let answers = batch.into_iter().map(|p| (p.done, results.next()));
                        (Ok(reply.reserved), Answers(answers.collect()))
                    }
                    Err(e) => {
                        error!(error = %e, jobs = take, "could not settle these jobs: they run again after their leases");
                        let answers = batch.into_iter().map(|p| (p.done, None));
                        (Err(e), Answers(answers.collect()))
                    }
                }
            };
            Trip {
                reserved,
                answers,
                asked,
            }
        };
        let id = self.trips.spawn(trip).id();
        self.asking += limit;
        self.asked_by.insert(id, limit);
    }

    /// Takes in a call that came back: its jobs into the buffer (and the free slots), then
    /// its answers to the jobs it settled.
    fn landed(
        &mut self,
        done: std::result::Result<(tokio::task::Id, Trip), tokio::task::JoinError>,
    ) -> Landed {
        let (id, trip) = match done {
            Ok(done) => done,
            Err(e) => {
                let limit = self.asked_by.remove(&e.id()).unwrap_or(0);
                self.asking = self.asking.saturating_sub(limit);
                error!(error = %e, "a call to the store panicked");
                return Landed::Failed;
            }
        };
        let limit = self.asked_by.remove(&id).unwrap_or(0);
        self.asking = self.asking.saturating_sub(limit);
        if limit > 0 {
            self.fetch_trip = ewma(self.fetch_trip, trip.asked.elapsed().as_secs_f64());
        }
        match trip.reserved {
            Ok(jobs) if jobs.is_empty() => {
                trip.answers.send();
                if limit > 0 {
                    Landed::Nothing
                } else {
                    Landed::Jobs
                }
            }
            Ok(jobs) => {
                self.buffer_jobs(jobs, trip.asked);
                self.start_buffered();
                // The new jobs start first: the settled ones only have to log and count.
                trip.answers.send();
                Landed::Jobs
            }
            Err(e) => {
                trip.answers.send();
                error!(error = %e, "reserve failed; retrying");
                Landed::Failed
            }
        }
    }

    /// Settlements handed over since the last look.
    fn collect(&mut self) {
        while let Ok(p) = self.settles.try_recv() {
            self.received(p);
        }
    }

    fn received(&mut self, p: Pending) {
        self.job_time = ewma(self.job_time, p.ran.as_secs_f64());
        self.pending.push(p);
    }

    /// How many reserved jobs to hold beyond the free slots.
    fn prefetch_target(&self) -> usize {
        if self.options.once {
            return 0;
        }
        let concurrency = self.options.concurrency.max(1);
        match self.options.prefetch {
            Some(n) => n,
            // Rounded: a worker of long jobs (well under one finishing per fetch) holds none
            // back from other workers.
            None => {
                let per_trip = if self.job_time > 0.0 {
                    concurrency as f64 * self.fetch_trip / self.job_time
                } else {
                    0.0
                };
                let cap = MAX_ADAPTIVE_PREFETCH.max(concurrency);
                (PREFETCH_GAIN * per_trip).round().min(cap as f64) as usize
            }
        }
    }

    /// Room in the prefetch buffer now, given `free` slots about to be filled.
    fn prefetch_room(&self, free: usize) -> usize {
        self.prefetch_target()
            .saturating_sub(self.buffer.len())
            .min(self.unclaimed().saturating_sub(free))
    }

    /// Jobs `--max-jobs` still allows to take beyond those started and those buffered.
    fn unclaimed(&self) -> usize {
        self.options.max_jobs.map_or(usize::MAX, |max| {
            usize::try_from(max.saturating_sub(self.taken))
                .unwrap_or(usize::MAX)
                .saturating_sub(self.buffer.len())
        })
    }

    /// Starts prefetched jobs while there are free slots.
    fn start_buffered(&mut self) {
        while !self.buffer.is_empty() {
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                return;
            };
            let Some((job, asked)) = self.buffer.pop_front() else {
                return;
            };
            self.taken += 1;
            self.tasks
                .spawn(job::process(self.shared.clone(), job, asked, slot));
        }
    }

    /// Where a queue stands in the worker's priority order.
    fn rank(&self, queue: &str) -> usize {
        self.options
            .queues
            .iter()
            .position(|q| q == queue)
            .unwrap_or(usize::MAX)
    }

    /// Adds reserved jobs to the buffer, each after the jobs of its queue and of higher
    /// queues already there, so a job of a higher queue starts before lower ones fetched
    /// earlier. This keeps strict priority with a buffer: every refill asks the queues in
    /// priority order, and a slot that frees takes the buffer's highest job.
    fn buffer_jobs(&mut self, jobs: Vec<Reserved>, asked: Instant) {
        for job in jobs {
            let rank = self.rank(&job.lease.queue);
            let at = self
                .buffer
                .iter()
                .position(|(b, _)| self.rank(&b.lease.queue) > rank)
                .unwrap_or(self.buffer.len());
            self.buffer.insert(at, (job, asked));
        }
    }

    /// Puts a prefetched job back without counting an attempt.
    fn put_back(&mut self, job: Reserved) {
        let (done, _) = oneshot::channel();
        self.pending.push(Pending {
            settle: Settle::release(job.lease, Duration::ZERO),
            done,
            ran: Duration::ZERO,
        });
    }

    fn stop_condition(&self) -> Option<StopReason> {
        let options = &self.options;
        if options
            .max_time
            .is_some_and(|max| self.started.elapsed() >= max)
        {
            return Some(StopReason::MaxTime);
        }
        if let Some(limit) = options.memory_mb {
            if let Some(rss) = resident_memory_mb() {
                if rss > limit {
                    warn!(rss_mb = rss, limit_mb = limit, "memory limit exceeded");
                    return Some(StopReason::Memory);
                }
            }
        }
        if options.once && self.taken >= 1 {
            return Some(StopReason::Once);
        }
        if options.max_jobs.is_some_and(|max| self.taken >= max) {
            return Some(StopReason::MaxJobs);
        }
        None
    }

    /// How many jobs to ask for now.
    fn free_slots(&self) -> usize {
        let mut free = self.slots.available_permits().min(self.unclaimed());
        if self.options.once {
            free = free.min(1);
        }
        free
    }

    /// Sends the pending settlements without fetching and waits for the answer (while
    /// draining).
    async fn flush(&mut self) {
        self.send_trip(0);
        self.land_all().await;
    }

    /// Waits for every call in flight and takes each in (their jobs go to the buffer).
    async fn land_all(&mut self) {
        while let Some(done) = self.trips.join_next_with_id().await {
            if let Landed::Failed = self.landed(done) {
                warn!("settling failed");
            }
        }
    }

    /// After the loop: lets running jobs finish (within the grace period when the stop is
    /// urgent, or when a stop request arrives meanwhile), interrupting the rest, and sends
    /// every settlement.
    async fn drain(&mut self, reason: StopReason) {
        let grace = self.options.grace;
        let mut deadline = reason.is_urgent().then(|| Instant::now() + grace);
        if !self.tasks.is_empty() {
            info!(running = self.tasks.len(), reason = ?reason, "waiting for running jobs");
        }
        let mut interrupted = false;
        // Jobs on their way are taken in, to go back with the buffer.
        self.land_all().await;
        // Prefetched jobs never started: they go back at once, their attempt not counted.
        while let Some((job, _)) = self.buffer.pop_front() {
            self.put_back(job);
        }
        loop {
            self.collect();
            if !self.pending.is_empty() {
                self.flush().await;
                continue;
            }
            if self.tasks.is_empty() {
                return;
            }
            let until = deadline.filter(|_| !interrupted);
            tokio::select! {
                Some(p) = self.settles.recv() => self.received(p),
                Some(_) = self.tasks.join_next() => {}
                _ = self.stop.changed(), if deadline.is_none() => {
                    if *self.stop.borrow() {
                        info!(grace = ?grace, "stop requested: running jobs get the grace period");
                        deadline = Some(Instant::now() + grace);
                    }
                }
                _ = sleep_until_some(until), if until.is_some() => {
                    warn!(
                        running = self.tasks.len(),
                        "grace period over: interrupting running jobs and putting them back"
                    );
                    self.hard_stop.send_replace(true);
                    interrupted = true;
                }
            }
        }
    }

    async fn queues_empty(&self) -> Result<bool> {
        if self.options.only.is_some() {
            // Other jobs may stay on the queues; "empty" means nothing of ours was available.
            return Ok(true);
        }
        let inspect = match self.storage.inspect() {
            Ok(inspect) => inspect,
            // Without sizes, a reservation that found nothing is the best answer there is.
            Err(Error::NotSupported { .. }) => return Ok(true),
            Err(e) => return Err(e),
        };
        // A paused queue's jobs are not this worker's to wait for.
        for queue in &self.request.queues {
            if inspect.size(queue).await?.total() > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Completes when `rx` has a new value (`None` when its sender is gone); never without one.
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) -> Option<()> {
    match rx {
        Some(rx) => rx.changed().await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Retries a store operation a few times on backend errors (a lost connection), so a blip
/// does not cost the jobs an attempt. Other errors are final.
async fn retrying<T, F, Fut>(what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut wait = Duration::from_millis(50);
    for _ in 0..5 {
        match op().await {
            Err(Error::Backend { driver, source }) => {
                warn!(driver, error = %source, retry_in = ?wait, "{what} failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other,
        }
    }
    op().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;
    use crate::Queue;

    fn names(queues: &[&str]) -> Vec<String> {
        queues.iter().map(|q| (*q).to_owned()).collect()
    }

    #[test]
    fn every_queue_is_high_default_low_then_by_name() {
        let listed = names(&["zeta", "low", "_schedules", "alpha", "default", "high"]);
        assert_eq!(
            every_queue(&[], listed),
            names(&["high", "default", "low", "alpha", "zeta"])
        );
        // Queues seen before stay; new ones take their place in the order.
        let known = names(&["default", "mail"]);
        assert_eq!(
            every_queue(&known, names(&["high", "mail"])),
            names(&["high", "default", "mail"])
        );
        assert!(every_queue(&[], Vec::new()).is_empty());
    }

    /// A worker of every queue takes high, default and low first, then the others by name,
    /// and takes the jobs of a queue that appears while it runs.
    #[tokio::test]
    async fn a_worker_of_every_queue() {
        let queue = Queue::new(MemoryStorage::new());
        let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let sink = log.clone();
        queue.listen("record", move |_payload: serde_json::Value, ctx| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(ctx.queue().to_owned());
                Ok(())
            }
        });
        for q in ["zeta", "low", "alpha", "default", "high"] {
            queue
                .dispatch_named("record", serde_json::json!({}))
                .on_queue(q)
                .await
                .expect("dispatched");
        }
        let options = WorkerOptions::default()
            .all_queues()
            .sleep(Duration::from_millis(20));
        assert!(options.all_queues);
        let worker = queue.worker(options);
        let stop = worker.stop_handle();
        let ran = |n: usize| log.lock().unwrap_or_else(|p| p.into_inner()).len() >= n;
        let drive = async {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !ran(5) {
                assert!(Instant::now() < deadline, "the five jobs ran within 10 s");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            queue
                .dispatch_named("record", serde_json::json!({}))
                .on_queue("late")
                .await
                .expect("dispatched");
            while !ran(6) {
                assert!(
                    Instant::now() < deadline,
                    "the job of the new queue ran within 10 s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.stop();
        };
        let (summary, ()) = tokio::join!(worker.run(), drive);
        let summary = summary.expect("the worker ran");
        assert_eq!(summary.processed, 6);
        assert_eq!(
            *log.lock().unwrap_or_else(|p| p.into_inner()),
            names(&["high", "default", "low", "alpha", "zeta", "late"])
        );
    }

    /// A store without [`Inspect`](crate::storage::Inspect): it cannot list its queues.
    #[derive(Debug)]
    struct Unlisted(MemoryStorage);

    #[async_trait::async_trait]
    impl Storage for Unlisted {
        fn capabilities(&self) -> crate::storage::Capabilities<'_> {
            let mut caps = self.0.capabilities();
            caps.inspect = None;
            caps
        }
        async fn push(
            &self,
            jobs: Vec<crate::storage::NewJob>,
        ) -> Result<Vec<crate::storage::Pushed>> {
            self.0.push(jobs).await
        }
        async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
            self.0.reserve(request).await
        }
        async fn extend(
            &self,
            leases: &[crate::storage::Lease],
            duration: Duration,
        ) -> Result<Vec<crate::storage::LeaseStatus>> {
            self.0.extend(leases, duration).await
        }
        async fn settle(
            &self,
            settles: Vec<Settle>,
            fetch: Option<&ReserveRequest>,
        ) -> Result<crate::storage::SettleReply> {
            self.0.settle(settles, fetch).await
        }
        async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
            self.0.lock(key, owner, ttl).await
        }
        async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
            self.0.unlock(key, owner).await
        }
    }

    /// A store that cannot list its queues is worked on `queues` (`default`), not on none.
    #[tokio::test]
    async fn without_a_listing_every_queue_is_default() {
        let queue = Queue::new(Unlisted(MemoryStorage::new()));
        queue.listen("noop", |_payload: serde_json::Value, _ctx| async { Ok(()) });
        for q in ["default", "other"] {
            queue
                .dispatch_named("noop", serde_json::json!({}))
                .on_queue(q)
                .await
                .expect("dispatched");
        }
        let options = WorkerOptions::default()
            .all_queues()
            .sleep(Duration::from_millis(20))
            .stop_when_empty();
        let summary = tokio::time::timeout(Duration::from_secs(10), queue.worker(options).run())
            .await
            .expect("the worker stopped within 10 s")
            .expect("the worker ran");
        assert_eq!(summary.processed, 1, "the default queue's job only");
    }

    /// `queues` turns a worker of every queue back into a worker of those.
    #[test]
    fn naming_queues_ends_every_queue() {
        let options = WorkerOptions::default().all_queues().queues(["mail"]);
        assert!(!options.all_queues);
        assert_eq!(options.queues, names(&["mail"]));
    }
}
