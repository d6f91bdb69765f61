//! What is particular to PostgreSQL: waking on `LISTEN` (at the commit, not on a rollback),
//! the reserve plan, and a plan cached while the table was small.
#![cfg(feature = "postgres")]

mod servers;

use std::time::{Duration, Instant};

use queue_core::storage::Wake;
use queue_core::{
    Handle, Job, JobContext, JobError, NewJob, Queue, ReserveRequest, Storage, StorageExt,
};
use queue_database::{DispatchWithin, PgOptions, PgStorage};
use serde::{Deserialize, Serialize};

/// A job dispatched inside the application's transaction.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(name = "pg-welcome", queue = "welcome")]
struct Welcome {
    user: i64,
}

impl Handle for Welcome {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn job(queue: &str, payload: &[u8]) -> NewJob {
    NewJob::new(queue, "n", payload.to_vec())
}

fn request(queue: &str, limit: usize) -> ReserveRequest {
    ReserveRequest::new([queue], Duration::from_secs(60), limit)
}

/// A store on fresh tables, or `None` (printed) when the server is not there.
async fn open(table: &str) -> Option<PgStorage> {
    let url = servers::pg_url();
    if let Err(e) = servers::pg_up().await {
        return queue_tests::server_missing(&url, e);
    }
    let options = PgOptions::new(&url)
        .table(table)
        .failed_table(format!("{table}_f"))
        .max_connections(8);
    Some(
        PgStorage::connect_with(options)
            .await
            .expect("the store opens"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_wakes_an_idle_waiter_at_commit_and_a_rollback_wakes_nobody() {
    let table = servers::fresh_table();
    let Some(waiter) = open(&table).await else {
        return;
    };
    // Another store on the same tables: its own connections, as another machine would have.
    let Some(dispatcher) = open(&table).await else {
        return;
    };
    assert!(waiter.capabilities().wake.is_some());
    let queues = vec!["mail".to_owned()];
    // The first wait starts the listener.
    waiter
        .wait(&queues, Duration::from_millis(10))
        .await
        .unwrap();

    // A dispatch rolled back: the waiter sleeps its whole timeout.
    let started = Instant::now();
    let waiting = {
        let (waiter, queues) = (waiter.clone(), queues.clone());
        tokio::spawn(async move { waiter.wait(&queues, Duration::from_millis(1500)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut tx = dispatcher.pool().begin().await.unwrap();
    Welcome { user: 1 }
        .dispatch()
        .on_queue("mail")
        .within(&mut *tx, &dispatcher)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    waiting.await.unwrap().unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "a rolled-back dispatch must not wake anyone: woke after {:?}",
        started.elapsed()
    );

    // A push to another queue does not wake it either.
    let started = Instant::now();
    let waiting = {
        let (waiter, queues) = (waiter.clone(), queues.clone());
        tokio::spawn(async move { waiter.wait(&queues, Duration::from_millis(1000)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    dispatcher.push(vec![job("other", b"x")]).await.unwrap();
    waiting.await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A dispatch committed after 300 ms: the waiter wakes at the commit, not before.
    let started = Instant::now();
    let waiting = {
        let (waiter, queues) = (waiter.clone(), queues.clone());
        tokio::spawn(async move {
            waiter.wait(&queues, Duration::from_secs(10)).await.unwrap();
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut tx = dispatcher.pool().begin().await.unwrap();
    Welcome { user: 2 }
        .dispatch()
        .on_queue("mail")
        .within(&mut *tx, &dispatcher)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let committed = Instant::now();
    tx.commit().await.unwrap();
    let woke = waiting.await.unwrap();
    assert!(woke >= committed, "woke before the commit");
    let after = woke - committed;
    println!(
        "woken {after:?} after the commit ({:?} after the wait began)",
        woke - started
    );
    assert!(
        after < Duration::from_millis(500),
        "woke {after:?} after the commit"
    );
    servers::drop_pg_tables(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_starts_a_dispatched_job_within_milliseconds() {
    let table = servers::fresh_table();
    let Some(worker_store) = open(&table).await else {
        return;
    };
    let Some(dispatcher) = open(&table).await else {
        return;
    };
    let queue = Queue::new(worker_store);
    // A 10 s poll: only LISTEN can make the worker quick.
    let (started, stop, running) = servers::probe_worker(&queue, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = Queue::new(dispatcher);
    let mut latencies = Vec::new();
    for i in 0..30 {
        latencies.push(servers::probe(&other, &started, i, Duration::from_secs(5)).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.stop();
    running.await.unwrap().unwrap();
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() - 1];
    println!("dispatch-to-start over LISTEN: p50 {p50:?}, max {p99:?}");
    assert!(p50 < Duration::from_millis(100), "p50 {p50:?}");
    servers::drop_pg_tables(&table).await;
}

/// A plan cached while the table was small (and never analysed: autovacuum may be off) must
/// not turn every reservation into a sort of the whole table once it is large.
#[tokio::test]
async fn reserve_stays_fast_when_the_table_grows_under_a_cached_plan() {
    let table = servers::fresh_table();
    let Some(store) = open(&table).await else {
        return;
    };
    store
        .push((0..20).map(|_| job("q", b"x")).collect())
        .await
        .unwrap();
    // Enough executions on a tiny table for PostgreSQL to settle on a generic plan.
    for _ in 0..20 {
        let got = store.reserve(&request("q", 1)).await.unwrap();
        store.acknowledge(&[got[0].lease.clone()]).await.unwrap();
        store.push(vec![job("q", b"x")]).await.unwrap();
    }
    for _ in 0..40 {
        store
            .push((0..5_000).map(|_| job("q", b"x")).collect())
            .await
            .unwrap();
    }
    let mut times = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        let got = store.reserve(&request("q", 1)).await.unwrap();
        times.push(started.elapsed());
        store.acknowledge(&[got[0].lease.clone()]).await.unwrap();
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "median reservation with 200,000 jobs waiting: {median:?} (with a scan, 15 ms or more)"
    );
    assert!(
        median < Duration::from_millis(8),
        "a reservation takes {median:?}: the table is being scanned"
    );
    servers::drop_pg_tables(&table).await;
}

/// A worker that connects (and migrates) while other workers hold rows of the tables in open
/// transactions runs no DDL on a database already at its schema version: `ALTER TABLE`
/// would wait behind those transactions, and deadlocked with settling workers in the chaos
/// harness when several workers started together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_current_schema_takes_no_table_lock() {
    let table = servers::fresh_table();
    let Some(first) = open(&table).await else {
        return;
    };
    first.push(vec![job("q", b"x")]).await.unwrap();
    // Another session holds a row of each table in an open transaction, as a settling
    // worker does for a moment.
    let mut holder = first.pool().begin().await.unwrap();
    sqlx::query(&format!("SELECT id FROM {table} FOR UPDATE"))
        .fetch_all(&mut *holder)
        .await
        .unwrap();
    sqlx::query(&format!("LOCK TABLE {table}_f IN ROW EXCLUSIVE MODE"))
        .execute(&mut *holder)
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), open(&table))
        .await
        .expect("connecting did not wait for the open transaction");
    assert!(second.is_some());
    holder.rollback().await.unwrap();
}

/// Nothing listens on port 1: connecting says "connection refused" at once, not "pool timed
/// out" after the acquire timeout (5 s).
#[tokio::test]
async fn an_unreachable_server_is_refused_at_once() {
    let started = Instant::now();
    let err = PgStorage::connect_with(PgOptions::new("postgres://nobody@127.0.0.1:1/none"))
        .await
        .expect_err("nothing listens on port 1");
    let took = started.elapsed();
    let text = err.to_string();
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(!text.contains("timed out"), "{text}");
    assert!(took < Duration::from_secs(3), "took {took:?}: {text}");
}

/// The server's NOTICEs are not asked for (the migration's "already exists, skipping" at
/// every connect); a URL that sets `client_min_messages` keeps its own.
#[tokio::test]
async fn notices_are_not_asked_for() {
    let table = servers::fresh_table();
    let Some(store) = open(&table).await else {
        return;
    };
    let level: String = sqlx::query_scalar("SHOW client_min_messages")
        .fetch_one(store.pool())
        .await
        .expect("the setting reads");
    assert_eq!(level, "warning");
    let url = servers::pg_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let options = PgOptions::new(format!(
        "{url}{sep}options=-c%20client_min_messages%3Dnotice"
    ))
    .table(&table)
    .failed_table(format!("{table}_f"));
    let own = PgStorage::connect_with(options)
        .await
        .expect("the store opens");
    let level: String = sqlx::query_scalar("SHOW client_min_messages")
        .fetch_one(own.pool())
        .await
        .expect("the setting reads");
    assert_eq!(level, "notice");
    drop((store, own));
    servers::drop_pg_tables(&table).await;
}
