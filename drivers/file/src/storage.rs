//! [`FileStorage`]: the [`Storage`] contract and its capabilities over a directory tree. Each
//! call runs one blocking operation of [`Disk`] on tokio's blocking pool.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use queue_core::storage::{
    from_unix_millis, Control, FailedStore, Groups, Inspect, JobState, JobSummary, Page,
    PageRequest, Wake,
};
use queue_core::{
    Capabilities, Effect, Error, FailedJob, Lease, LeaseStatus, NewJob, Outcome, Pushed, QueueSize,
    ReserveRequest, Reserved, Result, Settle, SettleReply, Storage,
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
    /// Wakes this process's idle workers when this process adds a job.
    pushed: Arc<Notify>,
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

    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Disk) -> Result<T> + Send + 'static,
    {
        let disk = self.disk.clone();
        blocking(move || f(&disk)).await
    }
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
        Capabilities::complete(DRIVER, self).durable(self.fsync)
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
        // Retried and released jobs, and follow-ups, may be due for an idle worker here.
        let wakes = settles.iter().any(|s| {
            matches!(s.outcome, Outcome::Retry { .. } | Outcome::Release { .. })
                || s.effects.iter().any(|e| matches!(e, Effect::Push(_)))
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

    async fn remove(&self, group: &str) -> Result<bool> {
        let group = group.to_owned();
        self.run(move |disk| Ok(disk.remove_group(&group)?)).await
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

#[async_trait]
impl Wake for FileStorage {
    /// Sleeps until `timeout`, a push, settle or retry by this process, or the next due time
    /// this process knows of (a delayed job or a lease running out), whichever comes first.
    /// Jobs other processes push are seen at the next reserve after the sleep: a worker of
    /// another process polls at its `sleep` interval.
    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let notified = self.pushed.notified();
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
