//! What is particular to the MySQL/MariaDB driver: transactional dispatch, READ COMMITTED,
//! `SKIP LOCKED`, the reserve plan, strict columns, rows written by hand, many stores on one
//! table. Each runs with `RETURNING` (MariaDB's way) and without (MySQL's way).
#![cfg(feature = "mysql")]

mod servers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::{
    ConnectOptions, Handle, Job, JobContext, JobError, NewJob, Queue, ReserveRequest, Storage,
    WorkerOptions,
};
use queue_database::{dispatch_many_within, DispatchWithin, MySqlOptions, MySqlStorage};
use serde::{Deserialize, Serialize};
use sqlx::Connection;

/// A job dispatched inside the application's transaction.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(name = "mysql-welcome", queue = "welcome")]
struct Welcome {
    user: i64,
}

impl Handle for Welcome {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn job(queue: &str, payload: &[u8]) -> NewJob {
    NewJob {
        queue: queue.to_owned(),
        name: "n".to_owned(),
        payload: payload.to_vec(),
        available: Default::default(),
    }
}

fn request(queue: &str, limit: usize) -> ReserveRequest {
    ReserveRequest {
        queues: vec![queue.to_owned()],
        lease: Duration::from_secs(60),
        limit,
        name: None,
    }
}

fn options(table: &str, returning: bool) -> MySqlOptions {
    MySqlOptions::new(servers::mysql_url())
        .table(table)
        .failed_table(format!("{table}_f"))
        .max_connections(8)
        .use_returning((!returning).then_some(false))
}

/// A store on fresh tables, or `None` (printed) when the server is not there.
async fn open(table: &str, returning: bool) -> Option<MySqlStorage> {
    if let Err(e) = servers::mysql_up().await {
        return queue_tests::server_missing(&servers::mysql_url(), e);
    }
    Some(
        MySqlStorage::connect_with(options(table, returning))
            .await
            .expect("the store opens"),
    )
}

async fn dispatch_within(returning: bool) {
    let table = servers::fresh_table();
    let Some(store) = open(&table, returning).await else {
        return;
    };

    // Rolled back: no job.
    let mut tx = store.pool().begin().await.unwrap();
    Welcome { user: 1 }
        .dispatch()
        .within(&mut tx, &store)
        .await
        .expect("dispatched inside the transaction");
    assert_eq!(
        store.size("welcome").await.unwrap().total(),
        0,
        "invisible before the commit"
    );
    tx.rollback().await.unwrap();
    assert_eq!(store.size("welcome").await.unwrap().total(), 0);
    assert!(store
        .reserve(&request("welcome", 10))
        .await
        .unwrap()
        .is_empty());

    // Committed: exactly the job, under the id it was given.
    let mut tx = store.pool().begin().await.unwrap();
    let id = Welcome { user: 2 }
        .dispatch()
        .within(&mut tx, &store)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let got = store.reserve(&request("welcome", 10)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].lease.job_id, id);
    assert_eq!(got[0].name, "mysql-welcome");

    // Many at once on a bare connection, then one on a pool connection.
    let queue = Queue::new(store.clone());
    let mut tx = store.pool().begin().await.unwrap();
    let ids = dispatch_many_within(
        &mut *tx,
        &store,
        (0..12).map(|n| {
            queue
                .dispatch_named("ping", serde_json::json!(n))
                .on_queue("many")
        }),
    )
    .await
    .unwrap();
    assert_eq!(ids.len(), 12);
    tx.commit().await.unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    Welcome { user: 3 }
        .dispatch()
        .on_queue("many")
        .within(&mut conn, &store)
        .await
        .unwrap();
    drop(conn);
    let got = store.reserve(&request("many", 20)).await.unwrap();
    let got_ids: Vec<_> = got
        .iter()
        .take(12)
        .map(|r| r.lease.job_id.clone())
        .collect();
    assert_eq!(got_ids, ids, "the ids given are the jobs', in order");
    assert_eq!(got.len(), 13);
    servers::drop_mysql_tables(&table).await;
}

#[tokio::test]
async fn dispatch_within_a_transaction_exists_only_if_it_commits() {
    dispatch_within(true).await;
}

#[tokio::test]
async fn dispatch_within_a_transaction_without_returning() {
    dispatch_within(false).await;
}

#[tokio::test]
async fn connections_read_committed_in_utc_and_strict() {
    let table = servers::fresh_table();
    let Some(store) = open(&table, true).await else {
        return;
    };
    let variable = if store.is_mariadb() {
        "@@SESSION.tx_isolation"
    } else {
        "@@SESSION.transaction_isolation"
    };
    let (isolation, zone): (String, String) =
        sqlx::query_as(&format!("SELECT {variable}, @@SESSION.time_zone"))
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(isolation, "READ-COMMITTED");
    assert_eq!(zone, "+00:00");
    println!("server {}", store.server_version());
    // A queue name too long for its column is refused, not cut.
    let long = "q".repeat(300);
    assert!(store.push(vec![job(&long, b"x")]).await.is_err());
    servers::drop_mysql_tables(&table).await;
}

#[tokio::test]
async fn reserve_skips_rows_another_transaction_holds() {
    let table = servers::fresh_table();
    let Some(store) = open(&table, true).await else {
        return;
    };
    store
        .push(vec![job("q", b"first"), job("q", b"second")])
        .await
        .unwrap();
    let mut tx = store.pool().begin().await.unwrap();
    let _held: i64 = sqlx::query_scalar(&format!(
        "SELECT id FROM {table} ORDER BY id LIMIT 1 FOR UPDATE"
    ))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), store.reserve(&request("q", 2)))
        .await
        .expect("reserve does not wait for the other transaction")
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"second");
    tx.rollback().await.unwrap();
    let got = store.reserve(&request("q", 2)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"first");
    servers::drop_mysql_tables(&table).await;
}

#[tokio::test]
async fn reserve_reads_the_due_index_in_order() {
    let table = servers::fresh_table();
    let Some(store) = open(&table, true).await else {
        return;
    };
    for batch in 0..20 {
        let queue = if batch % 2 == 0 { "a" } else { "b" };
        store
            .push((0..1000).map(|_| job(queue, b"x")).collect())
            .await
            .unwrap();
    }
    sqlx::query(&format!("ANALYZE TABLE {table}"))
        .execute(store.pool())
        .await
        .unwrap();
    let plan = store.explain_reserve("b").await.unwrap();
    println!("{plan}");
    assert!(plan.contains(&format!("key={table}_due ")), "{plan}");
    assert!(!plan.contains("filesort"), "{plan}");
    assert!(!plan.contains("type=ALL"), "{plan}");
    servers::drop_mysql_tables(&table).await;
}

/// Picks start after the last job taken (to step over InnoDB's not-yet-purged entries);
/// a job due before that place, here one pushed with a time an hour ago, still comes out
/// within the rescan period, ahead of the jobs due after it.
#[tokio::test]
async fn a_job_due_before_the_last_pick_is_not_left_behind() {
    let table = servers::fresh_table();
    let Some(store) = open(&table, true).await else {
        return;
    };
    store
        .push(
            (0..500)
                .map(|i| job("q", i.to_string().as_bytes()))
                .collect(),
        )
        .await
        .unwrap();
    let first = store.reserve(&request("q", 1)).await.unwrap();
    assert_eq!(first[0].payload, b"0");
    let mut late = job("q", b"late");
    late.available =
        queue_core::Availability::At(std::time::SystemTime::now() - Duration::from_secs(3600));
    store.push(vec![late]).await.unwrap();
    let started = std::time::Instant::now();
    let mut before = 0;
    loop {
        let got = store.reserve(&request("q", 1)).await.unwrap();
        if got[0].payload == b"late" {
            break;
        }
        before += 1;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the late job is still waiting after {before} others"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "the late job came out after {before} others, {:?}",
        started.elapsed()
    );
    servers::drop_mysql_tables(&table).await;
}

#[tokio::test]
async fn a_lock_is_judged_by_its_own_statement_on_a_reused_connection() {
    let table = servers::fresh_table();
    if open(&table, true).await.is_none() {
        return;
    }
    // One connection: the push's insert id is still the session's when the lock runs.
    let store = MySqlStorage::connect_with(options(&table, false).max_connections(1))
        .await
        .unwrap();
    let ttl = Duration::from_secs(30);
    assert!(store.lock("k", "a", ttl).await.unwrap());
    store
        .push(vec![job("q", b"x"), job("q", b"y")])
        .await
        .unwrap();
    assert!(!store.lock("k", "b", ttl).await.unwrap());
    store.push(vec![job("q", b"z")]).await.unwrap();
    assert!(store.lock("k", "a", ttl).await.unwrap(), "renewed");
    assert!(!store.lock("k", "b", ttl).await.unwrap());
    assert!(store.unlock("k", "a").await.unwrap());
    assert!(store.lock("k", "b", ttl).await.unwrap());
    servers::drop_mysql_tables(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_by_hand_go_to_the_failed_store() {
    let table = servers::fresh_table();
    let Some(store) = open(&table, true).await else {
        return;
    };
    for sql in [
        "INSERT INTO {t} (queue, name, payload) VALUES ('q', NULL, NULL)",
        "INSERT INTO {t} (queue, name, payload) VALUES ('q', 'named', NULL)",
        "INSERT INTO {t} (queue, name, payload) VALUES ('q', NULL, X'ff00fe')",
        "INSERT INTO {t} (queue, name, payload) VALUES ('q', X'ff41', 'not an envelope')",
    ] {
        sqlx::query(&sql.replace("{t}", &table))
            .execute(store.pool())
            .await
            .unwrap();
    }
    let queue = Queue::new(store.clone());
    queue.listen("good", |_: serde_json::Value, _ctx| async { Ok(()) });
    queue
        .dispatch_named("good", serde_json::json!({}))
        .on_queue("q")
        .await
        .unwrap();
    let summary = tokio::time::timeout(
        Duration::from_secs(30),
        queue
            .worker(
                WorkerOptions::default()
                    .queues(["q"])
                    .sleep(Duration::from_millis(50))
                    .stop_when_empty(),
            )
            .run(),
    )
    .await
    .expect("the worker stops")
    .expect("the worker runs");
    assert_eq!((summary.processed, summary.failed), (1, 4));
    let failed = store.failed_list(0, 10).await.unwrap();
    assert_eq!(failed.len(), 4);
    assert!(
        failed.iter().all(|f| f.error.contains("payload")),
        "{failed:?}"
    );
    assert!(failed.iter().any(|f| f.payload == [0xff, 0x00, 0xfe]));
    assert!(failed.iter().any(|f| f.name == "\u{fffd}A"));
    assert_eq!(store.size("q").await.unwrap().total(), 0);
    servers::drop_mysql_tables(&table).await;
}

#[tokio::test]
async fn connects_by_url_with_table_names_and_migrates_concurrently() {
    use queue_database as _;
    if let Err(e) = servers::mysql_up().await {
        queue_tests::server_missing::<()>(&servers::mysql_url(), e);
        return;
    }
    let table = servers::fresh_table();
    let mut opens = Vec::new();
    for i in 0..4 {
        let url = servers::mysql_url().replacen(
            "mysql://",
            if i % 2 == 0 { "mysql://" } else { "mariadb://" },
            1,
        );
        let mut options = ConnectOptions::default();
        options.table = Some(table.clone());
        options.failed_table = Some(format!("{table}_f"));
        options.migrate = true;
        opens.push(tokio::spawn(async move {
            queue_core::storage::connect(&url, options).await
        }));
    }
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().expect("connects and migrates"));
    }
    assert_eq!(stores[0].driver(), "mysql");
    stores[0]
        .migrate()
        .await
        .expect("migrating again is harmless");
    stores[0].push(vec![job("q", b"x")]).await.unwrap();
    let got = stores[1].reserve(&request("q", 1)).await.unwrap();
    stores[2].fail(&got[0].lease, "no").await.unwrap();
    let retried = stores[3].failed_list(0, 1).await.unwrap();
    assert_eq!(retried[0].error, "no");
    let mut conn = sqlx::MySqlConnection::connect(&servers::mysql_url())
        .await
        .unwrap();
    let tables: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT table_name FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE ? ORDER BY table_name",
    )
    .bind(format!("{table}%"))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let tables: Vec<String> = tables
        .into_iter()
        .map(|t| String::from_utf8(t).unwrap())
        .collect();
    assert_eq!(
        tables,
        [
            table.clone(),
            format!("{table}_counters"),
            format!("{table}_f"),
            format!("{table}_locks")
        ]
    );
    servers::drop_mysql_tables(&table).await;
}

async fn four_stores(returning: bool) {
    let table = servers::fresh_table();
    let Some(first) = open(&table, returning).await else {
        return;
    };
    const JOBS: usize = 2_000;
    first
        .push(
            (0..JOBS)
                .map(|i| job("shared", i.to_string().as_bytes()))
                .collect(),
        )
        .await
        .unwrap();
    let seen: Arc<Mutex<HashMap<Vec<u8>, usize>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let store = open(&table, returning).await.unwrap();
        let seen = seen.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = 0;
            loop {
                let got = store.reserve(&request("shared", 8)).await.unwrap();
                if got.is_empty() {
                    break mine;
                }
                mine += got.len();
                {
                    let mut seen = seen.lock().unwrap();
                    for r in &got {
                        let n = seen.entry(r.payload.clone()).or_default();
                        *n += 1;
                        assert_eq!(*n, 1, "job {:?} taken twice", r.lease);
                    }
                }
                let leases: Vec<_> = got.iter().map(|r| r.lease.clone()).collect();
                let acked = store.acknowledge(&leases).await.unwrap();
                assert!(acked.iter().all(|a| *a));
            }
        }));
    }
    let mut per_store = Vec::new();
    for w in workers {
        per_store.push(w.await.unwrap());
    }
    let (ran, twice) = {
        let seen = seen.lock().unwrap();
        (seen.len(), seen.values().filter(|n| **n > 1).count())
    };
    assert_eq!(ran, JOBS, "every job ran");
    assert_eq!(twice, 0, "no job ran twice");
    println!("jobs per store: {per_store:?}");
    assert_eq!(first.size("shared").await.unwrap().total(), 0);
    servers::drop_mysql_tables(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_stores_share_one_table_and_take_each_job_once() {
    four_stores(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_stores_share_one_table_without_returning() {
    four_stores(false).await;
}

/// Waits until a transaction of another session waits for a row lock in `table` (an
/// InnoDB `LOCK WAIT`), or panics after ten seconds, showing the transactions and sessions.
async fn wait_for_a_lock_wait(conn: &mut sqlx::MySqlConnection, table: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // The server refreshes what INNODB_TRX shows only when it was not read for 100 ms.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX \
             WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE ?",
        )
        .bind(format!("%{table}%"))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        if std::time::Instant::now() >= deadline {
            let trx: Vec<(String, Option<String>)> = sqlx::query_as(
                "SELECT CAST(trx_state AS CHAR), CAST(trx_query AS CHAR) FROM information_schema.INNODB_TRX",
            )
            .fetch_all(&mut *conn)
            .await
            .unwrap();
            let procs: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT CAST(state AS CHAR), CAST(info AS CHAR) FROM information_schema.PROCESSLIST",
            )
            .fetch_all(&mut *conn)
            .await
            .unwrap();
            panic!("the store's statement never waited for the lock\n{trx:#?}\n{procs:#?}");
        }
    }
}

/// A real deadlock (InnoDB error 1213). The store adds eleven counters in one transaction
/// of two statements, in name order: the first ten, then the eleventh. Another transaction,
/// made heavy with a thousand rows written (InnoDB rolls back the lighter of two deadlocked
/// transactions), holds the eleventh; once the store waits for it, it asks for the first,
/// which the store holds. InnoDB rolls the store's transaction back; the store runs the
/// whole batch again, which waits for the other transaction to commit and then goes
/// through: the call succeeds, and every counter is added exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlocked_batch_is_run_again_and_applied_once() {
    let table = servers::fresh_table();
    let Some(store) = open(&table, true).await else {
        return;
    };
    let counters = format!("{table}_counters");
    let ones: Vec<(String, i64)> = (0..11).map(|i| (format!("dl:{i:02}"), 1)).collect();
    // The rows exist, so the other transaction can lock them.
    store.add_counters(&ones, None).await.unwrap();
    assert_eq!(store.conflict_retries(), 0);

    let mut other = sqlx::MySqlConnection::connect(&servers::mysql_url())
        .await
        .unwrap();
    let mut watch = sqlx::MySqlConnection::connect(&servers::mysql_url())
        .await
        .unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {table}_ballast (id INT PRIMARY KEY) ENGINE = InnoDB"
    ))
    .execute(&mut other)
    .await
    .unwrap();
    let mut tx = other.begin().await.unwrap();
    sqlx::query(&format!(
        "INSERT INTO {table}_ballast (id) \
         WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 1000) \
         SELECT n FROM s"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    let lock = |name: &'static str| {
        format!("SELECT value FROM {counters} WHERE name = '{name}' FOR UPDATE")
    };
    sqlx::query(&lock("dl:10")).execute(&mut *tx).await.unwrap();

    let adding = tokio::spawn({
        let store = store.clone();
        let ones = ones.clone();
        async move { store.add_counters(&ones, None).await }
    });
    wait_for_a_lock_wait(&mut watch, &counters).await;
    // The cycle: InnoDB detects it at once and rolls back the store's transaction, which
    // lets this statement through.
    sqlx::query(&lock("dl:00"))
        .execute(&mut *tx)
        .await
        .expect("InnoDB picks the store's lighter transaction as the deadlock victim");
    // The store runs the batch again (its second attempt waits for this transaction).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.conflict_retries() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the store met the deadlock and runs the batch again"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tx.commit().await.unwrap();

    tokio::time::timeout(Duration::from_secs(20), adding)
        .await
        .expect("the batch finishes")
        .unwrap()
        .expect("the call succeeds despite the deadlock");
    let values = store.counters("dl:").await.unwrap();
    assert_eq!(values.len(), 11);
    assert!(
        values.iter().all(|(_, v)| *v == 2),
        "every counter added exactly once more: {values:?}"
    );
    println!("retries after conflicts: {}", store.conflict_retries());
    sqlx::query(&format!("DROP TABLE IF EXISTS {table}_ballast"))
        .execute(&mut other)
        .await
        .unwrap();
    servers::drop_mysql_tables(&table).await;
}

/// A real lock-wait timeout (InnoDB error 1205, which undoes only the statement that
/// waited). The store's one connection waits at most a second for a row lock; another
/// transaction holds the reserved job's row while the store extends its lease. The first
/// attempt times out; the store tries again, and goes through once the other transaction
/// ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_that_timed_out_waiting_for_a_lock_is_run_again() {
    let table = servers::fresh_table();
    if open(&table, true).await.is_none() {
        return;
    }
    let store = MySqlStorage::connect_with(options(&table, true).max_connections(1))
        .await
        .unwrap();
    store.push(vec![job("q", b"x")]).await.unwrap();
    let lease = store.reserve(&request("q", 1)).await.unwrap()[0]
        .lease
        .clone();
    // The store keeps its connection at hand after a success; a failure (a queue name too
    // long for its column) gives it back to the pool, where the session setting reaches it.
    assert!(store.push(vec![job(&"q".repeat(300), b"x")]).await.is_err());
    sqlx::query("SET SESSION innodb_lock_wait_timeout = 1")
        .execute(store.pool())
        .await
        .unwrap();
    let timeout: u64 = sqlx::query_scalar("SELECT @@SESSION.innodb_lock_wait_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        timeout, 1,
        "the store's only connection waits a second at most"
    );

    let mut other = sqlx::MySqlConnection::connect(&servers::mysql_url())
        .await
        .unwrap();
    let mut tx = other.begin().await.unwrap();
    let _: i64 = sqlx::query_scalar(&format!("SELECT id FROM {table} WHERE id = ? FOR UPDATE"))
        .bind(lease.job_id.0.parse::<i64>().unwrap())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let extending = tokio::spawn({
        let store = store.clone();
        let lease = lease.clone();
        async move { store.extend(&lease, Duration::from_secs(3600)).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.conflict_retries() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the extension never timed out waiting for the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.rollback().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), extending)
        .await
        .expect("the extension finishes")
        .unwrap()
        .expect("the call succeeds despite the lock-wait timeout");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let left: i64 = sqlx::query_scalar(&format!(
        "SELECT reserved_until - CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED) FROM {table}"
    ))
    .fetch_one(&mut other)
    .await
    .unwrap();
    assert!(
        left > 3_000_000,
        "the lease was extended to an hour: {left} ms left"
    );
    println!(
        "retries after conflicts: {}, in {:?}",
        store.conflict_retries(),
        started.elapsed()
    );
    servers::drop_mysql_tables(&table).await;
}

/// The sweep of expired counters locks rows in the order `add_counters` does (primary key,
/// then the `expires_at` entry), so the two never deadlock. Another transaction plays an
/// upsert: it holds an expired counter's row while the store's sweep waits for it, then
/// moves the row's expiry (which takes its `expires_at` index entry). A sweep that deleted
/// through that index would hold the entry already: a deadlock. Here the other transaction
/// goes through, and the sweep deletes the row once it commits, with no conflict at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_counters_are_swept_in_the_order_upserts_lock_them() {
    let table = servers::fresh_table();
    let Some(store) = open(&table, true).await else {
        return;
    };
    let counters = format!("{table}_counters");
    let mut other = sqlx::MySqlConnection::connect(&servers::mysql_url())
        .await
        .unwrap();
    let mut watch = sqlx::MySqlConnection::connect(&servers::mysql_url())
        .await
        .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {counters} (name, value, expires_at) VALUES ('sw:a', 1, 1000)"
    ))
    .execute(&mut other)
    .await
    .unwrap();
    let mut tx = other.begin().await.unwrap();
    sqlx::query(&format!(
        "SELECT value FROM {counters} WHERE name = 'sw:a' FOR UPDATE"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    // The store's first call with a time to live sweeps.
    let adding = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .add_counters(&[("sw:z".to_owned(), 1)], Some(Duration::from_secs(60)))
                .await
        }
    });
    wait_for_a_lock_wait(&mut watch, &counters).await;
    sqlx::query(&format!(
        "UPDATE {counters} SET expires_at = 2000 WHERE name = 'sw:a'"
    ))
    .execute(&mut *tx)
    .await
    .expect("the sweep holds no index entry of the row it waits for");
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), adding)
        .await
        .expect("the sweep finishes")
        .unwrap()
        .expect("the call succeeds");
    assert_eq!(store.conflict_retries(), 0, "no deadlock, nothing retried");
    let left: Vec<Vec<u8>> =
        sqlx::query_scalar(&format!("SELECT name FROM {counters} ORDER BY name"))
            .fetch_all(&mut other)
            .await
            .unwrap();
    assert_eq!(left, [b"sw:z".to_vec()], "the expired counter was swept");
    servers::drop_mysql_tables(&table).await;
}
