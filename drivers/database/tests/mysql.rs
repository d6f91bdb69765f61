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
