//! How a worker finds the code for a job name: types registered by `#[derive(Job)]` through
//! `inventory`, and closures registered with [`Queue::listen`](crate::Queue::listen).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::value::RawValue;

use crate::job::{Backoff, Handle, Job, JobContext, JobError};
use crate::limit::JobLimit;
use crate::unique::UniqueJob;

/// A started job body, or why its data does not decode into the job.
type Started = Result<BoxFuture<'static, Result<(), JobError>>, String>;

/// Runs a job from its encoded data: `Err` when the data does not decode into the job.
pub(crate) type RunFn = dyn Fn(&RawValue, JobContext) -> Started + Send + Sync;

/// Reads a job's uniqueness from its encoded data.
type UniqueFn = fn(&RawValue) -> Result<Option<UniqueJob>, String>;
type LimitFn = fn(&RawValue) -> Result<Option<JobLimit>, String>;

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
    /// Its `max_exceptions`, if set.
    pub max_exceptions: Option<u32>,
    /// Its timeout, if set.
    pub timeout: Option<Duration>,
    /// Its backoff, if set.
    pub backoff: Option<Backoff>,
    run: fn(&RawValue, JobContext) -> Started,
    check: fn(&RawValue) -> Result<(), String>,
    unique: Option<UniqueFn>,
    limit: Option<LimitFn>,
    /// Whether the type's data is stored encrypted.
    pub encrypted: bool,
    /// Its `retry_until`, if set.
    pub retry_until: Option<Duration>,
    /// Whether a timed-out attempt fails it for good.
    pub fail_on_timeout: bool,
    type_name: fn() -> &'static str,
}

impl JobRegistration {
    /// The registration of `T`.
    pub const fn of<T: Handle>() -> Self {
        JobRegistration {
            name: T::NAME,
            queue: T::QUEUE,
            tries: T::TRIES,
            max_exceptions: T::MAX_EXCEPTIONS,
            timeout: T::TIMEOUT,
            backoff: T::BACKOFF,
            run: run_typed::<T>,
            check: check_typed::<T>,
            unique: if T::UNIQUE {
                Some(unique_typed::<T>)
            } else {
                None
            },
            encrypted: T::ENCRYPTED,
            retry_until: T::RETRY_UNTIL,
            fail_on_timeout: T::FAIL_ON_TIMEOUT,
            limit: if T::LIMITED {
                Some(limit_typed::<T>)
            } else {
                None
            },
            type_name: std::any::type_name::<T>,
        }
    }

    /// The Rust path of the registered type.
    pub fn type_name(&self) -> &'static str {
        (self.type_name)()
    }

    /// Checks that `data` decodes into this job type.
    pub fn check(&self, data: &RawValue) -> Result<(), String> {
        (self.check)(data)
    }

    /// The uniqueness the type declares for the job `data` decodes into: `Ok(None)` for a
    /// type that declares none, `Err` when it declares one and `data` does not decode.
    pub fn unique_of(&self, data: &RawValue) -> Result<Option<UniqueJob>, String> {
        match self.unique {
            Some(unique) => unique(data),
            None => Ok(None),
        }
    }
}

impl JobRegistration {
    /// The limit the type declares for the job `data` decodes into: `Ok(None)` for a type
    /// that declares none, `Err` when it declares one and `data` does not decode.
    pub fn limit_of(&self, data: &RawValue) -> Result<Option<JobLimit>, String> {
        match self.limit {
            Some(limit) => limit(data),
            None => Ok(None),
        }
    }
}

fn limit_typed<T: Job>(data: &RawValue) -> Result<Option<JobLimit>, String> {
    serde_json::from_str::<T>(data.get())
        .map(|job| job.limit())
        .map_err(|e| e.to_string())
}

inventory::collect!(JobRegistration);

fn run_typed<T: Handle>(data: &RawValue, ctx: JobContext) -> Started {
    let job: T = serde_json::from_str(data.get()).map_err(|e| e.to_string())?;
    let layers = job.middleware();
    Ok(crate::middleware::wrap(
        layers,
        ctx.clone(),
        Box::pin(job.handle(ctx)),
    ))
}

fn unique_typed<T: Job>(data: &RawValue) -> Result<Option<UniqueJob>, String> {
    serde_json::from_str::<T>(data.get())
        .map(|job| job.unique())
        .map_err(|e| e.to_string())
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
    pub(crate) retry_until: Option<Duration>,
    pub(crate) fail_on_timeout: bool,
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

/// What a worker can run: the job types linked into the binary (registered by
/// `#[derive(Job)]`) and closures registered under a name ([`Registry::listen`]).
///
/// [`Queue::worker`](crate::Queue::worker) builds one from the queue's listeners; build one
/// yourself for [`Worker::new`](crate::Worker::new).
#[derive(Clone, Default)]
pub struct Registry {
    listeners: HashMap<String, Handler>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.listeners.keys().collect();
        names.sort();
        f.debug_struct("Registry")
            .field("listeners", &names)
            .finish()
    }
}

impl Registry {
    /// The registered job types and no listeners.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a string-named job: `handler` runs for every job dispatched under `name`,
    /// with the payload decoded into `P` (for example `serde_json::Value`). A listener with
    /// the name of a job type replaces it, so an application can override.
    pub fn listen<P, F, Fut>(&mut self, name: &str, handler: F)
    where
        P: serde::de::DeserializeOwned + Send + 'static,
        F: Fn(P, JobContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), JobError>> + Send + 'static,
    {
        self.listeners
            .insert(name.to_owned(), Handler::listener(handler));
    }

    /// The names of the listeners, sorted.
    pub fn listener_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.listeners.keys().cloned().collect();
        names.sort();
        names
    }

    /// The handlers a worker runs: registered types, then listeners. Two types with the same
    /// name are an error naming both, since a worker could not tell their payloads apart.
    pub(crate) fn handlers(&self) -> crate::Result<HashMap<String, Handler>> {
        let mut types: HashMap<&'static str, &'static JobRegistration> = HashMap::new();
        for r in registered() {
            if let Some(first) = types.insert(r.name, r) {
                if first.type_name() != r.type_name() {
                    let mut both = [first.type_name(), r.type_name()];
                    both.sort_unstable();
                    return Err(crate::Error::DuplicateJobName {
                        name: r.name.to_owned(),
                        first: both[0].to_owned(),
                        second: both[1].to_owned(),
                    });
                }
            }
        }
        let mut map: HashMap<String, Handler> = types
            .into_values()
            .map(|r| {
                let run = r.run;
                (
                    r.name.to_owned(),
                    Handler {
                        run: Arc::new(run),
                        tries: r.tries,
                        timeout: r.timeout,
                        backoff: r.backoff.clone(),
                        retry_until: r.retry_until,
                        fail_on_timeout: r.fail_on_timeout,
                    },
                )
            })
            .collect();
        for (name, handler) in &self.listeners {
            map.insert(name.clone(), handler.clone());
        }
        Ok(map)
    }
}

impl Handler {
    pub(crate) fn listener<P, F, Fut>(handler: F) -> Handler
    where
        P: serde::de::DeserializeOwned + Send + 'static,
        F: Fn(P, JobContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let run = move |data: &RawValue, ctx: JobContext| -> Started {
            let payload: P = serde_json::from_str(data.get()).map_err(|e| e.to_string())?;
            Ok(Box::pin(handler(payload, ctx)))
        };
        Handler {
            run: Arc::new(run),
            tries: None,
            timeout: None,
            backoff: None,
            retry_until: None,
            fail_on_timeout: false,
        }
    }
}
