//! Job middleware through a real worker (on the in-memory store: middleware runs in the
//! worker, the same whatever the store): the order of a worker's and a job type's layers,
//! `Skip`, `FailOnError`, and a middleware that ends a job without running its body.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::{
    async_trait, FailOnError, Handle, Job, JobContext, JobError, Middleware, Next, Queue, Skip,
    StorageExt, WorkerOptions,
};
use serde::{Deserialize, Serialize};

type Log = Arc<Mutex<Vec<String>>>;

/// Notes when it starts and ends, around the rest.
struct Note(&'static str, Log);

#[async_trait]
impl Middleware for Note {
    async fn handle(&self, ctx: &JobContext, next: Next) -> Result<(), JobError> {
        self.1
            .lock()
            .unwrap()
            .push(format!("{} before {}", self.0, ctx.name()));
        let result = next.run().await;
        self.1
            .lock()
            .unwrap()
            .push(format!("{} after: {}", self.0, result.is_ok()));
        result
    }
}

static JOB_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Its own middleware notes into `JOB_LOG` (a job type's middleware is built from the job).
struct Inner;

#[async_trait]
impl Middleware for Inner {
    async fn handle(&self, _ctx: &JobContext, next: Next) -> Result<(), JobError> {
        JOB_LOG.lock().unwrap().push("job's own before".into());
        let result = next.run().await;
        JOB_LOG.lock().unwrap().push("job's own after".into());
        result
    }
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(name = "middleware-report")]
struct Report {
    n: u32,
}

impl Handle for Report {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        JOB_LOG.lock().unwrap().push(format!("body {}", self.n));
        Ok(())
    }

    fn middleware(&self) -> Vec<Arc<dyn Middleware>> {
        vec![Arc::new(Inner)]
    }
}

fn options(queue: &str) -> WorkerOptions {
    WorkerOptions::default()
        .queues([queue])
        .sleep(Duration::from_millis(10))
        .backoff(queue_core::Backoff::Fixed(Duration::from_millis(10)))
        .stop_when_empty()
}

#[tokio::test]
async fn worker_layers_run_outside_the_job_types_own_in_order() {
    let queue = Queue::connect("memory://").await.unwrap();
    let log: Log = Arc::default();
    queue
        .dispatch(Report { n: 7 })
        .on_queue("mw-order")
        .await
        .unwrap();
    let summary = queue
        .worker(
            options("mw-order")
                .middleware(Note("outer", log.clone()))
                .middleware(Note("second", log.clone())),
        )
        .run()
        .await
        .unwrap();
    assert_eq!(summary.processed, 1);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "outer before middleware-report",
            "second before middleware-report",
            "second after: true",
            "outer after: true"
        ]
    );
    assert_eq!(
        *JOB_LOG.lock().unwrap(),
        ["job's own before", "body 7", "job's own after"]
    );
}

#[tokio::test]
async fn skip_ends_the_job_unrun_as_discarded() {
    let queue = Queue::connect("memory://").await.unwrap();
    let ran: Log = Arc::default();
    let sink = ran.clone();
    queue.listen("maybe", move |n: u32, _ctx| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(n.to_string());
            Ok(())
        }
    });
    for n in [1, 2, 3] {
        queue
            .dispatch_named("maybe", serde_json::json!(n))
            .on_queue("mw-skip")
            .await
            .unwrap();
    }
    let summary = queue
        .worker(options("mw-skip").middleware(Skip::when(|ctx| ctx.job_id().0.ends_with('2'))))
        .run()
        .await
        .unwrap();
    assert_eq!(
        (summary.processed, summary.discarded, summary.failed),
        (2, 1, 0)
    );
    assert_eq!(*ran.lock().unwrap(), ["1", "3"]);

    queue
        .dispatch_named("maybe", serde_json::json!(4))
        .on_queue("mw-skip")
        .await
        .unwrap();
    let summary = queue
        .worker(options("mw-skip").middleware(Skip::unless(|ctx| ctx.queue() == "elsewhere")))
        .run()
        .await
        .unwrap();
    assert_eq!(summary.discarded, 1);
    assert_eq!(ran.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn fail_on_error_fails_at_once_and_leaves_other_errors_to_retries() {
    let queue = Queue::connect("memory://").await.unwrap();
    let attempts: Log = Arc::default();
    let sink = attempts.clone();
    queue.listen("flaky", move |kind: String, ctx| {
        let sink = sink.clone();
        async move {
            sink.lock()
                .unwrap()
                .push(format!("{kind} {}", ctx.attempt()));
            match kind.as_str() {
                "permanent" => Err(JobError::msg("permanent: the account is closed")),
                "discard" => Err(JobError::discard("permanent but discarded")),
                _ => Err(JobError::msg("the server is busy")),
            }
        }
    });
    for kind in ["permanent", "transient", "discard"] {
        queue
            .dispatch_named("flaky", serde_json::json!(kind))
            .on_queue("mw-fail")
            .tries(3)
            .await
            .unwrap();
    }
    let summary = queue
        .worker(options("mw-fail").middleware(FailOnError::containing("permanent")))
        .run()
        .await
        .unwrap();
    assert_eq!(
        (summary.failed, summary.discarded, summary.retried),
        (2, 1, 2)
    );
    let mut seen = attempts.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            "discard 1",
            "permanent 1",
            "transient 1",
            "transient 2",
            "transient 3"
        ]
    );
    let failed = queue
        .storage()
        .failed_store()
        .unwrap()
        .list(queue_core::storage::PageRequest::first(10))
        .await
        .unwrap()
        .items;
    let permanent = failed
        .iter()
        .find(|f| f.error.contains("account is closed"))
        .expect("the permanent error is in the failed store");
    assert_eq!(permanent.attempts, 1);
}

/// `ThrottlesExceptions`: two errors of the same key within the window open the circuit;
/// the jobs met while it is open go back without running and without counting an attempt,
/// and run once the window is over (the first success closes it).
#[tokio::test]
async fn throttles_exceptions_holds_jobs_back_while_the_circuit_is_open() {
    use queue_core::ThrottlesExceptions;
    use std::time::Instant;

    let queue = Queue::connect("memory://").await.unwrap();
    let calls: Arc<Mutex<Vec<(String, u32, Instant)>>> = Arc::default();
    let sink = calls.clone();
    queue.listen("call-api", move |name: String, ctx| {
        let sink = sink.clone();
        async move {
            let mut calls = sink.lock().unwrap();
            calls.push((name, ctx.attempt(), Instant::now()));
            match calls.len() {
                1 | 2 => Err(JobError::msg("the API is down")),
                _ => Ok(()),
            }
        }
    });
    for name in ["a", "b", "c"] {
        queue
            .dispatch_named("call-api", serde_json::json!(name))
            .on_queue("mw-throttle")
            .tries(5)
            .await
            .unwrap();
    }
    let window = Duration::from_millis(600);
    let throttle = ThrottlesExceptions::new(2, window)
        .by("api-throttle-test")
        .backoff(Duration::from_millis(10));
    let summary = queue
        .worker(options("mw-throttle").concurrency(1).middleware(throttle))
        .run()
        .await
        .unwrap();
    assert_eq!((summary.processed, summary.failed), (3, 0), "{summary:?}");
    assert_eq!(summary.retried, 2, "{summary:?}");
    assert!(summary.released >= 1, "held back while open: {summary:?}");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 5, "2 errors, then 3 successes: {calls:?}");
    let first = calls[0].2;
    for (name, attempt, at) in &calls[2..] {
        assert!(
            at.duration_since(first) >= window - Duration::from_millis(50),
            "{name} ran while the circuit was open: {calls:?}"
        );
        assert!(*attempt <= 2, "a hold-back counts no attempt: {calls:?}");
    }
    let c = calls.iter().find(|(n, ..)| n == "c").expect("c ran");
    assert_eq!(
        c.1, 1,
        "c never errored: its one run is attempt 1: {calls:?}"
    );
}
