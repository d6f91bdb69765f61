//! Background jobs for Rust: typed jobs that register themselves, priority queues, retries
//! with backoff, timeouts, leases with heartbeats, a failed-jobs store, and interchangeable
//! storage drivers (SQLite, PostgreSQL, MySQL/MariaDB, Redis, a directory, memcached).
//!
//! # A job
//!
//! Derive [`Job`] for the data, write its body with [`Handle`]:
//!
//! ```
//! use queue_core::{Handle, Job, JobContext, JobError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize, Job)]
//! #[job(name = "send-email", queue = "default", tries = 3, timeout = "30s", backoff = "exponential")]
//! struct SendEmail {
//!     to: String,
//!     subject: String,
//! }
//!
//! impl Handle for SendEmail {
//!     async fn handle(self, ctx: JobContext) -> Result<(), JobError> {
//!         if ctx.attempt() > 1 {
//!             println!("retrying {} (attempt {})", ctx.job_id(), ctx.attempt());
//!         }
//!         println!("sending {:?} to {}", self.subject, self.to);
//!         Ok(())
//!     }
//! }
//! ```
//!
//! The derive registers the type through `inventory`: any worker binary that links the crate
//! knows `send-email` with no registration call.
//!
//! # Dispatching
//!
//! ```
//! # use queue_core::{Handle, Job, JobContext, JobError};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Serialize, Deserialize, Job)]
//! # #[job(name = "send-email-2")]
//! # struct SendEmail { to: String, subject: String }
//! # impl Handle for SendEmail {
//! #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
//! # }
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! use std::time::{Duration, SystemTime};
//! use queue_core::Queue;
//!
//! // Once, at start-up: the process-wide default connection.
//! Queue::set_default(Queue::connect("memory://").await?);
//!
//! let email = || SendEmail { to: "a@b.c".into(), subject: "hi".into() };
//! SendEmail::dispatch(email()).on_queue("high").await?;
//! email().dispatch().delay(Duration::from_secs(60)).await?;
//! SendEmail::dispatch_at(SystemTime::now() + Duration::from_secs(3600), email()).await?;
//! email().dispatch().without_overlapping().await?;
//!
//! // An explicit connection, for applications with several.
//! let other = Queue::connect("memory://").await?;
//! email().dispatch().via(&other).await?;
//! # Ok(()) }
//! ```
//!
//! # Unique jobs
//!
//! At most one job per key is queued. The claim is stored with the job in one atomic step
//! and released by the transition its `until` names, so a crash never leaves it behind:
//!
//! ```
//! # use queue_core::{Handle, Job, JobContext, JobError};
//! # use serde::{Deserialize, Serialize};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! use queue_core::{Dispatched, Queue};
//!
//! #[derive(Serialize, Deserialize, Job)]
//! #[job(unique(by = ["customer_id"], until = "started"))]
//! struct RefreshCustomer {
//!     customer_id: u64,
//! }
//! # impl Handle for RefreshCustomer {
//! #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
//! # }
//!
//! let queue = Queue::connect("memory://").await?;
//! let first = RefreshCustomer { customer_id: 7 }.dispatch().via(&queue).await?;
//! let second = RefreshCustomer { customer_id: 7 }.dispatch().via(&queue).await?;
//! assert_eq!(second, Dispatched::Duplicate(first.into_id()));
//! # Ok(()) }
//! ```
//!
//! See [`UniqueJob`] for the settings and [`PendingDispatch::unique_key`] for a key per
//! dispatch.
//!
//! # Schedules
//!
//! A job pushed every interval or at the times of a cron expression, in code
//! ([`Queue::schedule`], [`Schedule`]) or stored at run time, one per entity
//! ([`Schedules::upsert`]). Every worker runs them; each tick is claimed by exactly one,
//! its job pushed in the same atomic step.
//!
//! # Rate and concurrency limits
//!
//! A job names a limit and a key (`#[job(limit = "stripe", limit_key = "account_id")]`, or
//! [`PendingDispatch::limit`]); workers define what it allows ([`WorkerOptions::limit`] with
//! [`Limit::rate`] or [`Limit::concurrent`]). A job over its limit waits without counting an
//! attempt; [`JobError::rate_limited`] pauses its key for every worker. See [`Limit`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use queue_core::{JobLimit, Limit, Queue, WorkerOptions};
//!
//! let queue = Queue::connect("memory://").await?;
//! let ran = Arc::new(AtomicU32::new(0));
//! let counter = ran.clone();
//! queue.listen("call-api", move |_: u32, ctx| {
//!     let counter = counter.clone();
//!     async move {
//!         assert_eq!(ctx.attempt(), 1, "waiting for the limit is not an attempt");
//!         counter.fetch_add(1, Ordering::SeqCst);
//!         Ok(())
//!     }
//! });
//! for n in 0..5 {
//!     let job = queue.dispatch_named("call-api", serde_json::json!(n));
//!     job.limit(JobLimit::new("api").key("acct-1")).await?;
//! }
//! let started = Instant::now();
//! let options = WorkerOptions::default()
//!     .limit("api", Limit::rate(20)) // one start every 50 ms
//!     .sleep(Duration::from_millis(10))
//!     .stop_when_empty();
//! queue.worker(options).run().await?;
//! assert_eq!(ran.load(Ordering::SeqCst), 5);
//! assert!(started.elapsed() >= Duration::from_millis(200));
//! # Ok(()) }
//! ```
//!
//! # Encrypted payloads
//!
//! `#[job(encrypted)]` stores a job's data sealed with the queue's [`KeyRing`] (from
//! `RUNALL_KEYS`), opened by the worker with the key the job names; see [`KeyRing`].
//!
//! # Running a worker
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! use queue_core::{Queue, WorkerOptions};
//!
//! let queue = Queue::connect("memory://").await?;
//! queue.listen("ping", |n: u32, _ctx| async move {
//!     println!("ping {n}");
//!     Ok(())
//! });
//! queue.dispatch_named("ping", serde_json::json!(7)).on_queue("high").await?;
//!
//! let summary = queue
//!     .worker(WorkerOptions::default().queues(["high", "default", "low"]).stop_when_empty())
//!     .run()
//!     .await?;
//! assert_eq!(summary.processed, 1);
//! # Ok(()) }
//! ```
//!
//! Most applications run workers through the CLI instead: the `runall` binary in `examples/`,
//! built on the `cli` module (cargo feature `cli`).
//!
//! # Chains
//!
//! Jobs that run one after another, each once the one before succeeded, with `catch` and
//! `finally` jobs: every link is stored at dispatch, and the step that acknowledges one link
//! releases the next (see [`Chain`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! use std::sync::{Arc, Mutex};
//! use queue_core::{Chain, Queue, WorkerOptions};
//!
//! let queue = Queue::connect("memory://").await?;
//! let ran = Arc::new(Mutex::new(Vec::new()));
//! let log = ran.clone();
//! queue.listen("step", move |name: String, _ctx| {
//!     let log = log.clone();
//!     async move {
//!         log.lock().unwrap().push(name);
//!         Ok(())
//!     }
//! });
//! let step = |name: &str| queue.dispatch_named("step", serde_json::json!(name));
//! let chain = Chain::new()
//!     .then(step("download"))
//!     .then(step("transcode"))
//!     .finally(step("clean-up"))
//!     .via(&queue)
//!     .dispatch()
//!     .await?;
//! queue.worker(WorkerOptions::default().stop_when_empty()).run().await?;
//! assert_eq!(*ran.lock().unwrap(), ["download", "transcode", "clean-up"]);
//! assert!(Chain::status(&queue, &chain).await?.is_finished());
//! # Ok(()) }
//! ```
//!
//! # Testing your jobs
//!
//! In an application's tests, [`Queue::fake`] records what is dispatched and runs nothing
//! (assert with [`Queue::assert_dispatched`] and its siblings, [`Queue::assert_chained`],
//! [`Queue::assert_batched`]), [`Queue::inline`] runs each job when it is dispatched, and
//! [`Queue::fake_except`] records all but some jobs, which go to a real queue:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! use queue_core::{Handle, Job, JobContext, JobError, Queue};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Job)]
//! struct ResizeImage { id: u64 }
//!
//! impl Handle for ResizeImage {
//!     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
//!         Ok(())
//!     }
//! }
//!
//! let queue = Queue::fake();
//! ResizeImage { id: 1 }.dispatch().on_queue("images").await?;
//! queue.assert_dispatched_on::<ResizeImage>("images");
//! queue.assert_dispatched_with(|job: &ResizeImage| job.id == 1);
//!
//! let inline = Queue::inline();
//! ResizeImage { id: 2 }.dispatch().await?; // ran before the dispatch returned
//! # let _ = inline;
//! # Ok(()) }
//! ```
//!
//! # Drivers
//!
//! Every driver implements the one [`Storage`] contract (see [`storage`] for its state machine
//! and what is atomic) and passes the same conformance suite. [`Queue::connect`] picks the
//! driver by URL scheme among those linked into the binary.
//!
//! # Cargo features
//!
//! - `cli`: the `runall` command line (module `cli`) and `job.toml` (module `config`). Off
//!   by default: an application that only dispatches does not compile clap, toml and
//!   tracing-subscriber. The `runall` binary turns it on.

mod batch;
mod batch_node;
mod chain;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod config;
mod crypto;
mod dispatch;
mod dispatcher;
pub mod envelope;
mod error;
mod events;
mod job;
mod limit;
mod middleware;
mod pause;
mod queue;
mod redact;
pub mod registry;
mod schedule;
mod secret;
pub mod stats;
mod status;
pub mod storage;
mod testing;
mod trace;
mod unique;
pub mod worker;
mod workflow;

/// The attribute for implementing [`Middleware`] (re-exported from `async-trait`).
pub use async_trait::async_trait;
pub use batch::{Batch, BatchId, BatchStatus, CurrentBatch, OpenBatch};
pub use chain::{Chain, ChainId, ChainStatus};
pub use crypto::KeyRing;
pub use dispatch::PendingDispatch;
pub use dispatcher::{Dispatcher, QueueSettings};
pub use error::{BoxError, Error, Message, Result};
pub use events::{EventStream, JobEvent, JobEventKind, EVENT_CAPACITY};
pub use job::{parse_duration, Backoff, Handle, Job, JobContext, JobError, Retry};
pub use limit::{JobLimit, Limit, RateLimit};
#[doc(hidden)]
pub use middleware::forget_circuit_readings as middleware_forget_circuit_readings;
pub use middleware::{FailOnError, Layers, Middleware, Next, Skip, ThrottlesExceptions};
pub use queue::Queue;
pub use redact::redact_url;
pub use registry::Registry;
pub use schedule::{CatchUp, Overlap, Schedule, ScheduleState, Schedules, Upserted};
pub use secret::Secret;
pub use status::{
    CancelOutcome, Group, GroupKind, JobState, JobStatus, Progress, KEEP_UNSUCCESSFUL, MAX_OUTPUT,
};
pub use storage::{
    Availability, Capabilities, ConnectOptions, DriverRegistration, Effect, FailedJob, JobId,
    Lease, LeaseStatus, MemoryStorage, NewJob, Outcome, Pushed, QueueSize, ReserveRequest,
    Reserved, SchemaRegistration, Settle, SettleReply, Settled, Storage, StorageExt, Unique, Until,
    WaitingJob,
};
pub use testing::{
    DispatchedBatch, DispatchedChain, DispatchedJob, DispatchedNode, DispatchedWorkflow,
};
pub use trace::{set_trace_propagator, TracePropagator};
pub use unique::{OnConflict, UniqueJob};
pub use worker::{
    PauseHandle, RunningJob, StopHandle, StopReason, Worker, WorkerInfo, WorkerOptions,
    WorkerSummary,
};
pub use workflow::{CurrentWorkflow, Node, Workflow, WorkflowId, WorkflowStatus};

/// What a dispatch did: [`Created`](Pushed::Created) the job, or found its unique key held
/// and stored nothing ([`Duplicate`](Pushed::Duplicate), with the id of the job holding it).
/// The same type as the storage's [`Pushed`].
pub type Dispatched = Pushed;

/// `#[derive(Job)]`: implements [`Job`] and registers the type.
///
/// Keys of `#[job(...)]`, all optional:
///
/// | key | example | default |
/// |---|---|---|
/// | `name` | `"send-email"` | the type's name in kebab-case |
/// | `queue` | `"high"` | `"default"` |
/// | `tries` | `3` | the worker's `--retries` |
/// | `timeout` | `"30s"`, `"500ms"`, `"2m"` | the worker's `--timeout` |
/// | `backoff` | `"exponential"`, `"exponential:2s"`, `"fixed:10s"`, `"1s,10s,60s"` | exponential from 1 s |
/// | `unique` | `unique`, `unique(by = ["customer_id"])`, `unique(key = "sync_key", until = "started")` | not unique |
/// | `crate` | `"::my_facade::queue_core"` | `::queue_core` |
///
/// `unique` makes [`Job::unique`] return a [`UniqueJob`]: at most one job per key is queued.
/// Bare, the job type itself is unique (the empty key). Its settings, all optional:
///
/// - `by = ["customer_id", "region"]`: the key is made of these fields (named fields of a
///   struct, checked at compile time), as `customer_id=42,region="eu"`.
/// - `key = "sync_key"`: the key is what the method `fn sync_key(&self) -> impl ToString`
///   returns (for enums, tuple structs, or keys `by` cannot express). Not with `by`.
/// - `until`: `"started"`, `"succeeded"` or `"terminal"` (the default): see [`Until`].
/// - `scope`: `"global"` (the default) or `"queue"`: one key per queue
///   ([`UniqueJob::per_queue`]).
/// - `within`: a duration, as for `timeout`: one job per key per period
///   ([`UniqueJob::within`]).
/// - `on_conflict`: `"skip"` (the default), `"error"` or `"replace"`: see [`OnConflict`].
///
/// Mistakes are compile errors pointing at the offending token.
pub use queue_derive::Job;

/// Not public API: used by code that `#[derive(Job)]` and the drivers generate.
#[doc(hidden)]
pub mod __private {
    pub use crate::registry::JobRegistration;
    pub use crate::unique::FieldsKey;
    pub use inventory;
    pub use std::borrow::Cow;
    pub use std::time::Duration;
}
