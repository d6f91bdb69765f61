//! A store whose first reservation reply comes back late, as it does to a worker that was
//! paused (SIGSTOP, a long GC pause, a VM migration) between sending a reserve and reading
//! the answer. Every call goes to the real driver underneath; only the reply is held back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use queue_core::storage::{
    Capabilities, Lease, LeaseStatus, NewJob, Pushed, ReserveRequest, Reserved, Settle,
    SettleReply, Storage,
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

impl LateFirstReply {
    /// Holds back `jobs` if they are the first reserved jobs to come through.
    async fn hold_back(&self, jobs: &[Reserved]) {
        if !jobs.is_empty() && !self.done.swap(true, Ordering::SeqCst) {
            let meanwhile = (self.meanwhile)(self.inner.clone(), jobs.to_vec());
            let ((), ()) = tokio::join!(meanwhile, tokio::time::sleep(self.delay));
        }
    }
}

#[async_trait]
impl Storage for LateFirstReply {
    fn capabilities(&self) -> Capabilities<'_> {
        self.inner.capabilities()
    }
    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>> {
        self.inner.push(jobs).await
    }
    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        let jobs = self.inner.reserve(request).await?;
        self.hold_back(&jobs).await;
        Ok(jobs)
    }
    async fn extend(&self, leases: &[Lease], duration: Duration) -> Result<Vec<LeaseStatus>> {
        self.inner.extend(leases, duration).await
    }
    async fn settle(
        &self,
        settles: Vec<Settle>,
        fetch: Option<&ReserveRequest>,
    ) -> Result<SettleReply> {
        let reply = self.inner.settle(settles, fetch).await?;
        self.hold_back(&reply.reserved).await;
        Ok(reply)
    }
    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        self.inner.lock(key, owner, ttl).await
    }
    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        self.inner.unlock(key, owner).await
    }
}
