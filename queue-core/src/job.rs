//! What a job is: the [`Job`] metadata trait (derived), the [`Handle`] body trait (written by
//! you), the [`JobContext`] a body gets, and the [`JobError`] it returns.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use queue_time::BackoffSpec;

use crate::dispatch::PendingDispatch;
use crate::limit::JobLimit;
use crate::storage::JobId;
use crate::unique::UniqueJob;

/// A job type: its name, queue and retry policy. Implemented by `#[derive(Job)]`, which also
/// registers the type so every worker linking the crate knows it by name.
///
/// ```
/// use queue_core::{Handle, Job, JobContext, JobError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, Job)]
/// #[job(name = "send-email", queue = "default", tries = 3, timeout = "30s", backoff = "exponential")]
/// struct SendEmail {
///     to: String,
///     subject: String,
/// }
///
/// impl Handle for SendEmail {
///     async fn handle(self, ctx: JobContext) -> Result<(), JobError> {
///         println!("attempt {} of job {}: mail to {}", ctx.attempt(), ctx.job_id(), self.to);
///         Ok(())
///     }
/// }
///
/// assert_eq!(SendEmail::NAME, "send-email");
/// assert_eq!(SendEmail::TRIES, Some(3));
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name the job is stored and found under.
    const NAME: &'static str;
    /// The queue it goes on unless the dispatch says otherwise.
    const QUEUE: &'static str = "default";
    /// Attempts before it moves to the failed store; `None` takes the worker's `--retries`,
    /// else the config's `max_retries` (3 by default).
    const TRIES: Option<u32> = None;
    /// Errors (a body's `Err`, a timeout) before it moves to the failed store, whatever
    /// tries remain (Laravel's `$maxExceptions`); `None`: tries alone decide. With it, a
    /// job that releases itself often (`ctx.release`, which counts an attempt) can have many
    /// tries and still fail after a few real errors. Counted in the store (a group counter
    /// per job, changed in the step that retries it), so it needs a store with groups.
    const MAX_EXCEPTIONS: Option<u32> = None;
    /// How long one attempt may run before it is cancelled; `None` takes the worker's.
    const TIMEOUT: Option<Duration> = None;
    /// The wait between attempts; `None` takes the worker's (exponential with jitter).
    const BACKOFF: Option<Backoff> = None;
    /// Whether [`unique`](Self::unique) may return a uniqueness (set by `#[job(unique(..))]`),
    /// so string-named dispatches of the type (`runall dispatch`) compute it too.
    const UNIQUE: bool = false;
    /// Whether [`limit`](Self::limit) may return a limit (set by `#[job(limit = "..")]`), so
    /// string-named dispatches of the type count it too.
    const LIMITED: bool = false;
    /// Whether its data is stored encrypted (`#[job(encrypted)]`, see
    /// [`KeyRing`](crate::KeyRing)).
    const ENCRYPTED: bool = false;
    /// How long after its dispatch the job may still be retried (Laravel's `retryUntil`): a
    /// failed attempt past it fails the job for good, whatever tries remain. `None`: tries
    /// alone decide.
    const RETRY_UNTIL: Option<Duration> = None;
    /// Whether an attempt that times out fails the job for good instead of being retried
    /// (Laravel's `$failOnTimeout`).
    const FAIL_ON_TIMEOUT: bool = false;

    /// The job's uniqueness, if its type declares one (`#[job(unique(..))]`): its key from
    /// the job's fields, until when it is held, and what a duplicate does. `None` by default.
    fn unique(&self) -> Option<UniqueJob> {
        None
    }

    /// The limit the job is counted against, if its type declares one (`#[job(limit =
    /// "stripe", limit_key = "account_id", max_throttle_wait = "1h")]`). `None` by default.
    fn limit(&self) -> Option<JobLimit> {
        None
    }

    /// Starts a dispatch of this job: add `.on_queue(..)`, `.delay(..)`,
    /// `.without_overlapping()` or `.via(&queue)`, then `.await` it.
    ///
    /// Call it as `SendEmail::dispatch(email)` or `email.dispatch()`.
    fn dispatch(self) -> PendingDispatch {
        let (unique, limit) = (self.unique(), self.limit());
        PendingDispatch::typed(Self::NAME, Self::QUEUE, Self::TRIES, Self::TIMEOUT, &self)
            .with_unique(unique)
            .with_limit(limit)
            .with_max_exceptions(Self::MAX_EXCEPTIONS)
            .with_encrypted(Self::ENCRYPTED)
    }

    /// Starts a dispatch that becomes available at `at`.
    fn dispatch_at(at: SystemTime, job: Self) -> PendingDispatch {
        job.dispatch().at(at)
    }
}

/// The body of a job. You write it; `#[derive(Job)]` requires it.
///
/// Return `Ok(())` when done; an error is a failed attempt, retried after the backoff until
/// the job's tries are used up. See [`JobError`] for failing at once or retrying after a
/// given delay.
#[diagnostic::on_unimplemented(
    message = "`{Self}` derives `Job` but has no job body",
    note = "write `impl queue_core::Handle for {Self} {{ async fn handle(self, ctx: JobContext) -> Result<(), JobError> {{ .. }} }}`"
)]
pub trait Handle: Job {
    /// Runs the job once.
    fn handle(self, ctx: JobContext) -> impl Future<Output = Result<(), JobError>> + Send;

    /// The [middleware](crate::Middleware) this job runs in (Laravel's `middleware()`), the
    /// first outermost, inside the worker's own. None by default.
    fn middleware(&self) -> Vec<Arc<dyn crate::Middleware>> {
        Vec::new()
    }
}

/// What a running job knows about itself.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub(crate) job_id: JobId,
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) release: Arc<Mutex<Option<Duration>>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) dispatched_at: SystemTime,
    pub(crate) batch: Option<crate::batch::CurrentBatch>,
    pub(crate) workflow: Option<crate::workflow::CurrentWorkflow>,
    pub(crate) tracker: Arc<crate::status::Tracker>,
    /// The worker's store (`None` in a unit test): what middleware shares between worker
    /// processes ([`ThrottlesExceptions`](crate::ThrottlesExceptions)'s circuit).
    pub(crate) storage: Option<Arc<dyn crate::Storage>>,
}

impl JobContext {
    /// A context for calling a job body directly, in a unit test.
    pub fn for_test(name: &str) -> Self {
        JobContext {
            job_id: JobId("test".into()),
            name: name.to_owned(),
            queue: "default".into(),
            attempt: 1,
            max_attempts: 1,
            release: Arc::default(),
            cancel: CancellationToken::new(),
            dispatched_at: SystemTime::now(),
            batch: None,
            workflow: None,
            tracker: Arc::new(crate::status::Tracker::new(
                None,
                crate::storage::Lease {
                    job_id: JobId("test".into()),
                    queue: "default".into(),
                    token: String::new(),
                },
            )),
            storage: None,
        }
    }

    /// Says how far the job got: `done` units of `of` (0 when the total is unknown).
    /// Readable by id ([`Queue::job`](crate::Queue::job), `runall job ID`) while it runs and
    /// after. Written to the store at most once a second, fenced by the job's lease (a
    /// worker that lost the job writes nothing); the last value is kept with the job's
    /// status when it ends. Never fails the job: a write the store refuses is logged. On a
    /// store without jobs by id it is kept for the final status only.
    pub async fn progress(&self, done: u64, of: u64) {
        self.tracker.progress(done, of).await
    }

    /// Keeps `value` as the job's output, readable by id with its status once it ends
    /// ([`JobStatus::output`](crate::JobStatus::output)); a later call replaces it. At most
    /// [`MAX_OUTPUT`](crate::MAX_OUTPUT) bytes of JSON: a larger one is refused with
    /// [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge) and not kept. The output of
    /// a job that succeeds is kept only if the worker keeps finished jobs
    /// ([`WorkerOptions::keep_finished`](crate::WorkerOptions::keep_finished)), except a
    /// [workflow](crate::Workflow) node's: the step in which the node succeeds keeps it for
    /// the nodes after it ([`CurrentWorkflow::output`](crate::CurrentWorkflow::output),
    /// [`Workflow::output`](crate::Workflow::output)).
    pub fn output<T: Serialize + ?Sized>(&self, value: &T) -> crate::Result<()> {
        let json = serde_json::to_string(value)
            .map_err(|e| crate::Error::Payload(format!("the job's output: {e}")))?;
        if json.len() > crate::MAX_OUTPUT {
            return Err(crate::Error::PayloadTooLarge {
                size: json.len(),
                limit: crate::MAX_OUTPUT,
            });
        }
        let raw = serde_json::value::RawValue::from_string(json)
            .map_err(|e| crate::Error::Payload(format!("the job's output: {e}")))?;
        self.tracker.set_output(raw);
        Ok(())
    }

    /// The batch this job is a member of (`None` for any other job): add members to it
    /// while it runs, read its progress, or see whether it was cancelled
    /// (`ctx.batch().is_cancelled().await`, Laravel's `$this->batch()->cancelled()`; a
    /// member of a cancelled batch that is running already is not stopped).
    pub fn batch(&self) -> Option<&crate::batch::CurrentBatch> {
        self.batch.as_ref()
    }

    /// The workflow this job is a node of (`None` for any other job): its id, the node's
    /// name, and the outputs of the nodes before it
    /// (`ctx.workflow().unwrap().output::<Quote>("quote").await?`).
    pub fn workflow(&self) -> Option<&crate::workflow::CurrentWorkflow> {
        self.workflow.as_ref()
    }

    /// When the job was dispatched (Sidekiq's `enqueued_at`). For a job a
    /// [`Schedule`](crate::Schedule) pushed, the time of its tick: the same for every run
    /// of that tick, and different for every tick.
    pub fn dispatched_at(&self) -> SystemTime {
        self.dispatched_at
    }

    /// The job's id in its store.
    pub fn job_id(&self) -> &JobId {
        &self.job_id
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue it was reserved from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// This attempt's number, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many attempts the job has in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// True when a failure now moves the job to the failed store.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// Puts the job back on its queue, available after `delay`, once the body returns
    /// `Ok(())` (Laravel's `$this->release($delay)`). The attempt still counts.
    pub fn release(&self, delay: Duration) {
        if let Ok(mut slot) = self.release.lock() {
            *slot = Some(delay);
        }
    }

    /// True once the worker stopped this run: its lease or its `without_overlapping` lock was
    /// lost (another worker may run the job now), or the backend could not confirm the lease
    /// before it ran out; the body is then aborted at its next `.await` right after. Also
    /// true once someone cancelled the job ([`Queue::cancel`](crate::Queue::cancel), `runall
    /// cancel ID`): the body then has 5 s to return before it is aborted, and the job ends
    /// cancelled (or succeeded, if it returns `Ok`). A body that computes without awaiting
    /// should check this now and then.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when [`is_cancelled`](Self::is_cancelled) becomes true.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    pub(crate) fn released(&self) -> Option<Duration> {
        self.release.lock().ok().and_then(|slot| *slot)
    }
}

/// What a failed attempt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retry {
    /// Retry after the job's backoff, if tries remain.
    Backoff,
    /// Retry after this delay, if tries remain.
    After(Duration),
    /// Do not retry: move the job to the failed store now.
    Never,
    /// Not a failure: the job can never succeed and is dropped (see [`JobError::discard`]).
    Discard,
    /// Not a failure: the job met a rate limit (see [`JobError::rate_limited`]). It goes
    /// back after this delay without counting an attempt, and its limit's key is paused.
    RateLimited(Duration),
    /// Not a failure: the job did not run, held back by middleware (see
    /// [`JobError::throttled`]). It goes back after this delay without counting an attempt.
    Throttled(Duration),
}

/// The error a job body returns: a message and what to do about it.
///
/// Any `std::error::Error` converts into it with `?` (a normal retry). For other cases:
///
/// ```
/// use std::time::Duration;
/// use queue_core::JobError;
///
/// let _ = JobError::msg("the SMTP server said no");                // retry after the backoff
/// let _ = JobError::fail("address is malformed");                  // straight to failed jobs
/// let _ = JobError::retry_after(Duration::from_secs(60), "rate limited");
/// ```
pub struct JobError {
    message: String,
    retry: Retry,
}

impl JobError {
    /// A failed attempt, retried after the backoff.
    pub fn msg(message: impl fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            retry: Retry::Backoff,
        }
    }

    /// A failure that must not be retried: the job moves to the failed store now.
    pub fn fail(message: impl fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            retry: Retry::Never,
        }
    }

    /// The job can never succeed and there is nothing to retry (the record it was about was
    /// deleted: Laravel's `deleteWhenMissingModels`): it leaves the queue **without a
    /// failure and without retries**, its unique key released, logged and counted as
    /// discarded. A workflow node discarded ends as a skipped one (the skip passes down its
    /// edges), a batch member as a cancelled one, and a chain link as a failed one does (the
    /// links after it are skipped, its `catch` and `finally` run), all without an entry in
    /// the failed store.
    pub fn discard(reason: impl fmt::Display) -> Self {
        JobError {
            message: reason.to_string(),
            retry: Retry::Discard,
        }
    }

    /// The job met a rate limit of someone else's (an HTTP 429 with `Retry-After`): its
    /// [limit](crate::Limit)'s key is paused for `delay` for every worker, and the job goes
    /// back to run after it, **without counting an attempt** (a job without a limit only
    /// goes back). A job that would wait past its `max_throttle_wait` (counted from its
    /// dispatch) fails instead.
    pub fn rate_limited(delay: Duration) -> Self {
        JobError {
            message: format!("rate limited for {}", humantime::format_duration(delay)),
            retry: Retry::RateLimited(delay),
        }
    }

    /// The job was not run, held back by middleware ([`ThrottlesExceptions`](crate::ThrottlesExceptions)
    /// while its circuit is open): it goes back to run after `delay`, **without counting an
    /// attempt** and without an error counted against its `max_exceptions`.
    pub fn throttled(delay: Duration, reason: impl fmt::Display) -> Self {
        JobError {
            message: reason.to_string(),
            retry: Retry::Throttled(delay),
        }
    }

    /// A failed attempt, retried after `delay` instead of the backoff.
    pub fn retry_after(delay: Duration, message: impl fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            retry: Retry::After(delay),
        }
    }

    /// What this error asks for.
    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        JobError::msg(message)
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobError")
            .field("message", &self.message)
            .field("retry", &self.retry)
            .finish()
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The wait between a failed attempt and the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backoff {
    /// The same wait every time.
    Fixed(Duration),
    /// `base * 2^(attempt-1)`, capped at `max`, with up to 25% random jitter either way so
    /// that jobs that failed together do not retry together.
    Exponential {
        /// The first wait.
        base: Duration,
        /// The longest wait.
        max: Duration,
    },
    /// One wait per attempt; the last repeats.
    List(Cow<'static, [Duration]>),
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The wait after attempt `attempt` (1 for the first) failed.
    pub fn delay(&self, attempt: u32) -> Duration {
        match self {
            Backoff::Fixed(d) => *d,
            Backoff::List(list) => {
                let i = (attempt.max(1) as usize - 1).min(list.len().saturating_sub(1));
                list.get(i).copied().unwrap_or_default()
            }
            Backoff::Exponential { base, max } => {
                let exp = attempt.saturating_sub(1).min(30);
                let raw = base.saturating_mul(1u32 << exp).min(*max);
                let jitter = rand::random::<f64>() * 0.5 + 0.75;
                raw.mul_f64(jitter).min(*max)
            }
        }
    }

    /// Parses the forms the derive and the CLI accept: `exponential`, `exponential:2s`,
    /// `fixed:10s`, a single duration (fixed) or a comma-separated list of durations (the
    /// syntax of `queue-time`, shared with the derive).
    pub fn parse(text: &str) -> Result<Backoff, String> {
        Ok(match queue_time::parse_backoff(text)? {
            BackoffSpec::Fixed(d) => Backoff::Fixed(d),
            BackoffSpec::Exponential { base, max } => Backoff::Exponential { base, max },
            BackoffSpec::List(list) => Backoff::List(Cow::Owned(list)),
        })
    }
}

/// Parses a duration written as a number and a unit: `500ms`, `30s`, `5m`, `2h`, `7d`, or
/// several of them run together (`1m30s`). A bare number is seconds. The same parser checks
/// `#[job(timeout = ..)]` at compile time.
pub use queue_time::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10x").is_err());
    }

    #[test]
    fn backoffs() {
        let list = Backoff::parse("1s,5s,30s").unwrap();
        assert_eq!(list.delay(1), Duration::from_secs(1));
        assert_eq!(list.delay(3), Duration::from_secs(30));
        assert_eq!(list.delay(9), Duration::from_secs(30));
        assert_eq!(
            Backoff::parse("fixed:2s").unwrap().delay(5),
            Duration::from_secs(2)
        );
        let exp = Backoff::parse("exponential:1s").unwrap();
        for attempt in 1..6 {
            let d = exp.delay(attempt);
            let nominal = Duration::from_secs(1 << (attempt - 1));
            assert!(
                d >= nominal.mul_f64(0.75) && d <= nominal.mul_f64(1.25),
                "{d:?}"
            );
        }
        assert!(exp.delay(40) <= Duration::from_secs(600));
        assert!(Backoff::parse("sometimes").is_err());
    }
}
