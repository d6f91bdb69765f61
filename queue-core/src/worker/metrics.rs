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

use std::time::Duration;

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

pub(super) fn count(what: Counted, queue: &str, job: &str) {
    metrics::counter!(what.name(), "queue" => queue.to_owned(), "job" => job.to_owned())
        .increment(1);
}

pub(super) fn duration(queue: &str, job: &str, took: Duration) {
    metrics::histogram!(
        "runall_job_duration_seconds",
        "queue" => queue.to_owned(),
        "job" => job.to_owned()
    )
    .record(took.as_secs_f64());
}
