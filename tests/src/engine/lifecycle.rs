//! Worker cases of stopping, leases and locks held across long jobs and outages, the restart
//! signal, and jobs this worker does not know.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use queue_core::storage::unix_millis;
use queue_core::{Error, Queue, StopReason, StorageExt};
use serde_json::json;

use super::{run_worker, test_options};
use crate::cases::failed_list;
use crate::fault::{Faulty, Renewals};
use crate::{job, unique, Store};

/// When each run of a job body started and ended (when it was dropped).
type Runs = Arc<Mutex<Vec<(Instant, Option<Instant>)>>>;

/// Sets a flag when dropped: tells a body that was aborted from one that returned.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Waits until `flag` is set, at most `limit`.
async fn until_set(flag: &AtomicBool, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !flag.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "waited {limit:?} in vain");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A worker with no stop condition stops when `runall restart` signals.
pub async fn engine_restart_signal(store: Store) {
    let Some(control) = store.capabilities().control else {
        println!(
            "engine_restart_signal: not applicable to the {} driver (no restart signal)",
            store.driver()
        );
        return;
    };
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let worker = queue.worker(test_options(&[&q]).stop_when_empty_off());
    let running = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!running.is_finished());
    control.request_restart().await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the worker noticed the restart signal within seconds")
        .unwrap()
        .unwrap();
    assert_eq!(summary.reason, StopReason::Restart);
}

/// A restart signal sent before the worker started, read only after its first reads failed,
/// does not stop it: the baseline is the first successful read. A later signal does.
pub async fn engine_restart_needs_a_first_reading(store: Store) {
    let Some(control) = store.capabilities().control else {
        println!(
            "engine_restart_needs_a_first_reading: not applicable to the {} driver (no restart signal)",
            store.driver()
        );
        return;
    };
    control.request_restart().await.unwrap();
    let faulty = Faulty::new(store.clone());
    faulty.control_failures.store(2, Ordering::SeqCst);
    let queue = Queue::from_arc(faulty.clone());
    let q = unique("q");
    let running = tokio::spawn(
        queue
            .worker(test_options(&[&q]).stop_when_empty_off())
            .run(),
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        !running.is_finished(),
        "the worker stopped on a signal older than itself"
    );
    assert_eq!(faulty.control_failures.load(Ordering::SeqCst), 0);
    control.request_restart().await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the worker noticed the new restart signal")
        .unwrap()
        .unwrap();
    assert_eq!(summary.reason, StopReason::Restart);
}

/// `--once` finishes its job however long it runs: the grace period is for signals only.
pub async fn engine_once_finishes_a_long_job(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    queue.listen("long", |_: serde_json::Value, _ctx| async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(())
    });
    queue
        .dispatch_named("long", json!({}))
        .on_queue(q.as_str())
        .await
        .unwrap();
    let summary = run_worker(
        &queue,
        test_options(&[&q])
            .stop_when_empty_off()
            .once()
            .grace(Duration::from_millis(200)),
    )
    .await;
    assert_eq!(summary.reason, StopReason::Once);
    assert_eq!(
        (summary.processed, summary.released),
        (1, 0),
        "finished, not cut at the grace period and put back"
    );
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
}

/// A job that outlives the grace of every shutdown (a worker restarted by its supervisor
/// again and again) uses up its tries and ends in the failed store instead of looping.
pub async fn engine_job_outliving_every_grace_ends_in_failed_store(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let signal = started.clone();
    queue.listen("endless", move |_: serde_json::Value, _ctx| {
        let started = signal.clone();
        async move {
            started.add_permits(1);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
    });
    queue
        .dispatch_named("endless", json!({}))
        .on_queue(q.as_str())
        .tries(2)
        .await
        .unwrap();
    for round in 1..=2 {
        let worker = queue.worker(
            test_options(&[&q])
                .stop_when_empty_off()
                .grace(Duration::from_millis(100)),
        );
        let stop = worker.stop_handle();
        let running = tokio::spawn(worker.run());
        let permit = tokio::time::timeout(Duration::from_secs(20), started.acquire())
            .await
            .unwrap_or_else(|_| panic!("round {round}: the job started"))
            .unwrap();
        permit.forget();
        stop.stop();
        let summary = tokio::time::timeout(Duration::from_secs(20), running)
            .await
            .expect("stopped after the grace period")
            .unwrap()
            .unwrap();
        assert_eq!(summary.released, 1, "round {round}: interrupted, put back");
    }
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(summary.failed, 1, "the third reservation ends it");
    let failed = failed_list(&store, 10).await;
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].error.contains("attempts exhausted"),
        "{}",
        failed[0].error
    );
    assert_eq!(started.available_permits(), 0, "it never ran a third time");
}

/// A job that runs several times longer than its lease keeps it (the heartbeat) and runs
/// once, though other slots and another worker keep asking for jobs.
pub async fn engine_job_outlives_its_lease(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    queue.listen("long", move |_: serde_json::Value, _ctx| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(3000)).await;
            Ok(())
        }
    });
    queue
        .dispatch_named("long", json!({}))
        .on_queue(q.as_str())
        .await
        .unwrap();
    let options = test_options(&[&q])
        .lease(Duration::from_millis(600))
        .concurrency(2);
    let other = tokio::spawn({
        let queue = queue.clone();
        let options = options.clone().max_time(Duration::from_millis(3500));
        async move { queue.worker(options).run().await }
    });
    let summary = run_worker(&queue, options).await;
    let other = other.await.unwrap().unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "never taken again while it ran"
    );
    assert_eq!(summary.processed + other.processed, 1);
    assert_eq!(summary.failed + other.failed, 0);
}

/// A job whose lease is reported lost is stopped at once: it must not run beside the
/// worker that has it now.
pub async fn engine_lost_lease_stops_the_job(store: Store) {
    let faulty = Faulty::new(store.clone());
    faulty.renewals(Renewals::Lost);
    let queue = Queue::from_arc(faulty.clone());
    let q = unique("q");
    let (dropped, finished) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (d, f) = (dropped.clone(), finished.clone());
    queue.listen("long", move |_: serde_json::Value, _ctx| {
        let (guard, finished) = (Dropped(d.clone()), f.clone());
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(30)).await;
            finished.store(true, Ordering::SeqCst);
            Ok(())
        }
    });
    queue
        .dispatch_named("long", json!({}))
        .on_queue(q.as_str())
        .await
        .unwrap();
    let began = Instant::now();
    let summary = run_worker(
        &queue,
        test_options(&[&q])
            .lease(Duration::from_millis(600))
            .max_jobs(1),
    )
    .await;
    assert!(dropped.load(Ordering::SeqCst), "the body was stopped");
    assert!(!finished.load(Ordering::SeqCst));
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "stopped at its first renewal, not at its end"
    );
    assert_eq!(
        (summary.processed, summary.interrupted, summary.failed),
        (0, 1, 0)
    );
    assert_eq!(
        store.inspect().unwrap().size(&q).await.unwrap().reserved,
        1,
        "nothing was settled with a lost lease: the job waits for its lease to run out"
    );
}

/// Across a backend outage longer than the lease, a worker that can no longer renew stops
/// its job before the lease and its lock run out, so another worker that takes the lock
/// afterwards never runs beside it.
pub async fn engine_outage_stops_the_job_before_its_lease_ends(store: Store) {
    let lease = Duration::from_millis(1000);
    let faulty = Faulty::new(store.clone());
    let cut_off = Queue::from_arc(faulty.clone());
    let healthy = Queue::from_arc(store.clone());
    let q = unique("q");
    let key = unique("report");
    let runs: Runs = Arc::default();
    let started = Arc::new(AtomicBool::new(false));
    for queue in [&cut_off, &healthy] {
        let (runs, started) = (runs.clone(), started.clone());
        queue.listen("report", move |_: serde_json::Value, _ctx| {
            let (runs, started) = (runs.clone(), started.clone());
            async move {
                struct Ended(Runs, usize);
                impl Drop for Ended {
                    fn drop(&mut self) {
                        self.0.lock().unwrap()[self.1].1 = Some(Instant::now());
                    }
                }
                let index = {
                    let mut runs = runs.lock().unwrap();
                    runs.push((Instant::now(), None));
                    runs.len() - 1
                };
                let _ended = Ended(runs, index);
                started.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2500)).await;
                Ok(())
            }
        });
    }
    cut_off
        .dispatch_named("report", json!({"n": 1}))
        .on_queue(q.as_str())
        .without_overlapping_key(key.clone())
        .await
        .unwrap();
    let first = tokio::spawn({
        let cut_off = cut_off.clone();
        let options = test_options(&[&q]).lease(lease).max_jobs(1);
        async move { cut_off.worker(options).run().await }
    });
    until_set(&started, Duration::from_secs(20)).await;
    // The backend becomes unreachable for this worker only.
    faulty.renewals(Renewals::Fail);
    faulty.locks_fail.store(true, Ordering::SeqCst);
    healthy
        .dispatch_named("report", json!({"n": 2}))
        .on_queue(q.as_str())
        .without_overlapping_key(key.clone())
        .await
        .unwrap();
    let second = run_worker(&healthy, test_options(&[&q]).lease(lease)).await;
    let first = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("the cut-off worker stopped")
        .unwrap()
        .unwrap();
    assert_eq!(first.interrupted, 1, "the cut-off worker stopped its job");
    assert!(second.processed >= 1);
    let runs = runs.lock().unwrap().clone();
    assert!(runs.len() >= 2, "{runs:?}");
    let mut spans: Vec<(Instant, Instant)> = runs
        .iter()
        .map(|(start, end)| (*start, end.expect("every run ended")))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two bodies of one lock key overlapped by {:?}",
            pair[0].1 - pair[1].0
        );
    }
}

/// A job of a name this worker does not know, or in a newer envelope, goes back for a worker
/// that knows it (a rolling deploy) while it is young, with no attempt spent, and to the
/// failed store once it is older than the window.
pub async fn engine_unknown_jobs_wait_for_a_worker_that_knows_them(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let now = unix_millis(SystemTime::now());
    let old = now - 2 * 3600 * 1000;
    let unknown = |at: i64| {
        format!(r#"{{"v":1,"name":"from-the-new-build","data":{{}},"dispatched_at":{at}}}"#)
    };
    let newer =
        |at: i64| format!(r#"{{"v":99,"name":"reshaped","body":[1,2],"dispatched_at":{at}}}"#);
    store
        .push(vec![
            job(&q, "from-the-new-build", unknown(now).as_bytes()),
            job(&q, "reshaped", newer(now).as_bytes()),
            job(&q, "from-the-new-build", unknown(old).as_bytes()),
            job(&q, "reshaped", newer(old).as_bytes()),
        ])
        .await
        .unwrap();
    let summary = run_worker(
        &queue,
        test_options(&[&q])
            .stop_when_empty_off()
            .max_time(Duration::from_millis(1500)),
    )
    .await;
    assert_eq!((summary.released, summary.failed), (2, 2));
    let size = store.inspect().unwrap().size(&q).await.unwrap();
    assert_eq!((size.delayed, size.reserved), (2, 0), "the young ones wait");
    let failed = failed_list(&store, 10).await;
    assert_eq!(failed.len(), 2);
    assert!(failed
        .iter()
        .all(|f| f.attempts == 1 && f.error.contains("none took it")));
    assert!(failed
        .iter()
        .any(|f| f.error.contains("unknown job name `from-the-new-build`")));
    assert!(failed
        .iter()
        .any(|f| f.error.contains("envelope version 99")));
}

/// `runall run NAME` runs only that name where the driver can reserve by name, and is
/// refused at start (not looped on) where it cannot.
pub async fn engine_run_one_name(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    for name in ["wanted", "other"] {
        queue.listen(name, |_: serde_json::Value, _ctx| async move { Ok(()) });
        queue
            .dispatch_named(name, json!({}))
            .on_queue(q.as_str())
            .await
            .unwrap();
    }
    let options = test_options(&[&q]).only("wanted");
    if !store.capabilities().reserve_by_name {
        let err = tokio::time::timeout(Duration::from_secs(10), queue.worker(options).run())
            .await
            .expect("refused at once")
            .unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err}");
        assert!(err.to_string().contains("runall run NAME"), "{err}");
        return;
    }
    let summary = run_worker(&queue, options).await;
    assert_eq!(summary.processed, 1);
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().waiting, 1);
}
