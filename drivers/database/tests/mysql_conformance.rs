//! The conformance suite (storage, engine and operations cases) against MySQL or MariaDB (`MYSQL_URL`, by
//! default the local server), a fresh set of tables per case; and the suite again with the
//! statements MySQL runs (no `RETURNING`), forced on MariaDB.
#![cfg(feature = "mysql")]

mod servers;

use std::sync::Arc;

use queue_core::Storage;
use queue_database::{MySqlOptions, MySqlStorage};

async fn open(returning: Option<bool>) -> Option<Arc<dyn Storage>> {
    let url = servers::mysql_url();
    if let Err(e) = servers::mysql_up().await {
        return queue_tests::server_missing(&url, e);
    }
    let table = servers::fresh_table();
    let options = MySqlOptions::new(&url)
        .table(&table)
        .failed_table(format!("{table}_f"))
        .max_connections(4)
        .use_returning(returning);
    let storage = MySqlStorage::connect_with(options)
        .await
        .expect("the store opens on a server that answers");
    Some(Arc::new(storage))
}

async fn store() -> Option<Arc<dyn Storage>> {
    open(None).await
}

queue_tests::conformance!(store());

/// The suite once more with the statements for servers without `RETURNING` (MySQL 8).
mod without_returning {
    use super::*;

    async fn store() -> Option<Arc<dyn Storage>> {
        open(Some(false)).await
    }

    queue_tests::conformance!(store());
}
