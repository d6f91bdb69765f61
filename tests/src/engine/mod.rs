//! Worker cases: the engine on top of each driver, end to end. `lifecycle` holds the cases
//! of stopping, leases, the restart signal and jobs a worker does not know.

mod budget;
mod chains;
mod encrypted;
mod lifecycle;
mod limits;
mod pause;
mod schedules;
mod status;
mod unique;
mod workers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue_core::{Backoff, JobError, Queue, StorageExt, WorkerOptions, WorkerSummary};
use serde_json::json;

use crate::cases::{failed_list, PAST_SHORT, SHORT};
use crate::{job, request, unique, Store};

pub use budget::*;
pub use chains::*;
pub use encrypted::*;
pub use lifecycle::*;
pub use limits::*;
pub use pause::*;
pub use schedules::*;
pub use status::*;
pub use unique::*;
pub use workers::*;

/// Worker options for tests: quick polling, fixed short backoff, stop when empty.
pub fn test_options(queues: &[&str]) -> WorkerOptions {
    WorkerOptions::default()
        .queues(queues.iter().copied())
        .sleep(Duration::from_millis(50))
        .backoff(Backoff::Fixed(Duration::from_millis(100)))
        .lease(Duration::from_secs(5))
        .lock_retry(Duration::from_millis(50))
        .stop_when_empty()
}

/// Runs a worker to completion, failing the case if it takes more than a minute.
pub async fn run_worker(queue: &Queue, options: WorkerOptions) -> WorkerSummary {
    tokio::time::timeout(Duration::from_secs(60), queue.worker(options).run())
        .await
        .expect("the worker stopped within a minute")
        .expect("the worker ran")
}

type Log = Arc<Mutex<Vec<String>>>;

fn recorder(queue: &Queue, name: &str) -> Log {
    let log: Log = Arc::default();
    let sink = log.clone();
    queue.listen(name, move |payload: serde_json::Value, _ctx| {
        let sink = sink.clone();
        async move {
            sink.lock()
                .unwrap()
                .push(payload.as_str().unwrap_or_default().to_owned());
            Ok(())
        }
    });
    log
}

/// The worker takes high before default before low, FIFO within each.
pub async fn engine_runs_jobs_in_priority_order(store: Store) {
    let queue = Queue::from_arc(store);
    let (high, default, low) = (unique("high"), unique("default"), unique("low"));
    let log = recorder(&queue, "record");
    for (q, tag) in [
        (&low, "low1"),
        (&default, "default1"),
        (&high, "high1"),
        (&low, "low2"),
        (&high, "high2"),
    ] {
        queue
            .dispatch_named("record", json!(tag))
            .on_queue(q.as_str())
            .await
            .unwrap();
    }
    let summary = run_worker(&queue, test_options(&[&high, &default, &low])).await;
    assert_eq!(summary.processed, 5);
    assert_eq!(
        *log.lock().unwrap(),
        ["high1", "high2", "default1", "low1", "low2"]
    );
}

/// One worker at concurrency 1 with the adaptive prefetch starts quick jobs exactly in the
/// store's order: every job of a higher queue before any of a lower one, each queue first
/// dispatched first. (Two fetching calls in flight broke this: the later one skipped the
/// rows the earlier one held, or ran first, and its jobs could start first.)
pub async fn engine_starts_jobs_in_store_order(store: Store) {
    const EACH: usize = 40;
    let queue = Queue::from_arc(store);
    let (high, default, low) = (unique("high"), unique("default"), unique("low"));
    let log = recorder(&queue, "record");
    let mut jobs = Vec::new();
    for i in 0..EACH {
        for (q, tag) in [(&low, "low"), (&default, "default"), (&high, "high")] {
            jobs.push(
                queue
                    .dispatch_named("record", json!(format!("{tag}{i}")))
                    .on_queue(q.as_str()),
            );
        }
    }
    // One push, in this order: ids (and due times) rise with it on every driver.
    queue.dispatch_many(jobs).await.unwrap();
    let summary = run_worker(&queue, test_options(&[&high, &default, &low])).await;
    assert_eq!(summary.processed, 3 * EACH as u64);
    let want: Vec<String> = ["high", "default", "low"]
        .iter()
        .flat_map(|tag| (0..EACH).map(move |i| format!("{tag}{i}")))
        .collect();
    assert_eq!(*log.lock().unwrap(), want);
}

/// A job that fails twice then succeeds is retried after its backoff and finishes.
pub async fn engine_retries_with_backoff(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let attempts: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let seen = attempts.clone();
    queue.listen("flaky", move |_: serde_json::Value, ctx| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push((ctx.attempt(), Instant::now()));
            if ctx.attempt() < 3 {
                return Err(JobError::msg("not yet"));
            }
            Ok(())
        }
    });
    queue
        .dispatch_named("flaky", json!({}))
        .on_queue(q.as_str())
        .tries(3)
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(
        (summary.processed, summary.retried, summary.failed),
        (1, 2, 0)
    );
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.iter().map(|a| a.0).collect::<Vec<_>>(), [1, 2, 3]);
    for pair in attempts.windows(2) {
        // Stores keep due times in whole milliseconds: a due time can land up to 1 ms
        // before the exact instant (allow 2 ms for the truncation of both readings).
        assert!(
            pair[1].1 - pair[0].1 >= Duration::from_millis(98),
            "backoff respected: {:?}",
            pair[1].1 - pair[0].1
        );
    }
    assert_eq!(store.failed_store().unwrap().count().await.unwrap(), 0);
}

/// After its last attempt a job is in the failed store with the error and attempts.
pub async fn engine_fails_after_tries(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    queue.listen("always-fails", |_: serde_json::Value, _ctx| async move {
        Err::<(), _>(JobError::msg("the remote said no"))
    });
    queue.listen("fails-now", |_: serde_json::Value, _ctx| async move {
        Err::<(), _>(JobError::fail("malformed address"))
    });
    queue
        .dispatch_named("always-fails", json!({"k": 1}))
        .on_queue(q.as_str())
        .tries(2)
        .await
        .unwrap();
    queue
        .dispatch_named("fails-now", json!({}))
        .on_queue(q.as_str())
        .tries(5)
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(
        (summary.processed, summary.failed, summary.retried),
        (0, 2, 1)
    );
    let failed = failed_list(&store, 10).await;
    let always = failed
        .iter()
        .find(|f| f.name == "always-fails")
        .expect("in the failed store");
    assert!(
        always.error.contains("the remote said no"),
        "{}",
        always.error
    );
    assert!(always.error.contains("attempt 2 of 2"), "{}", always.error);
    assert_eq!(always.attempts, 2);
    assert_eq!(always.queue, q);
    assert!(String::from_utf8_lossy(&always.payload).contains("\"k\":1"));
    let now = failed
        .iter()
        .find(|f| f.name == "fails-now")
        .expect("in the failed store");
    assert_eq!(now.attempts, 1, "JobError::fail is not retried");
    assert_eq!(now.error, "malformed address");
}

/// Garbage, truncated, unknown, mis-shaped and empty payloads each go to the failed store
/// after one attempt with a clear reason; the worker keeps running and does the good job.
pub async fn engine_bad_payloads_go_to_failed_store(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    #[derive(serde::Deserialize)]
    struct Shaped {
        #[allow(dead_code)] // only its shape matters
        n: u32,
    }
    queue.listen("shaped", move |_: Shaped, _ctx| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let deep = format!(
        "{{\"v\":1,\"name\":\"shaped\",\"data\":{}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", vec![0xff, 0x00, 0xfe, 0x13], "not valid UTF-8"),
        (
            "truncated",
            b"{\"v\":1,\"name\":\"shaped\",\"data\":{\"n\":".to_vec(),
            "truncated",
        ),
        (
            "unknown",
            br#"{"v":1,"name":"no-such-job","data":{}}"#.to_vec(),
            "unknown job name `no-such-job`",
        ),
        (
            "wrong-shape",
            br#"{"v":1,"name":"shaped","data":{"n":"seven"}}"#.to_vec(),
            "does not fit job `shaped`",
        ),
        ("empty", Vec::new(), "empty payload"),
        ("not-envelope", b"[1,2,3]".to_vec(), "not a job envelope"),
        ("deep", deep.into_bytes(), "does not fit job `shaped`"),
    ];
    for (name, payload, _) in &bad {
        store.push(vec![job(&q, name, payload)]).await.unwrap();
    }
    queue
        .dispatch_named("shaped", json!({"n": 7}))
        .on_queue(q.as_str())
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q]).tries(3)).await;
    assert_eq!(summary.processed, 1, "the good job ran");
    assert_eq!(done.load(Ordering::SeqCst), 1);
    assert_eq!(summary.failed, bad.len() as u64);
    assert_eq!(summary.retried, 0, "bad payloads are not retried");
    let failed = failed_list(&store, 100).await;
    for (name, payload, reason) in &bad {
        let f = failed
            .iter()
            .find(|f| f.name == *name)
            .unwrap_or_else(|| panic!("{name} in the failed store"));
        assert!(
            f.error.contains(reason),
            "{name}: `{}` should mention `{reason}`",
            f.error
        );
        assert_eq!(f.attempts, 1, "{name} was not retried");
        assert_eq!(&f.payload, payload, "{name}: payload kept as it was");
    }
}

/// A panic is a failed attempt; the worker survives and retries.
pub async fn engine_panicking_job_is_a_failed_attempt(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    queue.listen("panics-once", |_: serde_json::Value, ctx| async move {
        if ctx.attempt() == 1 {
            panic!("first attempt explodes");
        }
        Ok(())
    });
    queue.listen("panics-always", |_: serde_json::Value, _ctx| async move {
        if true {
            panic!("always explodes");
        }
        Ok(())
    });
    queue
        .dispatch_named("panics-once", json!({}))
        .on_queue(q.as_str())
        .tries(2)
        .await
        .unwrap();
    queue
        .dispatch_named("panics-always", json!({}))
        .on_queue(q.as_str())
        .tries(1)
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(
        (summary.processed, summary.retried, summary.failed),
        (1, 1, 1)
    );
    let failed = failed_list(&store, 10).await;
    assert!(
        failed[0].error.contains("job panicked: always explodes"),
        "{}",
        failed[0].error
    );
}

/// A job past its timeout is cancelled and counts as a failed attempt.
pub async fn engine_timeout_cancels_job(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let finished = Arc::new(AtomicUsize::new(0));
    let flag = finished.clone();
    queue.listen("hangs", move |_: serde_json::Value, _ctx| {
        let flag = flag.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            flag.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    queue
        .dispatch_named("hangs", json!({}))
        .on_queue(q.as_str())
        .timeout(Duration::from_millis(300))
        .tries(2)
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!((summary.failed, summary.retried), (1, 1));
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the hanging body was cancelled"
    );
    let failed = failed_list(&store, 10).await;
    assert!(
        failed[0].error.contains("timed out after 300ms"),
        "{}",
        failed[0].error
    );
    assert_eq!(failed[0].attempts, 2);
}

/// Jobs sharing a lock key never run at once, even with free slots; none is lost and the
/// put-backs do not count as attempts.
pub async fn engine_without_overlapping(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let inside = Arc::new(AtomicUsize::new(0));
    let max_inside = Arc::new(AtomicUsize::new(0));
    let (i, m) = (inside.clone(), max_inside.clone());
    queue.listen("report", move |_: serde_json::Value, ctx| {
        let (inside, max_inside) = (i.clone(), m.clone());
        async move {
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            max_inside.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            assert_eq!(ctx.attempt(), 1, "lock waits are not attempts");
            Ok(())
        }
    });
    let key = unique("report-lock");
    for _ in 0..8 {
        queue
            .dispatch_named("report", json!({}))
            .on_queue(q.as_str())
            .without_overlapping_key(key.clone())
            .tries(1)
            .await
            .unwrap();
    }
    let summary = run_worker(&queue, test_options(&[&q]).concurrency(4)).await;
    assert_eq!(summary.processed, 8);
    assert_eq!(summary.failed, 0);
    assert_eq!(max_inside.load(Ordering::SeqCst), 1, "never two at once");
    assert!(
        store.lock(&key, "someone-else", SHORT).await.unwrap(),
        "the lock was released"
    );
}

/// A job whose worker died on its last attempt ends in the failed store instead of looping.
pub async fn engine_dead_worker_costs_an_attempt(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let ran = Arc::new(AtomicUsize::new(0));
    let flag = ran.clone();
    queue.listen("kills-worker", move |_: serde_json::Value, _ctx| {
        let flag = flag.clone();
        async move {
            flag.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    queue
        .dispatch_named("kills-worker", json!({}))
        .on_queue(q.as_str())
        .tries(1)
        .await
        .unwrap();
    // A worker reserves it and dies: nobody acknowledges, the lease runs out.
    let dead = store.reserve(&request(&[&q], SHORT, 1)).await.unwrap();
    assert_eq!(dead.len(), 1);
    tokio::time::sleep(PAST_SHORT).await;
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!((summary.processed, summary.failed), (0, 1));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    let failed = failed_list(&store, 1).await;
    assert!(
        failed[0].error.contains("attempts exhausted"),
        "{}",
        failed[0].error
    );
}

/// Dispatches from many tasks at once (shared pushes where the store allows it): each caller
/// gets its own id, every job is stored once, and a worker runs each payload once.
pub async fn concurrent_dispatches_each_get_their_own_id(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let log = recorder(&queue, "record");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (queue, q) = (queue.clone(), q.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..40 {
                let id = queue
                    .dispatch_named("record", json!(format!("{t}-{i}")))
                    .on_queue(q.as_str())
                    .await
                    .unwrap();
                ids.push(id);
            }
            ids
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(ids.insert(id.clone()), "id {id:?} given to two dispatches");
        }
    }
    assert_eq!(ids.len(), 320);
    let summary = run_worker(&queue, test_options(&[&q]).concurrency(4)).await;
    assert_eq!(summary.processed, 320);
    let mut seen = log.lock().unwrap().clone();
    seen.sort();
    let mut want: Vec<String> = (0..8)
        .flat_map(|t| (0..40).map(move |i| format!("{t}-{i}")))
        .collect();
    want.sort();
    assert_eq!(seen, want, "each payload ran once");
}

/// `concurrency(8)` runs eight jobs at once in one worker.
pub async fn engine_concurrency(store: Store) {
    let queue = Queue::from_arc(store);
    let q = unique("q");
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let b = barrier.clone();
    queue.listen("meet", move |_: serde_json::Value, _ctx| {
        let barrier = b.clone();
        async move {
            // Only passes if all eight run at the same time.
            tokio::time::timeout(Duration::from_secs(10), barrier.wait())
                .await
                .map_err(|_| JobError::fail("fewer than eight jobs ran at once"))?;
            Ok(())
        }
    });
    for _ in 0..8 {
        queue
            .dispatch_named("meet", json!({}))
            .on_queue(q.as_str())
            .tries(1)
            .await
            .unwrap();
    }
    let summary = run_worker(&queue, test_options(&[&q]).concurrency(8)).await;
    assert_eq!((summary.processed, summary.failed), (8, 0));
}

/// Prefetch keeps strict priority: a worker holding a buffer of low jobs takes a high job
/// dispatched meanwhile ahead of them (the buffer's lowest job goes back), so only the few
/// low jobs that start while the next round trip is on its way run before it, never the
/// whole buffer.
pub async fn engine_prefetch_keeps_priority(store: Store) {
    const LOWS: usize = 60;
    const BUFFER: usize = 24;
    let queue = Queue::from_arc(store);
    let (high, low) = (unique("high"), unique("low"));
    let log: Log = Arc::default();
    let sink = log.clone();
    queue.listen("record", move |payload: serde_json::Value, _ctx| {
        let sink = sink.clone();
        async move {
            sink.lock()
                .unwrap()
                .push(payload.as_str().unwrap_or_default().to_owned());
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(())
        }
    });
    for i in 0..LOWS {
        queue
            .dispatch_named("record", json!(format!("low{i}")))
            .on_queue(low.as_str())
            .await
            .unwrap();
    }
    let dispatcher = {
        let (queue, log, high) = (queue.clone(), log.clone(), high.clone());
        tokio::spawn(async move {
            let mut marks = Vec::new();
            for (k, after) in [10usize, 25, 40].into_iter().enumerate() {
                while log.lock().unwrap().len() < after {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                queue
                    .dispatch_named("record", json!(format!("high{k}")))
                    .on_queue(high.as_str())
                    .await
                    .unwrap();
                marks.push(log.lock().unwrap().len());
            }
            marks
        })
    };
    let options = test_options(&[&high, &low]).concurrency(2).prefetch(BUFFER);
    let summary = run_worker(&queue, options).await;
    let marks = dispatcher.await.unwrap();
    assert_eq!((summary.processed, summary.failed), (LOWS as u64 + 3, 0));
    let log = log.lock().unwrap().clone();
    for (k, mark) in marks.iter().enumerate() {
        let at = log
            .iter()
            .position(|t| *t == format!("high{k}"))
            .expect("the high job ran");
        let lows_before = at.saturating_sub(*mark);
        assert!(
            lows_before <= 8,
            "high{k}: {lows_before} low jobs started between its dispatch and its start \
             (a buffer of {BUFFER} held; the order: {log:?})"
        );
    }
    let mut lows: Vec<&String> = log.iter().filter(|t| t.starts_with("low")).collect();
    assert_eq!(lows.len(), LOWS, "every low job started once: {log:?}");
    lows.sort();
    lows.dedup();
    assert_eq!(lows.len(), LOWS, "every low job started once: {log:?}");
}

/// The adaptive prefetch holds nothing back for jobs that outlast a round trip: a worker
/// running long jobs reserves only its free slots, so a second worker that starts later
/// still finds jobs to run (with a buffer of every waiting job, the first would take them
/// all and the second would run none).
pub async fn engine_adaptive_prefetch_leaves_long_jobs_to_others(store: Store) {
    const JOBS: u64 = 12;
    let queue = Queue::from_arc(store);
    let q = unique("q");
    queue.listen("long", |_: serde_json::Value, _ctx| async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Ok(())
    });
    for _ in 0..JOBS {
        queue
            .dispatch_named("long", json!({}))
            .on_queue(q.as_str())
            .await
            .unwrap();
    }
    let first = run_worker(&queue, test_options(&[&q]).concurrency(2));
    let second = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        run_worker(&queue, test_options(&[&q]).concurrency(2)).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.processed + second.processed, JOBS);
    assert!(
        second.processed >= 3,
        "the later worker ran {} of {JOBS} jobs: the first held the rest back ({} ran there)",
        second.processed,
        first.processed
    );
}

/// A delayed job runs, but not before its time.
pub async fn engine_delayed_job_waits(store: Store) {
    let queue = Queue::from_arc(store);
    let q = unique("q");
    let ran_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let slot = ran_at.clone();
    queue.listen("later", move |_: serde_json::Value, _ctx| {
        let slot = slot.clone();
        async move {
            *slot.lock().unwrap() = Some(Instant::now());
            Ok(())
        }
    });
    let dispatched = Instant::now();
    queue
        .dispatch_named("later", json!({}))
        .on_queue(q.as_str())
        .delay(Duration::from_millis(700))
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(summary.processed, 1);
    let ran = ran_at.lock().unwrap().expect("it ran");
    assert!(
        ran - dispatched >= Duration::from_millis(650),
        "ran after {:?}",
        ran - dispatched
    );
}

/// `ctx.release(delay)` puts the job back; it runs again with the attempt counted.
pub async fn engine_release_from_job(store: Store) {
    let queue = Queue::from_arc(store);
    let q = unique("q");
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let seen = attempts.clone();
    queue.listen("not-now", move |_: serde_json::Value, ctx| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(ctx.attempt());
            if ctx.attempt() == 1 {
                ctx.release(Duration::from_millis(100));
            }
            Ok(())
        }
    });
    queue
        .dispatch_named("not-now", json!({}))
        .on_queue(q.as_str())
        .tries(3)
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(summary.processed, 1);
    assert_eq!(*attempts.lock().unwrap(), [1, 2]);
}

/// On stop, finished jobs are acknowledged and a job still running after the grace period
/// is put back at once, its attempt counted (it ran).
pub async fn engine_graceful_stop_puts_back(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let (s1, s2) = (started.clone(), started.clone());
    queue.listen("quick", move |_: serde_json::Value, _ctx| {
        let started = s1.clone();
        async move {
            started.add_permits(1);
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(())
        }
    });
    queue.listen("slow", move |_: serde_json::Value, _ctx| {
        let started = s2.clone();
        async move {
            started.add_permits(1);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
    });
    queue
        .dispatch_named("quick", json!({}))
        .on_queue(q.as_str())
        .await
        .unwrap();
    queue
        .dispatch_named("slow", json!({}))
        .on_queue(q.as_str())
        .await
        .unwrap();
    let worker = queue.worker(
        test_options(&[&q])
            .concurrency(2)
            .grace(Duration::from_millis(1500)),
    );
    let stop = worker.stop_handle();
    let running = tokio::spawn(worker.run());
    let _ = tokio::time::timeout(Duration::from_secs(20), started.acquire_many(2))
        .await
        .expect("both jobs started");
    stop.stop();
    let summary = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the worker stopped after its grace period")
        .unwrap()
        .unwrap();
    assert_eq!(
        summary.processed, 1,
        "the quick job finished and was acknowledged"
    );
    assert_eq!(summary.released, 1, "the slow job was put back");
    let size = store.inspect().unwrap().size(&q).await.unwrap();
    assert_eq!(
        (size.waiting, size.reserved),
        (1, 0),
        "available again at once, not after its lease"
    );
    let back = store
        .reserve(&request(&[&q], Duration::from_secs(5), 1))
        .await
        .unwrap();
    assert_eq!(back[0].name, "slow");
    assert_eq!(
        back[0].attempts, 2,
        "the interrupted attempt counts, so a job that always outlives the grace ends"
    );
}

/// Lease of the late-reply cases: the held-back reply arrives after it ran out.
const LATE_LEASE: Duration = Duration::from_millis(1000);

fn counting(queue: &Queue, name: &str) -> Arc<AtomicUsize> {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    queue.listen(name, move |_: serde_json::Value, _ctx| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    runs
}

/// A worker whose reservation reply comes back after the lease ran out (it was paused) and
/// after another worker took the job and finished it does not run the job again.
pub async fn engine_late_reservation_taken_by_another_is_not_run(store: Store) {
    let q = unique("q");
    let late = crate::late::LateFirstReply::new(
        store.clone(),
        LATE_LEASE + Duration::from_millis(1500),
        Box::new(|inner: Store, held: Vec<queue_core::Reserved>| {
            Box::pin(async move {
                tokio::time::sleep(LATE_LEASE + Duration::from_millis(100)).await;
                // The lease ran out: another worker takes the job and finishes it.
                let queue = held[0].lease.queue.clone();
                let deadline = Instant::now() + Duration::from_secs(10);
                let taken = loop {
                    let got = inner
                        .reserve(&request(&[&queue], Duration::from_secs(60), 1))
                        .await
                        .unwrap();
                    if let Some(job) = got.into_iter().next() {
                        break job;
                    }
                    assert!(Instant::now() < deadline, "the expired lease came back");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                assert_eq!(taken.lease.job_id, held[0].lease.job_id);
                assert_eq!(taken.attempts, 2);
                assert_eq!(inner.acknowledge(&[taken.lease]).await.unwrap(), [true]);
            })
        }),
    );
    let queue = Queue::from_arc(late);
    let runs = counting(&queue, "paused");
    queue
        .dispatch_named("paused", json!({}))
        .on_queue(q.as_str())
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q]).lease(LATE_LEASE)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "the paused worker ran a job another worker had already finished"
    );
    assert_eq!((summary.processed, summary.failed), (0, 0));
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
}

/// A reservation reply that comes back after its lease ran out, with nobody else having taken
/// the job meanwhile, still gets the job run exactly once.
pub async fn engine_late_reservation_still_held_runs_once(store: Store) {
    let q = unique("q");
    let late = crate::late::LateFirstReply::new(
        store.clone(),
        LATE_LEASE + Duration::from_millis(500),
        Box::new(|_: Store, _: Vec<queue_core::Reserved>| Box::pin(async {})),
    );
    let queue = Queue::from_arc(late);
    let runs = counting(&queue, "paused");
    queue
        .dispatch_named("paused", json!({}))
        .on_queue(q.as_str())
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q]).lease(LATE_LEASE)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!((summary.processed, summary.failed), (1, 0));
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
}

/// `.release_after(d)` (Laravel's `releaseAfter`): two jobs of one key with a worker of two
/// slots; the one that finds the lock held goes back once, for its own 1.5 s rather than
/// the worker's 50 ms `lock_retry`, and runs after the other ended; no attempt counted.
pub async fn engine_without_overlapping_release_after(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let starts: Arc<Mutex<Vec<(std::time::Instant, u32)>>> = Arc::default();
    let log = starts.clone();
    queue.listen("sync-account", move |_: serde_json::Value, ctx| {
        let log = log.clone();
        async move {
            log.lock()
                .unwrap()
                .push((std::time::Instant::now(), ctx.attempt()));
            tokio::time::sleep(Duration::from_millis(1000)).await;
            Ok(())
        }
    });
    let key = unique("account-lock");
    for _ in 0..2 {
        queue
            .dispatch_named("sync-account", json!({}))
            .on_queue(q.as_str())
            .without_overlapping_key(key.clone())
            .release_after(Duration::from_millis(3000))
            .await
            .unwrap();
    }
    let summary = run_worker(&queue, test_options(&[&q]).concurrency(2).prefetch(0)).await;
    assert_eq!(summary.processed, 2, "{summary:?}");
    assert_eq!(
        summary.released, 1,
        "put back once, not every 50 ms: {summary:?}"
    );
    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 2);
    assert!(
        starts.iter().all(|(_, attempt)| *attempt == 1),
        "{starts:?}"
    );
    let gap = starts[1].0 - starts[0].0;
    if store.capabilities().park {
        // Parked on the key: woken by the first one's unlock, before its 3 s.
        assert!(
            gap >= Duration::from_millis(900) && gap < Duration::from_millis(2500),
            "the second started {gap:?} after the first: it waited for the key, not its \
             release_after"
        );
    } else {
        assert!(
            gap >= Duration::from_millis(2700),
            "the second started {gap:?} after the first: it waited its release_after"
        );
    }
}

/// A `without_overlapping` job whose key is busy waits for the key: on stores that park
/// jobs on a lock it goes back once and is woken by the holder's unlock (a few releases in
/// all, not one every `lock_retry`, and no lease-long wait); elsewhere it looks again every
/// `lock_retry`. Never two at once, no attempt counted either way.
pub async fn engine_without_overlapping_waits_for_the_key(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let (now, peak, seen) = (running.clone(), most.clone(), attempts.clone());
    queue.listen("sync-account", move |_: serde_json::Value, ctx| {
        let (now, peak, seen) = (now.clone(), peak.clone(), seen.clone());
        async move {
            let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(at_once, Ordering::SeqCst);
            seen.lock().unwrap().push(ctx.attempt());
            tokio::time::sleep(Duration::from_millis(200)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let key = unique("account");
    let jobs = 6;
    for _ in 0..jobs {
        queue
            .dispatch_named("sync-account", json!({}))
            .on_queue(q.as_str())
            .without_overlapping_key(key.clone())
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let summary = run_worker(&queue, test_options(&[&q]).concurrency(4)).await;
    let took = started.elapsed();
    assert_eq!(summary.processed, jobs, "{summary:?}");
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");
    let attempts = attempts.lock().unwrap().clone();
    assert!(attempts.iter().all(|a| *a == 1), "{attempts:?}");
    println!(
        "{}: {} releases for {jobs} jobs on one key in {took:?}",
        store.driver(),
        summary.released
    );
    if store.capabilities().park {
        // Each waiting job goes back about once (a woken one may meet a newcomer holding
        // the key and park again), against one every 50 ms (`lock_retry`) for the 1.2 s of
        // the run without parking.
        assert!(
            summary.released <= 2 * jobs,
            "parked, not polling: {summary:?}"
        );
        // Woken by the unlocks, not by their delay (the lease, 5 s).
        assert!(
            took < Duration::from_secs(4),
            "woken by the unlocks: {took:?} {summary:?}"
        );
    }
}
