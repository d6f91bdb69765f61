//! [`Queue`]: a connection to a store, the thing you dispatch through and run workers on.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::dispatch::PendingDispatch;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::job::{Job, JobContext, JobError};
use crate::registry::Handler;
use crate::storage::{self, ConnectOptions, JobId, MemoryStorage, NewJob, Storage};
use crate::worker::{Worker, WorkerOptions};

/// Settings of a queue connection that apply when dispatching.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueSettings {
    /// The largest encoded job accepted at dispatch, in bytes (1 MB by default).
    pub max_payload: usize,
    /// Per-queue size limits: a dispatch to a queue holding this many jobs fails with
    /// [`Error::QueueFull`].
    pub max_queue_size: HashMap<String, u64>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            max_payload: 1024 * 1024,
            max_queue_size: HashMap::new(),
        }
    }
}

/// A connection to a store: dispatch through it, listen on it, run workers on it.
///
/// Cheap to clone. Set one as the process-wide default at start-up ([`Queue::set_default`]),
/// and typed dispatches (`SendEmail::dispatch(job).await`) go through it; pass another with
/// `.via(&queue)`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
/// use queue_core::Queue;
/// use serde_json::json;
///
/// let queue = Queue::connect("memory://").await?;
/// queue.listen("send-notification", |payload: serde_json::Value, _ctx| async move {
///     println!("notify {}", payload["to"]);
///     Ok(())
/// });
/// queue.dispatch_named("send-notification", json!({"to": "a@b.c"})).on_queue("low").await?;
/// assert_eq!(queue.storage().size("low").await?.waiting, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    settings: QueueSettings,
    listeners: RwLock<HashMap<String, Handler>>,
    fake: Option<MemoryStorage>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("driver", &self.inner.storage.driver())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

static DEFAULT: RwLock<Option<Queue>> = RwLock::new(None);

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
            inner: Arc::new(Inner {
                storage,
                settings,
                listeners: RwLock::new(HashMap::new()),
                fake: None,
            }),
        }
    }

    /// Connects by URL (`sqlite://jobs.db`, `redis://...`, `memory://`) through the drivers
    /// linked into the binary, creating tables or directories if they are missing.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = ConnectOptions {
            migrate: true,
            ..ConnectOptions::default()
        };
        Ok(Self::from_arc(storage::connect(url, options).await?))
    }

    /// A queue for an application's tests (Laravel's `Queue::fake()`): an in-memory store
    /// that records every dispatch, set as the process-wide default.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use queue_core::Queue;
    /// let queue = Queue::fake();
    /// queue.dispatch_named("ping", serde_json::json!({"n": 1})).await?;
    /// assert_eq!(queue.dispatched_named("ping").len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn fake() -> Self {
        let memory = MemoryStorage::new();
        let queue = Queue {
            inner: Arc::new(Inner {
                storage: Arc::new(memory.clone()),
                settings: QueueSettings::default(),
                listeners: RwLock::new(HashMap::new()),
                fake: Some(memory),
            }),
        };
        Queue::set_default(queue.clone());
        queue
    }

    /// Jobs of type `J` dispatched through this fake queue, decoded.
    ///
    /// # Panics
    ///
    /// If the queue was not made with [`Queue::fake`]: it is a test assertion helper.
    pub fn dispatched<J: Job>(&self) -> Vec<J> {
        self.dispatched_named(J::NAME)
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect()
    }

    /// Payloads of jobs named `name` dispatched through this fake queue.
    ///
    /// # Panics
    ///
    /// If the queue was not made with [`Queue::fake`].
    pub fn dispatched_named(&self, name: &str) -> Vec<Value> {
        let Some(fake) = &self.inner.fake else {
            panic!("Queue::dispatched works only on a queue made with Queue::fake()");
        };
        fake.pushed()
            .into_iter()
            .filter(|job| job.name == name)
            .filter_map(|job| Envelope::decode(&job.payload).ok())
            .filter_map(|env| serde_json::from_str(env.data.get()).ok())
            .collect()
    }

    /// Jobs dispatched through this fake queue, as (queue, name) pairs in order.
    ///
    /// # Panics
    ///
    /// If the queue was not made with [`Queue::fake`].
    pub fn dispatched_all(&self) -> Vec<NewJob> {
        match &self.inner.fake {
            Some(fake) => fake.pushed(),
            None => panic!("Queue::dispatched_all works only on a queue made with Queue::fake()"),
        }
    }

    /// Makes `queue` the process-wide default that typed dispatches use.
    pub fn set_default(queue: Queue) {
        let mut slot = DEFAULT.write().unwrap_or_else(|p| p.into_inner());
        *slot = Some(queue);
    }

    /// The process-wide default queue.
    pub fn default_queue() -> Result<Queue> {
        DEFAULT
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Error::NoDefaultQueue)
    }

    /// The storage behind this queue.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The dispatch settings.
    pub fn settings(&self) -> &QueueSettings {
        &self.inner.settings
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
        let run = move |data: &serde_json::value::RawValue, ctx: JobContext| {
            let payload: P = serde_json::from_str(data.get()).map_err(|e| e.to_string())?;
            Ok(handler(payload, ctx).boxed())
        };
        let entry = Handler {
            run: Arc::new(run),
            tries: None,
            timeout: None,
            backoff: None,
        };
        self.inner
            .listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), entry);
    }

    pub(crate) fn listeners(&self) -> HashMap<String, Handler> {
        self.inner
            .listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Names of the listeners registered on this queue.
    pub fn listener_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.listeners().into_keys().collect();
        names.sort();
        names
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
    pub async fn dispatch_many(
        &self,
        jobs: impl IntoIterator<Item = PendingDispatch>,
    ) -> Result<Vec<JobId>> {
        let jobs = jobs
            .into_iter()
            .map(|job| job.into_new_job(&self.inner.settings))
            .collect::<Result<Vec<_>>>()?;
        self.check_sizes(&jobs).await?;
        self.inner.storage.push(jobs).await
    }

    pub(crate) async fn push_one(&self, job: NewJob) -> Result<JobId> {
        self.check_sizes(std::slice::from_ref(&job)).await?;
        let mut ids = self.inner.storage.push(vec![job]).await?;
        ids.pop()
            .ok_or_else(|| Error::backend(self.inner.storage.driver(), "push returned no id"))
    }

    async fn check_sizes(&self, jobs: &[NewJob]) -> Result<()> {
        if self.inner.settings.max_queue_size.is_empty() {
            return Ok(());
        }
        let mut adding: HashMap<&str, u64> = HashMap::new();
        for job in jobs {
            *adding.entry(job.queue.as_str()).or_default() += 1;
        }
        for (queue, n) in adding {
            if let Some(limit) = self.inner.settings.max_queue_size.get(queue) {
                let size = self.inner.storage.size(queue).await?.total();
                if size + n > *limit {
                    return Err(Error::QueueFull {
                        queue: queue.to_owned(),
                        size,
                        limit: *limit,
                    });
                }
            }
        }
        Ok(())
    }

    /// A worker on this queue.
    pub fn worker(&self, options: WorkerOptions) -> Worker {
        Worker::new(self.clone(), options)
    }
}
