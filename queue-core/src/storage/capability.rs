//! What not every backend can do: each a trait of its own, reached through
//! [`Storage::capabilities`], and [`StorageExt`], the conveniences over the core contract.

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::settle::{Effect, LeaseStatus, Settle, Settled};
use super::types::{
    Backlog, Cancellation, FailedJob, JobId, JobState, JobSummary, Lease, NewJob, Page,
    PageRequest, Pushed, QueueSize, RecordKey,
};
use super::Storage;
use crate::error::{Error, Result};

/// What a driver is and can do: flags, and the capability traits it implements.
///
/// Built by the driver with [`Capabilities::new`] and the setters:
///
/// ```ignore
/// fn capabilities(&self) -> Capabilities<'_> {
///     Capabilities::new("redis").durable(true).claims(true).failed(self).inspect(self)
/// }
/// ```
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct Capabilities<'a> {
    /// The driver's name (`sqlite`, `postgres`, `mysql`, `redis`, `file`, `memcached`,
    /// `memory`), in errors and logs.
    pub driver: &'static str,
    /// Jobs survive a restart of the backend once `push` returned.
    pub durable: bool,
    /// A [`Storage::push`](super::Storage::push) of many jobs stores all of them or none. A
    /// [`Dispatcher`](crate::Dispatcher) coalesces concurrent dispatches into one push only
    /// on such a store (group commit): when a coalesced push fails, nothing of it was stored,
    /// and each caller's jobs are pushed again on their own, so each caller gets its own
    /// result and error.
    pub atomic_push: bool,
    /// [`Storage::reserve`] honours [`ReserveRequest::name`](super::ReserveRequest::name)
    /// (`runall run NAME`).
    pub reserve_by_name: bool,
    /// Pushes honour [`Unique`](super::Unique) claims, and settles apply
    /// [`Effect::Push`](super::Effect::Push).
    pub claims: bool,
    /// Pushes honour [`Unique::replace`](super::Unique::replace): a queued job holding the
    /// key takes the new job's name, payload and availability (debounce).
    pub replace: bool,
    /// Settles apply [`Effect::Payload`](super::Effect::Payload): a job put back in its
    /// queue takes a new payload in the same step (a retried encrypted job re-sealed with
    /// the active key).
    pub rewrite: bool,
    /// Settles apply [`Effect::Park`](super::Effect::Park), and
    /// [`unlock`](crate::Storage::unlock) and [`Locks::release`] make the job parked on the
    /// key longest ago due at once: a job whose `without_overlapping` key is busy waits for
    /// the key instead of polling it.
    pub park: bool,
    /// The failed store.
    pub failed: Option<&'a dyn FailedStore>,
    /// Sizes, queues, listing and clearing, for operators.
    pub inspect: Option<&'a dyn Inspect>,
    /// Group counters: settles apply [`Effect::Count`](super::Effect::Count).
    pub groups: Option<&'a dyn Groups>,
    /// Single jobs by id: status, cancellation and records; settles apply
    /// [`Effect::Record`](super::Effect::Record).
    pub track: Option<&'a dyn Track>,
    /// The store-wide control keys (the restart signal).
    pub control: Option<&'a dyn Control>,
    /// Wakes idle workers when a job is pushed by any process (by a notification, or by a
    /// cheap poll inside the wait: see [`Wake`]). Without it a worker sleeps `--sleep`
    /// between reserves.
    pub wake: Option<&'a dyn Wake>,
    /// The worker registry: each live worker process keeps an entry with a time to live
    /// (`runall workers`, [`Queue::workers`](crate::Queue::workers)).
    pub workers: Option<&'a dyn Workers>,
    /// The locks held (`without_overlapping`), listed and released by force, for operators.
    pub locks: Option<&'a dyn Locks>,
}

impl<'a> Capabilities<'a> {
    /// A driver named `driver` that is durable and can do nothing optional yet.
    pub fn new(driver: &'static str) -> Self {
        Capabilities {
            driver,
            durable: true,
            atomic_push: false,
            reserve_by_name: false,
            claims: false,
            replace: false,
            rewrite: false,
            park: false,
            failed: None,
            inspect: None,
            groups: None,
            track: None,
            control: None,
            wake: None,
            workers: None,
            locks: None,
        }
    }

    /// A driver that can do everything: every capability trait implemented by `store`,
    /// reservations by name and unique claims (the SQL, file and memory stores).
    pub fn complete<S>(driver: &'static str, store: &'a S) -> Self
    where
        S: FailedStore + Inspect + Groups + Control + Wake,
    {
        Capabilities::new(driver)
            .reserve_by_name(true)
            .claims(true)
            .replace(true)
            .failed(store)
            .inspect(store)
            .groups(store)
            .control(store)
            .wake(store)
    }

    /// Sets whether jobs survive a restart of the backend.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Sets whether a push of many jobs stores all of them or none.
    pub fn atomic_push(mut self, yes: bool) -> Self {
        self.atomic_push = yes;
        self
    }

    /// Sets whether reservations by job name work.
    pub fn reserve_by_name(mut self, yes: bool) -> Self {
        self.reserve_by_name = yes;
        self
    }

    /// Sets whether unique claims and push effects work.
    pub fn claims(mut self, yes: bool) -> Self {
        self.claims = yes;
        self
    }

    /// Sets whether pushes replace a queued job holding their key when asked.
    pub fn replace(mut self, yes: bool) -> Self {
        self.replace = yes;
        self
    }

    /// Sets whether settles apply payload effects.
    pub fn rewrite(mut self, yes: bool) -> Self {
        self.rewrite = yes;
        self
    }

    /// Sets [`park`](Capabilities::park).
    pub fn park(mut self, yes: bool) -> Self {
        self.park = yes;
        self
    }

    /// The failed store.
    pub fn failed(mut self, failed: &'a dyn FailedStore) -> Self {
        self.failed = Some(failed);
        self
    }

    /// The inspection capability.
    pub fn inspect(mut self, inspect: &'a dyn Inspect) -> Self {
        self.inspect = Some(inspect);
        self
    }

    /// The group counters.
    pub fn groups(mut self, groups: &'a dyn Groups) -> Self {
        self.groups = Some(groups);
        self
    }

    /// Single jobs by id.
    pub fn track(mut self, track: &'a dyn Track) -> Self {
        self.track = Some(track);
        self
    }

    /// The control keys.
    pub fn control(mut self, control: &'a dyn Control) -> Self {
        self.control = Some(control);
        self
    }

    /// The wake-ups.
    pub fn wake(mut self, wake: &'a dyn Wake) -> Self {
        self.wake = Some(wake);
        self
    }

    /// The worker registry.
    pub fn workers(mut self, workers: &'a dyn Workers) -> Self {
        self.workers = Some(workers);
        self
    }

    /// The locks for operators.
    pub fn locks(mut self, locks: &'a dyn Locks) -> Self {
        self.locks = Some(locks);
        self
    }
}

impl fmt::Debug for Capabilities<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capabilities")
            .field("driver", &self.driver)
            .field("durable", &self.durable)
            .field("atomic_push", &self.atomic_push)
            .field("reserve_by_name", &self.reserve_by_name)
            .field("claims", &self.claims)
            .field("replace", &self.replace)
            .field("rewrite", &self.rewrite)
            .field("failed", &self.failed.is_some())
            .field("inspect", &self.inspect.is_some())
            .field("groups", &self.groups.is_some())
            .field("track", &self.track.is_some())
            .field("control", &self.control.is_some())
            .field("wake", &self.wake.is_some())
            .field("workers", &self.workers.is_some())
            .field("locks", &self.locks.is_some())
            .finish()
    }
}

/// The failed store: jobs that used up their tries or failed for good.
#[async_trait]
pub trait FailedStore: Send + Sync {
    /// A page of failed jobs, newest first.
    async fn list(&self, page: PageRequest) -> Result<Page<FailedJob>>;

    /// One failed job.
    async fn get(&self, id: &str) -> Result<Option<FailedJob>>;

    /// How many jobs the failed store holds.
    async fn count(&self) -> Result<u64>;

    /// Puts a failed job back on its queue with its attempts reset, claiming its unique key
    /// again if it had one. `None` if there is no failed job with that id; `Duplicate` (and
    /// the failed job stays) if another job holds its key.
    async fn retry(&self, id: &str) -> Result<Option<Pushed>>;

    /// Deletes one failed job (releasing a key it holds); returns whether it existed.
    async fn forget(&self, id: &str) -> Result<bool>;

    /// Deletes every failed job; returns how many. May be chunked (not one step).
    async fn flush(&self) -> Result<u64>;

    /// Deletes failed jobs that failed before `before`; returns how many. May be chunked.
    async fn prune(&self, before: SystemTime) -> Result<u64>;
}

/// The operator's view of the queues.
#[async_trait]
pub trait Inspect: Send + Sync {
    /// How many jobs `queue` holds, by state. The driver's docs say how exact it is.
    async fn size(&self, queue: &str) -> Result<QueueSize>;

    /// The jobs of `queue` by state, each count exact below `cap` and `cap` meaning "`cap`
    /// or more": what a dashboard shows ("10,000+") at a cost bounded by `cap` rather than
    /// by the queue's length. The default counts exactly with [`size`](Self::size) and caps
    /// the result. A store whose exact count walks every job (SQL) walks at most `cap` rows
    /// of an index for the waiting and for the delayed ones, and leaves the reserved ones
    /// out (`None`: no index finds them without a cost on every reservation); a dashboard
    /// then counts what the [worker registry](super::Workers) says runs.
    async fn backlog_at_most(&self, queue: &str, cap: u64) -> Result<Backlog> {
        let size = self.size(queue).await?;
        Ok(Backlog {
            waiting: size.waiting.min(cap),
            delayed: size.delayed.min(cap),
            reserved: Some(size.reserved.min(cap)),
        })
    }

    /// The queues that hold jobs now, sorted by name.
    async fn queues(&self) -> Result<Vec<String>>;

    /// Deletes every job of `queue` that is not reserved (releasing their keys); returns how
    /// many. May be chunked (not one step).
    async fn clear(&self, queue: &str) -> Result<u64>;

    /// The time since which the longest-waiting available job of `queue` has been available
    /// (for `runall health`): `None` when nothing is waiting.
    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>>;

    /// A page of the jobs of `queue` in `state`, first due first.
    async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        page: PageRequest,
    ) -> Result<Page<JobSummary>>;
}

/// What batches, chains and workflows are built on: counters of named groups
/// ([`Effect::Count`](super::Effect::Count)), waiting jobs released by their dependencies
/// ([`Effect::Hold`](super::Effect::Hold), [`Deps`](super::Effect::Deps),
/// [`Skip`](super::Effect::Skip)), and a step that applies effects with no lease.
#[async_trait]
pub trait Groups: Send + Sync {
    /// A group's counters, sorted by name; empty for a group that has none.
    async fn counters(&self, group: &str) -> Result<Vec<(String, i64)>>;

    /// The value stored under `name` in `group` by [`Effect::Value`](super::Effect::Value),
    /// or `None`.
    async fn value(&self, group: &str, name: &str) -> Result<Option<Vec<u8>>>;

    /// Deletes a group's counters and values; returns whether it had any counter.
    async fn remove(&self, group: &str) -> Result<bool>;

    /// The names of the groups that have counters and start with `prefix`, sorted by their
    /// bytes, a page at a time (the cursor is the last name of the page). For operators
    /// (`runall batch list`, `prune`): the drivers' docs say what it costs.
    async fn list(&self, prefix: &str, page: PageRequest) -> Result<Page<String>>;

    /// Applies `effects` in one atomic step, as a settle applies a job's effects but with
    /// no job and no lease: dispatching a chain (its first link pushed, the others held),
    /// adding members to a batch. All of them or none.
    async fn apply(&self, effects: Vec<super::Effect>) -> Result<()>;

    /// Applies `effects` as [`apply`](Self::apply) does, but only if `guard`'s counter holds
    /// `guard.expect` (a missing counter holds 0), setting it to `guard.set` in the same
    /// atomic step. Otherwise changes nothing and returns `false`. Of many processes racing
    /// with one expected value, exactly one applies: a schedule claims each tick this way,
    /// its job pushed by the step that advances the schedule.
    async fn apply_if(&self, guard: super::Guard, effects: Vec<super::Effect>) -> Result<bool>;

    /// The dependencies left of the job waiting under `key`, or `None` when no job waits
    /// under it (it was released or skipped, or never held).
    async fn waiting(&self, key: &str) -> Result<Option<i64>>;
}

/// Single jobs by id: where a job is, cancelling it, and small records kept for it (its
/// status once finished, its progress while it runs, the mark asking to cancel it).
///
/// What a driver with this capability promises, checked by the conformance suite:
///
/// - [`job`](Self::job) finds a job in a queue by its id: waiting, delayed or reserved.
/// - [`cancel`](Self::cancel) removes a job that is not reserved under a live lease (releasing
///   its claim) with the effects it is given, or marks a reserved one without them, in one
///   step: a job is never both run by a new reservation and reported removed, and its
///   effects apply exactly when it is removed.
/// - [`Storage::extend`](super::Storage::extend) reports a lease whose job carries a
///   [`RecordKey::CANCEL`](super::RecordKey::CANCEL) record as
///   [`LeaseStatus::Cancelled`](super::LeaseStatus::Cancelled), renewed, so the worker
///   running it learns of a cancel on its next heartbeat, whichever worker it is.
/// - Settles apply [`Effect::Record`](super::Effect::Record) in the job's atomic step (not
///   at all when the lease is stale).
/// - A record is never read after its time to live; [`prune_records`](Self::prune_records)
///   frees the space of expired ones where the backend does not expire keys itself.
///
/// A driver that cannot keep one of these in one step says so in its crate docs: memcached
/// writes a settle's records in the request right after the job's own step, and checks a
/// fence before a write; the file driver fences a write only against the steps that take its
/// lock.
#[async_trait]
pub trait Track: Send + Sync {
    /// The job with this id while it is in a queue (waiting, delayed or reserved); `None`
    /// otherwise, an id this store could never have made included.
    async fn job(&self, id: &JobId) -> Result<Option<JobSummary>>;

    /// Cancels the job with this id: removes it if it is waiting or delayed (or reserved
    /// under a lease that ran out), releasing its unique claim, and applies `effects` in the
    /// same atomic step (what its batch, chain or workflow does when it ends without
    /// running: counted cancelled, the nodes after it skipped); otherwise, if it is
    /// reserved, writes its [`RecordKey::CANCEL`](super::RecordKey::CANCEL) record, kept
    /// for `mark_for`, and applies none of `effects`. One step either way: a crash never
    /// leaves a job removed with its effects lost, nor effects applied to a job that then
    /// runs. Effects that cannot be applied refuse the whole step (the job stays). A driver
    /// without [`Groups`] refuses any effect with [`Error::NotSupported`](crate::Error).
    async fn cancel(
        &self,
        id: &JobId,
        mark_for: Duration,
        effects: Vec<Effect>,
    ) -> Result<Cancellation>;

    /// Reads records, one per key in order: `None` for one missing or past its time to live.
    async fn records(&self, keys: &[RecordKey]) -> Result<Vec<Option<Vec<u8>>>>;

    /// Writes a record kept for `ttl`, replacing one of the same key. With `fence` (a lease
    /// of the same job), only while that lease is the job's current one, checked in the same
    /// step: returns whether it was written.
    async fn put_record(
        &self,
        key: &RecordKey,
        value: &[u8],
        ttl: Duration,
        fence: Option<&Lease>,
    ) -> Result<bool>;

    /// Deletes records past their time to live, in chunks; returns how many. A backend that
    /// expires keys itself (Redis, memcached) returns 0.
    async fn prune_records(&self) -> Result<u64>;
}

/// Store-wide control keys.
#[async_trait]
pub trait Control: Send + Sync {
    /// The restart generation: it changes every time a restart is requested. Workers read
    /// it at start and stop gracefully when it changes (`runall restart`).
    async fn restart_generation(&self) -> Result<u64>;

    /// Asks every worker of the store to finish its jobs and exit.
    async fn request_restart(&self) -> Result<()>;
}

/// A lock held ([`Storage::lock`](super::Storage::lock), the `without_overlapping` lock of
/// a job), as [`Locks::locks`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    /// The lock's key.
    pub key: String,
    /// Who holds it (the engine writes the holding job's lease token).
    pub owner: String,
    /// When it expires unless its holder renews it (by the backend's clock where it has one).
    pub expires_at: SystemTime,
}

/// The locks held, for operators: listed, and released by force (a lock whose job is
/// stuck in a way its expiry does not cover, or an operator's decision).
///
/// What a driver with this capability promises, checked by the conformance suite:
///
/// - [`locks`](Self::locks) lists every lock held and not expired, sorted by key, a page at a
///   time (the cursor is the last key of a page), with its owner and expiry;
/// - [`release`](Self::release) deletes the lock `key` whoever holds it, in one step, and
///   says whether one was held (not expired): its holder's
///   [`unlock`](super::Storage::unlock) then returns false, and another owner can take it.
///
/// A driver that cannot list its keys (memcached) refuses [`locks`](Self::locks) with
/// `NotSupported` and still releases a lock by its key.
#[async_trait]
pub trait Locks: Send + Sync {
    /// A page of the locks held, by key.
    async fn locks(&self, page: PageRequest) -> Result<Page<HeldLock>>;

    /// Releases the lock `key` whoever holds it: whether one was held.
    async fn release(&self, key: &str) -> Result<bool>;
}

/// Wake-ups for idle workers.
///
/// A driver whose backend notifies (PostgreSQL LISTEN, Redis pub/sub, a watch on SQLite's
/// file or on the file driver's directories) wakes a waiting worker for a push made by any
/// process. One whose backend cannot (MySQL, memcached) polls inside the wait with a look
/// that costs little (an indexed query, a pipelined read of each queue's ends): 2 ms after
/// the wait began, then twice as long each time up to the driver's `idle_poll` (20 ms by
/// default), so a worker sees a push by another process within that while jobs flow or not.
/// Each driver's docs say which it does.
#[async_trait]
pub trait Wake: Send + Sync {
    /// Waits until a job may be available on one of `queues`, at most `timeout`: returns
    /// early when a job is pushed or becomes due (see the trait docs for which pushes).
    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()>;
}

/// The worker registry: the worker processes that announce themselves, for operators
/// (`runall workers`, a dashboard's list of workers).
///
/// Each live worker writes its entry when it starts and again every few seconds
/// ([`beat`](Self::beat)), each time with a time to live, and removes it when it stops
/// cleanly ([`leave`](Self::leave)); a worker that dies stops beating and its entry expires.
/// The entry is opaque bytes to the driver (the engine writes a
/// [`WorkerInfo`](crate::worker::WorkerInfo) as JSON).
///
/// What a driver with this capability promises, checked by the conformance suite:
///
/// - [`workers`](Self::workers) lists every entry written and not expired nor left, sorted by
///   id, with its bytes as written by the last beat;
/// - an entry is not listed once its time to live has passed (measured by the backend's clock
///   where it has one: the database's, Redis's `TIME`);
/// - expired entries do not pile up: the driver deletes them when it lists, or in a prune.
///
/// The drivers' docs say how each keeps it. memcached, which cannot list its keys, keeps an
/// index of the ids changed by compare-and-swap, and says in its crate docs when a live
/// worker may be missing from a listing (until its next beat).
#[async_trait]
pub trait Workers: Send + Sync {
    /// Writes or replaces the entry `id` (opaque bytes), kept for `ttl` from now.
    async fn beat(&self, id: &str, entry: &[u8], ttl: Duration) -> Result<()>;

    /// The entries not expired, sorted by id, each with its bytes.
    async fn workers(&self) -> Result<Vec<(String, Vec<u8>)>>;

    /// Removes the entry `id` (a worker that stops cleanly); returns whether it existed (and
    /// had not expired).
    async fn leave(&self, id: &str) -> Result<bool>;
}

/// Conveniences over [`Storage`], for every store (`dyn Storage` included).
#[async_trait]
pub trait StorageExt: Storage {
    /// The driver's name.
    fn driver(&self) -> &'static str {
        self.capabilities().driver
    }

    /// The failed store, or `NotSupported`.
    fn failed_store(&self) -> Result<&dyn FailedStore> {
        let caps = self.capabilities();
        caps.failed.ok_or(Error::NotSupported {
            driver: caps.driver,
            operation: "the failed store",
        })
    }

    /// The inspection capability, or `NotSupported`.
    fn inspect(&self) -> Result<&dyn Inspect> {
        let caps = self.capabilities();
        caps.inspect.ok_or(Error::NotSupported {
            driver: caps.driver,
            operation: "inspection (sizes, queues, listing)",
        })
    }

    /// The group counters, or `NotSupported`.
    fn groups(&self) -> Result<&dyn Groups> {
        let caps = self.capabilities();
        caps.groups.ok_or(Error::NotSupported {
            driver: caps.driver,
            operation: "group counters and waiting jobs (batches, chains, workflows)",
        })
    }

    /// Single jobs by id (status, cancellation, records), or `NotSupported`.
    fn track(&self) -> Result<&dyn Track> {
        let caps = self.capabilities();
        caps.track.ok_or(Error::NotSupported {
            driver: caps.driver,
            operation: "jobs by id (status, progress, outputs, cancellation)",
        })
    }

    /// The control keys, or `NotSupported`.
    fn control(&self) -> Result<&dyn Control> {
        let caps = self.capabilities();
        caps.control.ok_or(Error::NotSupported {
            driver: caps.driver,
            operation: "the restart signal",
        })
    }

    /// The worker registry, or `NotSupported`.
    fn workers(&self) -> Result<&dyn Workers> {
        let caps = self.capabilities();
        caps.workers.ok_or(Error::NotSupported {
            driver: caps.driver,
            operation: "the worker registry",
        })
    }

    /// The locks for operators, or `NotSupported`.
    fn locks(&self) -> Result<&dyn Locks> {
        let caps = self.capabilities();
        caps.locks.ok_or(Error::NotSupported {
            driver: caps.driver,
            operation: "listing and releasing locks",
        })
    }

    /// Pushes one job.
    async fn push_one(&self, job: NewJob) -> Result<Pushed> {
        let driver = self.driver();
        self.push(vec![job])
            .await?
            .pop()
            .ok_or_else(|| Error::backend(driver, "push returned no result"))
    }

    /// Settles one job with no fetch, as `Err(LeaseLost)` when the lease is stale.
    async fn settle_one(&self, settle: Settle) -> Result<()> {
        let job_id = settle.lease.job_id.0.clone();
        let reply = self.settle(vec![settle], None).await?;
        match reply.settled.first() {
            Some(Settled::Applied) => Ok(()),
            Some(Settled::Stale) => Err(Error::LeaseLost { job_id }),
            None => Err(Error::backend(self.driver(), "settle returned no result")),
        }
    }

    /// Acknowledges finished jobs; for each lease, whether it was still current.
    async fn acknowledge(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        let settles = leases.iter().cloned().map(Settle::ack).collect();
        let reply = self.settle(settles, None).await?;
        Ok(reply
            .settled
            .iter()
            .map(|s| *s == Settled::Applied)
            .collect())
    }

    /// Moves a reserved job to the failed store.
    async fn fail(&self, lease: &Lease, reason: &str) -> Result<()> {
        self.settle_one(Settle::fail(lease.clone(), reason)).await
    }

    /// Retries a reserved job after `delay`, the attempt counted.
    async fn retry(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.settle_one(Settle::retry(lease.clone(), delay)).await
    }

    /// Puts a reserved job back after `delay` without counting the attempt.
    async fn release(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.settle_one(Settle::release(lease.clone(), delay)).await
    }

    /// Renews one lease, as `Err(LeaseLost)` when it is stale (a lease renewed but
    /// [cancelled](LeaseStatus::Cancelled) is `Ok`).
    async fn extend_one(&self, lease: &Lease, duration: Duration) -> Result<()> {
        let status = self.extend(std::slice::from_ref(lease), duration).await?;
        match status.first() {
            Some(LeaseStatus::Held | LeaseStatus::Cancelled) => Ok(()),
            Some(_) => Err(Error::LeaseLost {
                job_id: lease.job_id.0.clone(),
            }),
            None => Err(Error::backend(self.driver(), "extend returned no result")),
        }
    }
}

impl<S: Storage + ?Sized> StorageExt for S {}
