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
mod chain;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod config;
mod dispatch;
mod dispatcher;
pub mod envelope;
mod error;
mod job;
mod queue;
mod redact;
pub mod registry;
pub mod storage;
pub mod worker;
mod workflow;

pub use batch::{Batch, BatchId, BatchStatus, OpenBatch};
pub use chain::{Chain, ChainId, ChainStatus};
pub use dispatch::PendingDispatch;
pub use dispatcher::{Dispatcher, QueueSettings};
pub use error::{BoxError, Error, Message, Result};
pub use job::{parse_duration, Backoff, Handle, Job, JobContext, JobError, Retry};
pub use queue::Queue;
pub use redact::redact_url;
pub use registry::Registry;
pub use storage::{
    Availability, Capabilities, ConnectOptions, DriverRegistration, Effect, FailedJob, JobId,
    Lease, LeaseStatus, MemoryStorage, NewJob, Outcome, Pushed, QueueSize, ReserveRequest,
    Reserved, SchemaRegistration, Settle, SettleReply, Settled, Storage, StorageExt, Unique, Until,
    WaitingJob,
};
pub use worker::{StopHandle, StopReason, Worker, WorkerOptions, WorkerSummary};
pub use workflow::{Node, Workflow, WorkflowId, WorkflowStatus};

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
/// | `crate` | `"::my_facade::queue_core"` | `::queue_core` |
///
/// Mistakes are compile errors pointing at the offending token.
pub use queue_derive::Job;

/// Not public API: used by code that `#[derive(Job)]` and the drivers generate.
#[doc(hidden)]
pub mod __private {
    pub use crate::registry::JobRegistration;
    pub use inventory;
    pub use std::borrow::Cow;
    pub use std::time::Duration;
}
