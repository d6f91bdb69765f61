//! [`Queue`]: a connection to a store, the thing you dispatch through and run workers on.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::dispatch::PendingDispatch;
use crate::dispatcher::{self, Dispatcher, QueueSettings};
use crate::error::{Error, Result};
use crate::job::{Job, JobContext, JobError};
use crate::registry::Registry;
use crate::schedule::{CodeSchedules, Schedule, ScheduleState};
use crate::storage::{self, ConnectOptions, MemoryStorage, Pushed, Storage};
use crate::testing::{Fake, Inline, Mode};
use crate::worker::{Worker, WorkerOptions};

/// A connection to a store: dispatch through it, listen on it, run workers on it.
///
/// Cheap to clone. Set one as the process-wide default at start-up ([`Queue::set_default`]),
/// and typed dispatches (`SendEmail::dispatch(job).await`) go through it; pass another with
/// `.via(&queue)`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
/// use queue_core::{Queue, StorageExt};
/// use serde_json::json;
///
/// let queue = Queue::connect("memory://").await?;
/// queue.listen("send-notification", |payload: serde_json::Value, _ctx| async move {
///     println!("notify {}", payload["to"]);
///     Ok(())
/// });
/// queue.dispatch_named("send-notification", json!({"to": "a@b.c"})).on_queue("low").await?;
/// assert_eq!(queue.storage().inspect()?.size("low").await?.waiting, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Queue {
    dispatcher: Dispatcher,
    listeners: Arc<RwLock<Registry>>,
    schedules: Arc<RwLock<CodeSchedules>>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("dispatcher", &self.dispatcher)
            .field("fake", &self.dispatcher.fake().is_some())
            .field("inline", &self.dispatcher.is_inline())
            .finish_non_exhaustive()
    }
}

impl AsRef<Dispatcher> for Queue {
    fn as_ref(&self) -> &Dispatcher {
        &self.dispatcher
    }
}

impl Queue {
    /// A queue over a storage.
    pub fn new(storage: impl Storage) -> Self {
        Self::from_arc(Arc::new(storage))
    }

    /// A queue over a shared storage.
    pub fn from_arc(storage: Arc<dyn Storage>) -> Self {
        Self::with_settings(storage, QueueSettings::default())
    }

    /// A queue with its dispatch settings.
    pub fn with_settings(storage: Arc<dyn Storage>, settings: QueueSettings) -> Self {
        Queue {
            dispatcher: Dispatcher::new(storage, settings),
            listeners: Arc::default(),
            schedules: Arc::default(),
        }
    }

    /// Connects by URL (`sqlite://jobs.db`, `redis://...`, `memory://`) through the drivers
    /// linked into the binary, creating tables or directories if they are missing.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, ConnectOptions::default()).await
    }

    /// Connects by URL with options (table names), creating what is missing as
    /// [`connect`](Self::connect) does.
    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Self> {
        let options = options.migrate(true);
        Ok(Self::from_arc(storage::connect(url, options).await?))
    }

    /// A queue for an application's tests (Laravel's `Queue::fake()` and `Bus::fake()`): an
    /// in-memory store that records every dispatch and runs nothing, made the default of the
    /// current thread. Assert on what was dispatched with
    /// [`assert_dispatched`](Self::assert_dispatched) and its siblings, or read it with
    /// [`dispatched_jobs`](Self::dispatched_jobs), [`chains`](Self::chains) and
    /// [`batches`](Self::batches).
    ///
    /// Each test sees only its own dispatches, also when `cargo test` runs tests in parallel
    /// threads of one process: a `#[test]` or `#[tokio::test]` body runs on its own thread.
    /// Work spawned onto other threads (a multi-threaded runtime) does not see a thread's
    /// fake: run it inside [`Queue::scope`].
    ///
    /// What counts as dispatched is what went to a queue: a job, each member of a batch, the
    /// first link of a chain, a workflow's nodes with no edge into them. A chain's other
    /// links and a batch's callbacks wait for jobs that never run here; they are in
    /// [`chains`](Self::chains) and [`batches`](Self::batches).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use queue_core::{Handle, Job, JobContext, JobError, Queue};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, Job)]
    /// struct SendInvoice { order: u64 }
    /// # impl Handle for SendInvoice {
    /// #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
    /// # }
    ///
    /// let queue = Queue::fake();
    /// // The code under test dispatches through the default queue: this thread's fake.
    /// SendInvoice::dispatch(SendInvoice { order: 7 }).on_queue("billing").await?;
    ///
    /// queue.assert_dispatched::<SendInvoice>();
    /// queue.assert_dispatched_with(|job: &SendInvoice| job.order == 7);
    /// queue.assert_dispatched_on::<SendInvoice>("billing");
    /// queue.assert_dispatched_times::<SendInvoice>(1);
    /// # Ok(()) }
    /// ```
    pub fn fake() -> Self {
        Self::faking(None)
    }

    /// A fake queue ([`Queue::fake`]) that records every job except those of type `J`,
    /// which are dispatched for real through `real` (Laravel's `Queue::fake()->except(..)`):
    /// stored in its store, or run at once if `real` is an [inline](Self::inline) queue.
    /// Add more types with [`except`](Self::except). The jobs that go for real are not
    /// recorded: assert on them through `real`. Chains, batches and workflows are recorded
    /// whole, whatever their jobs.
    ///
    /// A job run for real that dispatches jobs itself dispatches them through the default
    /// queue of the code that dispatched it: this fake, which records them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use queue_core::{Handle, Job, JobContext, JobError, Queue, StorageExt};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, Job)]
    /// struct ChargeCard { cents: u64 }
    /// # impl Handle for ChargeCard {
    /// #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// #[derive(Serialize, Deserialize, Job)]
    /// struct SendReceipt { to: String }
    /// # impl Handle for SendReceipt {
    /// #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
    /// # }
    ///
    /// let real = Queue::connect("memory://").await?;
    /// let queue = Queue::fake_except::<ChargeCard>(&real);
    /// ChargeCard { cents: 500 }.dispatch().await?;
    /// SendReceipt { to: "a@b.c".into() }.dispatch().await?;
    ///
    /// queue.assert_not_dispatched::<ChargeCard>(); // it went to `real`
    /// queue.assert_dispatched::<SendReceipt>();
    /// assert_eq!(real.storage().inspect()?.size("default").await?.waiting, 1);
    /// # Ok(()) }
    /// ```
    pub fn fake_except<J: Job>(real: impl AsRef<Dispatcher>) -> Self {
        Self::faking(Some(real.as_ref().clone())).except::<J>()
    }

    /// Also dispatches the jobs of type `J` for real, on a queue made with
    /// [`Queue::fake_except`].
    ///
    /// # Panics
    ///
    /// On any other queue.
    #[track_caller]
    pub fn except<J: Job>(self) -> Self {
        self.except_named(J::NAME)
    }

    /// Also dispatches the jobs named `name` for real (string-named jobs, listeners), on a
    /// queue made with [`Queue::fake_except`].
    ///
    /// # Panics
    ///
    /// On any other queue.
    #[track_caller]
    pub fn except_named(self, name: &str) -> Self {
        match self.dispatcher.fake() {
            Some(fake) if fake.has_real() => fake.except(name),
            _ => panic!(
                "Queue::except works only on a queue made with Queue::fake_except(&real_queue)"
            ),
        }
        self
    }

    fn faking(real: Option<Dispatcher>) -> Self {
        let memory = MemoryStorage::recording();
        let fake = Arc::new(Fake::new(memory.clone(), real));
        let queue = Queue {
            dispatcher: Dispatcher::with_mode(
                Arc::new(memory),
                QueueSettings::default(),
                Some(Mode::Fake(fake)),
            ),
            listeners: Arc::default(),
            schedules: Arc::default(),
        };
        dispatcher::set_thread_default(Some(queue.dispatcher.clone()));
        queue
    }

    /// A queue that runs every job when it is dispatched, before the dispatch returns
    /// (Laravel's `sync` driver), for integration tests; made the default of the current
    /// thread, as [`Queue::fake`] is. It runs the `#[derive(Job)]` types linked into the
    /// binary and the listeners registered on it with [`listen`](Self::listen).
    ///
    /// A job runs through the worker's own code, over an in-memory store, with these
    /// differences, all so that a dispatch is over when it returns:
    ///
    /// - **Delays are ignored**: `.delay(..)`, `dispatch_at` and the delays of chain links run
    ///   the job at once.
    /// - **One attempt, no retries**: a job whose attempt fails (returns an error, panics,
    ///   times out) moves to the inline queue's failed store, and its dispatch returns
    ///   [`Error::JobFailed`] with the job's error. `tries`, `backoff` and `retry_until` do
    ///   not apply. Chains, batches and workflows run to their end, their `catch` and
    ///   `finally` jobs included; their dispatch returns `Error::JobFailed` if one of their
    ///   jobs failed.
    /// - **No locks and no limits**: `without_overlapping` and rate or concurrency limits are
    ///   not applied. Unique keys are.
    /// - A job that dispatches jobs runs them inside its own body, with the default queue of
    ///   the code that dispatched it.
    /// - A job that puts itself back (`ctx.release(..)`, a rate limit) stays in the store,
    ///   not run again. A name no job type or listener has fails the dispatch.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::time::Duration;
    /// use queue_core::{Error, Handle, Job, JobContext, JobError, Queue};
    /// use serde::{Deserialize, Serialize};
    ///
    /// static SENT: AtomicU32 = AtomicU32::new(0);
    ///
    /// #[derive(Serialize, Deserialize, Job)]
    /// #[job(tries = 5)]
    /// struct Welcome { to: String }
    ///
    /// impl Handle for Welcome {
    ///     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
    ///         if self.to.is_empty() {
    ///             return Err(JobError::msg("no address"));
    ///         }
    ///         SENT.fetch_add(1, Ordering::SeqCst);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let queue = Queue::inline();
    /// Welcome { to: "a@b.c".into() }.dispatch().delay(Duration::from_secs(3600)).await?;
    /// assert_eq!(SENT.load(Ordering::SeqCst), 1, "ran at once, its delay ignored");
    ///
    /// let failed = Welcome { to: String::new() }.dispatch().await;
    /// assert!(matches!(failed, Err(Error::JobFailed { reason, .. }) if reason.contains("no address")));
    ///
    /// queue.listen("ping", |n: u32, _ctx| async move {
    ///     assert_eq!(n, 7);
    ///     Ok(())
    /// });
    /// queue.dispatch_named("ping", serde_json::json!(7)).await?;
    /// # Ok(()) }
    /// ```
    pub fn inline() -> Self {
        let memory = MemoryStorage::new();
        let listeners: Arc<RwLock<Registry>> = Arc::default();
        let inline = Arc::new(Inline::new(memory.clone(), listeners.clone()));
        let queue = Queue {
            dispatcher: Dispatcher::with_mode(
                Arc::new(memory),
                QueueSettings::default(),
                Some(Mode::Inline(inline)),
            ),
            listeners,
            schedules: Arc::default(),
        };
        dispatcher::set_thread_default(Some(queue.dispatcher.clone()));
        queue
    }

    /// Runs `future` with this queue as the default of every dispatch made inside it (in any
    /// task it awaits, on any thread), whatever the thread and process defaults are.
    pub async fn scope<F: Future>(&self, future: F) -> F::Output {
        dispatcher::scope(self.dispatcher.clone(), future).await
    }

    /// Makes `queue` the process-wide default that dispatches without `.via(..)` use (unless
    /// a [`scope`](Self::scope) or this thread's [`fake`](Self::fake) says otherwise).
    pub fn set_default(queue: Queue) {
        dispatcher::set_process_default(queue.dispatcher);
    }

    /// The dispatcher a dispatch without `.via(..)` would use here and now.
    pub fn default_dispatcher() -> Result<Dispatcher> {
        dispatcher::current()
    }

    /// The storage behind this queue.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        self.dispatcher.storage()
    }

    /// The dispatch settings.
    pub fn settings(&self) -> &QueueSettings {
        self.dispatcher.settings()
    }

    /// The dispatcher (store and settings) of this queue.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Registers a string-named job: `handler` runs for every job dispatched under `name`
    /// (with [`Queue::dispatch_named`]), with the payload decoded into `P` (for example
    /// `serde_json::Value`). Workers started from this queue run it.
    pub fn listen<P, F, Fut>(&self, name: &str, handler: F)
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(P, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        self.listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .listen(name, handler);
    }

    /// The job types and listeners a worker of this queue runs.
    pub fn registry(&self) -> Registry {
        self.listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Names of the listeners registered on this queue.
    pub fn listener_names(&self) -> Vec<String> {
        self.registry().listener_names()
    }

    /// Pauses `queue` for every worker of the store (`runall pause QUEUE`): within about a
    /// second, no worker reserves its jobs until [`resume`](Self::resume); jobs already
    /// reserved finish. Waiting jobs keep their order and no attempt is spent. Returns
    /// whether it was running. Needs the store's group counters (`NotSupported` on
    /// memcached and Redis Cluster).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// let queue = queue_core::Queue::connect("memory://").await?;
    /// assert!(queue.pause("emails").await?);
    /// assert_eq!(queue.paused().await?, ["emails"]);
    /// assert!(queue.resume("emails").await?);
    /// assert!(queue.paused().await?.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn pause(&self, queue: &str) -> Result<bool> {
        crate::pause::set(self.storage().as_ref(), queue, true).await
    }

    /// Resumes a paused queue (`runall resume QUEUE`); returns whether it was paused.
    pub async fn resume(&self, queue: &str) -> Result<bool> {
        crate::pause::set(self.storage().as_ref(), queue, false).await
    }

    /// The queues paused now, sorted.
    pub async fn paused(&self) -> Result<Vec<String>> {
        Ok(crate::pause::paused(self.storage().as_ref())
            .await?
            .into_iter()
            .collect())
    }

    /// The status of the job with this id: where it is in its life, its attempts, progress,
    /// output and last error, and when it started and ended. `None` when no job with that
    /// id is known: it never existed, or it ended and its status was not kept (a succeeded
    /// job's status is kept only by a worker with
    /// [`keep_finished`](WorkerOptions::keep_finished)) or has expired. `NotSupported` on a
    /// store without jobs by id. See [`JobStatus`](crate::JobStatus).
    pub async fn job(&self, id: &storage::JobId) -> Result<Option<crate::JobStatus>> {
        crate::status::find(self.storage().as_ref(), id).await
    }

    /// Cancels the job with this id: a job in its queue (pending, scheduled, retrying) is
    /// removed at once and never runs; a running one is stopped by its worker within a
    /// heartbeat, whichever worker runs it. See [`CancelOutcome`](crate::CancelOutcome).
    pub async fn cancel(&self, id: &storage::JobId) -> Result<crate::CancelOutcome> {
        crate::status::cancel(self.storage().as_ref(), id).await
    }

    /// Deletes the waiting and delayed jobs of `queue_name` and returns how many (running
    /// ones are left to their workers): what `runall clear` and the dashboard's Clear do.
    ///
    /// A job that is part of a batch, a chain, a workflow or a `BufferOne` schedule's runs is
    /// removed as [`cancel`](Self::cancel) removes it, so what it belonged to ends it (its
    /// batch counts it cancelled, its chain or workflow skips what depended on it, its
    /// schedule's run ends) instead of waiting for it for ever. Those are found by reading
    /// the queue's jobs a page at a time, which is what this costs beyond the store's own
    /// [`clear`](storage::Inspect::clear) (that deletes the rest, in chunks, and alone would
    /// leave them waiting). A job a worker takes between the reading and its removal is
    /// asked to stop, as a cancel asks. On a store that cannot list its jobs or find them by
    /// id (memcached lists none; it has no compositions either) only the store's clear runs.
    pub async fn clear(&self, queue_name: &str) -> Result<u64> {
        use storage::StorageExt;
        let storage = self.storage();
        let inspect = storage.inspect()?;
        let mut ended = 0;
        if storage.capabilities().track.is_some() {
            for state in [storage::JobState::Waiting, storage::JobState::Delayed] {
                let mut page = storage::PageRequest::first(500);
                loop {
                    let listed = match inspect.jobs(queue_name, state, page).await {
                        Ok(listed) => listed,
                        Err(crate::Error::NotSupported { .. }) => break,
                        Err(e) => return Err(e),
                    };
                    for job in &listed.items {
                        if crate::status::composition_effects(job).is_empty() {
                            continue;
                        }
                        let outcome =
                            crate::status::cancel_listed(storage.as_ref(), &job.id, Some(job))
                                .await?;
                        if matches!(outcome, crate::CancelOutcome::Cancelled(_)) {
                            ended += 1;
                        }
                    }
                    match listed.next {
                        Some(next) => page = storage::PageRequest::after(next, 500),
                        None => break,
                    }
                }
            }
        }
        Ok(ended + inspect.clear(queue_name).await?)
    }

    /// Puts the failed job `id` back on its queue, as `runall failed retry ID` does: a batch
    /// member is counted pending in its batch again, and the batch's callbacks wait for it
    /// (see [`Batch::retry`](crate::Batch::retry)); any other job is pushed again as
    /// [`FailedStore::retry`](storage::FailedStore::retry) does. `None` when the failed store
    /// holds no job `id`; [`Pushed::Duplicate`] when another job holds its unique key (the
    /// failed job stays).
    pub async fn retry_failed(&self, id: &str) -> Result<Option<Pushed>> {
        let store = storage::StorageExt::failed_store(self.storage().as_ref())?;
        let Some(job) = store.get(id).await? else {
            return Ok(None);
        };
        match crate::batch::member_of(&job) {
            Some(batch) => Ok(
                crate::batch::retry_members(&self.dispatcher, &batch, vec![job])
                    .await?
                    .pop()
                    .flatten(),
            ),
            None => store.retry(id).await,
        }
    }

    /// The workers of this store that are alive now, sorted by id: each live worker process
    /// keeps an entry in the store's worker registry ([`WorkerInfo`](crate::WorkerInfo),
    /// written every [`BEAT_EVERY`](crate::worker::BEAT_EVERY) and kept for
    /// [`BEAT_TTL`](crate::worker::BEAT_TTL)), removed when it stops. Entries that cannot be
    /// decoded are skipped. `NotSupported` on a store without the worker registry (every
    /// driver in this workspace has it; see each driver's docs for how it keeps it).
    pub async fn workers(&self) -> Result<Vec<crate::WorkerInfo>> {
        use crate::storage::StorageExt;
        let entries = self.storage().workers()?.workers().await?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, entry)| crate::WorkerInfo::decode(&id, &entry))
            .collect())
    }

    /// The job events of this queue from now on: its dispatches and what its workers do
    /// (see [`JobEvent`](crate::JobEvent)). A listener that falls far behind loses the
    /// oldest events; it never slows a worker.
    pub fn events(&self) -> crate::EventStream {
        self.dispatcher.events().subscribe()
    }

    /// Runs `handler` for every event of `kind` (Laravel's `Queue::failing(fn)` is
    /// `queue.on(JobEventKind::Failed, ..)`), in a task of its own, so a slow handler never
    /// slows a worker. Call it inside a Tokio runtime, before the worker starts.
    pub fn on(
        &self,
        kind: crate::JobEventKind,
        handler: impl Fn(&crate::JobEvent) + Send + Sync + 'static,
    ) -> Result<()> {
        crate::events::on(self.dispatcher.events(), kind, handler)
    }

    /// Dispatches a typed job through this queue (the same as `job.dispatch().via(&queue)`).
    pub fn dispatch<J: Job>(&self, job: J) -> PendingDispatch {
        job.dispatch().via(self)
    }

    /// Starts a dispatch of a string-named job with a JSON payload.
    pub fn dispatch_named(&self, name: &str, payload: Value) -> PendingDispatch {
        PendingDispatch::named(name, &payload).via(self)
    }

    /// Dispatches many jobs in one round trip to the store (one transaction, one pipeline).
    /// Each keeps its own queue, delay and options; a `.via(..)` on them is ignored.
    ///
    /// Returns one [`Dispatched`](crate::Dispatched) per job, in order. A unique job whose
    /// key is held (by a job stored before, or by an earlier one of these) is reported
    /// [`Duplicate`](Pushed::Duplicate) and not stored, whatever its
    /// [`OnConflict`](crate::OnConflict): the others are stored all the same.
    pub async fn dispatch_many(
        &self,
        jobs: impl IntoIterator<Item = PendingDispatch>,
    ) -> Result<Vec<Pushed>> {
        let capabilities = self.storage().capabilities();
        let jobs = jobs
            .into_iter()
            .map(|job| {
                job.check_capabilities(&capabilities)?;
                job.into_new_job(self.settings())
            })
            .collect::<Result<Vec<_>>>()?;
        if !capabilities.claims && jobs.iter().any(|job| job.unique.is_some()) {
            return Err(crate::Error::NotSupported {
                driver: capabilities.driver,
                operation: "unique jobs",
            });
        }
        if !capabilities.replace
            && jobs
                .iter()
                .any(|j| j.unique.as_ref().is_some_and(|u| u.replace))
        {
            return Err(crate::Error::NotSupported {
                driver: capabilities.driver,
                operation: "replacing a queued job (debounce, on_conflict = replace)",
            });
        }
        self.dispatcher.push(jobs).await
    }

    /// A worker on this queue, running the registered job types and this queue's listeners,
    /// and claiming the ticks of its [schedules](Self::schedule) (unless
    /// [`WorkerOptions::no_schedules`]).
    pub fn worker(&self, options: WorkerOptions) -> Worker {
        Worker::new(self.storage().clone(), self.registry(), options)
            .with_dispatcher(self.dispatcher.clone())
            .with_schedules(self.schedule_list())
    }

    /// Adds a recurring schedule, run by this queue's workers (by every worker of every
    /// process that adds it: each tick is claimed by exactly one). Refused with the reason
    /// for a bad cron expression or time zone, a missing job, or an id taken already.
    ///
    /// [`Overlap::BufferOne`](crate::Overlap::BufferOne) is refused with
    /// [`Error::NotSupported`] on a store without group counters (memcached, Redis Cluster).
    pub fn schedule(&self, schedule: Schedule) -> Result<()> {
        if schedule.overlap_policy() == crate::Overlap::BufferOne {
            self.dispatcher
                .needs_groups("Overlap::BufferOne (it keeps its runs in group counters)")?;
        }
        self.schedules
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add(schedule)
    }

    /// The schedules added to this queue.
    pub fn schedules(&self) -> Vec<Schedule> {
        self.schedule_list().iter().map(|s| (**s).clone()).collect()
    }

    pub(crate) fn schedule_list(&self) -> Vec<Arc<Schedule>> {
        self.schedules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    fn find_schedule(&self, id: &str) -> Result<Arc<Schedule>> {
        self.schedule_list()
            .into_iter()
            .find(|s| s.id_str() == id)
            .ok_or_else(|| Error::NotFound {
                what: "schedule",
                id: id.to_owned(),
            })
    }

    /// A schedule's state in the store: its next and last tick, the ticks claimed and
    /// missed, whether it is paused. A schedule of this queue, or a
    /// [stored](crate::Schedules) one.
    pub async fn schedule_state(&self, id: &str) -> Result<ScheduleState> {
        match self.find_schedule(id) {
            Ok(schedule) => crate::schedule::state(&self.dispatcher, &schedule).await,
            Err(not_found) => {
                if crate::schedule::is_stored(&self.dispatcher, id).await? {
                    // Its timing in words, where its definition is readable.
                    let when = match crate::schedule::stored_definition(&self.dispatcher, id).await
                    {
                        Ok(Some(schedule)) => format!("{} (stored)", schedule.describe()),
                        _ => "stored".to_owned(),
                    };
                    crate::schedule::state_of(&self.dispatcher, id, when).await
                } else {
                    Err(not_found)
                }
            }
        }
    }

    /// The ids of the [stored schedules](crate::Schedules), a page at a time.
    pub async fn stored_schedules(
        &self,
        page: storage::PageRequest,
    ) -> Result<storage::Page<String>> {
        crate::schedule::stored_ids(&self.dispatcher, page).await
    }

    /// Pauses a schedule for every worker until [`resume_schedule`](Self::resume_schedule):
    /// its ticks pass unclaimed.
    pub async fn pause_schedule(&self, id: &str) -> Result<()> {
        self.schedule_state(id).await?;
        crate::schedule::set_paused(&self.dispatcher, id, true).await
    }

    /// Resumes a paused schedule; the ticks it missed are caught up as its
    /// [`CatchUp`](crate::CatchUp) says.
    pub async fn resume_schedule(&self, id: &str) -> Result<()> {
        self.schedule_state(id).await?;
        crate::schedule::set_paused(&self.dispatcher, id, false).await
    }

    /// Pushes one run of a schedule now, outside its ticks: a schedule of this queue, or a
    /// [stored](crate::Schedules) one. Its overlap policy holds, as for a tick: returns
    /// `false` when it held the run back ([`Overlap::Skip`](crate::Overlap::Skip): a run
    /// is queued or running; [`Overlap::BufferOne`](crate::Overlap::BufferOne): one is
    /// running and another is buffered already). With `BufferOne` and a run in progress,
    /// the run is buffered (`true`): it starts when that run ends. Not counted in the
    /// schedule's ticks, and not held back by a pause or its end.
    pub async fn run_schedule_now(&self, id: &str) -> Result<bool> {
        let schedule = match self.find_schedule(id) {
            Ok(schedule) => schedule,
            Err(not_found) => {
                let storage = self.storage();
                if storage.capabilities().groups.is_none() {
                    return Err(not_found);
                }
                match crate::schedule::stored_definition(&self.dispatcher, id).await? {
                    Some(schedule) => Arc::new(schedule),
                    None => return Err(not_found),
                }
            }
        };
        crate::schedule::run_now(&self.dispatcher, &schedule).await
    }
}
