//! The operations cases (health, statistics, restart) of the suite, a fresh file per case.
//! They will join `conformance.rs` when the suite's macro takes them in.

mod common;

use std::sync::Arc;

use queue_core::Storage;
use queue_database::SqliteStorage;

async fn store() -> Arc<dyn Storage> {
    let dir = common::scratch_dir();
    let url = format!("sqlite://{}", dir.join("jobs.db").display());
    Arc::new(
        SqliteStorage::connect(&url)
            .await
            .expect("the database opens"),
    )
}

#[tokio::test]
async fn oldest_available() {
    queue_tests::cases::oldest_available(store().await).await;
}

#[tokio::test]
async fn counters() {
    queue_tests::cases::counters(store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_stats_and_restart() {
    queue_tests::cases::engine_stats_and_restart(store().await).await;
}
