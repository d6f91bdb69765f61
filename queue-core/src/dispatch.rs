//! [`PendingDispatch`]: the builder behind `SendEmail::dispatch(job)...await`.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::dispatcher::{self, Dispatcher, QueueSettings};
use crate::envelope::{version_for, After, Envelope};
use crate::error::{Error, Result};
use crate::storage::{unix_millis, Availability, JobId, NewJob};

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
    timeout: Option<Duration>,
    lock: Option<String>,
    via: Option<Dispatcher>,
}

impl PendingDispatch {
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

    pub(crate) fn named(name: &str, payload: &serde_json::Value) -> Self {
        Self::encode(name, payload)
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
            timeout: None,
            lock: None,
            via: None,
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

    /// Like [`without_overlapping`](Self::without_overlapping) with a key you choose (for
    /// example `report:{customer}` to serialise per customer only).
    pub fn without_overlapping_key(mut self, key: impl Into<String>) -> Self {
        self.lock = Some(key.into());
        self
    }

    /// Overrides the number of attempts for this dispatch.
    pub fn tries(mut self, tries: u32) -> Self {
        self.tries = Some(tries.max(1));
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

    /// Encodes the job as it will be stored, checking the payload size.
    pub fn into_new_job(self, settings: &QueueSettings) -> Result<NewJob> {
        self.encode_with(settings, None)
    }

    /// [`into_new_job`](Self::into_new_job) with what the job's end changes in other jobs.
    pub(crate) fn encode_with(
        self,
        settings: &QueueSettings,
        after: Option<After>,
    ) -> Result<NewJob> {
        let envelope = Envelope {
            v: version_for(&after),
            name: self.name.clone(),
            data: self.data?,
            tries: self.tries,
            timeout_ms: self.timeout.map(|t| t.as_millis() as u64),
            lock: self.lock,
            dispatched_at: unix_millis(SystemTime::now()),
            after,
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
    pub async fn send(mut self) -> Result<JobId> {
        let dispatcher = dispatcher::resolve(self.via.take())?;
        let job = self.into_new_job(dispatcher.settings())?;
        let driver = dispatcher.storage().capabilities().driver;
        match dispatcher.push(vec![job]).await?.pop() {
            Some(pushed) => Ok(pushed.into_id()),
            None => Err(Error::backend(driver, "push returned no result")),
        }
    }
}

impl IntoFuture for PendingDispatch {
    type Output = Result<JobId>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<JobId>> + Send>>;

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
