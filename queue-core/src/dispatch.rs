//! [`PendingDispatch`]: the builder behind `SendEmail::dispatch(job)...await`.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::dispatcher::{self, Dispatcher, QueueSettings};
use crate::envelope::{version_for, After, Envelope};
use crate::error::{Error, Result};
use crate::limit::JobLimit;
use crate::storage::{unix_millis, Availability, Capabilities, NewJob, Pushed};
use crate::unique::{OnConflict, UniqueJob};

/// A dispatch being built. Nothing is stored until it is `.await`ed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
/// use std::time::Duration;
/// use queue_core::{Queue, StorageExt};
///
/// let queue = Queue::connect("memory://").await?;
/// queue
///     .dispatch_named("generate-report", serde_json::json!({"month": 11}))
///     .on_queue("low")
///     .delay(Duration::from_secs(60))
///     .without_overlapping()
///     .await?;
/// assert_eq!(queue.storage().inspect()?.size("low").await?.delayed, 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a dispatch does nothing until it is awaited"]
pub struct PendingDispatch {
    name: String,
    data: Result<Box<RawValue>>,
    queue: String,
    available: Availability,
    tries: Option<u32>,
    max_exceptions: Option<u32>,
    timeout: Option<Duration>,
    retry_until: Option<Duration>,
    fail_on_timeout: bool,
    lock: Option<String>,
    lock_retry: Option<Duration>,
    unique: Option<UniqueJob>,
    limit: Option<JobLimit>,
    encrypted: bool,
    dispatched_at: Option<SystemTime>,
    via: Option<Dispatcher>,
    /// A debounce's wait ([`PendingDispatch::debounce`]).
    debounce: Option<Duration>,
    /// Its cap ([`PendingDispatch::max_wait`]).
    max_wait: Option<Duration>,
    /// When the burst this debounced dispatch belongs to began (Unix ms).
    burst: Option<i64>,
}

/// What a stored schedule keeps of the dispatch its ticks repeat.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Template {
    name: String,
    queue: String,
    data: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_exceptions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lock: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lock_retry_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<JobLimit>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    encrypted: bool,
}

impl Clone for PendingDispatch {
    fn clone(&self) -> Self {
        PendingDispatch {
            name: self.name.clone(),
            data: match &self.data {
                Ok(data) => Ok(data.clone()),
                Err(e) => Err(Error::Payload(e.to_string())),
            },
            queue: self.queue.clone(),
            available: self.available,
            tries: self.tries,
            max_exceptions: self.max_exceptions,
            timeout: self.timeout,
            retry_until: self.retry_until,
            fail_on_timeout: self.fail_on_timeout,
            lock: self.lock.clone(),
            lock_retry: self.lock_retry,
            unique: self.unique.clone(),
            limit: self.limit.clone(),
            encrypted: self.encrypted,
            dispatched_at: self.dispatched_at,
            via: self.via.clone(),
            debounce: self.debounce,
            max_wait: self.max_wait,
            burst: self.burst,
        }
    }
}

impl PendingDispatch {
    /// Whether the dispatch carries a uniqueness (its type's, or one given to it).
    pub(crate) fn is_unique(&self) -> bool {
        self.unique.is_some()
    }

    pub(crate) fn typed(
        name: &str,
        queue: &str,
        tries: Option<u32>,
        timeout: Option<Duration>,
        data: &impl Serialize,
    ) -> Self {
        let mut pending = Self::encode(name, data);
        pending.queue = queue.to_owned();
        pending.tries = tries;
        pending.timeout = timeout;
        pending
    }

    /// A string-named dispatch. A registered job type that declares a uniqueness gets it
    /// here too, computed from the payload (so `runall dispatch` honours it).
    pub(crate) fn named(name: &str, payload: &serde_json::Value) -> Self {
        let mut pending = Self::encode(name, payload);
        if let (Some(registration), Ok(data)) = (crate::registry::find(name), &pending.data) {
            pending.encrypted = registration.encrypted;
            pending.max_exceptions = registration.max_exceptions;
            match (registration.unique_of(data), registration.limit_of(data)) {
                (Ok(unique), Ok(limit)) => (pending.unique, pending.limit) = (unique, limit),
                (Err(e), _) => {
                    pending.data = Err(Error::Payload(format!(
                        "job `{name}` is unique, and its key cannot be read from this payload: {e}"
                    )))
                }
                (_, Err(e)) => {
                    pending.data = Err(Error::Payload(format!(
                        "job `{name}` is limited, and its limit key cannot be read from this \
                         payload: {e}"
                    )))
                }
            }
        }
        pending
    }

    /// The dispatch as a stored schedule keeps it (its payload must have encoded).
    pub(crate) fn template(&self) -> Result<Template> {
        if self.encrypted {
            // The template would keep the job's data readable in the schedule's timer job.
            return Err(Error::Config(format!(
                "job `{}` is encrypted: stored schedules of encrypted jobs are not supported \
                 yet (a schedule in code or in job.toml is)",
                self.name
            )));
        }
        let data = match &self.data {
            Ok(data) => data.clone(),
            Err(e) => return Err(Error::Payload(e.to_string())),
        };
        if crate::secret::may_hold(data.get()) {
            return Err(Error::Config(format!(
                "job `{}` has secret fields: stored schedules of jobs with secrets are not                  supported yet (the schedule would keep them readable; a schedule in code or                  in job.toml is supported)",
                self.name
            )));
        }
        Ok(Template {
            name: self.name.clone(),
            queue: self.queue.clone(),
            data,
            tries: self.tries,
            max_exceptions: self.max_exceptions,
            timeout_ms: self
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            lock: self.lock.clone(),
            lock_retry_ms: self
                .lock_retry
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            limit: self.limit.clone(),
            encrypted: self.encrypted,
        })
    }

    /// The dispatch a stored schedule's template describes.
    pub(crate) fn from_template(template: Template) -> Self {
        PendingDispatch {
            name: template.name,
            data: Ok(template.data),
            queue: template.queue,
            available: Availability::Now,
            tries: template.tries,
            max_exceptions: template.max_exceptions,
            timeout: template.timeout_ms.map(Duration::from_millis),
            retry_until: None,
            fail_on_timeout: false,
            lock: template.lock,
            lock_retry: template.lock_retry_ms.map(Duration::from_millis),
            unique: None,
            limit: template.limit,
            encrypted: template.encrypted,
            dispatched_at: None,
            via: None,
            debounce: None,
            max_wait: None,
            burst: None,
        }
    }

    /// Records `at` as the dispatch time (a schedule's tick) instead of now.
    pub(crate) fn dispatched_at(mut self, at: SystemTime) -> Self {
        self.dispatched_at = Some(at);
        self
    }

    pub(crate) fn with_unique(mut self, unique: Option<UniqueJob>) -> Self {
        self.unique = unique;
        self
    }

    pub(crate) fn with_max_exceptions(mut self, max: Option<u32>) -> Self {
        self.max_exceptions = max;
        self
    }

    /// Refuses a dispatch that counts its errors ([`max_exceptions`](Self::max_exceptions))
    /// on a store with no group counters to count them in.
    pub(crate) fn check_capabilities(&self, capabilities: &Capabilities<'_>) -> Result<()> {
        if self.max_exceptions.is_some() && capabilities.groups.is_none() {
            return Err(Error::NotSupported {
                driver: capabilities.driver,
                operation: "max_exceptions (a job's errors are counted in a group counter)",
            });
        }
        Ok(())
    }

    pub(crate) fn with_limit(mut self, limit: Option<JobLimit>) -> Self {
        self.limit = limit;
        self
    }

    /// Counts the job against the limit `limit` (a name, or a [`JobLimit`] with its key),
    /// as the workers define it: it starts only when the limit allows, and waiting for it
    /// never counts an attempt. Replaces the limit its type declares.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use queue_core::{JobLimit, Queue};
    ///
    /// let queue = Queue::connect("memory://").await?;
    /// queue
    ///     .dispatch_named("charge", serde_json::json!({"account": 7}))
    ///     .limit(JobLimit::new("stripe").key(7))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn limit(mut self, limit: impl Into<JobLimit>) -> Self {
        self.limit = Some(limit.into());
        self
    }

    /// Stores the job's data encrypted with the queue's [`KeyRing`](crate::KeyRing)
    /// (what `#[job(encrypted)]` does for every dispatch of a type). Without keys the
    /// dispatch fails with [`Error::Config`] saying how to set them.
    pub fn encrypted(mut self) -> Self {
        self.encrypted = true;
        self
    }

    pub(crate) fn with_encrypted(mut self, encrypted: bool) -> Self {
        self.encrypted = encrypted;
        self
    }

    /// Counts the job against its limit without one (see [`limit`](Self::limit)).
    pub fn unlimited(mut self) -> Self {
        self.limit = None;
        self
    }

    fn encode(name: &str, data: &impl Serialize) -> Self {
        let data = serde_json::to_string(data)
            .map_err(|e| Error::Payload(format!("job `{name}` does not serialize: {e}")))
            .and_then(|s| RawValue::from_string(s).map_err(|e| Error::Payload(e.to_string())));
        PendingDispatch {
            name: name.to_owned(),
            data,
            queue: "default".to_owned(),
            available: Availability::Now,
            tries: None,
            max_exceptions: None,
            timeout: None,
            retry_until: None,
            fail_on_timeout: false,
            lock: None,
            lock_retry: None,
            unique: None,
            limit: None,
            encrypted: false,
            dispatched_at: None,
            via: None,
            debounce: None,
            max_wait: None,
            burst: None,
        }
    }

    /// Puts the job on `queue` instead of its default.
    pub fn on_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Makes the job available only after `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.available = Availability::After(delay);
        self
    }

    /// Makes the job available only at `time`.
    pub fn at(mut self, time: SystemTime) -> Self {
        self.available = Availability::At(time);
        self
    }

    /// Lets at most one job with this job's name run at once, across every worker. A job
    /// whose lock is held is put back for a moment, not counted as an attempt.
    pub fn without_overlapping(self) -> Self {
        let key = self.name.clone();
        self.without_overlapping_key(key)
    }

    /// For a job [`without_overlapping`](Self::without_overlapping): while another job holds
    /// its key's lock, it goes back for at most `delay` (Laravel's `releaseAfter`), no
    /// attempt counted. On a store that parks jobs on a lock
    /// ([`Capabilities::park`](crate::storage::Capabilities::park): SQL, Redis on one
    /// server, memory) the holder's unlock wakes it sooner, and without this it waits up to
    /// a lease; elsewhere it looks again after `delay` instead of the worker's
    /// [`lock_retry`](crate::WorkerOptions::lock_retry) (500 ms by default), so a job whose
    /// key is busy for minutes looks again every `delay`, not twice a second. (Laravel's
    /// `expireAfter` has no counterpart: the lock lives with the job's lease, so a crashed
    /// worker's lock is free when its lease runs out.)
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use std::time::Duration;
    /// use queue_core::Queue;
    ///
    /// let queue = Queue::connect("memory://").await?;
    /// queue
    ///     .dispatch_named("sync-account", serde_json::json!({ "account": 7 }))
    ///     .without_overlapping_key("account:7")
    ///     .release_after(Duration::from_secs(10))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn release_after(mut self, delay: Duration) -> Self {
        self.lock_retry = Some(delay);
        self
    }

    /// Like [`without_overlapping`](Self::without_overlapping) with a key you choose (for
    /// example `report:{customer}` to serialise per customer only).
    pub fn without_overlapping_key(mut self, key: impl Into<String>) -> Self {
        self.lock = Some(key.into());
        self
    }

    /// Makes this dispatch unique by `key` (Laravel's `uniqueId`): while a job of the same
    /// name holds the key, another is not stored. Keeps the rest of the job type's declared
    /// uniqueness if it has one, else the defaults of [`UniqueJob::key`]: held until the job
    /// leaves the queue, across queues, a duplicate skipped.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use queue_core::{Dispatched, Queue};
    ///
    /// let queue = Queue::connect("memory://").await?;
    /// let sync = || queue.dispatch_named("sync-customer", serde_json::json!({"id": 42}));
    /// let first = sync().unique_key("customer:42").await?;
    /// let second = sync().unique_key("customer:42").await?;
    /// assert!(matches!(first, Dispatched::Created(_)));
    /// assert_eq!(second, Dispatched::Duplicate(first.into_id()));
    /// # Ok(()) }
    /// ```
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique = Some(match self.unique.take() {
            Some(unique) => unique.with_key(key),
            None => UniqueJob::key(key),
        });
        self
    }

    /// Makes this dispatch unique as `unique` says (replacing the job type's declaration).
    pub fn unique(mut self, unique: UniqueJob) -> Self {
        self.unique = Some(unique);
        self
    }

    /// Debounces the job (Laravel's `DebounceFor`, trailing edge): it runs `wait` after the
    /// last of a burst of dispatches, with the last one's payload. Each dispatch while the
    /// job is still queued replaces its payload and pushes its start back to `wait` from
    /// now; once a worker has taken it, the next dispatch queues the next run. The key is the job
    /// type's declared uniqueness or [`unique_key`](Self::unique_key)'s (else the job's
    /// name: one per type).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use std::time::Duration;
    /// use queue_core::{Dispatched, Queue, StorageExt};
    ///
    /// let queue = Queue::connect("memory://").await?;
    /// let reindex = |n: u32| {
    ///     queue
    ///         .dispatch_named("reindex", serde_json::json!({ "edits": n }))
    ///         .unique_key("site:7")
    ///         .debounce(Duration::from_secs(5))
    /// };
    /// let first = reindex(1).await?.into_id();
    /// assert_eq!(reindex(2).await?, Dispatched::Replaced(first.clone()));
    /// assert_eq!(reindex(3).await?, Dispatched::Replaced(first));
    /// assert_eq!(queue.storage().inspect()?.size("default").await?.delayed, 1);
    /// # Ok(()) }
    /// ```
    pub fn debounce(mut self, wait: Duration) -> Self {
        let unique = self
            .unique
            .take()
            .unwrap_or_else(|| UniqueJob::key(""))
            .until(crate::storage::Until::Started)
            .on_conflict(OnConflict::Replace);
        self.unique = Some(unique);
        self.available = Availability::After(wait);
        self.debounce = Some(wait);
        self
    }

    /// Caps how far a burst of [`debounce`](Self::debounce)d dispatches pushes the run back:
    /// the run starts at most `max_wait` after the first dispatch of the burst, however
    /// many follow (lodash's `maxWait`). Needs `debounce` and a store that can read a queued
    /// job by id; refused otherwise.
    ///
    /// The dispatch then takes up to three round trips: a push that claims the key; if a
    /// queued job holds it, a read of when that job's burst began; and the replacing push,
    /// whose start is the earlier of `wait` from now and `max_wait` from the burst's
    /// beginning. If a worker takes the queued job between the read and the replace, the
    /// new job starts a new run but keeps the old burst's cap, so it may start sooner than
    /// `wait` from now (never later).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use std::time::{Duration, SystemTime};
    /// use queue_core::{Queue, StorageExt};
    ///
    /// let queue = Queue::connect("memory://").await?;
    /// let reindex = || {
    ///     queue
    ///         .dispatch_named("reindex", serde_json::json!({}))
    ///         .unique_key("site:7")
    ///         .debounce(Duration::from_secs(5))
    ///         .max_wait(Duration::from_secs(60))
    /// };
    /// let first = reindex().await?.into_id();
    /// reindex().await?;
    /// let job = queue.storage().track()?.job(&first).await?.expect("queued");
    /// assert!(job.due_at <= SystemTime::now() + Duration::from_secs(5));
    /// # Ok(()) }
    /// ```
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Drops the job type's declared uniqueness for this dispatch.
    pub fn not_unique(mut self) -> Self {
        self.unique = None;
        self
    }

    /// Overrides the number of attempts for this dispatch.
    pub fn tries(mut self, tries: u32) -> Self {
        self.tries = Some(tries.max(1));
        self
    }

    /// Fails the job for good after `n` errors (a body's `Err`, a timeout), whatever tries
    /// remain (Laravel's `$maxExceptions`): attempts that ended otherwise (the job released
    /// itself, its worker died) count against [`tries`](Self::tries) only. Refused with
    /// [`Error::NotSupported`] on a store without group counters (memcached, Redis Cluster),
    /// where the errors cannot be counted.
    pub fn max_exceptions(mut self, n: u32) -> Self {
        self.max_exceptions = Some(n.max(1));
        self
    }

    /// Lets the job be retried only until `after` has passed since its dispatch (Laravel's
    /// `retryUntil`): a failed attempt after that fails it for good, whatever tries remain.
    pub fn retry_until(mut self, after: Duration) -> Self {
        self.retry_until = Some(after);
        self
    }

    /// Fails the job for good when an attempt times out, instead of retrying it (Laravel's
    /// `$failOnTimeout`).
    pub fn fail_on_timeout(mut self) -> Self {
        self.fail_on_timeout = true;
        self
    }

    /// Overrides the timeout of each attempt for this dispatch.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Dispatches through `queue` (a [`Queue`](crate::Queue) or a [`Dispatcher`]) instead of
    /// the default one.
    pub fn via(mut self, queue: impl AsRef<Dispatcher>) -> Self {
        self.via = Some(queue.as_ref().clone());
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Encodes the job as it will be stored (with its unique claim, if any), checking the
    /// payload size.
    pub fn into_new_job(self, settings: &QueueSettings) -> Result<NewJob> {
        if self.max_wait.is_some() {
            return Err(Error::Config(format!(
                "job `{}`: a debounce's max_wait needs a dispatch of its own (`.await`): it \
                 reads the queued job before it replaces it, which dispatch_many cannot",
                self.name
            )));
        }
        let unique = match &self.unique {
            // An encrypted job's key is made of its data, and a key made of a secret field
            // holds its value: the store sees a stand-in.
            Some(u) if self.encrypted || crate::secret::may_hold(u.key_part()) => {
                Some(u.clone().blinded(settings.keys()?, &self.name)?.claim(
                    &self.name,
                    &self.queue,
                    SystemTime::now(),
                ))
            }
            Some(u) => Some(u.claim(&self.name, &self.queue, SystemTime::now())),
            None => None,
        };
        let job = self.envelope(settings, None)?;
        Ok(match unique {
            Some(unique) => job.unique(unique),
            None => job,
        })
    }

    /// The job as a part of a chain, batch or workflow, with what its end changes in other
    /// jobs. A unique job is refused: its place there is held by a claim of the
    /// composition's own (so a replayed step cannot store it twice), and a duplicate left
    /// out would leave the composition waiting for it.
    /// The queue it goes on.
    pub(crate) fn queue_name(&self) -> &str {
        &self.queue
    }

    pub(crate) fn encode_with(
        self,
        settings: &QueueSettings,
        after: Option<After>,
    ) -> Result<NewJob> {
        if self.unique.is_some() {
            return Err(Error::Config(format!(
                "job `{}` is unique: unique jobs cannot be chain links, batch members, \
                 workflow nodes or their callbacks (not supported yet); dispatch it with \
                 `.not_unique()` there",
                self.name
            )));
        }
        self.envelope(settings, after)
    }

    fn envelope(mut self, settings: &QueueSettings, after: Option<After>) -> Result<NewJob> {
        if let Some(limit) = &self.limit {
            limit.check()?;
        }
        let secret_limit = self
            .limit
            .as_ref()
            .is_some_and(|l| l.key.as_deref().is_some_and(crate::secret::may_hold));
        if self.encrypted || secret_limit {
            if let Some(limit) = self.limit.take() {
                self.limit = Some(limit.blinded(settings.keys()?)?);
            }
        }
        let mut data = self.data?;
        // Secret fields are sealed one by one (an encrypted job is sealed whole instead).
        if !self.encrypted && crate::secret::may_hold(data.get()) {
            let keys = settings.keys().map_err(|e| {
                Error::Config(format!(
                    "job `{}` has secret fields, which are stored sealed: {e}",
                    self.name
                ))
            })?;
            data = crate::secret::seal(keys, &self.name, &data)?;
        }
        let sealed = if self.encrypted {
            let sealed = settings.keys()?.seal(&self.name, data.get().as_bytes())?;
            data = RawValue::from_string("null".to_owned())
                .map_err(|e| Error::Payload(e.to_string()))?;
            Some(sealed)
        } else {
            None
        };
        let dispatched_at = unix_millis(self.dispatched_at.unwrap_or_else(SystemTime::now));
        let envelope = Envelope {
            v: version_for(&after, self.limit.is_some(), sealed.is_some()),
            name: self.name.clone(),
            data,
            tries: self.tries,
            max_exceptions: self.max_exceptions,
            timeout_ms: self.timeout.map(|t| t.as_millis() as u64),
            retry_until_ms: self
                .retry_until
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            fail_on_timeout: self.fail_on_timeout,
            lock: self.lock,
            lock_retry_ms: self
                .lock_retry
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            dispatched_at,
            due_at: match self.available {
                crate::storage::Availability::Now => None,
                crate::storage::Availability::After(delay) => {
                    Some(dispatched_at.saturating_add(crate::storage::duration_millis(delay)))
                }
                crate::storage::Availability::At(at) => Some(unix_millis(at)),
            },
            trace: crate::trace::inject(),
            after,
            limit: self.limit,
            sealed,
            burst: self.burst,
        };
        let payload = envelope.encode()?;
        if payload.len() > settings.max_payload {
            return Err(Error::PayloadTooLarge {
                size: payload.len(),
                limit: settings.max_payload,
            });
        }
        Ok(NewJob::new(self.queue, self.name, payload).available(self.available))
    }

    /// Stores the job. Without `.via(..)` it goes through the default dispatcher: that of the
    /// enclosing [`Queue::scope`](crate::Queue::scope), else this thread's
    /// [`Queue::fake`](crate::Queue::fake), else [`Queue::set_default`](crate::Queue::set_default)'s.
    ///
    /// Returns [`Dispatched::Created`](crate::Dispatched) with the new job's id, or, for a
    /// unique job whose key is held, [`Dispatched::Duplicate`](crate::Dispatched) with the id
    /// of the job holding it ([`Error::Duplicate`] with [`OnConflict::Error`]).
    pub async fn send(self) -> Result<Pushed> {
        if let Some(max_wait) = self.max_wait {
            let Some(wait) = self.debounce.filter(|_| self.unique.is_some()) else {
                return Err(Error::Config(format!(
                    "job `{}`: max_wait caps a debounce; call .debounce(wait) with it",
                    self.name
                )));
            };
            return self.send_capped(wait, max_wait).await;
        }
        self.send_once().await
    }

    /// A debounced dispatch with a `max_wait` (see [`max_wait`](Self::max_wait)).
    async fn send_capped(mut self, wait: Duration, max_wait: Duration) -> Result<Pushed> {
        let dispatcher = dispatcher::resolve(self.via.take())?;
        let capabilities = dispatcher.storage().capabilities();
        if !capabilities.replace {
            // Refused before the first push, as a debounce without the cap is.
            return Err(Error::NotSupported {
                driver: capabilities.driver,
                operation: "replacing a queued job (debounce, on_conflict = replace)",
            });
        }
        let now = unix_millis(SystemTime::now());
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
        // A push that only claims the key: with no job queued under it, a burst begins.
        let mut first = self.clone();
        first.via = Some(dispatcher.clone());
        first.burst = Some(now);
        first.max_wait = None;
        first.available = Availability::After(wait.min(max_wait));
        first.unique = first.unique.take().map(|u| u.on_conflict(OnConflict::Skip));
        let holder = match first.send_once().await? {
            Pushed::Duplicate(holder) => holder,
            pushed => return Ok(pushed),
        };
        // When the queued job's burst began (its dispatch, if it carries none). Gone since
        // (a worker took it): a burst begins now.
        use crate::StorageExt as _;
        let storage = dispatcher.storage();
        let track = storage.track().map_err(|_| Error::NotSupported {
            driver: storage.capabilities().driver,
            operation: "debounce max_wait (it reads the queued job by id)",
        })?;
        let began = match track.job(&holder).await? {
            Some(job) => crate::envelope::Envelope::decode(&job.payload)
                .ok()
                .map_or(now, |e| e.burst.unwrap_or(e.dispatched_at)),
            None => now,
        };
        let at = (now.saturating_add(millis(wait)))
            .min(began.saturating_add(millis(max_wait)))
            .max(now);
        self.via = Some(dispatcher);
        self.burst = Some(began);
        self.max_wait = None;
        self.available = Availability::At(
            SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(at).unwrap_or(0)),
        );
        self.send_once().await
    }

    /// One push of the job.
    async fn send_once(mut self) -> Result<Pushed> {
        let dispatcher = dispatcher::resolve(self.via.take())?;
        let name = self.name.clone();
        let error_on_duplicate = self
            .unique
            .as_ref()
            .is_some_and(|u| u.conflict() == OnConflict::Error);
        let capabilities = dispatcher.storage().capabilities();
        self.check_capabilities(&capabilities)?;
        let job = self.into_new_job(dispatcher.settings())?;
        let driver = capabilities.driver;
        let key = job.unique.as_ref().map(|u| u.key.clone());
        if key.is_some() && !capabilities.claims {
            return Err(Error::NotSupported {
                driver,
                operation: "unique jobs",
            });
        }
        if job.unique.as_ref().is_some_and(|u| u.replace) && !capabilities.replace {
            return Err(Error::NotSupported {
                driver,
                operation: "replacing a queued job (debounce, on_conflict = replace)",
            });
        }
        match dispatcher.push(vec![job]).await?.pop() {
            Some(Pushed::Duplicate(existing)) if error_on_duplicate => Err(Error::Duplicate {
                name,
                key: key.unwrap_or_default(),
                existing,
            }),
            Some(pushed) => Ok(pushed),
            None => Err(Error::backend(driver, "push returned no result")),
        }
    }
}

impl IntoFuture for PendingDispatch {
    type Output = Result<Pushed>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Pushed>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

impl<J: crate::Job> From<J> for PendingDispatch {
    /// The job's dispatch with its defaults (what `job.dispatch()` starts).
    fn from(job: J) -> Self {
        job.dispatch()
    }
}
