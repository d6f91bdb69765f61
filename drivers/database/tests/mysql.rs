//! What is particular to MySQL and MariaDB: READ COMMITTED, UTC and strict sessions, the
//! pick's plan and its place in the index, the lock statement's insert id, and a lock wait
//! that timed out, run again.
#![cfg(feature = "mysql")]

mod servers;

use std::time::Duration;

use queue_core::{NewJob, ReserveRequest, Storage, StorageExt};
use queue_database::{MySqlOptions, MySqlStorage};
use sqlx::Connection;

fn job(queue: &str, payload: &[u8]) -> NewJob {
    NewJob::new(queue, "n", payload.to_vec())
}

fn request(queue: &str, limit: usize) -> ReserveRequest {
    ReserveRequest::new([queue], Duration::from_secs(60), limit)
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

/// A real lock-wait timeout (InnoDB error 1205, which undoes only the statement that
/// waited). The store's one transaction connection waits at most a second for a row lock
/// (the server's default while it connects); another transaction holds the reserved job's
/// row while the store extends its lease. The first attempt times out; the store tries
/// again, and goes through once the other transaction ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_that_timed_out_waiting_for_a_lock_is_run_again() {
    let table = servers::fresh_table();
    if open(&table, true).await.is_none() {
        return;
    }
    let mut admin = sqlx::MySqlConnection::connect(&servers::mysql_url())
        .await
        .unwrap();
    let global = "SET GLOBAL innodb_lock_wait_timeout = ";
    let default: u64 = sqlx::query_scalar("SELECT @@GLOBAL.innodb_lock_wait_timeout")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!("{global}1"))
        .execute(&mut admin)
        .await
        .unwrap();
    let store = MySqlStorage::connect_with(options(&table, true).max_connections(1)).await;
    let pushed = match &store {
        Ok(store) => store.push(vec![job("q", b"x")]).await.map(drop),
        Err(_) => Ok(()),
    };
    // The reservation connects the store's transaction connection, which keeps the setting.
    let reserved = match &store {
        Ok(store) => store.reserve(&request("q", 1)).await,
        Err(_) => Ok(Vec::new()),
    };
    sqlx::query(&format!("{global}{default}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let store = store.unwrap();
    pushed.unwrap();
    let lease = reserved.unwrap().remove(0).lease;

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
        async move { store.extend_one(&lease, Duration::from_secs(3600)).await }
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

/// A push of more jobs than one `INSERT` takes (50 go as five inserts of 10) is all or
/// none: when one of its rows is refused, none of the others stays.
#[tokio::test]
async fn a_push_of_several_statements_is_all_or_none() {
    let table = servers::fresh_table();
    let Some(store) = open(&table, true).await else {
        return;
    };
    sqlx::raw_sql(&format!(
        "CREATE TRIGGER {table}_no_30 BEFORE INSERT ON {table} FOR EACH ROW \
         IF NEW.payload = '30' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'job 30 refused'; END IF"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let jobs: Vec<NewJob> = (0..50)
        .map(|i| job("q", i.to_string().as_bytes()))
        .collect();
    let error = store.push(jobs).await.expect_err("job 30 is refused");
    assert!(error.to_string().contains("job 30 refused"), "{error}");
    let size = store.inspect().unwrap().size("q").await.unwrap();
    assert_eq!(size.waiting, 0, "{size:?}");
    let jobs: Vec<NewJob> = (0..30)
        .map(|i| job("q", i.to_string().as_bytes()))
        .collect();
    assert_eq!(store.push(jobs).await.unwrap().len(), 30);
    servers::drop_mysql_tables(&table).await;
}

/// Nothing listens on port 1: connecting says "connection refused" at once, not "pool timed
/// out" after the acquire timeout (5 s).
#[tokio::test]
async fn an_unreachable_server_is_refused_at_once() {
    let started = std::time::Instant::now();
    let err = MySqlStorage::connect_with(MySqlOptions::new("mysql://nobody@127.0.0.1:1/none"))
        .await
        .expect_err("nothing listens on port 1");
    let took = started.elapsed();
    let text = err.to_string();
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(!text.contains("timed out"), "{text}");
    assert!(took < Duration::from_secs(3), "took {took:?}: {text}");
}
