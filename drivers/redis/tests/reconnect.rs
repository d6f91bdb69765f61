//! Dropped connections: Redis kills the driver's connections mid-run and the driver carries
//! on. In a binary of its own because it kills every pub/sub client of the server.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::storage::{Inspect, Wake};
use queue_core::{Queue, Storage, WorkerOptions};
use queue_tests::{job, request, unique};

/// Kills the store's shared connection and every pub/sub connection (the store's waker).
async fn kill(admin: &mut redis::aio::MultiplexedConnection, id: Option<i64>) {
    if let Some(id) = id {
        let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(admin)
            .await;
    }
    let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(admin)
        .await;
}

/// The queue's size, retried while the driver reconnects: each failure must be a backend
/// error, and there must be only a few.
async fn size_after_kill(
    store: &queue_redis::RedisStorage,
    q: &str,
) -> (queue_core::QueueSize, u32) {
    let mut failures = 0;
    loop {
        match store.size(q).await {
            Ok(size) => return (size, failures),
            Err(e) => {
                assert!(common::is_backend_error(&e), "{e}");
                failures += 1;
                assert!(failures < 20, "still failing after {failures} tries: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connections_are_reopened() {
    let Some(mut admin) = common::admin().await else {
        return;
    };
    let store = Arc::new(
        queue_redis::RedisStorage::connect(common::options())
            .await
            .unwrap(),
    );
    let q = unique("q");
    store.push(vec![job(&q, "k", b"x")]).await.unwrap();

    // One kill: at most a failure or two, each a backend error, then it works again.
    let id = store.client_id().await.unwrap();
    kill(&mut admin, Some(id)).await;
    let (size, failures) = size_after_kill(&store, &q).await;
    println!("operations failed {failures} times after the kill");
    assert_eq!(size.waiting, 1);
    assert_ne!(store.client_id().await.unwrap(), id, "a new connection");

    // A worker keeps going while its connections are killed again and again; every job
    // runs (at least once: a reservation whose reply was lost comes back after its lease).
    let queue = Queue::from_arc(store.clone() as Arc<dyn Storage>);
    let ran: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let sink = ran.clone();
    queue.listen("count", move |n: u64, _ctx| {
        let sink = sink.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            sink.lock().unwrap().insert(n);
            Ok(())
        }
    });
    const N: u64 = 2_000;
    let jobs = (0..N)
        .map(|n| {
            job(
                &q,
                "count",
                format!(r#"{{"v":1,"name":"count","data":{n}}}"#).as_bytes(),
            )
        })
        .collect();
    store.push(jobs).await.unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let killer = {
        let (store, running) = (store.clone(), running.clone());
        tokio::spawn(async move {
            let mut kills = 0;
            while running.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let id = store.client_id().await.ok();
                kill(&mut admin, id).await;
                kills += 1;
            }
            kills
        })
    };
    // The job pushed before is not a `count` job: the worker fails it for good.
    let options = WorkerOptions::default()
        .queues([q.as_str()])
        .concurrency(8)
        .lease(Duration::from_secs(1))
        .sleep(Duration::from_millis(100))
        .stop_when_empty();
    let summary = queue_tests::engine::run_worker(&queue, options).await;
    running.store(false, Ordering::SeqCst);
    let kills = killer.await.unwrap();
    println!("{summary:?} with {kills} kills");
    assert!(
        kills >= 3,
        "the connections were killed while the worker ran ({kills} times)"
    );
    assert_eq!(ran.lock().unwrap().len() as u64, N, "every job ran");
    assert_eq!(size_after_kill(&store, &q).await.0.total(), 0);

    // The waker reconnected too: an idle wait is woken by a push.
    let waiter = {
        let (store, queues) = (store.clone(), vec![q.clone()]);
        tokio::spawn(async move { store.wait(&queues, Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    store.push(vec![job(&q, "k", b"y")]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .reserve(&request(&[&q], Duration::from_secs(5), 1))
            .await
            .unwrap()
            .len(),
        1
    );
}
