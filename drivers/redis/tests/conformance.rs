//! The conformance suite against a real Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`), each case under a key prefix of its own.

mod common;

use std::sync::Arc;

use queue_core::Storage;

async fn store() -> Option<Arc<dyn Storage>> {
    common::store()
        .await
        .map(|s| Arc::new(s) as Arc<dyn Storage>)
}

queue_tests::conformance!(store());
