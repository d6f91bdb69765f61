//! The [`Storage`] contract every driver implements, and the types it speaks.
//!
//! # The state machine
//!
//! A job is **waiting** (or **delayed** until its time), **reserved** by one worker under a
//! lease, and then **settled**: acknowledged (it leaves the queue), retried or released (it
//! waits again), or failed (it moves to the failed store). A lease whose time runs out makes
//! the job available again, its attempt already counted.
//!
//! ```text
//!            push                reserve                     settle: Ack
//!   ──────────────▶ waiting ───────────────▶ reserved ───────────────────────▶ (gone)
//!                    ▲  ▲                      │   │
//!                    │  └──── Retry / Release ─┘   └── Fail ──▶ failed store
//!                    └──────── lease ran out ──────┘
//! ```
//!
//! # What is atomic
//!
//! **Each job's transition and its [effects](Effect), fenced by its lease token.** That is the
//! whole promise, and the conformance suite checks exactly that:
//!
//! - A [`settle`](Storage::settle) applies the job's new state, its follow-up jobs, its group
//!   counter deltas and values, its changes to [waiting jobs](WaitingJob) (held, their dependencies
//!   counted down and the job pushed when they reach zero, skipped) and the release of its
//!   unique claim in one atomic step, or nothing at all when the lease is stale
//!   ([`Settled::Stale`]): a replay changes nothing.
//! - [`Groups::apply`] applies effects with no lease (a chain's dispatch) in one atomic step.
//! - A [`push`](Storage::push) inserts each job together with its unique claim.
//! - A [`reserve`](Storage::reserve) takes each job under a fresh token.
//!
//! It is *not* promised that a call covering many jobs is one step as a whole: a multi-queue
//! push on Redis Cluster, a batch of settlements on memcached, and the operator's chunked
//! [`clear`](Inspect::clear) and [`prune`](FailedStore::prune) are a sequence of steps. A
//! driver's docs say where it does better.
//!
//! # The rules every driver keeps
//!
//! - **Payloads are opaque bytes.** The storage never parses them; a garbage payload comes
//!   back out of [`reserve`](Storage::reserve) byte for byte so the worker can fail it with a
//!   clear reason.
//! - **Strict priority.** [`reserve`](Storage::reserve) takes queues in the order given: a job
//!   available on the first queue is always taken before one on the second. Within a queue,
//!   jobs come out first-in first-out by the time they became available.
//! - **Delays.** A job is never reserved before its available time.
//! - **Leases.** A reservation lasts for the lease asked for; [`extend`](Storage::extend)
//!   renews it. A job whose lease ran out is available again.
//! - **Attempts** count at reservation (the first returns `attempts == 1`), so a job that kills
//!   its worker still uses up its tries. [`Outcome::Release`] gives the attempt back.
//! - **Fencing.** Each reservation carries a fresh token; a settle or extend naming a token
//!   that is no longer the job's current one changes nothing and reports the lease stale.
//! - **Claims.** A job pushed with a [`Unique`] key is [`Pushed::Duplicate`] while another job
//!   holds the key; the claim is released by the step that moves its holder past
//!   [`Unique::until`], on every path (reserve, settle, clear, the failed store).
//! - **Clocks.** Where the backend has a clock (SQL `now()`, Redis `TIME`), due times and lease
//!   deadlines are judged by it; otherwise by the worker's clock.
//! - **Locks** ([`lock`](Storage::lock)) are owned by a token, expire on their own, and are
//!   released only by their owner.
//!
//! # Capabilities
//!
//! What not every backend can do is a trait of its own, reached through
//! [`Storage::capabilities`]: the [failed store](FailedStore), [inspection](Inspect) (sizes,
//! queues, listing, clearing), [group counters](Groups), the [restart signal](Control),
//! [wake-ups](Wake) and the [worker registry](Workers). [`StorageExt`] turns a missing one into a clear
//! [`Error::NotSupported`](crate::Error::NotSupported) naming the driver and the feature.
//!
//! # For driver authors
//!
//! A driver implements [`Storage`] (and the capability traits it can honour) and, to be chosen
//! by URL at run time (`runall --connection redis://...`), submits a [`DriverRegistration`]
//! for its URL schemes. Run the `queue-tests` conformance suite against it: every case must
//! pass, or be reported not applicable by the capabilities it declares.

mod capability;
mod connect;
mod memory;
mod settle;
mod time;
mod types;

pub use capability::{
    Capabilities, Control, FailedStore, Groups, HeldLock, Inspect, Locks, StorageExt, Track, Wake,
    Workers,
};
pub use connect::{
    connect, schema_sql, ConnectFn, ConnectOptions, DriverRegistration, SchemaFn,
    SchemaRegistration,
};
pub use memory::MemoryStorage;
pub use settle::{
    check_effect_list, check_effects, check_record, Effect, Guard, LeaseStatus, Outcome, Settle,
    SettleReply, Settled, WaitingJob, MAX_VALUE,
};
pub use time::{duration_millis, from_unix_millis, new_token, unix_millis};

/// The value of the counter `name` among a group's `counters` (0 when missing, as a store
/// reads a counter it never wrote): for reading [`Groups::counters`].
pub fn counter(counters: &[(String, i64)], name: &str) -> i64 {
    counters
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| *v)
}
pub use types::{
    Availability, Backlog, Cancellation, FailedJob, JobId, JobState, JobSummary, Lease, NewJob,
    Page, PageRequest, Pushed, QueueSize, RecordKey, ReserveRequest, Reserved, Unique, Until,
};

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

/// The storage behind a queue: the job state machine, fenced by lease tokens.
///
/// Seven methods, object safe: the engine holds an `Arc<dyn Storage>`, so the driver can be
/// chosen by URL at run time. See the [module docs](self) for the state machine, what is
/// atomic, and the rules every driver keeps.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// The driver's name, what it guarantees, and the capability traits it implements.
    fn capabilities(&self) -> Capabilities<'_>;

    /// Pushes jobs, all or none where the backend allows it, each with its [`Unique`] claim
    /// if it has one. Returns one [`Pushed`] per job, in order: `Duplicate` (with the id of
    /// the job holding the key) for a job whose key was taken, which is not stored.
    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>>;

    /// Reserves up to `request.limit` available jobs, taking the queues in strict priority
    /// order, each under a fresh lease token with its attempt counted. Claims held until
    /// [`Until::Started`] are released in the same step.
    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>>;

    /// Renews reservations to `lease` from now (the worker's heartbeat), one status per lease
    /// in order. A stale lease is [`LeaseStatus::Lost`] and changes nothing.
    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>>;

    /// Settles reserved jobs, each with its [`Outcome`] and [`Effect`]s applied in one atomic
    /// step fenced by its token, and then, when `fetch` is given, reserves the next jobs as
    /// [`reserve`](Storage::reserve) would: in one round trip where the backend allows it.
    ///
    /// Returns one [`Settled`] per settlement, in order, and the jobs reserved. An `Err`
    /// means the call as a whole failed (the backend is unreachable, or an effect is not
    /// supported): nothing of a settlement reported `Err` may be assumed applied, and a
    /// replay is safe.
    async fn settle(
        &self,
        settles: Vec<Settle>,
        fetch: Option<&ReserveRequest>,
    ) -> Result<SettleReply>;

    /// Takes the lock `key` for `owner` for `ttl`. Returns false if another owner holds it.
    /// If `owner` already holds it, the expiry is renewed and it returns true.
    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool>;

    /// Releases the lock if `owner` holds it; returns whether it did.
    async fn unlock(&self, key: &str, owner: &str) -> Result<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn _object_safe(_: &dyn Storage) {}

    #[test]
    fn millis_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_unix_millis(unix_millis(t)), t);
        assert_eq!(unix_millis(from_unix_millis(-5)), -5);
    }
}
