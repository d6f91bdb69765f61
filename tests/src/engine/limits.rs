//! Rate and concurrency limits through the worker: starts spaced by the rate, at most `n`
//! running at once, a slot of a dead holder free when its lease runs out, a key paused by
//! `JobError::rate_limited`, and never an attempt counted for waiting.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use queue_core::{Error, JobError, JobLimit, Limit, Queue, StorageExt};
use serde_json::json;

use super::{run_worker, test_options};
use crate::cases::failed_list;
use crate::{unique, Store};

/// A start of a job: its payload, when, and the attempt it was.
type Starts = Arc<Mutex<Vec<(String, Instant, u32)>>>;

/// Records each start of a job named `name`; each run takes `hold`.
fn starts(queue: &Queue, name: &str, hold: Duration) -> Starts {
    let log: Starts = Arc::default();
    let sink = log.clone();
    queue.listen(name, move |payload: String, ctx| {
        let sink = sink.clone();
        async move {
            sink.lock()
                .unwrap()
                .push((payload, Instant::now(), ctx.attempt()));
            tokio::time::sleep(hold).await;
            Ok(())
        }
    });
    log
}

/// The jobs of `queue` in the failed store (among its newest 1,000).
async fn failures(store: &Store, queue: &str) -> Vec<queue_core::FailedJob> {
    failed_list(store, 1000)
        .await
        .into_iter()
        .filter(|f| f.queue == queue)
        .collect()
}

/// A limit name no other case (or earlier run) shares: a limit's state lives in the store.
fn limit_name() -> String {
    unique("limit")
}

/// Whether `store` has no group counters, so rate limits do not apply; checks that a worker
/// with one refuses to start, naming the driver.
async fn without_groups(case: &str, store: &Store, queue: &Queue) -> bool {
    if store.capabilities().groups.is_some() {
        return false;
    }
    let options = test_options(&["q"]).limit(limit_name(), Limit::rate(10));
    let err = queue.worker(options).run().await.unwrap_err();
    assert!(
        matches!(err, Error::NotSupported { .. }) && err.to_string().contains("rate limits"),
        "{err}"
    );
    println!(
        "{case}: not applicable to the {} driver (no group counters)",
        store.driver()
    );
    true
}

/// Two workers, 40 jobs of one key at 20 a second: the starts span at least 39 times 50
/// ms, less a margin for the time between a job's admission and its body, none of them a
/// second attempt; 10 jobs of another key are not held behind them; a job that would wait longer
/// than its `max_throttle_wait` fails and says so.
pub async fn engine_rate_limits(store: Store) {
    let queue = Queue::from_arc(store.clone());
    if without_groups("engine_rate_limits", &store, &queue).await {
        return;
    }
    let (q, name, slow) = (unique("q"), limit_name(), limit_name());
    let log = starts(&queue, "rated", Duration::ZERO);
    let (busy, calm) = (
        JobLimit::new(&name).key("busy"),
        JobLimit::new(&name).key(7),
    );
    for i in 0..40 {
        queue
            .dispatch_named("rated", json!(format!("busy-{i}")))
            .on_queue(q.as_str())
            .limit(busy.clone())
            .await
            .unwrap();
    }
    for i in 0..10 {
        queue
            .dispatch_named("rated", json!(format!("calm-{i}")))
            .on_queue(q.as_str())
            .limit(calm.clone())
            .await
            .unwrap();
    }
    // One start every 10 s, and none may wait more than 2 s: the first runs, the others fail.
    let patient = JobLimit::new(&slow).max_wait(Duration::from_secs(2));
    for i in 0..3 {
        queue
            .dispatch_named("rated", json!(format!("slow-{i}")))
            .on_queue(q.as_str())
            .limit(patient.clone())
            .await
            .unwrap();
    }
    let options = || {
        test_options(&[&q])
            .concurrency(4)
            .limit(&name, Limit::rate(20))
            .limit(&slow, Limit::rate(1).per(Duration::from_secs(10)))
    };
    let (a, b) = tokio::join!(run_worker(&queue, options()), run_worker(&queue, options()));
    assert_eq!(a.processed + b.processed, 51, "{a:?} {b:?}");
    assert_eq!(a.failed + b.failed, 2, "{a:?} {b:?}");
    assert!(a.released + b.released > 0, "over-limit jobs went back");

    let log = log.lock().unwrap().clone();
    assert!(log.iter().all(|(_, _, attempt)| *attempt == 1), "{log:?}");
    let of = |prefix: &str| {
        let mut runs: Vec<(String, Instant)> = log
            .iter()
            .filter(|(p, _, _)| p.starts_with(prefix))
            .map(|(p, at, _)| (p.clone(), *at))
            .collect();
        runs.sort_by_key(|(_, at)| *at);
        runs
    };
    let (busy_runs, calm_runs) = (of("busy-"), of("calm-"));
    let mut names: Vec<&String> = busy_runs.iter().map(|(p, _)| p).collect();
    names.sort();
    names.dedup();
    assert_eq!((busy_runs.len(), names.len()), (40, 40), "each ran once");
    assert_eq!(calm_runs.len(), 10);
    // The limit books each start of a key 50 ms after the one before, so the starts of
    // one key span at least (n - 1) times 50 ms. The margin is for the time from a job's
    // admission to its body: a job back for its booked token is taken when a worker next
    // looks (up to its idle wait later), and on a starved machine (CI runs many cases at
    // once on 2 cores) a worker that stalls runs the jobs booked meanwhile late and close
    // together, which shortens the span by the stall of the first. Without the limit the 40
    // starts take a few ms, so the check still bites.
    for (runs, what, margin) in [
        (&busy_runs, "busy", Duration::from_millis(600)),
        (&calm_runs, "calm", Duration::from_millis(350)),
    ] {
        let span = runs[runs.len() - 1].1 - runs[0].1;
        let least = Duration::from_millis(50) * (runs.len() - 1) as u32;
        assert!(
            span + margin >= least,
            "{what}: {} starts only {span:?} apart",
            runs.len()
        );
    }
    let last_calm = calm_runs[9].1;
    let last_busy = busy_runs[39].1;
    assert!(
        last_calm + Duration::from_millis(500) < last_busy,
        "the calm key was held behind the busy one"
    );

    let failed = failures(&store, &q).await;
    let reasons: Vec<&str> = failed
        .iter()
        .filter(|f| f.name == "rated")
        .map(|f| f.error.as_str())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.contains("max_throttle_wait")),
        "{reasons:?}"
    );
    assert_eq!(of("slow-").len(), 1);
}

/// 24 jobs of 60 ms on `concurrent(3)` with two workers of 6 slots: never more than 3 at
/// once, and 3 at some point; before them, a dead worker's slots hold the key until their
/// lease runs out. No attempt counted for waiting.
pub async fn engine_concurrency_limits(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let (q, name) = (unique("q"), limit_name());
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    {
        let (running, most, attempts) = (running.clone(), most.clone(), attempts.clone());
        queue.listen("slotted", move |_: String, ctx| {
            let (running, most, attempts) = (running.clone(), most.clone(), attempts.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                attempts.lock().unwrap().push(ctx.attempt());
                tokio::time::sleep(Duration::from_millis(60)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        });
    }
    // A dead worker held every slot: they are free when its lease (1 s) runs out.
    let bucket = format!("limit:{name}:k");
    for i in 0..3 {
        assert!(store
            .lock(
                &format!("{bucket}#{i}"),
                "dead-worker",
                Duration::from_secs(1)
            )
            .await
            .unwrap());
    }
    let held_at = Instant::now();
    for i in 0..24 {
        queue
            .dispatch_named("slotted", json!(format!("{i}")))
            .on_queue(q.as_str())
            .limit(JobLimit::new(&name).key("k"))
            .await
            .unwrap();
    }
    let options = || {
        test_options(&[&q])
            .concurrency(6)
            .limit(&name, Limit::concurrent(3))
    };
    let (a, b) = tokio::join!(run_worker(&queue, options()), run_worker(&queue, options()));
    assert_eq!(a.processed + b.processed, 24, "{a:?} {b:?}");
    assert_eq!(
        most.load(Ordering::SeqCst),
        3,
        "at most 3 at once, and 3 reached"
    );
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 24);
    assert!(attempts.iter().all(|a| *a == 1), "{attempts:?}");
    assert!(
        held_at.elapsed() >= Duration::from_secs(1),
        "the dead worker's slots held the key until they expired"
    );
    // The slots are free again: each can be taken.
    for i in 0..3 {
        assert!(store
            .lock(&format!("{bucket}#{i}"), "after", Duration::from_secs(1))
            .await
            .unwrap());
    }
}

/// A job that meets an HTTP 429 (`JobError::rate_limited`) pauses its key for every worker
/// and runs again after it, its attempt not counted; a job that would wait past its
/// `max_throttle_wait` fails; a job naming a limit no worker defines waits for one that
/// does, then fails saying so.
pub async fn engine_rate_limited_pauses_the_key(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let (q, name) = (unique("q"), limit_name());
    let log = starts(&queue, "after-429", Duration::ZERO);
    let refused = Arc::new(AtomicBool::new(false));
    let paused_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    {
        let (refused, paused_at) = (refused.clone(), paused_at.clone());
        queue.listen("calls-api", move |_: String, ctx| {
            let (refused, paused_at) = (refused.clone(), paused_at.clone());
            async move {
                assert_eq!(ctx.attempt(), 1, "waiting never counts an attempt");
                if !refused.swap(true, Ordering::SeqCst) {
                    *paused_at.lock().unwrap() = Some(Instant::now());
                    return Err(JobError::rate_limited(Duration::from_millis(800)));
                }
                Ok(())
            }
        });
    }
    let limit = JobLimit::new(&name).key("api");
    queue
        .dispatch_named("calls-api", json!("first"))
        .on_queue(q.as_str())
        .limit(limit.clone())
        .await
        .unwrap();
    // Waits at most 300 ms in all: the 429 outlasts that.
    queue
        .dispatch_named("calls-api", json!("impatient"))
        .on_queue(q.as_str())
        .limit(limit.clone().max_wait(Duration::from_millis(300)))
        .await
        .unwrap();
    let options = test_options(&[&q])
        .limit(&name, Limit::concurrent(10))
        .unknown_job_window(Duration::from_millis(300));
    let worker = run_worker(&queue, options.clone());
    let later = async {
        // Dispatched once the key is paused: it must not start before the pause ends.
        loop {
            if paused_at.lock().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for i in 0..3 {
            queue
                .dispatch_named("after-429", json!(format!("{i}")))
                .on_queue(q.as_str())
                .limit(limit.clone())
                .await
                .unwrap();
        }
    };
    let (summary, ()) = tokio::join!(worker, later);
    let paused_at = paused_at.lock().unwrap().expect("the first job ran");
    let log = log.lock().unwrap().clone();
    let has_groups = store.capabilities().groups.is_some();
    assert_eq!(log.len(), 3, "{summary:?}");
    if has_groups {
        for (payload, at, attempt) in &log {
            assert_eq!(*attempt, 1);
            assert!(
                *at >= paused_at + Duration::from_millis(700),
                "{payload} started {:?} after the pause began",
                *at - paused_at
            );
        }
    } else {
        println!(
            "engine_rate_limited_pauses_the_key: the {} driver has no group counters, so the \
             key is not paused (only the job that met the 429 waits)",
            store.driver()
        );
    }
    // The 429'd job ran again (attempt 1, checked in its body) and succeeded; the impatient
    // one failed, saying why (where the key could be paused: elsewhere it ran).
    let failed = failures(&store, &q).await;
    let impatient: Vec<&str> = failed
        .iter()
        .filter(|f| f.name == "calls-api")
        .map(|f| f.error.as_str())
        .collect();
    if has_groups {
        assert_eq!(summary.processed, 4, "{summary:?}");
        assert_eq!(impatient.len(), 1, "{impatient:?}");
        assert!(impatient[0].contains("max_throttle_wait"), "{impatient:?}");
    } else {
        assert_eq!(summary.processed, 5, "{summary:?}");
        assert!(impatient.is_empty(), "{impatient:?}");
    }

    // A limit no worker defines: put back for a worker that does, then failed.
    let undefined = limit_name();
    queue
        .dispatch_named("after-429", json!("undefined"))
        .on_queue(q.as_str())
        .limit(JobLimit::new(&undefined))
        .await
        .unwrap();
    run_worker(&queue, options).await;
    let failed = failures(&store, &q).await;
    assert!(
        failed.iter().any(|f| f.error.contains(&format!(
            "limit `{undefined}` is not defined on this worker"
        ))),
        "{failed:?}"
    );
}

/// Limits of whole queues (`WorkerOptions::queue_limit`, `[queue_limits]`): 12 jobs of two
/// types on a queue limited to `concurrent(2)`, four of them also naming a `concurrent(1)`
/// limit of their own, with two workers of 4 slots: never more than 2 of the queue at once
/// (2 reached), never more than 1 of the own limit's key, no attempt counted for waiting.
/// Where the store has group counters, 20 jobs through a queue limited to `rate(20)` start
/// spaced by 50 ms; elsewhere a worker with a rate limit on a queue refuses to start.
pub async fn engine_queue_limits(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let (slots_q, rate_q, own) = (unique("qslots"), unique("qrate"), limit_name());
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (own_running, own_most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    for name in ["first-type", "second-type"] {
        let (running, most, attempts) = (running.clone(), most.clone(), attempts.clone());
        let (own_running, own_most) = (own_running.clone(), own_most.clone());
        queue.listen(name, move |payload: String, ctx| {
            let (running, most, attempts) = (running.clone(), most.clone(), attempts.clone());
            let (own_running, own_most) = (own_running.clone(), own_most.clone());
            async move {
                let mine = payload.starts_with("own");
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                if mine {
                    let now = own_running.fetch_add(1, Ordering::SeqCst) + 1;
                    own_most.fetch_max(now, Ordering::SeqCst);
                }
                attempts.lock().unwrap().push(ctx.attempt());
                tokio::time::sleep(Duration::from_millis(60)).await;
                if mine {
                    own_running.fetch_sub(1, Ordering::SeqCst);
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        });
    }
    for i in 0..12 {
        let name = if i % 2 == 0 {
            "first-type"
        } else {
            "second-type"
        };
        let dispatch = if i % 3 == 0 {
            queue
                .dispatch_named(name, json!(format!("own-{i}")))
                .limit(JobLimit::new(&own).key("k"))
        } else {
            queue.dispatch_named(name, json!(format!("plain-{i}")))
        };
        dispatch.on_queue(slots_q.as_str()).await.unwrap();
    }
    let groups = store.capabilities().groups.is_some();
    let log = starts(&queue, "rated", Duration::ZERO);
    if groups {
        for i in 0..20 {
            queue
                .dispatch_named("rated", json!(format!("r-{i}")))
                .on_queue(rate_q.as_str())
                .await
                .unwrap();
        }
    } else {
        let options = test_options(&[&rate_q]).queue_limit(&rate_q, Limit::rate(20));
        let err = queue.worker(options).run().await.unwrap_err();
        assert!(
            matches!(err, Error::NotSupported { .. }) && err.to_string().contains("rate limits"),
            "{err}"
        );
    }
    let options = || {
        let options = test_options(&[&slots_q, &rate_q])
            .concurrency(4)
            .queue_limit(&slots_q, Limit::concurrent(2))
            .limit(&own, Limit::concurrent(1));
        if groups {
            options.queue_limit(&rate_q, Limit::rate(20))
        } else {
            options
        }
    };
    let (a, b) = tokio::join!(run_worker(&queue, options()), run_worker(&queue, options()));
    let expected = if groups { 32 } else { 12 };
    assert_eq!(a.processed + b.processed, expected, "{a:?} {b:?}");
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "at most 2 of the queue at once, and 2 reached"
    );
    assert_eq!(
        own_most.load(Ordering::SeqCst),
        1,
        "the job's own limit held too"
    );
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 12);
    assert!(attempts.iter().all(|a| *a == 1), "{attempts:?}");
    if groups {
        let mut log = log.lock().unwrap().clone();
        assert_eq!(log.len(), 20);
        assert!(log.iter().all(|(_, _, attempt)| *attempt == 1), "{log:?}");
        log.sort_by_key(|(_, at, _)| *at);
        // As in engine_rate_limits: starts spaced 50 ms by their bookings, with a margin for
        // the time from admission to body on a loaded machine.
        let span = log[19].1 - log[0].1;
        assert!(
            span + Duration::from_millis(600) >= Duration::from_millis(50 * 19),
            "20 starts only {span:?} apart"
        );
    } else {
        println!(
            "engine_queue_limits: rate limits on queues not applicable to the {} driver (no group counters): refused",
            store.driver()
        );
    }
}

/// `ThrottlesExceptions`: two errors of a key open its circuit for the window. On a store
/// with group counters the circuit is the store's: it reads `errors 2` and the window's end,
/// and a worker whose process forgot its own readings still holds a new job back until the
/// window ends, without counting an attempt; the job's success closes the circuit in the
/// store. Without group counters each process keeps its own circuit, which holds the job
/// back in the same way within this process.
pub async fn engine_throttles_exceptions_share_their_circuit(store: Store) {
    use queue_core::ThrottlesExceptions;

    let queue = Queue::from_arc(store.clone());
    let (q, key) = (unique("throttled"), unique("svc"));
    let runs: Arc<Mutex<Vec<(String, SystemTime, u32)>>> = Arc::default();
    let sink = runs.clone();
    queue.listen("throttled-call", move |payload: String, ctx| {
        let sink = sink.clone();
        async move {
            sink.lock()
                .unwrap()
                .push((payload.clone(), SystemTime::now(), ctx.attempt()));
            if payload.starts_with("bad") {
                Err(JobError::msg("the service is down"))
            } else {
                Ok(())
            }
        }
    });
    let window = Duration::from_secs(2);
    let options = || {
        test_options(&[q.as_str()])
            .concurrency(1)
            .middleware(ThrottlesExceptions::new(2, window).by(key.clone()))
    };
    for bad in ["bad-1", "bad-2"] {
        queue
            .dispatch_named("throttled-call", json!(bad))
            .on_queue(&q)
            .tries(1)
            .await
            .unwrap();
    }
    let first = run_worker(&queue, options()).await;
    assert_eq!(first.failed, 2, "{first:?}");
    let circuit = || async {
        store
            .groups()
            .unwrap()
            .counters(&format!("throttle:{key}"))
            .await
            .unwrap()
    };
    let shared = store.capabilities().groups.is_some();
    let ends = if shared {
        let counters = circuit().await;
        let get = |name: &str| counters.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(get("errors"), Some(2), "{counters:?}");
        let ends = get("ends").expect("the window's end is stored");
        assert!(
            ends > queue_core::storage::unix_millis(SystemTime::now()),
            "the window is still open: {counters:?}"
        );
        // This process's readings go: what holds the next job back is the store's circuit.
        queue_core::middleware_forget_circuit_readings();
        Some(queue_core::storage::from_unix_millis(ends))
    } else {
        None
    };
    queue
        .dispatch_named("throttled-call", json!("good"))
        .on_queue(&q)
        .tries(1)
        .await
        .unwrap();
    let second = run_worker(&queue, options()).await;
    assert_eq!((second.processed, second.failed), (1, 0), "{second:?}");
    assert!(second.released >= 1, "held back while open: {second:?}");
    let runs = runs.lock().unwrap().clone();
    let good = runs
        .iter()
        .find(|(p, ..)| p == "good")
        .expect("the good job ran");
    assert_eq!(good.2, 1, "holding back counts no attempt: {runs:?}");
    let opened = runs[0].1;
    assert!(
        good.1.duration_since(opened).unwrap_or_default() >= window - Duration::from_millis(100),
        "the good job ran while the circuit was open: {runs:?}"
    );
    if let Some(ends) = ends {
        assert!(
            good.1 + Duration::from_millis(100) >= ends,
            "the good job ran before the stored window ended"
        );
        let counters = circuit().await;
        assert!(
            counters.iter().any(|(n, v)| n == "errors" && *v == 0),
            "the success closed the circuit: {counters:?}"
        );
    } else {
        println!(
            "engine_throttles_exceptions_share_their_circuit: the {} driver has no group counters: each process keeps its own circuit",
            store.driver()
        );
    }
}
