//! Job events: what happened to jobs in this process (dispatched through its queue, run by
//! its workers), for an application to react to: Laravel's `Queue::failing` and job events,
//! Sidekiq's death handlers, BullMQ's `QueueEvents`.
//!
//! Events never slow a worker down: each is sent on a bounded broadcast channel, and only
//! when someone listens. A listener that falls behind by more than [`EVENT_CAPACITY`] events loses
//! the oldest ones (it is told how many, and the loss is logged); the worker never waits for
//! it. Events are of this process only: subscribe in the process whose workers run the jobs
//! (or that dispatches them, for [`JobEventKind::Dispatched`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! use queue_core::{JobEventKind, Queue, WorkerOptions};
//!
//! let queue = Queue::connect("memory://").await?;
//! queue.on(JobEventKind::Failed, |event| {
//!     eprintln!("job {} ({}) failed: {:?}", event.id, event.name, event.error);
//! })?;
//! let mut events = queue.events();
//! queue.listen("ping", |_: serde_json::Value, _ctx| async { Ok(()) });
//! queue.dispatch_named("ping", serde_json::json!({})).await?;
//! queue.worker(WorkerOptions::default().stop_when_empty()).run().await?;
//! let kinds: Vec<_> = [events.next().await, events.next().await, events.next().await]
//!     .into_iter()
//!     .flatten()
//!     .map(|e| e.kind)
//!     .collect();
//! assert_eq!(kinds, [JobEventKind::Dispatched, JobEventKind::Started, JobEventKind::Succeeded]);
//! # Ok(()) }
//! ```

use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;
use tracing::warn;

use crate::error::{Error, Result};
use crate::storage::JobId;

/// How many events a listener may fall behind before it loses the oldest.
pub const EVENT_CAPACITY: usize = 4096;

/// What happened to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobEventKind {
    /// Stored by a dispatch through this process's queue (a duplicate of a unique job is not).
    Dispatched,
    /// Its body started (an attempt).
    Started,
    /// It succeeded and left its queue.
    Succeeded,
    /// An attempt failed (or it released itself) and it waits for its next one.
    Retrying,
    /// It went back without counting an attempt: its lock or limit was held, the worker
    /// stopped, or no worker knows its name yet.
    Released,
    /// It failed for good and moved to the failed store.
    Failed,
    /// Its body ended it as one that can never succeed ([`JobError::discard`](crate::JobError::discard)).
    Discarded,
    /// It was cancelled ([`Queue::cancel`](crate::Queue::cancel)) while it ran or waited
    /// for its retry.
    Cancelled,
    /// A workflow node settled without running: an edge into it was not met.
    Skipped,
}

/// One event: what happened to which job.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobEvent {
    /// What happened.
    pub kind: JobEventKind,
    /// The job's id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its name.
    pub name: String,
    /// The attempt it is about (0 for a dispatch).
    pub attempt: u32,
    /// Why it failed, was retried or discarded.
    pub error: Option<String>,
    /// How long the attempt ran (succeeded, retried after an error).
    pub took: Option<Duration>,
    /// When it happened.
    pub at: SystemTime,
}

impl JobEvent {
    pub(crate) fn new(
        kind: JobEventKind,
        id: JobId,
        queue: &str,
        name: &str,
        attempt: u32,
    ) -> Self {
        JobEvent {
            kind,
            id,
            queue: queue.to_owned(),
            name: name.to_owned(),
            attempt,
            error: None,
            took: None,
            at: SystemTime::now(),
        }
    }

    pub(crate) fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    pub(crate) fn took(mut self, took: Option<Duration>) -> Self {
        self.took = took;
        self
    }
}

/// The events of one queue (shared by its dispatcher and its workers).
#[derive(Debug)]
pub(crate) struct Events {
    tx: broadcast::Sender<JobEvent>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(EVENT_CAPACITY).0,
        }
    }
}

impl Events {
    /// Sends the event `make` builds, only when someone listens: without listeners this is
    /// one atomic read.
    pub(crate) fn emit(&self, make: impl FnOnce() -> JobEvent) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(make());
        }
    }

    /// Whether anyone listens now.
    pub(crate) fn listening(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        EventStream {
            rx: self.tx.subscribe(),
            lost: 0,
        }
    }
}

/// The events of a queue from the moment it was made ([`Queue::events`](crate::Queue::events)).
#[derive(Debug)]
pub struct EventStream {
    rx: broadcast::Receiver<JobEvent>,
    lost: u64,
}

impl EventStream {
    /// The next event, waiting for it; `None` once the queue and its workers are gone. A
    /// listener that fell more than [`EVENT_CAPACITY`] events behind skips the oldest (see
    /// [`lost`](Self::lost)).
    pub async fn next(&mut self) -> Option<JobEvent> {
        loop {
            match self.rx.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lost += n;
                    warn!(
                        lost = n,
                        "a job event listener fell behind: it lost the oldest events"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// How many events this listener lost by falling behind.
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

/// Runs `handler` for every event of `kind`, in a task of its own (so it never slows a
/// worker), until the queue and its workers are gone. Needs a Tokio runtime.
pub(crate) fn on(
    events: &Events,
    kind: JobEventKind,
    handler: impl Fn(&JobEvent) + Send + Sync + 'static,
) -> Result<()> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::Config("Queue::on runs its handler in a task: call it inside a Tokio runtime".into())
    })?;
    let mut stream = events.subscribe();
    runtime.spawn(async move {
        while let Some(event) = stream.next().await {
            if event.kind == kind {
                handler(&event);
            }
        }
    });
    Ok(())
}
