//! [`FileStorage`]: the [`Storage`] trait over a directory tree.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use queue_core::storage::from_unix_millis;
use queue_core::{
    Capabilities, Error, FailedJob, JobId, Lease, NewJob, QueueSize, ReserveRequest, Reserved,
    Result, Storage,
};
use tokio::sync::Notify;

use crate::disk::Disk;
use crate::error::FileError;
use crate::options::FileOptions;
use crate::{counters, lock, DRIVER};

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
    fn driver(&self) -> &'static str {
        DRIVER
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            reserve_by_name: true,
            durable: self.fsync,
            wake_on_push: false,
        }
    }

    async fn migrate(&self) -> Result<()> {
        self.run(|disk| Ok(disk.migrate(false)?)).await
    }

    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.run(move |disk| Ok(disk.push(jobs)?)).await?;
        self.pushed.notify_waiters();
        Ok(ids)
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        let request = request.clone();
        self.run(move |disk| Ok(disk.reserve(&request)?)).await
    }

    async fn extend(&self, lease: &Lease, duration: Duration) -> Result<()> {
        let lease = lease.clone();
        self.run(move |disk| disk.extend(&lease, duration)).await
    }

    async fn acknowledge(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        let leases = leases.to_vec();
        self.run(move |disk| Ok(disk.acknowledge(&leases)?)).await
    }

    async fn release(&self, lease: &Lease, delay: Duration, refund_attempt: bool) -> Result<()> {
        let lease = lease.clone();
        self.run(move |disk| disk.release(&lease, delay, refund_attempt))
            .await?;
        self.pushed.notify_waiters();
        Ok(())
    }

    async fn fail(&self, lease: &Lease, error: &str) -> Result<()> {
        let (lease, error) = (lease.clone(), error.to_owned());
        self.run(move |disk| disk.fail(&lease, &error)).await
    }

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

    async fn failed_list(&self, offset: u64, limit: u64) -> Result<Vec<FailedJob>> {
        self.run(move |disk| Ok(disk.failed_list(offset, limit)?))
            .await
    }

    async fn failed_get(&self, id: &str) -> Result<Option<FailedJob>> {
        let id = id.to_owned();
        self.run(move |disk| Ok(disk.failed_get(&id)?)).await
    }

    async fn failed_count(&self) -> Result<u64> {
        self.run(|disk| Ok(disk.failed_count()?)).await
    }

    async fn failed_retry(&self, id: &str) -> Result<Option<JobId>> {
        let id = id.to_owned();
        let new_id = self.run(move |disk| Ok(disk.failed_retry(&id)?)).await?;
        if new_id.is_some() {
            self.pushed.notify_waiters();
        }
        Ok(new_id)
    }

    async fn failed_forget(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.run(move |disk| Ok(disk.failed_forget(&id)?)).await
    }

    async fn failed_flush(&self) -> Result<u64> {
        self.run(|disk| Ok(disk.failed_flush()?)).await
    }

    async fn failed_prune(&self, before: SystemTime) -> Result<u64> {
        self.run(move |disk| Ok(disk.failed_prune(before)?)).await
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.run(move |disk| Ok(lock::lock(&disk.locks, &key, &owner, ttl)?))
            .await
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.run(move |disk| Ok(lock::unlock(&disk.locks, &key, &owner)?))
            .await
    }

    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        let queue = queue.to_owned();
        self.run(move |disk| Ok(disk.oldest_available(&queue)?))
            .await
    }

    async fn add_counters(&self, deltas: &[(String, i64)], ttl: Option<Duration>) -> Result<()> {
        let deltas = deltas.to_vec();
        self.run(move |disk| Ok(counters::add(&disk.counters, &disk.tmp, &deltas, ttl)?))
            .await
    }

    async fn counters(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        let prefix = prefix.to_owned();
        self.run(move |disk| Ok(counters::list(&disk.counters, &prefix)?))
            .await
    }

    /// Sleeps until `timeout`, a push or release by this process, or the next due time this
    /// process knows of (a delayed job or a lease running out), whichever comes first. Jobs
    /// other processes push are seen at the next reserve after the sleep.
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
