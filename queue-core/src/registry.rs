//! How a worker finds the code for a job name: types registered by `#[derive(Job)]` through
//! `inventory`, and closures registered with [`Queue::listen`](crate::Queue::listen).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::value::RawValue;

use crate::job::{Backoff, Handle, Job, JobContext, JobError};

/// A started job body, or why its data does not decode into the job.
type Started = Result<BoxFuture<'static, Result<(), JobError>>, String>;

/// Runs a job from its encoded data: `Err` when the data does not decode into the job.
pub(crate) type RunFn = dyn Fn(&RawValue, JobContext) -> Started + Send + Sync;

/// A job type's entry in the process-wide registry. `#[derive(Job)]` submits one; you never
/// build it yourself.
#[derive(Debug)]
pub struct JobRegistration {
    /// The job's name.
    pub name: &'static str,
    /// Its default queue.
    pub queue: &'static str,
    /// Its tries, if set.
    pub tries: Option<u32>,
    /// Its timeout, if set.
    pub timeout: Option<Duration>,
    /// Its backoff, if set.
    pub backoff: Option<Backoff>,
    run: fn(&RawValue, JobContext) -> Started,
    check: fn(&RawValue) -> Result<(), String>,
}

impl JobRegistration {
    /// The registration of `T`.
    pub const fn of<T: Handle>() -> Self {
        JobRegistration {
            name: T::NAME,
            queue: T::QUEUE,
            tries: T::TRIES,
            timeout: T::TIMEOUT,
            backoff: T::BACKOFF,
            run: run_typed::<T>,
            check: check_typed::<T>,
        }
    }

    /// Checks that `data` decodes into this job type.
    pub fn check(&self, data: &RawValue) -> Result<(), String> {
        (self.check)(data)
    }
}

inventory::collect!(JobRegistration);

fn run_typed<T: Handle>(data: &RawValue, ctx: JobContext) -> Started {
    let job: T = serde_json::from_str(data.get()).map_err(|e| e.to_string())?;
    Ok(Box::pin(job.handle(ctx)))
}

fn check_typed<T: Job>(data: &RawValue) -> Result<(), String> {
    serde_json::from_str::<T>(data.get())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Every job type linked into this binary.
pub fn registered() -> impl Iterator<Item = &'static JobRegistration> {
    inventory::iter::<JobRegistration>.into_iter()
}

/// The registered job type with this name.
pub fn find(name: &str) -> Option<&'static JobRegistration> {
    registered().find(|r| r.name == name)
}

/// A runnable handler with its policy, typed or listener.
#[derive(Clone)]
pub(crate) struct Handler {
    pub(crate) run: Arc<RunFn>,
    pub(crate) tries: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) backoff: Option<Backoff>,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("tries", &self.tries)
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// The handlers a worker runs: registered types, then listeners (a listener with the same
/// name as a type wins, so an application can override).
pub(crate) fn handlers(listeners: &HashMap<String, Handler>) -> HashMap<String, Handler> {
    let mut map: HashMap<String, Handler> = registered()
        .map(|r| {
            let run = r.run;
            (
                r.name.to_owned(),
                Handler {
                    run: Arc::new(run),
                    tries: r.tries,
                    timeout: r.timeout,
                    backoff: r.backoff.clone(),
                },
            )
        })
        .collect();
    for (name, handler) in listeners {
        map.insert(name.clone(), handler.clone());
    }
    map
}
