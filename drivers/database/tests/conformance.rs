//! The conformance suite against SQLite, a fresh database file per case.
#![cfg(feature = "sqlite")]

mod common;

use std::sync::Arc;

use queue_core::Storage;
use queue_database::SqliteStorage;

async fn store() -> Option<Arc<dyn Storage>> {
    let dir = common::scratch_dir();
    let url = format!("sqlite://{}", dir.join("jobs.db").display());
    let storage = SqliteStorage::connect(&url)
        .await
        .expect("the database opens");
    Some(Arc::new(storage))
}

queue_tests::conformance!(store());
