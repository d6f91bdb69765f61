//! Chains run by the worker: links in order, each released by the step that acknowledges the
//! one before; a failure skips the rest and releases `catch`; `finally` runs either way; the
//! counts are of links, never of attempts. Workflows: nodes run once the nodes before them
//! ended and their edges are met, and are skipped when one is not. Batches: callbacks once,
//! failing fast, cancelling, counts of members.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use queue_core::{Batch, Chain, ChainStatus, Error, JobError, Queue, StorageExt, Workflow};
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

fn pos(ran: &[String], name: &str) -> usize {
    ran.iter()
        .position(|s| s == name)
        .unwrap_or_else(|| panic!("{name} did not run: {ran:?}"))
}

/// A diamond with a compensation and a `finally`: every node runs once its nodes before it
/// ended, the compensation is skipped because nothing failed, and the counts are of nodes.
pub async fn engine_workflow_runs_a_diamond(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let log = steps(&queue);
    let wf = Workflow::new();
    let a = wf.add("a", step(&queue, &q, "a"));
    let b = wf.add("b", step(&queue, &q, "b")).after(&a);
    let c = wf.add("c", step(&queue, &q, "c")).after(&a);
    wf.add("d", step(&queue, &q, "d")).after_all([&b, &c]);
    wf.add("refund", step(&queue, &q, "refund"))
        .on_failure_of(&b);
    wf.add("audit", step(&queue, &q, "audit"))
        .on_complete_of_all([&b, &c]);
    let id = wf.via(&queue).dispatch().await;
    if store.capabilities().groups.is_none() {
        let err = id.unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        assert!(err.to_string().contains("workflows"), "{err}");
        return;
    }
    let id = id.unwrap();
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 1);
    run_worker(&queue, test_options(&[&q])).await;
    let ran = log.lock().unwrap().clone();
    assert_eq!(ran.len(), 5, "{ran:?}");
    assert_eq!(ran[0], "a");
    for (before, after) in [("b", "d"), ("c", "d"), ("b", "audit"), ("c", "audit")] {
        assert!(
            pos(&ran, before) < pos(&ran, after),
            "{before} before {after}: {ran:?}"
        );
    }
    assert!(!ran.contains(&"refund".to_owned()), "{ran:?}");
    let status = Workflow::status(&queue, &id).await.unwrap();
    assert_eq!(
        (
            status.nodes,
            status.succeeded,
            status.failed,
            status.skipped
        ),
        (6, 5, 0, 1),
        "{status:?}"
    );
    assert!(status.is_finished());
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
}

/// A node that fails for good: the nodes that needed its success are skipped, and so are
/// theirs; its compensation runs; `finally` nodes run, also after a skipped node.
pub async fn engine_workflow_failure_skips_and_compensates(store: Store) {
    if store.capabilities().groups.is_none() {
        println!(
            "engine_workflow_failure_skips_and_compensates: not applicable to the {} driver (no waiting jobs)",
            store.driver()
        );
        return;
    }
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let log = steps(&queue);
    let wf = Workflow::new();
    let a = wf.add("a", step(&queue, &q, "a"));
    let b = wf
        .add(
            "b",
            queue
                .dispatch_named("step", json!({ "s": "b", "fail": true }))
                .on_queue(q.as_str()),
        )
        .after(&a);
    let c = wf.add("c", step(&queue, &q, "c")).after(&a);
    let d = wf.add("d", step(&queue, &q, "d")).after_all([&b, &c]);
    wf.add("e", step(&queue, &q, "e")).after(&d);
    wf.add("f", step(&queue, &q, "f")).on_complete_of(&d);
    wf.add("refund", step(&queue, &q, "refund"))
        .on_failure_of(&b);
    wf.add("audit", step(&queue, &q, "audit"))
        .on_complete_of_all([&b, &c]);
    let id = wf.via(&queue).dispatch().await.unwrap();
    let summary = run_worker(&queue, test_options(&[&q])).await;
    let ran = log.lock().unwrap().clone();
    let mut sorted = ran.clone();
    sorted.sort();
    assert_eq!(sorted, ["a", "audit", "c", "f", "refund"], "{ran:?}");
    assert_eq!(summary.failed, 1);
    let failed = failed_list(&store, 5).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].error, "b cannot succeed");
    let status = Workflow::status(&queue, &id).await.unwrap();
    assert_eq!(
        (
            status.nodes,
            status.succeeded,
            status.failed,
            status.skipped
        ),
        (8, 5, 1, 2),
        "{status:?}"
    );
    assert!(status.is_finished());
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
}

/// Cycles, duplicate names and empty workflows are refused at dispatch; nothing is stored.
pub async fn engine_workflow_refuses_bad_graphs(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let cycle = Workflow::new();
    let a = cycle.add("a", step(&queue, &q, "a"));
    let b = cycle.add("b", step(&queue, &q, "b")).after(&a);
    let _ = a.after(&b);
    let err = cycle.via(&queue).dispatch().await.unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    let twice = Workflow::new();
    twice.add("a", step(&queue, &q, "a"));
    twice.add("a", step(&queue, &q, "a"));
    let err = twice.via(&queue).dispatch().await.unwrap_err();
    assert!(err.to_string().contains("two nodes are named `a`"), "{err}");
    let err = Workflow::new().via(&queue).dispatch().await.unwrap_err();
    assert!(err.to_string().contains("at least one node"), "{err}");
    let other = Workflow::new();
    let foreign = other.add("x", step(&queue, &q, "x"));
    let mixed = Workflow::new();
    mixed.add("y", step(&queue, &q, "y")).after(&foreign);
    let err = mixed.via(&queue).dispatch().await.unwrap_err();
    assert!(err.to_string().contains("another workflow"), "{err}");
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
}

fn member(queue: &Queue, q: &str, s: &str, fail: bool) -> queue_core::PendingDispatch {
    queue
        .dispatch_named("step", json!({ "s": s, "fail": fail }))
        .on_queue(q)
}

fn batch_status_tuple(s: &queue_core::BatchStatus) -> (u64, u64, u64, u64, u64) {
    (s.total, s.pending, s.succeeded, s.failed, s.cancelled)
}

/// Every member succeeds, one after a failed attempt: `then` and `finally` run once,
/// `catch` never; the counts are of members, never of attempts.
pub async fn engine_batch_then_and_finally(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let log = steps(&queue);
    let batch = Batch::new()
        .add_many((0..5).map(|i| step(&queue, &q, &format!("m{i}"))))
        .add(
            queue
                .dispatch_named("step", json!({ "s": "flaky", "flaky": true }))
                .on_queue(q.as_str())
                .tries(3),
        )
        .then(step(&queue, &q, "then"))
        .catch(step(&queue, &q, "catch"))
        .finally(step(&queue, &q, "finally"))
        .via(&queue)
        .dispatch()
        .await;
    if store.capabilities().groups.is_none() {
        let err = batch.unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        assert!(err.to_string().contains("batches"), "{err}");
        assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
        return;
    }
    let batch = batch.unwrap();
    let status = Batch::status(&queue, &batch).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (6, 6, 0, 0, 0));
    assert_eq!(status.percent(), 0.0);
    run_worker(&queue, test_options(&[&q])).await;
    let ran = log.lock().unwrap().clone();
    assert_eq!(ran.len(), 8, "six members, then and finally: {ran:?}");
    assert!(!ran.contains(&"catch".to_owned()), "{ran:?}");
    for callback in ["then", "finally"] {
        for m in ["m0", "m1", "m2", "m3", "m4", "flaky"] {
            assert!(
                pos(&ran, m) < pos(&ran, callback),
                "{m} before {callback}: {ran:?}"
            );
        }
    }
    let status = Batch::status(&queue, &batch).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (6, 0, 6, 0, 0));
    assert!(status.is_finished() && !status.is_cancelled);
    assert_eq!(status.percent(), 100.0);
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
}

/// Failing fast (the default): at the first failure `catch` runs, the members not started
/// are cancelled without running, `then` is skipped and `finally` runs once all have ended.
/// With `allow_failures` every member runs and `catch` still runs once.
pub async fn engine_batch_failures(store: Store) {
    if store.capabilities().groups.is_none() {
        println!(
            "engine_batch_failures: not applicable to the {} driver (no groups)",
            store.driver()
        );
        return;
    }
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let log = steps(&queue);
    // Concurrency 1: the members start in order, so which ones were cancelled is known.
    let fast = Batch::new()
        .add(member(&queue, &q, "m0", false))
        .add(member(&queue, &q, "m1", true))
        .add_many((2..6).map(|i| member(&queue, &q, &format!("m{i}"), false)))
        .then(step(&queue, &q, "then"))
        .catch(step(&queue, &q, "catch"))
        .finally(step(&queue, &q, "finally"))
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    run_worker(&queue, test_options(&[&q]).concurrency(1)).await;
    let ran = log.lock().unwrap().clone();
    let mut sorted = ran.clone();
    sorted.sort();
    assert_eq!(sorted, ["catch", "finally", "m0"], "{ran:?}");
    let status = Batch::status(&queue, &fast).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (6, 0, 1, 1, 4));
    assert!(status.is_finished() && status.is_cancelled);

    log.lock().unwrap().clear();
    let lenient = Batch::new()
        .add(member(&queue, &q, "a0", true))
        .add(member(&queue, &q, "a1", false))
        .add(member(&queue, &q, "a2", true))
        .add(member(&queue, &q, "a3", false))
        .then(step(&queue, &q, "then"))
        .catch(step(&queue, &q, "catch"))
        .finally(step(&queue, &q, "finally"))
        .allow_failures()
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    run_worker(&queue, test_options(&[&q])).await;
    let mut ran = log.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["a1", "a3", "catch", "finally"]);
    let status = Batch::status(&queue, &lenient).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (4, 0, 2, 2, 0));
    assert!(status.is_finished() && !status.is_cancelled);
    assert_eq!(failed_list(&store, 10).await.len(), 3);
}

/// A batch cancelled before any member ran: none runs, each is counted cancelled, `then`
/// and `catch` are skipped and `finally` runs.
pub async fn engine_batch_cancel(store: Store) {
    if store.capabilities().groups.is_none() {
        println!(
            "engine_batch_cancel: not applicable to the {} driver (no groups)",
            store.driver()
        );
        return;
    }
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let log = steps(&queue);
    let batch = Batch::new()
        .add_many((0..4).map(|i| step(&queue, &q, &format!("m{i}"))))
        .then(step(&queue, &q, "then"))
        .catch(step(&queue, &q, "catch"))
        .finally(step(&queue, &q, "finally"))
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    Batch::cancel(&queue, &batch).await.unwrap();
    run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(*log.lock().unwrap(), ["finally"]);
    let status = Batch::status(&queue, &batch).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (4, 0, 0, 0, 4));
    assert!(status.is_finished() && status.is_cancelled);
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
}

/// A batch made open and filled in chunks cannot finish, nor run `then` or `finally`, before
/// it is sealed, even once every member added so far has ended; an empty sealed batch
/// finishes at once; members cannot be added to a cancelled batch.
pub async fn engine_batch_open_in_chunks(store: Store) {
    if store.capabilities().groups.is_none() {
        println!(
            "engine_batch_open_in_chunks: not applicable to the {} driver (no groups)",
            store.driver()
        );
        return;
    }
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let log = steps(&queue);
    let mut open = Batch::new()
        .add(step(&queue, &q, "m0"))
        .then(step(&queue, &q, "then"))
        .catch(step(&queue, &q, "catch"))
        .finally(step(&queue, &q, "finally"))
        .via(&queue)
        .open()
        .await
        .unwrap();
    open.add_many((1..4).map(|i| step(&queue, &q, &format!("m{i}"))))
        .await
        .unwrap();
    open.add(step(&queue, &q, "m4")).await.unwrap();
    let id = open.id().clone();
    run_worker(&queue, test_options(&[&q])).await;
    let status = Batch::status(&queue, &id).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (5, 0, 5, 0, 0));
    assert!(!status.is_sealed && !status.is_finished(), "{status:?}");
    assert_eq!(log.lock().unwrap().len(), 5, "no callback before the seal");
    assert_eq!(open.seal().await.unwrap(), id);
    run_worker(&queue, test_options(&[&q])).await;
    let mut ran = log.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["finally", "m0", "m1", "m2", "m3", "m4", "then"]);
    let status = Batch::status(&queue, &id).await.unwrap();
    assert!(status.is_sealed && status.is_finished(), "{status:?}");
    assert_eq!(status.percent(), 100.0);

    // Empty: then and finally at once.
    log.lock().unwrap().clear();
    let empty = Batch::new()
        .then(step(&queue, &q, "then"))
        .catch(step(&queue, &q, "catch"))
        .finally(step(&queue, &q, "finally"))
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    run_worker(&queue, test_options(&[&q])).await;
    let mut ran = log.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["finally", "then"]);
    let status = Batch::status(&queue, &empty).await.unwrap();
    assert!(status.is_finished() && status.total == 0, "{status:?}");

    // Cancelled: adding is refused, nothing is stored.
    let mut open = Batch::new().via(&queue).open().await.unwrap();
    Batch::cancel(&queue, open.id()).await.unwrap();
    let err = open.add(step(&queue, &q, "late")).await.unwrap_err();
    assert!(err.to_string().contains("is cancelled"), "{err}");
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
    let err = Batch::status(&queue, &queue_core::BatchId("nosuch".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}
