//! [`Dispatcher`]: what a dispatch goes through (a store, its dispatch settings, the queue size
//! guard), and which one a dispatch without `.via(..)` uses.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::storage::{NewJob, Pushed, Storage, StorageExt};

/// Settings of a queue connection that apply when dispatching.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueSettings {
    /// The largest encoded job accepted at dispatch, in bytes (1 MB by default).
    pub max_payload: usize,
    /// Per-queue size limits: a dispatch to a queue holding this many jobs fails with
    /// [`Error::QueueFull`]. See [`Dispatcher`] for how exact the limit is.
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
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    settings: QueueSettings,
    sizes: Mutex<HashMap<String, SizeView>>,
}

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

impl Dispatcher {
    /// A dispatcher over `storage` with `settings`.
    pub fn new(storage: Arc<dyn Storage>, settings: QueueSettings) -> Self {
        Dispatcher {
            inner: Arc::new(Inner {
                storage,
                settings,
                sizes: Mutex::default(),
            }),
        }
    }

    /// The store.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The dispatch settings.
    pub fn settings(&self) -> &QueueSettings {
        &self.inner.settings
    }

    /// Pushes encoded jobs, checking the queue size limits first.
    pub async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>> {
        self.check_sizes(&jobs).await?;
        self.inner.storage.push(jobs).await
    }

    async fn check_sizes(&self, jobs: &[NewJob]) -> Result<()> {
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

static PROCESS_DEFAULT: RwLock<Option<Dispatcher>> = RwLock::new(None);

thread_local! {
    static THREAD_DEFAULT: RefCell<Option<Dispatcher>> = const { RefCell::new(None) };
}

tokio::task_local! {
    static TASK_DEFAULT: Dispatcher;
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
