//! [`Batch`]: many jobs dispatched as one, with `then`, `catch` and `finally` jobs and exact
//! progress (Laravel's `Bus::batch`).

use std::fmt;

use crate::dispatch::PendingDispatch;
use crate::dispatcher::{self, Dispatcher};
use crate::envelope::{After, SkipIf, Step};
use crate::error::{Error, Result};
use crate::storage::{new_token, Effect, NewJob, StorageExt, Unique, WaitingJob};

/// A batch: jobs of any types dispatched together, counted as one, with callbacks.
///
/// - `then` runs once every member succeeded;
/// - `catch` runs once, at the first member that fails for good;
/// - `finally` runs once every member has ended, whatever happened.
///
/// By default a batch **fails fast**: once a member fails for good, the members that have
/// not started yet are cancelled (they never run, and are counted cancelled).
/// [`allow_failures`](Batch::allow_failures) lets every member run. [`Batch::cancel`]
/// cancels the members not started yet.
///
/// Everything is stored at dispatch in one atomic step: the members in their queues, the
/// callbacks as waiting jobs. Each member's end is counted, and moves the callbacks on, in
/// the step that settles it, so the counts are of jobs, never of attempts, and each callback
/// is released exactly once whatever crashes when. Callbacks are ordinary jobs: retried,
/// visible, in the failed store if they fail.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
/// use queue_core::{Batch, Queue, WorkerOptions};
///
/// let queue = Queue::connect("memory://").await?;
/// queue.listen("sync-payment", |_: serde_json::Value, _ctx| async { Ok(()) });
/// queue.listen("sync-done", |_: serde_json::Value, _ctx| async { Ok(()) });
/// let id = Batch::new()
///     .add_many((1..=3).map(|student| {
///         queue.dispatch_named("sync-payment", serde_json::json!({ "student": student }))
///     }))
///     .then(queue.dispatch_named("sync-done", serde_json::json!({})))
///     .via(&queue)
///     .dispatch()
///     .await?;
/// assert_eq!(Batch::status(&queue, &id).await?.pending, 3);
/// queue.worker(WorkerOptions::default().stop_when_empty()).run().await?;
/// let status = Batch::status(&queue, &id).await?;
/// assert_eq!((status.succeeded, status.percent(), status.is_finished()), (3, 100.0, true));
/// # Ok(()) }
/// ```
///
/// Batches need the store's [groups](crate::storage::Groups) capability, as
/// [`Chain`](crate::Chain)s do; Redis Cluster and memcached refuse them.
#[derive(Debug, Default)]
#[must_use = "a batch does nothing until it is dispatched"]
pub struct Batch {
    members: Vec<PendingDispatch>,
    then: Option<PendingDispatch>,
    catch: Option<PendingDispatch>,
    finally: Option<PendingDispatch>,
    allow_failures: bool,
    via: Option<Dispatcher>,
}

/// A dispatched batch's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchId(pub String);

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A batch's progress: counts of its members (never of attempts), from the store's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BatchStatus {
    /// Members in the batch.
    pub total: u64,
    /// Members that have not ended yet (waiting, running or waiting for a retry).
    pub pending: u64,
    /// Members that succeeded.
    pub succeeded: u64,
    /// Members that failed for good.
    pub failed: u64,
    /// Members cancelled before they started (fail fast, or [`Batch::cancel`]).
    pub cancelled: u64,
    /// Whether the batch was cancelled (by a failure, failing fast, or by hand).
    pub is_cancelled: bool,
}

impl BatchStatus {
    /// The share of members that have ended, from 0 to 100.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        (self.total - self.pending.min(self.total)) as f64 * 100.0 / self.total as f64
    }

    /// Whether every member has ended.
    pub fn is_finished(&self) -> bool {
        self.total > 0 && self.pending == 0
    }
}

/// The counter that, above zero, cancels the members not started yet.
const CANCEL: &str = "cancel";

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Adds a member: a typed job, or a dispatch with its options.
    #[allow(clippy::should_implement_trait)] // Laravel's name for it; a batch is no number
    pub fn add(mut self, job: impl Into<PendingDispatch>) -> Self {
        self.members.push(job.into());
        self
    }

    /// Adds members.
    pub fn add_many<J: Into<PendingDispatch>>(mut self, jobs: impl IntoIterator<Item = J>) -> Self {
        self.members.extend(jobs.into_iter().map(Into::into));
        self
    }

    /// The job that runs once every member succeeded.
    pub fn then(mut self, job: impl Into<PendingDispatch>) -> Self {
        self.then = Some(job.into());
        self
    }

    /// The job that runs once, at the first member that fails for good.
    pub fn catch(mut self, job: impl Into<PendingDispatch>) -> Self {
        self.catch = Some(job.into());
        self
    }

    /// The job that runs once every member has ended, whatever happened.
    pub fn finally(mut self, job: impl Into<PendingDispatch>) -> Self {
        self.finally = Some(job.into());
        self
    }

    /// Lets every member run when one fails, instead of cancelling those not started.
    pub fn allow_failures(mut self) -> Self {
        self.allow_failures = true;
        self
    }

    /// Dispatches through `queue` instead of the default one.
    pub fn via(mut self, queue: impl AsRef<Dispatcher>) -> Self {
        self.via = Some(queue.as_ref().clone());
        self
    }

    /// Stores the members and the callbacks in one atomic step; returns the batch's id.
    pub async fn dispatch(mut self) -> Result<BatchId> {
        let dispatcher = match self.via.take() {
            Some(dispatcher) => dispatcher,
            None => dispatcher::current()?,
        };
        if self.members.is_empty() {
            return Err(Error::Config("a batch needs at least one member".into()));
        }
        let storage = dispatcher.storage().clone();
        let groups = storage.groups().map_err(|_| Error::NotSupported {
            driver: storage.driver(),
            operation: "batches (they need group counters and waiting jobs)",
        })?;
        let id = new_token();
        let effects = self.effects(&id, &dispatcher)?;
        let members: Vec<NewJob> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Push(job) => Some(job.clone()),
                _ => None,
            })
            .collect();
        dispatcher.check_sizes(&members).await?;
        groups.apply(effects).await?;
        Ok(BatchId(id))
    }

    fn effects(self, id: &str, dispatcher: &Dispatcher) -> Result<Vec<Effect>> {
        let group = group(id);
        let key = |what: &str| format!("batch:{id}:{what}");
        let n = self.members.len() as i64;
        let count = |deltas: &[(&str, i64)]| Step::Count {
            group: group.clone(),
            deltas: deltas.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        };
        let deps = |what: &str, delta: i64| Step::Deps {
            key: key(what),
            delta,
        };
        let (has_then, has_catch, has_finally) = (
            self.then.is_some(),
            self.catch.is_some(),
            self.finally.is_some(),
        );
        // What every member's end does to the callbacks, by how it ended.
        let ended = |failed: bool| {
            let mut steps = Vec::new();
            if has_then {
                steps.push(deps("then", -1));
                if failed {
                    steps.push(count(&[("skip:then", 1)]));
                }
            }
            if has_catch {
                // The first failure releases it at once; without one it is released at the
                // end and skipped.
                steps.push(deps("catch", if failed { -n } else { -1 }));
            }
            if has_finally {
                steps.push(deps("finally", -1));
            }
            steps
        };
        let settings = dispatcher.settings();
        let mut effects = Vec::with_capacity(self.members.len() + 4);
        for (i, member) in self.members.into_iter().enumerate() {
            let mut after = After {
                succeeded: ended(false),
                failed: ended(true),
                skipped: ended(true),
                skip_if: Some(SkipIf {
                    group: group.clone(),
                    counter: CANCEL.to_owned(),
                    loose: true,
                }),
            };
            after
                .succeeded
                .push(count(&[("pending", -1), ("succeeded", 1)]));
            let mut failed = vec![("pending", -1), ("failed", 1)];
            if has_catch {
                failed.push(("skip:catch", -1));
            }
            if !self.allow_failures {
                failed.push((CANCEL, 1));
            }
            after.failed.push(count(&failed));
            after
                .skipped
                .push(count(&[("pending", -1), ("cancelled", 1)]));
            let job = member.encode_with(settings, Some(after))?;
            effects.push(Effect::Push(job.unique(Unique::new(key(&i.to_string())))));
        }
        let callbacks = [
            (self.then, "then", Some("skip:then")),
            (self.catch, "catch", Some("skip:catch")),
            (self.finally, "finally", None),
        ];
        for (job, what, gate) in callbacks {
            let Some(job) = job else { continue };
            let after = gate.map(|counter| After {
                skip_if: Some(SkipIf {
                    group: group.clone(),
                    counter: counter.to_owned(),
                    loose: false,
                }),
                ..After::default()
            });
            let job = job.encode_with(settings, after)?;
            effects.push(Effect::Hold(WaitingJob::new(
                key(what),
                u32::try_from(n).unwrap_or(u32::MAX),
                job,
            )));
        }
        let mut deltas = vec![("total".to_owned(), n), ("pending".to_owned(), n)];
        if has_catch {
            // Above zero until a member fails: a catch released with no failure is skipped.
            deltas.push(("skip:catch".to_owned(), 1));
        }
        effects.push(Effect::Count { group, deltas });
        Ok(effects)
    }

    /// Cancels the batch `id`: its members that have not started never run and are counted
    /// cancelled, `then` is skipped, `finally` still runs once every member has ended.
    /// Members already running finish.
    pub async fn cancel(queue: impl AsRef<Dispatcher>, id: &BatchId) -> Result<()> {
        queue
            .as_ref()
            .storage()
            .groups()?
            .apply(vec![Effect::Count {
                group: group(&id.0),
                deltas: vec![(CANCEL.to_owned(), 1)],
            }])
            .await
    }

    /// The progress of the batch `id`, through `queue` (a [`Queue`](crate::Queue) or a
    /// [`Dispatcher`]). One the store knows nothing of has every count at 0.
    pub async fn status(queue: impl AsRef<Dispatcher>, id: &BatchId) -> Result<BatchStatus> {
        let counters = queue
            .as_ref()
            .storage()
            .groups()?
            .counters(&group(&id.0))
            .await?;
        let get = |name: &str| {
            counters
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v)
        };
        let count = |name: &str| u64::try_from(get(name)).unwrap_or(0);
        Ok(BatchStatus {
            total: count("total"),
            pending: count("pending"),
            succeeded: count("succeeded"),
            failed: count("failed"),
            cancelled: count("cancelled"),
            is_cancelled: get(CANCEL) > 0,
        })
    }
}

fn group(id: &str) -> String {
    format!("batch:{id}")
}
