//! The one error type of `queue-core`.

use std::fmt;

/// A boxed error from a backend or a user callback.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as its default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong outside a job's own body.
///
/// What a job body returns is a [`JobError`](crate::JobError), a separate type: it decides
/// whether the job is retried, not whether the queue works.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend failed: a lost connection, a query error, an I/O error.
    #[error("{driver} backend error: {source}")]
    Backend {
        /// The driver's name (`sqlite`, `redis`, ...).
        driver: &'static str,
        /// What the backend said.
        #[source]
        source: BoxError,
    },
    /// The reservation this call names ran out and the job may belong to another worker now:
    /// the acknowledge, release or fail was refused (fencing).
    #[error("lease lost: job {job_id} is no longer reserved with this token")]
    LeaseLost {
        /// The job whose lease was lost.
        job_id: String,
    },
    /// The driver cannot do this operation at all.
    #[error("the {driver} driver does not support {operation}")]
    NotSupported {
        /// The driver's name.
        driver: &'static str,
        /// What was asked of it.
        operation: &'static str,
    },
    /// A call broke the storage contract (a push effect without its unique key, a cursor
    /// that is not one of this store's): a bug in the caller, not in the backend.
    #[error("{driver}: {problem}")]
    Contract {
        /// The driver's name.
        driver: &'static str,
        /// What was wrong.
        problem: String,
    },
    /// The thing asked for does not exist.
    #[error("no {what} with id {id}")]
    NotFound {
        /// What was looked for (`failed job`, `job`).
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// Two job types linked into one binary have the same name: a worker cannot tell their
    /// payloads apart, so it refuses to start.
    #[error("two job types are named `{name}`: {first} and {second}; give one of them another `#[job(name = ..)]`")]
    DuplicateJobName {
        /// The name both have.
        name: String,
        /// One type's Rust path.
        first: String,
        /// The other's.
        second: String,
    },
    /// No job type and no listener is registered under this name.
    #[error("unknown job name `{name}`: no #[derive(Job)] type and no listener has this name")]
    UnknownJob {
        /// The name that was asked for.
        name: String,
    },
    /// A payload could not be encoded or decoded.
    #[error("payload error: {0}")]
    Payload(String),
    /// A payload is larger than the configured limit.
    #[error("payload of {size} bytes is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A queue is full (its size limit is reached).
    #[error(
        "queue `{queue}` is full: {size} {} waiting, the limit is {limit}",
        jobs(.size)
    )]
    QueueFull {
        /// The queue.
        queue: String,
        /// Its size when the dispatch was refused.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Configuration is missing or wrong.
    #[error("configuration error: {0}")]
    Config(String),
    /// The store could not be reached or opened (`runall` wraps the driver's error with the
    /// URL, its password hidden).
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The store's URL, its password hidden.
        url: String,
        /// What the driver said: connection refused, a bad password, an unknown database.
        source: Box<Error>,
    },
    /// No driver is registered for the URL's scheme.
    #[error("no driver for `{scheme}` URLs is linked into this binary (known schemes: {known})")]
    UnknownScheme {
        /// The scheme of the URL.
        scheme: String,
        /// The schemes that are linked.
        known: String,
    },
    /// No default queue connection was set with [`Queue::set_default`](crate::Queue::set_default).
    #[error("no default queue connection: call Queue::set_default at start-up or dispatch with .via(&queue)")]
    NoDefaultQueue,
    /// A unique job dispatched with [`OnConflict::Error`](crate::OnConflict::Error) while
    /// another job holds its key. Nothing was stored.
    #[error("job `{name}` not dispatched: its unique key `{key}` is held by job {existing}")]
    Duplicate {
        /// The job's name.
        name: String,
        /// The claim's key as stored.
        key: String,
        /// The job holding it.
        existing: crate::storage::JobId,
    },
    /// A job run at its dispatch by an inline queue ([`Queue::inline`](crate::Queue::inline))
    /// failed (its one attempt returned an error, panicked or timed out). It is in the inline
    /// queue's failed store.
    #[error("job `{name}` (id {id}) failed when run inline: {reason}")]
    JobFailed {
        /// The job's name.
        name: String,
        /// Its id in the inline queue's store.
        id: crate::storage::JobId,
        /// Its error.
        reason: String,
    },
}

/// "job" or "jobs", as `n` needs.
fn jobs(n: &u64) -> &'static str {
    if *n == 1 {
        "job"
    } else {
        "jobs"
    }
}

impl Error {
    /// Wraps a backend error with the driver's name.
    pub fn backend(driver: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            driver,
            source: source.into(),
        }
    }

    /// True when the error is a [`Error::LeaseLost`].
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Error::LeaseLost { .. })
    }
}

/// A plain message as an error, for drivers that have only text to report.
#[derive(Debug)]
pub struct Message(pub String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}
