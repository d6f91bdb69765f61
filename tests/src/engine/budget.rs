//! The attempt budget as Laravel users know it: `retry_until` (no retry past a deadline from
//! the dispatch) and `fail_on_timeout` (a timed-out attempt is not retried).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use queue_core::{JobError, Queue, StorageExt};
use serde_json::json;

use super::{run_worker, test_options};
use crate::cases::failed_list;
use crate::{unique, Store};

/// A job that always fails, with 50 tries and `retry_until` of 400 ms (backoff 100 ms),
/// fails for good after a few attempts, saying why; a job that times out with
/// `fail_on_timeout` fails at its first attempt.
pub async fn engine_attempt_budget(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let tried = Arc::new(AtomicU32::new(0));
    {
        let tried = tried.clone();
        queue.listen("always-fails", move |_: u32, _ctx| {
            let tried = tried.clone();
            async move {
                tried.fetch_add(1, Ordering::SeqCst);
                Err(JobError::msg("the partner is down"))
            }
        });
    }
    queue.listen("too-slow", |_: u32, _ctx| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(())
    });
    queue
        .dispatch_named("always-fails", json!(1))
        .on_queue(q.as_str())
        .tries(50)
        .retry_until(Duration::from_millis(400))
        .await
        .unwrap();
    queue
        .dispatch_named("too-slow", json!(1))
        .on_queue(q.as_str())
        .tries(3)
        .timeout(Duration::from_millis(100))
        .fail_on_timeout()
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q]).concurrency(2)).await;
    assert_eq!(summary.failed, 2, "{summary:?}");
    let tries = tried.load(Ordering::SeqCst);
    // About 4 in 400 ms of 100 ms backoff; 1 if the worker took 400 ms to start (a loaded
    // machine); never all 50.
    assert!(
        (1..=8).contains(&tries),
        "{tries} attempts in 400 ms of 100 ms backoff"
    );
    let failed: Vec<_> = failed_list(&store, 1000)
        .await
        .into_iter()
        .filter(|f| f.queue == q)
        .collect();
    let of = |name: &str| failed.iter().find(|f| f.name == name).unwrap();
    let deadline = of("always-fails");
    assert!(
        deadline.error.contains("past its retry_until"),
        "{}",
        deadline.error
    );
    assert_eq!(deadline.attempts, tries);
    let slow = of("too-slow");
    assert!(slow.error.contains("fail_on_timeout"), "{}", slow.error);
    assert_eq!(slow.attempts, 1);
}

/// `max_exceptions`: a job with 20 tries and `max_exceptions(3)` that releases itself twice
/// (each release counts an attempt, not an error) and then fails every time fails for good
/// at its fifth attempt, its third error, saying why; one with `max_exceptions(2)` that
/// fails once and then succeeds succeeds, and the count of its errors is gone. On a store
/// without group counters the dispatch is refused, naming the driver.
pub async fn engine_max_exceptions(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    if store.capabilities().groups.is_none() {
        let err = queue
            .dispatch_named("counted", json!(1))
            .on_queue(q.as_str())
            .max_exceptions(3)
            .await
            .unwrap_err();
        assert!(
            matches!(err, queue_core::Error::NotSupported { .. })
                && err.to_string().contains("max_exceptions"),
            "{err}"
        );
        println!(
            "engine_max_exceptions: refused on the {} driver (no group counters)",
            store.driver()
        );
        return;
    }
    let runs = Arc::new(AtomicU32::new(0));
    {
        let runs = runs.clone();
        queue.listen("counted", move |_: u32, ctx| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                if ctx.attempt() <= 2 {
                    ctx.release(Duration::from_millis(10));
                    return Ok(());
                }
                Err(JobError::retry_after(
                    Duration::from_millis(10),
                    "the partner is down",
                ))
            }
        });
    }
    queue.listen("recovers", |_: u32, ctx| async move {
        if ctx.attempt() == 1 {
            return Err(JobError::retry_after(Duration::from_millis(10), "a blip"));
        }
        Ok(())
    });
    queue
        .dispatch_named("counted", json!(1))
        .on_queue(q.as_str())
        .tries(20)
        .max_exceptions(3)
        .await
        .unwrap();
    let recovers = queue
        .dispatch_named("recovers", json!(1))
        .on_queue(q.as_str())
        .tries(20)
        .max_exceptions(2)
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!((summary.processed, summary.failed), (1, 1), "{summary:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 5, "2 releases and 3 errors");
    let failed: Vec<_> = failed_list(&store, 1000)
        .await
        .into_iter()
        .filter(|f| f.queue == q)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempts, 5);
    assert!(
        failed[0].error.contains("error 3 of its max_exceptions 3"),
        "{}",
        failed[0].error
    );
    let groups = store.groups().unwrap();
    let left = groups
        .counters(&format!("errors:{}", recovers.id()))
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "the count of its errors was left: {left:?}"
    );
    let left = groups
        .list("errors:", queue_core::storage::PageRequest::first(1000))
        .await
        .unwrap();
    assert!(
        left.items
            .iter()
            .all(|g| g != &format!("errors:{}", failed[0].job_id)),
        "the failed job's count was left: {left:?}"
    );
}
