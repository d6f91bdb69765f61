//! The [`Storage`] trait every driver implements, and the types it speaks.
//!
//! # For driver authors
//!
//! A driver is a type that implements [`Storage`] and, to be chosen by URL at run time
//! (`runall --connection redis://...`), submits a [`DriverRegistration`] for its URL schemes.
//! The trait is small on purpose: every method is one atomic operation on the backend, and
//! everything else (typed jobs, retries, backoff, timeouts, locks around a job, heartbeats) is
//! built on top of it by the worker in `queue-core`.
//!
//! The rules every driver keeps, checked by the conformance suite in the `queue-tests` crate:
//!
//! - **Payloads are opaque bytes.** The storage never parses them; a garbage payload must come
//!   back out of [`reserve`](Storage::reserve) byte for byte so the worker can fail it with a
//!   clear reason.
//! - **Strict priority.** [`reserve`](Storage::reserve) takes queues in the order given: a job
//!   available on the first queue is always taken before one on the second. Within a queue,
//!   jobs come out first-in first-out by the time they became available.
//! - **Delays.** A job is never reserved before its available time.
//! - **Leases.** A reservation lasts for the lease given; [`extend`](Storage::extend) renews it.
//!   A job whose lease ran out is available again, its attempt already counted.
//! - **Attempts** count at reservation: the first reservation returns `attempts == 1`.
//! - **Fencing.** Each reservation carries a fresh token. [`acknowledge`](Storage::acknowledge),
//!   [`release`](Storage::release), [`fail`](Storage::fail) and [`extend`](Storage::extend)
//!   with a token that is no longer the job's current one are refused with
//!   [`Error::LeaseLost`](crate::Error::LeaseLost) (or `false` for the batched acknowledge).
//! - **Clocks.** Where the backend has a clock (SQL `now()`, Redis `TIME`), due times and lease
//!   deadlines are judged by it; otherwise by the worker's clock.
//! - **Locks** ([`lock`](Storage::lock)) are owned by a token, expire on their own, and are
//!   released only by their owner.

mod memory;

pub use memory::MemoryStorage;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::error::Result;

/// The identifier a storage gives a job when it is pushed: unique within the store (not only
/// within its queue), so applications can use it as a key, and never reused while the job
/// exists.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for JobId {
    fn from(value: String) -> Self {
        JobId(value)
    }
}

impl From<&str> for JobId {
    fn from(value: &str) -> Self {
        JobId(value.to_owned())
    }
}

/// When a pushed job becomes available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Availability {
    /// At once.
    #[default]
    Now,
    /// After this long, measured by the backend's clock from the moment of the push.
    After(Duration),
    /// At this wall-clock time.
    At(SystemTime),
}

/// A job as it is handed to [`Storage::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// The queue it goes on.
    pub queue: String,
    /// The job's name, kept beside the payload so a worker can reserve by name
    /// (`runall run NAME`) and operators can read it without decoding the payload.
    pub name: String,
    /// The encoded envelope: opaque to the storage.
    pub payload: Vec<u8>,
    /// When it becomes available.
    pub available: Availability,
}

/// The handle of one reservation: the job and the token that fences it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// The queue the job was reserved from.
    pub queue: String,
    /// The reservation's token: refused once the job was reserved again by someone else.
    pub token: String,
}

/// A job taken by [`Storage::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The lease to acknowledge, release, fail or extend it with.
    pub lease: Lease,
    /// The job's name as pushed (may be empty when a row was written by hand).
    pub name: String,
    /// The payload exactly as pushed.
    pub payload: Vec<u8>,
    /// Attempts so far, this one included (1 on the first reservation).
    pub attempts: u32,
}

/// What [`Storage::reserve`] is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRequest {
    /// Queues in strict priority order.
    pub queues: Vec<String>,
    /// How long the reservation lasts unless extended.
    pub lease: Duration,
    /// The most jobs to take in this call (at least 1).
    pub limit: usize,
    /// Take only jobs with this name (`runall run NAME`); `None` takes any.
    pub name: Option<String>,
}

/// A job in the failed store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedJob {
    /// The failed store's id for it.
    pub id: String,
    /// The id the job had in its queue.
    pub job_id: String,
    /// The queue it came from.
    pub queue: String,
    /// The job's name.
    pub name: String,
    /// The payload exactly as it was.
    pub payload: Vec<u8>,
    /// Why it failed: the last attempt's error.
    pub error: String,
    /// How many attempts it had.
    pub attempts: u32,
    /// When it failed.
    pub failed_at: SystemTime,
}

/// How many jobs a queue holds, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSize {
    /// Available now.
    pub waiting: u64,
    /// Waiting for their time (delayed or released with a delay).
    pub delayed: u64,
    /// Reserved by a worker (including reservations whose lease ran out but were not yet
    /// taken again).
    pub reserved: u64,
}

impl QueueSize {
    /// Everything the queue holds.
    pub fn total(&self) -> u64 {
        self.waiting + self.delayed + self.reserved
    }
}

/// What a driver can do, so the conformance suite and the worker can tell a backend that
/// truly lacks an operation from a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// [`Storage::reserve`] honours [`ReserveRequest::name`].
    pub reserve_by_name: bool,
    /// Jobs survive a restart of the backend once `push` returned.
    pub durable: bool,
    /// Idle workers are woken by [`Storage::wait`] as soon as a job is pushed by any process
    /// (otherwise it sleeps, and at best wakes for pushes from its own process).
    pub wake_on_push: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            reserve_by_name: true,
            durable: true,
            wake_on_push: false,
        }
    }
}

/// The storage behind a queue: one trait every driver implements.
///
/// Each method is one atomic operation. See the [module docs](self) for the rules drivers
/// keep. The trait is object safe: the engine holds an `Arc<dyn Storage>`, so the driver can
/// be chosen by URL at run time.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// The driver's name (`sqlite`, `postgres`, `redis`, `file`, `memcached`, `memory`).
    fn driver(&self) -> &'static str;

    /// What this driver can and cannot do.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Creates or upgrades whatever the backend needs (tables, directories). Idempotent.
    async fn migrate(&self) -> Result<()> {
        Ok(())
    }

    /// Pushes jobs, all or none where the backend allows it, and returns their ids in order.
    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>>;

    /// Reserves up to `request.limit` available jobs, taking the queues in strict priority
    /// order, each with a fresh lease token and its attempt counted.
    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>>;

    /// Extends a reservation to `lease` from now (the worker's heartbeat).
    /// Fails with [`Error::LeaseLost`](crate::Error::LeaseLost) if the token is stale.
    async fn extend(&self, lease: &Lease, duration: Duration) -> Result<()>;

    /// Deletes finished jobs. Returns, for each lease, whether it was still current; a stale
    /// lease deletes nothing.
    async fn acknowledge(&self, leases: &[Lease]) -> Result<Vec<bool>>;

    /// Puts a reserved job back, available after `delay`. With `refund_attempt` the attempt
    /// this reservation counted is given back (a job put back because its lock was held).
    async fn release(&self, lease: &Lease, delay: Duration, refund_attempt: bool) -> Result<()>;

    /// Moves a reserved job to the failed store with the reason.
    async fn fail(&self, lease: &Lease, error: &str) -> Result<()>;

    /// How many jobs `queue` holds, by state.
    async fn size(&self, queue: &str) -> Result<QueueSize>;

    /// The queues that hold jobs now.
    async fn queues(&self) -> Result<Vec<String>>;

    /// Deletes every job of `queue` that is not reserved; returns how many.
    async fn clear(&self, queue: &str) -> Result<u64>;

    /// A page of the failed store, newest first.
    async fn failed_list(&self, offset: u64, limit: u64) -> Result<Vec<FailedJob>>;

    /// One failed job.
    async fn failed_get(&self, id: &str) -> Result<Option<FailedJob>>;

    /// How many jobs the failed store holds.
    async fn failed_count(&self) -> Result<u64>;

    /// Puts a failed job back on its queue with its attempts reset; returns its new id, or
    /// `None` if there is no failed job with that id.
    async fn failed_retry(&self, id: &str) -> Result<Option<JobId>>;

    /// Deletes one failed job; returns whether it existed.
    async fn failed_forget(&self, id: &str) -> Result<bool>;

    /// Deletes every failed job; returns how many.
    async fn failed_flush(&self) -> Result<u64>;

    /// Deletes failed jobs that failed before `before`; returns how many.
    async fn failed_prune(&self, before: SystemTime) -> Result<u64>;

    /// Takes the lock `key` for `owner` for `ttl`. Returns false if another owner holds it.
    /// If `owner` already holds it, the expiry is renewed and it returns true.
    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool>;

    /// Releases the lock if `owner` holds it; returns whether it did.
    async fn unlock(&self, key: &str, owner: &str) -> Result<bool>;

    /// The time since which the longest-waiting available job of `queue` has been available
    /// (for `runall health`): `None` when nothing is waiting.
    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        let _ = queue;
        Err(crate::Error::NotSupported {
            driver: self.driver(),
            operation: "oldest_available",
        })
    }

    /// Adds each delta to its named counter atomically (a missing counter starts at 0).
    /// With `ttl`, the counters written by this call disappear that long after this write
    /// (throughput buckets). Workers keep statistics (`runall stats`, `runall health`) and
    /// the restart signal (`runall restart`) here, so that every worker of a store adds up.
    async fn add_counters(&self, deltas: &[(String, i64)], ttl: Option<Duration>) -> Result<()> {
        let _ = (deltas, ttl);
        Err(crate::Error::NotSupported {
            driver: self.driver(),
            operation: "add_counters",
        })
    }

    /// The counters whose names start with `prefix`, sorted by name; expired ones are left
    /// out.
    async fn counters(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        let _ = prefix;
        Err(crate::Error::NotSupported {
            driver: self.driver(),
            operation: "counters",
        })
    }

    /// Waits until a job may be available on one of `queues`, at most `timeout`. Drivers that
    /// can be woken by a push (PostgreSQL LISTEN, Redis) return early; the default sleeps.
    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let _ = queues;
        tokio::time::sleep(timeout).await;
        Ok(())
    }
}

/// Options handed to a driver's connect function when it is chosen by URL.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Table (or key, or directory) name for jobs; `None` uses the driver's default.
    pub table: Option<String>,
    /// Table (or key, or directory) name for failed jobs; `None` uses the driver's default.
    pub failed_table: Option<String>,
    /// Create the backend's tables or directories when connecting.
    pub migrate: bool,
}

impl ConnectOptions {
    /// The defaults: the driver's own table names, no migration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the jobs table (key prefix, directory).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// Sets the failed-jobs table (key prefix, directory).
    pub fn failed_table(mut self, table: impl Into<String>) -> Self {
        self.failed_table = Some(table.into());
        self
    }

    /// Creates what is missing when connecting.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }
}

/// A connect function: URL and options in, storage out.
pub type ConnectFn = fn(String, ConnectOptions) -> BoxFuture<'static, Result<Arc<dyn Storage>>>;

/// A driver that can be chosen by URL scheme. Drivers submit one through `inventory`:
///
/// ```ignore
/// queue_core::__private::inventory::submit! {
///     queue_core::DriverRegistration { schemes: &["sqlite"], connect: connect_sqlite }
/// }
/// ```
#[derive(Debug)]
pub struct DriverRegistration {
    /// URL schemes this driver answers (`sqlite`, `postgres`, `postgresql`).
    pub schemes: &'static [&'static str],
    /// Opens a storage for a URL.
    pub connect: ConnectFn,
}

inventory::collect!(DriverRegistration);

/// Produces the SQL a SQL driver would run to create its tables, for `runall table`.
pub type SchemaFn = fn(&str, &ConnectOptions) -> Result<String>;

/// A SQL driver's schema, by URL scheme, so `runall table` (Rakit's `job:table`) can print the
/// SQL for a team's own migration tool. Drivers without a schema (Redis, files) submit none.
#[derive(Debug)]
pub struct SchemaRegistration {
    /// URL schemes.
    pub schemes: &'static [&'static str],
    /// Returns the SQL for a URL and table names.
    pub schema: SchemaFn,
}

inventory::collect!(SchemaRegistration);

fn scheme_of(url: &str) -> &str {
    url.split_once(':').map(|(s, _)| s).unwrap_or(url)
}

/// The SQL that creates the tables of the store a URL names.
pub fn schema_sql(url: &str, options: &ConnectOptions) -> Result<String> {
    let scheme = scheme_of(url);
    for entry in inventory::iter::<SchemaRegistration> {
        if entry.schemes.contains(&scheme) {
            return (entry.schema)(url, options);
        }
    }
    Err(crate::Error::Config(format!(
        "`{scheme}` stores have no SQL schema to print: `runall table` is for SQL databases (sqlite, postgres, mysql)"
    )))
}

/// Opens the storage a URL names, through the driver registered for its scheme.
///
/// `memory://` always works: it is a fresh in-memory store.
pub async fn connect(url: &str, options: ConnectOptions) -> Result<Arc<dyn Storage>> {
    let scheme = scheme_of(url);
    if scheme == "memory" {
        return Ok(Arc::new(MemoryStorage::new()));
    }
    for driver in inventory::iter::<DriverRegistration> {
        if driver.schemes.contains(&scheme) {
            return (driver.connect)(url.to_owned(), options).await;
        }
    }
    let mut known: Vec<&str> = inventory::iter::<DriverRegistration>
        .into_iter()
        .flat_map(|d| d.schemes.iter().copied())
        .collect();
    known.push("memory");
    known.sort_unstable();
    Err(crate::Error::UnknownScheme {
        scheme: scheme.to_owned(),
        known: known.join(", "),
    })
}

/// Milliseconds since the Unix epoch, the unit drivers store times in.
pub fn unix_millis(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The inverse of [`unix_millis`].
pub fn from_unix_millis(millis: i64) -> SystemTime {
    if millis >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(millis as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_millis(millis.unsigned_abs())
    }
}

/// Milliseconds in a duration, saturating, for drivers that store integers.
pub fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A fresh random token for leases and lock owners.
pub fn new_token() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    format!("{:016x}{:016x}", rng.gen::<u64>(), rng.gen::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _object_safe(_: &dyn Storage) {}

    #[test]
    fn millis_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_unix_millis(unix_millis(t)), t);
        assert_eq!(unix_millis(from_unix_millis(-5)), -5);
    }
}
