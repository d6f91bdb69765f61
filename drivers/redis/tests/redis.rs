//! The redis driver's own tests, beyond the conformance suite: large batches, waking idle
//! workers, the key layout, script reloading, listings, URLs and bad input. Most cases run
//! on the single server and on the cluster (`single::*`, `cluster::*`); a few need one
//! server (`MONITOR`, ACL users, claims, group counters and waiting jobs, which the cluster
//! refuses).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{on_both, Backend};
use futures::StreamExt;
use queue_core::storage::{
    FailedStore, Groups, Guard, Inspect, JobState, PageRequest, RecordKey, Wake,
};
use queue_core::{
    Availability, Effect, Error, JobId, Lease, NewJob, Pushed, Queue, Settle, Settled, Storage,
    StorageExt, Unique, Until, WaitingJob, WorkerOptions,
};
use queue_redis::{RedisOptions, RedisStorage, MAX_RESERVE};
use queue_tests::cases::ids;
use queue_tests::{job, request, unique};

const LONG: Duration = Duration::from_secs(60);

on_both!(
    twenty_thousand_delayed_jobs_come_due_at_once,
    wait_wakes_on_push,
    wait_wakes_on_release_only_for_its_queues,
    wait_ends_when_the_next_job_is_due,
    one_push_across_queues,
    key_layout,
    scripts_reload_after_flush,
    malformed_leases_are_stale,
    chunked_deletes,
    reserve_by_name_is_bounded,
    connect_by_url,
    worker_drains_a_batch,
    failed_jobs_keep_store_wide_ids,
    oldest_available_counts_expired_reservations,
    listings_resume_after_their_cursor_left,
    records_layout,
);

fn delayed(queue: &str, payload: &[u8], at: SystemTime) -> NewJob {
    job(queue, "d", payload).available(Availability::At(at))
}

fn failed(store: &RedisStorage) -> &dyn FailedStore {
    store.failed_store().unwrap()
}

/// Spawns a `wait` on `queues` of up to 20 s; the task answers when it ended.
fn waiter(store: &Arc<RedisStorage>, queues: &[String]) -> tokio::task::JoinHandle<Instant> {
    let (store, queues) = (store.clone(), queues.to_vec());
    tokio::spawn(async move {
        store.wait(&queues, Duration::from_secs(20)).await.unwrap();
        Instant::now()
    })
}

/// A waiter of `queues` that is still waiting after 300 ms. A wait may end early with
/// nothing to do, as the contract allows: on a cluster, a message published by an earlier
/// push travels to the subscriber's node over the cluster bus and can arrive after the
/// waiter subscribed. Such a waiter is started again, 3 times at most: one that never
/// waits still fails the case.
async fn quiet_waiter(
    store: &Arc<RedisStorage>,
    queues: &[String],
) -> tokio::task::JoinHandle<Instant> {
    for _ in 0..3 {
        let waiting = waiter(store, queues);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if !waiting.is_finished() {
            return waiting;
        }
    }
    let waiting = waiter(store, queues);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "nothing to wake for");
    waiting
}

/// Waits for a waiter and returns how long after `since` it woke.
async fn woken_after(waiter: tokio::task::JoinHandle<Instant>, since: Instant) -> Duration {
    let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap();
    woke.saturating_duration_since(since)
}

/// Acknowledges every lease and checks each was current.
async fn ack_all(store: &RedisStorage, leases: &[Lease]) {
    let acked = store.acknowledge(leases).await.unwrap();
    assert!(acked.iter().all(|a| *a), "{acked:?}");
}

/// 20,000 jobs that come due in the same millisecond all drain, and no reservation takes
/// more than [`MAX_RESERVE`] at once (a peer's backend died on exactly this).
async fn twenty_thousand_delayed_jobs_come_due_at_once(backend: Backend) {
    let Some(store) = backend.store().await else {
        return;
    };
    let store = Arc::new(store);
    let q = unique("q");
    const N: usize = 20_000;
    let at = SystemTime::now() + Duration::from_secs(3);
    for chunk in 0..N / 1000 {
        let jobs = (0..1000)
            .map(|i| delayed(&q, (chunk * 1000 + i).to_string().as_bytes(), at))
            .collect();
        assert_eq!(store.push(jobs).await.unwrap().len(), 1000);
    }
    let size = store.size(&q).await.unwrap();
    assert_eq!(size.waiting + size.delayed, N as u64);
    if SystemTime::now() < at {
        let early = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
        assert!(early.is_empty(), "not before their time");
        tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.size(&q).await.unwrap().waiting, N as u64, "all due");

    let first = store.reserve(&request(&[&q], LONG, N)).await.unwrap();
    assert_eq!(first.len(), MAX_RESERVE, "one call takes a bounded chunk");
    let mut seen: Vec<Vec<u8>> = first.iter().map(|r| r.payload.clone()).collect();
    ack_all(
        &store,
        &first.into_iter().map(|r| r.lease).collect::<Vec<_>>(),
    )
    .await;

    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (store, q) = (store.clone(), q.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let got = store.reserve(&request(&[&q], LONG, 500)).await.unwrap();
                if got.is_empty() {
                    return seen;
                }
                ack_all(
                    &store,
                    &got.iter().map(|r| r.lease.clone()).collect::<Vec<_>>(),
                )
                .await;
                seen.extend(got.into_iter().map(|r| r.payload));
            }
        }));
    }
    for task in tasks {
        seen.extend(task.await.unwrap());
    }
    assert_eq!(seen.len(), N, "every job drained");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), N, "none twice");
    assert_eq!(store.size(&q).await.unwrap().total(), 0);
}

/// An idle worker's wait ends within milliseconds of a push to one of its queues.
async fn wait_wakes_on_push(backend: Backend) {
    let Some(store) = backend.store().await else {
        return;
    };
    let store = Arc::new(store);
    let (q, other) = (unique("q"), unique("other"));
    for round in 0..3 {
        let waiting = quiet_waiter(&store, &[other.clone(), q.clone()]).await;
        let pushed = Instant::now();
        store.push(vec![job(&q, "w", b"x")]).await.unwrap();
        let latency = woken_after(waiting, pushed).await;
        println!("round {round}: woken {latency:?} after the push");
        assert!(
            latency < Duration::from_millis(500),
            "woken after {latency:?}"
        );
        let got = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
        ack_all(&store, &[got[0].lease.clone()]).await;
    }
}

/// A release wakes idle workers too, and a push to another queue does not.
async fn wait_wakes_on_release_only_for_its_queues(backend: Backend) {
    let Some(store) = backend.store().await else {
        return;
    };
    let store = Arc::new(store);
    let (q, other) = (unique("q"), unique("other"));
    store.push(vec![job(&q, "r", b"x")]).await.unwrap();
    let held = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    let waiting = quiet_waiter(&store, std::slice::from_ref(&q)).await;
    store.push(vec![job(&other, "o", b"y")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a push to another queue does not wake"
    );
    let released = Instant::now();
    store.release(&held[0].lease, Duration::ZERO).await.unwrap();
    assert!(woken_after(waiting, released).await < Duration::from_millis(500));
}

/// `wait` never sleeps past the next delayed job, nor past an expiring lease.
async fn wait_ends_when_the_next_job_is_due(backend: Backend) {
    let Some(store) = backend.store().await else {
        return;
    };
    let q = unique("q");
    let later = SystemTime::now() + Duration::from_millis(600);
    store
        .push(vec![delayed(&q, b"later", later)])
        .await
        .unwrap();
    // Waits until `at_least` has passed. A wait may end early with nothing to do, as the
    // contract allows: on a cluster the push's own message reaches the subscriber's node
    // over the cluster bus and can arrive after the wait subscribed (see `quiet_waiter`).
    // Such a wait is waited again, 3 times at most: one that spins still fails the case.
    let waited =
        |store: &RedisStorage, queues: Vec<String>, timeout: Duration, at_least: Duration| {
            let store = store.clone();
            async move {
                let started = Instant::now();
                for _ in 0..4 {
                    store.wait(&queues, timeout).await.unwrap();
                    if started.elapsed() >= at_least {
                        break;
                    }
                }
                started.elapsed()
            }
        };
    let long = Duration::from_secs(20);
    let w = waited(&store, vec![q.clone()], long, Duration::from_millis(400)).await;
    assert!(
        w >= Duration::from_millis(400) && w < Duration::from_secs(2),
        "{w:?}"
    );
    let got = store
        .reserve(&request(&[&q], Duration::from_millis(500), 1))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    // The lease runs out in 500 ms: an idle worker wakes to take the job back.
    let w = waited(&store, vec![q.clone()], long, Duration::from_millis(300)).await;
    assert!(
        w >= Duration::from_millis(300) && w < Duration::from_secs(2),
        "{w:?}"
    );
    // Empty queues: the whole timeout.
    let w = waited(
        &store,
        vec![unique("empty")],
        Duration::from_millis(300),
        Duration::from_millis(290),
    )
    .await;
    assert!(w >= Duration::from_millis(290), "{w:?}");
}

/// One `push` may span several queues: order kept; each queue counts its own sequence, and
/// the ids name the queue, so they are unique in the store. A lease whose id names another
/// queue than its own is stale, whichever it is.
async fn one_push_across_queues(backend: Backend) {
    let Some(store) = backend.store().await else {
        return;
    };
    let (a, b) = (unique("a"), unique("b"));
    let pushed = store
        .push(vec![
            job(&a, "x", b"a1"),
            job(&b, "x", b"b1"),
            job(&a, "x", b"a2"),
            job(&b, "x", b"b2"),
        ])
        .await
        .unwrap();
    let pushed = ids(pushed);
    let expected = [(&a, 1), (&b, 1), (&a, 2), (&b, 2)].map(|(q, n)| JobId(format!("{q}/{n}")));
    assert_eq!(pushed, expected, "ids are `<queue>/<sequence>`");
    let got = store.reserve(&request(&[&b, &a], LONG, 10)).await.unwrap();
    let order: Vec<&[u8]> = got.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(order, [&b"b1"[..], b"b2", b"a1", b"a2"]);
    assert_eq!((&got[0].lease.queue, &got[2].lease.queue), (&b, &a));
    assert_eq!(got[0].lease.job_id, pushed[1]);
    let mut crossed = got[0].lease.clone();
    crossed.queue = a.clone();
    let mut renamed = got[0].lease.clone();
    renamed.job_id = JobId(format!("{a}/1"));
    for lease in [crossed, renamed] {
        assert_eq!(
            store
                .acknowledge(std::slice::from_ref(&lease))
                .await
                .unwrap(),
            [false]
        );
        assert!(store
            .extend_one(&lease, LONG)
            .await
            .unwrap_err()
            .is_lease_lost());
    }
    ack_all(&store, &[got[0].lease.clone()]).await;
    let mut queues = store.queues().await.unwrap();
    queues.retain(|q| *q == a || *q == b);
    assert_eq!(queues.len(), 2);
}

/// The keys are where the crate docs say, with the hash tags that keep a queue in one slot.
async fn key_layout(backend: Backend) {
    let Some(mut admin) = backend.admin().await else {
        return;
    };
    let options = backend.options();
    let p = options.get_prefix().to_owned();
    let store = RedisStorage::connect(options).await.unwrap();
    let q = unique("q");
    store
        .push(vec![job(&q, "layout", b"payload")])
        .await
        .unwrap();
    let name: String = admin
        .query(
            redis::cmd("HGET")
                .arg(format!("{{{p}:{q}}}:job:0000000000000001"))
                .arg("n"),
        )
        .await;
    assert_eq!(name, "layout");
    let pending: i64 = admin
        .query(redis::cmd("ZCARD").arg(format!("{{{p}:{q}}}:pending")))
        .await;
    assert_eq!(pending, 1);
    let registered: bool = admin
        .query(
            redis::cmd("SISMEMBER")
                .arg(format!("{{{p}}}:queues"))
                .arg(&q),
        )
        .await;
    assert!(registered);
    let held = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    store.fail(&held[0].lease, "boom").await.unwrap();
    let failed: i64 = admin
        .query(redis::cmd("ZCARD").arg(format!("{{{p}}}:failed:index")))
        .await;
    assert_eq!(failed, 1);
    assert!(store.lock("report", "me", LONG).await.unwrap());
    let ttl: i64 = admin
        .query(redis::cmd("PTTL").arg(format!("{p}:lock:{{report}}")))
        .await;
    assert!(
        ttl > 50_000 && ttl <= 60_000,
        "the lock expires by Redis: {ttl}"
    );
    let control = store.control().unwrap();
    assert_eq!(control.restart_generation().await.unwrap(), 0);
    control.request_restart().await.unwrap();
    let generation: i64 = admin
        .query(redis::cmd("GET").arg(format!("{{{p}}}:restart")))
        .await;
    assert_eq!(generation, 1);
    assert_eq!(control.restart_generation().await.unwrap(), 1);
}

/// A job's records are strings in its queue's slot, `{P:Q}:record:<member>:<kind>`, that
/// Redis expires itself; one read spans queues (on a cluster: slots); ids that name no job
/// of ours read as missing and are not written; a cancel mark that ran out no longer
/// cancels; a zero time to live deletes.
async fn records_layout(backend: Backend) {
    let Some(mut admin) = backend.admin().await else {
        return;
    };
    let options = backend.options();
    let p = options.get_prefix().to_owned();
    let store = RedisStorage::connect(options).await.unwrap();
    let track = store.capabilities().track.expect("jobs by id on both");
    let queues: Vec<String> = (0..4).map(|_| unique("q")).collect();
    let mut keys = Vec::new();
    for q in &queues {
        let id = ids(store.push(vec![job(q, "r", b"x")]).await.unwrap()).remove(0);
        let key = RecordKey::new(id, "status");
        assert!(track
            .put_record(&key, q.as_bytes(), LONG, None)
            .await
            .unwrap());
        keys.push(key);
    }
    let ttl: i64 = admin
        .query(redis::cmd("PTTL").arg(format!(
            "{{{p}:{}}}:record:0000000000000001:status",
            queues[0]
        )))
        .await;
    assert!(ttl > 50_000 && ttl <= 60_000, "expired by Redis: {ttl}");
    assert_eq!(track.prune_records().await.unwrap(), 0);
    let mut asked = keys.clone();
    for bad in ["", "1", "nope", &format!("{}/x", queues[0])] {
        asked.insert(1, RecordKey::new(bad, "status"));
    }
    asked.push(RecordKey::new(keys[0].job_id.clone(), "bad kind"));
    let mut expected: Vec<Option<Vec<u8>>> = queues
        .iter()
        .map(|q| Some(q.clone().into_bytes()))
        .collect();
    for _ in 0..4 {
        expected.insert(1, None);
    }
    expected.push(None);
    assert_eq!(track.records(&asked).await.unwrap(), expected);
    assert!(!track
        .put_record(&RecordKey::new("not-an-id", "status"), b"x", LONG, None)
        .await
        .unwrap());
    assert!(track
        .put_record(&keys[1], b"", Duration::ZERO, None)
        .await
        .unwrap());
    assert_eq!(track.records(&keys[1..2]).await.unwrap(), [None]);
    for bad in ["", "x", "1", "nope/1"] {
        let id = JobId::from(bad);
        assert_eq!(track.job(&id).await.unwrap(), None, "{bad:?}");
        assert_eq!(
            track.cancel(&id, LONG, Vec::new()).await.unwrap(),
            queue_core::storage::Cancellation::NotFound
        );
    }

    // A mark kept for a moment cancels while it lasts, then the lease is held again.
    let held = store
        .reserve(&request(&[&queues[2]], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    let mut foreign = held.lease.clone();
    foreign.queue = queues[3].clone();
    assert!(
        !track
            .put_record(&keys[2], b"x", LONG, Some(&foreign))
            .await
            .unwrap(),
        "a lease naming another queue is never current"
    );
    assert!(matches!(
        track
            .cancel(&held.lease.job_id, Duration::from_millis(300), Vec::new())
            .await
            .unwrap(),
        queue_core::storage::Cancellation::Marked(_)
    ));
    let lease = std::slice::from_ref(&held.lease);
    assert_eq!(
        store.extend(lease, LONG).await.unwrap(),
        [queue_core::LeaseStatus::Cancelled]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.extend(lease, LONG).await.unwrap(),
        [queue_core::LeaseStatus::Held]
    );
    ack_all(&store, lease).await;
}

/// After `SCRIPT FLUSH` (as after a restart) every operation loads its script again.
async fn scripts_reload_after_flush(backend: Backend) {
    let Some(mut admin) = backend.admin().await else {
        return;
    };
    let store = RedisStorage::connect(backend.options()).await.unwrap();
    let flush = redis::cmd("SCRIPT").arg("FLUSH").to_owned();
    let q = unique("q");
    store.push(vec![job(&q, "s", b"1")]).await.unwrap();
    admin.on_every_node(&flush).await;
    store.push(vec![job(&q, "s", b"2")]).await.unwrap();
    admin.on_every_node(&flush).await;
    let got = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    assert_eq!(got[0].payload, b"1");
    admin.on_every_node(&flush).await;
    store.fail(&got[0].lease, "x").await.unwrap();
    let listed = failed(&store).list(PageRequest::first(1)).await.unwrap();
    admin.on_every_node(&flush).await;
    assert!(failed(&store)
        .retry(&listed.items[0].id)
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.size(&q).await.unwrap().waiting, 2);
}

/// Leases and ids that name no job of ours are stale or absent, never an error or a crash.
async fn malformed_leases_are_stale(backend: Backend) {
    let Some(store) = backend.store().await else {
        return;
    };
    let q = unique("q");
    store.push(vec![job(&q, "m", b"x")]).await.unwrap();
    let held = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    let numbers = [
        "",
        "abc",
        "-1",
        "+1",
        "99999999999999999999",
        "1 ",
        "1e3",
        "1/",
    ];
    let mut ids: Vec<String> = numbers.iter().map(|n| format!("{q}/{n}")).collect();
    // Bare numbers, another queue's id, no queue at all.
    ids.extend(["1", "/1", "other/1", &format!("{q}1"), &format!("x{q}/1")].map(String::from));
    ids.extend(numbers.map(String::from));
    for job_id in ids {
        let lease = Lease {
            job_id: JobId::from(job_id.as_str()),
            queue: q.clone(),
            token: held.lease.token.clone(),
        };
        let settles = [
            Settle::ack(lease.clone()),
            Settle::retry(lease.clone(), Duration::ZERO),
            Settle::release(lease.clone(), Duration::ZERO),
            Settle::fail(lease.clone(), "x"),
        ];
        let reply = store.settle(settles.to_vec(), None).await.unwrap();
        assert_eq!(reply.settled, [Settled::Stale; 4], "{job_id:?}");
        let extended = store
            .extend(std::slice::from_ref(&lease), LONG)
            .await
            .unwrap();
        assert_eq!(extended, [queue_core::LeaseStatus::Lost], "{job_id:?}");
    }
    let mut wrong_token = held.lease.clone();
    wrong_token.token.push('x');
    let twice = held.lease.clone();
    assert_eq!(
        store
            .acknowledge(&[wrong_token, held.lease.clone(), twice])
            .await
            .unwrap(),
        [false, true, false],
        "a lease given twice in one batch is acknowledged once"
    );
    let failed = failed(&store);
    assert_eq!(failed.get("").await.unwrap(), None);
    assert!(!failed.forget("abc").await.unwrap());
    assert_eq!(failed.retry("12345").await.unwrap(), None);
    for cursor in ["", "12", "x:1", "1:x", "1:-1"] {
        let err = failed
            .list(PageRequest::after(cursor, 5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Contract { .. }), "{cursor:?}: {err}");
    }
    assert!(failed
        .list(PageRequest::first(0))
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(store.acknowledge(&[]).await.unwrap().is_empty());
    assert!(store.extend(&[], LONG).await.unwrap().is_empty());
    assert!(store.push(Vec::new()).await.unwrap().is_empty());
    let none = store.reserve(&request(&[], LONG, 5)).await.unwrap();
    assert!(none.is_empty());
    let reply = store.settle(Vec::new(), None).await.unwrap();
    assert!(reply.settled.is_empty() && reply.reserved.is_empty());
}

/// Clear, flush and prune work through more than one chunk.
async fn chunked_deletes(backend: Backend) {
    let Some(store) = backend.store().await else {
        return;
    };
    let q = unique("q");
    let jobs = |name: &str, n: usize| (0..n).map(|_| job(&q, name, b"x")).collect::<Vec<_>>();
    store.push(jobs("c", 2_500)).await.unwrap();
    assert_eq!(
        store
            .reserve(&request(&[&q], LONG, 10))
            .await
            .unwrap()
            .len(),
        10
    );
    assert_eq!(store.clear(&q).await.unwrap(), 2_490);
    let size = store.size(&q).await.unwrap();
    assert_eq!((size.waiting, size.delayed, size.reserved), (0, 0, 10));

    store.push(jobs("f", 1_100)).await.unwrap();
    loop {
        let got = store.reserve(&request(&[&q], LONG, 500)).await.unwrap();
        if got.is_empty() {
            break;
        }
        let fails = got
            .into_iter()
            .map(|r| Settle::fail(r.lease, "e"))
            .collect();
        store.settle(fails, None).await.unwrap();
    }
    let failed = failed(&store);
    assert_eq!(failed.count().await.unwrap(), 1_100);
    let before = SystemTime::now() - Duration::from_secs(60);
    assert_eq!(failed.prune(before).await.unwrap(), 0);
    assert_eq!(failed.flush().await.unwrap(), 1_100);
    assert_eq!(failed.count().await.unwrap(), 0);
}

/// A reservation by name looks at a bounded number of jobs; the rest is found later.
async fn reserve_by_name_is_bounded(backend: Backend) {
    let Some(_) = backend.admin().await else {
        return;
    };
    let options = backend.options().name_scan_limit(10);
    let store = RedisStorage::connect(options).await.unwrap();
    let q = unique("q");
    let mut jobs: Vec<NewJob> = (0..25).map(|_| job(&q, "other", b"o")).collect();
    jobs.push(job(&q, "wanted", b"w"));
    store.push(jobs).await.unwrap();
    let mut by_name = request(&[&q], LONG, 5);
    by_name.name = Some("wanted".into());
    let hidden = store.reserve(&by_name).await.unwrap();
    assert!(hidden.is_empty(), "behind more than the scan limit");
    assert_eq!(
        store
            .reserve(&request(&[&q], LONG, 20))
            .await
            .unwrap()
            .len(),
        20
    );
    let got = store.reserve(&by_name).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "wanted");
}

/// The driver is chosen by URL scheme, and the connect options name its keys (the queues'
/// and the failed store's); it is durable only with an fsync on every write, as every
/// master says now.
async fn connect_by_url(backend: Backend) {
    let Some(mut admin) = backend.admin().await else {
        return;
    };
    let (prefix, failed) = (common::prefix(), common::prefix());
    let mut options = queue_core::ConnectOptions::default();
    options.table = Some(prefix.clone());
    options.failed_table = Some(failed.clone());
    let store = queue_core::storage::connect(&backend.url(), options)
        .await
        .unwrap();
    let caps = store.capabilities();
    assert_eq!(caps.driver, "redis");
    assert!(caps.wake.is_some() && caps.reserve_by_name);
    assert_eq!(caps.claims, backend == Backend::Single);
    assert_eq!(caps.groups.is_some(), backend == Backend::Single);
    let q = unique("q");
    store.push(vec![job(&q, "u", b"x")]).await.unwrap();
    let held = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    store.fail(&held[0].lease, "e").await.unwrap();
    for key in [
        format!("{{{prefix}:{q}}}:seq"),
        format!("{{{failed}}}:failed:index"),
    ] {
        let here: bool = admin.query(redis::cmd("EXISTS").arg(&key)).await;
        assert!(here, "{key}");
    }
    let mut durable = true;
    let seeds = match backend {
        Backend::Single => vec![backend.url()],
        Backend::Cluster => common::cluster_seeds(),
    };
    for seed in seeds {
        durable &= config(&seed, "appendonly").await == "yes"
            && config(&seed, "appendfsync").await == "always";
    }
    assert_eq!(caps.durable, durable);
    let direct = RedisStorage::connect(backend.options()).await.unwrap();
    assert_eq!(direct.is_cluster(), backend == Backend::Cluster);
}

/// A setting of the server at `url` (`CONFIG GET`).
async fn config(url: &str, name: &str) -> String {
    let mut node = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(&mut node)
        .await
        .unwrap();
    reply[1].clone()
}

/// Bad settings and malformed URLs (one server's and a cluster's) are configuration errors;
/// an absent server or cluster is a backend error.
#[tokio::test]
async fn bad_settings() {
    for prefix in ["", "a{b", "c}"] {
        let err = RedisStorage::connect(RedisOptions::new("redis://127.0.0.1:6379").prefix(prefix))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{prefix}: {err}");
    }
    for bad in [
        "redis://127.0.0.1:notaport",
        "http://127.0.0.1:6379",
        "redis+cluster://127.0.0.1:7000/3",
        "redis+cluster://127.0.0.1:7000?cluster=true",
        "redis+cluster://127.0.0.1:7000?nodes=127.0.0.1:x",
    ] {
        let err = RedisStorage::connect(RedisOptions::new(bad))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
    }
    for absent in [
        "redis://127.0.0.1:1",
        "redis+cluster://127.0.0.1:1?nodes=127.0.0.1:2",
    ] {
        let options = RedisOptions::new(absent).connect_timeout(Duration::from_millis(500));
        let err = RedisStorage::connect(options).await.unwrap_err();
        assert!(common::is_backend_error(&err), "{absent}: {err}");
    }
}

/// A worker with concurrency 8 drains a batch-dispatched queue (a smoke test of the fast
/// path; the benchmarks measure it).
async fn worker_drains_a_batch(backend: Backend) {
    let Some(store) = backend.store().await else {
        return;
    };
    let store: Arc<dyn Storage> = Arc::new(store);
    let queue = Queue::from_arc(store.clone());
    let q = unique("q");
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = ran.clone();
    queue.listen("noop", move |_: serde_json::Value, _ctx| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
    });
    const N: usize = 3_000;
    let envelope = br#"{"v":1,"name":"noop","data":null}"#;
    let started = Instant::now();
    for _ in 0..N / 1000 {
        let jobs = (0..1000).map(|_| job(&q, "noop", envelope)).collect();
        store.push(jobs).await.unwrap();
    }
    let pushed = started.elapsed();
    let started = Instant::now();
    let options = WorkerOptions::default()
        .queues([q.as_str()])
        .concurrency(8)
        .stop_when_empty();
    let summary = queue_tests::engine::run_worker(&queue, options).await;
    let ran_for = started.elapsed();
    println!(
        "pushed {N} in {pushed:?} ({:.0}/s), ran them in {ran_for:?} ({:.0}/s)",
        N as f64 / pushed.as_secs_f64(),
        N as f64 / ran_for.as_secs_f64()
    );
    assert_eq!(summary.processed, N as u64, "{summary:?}");
    assert_eq!(ran.load(std::sync::atomic::Ordering::Relaxed), N);
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
}

/// The failed store keeps the job's store-wide id, and a retried job gets a new one of the
/// same form on its queue.
async fn failed_jobs_keep_store_wide_ids(backend: Backend) {
    let Some(store) = backend.store().await else {
        return;
    };
    let q = unique("q/with/slashes");
    let first = store.push_one(job(&q, "f", b"x")).await.unwrap().into_id();
    assert_eq!(first, JobId(format!("{q}/1")));
    let held = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(held.lease.job_id, first);
    store.fail(&held.lease, "boom").await.unwrap();
    let failed = failed(&store);
    let listed = failed
        .list(PageRequest::first(1))
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!(listed.job_id, first.0);
    assert_eq!(failed.get(&listed.id).await.unwrap(), Some(listed.clone()));
    let retried = failed.retry(&listed.id).await.unwrap();
    assert_eq!(retried, Some(Pushed::Created(JobId(format!("{q}/2")))));
    let again = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        Some(again.lease.job_id.clone()),
        retried.map(Pushed::into_id)
    );
    ack_all(&store, &[again.lease]).await;
}

/// The oldest available job: a pending one by its available time, an expired reservation
/// by its deadline, whichever is older.
async fn oldest_available_counts_expired_reservations(backend: Backend) {
    let Some(store) = backend.store().await else {
        return;
    };
    let q = unique("q");
    store.push(vec![job(&q, "o", b"1")]).await.unwrap();
    let lease = Duration::from_millis(100);
    let held = store
        .reserve(&request(&[&q], lease, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(store.oldest_available(&q).await.unwrap(), None);
    let deadline = SystemTime::now() + lease;
    tokio::time::sleep(Duration::from_millis(250)).await;
    store.push(vec![job(&q, "o", b"2")]).await.unwrap();
    let oldest = store
        .oldest_available(&q)
        .await
        .unwrap()
        .expect("the expired reservation");
    let skew = Duration::from_secs(1);
    assert!(oldest <= SystemTime::now() - Duration::from_millis(100));
    assert!(
        oldest + skew >= deadline && oldest <= deadline + skew,
        "{oldest:?}"
    );
    // Not taken again, the lease still finishes the job; then the pushed one is the oldest.
    ack_all(&store, &[held.lease]).await;
    let next = store
        .oldest_available(&q)
        .await
        .unwrap()
        .expect("job 2 waits");
    assert!(next > oldest, "{next:?} after {oldest:?}");
}

/// A page after a cursor whose own job left the listing since (reserved, forgotten) starts
/// right after where that job was, also among jobs of the same millisecond.
async fn listings_resume_after_their_cursor_left(backend: Backend) {
    let Some(store) = backend.store().await else {
        return;
    };
    let q = unique("q");
    // One batch: every job available in the same millisecond.
    let pushed = ids(store
        .push(
            (0..8)
                .map(|i| job(&q, "l", format!("{i}").as_bytes()))
                .collect(),
        )
        .await
        .unwrap());
    let page = |after: Option<String>| {
        let (store, q) = (store.clone(), q.clone());
        async move {
            let page = PageRequest { after, limit: 3 };
            store.jobs(&q, JobState::Waiting, page).await.unwrap()
        }
    };
    let first = page(None).await;
    let listed: Vec<JobId> = first.items.iter().map(|j| j.id.clone()).collect();
    assert_eq!(listed, pushed[..3]);
    // The first four are reserved: the cursor's job (the third) left the waiting jobs.
    let held = store.reserve(&request(&[&q], LONG, 4)).await.unwrap();
    let second = page(first.next.clone()).await;
    let listed: Vec<JobId> = second.items.iter().map(|j| j.id.clone()).collect();
    assert_eq!(listed, pushed[4..7], "after where the cursor's job was");
    let reserved = store
        .jobs(&q, JobState::Reserved, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(reserved.items.len(), 4);
    assert!(reserved
        .items
        .iter()
        .all(|j| j.state == JobState::Reserved && j.attempts == 1));

    // The failed store: four fail in one call (the same millisecond), newest first.
    let fails = held
        .into_iter()
        .map(|r| Settle::fail(r.lease, "f"))
        .collect();
    store.settle(fails, None).await.unwrap();
    let failed = failed(&store);
    let first = failed.list(PageRequest::first(2)).await.unwrap();
    let newest: Vec<&str> = first.items.iter().map(|f| f.job_id.as_str()).collect();
    assert_eq!(newest, [&pushed[3].0, &pushed[2].0]);
    assert!(failed.forget(&first.items[1].id).await.unwrap());
    let rest = failed
        .list(PageRequest::after(first.next.unwrap(), 5))
        .await
        .unwrap();
    let older: Vec<&str> = rest.items.iter().map(|f| f.job_id.as_str()).collect();
    assert_eq!(older, [&pushed[1].0, &pushed[0].0]);
    assert_eq!(rest.next, None);
}

/// Settling with a fetch, acknowledging a batch, pushing with claims (also replacing a
/// queued holder) and a guarded apply (applied or refused) are each one `EVALSHA` on the
/// store's connection and nothing else (watched with `MONITOR`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_script_call_per_round_trip() {
    let Some(mut admin) = Backend::Single.admin().await else {
        return;
    };
    let store = Backend::Single.store().await.unwrap();
    let q = unique("q");
    store
        .push(
            (0..6)
                .map(|i| job(&q, "m", format!("{i}").as_bytes()))
                .collect(),
        )
        .await
        .unwrap();
    // Warm up: the scripts are loaded now, not while watching.
    let held = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    let reply = store
        .settle(
            vec![Settle::ack(held[0].lease.clone())],
            Some(&request(&[&q], LONG, 1)),
        )
        .await
        .unwrap();
    store
        .push(vec![job(&q, "w", b"w").unique(Unique::new(unique("k")))])
        .await
        .unwrap();

    let id = store.client_id().await.unwrap();
    let listing: String = admin
        .query(redis::cmd("CLIENT").arg("LIST").arg("ID").arg(id))
        .await;
    let addr = listing
        .split_whitespace()
        .find_map(|f| f.strip_prefix("addr="))
        .expect("the connection's address")
        .to_owned();
    let client = redis::Client::open(common::url()).unwrap();
    let mut monitor = client.get_async_monitor().await.unwrap();
    let mut lines = monitor.on_message::<String>();

    let settled = store
        .settle(
            vec![Settle::ack(reply.reserved[0].lease.clone())],
            Some(&request(&[&q], LONG, 3)),
        )
        .await
        .unwrap();
    assert_eq!(settled.reserved.len(), 3);
    let leases: Vec<Lease> = settled.reserved.iter().map(|r| r.lease.clone()).collect();
    ack_all(&store, &leases).await;
    let key = unique("k");
    let pushed = store
        .push(vec![
            job(&q, "u", b"1").unique(Unique::new(&key)),
            job(&q, "u", b"2").unique(Unique::new(&key)),
        ])
        .await
        .unwrap();
    // Replacing the queued holder, found and changed inside the script.
    let replaced = store
        .push(vec![
            job(&q, "u", b"3").unique(Unique::new(&key).replacing())
        ])
        .await
        .unwrap();
    assert_eq!(replaced, [Pushed::Replaced(pushed[0].id().clone())]);
    let group = unique("g");
    let tick = |n: &str| {
        vec![
            Effect::Push(job(&q, "t", b"t").unique(Unique::new(format!("{group}:{n}")))),
            Effect::Count {
                group: group.clone(),
                deltas: vec![("ticks".to_owned(), 1)],
            },
        ]
    };
    for (n, applies) in [("1", true), ("again", false)] {
        let guard = Guard::new(group.as_str(), "next", 0, 1);
        assert_eq!(store.apply_if(guard, tick(n)).await.unwrap(), applies);
    }
    store.client_id().await.unwrap(); // the marker: everything before it has been seen

    let ours = format!(" {addr}]");
    let mut commands = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next())
            .await
            .expect("MONITOR goes on")
            .expect("a line");
        if !line.contains(&ours) {
            continue;
        }
        let command = line
            .split(&ours)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_owned();
        if command == "\"CLIENT\"" {
            break;
        }
        commands.push(command);
    }
    assert_eq!(
        commands, ["\"EVALSHA\""; 6],
        "settle+fetch, acknowledge, push, push replacing, apply_if applied and refused"
    );
}

/// Claims, group counters and their keys (one server only: the cluster refuses both). A
/// claim holds its holder's id, also while a failed job holds it; a counter that cannot be
/// added to fails the call and leaves its settlement unapplied, the ones before it applied,
/// and leaves an apply wholly undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_and_groups_layout() {
    let Some(mut admin) = Backend::Single.admin().await else {
        return;
    };
    let options = Backend::Single.options();
    let p = options.get_prefix().to_owned();
    let store = RedisStorage::connect(options).await.unwrap();
    let q = unique("q");
    let key = unique("k");
    let claim = format!("{{{p}}}:claim:{key}");
    let unique_job =
        |payload: &[u8]| job(&q, "c", payload).unique(Unique::new(&key).until(Until::Succeeded));
    let holder = store.push_one(unique_job(b"1")).await.unwrap().into_id();
    let value: String = admin.query(redis::cmd("GET").arg(&claim)).await;
    assert_eq!(value, holder.0);
    let fields: Vec<String> = admin
        .query(
            redis::cmd("HMGET")
                .arg(format!("{{{p}:{q}}}:job:0000000000000001"))
                .arg("u")
                .arg("w"),
        )
        .await;
    assert_eq!(fields, [key.as_str(), "succeeded"]);
    let held = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    store.fail(&held.lease, "no").await.unwrap();
    let value: String = admin.query(redis::cmd("GET").arg(&claim)).await;
    assert_eq!(value, holder.0, "the failed job holds it under its id");
    let failed_job = failed(&store)
        .list(PageRequest::first(1))
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!(
        failed_job.unique,
        Some(Unique::new(&key).until(Until::Succeeded))
    );
    assert!(failed(&store).forget(&failed_job.id).await.unwrap());
    let gone: bool = admin.query(redis::cmd("EXISTS").arg(&claim)).await;
    assert!(!gone, "forgetting released it");

    let group = unique("g");
    let hash = format!("{{{p}}}:group:{group}");
    store
        .push(
            (0..3)
                .map(|i| job(&q, "g", format!("{i}").as_bytes()))
                .collect(),
        )
        .await
        .unwrap();
    let held = store.reserve(&request(&[&q], LONG, 3)).await.unwrap();
    let count = |lease: &Lease, deltas: Vec<(&str, i64)>| {
        Settle::ack(lease.clone()).effect(Effect::Count {
            group: group.clone(),
            deltas: deltas.into_iter().map(|(n, d)| (n.to_owned(), d)).collect(),
        })
    };
    let reply = store
        .settle(
            vec![count(&held[0].lease, vec![("done", 1), ("big", i64::MAX)])],
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, [Settled::Applied]);
    let counters = store.counters(&group).await.unwrap();
    assert_eq!(
        counters,
        [("big".to_owned(), i64::MAX), ("done".to_owned(), 1)]
    );
    // The second settlement would overflow `big`: the call fails, the first settlement of it
    // is applied, the second not at all (its `done` put back, its job still reserved).
    let err = store
        .settle(
            vec![
                count(&held[1].lease, vec![("done", 1)]),
                count(&held[2].lease, vec![("done", 1), ("big", 1)]),
            ],
            None,
        )
        .await
        .unwrap_err();
    assert!(common::is_backend_error(&err), "{err}");
    let counters = store.counters(&group).await.unwrap();
    assert_eq!(
        counters,
        [("big".to_owned(), i64::MAX), ("done".to_owned(), 2)]
    );
    assert_eq!(store.size(&q).await.unwrap().reserved, 1);
    let _: () = admin
        .query(redis::cmd("HSET").arg(&hash).arg("big").arg("not a number"))
        .await;
    let err = store
        .settle(
            vec![count(&held[2].lease, vec![("done", 1), ("big", 1)])],
            None,
        )
        .await
        .unwrap_err();
    assert!(common::is_backend_error(&err), "{err}");
    let done: i64 = admin.query(redis::cmd("HGET").arg(&hash).arg("done")).await;
    assert_eq!(done, 2, "put back");
    let reply = store
        .settle(vec![count(&held[2].lease, vec![("done", 1)])], None)
        .await
        .unwrap();
    assert_eq!(reply.settled, [Settled::Applied]);
    // An apply is all or none: a counter that cannot be added to leaves the push and the
    // other counters of the call undone.
    let (next, key) = (unique("next"), unique("k"));
    let err = store
        .apply(vec![
            Effect::Push(job(&next, "n", b"n").unique(Unique::new(&key))),
            Effect::Count {
                group: group.clone(),
                deltas: vec![("done".to_owned(), 1), ("big".to_owned(), 1)],
            },
        ])
        .await
        .unwrap_err();
    assert!(common::is_backend_error(&err), "{err}");
    let done: i64 = admin.query(redis::cmd("HGET").arg(&hash).arg("done")).await;
    assert_eq!(done, 3, "put back");
    assert_eq!(
        store.size(&next).await.unwrap().total(),
        0,
        "nothing pushed"
    );
    let claimed: bool = admin
        .query(redis::cmd("EXISTS").arg(format!("{{{p}}}:claim:{key}")))
        .await;
    assert!(!claimed);
    assert!(store.remove(&group).await.unwrap());
    let gone: bool = admin.query(redis::cmd("EXISTS").arg(&hash)).await;
    assert!(!gone);
}

/// `Unique::replace` (one server only): the key is one namespace per store, so the queued
/// job holding it may be on another queue than the pushed job's (here one whose name holds
/// a slash). It is replaced on its own queue, found from the id the claim holds: name,
/// payload and available time change, id, attempts and claim stay; that queue's idle
/// workers are woken, and the pushed job's queue gets nothing, not even a place in the
/// registry. Reserved, the holder makes the push a duplicate. In one batch, a later job
/// replaces an earlier one of another queue the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replacing_a_holder_on_another_queue() {
    let Some(mut admin) = Backend::Single.admin().await else {
        return;
    };
    let options = Backend::Single.options();
    let p = options.get_prefix().to_owned();
    let store = Arc::new(RedisStorage::connect(options).await.unwrap());
    assert!(store.capabilities().replace);
    let (holding, pushing) = (format!("{}/x", unique("q")), unique("q"));
    let key = unique("k");
    let replacing = |name: &str, payload: &[u8]| {
        job(&pushing, name, payload).unique(Unique::new(&key).replacing())
    };
    let holder = store
        .push_one(job(&holding, "a", b"1").unique(Unique::new(&key)))
        .await
        .unwrap()
        .into_id();
    assert_eq!(holder.0, format!("{holding}/1"));
    // Reserved and retried in two hours: queued again, its attempt counted.
    let held = store
        .reserve(&request(&[&holding], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    let hour = Duration::from_secs(3600);
    let retried = store
        .settle(vec![Settle::retry(held.lease, 2 * hour)], None)
        .await
        .unwrap();
    assert_eq!(retried.settled, [Settled::Applied]);

    let waiting = quiet_waiter(&store, std::slice::from_ref(&holding)).await;
    let pushed = Instant::now();
    let later = replacing("b", b"2").available(Availability::After(hour));
    assert_eq!(
        store.push_one(later).await.unwrap(),
        Pushed::Replaced(holder.clone())
    );
    assert!(
        woken_after(waiting, pushed).await < Duration::from_millis(500),
        "the holder's queue is woken"
    );
    let size = store.size(&holding).await.unwrap();
    assert_eq!((size.total(), size.delayed), (1, 1), "{size:?}");
    assert_eq!(store.size(&pushing).await.unwrap().total(), 0);
    let registered: bool = admin
        .query(
            redis::cmd("SISMEMBER")
                .arg(format!("{{{p}}}:queues"))
                .arg(&pushing),
        )
        .await;
    assert!(!registered, "nothing was pushed to {pushing}");
    let claimed: String = admin
        .query(redis::cmd("GET").arg(format!("{{{p}}}:claim:{key}")))
        .await;
    assert_eq!(claimed, holder.0);
    let fields: Vec<String> = admin
        .query(
            redis::cmd("HMGET")
                .arg(format!("{{{p}:{holding}}}:job:0000000000000001"))
                .arg(&["n", "p", "a", "u", "w"]),
        )
        .await;
    assert_eq!(fields, ["b", "2", "1", key.as_str(), "terminal"]);
    let score: f64 = admin
        .query(
            redis::cmd("ZSCORE")
                .arg(format!("{{{p}:{holding}}}:pending"))
                .arg("0000000000000001"),
        )
        .await;
    let (secs, micros): (f64, f64) = admin.query(&redis::cmd("TIME")).await;
    let due_in = score / 1000.0 - (secs + micros / 1e6);
    assert!((3590.0..=3600.0).contains(&due_in), "due in {due_in} s");

    // Due now again: a worker of the holder's queue gets the last name and payload.
    assert_eq!(
        store.push_one(replacing("c", b"3")).await.unwrap(),
        Pushed::Replaced(holder.clone())
    );
    let got = store
        .reserve(&request(&[&holding], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (
            &got.lease.job_id,
            got.name.as_str(),
            &got.payload[..],
            got.attempts
        ),
        (&holder, "c", &b"3"[..], 2)
    );
    assert_eq!(
        store.push_one(replacing("d", b"4")).await.unwrap(),
        Pushed::Duplicate(holder.clone()),
        "reserved: a duplicate"
    );
    ack_all(&store, &[got.lease]).await;

    // In one batch: the first job is created on its queue, the second (of another queue)
    // replaces it there.
    let both = store
        .push(vec![
            job(&holding, "e", b"5").unique(Unique::new(&key).replacing()),
            replacing("f", b"6"),
        ])
        .await
        .unwrap();
    let second = JobId(format!("{holding}/2"));
    assert_eq!(
        both,
        [Pushed::Created(second.clone()), Pushed::Replaced(second)]
    );
    assert_eq!(store.size(&pushing).await.unwrap().total(), 0);
    let got = store
        .reserve(&request(&[&holding], LONG, 10))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].name.as_str(), &got[0].payload[..]),
        ("f", &b"6"[..])
    );
    ack_all(&store, &[got[0].lease.clone()]).await;
}

/// `apply_if` (one server only): the guard is a field of the group's hash, compared exactly
/// over all of `i64` (values Lua's numbers cannot tell apart), set before the call's counts
/// (which may add to it), put back with them when one cannot be added to, and a refused step
/// writes nothing, not even the hash. A guard counter that holds no integer fails the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guarded_apply_layout() {
    let Some(mut admin) = Backend::Single.admin().await else {
        return;
    };
    let options = Backend::Single.options();
    let p = options.get_prefix().to_owned();
    let store = RedisStorage::connect(options).await.unwrap();
    let (group, q) = (unique("g"), unique("q"));
    let hash = format!("{{{p}}}:group:{group}");
    let guard = |expect, set| Guard::new(group.as_str(), "next", expect, set);
    let count = |name: &str, delta: i64| Effect::Count {
        group: group.clone(),
        deltas: vec![(name.to_owned(), delta)],
    };

    assert!(!store
        .apply_if(guard(1, 2), vec![count("n", 1)])
        .await
        .unwrap());
    let found: bool = admin.query(redis::cmd("EXISTS").arg(&hash)).await;
    assert!(!found, "a refused step creates no hash");
    assert!(store.apply_if(guard(0, i64::MAX), vec![]).await.unwrap());
    let next: String = admin.query(redis::cmd("HGET").arg(&hash).arg("next")).await;
    assert_eq!(next, i64::MAX.to_string());
    // i64::MAX - 1 and i64::MAX are the same number in Lua: compared as text, they differ.
    assert!(!store
        .apply_if(guard(i64::MAX - 1, 0), vec![count("n", 1)])
        .await
        .unwrap());
    assert!(store
        .apply_if(guard(i64::MAX, i64::MIN), vec![count("n", 1)])
        .await
        .unwrap());
    assert!(!store
        .apply_if(guard(i64::MIN + 1, 0), vec![])
        .await
        .unwrap());
    assert_eq!(
        store.counters(&group).await.unwrap(),
        [("n".to_owned(), 1), ("next".to_owned(), i64::MIN)]
    );
    // The guard is set first; the same call's count adds to the value set.
    assert!(store
        .apply_if(guard(i64::MIN, 10), vec![count("next", 5)])
        .await
        .unwrap());
    assert_eq!(
        store.counters(&group).await.unwrap()[1],
        ("next".to_owned(), 15)
    );

    // A count that cannot be added to puts back the guard and every other counter of the
    // call, even one counted twice, and pushes nothing.
    let key = unique("k");
    let err = store
        .apply_if(
            guard(15, 20),
            vec![
                Effect::Push(job(&q, "n", b"n").unique(Unique::new(&key))),
                count("next", 1),
                count("n", 1),
                count("n", i64::MAX),
            ],
        )
        .await
        .unwrap_err();
    assert!(common::is_backend_error(&err), "{err}");
    assert_eq!(
        store.counters(&group).await.unwrap(),
        [("n".to_owned(), 1), ("next".to_owned(), 15)],
        "all put back"
    );
    assert_eq!(store.size(&q).await.unwrap().total(), 0, "nothing pushed");
    // On a group that had no hash, the put back leaves none.
    let fresh = unique("g");
    let err = store
        .apply_if(
            Guard::new(fresh.as_str(), "next", 0, 1),
            vec![
                Effect::Count {
                    group: fresh.clone(),
                    deltas: vec![("a".to_owned(), i64::MAX)],
                },
                Effect::Count {
                    group: fresh.clone(),
                    deltas: vec![("a".to_owned(), 1)],
                },
            ],
        )
        .await
        .unwrap_err();
    assert!(common::is_backend_error(&err), "{err}");
    assert_eq!(store.counters(&fresh).await.unwrap(), []);
    let found: bool = admin
        .query(redis::cmd("EXISTS").arg(format!("{{{p}}}:group:{fresh}")))
        .await;
    assert!(!found, "no hash left behind");

    // A guard counter that holds no integer fails the call, changing nothing.
    let _: () = admin
        .query(redis::cmd("HSET").arg(&hash).arg("next").arg("015"))
        .await;
    let err = store
        .apply_if(guard(15, 16), vec![count("n", 1)])
        .await
        .unwrap_err();
    assert!(common::is_backend_error(&err), "{err}");
    let n: i64 = admin.query(redis::cmd("HGET").arg(&hash).arg("n")).await;
    assert_eq!(n, 1);
    assert!(store.remove(&group).await.unwrap());
}

/// Waiting jobs (one server only: the cluster refuses them): the hash a hold stores, a
/// release that wakes idle workers and registers the queue as a push does, a delay that
/// counts from the release, a claim taken by the released job, a job held and released in
/// one call, and dependencies that saturate instead of overflowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_jobs_layout() {
    let Some(mut admin) = Backend::Single.admin().await else {
        return;
    };
    let options = Backend::Single.options();
    let p = options.get_prefix().to_owned();
    let store = Arc::new(RedisStorage::connect(options).await.unwrap());
    let deps = |key: &str, delta: i64| Effect::Deps {
        key: key.to_owned(),
        delta,
    };
    let hold = |key: &str, deps: u32, job: NewJob| Effect::Hold(WaitingJob::new(key, deps, job));
    let (q, later, now, claim) = (unique("q"), unique("later"), unique("now"), unique("u"));
    store
        .apply(vec![
            hold(
                &later,
                2,
                job(&q, "l", b"late")
                    .available(Availability::After(LONG))
                    .unique(Unique::new(&claim).until(Until::Succeeded)),
            ),
            hold(&now, 1, job(&q, "n", b"now")),
        ])
        .await
        .unwrap();
    let fields: Vec<Option<String>> = admin
        .query(
            redis::cmd("HMGET")
                .arg(format!("{{{p}}}:waiting:{later}"))
                .arg(&["d", "q", "v", "n", "p", "u", "w"]),
        )
        .await;
    let expected = ["2", &q, "+60000", "l", "late", &claim, "succeeded"];
    assert_eq!(fields, expected.map(|f| Some(f.to_owned())));
    let fields: Vec<Option<String>> = admin
        .query(
            redis::cmd("HMGET")
                .arg(format!("{{{p}}}:waiting:{now}"))
                .arg(&["d", "v", "u", "w"]),
        )
        .await;
    assert_eq!(
        fields,
        [Some("1".to_owned()), Some(String::new()), None, None]
    );
    assert!(
        store.queues().await.unwrap().is_empty(),
        "a waiting job is in no queue"
    );

    // A release by a settle wakes an idle worker of the queue within milliseconds.
    let work = unique("work");
    store.push(vec![job(&work, "w", b"w")]).await.unwrap();
    let held = store.reserve(&request(&[&work], LONG, 1)).await.unwrap();
    let waiting = waiter(&store, std::slice::from_ref(&q));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "nothing to wake for yet");
    let released = Instant::now();
    let reply = store
        .settle(
            vec![Settle::ack(held[0].lease.clone()).effect(deps(&now, -1))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, [Settled::Applied]);
    let latency = woken_after(waiting, released).await;
    assert!(
        latency < Duration::from_millis(500),
        "woken after {latency:?}"
    );
    let registered: bool = admin
        .query(
            redis::cmd("SISMEMBER")
                .arg(format!("{{{p}}}:queues"))
                .arg(&q),
        )
        .await;
    assert!(registered, "a released job registers its queue");
    let gone: bool = admin
        .query(redis::cmd("EXISTS").arg(format!("{{{p}}}:waiting:{now}")))
        .await;
    assert!(!gone);

    // Released: delayed from the release, holding its claim under its new id.
    let before = SystemTime::now();
    store.apply(vec![deps(&later, -2)]).await.unwrap();
    let size = store.size(&q).await.unwrap();
    assert_eq!((size.waiting, size.delayed), (1, 1));
    let delayed = store
        .jobs(&q, JobState::Delayed, PageRequest::first(5))
        .await
        .unwrap()
        .items
        .remove(0);
    assert!(delayed.due_at >= before + LONG - Duration::from_secs(1));
    assert_eq!(delayed.unique_key.as_deref(), Some(claim.as_str()));
    let holder: String = admin
        .query(redis::cmd("GET").arg(format!("{{{p}}}:claim:{claim}")))
        .await;
    assert_eq!(holder, delayed.id.0);

    // Held and released in one call: holds come before dependency changes.
    let once = unique("once");
    store
        .apply(vec![deps(&once, -1), hold(&once, 1, job(&q, "o", b"o"))])
        .await
        .unwrap();
    assert_eq!(store.waiting(&once).await.unwrap(), None);
    assert_eq!(store.size(&q).await.unwrap().waiting, 2);

    // Dependencies saturate at 10^15 rather than overflow; any release still releases.
    let big = unique("big");
    store
        .apply(vec![hold(&big, 1, job(&q, "b", b"b"))])
        .await
        .unwrap();
    store
        .apply(vec![deps(&big, i64::MAX), deps(&big, i64::MAX)])
        .await
        .unwrap();
    assert_eq!(
        store.waiting(&big).await.unwrap(),
        Some(1_000_000_000_000_000)
    );
    store.apply(vec![deps(&big, i64::MIN)]).await.unwrap();
    assert_eq!(store.waiting(&big).await.unwrap(), None);
    assert_eq!(store.size(&q).await.unwrap().waiting, 3);
}

/// A user whose ACL allows no pub/sub channel still pushes, releases and retries (the
/// wake-up is skipped), and its waits end at their timeout or the next due job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn works_without_pubsub_permission() {
    let Some(mut admin) = Backend::Single.admin().await else {
        return;
    };
    let url = common::url();
    if !url.starts_with("redis://") || url.contains('@') {
        println!("skipped: the test server's URL has credentials");
        return;
    }
    let user = unique("qtest_nochannels");
    let _: () = admin
        .query(
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg(&user)
                .arg("on")
                .arg(">secret")
                .arg("~*")
                .arg("resetchannels")
                .arg("+@all"),
        )
        .await;
    let limited = url.replacen("redis://", &format!("redis://{user}:secret@"), 1);
    let result = async {
        let options = RedisOptions::new(limited).prefix(common::prefix());
        let store = RedisStorage::connect(options).await.unwrap();
        let q = unique("q");
        store.push(vec![job(&q, "p", b"x")]).await.unwrap();
        let held = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
        store
            .release(&held[0].lease, Duration::from_millis(300))
            .await
            .unwrap();
        let started = Instant::now();
        store
            .wait(std::slice::from_ref(&q), Duration::from_secs(20))
            .await
            .unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
            "waited {waited:?}"
        );
        let again = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
        store.fail(&again[0].lease, "x").await.unwrap();
        let listed = failed(&store).list(PageRequest::first(1)).await.unwrap();
        assert!(failed(&store)
            .retry(&listed.items[0].id)
            .await
            .unwrap()
            .is_some());
        let started = Instant::now();
        store
            .wait(&[unique("empty")], Duration::from_millis(300))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
    };
    let outcome = tokio::spawn(result).await;
    let _: i64 = admin
        .query(redis::cmd("ACL").arg("DELUSER").arg(&user))
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}
