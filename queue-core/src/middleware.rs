//! Job middleware: see [`Middleware`].

use std::fmt;
use std::sync::Arc;

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
/// Built in, with Laravel's names where they fit: [`Skip`] (`Skip::when`, `Skip::unless`)
/// and [`FailOnError`] (Laravel's `FailOnException`). Limits, overlap locks and a batch's
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
