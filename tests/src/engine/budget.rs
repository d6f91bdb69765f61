//! The attempt budget as Laravel users know it: `retry_until` (no retry past a deadline from
//! the dispatch) and `fail_on_timeout` (a timed-out attempt is not retried).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use queue_core::{JobError, Queue};
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
