//! The worker registry seen from the engine: a running worker lists itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_core::worker::BEAT_EVERY;
use queue_core::{Error, Queue, StorageExt, WorkerInfo};
use serde_json::json;

use super::{run_worker, test_options};
use crate::fault::{Beats, Faulty};
use crate::{unique, Store};

/// The entry of the worker taking jobs from `q`, if one is listed.
async fn entry(queue: &Queue, q: &str) -> Option<WorkerInfo> {
    queue
        .workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.queues == [q])
}

/// A running worker is listed with its queues and slots as soon as it starts, counts a job
/// it runs as busy at a later beat, and is gone once it stopped gracefully.
pub async fn engine_worker_lists_itself(store: Store) {
    let queue = Queue::from_arc(store.clone());
    if store.capabilities().workers.is_none() {
        assert!(matches!(
            queue.workers().await,
            Err(Error::NotSupported { .. })
        ));
        println!(
            "engine_worker_lists_itself: not applicable to the {} driver (no worker registry)",
            store.driver()
        );
        return;
    }
    let q = unique("q");
    let release = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (go, seen) = (release.clone(), started.clone());
    queue.listen("hold", move |_: serde_json::Value, _ctx| {
        let (go, seen) = (go.clone(), seen.clone());
        async move {
            seen.store(true, Ordering::SeqCst);
            while !go.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        }
    });
    let worker = queue.worker(test_options(&[&q]).stop_when_empty_off().concurrency(3));
    let stop = worker.stop_handle();
    let running = tokio::spawn(worker.run());

    // Listed at once (its first beat is when it starts), idle.
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(info) = entry(&queue, &q).await {
            break info;
        }
        assert!(Instant::now() < deadline, "the worker did not list itself");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first.slots, 3);
    assert_eq!(first.pid, std::process::id());
    assert!(!first.host.is_empty());
    assert!(!first.version.is_empty());
    assert!(first.beat_age() < BEAT_EVERY * 2);

    // A job running: busy at the next beat, with the job listed.
    let id = queue
        .dispatch_named("hold", json!(null))
        .on_queue(q.as_str())
        .await
        .unwrap()
        .into_id();
    let deadline = Instant::now() + BEAT_EVERY * 3;
    let busy = loop {
        let info = entry(&queue, &q).await.expect("still listed");
        if info.busy > 0 {
            break info;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never beat as busy (job started: {})",
            started.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(busy.id, first.id);
    assert_eq!(busy.busy, 1);
    assert_eq!(busy.running.len(), 1);
    assert_eq!(
        (busy.running[0].id.as_str(), busy.running[0].name.as_str()),
        (id.0.as_str(), "hold")
    );
    assert_eq!(busy.running[0].queue, q);
    assert!(busy.beat_at >= first.beat_at);

    // A graceful stop removes the entry.
    release.store(true, Ordering::SeqCst);
    stop.stop();
    let summary = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the worker stopped")
        .unwrap()
        .unwrap();
    assert_eq!(summary.processed, 1);
    assert!(
        entry(&queue, &q).await.is_none(),
        "a worker that stopped is not listed"
    );
}

/// Beats that fail, or that never answer, neither stop nor slow a worker: it runs its jobs
/// and stops as it would (a stuck removal of its entry holds its stop up two seconds at
/// most).
pub async fn engine_worker_registry_failures_do_not_stop_the_worker(store: Store) {
    if store.capabilities().workers.is_none() {
        println!(
            "engine_worker_registry_failures_do_not_stop_the_worker: not applicable to the {} \
             driver (no worker registry)",
            store.driver()
        );
        return;
    }
    for beats in [Beats::Fail, Beats::Hang] {
        let faulty = Faulty::new(store.clone());
        faulty.beats(beats);
        let queue = Queue::from_arc(faulty.clone());
        let q = unique("q");
        queue.listen("quick", |_: serde_json::Value, _ctx| async { Ok(()) });
        for _ in 0..20 {
            queue
                .dispatch_named("quick", json!(null))
                .on_queue(q.as_str())
                .await
                .unwrap();
        }
        let started = Instant::now();
        let summary = run_worker(&queue, test_options(&[&q]).concurrency(4)).await;
        assert_eq!(summary.processed, 20, "{beats:?}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{beats:?}: took {:?}",
            started.elapsed()
        );
        assert!(faulty.beat_calls.load(Ordering::SeqCst) >= 1, "{beats:?}");
        assert!(
            entry(&queue, &q).await.is_none(),
            "{beats:?}: never written"
        );
    }
}
