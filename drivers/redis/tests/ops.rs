//! The operations cases of the suite (health, statistics, restart) against a real Redis,
//! each under a key prefix of its own. They join the main `conformance!` run later.

mod common;

use std::sync::Arc;

use queue_core::Storage;

async fn store() -> Option<Arc<dyn Storage>> {
    common::store()
        .await
        .map(|s| Arc::new(s) as Arc<dyn Storage>)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oldest_available() {
    let Some(store) = store().await else { return };
    queue_tests::cases::oldest_available(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters() {
    let Some(store) = store().await else { return };
    queue_tests::cases::counters(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_stats_and_restart() {
    let Some(store) = store().await else { return };
    queue_tests::cases::engine_stats_and_restart(store).await;
}
