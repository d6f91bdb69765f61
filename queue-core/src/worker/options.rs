//! [`WorkerOptions`]: every knob of a worker, with Laravel's and Rakit's names beside ours.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::job::Backoff;
use crate::limit::Limit;

/// How a worker runs. `Default` gives the values `runall work` uses with no flags.
///
/// | field | `runall` flag | Laravel | Rakit / `job.toml` |
/// |---|---|---|---|
/// | `queues` | `--queue high,default,low` | `--queue` | `--queue` / `queues` |
/// | `all_queues` | no `--queue` and no `queues` | | `job:runall` |
/// | `concurrency` | `--concurrency` | (processes) | |
/// | `tries` | `--retries` / `--tries` | `--tries` | `max_retries` |
/// | `timeout` | `--timeout` | `--timeout` | |
/// | `lease` | `--lease` / `--retry-after` | `retry_after` | |
/// | `sleep` | `--sleep 500ms` (a bare number: ms) | `--sleep` (s) | `sleep_ms`, `sleep` |
/// | `max_jobs` | `--max-jobs` | `--max-jobs` | `max_job` |
/// | `max_time` | `--max-time` | `--max-time` | |
/// | `memory_mb` | `--memory` | `--memory` | |
/// | `once` | `--once` | `--once` | |
/// | `stop_when_empty` | `--stop-when-empty` | `--stop-when-empty` | |
/// | `lock_retry` | `--overlap-delay` | (`releaseAfter`, per job) | `overlap_delay` |
/// | `only` | `runall run NAME` | | `job:run NAME` |
/// | `prefetch` | `--prefetch` | | `prefetch` |
/// | `limits` | `[limits]` in `job.toml` | `RateLimiter::for`, `Redis::funnel` | |
/// | `queue_limits` | `[queue_limits]` in `job.toml` | | |
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// Queues in strict priority order (unless [`all_queues`](Self::all_queues)).
    pub queues: Vec<String>,
    /// Take jobs from every queue the store holds instead of `queues`: `high`, `default`
    /// and `low` first, in that order, then the others by name. The list is read when the
    /// worker starts and again every second, so a queue that appears while it runs is
    /// picked up; a queue once seen stays in it until the worker stops. Queues whose names
    /// start with `_` are the store's own (`_schedules`) and are left out. A store that
    /// cannot list its queues (no [`Inspect`](crate::storage::Inspect)) is worked on
    /// `queues` instead, with a warning in the log. Off by default; `runall work` turns it
    /// on when given no `--queue` and no `queues` in `job.toml` (Rakit's `job:runall`).
    pub all_queues: bool,
    /// Jobs run at once in this process.
    pub concurrency: usize,
    /// Attempts for jobs that do not set their own.
    pub tries: u32,
    /// Timeout of one attempt for jobs that do not set their own.
    pub timeout: Duration,
    /// Backoff for jobs that do not set their own.
    pub backoff: Backoff,
    /// How long a reservation lasts without a heartbeat: a job of a worker that died is
    /// available again after this long. The worker renews it every `lease / 3` while the
    /// job runs, so it bounds recovery time, not job length.
    pub lease: Duration,
    /// How long to wait when no job is available (drivers that can be woken wake sooner).
    pub sleep: Duration,
    /// Stop after taking this many jobs.
    pub max_jobs: Option<u64>,
    /// Stop after running this long (finishing the jobs in hand).
    pub max_time: Option<Duration>,
    /// Stop when the process's resident memory exceeds this many megabytes.
    pub memory_mb: Option<u64>,
    /// Take one job (or none, if none is available), finish it and stop.
    pub once: bool,
    /// Stop when every queue is empty (nothing waiting, delayed or reserved).
    pub stop_when_empty: bool,
    /// On a stop signal, how long running jobs may take to finish before they are
    /// interrupted and put back.
    pub grace: Duration,
    /// How long a job whose `without_overlapping` lock is held waits before it is tried
    /// again (not counted as an attempt), on a store that does not park jobs on a lock. On
    /// one that does ([`Capabilities::park`](crate::storage::Capabilities::park)), the job
    /// waits for the holder's unlock, at most the longer of this and the
    /// [`lease`](Self::lease).
    pub lock_retry: Duration,
    /// Run only jobs with this name.
    pub only: Option<String>,
    /// How long after its dispatch a job this worker cannot run (an unknown name, or an
    /// envelope of a newer version) is put back for another worker instead of failed: during
    /// a rolling deploy, old and new workers run side by side and a job only the new build
    /// knows must wait for a new worker, not fail on an old one. One hour by default.
    pub unknown_job_window: Duration,
    /// How many reserved jobs to hold beyond the free slots, so a slot that frees starts its
    /// next job without waiting for a round trip to the store. `None` (the default) adapts it
    /// to twice the jobs the slots finish during one fetch (from how long a fetch takes and
    /// how long a job runs), up to 128 (or `concurrency`, if larger): quick jobs get a
    /// buffer, and each call to the store then carries more settlements and fetches more
    /// jobs; jobs that outlast a fetch get none, so a worker of long jobs holds none back
    /// from other workers. `Some(0)` turns it off.
    pub prefetch: Option<usize>,
    /// Whether the worker claims the ticks of its queue's schedules (on by default; every
    /// worker may, each tick is claimed once).
    pub schedules: bool,
    /// The named [limits](crate::Limit) jobs are counted against (`#[job(limit = "..")]`),
    /// by name. A job naming a limit this worker does not define is put back for a worker
    /// that does, as a job of an unknown name is (see
    /// [`unknown_job_window`](Self::unknown_job_window)).
    pub limits: BTreeMap<String, Limit>,
    /// Limits of whole queues, by queue (Oban's queue `rate_limit` and `global_limit`): every
    /// job taken from the queue is counted against one budget across every worker, before
    /// its own limit (if it names one). A job put back by its own limit after its queue's
    /// admitted it has used one of the queue's tokens.
    pub queue_limits: BTreeMap<String, Limit>,
    /// How long the status of a job that succeeded is kept, readable by id
    /// ([`Queue::job`](crate::Queue::job), `runall job ID`) with its output. `None` (the
    /// default): not kept, which saves a write per job. Jobs that end any other way (failed,
    /// discarded, cancelled, skipped) always keep theirs, this long or a day when `None`.
    /// Needs a store with jobs by id; ignored on others.
    pub keep_finished: Option<Duration>,
    /// The [middleware](crate::Middleware) every job of this worker runs in, the first
    /// outermost (a job type's own runs inside).
    pub middleware: crate::Layers,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            queues: vec!["default".to_owned()],
            all_queues: false,
            concurrency: 1,
            tries: 3,
            timeout: Duration::from_secs(60),
            backoff: Backoff::default(),
            lease: Duration::from_secs(15),
            sleep: Duration::from_millis(1000),
            max_jobs: None,
            max_time: None,
            memory_mb: None,
            once: false,
            stop_when_empty: false,
            grace: Duration::from_secs(30),
            lock_retry: Duration::from_millis(500),
            only: None,
            unknown_job_window: Duration::from_secs(3600),
            prefetch: None,
            schedules: true,
            limits: BTreeMap::new(),
            queue_limits: BTreeMap::new(),
            keep_finished: None,
            middleware: crate::Layers::default(),
        }
    }
}

impl WorkerOptions {
    /// Sets the queues, in priority order (and turns [`all_queues`](Self::all_queues) off).
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = queues.into_iter().map(Into::into).collect();
        self.all_queues = false;
        self
    }

    /// Takes jobs from every queue the store holds; see [`all_queues`](Self::all_queues).
    pub fn all_queues(mut self) -> Self {
        self.all_queues = true;
        self
    }

    /// Defines the limit `name` (`Limit::rate(100).per(..)`, `Limit::concurrent(5)`), which
    /// jobs name with `#[job(limit = "name")]`. Checked when the worker starts.
    pub fn limit(mut self, name: impl Into<String>, limit: impl Into<Limit>) -> Self {
        self.limits.insert(name.into(), limit.into());
        self
    }

    /// Limits the whole queue `queue`: every job taken from it, whatever its type, counts
    /// against one budget shared by every worker (`[queue_limits]` in `job.toml`). Checked
    /// when the worker starts.
    ///
    /// ```
    /// use std::time::Duration;
    /// use queue_core::{Limit, WorkerOptions};
    ///
    /// let options = WorkerOptions::default()
    ///     .queues(["emails", "default"])
    ///     .queue_limit("emails", Limit::rate(60).per(Duration::from_secs(60)))
    ///     .queue_limit("default", Limit::concurrent(10));
    /// assert_eq!(options.queue_limits.len(), 2);
    /// ```
    pub fn queue_limit(mut self, queue: impl Into<String>, limit: impl Into<Limit>) -> Self {
        self.queue_limits.insert(queue.into(), limit.into());
        self
    }

    /// Leaves the queue's schedules to other workers (`runall work --no-schedule`).
    pub fn no_schedules(mut self) -> Self {
        self.schedules = false;
        self
    }

    /// Sets how many jobs run at once. At least 1: `0` is taken as 1 (`runall work
    /// --concurrency 0` is refused with an error instead).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the default number of attempts, the first included. At least 1: `0` is taken
    /// as 1 (`runall work --retries 0` is refused with an error instead).
    pub fn tries(mut self, n: u32) -> Self {
        self.tries = n.max(1);
        self
    }

    /// Sets the default timeout of an attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the default backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the lease (Laravel's `retry_after`).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the idle wait.
    pub fn sleep(mut self, sleep: Duration) -> Self {
        self.sleep = sleep;
        self
    }

    /// Stops after this many jobs.
    pub fn max_jobs(mut self, n: u64) -> Self {
        self.max_jobs = Some(n);
        self
    }

    /// Stops after this long.
    pub fn max_time(mut self, d: Duration) -> Self {
        self.max_time = Some(d);
        self
    }

    /// Stops above this much resident memory.
    pub fn memory_mb(mut self, mb: u64) -> Self {
        self.memory_mb = Some(mb);
        self
    }

    /// Processes one job and stops.
    pub fn once(mut self) -> Self {
        self.once = true;
        self
    }

    /// Stops when the queues are empty.
    pub fn stop_when_empty(mut self) -> Self {
        self.stop_when_empty = true;
        self
    }

    /// Runs until stopped even when the queues are empty (undoes
    /// [`stop_when_empty`](Self::stop_when_empty)).
    pub fn stop_when_empty_off(mut self) -> Self {
        self.stop_when_empty = false;
        self
    }

    /// Sets the shutdown grace period.
    pub fn grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// Sets the wait of a job whose lock is held.
    pub fn lock_retry(mut self, d: Duration) -> Self {
        self.lock_retry = d;
        self
    }

    /// Keeps the status (and output) of succeeded jobs for `d`; see
    /// [`keep_finished`](Self::keep_finished).
    pub fn keep_finished(mut self, d: Duration) -> Self {
        self.keep_finished = Some(d);
        self
    }

    /// Runs every job of this worker in `middleware`, outside those added before.
    pub fn middleware(mut self, middleware: impl crate::Middleware) -> Self {
        self.middleware.0.push(std::sync::Arc::new(middleware));
        self
    }

    /// Runs only jobs named `name`.
    pub fn only(mut self, name: impl Into<String>) -> Self {
        self.only = Some(name.into());
        self
    }

    /// Sets how long a job this worker cannot run is put back for another worker
    /// ([`unknown_job_window`](Self::unknown_job_window)).
    pub fn unknown_job_window(mut self, window: Duration) -> Self {
        self.unknown_job_window = window;
        self
    }

    /// Holds up to `n` reserved jobs beyond the free slots (0 turns prefetch off); see
    /// [`prefetch`](Self::prefetch).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = Some(n);
        self
    }
}
