//! The conformance suite (storage, engine and operations cases) against PostgreSQL (`POSTGRES_URL`, by
//! default the local server), a fresh set of tables per case.
#![cfg(feature = "postgres")]

mod servers;

use std::sync::Arc;

use queue_core::Storage;
use queue_database::{PgOptions, PgStorage};

async fn store() -> Option<Arc<dyn Storage>> {
    let url = servers::pg_url();
    if let Err(e) = servers::pg_up().await {
        return queue_tests::server_missing(&url, e);
    }
    let table = servers::fresh_table();
    let options = PgOptions::new(&url)
        .table(&table)
        .failed_table(format!("{table}_f"))
        .max_connections(4);
    let storage = PgStorage::connect_with(options)
        .await
        .expect("the store opens on a server that answers");
    Some(Arc::new(storage))
}

queue_tests::conformance!(store());
