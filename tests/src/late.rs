//! A store whose first reservation reply comes back late, as it does to a worker that was
//! paused (SIGSTOP, a long GC pause, a VM migration) between sending a reserve and reading
//! the answer. Every call goes to the real driver underneath; only the reply is held back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use queue_core::storage::{
    Capabilities, FailedJob, JobId, Lease, NewJob, QueueSize, ReserveRequest, Reserved, Storage,
};
use queue_core::Result;

use crate::Store;

/// What happens while the first reply is held back: given the real store and the jobs the
/// held reply carries.
pub type WhileLate =
    Box<dyn Fn(Store, Vec<Reserved>) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Holds back the reply of the first non-empty reservation for `delay`, running `meanwhile`
/// in that time; everything else passes straight through.
pub struct LateFirstReply {
    inner: Store,
    delay: Duration,
    meanwhile: WhileLate,
    done: AtomicBool,
}

impl std::fmt::Debug for LateFirstReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LateFirstReply")
            .field("inner", &self.inner)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl LateFirstReply {
    /// Wraps `inner`.
    pub fn new(inner: Store, delay: Duration, meanwhile: WhileLate) -> Arc<Self> {
        Arc::new(LateFirstReply {
            inner,
            delay,
            meanwhile,
            done: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl Storage for LateFirstReply {
    fn driver(&self) -> &'static str {
        self.inner.driver()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn migrate(&self) -> Result<()> {
        self.inner.migrate().await
    }
    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        self.inner.push(jobs).await
    }
    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        let jobs = self.inner.reserve(request).await?;
        if !jobs.is_empty() && !self.done.swap(true, Ordering::SeqCst) {
            let meanwhile = (self.meanwhile)(self.inner.clone(), jobs.clone());
            let ((), ()) = tokio::join!(meanwhile, tokio::time::sleep(self.delay));
        }
        Ok(jobs)
    }
    async fn extend(&self, lease: &Lease, duration: Duration) -> Result<()> {
        self.inner.extend(lease, duration).await
    }
    async fn acknowledge(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        self.inner.acknowledge(leases).await
    }
    async fn release(&self, lease: &Lease, delay: Duration, refund_attempt: bool) -> Result<()> {
        self.inner.release(lease, delay, refund_attempt).await
    }
    async fn fail(&self, lease: &Lease, error: &str) -> Result<()> {
        self.inner.fail(lease, error).await
    }
    async fn size(&self, queue: &str) -> Result<QueueSize> {
        self.inner.size(queue).await
    }
    async fn queues(&self) -> Result<Vec<String>> {
        self.inner.queues().await
    }
    async fn clear(&self, queue: &str) -> Result<u64> {
        self.inner.clear(queue).await
    }
    async fn failed_list(&self, offset: u64, limit: u64) -> Result<Vec<FailedJob>> {
        self.inner.failed_list(offset, limit).await
    }
    async fn failed_get(&self, id: &str) -> Result<Option<FailedJob>> {
        self.inner.failed_get(id).await
    }
    async fn failed_count(&self) -> Result<u64> {
        self.inner.failed_count().await
    }
    async fn failed_retry(&self, id: &str) -> Result<Option<JobId>> {
        self.inner.failed_retry(id).await
    }
    async fn failed_forget(&self, id: &str) -> Result<bool> {
        self.inner.failed_forget(id).await
    }
    async fn failed_flush(&self) -> Result<u64> {
        self.inner.failed_flush().await
    }
    async fn failed_prune(&self, before: SystemTime) -> Result<u64> {
        self.inner.failed_prune(before).await
    }
    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        self.inner.lock(key, owner, ttl).await
    }
    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        self.inner.unlock(key, owner).await
    }
    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        self.inner.oldest_available(queue).await
    }
    async fn add_counters(&self, deltas: &[(String, i64)], ttl: Option<Duration>) -> Result<()> {
        self.inner.add_counters(deltas, ttl).await
    }
    async fn counters(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        self.inner.counters(prefix).await
    }
    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        self.inner.wait(queues, timeout).await
    }
}
