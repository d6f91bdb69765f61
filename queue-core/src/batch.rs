//! [`Batch`]: many jobs dispatched as one, with `then`, `catch` and `finally` jobs and exact
//! progress (Laravel's `Bus::batch`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::dispatch::PendingDispatch;
use crate::dispatcher::{self, Dispatcher};
use crate::envelope::{After, Envelope, Member, SkipIf, Step};
use crate::error::{Error, Result};
use crate::storage::StorageExt;
use crate::storage::{new_token, Effect, FailedJob, Page, PageRequest, Unique, WaitingJob};
use crate::worker::Gates;

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
    /// When it was created, to the second (`None` for a batch made before this was kept).
    pub created_at: Option<SystemTime>,
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

    /// Members that have ended, whatever the outcome.
    pub fn ended(&self) -> u64 {
        self.total.saturating_sub(self.pending)
    }

    /// Members ended per second since the batch was created, as of `now`; `None` before
    /// any ended or with no creation time.
    pub fn rate(&self, now: SystemTime) -> Option<f64> {
        let elapsed = now.duration_since(self.created_at?).ok()?.as_secs_f64();
        (self.ended() > 0).then(|| self.ended() as f64 / elapsed.max(1.0))
    }

    /// How long the pending members should take at [`rate`](Self::rate): `None` without a
    /// rate, zero once nothing is pending.
    pub fn eta(&self, now: SystemTime) -> Option<Duration> {
        if self.pending == 0 {
            return Some(Duration::ZERO);
        }
        let rate = self.rate(now)?;
        Some(Duration::from_secs_f64(
            (self.pending as f64 / rate).min(1e9),
        ))
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
        self.open_on(dispatcher)
    }

    /// A workflow's batch node ([`Workflow::add_batch`](crate::Workflow::add_batch)): the
    /// effects that store the batch sealed with `finally` as its `finally`, its members held
    /// each under its own key with one dependency (met by the node's start job), with those
    /// keys and the queue of the first member. Refused for a batch with no member or with a
    /// `finally` of its own.
    pub(crate) fn node_effects(
        mut self,
        dispatcher: &Dispatcher,
        node: &str,
        finally: impl FnOnce(&BatchId, &str) -> PendingDispatch,
    ) -> Result<NodeBatch> {
        if self.members.is_empty() {
            return Err(Error::Config(format!(
                "workflow refused: batch node `{node}` has no member"
            )));
        }
        if self.finally.is_some() {
            return Err(Error::Config(format!(
                "workflow refused: batch node `{node}` has a `finally` of its own: its end is \
                 the node's, so use `on_complete_of` in the workflow"
            )));
        }
        self.via = None;
        let members = std::mem::take(&mut self.members);
        // Its id first: the `finally` job names it.
        let id = new_token();
        let queue = members[0].queue_name().to_owned();
        self.finally = Some(finally(&BatchId(id.clone()), &queue));
        let mut open = self.open_with_id(dispatcher.clone(), id)?;
        let mut effects = open.created.take().unwrap_or_default();
        effects.extend(open.adding(members)?);
        effects.extend(open.sealing());
        let prefix = open.plan.key("m");
        let mut members = Vec::new();
        for effect in &mut effects {
            let Effect::Push(job) = effect else { continue };
            let Some(key) = job.unique.as_ref().map(|u| u.key.clone()) else {
                continue;
            };
            if key.starts_with(&prefix) {
                let job = std::mem::replace(job, crate::storage::NewJob::new("", "", Vec::new()));
                *effect = Effect::Hold(WaitingJob::new(key.clone(), 1, job));
                members.push(key);
            }
        }
        Ok(NodeBatch {
            id: open.id,
            effects,
            members,
            queue,
            callbacks: CALLBACK_KINDS
                .iter()
                .map(|what| open.plan.key(what))
                .collect(),
        })
    }

    /// [`open_batch`](Self::open_batch) through `dispatcher`.
    fn open_on(self, dispatcher: Dispatcher) -> Result<OpenBatch> {
        self.open_with_id(dispatcher, new_token())
    }

    fn open_with_id(self, dispatcher: Dispatcher, id: String) -> Result<OpenBatch> {
        dispatcher.needs_groups("batches (they need group counters and waiting jobs)")?;
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
            (self.catch, "catch", None),
            (self.finally, "finally", None),
        ];
        let mut callbacks_bits = 0;
        for (bit, (job, what, gate)) in callbacks.into_iter().enumerate() {
            let Some(job) = job else { continue };
            callbacks_bits |= 1 << bit;
            // Each callback, when it ends, is held again under its key for `Batch::retry`.
            let after = After {
                skip_if: gate.map(|counter| SkipIf {
                    group: group.clone(),
                    counter: counter.to_owned(),
                    loose: false,
                }),
                hold_again: Some(plan.key(what)),
                ..After::default()
            };
            let job = job.encode_with(settings, Some(after))?;
            // `then` and `finally`: one dependency for the seal, and each member added adds
            // one. `catch`: one, which the first failure meets.
            effects.push(Effect::Hold(WaitingJob::new(plan.key(what), 1, job)));
        }
        // Its creation time, in seconds since 1970 (at least 1: the batch exists).
        let deltas = vec![
            ("created".to_owned(), created_now()),
            // Which callbacks it has (then 1, catch 2, finally 4), for `retry`; 8 marks a
            // batch whose callbacks are held again when they end.
            (CALLBACKS.to_owned(), callbacks_bits | 8),
        ];
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
    /// Members already running finish (they see
    /// [`is_cancelled`](CurrentBatch::is_cancelled)).
    ///
    /// Two parts. First the batch's cancel flag is set, in one step: from then on a worker
    /// that reserves a member skips it without running it (no attempt counted). Then the
    /// members waiting or delayed in a queue are removed at once, each counted cancelled in
    /// the step that removes it ([`Queue::cancel`](crate::Queue::cancel)), so `finally`
    /// is reached without a worker draining them: this looks through every queue's waiting
    /// and delayed jobs a page at a time, so it costs a listing of the store. Returns how
    /// many members it removed. If it is interrupted after the flag, the members left are
    /// skipped by the workers that reach them; on a store that cannot list its jobs or find
    /// them by id, only the flag is set.
    pub async fn cancel(queue: impl AsRef<Dispatcher>, id: &BatchId) -> Result<u64> {
        let queue = queue.as_ref();
        queue
            .apply(vec![Effect::Count {
                group: group(&id.0),
                deltas: vec![(CANCEL.to_owned(), 1)],
            }])
            .await?;
        let storage = queue.storage();
        let (Ok(inspect), Ok(_)) = (storage.inspect(), storage.track()) else {
            return Ok(0);
        };
        let mut removed = 0;
        for name in inspect.queues().await? {
            for state in [
                crate::storage::JobState::Waiting,
                crate::storage::JobState::Delayed,
            ] {
                let mut page = PageRequest::first(500);
                loop {
                    let jobs = inspect.jobs(&name, state, page).await?;
                    let members = jobs
                        .items
                        .iter()
                        .filter(|job| member_by_payload(&job.payload).as_ref() == Some(id));
                    for job in members {
                        if let crate::CancelOutcome::Cancelled(_) =
                            crate::status::cancel_listed(storage.as_ref(), &job.id, Some(job))
                                .await?
                        {
                            removed += 1;
                        }
                    }
                    match jobs.next {
                        Some(next) => page = PageRequest::after(next, 500),
                        None => break,
                    }
                }
            }
        }
        Ok(removed)
    }

    /// The progress of the batch `id`, through `queue` (a [`Queue`](crate::Queue) or a
    /// [`Dispatcher`]). [`Error::NotFound`] for a batch the store knows nothing of.
    pub async fn status(queue: impl AsRef<Dispatcher>, id: &BatchId) -> Result<BatchStatus> {
        Batch::find(queue, id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "batch",
                id: id.0.clone(),
            })
    }

    /// The progress of the batch `id`, `None` for a batch the store knows nothing of (one
    /// never made, or pruned): Laravel's `Bus::findBatch`.
    pub async fn find(queue: impl AsRef<Dispatcher>, id: &BatchId) -> Result<Option<BatchStatus>> {
        let counters = queue.as_ref().counters(&group(&id.0)).await?;
        let get = |name: &str| counters.get(name);
        let created = get("created");
        if created <= 0 {
            return Ok(None);
        }
        let count = |name: &str| counters.count(name);
        Ok(Some(BatchStatus {
            total: count("total"),
            pending: count("pending"),
            succeeded: count("succeeded"),
            failed: count("failed"),
            cancelled: count("cancelled"),
            is_cancelled: get(CANCEL) > 0,
            is_sealed: get("sealed") > 0,
            // Batches made before the time was kept count 1.
            created_at: created_at(created),
        }))
    }

    /// How many members of the batch `id` are running now: the reserved jobs of every queue
    /// whose envelope names the batch, looked at a page at a time. A snapshot, for
    /// operators (`runall batch show`); it costs a listing of every queue's reserved jobs,
    /// so it is not part of [`find`](Self::find). The counts of [`BatchStatus`] are kept by
    /// the steps that settle members, and reserving one changes none. Needs the store's
    /// [listing](crate::storage::Inspect): memcached refuses it (`NotSupported`).
    pub async fn running(queue: impl AsRef<Dispatcher>, id: &BatchId) -> Result<u64> {
        let inspect = queue.as_ref().storage().inspect()?;
        let mut running = 0;
        for name in inspect.queues().await? {
            let mut page = PageRequest::first(500);
            loop {
                let jobs = inspect
                    .jobs(&name, crate::storage::JobState::Reserved, page)
                    .await?;
                running += jobs
                    .items
                    .iter()
                    .filter(|job| member_by_payload(&job.payload).as_ref() == Some(id))
                    .count() as u64;
                match jobs.next {
                    Some(next) => page = PageRequest::after(next, 500),
                    None => break,
                }
            }
        }
        Ok(running)
    }

    /// The batches in the store, a page at a time, by id (the cursor is the last id): for
    /// operators (`runall batch list`). What listing costs on each driver is in its
    /// [`Groups::list`](crate::storage::Groups::list) docs.
    pub async fn list(
        queue: impl AsRef<Dispatcher>,
        page: PageRequest,
    ) -> Result<Page<(BatchId, BatchStatus)>> {
        let queue = queue.as_ref();
        let names = queue.groups()?.list(PREFIX, page).await?;
        let mut items = Vec::with_capacity(names.items.len());
        for name in names.items {
            let Some(id) = name.strip_prefix(PREFIX) else {
                continue;
            };
            // A group without `created` is a member's count that outlived a pruned batch.
            let id = BatchId(id.to_owned());
            if let Some(status) = Batch::find(queue, &id).await? {
                items.push((id, status));
            }
        }
        Ok(Page {
            items,
            next: names.next,
        })
    }

    /// Runs the failed members of the batch `id` again (Laravel's `queue:retry-batch`);
    /// returns how many. They are counted pending again, and the callbacks wait for them:
    /// `then` runs if every member has then succeeded (never when some were cancelled),
    /// `catch` if one fails again, `finally` once every member has ended. A batch that failed
    /// fast is no longer cancelled: its members not started yet run too. Members whose failed
    /// jobs were forgotten or pruned are not run again.
    ///
    /// Two steps: the counts and the callbacks, then each failed job back in its queue. If it
    /// is interrupted between them, the batch shows those members pending while they are
    /// still in the failed store: `runall failed retry ID` puts them back (it knows batch
    /// members). Refused while one of the batch's callbacks has been released and has not
    /// ended, and for a batch dispatched before this version, whose callbacks are not held
    /// again once they ran.
    pub async fn retry(queue: impl AsRef<Dispatcher>, id: &BatchId) -> Result<u64> {
        let queue = queue.as_ref();
        Batch::status(queue, id).await?;
        let members = Batch::failed_members(queue, &group(&id.0)).await?;
        let pushed = retry_members(queue, id, members).await?;
        Ok(pushed.iter().filter(|p| p.is_some()).count() as u64)
    }

    /// The batch `id`'s members in the failed store, each with its error, newest first: what
    /// a `catch` job (or an operator) reads to see what went wrong.
    pub async fn failures(queue: impl AsRef<Dispatcher>, id: &BatchId) -> Result<Vec<FailedJob>> {
        Batch::failed_members(queue.as_ref(), &group(&id.0)).await
    }

    /// The failed jobs of the batch `group`'s members: the whole failed store is read.
    async fn failed_members(queue: &Dispatcher, group: &str) -> Result<Vec<FailedJob>> {
        let failed = queue.storage().failed_store()?;
        let mut members = Vec::new();
        let mut page = PageRequest::first(500);
        loop {
            let got = failed.list(page).await?;
            for job in got.items {
                if member_of(&job).is_some_and(|batch| self::group(&batch.0) == group) {
                    members.push(job);
                }
            }
            match got.next {
                Some(next) => page = PageRequest::after(next, 500),
                None => return Ok(members),
            }
        }
    }

    /// Deletes the batches created before `before` that have finished (with `unfinished`,
    /// the others too: their callbacks not yet released are dropped and never run); returns
    /// how many. Laravel's `queue:prune-batches`. A member of a pruned unfinished batch
    /// still runs; its end is counted nowhere that is listed.
    pub async fn prune(
        queue: impl AsRef<Dispatcher>,
        before: SystemTime,
        unfinished: bool,
    ) -> Result<u64> {
        let queue = queue.as_ref();
        let groups = queue.groups()?;
        each_group(groups, PREFIX, async |name: &str, id: &str| {
            let id = BatchId(id.to_owned());
            let status = Batch::find(queue, &id).await?;
            let old = status
                .as_ref()
                .and_then(|s| s.created_at)
                .is_none_or(|at| at < before);
            let done = status.as_ref().is_none_or(BatchStatus::is_finished);
            if !old || !(done || unfinished) {
                return Ok(false);
            }
            // Its callbacks: not released yet (unfinished), or held again after they ran.
            let skips = CALLBACK_KINDS
                .into_iter()
                .map(|what| Effect::Skip {
                    key: format!("{name}:{what}"),
                })
                .collect();
            queue.apply(skips).await?;
            Ok(groups.remove(name).await? && status.is_some())
        })
        .await
    }
}

/// Calls `f` with each group whose name starts with `prefix` (its name, and the rest after
/// the prefix: the batch's or the workflow's id), a page at a time; returns how many calls
/// said yes. What the prunes walk.
pub(crate) async fn each_group(
    groups: &dyn crate::storage::Groups,
    prefix: &str,
    mut f: impl AsyncFnMut(&str, &str) -> Result<bool>,
) -> Result<u64> {
    let mut yes = 0;
    let mut page = PageRequest::first(500);
    loop {
        let names = groups.list(prefix, page).await?;
        for name in &names.items {
            if let Some(id) = name.strip_prefix(prefix) {
                if f(name, id).await? {
                    yes += 1;
                }
            }
        }
        match names.next {
            Some(next) => page = PageRequest::after(next, 500),
            None => return Ok(yes),
        }
    }
}

/// A batch's or a workflow's `created` counter for now: seconds since 1970, at least 1 (the
/// group exists).
pub(crate) fn created_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1))
}

/// The time a `created` counter holds; `None` for a group made before it was kept (0, or 1
/// for batches of that time).
pub(crate) fn created_at(counter: i64) -> Option<SystemTime> {
    u64::try_from(counter)
        .ok()
        .filter(|secs| *secs > 1)
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
}

/// What every batch's group name starts with.
const PREFIX: &str = "batch:";

/// A workflow's batch node, as [`Batch::node_effects`] stores it.
pub(crate) struct NodeBatch {
    pub(crate) id: BatchId,
    /// What stores it (its members held).
    pub(crate) effects: Vec<Effect>,
    /// The keys its members are held under, in order.
    pub(crate) members: Vec<String>,
    /// The queue of its first member.
    pub(crate) queue: String,
    /// The keys of its callbacks (held or not).
    pub(crate) callbacks: Vec<String>,
}

/// The counter deltas that count `n` members cancelled before they started, and cancel the
/// batch: a skipped batch node's members, which never run.
pub(crate) fn cancelled_unstarted(id: &BatchId, n: i64) -> Effect {
    Effect::Count {
        group: group(&id.0),
        deltas: vec![
            (CANCEL.to_owned(), 1),
            ("cancelled".to_owned(), n),
            ("pending".to_owned(), -n),
        ],
    }
}

/// The batch a failed job was a member of, read from its envelope.
pub(crate) fn member_of(job: &FailedJob) -> Option<BatchId> {
    member_by_payload(&job.payload)
}

/// The batch the job whose payload is `payload` is a member of (not a callback of).
fn member_by_payload(payload: &[u8]) -> Option<BatchId> {
    let gate = Envelope::decode(payload).ok()?.after?.skip_if?;
    let id = gate.group.strip_prefix(PREFIX)?;
    (gate.counter == CANCEL).then(|| BatchId(id.to_owned()))
}

/// Puts failed `members` of the batch `id` back in their queues, first counting them
/// pending again and making the callbacks wait for them (see [`Batch::retry`]): what the
/// failed store's retry gave for each.
pub(crate) async fn retry_members(
    queue: &Dispatcher,
    id: &BatchId,
    members: Vec<FailedJob>,
) -> Result<Vec<Option<crate::storage::Pushed>>> {
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let name = group(&id.0);
    let counters = queue.counters(&name).await?;
    let bits = counters.get(CALLBACKS);
    if bits & 8 == 0 {
        return Err(Error::Config(format!(
            "batch {id} was dispatched by an older version, which does not keep its callbacks \
             for a retry: retry its failed jobs with `runall failed retry` after pruning it"
        )));
    }
    let k = members.len() as i64;
    let mut effects = Vec::new();
    for (bit, what) in CALLBACK_KINDS.into_iter().enumerate() {
        if bits & (1 << bit) == 0 {
            continue;
        }
        let key = format!("{name}:{what}");
        let delta = match queue.groups()?.waiting(&key).await? {
            // `catch`, held again after it ran: released again by the next failure.
            Some(deps) if what == "catch" && deps >= crate::envelope::AGAIN / 2 => 1 - deps,
            // `catch` not released yet: no member failed since; nothing to change.
            Some(_) if what == "catch" => 0,
            // Held again after it ran: released again once the members run again have ended.
            Some(deps) if deps >= crate::envelope::AGAIN / 2 => k - deps,
            // Not released yet: it waits for them too.
            Some(_) => k,
            None => {
                return Err(Error::Config(format!(
                    "batch {id}'s `{what}` job has been released and has not ended yet: \
                     retry once it has"
                )))
            }
        };
        if delta != 0 {
            effects.push(Effect::Deps { key, delta });
        }
    }
    let mut deltas = vec![
        ("failed".to_owned(), -k),
        ("pending".to_owned(), k),
        (CANCEL.to_owned(), -counters.get(CANCEL)),
    ];
    if bits & 1 != 0 {
        deltas.push(("skip:then".to_owned(), -k));
    }
    effects.push(Effect::Count {
        group: name,
        deltas,
    });
    queue.apply(effects).await?;
    let failed = queue.storage().failed_store()?;
    let mut pushed = Vec::with_capacity(members.len());
    for member in members {
        pushed.push(failed.retry(&member.id).await?);
    }
    Ok(pushed)
}

fn group(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// The counter saying which callbacks a batch has.
const CALLBACKS: &str = "callbacks";

/// The callbacks, in the bit order of [`CALLBACKS`].
const CALLBACK_KINDS: [&str; 3] = ["then", "catch", "finally"];

/// What a batch's members do when they end, by the callbacks it has.
#[derive(Debug, Clone)]
struct Plan {
    id: String,
    then: bool,
    catch: bool,
    finally: bool,
    allow_failures: bool,
}

/// Fills a batch member's `after` ([`After::member`], written short) with its steps and its
/// skip gate, derived from its batch's id and callbacks.
pub(crate) fn expand_member(after: &mut After, member: &Member) {
    let plan = Plan {
        id: member.id.clone(),
        then: member.callbacks & 1 != 0,
        catch: member.callbacks & 2 != 0,
        finally: member.callbacks & 4 != 0,
        allow_failures: member.allow_failures,
    };
    after.succeeded = plan.ended(Ended::Succeeded);
    after.failed = plan.ended(Ended::Failed);
    after.skipped = plan.ended(Ended::Cancelled);
    after.skip_if = Some(SkipIf {
        group: group(&plan.id),
        counter: CANCEL.to_owned(),
        loose: true,
    });
}

impl Plan {
    /// What every member's envelope carries.
    fn member(&self) -> Member {
        Member {
            id: self.id.clone(),
            callbacks: u8::from(self.then)
                | (u8::from(self.catch) << 1)
                | (u8::from(self.finally) << 2),
            allow_failures: self.allow_failures,
        }
    }

    fn key(&self, what: &str) -> String {
        format!("batch:{}:{what}", self.id)
    }

    fn count(&self, deltas: &[(&str, i64)]) -> Step {
        Step::Count {
            group: group(&self.id),
            deltas: deltas.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    /// The dependencies of `then` and `finally` (which wait for every member and the seal)
    /// changed by `delta`.
    fn callbacks(&self, delta: i64) -> Vec<Effect> {
        [("then", self.then), ("finally", self.finally)]
            .into_iter()
            .filter(|(_, has)| *has)
            .map(|(what, _)| Effect::Deps {
                key: self.key(what),
                delta,
            })
            .collect()
    }

    /// What a member's end does to the callbacks: `then` and `finally` count it down; a
    /// failure or a cancel marks `then` to be skipped; a failure counts `catch` down (its
    /// one dependency: the first failure releases it, later ones count down the copy held
    /// again after it ran, which waits for [`AGAIN`](crate::envelope::AGAIN)).
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
        if self.catch && how == Ended::Failed {
            steps.push(deps("catch", -1));
        }
        if self.finally {
            steps.push(deps("finally", -1));
        }
        match how {
            Ended::Succeeded => steps.push(self.count(&[("pending", -1), ("succeeded", 1)])),
            Ended::Failed => {
                let mut deltas = vec![("pending", -1), ("failed", 1)];
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
        // Written short: the steps are derived from it when the envelope is read.
        let after = After {
            member: Some(self.plan.member()),
            ..After::default()
        };
        for job in jobs {
            let job = job.encode_with(settings, Some(after.clone()))?;
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
        let recorded = self
            .dispatcher
            .fake()
            .map(|fake| (fake.clone(), effects.clone()));
        self.dispatcher.apply(effects).await?;
        if let Some((fake, effects)) = recorded {
            let settings = self.dispatcher.settings();
            fake.record_batch(&self.id, self.plan.allow_failures, &effects, settings);
        }
        Ok(())
    }
}

/// The batch of a running job, from [`JobContext::batch`](crate::JobContext::batch): a member
/// adds members to it while it runs (Laravel's `$this->batch()->add(..)`) or sees whether it
/// was cancelled; a callback (`then`, `catch`, `finally`) reads its progress and its
/// [`failures`](Self::failures).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
/// use queue_core::{Batch, JobError, Queue, WorkerOptions};
/// use serde_json::json;
///
/// let queue = Queue::connect("memory://").await?;
/// let q = queue.clone();
/// // A run's first member finds its pages and adds one member per page.
/// queue.listen("sync-run", move |_: serde_json::Value, ctx| {
///     let q = q.clone();
///     async move {
///         let batch = ctx.batch().expect("a member");
///         if batch.is_cancelled().await? {
///             return Ok(());
///         }
///         let pages = (1..=3).map(|page| q.dispatch_named("sync-page", json!({ "page": page })));
///         batch.add_many(pages).await?;
///         Ok::<_, JobError>(())
///     }
/// });
/// queue.listen("sync-page", |_: serde_json::Value, _ctx| async { Ok(()) });
/// let id = Batch::new()
///     .add(queue.dispatch_named("sync-run", json!({})))
///     .via(&queue)
///     .dispatch()
///     .await?;
/// queue.worker(WorkerOptions::default().stop_when_empty()).run().await?;
/// let status = Batch::status(&queue, &id).await?;
/// assert_eq!((status.total, status.succeeded, status.is_finished()), (4, 4, true));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CurrentBatch {
    id: BatchId,
    /// A member, not a callback.
    member: bool,
    /// The member's own `after`: what every member of this batch does when it ends.
    after: Arc<After>,
    dispatcher: Dispatcher,
    /// The worker's copies of group counters, refreshed by each read of the cancel flag so
    /// that the members it starts next see what this one saw.
    gates: Arc<Gates>,
}

impl CurrentBatch {
    /// The batch of a member whose envelope carries `after`, if it is one.
    pub(crate) fn of(
        after: &After,
        dispatcher: &Dispatcher,
        gates: &Arc<Gates>,
    ) -> Option<CurrentBatch> {
        // A member is gated by the cancel flag; a callback is held again under
        // `batch:ID:KIND`.
        let (id, member) = match (&after.skip_if, &after.hold_again) {
            (Some(gate), _) if gate.counter == CANCEL => (gate.group.strip_prefix(PREFIX)?, true),
            (_, Some(key)) => {
                let (id, kind) = key.strip_prefix(PREFIX)?.rsplit_once(':')?;
                CALLBACK_KINDS.contains(&kind).then_some((id, false))?
            }
            _ => return None,
        };
        Some(CurrentBatch {
            id: BatchId(id.to_owned()),
            member,
            after: Arc::new(after.clone()),
            dispatcher: dispatcher.clone(),
            gates: gates.clone(),
        })
    }

    /// Whether the job is one of the batch's members (not one of its callbacks).
    pub fn is_member(&self) -> bool {
        self.member
    }

    /// The batch's members in the failed store, each with its error, newest first
    /// ([`Batch::failures`]): what a `catch` job reads to see what went wrong.
    pub async fn failures(&self) -> Result<Vec<FailedJob>> {
        Batch::failures(&self.dispatcher, &self.id).await
    }

    /// The batch's id.
    pub fn id(&self) -> &BatchId {
        &self.id
    }

    /// The dispatcher the job runs with.
    pub(crate) fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The batch's progress.
    pub async fn status(&self) -> Result<BatchStatus> {
        Batch::status(&self.dispatcher, &self.id).await
    }

    /// Whether the batch was cancelled ([`Batch::cancel`], or a member failing fast): a
    /// long member may stop early. Read from the store at each call.
    pub async fn is_cancelled(&self) -> Result<bool> {
        let group = group(&self.id.0);
        let counters = self.dispatcher.counters(&group).await?;
        let cancelled = counters.get(CANCEL) > 0;
        self.gates.store(&group, counters.into_inner());
        Ok(cancelled)
    }

    /// Adds members to the batch in one atomic step, counted before this member can end (so
    /// the batch cannot finish without them). Refused once the batch is cancelled. If this
    /// member runs again (a retry), its adds run again too, as any side effect of its body:
    /// each added job is counted, so the counts stay exact.
    pub async fn add_many<J: Into<PendingDispatch>>(
        &self,
        jobs: impl IntoIterator<Item = J>,
    ) -> Result<()> {
        let jobs: Vec<PendingDispatch> = jobs.into_iter().map(Into::into).collect();
        if jobs.is_empty() {
            return Ok(());
        }
        if !self.member {
            return Err(Error::Config(format!(
                "batch {}: a callback cannot add members (only a running member can)",
                self.id
            )));
        }
        if self.is_cancelled().await? {
            return Err(Error::Config(format!(
                "batch {} is cancelled: members cannot be added to it",
                self.id
            )));
        }
        let n = jobs.len() as i64;
        let settings = self.dispatcher.settings();
        let mut effects = Vec::with_capacity(jobs.len() + 4);
        // A member's `after` is written short, as the batch wrote it.
        let after = match &self.after.member {
            Some(member) => After {
                member: Some(member.clone()),
                ..After::default()
            },
            None => (*self.after).clone(),
        };
        for job in jobs {
            let job = job.encode_with(settings, Some(after.clone()))?;
            let key = format!("{}:m{}", group(&self.id.0), new_token());
            effects.push(Effect::Push(job.unique(Unique::new(key))));
        }
        // Each callback a member's success counts down waits for the new ones too.
        for step in &self.after.succeeded {
            if let Step::Deps { key, .. } = step {
                effects.push(Effect::Deps {
                    key: key.clone(),
                    delta: n,
                });
            }
        }
        effects.push(Effect::Count {
            group: group(&self.id.0),
            deltas: vec![("total".to_owned(), n), ("pending".to_owned(), n)],
        });
        self.dispatcher.apply(effects).await
    }

    /// Adds one member (see [`add_many`](Self::add_many)).
    pub async fn add(&self, job: impl Into<PendingDispatch>) -> Result<()> {
        self.add_many([job]).await
    }
}
