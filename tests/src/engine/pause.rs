//! Pausing queues: for every worker of a store (`Queue::pause`, `runall pause`), honoured by
//! reservation (the jobs stay queued, in order, no attempt spent), picked up by running
//! workers within about a second; and one worker's own pause (`PauseHandle`).

use std::time::{Duration, Instant};

use queue_core::storage::{JobState, PageRequest};
use queue_core::{Error, Queue, StorageExt};
use serde_json::json;

use super::{recorder, run_worker, test_options};
use crate::{unique, Store};

/// A paused queue's jobs are not reserved (a worker of two queues runs the other one's
/// and, with `stop_when_empty`, does not wait for them); resumed, they run in order, each
/// at its first attempt; a running worker sees a resume within about a second; a worker's
/// own pause stops its reservations.
pub async fn engine_paused_queues(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let (held, open) = (unique("held"), unique("open"));
    if store.capabilities().groups.is_none() {
        let err = queue.pause(&held).await.unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        println!(
            "engine_paused_queues: not applicable to the {} driver (no group counters)",
            store.driver()
        );
        return;
    }
    let log = recorder(&queue, "p");
    for (q, tag) in [(&held, "h1"), (&open, "o1"), (&held, "h2"), (&held, "h3")] {
        queue
            .dispatch_named("p", json!(tag))
            .on_queue(q.as_str())
            .await
            .unwrap();
    }
    assert!(queue.pause(&held).await.unwrap());
    assert!(!queue.pause(&held).await.unwrap(), "paused already");
    assert!(queue.paused().await.unwrap().contains(&held));

    let summary = run_worker(&queue, test_options(&[&held, &open])).await;
    assert_eq!(summary.processed, 1, "{summary:?}");
    assert_eq!(*log.lock().unwrap(), ["o1"]);
    if let Ok(inspect) = store.inspect() {
        let waiting = inspect
            .jobs(&held, JobState::Waiting, PageRequest::first(10))
            .await
            .unwrap();
        assert_eq!(waiting.items.len(), 3);
        assert!(waiting.items.iter().all(|j| j.attempts == 0), "{waiting:?}");
    }

    // A running worker: the queue resumed while it runs.
    let resumer = {
        let queue = queue.clone();
        let held = held.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(queue.resume(&held).await.unwrap());
            Instant::now()
        }
    };
    let options = test_options(&[&held])
        .stop_when_empty_off()
        .max_time(Duration::from_secs(3));
    let worker = queue.worker(options);
    let (summary, resumed) = tokio::join!(worker.run(), resumer);
    let summary = summary.unwrap();
    assert_eq!(summary.processed, 3, "{summary:?}");
    assert_eq!(*log.lock().unwrap(), ["o1", "h1", "h2", "h3"], "in order");
    assert!(resumed.elapsed() < Duration::from_secs(3));
    assert!(!queue.resume(&held).await.unwrap(), "not paused");

    // One worker's own pause: it takes nothing until resumed.
    queue
        .dispatch_named("p", json!("o2"))
        .on_queue(open.as_str())
        .await
        .unwrap();
    let worker = queue.worker(
        test_options(&[&open])
            .stop_when_empty_off()
            .max_time(Duration::from_secs(2)),
    );
    let handle = worker.pause_handle();
    handle.pause();
    let run = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(log.lock().unwrap().len(), 4, "nothing taken while paused");
    handle.resume();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.processed, 1, "{summary:?}");
    assert_eq!(log.lock().unwrap().last().map(String::as_str), Some("o2"));
}
