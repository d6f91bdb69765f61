//! The cases of waiting jobs: held under a key, released by their dependencies in the step
//! that meets the last one, dropped by a skip, and never touched by a stale step. Chains,
//! workflows and batch callbacks are built on them.

use queue_core::storage::Guard;
use queue_core::{
    Effect, Error, NewJob, Outcome, Pushed, Settle, Settled, StorageExt, Unique, WaitingJob,
};

use super::LONG;
use crate::{job, request, unique, Store};

fn skip(case: &str, store: &Store) {
    println!(
        "{case}: not applicable to the {} driver (no groups: waiting jobs; declared in its capabilities)",
        store.driver()
    );
}

fn hold(key: &str, deps: u32, job: NewJob) -> Effect {
    Effect::Hold(WaitingJob::new(key, deps, job))
}

fn deps(key: &str, delta: i64) -> Effect {
    Effect::Deps {
        key: key.to_owned(),
        delta,
    }
}

async fn size(store: &Store, queue: &str) -> u64 {
    store.inspect().unwrap().size(queue).await.unwrap().total()
}

/// Pushes `n` plain jobs on a queue of their own and reserves them: leases to settle with
/// effects.
async fn leases(store: &Store, n: usize) -> Vec<queue_core::Lease> {
    let q = unique("finishing");
    store
        .push((0..n).map(|i| job(&q, "f", &[i as u8])).collect())
        .await
        .unwrap();
    let got = store.reserve(&request(&[&q], LONG, n)).await.unwrap();
    assert_eq!(got.len(), n);
    got.into_iter().map(|r| r.lease).collect()
}

/// A waiting job is not in its queue until the step that meets its last dependency, which
/// pushes it so that the same call's fetch can take it. Holding a key twice changes nothing.
pub async fn waiting_jobs_are_released_by_their_dependencies(store: Store) {
    let Some(groups) = store.capabilities().groups else {
        return skip("waiting_jobs_are_released_by_their_dependencies", &store);
    };
    let q = unique("q");
    let key = unique("wf");
    groups
        .apply(vec![hold(&key, 2, job(&q, "next", b"one"))])
        .await
        .unwrap();
    // Held again (a replayed dispatch): nothing changes.
    groups
        .apply(vec![hold(&key, 5, job(&q, "next", b"other"))])
        .await
        .unwrap();
    assert_eq!(groups.waiting(&key).await.unwrap(), Some(2));
    assert_eq!(size(&store, &q).await, 0, "a waiting job is in no queue");
    assert!(store
        .reserve(&request(&[&q], LONG, 5))
        .await
        .unwrap()
        .is_empty());

    let held = leases(&store, 2).await;
    let reply = store
        .settle(
            vec![Settle::ack(held[0].clone()).effect(deps(&key, -1))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied]);
    assert_eq!(groups.waiting(&key).await.unwrap(), Some(1));
    assert_eq!(size(&store, &q).await, 0);

    // The last dependency: released in the step, and fetched by the same call.
    let reply = store
        .settle(
            vec![Settle::ack(held[1].clone()).effect(deps(&key, -1))],
            Some(&request(&[&q], LONG, 5)),
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied]);
    assert_eq!(reply.reserved.len(), 1, "the released job is fetched");
    assert_eq!(reply.reserved[0].payload, b"one");
    assert_eq!(reply.reserved[0].name, "next");
    assert_eq!(reply.reserved[0].attempts, 1);
    assert_eq!(groups.waiting(&key).await.unwrap(), None, "the key is free");

    // A late dependency change on a released key does nothing.
    groups.apply(vec![deps(&key, -1)]).await.unwrap();
    store
        .acknowledge(&[reply.reserved[0].lease.clone()])
        .await
        .unwrap();
    assert_eq!(size(&store, &q).await, 0, "released exactly once");
}

/// A skip drops the waiting job for good; a stale step changes no dependency; changes to one
/// key within one call are summed before they are applied.
pub async fn skips_and_stale_steps_and_summed_dependencies(store: Store) {
    let Some(groups) = store.capabilities().groups else {
        return skip("skips_and_stale_steps_and_summed_dependencies", &store);
    };
    let q = unique("q");
    let (a, b) = (unique("a"), unique("b"));
    groups
        .apply(vec![
            hold(&a, 1, job(&q, "a", b"a")),
            hold(&b, 1, job(&q, "b", b"b")),
        ])
        .await
        .unwrap();

    // A stale step: its dependency change is not applied.
    let held = leases(&store, 1).await;
    store.acknowledge(&held).await.unwrap();
    let reply = store
        .settle(
            vec![Settle::ack(held[0].clone()).effect(deps(&a, -1))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Stale]);
    assert_eq!(groups.waiting(&a).await.unwrap(), Some(1));

    // -1 then +1 in one call: summed to 0, so the job still waits (a batch member added
    // while another finishes never releases a callback early).
    groups.apply(vec![deps(&a, -1), deps(&a, 1)]).await.unwrap();
    assert_eq!(groups.waiting(&a).await.unwrap(), Some(1));
    assert_eq!(size(&store, &q).await, 0);

    // A skip in a settle drops it; a later release of it does nothing.
    let held = leases(&store, 1).await;
    store
        .settle(
            vec![Settle::new(
                held[0].clone(),
                Outcome::Fail {
                    reason: "failed for good".into(),
                },
            )
            .effect(Effect::Skip { key: a.clone() })
            .effect(deps(&b, -1))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(groups.waiting(&a).await.unwrap(), None);
    groups.apply(vec![deps(&a, -1)]).await.unwrap();
    let got = store.reserve(&request(&[&q], LONG, 5)).await.unwrap();
    let names: Vec<&str> = got.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["b"],
        "only the released job; the skipped one never runs"
    );
}

/// A bad effect is refused before anything of the call changes.
pub async fn bad_effects_change_nothing(store: Store) {
    let Some(groups) = store.capabilities().groups else {
        // Without groups every dependency effect is refused as not supported.
        let held = leases(&store, 1).await;
        let err = store
            .settle(
                vec![Settle::ack(held[0].clone()).effect(deps("k", -1))],
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        let reply = store
            .settle(vec![Settle::ack(held[0].clone())], None)
            .await
            .unwrap();
        assert_eq!(reply.settled, vec![Settled::Applied], "the lease was kept");
        return;
    };
    let q = unique("q");
    let key = unique("k");
    let err = groups
        .apply(vec![
            hold(&key, 1, job(&q, "w", b"w")),
            Effect::Push(job(&q, "no-key", b"x")),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Contract { .. }), "{err:?}");
    let err = groups
        .apply(vec![hold(&unique("z"), 0, job(&q, "w", b"w"))])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Contract { .. }), "{err:?}");
    let err = groups
        .apply(vec![Effect::Push(
            job(&q, "r", b"r").unique(Unique::new(unique("r")).replacing()),
        )])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Contract { .. }), "{err:?}");
    assert_eq!(groups.waiting(&key).await.unwrap(), None);
    assert_eq!(size(&store, &q).await, 0);
}

/// A released job takes its unique claim with it, and one whose key is held is dropped.
pub async fn released_jobs_keep_their_claims(store: Store) {
    let Some(groups) = store.capabilities().groups else {
        return skip("released_jobs_keep_their_claims", &store);
    };
    if !store.capabilities().claims {
        return skip("released_jobs_keep_their_claims", &store);
    }
    let q = unique("q");
    let (k1, k2, claim) = (unique("k1"), unique("k2"), unique("claim"));
    groups
        .apply(vec![
            hold(&k1, 1, job(&q, "w", b"1").unique(Unique::new(&claim))),
            hold(&k2, 1, job(&q, "w", b"2").unique(Unique::new(&claim))),
        ])
        .await
        .unwrap();
    groups.apply(vec![deps(&k1, -1)]).await.unwrap();
    let again = store
        .push(vec![job(&q, "w", b"3").unique(Unique::new(&claim))])
        .await
        .unwrap();
    assert!(matches!(again[0], Pushed::Duplicate(_)), "{again:?}");
    // The second one's claim is held by the first: released, it is dropped.
    groups.apply(vec![deps(&k2, -1)]).await.unwrap();
    assert_eq!(groups.waiting(&k2).await.unwrap(), None);
    let got = store.reserve(&request(&[&q], LONG, 5)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"1");
}

/// Many workers meeting one job's dependencies at once: no change is lost and the job is
/// released exactly once, by the step that met the last one.
pub async fn dependencies_under_contention(store: Store) {
    let Some(groups) = store.capabilities().groups else {
        return skip("dependencies_under_contention", &store);
    };
    const N: usize = 160;
    let q = unique("q");
    let key = unique("fan-in");
    groups
        .apply(vec![hold(&key, N as u32, job(&q, "join", b"j"))])
        .await
        .unwrap();
    let work = unique("work");
    store
        .push((0..N).map(|i| job(&work, "m", &[i as u8])).collect())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, work, key) = (store.clone(), work.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let got = store.reserve(&request(&[&work], LONG, 3)).await.unwrap();
                if got.is_empty() {
                    return;
                }
                let batch: Vec<Settle> = got
                    .iter()
                    .map(|r| Settle::ack(r.lease.clone()).effect(deps(&key, -1)))
                    .collect();
                let replay = batch.clone();
                store.settle(batch, None).await.unwrap();
                // A replay is stale and changes nothing.
                let reply = store.settle(replay, None).await.unwrap();
                assert!(reply.settled.iter().all(|s| *s == Settled::Stale));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(groups.waiting(&key).await.unwrap(), None);
    let got = store.reserve(&request(&[&q], LONG, 5)).await.unwrap();
    assert_eq!(got.len(), 1, "released exactly once");
}

/// `apply_if`: the effects apply only while the guard's counter holds the expected value,
/// which the same step sets; of 20 tasks racing on one value exactly one applies; a refused
/// step or bad effects change nothing.
pub async fn guarded_steps_apply_once(store: Store) {
    let Some(groups) = store.capabilities().groups else {
        return skip("guarded_steps_apply_once", &store);
    };
    let q = unique("q");
    let group = unique("schedule");
    let guard = |expect, set| Guard::new(group.as_str(), "next", expect, set);
    let tick = |n: &str| {
        vec![
            Effect::Push(job(&q, "tick", n.as_bytes()).unique(Unique::new(format!("{group}:{n}")))),
            Effect::Count {
                group: group.clone(),
                deltas: vec![("ticks".to_owned(), 1)],
            },
        ]
    };
    // A missing counter holds 0.
    assert!(!groups.apply_if(guard(5, 6), tick("no")).await.unwrap());
    assert_eq!(
        groups.counters(&group).await.unwrap(),
        vec![],
        "a refused step creates nothing"
    );
    assert!(groups.apply_if(guard(0, 100), tick("100")).await.unwrap());
    assert!(!groups.apply_if(guard(0, 100), tick("again")).await.unwrap());
    assert_eq!(
        groups.counters(&group).await.unwrap(),
        vec![("next".to_owned(), 100), ("ticks".to_owned(), 1)]
    );
    assert_eq!(size(&store, &q).await, 1);
    // Bad effects: refused, the guard unchanged.
    let err = groups
        .apply_if(guard(100, 200), vec![Effect::Push(job(&q, "no-key", b"x"))])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Contract { .. }), "{err:?}");
    assert_eq!(
        groups.counters(&group).await.unwrap()[0],
        ("next".to_owned(), 100)
    );

    // 20 tasks race for the tick after 100: one wins.
    let mut tasks = Vec::new();
    for t in 0..20 {
        let (store, tick) = (store.clone(), tick(&format!("200-{t}")));
        let guard = guard(100, 200);
        tasks.push(tokio::spawn(async move {
            let groups = store.capabilities().groups.unwrap();
            groups.apply_if(guard, tick).await.unwrap()
        }));
    }
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one step applied");
    assert_eq!(
        groups.counters(&group).await.unwrap(),
        vec![("next".to_owned(), 200), ("ticks".to_owned(), 2)]
    );
    assert_eq!(size(&store, &q).await, 2, "one job per won step");
    // Setting a value back to 0 is a value like any other.
    assert!(groups.apply_if(guard(200, 0), vec![]).await.unwrap());
    assert!(groups.apply_if(guard(0, 1), vec![]).await.unwrap());
}

/// Group values (`Effect::Value`): kept byte for byte up to `MAX_VALUE`, replaced when
/// written again, written by a settle only with its transition (a stale one writes none),
/// refused beyond `MAX_VALUE` before anything of the call changes, and deleted with the
/// group's counters.
pub async fn group_values_are_kept_with_the_step(store: Store) {
    let Some(groups) = store.capabilities().groups else {
        let held = leases(&store, 1).await;
        let err = store
            .settle(
                vec![Settle::ack(held[0].clone()).effect(value("g", "n", b"v"))],
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        return;
    };
    let g = unique("wf");
    let other = unique("wf");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    groups
        .apply(vec![value(&g, "a.node-1", &bytes), value(&g, "b", b"")])
        .await
        .unwrap();
    assert_eq!(groups.value(&g, "a.node-1").await.unwrap(), Some(bytes));
    assert_eq!(groups.value(&g, "b").await.unwrap(), Some(Vec::new()));
    assert_eq!(groups.value(&g, "c").await.unwrap(), None);
    assert_eq!(groups.value(&other, "a.node-1").await.unwrap(), None);
    // Values are not counters.
    assert_eq!(groups.counters(&g).await.unwrap(), Vec::new());

    // Replaced; the largest one a driver must keep; one byte more is refused with nothing
    // of its call applied.
    let largest = vec![b'x'; queue_core::storage::MAX_VALUE];
    groups
        .apply(vec![value(&g, "b", b"two"), value(&g, "big", &largest)])
        .await
        .unwrap();
    assert_eq!(groups.value(&g, "b").await.unwrap(), Some(b"two".to_vec()));
    assert_eq!(groups.value(&g, "big").await.unwrap(), Some(largest));
    let too_big = vec![b'y'; queue_core::storage::MAX_VALUE + 1];
    let err = groups
        .apply(vec![value(&g, "b", b"three"), value(&g, "huge", &too_big)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Contract { .. }), "{err:?}");
    assert_eq!(groups.value(&g, "b").await.unwrap(), Some(b"two".to_vec()));
    assert_eq!(groups.value(&g, "huge").await.unwrap(), None);

    // In a settle: with the transition, and not at all with a stale lease.
    let held = leases(&store, 2).await;
    let reply = store
        .settle(
            vec![Settle::ack(held[0].clone())
                .effect(value(&other, "out", b"{\"total\":42}"))
                .effect(Effect::Count {
                    group: other.clone(),
                    deltas: vec![("succeeded".to_owned(), 1)],
                })],
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied]);
    assert_eq!(
        groups.value(&other, "out").await.unwrap(),
        Some(b"{\"total\":42}".to_vec())
    );
    let mut stale = held[1].clone();
    stale.token = "not-the-token".into();
    let reply = store
        .settle(
            vec![Settle::ack(stale).effect(value(&other, "late", b"x"))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Stale]);
    assert_eq!(groups.value(&other, "late").await.unwrap(), None);

    // Deleted with the group.
    assert!(groups.remove(&other).await.unwrap(), "it had a counter");
    assert_eq!(groups.value(&other, "out").await.unwrap(), None);
    groups.remove(&g).await.unwrap();
    for name in ["a.node-1", "b", "big"] {
        assert_eq!(groups.value(&g, name).await.unwrap(), None, "{name}");
    }
}

fn value(group: &str, name: &str, value: &[u8]) -> Effect {
    Effect::Value {
        group: group.to_owned(),
        name: name.to_owned(),
        value: value.to_vec(),
    }
}
