//! A store with faults a test switches on: renewals that report the lease lost or fail as if
//! the backend were down, restart-signal reads that fail, worker registry writes that fail or
//! never answer, and a count of size queries. Every
//! call goes to the real driver underneath unless its fault is on.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use queue_core::storage::{
    Capabilities, Control, Inspect, JobState, JobSummary, Lease, LeaseStatus, NewJob, Page,
    PageRequest, Pushed, QueueSize, ReserveRequest, Reserved, Settle, SettleReply, Storage,
    Workers,
};
use queue_core::{Error, Result, StorageExt};

use crate::Store;

/// What `extend` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Renewals {
    /// Renews as the store would.
    Work = 0,
    /// Reports every lease lost.
    Lost = 1,
    /// Fails with a backend error, as if the server were unreachable.
    Fail = 2,
}

/// The wrapper. Build it with [`Faulty::new`] and switch faults on through its fields.
#[derive(Debug)]
pub struct Faulty {
    inner: Store,
    renewals: AtomicU8,
    /// `lock` fails with a backend error (renewals of a held lock included).
    pub locks_fail: AtomicBool,
    /// The next this many reads of the restart signal fail.
    pub control_failures: AtomicUsize,
    /// How many times `size` was asked.
    pub sizes: AtomicUsize,
    /// How many times `push` was called, and how many jobs the largest call carried.
    pub pushes: AtomicUsize,
    /// The most jobs one `push` carried.
    pub largest_push: AtomicUsize,
    /// The most jobs a refused `push` carried.
    pub largest_refused: AtomicUsize,
    /// `push` fails (storing nothing) when one of its jobs' payloads contains these bytes.
    pub refuse_payloads_with: std::sync::Mutex<Option<Vec<u8>>>,
    /// What the worker registry's writes (`beat`, `leave`) do.
    pub beats: AtomicU8,
    /// How many beats were asked.
    pub beat_calls: AtomicUsize,
}

/// What the worker registry's writes do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Beats {
    /// Write as the store would.
    Work = 0,
    /// Fail with a backend error.
    Fail = 1,
    /// Never answer.
    Hang = 2,
}

impl Faulty {
    /// Wraps `inner` with every fault off.
    pub fn new(inner: Store) -> Arc<Self> {
        Arc::new(Faulty {
            inner,
            renewals: AtomicU8::new(Renewals::Work as u8),
            locks_fail: AtomicBool::new(false),
            control_failures: AtomicUsize::new(0),
            sizes: AtomicUsize::new(0),
            pushes: AtomicUsize::new(0),
            largest_push: AtomicUsize::new(0),
            largest_refused: AtomicUsize::new(0),
            refuse_payloads_with: std::sync::Mutex::new(None),
            beats: AtomicU8::new(Beats::Work as u8),
            beat_calls: AtomicUsize::new(0),
        })
    }

    /// Sets what the worker registry's writes do from now on.
    pub fn beats(&self, beats: Beats) {
        self.beats.store(beats as u8, Ordering::SeqCst);
    }

    /// The fault of a registry write, if one is on (after it, for `Hang`, a very long wait).
    async fn beat_fault(&self) -> Result<()> {
        match self.beats.load(Ordering::SeqCst) {
            1 => Err(self.down()),
            2 => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Err(self.down())
            }
            _ => Ok(()),
        }
    }

    /// Sets what `extend` does from now on.
    pub fn renewals(&self, renewals: Renewals) {
        self.renewals.store(renewals as u8, Ordering::SeqCst);
    }

    fn down(&self) -> Error {
        Error::backend(
            self.inner.capabilities().driver,
            "connection refused (a test fault)",
        )
    }
}

#[async_trait]
impl Storage for Faulty {
    fn capabilities(&self) -> Capabilities<'_> {
        let mut caps = self.inner.capabilities();
        if caps.inspect.is_some() {
            caps.inspect = Some(self);
        }
        if caps.control.is_some() {
            caps.control = Some(self);
        }
        if caps.workers.is_some() {
            caps.workers = Some(self);
        }
        caps
    }

    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>> {
        self.pushes.fetch_add(1, Ordering::SeqCst);
        self.largest_push.fetch_max(jobs.len(), Ordering::SeqCst);
        let refused = self.refuse_payloads_with.lock().unwrap().clone();
        if let Some(marker) = refused {
            if jobs
                .iter()
                .any(|job| job.payload.windows(marker.len()).any(|w| w == marker))
            {
                self.largest_refused.fetch_max(jobs.len(), Ordering::SeqCst);
                return Err(Error::backend(
                    self.inner.capabilities().driver,
                    "a refused payload (a test fault)",
                ));
            }
        }
        // Gives concurrent pushes time to queue up behind this one, as a round trip would.
        tokio::task::yield_now().await;
        self.inner.push(jobs).await
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        self.inner.reserve(request).await
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        match self.renewals.load(Ordering::SeqCst) {
            1 => Ok(vec![LeaseStatus::Lost; leases.len()]),
            2 => Err(self.down()),
            _ => self.inner.extend(leases, lease).await,
        }
    }

    async fn settle(
        &self,
        settles: Vec<Settle>,
        fetch: Option<&ReserveRequest>,
    ) -> Result<SettleReply> {
        self.inner.settle(settles, fetch).await
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        if self.locks_fail.load(Ordering::SeqCst) {
            return Err(self.down());
        }
        self.inner.lock(key, owner, ttl).await
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        self.inner.unlock(key, owner).await
    }
}

impl Faulty {
    fn inner_inspect(&self) -> Result<&dyn Inspect> {
        self.inner
            .capabilities()
            .inspect
            .ok_or(Error::NotSupported {
                driver: self.inner.capabilities().driver,
                operation: "inspection",
            })
    }
}

#[async_trait]
impl Inspect for Faulty {
    async fn size(&self, queue: &str) -> Result<QueueSize> {
        self.sizes.fetch_add(1, Ordering::SeqCst);
        self.inner_inspect()?.size(queue).await
    }

    async fn queues(&self) -> Result<Vec<String>> {
        self.inner_inspect()?.queues().await
    }

    async fn clear(&self, queue: &str) -> Result<u64> {
        self.inner_inspect()?.clear(queue).await
    }

    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        self.inner_inspect()?.oldest_available(queue).await
    }

    async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        page: PageRequest,
    ) -> Result<Page<JobSummary>> {
        self.inner_inspect()?.jobs(queue, state, page).await
    }
}

#[async_trait]
impl Control for Faulty {
    async fn restart_generation(&self) -> Result<u64> {
        let failing = self
            .control_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(self.down());
        }
        match self.inner.capabilities().control {
            Some(control) => control.restart_generation().await,
            None => Err(Error::NotSupported {
                driver: self.inner.capabilities().driver,
                operation: "the restart signal",
            }),
        }
    }

    async fn request_restart(&self) -> Result<()> {
        match self.inner.capabilities().control {
            Some(control) => control.request_restart().await,
            None => Err(Error::NotSupported {
                driver: self.inner.capabilities().driver,
                operation: "the restart signal",
            }),
        }
    }
}

#[async_trait]
impl Workers for Faulty {
    async fn beat(&self, id: &str, entry: &[u8], ttl: Duration) -> Result<()> {
        self.beat_calls.fetch_add(1, Ordering::SeqCst);
        self.beat_fault().await?;
        self.inner.workers()?.beat(id, entry, ttl).await
    }

    async fn workers(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.inner.workers()?.workers().await
    }

    async fn leave(&self, id: &str) -> Result<bool> {
        self.beat_fault().await?;
        self.inner.workers()?.leave(id).await
    }
}
