//! Does reserving stay as fast with a million jobs waiting as with a thousand?
//!
//! ```text
//! cargo run --release -p queue-database --example reserve_backlog -- \
//!     postgres://postgres@127.0.0.1:5432/test mysql://root@127.0.0.1:3306/test sqlite:///tmp/backlog.db
//! ```
//!
//! For each URL, on a fresh table: fills the queue to 1,000 waiting jobs (batched pushes),
//! times 2,000 reservations of one job, each followed by its acknowledgement, one after the
//! other; then fills the queue to 1,000,000 and times them again. Prints a markdown row per
//! backlog. The table is dropped at the end (a SQLite file is deleted).

use std::time::{Duration, Instant};

use queue_core::storage::{self, ConnectOptions, StorageExt};
use queue_core::{NewJob, ReserveRequest, Storage};
use queue_database as _;

const SAMPLES: usize = 2_000;
const BATCH: usize = 5_000;

fn job(i: usize) -> NewJob {
    let payload = format!("{{\"v\":1,\"name\":\"noop\",\"data\":{i}}}");
    NewJob::new("backlog", "noop", payload.into_bytes())
}

/// Pushes jobs until the queue holds `target` waiting ones.
async fn fill(store: &dyn Storage, target: u64) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut waiting = store.inspect()?.size("backlog").await?.waiting;
    while waiting < target {
        let n = usize::try_from((target - waiting).min(BATCH as u64))?;
        store.push((0..n).map(job).collect()).await?;
        waiting += n as u64;
    }
    Ok(started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Times `SAMPLES` reserve-then-acknowledge rounds of one job.
async fn measure(
    store: &dyn Storage,
) -> Result<(Vec<Duration>, Vec<Duration>), Box<dyn std::error::Error>> {
    let request = ReserveRequest::new(["backlog"], Duration::from_secs(60), 1);
    let mut reserve = Vec::with_capacity(SAMPLES);
    let mut round = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let got = store.reserve(&request).await?;
        reserve.push(started.elapsed());
        let leases: Vec<_> = got.iter().map(|r| r.lease.clone()).collect();
        if leases.len() != 1 || store.acknowledge(&leases).await? != [true] {
            return Err("a reservation came back empty or was not acknowledged".into());
        }
        round.push(started.elapsed());
    }
    reserve.sort_unstable();
    round.sort_unstable();
    Ok((reserve, round))
}

async fn drop_tables(url: &str, table: &str) {
    let tables = [
        "",
        "_failed",
        "_locks",
        "_groups",
        "_control",
        "_waiting",
        "_counters",
    ]
    .map(|suffix| format!("{table}{suffix}"))
    .join(", ");
    if url.starts_with("postgres") {
        if let Ok(pool) = sqlx::PgPool::connect(url).await {
            let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {tables}"))
                .execute(&pool)
                .await;
        }
    } else if url.starts_with("mysql") || url.starts_with("mariadb") {
        let url = url.replacen("mariadb://", "mysql://", 1);
        if let Ok(pool) = sqlx::MySqlPool::connect(&url).await {
            let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {tables}"))
                .execute(&pool)
                .await;
        }
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
}

async fn run(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let table = format!("backlog_{}", std::process::id());
    drop_tables(url, &table).await;
    let mut options = ConnectOptions::default();
    options.table = Some(table.clone());
    options.failed_table = Some(format!("{table}_failed"));
    options.migrate = true;
    let store = storage::connect(url, options).await?;
    let driver = store.driver();
    let result = async {
        for backlog in [1_000_u64, 1_000_000] {
            let filled = fill(&*store, backlog + SAMPLES as u64).await?;
            let (reserve, round) = measure(&*store).await?;
            let total: Duration = round.iter().sum();
            println!(
                "| {driver} | {backlog} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {:.1} |",
                percentile(&reserve, 0.50),
                percentile(&reserve, 0.99),
                percentile(&round, 0.50),
                percentile(&round, 0.99),
                SAMPLES as f64 / total.as_secs_f64(),
                filled.as_secs_f64(),
            );
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    }
    .await;
    drop(store);
    drop_tables(url, &table).await;
    result
}

#[tokio::main]
async fn main() {
    let urls: Vec<String> = std::env::args().skip(1).collect();
    if urls.is_empty() {
        eprintln!("usage: reserve_backlog URL [URL...] (postgres://, mysql://, sqlite://)");
        std::process::exit(2);
    }
    println!("reserve(1) then acknowledge, {SAMPLES} rounds one after another, per backlog of waiting jobs");
    println!("| driver | waiting jobs | reserve p50 ms | reserve p99 ms | reserve+ack p50 ms | reserve+ack p99 ms | rounds/s | fill s |");
    println!("|---|---|---|---|---|---|---|---|");
    for url in &urls {
        if let Err(e) = run(url).await {
            println!("| {} | error: {e} |", queue_core::redact_url(url));
        }
    }
}
