//! Unique jobs through the dispatch API: a key held by a queued job makes another dispatch a
//! duplicate naming the holder, on every path that stores jobs; the job's `until` says which
//! transition frees the key; a unique job is refused where the composition holds its place.

use std::time::Duration;

use queue_core::{Chain, Dispatched, Error, OnConflict, Queue, StorageExt, UniqueJob, Until};
use serde_json::json;

use super::{recorder, run_worker, test_options};
use crate::{request, unique, Store};

/// Whether `store` has no claims, so `case` does not apply; checks the refusal first.
async fn without_claims(case: &str, store: &Store, queue: &Queue) -> bool {
    if store.capabilities().claims {
        return false;
    }
    let err = queue
        .dispatch_named("u", json!(1))
        .unique_key("k")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
    println!(
        "{case}: not applicable to the {} driver (no claims)",
        store.driver()
    );
    true
}

/// Duplicates are skipped (or refused) and name the holder; keys are per job name, per
/// queue when asked, per period when asked; `dispatch_many` reports each; a job releases its
/// key when it leaves the queue, or when it starts with `until = started`.
pub async fn engine_unique_jobs(store: Store) {
    let queue = Queue::from_arc(store.clone());
    if without_claims("engine_unique_jobs", &store, &queue).await {
        return;
    }
    let (q, other_q) = (unique("q"), unique("q"));
    let log = recorder(&queue, "u");
    let key = unique("customer");
    let dispatch = |s: &str| queue.dispatch_named("u", json!(s)).on_queue(q.as_str());

    // Skip: the second dispatch stores nothing and names the first.
    let first = dispatch("1").unique_key(key.as_str()).await.unwrap();
    let Dispatched::Created(holder) = first else {
        panic!("first dispatch: {first:?}");
    };
    let second = dispatch("2").unique_key(key.as_str()).await.unwrap();
    assert_eq!(second, Dispatched::Duplicate(holder.clone()));
    // Error: refused, naming the holder.
    let refused = dispatch("3")
        .unique(UniqueJob::key(key.as_str()).on_conflict(OnConflict::Error))
        .await
        .unwrap_err();
    match &refused {
        Error::Duplicate { name, existing, .. } => {
            assert_eq!((name.as_str(), existing), ("u", &holder));
        }
        other => panic!("{other:?}"),
    }
    assert!(refused.to_string().contains("is held by job"), "{refused}");
    // Another job name, another queue (per queue), another period: other keys.
    // (On a queue no worker here serves: no worker knows `other-name`.)
    assert!(queue
        .dispatch_named("other-name", json!("4"))
        .on_queue(unique("unserved"))
        .unique_key(key.as_str())
        .await
        .unwrap()
        .is_created());
    let per_queue = UniqueJob::key(key.as_str()).per_queue();
    assert!(dispatch("5")
        .unique(per_queue.clone())
        .await
        .unwrap()
        .is_created());
    assert!(
        !dispatch("6")
            .unique(per_queue.clone())
            .await
            .unwrap()
            .is_created(),
        "the same key on the same queue"
    );
    assert!(queue
        .dispatch_named("u", json!("7"))
        .on_queue(other_q.as_str())
        .unique(per_queue)
        .await
        .unwrap()
        .is_created());
    let hourly = UniqueJob::key(key.as_str()).within(Duration::from_secs(3600));
    assert!(dispatch("8")
        .unique(hourly.clone())
        .await
        .unwrap()
        .is_created());
    assert!(!dispatch("9").unique(hourly).await.unwrap().is_created());

    // dispatch_many: each job reported, duplicates among them included.
    let many_key = unique("many");
    let many = queue
        .dispatch_many([
            dispatch("10").unique_key(many_key.as_str()),
            dispatch("11").unique_key(many_key.as_str()),
            dispatch("12"),
        ])
        .await
        .unwrap();
    assert!(many[0].is_created() && many[2].is_created(), "{many:?}");
    assert_eq!(many[1], Dispatched::Duplicate(many[0].id().clone()));

    // Until terminal (the default): the holder's run frees the key.
    let stored = ["1", "10", "12", "5", "7", "8"];
    run_worker(&queue, test_options(&[&q, &other_q])).await;
    let mut ran = log.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, stored, "only the created jobs ran");
    assert!(dispatch("13")
        .unique_key(key.as_str())
        .await
        .unwrap()
        .is_created());

    // Until started: a reservation frees the key; a running job does not count.
    let started = UniqueJob::key(unique("started")).until(Until::Started);
    let waiting = dispatch("14").unique(started.clone()).await.unwrap();
    assert!(waiting.is_created());
    assert!(!dispatch("15")
        .unique(started.clone())
        .await
        .unwrap()
        .is_created());
    let reserved = store
        .reserve(&request(&[&q], Duration::from_secs(30), 10))
        .await
        .unwrap();
    assert_eq!(reserved.len(), 2, "13 and 14");
    assert!(dispatch("16").unique(started).await.unwrap().is_created());
    let leases: Vec<_> = reserved.into_iter().map(|r| r.lease).collect();
    store.acknowledge(&leases).await.unwrap();
    log.lock().unwrap().clear();
    run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(*log.lock().unwrap(), ["16"]);
}

/// A unique job in a chain is refused with a clear error, and nothing of the chain is
/// stored.
pub async fn engine_unique_jobs_are_refused_in_compositions(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let step = |s: &str| queue.dispatch_named("u", json!(s)).on_queue(q.as_str());
    let err = Chain::new()
        .then(step("a"))
        .then(step("b").unique_key("k"))
        .via(&queue)
        .dispatch()
        .await
        .unwrap_err();
    if store.capabilities().groups.is_none() {
        assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        return;
    }
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("job `u` is unique"), "{err}");
    let size = store.inspect().unwrap().size(&q).await.unwrap();
    assert_eq!(size.total(), 0, "nothing stored");
    // Without its uniqueness it goes in.
    Chain::new()
        .then(step("a"))
        .then(step("b").unique_key("k").not_unique())
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
}

/// Debounce: a burst of dispatches runs once, with the last payload, after the wait; the
/// next dispatch after it ran queues the next run.
pub async fn engine_debounce(store: Store) {
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    if !store.capabilities().replace {
        if store.capabilities().claims {
            let err = queue
                .dispatch_named("u", json!(1))
                .on_queue(q.as_str())
                .debounce(Duration::from_millis(10))
                .await
                .unwrap_err();
            assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        }
        println!(
            "engine_debounce: not applicable to the {} driver (no replace)",
            store.driver()
        );
        return;
    }
    let log = recorder(&queue, "u");
    let key = unique("site");
    let mut first = None;
    for n in 1..=5 {
        let pushed = queue
            .dispatch_named("u", json!(format!("edit {n}")))
            .on_queue(q.as_str())
            .unique_key(key.as_str())
            .debounce(Duration::from_millis(300))
            .await
            .unwrap();
        match &first {
            None => first = Some(pushed.into_id()),
            Some(id) => assert_eq!(pushed, Dispatched::Replaced(id.clone())),
        }
    }
    run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(
        *log.lock().unwrap(),
        ["edit 5"],
        "one run, the last payload"
    );
    let next = queue
        .dispatch_named("u", json!("edit 6"))
        .on_queue(q.as_str())
        .unique_key(key.as_str())
        .debounce(Duration::from_millis(50))
        .await
        .unwrap();
    assert!(next.is_created(), "{next:?}");
    run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(*log.lock().unwrap(), ["edit 5", "edit 6"]);
}

/// `debounce(wait).max_wait(cap)`: a burst pushes its run back by `wait` after each
/// dispatch, but never past `cap` after the burst's first dispatch. wait 2 s, cap 3 s: the
/// first dispatch is due 2 s on; one 2.5 s later is due at the cap (3 s after the first, not
/// 4.5 s); one past the cap is due at once; the worker then runs the last payload once. A
/// new burst after that begins again. Without `debounce`, `max_wait` is refused; a store
/// that cannot replace refuses it before pushing anything.
pub async fn engine_debounce_max_wait(store: Store) {
    use std::time::{Instant, SystemTime};

    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let key = unique("site");
    let dispatch = |n: u32| {
        queue
            .dispatch_named("capped", json!(format!("edit {n}")))
            .on_queue(q.as_str())
            .unique_key(key.as_str())
            .debounce(Duration::from_secs(2))
            .max_wait(Duration::from_secs(3))
    };
    let err = queue
        .dispatch_named("capped", json!(0))
        .on_queue(q.as_str())
        .max_wait(Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(text) if text.contains("debounce")),
        "{err:?}"
    );
    // dispatch_many pushes in one step and cannot read the queued job first: refused.
    let err = queue.dispatch_many([dispatch(0)]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Config(text) if text.contains("dispatch_many")),
        "{err:?}"
    );
    if !store.capabilities().replace {
        if store.capabilities().claims {
            let err = dispatch(1).await.unwrap_err();
            assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
            let size = store.inspect().unwrap().size(&q).await.unwrap();
            assert_eq!(size.waiting + size.delayed, 0, "nothing pushed");
        }
        println!(
            "engine_debounce_max_wait: not applicable to the {} driver (no replace)",
            store.driver()
        );
        return;
    }
    let log = recorder(&queue, "capped");
    let track = store.track().unwrap();
    let due = |id: queue_core::JobId| async move {
        track
            .job(&id)
            .await
            .unwrap()
            .expect("the job is queued")
            .due_at
    };
    let before = SystemTime::now();
    let id = dispatch(1).await.unwrap().into_id();
    let after = SystemTime::now();
    let first_due = due(id.clone()).await;
    assert!(
        first_due + Duration::from_millis(5) >= before + Duration::from_secs(2)
            && first_due <= after + Duration::from_secs(2) + Duration::from_millis(5),
        "the first dispatch is due 2 s on: {first_due:?}, dispatched between {before:?} and {after:?}"
    );
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pushed = dispatch(2).await.unwrap();
    assert_eq!(pushed, Dispatched::Replaced(id.clone()));
    let capped = due(id.clone()).await;
    // Without the cap it would be 2 s after now: 4.5 s or more after the first dispatch.
    assert!(
        capped + Duration::from_millis(5) >= before + Duration::from_secs(3)
            && capped <= after + Duration::from_secs(3) + Duration::from_millis(5),
        "capped at 3 s after the burst began: {capped:?}, burst began between {before:?} and {after:?}"
    );
    // Past the cap: due at once.
    let wait = Duration::from_millis(3200).saturating_sub(started.elapsed());
    tokio::time::sleep(wait + Duration::from_millis(600)).await;
    let now = SystemTime::now();
    assert_eq!(dispatch(3).await.unwrap(), Dispatched::Replaced(id.clone()));
    let late = due(id.clone()).await;
    assert!(
        late <= SystemTime::now() + Duration::from_millis(5)
            && late + Duration::from_secs(1) >= now,
        "past the cap, due at once: {late:?} (now {now:?})"
    );
    run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(
        *log.lock().unwrap(),
        ["edit 3"],
        "one run, the last payload"
    );
    // The next burst begins again: due 2 s on, not at once.
    let before = SystemTime::now();
    let next = dispatch(4).await.unwrap().into_id();
    assert_ne!(next, id);
    let next_due = due(next).await;
    assert!(
        next_due + Duration::from_millis(5) >= before + Duration::from_secs(2),
        "a new burst: {next_due:?}"
    );
}
