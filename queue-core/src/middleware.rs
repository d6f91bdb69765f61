//! Job middleware: see [`Middleware`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::error::Result;
use crate::job::{JobContext, JobError, Retry};
use crate::storage::{counter, unix_millis, Effect, Groups, Guard, StorageExt};

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

/// The circuits of [`ThrottlesExceptions`] kept in this process, by key: on a store
/// without group counters, the circuit itself; on one with them, the last reading of the
/// shared circuit.
static CIRCUITS: LazyLock<Mutex<HashMap<String, Circuit>>> = LazyLock::new(Mutex::default);

/// Errors counted for one key in a window that starts at the first of them and ends at
/// `ends` (Unix ms), and when that was read from the store (`None`: kept here only).
#[derive(Debug, Clone, Copy)]
struct Circuit {
    errors: i64,
    ends: i64,
    read: Option<Instant>,
}

fn circuits() -> std::sync::MutexGuard<'static, HashMap<String, Circuit>> {
    CIRCUITS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long a reading of a shared circuit answers this process's jobs.
const REREAD: Duration = Duration::from_secs(1);

/// How many times an error is counted again when another worker changed the circuit first.
const TRIES: usize = 5;

/// The group holding the shared circuit of `key`.
fn circuit_group(key: &str) -> String {
    format!("throttle:{key}")
}

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

/// Forgets this process's readings of the shared circuits (the conformance suite's way to
/// show a worker reads the store's, not its own).
#[doc(hidden)]
pub fn forget_circuit_readings() {
    circuits().clear();
}

/// The circuit of `key`: the store's (read again once [`REREAD`] old) when `groups` is
/// given, else this process's.
async fn circuit(groups: Option<&dyn Groups>, key: &str) -> Result<Circuit> {
    let kept = circuits().get(key).copied();
    let Some(groups) = groups else {
        return Ok(kept.unwrap_or(Circuit {
            errors: 0,
            ends: 0,
            read: None,
        }));
    };
    if let Some(c) = kept.filter(|c| c.read.is_some_and(|r| r.elapsed() < REREAD)) {
        return Ok(c);
    }
    let counters = groups.counters(&circuit_group(key)).await?;
    let read = Circuit {
        errors: counter(&counters, "errors"),
        ends: counter(&counters, "ends"),
        read: Some(Instant::now()),
    };
    circuits().insert(key.to_owned(), read);
    Ok(read)
}

/// Counts one error of `key`: in a new window of `decay` if the last one ended, else in it.
async fn count_error(groups: Option<&dyn Groups>, key: &str, decay: Duration) -> Result<()> {
    let decay = i64::try_from(decay.as_millis()).unwrap_or(i64::MAX / 4);
    let Some(groups) = groups else {
        let now = now_ms();
        let mut all = circuits();
        let c = all.entry(key.to_owned()).or_insert(Circuit {
            errors: 0,
            ends: 0,
            read: None,
        });
        if c.ends <= now {
            *c = Circuit {
                errors: 0,
                ends: now.saturating_add(decay),
                read: None,
            };
        }
        c.errors = c.errors.saturating_add(1);
        return Ok(());
    };
    let group = circuit_group(key);
    for _ in 0..TRIES {
        let counters = groups.counters(&group).await?;
        let (errors, ends) = (counter(&counters, "errors"), counter(&counters, "ends"));
        let now = now_ms();
        // A window that ended starts again with this error; one still open counts it. The
        // guard on `ends` makes a worker that raced this one read again.
        let (set, delta, next) = if ends <= now {
            let ends = now.saturating_add(decay);
            (
                ends,
                1 - errors,
                Circuit {
                    errors: 1,
                    ends,
                    read: Some(Instant::now()),
                },
            )
        } else {
            (
                ends,
                1,
                Circuit {
                    errors: errors + 1,
                    ends,
                    read: Some(Instant::now()),
                },
            )
        };
        let effects = vec![Effect::Count {
            group: group.clone(),
            deltas: vec![("errors".to_owned(), delta)],
        }];
        if groups
            .apply_if(Guard::new(&group, "ends", ends, set), effects)
            .await?
        {
            circuits().insert(key.to_owned(), next);
            return Ok(());
        }
    }
    Err(crate::Error::backend(
        "throttle",
        format!("the circuit {group} changed under {TRIES} writes in a row"),
    ))
}

/// Closes the circuit of `key` after a success, if errors were counted in it (a success
/// with none writes nothing). Errors counted by another worker since `seen` was read stay.
async fn close(groups: Option<&dyn Groups>, key: &str, seen: Circuit) -> Result<()> {
    if seen.errors == 0 {
        return Ok(());
    }
    circuits().remove(key);
    if let Some(groups) = groups {
        let group = circuit_group(key);
        let effects = vec![Effect::Count {
            group: group.clone(),
            deltas: vec![("errors".to_owned(), 0)],
        }];
        groups
            .apply_if(Guard::new(&group, "errors", seen.errors, 0), effects)
            .await?;
    }
    Ok(())
}

/// Stops running jobs whose service keeps failing (Laravel's `ThrottlesExceptions`): once
/// `max_errors` errors of jobs with the same key (the job's name, or [`by`](Self::by)) fall
/// within `decay` of the first of them, the circuit opens, and until that window ends those
/// jobs go back to their queue **without running and without counting an attempt**
/// ([`JobError::throttled`]); a success closes it. While it is closed an error is retried as
/// usual, or after [`backoff`](Self::backoff).
///
/// The circuit is shared by every worker of the store, as Laravel's is by every worker of
/// its cache: its errors and its window's end are two counters of the group
/// `throttle:{key}` ([`Groups`](crate::storage::Groups)), an error is counted by a
/// compare-and-set on the window's end, and each worker process reads the circuit at most
/// once a second per key (so another process's circuit opening reaches it within a
/// second; its own errors at once). A job with no error in the circuit writes nothing. The
/// window is judged by the workers' clocks. On a store without group counters (memcached,
/// Redis Cluster) each worker process keeps a circuit of its own: it opens after
/// `max_errors` errors of its own. A store that cannot be read leaves the job to run as if
/// the circuit were closed (logged). A job that errors while the window is open counts as
/// usual against its `tries`.
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
        let groups = ctx.storage.as_deref().and_then(|s| s.groups().ok());
        let seen = match circuit(groups, &key).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "could not read the circuit of ThrottlesExceptions; running the job as if it were closed");
                Circuit {
                    errors: 0,
                    ends: 0,
                    read: None,
                }
            }
        };
        let now = now_ms();
        if seen.errors >= i64::from(self.max_errors) && seen.ends > now {
            let wait = Duration::from_millis(u64::try_from(seen.ends - now).unwrap_or(0));
            return Err(JobError::throttled(
                wait,
                format!(
                    "throttled: {} errors of `{key}` within {}; it runs again in {}",
                    self.max_errors,
                    humantime::format_duration(self.decay),
                    humantime::format_duration(wait)
                ),
            ));
        }
        match next.run().await {
            Ok(()) => {
                if let Err(e) = close(groups, &key, seen).await {
                    tracing::warn!(key = %key, error = %e, "could not close the circuit of ThrottlesExceptions");
                }
                Ok(())
            }
            Err(e)
                if matches!(e.retry(), Retry::Backoff | Retry::After(_) | Retry::Never)
                    && self.when.as_ref().is_none_or(|when| when(&e)) =>
            {
                if let Err(store) = count_error(groups, &key, self.decay).await {
                    tracing::warn!(key = %key, error = %store, "could not count an error in the circuit of ThrottlesExceptions");
                }
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
