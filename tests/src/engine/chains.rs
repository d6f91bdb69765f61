//! Chains run by the worker: links in order, each released by the step that acknowledges the
//! one before; a failure skips the rest and releases `catch`; `finally` runs either way; the
//! counts are of links, never of attempts.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use queue_core::{Chain, ChainStatus, Error, JobError, Queue, StorageExt};
use serde_json::json;

use super::{run_worker, test_options};
use crate::cases::failed_list;
use crate::{unique, Store};

type Log = Arc<Mutex<Vec<String>>>;

/// One listener, `step`, logging its payload's `s`; it fails for good when `fail` is set and
/// fails its first attempt when `flaky` is.
fn steps(queue: &Queue) -> Log {
    let log: Log = Arc::default();
    let sink = log.clone();
    queue.listen("step", move |payload: serde_json::Value, ctx| {
        let sink = sink.clone();
        async move {
            let s = payload["s"].as_str().unwrap_or_default().to_owned();
            if payload["fail"].as_bool() == Some(true) {
                return Err(JobError::fail(format!("{s} cannot succeed")));
            }
            if payload["flaky"].as_bool() == Some(true) && ctx.attempt() == 1 {
                return Err(JobError::msg(format!("{s}: first attempt fails")));
            }
            sink.lock().unwrap().push(s);
            Ok(())
        }
    });
    log
}

fn step(queue: &Queue, q: &str, s: &str) -> queue_core::PendingDispatch {
    queue.dispatch_named("step", json!({ "s": s })).on_queue(q)
}

/// A chain of three whose second link fails once: every link runs once, in order, then
/// `finally`; `catch` never runs; the counts are of links.
pub async fn engine_chain_runs_links_in_order(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let log = steps(&queue);
    let chain = Chain::new()
        .then(step(&queue, &q, "a"))
        .then(
            queue
                .dispatch_named("step", json!({ "s": "b", "flaky": true }))
                .on_queue(q.as_str())
                .tries(3),
        )
        .then(step(&queue, &q, "c"))
        .catch(step(&queue, &q, "catch"))
        .finally(step(&queue, &q, "finally"))
        .via(&queue)
        .dispatch()
        .await;
    if store.capabilities().groups.is_none() {
        let err = chain.unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        assert!(err.to_string().contains("chains"), "{err}");
        assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
        return;
    }
    let chain = chain.unwrap();
    assert_eq!(
        store.inspect().unwrap().size(&q).await.unwrap().total(),
        1,
        "only the first link is in its queue"
    );
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(*log.lock().unwrap(), ["a", "b", "c", "finally"]);
    assert_eq!(
        (summary.processed, summary.retried, summary.failed),
        (4, 1, 0)
    );
    let status = Chain::status(&queue, &chain).await.unwrap();
    assert_eq!(
        (
            status.links,
            status.succeeded,
            status.failed,
            status.skipped
        ),
        (3, 3, 0, 0),
        "{status:?}"
    );
    assert!(status.is_finished());
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
}

/// A link that fails for good skips the links after it and releases `catch` and `finally`,
/// in the step that moves it to the failed store.
pub async fn engine_chain_failure_skips_the_rest(store: Store) {
    if store.capabilities().groups.is_none() {
        println!(
            "engine_chain_failure_skips_the_rest: not applicable to the {} driver (no waiting jobs)",
            store.driver()
        );
        return;
    }
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let log = steps(&queue);
    let chain = Chain::new()
        .then(step(&queue, &q, "a"))
        .then(
            queue
                .dispatch_named("step", json!({ "s": "b", "fail": true }))
                .on_queue(q.as_str()),
        )
        .then(step(&queue, &q, "c"))
        .then(step(&queue, &q, "d"))
        .catch(step(&queue, &q, "catch"))
        .finally(step(&queue, &q, "finally"))
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q])).await;
    let ran = log.lock().unwrap().clone();
    assert_eq!(ran[0], "a");
    // catch and finally are released by the same step: either may start first.
    let tail: BTreeSet<&str> = ran[1..].iter().map(String::as_str).collect();
    assert_eq!(tail, BTreeSet::from(["catch", "finally"]), "{ran:?}");
    assert_eq!(ran.len(), 3, "c and d never ran: {ran:?}");
    assert_eq!((summary.processed, summary.failed), (3, 1));
    let failed = failed_list(&store, 5).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].error, "b cannot succeed");
    let status: ChainStatus = Chain::status(&queue, &chain).await.unwrap();
    assert_eq!(
        (
            status.links,
            status.succeeded,
            status.failed,
            status.skipped
        ),
        (4, 1, 1, 2),
        "{status:?}"
    );
    assert!(status.is_finished());
}
