//! Chains run by the worker: links in order, each released by the step that acknowledges the
//! one before; a failure skips the rest and releases `catch`; `finally` runs either way; the
//! counts are of links, never of attempts. Workflows: nodes run once the nodes before them
//! ended and their edges are met, and are skipped when one is not.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use queue_core::{Chain, ChainStatus, Error, JobError, Queue, StorageExt, Workflow};
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
