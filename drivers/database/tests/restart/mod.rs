//! The server-restart case both restart test binaries run: a worker takes jobs while the
//! real server is restarted under it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue_core::{Queue, Storage, StorageExt, WorkerOptions};

const JOBS: usize = 4_000;

/// Pushes [`JOBS`] jobs, runs a worker (concurrency 8, a 2 s lease) and, once it has done a
/// few hundred, calls `restart`. Afterwards every job must have run (at least once: a job
/// whose acknowledgement was lost in the restart runs again after its lease), nothing may be
/// left reserved, and the worker must have carried on by itself.
pub(crate) async fn restart_mid_run(store: Arc<dyn Storage>, restart: fn() -> bool) {
    // Show what the worker and the driver log about the lost connections.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,queue_core=info")
        .with_test_writer()
        .try_init();
    let queue_name = "restart";
    let seen: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let queue = Queue::from_arc(store.clone());
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(1000) {
        queue
            .dispatch_many(chunk.iter().map(|i| {
                queue
                    .dispatch_named("count", serde_json::json!(i))
                    .on_queue(queue_name)
                    .tries(10)
            }))
            .await
            .expect("pushed");
    }
    let sink = seen.clone();
    queue.listen("count", move |n: u64, _ctx| {
        let sink = sink.clone();
        async move {
            *sink.lock().unwrap().entry(n).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(())
        }
    });
    let worker = queue.worker(
        WorkerOptions::default()
            .queues([queue_name])
            .concurrency(8)
            .lease(Duration::from_secs(2))
            .sleep(Duration::from_millis(100))
            .stop_when_empty(),
    );
    let progress = worker.progress_handle();
    let started = Instant::now();
    let running = tokio::spawn(worker.run());

    while progress.get().processed < 300 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the worker started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = progress.get().processed;
    let restarted_at = Instant::now();
    let restarted = tokio::task::spawn_blocking(restart)
        .await
        .expect("the restart ran");
    assert!(restarted, "the server was restarted");
    println!(
        "restarted the server after {before} jobs; it took {:?}",
        restarted_at.elapsed()
    );

    println!(
        "{} jobs done when the server was back",
        progress.get().processed
    );
    let summary = tokio::time::timeout(Duration::from_secs(120), running)
        .await
        .expect("the worker finished within two minutes of the restart")
        .expect("the worker task did not panic")
        .expect("the worker ran through the restart");
    let (missing, twice) = {
        let seen = seen.lock().unwrap();
        let missing: Vec<u64> = (0..JOBS as u64).filter(|n| !seen.contains_key(n)).collect();
        (missing, seen.values().filter(|n| **n > 1).count())
    };
    assert!(missing.is_empty(), "jobs never run: {missing:?}");
    println!(
        "all {JOBS} jobs ran; {twice} ran twice (their acknowledgement was lost in the restart); \
         processed {} in {:?}",
        summary.processed,
        started.elapsed()
    );
    assert_eq!(summary.failed, 0);
    let size = store
        .inspect()
        .unwrap()
        .size(queue_name)
        .await
        .expect("the size is read");
    assert_eq!(
        size.total(),
        0,
        "nothing is left waiting or reserved: {size:?}"
    );
}
