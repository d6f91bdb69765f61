//! [`Chain`]: jobs that run one after another, each only once the one before succeeded
//! (Laravel's `Bus::chain`), with a `catch` job for the first failure and a `finally` job
//! for the end, whatever happened.

use std::fmt;

use crate::dispatch::PendingDispatch;
use crate::dispatcher::{self, Dispatcher};
use crate::envelope::{After, Step};
use crate::error::{Error, Result};
use crate::storage::{new_token, Effect, NewJob, Unique, WaitingJob};

/// A chain of jobs: each runs once the one before it succeeded.
///
/// Every link is stored when the chain is dispatched, in one atomic step: the first in its
/// queue, the others as waiting jobs. The step that acknowledges a link releases the next
/// one, so no crash between the two can lose a link or run one twice; a link that fails for
/// good (its tries used up) skips every link after it, and releases the `catch` job. The
/// `finally` job runs once the chain has ended either way. `catch` and `finally` are ordinary
/// jobs: retried, visible, in the failed store if they fail.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
/// use queue_core::{Chain, Queue, StorageExt};
///
/// let queue = Queue::connect("memory://").await?;
/// let chain = Chain::new()
///     .then(queue.dispatch_named("download", serde_json::json!({"url": "https://e.x/a.mp4"})))
///     .then(queue.dispatch_named("transcode", serde_json::json!({})).on_queue("cpu"))
///     .catch(queue.dispatch_named("notify-failure", serde_json::json!({})))
///     .finally(queue.dispatch_named("clean-up", serde_json::json!({})))
///     .via(&queue)
///     .dispatch()
///     .await?;
/// // Only the first link is in a queue; the others wait for it.
/// assert_eq!(queue.storage().inspect()?.size("default").await?.total(), 1);
/// let status = Chain::status(&queue, &chain).await?;
/// assert_eq!((status.links, status.succeeded, status.is_finished()), (2, 0, false));
/// # Ok(()) }
/// ```
///
/// With typed jobs, a link is the job itself or its dispatch with options:
/// `Chain::new().then(Download { url }).then(Transcode.dispatch().on_queue("cpu"))`.
///
/// Chains need the store's [groups](crate::storage::Groups) capability (waiting jobs): the
/// SQL drivers, Redis on a single node, the file driver and the in-memory store have it.
/// Redis Cluster and memcached refuse a chain with [`Error::NotSupported`].
#[derive(Debug, Default)]
#[must_use = "a chain does nothing until it is dispatched"]
pub struct Chain {
    links: Vec<PendingDispatch>,
    catch: Option<PendingDispatch>,
    finally: Option<PendingDispatch>,
    via: Option<Dispatcher>,
}

/// A dispatched chain's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChainId(pub String);

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How far a chain got: counts of its links (not of attempts), from the store's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ChainStatus {
    /// Links in the chain (`catch` and `finally` not included).
    pub links: u64,
    /// Links that succeeded.
    pub succeeded: u64,
    /// Links that failed for good (at most one: a failure skips the rest).
    pub failed: u64,
    /// Links skipped because one before them failed.
    pub skipped: u64,
}

impl ChainStatus {
    /// Whether every link has ended (succeeded, failed or skipped).
    pub fn is_finished(&self) -> bool {
        self.links > 0 && self.succeeded + self.failed + self.skipped >= self.links
    }
}

impl Chain {
    /// An empty chain.
    pub fn new() -> Self {
        Chain::default()
    }

    /// Appends a link: a typed job, or a dispatch with its options (`on_queue`, `delay`,
    /// `tries`, ...). A link's delay counts from when the link before it succeeded. A
    /// `.via(..)` on a link is ignored: the chain's own applies.
    pub fn then(mut self, job: impl Into<PendingDispatch>) -> Self {
        self.links.push(job.into());
        self
    }

    /// The job that runs when a link fails for good (once, at the first failure).
    pub fn catch(mut self, job: impl Into<PendingDispatch>) -> Self {
        self.catch = Some(job.into());
        self
    }

    /// The job that runs once the chain has ended, whatever happened.
    pub fn finally(mut self, job: impl Into<PendingDispatch>) -> Self {
        self.finally = Some(job.into());
        self
    }

    /// Dispatches through `queue` instead of the default one.
    pub fn via(mut self, queue: impl AsRef<Dispatcher>) -> Self {
        self.via = Some(queue.as_ref().clone());
        self
    }

    /// Stores every link in one atomic step and returns the chain's id.
    pub async fn dispatch(mut self) -> Result<ChainId> {
        let dispatcher = dispatcher::resolve(self.via.take())?;
        if self.links.is_empty() {
            return Err(Error::Config("a chain needs at least one job".into()));
        }
        dispatcher.needs_groups("chains (they need waiting jobs)")?;
        let id = new_token();
        let (links, catch, finally) = (
            self.links.len(),
            self.catch.is_some(),
            self.finally.is_some(),
        );
        let effects = self.effects(&id, &dispatcher)?;
        let recorded = dispatcher
            .fake()
            .map(|fake| (fake.clone(), effects.clone()));
        dispatcher.apply(effects).await?;
        if let Some((fake, effects)) = recorded {
            let settings = dispatcher.settings();
            fake.record_chain(&id, links, catch, finally, &effects, settings);
        }
        Ok(ChainId(id))
    }

    /// What dispatching stores: the first link pushed, the others held, and the counters.
    fn effects(self, id: &str, dispatcher: &Dispatcher) -> Result<Vec<Effect>> {
        let n = self.links.len();
        let key = |what: &dyn fmt::Display| format!("chain:{id}:{what}");
        let group = key(&"");
        let group = group.trim_end_matches(':').to_owned();
        let count = |deltas: Vec<(&str, i64)>| Step::Count {
            group: group.clone(),
            deltas: deltas.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        };
        let (catch_key, finally_key) = (key(&"catch"), key(&"finally"));
        let (has_catch, has_finally) = (self.catch.is_some(), self.finally.is_some());
        let settings = dispatcher.settings();
        let mut effects = Vec::with_capacity(n + 3);
        for (i, link) in self.links.into_iter().enumerate() {
            let mut after = After::default();
            // Succeeded: the next link, or at the end the catch skipped and finally released.
            if i + 1 < n {
                after.succeeded.push(Step::Deps {
                    key: key(&(i + 1)),
                    delta: -1,
                });
            } else {
                if has_catch {
                    after.succeeded.push(Step::Skip {
                        key: catch_key.clone(),
                    });
                }
                if has_finally {
                    after.succeeded.push(Step::Deps {
                        key: finally_key.clone(),
                        delta: -1,
                    });
                }
            }
            after.succeeded.push(count(vec![("succeeded", 1)]));
            // Failed for good: every later link skipped, catch and finally released.
            for later in i + 1..n {
                after.failed.push(Step::Skip { key: key(&later) });
            }
            if has_catch {
                after.failed.push(Step::Deps {
                    key: catch_key.clone(),
                    delta: -1,
                });
            }
            if has_finally {
                after.failed.push(Step::Deps {
                    key: finally_key.clone(),
                    delta: -1,
                });
            }
            let skipped = (n - i - 1) as i64;
            after.failed.push(count(if skipped > 0 {
                vec![("failed", 1), ("skipped", skipped)]
            } else {
                vec![("failed", 1)]
            }));
            let job = link.encode_with(settings, Some(after))?;
            effects.push(if i == 0 {
                Effect::Push(job.unique(Unique::new(key(&0))))
            } else {
                Effect::Hold(WaitingJob::new(key(&i), 1, job))
            });
        }
        for (job, k) in [(self.catch, catch_key), (self.finally, finally_key)] {
            if let Some(job) = job {
                let job: NewJob = job.encode_with(settings, None)?;
                effects.push(Effect::Hold(WaitingJob::new(k, 1, job)));
            }
        }
        effects.push(count(vec![("links", n as i64)]).effect());
        Ok(effects)
    }

    /// How far the chain `id` got, through `queue` (a [`Queue`](crate::Queue) or a
    /// [`Dispatcher`]). [`Error::NotFound`] for a chain the store knows nothing of (never
    /// dispatched, or its counters removed).
    pub async fn status(queue: impl AsRef<Dispatcher>, id: &ChainId) -> Result<ChainStatus> {
        let counters = queue.as_ref().counters(&format!("chain:{}", id.0)).await?;
        let get = |name: &str| counters.count(name);
        if get("links") == 0 {
            return Err(Error::NotFound {
                what: "chain",
                id: id.0.clone(),
            });
        }
        Ok(ChainStatus {
            links: get("links"),
            succeeded: get("succeeded"),
            failed: get("failed"),
            skipped: get("skipped"),
        })
    }
}
