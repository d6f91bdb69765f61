//! The SQL database driver of `queue-core`: one crate, three databases, each behind a cargo
//! feature of its name.
//!
//! | feature | URLs | for |
//! |---|---|---|
//! | `sqlite` | `sqlite://jobs.db` | one machine: one file, any number of worker processes |
//! | `postgres` | `postgres://`, `postgresql://` | many machines on one PostgreSQL 13+ server |
//! | `mysql` | `mysql://`, `mariadb://` | many machines on one MySQL 8.0.13+ or MariaDB 10.6+ server |
//!
//! All three are on by default. To build with SQLite alone (no PostgreSQL or MySQL client
//! code): `queue-database = { version = "0.1", default-features = false, features = ["sqlite"] }`.
//!
//! What the dialects share lives in one place: the [`Dialect`] enum, the checked table names
//! ([`Tables`]), the schema text ([`schema_sql`], [`schema_for_url`]), the transactional
//! dispatch ([`DispatchWithin`]). The statements themselves are written per dialect, where
//! their SQL truly differs.
//!
//! # Quick start
//!
//! Open a store (its tables are created), hand it to a [`Queue`](queue_core::Queue),
//! dispatch, and run a worker:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use queue_core::{Queue, WorkerOptions};
//! use queue_database::SqliteStorage;
//!
//! let dir = tempfile::tempdir()?;
//! let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
//! let queue = Queue::new(SqliteStorage::connect(&url).await?);
//!
//! queue.listen("ping", |n: u32, _ctx| async move {
//!     println!("ping {n}");
//!     Ok(())
//! });
//! queue.dispatch_named("ping", serde_json::json!(7)).on_queue("high").await?;
//!
//! let summary = queue
//!     .worker(WorkerOptions::default().queues(["high", "default"]).stop_when_empty())
//!     .run()
//!     .await?;
//! assert_eq!(summary.processed, 1);
//! # Ok(()) }
//! ```
//!
//! PostgreSQL and MySQL are the same with [`PgStorage`] and [`MySqlStorage`]:
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use queue_core::Queue;
//! use queue_database::{MySqlStorage, PgOptions, PgStorage};
//!
//! let pg = Queue::new(PgStorage::connect("postgres://app:secret@db/app").await?);
//! let pg_named = PgStorage::connect_with(
//!     PgOptions::new("postgres://app:secret@db/app").table("billing_jobs").failed_table("billing_failed"),
//! )
//! .await?;
//! let mysql = Queue::new(MySqlStorage::connect("mysql://app:secret@db/app").await?);
//! # Ok(()) }
//! ```
//!
//! Binaries that pick the driver by URL (`Queue::connect("postgres://...")`,
//! `runall --connection mysql://...`) only need the crate linked: `use queue_database as _;`.
//! `ConnectOptions::table` and `failed_table` name the tables there.
//!
//! # SQLite
//!
//! - `sqlite://jobs.db`: a path relative to the working directory;
//! - `sqlite:///var/lib/app/jobs.db`: an absolute path;
//! - `sqlite::memory:`: a private in-memory database for tests, gone with the store;
//! - `?synchronous=full`: flush every commit to the disk (see the guarantees).
//!
//! [`SqliteOptions`] sets the rest: the tables, the connections (4: one writer, three
//! readers), the busy timeout (10 s), migrating on connect. The file is in WAL mode, so
//! reading never blocks writing. Every operation is one statement, or one `BEGIN IMMEDIATE`
//! transaction where it takes several: a write holds the file's write lock from its first
//! step, so two processes never both take a job, and a process that finds the file locked
//! waits (the busy timeout) rather than failing. A reservation is one `UPDATE ... RETURNING`
//! per queue; a batch of acknowledgements is one `DELETE`. Times are SQLite's clock
//! (`unixepoch('subsec')`) in milliseconds.
//!
//! # PostgreSQL
//!
//! `postgres://user:password@host:port/database?sslmode=require` (or `postgresql://`); sqlx's
//! URL parameters pass through. [`PgOptions`] sets the tables, the pool (10 connections, a 5 s
//! wait for one), migrating on connect, [`listen`](PgOptions::listen) and
//! [`synchronous_worker_commits`](PgOptions::synchronous_worker_commits). PostgreSQL 13 or
//! newer is needed (`gen_random_uuid()`); an older server is refused with a message.
//!
//! Every operation is a single statement, its own transaction, one round trip:
//!
//! - **Reserve** takes up to `limit` jobs over the queues in priority order in one
//!   `UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)`: each queue's first due jobs come
//!   from the `(queue, due_at, id)` index, rows another worker is taking are skipped rather
//!   than waited for, and a worker with concurrency N claims up to N jobs at once. No worker
//!   ever waits for another, and none can take a job another holds. `due_at` is a generated
//!   column (the lease deadline while reserved, else the due time), so one index serves
//!   fresh jobs and expired leases alike, and a reservation reads a handful of index entries
//!   whatever the backlog: as fast with a million jobs waiting as with a thousand (see
//!   `examples/reserve_backlog.rs`).
//! - **Push** of any number of jobs is one `INSERT ... SELECT FROM unnest(...)` that also
//!   calls `pg_notify` for each queue it touched. **Acknowledge** of a batch is one `DELETE`.
//!   Release, extend, fail, failed-job retry, locks and counters are one statement each.
//!   A statement the server cancels for a deadlock is run again by the store (see
//!   [Guarantees](#guarantees)).
//! - **Waking**: each store keeps one extra connection that `LISTEN`s on `{table}_added`.
//!   An idle worker waits for a notification naming one of its queues, or for the next
//!   delayed job's time, or its `--sleep`, whichever comes first: a dispatch from any
//!   machine starts on an idle worker within milliseconds. The notification is sent when the
//!   push commits, so a dispatch inside a transaction that rolls back wakes nobody. If the
//!   listening connection is lost, workers poll until it is back (it reconnects with a
//!   backoff), and are all woken once when it is.
//! - Times are the server's clock, `statement_timestamp()`, in milliseconds, so workers
//!   whose clocks disagree still agree on due times and leases.
//! - The store's own connections run with `enable_seqscan`, `enable_sort` and `jit` off:
//!   every statement it runs has an index plan, and it must keep it whatever the table's
//!   statistics say (a plan cached while the table held a thousand rows must not become a
//!   sort of a million). Each job leaves dead rows behind, as any PostgreSQL queue does:
//!   autovacuum (on by default) must run to reclaim them.
//!
//! # MySQL and MariaDB
//!
//! `mysql://user:password@host:port/database` (or `mariadb://`); sqlx's URL parameters pass
//! through. [`MySqlOptions`] sets the tables, the pool and migrating on connect. The server
//! must have `SELECT ... FOR UPDATE SKIP LOCKED`: MySQL 8.0.13 or newer, MariaDB 10.6 or
//! newer. An older server is refused at connect with a message that says why.
//!
//! - Every connection runs at **READ COMMITTED** (set on connect): under MySQL's default
//!   REPEATABLE READ a read followed by a write can act on a stale snapshot and lose an
//!   update. Every connection is in UTC (the clock is `UNIX_TIMESTAMP(NOW(3))`, which a local
//!   time zone would shift across a daylight-saving change) and in strict mode (a queue name
//!   longer than its 255 bytes fails instead of being cut).
//! - **Reserve** is one short transaction in two round trips: for each queue in priority
//!   order, `SELECT ... FOR UPDATE SKIP LOCKED` reads the next due jobs through the
//!   `(queue, due_at, id)` index (forced, so a table whose statistics are not computed yet is
//!   not scanned) and locks them, skipping rows other workers hold; then one `UPDATE` marks
//!   them reserved and `COMMIT`s in the same round trip (the reserving connections run
//!   without autocommit). MySQL has no `UPDATE ... RETURNING`, so the transaction is what
//!   makes the pick and the mark one step. Up to `limit` jobs per call.
//! - InnoDB keeps the index entries of taken and finished jobs, marked deleted, until its
//!   purge catches up; under a steady stream, thousands sit at the front of a queue and a
//!   pick from the front would step over each. So a store starts each pick after the last
//!   job it took, and reads the queue from its start again every half second (and whenever
//!   too few jobs are after that place). The one cost: a job due *before* the last job taken
//!   (pushed with a time in the past, or whose lease ran out long ago) can wait up to half a
//!   second longer than strict first-due-first order would make it. Priority between
//!   queues stays strict.
//! - **Acknowledge** of a batch is one `DELETE` (with `RETURNING` on MariaDB; on MySQL the
//!   count of deleted rows answers, with a second look only when some leases were stale).
//!   It holds no lock before it, which keeps deadlocks with reservations rare, but not
//!   impossible: InnoDB also locks index entries, a pick can wait for the
//!   `(queue, due_at, id)` entry of a job a batch is deleting, and MariaDB 10.11 has ended
//!   such a reservation with a deadlock. Push is multi-row `INSERT`s (ids from `RETURNING`
//!   on MariaDB, from `LAST_INSERT_ID()` on MySQL, where one multi-row insert gets
//!   consecutive ids).
//! - **Conflicts**: a transaction InnoDB ends with a deadlock (error 1213), or a statement
//!   that waited longer than `innodb_lock_wait_timeout` for a row lock (1205), is rolled
//!   back and the whole operation run again by the store (see [Guarantees](#guarantees)):
//!   the caller sees the error only if it comes back at every retry.
//! - **Waking**: MySQL has nothing like `LISTEN`, so idle workers poll every `--sleep`,
//!   never sleeping past the next delayed job; pushes from the same process wake them at
//!   once.
//!
//! # Transactional dispatch
//!
//! With PostgreSQL and MySQL, an application can dispatch inside its own sqlx transaction,
//! so the job exists if and only if the transaction commits: [`DispatchWithin`] adds
//! `.within(&mut tx, &storage)` to any dispatch, and [`dispatch_many_within`] does a batch.
//!
//! ```no_run
//! # use queue_core::{Handle, Job, JobContext, JobError};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Serialize, Deserialize, Job)]
//! # #[job(name = "send-invoice")]
//! # struct SendInvoice { order: i64 }
//! # impl Handle for SendInvoice {
//! #     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use queue_database::{DispatchWithin, PgStorage};
//!
//! let storage = PgStorage::connect("postgres://app@db/app").await?;
//! let mut tx = storage.pool().begin().await?;
//! let order: i64 = sqlx::query_scalar("INSERT INTO orders (total) VALUES (42) RETURNING id")
//!     .fetch_one(&mut *tx)
//!     .await?;
//! SendInvoice { order }.dispatch().within(&mut tx, &storage).await?;
//! tx.commit().await?; // the order and its job, or neither
//! # Ok(()) }
//! ```
//!
//! # Tables and migrations
//!
//! A store uses four tables: the jobs table (`jobs`), the failed-jobs table
//! (`failed_jobs`), and two named after the jobs table, `{table}_locks` and
//! `{table}_counters` (statistics and the restart signal). Names are configurable and must be
//! plain identifiers (`[A-Za-z_][A-Za-z0-9_]*`, at most 48 characters). Connecting creates
//! what is missing (idempotent; on PostgreSQL under an advisory lock, so processes starting
//! together do not trip over each other). Teams that run their own migration tool can print
//! the schema instead (`runall table`: [`schema_for_url`], [`schema_sql`]) and connect with
//! `migrate(false)`. The files are in `migrations/sqlite/`, `migrations/postgres/` and
//! `migrations/mysql/`.
//!
//! # Guarantees
//!
//! - **At least once.** A job is deleted only when a worker acknowledges it. If the worker
//!   dies first (a crash, a kill, a lost machine), the job becomes available again when its
//!   lease runs out, its attempt counted, and runs again. Jobs must tolerate running twice.
//!   Every acknowledge, release, fail and extend names the reservation's token, so a worker
//!   whose lease ran out cannot touch the job another worker now holds.
//! - **Durable once the dispatch returns.** PostgreSQL and MySQL: the push is committed
//!   before `push` returns, and survives a restart or a crash of the server as far as the
//!   server's own settings promise (`fsync`, `synchronous_commit` on PostgreSQL;
//!   `innodb_flush_log_at_trx_commit = 1` on MySQL, the defaults). On PostgreSQL a worker's
//!   own writes (reserve, acknowledge, release, fail) do not wait for the disk by default
//!   ([`PgOptions::synchronous_worker_commits`]): a crash of the server's machine can forget
//!   the last fraction of a second of them, so a job acknowledged just then runs again;
//!   pushes are never affected. SQLite: as its `synchronous` setting promises
//!   ([`Synchronous::Normal`] survives a crash of any process, [`Synchronous::Full`] a power
//!   loss too).
//! - **A server restart** (PostgreSQL, MySQL) fails the operations in flight: the worker
//!   logs each failure and retries with a backoff (its reserve loop, its acknowledgements and
//!   releases), its dead connections are replaced, and it carries on when the server is back.
//!   Committed jobs and reservations survive; a job whose acknowledgement could not be
//!   delivered runs again after its lease; none is left reserved for ever. Idle PostgreSQL
//!   workers poll while their `LISTEN` connection is down and listen again when it is back.
//! - **Transient conflicts are retried inside the store** (PostgreSQL, MySQL). When the
//!   server undoes an operation because of another transaction, the store rolls back what
//!   may be left of its transaction and runs the whole operation again, up to 5 more times,
//!   after a short random wait (around 5 ms, doubling each time up to 80 ms). These errors
//!   are retried: on MySQL and MariaDB a deadlock (1213, SQLSTATE 40001) and a lock-wait
//!   timeout (1205); on PostgreSQL a deadlock (40P01), a serialization failure (40001, only
//!   under a `REPEATABLE READ` or `SERIALIZABLE` default set on the server or the role) and
//!   a lock timeout (55P03, only with a `lock_timeout` set). Every operation is covered
//!   except `migrate` and the idle wait: reserve, push, acknowledge, release, extend, fail,
//!   the failed-job operations, locks, counters, sizes. A batch that takes several
//!   statements without a transaction around them (a large acknowledgement on MySQL) retries
//!   each statement alone, so none is run twice.
//!
//!   Only those errors are retried, because each means the server undid the attempt: a
//!   retry never applies anything twice. A lost connection, a pool timeout, or an answer
//!   that never came leaves unknown whether a commit happened, so it is returned as an
//!   error, as is a conflict still there after the retries: the worker retries those with
//!   its own backoff, and a direct caller sees them (a push whose commit went through but
//!   whose answer was lost is not pushed again). Not retried either: a dispatch inside the
//!   application's transaction ([`DispatchWithin`], `push_on`), since a deadlock there
//!   undoes the application's whole transaction, which only the application can run again.
//!   Each retry is logged at `debug` level (`tracing`), and
//!   [`MySqlStorage::conflict_retries`] and [`PgStorage::conflict_retries`] count them.
//! - **Many machines, one server** (PostgreSQL, MySQL): any number of workers and
//!   dispatchers on any number of machines share the tables; each job is handed to one worker
//!   at a time, and no worker blocks another. **SQLite** is for one machine: its locking is
//!   not reliable over a network file system.
//! - **Bad rows never wedge a queue.** A row written by hand with a NULL or garbage payload
//!   or name is reserved like any other, with empty bytes for what is NULL, and the worker
//!   moves it to the failed store with the reason.
//!
//! # What was tested
//!
//! Against the real servers on the test machine (PostgreSQL 15, MariaDB 10.11; `POSTGRES_URL`
//! and `MYSQL_URL` point the tests elsewhere, and with `CI=true` a missing server fails the
//! run): the whole conformance suite of `queue-tests` (storage, engine and statistics cases)
//! on fresh tables per case, on each database, and on MariaDB once more with MySQL's
//! statements (no `RETURNING`); dispatch inside a transaction that rolls back (no job) and
//! commits (exactly the job); a rolled-back dispatch waking nobody and a committed one waking
//! an idle waiter at the commit; dispatch-to-start of an idle worker over `LISTEN` in
//! milliseconds; a reservation passing over rows another transaction holds, without waiting;
//! the reserve plan reading the due index (`EXPLAIN`), and staying fast after the table grew
//! from twenty jobs to 200,000 under a cached plan; on MySQL, a job due before the last one
//! taken still coming out within the rescan period; four stores (four machines' worth of
//! connections) draining one table with no job taken twice; rows written by hand; concurrent
//! migrations; READ COMMITTED, UTC and strict mode on MySQL connections; a real deadlock on
//! each database (another transaction locking the counters' rows in the opposite order) and
//! a real lock-wait timeout on MariaDB (an extension waiting for a row another transaction
//! holds), each call succeeding after a retry, its effect applied once; the sweep of
//! expired counters meeting an upsert of the same rows without a deadlock; the real server
//! stopped for 3 s and started again under a worker taking 4,000 jobs (every job done,
//! nothing left reserved), and restarted under an idle PostgreSQL worker that then wakes on
//! `LISTEN` again. `examples/reserve_backlog.rs` measures a reservation with 1,000 and with
//! 1,000,000 jobs waiting (the same within a few hundredths of a millisecond on each
//! database). SQLite: the suite on a fresh file per case; eight worker processes taking
//! 4,000 jobs from one file; rows written by hand; reopening.

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod common;
mod dialect;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod hot;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod retry;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod within;

pub use dialect::{
    schema_for_url, schema_sql, Dialect, Tables, DEFAULT_FAILED_TABLE, DEFAULT_TABLE,
};
#[cfg(feature = "mysql")]
pub use mysql::{MySqlOptions, MySqlStorage};
#[cfg(feature = "postgres")]
pub use postgres::{PgOptions, PgStorage};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStorage, Synchronous};
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use within::{dispatch_many_within, DispatchConnection, DispatchWithin};
