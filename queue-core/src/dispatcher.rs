//! [`Dispatcher`]: what a dispatch goes through (a store, its dispatch settings, the queue size
//! guard), and which one a dispatch without `.via(..)` uses.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::storage::{Effect, NewJob, Pushed, Storage, StorageExt};
use crate::testing::{self, Fake, Mode, Work};

/// Settings of a queue connection that apply when dispatching.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueSettings {
    /// The largest encoded job accepted at dispatch, in bytes (1 MB by default).
    pub max_payload: usize,
    /// Per-queue size limits: a dispatch to a queue holding this many jobs fails with
    /// [`Error::QueueFull`]. See [`Dispatcher`] for how exact the limit is.
    pub max_queue_size: HashMap<String, u64>,
    /// The keys of encrypted payloads (`#[job(encrypted)]`): by default those of the
    /// `RUNALL_KEYS` and `RUNALL_ACTIVE_KEY` environment variables, if they are set and
    /// valid (an encrypted dispatch says what is wrong with them otherwise). See
    /// [`KeyRing`](crate::KeyRing).
    pub keys: Option<std::sync::Arc<crate::KeyRing>>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            max_payload: 1024 * 1024,
            max_queue_size: HashMap::new(),
            keys: crate::KeyRing::from_env()
                .ok()
                .flatten()
                .map(std::sync::Arc::new),
        }
    }
}

impl QueueSettings {
    /// The keys, or why there are none (`RUNALL_KEYS` unset or invalid).
    pub(crate) fn keys(&self) -> Result<&crate::KeyRing> {
        if let Some(keys) = &self.keys {
            return Ok(keys);
        }
        match crate::KeyRing::from_env() {
            Err(e) => Err(e),
            Ok(_) => Err(Error::Config(format!(
                "no encryption keys: set {} (and {}; `runall keys generate` makes a key), or \
                 QueueSettings::keys",
                crate::crypto::KEYS_ENV,
                crate::crypto::ACTIVE_ENV
            ))),
        }
    }
}

/// How long a count of a queue is trusted while it is below the limit.
const SIZE_REFRESH: Duration = Duration::from_secs(1);

/// A store with its dispatch settings: what [`PendingDispatch`](crate::PendingDispatch) pushes
/// through. A [`Queue`](crate::Queue) has one; cheap to clone.
///
/// # Queue size limits
///
/// A dispatch to a queue with a [`max_queue_size`](QueueSettings::max_queue_size) never counts
/// the whole queue on every call: a count is trusted for a second while the jobs this
/// dispatcher added since keep it under the limit, and the queue is counted again before any
/// refusal. So the limit is exact for a single dispatcher, and another process's dispatches
/// can overshoot it by what they add within one second of each other's counts.
///
/// # Group commit
///
/// Dispatches from many tasks at once (a web server's request handlers) share round trips:
/// while one push is in flight, the dispatches that arrive wait for it and then go to the
/// store together as one push (one multi-row insert, one script), up to 1,000 jobs. A lone
/// dispatch never waits: with nothing in flight it goes at once, so dispatching one job after
/// another from one task costs what it did. Each caller still gets its own ids and its own
/// error: the store's push of many jobs is all or none
/// ([`Capabilities::atomic_push`](crate::storage::Capabilities::atomic_push)), and when a
/// shared push fails each caller's jobs are pushed again on their own. Stores whose push is
/// not all or none (Redis Cluster, the file driver, memcached) get every dispatch on its own.
/// A dispatch dropped while it waits for a shared push is still pushed, as one dropped after
/// its request went out would be.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    settings: QueueSettings,
    sizes: Mutex<HashMap<String, SizeView>>,
    group: Mutex<Group>,
    /// A fake's recording or an inline queue's running, for an application's tests.
    mode: Option<Mode>,
    /// The job events of this queue and its workers.
    events: crate::events::Events,
}

/// Dispatches waiting for the push in flight, to go together in the next one.
#[derive(Default)]
struct Group {
    /// Pushes in flight: at [`MAX_PUSHES`], new dispatches wait.
    pushing: usize,
    waiting: Vec<Waiter>,
}

struct Waiter {
    jobs: Vec<NewJob>,
    done: oneshot::Sender<Result<Vec<Pushed>>>,
}

/// Pushes in flight at once. One: measured with `bench`, two in flight made the groups
/// smaller and dispatching from 8 tasks slower (PostgreSQL 17,000 to 13,000 jobs/s, SQLite
/// 43,000 to 26,000).
const MAX_PUSHES: usize = 1;

/// The most jobs one shared push carries (a dispatch larger than that goes alone).
const MAX_GROUP_JOBS: usize = 1000;

/// A queue's size as last counted, and what this dispatcher added since.
#[derive(Debug, Clone, Copy)]
struct SizeView {
    counted: u64,
    at: Instant,
    added: u64,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("driver", &self.inner.storage.driver())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl AsRef<Dispatcher> for Dispatcher {
    fn as_ref(&self) -> &Dispatcher {
        self
    }
}

impl Dispatcher {
    /// A dispatcher over `storage` with `settings`.
    pub fn new(storage: Arc<dyn Storage>, settings: QueueSettings) -> Self {
        Self::with_mode(storage, settings, None)
    }

    /// A dispatcher that records (a fake) or runs (an inline queue) what it is given.
    pub(crate) fn with_mode(
        storage: Arc<dyn Storage>,
        settings: QueueSettings,
        mode: Option<Mode>,
    ) -> Self {
        Dispatcher {
            inner: Arc::new(Inner {
                storage,
                settings,
                sizes: Mutex::default(),
                group: Mutex::default(),
                mode,
                events: crate::events::Events::default(),
            }),
        }
    }

    /// The fake's recording, for a dispatcher of [`Queue::fake`](crate::Queue::fake).
    pub(crate) fn fake(&self) -> Option<&Arc<Fake>> {
        match &self.inner.mode {
            Some(Mode::Fake(fake)) => Some(fake),
            _ => None,
        }
    }

    /// Whether it is an inline queue's ([`Queue::inline`](crate::Queue::inline)).
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self.inner.mode, Some(Mode::Inline(_)))
    }

    /// The store.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The dispatch settings.
    pub fn settings(&self) -> &QueueSettings {
        &self.inner.settings
    }

    /// The job events of this queue and its workers.
    pub(crate) fn events(&self) -> &crate::events::Events {
        &self.inner.events
    }

    /// Pushes encoded jobs, checking the queue size limits first. Concurrent pushes share
    /// round trips (see [group commit](Self#group-commit)).
    pub async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>> {
        // Only with a listener: what the events need, before the jobs move.
        let named: Vec<(String, String)> = if self.inner.events.listening() {
            jobs.iter()
                .map(|j| (j.queue.clone(), j.name.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let pushed = self.push_jobs(jobs).await?;
        if !named.is_empty() && self.fake().is_none() {
            for ((queue, name), result) in named.iter().zip(&pushed) {
                if let Pushed::Created(id) | Pushed::Replaced(id) = result {
                    self.inner.events.emit(|| {
                        crate::events::JobEvent::new(
                            crate::events::JobEventKind::Dispatched,
                            id.clone(),
                            queue,
                            name,
                            0,
                        )
                    });
                }
            }
        }
        Ok(pushed)
    }

    async fn push_jobs(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>> {
        self.check_sizes(&jobs).await?;
        match &self.inner.mode {
            Some(Mode::Inline(inline)) => {
                return testing::run_inline(self.clone(), inline.clone(), Work::Push(jobs)).await
            }
            Some(Mode::Fake(fake)) => {
                let real = testing::fake_push(fake.clone(), jobs);
                let jobs = match real {
                    Ok(pushing) => return pushing.await,
                    Err(jobs) => jobs,
                };
                return self.inner.storage.push(jobs).await;
            }
            None => {}
        }
        if jobs.is_empty() || !self.inner.storage.capabilities().atomic_push {
            return self.inner.storage.push(jobs).await;
        }
        let jobs = {
            let mut group = self.inner.group();
            if group.pushing >= MAX_PUSHES {
                let (done, wait) = oneshot::channel();
                group.waiting.push(Waiter { jobs, done });
                Err(wait)
            } else {
                group.pushing += 1;
                Ok(jobs)
            }
        };
        match jobs {
            Ok(jobs) => {
                // Whatever happens to this future, the dispatches that queued behind it go on.
                let _next = HandOver(&self.inner);
                self.inner.storage.push(jobs).await
            }
            Err(wait) => wait.await.unwrap_or_else(|_| {
                Err(Error::backend(
                    self.inner.storage.driver(),
                    "the shared push was dropped (the runtime is shutting down)",
                ))
            }),
        }
    }

    pub(crate) async fn check_sizes(&self, jobs: &[NewJob]) -> Result<()> {
        let limits = &self.inner.settings.max_queue_size;
        if limits.is_empty() {
            return Ok(());
        }
        let mut adding: HashMap<&str, u64> = HashMap::new();
        for job in jobs {
            if limits.contains_key(&job.queue) {
                *adding.entry(job.queue.as_str()).or_default() += 1;
            }
        }
        for (queue, n) in adding {
            let Some(&limit) = limits.get(queue) else {
                continue;
            };
            if self.take_from_view(queue, n, limit) {
                continue;
            }
            let counted = self.inner.storage.inspect()?.size(queue).await?.total();
            let mut sizes = self.inner.sizes.lock().unwrap_or_else(|p| p.into_inner());
            let view = sizes.entry(queue.to_owned()).or_insert(SizeView {
                counted,
                at: Instant::now(),
                added: 0,
            });
            *view = SizeView {
                counted,
                at: Instant::now(),
                added: 0,
            };
            if counted + n > limit {
                return Err(Error::QueueFull {
                    queue: queue.to_owned(),
                    size: counted,
                    limit,
                });
            }
            view.added += n;
        }
        Ok(())
    }

    /// Accounts `n` jobs against a recent count, if that count leaves room for them.
    fn take_from_view(&self, queue: &str, n: u64, limit: u64) -> bool {
        let mut sizes = self.inner.sizes.lock().unwrap_or_else(|p| p.into_inner());
        match sizes.get_mut(queue) {
            Some(view)
                if view.at.elapsed() < SIZE_REFRESH && view.counted + view.added + n <= limit =>
            {
                view.added += n;
                true
            }
            _ => false,
        }
    }
}

impl Inner {
    fn group(&self) -> std::sync::MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next shared push: the dispatches waiting, up to [`MAX_GROUP_JOBS`] (at least one).
    /// Empty when none wait, and then the push that asked is no longer in flight.
    fn next_group(&self) -> Vec<Waiter> {
        let mut group = self.group();
        let mut jobs = 0;
        let take = group
            .waiting
            .iter()
            .take_while(|w| {
                jobs += w.jobs.len();
                jobs <= MAX_GROUP_JOBS
            })
            .count()
            .max(1)
            .min(group.waiting.len());
        if take == 0 {
            group.pushing -= 1;
        }
        group.waiting.drain(..take).collect()
    }
}

/// Held by the dispatch whose push is in flight: when it ends (or is dropped), the
/// dispatches that queued behind it go as one push, in a task of their own, so no caller's
/// cancellation strands another caller's jobs.
struct HandOver<'a>(&'a Arc<Inner>);

impl Drop for HandOver<'_> {
    fn drop(&mut self) {
        let next = self.0.next_group();
        if next.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(push_groups(self.0.clone(), next));
            }
            Err(_) => {
                // Dropped outside a runtime: nothing can push them; say so to each caller.
                let driver = self.0.storage.driver();
                let mut next = next;
                loop {
                    for waiter in next {
                        let _ = waiter.done.send(Err(Error::backend(
                            driver,
                            "the shared push was dropped outside a Tokio runtime",
                        )));
                    }
                    next = self.0.next_group();
                    if next.is_empty() {
                        break;
                    }
                }
            }
        }
    }
}

/// Pushes groups of waiting dispatches until none wait.
///
/// After each push it yields once before taking the next group: the callers it just
/// answered were woken on this thread and usually dispatch again at once, and without the
/// yield the next group would hold only the one caller that arrived during the push (8 tasks
/// dispatching in a loop made groups of 7, 1, 7, 1, ... instead of 8).
async fn push_groups(inner: Arc<Inner>, mut group: Vec<Waiter>) {
    while !group.is_empty() {
        push_group(&inner.storage, group).await;
        tokio::task::yield_now().await;
        group = inner.next_group();
    }
}

/// One shared push; if it fails (storing nothing: the store's push is all or none), each
/// dispatch is pushed on its own so it gets its own result.
async fn push_group(storage: &Arc<dyn Storage>, mut group: Vec<Waiter>) {
    if group.len() == 1 {
        if let Some(waiter) = group.pop() {
            let _ = waiter.done.send(storage.push(waiter.jobs).await);
        }
        return;
    }
    let all: Vec<NewJob> = group.iter().flat_map(|w| w.jobs.iter().cloned()).collect();
    let total = all.len();
    match storage.push(all).await {
        Ok(pushed) if pushed.len() == total => {
            let mut pushed = pushed.into_iter();
            for waiter in group {
                let own: Vec<Pushed> = pushed.by_ref().take(waiter.jobs.len()).collect();
                let _ = waiter.done.send(Ok(own));
            }
        }
        Ok(pushed) => {
            // A broken store: pushing again could store jobs twice.
            let got = pushed.len();
            for waiter in group {
                let _ = waiter.done.send(Err(Error::backend(
                    storage.driver(),
                    format!("push returned {got} results for {total} jobs"),
                )));
            }
        }
        Err(_) => {
            for waiter in group {
                let _ = waiter.done.send(storage.push(waiter.jobs).await);
            }
        }
    }
}

static PROCESS_DEFAULT: RwLock<Option<Dispatcher>> = RwLock::new(None);

thread_local! {
    static THREAD_DEFAULT: RefCell<Option<Dispatcher>> = const { RefCell::new(None) };
}

tokio::task_local! {
    static TASK_DEFAULT: Dispatcher;
}

/// `via` if a dispatch named one, else [`current`].
pub(crate) fn resolve(via: Option<Dispatcher>) -> Result<Dispatcher> {
    match via {
        Some(dispatcher) => Ok(dispatcher),
        None => current(),
    }
}

/// A group's counters as read from the store ([`Groups::counters`](crate::storage::Groups)).
pub(crate) struct Counters(Vec<(String, i64)>);

impl Counters {
    /// The counters, sorted by name.
    pub(crate) fn into_inner(self) -> Vec<(String, i64)> {
        self.0
    }

    /// A counter's value (0 when missing).
    pub(crate) fn get(&self, name: &str) -> i64 {
        crate::storage::counter(&self.0, name)
    }

    /// A counter as a count (0 when missing or below zero).
    pub(crate) fn count(&self, name: &str) -> u64 {
        u64::try_from(self.get(name)).unwrap_or(0)
    }
}

impl Dispatcher {
    /// Refuses `feature` (batches, chains, workflows) on a store without groups.
    pub(crate) fn needs_groups(&self, feature: &'static str) -> Result<()> {
        let storage = self.storage();
        match storage.capabilities().groups {
            Some(_) => Ok(()),
            None => Err(Error::NotSupported {
                driver: storage.driver(),
                operation: feature,
            }),
        }
    }

    /// Applies `effects` in one atomic step ([`Groups::apply`](crate::storage::Groups::apply)),
    /// checking the queue size limits for the jobs they push first.
    pub(crate) async fn apply(&self, effects: Vec<Effect>) -> Result<()> {
        let pushes: Vec<NewJob> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Push(job) => Some(job.clone()),
                _ => None,
            })
            .collect();
        self.check_sizes(&pushes).await?;
        if let Some(Mode::Inline(inline)) = &self.inner.mode {
            let run = testing::run_inline(self.clone(), inline.clone(), Work::Apply(effects));
            return run.await.map(drop);
        }
        self.groups()?.apply(effects).await
    }

    /// The store's groups capability.
    pub(crate) fn groups(&self) -> Result<&dyn crate::storage::Groups> {
        self.storage().groups()
    }

    /// The counters of `group`.
    pub(crate) async fn counters(&self, group: &str) -> Result<Counters> {
        Ok(Counters(self.groups()?.counters(group).await?))
    }
}

/// The dispatcher a dispatch without `.via(..)` uses: the one of the enclosing
/// [`Queue::scope`](crate::Queue::scope), else this thread's fake
/// ([`Queue::fake`](crate::Queue::fake)), else the process-wide default.
pub(crate) fn current() -> Result<Dispatcher> {
    if let Ok(scoped) = TASK_DEFAULT.try_with(Clone::clone) {
        return Ok(scoped);
    }
    if let Some(local) = THREAD_DEFAULT.with(|slot| slot.borrow().clone()) {
        return Ok(local);
    }
    PROCESS_DEFAULT
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or(Error::NoDefaultQueue)
}

pub(crate) fn set_process_default(dispatcher: Dispatcher) {
    *PROCESS_DEFAULT.write().unwrap_or_else(|p| p.into_inner()) = Some(dispatcher);
}

pub(crate) fn set_thread_default(dispatcher: Option<Dispatcher>) {
    THREAD_DEFAULT.with(|slot| *slot.borrow_mut() = dispatcher);
}

pub(crate) async fn scope<F: Future>(dispatcher: Dispatcher, future: F) -> F::Output {
    TASK_DEFAULT.scope(dispatcher, future).await
}
