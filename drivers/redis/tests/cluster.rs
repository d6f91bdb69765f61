//! The driver on a real Redis Cluster (`REDIS_CLUSTER_URL`, default
//! `redis+cluster://127.0.0.1:7000?nodes=127.0.0.1:7001,127.0.0.1:7002`, the three masters
//! `scripts/services.sh` starts): the whole conformance suite, then what only a cluster can
//! show — queues whose slots live on different nodes, taken in strict priority order and
//! settled in one call; `fail` and the retry of a failed job between a queue and a failed
//! store on different nodes; idle workers woken by a push on another node; claims, group
//! counters and waiting jobs refused. (The cases shared with the single server are in
//! `redis.rs`.)

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue_core::storage::{FailedStore, Groups, Guard, Inspect, PageRequest, Wake};
use queue_core::{
    Effect, Error, JobId, Pushed, Queue, Settle, Settled, Storage, StorageExt, Unique, WaitingJob,
    WorkerOptions,
};
use queue_redis::RedisStorage;
use queue_tests::cases::ids;
use queue_tests::engine::{run_worker, test_options};
use queue_tests::{job, request, unique};
use redis::cluster_async::ClusterConnection;
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

mod conformance {
    use std::sync::Arc;

    use queue_core::Storage;

    async fn store() -> Option<Arc<dyn Storage>> {
        super::common::cluster_store()
            .await
            .map(|s| Arc::new(s) as Arc<dyn Storage>)
    }

    queue_tests::conformance!(store());
}

fn failures(store: &RedisStorage) -> &dyn FailedStore {
    store.failed_store().unwrap()
}

/// `n` fresh queue names (`<base>_<random>`) whose keys live on `n` different masters, and
/// those masters, in the same order.
async fn queues_on_distinct_nodes(
    admin: &mut ClusterConnection,
    store: &RedisStorage,
    bases: &[&str],
) -> (Vec<String>, Vec<String>) {
    let prefix = store.options().get_prefix().to_owned();
    let mut names = Vec::new();
    let mut nodes: Vec<String> = Vec::new();
    for base in bases {
        for attempt in 0.. {
            assert!(attempt < 200, "no name for {base} on a node of its own");
            let name = unique(base);
            let (_, node) = common::node_of(admin, &format!("{{{prefix}:{name}}}:pending")).await;
            if !nodes.contains(&node) {
                names.push(name);
                nodes.push(node);
                break;
            }
        }
    }
    (names, nodes)
}

/// A plain connection to one node of the cluster (`host:port`), with the URL's credentials.
async fn node_connection(node: &str) -> redis::aio::MultiplexedConnection {
    let seed = common::cluster_seeds().remove(0);
    let userinfo = seed
        .strip_prefix("redis://")
        .and_then(|rest| rest.rsplit_once('@'))
        .map(|(userinfo, _)| format!("{userinfo}@"))
        .unwrap_or_default();
    redis::Client::open(format!("redis://{userinfo}{node}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Three queues of one worker land on three different masters (checked with `CLUSTER
/// KEYSLOT` and `CLUSTER COUNTKEYSINSLOT` on the owning node), and both a reservation over
/// them and a worker take them in strict priority order, first in first out within each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queues_on_different_nodes_keep_strict_priority() {
    let Some(mut admin) = common::cluster_admin().await else {
        return;
    };
    let store = Arc::new(common::cluster_store().await.unwrap());
    let (queues, nodes) =
        queues_on_distinct_nodes(&mut admin, &store, &["high", "mid", "low"]).await;
    let (high, mid, low) = (&queues[0], &queues[1], &queues[2]);
    assert_eq!(
        nodes.iter().collect::<HashSet<_>>().len(),
        3,
        "three masters: {nodes:?}"
    );

    // One push across the three queues (one script per queue on a cluster), low first.
    let pushed = store
        .push(vec![
            job(low, "p", b"low1"),
            job(mid, "p", b"mid1"),
            job(high, "p", b"high1"),
            job(low, "p", b"low2"),
            job(high, "p", b"high2"),
            job(mid, "p", b"mid2"),
        ])
        .await
        .unwrap();
    assert_eq!(
        ids(pushed),
        [
            JobId(format!("{low}/1")),
            JobId(format!("{mid}/1")),
            JobId(format!("{high}/1")),
            JobId(format!("{low}/2")),
            JobId(format!("{high}/2")),
            JobId(format!("{mid}/2")),
        ]
    );

    // Each queue's keys are in its slot, on its node.
    let prefix = store.options().get_prefix().to_owned();
    for (queue, node) in queues.iter().zip(&nodes) {
        let pending = format!("{{{prefix}:{queue}}}:pending");
        let (slot, owner) = common::node_of(&mut admin, &pending).await;
        assert_eq!(&owner, node);
        let mut conn = node_connection(node).await;
        let count: u64 = redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(slot)
            .query_async(&mut conn)
            .await
            .unwrap();
        // pending, seq and two job hashes (other tests' keys may share the slot).
        assert!(count >= 4, "slot {slot} on {node} holds {count} keys");
        let here: u64 = redis::cmd("EXISTS")
            .arg(&pending)
            .arg(format!("{{{prefix}:{queue}}}:seq"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(here, 2, "{queue}'s keys are on {node}");
        println!("queue {queue}: slot {slot} on {node} ({count} keys in the slot)");
    }

    // Reservations: strict priority across the nodes.
    let order = [high.as_str(), mid.as_str(), low.as_str()];
    let payloads = |got: &[queue_core::Reserved]| -> Vec<String> {
        got.iter()
            .map(|r| String::from_utf8(r.payload.clone()).unwrap())
            .collect()
    };
    let first = store.reserve(&request(&order, LONG, 3)).await.unwrap();
    assert_eq!(payloads(&first), ["high1", "high2", "mid1"]);
    assert_eq!(first[2].lease.queue, *mid);
    let second = store.reserve(&request(&order, LONG, 1)).await.unwrap();
    assert_eq!(payloads(&second), ["mid2"]);
    let third = store.reserve(&request(&order, LONG, 10)).await.unwrap();
    assert_eq!(payloads(&third), ["low1", "low2"]);
    assert!(store
        .reserve(&request(&order, LONG, 10))
        .await
        .unwrap()
        .is_empty());
    // One batch of acknowledges across the three nodes.
    let leases: Vec<_> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|r| r.lease.clone())
        .collect();
    let mut with_stale = leases.clone();
    with_stale[0].token.push('x');
    let acked = store.acknowledge(&with_stale).await.unwrap();
    assert_eq!(acked, [false, true, true, true, true, true]);
    assert_eq!(
        store.acknowledge(&leases).await.unwrap()[..2],
        [true, false]
    );
    for queue in &queues {
        assert_eq!(store.size(queue).await.unwrap().total(), 0);
    }

    // A worker on the three queues, concurrency 1: the same order.
    let queue = Queue::from_arc(store.clone());
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = log.clone();
    queue.listen("record", move |tag: String, _ctx| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(tag);
            Ok(())
        }
    });
    for (q, tag) in [
        (low, "low1"),
        (mid, "mid1"),
        (high, "high1"),
        (low, "low2"),
        (high, "high2"),
        (mid, "mid2"),
    ] {
        queue
            .dispatch_named("record", json!(tag))
            .on_queue(q.as_str())
            .await
            .unwrap();
    }
    let summary = run_worker(&queue, test_options(&order).concurrency(1)).await;
    assert_eq!(summary.processed, 6);
    assert_eq!(
        *log.lock().unwrap(),
        ["high1", "high2", "mid1", "mid2", "low1", "low2"]
    );
}

/// `fail` and `failed_retry` between a queue and a failed store on different nodes: the
/// job moves whole, a stale lease moves nothing, two retries at once push the job once, and
/// a retry that died after its claim can be done again once the claim runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_and_failed_retry_across_nodes() {
    let Some(mut admin) = common::cluster_admin().await else {
        return;
    };
    let store = Arc::new(common::cluster_store().await.unwrap());
    let prefix = store.options().get_prefix().to_owned();
    let failed_index = format!("{{{prefix}}}:failed:index");
    let (_, failed_node) = common::node_of(&mut admin, &failed_index).await;
    let q = loop {
        let q = unique("q");
        let (_, node) = common::node_of(&mut admin, &format!("{{{prefix}:{q}}}:pending")).await;
        if node != failed_node {
            println!("queue {q} on {node}, the failed store on {failed_node}");
            break q;
        }
    };

    // Fail: the job leaves its queue and is in the failed store, whole.
    let ids = ids(store.push(vec![job(&q, "boom", b"payload")]).await.unwrap());
    let got = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    store.fail(&got.lease, "it broke").await.unwrap();
    assert_eq!(store.size(&q).await.unwrap().total(), 0);
    assert_eq!(failures(&store).count().await.unwrap(), 1);
    let failed = failures(&store)
        .list(PageRequest::first(10))
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!(
        (
            failed.job_id.as_str(),
            failed.queue.as_str(),
            failed.name.as_str(),
            failed.payload.as_slice(),
            failed.error.as_str(),
            failed.attempts
        ),
        (
            ids[0].0.as_str(),
            q.as_str(),
            "boom",
            &b"payload"[..],
            "it broke",
            1
        )
    );
    assert!(
        store
            .fail(&got.lease, "again")
            .await
            .unwrap_err()
            .is_lease_lost(),
        "a finished lease fails nothing"
    );
    assert_eq!(failures(&store).count().await.unwrap(), 1);

    // Retry: back on its queue as a new job, gone from the failed store.
    let retried = failures(&store).retry(&failed.id).await.unwrap();
    assert_eq!(retried, Some(Pushed::Created(JobId(format!("{q}/2")))));
    assert_eq!(failures(&store).count().await.unwrap(), 0);
    assert_eq!(failures(&store).retry(&failed.id).await.unwrap(), None);
    assert!(store.queues().await.unwrap().contains(&q));

    // A lease that ran out and was taken by another worker cannot fail the job.
    let old = store
        .reserve(&request(&[&q], Duration::from_millis(200), 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!((old.payload.as_slice(), old.attempts), (&b"payload"[..], 1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(new.lease.job_id, old.lease.job_id);
    assert!(store
        .fail(&old.lease, "late")
        .await
        .unwrap_err()
        .is_lease_lost());
    assert_eq!(failures(&store).count().await.unwrap(), 0, "nothing added");
    assert_eq!(
        store.size(&q).await.unwrap().reserved,
        1,
        "still the new lease's"
    );
    store.fail(&new.lease, "for good").await.unwrap();
    assert_eq!(failures(&store).count().await.unwrap(), 1);

    // Two retries at once: one pushes, the other finds nothing.
    let failed = failures(&store)
        .list(PageRequest::first(1))
        .await
        .unwrap()
        .items
        .remove(0);
    let (a, b) = tokio::join!(
        failures(&store).retry(&failed.id),
        failures(&store).retry(&failed.id)
    );
    let pushed: Vec<Pushed> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(store.size(&q).await.unwrap().waiting, 1);
    assert_eq!(failures(&store).count().await.unwrap(), 0);

    // A retry that died after claiming leaves the failed job listed (never lost) and
    // claimed; once the claim runs out the retry goes through.
    let got = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    store.fail(&got.lease, "once more").await.unwrap();
    let failed = failures(&store)
        .list(PageRequest::first(1))
        .await
        .unwrap()
        .items
        .remove(0);
    let hash = format!(
        "{{{prefix}}}:failed:job:{:016}",
        failed.id.parse::<u64>().unwrap()
    );
    let far: u64 = 4_000_000_000_000;
    let _: () = redis::cmd("HSET")
        .arg(&hash)
        .arg("r")
        .arg(far)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        failures(&store).retry(&failed.id).await.unwrap(),
        None,
        "claimed"
    );
    assert_eq!(failures(&store).count().await.unwrap(), 1, "still listed");
    assert_eq!(
        failures(&store).get(&failed.id).await.unwrap(),
        Some(failed.clone())
    );
    let _: () = redis::cmd("HSET")
        .arg(&hash)
        .arg("r")
        .arg(1)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(failures(&store).retry(&failed.id).await.unwrap().is_some());
    assert_eq!(failures(&store).count().await.unwrap(), 0);
    assert_eq!(store.size(&q).await.unwrap().waiting, 1);
}

/// An idle `wait` on queues of three nodes is woken by a push to any of them (the
/// subscriber listens on one node; the cluster forwards every PUBLISH).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_wakes_for_queues_on_every_node() {
    let Some(mut admin) = common::cluster_admin().await else {
        return;
    };
    let store = Arc::new(common::cluster_store().await.unwrap());
    let (queues, nodes) = queues_on_distinct_nodes(&mut admin, &store, &["a", "b", "c"]).await;
    for (queue, node) in queues.iter().zip(&nodes) {
        let waiter = {
            let (store, queues) = (store.clone(), queues.clone());
            tokio::spawn(async move {
                store.wait(&queues, Duration::from_secs(20)).await.unwrap();
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "nothing to wake for yet");
        let pushed = Instant::now();
        store.push(vec![job(queue, "w", b"x")]).await.unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        let latency = woke.saturating_duration_since(pushed);
        println!("push on {node}: woken {latency:?} after it");
        assert!(
            latency < Duration::from_millis(500),
            "woken after {latency:?}"
        );
        let got = store.reserve(&request(&[queue], LONG, 1)).await.unwrap();
        assert_eq!(
            store.acknowledge(&[got[0].lease.clone()]).await.unwrap(),
            [true]
        );
    }
}

/// Dispatch-to-start latency of an idle worker on the cluster: the worker has a store (and
/// connections) of its own and polls only every 5 s, the dispatcher another store; the queue
/// lives on a node other than the first of the URL. Prints p50/p90/max; a p50 far below the
/// polling interval shows the pub/sub wake-up at work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_worker_starts_dispatched_jobs_promptly() {
    let Some(mut admin) = common::cluster_admin().await else {
        return;
    };
    let options = common::cluster_options();
    let worker_store = Arc::new(RedisStorage::connect(options.clone()).await.unwrap());
    let dispatch_store = Arc::new(RedisStorage::connect(options).await.unwrap());
    let prefix = worker_store.options().get_prefix().to_owned();
    let first = common::cluster_seeds()[0]
        .rsplit(['/', '@'])
        .next()
        .unwrap_or_default()
        .to_owned();
    let q = loop {
        let q = unique("latency");
        let (_, node) = common::node_of(&mut admin, &format!("{{{prefix}:{q}}}:pending")).await;
        if node != first {
            break q;
        }
    };

    let worker_queue = Queue::from_arc(worker_store);
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    worker_queue.listen("probe", move |_: u32, _ctx| {
        let started_tx = started_tx.clone();
        async move {
            let _ = started_tx.send(Instant::now());
            Ok(())
        }
    });
    let worker = worker_queue.worker(
        WorkerOptions::default()
            .queues([q.as_str()])
            .concurrency(1)
            .sleep(Duration::from_secs(5)),
    );
    let stop = worker.stop_handle();
    let running = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let dispatcher = Queue::from_arc(dispatch_store);
    const PROBES: u32 = 60;
    let mut latencies = Vec::new();
    for i in 0..PROBES {
        let sent = Instant::now();
        dispatcher
            .dispatch_named("probe", json!(i))
            .on_queue(q.as_str())
            .await
            .unwrap();
        let start = tokio::time::timeout(Duration::from_secs(10), started.recv())
            .await
            .expect("the probe ran")
            .expect("the worker runs");
        latencies.push(start.saturating_duration_since(sent));
        // A varying gap, so the probes do not line up with anything periodic.
        tokio::time::sleep(Duration::from_millis(5 + u64::from(i * 7 % 40))).await;
    }
    stop.stop();
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
    latencies.sort();
    let at = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "cluster dispatch-to-start of an idle worker ({PROBES} probes, polling every 5 s): p50 {:?}, p90 {:?}, max {:?}",
        at(50),
        at(90),
        latencies[latencies.len() - 1]
    );
    assert!(
        at(50) < Duration::from_millis(100),
        "p50 {:?}: idle workers are not woken",
        at(50)
    );
}

/// A cluster refuses what would tie a job's slot to another in one step: a push with a
/// unique claim (replacing or not), a push effect, a count effect, the effects of waiting jobs (in a settle or
/// an apply), a guarded apply (even with no effects: its guard is a group counter); its
/// capabilities say so (and keep jobs by id: records live in the job's slot). A refused
/// settle changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_and_groups_are_refused() {
    let Some(store) = common::cluster_store().await else {
        return;
    };
    let caps = store.capabilities();
    assert!(
        !caps.claims && !caps.replace && caps.groups.is_none(),
        "{caps:?}"
    );
    assert!(caps.failed.is_some() && caps.inspect.is_some() && caps.control.is_some());
    assert!(caps.track.is_some(), "a job's records share its slot");
    let q = unique("q");
    let err = store
        .push(vec![
            job(&q, "plain", b"1"),
            job(&q, "u", b"2").unique(Unique::new(unique("k"))),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotSupported { operation, .. } if operation.contains("Cluster")),
        "{err}"
    );
    let replacing = store
        .push(vec![
            job(&q, "plain", b"1"),
            job(&q, "r", b"3").unique(Unique::new(unique("k")).replacing()),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(replacing, Error::NotSupported { .. }),
        "{replacing}"
    );
    assert_eq!(replacing.to_string(), err.to_string(), "as any unique push");
    assert_eq!(store.size(&q).await.unwrap().total(), 0, "nothing pushed");

    store.push(vec![job(&q, "plain", b"1")]).await.unwrap();
    let held = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    let effects = [
        Effect::Push(job(&q, "next", b"n").unique(Unique::new(unique("k")))),
        Effect::Count {
            group: unique("g"),
            deltas: vec![("done".into(), 1)],
        },
    ];
    for effect in effects {
        let settle = Settle::ack(held.lease.clone()).effect(effect);
        let err = store.settle(vec![settle], None).await.unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err}");
    }
    let key = unique("w");
    let waiting = [
        Effect::Hold(WaitingJob::new(&key, 1, job(&q, "later", b"l"))),
        Effect::Deps {
            key: key.clone(),
            delta: -1,
        },
        Effect::Skip { key: key.clone() },
    ];
    for effect in waiting {
        let settle = Settle::ack(held.lease.clone()).effect(effect.clone());
        let err = store.settle(vec![settle], None).await.unwrap_err();
        assert!(
            matches!(&err, Error::NotSupported { operation, .. } if operation.contains("waiting jobs")),
            "{err}"
        );
        // `Groups` is not among a cluster store's capabilities, but the type has it.
        let err = Groups::apply(&store, vec![effect.clone()])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err}");
        // A guarded apply refuses the effects as `apply` does.
        let guard = Guard::new(unique("g"), "next", 0, 1);
        let guarded = store.apply_if(guard, vec![effect]).await.unwrap_err();
        assert_eq!(guarded.to_string(), err.to_string());
    }
    let group = unique("g");
    let count = Effect::Count {
        group: group.clone(),
        deltas: vec![("n".into(), 1)],
    };
    let err = Groups::apply(&store, vec![count.clone()])
        .await
        .unwrap_err();
    for effects in [vec![], vec![count]] {
        let guard = Guard::new(group.as_str(), "next", 0, 1);
        let guarded = store.apply_if(guard, effects).await.unwrap_err();
        assert!(
            matches!(&guarded, Error::NotSupported { operation, .. } if operation.contains("group counters")),
            "{guarded}"
        );
        assert_eq!(guarded.to_string(), err.to_string());
    }
    assert_eq!(Groups::waiting(&store, &key).await.unwrap(), None);
    let reply = store
        .settle(vec![Settle::ack(held.lease)], None)
        .await
        .unwrap();
    assert_eq!(
        reply.settled,
        [Settled::Applied],
        "the refused settles changed nothing"
    );
}

/// One settle call over leases of queues on three nodes (one script per slot, a `fail`
/// among them in its steps), with a lease given twice and a stale one, then a fetch over
/// the three queues in strict priority order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settle_across_nodes() {
    let Some(mut admin) = common::cluster_admin().await else {
        return;
    };
    let store = Arc::new(common::cluster_store().await.unwrap());
    let (queues, _) = queues_on_distinct_nodes(&mut admin, &store, &["a", "b", "c"]).await;
    let (a, b, c) = (&queues[0], &queues[1], &queues[2]);
    let jobs = [a, b, c, a, b, c, c]
        .iter()
        .enumerate()
        .map(|(i, q)| job(q, "s", format!("{i}").as_bytes()))
        .collect();
    store.push(jobs).await.unwrap();
    let order = [a.as_str(), b.as_str(), c.as_str()];
    let held = store.reserve(&request(&order, LONG, 6)).await.unwrap();
    let payloads: Vec<&[u8]> = held.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(payloads, [&b"0"[..], b"3", b"1", b"4", b"2", b"5"]);
    let mut stale = held[5].lease.clone();
    stale.token.push('x');
    let settles = vec![
        Settle::ack(held[0].lease.clone()),
        Settle::retry(held[1].lease.clone(), Duration::ZERO),
        Settle::fail(held[2].lease.clone(), "no"),
        Settle::ack(held[2].lease.clone()),
        Settle::release(held[3].lease.clone(), Duration::from_secs(3600)),
        Settle::ack(held[4].lease.clone()),
        Settle::ack(stale),
    ];
    let reply = store
        .settle(settles, Some(&request(&order, LONG, 3)))
        .await
        .unwrap();
    use Settled::{Applied, Stale};
    assert_eq!(
        reply.settled,
        [Applied, Applied, Applied, Stale, Applied, Applied, Stale]
    );
    // Available now: job 3 (retried) on a and job 6 on c (5 stays reserved: its settle was
    // stale; 4 is released for an hour). The fetch takes a's before c's, b having none.
    let fetched: Vec<&[u8]> = reply
        .reserved
        .iter()
        .map(|r| r.payload.as_slice())
        .collect();
    assert_eq!(fetched, [&b"3"[..], b"6"]);
    assert_eq!(reply.reserved[0].attempts, 2, "a retry keeps its attempt");
    let failed = failures(&store)
        .list(PageRequest::first(5))
        .await
        .unwrap()
        .items;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload, b"1");
    let sizes: Vec<(u64, u64, u64)> = futures::future::join_all(queues.iter().map(|q| {
        let store = store.clone();
        async move {
            let s = store.size(q).await.unwrap();
            (s.waiting, s.delayed, s.reserved)
        }
    }))
    .await;
    assert_eq!(sizes, [(0, 0, 1), (0, 1, 0), (0, 0, 2)]);
}
