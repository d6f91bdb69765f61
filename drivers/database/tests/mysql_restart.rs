//! A MariaDB server is shut down (`mysqladmin shutdown`) and started again under a running
//! worker: a private server on a port of its own (`scripts/private-servers.sh mysql`), never
//! the one other tests use.
//!
//! The server is brought back up at the end, even when the case fails.
#![cfg(feature = "mysql")]

mod restart;
mod servers;

use std::sync::Arc;
use std::time::Duration;

use queue_database::{MySqlOptions, MySqlStorage};

/// Starts the server again if the case left it down.
struct BringBack;

impl Drop for BringBack {
    fn drop(&mut self) {
        servers::ensure_private_running("mysql");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_a_running_worker_loses_no_job() {
    let _bring_back = BringBack;
    let url = match servers::private_url("mysql") {
        Ok(url) => url,
        Err(e) => {
            queue_tests::server_missing::<()>("the private MariaDB server", e);
            return;
        }
    };
    let table = servers::fresh_table();
    let store = MySqlStorage::connect_with(
        MySqlOptions::new(&url)
            .table(&table)
            .failed_table(format!("{table}_f"))
            .acquire_timeout(Duration::from_secs(2)),
    )
    .await
    .expect("the store opens");
    // Down for 3 s: longer than the worker's retries of an acknowledgement and than a lease.
    restart::restart_mid_run(Arc::new(store), || {
        servers::stop_and_start_private("mysql", Duration::from_secs(3))
    })
    .await;
    servers::drop_mysql_tables_at(&url, &table).await;
}
