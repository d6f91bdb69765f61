//! The SQL database driver of `queue-core`: one store, [`SqlStore`], written once over sqlx
//! for three databases, each behind a cargo feature of its name.
//!
//! | feature | store | URLs | for |
//! |---|---|---|---|
//! | `sqlite` | [`SqliteStorage`] | `sqlite://jobs.db` | one machine: one file, any number of worker processes |
//! | `postgres` | [`PgStorage`] | `postgres://`, `postgresql://` | many machines on one PostgreSQL 13+ server |
//! | `mysql` | [`MySqlStorage`] | `mysql://`, `mariadb://` | many machines on one MySQL 8.0.13+ or MariaDB 10.6+ server |
//!
//! All three are on by default. To build with SQLite alone: `queue-database = { version =
//! "0.1", default-features = false, features = ["sqlite"] }`. The three stores are
//! `SqlStore<sqlx::Sqlite>`, `SqlStore<sqlx::Postgres>` and `SqlStore<sqlx::MySql>`, opened
//! with [`SqlOptions`] of the same database ([`SqliteOptions`], [`PgOptions`],
//! [`MySqlOptions`]); what a database supplies (its statements where they differ, its
//! conflicts, its reservation) is behind the sealed [`Sql`] trait.
//!
//! # Quick start
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
//! let options = PgOptions::new("postgres://app:secret@db/app").table("billing_jobs");
//! let billing = Queue::new(PgStorage::connect_with(options).await?);
//! let mysql = Queue::new(MySqlStorage::connect("mysql://app:secret@db/app").await?);
//! # Ok(()) }
//! ```
//!
//! Binaries that pick the driver by URL (`Queue::connect("postgres://...")`,
//! `runall --connection mysql://...`) only need the crate linked: `use queue_database as _;`.
//!
//! # What one step is
//!
//! The contract promises that each job's transition and its effects are one atomic step,
//! fenced by its lease token. Here every call is at least one transaction as a whole:
//!
//! - **Settle**: the whole batch of settlements, their effects and the fetch are one
//!   transaction. A batch of plain acknowledgements (no effects, no other outcome) is one
//!   `DELETE ... RETURNING` (with the reservation in the same statement on PostgreSQL, in
//!   the same transaction on SQLite, sent as one text with its `BEGIN IMMEDIATE` and
//!   `COMMIT`: one trip to SQLite's thread); on MySQL, a `DELETE` per lease sent with the
//!   reservation's mark and the `COMMIT` (their counts say which leases were current).
//!   Anything else: the leases are locked and checked, each current one's transition is
//!   applied (a claim released or moved with it), then the effects of the whole batch kind
//!   by kind: the follow-up pushes, the waiting jobs held, the dependency changes (summed
//!   per key, the jobs they release pushed), the skips, the records of the settled jobs
//!   (one `INSERT ... SELECT`); then the reservation, which can take
//!   the jobs just pushed or released; and the group counters last, in (group, name) order
//!   so that two settles never deadlock on them. A stale lease's effects are not applied.
//! - **Apply** ([`Groups::apply`](queue_core::storage::Groups::apply): a chain dispatched, a
//!   batch's members added): its effects in the same order, one transaction, on the
//!   connections pushes use.
//! - **Guarded apply** ([`Groups::apply_if`](queue_core::storage::Groups::apply_if): a
//!   schedule's tick claimed): the same transaction, begun by the guard's check-and-set on
//!   its counter row: `UPDATE ... SET value = set WHERE ... AND value = expect` (a
//!   `SELECT ... FOR UPDATE` of the row holding it when the two are equal), which a second
//!   process expecting the same value waits at, then loses. When 0 is expected and the row
//!   is missing, an `INSERT` of it (`ON CONFLICT DO NOTHING`; refused as a duplicate on
//!   MySQL) wins only if it made the row. A guard that does not hold rolls the transaction
//!   back before the effects: nothing changes, no row is made.
//! - **Push**: one `INSERT` (of any number of jobs on PostgreSQL, up to 1,000 on SQLite, 100
//!   on MySQL), its own transaction; more jobs, or jobs with unique claims, one transaction.
//! - **Reserve**: one statement over all the queues, each queue's pick limited and read
//!   from its index, the picks taken in priority order (SQLite and PostgreSQL); one transaction
//!   of a pick per queue and one mark that commits with it (MySQL). A claim held until the
//!   job starts is released by the same statement.
//! - **Extend**: one transaction for the batch; the statement that locks the leases also
//!   says which jobs carry a `cancel` record. **Clear**, **forget**, **flush** and
//!   **prune**: one statement each, however many jobs (their claims go with them).
//!   **Retrying a failed job**: one transaction.
//!
//! # Claims
//!
//! A job's unique key is kept in its row with the transition that names its release: a
//! unique index lets one waiting or running job hold a key (a second push waits for the
//! first to commit, then sees it), a job that fails while its key is held until it succeeds
//! keeps the key in the failed table, and a push checks that table after its insert. A
//! deleted job (acknowledged, cleared, moved to the failed store) takes its claim with it,
//! so the plain paths touch no claim. Keys are at most 512 bytes on MySQL. Pushing with a
//! claim on the application's connection ([`SqlStore::push_on`]) needs a transaction.
//!
//! A push that replaces ([`Unique::replace`](queue_core::Unique::replace)) reads the job
//! holding its key and, if it is queued (`reserved_until IS NULL`: a job whose lease ran out
//! counts as reserved until a worker takes it again), sets its name, payload and
//! `available_at` in the push's transaction by `UPDATE ... WHERE id = ? AND claim = ? AND
//! reserved_until IS NULL`, which matches nothing once a reservation took the row (the push
//! then reads again and is a duplicate): a job a worker holds never changes.
//!
//! # SQLite
//!
//! - `sqlite://jobs.db`: a path relative to the working directory;
//! - `sqlite:///var/lib/app/jobs.db`: an absolute path;
//! - `sqlite::memory:`: a private in-memory database for tests, gone with the store;
//! - `?synchronous=full`: flush every commit to the disk (see [`Synchronous`]).
//!
//! The file is in WAL mode, so reading never blocks writing. A process writes through one
//! connection (the file has one writer at a time anyway) and reads through the others
//! (3 by default). A write is one statement, or a `BEGIN IMMEDIATE` transaction that holds
//! the file's write lock from its start: two processes never both take a job, and a process
//! that finds the file locked waits (the busy timeout, 10 s) rather than failing. Times are
//! SQLite's clock in milliseconds. Locking is not reliable over a network file system: one
//! machine.
//!
//! On a tokio runtime with several threads, a push (a dispatch, or several dispatches
//! grouped) runs on the calling thread, through a second connection of the process to the
//! file, under `tokio::task::block_in_place`; this skips the hand-off to sqlx's SQLite
//! thread and back, which costs more than a single-row insert (one-by-one dispatch about
//! 1.8 times as fast). The writer connection is held meanwhile, so the process still writes
//! one at a time. On a runtime of one thread, for a database in memory or a URL with
//! `mode`, `vfs` or `immutable`, pushes go through sqlx. Either way a push of many jobs is
//! all or none.
//!
//! # Connecting
//!
//! PostgreSQL and MySQL stores open their first connection on its own before their pools:
//! an unreachable server, a bad password or an unknown database is reported at once with
//! the server's or the system's own words (`Connection refused`), instead of the pool's
//! "pool timed out" after [`acquire_timeout`](SqlOptions::acquire_timeout). A server that
//! accepts the connection and never answers is given up on after that timeout.
//!
//! # PostgreSQL
//!
//! `postgres://user:password@host:port/database?sslmode=require` (or `postgresql://`);
//! sqlx's URL parameters pass through. A store has two pools (10 connections each by
//! default): the application's ([`SqlStore::pool`]), which pushes use too and whose commits
//! wait for the disk, and its own for the workers' writes, which do not unless
//! [`synchronous_worker_commits`](PgOptions::synchronous_worker_commits).
//!
//! - The reservation takes up to `limit` jobs over the queues in priority order with
//!   `FOR UPDATE SKIP LOCKED`: each queue's first due jobs come from the `(queue, due_at,
//!   id)` index, rows another worker is taking are skipped, not waited for. `due_at` is a
//!   generated column (the lease deadline while reserved, else the due time), so one index
//!   serves fresh jobs and expired leases alike: a reservation reads a handful of index
//!   entries whatever the backlog (`examples/reserve_backlog.rs`).
//! - **Waking**: each store keeps one connection that `LISTEN`s on `{table}_added`; a push
//!   (a retry, a release) notifies in its own transaction, so a dispatch from any machine
//!   starts on an idle worker within milliseconds, and one rolled back wakes nobody. While
//!   that connection is lost, workers poll, and are all woken when it is back.
//! - Times are the server's clock (`statement_timestamp()`), so workers whose clocks
//!   disagree still agree on due times and leases.
//! - The store's own connections run with `enable_seqscan`, `enable_sort` and `jit` off, and
//!   plan each statement once (`plan_cache_mode = force_generic_plan`): every statement
//!   keeps its index plan whatever the table's statistics say. Each job leaves dead rows
//!   behind, as in any PostgreSQL queue: autovacuum must run.
//! - Connections ask for warnings and errors only (`client_min_messages = warning`, unless
//!   the URL's `options` set it): the migration's `CREATE ... IF NOT EXISTS` at every
//!   connect would otherwise log a NOTICE ("already exists, skipping") per table.
//!
//! # MySQL and MariaDB
//!
//! `mysql://user:password@host:port/database` (or `mariadb://`). The server must have
//! `SELECT ... FOR UPDATE SKIP LOCKED`; an older one is refused at connect.
//!
//! - Every connection runs at **READ COMMITTED** (under REPEATABLE READ a read followed by
//!   a write can act on a stale snapshot), in UTC (the clock is `UNIX_TIMESTAMP(NOW(3))`),
//!   and in strict mode (a queue name longer than its 255 bytes fails instead of being cut).
//! - Transactions run on connections without autocommit: the last statements without
//!   arguments (the reservation's mark, plain acknowledgements) travel with the `COMMIT`,
//!   so a reservation is two round trips (the pick, then the mark and the commit), a batch
//!   of plain acknowledgements one, and both together two.
//! - InnoDB keeps the index entries of finished jobs until its purge catches up, so a store
//!   starts each pick after the last job it took, and reads the queue from its start again
//!   every half second: a job due before that place (pushed with a time in the past) can
//!   wait up to half a second longer than strict first-due-first order would make it.
//! - A pick that reaches the end of a queue's due jobs also locks the next entry of the
//!   index until its transaction commits (seen on MariaDB 10.11 at READ COMMITTED): the
//!   queue's first job not due yet, or the first job of the queue next by name. Another
//!   store's pick skips that entry meanwhile (`SKIP LOCKED`), so across workers a queue's
//!   first job can start a round trip after its second. One worker starts its jobs in order
//!   (it has one fetch on its way at a time, and its own locks do not hide rows from it),
//!   except at a tick of a stored schedule (`queue_core::Schedules`): its scheduler then
//!   reserves the due timers on a connection of its own, another pick. With no timer due
//!   it makes no pick (it reads without a lock first).
//! - Ids come from `RETURNING` on MariaDB, from `LAST_INSERT_ID()` on MySQL (a multi-row
//!   insert gets consecutive ids).
//! - **Waking**: MySQL has nothing like `LISTEN`: a waiting worker looks for jobs with one
//!   indexed query per queue, 2 ms after it began to wait and then twice as long each time,
//!   up to [`idle_poll`](SqlOptions::idle_poll) (20 ms by default, never past `--sleep`), so
//!   a push by another process starts within about that (p50 6 to 8 ms in BENCHMARKS.md, at
//!   about 1 % of a core for worker and server together while idle); pushes from the same
//!   process wake it at once. SQLite
//!   watches its file instead (inotify on Linux, through the `notify` crate): a write by
//!   another process to the database or its write-ahead log wakes idle workers within
//!   milliseconds (at most one wake-up every 2 ms), and polling every `--sleep` stays as the
//!   fallback where the file cannot be watched (a network file system is not supported
//!   anyway).
//!
//! # Waiting jobs
//!
//! Chains, workflows and batch callbacks hold jobs back until their dependencies are met
//! ([`Effect::Hold`](queue_core::Effect::Hold), [`Deps`](queue_core::Effect::Deps),
//! [`Skip`](queue_core::Effect::Skip)). Each waiting job is one row of `{table}_waiting`,
//! under its key (the primary key): its dependencies left (`deps`) and the job as a push
//! would store it (queue, name, payload, its due time or its delay, its unique key and
//! until). It is in no queue: not reserved, counted or listed, and `clear` leaves it.
//!
//! - **Hold**: one `INSERT ... SELECT` from the call's list (payloads as hex in the JSON),
//!   skipping keys that have a row (`ON CONFLICT DO NOTHING`; MySQL: a no-op `ON DUPLICATE
//!   KEY UPDATE`).
//! - **Dependencies**: the changes of a call are summed per key, then each key's row is
//!   changed by one `UPDATE ... SET deps = deps + ?` in key order, so that two settles lock
//!   the keys they share in the same order: a second settle on a key waits at its `UPDATE`
//!   for the first one's commit, with no `SELECT ... FOR UPDATE` first. SQLite and
//!   PostgreSQL say what is left with `RETURNING deps`; on MySQL the `UPDATE`s and a
//!   `SELECT` of what is left go in one text, one round trip (keys as hex literals). A row
//!   left with none is deleted (with `DELETE ... RETURNING` where the server has it) and its
//!   job inserted in the same transaction, before the reservation: its delay counts from
//!   then, and its claim is taken then (a job whose key is held is dropped, as a duplicate
//!   push is).
//! - **Skip**: the row is deleted.
//!
//! Keys are at most 767 bytes on MySQL.
//!
//! # Jobs by id and records
//!
//! [`Track`](queue_core::storage::Track): ids are the jobs table's integer ids, as text; a
//! job is found by its primary key while it is in a queue (a waiting job of a chain is not
//! in one). Records are rows of `{table}_records`, keyed by (job id, kind), with the value
//! and `expires_at`, the end of their time to live by the database's clock; they outlive
//! their job.
//!
//! - **Cancel** is one transaction: the job's row is read and locked (`SELECT ... FOR
//!   UPDATE`; SQLite's write lock), then deleted with its claim if it is not reserved or its
//!   lease ran out, or else its `cancel` record written. A reservation taking the row at the
//!   same moment either waits for that commit (and finds the row gone) or locked it first
//!   (and the cancel waits, then marks it): a job is never both removed and run.
//! - **Extend** reads the mark in the statement that locks the leases (an `EXISTS` on the
//!   records' primary key): a marked job's lease is renewed and reported `Cancelled`.
//! - **Record effects** of a settle are written in its transaction, for the settlements that
//!   applied alone. A **fenced write** is one `INSERT ... SELECT` from the job's row holding
//!   the lease's token (locked against a settle for the statement on PostgreSQL and MySQL),
//!   so a stale lease writes nothing. Writes replace the record of the same key.
//! - **Expiry**: a record is never read once `expires_at` has passed (every read compares it
//!   with the database's clock), but its row stays until
//!   [`prune_records`](queue_core::storage::Track::prune_records) deletes expired rows,
//!   1,000 at a time through the `expires_at` index, each chunk its own statement. Nothing
//!   prunes on its own: run it now and then (a scheduled job) where records pile up.
//!
//! Job ids are at most 255 bytes and kinds 32 on MySQL.
//!
//! # The worker registry
//!
//! [`Workers`](queue_core::storage::Workers) (`runall workers`): one row per live worker in
//! `{table}_workers` (id, entry, `expires_at` by the database's clock), written by an upsert
//! at each beat and deleted when the worker stops. Listing deletes the expired rows, then
//! reads the others sorted by id (bytes order: `COLLATE "C"` on PostgreSQL, `VARBINARY` on
//! MySQL); each beat deletes the expired rows too, so they never pile up in a store nobody
//! lists. Worker ids are at most 255 bytes on MySQL.
//!
//! # Transactional dispatch
//!
//! An application can dispatch inside its own sqlx transaction, so that the job exists if and
//! only if the transaction commits: [`DispatchWithin`] adds `.within(&mut *tx, &storage)` to
//! any dispatch, and [`dispatch_many_within`] does a batch. Such a push is not retried after
//! a conflict: a deadlock there undoes the application's whole transaction, which only the
//! application can run again. On SQLite, begin that transaction with
//! `pool.begin_with("BEGIN IMMEDIATE")`: a deferred one that reads first (a queue-size limit
//! check does) cannot turn into a write once another connection has written, and SQLite
//! fails it at once with "database is locked" instead of waiting.
//!
//! # Jobs parked on a lock
//!
//! A `without_overlapping` job put back while its key is busy (`Effect::Park`) gets a row in
//! `{table}_parked` (the key, the job's id and its due time as the park left it). The park
//! reads the lock's row with `FOR UPDATE` (PostgreSQL, MySQL; SQLite has one writer) in the
//! settle's transaction: a lock deleted before is free, and the job is due at once; a lock
//! deleted after waits for the commit, so its unlock sees the park. An unlock (or a release
//! by force) deletes the lock row, then reads the key's parked rows (one indexed read, all
//! there is when nothing is parked) and makes the job of the lowest id that still waits as
//! parked (not reserved since, not retried, its delay not over) due now, deleting the rows
//! it looked at (16 at most per unlock). A parked job that moved on keeps its row until the
//! next unlock of its key, which drops it. A crash between the deletion and the wake leaves
//! the parked job due when the lock would have expired, as the park read it.
//!
//! # Tables and migrations
//!
//! A store uses ten tables: the jobs table (`jobs`), the failed-jobs table (`failed_jobs`),
//! and eight named after the jobs table, `{table}_locks`, `{table}_groups` (group counters),
//! `{table}_control` (the restart generation and the schema's version), `{table}_waiting`
//! (waiting jobs), `{table}_records` (records kept for jobs), `{table}_values` (group values:
//! workflow outputs), `{table}_workers` (the worker registry) and `{table}_parked` (jobs
//! parked on a lock). Names must be plain identifiers (`[A-Za-z_][A-Za-z0-9_]*`, at most 48
//! characters). Connecting applies the files of `migrations/sqlite/`, `migrations/postgres/`
//! or `migrations/mysql/`, skipping what is there, processes starting together taking turns.
//! The control table keeps the number of the last file applied: a database at it (or past
//! it) runs no DDL at all when a store connects, and one at an older version gets the files
//! after it alone (a database of version 5 gets `0006_waiting.sql` to `0010_parked.sql`,
//! the waiting-jobs, records, values, workers and parked tables, and nothing else: no file
//! after `0005` alters a table workers are using). A database made before the v2 contract (no version) gets every file
//! and is upgraded (its statistics table `{table}_counters` is dropped). Teams that run their
//! own migration tool print the schema instead (`runall table`: [`schema_for_url`],
//! [`schema_sql`]) and connect with `migrate(false)`.
//!
//! # Guarantees
//!
//! - **At least once.** A job is deleted only when a worker acknowledges it. If the worker
//!   dies first, the job becomes available again when its lease runs out, its attempt
//!   counted. Every settle and extend names the reservation's token, so a worker whose lease
//!   ran out cannot touch the job another worker now holds.
//! - **Durable once the dispatch returns**, as far as the server's own settings promise
//!   (`fsync`, `synchronous_commit`, `innodb_flush_log_at_trx_commit = 1`, the defaults).
//!   On PostgreSQL a worker's own writes do not wait for the disk by default: a crash of the
//!   server's machine can forget the last fraction of a second of them, and a job settled
//!   just then runs again, with its effects (they were one step). SQLite: as its
//!   [`Synchronous`] setting promises.
//! - **A server restart** fails the operations in flight; the worker retries them with a
//!   backoff, dead connections are replaced, and it carries on when the server is back.
//! - **Transient conflicts are retried inside the store** (PostgreSQL, MySQL). When the
//!   server undoes an operation because of another transaction, the store rolls back what
//!   may be left of it and runs the whole operation again, up to 5 more times, after a short
//!   random wait (around 5 ms, doubling up to 80 ms): a deadlock (MySQL 1213, PostgreSQL
//!   40P01), a lock-wait timeout (MySQL 1205, PostgreSQL 55P03 under a `lock_timeout`) and a
//!   serialization failure (PostgreSQL 40001, under a stricter default isolation). Only those:
//!   each means nothing of the attempt was committed, so a retry never applies anything
//!   twice. A lost connection, a pool timeout, or an answer that never came leaves unknown
//!   whether a commit happened, so it is returned as an error (the worker retries with its
//!   own backoff). [`SqlStore::conflict_retries`] counts the retries; each is logged at
//!   `debug` level.
//! - **Bad rows never wedge a queue.** A row written by hand with a NULL or garbage payload
//!   or name is reserved like any other, with empty bytes for what is NULL, and the worker
//!   moves it to the failed store with the reason.
//! - **Counts.** `Inspect::size` counts a queue's rows exactly: it walks all of them (about
//!   0.2 s per queue of 330,000 jobs on SQLite and PostgreSQL here).
//!   `Inspect::backlog_at_most`, what the dashboard shows, counts at most `cap` waiting and
//!   `cap` delayed rows through the `(queue, due_at, id)` index, so a queue of a million
//!   jobs is counted in milliseconds; the dashboard takes running jobs from the worker
//!   registry. (A partial index of the reserved rows would count those too, but it cost
//!   every reservation an index write: 28 % of the end-to-end rate on PostgreSQL when
//!   measured, BENCHMARKS.md.)
//! - **Everything the contract has**: claims, the failed store, inspection (listing a
//!   queue's jobs by state a page at a time through the `(queue, due_at, id)` index), group
//!   counters, waiting jobs (see [above](#waiting-jobs)), jobs by id and their records (see
//!   [above](#jobs-by-id-and-records)), the restart signal, the worker registry (see
//!   [above](#the-worker-registry)), reservations by job name, wake-ups.

// Without a database, only the schema is of use.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(dead_code, unused_imports)
)]

mod hot;
#[cfg(feature = "mysql")]
mod mysql;
mod options;
#[cfg(feature = "postgres")]
mod postgres;
mod retry;
mod schema;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod statements;
mod store;
mod wake;
mod within;

#[cfg(feature = "mysql")]
pub use mysql::{MySqlOptions, MySqlStorage};
pub use options::SqlOptions;
#[cfg(feature = "postgres")]
pub use postgres::{PgOptions, PgStorage};
pub use schema::{
    schema_for_url, schema_sql, Dialect, Tables, DEFAULT_FAILED_TABLE, DEFAULT_TABLE,
};
pub use sql::Sql;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStorage, Synchronous};
pub use store::SqlStore;
pub use within::{dispatch_many_within, DispatchWithin};

/// The `sqlx` this driver is built on, for [`DispatchWithin::within`]'s transaction: an
/// application that does not use sqlx otherwise opens its transaction with
/// `queue_database::sqlx` and needs no version of its own in step with this one.
pub use sqlx;
