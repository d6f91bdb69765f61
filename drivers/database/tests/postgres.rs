//! What is particular to the PostgreSQL driver: transactional dispatch, waking on `LISTEN`,
//! `SKIP LOCKED`, the reserve plan, rows written by hand, many stores on one table.
#![cfg(feature = "postgres")]

mod servers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue_core::{
    ConnectOptions, Handle, Job, JobContext, JobError, NewJob, Queue, ReserveRequest, Storage,
    WorkerOptions,
};
use queue_database::{dispatch_many_within, DispatchWithin, PgOptions, PgStorage};
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

/// A store on fresh tables, or `None` (printed) when the server is not there.
async fn open(table: &str) -> Option<PgStorage> {
    let url = servers::pg_url();
    if let Err(e) = servers::pg_up().await {
        return queue_tests::server_missing(&url, e);
    }
    Some(
        PgStorage::connect_with(
            PgOptions::new(&url)
                .table(table)
                .failed_table(format!("{table}_f"))
                .max_connections(8),
        )
        .await
        .expect("the store opens"),
    )
}

#[tokio::test]
async fn dispatch_within_a_transaction_exists_only_if_it_commits() {
    let table = servers::fresh_table();
    let Some(store) = open(&table).await else {
        return;
    };

    // Rolled back: no job.
    let mut tx = store.pool().begin().await.unwrap();
    let id = Welcome { user: 1 }
        .dispatch()
        .within(&mut tx, &store)
        .await
        .expect("dispatched inside the transaction");
    assert!(!id.0.is_empty());
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
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    let id = Welcome { user: 2 }
        .dispatch()
        .within(&mut tx, &store)
        .await
        .unwrap();
    assert_eq!(store.size("welcome").await.unwrap().total(), 0);
    tx.commit().await.unwrap();
    let got = store.reserve(&request("welcome", 10)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].lease.job_id, id);
    assert_eq!(got[0].name, "pg-welcome");
    let envelope = queue_core::envelope::Envelope::decode(&got[0].payload).unwrap();
    assert_eq!(envelope.data.get(), r#"{"user":2}"#);

    // Many at once, on a bare connection (`&mut *tx`) and on a pool connection.
    let queue = Queue::new(store.clone());
    let mut tx = store.pool().begin().await.unwrap();
    let ids = dispatch_many_within(
        &mut *tx,
        &store,
        (0..3).map(|n| {
            queue
                .dispatch_named("ping", serde_json::json!(n))
                .on_queue("many")
        }),
    )
    .await
    .unwrap();
    assert_eq!(ids.len(), 3);
    tx.commit().await.unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    Welcome { user: 3 }
        .dispatch()
        .on_queue("many")
        .within(&mut conn, &store)
        .await
        .unwrap();
    drop(conn);
    let got = store.reserve(&request("many", 10)).await.unwrap();
    let mut got_ids: Vec<_> = got.iter().map(|r| r.lease.job_id.clone()).collect();
    got_ids.truncate(3);
    assert_eq!(got_ids, ids, "in order");
    assert_eq!(got.len(), 4);
    servers::drop_pg_tables(&table).await;
}

#[tokio::test]
async fn dispatch_within_checks_queue_limits_in_the_transaction() {
    let table = servers::fresh_table();
    if open(&table).await.is_none() {
        return;
    }
    let mut settings = queue_core::QueueSettings::default();
    settings.max_queue_size.insert("small".to_owned(), 1);
    let store = PgStorage::connect_with(
        PgOptions::new(servers::pg_url())
            .table(&table)
            .failed_table(format!("{table}_f"))
            .dispatch_settings(settings),
    )
    .await
    .unwrap();
    let mut tx = store.pool().begin().await.unwrap();
    Welcome { user: 1 }
        .dispatch()
        .on_queue("small")
        .within(&mut tx, &store)
        .await
        .unwrap();
    let full = Welcome { user: 2 }
        .dispatch()
        .on_queue("small")
        .within(&mut tx, &store)
        .await;
    assert!(
        matches!(full, Err(queue_core::Error::QueueFull { .. })),
        "{full:?}"
    );
    tx.rollback().await.unwrap();
    servers::drop_pg_tables(&table).await;
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
    assert!(waiter.capabilities().wake_on_push);
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
        .within(&mut tx, &dispatcher)
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
        .within(&mut tx, &dispatcher)
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
    let started: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let queue = Queue::new(worker_store);
    let sink = started.clone();
    queue.listen("probe", move |_: serde_json::Value, _ctx| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(Instant::now());
            Ok(())
        }
    });
    // A 10 s poll: only LISTEN can make the worker quick.
    let worker = queue.worker(
        WorkerOptions::default()
            .queues(["probe"])
            .sleep(Duration::from_secs(10)),
    );
    let stop = worker.stop_handle();
    let running = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = Queue::new(dispatcher);
    let mut latencies = Vec::new();
    for i in 0..30 {
        let sent = Instant::now();
        other
            .dispatch_named("probe", serde_json::json!(i))
            .on_queue("probe")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(at) = started.lock().unwrap().get(i) {
                latencies.push(*at - sent);
                break;
            }
            assert!(Instant::now() < deadline, "probe {i} did not start");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
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

#[tokio::test]
async fn reserve_skips_rows_another_transaction_holds() {
    let table = servers::fresh_table();
    let Some(store) = open(&table).await else {
        return;
    };
    store
        .push(vec![job("q", b"first"), job("q", b"second")])
        .await
        .unwrap();
    // Another worker in the middle of its reservation holds the first row.
    let mut tx = store.pool().begin().await.unwrap();
    let held: i64 = sqlx::query_scalar(&format!(
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
    assert_ne!(got[0].lease.job_id.0, held.to_string());
    tx.rollback().await.unwrap();
    let got = store.reserve(&request("q", 2)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"first");
    servers::drop_pg_tables(&table).await;
}

#[tokio::test]
async fn reserve_reads_the_due_index() {
    let table = servers::fresh_table();
    let Some(store) = open(&table).await else {
        return;
    };
    for batch in 0..20 {
        let queue = if batch % 2 == 0 { "a" } else { "b" };
        store
            .push((0..1000).map(|_| job(queue, b"x")).collect())
            .await
            .unwrap();
    }
    sqlx::query(&format!("ANALYZE {table}"))
        .execute(store.pool())
        .await
        .unwrap();
    let plan = store
        .explain_reserve(&["b".to_owned(), "a".to_owned()])
        .await
        .unwrap();
    println!("{plan}");
    assert!(
        plan.contains(&format!("Index Scan using {table}_due on {table}")),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("Index Scan using {table}_pkey on {table}")),
        "{plan}"
    );
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(plan.contains("LockRows"), "{plan}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_by_hand_go_to_the_failed_store() {
    let table = servers::fresh_table();
    let Some(store) = open(&table).await else {
        return;
    };
    for sql in [
        "INSERT INTO {t} (queue, name, payload) VALUES ('q', NULL, NULL)",
        "INSERT INTO {t} (queue, name, payload) VALUES ('q', 'named', NULL)",
        "INSERT INTO {t} (queue, name, payload) VALUES ('q', NULL, '\\xff00fe')",
        "INSERT INTO {t} (queue, name, payload) VALUES ('q', 'x', 'not an envelope')",
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
    assert_eq!(store.size("q").await.unwrap().total(), 0);
    servers::drop_pg_tables(&table).await;
}

#[tokio::test]
async fn connects_by_url_with_table_names_and_migrates_concurrently() {
    use queue_database as _;
    if let Err(e) = servers::pg_up().await {
        queue_tests::server_missing::<()>(&servers::pg_url(), e);
        return;
    }
    let table = servers::fresh_table();
    // Several processes starting at once all create the tables: none fails.
    let mut opens = Vec::new();
    for i in 0..4 {
        let url = servers::pg_url().replacen(
            "postgres://",
            if i % 2 == 0 {
                "postgres://"
            } else {
                "postgresql://"
            },
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
    let store = &stores[0];
    assert_eq!(store.driver(), "postgres");
    store.migrate().await.expect("migrating again is harmless");
    store.push(vec![job("q", b"x")]).await.unwrap();
    let got = stores[1].reserve(&request("q", 1)).await.unwrap();
    stores[2].fail(&got[0].lease, "no\0pe").await.unwrap();
    assert_eq!(
        stores[3].failed_list(0, 1).await.unwrap()[0].error,
        "no\u{fffd}pe"
    );
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE tablename LIKE $1 ORDER BY tablename",
    )
    .bind(format!("{table}%"))
    .fetch_all(
        &mut sqlx::PgConnection::connect(&servers::pg_url())
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            table.clone(),
            format!("{table}_counters"),
            format!("{table}_f"),
            format!("{table}_locks")
        ]
    );
    servers::drop_pg_tables(&table).await;
}

use sqlx::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_stores_share_one_table_and_take_each_job_once() {
    let table = servers::fresh_table();
    let Some(first) = open(&table).await else {
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
        // Each its own store, with its own connections: four machines.
        let store = open(&table).await.unwrap();
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
                        *seen.entry(r.payload.clone()).or_default() += 1;
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
    servers::drop_pg_tables(&table).await;
}

#[tokio::test]
async fn jobs_and_reservations_survive_a_reconnect() {
    let table = servers::fresh_table();
    let Some(store) = open(&table).await else {
        return;
    };
    store
        .push(vec![job("q", b"one"), job("q", b"two")])
        .await
        .unwrap();
    let held = store.reserve(&request("q", 1)).await.unwrap();
    store.close().await;
    drop(store);
    let store = open(&table).await.unwrap();
    let size = store.size("q").await.unwrap();
    assert_eq!((size.waiting, size.reserved), (1, 1));
    assert_eq!(
        store.acknowledge(&[held[0].lease.clone()]).await.unwrap(),
        vec![true]
    );
    servers::drop_pg_tables(&table).await;
}

/// A real deadlock (SQLSTATE 40P01). The store adds two counters in one statement, in name
/// order; another transaction holds the second, and once the store waits for it, asks for
/// the first, which the store holds. The store waited first, so its deadlock check
/// (`deadlock_timeout` after it began to wait) finds the cycle and PostgreSQL cancels its
/// statement; the store runs it again, which waits for the other transaction to commit and
/// then goes through: the call succeeds, and each counter is added exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlocked_statement_is_run_again_and_applied_once() {
    use sqlx::Connection;

    let table = servers::fresh_table();
    let Some(store) = open(&table).await else {
        return;
    };
    let counters = format!("{table}_counters");
    let ones: Vec<(String, i64)> = vec![("dl:a".to_owned(), 1), ("dl:b".to_owned(), 1)];
    // The rows exist, so the other transaction can lock them.
    store.add_counters(&ones, None).await.unwrap();
    assert_eq!(store.conflict_retries(), 0);

    let mut other = sqlx::PgConnection::connect(&servers::pg_url())
        .await
        .unwrap();
    let mut watch = sqlx::PgConnection::connect(&servers::pg_url())
        .await
        .unwrap();
    let mut tx = other.begin().await.unwrap();
    let lock =
        |name: &str| format!("SELECT value FROM {counters} WHERE name = '{name}' FOR UPDATE");
    sqlx::query(&lock("dl:b")).execute(&mut *tx).await.unwrap();

    let adding = tokio::spawn({
        let store = store.clone();
        let ones = ones.clone();
        async move { store.add_counters(&ones, None).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() AND query LIKE $1",
        )
        .bind(format!("%{counters}%"))
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The cycle: the store's deadlock check cancels its statement, which lets this one
    // through.
    sqlx::query(&lock("dl:a"))
        .execute(&mut *tx)
        .await
        .expect("PostgreSQL cancels the store's statement, which waited first");
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.conflict_retries() == 0 {
        assert!(
            Instant::now() < deadline,
            "the store met the deadlock and runs the statement again"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tx.commit().await.unwrap();

    tokio::time::timeout(Duration::from_secs(20), adding)
        .await
        .expect("the statement finishes")
        .unwrap()
        .expect("the call succeeds despite the deadlock");
    let values = store.counters("dl:").await.unwrap();
    assert_eq!(
        values,
        [("dl:a".to_owned(), 2), ("dl:b".to_owned(), 2)],
        "each counter added exactly once more"
    );
    println!("retries after conflicts: {}", store.conflict_retries());
    servers::drop_pg_tables(&table).await;
}

/// The sweep of expired counters locks rows in name order, as `add_counters` does, so the
/// two never deadlock. Two expired counters expire (and lie in the table) in the opposite
/// order of their names;
/// another transaction plays an upsert: it holds the first name while the store's sweep
/// waits for it, then takes the second. A sweep that locked in expiry order would hold the
/// second already: a deadlock. Here the other transaction goes through, and the sweep
/// deletes both once it commits, with no conflict at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_counters_are_swept_in_the_order_upserts_lock_them() {
    use sqlx::Connection;

    let table = servers::fresh_table();
    let Some(store) = open(&table).await else {
        return;
    };
    let counters = format!("{table}_counters");
    let mut other = sqlx::PgConnection::connect(&servers::pg_url())
        .await
        .unwrap();
    let mut watch = sqlx::PgConnection::connect(&servers::pg_url())
        .await
        .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {counters} (name, value, expires_at) VALUES ('sw:b', 1, 1000), ('sw:a', 1, 2000)"
    ))
    .execute(&mut other)
    .await
    .unwrap();
    let mut tx = other.begin().await.unwrap();
    let lock =
        |name: &str| format!("SELECT value FROM {counters} WHERE name = '{name}' FOR UPDATE");
    sqlx::query(&lock("sw:a")).execute(&mut *tx).await.unwrap();
    // The store's first call with a time to live sweeps.
    let adding = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .add_counters(&[("sw:z".to_owned(), 1)], Some(Duration::from_secs(60)))
                .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() AND query LIKE $1",
        )
        .bind(format!("%DELETE FROM {counters}%"))
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sweep never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sqlx::query(&lock("sw:b"))
        .execute(&mut *tx)
        .await
        .expect("the sweep holds no row it has not reached in name order");
    // Longer than `deadlock_timeout` (1 s by default): a cycle would have been found.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), adding)
        .await
        .expect("the sweep finishes")
        .unwrap()
        .expect("the call succeeds");
    assert_eq!(store.conflict_retries(), 0, "no deadlock, nothing retried");
    let left: Vec<String> =
        sqlx::query_scalar(&format!("SELECT name FROM {counters} ORDER BY name"))
            .fetch_all(&mut other)
            .await
            .unwrap();
    assert_eq!(left, ["sw:z"], "the expired counters were swept");
    servers::drop_pg_tables(&table).await;
}
