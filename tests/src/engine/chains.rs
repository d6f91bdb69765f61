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
use crate::cases::{failed_list, LONG};
use crate::{request, unique, Store};

type Log = Arc<Mutex<Vec<String>>>;

/// Whether `store` has no groups, so `case` does not apply (said so, as every case does).
fn without_groups(case: &str, store: &Store) -> bool {
    let without = store.capabilities().groups.is_none();
    if without {
        println!(
            "{case}: not applicable to the {} driver (no groups)",
            store.driver()
        );
    }
    without
}

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
    if without_groups("engine_batch_failures", &store) {
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
    if without_groups("engine_batch_cancel", &store) {
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
    // Every member waits in its queue: each is removed and counted cancelled by the cancel
    // itself, and `finally` is released with no worker running.
    let removed = Batch::cancel(&queue, &batch).await.unwrap();
    let status = Batch::status(&queue, &batch).await.unwrap();
    if store.capabilities().track.is_some() && store.inspect().is_ok() {
        assert_eq!(removed, 4);
        assert_eq!(batch_status_tuple(&status), (4, 0, 0, 0, 4));
        assert!(status.is_finished() && status.is_cancelled, "{status:?}");
        let size = store.inspect().unwrap().size(&q).await.unwrap();
        // No member is left: the callbacks were released, `finally` to run and `then` to
        // be skipped by the worker (the batch was cancelled).
        assert_eq!(size.total(), 2, "only the callbacks are left in the queue");
    } else {
        assert_eq!(removed, 0, "only the flag is set");
    }
    run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(*log.lock().unwrap(), ["finally"]);
    let status = Batch::status(&queue, &batch).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (4, 0, 0, 0, 4));
    assert!(status.is_finished() && status.is_cancelled);
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);

    // Members reserved by a worker after the flag is set are skipped without running.
    let later = Batch::new()
        .add_many((0..3).map(|i| step(&queue, &q, &format!("n{i}"))))
        .finally(step(&queue, &q, "finally"))
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    log.lock().unwrap().clear();
    let held = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        Batch::cancel(&queue, &later).await.unwrap(),
        if removed > 0 { 2 } else { 0 }
    );
    store
        .settle(
            vec![queue_core::Settle::release(
                held[0].lease.clone(),
                std::time::Duration::ZERO,
            )],
            None,
        )
        .await
        .unwrap();
    run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(*log.lock().unwrap(), ["finally"]);
    let status = Batch::status(&queue, &later).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (3, 0, 0, 0, 3));
    assert!(status.is_finished());
}

/// A batch made open and filled in chunks cannot finish, nor run `then` or `finally`, before
/// it is sealed, even once every member added so far has ended; an empty sealed batch
/// finishes at once; members cannot be added to a cancelled batch.
pub async fn engine_batch_open_in_chunks(store: Store) {
    if without_groups("engine_batch_open_in_chunks", &store) {
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

/// A member adds members to its own batch while it runs: they are counted before it ends,
/// `then` and `finally` wait for them, and they can add more. A job in no batch has none.
/// A running member sees its batch cancelled, and adding to a cancelled batch is refused.
pub async fn engine_batch_members_add_members_and_see_cancel(store: Store) {
    if without_groups("engine_batch_members_add_members_and_see_cancel", &store) {
        return;
    }
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let log = steps(&queue);
    // `spawn`: adds `n` members (each a `spawn` with n - 1), then logs its `s`.
    let sink = log.clone();
    let spawner = queue.clone();
    let spawn_q = q.clone();
    queue.listen("spawn", move |payload: serde_json::Value, ctx| {
        let (sink, queue, q) = (sink.clone(), spawner.clone(), spawn_q.clone());
        async move {
            let s = payload["s"].as_str().unwrap_or_default().to_owned();
            let n = payload["n"].as_u64().unwrap_or(0);
            let Some(batch) = ctx.batch() else {
                sink.lock().unwrap().push(format!("{s}: no batch"));
                return Ok(());
            };
            let before = batch.status().await.map_err(JobError::msg)?.total;
            batch
                .add_many((0..n).map(|i| {
                    queue
                        .dispatch_named("spawn", json!({ "s": format!("{s}.{i}"), "n": n - 1 }))
                        .on_queue(&q)
                }))
                .await
                .map_err(JobError::msg)?;
            let after = batch.status().await.map_err(JobError::msg)?.total;
            assert_eq!(after, before + n, "counted before this member ends");
            sink.lock().unwrap().push(s);
            Ok(())
        }
    });
    let id = Batch::new()
        .add(
            queue
                .dispatch_named("spawn", json!({ "s": "r", "n": 2 }))
                .on_queue(&q),
        )
        .then(step(&queue, &q, "then"))
        .finally(step(&queue, &q, "finally"))
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    run_worker(&queue, test_options(&[&q])).await;
    let ran = log.lock().unwrap().clone();
    // r adds r.0 and r.1 (n = 1), each adds one more (n = 0): 5 members.
    let members: BTreeSet<&str> = ["r", "r.0", "r.1", "r.0.0", "r.1.0"].into();
    assert_eq!(ran.len(), 7, "{ran:?}");
    assert_eq!(
        ran[..5].iter().map(String::as_str).collect::<BTreeSet<_>>(),
        members,
        "the callbacks waited for every member added: {ran:?}"
    );
    let mut callbacks = ran[5..].to_vec();
    callbacks.sort();
    assert_eq!(callbacks, ["finally", "then"]);
    let status = Batch::status(&queue, &id).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (5, 0, 5, 0, 0));
    assert!(status.is_finished(), "{status:?}");
    let created = status
        .created_at
        .expect("a new batch keeps its creation time");
    let age = std::time::SystemTime::now()
        .duration_since(created)
        .unwrap();
    assert!(age < std::time::Duration::from_secs(120), "{age:?}");

    // Not a member: no batch.
    log.lock().unwrap().clear();
    queue
        .dispatch_named("spawn", json!({ "s": "alone", "n": 1 }))
        .on_queue(&q)
        .await
        .unwrap();
    run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(*log.lock().unwrap(), ["alone: no batch"]);

    // `watch` waits until its batch is cancelled, then tries to add a member.
    log.lock().unwrap().clear();
    let sink = log.clone();
    let watcher = queue.clone();
    let watch_q = q.clone();
    queue.listen("watch", move |_: serde_json::Value, ctx| {
        let (sink, queue, q) = (sink.clone(), watcher.clone(), watch_q.clone());
        async move {
            let batch = ctx.batch().expect("a member").clone();
            sink.lock().unwrap().push("watching".to_owned());
            let started = std::time::Instant::now();
            while !batch.is_cancelled().await.map_err(JobError::msg)? {
                if started.elapsed() > std::time::Duration::from_secs(20) {
                    return Err(JobError::fail("never saw the cancel"));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            sink.lock().unwrap().push("saw the cancel".to_owned());
            let refused = batch.add(step(&queue, &q, "late")).await.unwrap_err();
            sink.lock().unwrap().push(refused.to_string());
            Ok(())
        }
    });
    let id = Batch::new()
        .add(queue.dispatch_named("watch", json!({})).on_queue(&q))
        .add(step(&queue, &q, "never"))
        .finally(step(&queue, &q, "finally"))
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    let worker = tokio::spawn({
        let queue = queue.clone();
        let q = q.clone();
        async move { run_worker(&queue, test_options(&[&q]).concurrency(1)).await }
    });
    let started = std::time::Instant::now();
    while !log.lock().unwrap().iter().any(|s| s == "watching") {
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Batch::cancel(&queue, &id).await.unwrap();
    worker.await.unwrap();
    let ran = log.lock().unwrap().clone();
    assert_eq!(ran.len(), 4, "{ran:?}");
    assert_eq!(ran[..2], ["watching", "saw the cancel"]);
    assert!(ran[2].contains("is cancelled"), "{ran:?}");
    assert_eq!(ran[3], "finally", "{ran:?}");
    let status = Batch::status(&queue, &id).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (2, 0, 1, 0, 1));
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);

    // Listed with their progress.
    let mut listed = Vec::new();
    let mut page = queue_core::storage::PageRequest::first(100);
    loop {
        let got = Batch::list(&queue, page).await.unwrap();
        listed.extend(got.items);
        match got.next {
            Some(next) => page = queue_core::storage::PageRequest::after(next, 100),
            None => break,
        }
    }
    let found = listed.iter().find(|(b, _)| *b == id).expect("listed");
    assert_eq!(found.1, status);
    assert!(listed.windows(2).all(|w| w[0].0 .0 < w[1].0 .0), "by id");
}

/// `Batch::retry` runs a finished batch's failed members again: counted pending again,
/// `then` runs once they all succeed, `finally` runs again, `catch` does not; retrying a
/// batch with nothing failed runs nothing; an unfinished batch is refused.
pub async fn engine_batch_retry(store: Store) {
    if store.capabilities().groups.is_none() || store.capabilities().failed.is_none() {
        println!(
            "engine_batch_retry: not applicable to the {} driver (no groups)",
            store.driver()
        );
        return;
    }
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let log = steps(&queue);
    // `fixable`: fails for good while `broken` is set.
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sink = log.clone();
    let flag = broken.clone();
    queue.listen("fixable", move |payload: serde_json::Value, _ctx| {
        let (sink, flag) = (sink.clone(), flag.clone());
        async move {
            let s = payload["s"].as_str().unwrap_or_default().to_owned();
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(JobError::fail(format!("{s} is broken")));
            }
            sink.lock().unwrap().push(s);
            Ok(())
        }
    });
    // `catcher`: a catch that reads the batch's failures.
    let sink = log.clone();
    let catcher = queue.clone();
    queue.listen("catcher", move |_: serde_json::Value, ctx| {
        let (sink, queue) = (sink.clone(), catcher.clone());
        async move {
            let batch = ctx.batch().expect("a callback knows its batch");
            assert!(!batch.is_member());
            let refused = batch.add(queue.dispatch_named("x", json!({})));
            assert!(refused.await.is_err(), "a callback cannot add members");
            let failures = batch.failures().await.map_err(JobError::msg)?;
            let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
            sink.lock().unwrap().push(format!("catch saw {errors:?}"));
            Ok(())
        }
    });
    let fixable = |s: &str| {
        queue
            .dispatch_named("fixable", json!({ "s": s }))
            .on_queue(&q)
    };
    let id = Batch::new()
        .add(step(&queue, &q, "m0"))
        .add(step(&queue, &q, "m1"))
        .add(fixable("m2"))
        .then(step(&queue, &q, "then"))
        .catch(queue.dispatch_named("catcher", json!({})).on_queue(&q))
        .finally(step(&queue, &q, "finally"))
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    run_worker(&queue, test_options(&[&q]).concurrency(1)).await;
    let mut ran = log.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["catch saw [\"m2 is broken\"]", "finally", "m0", "m1"]);
    let status = Batch::status(&queue, &id).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (3, 0, 2, 1, 0));
    assert!(status.is_cancelled, "failing fast marks it cancelled");

    // Still failing: retried, counted, fails again; `catch` and `finally` run again.
    log.lock().unwrap().clear();
    assert_eq!(Batch::retry(&queue, &id).await.unwrap(), 1);
    let status = Batch::status(&queue, &id).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (3, 1, 2, 0, 0));
    assert!(!status.is_cancelled && !status.is_finished(), "{status:?}");
    assert_eq!(
        Batch::retry(&queue, &id).await.unwrap(),
        0,
        "nothing is in the failed store now"
    );
    run_worker(&queue, test_options(&[&q])).await;
    let mut ran = log.lock().unwrap().clone();
    ran.sort();
    // The failed store holds the new failure only: the retry took the first one out.
    assert_eq!(ran, ["catch saw [\"m2 is broken\"]", "finally"]);
    let status = Batch::status(&queue, &id).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (3, 0, 2, 1, 0));

    // Fixed: `then` and `finally` run, `catch` does not.
    log.lock().unwrap().clear();
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(Batch::retry(&queue, &id).await.unwrap(), 1);
    run_worker(&queue, test_options(&[&q])).await;
    let mut ran = log.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["finally", "m2", "then"]);
    let status = Batch::status(&queue, &id).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (3, 0, 3, 0, 0));
    assert!(status.is_finished() && !status.is_cancelled, "{status:?}");
    assert!(failed_list(&store, 1000)
        .await
        .iter()
        .all(|f| !String::from_utf8_lossy(&f.payload).contains(&id.0)));

    // Nothing failed: nothing runs.
    log.lock().unwrap().clear();
    assert_eq!(Batch::retry(&queue, &id).await.unwrap(), 0);
    run_worker(&queue, test_options(&[&q])).await;
    assert!(log.lock().unwrap().is_empty());

    // An unfinished batch (open, not sealed): its failed member runs again, and the
    // callbacks, still waiting for the seal, wait for it too; `catch`, which ran at the
    // failure, is held again and skipped when the member succeeds.
    log.lock().unwrap().clear();
    broken.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut open = Batch::new()
        .add(step(&queue, &q, "o1"))
        .add(fixable("o2"))
        .then(step(&queue, &q, "then"))
        .catch(queue.dispatch_named("catcher", json!({})).on_queue(&q))
        .finally(step(&queue, &q, "finally"))
        .allow_failures()
        .via(&queue)
        .open()
        .await
        .unwrap();
    run_worker(&queue, test_options(&[&q])).await;
    let status = Batch::status(&queue, open.id()).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (2, 0, 1, 1, 0));
    assert!(!status.is_finished(), "not sealed");
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(Batch::retry(&queue, open.id()).await.unwrap(), 1);
    run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(
        batch_status_tuple(&Batch::status(&queue, open.id()).await.unwrap()),
        (2, 0, 2, 0, 0)
    );
    open.add(step(&queue, &q, "o3")).await.unwrap();
    let open = open.seal().await.unwrap();
    run_worker(&queue, test_options(&[&q])).await;
    let mut ran = log.lock().unwrap().clone();
    ran.sort();
    assert_eq!(
        ran,
        [
            "catch saw [\"o2 is broken\"]",
            "finally",
            "o1",
            "o2",
            "o3",
            "then"
        ]
    );
    let status = Batch::status(&queue, &open).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (3, 0, 3, 0, 0));
    assert!(status.is_finished());

    // The callbacks are held for a retry until the batch is pruned, which skips them (other
    // cases share the store, so this does by hand what `Batch::prune` does for this batch).
    let groups = store.groups().unwrap();
    assert!(groups
        .waiting(&format!("batch:{id}:then"))
        .await
        .unwrap()
        .is_some());
    queue_core::storage::Groups::apply(
        groups,
        ["then", "catch", "finally"]
            .into_iter()
            .map(|what| queue_core::Effect::Skip {
                key: format!("batch:{id}:{what}"),
            })
            .collect(),
    )
    .await
    .unwrap();
    assert!(groups
        .waiting(&format!("batch:{id}:then"))
        .await
        .unwrap()
        .is_none());
}

/// Invariant 5, no hot row: 50,000 members of one batch, added in chunks to an open batch,
/// finished by 1,000 jobs at a time (four workers of concurrency 250): the counts are exact
/// and `then` and `finally` run once each, with no deadlock and no lost update.
pub async fn engine_batch_of_fifty_thousand(store: Store) {
    if without_groups("engine_batch_of_fifty_thousand", &store) {
        return;
    }
    const MEMBERS: usize = 50_000;
    const CHUNK: usize = 5_000;
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let callbacks: Log = Arc::default();
    let (sink, counter) = (callbacks.clone(), done.clone());
    queue.listen("m", move |_: serde_json::Value, _ctx| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
    });
    queue.listen("callback", move |payload: serde_json::Value, _ctx| {
        let sink = sink.clone();
        async move {
            sink.lock()
                .unwrap()
                .push(payload.as_str().unwrap_or_default().to_owned());
            Ok(())
        }
    });
    let mut batch = Batch::new()
        .then(
            queue
                .dispatch_named("callback", json!("then"))
                .on_queue(q.as_str()),
        )
        .finally(
            queue
                .dispatch_named("callback", json!("finally"))
                .on_queue(q.as_str()),
        )
        .via(&queue)
        .open()
        .await
        .unwrap();
    for chunk in 0..MEMBERS / CHUNK {
        batch
            .add_many((0..CHUNK).map(|i| {
                queue
                    .dispatch_named("m", json!(chunk * CHUNK + i))
                    .on_queue(q.as_str())
            }))
            .await
            .unwrap();
    }
    let id = batch.seal().await.unwrap();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let queue = queue.clone();
        let q = q.clone();
        workers.push(tokio::spawn(async move {
            // A long lease and many tries: on a loaded machine a lease of 5 s can run out
            // while 250 jobs wait for their turn, and each reservation counts an attempt.
            let options = test_options(&[&q])
                .concurrency(250)
                .lease(std::time::Duration::from_secs(60))
                .tries(20)
                .no_schedules();
            tokio::time::timeout(
                std::time::Duration::from_secs(600),
                queue.worker(options).run(),
            )
            .await
            .expect("the workers finished within ten minutes")
            .expect("the worker ran")
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let status = Batch::status(&queue, &id).await.unwrap();
    assert_eq!(
        batch_status_tuple(&status),
        (MEMBERS as u64, 0, MEMBERS as u64, 0, 0),
        "{status:?}"
    );
    assert!(status.is_finished());
    assert!(done.load(std::sync::atomic::Ordering::Relaxed) >= MEMBERS);
    let mut ran = callbacks.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["finally", "then"], "each callback once");
}

/// `JobError::discard`: the job leaves without a failure and without a retry, its unique
/// key free again; a discarded chain link ends its chain as a failure does (the next link
/// is skipped, `finally` runs), with nothing in the failed store.
pub async fn engine_discarded_jobs(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let log: Log = Arc::default();
    let sink = log.clone();
    queue.listen("gone", move |s: String, _ctx| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(s.clone());
            Err(JobError::discard(format!("record {s} was deleted")))
        }
    });
    let claims = store.capabilities().claims;
    let key = unique("key");
    let first = queue
        .dispatch_named("gone", json!("x"))
        .on_queue(q.as_str());
    let first = if claims {
        first.unique_key(key.as_str())
    } else {
        first
    };
    first.await.unwrap();
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(
        (
            summary.discarded,
            summary.failed,
            summary.retried,
            summary.processed
        ),
        (1, 0, 0, 0),
        "{summary:?}"
    );
    assert_eq!(*log.lock().unwrap(), ["x"], "ran once");
    assert!(
        failed_list(&store, 1000).await.iter().all(|f| f.queue != q),
        "nothing in the failed store"
    );
    if claims {
        let again = queue
            .dispatch_named("gone", json!("y"))
            .on_queue(q.as_str())
            .unique_key(key.as_str())
            .await
            .unwrap();
        assert!(again.is_created(), "the key is free: {again:?}");
        run_worker(&queue, test_options(&[&q])).await;
    }

    if without_groups("engine_discarded_jobs (chains)", &store) {
        return;
    }
    let steps = steps(&queue);
    let chain = Chain::new()
        .then(
            queue
                .dispatch_named("gone", json!("link"))
                .on_queue(q.as_str()),
        )
        .then(step(&queue, &q, "after"))
        .finally(step(&queue, &q, "finally"))
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!((summary.discarded, summary.failed), (1, 0), "{summary:?}");
    assert_eq!(
        *steps.lock().unwrap(),
        ["finally"],
        "the next link was skipped"
    );
    let status = Chain::status(&queue, &chain).await.unwrap();
    assert_eq!((status.failed, status.skipped), (1, 1), "{status:?}");
    assert!(status.is_finished());
    assert!(failed_list(&store, 1000).await.iter().all(|f| f.queue != q));
}

/// A queued member of a batch or a chain cancelled by its id ends its composition as a
/// discarded one would: the batch counts it cancelled and finishes (its `finally` runs, its
/// `then` does not); the chain's later links are skipped and its `catch` and `finally` run.
pub async fn engine_cancelled_members_end_their_compositions(store: Store) {
    if without_groups("engine_cancelled_members_end_their_compositions", &store) {
        return;
    }
    if store.capabilities().track.is_none() {
        println!("engine_cancelled_members_end_their_compositions: not applicable (no jobs by id)");
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
    let waiting = store
        .inspect()
        .unwrap()
        .jobs(
            &q,
            queue_core::storage::JobState::Waiting,
            queue_core::storage::PageRequest::first(10),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(waiting.len(), 4, "{waiting:?}");
    let cancelled = queue.cancel(&waiting[1].id).await.unwrap();
    assert!(cancelled.is_cancelled(), "{cancelled:?}");
    run_worker(&queue, test_options(&[&q])).await;
    let mut ran = log.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["finally", "m0", "m2", "m3"]);
    let status = Batch::status(&queue, &batch).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (4, 0, 3, 0, 1), "{status:?}");
    assert!(status.is_finished(), "{status:?}");

    log.lock().unwrap().clear();
    let chain = Chain::new()
        .then(step(&queue, &q, "a"))
        .then(step(&queue, &q, "b"))
        .then(step(&queue, &q, "c"))
        .catch(step(&queue, &q, "catch"))
        .finally(step(&queue, &q, "finally"))
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    let waiting = store
        .inspect()
        .unwrap()
        .jobs(
            &q,
            queue_core::storage::JobState::Waiting,
            queue_core::storage::PageRequest::first(10),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(
        waiting.len(),
        1,
        "only the first link is queued: {waiting:?}"
    );
    assert!(queue.cancel(&waiting[0].id).await.unwrap().is_cancelled());
    run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(*log.lock().unwrap(), ["catch", "finally"]);
    let status = Chain::status(&queue, &chain).await.unwrap();
    assert!(status.is_finished(), "{status:?}");
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
}

/// A node reads the outputs of the nodes before it, kept by the step in which each
/// succeeded whatever `keep_finished` says; the application reads them by the workflow's
/// id. A node that set no output, or failed, has none.
pub async fn engine_workflow_nodes_read_outputs(store: Store) {
    if without_groups("engine_workflow_nodes_read_outputs", &store) {
        return;
    }
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let seen: Log = Arc::default();
    let sink = seen.clone();
    queue.listen("node", move |payload: serde_json::Value, ctx| {
        let sink = sink.clone();
        async move {
            let wf = ctx.workflow().expect("a node knows its workflow");
            let me = wf.node().to_owned();
            match me.as_str() {
                "quote" => ctx.output(&json!({ "amount": 42 })).unwrap(),
                "tax" => ctx.output(&7u64).unwrap(),
                "broken" => return Err(JobError::fail("no")),
                _ => {}
            }
            if me == "total" {
                let quote: serde_json::Value = wf.output("quote").await.unwrap().unwrap();
                let tax: u64 = wf.output("tax").await.unwrap().unwrap();
                let silent: Option<serde_json::Value> = wf.output("silent").await.unwrap();
                let wrong = wf.output::<String>("tax").await.unwrap_err();
                assert!(matches!(wrong, Error::Payload(_)), "{wrong:?}");
                let total = quote["amount"].as_u64().unwrap() + tax;
                sink.lock()
                    .unwrap()
                    .push(format!("total {total} silent {silent:?}"));
                ctx.output(&total).unwrap();
            }
            if payload["after_broken"].as_bool() == Some(true) {
                let broken: Option<u64> = wf.output("broken").await.unwrap();
                sink.lock().unwrap().push(format!("broken {broken:?}"));
            }
            Ok(())
        }
    });
    let node = |extra: serde_json::Value| queue.dispatch_named("node", extra).on_queue(&q);
    let wf = Workflow::new();
    let quote = wf.add("quote", node(json!({})));
    let tax = wf.add("tax", node(json!({})));
    let silent = wf.add("silent", node(json!({})));
    wf.add("total", node(json!({})))
        .after_all([&quote, &tax, &silent]);
    let broken = wf.add("broken", node(json!({})));
    wf.add("cleanup", node(json!({ "after_broken": true })))
        .on_failure_of(&broken);
    let id = wf.via(&queue).dispatch().await.unwrap();
    let mut options = test_options(&[&q]);
    options.keep_finished = None;
    run_worker(&queue, options).await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&"total 49 silent None".to_owned()),
        "{seen:?}"
    );
    assert!(seen.contains(&"broken None".to_owned()), "{seen:?}");
    assert_eq!(
        Workflow::output::<u64>(&queue, &id, "total").await.unwrap(),
        Some(49)
    );
    assert_eq!(
        Workflow::output::<u64>(&queue, &id, "tax").await.unwrap(),
        Some(7)
    );
    assert_eq!(
        Workflow::output::<u64>(&queue, &id, "nope").await.unwrap(),
        None
    );
    let status = Workflow::status(&queue, &id).await.unwrap();
    assert_eq!((status.succeeded, status.failed), (5, 1), "{status:?}");
    let created = status.created_at.expect("its dispatch time is kept");
    assert!(created <= std::time::SystemTime::now(), "{created:?}");

    // Pruned once it is older than asked, with its outputs; not before.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    Workflow::prune(&queue, hour_ago).await.unwrap();
    assert!(Workflow::status(&queue, &id).await.is_ok());
    let soon = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    assert!(Workflow::prune(&queue, soon).await.unwrap() >= 1);
    let gone = Workflow::status(&queue, &id).await.unwrap_err();
    assert!(matches!(gone, Error::NotFound { .. }), "{gone:?}");
    assert_eq!(
        Workflow::output::<u64>(&queue, &id, "total").await.unwrap(),
        None
    );
}

/// `Batch::running` counts the batch's members reserved now: not a job of another batch or
/// of none running beside them, and none once they ended.
pub async fn engine_batch_counts_running_members(store: Store) {
    if without_groups("engine_batch_counts_running_members", &store) {
        return;
    }
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let (counter, wait) = (started.clone(), gate.clone());
    queue.listen("hold", move |_: serde_json::Value, _ctx| {
        let (counter, wait) = (counter.clone(), wait.clone());
        async move {
            let notified = wait.notified();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            notified.await;
            Ok(())
        }
    });
    let hold = || queue.dispatch_named("hold", json!({})).on_queue(&q);
    let batch = Batch::new()
        .add_many((0..3).map(|_| hold()))
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    let other = Batch::new()
        .add(hold())
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    hold().await.unwrap();
    assert_eq!(Batch::running(&queue, &batch).await.unwrap(), 0);
    let mut options = test_options(&[&q]);
    options.concurrency = 8;
    let worker = tokio::spawn({
        let queue = queue.clone();
        async move { run_worker(&queue, options).await }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while started.load(std::sync::atomic::Ordering::SeqCst) < 5 {
        assert!(std::time::Instant::now() < deadline, "five jobs started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let running = Batch::running(&queue, &batch).await.unwrap();
    let running_other = Batch::running(&queue, &other).await.unwrap();
    // Let them all end (a body that had not reached its wait yet finds the permit).
    while !worker.is_finished() {
        gate.notify_waiters();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    worker.await.unwrap();
    assert_eq!((running, running_other), (3, 1));
    assert_eq!(Batch::running(&queue, &batch).await.unwrap(), 0);
    let status = Batch::status(&queue, &batch).await.unwrap();
    assert_eq!((status.succeeded, status.pending), (3, 0));
}

/// A batch as a workflow node: its members run once the node's edges are met, the node
/// ends when they all have (succeeded only if every member did), and a skipped batch node's
/// members never run and are counted cancelled.
pub async fn engine_workflow_batch_nodes(store: Store) {
    if without_groups("engine_workflow_batch_nodes", &store) {
        return;
    }
    let queue = Queue::from_arc(store.clone());
    let log = steps(&queue);
    let only_batch = || async {
        let page = Batch::list(&queue, queue_core::storage::PageRequest::first(100))
            .await
            .unwrap();
        page.items
    };

    // Every member succeeds (one after a retry): the node succeeds.
    let q = unique("q");
    let wf = Workflow::new();
    let fetch = wf.add("fetch", step(&queue, &q, "fetch"));
    let sync = wf
        .add_batch(
            "sync",
            Batch::new()
                .add(step(&queue, &q, "m1"))
                .add(
                    queue
                        .dispatch_named("step", json!({ "s": "m2", "flaky": true }))
                        .on_queue(q.as_str()),
                )
                .add(step(&queue, &q, "m3"))
                .then(step(&queue, &q, "then")),
        )
        .after(&fetch);
    wf.add("report", step(&queue, &q, "report")).after(&sync);
    wf.add("alert", step(&queue, &q, "alert"))
        .on_failure_of(&sync);
    let id = wf.via(&queue).dispatch().await.unwrap();
    let mut options = test_options(&[&q]);
    options.concurrency = 4;
    run_worker(&queue, options).await;
    let ran = log.lock().unwrap().clone();
    for member in ["m1", "m2", "m3"] {
        assert!(pos(&ran, "fetch") < pos(&ran, member), "{ran:?}");
        assert!(pos(&ran, member) < pos(&ran, "report"), "{ran:?}");
    }
    assert!(ran.contains(&"then".to_owned()), "{ran:?}");
    assert!(!ran.contains(&"alert".to_owned()), "{ran:?}");
    let status = Workflow::status(&queue, &id).await.unwrap();
    assert_eq!(
        (
            status.nodes,
            status.succeeded,
            status.failed,
            status.skipped
        ),
        (4, 3, 0, 1),
        "{status:?}"
    );
    assert!(status.is_finished());
    let batches = only_batch().await;
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batch_status_tuple(&batches[0].1), (3, 0, 3, 0, 0));

    // A member fails for good: the node fails, its compensation runs, the node after it is
    // skipped, and so is a batch node after that one, whose members never run.
    log.lock().unwrap().clear();
    let q = unique("q");
    let wf = Workflow::new();
    let sync = wf.add_batch(
        "sync",
        Batch::new()
            .add(step(&queue, &q, "a1"))
            .add(
                queue
                    .dispatch_named("step", json!({ "s": "a2", "fail": true }))
                    .on_queue(q.as_str()),
            )
            .allow_failures(),
    );
    let report = wf.add("report", step(&queue, &q, "report")).after(&sync);
    let later = wf
        .add_batch(
            "later",
            Batch::new().add_many((0..3).map(|i| step(&queue, &q, &format!("l{i}")))),
        )
        .after(&report);
    wf.add("alert", step(&queue, &q, "alert"))
        .on_failure_of(&sync);
    wf.add("audit", step(&queue, &q, "audit"))
        .on_complete_of(&later);
    let id = wf.via(&queue).dispatch().await.unwrap();
    run_worker(&queue, test_options(&[&q])).await;
    let ran = log.lock().unwrap().clone();
    let mut sorted = ran.clone();
    sorted.sort();
    assert_eq!(sorted, ["a1", "alert", "audit"], "{ran:?}");
    let status = Workflow::status(&queue, &id).await.unwrap();
    assert_eq!(
        (
            status.nodes,
            status.succeeded,
            status.failed,
            status.skipped
        ),
        (5, 2, 1, 2),
        "{status:?}"
    );
    let batches = only_batch().await;
    assert_eq!(batches.len(), 3, "{batches:?}");
    let mut tuples: Vec<_> = batches
        .iter()
        .filter(|(_, s)| s.total == 3 || s.total == 2)
        .map(|(_, s)| (batch_status_tuple(s), s.is_cancelled))
        .collect();
    tuples.sort();
    assert!(
        tuples.contains(&((3, 0, 0, 0, 3), true)),
        "the skipped node's members are counted cancelled: {tuples:?}"
    );
    assert!(
        tuples.contains(&((2, 0, 1, 1, 0), false)),
        "the failed node's batch: {tuples:?}"
    );
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);

    // Refused at dispatch: a batch node with no member, or with a `finally` of its own.
    let wf = Workflow::new();
    wf.add_batch("empty", Batch::new());
    let err = wf.via(&queue).dispatch().await.unwrap_err();
    assert!(err.to_string().contains("has no member"), "{err}");
    let wf = Workflow::new();
    wf.add_batch(
        "own",
        Batch::new()
            .add(step(&queue, &q, "x"))
            .finally(step(&queue, &q, "f")),
    );
    let err = wf.via(&queue).dispatch().await.unwrap_err();
    assert!(err.to_string().contains("`finally` of its own"), "{err}");
}

/// `Queue::clear` (what `runall clear` and the dashboard's Clear do) ends the batch members
/// it deletes as a cancel would: the batch counts them cancelled and finishes (its `finally`
/// is released into another queue) instead of waiting for them for ever; plain jobs go by
/// the store's own clear. Running jobs stay.
pub async fn engine_clear_ends_compositions(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let (q, callbacks) = (unique("clear"), unique("clear-callbacks"));
    let log = steps(&queue);
    for i in 0..2 {
        step(&queue, &q, &format!("plain{i}")).await.unwrap();
    }
    if without_groups("engine_clear_ends_compositions", &store) {
        assert_eq!(queue.clear(&q).await.unwrap(), 2);
        return;
    }
    let batch = Batch::new()
        .add_many((0..3).map(|i| step(&queue, &q, &format!("m{i}"))))
        .finally(step(&queue, &callbacks, "finally"))
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    // One more, reserved: a running job is left to its worker.
    step(&queue, &q, "running").await.unwrap();
    let size = store.inspect().unwrap().size(&q).await.unwrap();
    assert_eq!(size.waiting, 6);
    let held = store.reserve(&request(&[&q], LONG, 6)).await.unwrap();
    let running = held
        .iter()
        .find(|r| r.payload.windows(7).any(|w| w == b"running"));
    let running = running.expect("the last job reserved").lease.clone();
    let others: Vec<_> = held
        .iter()
        .filter(|r| r.lease != running)
        .map(|r| queue_core::Settle::release(r.lease.clone(), std::time::Duration::ZERO))
        .collect();
    store.settle(others, None).await.unwrap();

    assert_eq!(
        queue.clear(&q).await.unwrap(),
        5,
        "2 plain jobs and 3 members"
    );
    let status = Batch::status(&queue, &batch).await.unwrap();
    assert_eq!(batch_status_tuple(&status), (3, 0, 0, 0, 3), "{status:?}");
    assert!(status.is_finished(), "{status:?}");
    let size = store.inspect().unwrap().size(&q).await.unwrap();
    assert_eq!((size.waiting, size.delayed, size.reserved), (0, 0, 1));
    run_worker(&queue, test_options(&[&callbacks])).await;
    assert_eq!(*log.lock().unwrap(), ["finally"], "the batch's finally ran");
    store
        .settle(vec![queue_core::Settle::ack(running)], None)
        .await
        .unwrap();
}
