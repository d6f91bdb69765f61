//! The operations cases of `queue-tests` (health, statistics, restart) against a real
//! memcached (`MEMCACHED_URL`, by default `memcache://127.0.0.1:11211`), each case under its
//! own key prefix. They join the main `conformance!` suite once every driver implements them.

use std::sync::Arc;

use queue_core::Storage;
use queue_memcached::{MemcachedOptions, MemcachedStorage};

fn url() -> String {
    std::env::var("MEMCACHED_URL").unwrap_or_else(|_| "memcache://127.0.0.1:11211".into())
}

async fn store() -> Option<Arc<dyn Storage>> {
    let url = url();
    let options = match MemcachedOptions::from_url(&url) {
        Ok(options) => options.prefix(queue_tests::unique("t")),
        Err(e) => panic!("MEMCACHED_URL is not a memcached URL: {e}"),
    };
    match MemcachedStorage::connect(options).await {
        Ok(storage) => Some(Arc::new(storage)),
        Err(e) => queue_tests::server_missing(&url, e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oldest_available() {
    queue_tests::run_case(
        "oldest_available",
        store,
        queue_tests::cases::oldest_available,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters() {
    queue_tests::run_case("counters", store, queue_tests::cases::counters).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_stats_and_restart() {
    queue_tests::run_case(
        "engine_stats_and_restart",
        store,
        queue_tests::cases::engine_stats_and_restart,
    )
    .await;
}
