//! The operations cases (health, statistics, restart) against the in-memory driver. They join
//! the main suite once every driver implements them.

use std::sync::Arc;

use queue_core::{MemoryStorage, Storage};

fn store() -> Arc<dyn Storage> {
    Arc::new(MemoryStorage::new())
}

#[tokio::test]
async fn oldest_available() {
    queue_tests::cases::oldest_available(store()).await;
}

#[tokio::test]
async fn counters() {
    queue_tests::cases::counters(store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_stats_and_restart() {
    queue_tests::cases::engine_stats_and_restart(store()).await;
}
