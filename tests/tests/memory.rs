//! The conformance suite against the in-memory reference driver.

use std::sync::Arc;

use queue_core::{MemoryStorage, Storage};

async fn store() -> Option<Arc<dyn Storage>> {
    Some(Arc::new(MemoryStorage::new()))
}

queue_tests::conformance!(store());
