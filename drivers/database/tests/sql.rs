//! What the three databases share beyond the conformance suite, each case run against each
//! (SQLite on one file per test binary): transactional dispatch, rows written by hand,
//! concurrent migrations, upgrades from the schema before the v2 contract and from the one
//! before waiting jobs, what a waiting job keeps, many stores on one table, a reconnect,
//! guarded steps raced from several stores, replacing pushes raced with reservations, records
//! and their pruning; and on the servers, `SKIP LOCKED`, the reserve plan and a real
//! deadlock retried.

mod common;
mod servers;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use queue_core::storage::{Effect, Guard, RecordKey, Settle, StorageExt, Wake};
use queue_core::{
    Availability, ConnectOptions, Handle, Job, JobContext, JobError, NewJob, Pushed, Queue,
    ReserveRequest, Storage, Unique, Until, WaitingJob, WorkerOptions,
};
use queue_database::{dispatch_many_within, DispatchWithin, Sql, SqlOptions, SqlStore};
use serde::{Deserialize, Serialize};
use sqlx::Connection;

/// A job dispatched inside the application's transaction.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(name = "welcome", queue = "welcome")]
struct Welcome {
    user: i64,
}

impl Handle for Welcome {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

/// What a case needs of a database beyond the store: its URL, raw SQL, its own texts.
trait Server: Sql + Sized {
    /// The two URL schemes of the driver.
    const SCHEMES: [&'static str; 2];
    /// Rows an operator wrote by hand (`{t}` is the table): NULL or garbage in the payload
    /// or the name.
    const HAND_ROWS: &'static [&'static str];
    /// The tables whose name is like the bound pattern, sorted.
    const TABLES: &'static str;
    /// How many transactions wait for a row lock in a statement like the bound pattern.
    const LOCK_WAITS: &'static str;
    /// How an application should begin a transaction that dispatches: on SQLite
    /// `BEGIN IMMEDIATE` (a deferred one that reads first cannot upgrade to a write once
    /// another connection wrote, and fails at once with "database is locked").
    const BEGIN_WRITE: &'static str = "BEGIN";
    fn url() -> String;
    fn up() -> impl Future<Output = Result<(), String>> + Send;
    /// Runs raw SQL on a connection; the first column of each row, as numbers.
    fn raw<'c>(conn: &'c mut Self::Connection, sql: &'c str) -> BoxFuture<'c, Vec<i64>>;
    /// The first column of each row of a query with one bound text, as texts.
    fn texts<'c>(
        conn: &'c mut Self::Connection,
        sql: &'c str,
        arg: String,
    ) -> BoxFuture<'c, Vec<String>>;
    fn connect() -> impl Future<Output = Self::Connection> + Send;
    /// Checks, after `ANALYZE`, that a reservation reads the `{table}_due` index in order
    /// rather than the whole table (SQLite: see its own test).
    fn check_plan<'a>(_store: &'a SqlStore<Self>, _table: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// What every database does the same way with its own sqlx types.
macro_rules! server {
    ($feature:literal, $db:ty, $conn:ty, $url:expr, $up:expr, { $($own:tt)* }) => {
        #[cfg(feature = $feature)]
        impl Server for $db {
            $($own)*

            fn url() -> String {
                $url
            }

            async fn up() -> Result<(), String> {
                $up.await
            }

            fn raw<'c>(conn: &'c mut $conn, sql: &'c str) -> BoxFuture<'c, Vec<i64>> {
                Box::pin(async move { sqlx::query_scalar(sql).fetch_all(conn).await.expect(sql) })
            }

            fn texts<'c>(conn: &'c mut $conn, sql: &'c str, arg: String) -> BoxFuture<'c, Vec<String>> {
                Box::pin(async move { sqlx::query_scalar(sql).bind(arg).fetch_all(conn).await.expect(sql) })
            }

            async fn connect() -> $conn {
                <$conn>::connect(&Self::url()).await.unwrap()
            }
        }
    };
}

server!(
    "sqlite",
    sqlx::Sqlite,
    sqlx::SqliteConnection,
    sqlite_url(),
    async { Ok(()) },
    {
        const SCHEMES: [&'static str; 2] = ["sqlite://", "sqlite:"];
        const HAND_ROWS: &'static [&'static str] = &[
        "INSERT INTO {t} (queue, name, payload) VALUES ('q', NULL, NULL)",
        "INSERT INTO {t} (queue, name, payload) VALUES ('q', 'named', NULL)",
        "INSERT INTO {t} (queue, name, payload) VALUES ('q', NULL, X'ff00fe')",
        "INSERT INTO {t} (queue, name, payload) VALUES ('q', CAST(X'ff41' AS TEXT), 'not an envelope')",
        "INSERT INTO {t} (queue, name, payload, attempts) VALUES ('q', 'odd', 42, 'many')",
    ];
        const TABLES: &'static str =
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ?1 ORDER BY name";
        const LOCK_WAITS: &'static str = "SELECT '0' WHERE ?1 IS NOT NULL";
        const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    }
);

server!(
    "postgres",
    sqlx::Postgres,
    sqlx::PgConnection,
    servers::pg_url(),
    servers::pg_up(),
    {
        const SCHEMES: [&'static str; 2] = ["postgres://", "postgresql://"];
        const HAND_ROWS: &'static [&'static str] = &[
            "INSERT INTO {t} (queue, name, payload) VALUES ('q', NULL, NULL)",
            "INSERT INTO {t} (queue, name, payload) VALUES ('q', 'named', NULL)",
            "INSERT INTO {t} (queue, name, payload) VALUES ('q', NULL, '\\xff00fe')",
            "INSERT INTO {t} (queue, name, payload) VALUES ('q', 'x', 'not an envelope')",
        ];
        const TABLES: &'static str =
            "SELECT tablename::text FROM pg_tables WHERE tablename LIKE $1 ORDER BY tablename";
        const LOCK_WAITS: &'static str = "SELECT count(*)::text FROM pg_stat_activity \
         WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() AND query LIKE $1";

        fn check_plan<'a>(store: &'a SqlStore<Self>, table: &'a str) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                Self::raw(&mut Self::connect().await, &format!("ANALYZE {table}")).await;
                let plan = store
                    .explain_reserve(&["b".to_owned(), "a".to_owned()])
                    .await
                    .unwrap();
                println!("{plan}");
                assert!(
                    plan.contains(&format!("Index Scan using {table}_due on {table}")),
                    "{plan}"
                );
                assert!(plan.contains(&format!("{table}_pkey")), "{plan}");
                assert!(
                    plan.contains("LockRows") && !plan.contains("Seq Scan"),
                    "{plan}"
                );
            })
        }
    }
);

server!(
    "mysql",
    sqlx::MySql,
    sqlx::MySqlConnection,
    servers::mysql_url(),
    servers::mysql_up(),
    {
        const SCHEMES: [&'static str; 2] = ["mysql://", "mariadb://"];
        const HAND_ROWS: &'static [&'static str] = &[
            "INSERT INTO {t} (queue, name, payload) VALUES ('q', NULL, NULL)",
            "INSERT INTO {t} (queue, name, payload) VALUES ('q', 'named', NULL)",
            "INSERT INTO {t} (queue, name, payload) VALUES ('q', NULL, X'ff00fe')",
            "INSERT INTO {t} (queue, name, payload) VALUES ('q', X'ff41', 'not an envelope')",
        ];
        const TABLES: &'static str =
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE ? ORDER BY table_name";
        const LOCK_WAITS: &'static str =
            "SELECT CAST(COUNT(*) AS CHAR) FROM information_schema.INNODB_TRX \
         WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE ?";

        fn check_plan<'a>(store: &'a SqlStore<Self>, table: &'a str) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                let analyze = format!("ANALYZE TABLE {table}");
                sqlx::query(&analyze)
                    .execute(&mut Self::connect().await)
                    .await
                    .unwrap();
                let plan = store.explain_reserve("b").await.unwrap();
                println!("{plan}");
                assert!(plan.contains(&format!("key={table}_due ")), "{plan}");
                assert!(
                    !plan.contains("filesort") && !plan.contains("type=ALL"),
                    "{plan}"
                );
            })
        }
    }
);

/// A file of this test binary's own, created by the first connection.
#[cfg(feature = "sqlite")]
fn sqlite_url() -> String {
    static FILE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let file = FILE.get_or_init(|| common::scratch_dir().join("sql.db").display().to_string());
    format!("sqlite://{file}?mode=rwc")
}

/// The tables whose name starts with `table`, sorted.
async fn tables<DB: Server>(table: &str) -> Vec<String> {
    DB::texts(&mut DB::connect().await, DB::TABLES, format!("{table}%")).await
}

/// How many of the server's transactions wait for a row lock in a statement naming `table`.
async fn lock_waits<DB: Server>(conn: &mut DB::Connection, table: &str) -> i64 {
    // MySQL refreshes what INNODB_TRX shows only when it was not read for 100 ms.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let count = DB::texts(conn, DB::LOCK_WAITS, format!("%{table}%")).await;
    count.first().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Drops a store's tables.
async fn drop_tables<DB: Server>(table: &str) {
    let mut conn = DB::connect().await;
    for suffix in [
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
    ] {
        DB::raw(&mut conn, &format!("DROP TABLE IF EXISTS {table}{suffix}")).await;
    }
}

fn job(queue: &str, payload: &[u8]) -> NewJob {
    NewJob::new(queue, "n", payload.to_vec())
}

fn request(queue: &str, limit: usize) -> ReserveRequest {
    ReserveRequest::new([queue], Duration::from_secs(60), limit)
}

fn options<DB: Server>(table: &str) -> SqlOptions<DB> {
    SqlOptions::new(DB::url())
        .table(table)
        .failed_table(format!("{table}_f"))
        .max_connections(8)
}

/// A store on fresh tables, or `None` (printed) when the server is not there.
async fn open<DB: Server>(table: &str) -> Option<SqlStore<DB>> {
    if let Err(e) = DB::up().await {
        return queue_tests::server_missing(&DB::url(), e);
    }
    Some(
        SqlStore::connect_with(options(table))
            .await
            .expect("the store opens"),
    )
}

async fn total<DB: Server>(store: &SqlStore<DB>, queue: &str) -> u64 {
    store.inspect().unwrap().size(queue).await.unwrap().total()
}

async fn dispatch_within_a_transaction<DB: Server>() {
    let table = servers::fresh_table();
    let Some(store) = open::<DB>(&table).await else {
        return;
    };
    // Rolled back: no job.
    let mut tx = store.pool().begin_with(DB::BEGIN_WRITE).await.unwrap();
    let id = Welcome { user: 1 }
        .dispatch()
        .within(&mut *tx, &store)
        .await
        .unwrap();
    assert!(!id.0.is_empty());
    assert_eq!(
        total(&store, "welcome").await,
        0,
        "invisible before the commit"
    );
    tx.rollback().await.unwrap();
    assert_eq!(total(&store, "welcome").await, 0);

    // Committed: exactly the job, under the id it was given.
    let mut tx = store.pool().begin_with(DB::BEGIN_WRITE).await.unwrap();
    let id = Welcome { user: 2 }
        .dispatch()
        .within(&mut *tx, &store)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let got = store.reserve(&request("welcome", 10)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (&got[0].lease.job_id, got[0].name.as_str()),
        (&id, "welcome")
    );
    let envelope = queue_core::envelope::Envelope::decode(&got[0].payload).unwrap();
    assert_eq!(envelope.data.get(), r#"{"user":2}"#);

    // Many at once, then one on a pool connection.
    let queue = Queue::new(store.clone());
    let mut tx = store.pool().begin_with(DB::BEGIN_WRITE).await.unwrap();
    let pings = (0..12).map(|n| {
        queue
            .dispatch_named("ping", serde_json::json!(n))
            .on_queue("many")
    });
    let ids = dispatch_many_within(&mut *tx, &store, pings).await.unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    Welcome { user: 3 }
        .dispatch()
        .on_queue("many")
        .within(&mut *conn, &store)
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

    // A claim taken in a transaction that rolls back is free again.
    let unique = || job("claims", b"u").unique(Unique::new("k"));
    let mut tx = store.pool().begin_with(DB::BEGIN_WRITE).await.unwrap();
    assert!(store.push_on(&mut *tx, vec![unique()]).await.unwrap()[0].is_created());
    tx.rollback().await.unwrap();
    assert!(store.push_one(unique()).await.unwrap().is_created());
    drop_tables::<DB>(&table).await;
}

async fn dispatch_within_checks_queue_limits<DB: Server>() {
    let table = servers::fresh_table();
    if open::<DB>(&table).await.is_none() {
        return;
    }
    let mut settings = queue_core::QueueSettings::default();
    settings.max_queue_size.insert("small".to_owned(), 1);
    let store = SqlStore::<DB>::connect_with(options(&table).dispatch_settings(settings))
        .await
        .unwrap();
    let mut tx = store.pool().begin_with(DB::BEGIN_WRITE).await.unwrap();
    let first = Welcome { user: 1 }.dispatch().on_queue("small");
    first.within(&mut *tx, &store).await.unwrap();
    let full = Welcome { user: 2 }
        .dispatch()
        .on_queue("small")
        .within(&mut *tx, &store)
        .await;
    assert!(
        matches!(full, Err(queue_core::Error::QueueFull { .. })),
        "{full:?}"
    );
    tx.rollback().await.unwrap();
    drop_tables::<DB>(&table).await;
}

async fn reserve_skips_rows_another_transaction_holds<DB: Server>() {
    let table = servers::fresh_table();
    let Some(store) = open::<DB>(&table).await else {
        return;
    };
    store
        .push(vec![job("q", b"first"), job("q", b"second")])
        .await
        .unwrap();
    // Another worker in the middle of its reservation holds the first row.
    let mut tx = store.pool().begin().await.unwrap();
    let held = format!("SELECT id FROM {table} ORDER BY id LIMIT 1 FOR UPDATE");
    DB::raw(&mut tx, &held).await;
    let got = tokio::time::timeout(Duration::from_secs(2), store.reserve(&request("q", 2)))
        .await
        .expect("reserve does not wait for the other transaction")
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"second");
    tx.rollback().await.unwrap();
    let got = store.reserve(&request("q", 2)).await.unwrap();
    assert_eq!((got.len(), got[0].payload.as_slice()), (1, &b"first"[..]));
    drop_tables::<DB>(&table).await;
}

async fn rows_written_by_hand_go_to_the_failed_store<DB: Server>() {
    let table = servers::fresh_table();
    let Some(store) = open::<DB>(&table).await else {
        return;
    };
    let mut conn = DB::connect().await;
    for sql in DB::HAND_ROWS {
        DB::raw(&mut conn, &sql.replace("{t}", &table)).await;
    }
    let queue = Queue::new(store.clone());
    queue.listen("good", |_: serde_json::Value, _ctx| async { Ok(()) });
    queue
        .dispatch_named("good", serde_json::json!({}))
        .on_queue("q")
        .await
        .unwrap();
    let worker = WorkerOptions::default()
        .queues(["q"])
        .sleep(Duration::from_millis(50))
        .stop_when_empty();
    let summary = tokio::time::timeout(Duration::from_secs(30), queue.worker(worker).run())
        .await
        .expect("the worker stops")
        .expect("the worker runs");
    assert_eq!(
        (summary.processed, summary.failed),
        (1, DB::HAND_ROWS.len() as u64)
    );
    let failed = store.failed_store().unwrap();
    let failed = failed
        .list(queue_core::storage::PageRequest::first(10))
        .await
        .unwrap()
        .items;
    assert_eq!(failed.len(), DB::HAND_ROWS.len());
    assert!(
        failed.iter().all(|f| f.error.contains("payload")),
        "{failed:?}"
    );
    assert!(failed.iter().any(|f| f.payload == [0xff, 0x00, 0xfe]));
    assert_eq!(total(&store, "q").await, 0);
    drop_tables::<DB>(&table).await;
}

async fn connects_by_url_and_migrates_concurrently<DB: Server>() {
    use queue_database as _;
    if let Err(e) = DB::up().await {
        return queue_tests::server_missing::<()>(&DB::url(), e).unwrap_or_default();
    }
    let table = servers::fresh_table();
    // Several processes starting at once all create the tables: none fails.
    let mut opens = Vec::new();
    for i in 0..4 {
        let url = DB::url().replacen(DB::SCHEMES[0], DB::SCHEMES[i % 2], 1);
        let options = ConnectOptions::new()
            .table(&table)
            .failed_table(format!("{table}_f"))
            .migrate(true);
        opens.push(tokio::spawn(async move {
            queue_core::storage::connect(&url, options).await
        }));
    }
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().expect("connects and migrates"));
    }
    assert_eq!(stores[0].driver(), DB::DIALECT.name());
    stores[0].push(vec![job("q", b"x")]).await.unwrap();
    let got = stores[1].reserve(&request("q", 1)).await.unwrap();
    stores[2].fail(&got[0].lease, "no\0pe").await.unwrap();
    let failed = stores[3].failed_store().unwrap();
    let failed = failed
        .list(queue_core::storage::PageRequest::first(1))
        .await
        .unwrap();
    assert_eq!(
        failed.items[0].error, "no\u{fffd}pe",
        "a NUL is stored as a replacement"
    );
    let expected: Vec<String> = [
        "", "_control", "_f", "_groups", "_locks", "_parked", "_records", "_values", "_waiting",
        "_workers",
    ]
    .iter()
    .map(|suffix| format!("{table}{suffix}"))
    .collect();
    assert_eq!(
        tables::<DB>(&table).await,
        expected,
        "the statistics table is gone"
    );
    drop_tables::<DB>(&table).await;
}

/// Makes the tables of `table` as the migration files numbered before `first_missing` make
/// them (a database of an older version), by hand.
async fn schema_before<DB: Server>(conn: &mut DB::Connection, table: &str, first_missing: &str) {
    let tables = queue_database::Tables::new(table, &format!("{table}_f")).unwrap();
    let schema = queue_database::schema_sql(DB::DIALECT, &tables);
    let header = format!("-- {}/", DB::DIALECT);
    let files = schema
        .split(&header)
        .filter(|f| f.get(..4).is_some_and(|n| n < first_missing));
    let text: String = files
        .flat_map(|file| file.lines().skip(1))
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for statement in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        DB::raw(conn, statement).await;
    }
}

/// A database made before the v2 contract (the first four migration files, a job waiting
/// and one failed) is upgraded by connecting: the job is still there and claims work.
async fn upgrades_a_database_of_before<DB: Server>() {
    let table = servers::fresh_table();
    if let Err(e) = DB::up().await {
        return queue_tests::server_missing::<()>(&DB::url(), e).unwrap_or_default();
    }
    let mut conn = DB::connect().await;
    schema_before::<DB>(&mut conn, &table, "0005").await;
    DB::raw(
        &mut conn,
        &format!("INSERT INTO {table} (queue, name, payload) VALUES ('q', 'old', 'x')"),
    )
    .await;
    let store = SqlStore::<DB>::connect_with(options(&table))
        .await
        .expect("migrates");
    let got = store.reserve(&request("q", 1)).await.unwrap();
    assert_eq!(got[0].name, "old");
    let unique = || job("q", b"u").unique(Unique::new("k"));
    assert!(store.push_one(unique()).await.unwrap().is_created());
    assert!(!store.push_one(unique()).await.unwrap().is_created());
    store.migrate().await.expect("migrating again is harmless");
    drop_tables::<DB>(&table).await;
}

/// A database of version 5 (made before waiting jobs) gets the waiting-jobs, records, values
/// and workers tables when a store connects, and its other tables are left alone: connecting does not wait for a
/// transaction that holds rows of the jobs table, as it would on PostgreSQL behind the
/// `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` of 0005 run again (which locks before it
/// looks). Not on SQLite, where that transaction would hold the file's one write lock.
async fn upgrades_a_database_of_version_5<DB: Server>() {
    let table = servers::fresh_table();
    if let Err(e) = DB::up().await {
        return queue_tests::server_missing::<()>(&DB::url(), e).unwrap_or_default();
    }
    let mut conn = DB::connect().await;
    schema_before::<DB>(&mut conn, &table, "0006").await;
    for sql in [
        format!("INSERT INTO {table}_control (name, value) VALUES ('schema', 5)"),
        format!("INSERT INTO {table} (queue, name, payload) VALUES ('q', 'old', 'x')"),
    ] {
        DB::raw(&mut conn, &sql).await;
    }
    let mut other = DB::connect().await;
    let mut holder = match DB::DIALECT {
        queue_database::Dialect::Sqlite => None,
        _ => Some(other.begin().await.unwrap()),
    };
    if let Some(tx) = &mut holder {
        DB::raw(tx, &format!("SELECT id FROM {table} FOR UPDATE")).await;
    }
    let store = tokio::time::timeout(
        Duration::from_secs(10),
        SqlStore::<DB>::connect_with(options(&table)),
    )
    .await
    .expect("connecting does not wait for the transaction")
    .expect("migrates");
    if let Some(tx) = holder {
        tx.rollback().await.unwrap();
    }
    let version = format!("SELECT value FROM {table}_control WHERE name = 'schema'");
    assert_eq!(DB::raw(&mut conn, &version).await, [10]);
    let groups = store.groups().unwrap();
    let held = Effect::Hold(WaitingJob::new("k", 1, job("next", b"n")));
    let value = Effect::Value {
        group: "g".into(),
        name: "n".into(),
        value: b"v".to_vec(),
    };
    groups.apply(vec![held, value]).await.unwrap();
    assert_eq!(groups.waiting("k").await.unwrap(), Some(1));
    assert_eq!(
        groups.value("g", "n").await.unwrap(),
        Some(b"v".to_vec()),
        "the values table is there"
    );
    let got = store.reserve(&request("q", 1)).await.unwrap();
    assert_eq!(got[0].name, "old");
    let track = store.capabilities().track.unwrap();
    let key = RecordKey::new(got[0].lease.job_id.clone(), RecordKey::PROGRESS);
    let written = track.put_record(&key, b"1", Duration::from_secs(60), Some(&got[0].lease));
    assert!(written.await.unwrap(), "the records table is there");
    let workers = store.workers().unwrap();
    workers
        .beat("w", b"entry", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        workers.workers().await.unwrap(),
        [("w".to_owned(), b"entry".to_vec())],
        "the workers table is there"
    );
    // Connecting again runs no DDL, and says the same version.
    drop(SqlStore::<DB>::connect_with(options(&table)).await.unwrap());
    assert_eq!(DB::raw(&mut conn, &version).await, [10]);
    drop_tables::<DB>(&table).await;
}

/// A jobs table used with another failed table than before: connecting makes the new
/// failed table (the schema version, kept with the jobs table, says nothing of it), and a
/// job fails into it.
async fn a_new_failed_table_is_made_for_an_existing_jobs_table<DB: Server>() {
    let table = servers::fresh_table();
    let Some(store) = open::<DB>(&table).await else {
        return;
    };
    drop(store);
    let other = format!("{table}_g");
    let store = SqlStore::<DB>::connect_with(options::<DB>(&table).failed_table(&other))
        .await
        .expect("migrates");
    store.push(vec![job("q", b"x")]).await.unwrap();
    let got = store.reserve(&request("q", 1)).await.unwrap();
    store.fail(&got[0].lease, "no").await.unwrap();
    let failed = store.failed_store().unwrap();
    assert_eq!(failed.count().await.unwrap(), 1);
    let mut conn = DB::connect().await;
    let count = format!("SELECT COUNT(*) FROM {other}");
    assert_eq!(DB::raw(&mut conn, &count).await, [1]);
    DB::raw(&mut conn, &format!("DROP TABLE IF EXISTS {other}")).await;
    drop_tables::<DB>(&table).await;
}

/// Waiting jobs keep what a push would store: bytes of any kind (none too), a delay counted
/// from their release, a due time, a claim or none; keys of any text. A job held and
/// released in one call is pushed at once; of two holds of one key in one call, the first
/// is kept.
async fn waiting_jobs_keep_what_was_held<DB: Server>() {
    let table = servers::fresh_table();
    let Some(store) = open::<DB>(&table).await else {
        return;
    };
    let groups = store.groups().unwrap();
    let hold = |key: &str, deps: u32, job: NewJob| Effect::Hold(WaitingJob::new(key, deps, job));
    let deps = |key: &str, delta: i64| Effect::Deps {
        key: key.to_owned(),
        delta,
    };
    let at = SystemTime::now() + Duration::from_secs(3600);
    let delay = Duration::from_secs(600);
    let held = [
        ("empty", job("w", b"")),
        ("bytes\0 ключ 🔑", job("w", &[0, 255, 1, 0])),
        (
            "delayed",
            job("w", b"d").available(Availability::After(delay)),
        ),
        ("at", job("w", b"a").available(Availability::At(at))),
        ("claimed", job("w", b"c").unique(Unique::new("c1"))),
    ];
    groups
        .apply(held.iter().map(|(k, j)| hold(k, 1, j.clone())).collect())
        .await
        .unwrap();
    let mut conn = DB::connect().await;
    let plain = format!(
        "SELECT COUNT(*) FROM {table}_waiting \
         WHERE available_at IS NULL AND unique_key IS NULL AND unique_until IS NULL"
    );
    assert_eq!(DB::raw(&mut conn, &plain).await, [3], "NULL stays NULL");
    for (key, _) in &held {
        assert_eq!(groups.waiting(key).await.unwrap(), Some(1), "{key}");
    }
    assert_eq!(total(&store, "w").await, 0);

    let released = queue_core::storage::unix_millis(SystemTime::now());
    groups
        .apply(held.iter().map(|(k, _)| deps(k, -1)).collect())
        .await
        .unwrap();
    for (key, _) in &held {
        assert_eq!(groups.waiting(key).await.unwrap(), None, "{key}");
    }
    let size = store.inspect().unwrap().size("w").await.unwrap();
    assert_eq!((size.waiting, size.delayed), (3, 2), "{size:?}");
    let got = store.reserve(&request("w", 10)).await.unwrap();
    let mut payloads: Vec<Vec<u8>> = got.iter().map(|r| r.payload.clone()).collect();
    payloads.sort();
    assert_eq!(payloads, [vec![], vec![0, 255, 1, 0], b"c".to_vec()]);
    let due = format!("SELECT due_at FROM {table} WHERE reserved_until IS NULL ORDER BY due_at");
    let due = DB::raw(&mut conn, &due).await;
    let delayed = released + 600_000;
    assert!(
        (delayed - 5_000..delayed + 5_000).contains(&due[0]),
        "the delay counts from the release: {due:?}, released at {released}"
    );
    assert_eq!(due[1], queue_core::storage::unix_millis(at));
    let again = store.push_one(job("w", b"x").unique(Unique::new("c1")));
    assert!(!again.await.unwrap().is_created(), "the claim went with it");

    // Held and released in one call; a skip of a key never held does nothing.
    let skip = Effect::Skip {
        key: "nothing".to_owned(),
    };
    groups
        .apply(vec![
            hold("both", 2, job("w2", b"b")),
            deps("both", -2),
            skip,
        ])
        .await
        .unwrap();
    assert_eq!(total(&store, "w2").await, 1);
    assert_eq!(groups.waiting("both").await.unwrap(), None);

    // Two holds of one key in one call: the first is kept.
    groups
        .apply(vec![
            hold("twice", 1, job("w3", b"first")),
            hold("twice", 3, job("w3", b"second")),
        ])
        .await
        .unwrap();
    assert_eq!(groups.waiting("twice").await.unwrap(), Some(1));
    groups.apply(vec![deps("twice", -1)]).await.unwrap();
    let got = store.reserve(&request("w3", 5)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"first");
    drop_tables::<DB>(&table).await;
}

/// A reservation reads the `(queue, due_at, id)` index, never the whole table.
async fn reserve_reads_the_due_index<DB: Server>() {
    let table = servers::fresh_table();
    let Some(store) = open::<DB>(&table).await else {
        return;
    };
    for batch in 0..20 {
        let queue = if batch % 2 == 0 { "a" } else { "b" };
        store
            .push((0..1000).map(|_| job(queue, b"x")).collect())
            .await
            .unwrap();
    }
    DB::check_plan(&store, &table).await;
    drop_tables::<DB>(&table).await;
}

async fn four_stores_share_one_table<DB: Server>() {
    let table = servers::fresh_table();
    let Some(first) = open::<DB>(&table).await else {
        return;
    };
    const JOBS: usize = 2_000;
    let jobs = (0..JOBS)
        .map(|i| job("shared", i.to_string().as_bytes()))
        .collect();
    first.push(jobs).await.unwrap();
    let seen: Arc<Mutex<HashMap<Vec<u8>, usize>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..4 {
        // Each its own store, with its own connections: four machines.
        let store = open::<DB>(&table).await.unwrap();
        let seen = seen.clone();
        workers.push(tokio::spawn(async move {
            let mut fetch = store.reserve(&request("shared", 8)).await.unwrap();
            while !fetch.is_empty() {
                for r in &fetch {
                    *seen.lock().unwrap().entry(r.payload.clone()).or_default() += 1;
                }
                let acks = fetch.iter().map(|r| Settle::ack(r.lease.clone())).collect();
                let reply = store
                    .settle(acks, Some(&request("shared", 8)))
                    .await
                    .unwrap();
                assert!(reply
                    .settled
                    .iter()
                    .all(|s| *s == queue_core::storage::Settled::Applied));
                fetch = reply.reserved;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let counts: Vec<usize> = seen.lock().unwrap().values().copied().collect();
    assert_eq!(counts.len(), JOBS, "every job ran");
    assert!(counts.iter().all(|n| *n == 1), "no job ran twice");
    assert_eq!(total(&first, "shared").await, 0);
    drop_tables::<DB>(&table).await;
}

async fn jobs_and_reservations_survive_a_reconnect<DB: Server>() {
    let table = servers::fresh_table();
    let Some(store) = open::<DB>(&table).await else {
        return;
    };
    store
        .push(vec![job("q", b"one"), job("q", b"two")])
        .await
        .unwrap();
    let held = store.reserve(&request("q", 1)).await.unwrap();
    store.close().await;
    drop(store);
    let store = open::<DB>(&table).await.unwrap();
    let size = store.inspect().unwrap().size("q").await.unwrap();
    assert_eq!((size.waiting, size.reserved), (1, 1));
    assert_eq!(
        store.acknowledge(&[held[0].lease.clone()]).await.unwrap(),
        vec![true]
    );
    drop_tables::<DB>(&table).await;
}

/// A real deadlock. The store settles a job with two counter deltas, added in name order;
/// another transaction (made heavy with a thousand rows written: InnoDB rolls back the
/// lighter of two deadlocked transactions) holds the second counter and, once the store
/// waits for it, asks for the first, which the store holds. The server undoes the store's
/// transaction; the store runs the whole settle again, which waits for the other
/// transaction and then goes through: the job is settled once, each counter added once.
async fn a_deadlocked_settle_is_run_again_and_applied_once<DB: Server>() {
    let table = servers::fresh_table();
    let Some(store) = open::<DB>(&table).await else {
        return;
    };
    let groups = format!("{table}_groups");
    let count = |lease| {
        Settle::ack(lease).effect(Effect::Count {
            group: "g".to_owned(),
            deltas: vec![("a".to_owned(), 1), ("b".to_owned(), 1)],
        })
    };
    store
        .push(vec![job("q", b"1"), job("q", b"2")])
        .await
        .unwrap();
    let got = store.reserve(&request("q", 2)).await.unwrap();
    // The rows exist, so the other transaction can lock them.
    store.settle_one(count(got[0].lease.clone())).await.unwrap();
    assert_eq!(store.conflict_retries(), 0);

    let (mut other, mut watch) = (DB::connect().await, DB::connect().await);
    DB::raw(
        &mut other,
        &format!("CREATE TABLE {table}_f_ballast (id INT PRIMARY KEY)"),
    )
    .await;
    let mut tx = other.begin().await.unwrap();
    let ballast = format!(
        "INSERT INTO {table}_f_ballast (id) {}",
        (1..=1000)
            .map(|n| format!("SELECT {n}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    );
    DB::raw(&mut tx, &ballast).await;
    let lock = |name: &str| {
        format!("SELECT value FROM {groups} WHERE grp = 'g' AND name = '{name}' FOR UPDATE")
    };
    DB::raw(&mut tx, &lock("b")).await;
    let settling = tokio::spawn({
        let (store, lease) = (store.clone(), got[1].lease.clone());
        async move { store.settle_one(count(lease)).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while lock_waits::<DB>(&mut watch, &groups).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the store never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The cycle: the server undoes the store's transaction, which lets this one through.
    DB::raw(&mut tx, &lock("a")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.conflict_retries() == 0 {
        assert!(
            Instant::now() < deadline,
            "the store met the deadlock and runs the settle again"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), settling)
        .await
        .expect("the settle finishes")
        .unwrap()
        .expect("the call succeeds despite the deadlock");
    let counters = store.groups().unwrap().counters("g").await.unwrap();
    assert_eq!(
        counters,
        [("a".to_owned(), 2), ("b".to_owned(), 2)],
        "each added once more"
    );
    assert_eq!(total(&store, "q").await, 0);
    DB::raw(&mut other, &format!("DROP TABLE {table}_f_ballast")).await;
    drop_tables::<DB>(&table).await;
}

/// Guarded steps raced from four stores on one table (each with connections of its own, as
/// processes have): of the steps expecting one value, one applies, whatever path the guard
/// takes. A missing counter (the `INSERT`, which MySQL refuses for a duplicate with a shared
/// lock left on the row), a row holding 0, and a value set that is the one expected (no
/// `UPDATE` then, so MySQL's count of rows an `UPDATE` changed does not matter: all apply,
/// and the counter stays).
async fn guarded_steps_race_across_stores<DB: Server>() {
    let table = servers::fresh_table();
    let Some(store) = open::<DB>(&table).await else {
        return;
    };
    let mut stores = vec![store.clone()];
    for _ in 0..3 {
        stores.push(SqlStore::<DB>::connect_with(options(&table)).await.unwrap());
    }
    let race = |group: &'static str, expect: i64, set: i64| {
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let store = stores[t % stores.len()].clone();
                tokio::spawn(async move {
                    let won = Effect::Count {
                        group: group.to_owned(),
                        deltas: vec![("won".to_owned(), 1)],
                    };
                    let guard = Guard::new(group, "next", expect, set);
                    store.groups().unwrap().apply_if(guard, vec![won]).await
                })
            })
            .collect();
        async move {
            let mut won = 0;
            for task in tasks {
                won += usize::from(task.await.unwrap().expect("no error, even contended"));
            }
            won
        }
    };
    let groups = store.groups().unwrap();
    let counters = |group: &'static str| async move { groups.counters(group).await.unwrap() };
    let pair = |name: &str, value: i64| (name.to_owned(), value);

    assert_eq!(race("missing", 0, 7).await, 1, "one makes the counter");
    assert_eq!(counters("missing").await, [pair("next", 7), pair("won", 1)]);
    assert_eq!(race("missing", 0, 9).await, 0, "it holds 7 now");
    assert_eq!(race("missing", 7, 8).await, 1);
    assert_eq!(counters("missing").await, [pair("next", 8), pair("won", 2)]);

    // A guard that sets the value it expects makes a missing counter, holding 0.
    assert_eq!(race("zero", 0, 0).await, 16, "all apply");
    assert_eq!(counters("zero").await, [pair("next", 0), pair("won", 16)]);
    assert_eq!(race("zero", 0, 5).await, 1, "one takes the row holding 0");
    assert_eq!(race("zero", 5, 5).await, 16, "all apply, the value stays");
    assert_eq!(counters("zero").await, [pair("next", 5), pair("won", 33)]);
    assert_eq!(race("zero", 4, 4).await, 0);
    assert_eq!(
        race("zero", 0, 0).await,
        0,
        "the row holds 5: not a missing counter"
    );
    assert_eq!(counters("zero").await, [pair("next", 5), pair("won", 33)]);

    assert!(!groups
        .apply_if(Guard::new("none", "next", 3, 3), Vec::new())
        .await
        .unwrap());
    assert_eq!(counters("none").await, [], "a refused guard makes no row");
    println!(
        "conflicts retried: {}",
        stores.iter().map(SqlStore::conflict_retries).sum::<u64>()
    );
    for store in &stores {
        store.close().await;
    }
    drop_tables::<DB>(&table).await;
}

/// One task pushes 400 jobs of one key held until `until`, each replacing the queued job
/// holding it, while another reserves, holds the job a moment and acknowledges it. Each push
/// is created, replaces the job it names, or is a duplicate of it; of one job, in push
/// order: created, replaced any number of times, then duplicates once a worker has it. The
/// worker gets, once, the payload of the last push that reached its job: no replace landed
/// after the reservation, and none was lost.
async fn race_replacing_pushes<DB: Server>(
    pusher: &SqlStore<DB>,
    worker: &SqlStore<DB>,
    until: Until,
) {
    const PUSHES: usize = 400;
    let queue = until.as_str();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reserving = tokio::spawn({
        let (worker, done) = (worker.clone(), done.clone());
        async move {
            let mut taken: Vec<(String, Vec<u8>, u32)> = Vec::new();
            let mut acked = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let got = worker.reserve(&request(queue, 1)).await.unwrap();
                let Some(r) = got.into_iter().next() else {
                    if finished {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                taken.push((r.lease.job_id.0.clone(), r.payload.clone(), r.attempts));
                // Held a moment: pushes meanwhile are duplicates (new jobs, when the key is
                // held until the job starts). Every few jobs a longer pause before the next
                // reservation lets pushes replace the queued one.
                tokio::time::sleep(Duration::from_millis(2)).await;
                assert_eq!(worker.acknowledge(&[r.lease]).await.unwrap(), vec![true]);
                acked += 1;
                if acked % 4 == 0 {
                    tokio::time::sleep(Duration::from_millis(8)).await;
                }
            }
            taken
        }
    });
    let mut log: Vec<(usize, Pushed)> = Vec::with_capacity(PUSHES);
    for i in 0..PUSHES {
        let job = NewJob::new(queue, "n", i.to_string().into_bytes())
            .unique(Unique::new(queue).until(until).replacing());
        let pushed = pusher.push(vec![job]).await.unwrap().remove(0);
        log.push((i, pushed));
        if i % 8 == 7 {
            // SQLite's other writer gets the file's lock too.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let taken = tokio::time::timeout(Duration::from_secs(60), reserving)
        .await
        .expect("the worker drains the queue")
        .unwrap();

    // Per job, in push order: what each push did to it.
    let mut jobs: HashMap<String, Vec<(usize, &'static str)>> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let (mut created, mut replaced, mut duplicates) = (0, 0, 0);
    for (i, pushed) in &log {
        let kind = match pushed {
            Pushed::Created(_) => {
                created += 1;
                order.push(pushed.id().0.clone());
                "created"
            }
            Pushed::Replaced(_) => {
                replaced += 1;
                "replaced"
            }
            Pushed::Duplicate(_) => {
                duplicates += 1;
                "duplicate"
            }
            other => panic!("{other:?}"),
        };
        jobs.entry(pushed.id().0.clone())
            .or_default()
            .push((*i, kind));
    }
    println!("{until:?}: {created} created, {replaced} replaced, {duplicates} duplicates");
    assert!(
        created > 1 && replaced > 0,
        "the race ran every way: {created} created, {replaced} replaced, {duplicates} duplicates"
    );
    match until {
        Until::Started => assert_eq!(duplicates, 0, "the reservation releases the key"),
        _ => assert!(duplicates > 0, "pushes met a job a worker held"),
    }
    for (id, pushes) in &jobs {
        assert_eq!(pushes[0].1, "created", "job {id}: {pushes:?}");
        let first_duplicate = pushes
            .iter()
            .position(|(_, kind)| *kind == "duplicate")
            .unwrap_or(pushes.len());
        assert!(
            pushes[1..first_duplicate]
                .iter()
                .all(|(_, kind)| *kind == "replaced"),
            "job {id}: {pushes:?}"
        );
        assert!(
            pushes[first_duplicate..]
                .iter()
                .all(|(_, kind)| *kind == "duplicate"),
            "job {id}: replaced after a worker took it: {pushes:?}"
        );
    }
    // Every job created ran once, with the last payload that reached it.
    let ran: Vec<&String> = taken.iter().map(|(id, _, _)| id).collect();
    assert_eq!(
        ran,
        order.iter().collect::<Vec<_>>(),
        "each job ran once, in order"
    );
    for (id, payload, attempts) in &taken {
        let pushes = &jobs[id];
        let last = pushes
            .iter()
            .rev()
            .find(|(_, kind)| *kind != "duplicate")
            .unwrap();
        assert_eq!(
            (payload.as_slice(), *attempts),
            (last.0.to_string().as_bytes(), 1),
            "job {id}: {pushes:?}"
        );
    }
    assert_eq!(total(pusher, queue).await, 0);
}

/// Replacing pushes raced with reservations, from two stores on one table (each with
/// connections of its own, as processes have), with a key held until the job leaves the
/// queue and one held until it starts (which the reservation releases: a push after it
/// creates a job, never a duplicate; on MySQL the reservation's mark then changes the
/// claim the push locks, and deadlocks it may meet are run again). Then a push that
/// changes nothing, and one that moves a job from in an hour to now, which wakes an idle
/// worker.
async fn replacing_pushes_race_reservations<DB: Server>() {
    let table = servers::fresh_table();
    let Some(pusher) = open::<DB>(&table).await else {
        return;
    };
    let worker = SqlStore::<DB>::connect_with(options(&table)).await.unwrap();
    race_replacing_pushes(&pusher, &worker, Until::Terminal).await;
    race_replacing_pushes(&pusher, &worker, Until::Started).await;
    println!(
        "conflicts retried: {}",
        pusher.conflict_retries() + worker.conflict_retries()
    );

    // A push that changes nothing still replaces (MySQL counts the rows an `UPDATE`
    // matched: sqlx connects with CLIENT_FOUND_ROWS).
    let at = SystemTime::now() + Duration::from_secs(3600);
    let later = || {
        NewJob::new("later", "n", b"s".to_vec())
            .available(Availability::At(at))
            .unique(Unique::new("later").replacing())
    };
    let first = pusher.push(vec![later()]).await.unwrap().remove(0);
    assert!(first.is_created(), "{first:?}");
    let again = pusher.push(vec![later()]).await.unwrap();
    assert_eq!(again, [Pushed::Replaced(first.id().clone())]);
    // Moved from in an hour to now: an idle worker wakes.
    let queues = vec!["later".to_owned()];
    pusher
        .wait(&queues, Duration::from_millis(10))
        .await
        .unwrap();
    let waiting = {
        let (waiter, queues) = (pusher.clone(), queues.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            waiter.wait(&queues, Duration::from_secs(20)).await.unwrap();
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let now = NewJob::new("later", "m", b"now".to_vec()).unique(Unique::new("later").replacing());
    let pushed = pusher.push(vec![now]).await.unwrap();
    assert_eq!(pushed, [Pushed::Replaced(first.id().clone())]);
    let slept = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(slept < Duration::from_secs(10), "woken after {slept:?}");
    let got = worker.reserve(&request("later", 5)).await.unwrap();
    assert_eq!((got.len(), got[0].payload.as_slice()), (1, &b"now"[..]));
    worker.close().await;
    drop_tables::<DB>(&table).await;
}

/// Records keep any bytes under any job id (a NUL in it stored as a replacement, as keys
/// are), many are written by one settle in one statement, and pruning deletes the expired
/// ones in chunks of 1,000 and nothing else.
async fn records_keep_bytes_and_are_pruned_in_chunks<DB: Server>() {
    let table = servers::fresh_table();
    let Some(store) = open::<DB>(&table).await else {
        return;
    };
    let track = store.capabilities().track.unwrap();
    let long = Duration::from_secs(3600);
    let odd = RecordKey::new("bytes\0 ключ 🔑", "k");
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    assert!(track.put_record(&odd, &bytes, long, None).await.unwrap());
    assert!(track.put_record(&odd, b"again", long, None).await.unwrap());
    assert_eq!(
        track.records(std::slice::from_ref(&odd)).await.unwrap(),
        [Some(b"again".to_vec())]
    );

    store.push(vec![job("r", b"x")]).await.unwrap();
    let got = store.reserve(&request("r", 1)).await.unwrap();
    let id = got[0].lease.job_id.clone();
    const EXPIRED: usize = 2_500;
    let mut settle = Settle::ack(got[0].lease.clone()).effect(Effect::Record {
        kind: "kept".into(),
        value: bytes.clone(),
        ttl: long,
    });
    for i in 0..EXPIRED {
        settle = settle.effect(Effect::Record {
            kind: format!("k{i}"),
            value: vec![1],
            ttl: Duration::ZERO,
        });
    }
    let reply = store.settle(vec![settle], None).await.unwrap();
    assert_eq!(reply.settled, [queue_core::Settled::Applied]);
    let keys = [
        RecordKey::new(id.clone(), "kept"),
        RecordKey::new(id.clone(), "k0"),
    ];
    assert_eq!(
        track.records(&keys).await.unwrap(),
        [Some(bytes), None],
        "an expired record is never read"
    );
    let mut conn = DB::connect().await;
    let count = format!("SELECT COUNT(*) FROM {table}_records");
    assert_eq!(DB::raw(&mut conn, &count).await, [EXPIRED as i64 + 2]);
    assert_eq!(track.prune_records().await.unwrap(), EXPIRED as u64);
    assert_eq!(DB::raw(&mut conn, &count).await, [2]);
    assert_eq!(track.prune_records().await.unwrap(), 0);
    drop_tables::<DB>(&table).await;
}

/// One `#[tokio::test]` per case and database.
macro_rules! on {
    ($feature:literal, $server:ty, $module:ident: $($case:ident),*) => {
        #[cfg(feature = $feature)]
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case::<$server>().await
                }
            )*
        }
    };
}

on!("sqlite", sqlx::Sqlite, sqlite: dispatch_within_a_transaction, dispatch_within_checks_queue_limits,
    rows_written_by_hand_go_to_the_failed_store, connects_by_url_and_migrates_concurrently,
    upgrades_a_database_of_before, upgrades_a_database_of_version_5, waiting_jobs_keep_what_was_held,
    a_new_failed_table_is_made_for_an_existing_jobs_table,
    four_stores_share_one_table, jobs_and_reservations_survive_a_reconnect,
    guarded_steps_race_across_stores, replacing_pushes_race_reservations,
    records_keep_bytes_and_are_pruned_in_chunks);
on!("postgres", sqlx::Postgres, postgres: dispatch_within_a_transaction, dispatch_within_checks_queue_limits,
    rows_written_by_hand_go_to_the_failed_store, connects_by_url_and_migrates_concurrently,
    upgrades_a_database_of_before, upgrades_a_database_of_version_5, waiting_jobs_keep_what_was_held,
    a_new_failed_table_is_made_for_an_existing_jobs_table,
    four_stores_share_one_table, jobs_and_reservations_survive_a_reconnect,
    guarded_steps_race_across_stores, replacing_pushes_race_reservations,
    records_keep_bytes_and_are_pruned_in_chunks, reserve_skips_rows_another_transaction_holds, reserve_reads_the_due_index,
    a_deadlocked_settle_is_run_again_and_applied_once);
on!("mysql", sqlx::MySql, mysql: dispatch_within_a_transaction, dispatch_within_checks_queue_limits,
    rows_written_by_hand_go_to_the_failed_store, connects_by_url_and_migrates_concurrently,
    upgrades_a_database_of_before, upgrades_a_database_of_version_5, waiting_jobs_keep_what_was_held,
    a_new_failed_table_is_made_for_an_existing_jobs_table,
    four_stores_share_one_table, jobs_and_reservations_survive_a_reconnect,
    guarded_steps_race_across_stores, replacing_pushes_race_reservations,
    records_keep_bytes_and_are_pruned_in_chunks, reserve_skips_rows_another_transaction_holds, reserve_reads_the_due_index,
    a_deadlocked_settle_is_run_again_and_applied_once);
