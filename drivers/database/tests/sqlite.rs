//! What is particular to the SQLite driver: rows written by hand, URLs and table names,
//! durability across a reopen, an upgrade from the schema before the v2 contract, the
//! in-memory database, the reserve plan.
#![cfg(feature = "sqlite")]

use std::time::Duration;

use queue_core::{Error, NewJob, ReserveRequest, Settle, Settled, Storage, StorageExt};
use queue_database::{SqliteOptions, SqliteStorage};

fn job(queue: &str, payload: &[u8]) -> NewJob {
    NewJob::new(queue, "n", payload.to_vec())
}

fn request(queue: &str, limit: usize) -> ReserveRequest {
    ReserveRequest::new([queue], Duration::from_secs(60), limit)
}

async fn size(store: &SqliteStorage, queue: &str) -> queue_core::QueueSize {
    store.inspect().unwrap().size(queue).await.unwrap()
}

async fn open(dir: &tempfile::TempDir) -> (String, SqliteStorage) {
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let store = SqliteStorage::connect(&url)
        .await
        .expect("the database opens");
    (url, store)
}

/// Rows an operator or another program wrote by hand: NULL or garbage where a payload or
/// name should be.
async fn insert_bad_rows(store: &SqliteStorage, queue: &str) {
    let rows = [
        "INSERT INTO jobs (queue, name, payload) VALUES (?1, NULL, NULL)",
        "INSERT INTO jobs (queue, name, payload) VALUES (?1, 'named', NULL)",
        "INSERT INTO jobs (queue, name, payload) VALUES (?1, NULL, X'ff00fe')",
        "INSERT INTO jobs (queue, name, payload) VALUES (?1, CAST(X'ff41' AS TEXT), 'not an envelope')",
        "INSERT INTO jobs (queue, name, payload, attempts) VALUES (?1, 'odd', 42, 'many')",
    ];
    for sql in rows {
        sqlx::query(sql)
            .bind(queue)
            .execute(store.pool())
            .await
            .expect("the row is inserted");
    }
}

#[tokio::test]
async fn rows_written_by_hand_are_reserved_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = open(&dir).await;
    insert_bad_rows(&store, "q").await;
    let got = store
        .reserve(&request("q", 10))
        .await
        .expect("reserve does not fail");
    let shapes: Vec<(String, Vec<u8>)> = got
        .iter()
        .map(|r| (r.name.clone(), r.payload.clone()))
        .collect();
    assert_eq!(
        shapes,
        vec![
            (String::new(), Vec::new()),
            ("named".to_owned(), Vec::new()),
            (String::new(), vec![0xff, 0x00, 0xfe]),
            ("\u{fffd}A".to_owned(), b"not an envelope".to_vec()),
            ("odd".to_owned(), b"42".to_vec()),
        ]
    );
    assert!(got.iter().all(|r| r.attempts == 1), "{got:?}");
    let acked = store
        .acknowledge(&got.iter().map(|r| r.lease.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(acked, vec![true; 5]);
}

#[tokio::test]
async fn migrate_is_idempotent_and_schema_matches() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = open(&dir).await;
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let schema = store.schema_sql();
    assert!(schema.contains("CREATE TABLE IF NOT EXISTS jobs ("));
    assert_eq!(
        schema,
        SqliteOptions::new("sqlite://x.db").schema_sql().unwrap()
    );
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn without_tables_operations_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bare.db").display());
    let store = SqliteStorage::connect_with(SqliteOptions::new(url).migrate(false))
        .await
        .unwrap();
    let err = store.push(vec![job("q", b"x")]).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Backend {
                driver: "sqlite",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no such table"), "{err}");
}

#[tokio::test]
async fn in_memory_database() {
    let store = SqliteStorage::connect("sqlite::memory:").await.unwrap();
    assert!(!store.capabilities().durable);
    store
        .push(
            (0..250)
                .map(|i| job("q", i.to_string().as_bytes()))
                .collect(),
        )
        .await
        .unwrap();
    let got = store.reserve(&request("q", 300)).await.unwrap();
    assert_eq!(got.len(), 250);
    assert_eq!(got[249].payload, b"249");
    let other = SqliteStorage::connect("sqlite::memory:").await.unwrap();
    assert_eq!(
        size(&other, "q").await.total(),
        0,
        "each in-memory store is its own"
    );
}

/// Within one batch, jobs come out in the order they became available, an expired lease
/// counting from its deadline (as the memory driver orders them).
#[tokio::test]
async fn a_batch_keeps_the_order_jobs_became_available() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = open(&dir).await;
    store.push(vec![job("q", b"expires")]).await.unwrap();
    let first = store
        .reserve(&ReserveRequest {
            lease: Duration::from_millis(300),
            ..request("q", 1)
        })
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    store.push(vec![job("q", b"fresh")]).await.unwrap();
    let mut later = job("q", b"delayed");
    later.available = queue_core::Availability::After(Duration::from_millis(150));
    store.push(vec![later]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = store.reserve(&request("q", 10)).await.unwrap();
    let order: Vec<_> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    assert_eq!(order, ["fresh", "delayed", "expires"]);
    assert_eq!(got[2].attempts, 2);
}

/// Acknowledgements and the reservation after them go as one text with its own `BEGIN
/// IMMEDIATE` and `COMMIT`: when the reservation fails, the acknowledgement is undone with
/// it (the job stays reserved under its lease), and no transaction is left open on the
/// writer connection (another store on the file writes at once, with a short busy
/// timeout). Once the cause is gone the same settlement applies.
#[tokio::test]
async fn a_failed_reservation_undoes_the_acknowledgements_sent_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = open(&dir).await;
    let other = SqliteStorage::connect_with(
        SqliteOptions::new(&url).busy_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    store
        .push(vec![job("q", b"1"), job("q", b"2")])
        .await
        .unwrap();
    let got = store.reserve(&request("q", 1)).await.unwrap();
    let lease = got[0].lease.clone();
    sqlx::query(
        "CREATE TRIGGER no_reserve BEFORE UPDATE OF reserved_until ON jobs \
         BEGIN SELECT RAISE(ABORT, 'reservations refused here'); END",
    )
    .execute(other.pool())
    .await
    .unwrap();
    let error = store
        .settle(vec![Settle::ack(lease.clone())], Some(&request("q", 1)))
        .await
        .expect_err("the reservation fails, and the settlement with it");
    assert!(
        error.to_string().contains("reservations refused here"),
        "{error}"
    );
    let after = size(&other, "q").await;
    assert_eq!((after.waiting, after.reserved), (1, 1), "{after:?}");
    other
        .push(vec![job("q", b"3")])
        .await
        .expect("no transaction was left open on the failed store's writer");
    sqlx::query("DROP TRIGGER no_reserve")
        .execute(other.pool())
        .await
        .unwrap();
    let reply = store
        .settle(vec![Settle::ack(lease)], Some(&request("q", 1)))
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied]);
    let payloads: Vec<_> = reply.reserved.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, vec![b"2".to_vec()]);
}

/// The reservation reads the index by range: a queue full of reserved or delayed jobs costs
/// nothing to find empty.
#[tokio::test]
async fn reserve_uses_the_due_index() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = open(&dir).await;
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT id FROM jobs \
         WHERE queue = ?1 AND due_at <= CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER) \
         ORDER BY due_at, id LIMIT 8",
    )
    .bind("q")
    .fetch_all(store.pool())
    .await
    .unwrap();
    let plan: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
    assert_eq!(
        plan,
        ["SEARCH jobs USING INDEX jobs_due (queue=? AND due_at<?)"]
    );
}

/// A push through another store on the file (as from another process: nothing in memory
/// is shared) wakes an idle wait through the watch on the database file, long before the
/// wait's 30 s would end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_wakes_on_a_push_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = open(&dir).await;
    let other = SqliteStorage::connect(&url).await.unwrap();
    let store = std::sync::Arc::new(store);
    let queues = vec!["q".to_owned()];
    // The first wait starts the watch.
    store
        .capabilities()
        .wake
        .expect("SQLite wakes")
        .wait(&queues, Duration::from_millis(10))
        .await
        .unwrap();
    woken_by_the_other(&store, &other, &queues).await;
    // A busy spell with nobody waiting: the store's own writes turn the watch off (they would
    // cost an event each). The next wait turns it on again before it looks.
    for i in 0..50u8 {
        store.push_one(job("busy", &[i])).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    woken_by_the_other(&store, &other, &queues).await;
}

/// A wait on `store` ends within milliseconds of a push through `other`, not at its timeout.
async fn woken_by_the_other(
    store: &std::sync::Arc<SqliteStorage>,
    other: &SqliteStorage,
    queues: &[String],
) {
    let waiter = {
        let store = store.clone();
        let queues = queues.to_vec();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            store
                .capabilities()
                .wake
                .expect("SQLite wakes")
                .wait(&queues, Duration::from_secs(30))
                .await
                .unwrap();
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "nothing woke the waiter before the push"
    );
    other.push_one(job("q", b"x")).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the other store's push, not by its 30 s timeout")
        .unwrap();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    // Taken, so the next wait does not end at once for it.
    store
        .reserve(&queue_core::ReserveRequest::new(
            ["q"],
            Duration::from_secs(60),
            10,
        ))
        .await
        .unwrap();
}

/// A push of more jobs than one statement inserts (50 go as five inserts of 10) is all or
/// none: when one of its rows is refused, none of the others stays. Through sqlx (one
/// thread) and on the calling thread (several).
#[tokio::test]
async fn a_push_of_several_statements_is_all_or_none() {
    push_is_all_or_none().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_of_several_statements_on_the_calling_thread_is_all_or_none() {
    push_is_all_or_none().await;
}

async fn push_is_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = open(&dir).await;
    sqlx::query(
        "CREATE TRIGGER no_30 BEFORE INSERT ON jobs WHEN NEW.payload = CAST('30' AS BLOB) \
         BEGIN SELECT RAISE(ABORT, 'job 30 refused'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let jobs: Vec<NewJob> = (0..50)
        .map(|i| job("q", format!("{i}").as_bytes()))
        .collect();
    let error = store.push(jobs).await.expect_err("job 30 is refused");
    assert!(error.to_string().contains("job 30 refused"), "{error}");
    let after = size(&store, "q").await;
    assert_eq!(after.waiting, 0, "{after:?}");
    let jobs: Vec<NewJob> = (0..30)
        .map(|i| job("q", format!("{i}").as_bytes()))
        .collect();
    assert_eq!(store.push(jobs).await.unwrap().len(), 30);
    assert_eq!(size(&store, "q").await.waiting, 30);
}
