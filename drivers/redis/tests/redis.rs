//! The redis driver's own tests, beyond the conformance suite: large batches, waking idle
//! workers, the key layout, script reloading, URLs and bad input. Real server only.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use queue_core::{Availability, Error, JobId, Lease, NewJob, Queue, Storage, WorkerOptions};
use queue_redis::{RedisOptions, RedisStorage, MAX_RESERVE};
use queue_tests::{job, request, unique};

const LONG: Duration = Duration::from_secs(60);

fn delayed(queue: &str, payload: &[u8], at: SystemTime) -> NewJob {
    let mut job = job(queue, "d", payload);
    job.available = Availability::At(at);
    job
}

/// 20,000 jobs that come due in the same millisecond all drain, and no reservation takes
/// more than [`MAX_RESERVE`] at once (a peer's backend died on exactly this).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_thousand_delayed_jobs_come_due_at_once() {
    let Some(store) = common::store().await else {
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
        assert!(
            store
                .reserve(&request(&[&q], LONG, 10))
                .await
                .unwrap()
                .is_empty(),
            "not before their time"
        );
        tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        store.size(&q).await.unwrap().waiting,
        N as u64,
        "all due at once"
    );

    let first = store.reserve(&request(&[&q], LONG, N)).await.unwrap();
    assert_eq!(first.len(), MAX_RESERVE, "one call takes a bounded chunk");
    let mut seen: Vec<String> = first
        .iter()
        .map(|r| String::from_utf8(r.payload.clone()).unwrap())
        .collect();
    let leases: Vec<Lease> = first.into_iter().map(|r| r.lease).collect();
    assert!(store
        .acknowledge(&leases)
        .await
        .unwrap()
        .into_iter()
        .all(|a| a));

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
                let leases: Vec<Lease> = got.iter().map(|r| r.lease.clone()).collect();
                assert!(store
                    .acknowledge(&leases)
                    .await
                    .unwrap()
                    .into_iter()
                    .all(|a| a));
                seen.extend(
                    got.into_iter()
                        .map(|r| String::from_utf8(r.payload).unwrap()),
                );
            }
        }));
    }
    for task in tasks {
        seen.extend(task.await.unwrap());
    }
    assert_eq!(seen.len(), N, "every job drained once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), N, "none twice");
    assert_eq!(store.size(&q).await.unwrap().total(), 0);
}

/// An idle worker's wait ends within milliseconds of a push to one of its queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_wakes_on_push() {
    let Some(store) = common::store().await else {
        return;
    };
    let store = Arc::new(store);
    let (q, other) = (unique("q"), unique("other"));
    for round in 0..3 {
        let waiter = {
            let (store, queues) = (store.clone(), vec![other.clone(), q.clone()]);
            tokio::spawn(async move {
                store.wait(&queues, Duration::from_secs(20)).await.unwrap();
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiter.is_finished(),
            "round {round}: nothing to wake for yet"
        );
        let pushed = Instant::now();
        store.push(vec![job(&q, "w", b"x")]).await.unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        let latency = woke.saturating_duration_since(pushed);
        println!("round {round}: woken {latency:?} after the push");
        assert!(
            latency < Duration::from_millis(500),
            "woken after {latency:?}"
        );
        let got = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
        store.acknowledge(&[got[0].lease.clone()]).await.unwrap();
    }
}

/// A release wakes idle workers too, and a push to another queue does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_wakes_on_release_only_for_its_queues() {
    let Some(store) = common::store().await else {
        return;
    };
    let store = Arc::new(store);
    let (q, other) = (unique("q"), unique("other"));
    store.push(vec![job(&q, "r", b"x")]).await.unwrap();
    let held = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    let waiter = {
        let (store, queues) = (store.clone(), vec![q.clone()]);
        tokio::spawn(async move {
            store.wait(&queues, Duration::from_secs(20)).await.unwrap();
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.push(vec![job(&other, "o", b"y")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "a push to another queue does not wake"
    );
    let released = Instant::now();
    store
        .release(&held.lease, Duration::ZERO, false)
        .await
        .unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap();
    assert!(woke.saturating_duration_since(released) < Duration::from_millis(500));
}

/// `wait` never sleeps past the next delayed job, nor past an expiring lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_ends_when_the_next_job_is_due() {
    let Some(store) = common::store().await else {
        return;
    };
    let q = unique("q");
    store
        .push(vec![delayed(
            &q,
            b"later",
            SystemTime::now() + Duration::from_millis(600),
        )])
        .await
        .unwrap();
    let started = Instant::now();
    store
        .wait(std::slice::from_ref(&q), Duration::from_secs(20))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(2),
        "waited {waited:?}"
    );
    let got = store
        .reserve(&request(&[&q], Duration::from_millis(500), 1))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    // The lease runs out in 500 ms: an idle worker wakes to take the job back.
    let started = Instant::now();
    store
        .wait(std::slice::from_ref(&q), Duration::from_secs(20))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "waited {waited:?}"
    );
    // Empty queues: the whole timeout.
    let empty = unique("empty");
    let started = Instant::now();
    store
        .wait(&[empty], Duration::from_millis(300))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(290));
}

/// One `push` may span several queues: order kept, all in one script call; each queue
/// counts its own sequence, and the ids name the queue, so they are unique in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_push_across_queues() {
    let Some(store) = common::store().await else {
        return;
    };
    let (a, b) = (unique("a"), unique("b"));
    let jobs = vec![
        job(&a, "x", b"a1"),
        job(&b, "x", b"b1"),
        job(&a, "x", b"a2"),
        job(&b, "x", b"b2"),
    ];
    let ids = store.push(jobs).await.unwrap();
    assert_eq!(
        ids,
        [
            JobId(format!("{a}/1")),
            JobId(format!("{b}/1")),
            JobId(format!("{a}/2")),
            JobId(format!("{b}/2"))
        ],
        "ids are `<queue>/<sequence>`"
    );
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        4,
        "unique in the store"
    );
    let got = store.reserve(&request(&[&b, &a], LONG, 10)).await.unwrap();
    let order: Vec<&[u8]> = got.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(order, [&b"b1"[..], b"b2", b"a1", b"a2"]);
    assert_eq!(got[0].lease.queue, b);
    assert_eq!(got[2].lease.queue, a);
    assert_eq!(got[0].lease.job_id, ids[1]);
    // A lease whose id names another queue than the lease's is refused, whichever it is.
    let mut crossed = got[0].lease.clone();
    crossed.queue = a.clone();
    assert_eq!(
        store.acknowledge(&[crossed.clone()]).await.unwrap(),
        [false]
    );
    assert!(store
        .extend(&crossed, LONG)
        .await
        .unwrap_err()
        .is_lease_lost());
    let mut renamed = got[0].lease.clone();
    renamed.job_id = JobId(format!("{a}/1"));
    assert_eq!(store.acknowledge(&[renamed]).await.unwrap(), [false]);
    assert_eq!(
        store.acknowledge(&[got[0].lease.clone()]).await.unwrap(),
        [true]
    );
    let mut queues = store.queues().await.unwrap();
    queues.retain(|q| *q == a || *q == b);
    assert_eq!(queues.len(), 2);
}

/// The keys are where the crate docs say, with the hash tags that keep a queue in one slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_layout() {
    let Some(mut admin) = common::admin().await else {
        return;
    };
    let options = common::options();
    let p = options.get_prefix().to_owned();
    let store = RedisStorage::connect(options).await.unwrap();
    let q = unique("q");
    store
        .push(vec![job(&q, "layout", b"payload")])
        .await
        .unwrap();
    let name: String = redis::cmd("HGET")
        .arg(format!("{{{p}:{q}}}:job:0000000000000001"))
        .arg("n")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(name, "layout");
    let pending: i64 = redis::cmd("ZCARD")
        .arg(format!("{{{p}:{q}}}:pending"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(pending, 1);
    let member: bool = redis::cmd("SISMEMBER")
        .arg(format!("{{{p}}}:queues"))
        .arg(&q)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(member);
    let held = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    store.fail(&held.lease, "boom").await.unwrap();
    let failed: i64 = redis::cmd("ZCARD")
        .arg(format!("{{{p}}}:failed:index"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(failed, 1);
    assert!(store.lock("report", "me", LONG).await.unwrap());
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{p}:lock:{{report}}"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        ttl > 50_000 && ttl <= 60_000,
        "the lock expires by Redis: {ttl}"
    );
}

/// After `SCRIPT FLUSH` (as after a restart) every operation loads its script again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scripts_reload_after_flush() {
    let Some(mut admin) = common::admin().await else {
        return;
    };
    let store = RedisStorage::connect(common::options()).await.unwrap();
    let q = unique("q");
    store.push(vec![job(&q, "s", b"1")]).await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut admin)
        .await
        .unwrap();
    store.push(vec![job(&q, "s", b"2")]).await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut admin)
        .await
        .unwrap();
    let got = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    assert_eq!(got[0].payload, b"1");
    let held = got[0].clone();
    store.fail(&held.lease, "x").await.unwrap();
    let failed = store.failed_list(0, 1).await.unwrap().remove(0);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(store.failed_retry(&failed.id).await.unwrap().is_some());
    assert_eq!(store.size(&q).await.unwrap().waiting, 2);
}

/// Leases that name no job of ours are refused, never an error or a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_leases_are_stale() {
    let Some(store) = common::store().await else {
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
    // Bare numbers (the ids of earlier versions), another queue's id, no queue at all.
    ids.extend(["1", "/1", "other/1", &format!("{q}1"), &format!("x{q}/1")].map(String::from));
    ids.extend(numbers.map(String::from));
    for job_id in ids {
        let lease = Lease {
            job_id: JobId::from(job_id.as_str()),
            queue: q.clone(),
            token: held.lease.token.clone(),
        };
        assert_eq!(
            store
                .acknowledge(std::slice::from_ref(&lease))
                .await
                .unwrap(),
            [false],
            "{job_id:?}"
        );
        assert!(store
            .extend(&lease, LONG)
            .await
            .unwrap_err()
            .is_lease_lost());
        assert!(store
            .release(&lease, Duration::ZERO, false)
            .await
            .unwrap_err()
            .is_lease_lost());
        assert!(store.fail(&lease, "x").await.unwrap_err().is_lease_lost());
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
    assert_eq!(store.failed_get("").await.unwrap(), None);
    assert!(!store.failed_forget("abc").await.unwrap());
    assert_eq!(store.failed_retry("12345").await.unwrap(), None);
    assert!(store
        .failed_list(u64::MAX, u64::MAX)
        .await
        .unwrap()
        .is_empty());
    assert!(store.failed_list(0, 0).await.unwrap().is_empty());
    assert!(store.acknowledge(&[]).await.unwrap().is_empty());
    assert!(store.push(Vec::new()).await.unwrap().is_empty());
    assert!(store
        .reserve(&request(&[], LONG, 5))
        .await
        .unwrap()
        .is_empty());
}

/// Clear, flush and prune work through more than one chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunked_deletes() {
    let Some(store) = common::store().await else {
        return;
    };
    let q = unique("q");
    store
        .push((0..2_500).map(|_| job(&q, "c", b"x")).collect())
        .await
        .unwrap();
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

    store
        .push((0..1_100).map(|_| job(&q, "f", b"y")).collect())
        .await
        .unwrap();
    loop {
        let got = store.reserve(&request(&[&q], LONG, 500)).await.unwrap();
        if got.is_empty() {
            break;
        }
        for r in got {
            store.fail(&r.lease, "e").await.unwrap();
        }
    }
    assert_eq!(store.failed_count().await.unwrap(), 1_100);
    assert_eq!(
        store
            .failed_prune(SystemTime::now() - Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.failed_flush().await.unwrap(), 1_100);
    assert_eq!(store.failed_count().await.unwrap(), 0);
}

/// A reservation by name looks at a bounded number of jobs; the rest is found later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserve_by_name_is_bounded() {
    let Some(_) = common::admin().await else {
        return;
    };
    let store = RedisStorage::connect(common::options().name_scan_limit(10))
        .await
        .unwrap();
    let q = unique("q");
    let mut jobs: Vec<NewJob> = (0..25).map(|_| job(&q, "other", b"o")).collect();
    jobs.push(job(&q, "wanted", b"w"));
    store.push(jobs).await.unwrap();
    let mut by_name = request(&[&q], LONG, 5);
    by_name.name = Some("wanted".into());
    assert!(
        store.reserve(&by_name).await.unwrap().is_empty(),
        "behind more than the scan limit"
    );
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

/// The driver is chosen by URL scheme, and the connect options name its keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_by_url() {
    let Some(mut admin) = common::admin().await else {
        return;
    };
    let (store, prefix, failed, q) = common::connect_and_fail_one(&common::url()).await;
    let pending: bool = redis::cmd("EXISTS")
        .arg(format!("{{{prefix}:{q}}}:seq"))
        .query_async(&mut admin)
        .await
        .unwrap();
    let failed: bool = redis::cmd("EXISTS")
        .arg(format!("{{{failed}}}:failed:index"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(pending && failed);

    // durable only with an fsync on every write, as the server says now
    let aof: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query_async(&mut admin)
        .await
        .unwrap();
    let fsync: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        store.capabilities().durable,
        aof[1] == "yes" && fsync[1] == "always"
    );
}

/// Bad settings are configuration errors; an absent server is a backend error.
#[tokio::test]
async fn bad_settings() {
    for prefix in ["", "a{b", "c}"] {
        let err = RedisStorage::connect(RedisOptions::new("redis://127.0.0.1:6379").prefix(prefix))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{prefix}: {err}");
    }
    let err = RedisStorage::connect(RedisOptions::new("redis://127.0.0.1:notaport"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let err = RedisStorage::connect(RedisOptions::new("http://127.0.0.1:6379"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let err = RedisStorage::connect(
        RedisOptions::new("redis://127.0.0.1:1").connect_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert!(common::is_backend_error(&err), "{err}");
}

/// A worker with concurrency 8 drains a batch-dispatched queue (a smoke test of the fast
/// path; the benchmarks measure it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_drains_a_batch() {
    let Some(store) = common::store().await else {
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
        store
            .push((0..1000).map(|_| job(&q, "noop", envelope)).collect())
            .await
            .unwrap();
    }
    let pushed = started.elapsed();
    let started = Instant::now();
    let summary = queue_tests::engine::run_worker(
        &queue,
        WorkerOptions::default()
            .queues([q.as_str()])
            .concurrency(8)
            .stop_when_empty(),
    )
    .await;
    let ran_for = started.elapsed();
    println!(
        "pushed {N} in {pushed:?} ({:.0}/s), ran them in {ran_for:?} ({:.0}/s)",
        N as f64 / pushed.as_secs_f64(),
        N as f64 / ran_for.as_secs_f64()
    );
    assert_eq!(summary.processed, N as u64, "{summary:?}");
    assert_eq!(ran.load(std::sync::atomic::Ordering::Relaxed), N);
    assert_eq!(store.size(&q).await.unwrap().total(), 0);
}

/// A user whose ACL allows no pub/sub channel still pushes, releases and retries (the
/// wake-up is skipped), and its waits end at their timeout or the next due job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn works_without_pubsub_permission() {
    let Some(mut admin) = common::admin().await else {
        return;
    };
    let url = common::url();
    if !url.starts_with("redis://") || url.contains('@') {
        println!("skipped: the test server's URL has credentials");
        return;
    }
    let user = unique("qtest_nochannels");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">secret")
        .arg("~*")
        .arg("resetchannels")
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .unwrap();
    let limited = url.replacen("redis://", &format!("redis://{user}:secret@"), 1);
    let result = async {
        let store = RedisStorage::connect(RedisOptions::new(limited).prefix(common::prefix()))
            .await
            .unwrap();
        let q = unique("q");
        store.push(vec![job(&q, "p", b"x")]).await.unwrap();
        let held = store
            .reserve(&request(&[&q], LONG, 1))
            .await
            .unwrap()
            .remove(0);
        store
            .release(&held.lease, Duration::from_millis(300), false)
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
        let again = store
            .reserve(&request(&[&q], LONG, 1))
            .await
            .unwrap()
            .remove(0);
        store.fail(&again.lease, "x").await.unwrap();
        let failed = store.failed_list(0, 1).await.unwrap().remove(0);
        assert!(store.failed_retry(&failed.id).await.unwrap().is_some());
        let started = Instant::now();
        store
            .wait(&[unique("empty")], Duration::from_millis(300))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
    };
    let outcome = tokio::spawn(result).await;
    let _: redis::RedisResult<i64> = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut admin)
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

/// The failed store keeps the job's store-wide id, and a retried job gets a new one of the
/// same form on its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_jobs_keep_store_wide_ids() {
    let Some(store) = common::store().await else {
        return;
    };
    let q = unique("q/with/slashes");
    let ids = store.push(vec![job(&q, "f", b"x")]).await.unwrap();
    assert_eq!(ids, [JobId(format!("{q}/1"))]);
    let held = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(held.lease.job_id, ids[0]);
    store.fail(&held.lease, "boom").await.unwrap();
    let failed = store.failed_list(0, 1).await.unwrap().remove(0);
    assert_eq!(failed.job_id, ids[0].0);
    assert_eq!(
        store.failed_get(&failed.id).await.unwrap(),
        Some(failed.clone())
    );
    let retried = store.failed_retry(&failed.id).await.unwrap();
    assert_eq!(retried, Some(JobId(format!("{q}/2"))));
    let again = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(Some(again.lease.job_id.clone()), retried);
    assert_eq!(store.acknowledge(&[again.lease]).await.unwrap(), [true]);
}

/// Counters live under their own hash tag; names of expired counters are pruned from the
/// name index (on read, and a batch at a time on write), and a counter holding garbage is
/// left out when read and starts over when written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_layout_and_pruning() {
    let Some(mut admin) = common::admin().await else {
        return;
    };
    let options = common::options();
    let p = options.get_prefix().to_owned();
    let store = RedisStorage::connect(options).await.unwrap();
    let names = format!("{{{p}:counters}}:names");
    let expiry = format!("{{{p}:counters}}:expiry");
    let reader = admin.clone();
    let card = |key: String| {
        let mut admin = reader.clone();
        async move {
            redis::cmd("ZCARD")
                .arg(key)
                .query_async::<i64>(&mut admin)
                .await
                .unwrap()
        }
    };

    store
        .add_counters(&[("stats:a".into(), 3), ("stats:b".into(), -2)], None)
        .await
        .unwrap();
    let value: i64 = redis::cmd("GET")
        .arg(format!("{{{p}:counters}}:c:stats:a"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(value, 3);
    assert_eq!(card(names.clone()).await, 2);
    assert_eq!(card(expiry.clone()).await, 0);
    assert_eq!(
        store.counters("").await.unwrap(),
        [("stats:a".to_owned(), 3), ("stats:b".to_owned(), -2)]
    );
    assert_eq!(store.counters("stats:b").await.unwrap().len(), 1);
    assert!(store.counters("stats:bb").await.unwrap().is_empty());
    assert!(store.counters("stats;").await.unwrap().is_empty());

    // A TTL given later applies; none given later takes it away again (as in memory).
    store
        .add_counters(&[("rate:x".into(), 1)], Some(Duration::from_millis(150)))
        .await
        .unwrap();
    assert_eq!(card(expiry.clone()).await, 1);
    store
        .add_counters(&[("stats:a".into(), 1)], Some(LONG))
        .await
        .unwrap();
    store
        .add_counters(&[("stats:a".into(), 1)], None)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{{{p}:counters}}:c:stats:a"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(ttl, -1, "persistent again");
    assert_eq!(card(expiry.clone()).await, 1);

    // Expired: gone from reads, and its name is pruned by the next write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    store
        .add_counters(&[("stats:c".into(), 1)], None)
        .await
        .unwrap();
    assert_eq!(card(expiry.clone()).await, 0);
    assert_eq!(card(names.clone()).await, 3);
    // A value deleted by hand: its name is pruned by the read that misses it.
    let _: () = redis::cmd("DEL")
        .arg(format!("{{{p}:counters}}:c:stats:c"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(store.counters("stats:").await.unwrap().len(), 2);
    assert_eq!(card(names.clone()).await, 2);

    // Garbage is left out, then overwritten by the next add.
    let _: () = redis::cmd("SET")
        .arg(format!("{{{p}:counters}}:c:stats:b"))
        .arg("not a number")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        store.counters("stats:").await.unwrap(),
        [("stats:a".to_owned(), 5)]
    );
    store
        .add_counters(&[("stats:b".into(), 7), ("stats:a".into(), i64::MAX)], None)
        .await
        .unwrap();
    assert_eq!(
        store.counters("stats:").await.unwrap(),
        [("stats:a".to_owned(), i64::MAX), ("stats:b".to_owned(), 7)],
        "an overflow starts over from the delta; a garbage value too"
    );

    // Names outside ASCII and with the lexicographic range's own characters.
    let odd = ["stats:ü", "stats:[x", "stats:(y", "stats:-", "stats:+"];
    let deltas: Vec<(String, i64)> = odd.iter().map(|n| (n.to_string(), 1)).collect();
    store.add_counters(&deltas, None).await.unwrap();
    for name in odd {
        assert_eq!(
            store.counters(name).await.unwrap(),
            [(name.to_owned(), 1)],
            "{name}"
        );
    }
}

/// The oldest available job: a pending one by its available time, an expired reservation
/// by its deadline, whichever is older.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oldest_available_counts_expired_reservations() {
    let Some(store) = common::store().await else {
        return;
    };
    let q = unique("q");
    store.push(vec![job(&q, "o", b"1")]).await.unwrap();
    let held = store
        .reserve(&request(&[&q], Duration::from_millis(100), 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(store.oldest_available(&q).await.unwrap(), None);
    let deadline = SystemTime::now() + Duration::from_millis(100);
    tokio::time::sleep(Duration::from_millis(250)).await;
    store.push(vec![job(&q, "o", b"2")]).await.unwrap();
    let oldest = store
        .oldest_available(&q)
        .await
        .unwrap()
        .expect("the expired reservation waits");
    let skew = Duration::from_secs(1);
    assert!(oldest <= SystemTime::now() - Duration::from_millis(100));
    assert!(
        oldest + skew >= deadline && oldest <= deadline + skew,
        "{oldest:?}"
    );
    // Not taken again, the lease still finishes the job; then the pushed one is the oldest.
    assert_eq!(store.acknowledge(&[held.lease]).await.unwrap(), [true]);
    let next = store
        .oldest_available(&q)
        .await
        .unwrap()
        .expect("job 2 waits");
    assert!(next > oldest, "{next:?} after {oldest:?}");
}
