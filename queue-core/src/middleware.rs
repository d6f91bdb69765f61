//! Job middleware: see [`Middleware`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::job::{JobContext, JobError, Retry};

/// Job middleware: code that runs around a job's body (Laravel's job middleware, tower's
/// layers), for what many jobs share: skipping, turning errors into failures, timing,
/// tracing, tenant set-up.
///
/// A middleware gets the job's context and the rest of the chain; it runs the rest with
/// [`Next::run`], or ends the job without running it by returning instead. Add one to every
/// job of a worker with [`WorkerOptions::middleware`](crate::WorkerOptions::middleware) (the
/// first added runs outermost), or to one job type by overriding
/// [`Handle::middleware`](crate::Handle::middleware) (inside the worker's).
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use queue_core::{JobContext, JobError, Middleware, Next};
///
/// /// Counts the jobs that end in an error.
/// struct CountErrors(Arc<AtomicUsize>);
///
/// #[queue_core::async_trait]
/// impl Middleware for CountErrors {
///     async fn handle(&self, ctx: &JobContext, next: Next) -> Result<(), JobError> {
///         let result = next.run().await;
///         if result.is_err() {
///             self.0.fetch_add(1, Ordering::Relaxed);
///             tracing::warn!(job = ctx.name(), "an error");
///         }
///         result
///     }
/// }
/// ```
///
/// Built in, with Laravel's names where they fit: [`Skip`] (`Skip::when`, `Skip::unless`),
/// [`FailOnError`] (Laravel's `FailOnException`) and [`ThrottlesExceptions`]. Limits, overlap locks and a batch's
/// cancellation are not middleware here: they are checked before the job runs
/// (`#[job(limit = ..)]`, `.without_overlapping()`, batch members), so no attempt is spent.
///
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// Runs around the rest of the chain: call `next.run().await` to run it (and the body),
    /// or return without calling it to end the job as the result says.
    async fn handle(&self, ctx: &JobContext, next: Next) -> Result<(), JobError>;
}

/// The rest of a middleware chain, ending with the job's body.
pub struct Next {
    ctx: JobContext,
    rest: Vec<Arc<dyn Middleware>>,
    body: BoxFuture<'static, Result<(), JobError>>,
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("middleware_left", &self.rest.len())
            .finish_non_exhaustive()
    }
}

impl Next {
    /// Runs the rest of the chain and the job's body.
    pub async fn run(mut self) -> Result<(), JobError> {
        if self.rest.is_empty() {
            return self.body.await;
        }
        let first = self.rest.remove(0);
        let ctx = self.ctx.clone();
        first.handle(&ctx, self).await
    }
}

/// Wraps a started job body in `layers`, the first outermost.
pub(crate) fn wrap(
    layers: Vec<Arc<dyn Middleware>>,
    ctx: JobContext,
    body: BoxFuture<'static, Result<(), JobError>>,
) -> BoxFuture<'static, Result<(), JobError>> {
    if layers.is_empty() {
        return body;
    }
    Box::pin(
        Next {
            ctx,
            rest: layers,
            body,
        }
        .run(),
    )
}

/// The middleware of a worker, for [`WorkerOptions`](crate::WorkerOptions): a list that
/// prints as its length.
#[derive(Clone, Default)]
pub struct Layers(pub(crate) Vec<Arc<dyn Middleware>>);

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} middleware", self.0.len())
    }
}

impl Layers {
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

type Predicate = dyn Fn(&JobContext) -> bool + Send + Sync;

/// Ends a job without running it when a condition holds (Laravel's `Skip::when` and
/// `Skip::unless`): the job is discarded (not a failure, not retried, its unique key
/// released), with the reason "skipped by middleware".
pub struct Skip {
    when: Box<Predicate>,
}

impl fmt::Debug for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Skip").finish_non_exhaustive()
    }
}

impl Skip {
    /// Skips the job when `condition` is true.
    pub fn when(condition: impl Fn(&JobContext) -> bool + Send + Sync + 'static) -> Self {
        Skip {
            when: Box::new(condition),
        }
    }

    /// Skips the job unless `condition` is true.
    pub fn unless(condition: impl Fn(&JobContext) -> bool + Send + Sync + 'static) -> Self {
        Skip {
            when: Box::new(move |ctx| !condition(ctx)),
        }
    }
}

#[async_trait]
impl Middleware for Skip {
    async fn handle(&self, ctx: &JobContext, next: Next) -> Result<(), JobError> {
        if (self.when)(ctx) {
            return Err(JobError::discard("skipped by middleware"));
        }
        next.run().await
    }
}

type ErrorPredicate = dyn Fn(&JobError) -> bool + Send + Sync;

/// Fails a job for good, without further retries, when its body returns an error the
/// condition picks (Laravel's `FailOnException`): an error that retrying cannot mend, known
/// by its message or kind. Other errors are retried as usual.
pub struct FailOnError {
    when: Box<ErrorPredicate>,
}

impl fmt::Debug for FailOnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailOnError").finish_non_exhaustive()
    }
}

impl FailOnError {
    /// Fails the job for good on an error for which `condition` is true.
    pub fn when(condition: impl Fn(&JobError) -> bool + Send + Sync + 'static) -> Self {
        FailOnError {
            when: Box::new(condition),
        }
    }

    /// Fails the job for good on an error whose message contains `text`.
    pub fn containing(text: impl Into<String>) -> Self {
        let text = text.into();
        Self::when(move |e| e.message().contains(&text))
    }
}

#[async_trait]
impl Middleware for FailOnError {
    async fn handle(&self, _ctx: &JobContext, next: Next) -> Result<(), JobError> {
        match next.run().await {
            // Only an error that would be retried: a discard or a rate limit stays what it is.
            Err(e) if matches!(e.retry(), Retry::Backoff | Retry::After(_)) && (self.when)(&e) => {
                Err(JobError::fail(e.message()))
            }
            other => other,
        }
    }
}

/// The circuits of [`ThrottlesExceptions`] in this process, by key.
static CIRCUITS: LazyLock<Mutex<HashMap<String, Circuit>>> = LazyLock::new(Mutex::default);

/// Errors counted for one key in a window that starts at the first of them.
#[derive(Debug, Clone, Copy)]
struct Circuit {
    errors: u32,
    ends: Instant,
}

fn circuits() -> std::sync::MutexGuard<'static, HashMap<String, Circuit>> {
    CIRCUITS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Stops running jobs whose service keeps failing (Laravel's `ThrottlesExceptions`): once
/// `max_errors` errors of jobs with the same key (the job's name, or [`by`](Self::by)) fall
/// within `decay` of the first of them, the circuit opens, and until that window ends those
/// jobs go back to their queue **without running and without counting an attempt**
/// ([`JobError::throttled`]); a success closes it. While it is closed an error is retried as
/// usual, or after [`backoff`](Self::backoff).
///
/// Errors are counted in this worker process (Laravel counts them in the cache every worker
/// shares): with several worker processes, each opens its own circuit after `max_errors` of
/// its own. A job that errors while the window is open counts as usual against its `tries`.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use queue_core::{Middleware, ThrottlesExceptions, WorkerOptions};
///
/// // After 10 errors within 5 minutes, jobs calling the payment API wait until the 5
/// // minutes are over; each error before that is retried after 30 s.
/// let throttle = ThrottlesExceptions::new(10, Duration::from_secs(300))
///     .by("payment-api")
///     .backoff(Duration::from_secs(30));
/// let options = WorkerOptions::default().middleware(throttle);
/// # let _ = options;
/// ```
pub struct ThrottlesExceptions {
    max_errors: u32,
    decay: Duration,
    backoff: Option<Duration>,
    key: Option<String>,
    when: Option<Box<ErrorPredicate>>,
}

impl fmt::Debug for ThrottlesExceptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottlesExceptions")
            .field("max_errors", &self.max_errors)
            .field("decay", &self.decay)
            .field("backoff", &self.backoff)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ThrottlesExceptions {
    /// Opens the circuit at `max_errors` errors (at least 1) within `decay` of the first.
    pub fn new(max_errors: u32, decay: Duration) -> Self {
        ThrottlesExceptions {
            max_errors: max_errors.max(1),
            decay,
            backoff: None,
            key: None,
            when: None,
        }
    }

    /// Counts the errors of every job with this key together (Laravel's `by`), instead of
    /// each job name apart.
    pub fn by(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Retries a job that errored while the circuit is closed after `delay`, instead of its
    /// backoff.
    pub fn backoff(mut self, delay: Duration) -> Self {
        self.backoff = Some(delay);
        self
    }

    /// Counts only the errors for which `condition` is true (Laravel's `when`); the others
    /// pass through as they are.
    pub fn when(mut self, condition: impl Fn(&JobError) -> bool + Send + Sync + 'static) -> Self {
        self.when = Some(Box::new(condition));
        self
    }
}

#[async_trait]
impl Middleware for ThrottlesExceptions {
    async fn handle(&self, ctx: &JobContext, next: Next) -> Result<(), JobError> {
        let key = self.key.as_deref().unwrap_or(ctx.name()).to_owned();
        let now = Instant::now();
        let open = circuits()
            .get(&key)
            .filter(|c| c.errors >= self.max_errors && c.ends > now)
            .map(|c| c.ends - now);
        if let Some(wait) = open {
            return Err(JobError::throttled(
                wait,
                format!(
                    "throttled: {} errors of `{key}` within {}; it runs again in {}",
                    self.max_errors,
                    humantime::format_duration(self.decay),
                    humantime::format_duration(Duration::from_millis(
                        u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
                    ))
                ),
            ));
        }
        match next.run().await {
            Ok(()) => {
                circuits().remove(&key);
                Ok(())
            }
            Err(e)
                if matches!(e.retry(), Retry::Backoff | Retry::After(_) | Retry::Never)
                    && self.when.as_ref().is_none_or(|when| when(&e)) =>
            {
                let now = Instant::now();
                let mut all = circuits();
                let circuit = all.entry(key).or_insert(Circuit {
                    errors: 0,
                    ends: now + self.decay,
                });
                if circuit.ends <= now {
                    *circuit = Circuit {
                        errors: 0,
                        ends: now + self.decay,
                    };
                }
                circuit.errors = circuit.errors.saturating_add(1);
                drop(all);
                match (self.backoff, e.retry()) {
                    (Some(delay), Retry::Backoff | Retry::After(_)) => {
                        Err(JobError::retry_after(delay, e.message()))
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}
