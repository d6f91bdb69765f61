//! The worker engine: reserve, run, heartbeat, retry, fail, acknowledge.
//!
//! One loop reserves jobs (as many as there are free slots, in one call to the store) and
//! spawns a task per job. Each task decodes the envelope, takes the job's lock if it has
//! one, runs the body under its timeout in its own tokio task (so a panic is caught), keeps
//! the lease and the lock alive with a heartbeat while it runs, and then acknowledges,
//! releases with a backoff, or fails the job. Acknowledgements of jobs that finish together
//! go to the store in one batch.

mod options;
pub mod stats;

pub use options::WorkerOptions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::job::{JobContext, JobError, Retry};
use crate::queue::Queue;
use crate::registry::{self, Handler};
use crate::storage::{Lease, ReserveRequest, Reserved, Storage};

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

/// What a worker did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Jobs that finished and were acknowledged.
    pub processed: u64,
    /// Jobs moved to the failed store.
    pub failed: u64,
    /// Failed attempts put back for a retry.
    pub retried: u64,
    /// Jobs put back without running (lock held, shutdown, released by the job).
    pub released: u64,
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

/// A worker on one queue connection. Build it with [`Queue::worker`].
#[derive(Debug)]
pub struct Worker {
    queue: Queue,
    options: WorkerOptions,
    stop_tx: Arc<watch::Sender<bool>>,
    counters: Arc<Counters>,
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
}

struct Shared {
    storage: Arc<dyn Storage>,
    handlers: HashMap<String, Handler>,
    options: WorkerOptions,
    counters: Arc<Counters>,
    stats: stats::Recorder,
    acks: mpsc::UnboundedSender<(Lease, oneshot::Sender<bool>)>,
    hard_stop: watch::Receiver<bool>,
    restart_requested: std::sync::atomic::AtomicBool,
}

impl Worker {
    pub(crate) fn new(queue: Queue, options: WorkerOptions) -> Self {
        let (tx, _) = watch::channel(false);
        Worker {
            queue,
            options,
            stop_tx: Arc::new(tx),
            counters: Arc::default(),
        }
    }

    /// A handle that reads this worker's counts while it runs.
    pub fn progress_handle(&self) -> ProgressHandle {
        ProgressHandle {
            counters: self.counters.clone(),
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
    pub async fn run(self) -> Result<WorkerSummary> {
        let storage = self.queue.storage().clone();
        let handlers = registry::handlers(&self.queue.listeners());
        let options = self.options.clone();
        let concurrency = options.concurrency.max(1);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let acker = tokio::spawn(acknowledge_loop(storage.clone(), ack_rx));
        let (hard_tx, hard_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            storage: storage.clone(),
            handlers,
            options: options.clone(),
            counters: self.counters.clone(),
            stats: stats::Recorder::default(),
            acks: ack_tx,
            hard_stop: hard_rx,
            restart_requested: Default::default(),
        });
        let housekeeping = tokio::spawn(housekeeping(shared.clone(), self.stop_handle()));
        let mut stop_rx = self.stop_tx.subscribe();
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut tasks = JoinSet::new();
        let started = Instant::now();
        let mut taken: u64 = 0;
        let mut backend_wait = Duration::from_millis(100);
        info!(
            driver = storage.driver(),
            queues = %options.queues.join(","),
            concurrency,
            "worker started"
        );

        let reason = loop {
            while tasks.try_join_next().is_some() {}
            if *stop_rx.borrow() {
                break StopReason::Stopped;
            }
            if options.max_time.is_some_and(|max| started.elapsed() >= max) {
                break StopReason::MaxTime;
            }
            if let Some(limit) = options.memory_mb {
                if let Some(rss) = resident_memory_mb() {
                    if rss > limit {
                        warn!(rss_mb = rss, limit_mb = limit, "memory limit exceeded");
                        break StopReason::Memory;
                    }
                }
            }
            if options.once && taken >= 1 {
                break StopReason::Once;
            }
            let remaining = options.max_jobs.map(|max| max.saturating_sub(taken));
            if remaining == Some(0) {
                break StopReason::MaxJobs;
            }

            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break StopReason::Stopped,
                },
                _ = stop_rx.changed() => continue,
            };
            let mut limit = 1 + slots.available_permits();
            if let Some(remaining) = remaining {
                limit = limit.min(usize::try_from(remaining).unwrap_or(usize::MAX));
            }
            if options.once {
                limit = 1;
            }
            let request = ReserveRequest {
                queues: options.queues.clone(),
                lease: options.lease,
                limit,
                name: options.only.clone(),
            };
            let sent = Instant::now();
            let jobs = match storage.reserve(&request).await {
                Ok(jobs) => {
                    backend_wait = Duration::from_millis(100);
                    jobs
                }
                Err(e) => {
                    drop(first);
                    error!(error = %e, retry_in = ?backend_wait, "reserve failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backend_wait) => {}
                        _ = stop_rx.changed() => {}
                    }
                    backend_wait = (backend_wait * 2).min(Duration::from_secs(5));
                    continue;
                }
            };

            if jobs.is_empty() {
                drop(first);
                if options.once && tasks.is_empty() {
                    break StopReason::Empty;
                }
                if options.stop_when_empty && tasks.is_empty() {
                    match queues_empty(&*storage, &options).await {
                        Ok(true) => break StopReason::Empty,
                        Ok(false) => {}
                        Err(e) => warn!(error = %e, "could not read queue sizes"),
                    }
                }
                tokio::select! {
                    r = storage.wait(&options.queues, options.sleep) => {
                        if let Err(e) = r {
                            warn!(error = %e, "waiting for jobs failed");
                            tokio::time::sleep(options.sleep).await;
                        }
                    }
                    _ = stop_rx.changed() => {}
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                }
                continue;
            }

            let mut first = Some(first);
            for job in jobs {
                let permit = match first.take() {
                    Some(permit) => permit,
                    None => match slots.clone().acquire_owned().await {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                };
                taken += 1;
                let shared = shared.clone();
                tasks.spawn(async move {
                    process(&shared, job, sent, permit).await;
                });
            }
        };

        // Shutdown: no more reservations; running jobs get the grace period.
        if !tasks.is_empty() {
            info!(running = tasks.len(), grace = ?options.grace, "waiting for running jobs");
            let drained = tokio::time::timeout(options.grace, async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                warn!(
                    running = tasks.len(),
                    "grace period over: interrupting running jobs and putting them back"
                );
                hard_tx.send_replace(true);
                while tasks.join_next().await.is_some() {}
            }
        }
        housekeeping.abort();
        let reason =
            if reason == StopReason::Stopped && shared.restart_requested.load(Ordering::SeqCst) {
                StopReason::Restart
            } else {
                reason
            };
        if let Err(e) = shared.stats.flush(&*storage).await {
            debug!(error = %e, "statistics not written");
        }
        let summary = WorkerSummary {
            processed: shared.counters.processed.load(Ordering::Relaxed),
            failed: shared.counters.failed.load(Ordering::Relaxed),
            retried: shared.counters.retried.load(Ordering::Relaxed),
            released: shared.counters.released.load(Ordering::Relaxed),
            reason,
        };
        drop(shared);
        let _ = acker.await;
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

/// Every second: write the statistics, and stop the worker when `runall restart` was called
/// since it started.
async fn housekeeping(shared: Arc<Shared>, stop: StopHandle) {
    let storage = &*shared.storage;
    let start_generation = match stats::restart_generation(storage).await {
        Ok(generation) => Some(generation),
        Err(Error::NotSupported { .. }) => None,
        Err(e) => {
            warn!(error = %e, "could not read the restart signal");
            Some(0)
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match shared.stats.flush(storage).await {
            Ok(()) | Err(Error::NotSupported { .. }) => {}
            Err(e) => debug!(error = %e, "statistics not written; will retry"),
        }
        if let Some(start) = start_generation {
            match stats::restart_generation(storage).await {
                Ok(now) if now != start => {
                    info!("restart signal received: finishing running jobs and exiting");
                    shared.restart_requested.store(true, Ordering::SeqCst);
                    stop.stop();
                    return;
                }
                Ok(_) => {}
                Err(e) => debug!(error = %e, "could not read the restart signal"),
            }
        }
    }
}

async fn queues_empty(storage: &dyn Storage, options: &WorkerOptions) -> Result<bool> {
    if options.only.is_some() {
        // Other jobs may stay on the queues; "empty" means nothing of ours was available.
        return Ok(true);
    }
    for queue in &options.queues {
        if storage.size(queue).await?.total() > 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

enum Outcome {
    Done,
    Failed(JobError),
    Interrupted,
}

/// Runs one reserved job to its end. `slot` is the job's concurrency slot: it is given back
/// as soon as the job body is done, so the next job can start while this one's
/// acknowledgement is still on its way to the store.
/// Runs one reserved job; `reserved` is when the reservation was asked for (its lease runs
/// from a moment after that).
async fn process(shared: &Shared, job: Reserved, reserved: Instant, slot: OwnedSemaphorePermit) {
    // A job that starts half a lease or more after it was reserved (the reply came back late,
    // or this process was paused in between: SIGSTOP, a long GC pause, a VM migration) may
    // have lost its lease already, and another worker may be running it: renew the lease
    // first, and leave the job alone if that is refused.
    let waited = reserved.elapsed();
    if waited >= shared.options.lease / 2 {
        if let Err(e) = shared
            .storage
            .extend(&job.lease, shared.options.lease)
            .await
        {
            warn!(
                job = %job.name,
                id = %job.lease.job_id,
                waited = ?waited,
                error = %e,
                "a job reserved too long ago to still hold its lease (was this worker paused?) \
                 could not be renewed: not running it, another worker has it or will"
            );
            return;
        }
    }
    let mut slot = Some(slot);
    let lease = job.lease.clone();
    let envelope = match Envelope::decode(&job.payload) {
        Ok(envelope) => envelope,
        Err(reason) => {
            return fail(shared, &job, &format!("bad payload: {reason}")).await;
        }
    };
    let Some(handler) = shared.handlers.get(&envelope.name) else {
        let reason = Error::UnknownJob {
            name: envelope.name.clone(),
        };
        return fail(shared, &job, &reason.to_string()).await;
    };
    let max_attempts = envelope
        .tries
        .or(handler.tries)
        .unwrap_or(shared.options.tries)
        .max(1);
    if job.attempts > max_attempts {
        let reason = format!(
            "attempts exhausted: attempt {} of {max_attempts} never finished (its worker stopped \
             or lost its lease while running it)",
            job.attempts - 1
        );
        return fail(shared, &job, &reason).await;
    }

    if let Some(key) = &envelope.lock {
        match shared
            .storage
            .lock(key, &lease.token, shared.options.lease)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                debug!(job = %envelope.name, id = %lease.job_id, lock = %key, "lock held: putting the job back");
                release(shared, &lease, shared.options.lock_retry, true).await;
                return;
            }
            Err(e) => {
                warn!(error = %e, lock = %key, "could not take lock: putting the job back");
                release(shared, &lease, shared.options.lock_retry, true).await;
                return;
            }
        }
    }

    let outcome = run(shared, &job, &envelope, handler, max_attempts, &mut slot).await;
    match outcome {
        Outcome::Done => {}
        Outcome::Interrupted => {
            info!(job = %envelope.name, id = %lease.job_id, "interrupted by shutdown: putting back");
            release(shared, &lease, Duration::ZERO, true).await;
        }
        Outcome::Failed(err) => {
            let last = job.attempts >= max_attempts;
            match err.retry() {
                Retry::Never => fail(shared, &job, err.message()).await,
                _ if last => {
                    let reason = format!(
                        "{} (attempt {} of {max_attempts})",
                        err.message(),
                        job.attempts
                    );
                    fail(shared, &job, &reason).await;
                }
                retry => {
                    let delay = match retry {
                        Retry::After(delay) => delay,
                        _ => handler
                            .backoff
                            .as_ref()
                            .unwrap_or(&shared.options.backoff)
                            .delay(job.attempts),
                    };
                    warn!(
                        job = %envelope.name,
                        id = %lease.job_id,
                        attempt = job.attempts,
                        max_attempts,
                        retry_in = ?delay,
                        error = %err,
                        "job failed; will retry"
                    );
                    if release(shared, &lease, delay, false).await {
                        shared.counters.retried.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    if let Some(key) = &envelope.lock {
        if let Err(e) = shared.storage.unlock(key, &lease.token).await {
            warn!(error = %e, lock = %key, "could not release lock; it expires with its lease");
        }
    }
}

async fn run(
    shared: &Shared,
    job: &Reserved,
    envelope: &Envelope,
    handler: &Handler,
    max_attempts: u32,
    slot: &mut Option<OwnedSemaphorePermit>,
) -> Outcome {
    let lease = &job.lease;
    let ctx = JobContext {
        job_id: lease.job_id.clone(),
        name: envelope.name.clone(),
        queue: lease.queue.clone(),
        attempt: job.attempts,
        max_attempts,
        release: Arc::default(),
    };
    let future = match (handler.run)(&envelope.data, ctx.clone()) {
        Ok(future) => future,
        Err(e) => {
            return Outcome::Failed(JobError::fail(format!(
                "payload does not fit job `{}`: {e}",
                envelope.name
            )))
        }
    };
    let timeout = envelope
        .timeout_ms
        .map(Duration::from_millis)
        .or(handler.timeout)
        .unwrap_or(shared.options.timeout);
    info!(job = %envelope.name, id = %lease.job_id, queue = %lease.queue, attempt = job.attempts, "job started");
    let started = Instant::now();
    let heartbeat = tokio::spawn(heartbeat(
        shared.storage.clone(),
        lease.clone(),
        envelope.lock.clone(),
        shared.options.lease,
    ));
    let mut task = tokio::spawn(future);
    let mut hard_stop = shared.hard_stop.clone();
    let outcome = tokio::select! {
        result = tokio::time::timeout(timeout, &mut task) => match result {
            Ok(Ok(Ok(()))) => Outcome::Done,
            Ok(Ok(Err(e))) => Outcome::Failed(e),
            Ok(Err(join)) => match join.try_into_panic() {
                Ok(panic) => Outcome::Failed(JobError::msg(format!("job panicked: {}", panic_message(&*panic)))),
                Err(_) => Outcome::Failed(JobError::msg("job task was cancelled")),
            },
            Err(_) => {
                task.abort();
                Outcome::Failed(JobError::msg(format!("job timed out after {}", humantime::format_duration(timeout))))
            }
        },
        _ = hard_stop.wait_for(|stop| *stop) => {
            task.abort();
            Outcome::Interrupted
        }
    };
    heartbeat.abort();
    let elapsed = started.elapsed();
    if let Outcome::Done = outcome {
        if let Some(delay) = ctx.released() {
            info!(job = %envelope.name, id = %lease.job_id, delay = ?delay, "job released itself");
            release(shared, lease, delay, false).await;
            return Outcome::Done;
        }
        let (tx, rx) = oneshot::channel();
        let sent = shared.acks.send((lease.clone(), tx)).is_ok();
        drop(slot.take());
        let acked = sent && rx.await.unwrap_or(false);
        if acked {
            shared.counters.processed.fetch_add(1, Ordering::Relaxed);
            shared
                .stats
                .record(&envelope.name, &lease.queue, stats::Outcome::Processed);
            info!(job = %envelope.name, id = %lease.job_id, duration = ?elapsed, "job done");
        } else {
            warn!(job = %envelope.name, id = %lease.job_id, "job done but its acknowledge was refused: the lease ran out and the job may run again");
        }
    }
    outcome
}

async fn heartbeat(
    storage: Arc<dyn Storage>,
    lease: Lease,
    lock: Option<String>,
    length: Duration,
) {
    let every = (length / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        match storage.extend(&lease, length).await {
            Ok(()) => {}
            Err(Error::LeaseLost { .. }) => {
                warn!(id = %lease.job_id, "lease lost while the job runs: another worker may take it");
                return;
            }
            Err(e) => warn!(error = %e, id = %lease.job_id, "could not extend lease"),
        }
        if let Some(key) = &lock {
            if let Err(e) = storage.lock(key, &lease.token, length).await {
                warn!(error = %e, lock = %key, "could not extend lock");
            }
        }
    }
}

/// Retries a store operation a few times on backend errors (a lost connection), so a blip
/// does not cost the job an attempt. A refused lease is final.
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

async fn fail(shared: &Shared, job: &Reserved, reason: &str) {
    let lease = &job.lease;
    match retrying("fail", || shared.storage.fail(lease, reason)).await {
        Ok(()) => {
            shared.counters.failed.fetch_add(1, Ordering::Relaxed);
            shared
                .stats
                .record(&job.name, &lease.queue, stats::Outcome::Failed);
            error!(id = %lease.job_id, name = %job.name, queue = %lease.queue, attempts = job.attempts, reason, "job failed for good: moved to the failed store");
        }
        Err(e) => {
            error!(error = %e, id = %lease.job_id, reason, "could not move the job to the failed store")
        }
    }
}

async fn release(shared: &Shared, lease: &Lease, delay: Duration, refund: bool) -> bool {
    match retrying("release", || shared.storage.release(lease, delay, refund)).await {
        Ok(()) => {
            if refund {
                shared.counters.released.fetch_add(1, Ordering::Relaxed);
            }
            true
        }
        Err(e) => {
            warn!(error = %e, id = %lease.job_id, "could not put the job back");
            false
        }
    }
}

/// Sends finished jobs' acknowledgements to the store in batches: whatever finished while
/// the previous batch was in flight goes in the next.
async fn acknowledge_loop(
    storage: Arc<dyn Storage>,
    mut rx: mpsc::UnboundedReceiver<(Lease, oneshot::Sender<bool>)>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 512).await > 0 {
        let leases: Vec<Lease> = batch.iter().map(|(lease, _)| lease.clone()).collect();
        match retrying("acknowledge", || storage.acknowledge(&leases)).await {
            Ok(results) => {
                for ((_, done), ok) in batch.drain(..).zip(results) {
                    let _ = done.send(ok);
                }
            }
            Err(e) => {
                error!(error = %e, jobs = leases.len(), "acknowledge failed: these jobs will run again after their lease");
                for (_, done) in batch.drain(..) {
                    let _ = done.send(false);
                }
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic payload".to_owned()
    }
}

/// The process's peak resident memory in megabytes, where the OS tells it (Linux).
pub fn peak_memory_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// The process's resident memory in megabytes, where the OS tells it (Linux).
pub fn resident_memory_mb() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096 / (1024 * 1024))
}

/// Listens for SIGTERM and SIGINT from the moment it is called (the handlers are installed
/// before it returns, so a signal that arrives before the future is first polled is not
/// lost); the future completes on the first of them. Must be called within a tokio runtime.
pub(crate) fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
