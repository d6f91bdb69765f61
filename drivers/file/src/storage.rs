//! [`FileStorage`]: the [`Storage`] contract and its capabilities over a directory tree. Each
//! call runs one blocking operation of [`Disk`] on tokio's blocking pool.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use queue_core::storage::{
    from_unix_millis, Cancellation, Control, FailedStore, Groups, Guard, HeldLock, Inspect,
    JobState, JobSummary, Locks, Page, PageRequest, RecordKey, Track, Wake, Workers,
};
use queue_core::{
    Capabilities, Effect, Error, FailedJob, JobId, Lease, LeaseStatus, NewJob, Outcome, Pushed,
    QueueSize, ReserveRequest, Reserved, Result, Settle, SettleReply, Storage,
};
use tokio::sync::Notify;

use crate::disk::Disk;
use crate::error::FileError;
use crate::options::FileOptions;
use crate::{locks, DRIVER};

/// A queue store in a directory: one file per job, shared safely by any number of worker
/// processes on one machine. See the [crate docs](crate) for the layout and the guarantees.
///
/// Cloning is cheap and shares the process's caches.
#[derive(Debug, Clone)]
pub struct FileStorage {
    disk: Arc<Disk>,
    fsync: bool,
    /// Wakes this process's idle workers when a job becomes available: pushed, retried or
    /// released by this process, or (through [`ReadyWatch`]) by another.
    pushed: Arc<Notify>,
    /// The watch on the `ready/` directories of the queues idle workers wait on, started by
    /// the first wait.
    watch: Arc<std::sync::Mutex<Option<ReadyWatch>>>,
}

/// Wakes this process's idle workers when another process makes a job available: the
/// `ready/` directory of every queue a worker waits on is watched (inotify on Linux, through
/// `notify`), and a file created or renamed into one wakes the waiters, at most once every
/// [`WATCH_COALESCE`] so a busy writer elsewhere does not turn them into a busy loop. A
/// directory that cannot be watched leaves its waiters polling at `--sleep`.
struct ReadyWatch {
    watcher: notify::RecommendedWatcher,
    watched: std::collections::HashSet<String>,
    relay: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ReadyWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyWatch")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// The shortest time between two wake-ups from the watch.
const WATCH_COALESCE: Duration = Duration::from_millis(2);

impl ReadyWatch {
    fn start(pushed: Arc<Notify>) -> notify::Result<ReadyWatch> {
        use notify::event::{EventKind, ModifyKind, RenameMode};
        let signal = Arc::new(Notify::new());
        let tx = signal.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // A job arrives by a rename into `ready/` (or, written in place, a create); a
            // rename out of it is a reservation.
            let arrived = matches!(
                event.kind,
                EventKind::Create(_)
                    | EventKind::Modify(ModifyKind::Name(
                        RenameMode::To | RenameMode::Both | RenameMode::Any
                    ))
            );
            if arrived {
                tx.notify_one();
            }
        })?;
        let relay = tokio::spawn(async move {
            loop {
                signal.notified().await;
                pushed.notify_waiters();
                tokio::time::sleep(WATCH_COALESCE).await;
            }
        });
        Ok(ReadyWatch {
            watcher,
            watched: std::collections::HashSet::new(),
            relay,
        })
    }
}

impl FileStorage {
    /// Opens the store, creating its directory (mode 0700) if it is missing and
    /// [`FileOptions::migrate`] is on. Refuses a directory that group or others can write.
    /// Finishes what crashed processes left half done (see the crate docs) before returning.
    pub async fn open(options: FileOptions) -> Result<Self> {
        let fsync = options.fsync;
        let disk = blocking(move || Disk::open(&options).map_err(Error::from)).await?;
        Ok(FileStorage {
            disk: Arc::new(disk),
            fsync,
            pushed: Arc::new(Notify::new()),
            watch: Arc::default(),
        })
    }

    /// Opens the store a URL names (`file:///abs/path`, `file://relative/path` or a plain
    /// path; see [`FileOptions::from_url`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::open(FileOptions::from_url(url)?).await
    }

    /// Not public API: runs the sweep that otherwise runs every half minute inside
    /// `reserve` (finishing crashed steps, recovering what they left in `tmp/`), for tests.
    #[doc(hidden)]
    pub async fn __sweep(&self) -> Result<()> {
        self.run(|disk| Ok(disk.sweep()?)).await
    }

    /// Makes sure the `ready/` directories of `queues` are watched (see [`ReadyWatch`]).
    async fn watch_queues(&self, queues: &[String]) {
        use notify::Watcher as _;
        let missing: Vec<String> = {
            let watch = self.watch.lock().unwrap_or_else(|p| p.into_inner());
            queues
                .iter()
                .filter(|q| watch.as_ref().is_none_or(|w| !w.watched.contains(*q)))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        let wanted = missing.clone();
        let dirs = self
            .run(move |disk| {
                wanted
                    .iter()
                    .map(|q| disk.ready_dir(q).map_err(Error::from))
                    .collect::<Result<Vec<_>>>()
            })
            .await;
        let dirs = match dirs {
            Ok(dirs) => dirs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the queues: idle workers poll for other processes' jobs");
                return;
            }
        };
        let mut watch = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        if watch.is_none() {
            match ReadyWatch::start(self.pushed.clone()) {
                Ok(w) => *watch = Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the queues: idle workers poll for other processes' jobs");
                    return;
                }
            }
        }
        let Some(w) = watch.as_mut() else { return };
        for (queue, dir) in missing.into_iter().zip(dirs) {
            match w.watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    w.watched.insert(queue);
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    dir = %dir.display(),
                    "cannot watch a queue: idle workers poll for other processes' jobs"
                ),
            }
        }
    }

    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Disk) -> Result<T> + Send + 'static,
    {
        let disk = self.disk.clone();
        blocking(move || f(&disk)).await
    }
}

/// Whether an effect may put a job in a queue: a follow-up, or a dependency change that
/// releases a waiting job.
fn makes_available(effect: &Effect) -> bool {
    matches!(effect, Effect::Push(_) | Effect::Deps { .. })
}

/// Runs blocking file I/O on tokio's blocking pool so that no worker thread stalls.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::from(FileError::Task(e.to_string())))?
}

#[async_trait]
impl Storage for FileStorage {
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities::complete(DRIVER, self)
            .track(self)
            .rewrite(true)
            .workers(self)
            .locks(self)
            .durable(self.fsync)
    }

    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let pushed = self.run(move |disk| Ok(disk.push(jobs)?)).await?;
        self.pushed.notify_waiters();
        Ok(pushed)
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        let request = request.clone();
        self.run(move |disk| Ok(disk.reserve(&request)?)).await
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        let leases = leases.to_vec();
        self.run(move |disk| Ok(disk.extend(&leases, lease)?)).await
    }

    async fn settle(
        &self,
        settles: Vec<Settle>,
        fetch: Option<&ReserveRequest>,
    ) -> Result<SettleReply> {
        // Retried and released jobs, follow-ups and waiting jobs whose dependencies are met
        // may be due for an idle worker here.
        let wakes = settles.iter().any(|s| {
            matches!(s.outcome, Outcome::Retry { .. } | Outcome::Release { .. })
                || s.effects.iter().any(makes_available)
        });
        let fetch = fetch.cloned();
        let reply = self
            .run(move |disk| disk.settle(settles, fetch.as_ref()))
            .await?;
        if wakes {
            self.pushed.notify_waiters();
        }
        Ok(reply)
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.run(move |disk| Ok(locks::lock(&disk.locks, &key, &owner, ttl)?))
            .await
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.run(move |disk| Ok(locks::unlock(&disk.locks, &key, &owner)?))
            .await
    }
}

/// Locks for operators: `locks/` listed and read (see the crate docs); a release deletes
/// the key's file under its `flock`.
#[async_trait]
impl Locks for FileStorage {
    async fn locks(&self, page: PageRequest) -> Result<Page<HeldLock>> {
        let held = self.run(|disk| Ok(locks::held(&disk.locks)?)).await?;
        let mut by_key: std::collections::HashMap<String, (String, i64)> = held
            .into_iter()
            .map(|(key, owner, expires)| (key, (owner, expires)))
            .collect();
        let keys = Page::of_names(by_key.keys().cloned().collect::<Vec<_>>(), "", &page);
        let items = keys
            .items
            .into_iter()
            .filter_map(|key| {
                let (owner, expires) = by_key.remove(&key)?;
                Some(HeldLock {
                    key,
                    owner,
                    expires_at: from_unix_millis(expires),
                })
            })
            .collect();
        Ok(Page {
            items,
            next: keys.next,
        })
    }

    async fn release(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.run(move |disk| Ok(locks::release(&disk.locks, &key)?))
            .await
    }
}

#[async_trait]
impl FailedStore for FileStorage {
    async fn list(&self, page: PageRequest) -> Result<Page<FailedJob>> {
        self.run(move |disk| disk.failed_list(&page)).await
    }

    async fn get(&self, id: &str) -> Result<Option<FailedJob>> {
        let id = id.to_owned();
        self.run(move |disk| Ok(disk.failed_get(&id)?)).await
    }

    async fn count(&self) -> Result<u64> {
        self.run(|disk| Ok(disk.failed_count()?)).await
    }

    async fn retry(&self, id: &str) -> Result<Option<Pushed>> {
        let id = id.to_owned();
        let pushed = self.run(move |disk| Ok(disk.failed_retry(&id)?)).await?;
        if matches!(pushed, Some(Pushed::Created(_))) {
            self.pushed.notify_waiters();
        }
        Ok(pushed)
    }

    async fn forget(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.run(move |disk| Ok(disk.failed_forget(&id)?)).await
    }

    async fn flush(&self) -> Result<u64> {
        self.run(|disk| Ok(disk.failed_flush()?)).await
    }

    async fn prune(&self, before: SystemTime) -> Result<u64> {
        self.run(move |disk| Ok(disk.failed_prune(before)?)).await
    }
}

#[async_trait]
impl Inspect for FileStorage {
    async fn size(&self, queue: &str) -> Result<QueueSize> {
        let queue = queue.to_owned();
        self.run(move |disk| Ok(disk.size(&queue)?)).await
    }

    async fn queues(&self) -> Result<Vec<String>> {
        self.run(|disk| Ok(disk.queues()?)).await
    }

    async fn clear(&self, queue: &str) -> Result<u64> {
        let queue = queue.to_owned();
        self.run(move |disk| Ok(disk.clear(&queue)?)).await
    }

    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        let queue = queue.to_owned();
        self.run(move |disk| Ok(disk.oldest_available(&queue)?))
            .await
    }

    async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        page: PageRequest,
    ) -> Result<Page<JobSummary>> {
        let queue = queue.to_owned();
        self.run(move |disk| disk.jobs(&queue, state, &page)).await
    }
}

#[async_trait]
impl Groups for FileStorage {
    async fn counters(&self, group: &str) -> Result<Vec<(String, i64)>> {
        let group = group.to_owned();
        self.run(move |disk| Ok(disk.counters(&group)?)).await
    }

    async fn value(&self, group: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let (group, name) = (group.to_owned(), name.to_owned());
        self.run(move |disk| Ok(disk.group_value(&group, &name)?))
            .await
    }

    /// Deletes the group's values (each a file in `records/`, found by listing it), then its
    /// counters.
    async fn remove(&self, group: &str) -> Result<bool> {
        let group = group.to_owned();
        self.run(move |disk| Ok(disk.remove_group(&group)?)).await
    }

    /// Reads the names of the group files that could match (each file is read).
    async fn list(&self, prefix: &str, page: PageRequest) -> Result<Page<String>> {
        let prefix = prefix.to_owned();
        let names = self
            .run({
                let prefix = prefix.clone();
                move |disk| Ok(disk.group_names(&prefix)?)
            })
            .await?;
        Ok(Page::of_names(names, &prefix, &page))
    }

    async fn apply(&self, effects: Vec<Effect>) -> Result<()> {
        let wakes = effects.iter().any(makes_available);
        self.run(move |disk| disk.apply(effects)).await?;
        if wakes {
            self.pushed.notify_waiters();
        }
        Ok(())
    }

    /// The guard is checked under the store's lock; a winning step is one step of the
    /// journal with the effects, its counter set with their counter deltas.
    async fn apply_if(&self, guard: Guard, effects: Vec<Effect>) -> Result<bool> {
        let wakes = effects.iter().any(makes_available);
        let applied = self.run(move |disk| disk.apply_if(guard, effects)).await?;
        if applied && wakes {
            self.pushed.notify_waiters();
        }
        Ok(applied)
    }

    async fn waiting(&self, key: &str) -> Result<Option<i64>> {
        let key = key.to_owned();
        self.run(move |disk| Ok(disk.waiting_deps(&key)?)).await
    }
}

#[async_trait]
impl Track for FileStorage {
    /// Lists every queue's directories (see the crate docs): costs in proportion to the
    /// store, not to one job.
    async fn job(&self, id: &JobId) -> Result<Option<JobSummary>> {
        let id = id.clone();
        self.run(move |disk| Ok(disk.job(&id)?)).await
    }

    /// Under the store's lock; lists every queue's directories as [`job`](Track::job) does.
    async fn cancel(
        &self,
        id: &JobId,
        mark_for: Duration,
        effects: Vec<Effect>,
    ) -> Result<Cancellation> {
        let id = id.clone();
        let wakes = effects.iter().any(makes_available);
        let cancelled = self
            .run(move |disk| disk.cancel(&id, mark_for, effects))
            .await?;
        if wakes && matches!(cancelled, Cancellation::Removed(_)) {
            self.pushed.notify_waiters();
        }
        Ok(cancelled)
    }

    async fn records(&self, keys: &[RecordKey]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        self.run(move |disk| Ok(disk.records(&keys)?)).await
    }

    /// Under the store's lock; fenced against every step that takes it (see the crate docs
    /// for the transitions that do not).
    async fn put_record(
        &self,
        key: &RecordKey,
        value: &[u8],
        ttl: Duration,
        fence: Option<&Lease>,
    ) -> Result<bool> {
        let (key, value, fence) = (key.clone(), value.to_vec(), fence.cloned());
        self.run(move |disk| disk.put_record(&key, &value, ttl, fence.as_ref()))
            .await
    }

    /// Reads every record file, then deletes the expired ones under the store's lock, a
    /// chunk at a time.
    async fn prune_records(&self) -> Result<u64> {
        self.run(|disk| Ok(disk.prune_records()?)).await
    }
}

#[async_trait]
impl Control for FileStorage {
    async fn restart_generation(&self) -> Result<u64> {
        self.run(|disk| Ok(disk.restart_generation()?)).await
    }

    async fn request_restart(&self) -> Result<()> {
        self.run(|disk| Ok(disk.request_restart()?)).await
    }
}

/// The worker registry: a file per worker in `workers/` (see the crate docs).
#[async_trait]
impl Workers for FileStorage {
    async fn beat(&self, id: &str, entry: &[u8], ttl: Duration) -> Result<()> {
        let (id, entry) = (id.to_owned(), entry.to_vec());
        self.run(move |disk| Ok(disk.worker_beat(&id, &entry, ttl)?))
            .await
    }

    async fn workers(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.run(|disk| Ok(disk.workers()?)).await
    }

    async fn leave(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.run(move |disk| Ok(disk.worker_leave(&id)?)).await
    }
}

#[async_trait]
impl Wake for FileStorage {
    /// Sleeps until `timeout`, a job made available by this process or, through the watch
    /// on the queues' `ready/` directories, by another (see the crate docs), or the next due
    /// time this process knows of (a delayed job or a lease running out), whichever comes
    /// first.
    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let notified = self.pushed.notified();
        self.watch_queues(queues).await;
        let timeout = match self.disk.next_due(queues) {
            Some(at) => timeout.min(
                from_unix_millis(at)
                    .duration_since(SystemTime::now())
                    .unwrap_or_default(),
            ),
            None => timeout,
        };
        let _ = tokio::time::timeout(timeout, notified).await;
        Ok(())
    }
}
