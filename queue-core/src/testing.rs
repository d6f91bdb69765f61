//! Test doubles for an application's own tests: the recording fake behind
//! [`Queue::fake`](crate::Queue::fake) and [`Queue::fake_except`](crate::Queue::fake_except),
//! the inline queue behind [`Queue::inline`](crate::Queue::inline), and the views of what a
//! fake recorded ([`DispatchedJob`], [`DispatchedChain`], [`DispatchedBatch`],
//! [`DispatchedWorkflow`]).

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde_json::Value;

use crate::batch::BatchId;
use crate::chain::ChainId;
use crate::dispatcher::{self, Dispatcher, QueueSettings};
use crate::envelope::{Envelope, Step};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::queue::Queue;
use crate::registry::Registry;
use crate::storage::{
    Availability, Effect, JobId, MemoryStorage, NewJob, Pushed, Storage, StorageExt,
};
use crate::worker::{StopReason, Worker, WorkerOptions};
use crate::workflow::WorkflowId;

/// What a dispatcher made for tests does instead of only pushing to its store.
#[derive(Clone)]
pub(crate) enum Mode {
    /// Records what is dispatched ([`Queue::fake`](crate::Queue::fake)).
    Fake(Arc<Fake>),
    /// Runs what is dispatched at once ([`Queue::inline`](crate::Queue::inline)).
    Inline(Arc<Inline>),
}

/// The recording side of a fake queue.
pub(crate) struct Fake {
    /// The store: records every job pushed to it.
    pub(crate) memory: MemoryStorage,
    chains: Mutex<Vec<DispatchedChain>>,
    batches: Mutex<Vec<DispatchedBatch>>,
    workflows: Mutex<Vec<DispatchedWorkflow>>,
    /// Job names dispatched for real, through `real`, instead of recorded.
    except: RwLock<HashSet<String>>,
    real: Option<Dispatcher>,
}

impl fmt::Debug for Fake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fake")
            .field("except", &*read(&self.except))
            .finish_non_exhaustive()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fake {
    pub(crate) fn new(memory: MemoryStorage, real: Option<Dispatcher>) -> Self {
        Fake {
            memory,
            chains: Mutex::default(),
            batches: Mutex::default(),
            workflows: Mutex::default(),
            except: RwLock::default(),
            real,
        }
    }

    /// Whether it has a real queue ([`Queue::fake_except`](crate::Queue::fake_except)).
    pub(crate) fn has_real(&self) -> bool {
        self.real.is_some()
    }

    /// Sends the jobs named `name` through the real queue from now on.
    pub(crate) fn except(&self, name: &str) {
        self.except
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned());
    }

    /// The jobs of `jobs` that go for real, with their places, if there are any (and a real
    /// queue to send them to).
    fn split(&self, jobs: &[NewJob]) -> Option<(&Dispatcher, Vec<bool>)> {
        let real = self.real.as_ref()?;
        let except = read(&self.except);
        let go_real: Vec<bool> = jobs.iter().map(|j| except.contains(&j.name)).collect();
        go_real.contains(&true).then_some((real, go_real))
    }

    pub(crate) fn chains(&self) -> Vec<DispatchedChain> {
        lock(&self.chains).clone()
    }

    pub(crate) fn batches(&self) -> Vec<DispatchedBatch> {
        lock(&self.batches).clone()
    }

    pub(crate) fn workflows(&self) -> Vec<DispatchedWorkflow> {
        lock(&self.workflows).clone()
    }

    /// Records the workflow `id` from the effects that store it (see
    /// [`DispatchedWorkflow::of`]).
    pub(crate) fn record_workflow(&self, id: &str, effects: &[Effect], settings: &QueueSettings) {
        let workflow = DispatchedWorkflow::of(id, effects, settings);
        lock(&self.workflows).push(workflow);
    }

    /// Records a chain from the effects that store it: its links first, in order, then its
    /// `catch` and `finally` jobs.
    pub(crate) fn record_chain(
        &self,
        id: &str,
        links: usize,
        catch: bool,
        finally: bool,
        effects: &[Effect],
        settings: &QueueSettings,
    ) {
        let mut jobs = effects
            .iter()
            .filter_map(job_of)
            .map(|job| DispatchedJob::of(job, settings));
        let chain = DispatchedChain {
            id: ChainId(id.to_owned()),
            links: jobs.by_ref().take(links).collect(),
            catch: if catch { jobs.next() } else { None },
            finally: if finally { jobs.next() } else { None },
        };
        lock(&self.chains).push(chain);
    }

    /// Records a step of the batch `id` (its creation, members added, its seal) from the
    /// effects that store it: members are pushed, callbacks held under `batch:ID:KIND`.
    pub(crate) fn record_batch(
        &self,
        id: &BatchId,
        allow_failures: bool,
        effects: &[Effect],
        settings: &QueueSettings,
    ) {
        let mut batches = lock(&self.batches);
        let at = match batches.iter().position(|b| b.id == *id) {
            Some(at) => at,
            None => {
                batches.push(DispatchedBatch {
                    id: id.clone(),
                    members: Vec::new(),
                    then: None,
                    catch: None,
                    finally: None,
                    allow_failures,
                });
                batches.len() - 1
            }
        };
        let batch = &mut batches[at];
        for effect in effects {
            match effect {
                Effect::Push(job) => batch.members.push(DispatchedJob::of(job, settings)),
                Effect::Hold(waiting) => {
                    let job = Some(DispatchedJob::of(&waiting.job, settings));
                    match waiting.key.rsplit_once(':').map(|(_, kind)| kind) {
                        Some("then") => batch.then = job,
                        Some("catch") => batch.catch = job,
                        Some("finally") => batch.finally = job,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
}

fn job_of(effect: &Effect) -> Option<&NewJob> {
    match effect {
        Effect::Push(job) => Some(job),
        Effect::Hold(waiting) => Some(&waiting.job),
        _ => None,
    }
}

/// Pushes through `dispatcher`, boxed: a dispatcher's push may go through another (a fake's
/// real queue), and an inline queue's runs jobs that dispatch.
fn push_boxed(
    dispatcher: Dispatcher,
    jobs: Vec<NewJob>,
) -> BoxFuture<'static, Result<Vec<Pushed>>> {
    Box::pin(async move { dispatcher.push(jobs).await })
}

/// A fake's push with some jobs going for real ([`Queue::fake_except`](crate::Queue::fake_except)):
/// the others are recorded, and each keeps its place in the results. The jobs back when none
/// goes for real.
#[allow(clippy::type_complexity)]
pub(crate) fn fake_push(
    fake: Arc<Fake>,
    jobs: Vec<NewJob>,
) -> std::result::Result<BoxFuture<'static, Result<Vec<Pushed>>>, Vec<NewJob>> {
    let Some((real, go_real)) = fake.split(&jobs) else {
        return Err(jobs);
    };
    let real = real.clone();
    Ok(Box::pin(async move {
        let (mut reals, mut fakes) = (Vec::new(), Vec::new());
        for (job, real) in jobs.into_iter().zip(&go_real) {
            if *real {
                reals.push(job);
            } else {
                fakes.push(job);
            }
        }
        let mut reals = push_boxed(real, reals).await?.into_iter();
        let mut fakes = fake.memory.push(fakes).await?.into_iter();
        go_real
            .iter()
            .map(|real| {
                let next = if *real { reals.next() } else { fakes.next() };
                next.ok_or_else(|| Error::backend("memory", "push returned too few results"))
            })
            .collect()
    }))
}

/// The running side of an inline queue.
pub(crate) struct Inline {
    memory: MemoryStorage,
    listeners: Arc<RwLock<Registry>>,
}

impl fmt::Debug for Inline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inline").finish_non_exhaustive()
    }
}

/// What an inline queue is given to store and run.
pub(crate) enum Work {
    Push(Vec<NewJob>),
    Apply(Vec<Effect>),
}

impl Inline {
    pub(crate) fn new(memory: MemoryStorage, listeners: Arc<RwLock<Registry>>) -> Self {
        Inline { memory, listeners }
    }
}

/// A job as an inline queue stores it: available now, one attempt, no lock and no limit.
fn for_inline(mut job: NewJob) -> NewJob {
    job.available = Availability::Now;
    if let Ok(mut envelope) = Envelope::decode(&job.payload) {
        envelope.tries = Some(1);
        envelope.retry_until_ms = None;
        envelope.lock = None;
        envelope.limit = None;
        if let Ok(payload) = envelope.encode() {
            job.payload = payload;
        }
    }
    job
}

/// Stores `work` in the inline queue's store, then runs every job available in the queues it
/// touched, one at a time, through the worker's own code, until none is left: the jobs that
/// the work released (a chain's next link, a batch's callbacks) included. Fails with
/// [`Error::JobFailed`] for the first job of `work` that failed (any job it released, for
/// chains, batches and workflows).
pub(crate) fn run_inline(
    dispatcher: Dispatcher,
    inline: Arc<Inline>,
    work: Work,
) -> BoxFuture<'static, Result<Vec<Pushed>>> {
    Box::pin(async move {
        let storage: Arc<dyn Storage> = dispatcher.storage().clone();
        let before: HashSet<String> = inline
            .memory
            .failed_jobs()
            .into_iter()
            .map(|f| f.id)
            .collect();
        let mut queues = BTreeSet::new();
        let (pushed, own) = match work {
            Work::Push(jobs) => {
                let jobs: Vec<NewJob> = jobs.into_iter().map(for_inline).collect();
                queues.extend(jobs.iter().map(|j| j.queue.clone()));
                let pushed = storage.push(jobs).await?;
                let own: Option<HashSet<String>> = Some(
                    pushed
                        .iter()
                        .filter_map(|p| match p {
                            Pushed::Created(id) => Some(id.0.clone()),
                            _ => None,
                        })
                        .collect(),
                );
                (pushed, own)
            }
            Work::Apply(effects) => {
                let effects: Vec<Effect> = effects
                    .into_iter()
                    .map(|effect| match effect {
                        Effect::Push(job) => Effect::Push(for_inline(job)),
                        Effect::Hold(mut waiting) => {
                            waiting.job = for_inline(waiting.job);
                            Effect::Hold(waiting)
                        }
                        other => other,
                    })
                    .collect();
                queues.extend(effects.iter().filter_map(job_of).map(|j| j.queue.clone()));
                storage.groups()?.apply(effects).await?;
                (Vec::new(), None)
            }
        };
        // The jobs' bodies see the default queue the dispatching code sees.
        let scope = dispatcher::current().unwrap_or_else(|_| dispatcher.clone());
        let registry = inline
            .listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let options = WorkerOptions::default()
            .queues(queues.iter().cloned())
            .concurrency(1)
            .prefetch(0)
            .no_schedules()
            .unknown_job_window(Duration::ZERO)
            .sleep(Duration::from_millis(10))
            .once();
        // One job per run, until a run finds none: a job released by another's end is then
        // run too, and a job dispatched from a running job runs inside it.
        while !queues.is_empty() {
            let summary = Worker::new(storage.clone(), registry.clone(), options.clone())
                .with_dispatcher(dispatcher.clone())
                .with_job_scope(scope.clone())
                .run()
                .await?;
            if summary.reason != StopReason::Once {
                break;
            }
        }
        let failed: Vec<_> = inline
            .memory
            .failed_jobs()
            .into_iter()
            .filter(|f| !before.contains(&f.id))
            .filter(|f| own.as_ref().is_none_or(|own| own.contains(&f.job_id)))
            .collect();
        match failed.into_iter().next() {
            Some(job) => Err(Error::JobFailed {
                name: job.name,
                id: JobId(job.job_id),
                reason: job.error,
            }),
            None => Ok(pushed),
        }
    })
}

/// One job a fake queue recorded, decoded: what an application's test looks at.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DispatchedJob {
    /// The job's name ([`Job::NAME`] for a typed job).
    pub name: String,
    /// The queue it went to.
    pub queue: String,
    /// Its data as JSON (opened, for an encrypted job, with the queue's keys; `null` if it
    /// cannot be read).
    pub payload: Value,
    /// When it was to become available: at once, after a delay, or at a time.
    pub available: Availability,
    /// The attempts the dispatch or the job type fixed, if any.
    pub tries: Option<u32>,
    /// The `without_overlapping` lock key, if any.
    pub lock: Option<String>,
    /// Its unique key, if the dispatch is unique: the key as given (`customer:42`), with
    /// `@queue` or `#period` after it for a key per queue or per period.
    pub unique_key: Option<String>,
}

impl DispatchedJob {
    pub(crate) fn of(job: &NewJob, settings: &QueueSettings) -> Self {
        let envelope = Envelope::decode(&job.payload).ok();
        let payload = envelope.as_ref().and_then(|env| match &env.sealed {
            Some(sealed) => {
                let plain = settings.keys().ok()?.open(&env.name, sealed).ok()?;
                serde_json::from_slice(&plain).ok()
            }
            None => serde_json::from_str(env.data.get()).ok(),
        });
        DispatchedJob {
            name: job.name.clone(),
            queue: job.queue.clone(),
            payload: payload.unwrap_or(Value::Null),
            available: job.available,
            tries: envelope.as_ref().and_then(|env| env.tries),
            lock: envelope.and_then(|env| env.lock),
            unique_key: job.unique.as_ref().and_then(|u| {
                let prefix = format!("unique:{}:", job.name);
                u.key.strip_prefix(&prefix).map(str::to_owned)
            }),
        }
    }

    /// Whether it is a job of type `J` (by name).
    pub fn is<J: Job>(&self) -> bool {
        self.name == J::NAME
    }

    /// The job decoded as a `J`: `None` for a job of another name, or data that does not
    /// decode into it.
    pub fn decode<J: Job>(&self) -> Option<J> {
        if !self.is::<J>() {
            return None;
        }
        serde_json::from_value(self.payload.clone()).ok()
    }

    /// How long after its dispatch it was to wait: `None` for a job available at once, the
    /// time left until then for one dispatched at a time.
    pub fn delay(&self) -> Option<Duration> {
        match self.available {
            Availability::Now => None,
            Availability::After(delay) => Some(delay),
            Availability::At(at) => Some(at.duration_since(SystemTime::now()).unwrap_or_default()),
        }
    }
}

impl fmt::Display for DispatchedJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` on `{}`", self.name, self.queue)?;
        match self.available {
            Availability::Now => Ok(()),
            Availability::After(delay) => {
                write!(f, " (delayed {})", humantime::format_duration(delay))
            }
            Availability::At(_) => f.write_str(" (at a set time)"),
        }
    }
}

/// A chain a fake queue recorded ([`Queue::chains`](crate::Queue::chains)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DispatchedChain {
    /// Its id.
    pub id: ChainId,
    /// Its links, in order.
    pub links: Vec<DispatchedJob>,
    /// Its `catch` job.
    pub catch: Option<DispatchedJob>,
    /// Its `finally` job.
    pub finally: Option<DispatchedJob>,
}

impl DispatchedChain {
    /// The names of its links, in order.
    pub fn names(&self) -> Vec<&str> {
        self.links.iter().map(|j| j.name.as_str()).collect()
    }

    /// Whether its `catch` job is a `J`.
    pub fn catch_is<J: Job>(&self) -> bool {
        self.catch.as_ref().is_some_and(DispatchedJob::is::<J>)
    }

    /// Whether its `finally` job is a `J`.
    pub fn finally_is<J: Job>(&self) -> bool {
        self.finally.as_ref().is_some_and(DispatchedJob::is::<J>)
    }
}

impl fmt::Display for DispatchedChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.names().join(", "))?;
        if let Some(catch) = &self.catch {
            write!(f, " catch `{}`", catch.name)?;
        }
        if let Some(finally) = &self.finally {
            write!(f, " finally `{}`", finally.name)?;
        }
        Ok(())
    }
}

/// A batch a fake queue recorded ([`Queue::batches`](crate::Queue::batches)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DispatchedBatch {
    /// Its id.
    pub id: BatchId,
    /// Its members, in the order they were added.
    pub members: Vec<DispatchedJob>,
    /// Its `then` job.
    pub then: Option<DispatchedJob>,
    /// Its `catch` job.
    pub catch: Option<DispatchedJob>,
    /// Its `finally` job.
    pub finally: Option<DispatchedJob>,
    /// Whether it lets every member run when one fails.
    pub allow_failures: bool,
}

impl DispatchedBatch {
    /// How many members it has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether it has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// How many of its members are jobs of type `J`.
    pub fn count<J: Job>(&self) -> usize {
        self.members.iter().filter(|m| m.is::<J>()).count()
    }

    /// Its members of type `J`, decoded.
    pub fn jobs<J: Job>(&self) -> Vec<J> {
        self.members
            .iter()
            .filter_map(DispatchedJob::decode)
            .collect()
    }

    /// Whether its `then` job is a `J`.
    pub fn then_is<J: Job>(&self) -> bool {
        self.then.as_ref().is_some_and(DispatchedJob::is::<J>)
    }

    /// Whether its `catch` job is a `J`.
    pub fn catch_is<J: Job>(&self) -> bool {
        self.catch.as_ref().is_some_and(DispatchedJob::is::<J>)
    }

    /// Whether its `finally` job is a `J`.
    pub fn finally_is<J: Job>(&self) -> bool {
        self.finally.as_ref().is_some_and(DispatchedJob::is::<J>)
    }
}

impl fmt::Display for DispatchedBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} members (", self.members.len())?;
        tally(&mut *f, &self.members, |j| format!("`{}`", j.name))?;
        f.write_str(")")?;
        for (what, job) in [
            ("then", &self.then),
            ("catch", &self.catch),
            ("finally", &self.finally),
        ] {
            if let Some(job) = job {
                write!(f, " {what} `{}`", job.name)?;
            }
        }
        if self.allow_failures {
            f.write_str(" allowing failures")?;
        }
        Ok(())
    }
}

/// A workflow a fake queue recorded ([`Queue::workflows`](crate::Queue::workflows)): its
/// nodes, in the order they were added, each with its job and the edges into it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
/// use queue_core::{Queue, Workflow};
///
/// let queue = Queue::fake();
/// let job = |name: &str| queue.dispatch_named(name, serde_json::json!({"order": 42}));
/// let wf = Workflow::new();
/// let charge = wf.add("charge", job("charge-card"));
/// wf.add("refund", job("refund").on_queue("money")).on_failure_of(&charge);
/// let id = wf.dispatch().await?;
///
/// let recorded = &queue.workflows()[0];
/// assert_eq!(recorded.id, id);
/// assert_eq!(recorded.names(), ["charge", "refund"]);
/// let refund = recorded.node("refund").expect("a node named refund");
/// assert_eq!((refund.job.name.as_str(), refund.job.queue.as_str()), ("refund", "money"));
/// assert_eq!(refund.job.payload["order"], 42);
/// assert_eq!(refund.on_failure_of, ["charge"]);
/// assert!(recorded.has_edge("charge", "refund"));
/// assert_eq!(
///     recorded.to_string(),
///     "{charge: `charge-card`, refund: `refund` on_failure_of charge}"
/// );
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DispatchedWorkflow {
    /// Its id.
    pub id: WorkflowId,
    /// Its nodes, in the order they were added.
    pub nodes: Vec<DispatchedNode>,
}

/// A node of a [`DispatchedWorkflow`]: its name, its job, and the names of the nodes before
/// it, by kind of edge, named as the [`Node`](crate::Node) methods that add them, in the
/// order those nodes were added to the workflow.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DispatchedNode {
    /// Its name in the workflow.
    pub name: String,
    /// Its job: name, queue, payload.
    pub job: DispatchedJob,
    /// The nodes it runs after, once they succeeded ([`Node::after`](crate::Node::after)).
    pub after: Vec<String>,
    /// The nodes it runs after, once they failed for good
    /// ([`Node::on_failure_of`](crate::Node::on_failure_of)).
    pub on_failure_of: Vec<String>,
    /// The nodes it runs after, once they ended, whatever happened
    /// ([`Node::on_complete_of`](crate::Node::on_complete_of)).
    pub on_complete_of: Vec<String>,
}

/// What an edge waits for, as [`outs`] reads it from a node's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EdgeKind {
    After,
    OnFailureOf,
    OnCompleteOf,
}

/// The edges out of a node, from the steps of one of its ends, in order: the node after
/// each, and whether this end does not meet the edge. Each edge is a `Deps` step on the
/// node after (`wf:ID:NAME`), preceded, when this end does not meet it, by a count of that
/// node's skip mark (`skip:NAME` in the group `wf:ID`).
fn outs(steps: &[Step], prefix: &str, group: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut unmet: Option<&str> = None;
    for step in steps {
        match step {
            Step::Count { group: g, deltas } if g == group => {
                unmet = match deltas.as_slice() {
                    [(counter, _)] => counter.strip_prefix("skip:"),
                    _ => None,
                };
            }
            Step::Deps { key, .. } => {
                if let Some(to) = key.strip_prefix(prefix) {
                    out.push((to.to_owned(), unmet == Some(to)));
                }
                unmet = None;
            }
            _ => unmet = None,
        }
    }
    out
}

impl DispatchedWorkflow {
    /// Reads a workflow from the effects that store it: each node is a job pushed with the
    /// unique key `wf:ID:NAME` (no edge into it) or held under that key, in the order the
    /// nodes were added; the edges out of a node are in its envelope's steps, the same on
    /// success and on failure but for the skip marks of the edges that end does not meet.
    pub(crate) fn of(id: &str, effects: &[Effect], settings: &QueueSettings) -> Self {
        let group = format!("wf:{id}");
        let prefix = format!("{group}:");
        let mut nodes: Vec<DispatchedNode> = Vec::new();
        let mut edges: Vec<(String, String, EdgeKind)> = Vec::new();
        for effect in effects {
            let (key, job) = match effect {
                Effect::Push(job) => match &job.unique {
                    Some(unique) => (unique.key.as_str(), job),
                    None => continue,
                },
                Effect::Hold(waiting) => (waiting.key.as_str(), &waiting.job),
                _ => continue,
            };
            let Some(name) = key.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(after) = Envelope::decode(&job.payload).ok().and_then(|e| e.after) {
                let on_success = outs(&after.succeeded, &prefix, &group);
                let on_failure = outs(&after.failed, &prefix, &group);
                for ((to, unmet_on_success), (_, unmet_on_failure)) in
                    on_success.into_iter().zip(on_failure)
                {
                    let kind = match (unmet_on_success, unmet_on_failure) {
                        (false, true) => EdgeKind::After,
                        (true, false) => EdgeKind::OnFailureOf,
                        (false, false) => EdgeKind::OnCompleteOf,
                        (true, true) => continue,
                    };
                    edges.push((name.to_owned(), to, kind));
                }
            }
            nodes.push(DispatchedNode {
                name: name.to_owned(),
                job: DispatchedJob::of(job, settings),
                after: Vec::new(),
                on_failure_of: Vec::new(),
                on_complete_of: Vec::new(),
            });
        }
        for (from, to, kind) in edges {
            if let Some(node) = nodes.iter_mut().find(|n| n.name == to) {
                match kind {
                    EdgeKind::After => node.after.push(from),
                    EdgeKind::OnFailureOf => node.on_failure_of.push(from),
                    EdgeKind::OnCompleteOf => node.on_complete_of.push(from),
                }
            }
        }
        DispatchedWorkflow {
            id: WorkflowId(id.to_owned()),
            nodes,
        }
    }

    /// How many nodes it has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has no node (a dispatched workflow always has one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The names of its nodes, in the order they were added.
    pub fn names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    /// Its node named `name`, if it has one.
    pub fn node(&self, name: &str) -> Option<&DispatchedNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Whether it has an edge, of any kind, from the node `from` to the node `to` (`to`
    /// waits for `from`). Read [`node(to)`](Self::node)'s fields for the kind.
    pub fn has_edge(&self, from: &str, to: &str) -> bool {
        self.node(to).is_some_and(|node| node.waits_for(from))
    }

    /// How many of its nodes are jobs of type `J`.
    pub fn count<J: Job>(&self) -> usize {
        self.nodes.iter().filter(|n| n.job.is::<J>()).count()
    }
}

impl DispatchedNode {
    /// Whether its job is a `J`.
    pub fn is<J: Job>(&self) -> bool {
        self.job.is::<J>()
    }

    /// Whether it has no edge into it: it was pushed at dispatch.
    pub fn is_root(&self) -> bool {
        self.after.is_empty() && self.on_failure_of.is_empty() && self.on_complete_of.is_empty()
    }

    /// Whether it waits for the node `before`, by an edge of any kind.
    pub fn waits_for(&self, before: &str) -> bool {
        [&self.after, &self.on_failure_of, &self.on_complete_of]
            .into_iter()
            .any(|names| names.iter().any(|n| n == before))
    }
}

impl fmt::Display for DispatchedNode {
    // "ship: `ship-order` after charge+email"
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}`", self.name, self.job.name)?;
        for (what, before) in [
            ("after", &self.after),
            ("on_failure_of", &self.on_failure_of),
            ("on_complete_of", &self.on_complete_of),
        ] {
            if !before.is_empty() {
                write!(f, " {what} {}", before.join("+"))?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for DispatchedWorkflow {
    // "{charge: `charge-card`, refund: `refund` on_failure_of charge}"
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, node) in self.nodes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{node}")?;
        }
        f.write_str("}")
    }
}

/// Writes `items` grouped by their label, in the order each label first appears, with a
/// count when it appears more than once: "`a` on `x` ×2, `b` on `y`".
fn tally<T>(f: &mut impl fmt::Write, items: &[T], label: impl Fn(&T) -> String) -> fmt::Result {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for item in items {
        let label = label(item);
        match seen.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => seen.push((label, 1)),
        }
    }
    if seen.is_empty() {
        return f.write_str("none");
    }
    for (i, (label, n)) in seen.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        f.write_str(label)?;
        if *n > 1 {
            write!(f, " ×{n}")?;
        }
    }
    Ok(())
}

/// What a fake recorded, in a line for a failed assertion: "3 jobs: `a` on `x` ×2, `b` on
/// `y`" or "nothing".
pub(crate) fn summary(jobs: &[DispatchedJob]) -> String {
    if jobs.is_empty() {
        return "nothing".to_owned();
    }
    let mut out = format!(
        "{} job{}: ",
        jobs.len(),
        if jobs.len() == 1 { "" } else { "s" }
    );
    let _ = tally(&mut out, jobs, |j| j.to_string());
    out
}

/// The short name of a type, for messages: `SendEmail`, not `my_app::jobs::SendEmail`.
fn short_type<J>() -> &'static str {
    let full = std::any::type_name::<J>();
    let path = full.split('<').next().unwrap_or(full);
    path.rsplit("::").next().unwrap_or(path)
}

/// How a job type is named in messages: "`send-email` (SendEmail)".
fn what<J: Job>() -> String {
    format!("`{}` ({})", J::NAME, short_type::<J>())
}

/// Reading and asserting what a fake queue recorded ([`Queue::fake`]). Every method panics
/// on a queue not made with `Queue::fake` or [`Queue::fake_except`]: they are test helpers.
/// The assertions' messages say what was expected and what was dispatched.
impl Queue {
    #[track_caller]
    fn recorded(&self) -> &Arc<Fake> {
        match self.dispatcher().fake() {
            Some(fake) => fake,
            None => panic!(
                "this queue records nothing: the dispatch assertions work only on a queue made \
                 with Queue::fake() or Queue::fake_except(..)"
            ),
        }
    }

    /// Jobs dispatched through this fake queue, in order, as stored.
    ///
    /// # Panics
    ///
    /// If the queue was not made with [`Queue::fake`].
    #[track_caller]
    pub fn dispatched_all(&self) -> Vec<NewJob> {
        self.recorded().memory.pushed()
    }

    /// Jobs dispatched through this fake queue, in order, decoded: their names, queues,
    /// payloads, delays. Filter them as a test needs.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use std::time::Duration;
    /// use queue_core::Queue;
    ///
    /// let queue = Queue::fake();
    /// queue
    ///     .dispatch_named("remind", serde_json::json!({"user": 3}))
    ///     .on_queue("low")
    ///     .delay(Duration::from_secs(600))
    ///     .await?;
    /// let jobs = queue.dispatched_jobs();
    /// assert_eq!((jobs[0].name.as_str(), jobs[0].queue.as_str()), ("remind", "low"));
    /// assert_eq!(jobs[0].payload["user"], 3);
    /// assert_eq!(jobs[0].delay(), Some(Duration::from_secs(600)));
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// If the queue was not made with [`Queue::fake`].
    #[track_caller]
    pub fn dispatched_jobs(&self) -> Vec<DispatchedJob> {
        let settings = self.settings();
        self.dispatched_all()
            .iter()
            .map(|job| DispatchedJob::of(job, settings))
            .collect()
    }

    /// Jobs of type `J` dispatched through this fake queue, decoded.
    ///
    /// # Panics
    ///
    /// If the queue was not made with [`Queue::fake`].
    #[track_caller]
    pub fn dispatched<J: Job>(&self) -> Vec<J> {
        self.dispatched_jobs()
            .iter()
            .filter_map(DispatchedJob::decode)
            .collect()
    }

    /// Payloads of jobs named `name` dispatched through this fake queue.
    ///
    /// # Panics
    ///
    /// If the queue was not made with [`Queue::fake`].
    #[track_caller]
    pub fn dispatched_named(&self, name: &str) -> Vec<Value> {
        self.dispatched_jobs()
            .into_iter()
            .filter(|job| job.name == name)
            .map(|job| job.payload)
            .collect()
    }

    /// The chains dispatched through this fake queue, in order.
    ///
    /// # Panics
    ///
    /// If the queue was not made with [`Queue::fake`].
    #[track_caller]
    pub fn chains(&self) -> Vec<DispatchedChain> {
        self.recorded().chains()
    }

    /// The batches dispatched (or opened) through this fake queue, in order.
    ///
    /// # Panics
    ///
    /// If the queue was not made with [`Queue::fake`].
    #[track_caller]
    pub fn batches(&self) -> Vec<DispatchedBatch> {
        self.recorded().batches()
    }

    /// The workflows dispatched through this fake queue, in order: each node with its job
    /// and the edges into it (see [`DispatchedWorkflow`]).
    ///
    /// # Panics
    ///
    /// If the queue was not made with [`Queue::fake`].
    #[track_caller]
    pub fn workflows(&self) -> Vec<DispatchedWorkflow> {
        self.recorded().workflows()
    }

    /// Asserts that a job of type `J` was dispatched (Laravel's `assertPushed`).
    ///
    /// # Panics
    ///
    /// If none was, saying what was dispatched; or if the queue is not a fake.
    #[track_caller]
    pub fn assert_dispatched<J: Job>(&self) {
        let jobs = self.dispatched_jobs();
        if !jobs.iter().any(DispatchedJob::is::<J>) {
            panic!(
                "expected {} to be dispatched, but it was not; dispatched: {}",
                what::<J>(),
                summary(&jobs)
            );
        }
    }

    /// Asserts that a job of type `J` for which `matches` is true was dispatched (Laravel's
    /// `assertPushed(Job::class, fn ($job) => ..)`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// # use queue_core::{Handle, Job, JobContext, JobError, Queue};
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, Job)]
    /// struct Refund { order: u64, cents: u64 }
    /// # impl Handle for Refund {
    /// #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// let queue = Queue::fake();
    /// Refund { order: 9, cents: 250 }.dispatch().await?;
    /// queue.assert_dispatched_with(|r: &Refund| r.order == 9 && r.cents == 250);
    /// let wrong = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
    ///     queue.assert_dispatched_with(|r: &Refund| r.order == 10);
    /// }));
    /// assert!(wrong.is_err());
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// If none was, showing the payloads of the `J`s that were; or if the queue is not a
    /// fake.
    #[track_caller]
    pub fn assert_dispatched_with<J: Job>(&self, matches: impl Fn(&J) -> bool) {
        let jobs = self.dispatched_jobs();
        let of_type: Vec<&DispatchedJob> = jobs.iter().filter(|j| j.is::<J>()).collect();
        if of_type
            .iter()
            .any(|j| j.decode::<J>().is_some_and(|job| matches(&job)))
        {
            return;
        }
        if of_type.is_empty() {
            panic!(
                "expected {} matching the predicate to be dispatched, but none of type {} was; \
                 dispatched: {}",
                what::<J>(),
                short_type::<J>(),
                summary(&jobs)
            );
        }
        let payloads: Vec<String> = of_type.iter().map(|j| j.payload.to_string()).collect();
        panic!(
            "expected {} matching the predicate to be dispatched, but none of the {} dispatched \
             matched: {}",
            what::<J>(),
            of_type.len(),
            payloads.join(", ")
        );
    }

    /// Asserts that a job of type `J` was dispatched on `queue` (Laravel's
    /// `assertPushedOn`).
    ///
    /// # Panics
    ///
    /// If none was, saying on which queues the `J`s went; or if the queue is not a fake.
    #[track_caller]
    pub fn assert_dispatched_on<J: Job>(&self, queue: &str) {
        let jobs = self.dispatched_jobs();
        let of_type: Vec<&DispatchedJob> = jobs.iter().filter(|j| j.is::<J>()).collect();
        if of_type.iter().any(|j| j.queue == queue) {
            return;
        }
        if of_type.is_empty() {
            panic!(
                "expected {} to be dispatched on queue `{queue}`, but it was not dispatched; \
                 dispatched: {}",
                what::<J>(),
                summary(&jobs)
            );
        }
        let mut on = String::new();
        let _ = tally(&mut on, &of_type, |j| format!("`{}`", j.queue));
        panic!(
            "expected {} to be dispatched on queue `{queue}`, but it was dispatched on {on}",
            what::<J>()
        );
    }

    /// Asserts that jobs of type `J` were dispatched exactly `times` times (Laravel's
    /// `assertPushed(Job::class, 2)`).
    ///
    /// # Panics
    ///
    /// If they were not, saying how many were; or if the queue is not a fake.
    #[track_caller]
    pub fn assert_dispatched_times<J: Job>(&self, times: usize) {
        let jobs = self.dispatched_jobs();
        let n = jobs.iter().filter(|j| j.is::<J>()).count();
        if n != times {
            panic!(
                "expected {} to be dispatched {times} time{}, but it was dispatched {n} time{}; \
                 dispatched: {}",
                what::<J>(),
                if times == 1 { "" } else { "s" },
                if n == 1 { "" } else { "s" },
                summary(&jobs)
            );
        }
    }

    /// Asserts that no job of type `J` was dispatched (Laravel's `assertNotPushed`).
    ///
    /// # Panics
    ///
    /// If one was, listing them; or if the queue is not a fake.
    #[track_caller]
    pub fn assert_not_dispatched<J: Job>(&self) {
        let jobs = self.dispatched_jobs();
        let of_type: Vec<DispatchedJob> = jobs.into_iter().filter(|j| j.is::<J>()).collect();
        if !of_type.is_empty() {
            panic!(
                "expected {} not to be dispatched, but it was dispatched {} time{}: {}",
                what::<J>(),
                of_type.len(),
                if of_type.len() == 1 { "" } else { "s" },
                summary(&of_type)
            );
        }
    }

    /// Asserts that no job of type `J` for which `matches` is true was dispatched.
    ///
    /// # Panics
    ///
    /// If one was, showing its payload; or if the queue is not a fake.
    #[track_caller]
    pub fn assert_not_dispatched_with<J: Job>(&self, matches: impl Fn(&J) -> bool) {
        let jobs = self.dispatched_jobs();
        let hit = jobs
            .iter()
            .find(|j| j.decode::<J>().is_some_and(|job| matches(&job)));
        if let Some(hit) = hit {
            panic!(
                "expected no {} matching the predicate to be dispatched, but {hit} was, with \
                 payload {}",
                what::<J>(),
                hit.payload
            );
        }
    }

    /// Asserts that nothing was dispatched: no job, chain, batch or workflow (Laravel's
    /// `assertNothingPushed`).
    ///
    /// # Panics
    ///
    /// If something was, listing it; or if the queue is not a fake.
    #[track_caller]
    pub fn assert_nothing_dispatched(&self) {
        let jobs = self.dispatched_jobs();
        let (chains, batches, workflows) = (self.chains(), self.batches(), self.workflows());
        if jobs.is_empty() && chains.is_empty() && batches.is_empty() && workflows.is_empty() {
            return;
        }
        let mut message = format!(
            "expected nothing to be dispatched, but {} {} dispatched",
            summary(&jobs),
            if jobs.len() == 1 { "was" } else { "were" }
        );
        if !chains.is_empty() {
            let chains: Vec<String> = chains.iter().map(ToString::to_string).collect();
            message.push_str(&format!(", and chains {}", chains.join("; ")));
        }
        if !batches.is_empty() {
            let batches: Vec<String> = batches.iter().map(ToString::to_string).collect();
            message.push_str(&format!(", and batches of {}", batches.join("; ")));
        }
        if !workflows.is_empty() {
            let workflows: Vec<String> = workflows.iter().map(ToString::to_string).collect();
            message.push_str(&format!(", and workflows {}", workflows.join("; ")));
        }
        panic!("{message}");
    }

    /// Asserts that a chain whose links have these job names, in this order, was dispatched
    /// (Laravel's `Bus::assertChained`). Use [`Job::NAME`] for typed jobs.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use queue_core::{Chain, Job, Queue};
    /// # use queue_core::{Handle, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, Job)]
    /// # struct Download { url: String }
    /// # impl Handle for Download {
    /// #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
    /// # }
    ///
    /// let queue = Queue::fake();
    /// Chain::new()
    ///     .then(Download { url: "https://e.x/a.mp4".into() })
    ///     .then(queue.dispatch_named("transcode", serde_json::json!({})))
    ///     .catch(queue.dispatch_named("notify-failure", serde_json::json!({})))
    ///     .dispatch()
    ///     .await?;
    /// queue.assert_chained([Download::NAME, "transcode"]);
    /// assert_eq!(queue.chains()[0].catch.as_ref().unwrap().name, "notify-failure");
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// If no such chain was dispatched, listing the chains that were; or if the queue is
    /// not a fake.
    #[track_caller]
    pub fn assert_chained<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) {
        let names: Vec<String> = names.into_iter().map(|s| s.as_ref().to_owned()).collect();
        let chains = self.chains();
        if chains.iter().any(|c| c.names() == names) {
            return;
        }
        let expected = names.join(", ");
        if chains.is_empty() {
            panic!("expected a chain [{expected}] to be dispatched, but no chain was");
        }
        let chains: Vec<String> = chains.iter().map(ToString::to_string).collect();
        panic!(
            "expected a chain [{expected}] to be dispatched, but the chains dispatched were: {}",
            chains.join("; ")
        );
    }

    /// Asserts that a chain for which `matches` is true was dispatched: its links, its
    /// `catch` and `finally` jobs, their payloads (Laravel's `Bus::assertChained` with a
    /// closure).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use queue_core::{Chain, Job, Queue};
    /// # use queue_core::{Handle, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, Job)]
    /// # struct Download { url: String }
    /// # impl Handle for Download {
    /// #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # #[derive(Serialize, Deserialize, Job)]
    /// # struct NotifyFailure { to: String }
    /// # impl Handle for NotifyFailure {
    /// #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
    /// # }
    ///
    /// let queue = Queue::fake();
    /// Chain::new()
    ///     .then(Download { url: "https://e.x/a.mp4".into() })
    ///     .then(queue.dispatch_named("transcode", serde_json::json!({})))
    ///     .catch(NotifyFailure { to: "ops@e.x".into() })
    ///     .finally(queue.dispatch_named("clean-up", serde_json::json!({})))
    ///     .dispatch()
    ///     .await?;
    /// queue.assert_chained_with(|chain| {
    ///     chain.names() == [Download::NAME, "transcode"]
    ///         && chain.catch_is::<NotifyFailure>()
    ///         && chain.finally.as_ref().is_some_and(|job| job.name == "clean-up")
    /// });
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// If none was, listing the chains that were, with their `catch` and `finally` jobs; or
    /// if the queue is not a fake.
    #[track_caller]
    pub fn assert_chained_with(&self, matches: impl Fn(&DispatchedChain) -> bool) {
        let chains = self.chains();
        if chains.iter().any(matches) {
            return;
        }
        if chains.is_empty() {
            panic!("expected a chain matching the predicate to be dispatched, but no chain was");
        }
        let list: Vec<String> = chains.iter().map(ToString::to_string).collect();
        panic!(
            "expected a chain matching the predicate to be dispatched, but none of the {} \
             dispatched matched: {}",
            chains.len(),
            list.join("; ")
        );
    }

    /// Asserts that a batch for which `matches` is true was dispatched (Laravel's
    /// `Bus::assertBatched`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use queue_core::{Batch, Job, Queue};
    /// # use queue_core::{Handle, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, Job)]
    /// # struct ImportRow { row: u32 }
    /// # impl Handle for ImportRow {
    /// #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
    /// # }
    ///
    /// let queue = Queue::fake();
    /// Batch::new()
    ///     .add_many((1..=3).map(|row| ImportRow { row }))
    ///     .then(queue.dispatch_named("import-done", serde_json::json!({})))
    ///     .dispatch()
    ///     .await?;
    /// queue.assert_batched(|batch| {
    ///     batch.len() == 3 && batch.count::<ImportRow>() == 3
    ///         && batch.then.as_ref().is_some_and(|then| then.name == "import-done")
    /// });
    /// # Ok(()) }
    /// ```
    ///
    /// The batch's `then`, `catch` and `finally` jobs are in the view: typed ones are checked
    /// with [`then_is`](DispatchedBatch::then_is), [`catch_is`](DispatchedBatch::catch_is)
    /// and [`finally_is`](DispatchedBatch::finally_is), and decoded with
    /// [`DispatchedJob::decode`]:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// # use queue_core::{Batch, DispatchedJob, Handle, Job, JobContext, JobError, Queue};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, Job)]
    /// # struct ImportRow { row: u32 }
    /// # impl Handle for ImportRow {
    /// #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// #[derive(Serialize, Deserialize, Job)]
    /// struct ImportDone { file: String }
    /// # impl Handle for ImportDone {
    /// #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// let queue = Queue::fake();
    /// Batch::new()
    ///     .add(ImportRow { row: 1 })
    ///     .then(ImportDone { file: "a.csv".into() })
    ///     .dispatch()
    ///     .await?;
    /// queue.assert_batched(|batch| {
    ///     batch.then_is::<ImportDone>()
    ///         && batch.then.as_ref().and_then(DispatchedJob::decode::<ImportDone>)
    ///             .is_some_and(|done| done.file == "a.csv")
    ///         && batch.catch.is_none()
    /// });
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// If none was, describing the batches that were, with their callbacks; or if the queue
    /// is not a fake.
    #[track_caller]
    pub fn assert_batched(&self, matches: impl Fn(&DispatchedBatch) -> bool) {
        let batches = self.batches();
        if batches.iter().any(matches) {
            return;
        }
        if batches.is_empty() {
            panic!("expected a batch matching the predicate to be dispatched, but no batch was");
        }
        let list: Vec<String> = batches.iter().map(ToString::to_string).collect();
        panic!(
            "expected a batch matching the predicate to be dispatched, but none of the {} \
             dispatched matched: {}",
            batches.len(),
            list.join("; ")
        );
    }

    /// Asserts that no batch was dispatched (Laravel's `Bus::assertNothingBatched`).
    ///
    /// # Panics
    ///
    /// If one was, describing it; or if the queue is not a fake.
    #[track_caller]
    pub fn assert_nothing_batched(&self) {
        let batches = self.batches();
        if !batches.is_empty() {
            let list: Vec<String> = batches.iter().map(ToString::to_string).collect();
            panic!(
                "expected no batch to be dispatched, but {} {}: {}",
                batches.len(),
                if batches.len() == 1 { "was" } else { "were" },
                list.join("; ")
            );
        }
    }

    /// Asserts that a workflow for which `matches` is true was dispatched: read its nodes
    /// with [`node`](DispatchedWorkflow::node) and its edges with
    /// [`has_edge`](DispatchedWorkflow::has_edge) or the node's fields.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use queue_core::{Job, Queue, Workflow};
    /// # use queue_core::{Handle, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, Job)]
    /// # struct Charge { order: u64 }
    /// # impl Handle for Charge {
    /// #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
    /// # }
    ///
    /// let queue = Queue::fake();
    /// let job = |name: &str| queue.dispatch_named(name, serde_json::json!({"order": 7}));
    /// let wf = Workflow::new();
    /// let reserve = wf.add("reserve", job("reserve-stock"));
    /// let charge = wf.add("charge", Charge { order: 7 }).after(&reserve);
    /// let email = wf.add("email", job("send-receipt")).after(&reserve);
    /// wf.add("ship", job("ship")).after_all([&charge, &email]);
    /// wf.add("refund", job("refund")).on_failure_of(&charge);
    /// wf.add("audit", job("audit")).on_complete_of_all([&charge, &email]);
    /// wf.dispatch().await?;
    ///
    /// queue.assert_workflow_dispatched(|wf| {
    ///     wf.node("charge").is_some_and(|n| n.is::<Charge>() && n.after == ["reserve"])
    ///         && wf.node("ship").is_some_and(|n| n.after == ["charge", "email"])
    ///         && wf.node("refund").is_some_and(|n| n.on_failure_of == ["charge"])
    ///         && wf.has_edge("email", "audit")
    /// });
    /// // Only `reserve` went to a queue: the other nodes wait for the nodes before them.
    /// assert_eq!(queue.dispatched_named("reserve-stock").len(), 1);
    /// queue.assert_not_dispatched::<Charge>();
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// If none was, describing the workflows that were (each node with its job and the edges
    /// into it); or if the queue is not a fake.
    #[track_caller]
    pub fn assert_workflow_dispatched(&self, matches: impl Fn(&DispatchedWorkflow) -> bool) {
        let workflows = self.workflows();
        if workflows.iter().any(matches) {
            return;
        }
        if workflows.is_empty() {
            panic!(
                "expected a workflow matching the predicate to be dispatched, but no workflow \
                 was; dispatched: {}",
                summary(&self.dispatched_jobs())
            );
        }
        let list: Vec<String> = workflows.iter().map(ToString::to_string).collect();
        panic!(
            "expected a workflow matching the predicate to be dispatched, but none of the {} \
             dispatched matched: {}",
            workflows.len(),
            list.join("; ")
        );
    }

    /// Asserts that no workflow was dispatched (as
    /// [`assert_nothing_batched`](Self::assert_nothing_batched) is for batches).
    ///
    /// # Panics
    ///
    /// If one was, describing it; or if the queue is not a fake.
    #[track_caller]
    pub fn assert_no_workflow_dispatched(&self) {
        let workflows = self.workflows();
        if !workflows.is_empty() {
            let list: Vec<String> = workflows.iter().map(ToString::to_string).collect();
            panic!(
                "expected no workflow to be dispatched, but {} {}: {}",
                workflows.len(),
                if workflows.len() == 1 { "was" } else { "were" },
                list.join("; ")
            );
        }
    }
}
