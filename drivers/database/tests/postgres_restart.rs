//! A PostgreSQL server is stopped and started again under a running worker, and restarted
//! under an idle one: a private server on a port of its own (`scripts/private-servers.sh
//! postgres`), never the one other tests use. Its cases run one after another.
//!
//! The server is brought back up at the end of each case, even when the case fails.
#![cfg(feature = "postgres")]

mod restart;
mod servers;

use std::sync::Arc;
use std::time::Duration;

use queue_core::Queue;
use queue_database::{PgOptions, PgStorage};

/// One case at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts the server again if a case left it down.
struct BringBack;

impl Drop for BringBack {
    fn drop(&mut self) {
        servers::ensure_private_running("postgres");
    }
}

/// The private server's URL (`None`: it could not be started, said outside CI).
fn private() -> Option<String> {
    match servers::private_url("postgres") {
        Ok(url) => Some(url),
        Err(e) => queue_tests::server_missing("the private PostgreSQL server", e),
    }
}

async fn open(url: &str, table: &str) -> Option<PgStorage> {
    if let Err(e) = servers::wait_for::<sqlx::PgConnection>(url)
        .await
        .then_some(())
        .ok_or("it does not answer")
    {
        return queue_tests::server_missing(url, e);
    }
    Some(
        PgStorage::connect_with(
            PgOptions::new(url)
                .table(table)
                .failed_table(format!("{table}_f"))
                .acquire_timeout(Duration::from_secs(2)),
        )
        .await
        .expect("the store opens"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_a_running_worker_loses_no_job() {
    let _serial = SERIAL.lock().await;
    let _bring_back = BringBack;
    let table = servers::fresh_table();
    let Some(url) = private() else { return };
    let Some(store) = open(&url, &table).await else {
        return;
    };
    // Down for 3 s: longer than the worker's retries of an acknowledgement and than a lease.
    restart::restart_mid_run(Arc::new(store), || {
        servers::stop_and_start_private("postgres", Duration::from_secs(3))
    })
    .await;
    servers::drop_pg_tables_at(&url, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_listens_again_after_a_restart() {
    let _serial = SERIAL.lock().await;
    let _bring_back = BringBack;
    let table = servers::fresh_table();
    let Some(url) = private() else { return };
    let Some(store) = open(&url, &table).await else {
        return;
    };
    let Some(dispatcher) = open(&url, &table).await else {
        return;
    };
    let queue = Queue::new(store);
    // A 30 s poll: only a working LISTEN makes the worker quick.
    let (started, stop, running) = servers::probe_worker(&queue, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(
        tokio::task::spawn_blocking(|| servers::stop_and_start_private("postgres", Duration::ZERO))
            .await
            .unwrap()
    );
    assert!(
        servers::wait_for::<sqlx::PgConnection>(&url).await,
        "the server came back"
    );
    // The listener reconnects with a backoff of at most 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let other = Queue::new(dispatcher);
    let mut latencies = Vec::new();
    for i in 0..5 {
        latencies.push(servers::probe(&other, &started, i, Duration::from_secs(10)).await);
    }
    stop.stop();
    running.await.unwrap().unwrap();
    println!("dispatch-to-start after the restart: {latencies:?}");
    latencies.sort();
    assert!(
        latencies[latencies.len() / 2] < Duration::from_secs(1),
        "the worker was woken by LISTEN, not its 30 s poll: {latencies:?}"
    );
    servers::drop_pg_tables_at(&url, &table).await;
}
