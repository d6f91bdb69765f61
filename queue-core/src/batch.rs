//! [`Batch`]: many jobs dispatched as one, with `then`, `catch` and `finally` jobs and exact
//! progress (Laravel's `Bus::batch`).

use std::fmt;

use crate::dispatch::PendingDispatch;
use crate::dispatcher::{self, Dispatcher};
use crate::envelope::{After, SkipIf, Step};
use crate::error::{Error, Result};
use crate::storage::{new_token, Effect, Unique, WaitingJob};

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
    /// Whether it is sealed: no more members (a batch dispatched whole is sealed at once;
    /// one made with [`Batch::open`] by [`OpenBatch::seal`]).
    pub is_sealed: bool,
}

impl BatchStatus {
    /// The share of members that have ended, from 0 to 100.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            return if self.is_finished() { 100.0 } else { 0.0 };
        }
        (self.total - self.pending.min(self.total)) as f64 * 100.0 / self.total as f64
    }

    /// Whether it is sealed and every member has ended.
    pub fn is_finished(&self) -> bool {
        self.is_sealed && self.pending == 0
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

    /// Stores the members and the callbacks in one atomic step; returns the batch's id. A
    /// batch with no member finishes at once (`then` and `finally` run).
    pub async fn dispatch(mut self) -> Result<BatchId> {
        let members = std::mem::take(&mut self.members);
        let mut open = self.open_batch().await?;
        let mut effects = open.created.take().unwrap_or_default();
        effects.extend(open.adding(members)?);
        effects.extend(open.sealing());
        open.apply(effects).await?;
        Ok(open.id)
    }

    /// Creates the batch open: members are added with [`OpenBatch::add_many`] (in chunks,
    /// each its own atomic step, for batches too large for one), and it cannot finish, nor
    /// run `then` or `finally`, before [`OpenBatch::seal`]. Members added here are added
    /// with the batch.
    pub async fn open(mut self) -> Result<OpenBatch> {
        let members = std::mem::take(&mut self.members);
        let mut open = self.open_batch().await?;
        let mut effects = open.created.take().unwrap_or_default();
        effects.extend(open.adding(members)?);
        open.apply(effects).await?;
        Ok(open)
    }

    /// The handle, with the effects that create the batch still to apply.
    async fn open_batch(mut self) -> Result<OpenBatch> {
        let dispatcher = dispatcher::resolve(self.via.take())?;
        dispatcher.needs_groups("batches (they need group counters and waiting jobs)")?;
        let id = new_token();
        let plan = Plan {
            id: id.clone(),
            then: self.then.is_some(),
            catch: self.catch.is_some(),
            finally: self.finally.is_some(),
            allow_failures: self.allow_failures,
        };
        let settings = dispatcher.settings();
        let group = group(&id);
        let mut effects = Vec::new();
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
            // One dependency for the seal; each member added adds one.
            effects.push(Effect::Hold(WaitingJob::new(plan.key(what), 1, job)));
        }
        let mut deltas = vec![("created".to_owned(), 1)];
        if plan.catch {
            // Above zero until a member fails: a catch released with no failure is skipped.
            deltas.push(("skip:catch".to_owned(), 1));
        }
        effects.push(Effect::Count { group, deltas });
        Ok(OpenBatch {
            id: BatchId(id),
            plan,
            dispatcher,
            added: 0,
            created: Some(effects),
        })
    }

    /// Cancels the batch `id`: its members that have not started never run and are counted
    /// cancelled, `then` is skipped, `finally` still runs once every member has ended.
    /// Members already running finish.
    pub async fn cancel(queue: impl AsRef<Dispatcher>, id: &BatchId) -> Result<()> {
        queue
            .as_ref()
            .apply(vec![Effect::Count {
                group: group(&id.0),
                deltas: vec![(CANCEL.to_owned(), 1)],
            }])
            .await
    }

    /// The progress of the batch `id`, through `queue` (a [`Queue`](crate::Queue) or a
    /// [`Dispatcher`]). [`Error::NotFound`] for a batch the store knows nothing of.
    pub async fn status(queue: impl AsRef<Dispatcher>, id: &BatchId) -> Result<BatchStatus> {
        let counters = queue.as_ref().counters(&group(&id.0)).await?;
        let get = |name: &str| counters.get(name);
        if get("created") <= 0 {
            return Err(Error::NotFound {
                what: "batch",
                id: id.0.clone(),
            });
        }
        let count = |name: &str| counters.count(name);
        Ok(BatchStatus {
            total: count("total"),
            pending: count("pending"),
            succeeded: count("succeeded"),
            failed: count("failed"),
            cancelled: count("cancelled"),
            is_cancelled: get(CANCEL) > 0,
            is_sealed: get("sealed") > 0,
        })
    }
}

fn group(id: &str) -> String {
    format!("batch:{id}")
}

/// How far past zero a failure moves `catch`'s dependencies: it is released at once, however
/// many members are still to end.
const RELEASE_NOW: i64 = -(1 << 40);

/// What a batch's members do when they end, by the callbacks it has.
#[derive(Debug, Clone)]
struct Plan {
    id: String,
    then: bool,
    catch: bool,
    finally: bool,
    allow_failures: bool,
}

impl Plan {
    fn key(&self, what: &str) -> String {
        format!("batch:{}:{what}", self.id)
    }

    fn count(&self, deltas: &[(&str, i64)]) -> Step {
        Step::Count {
            group: group(&self.id),
            deltas: deltas.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    /// Every callback's dependencies changed by `delta`.
    fn callbacks(&self, delta: i64) -> Vec<Effect> {
        [
            ("then", self.then),
            ("catch", self.catch),
            ("finally", self.finally),
        ]
        .into_iter()
        .filter(|(_, has)| *has)
        .map(|(what, _)| Effect::Deps {
            key: self.key(what),
            delta,
        })
        .collect()
    }

    /// What a member's end does to the callbacks: each counts it down; a failure or a
    /// cancel marks `then` to be skipped, and a failure releases `catch` at once.
    fn ended(&self, how: Ended) -> Vec<Step> {
        let deps = |what: &str, delta: i64| Step::Deps {
            key: self.key(what),
            delta,
        };
        let mut steps = Vec::new();
        if self.then {
            steps.push(deps("then", -1));
            if how != Ended::Succeeded {
                steps.push(self.count(&[("skip:then", 1)]));
            }
        }
        if self.catch {
            steps.push(deps(
                "catch",
                if how == Ended::Failed {
                    RELEASE_NOW
                } else {
                    -1
                },
            ));
        }
        if self.finally {
            steps.push(deps("finally", -1));
        }
        match how {
            Ended::Succeeded => steps.push(self.count(&[("pending", -1), ("succeeded", 1)])),
            Ended::Failed => {
                let mut deltas = vec![("pending", -1), ("failed", 1)];
                if self.catch {
                    deltas.push(("skip:catch", -1));
                }
                if !self.allow_failures {
                    deltas.push((CANCEL, 1));
                }
                steps.push(self.count(&deltas));
            }
            Ended::Cancelled => steps.push(self.count(&[("pending", -1), ("cancelled", 1)])),
        }
        steps
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Succeeded,
    Failed,
    Cancelled,
}

/// A batch created open ([`Batch::open`]): add members in chunks, then [`seal`](Self::seal)
/// it. It cannot finish before it is sealed.
#[derive(Debug)]
#[must_use = "an open batch never finishes until it is sealed"]
pub struct OpenBatch {
    id: BatchId,
    plan: Plan,
    dispatcher: Dispatcher,
    added: u64,
    /// The effects that create the batch, until they are applied with the first step.
    created: Option<Vec<Effect>>,
}

impl OpenBatch {
    /// The batch's id.
    pub fn id(&self) -> &BatchId {
        &self.id
    }

    /// Adds members in one atomic step: they are counted, and the callbacks wait for them,
    /// in the step that stores them. Refused once the batch is cancelled.
    pub async fn add_many<J: Into<PendingDispatch>>(
        &mut self,
        jobs: impl IntoIterator<Item = J>,
    ) -> Result<()> {
        let jobs: Vec<PendingDispatch> = jobs.into_iter().map(Into::into).collect();
        if jobs.is_empty() {
            return Ok(());
        }
        let status = Batch::status(&self.dispatcher, &self.id).await?;
        if status.is_cancelled {
            return Err(Error::Config(format!(
                "batch {} is cancelled: members cannot be added to it",
                self.id
            )));
        }
        let effects = self.adding(jobs)?;
        self.apply(effects).await
    }

    /// Adds one member (see [`add_many`](Self::add_many)).
    pub async fn add(&mut self, job: impl Into<PendingDispatch>) -> Result<()> {
        self.add_many([job]).await
    }

    /// Seals the batch: no more members, and it finishes once every member has ended (at
    /// once if it has none). Returns the id.
    pub async fn seal(mut self) -> Result<BatchId> {
        let effects = self.sealing();
        self.apply(effects).await?;
        Ok(self.id)
    }

    /// The effects that store `jobs` as members.
    fn adding(&mut self, jobs: Vec<PendingDispatch>) -> Result<Vec<Effect>> {
        let n = jobs.len() as i64;
        let settings = self.dispatcher.settings();
        let mut effects = Vec::with_capacity(jobs.len() + 4);
        for job in jobs {
            let after = After {
                succeeded: self.plan.ended(Ended::Succeeded),
                failed: self.plan.ended(Ended::Failed),
                skipped: self.plan.ended(Ended::Cancelled),
                skip_if: Some(SkipIf {
                    group: group(&self.plan.id),
                    counter: CANCEL.to_owned(),
                    loose: true,
                }),
            };
            let job = job.encode_with(settings, Some(after))?;
            self.added += 1;
            let key = self.plan.key(&format!("m{}", self.added));
            effects.push(Effect::Push(job.unique(Unique::new(key))));
        }
        if n > 0 {
            effects.extend(self.plan.callbacks(n));
            effects.push(Effect::Count {
                group: group(&self.plan.id),
                deltas: vec![("total".to_owned(), n), ("pending".to_owned(), n)],
            });
        }
        Ok(effects)
    }

    /// The effects of the seal: each callback's own dependency met.
    fn sealing(&self) -> Vec<Effect> {
        let mut effects = self.plan.callbacks(-1);
        effects.push(Effect::Count {
            group: group(&self.plan.id),
            deltas: vec![("sealed".to_owned(), 1)],
        });
        effects
    }

    /// Applies effects (with the batch's creation, the first time) in one atomic step.
    async fn apply(&mut self, mut effects: Vec<Effect>) -> Result<()> {
        if let Some(mut created) = self.created.take() {
            created.append(&mut effects);
            effects = created;
        }
        self.dispatcher.apply(effects).await
    }
}
