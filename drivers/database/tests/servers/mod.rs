//! What the PostgreSQL and MySQL test files share: the servers' URLs, a fresh table per
//! store, a sweep of the tables old runs left, and bringing a server down and up again.
//!
//! Each test binary uses a part of this module.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[cfg(any(feature = "postgres", feature = "mysql"))]
use sqlx::Connection;

/// The PostgreSQL server the tests use (`POSTGRES_URL`).
#[cfg(feature = "postgres")]
pub(crate) fn pg_url() -> String {
    std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The MySQL or MariaDB server the tests use (`MYSQL_URL`).
#[cfg(feature = "mysql")]
pub(crate) fn mysql_url() -> String {
    std::env::var("MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A table name no other store uses: `qt_{unix seconds}_{random}`. Tables are left behind
/// (the suite owns the stores), and those older than an hour are dropped by [`sweep_pg`] and
/// [`sweep_mysql`] at the start of the next run.
pub(crate) fn fresh_table() -> String {
    format!(
        "qt_{}_{}",
        unix_secs(),
        &queue_core::storage::new_token()[..8]
    )
}

/// Whether a table left by a test run is older than an hour.
fn stale(table: &str) -> bool {
    let Some(rest) = table.strip_prefix("qt_") else {
        return false;
    };
    let secs: u64 = rest
        .split('_')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    secs + 3600 < unix_secs()
}

/// Whether the PostgreSQL server answers (checked once per test binary); sweeps old test
/// tables the first time.
#[cfg(feature = "postgres")]
pub(crate) async fn pg_up() -> Result<(), String> {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    if let Some(up) = UP.get() {
        return up.clone();
    }
    let url = pg_url();
    let up = match sqlx::PgConnection::connect(&url).await {
        Ok(mut conn) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'qt\\_%'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
            for table in tables.iter().filter(|t| stale(t)) {
                let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {table} CASCADE"))
                    .execute(&mut conn)
                    .await;
            }
            let _ = conn.close().await;
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    };
    UP.get_or_init(|| up).clone()
}

/// Whether the MySQL server answers (checked once per test binary); sweeps old test
/// tables the first time.
#[cfg(feature = "mysql")]
pub(crate) async fn mysql_up() -> Result<(), String> {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    if let Some(up) = UP.get() {
        return up.clone();
    }
    let url = mysql_url();
    let up = match sqlx::MySqlConnection::connect(&url).await {
        Ok(mut conn) => {
            let tables: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE 'qt\\_%'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
            for table in tables
                .iter()
                .map(|t| String::from_utf8_lossy(t).into_owned())
            {
                if stale(&table) {
                    let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                        .execute(&mut conn)
                        .await;
                }
            }
            let _ = conn.close().await;
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    };
    UP.get_or_init(|| up).clone()
}

/// Every table a store on `table` may have (the failed table is `{table}_f`).
fn tables_of(table: &str) -> String {
    [
        "",
        "_f",
        "_locks",
        "_groups",
        "_control",
        "_waiting",
        "_records",
        "_values",
        "_workers",
        "_parked",
        "_counters",
    ]
    .map(|suffix| format!("{table}{suffix}"))
    .join(", ")
}

/// Drops a store's tables.
#[cfg(feature = "postgres")]
pub(crate) async fn drop_pg_tables(table: &str) {
    drop_pg_tables_at(&pg_url(), table).await;
}

/// Drops a store's tables.
#[cfg(feature = "mysql")]
pub(crate) async fn drop_mysql_tables(table: &str) {
    drop_mysql_tables_at(&mysql_url(), table).await;
}

/// Runs a command, returning whether it succeeded (its output goes to the test's output).
fn run(program: &str, args: &[&str]) -> bool {
    match std::process::Command::new(program).args(args).status() {
        Ok(status) => status.success(),
        Err(e) => {
            println!("could not run {program}: {e}");
            false
        }
    }
}

/// The script that starts the private servers the restart tests stop and start, so that
/// they never stop a server other tests use.
const PRIVATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/private-servers.sh"
);

/// Starts the private server of `kind` (`postgres` or `mysql`, on a port of its own) if it
/// is not running, and returns its URL; the error says why it could not.
pub(crate) fn private_url(kind: &str) -> Result<String, String> {
    let out = std::process::Command::new("bash")
        .arg(PRIVATE)
        .arg(kind)
        .output()
        .map_err(|e| format!("could not run {PRIVATE}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{PRIVATE} {kind} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Stops the private server of `kind` (a fast shutdown: every connection ends at once),
/// keeps it down for `down`, and starts it again, waiting for its port. Returns false if it
/// could not.
pub(crate) fn stop_and_start_private(kind: &str, down: Duration) -> bool {
    let stopped = run("bash", &[PRIVATE, "stop", kind]);
    std::thread::sleep(down);
    let started = private_url(kind);
    if let Err(e) = &started {
        println!("{e}");
    }
    stopped && started.is_ok()
}

/// Starts the private server of `kind` if it is down (the safety net after a test).
pub(crate) fn ensure_private_running(kind: &str) {
    if let Err(e) = private_url(kind) {
        println!("{e}");
    }
}

/// Drops a store's tables on the PostgreSQL server at `url`.
#[cfg(feature = "postgres")]
pub(crate) async fn drop_pg_tables_at(url: &str, table: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
        let sql = format!("DROP TABLE IF EXISTS {} CASCADE", tables_of(table));
        let _ = sqlx::query(&sql).execute(&mut conn).await;
        let _ = conn.close().await;
    }
}

/// Drops a store's tables on the MySQL server at `url`.
#[cfg(feature = "mysql")]
pub(crate) async fn drop_mysql_tables_at(url: &str, table: &str) {
    if let Ok(mut conn) = sqlx::MySqlConnection::connect(url).await {
        let sql = format!("DROP TABLE IF EXISTS {}", tables_of(table));
        let _ = sqlx::query(&sql).execute(&mut conn).await;
        let _ = conn.close().await;
    }
}

/// Waits until the server at `url` accepts connections (of type `C`) again.
pub(crate) async fn wait_for<C: sqlx::Connection>(url: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(conn) = C::connect(url).await {
            let _ = conn.close().await;
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// When each probe started, the worker's stop handle, and its task.
pub(crate) type ProbeWorker = (
    std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    queue_core::StopHandle,
    tokio::task::JoinHandle<queue_core::Result<queue_core::WorkerSummary>>,
);

/// A worker on `queue` that records when each `probe` job starts and polls only every
/// `poll`: only a working `LISTEN` makes it quick. Its start times, stop handle and task.
pub(crate) fn probe_worker(queue: &queue_core::Queue, poll: Duration) -> ProbeWorker {
    let started: std::sync::Arc<std::sync::Mutex<Vec<Instant>>> = Default::default();
    let sink = started.clone();
    queue.listen("probe", move |_: serde_json::Value, _ctx| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(Instant::now());
            Ok(())
        }
    });
    let options = queue_core::WorkerOptions::default()
        .queues(["probe"])
        .sleep(poll);
    let worker = queue.worker(options);
    (started, worker.stop_handle(), tokio::spawn(worker.run()))
}

/// Dispatches probe `i` from `other` (again while it fails, as an application would after a
/// restart) and waits, at most `limit`, until the probe worker starts it: how long it took.
pub(crate) async fn probe(
    other: &queue_core::Queue,
    started: &std::sync::Mutex<Vec<Instant>>,
    i: usize,
    limit: Duration,
) -> Duration {
    let sent = Instant::now();
    let mut tries = 0;
    while let Err(e) = other
        .dispatch_named("probe", serde_json::json!(i))
        .on_queue("probe")
        .await
    {
        tries += 1;
        assert!(tries < 20, "dispatch keeps failing: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + limit;
    loop {
        if let Some(at) = started.lock().unwrap().get(i) {
            return *at - sent;
        }
        assert!(Instant::now() < deadline, "probe {i} did not start");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}
