//! What the worker records through the [`metrics`] facade. Nothing is kept in the store: an
//! application (or `runall`) installs a recorder, such as a Prometheus exporter, to read them.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `runall_jobs_processed_total` | counter | `queue`, `job` |
//! | `runall_jobs_failed_total` | counter | `queue`, `job` |
//! | `runall_jobs_retried_total` | counter | `queue`, `job` |
//! | `runall_jobs_released_total` | counter | `queue`, `job` |
//! | `runall_jobs_interrupted_total` | counter | `queue`, `job` |
//! | `runall_jobs_discarded_total` | counter | `queue`, `job` |
//! | `runall_jobs_cancelled_total` | counter | `queue`, `job` |
//! | `runall_job_duration_seconds` | histogram | `queue`, `job` |
//! | `runall_job_wait_seconds` | histogram | `queue`, `job` |
//! | `runall_worker_busy_slots` | gauge | |
//! | `runall_worker_slots` | gauge | |
//!
//! - `runall_job_wait_seconds`: from when a job became available (its dispatch, or the end
//!   of its delay) to its first attempt's start; retries are left out (their wait is their
//!   backoff), and so are chain links, workflow nodes and batch callbacks, which first wait
//!   for other jobs (a workflow's batch node's members count from the workflow's dispatch).
//! - `runall_worker_busy_slots` counts the jobs this process is running, and
//!   `runall_worker_slots` its concurrency.
//! - Cardinality stays bounded: `queue` is one of the worker's queues, and `job` one of the
//!   names it has code for; any other name (a job it defers to another worker) is counted
//!   as `other`. No ids, attempts or error texts are labels.
//! - `runall work --metrics-addr 127.0.0.1:9091` serves them as Prometheus text, with the
//!   histograms' buckets given by [`BUCKETS`].

use std::time::Duration;

use super::Shared;

/// The buckets of the histograms, in seconds: from 1 ms to 5 minutes.
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub(crate) const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The `job` label of `name`: itself if this worker has code for it, else `other`.
fn job_label(shared: &Shared, name: &str) -> String {
    if shared.handlers.contains_key(name) {
        name.to_owned()
    } else {
        "other".to_owned()
    }
}

/// Counts a running job in `runall_worker_busy_slots` while it lives.
pub(super) struct Busy;

impl Busy {
    pub(super) fn start() -> Busy {
        metrics::gauge!("runall_worker_busy_slots").increment(1.0);
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        metrics::gauge!("runall_worker_busy_slots").decrement(1.0);
    }
}

/// Sets `runall_worker_slots`.
pub(super) fn slots(concurrency: usize) {
    metrics::gauge!("runall_worker_slots").set(concurrency as f64);
}

/// Records a first attempt's wait, if it is known.
pub(super) fn wait(shared: &Shared, queue: &str, job: &str, waited: Option<Duration>) {
    if let Some(waited) = waited {
        metrics::histogram!(
            "runall_job_wait_seconds",
            "queue" => queue.to_owned(),
            "job" => job_label(shared, job)
        )
        .record(waited.as_secs_f64());
    }
}

/// The outcome of one reservation, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counted {
    Processed,
    Failed,
    Retried,
    Released,
    Interrupted,
    Discarded,
    Cancelled,
}

impl Counted {
    fn name(self) -> &'static str {
        match self {
            Counted::Processed => "runall_jobs_processed_total",
            Counted::Failed => "runall_jobs_failed_total",
            Counted::Retried => "runall_jobs_retried_total",
            Counted::Released => "runall_jobs_released_total",
            Counted::Interrupted => "runall_jobs_interrupted_total",
            Counted::Discarded => "runall_jobs_discarded_total",
            Counted::Cancelled => "runall_jobs_cancelled_total",
        }
    }
}

pub(super) fn count(shared: &Shared, what: Counted, queue: &str, job: &str) {
    metrics::counter!(what.name(), "queue" => queue.to_owned(), "job" => job_label(shared, job))
        .increment(1);
}

pub(super) fn duration(shared: &Shared, queue: &str, job: &str, took: Duration) {
    metrics::histogram!(
        "runall_job_duration_seconds",
        "queue" => queue.to_owned(),
        "job" => job_label(shared, job)
    )
    .record(took.as_secs_f64());
}
