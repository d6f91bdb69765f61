//! The values the storage contract speaks: jobs in, reservations out, pages, sizes.

use std::fmt;
use std::time::{Duration, SystemTime};

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

/// Until when a job holds its unique key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Until {
    /// Until a worker reserves it: at most one such job *waiting* at a time.
    Started,
    /// Until it succeeds. A job that fails for good keeps its key while it is in the failed
    /// store (forgetting, flushing or pruning it releases the key; retrying it keeps it).
    Succeeded,
    /// Until it leaves the queue, whatever happened: succeeded, or moved to the failed store.
    #[default]
    Terminal,
}

impl Until {
    /// The name used in storage (`started`, `succeeded`, `terminal`).
    pub fn as_str(self) -> &'static str {
        match self {
            Until::Started => "started",
            Until::Succeeded => "succeeded",
            Until::Terminal => "terminal",
        }
    }

    /// The inverse of [`as_str`](Self::as_str).
    pub fn parse(text: &str) -> Option<Until> {
        match text {
            "started" => Some(Until::Started),
            "succeeded" => Some(Until::Succeeded),
            "terminal" => Some(Until::Terminal),
            _ => None,
        }
    }
}

/// A claim on a key that at most one job holds at a time: a unique job, or the deterministic
/// id of a follow-up job pushed by an [`Effect`](crate::storage::Effect).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unique {
    /// The key. Keys are one namespace per store, across queues.
    pub key: String,
    /// Until when the job holds it.
    pub until: Until,
    /// At push: when the key is held by a job that is queued (waiting or delayed: neither
    /// reserved nor in the failed store), that job takes this job's name, payload and
    /// availability, keeping its id, queue, attempts and claim, and the push reports
    /// [`Pushed::Replaced`]. Held by a reserved or failed job, the push is a
    /// [`Pushed::Duplicate`] as without it. Not stored with the claim. Drivers whose
    /// capabilities have `replace` support it, in [`Storage::push`](crate::Storage::push)
    /// only: effects that carry it are refused as a contract error.
    pub replace: bool,
}

impl Unique {
    /// A claim on `key` held until the job leaves the queue.
    pub fn new(key: impl Into<String>) -> Self {
        Unique {
            key: key.into(),
            until: Until::Terminal,
            replace: false,
        }
    }

    /// Sets until when the claim is held.
    pub fn until(mut self, until: Until) -> Self {
        self.until = until;
        self
    }

    /// Replaces a queued job holding the key instead of being a duplicate of it (see
    /// [`replace`](Self::replace)).
    pub fn replacing(mut self) -> Self {
        self.replace = true;
        self
    }
}

/// A job as it is handed to [`Storage::push`](crate::Storage::push).
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
    /// Its unique claim, if any.
    pub unique: Option<Unique>,
}

impl NewJob {
    /// A job available now, with no claim.
    pub fn new(queue: impl Into<String>, name: impl Into<String>, payload: Vec<u8>) -> Self {
        NewJob {
            queue: queue.into(),
            name: name.into(),
            payload,
            available: Availability::Now,
            unique: None,
        }
    }

    /// Sets when it becomes available.
    pub fn available(mut self, available: Availability) -> Self {
        self.available = available;
        self
    }

    /// Sets its unique claim.
    pub fn unique(mut self, unique: Unique) -> Self {
        self.unique = Some(unique);
        self
    }
}

/// What became of one job of a [`Storage::push`](crate::Storage::push).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Pushed {
    /// Stored under this id.
    Created(JobId),
    /// Not stored: its unique key is held by the job with this id (waiting, running, or for
    /// [`Until::Succeeded`], in the failed store under its queue id).
    Duplicate(JobId),
    /// Not stored as a new job: the queued job with this id, which held its unique key, took
    /// its name, payload and availability ([`Unique::replace`]).
    Replaced(JobId),
}

impl Pushed {
    /// The id of the job now holding the place: the new one or the existing one.
    pub fn id(&self) -> &JobId {
        match self {
            Pushed::Created(id) | Pushed::Duplicate(id) | Pushed::Replaced(id) => id,
        }
    }

    /// The id, consuming the value.
    pub fn into_id(self) -> JobId {
        match self {
            Pushed::Created(id) | Pushed::Duplicate(id) | Pushed::Replaced(id) => id,
        }
    }

    /// Whether a queued job was replaced by this one.
    pub fn is_replaced(&self) -> bool {
        matches!(self, Pushed::Replaced(_))
    }

    /// Whether the job was stored.
    pub fn is_created(&self) -> bool {
        matches!(self, Pushed::Created(_))
    }
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

/// A job taken by [`Storage::reserve`](crate::Storage::reserve).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The lease to settle or extend it with.
    pub lease: Lease,
    /// The job's name as pushed (may be empty when a row was written by hand).
    pub name: String,
    /// The payload exactly as pushed.
    pub payload: Vec<u8>,
    /// Attempts so far, this one included (1 on the first reservation).
    pub attempts: u32,
}

/// What [`Storage::reserve`](crate::Storage::reserve) is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRequest {
    /// Queues in strict priority order.
    pub queues: Vec<String>,
    /// How long the reservation lasts unless extended.
    pub lease: Duration,
    /// The most jobs to take in this call (at least 1).
    pub limit: usize,
    /// Take only jobs with this name (`runall run NAME`); `None` takes any. Only for drivers
    /// whose [`Capabilities::reserve_by_name`](crate::storage::Capabilities::reserve_by_name)
    /// is true: the others refuse it with `NotSupported`.
    pub name: Option<String>,
}

impl ReserveRequest {
    /// Up to `limit` jobs from `queues` in priority order, under a lease of `lease`.
    pub fn new<Q: Into<String>>(
        queues: impl IntoIterator<Item = Q>,
        lease: Duration,
        limit: usize,
    ) -> Self {
        ReserveRequest {
            queues: queues.into_iter().map(Into::into).collect(),
            lease,
            limit,
            name: None,
        }
    }
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
    /// Its unique claim as pushed: held by the failed job for [`Until::Succeeded`], claimed
    /// again when it is retried.
    pub unique: Option<Unique>,
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

/// A queue's counts at a bounded cost
/// ([`Inspect::backlog_at_most`](super::Inspect::backlog_at_most)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Available now.
    pub waiting: u64,
    /// Waiting for their time.
    pub delayed: u64,
    /// Reserved, where the store counts them at a bounded cost too; `None` where that
    /// would walk the queue's jobs (SQL), for the caller to ask the
    /// [worker registry](super::Workers) what runs.
    pub reserved: Option<u64>,
}

impl QueueSize {
    /// Everything the queue holds.
    pub fn total(&self) -> u64 {
        self.waiting + self.delayed + self.reserved
    }
}

/// The state of a job in a queue, for listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Available now.
    Waiting,
    /// Waiting for its time.
    Delayed,
    /// Held by a worker (or its lease ran out and nobody took it again yet).
    Reserved,
}

/// A record kept for one job ([`Track`](crate::storage::Track)): its status once finished,
/// its progress while it runs, the mark that asks for its cancellation. Drivers keep a
/// job's records next to the job (Redis keeps them in its queue's hash slot), so the key is
/// the job's id and a short kind, never a free-form string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    /// The job the record belongs to.
    pub job_id: JobId,
    /// What it holds: [`RecordKey::STATUS`], [`PROGRESS`](RecordKey::PROGRESS),
    /// [`CANCEL`](RecordKey::CANCEL), or another name of ASCII letters, digits, `-` and `_`
    /// (at most 32).
    pub kind: String,
}

impl RecordKey {
    /// The status of a finished job (written by the settle that ends it).
    pub const STATUS: &'static str = "status";
    /// The progress of a running job (written fenced by its lease).
    pub const PROGRESS: &'static str = "progress";
    /// The mark [`Track::cancel`](crate::storage::Track::cancel) leaves on a reserved job:
    /// while it exists, [`Storage::extend`](crate::Storage::extend) reports the job's lease
    /// [`Cancelled`](crate::storage::LeaseStatus::Cancelled).
    pub const CANCEL: &'static str = "cancel";

    /// The record `kind` of the job `job_id`.
    pub fn new(job_id: impl Into<JobId>, kind: impl Into<String>) -> Self {
        RecordKey {
            job_id: job_id.into(),
            kind: kind.into(),
        }
    }

    /// Whether the kind is one a driver must accept: 1 to 32 ASCII letters, digits, `-`, `_`.
    pub fn is_valid(&self) -> bool {
        !self.kind.is_empty()
            && self.kind.len() <= 32
            && self
                .kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !self.job_id.0.is_empty()
    }
}

/// What [`Track::cancel`](crate::storage::Track::cancel) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    /// The job was waiting or delayed (or reserved under a lease that had run out): it was
    /// removed and its unique claim released, in one step. It will never run.
    /// The job as it was, its payload byte for byte: what the caller needs to end what the
    /// job was part of (a batch, a chain, a workflow), as its settle would have.
    Removed(JobSummary),
    /// The job is reserved under a live lease: a [`RecordKey::CANCEL`] record was written
    /// in the same step, and the worker running it learns of it on its next heartbeat.
    Marked(JobSummary),
    /// No job with that id is in a queue (it finished, failed, never existed, or waits for
    /// its dependencies).
    NotFound,
}

/// One job as [`Inspect::jobs`](crate::storage::Inspect::jobs) lists it and
/// [`Track::job`](crate::storage::Track::job) finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSummary {
    /// Its id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its name.
    pub name: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Its state.
    pub state: JobState,
    /// When it is due: its available time, or the end of its lease while reserved.
    pub due_at: SystemTime,
    /// Its unique key, if it holds one.
    pub unique_key: Option<String>,
    /// Its payload (the encoded envelope), byte for byte as pushed: which keys sealed it
    /// (`runall keys status`), what it belongs to (a batch, a chain, a workflow).
    pub payload: Vec<u8>,
}

/// Which page of a listing: the items after a cursor, never an offset, so on a backend with
/// an index (SQL, Redis) a page costs the same on the millionth job as on the first. A driver
/// without one (the file driver reads a directory) says what a page costs in its docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The cursor of the previous page ([`Page::next`]); `None` for the first page.
    pub after: Option<String>,
    /// The most items to return.
    pub limit: usize,
}

impl PageRequest {
    /// The first page of up to `limit` items.
    pub fn first(limit: usize) -> Self {
        PageRequest { after: None, limit }
    }

    /// The page after `cursor`.
    pub fn after(cursor: impl Into<String>, limit: usize) -> Self {
        PageRequest {
            after: Some(cursor.into()),
            limit,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in the listing's order.
    pub items: Vec<T>,
    /// The cursor of the next page, `None` on the last page. Opaque: pass it back as
    /// [`PageRequest::after`].
    pub next: Option<String>,
}

impl Page<String> {
    /// The page `page` asks for of the `names` that start with `prefix`, sorted by their
    /// bytes, the cursor being the last name given: for a store that lists names it does not
    /// keep sorted ([`Groups::list`](super::Groups::list)).
    pub fn of_names(
        names: impl IntoIterator<Item = String>,
        prefix: &str,
        page: &PageRequest,
    ) -> Page<String> {
        let after = page.after.as_deref();
        let mut items: Vec<String> = names
            .into_iter()
            .filter(|name| name.starts_with(prefix) && after.is_none_or(|a| name.as_str() > a))
            .collect();
        items.sort_unstable();
        items.dedup();
        let limit = page.limit.max(1);
        let next = (items.len() > limit).then(|| items[limit - 1].clone());
        items.truncate(limit);
        Page { items, next }
    }
}
