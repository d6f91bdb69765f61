//! The MariaDB server is shut down (`mysqladmin shutdown`) and started again under a
//! running worker. In its own test binary: a restart disturbs everything else on the server,
//! and cargo runs test binaries one at a time.
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
        servers::start_mysql();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_a_running_worker_loses_no_job() {
    let _bring_back = BringBack;
    let url = servers::mysql_url();
    if let Err(e) = servers::mysql_up().await {
        queue_tests::server_missing::<()>(&url, e);
        return;
    }
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
        servers::stop_and_start_mysql(Duration::from_secs(3))
    })
    .await;
    servers::drop_mysql_tables(&table).await;
}
