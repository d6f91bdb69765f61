//! The SQL database driver of `queue-core`. Today it speaks SQLite, the embedded default: one
//! file holds every queue, and any number of worker processes on the same machine share it.
//! PostgreSQL and MySQL/MariaDB will join it in this crate behind their own cargo features
//! (`postgres`, `mysql`); the `sqlite` feature is on by default.
//!
//! # Quick start
//!
//! Open a file (it is created, and its tables too), hand the store to a
//! [`Queue`](queue_core::Queue), dispatch, and run a worker:
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
//! Binaries that pick the driver by URL (`Queue::connect("sqlite://jobs.db")`,
//! `runall --connection sqlite://jobs.db`) only need the crate linked:
//! `use queue_database as _;`.
//!
//! # URLs and options
//!
//! - `sqlite://jobs.db`: a path relative to the working directory;
//! - `sqlite:///var/lib/app/jobs.db`: an absolute path;
//! - `sqlite::memory:`: a private in-memory database for tests, gone with the store;
//! - `?synchronous=full`: flush every commit to the disk (see below).
//!
//! [`SqliteOptions`] sets the rest: the jobs table (`jobs`; from
//! `ConnectOptions::table` when connecting by URL), the failed-jobs table (`failed_jobs`),
//! the number of connections (4: one writer, three readers), the busy timeout (10 s), and
//! whether to create missing tables on connect (yes; by URL, as `ConnectOptions::migrate`
//! says). Table names must be plain identifiers (`[A-Za-z_][A-Za-z0-9_]*`).
//! [`schema_sql`] returns the schema as text, for review or to run by hand; the migration
//! files are in `migrations/sqlite/`.
//!
//! # How it works
//!
//! The file is in WAL mode, so reading never blocks writing. Every operation is one
//! statement, or one `BEGIN IMMEDIATE` transaction where it takes several (moving a job to
//! the failed store, a push of many jobs): a write holds the file's write lock from its
//! first step, so two processes never both see a job as free and both take it, and no write
//! fails half-way for want of the lock. A process that finds the file locked waits (the busy
//! timeout) rather than failing. Inside a process, writes queue for one writing connection;
//! reads (sizes, the failed store) use the others. Due times and lease deadlines are
//! SQLite's clock (`unixepoch('subsec')`), in milliseconds.
//!
//! A reservation is one `UPDATE ... RETURNING` per queue that takes up to `limit` jobs,
//! queues in strict priority order, first due first within a queue (a job whose lease ran
//! out is due from its deadline). A batch of acknowledgements is one `DELETE`; a push of many
//! jobs is a few multi-row `INSERT`s in one transaction. Every acknowledge, release, fail and
//! extend names the reservation's token, so a worker whose lease ran out cannot touch the job
//! another worker now holds.
//!
//! The tables: `jobs` (with an index on queue and due time), `failed_jobs`, and, named after
//! the jobs table, `jobs_locks` (locks around jobs) and `jobs_counters` (statistics and the
//! restart signal).
//!
//! # Guarantees
//!
//! - **At least once.** A job is deleted only when a worker acknowledges it. If the worker
//!   dies first (a crash, a kill, a lost machine), the job becomes available again when its
//!   lease runs out, its attempt counted, and runs again. Jobs must tolerate running twice.
//! - **Durable once `push` returns**, within what the `synchronous` setting promises. With
//!   [`Synchronous::Normal`] (the default) a commit survives a crash or kill of any process,
//!   but a power loss or an operating-system crash can lose the last transactions before it:
//!   recently pushed jobs may be gone, recently acknowledged ones may run again. The file
//!   itself stays consistent. With [`Synchronous::Full`] (`?synchronous=full`) every commit
//!   is flushed to the disk before it returns and survives a power loss too, at about one
//!   `fsync` per operation.
//! - **One machine, many processes.** Any number of workers and dispatchers, in as many
//!   processes as you like, can share the file; each job is handed to one worker at a time.
//!   The file must be on a local disk: SQLite's locking is not reliable over a network file
//!   system, so workers on several machines need a server database (PostgreSQL, MySQL) or
//!   Redis instead.
//! - **Restarts.** Nothing runs in the background: a restarted worker finds everything as it
//!   was left, and reservations of dead workers expire by SQLite's clock.
//! - **Bad rows never wedge a queue.** A row written by hand with a NULL or garbage payload
//!   or name is reserved like any other, with empty bytes for what is NULL, and the worker
//!   moves it to the failed store with the reason.
//! - **Waking.** A push wakes idle workers of the same process at once; workers in other
//!   processes see it at their next poll (the worker's `sleep`).
//!
//! # What was tested
//!
//! The conformance suite of `queue-tests` (every storage and engine case, and the
//! statistics cases) on a fresh file per case; eight worker processes taking 4,000 jobs from
//! one file at once with no job lost or taken twice and no "database is locked" error; rows
//! with NULL or garbage payloads and names going through a worker to the failed store;
//! reservations, tables and locks surviving a close and reopen.

mod dialect;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use dialect::{schema_sql, Dialect, Tables, DEFAULT_FAILED_TABLE, DEFAULT_TABLE};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStorage, Synchronous};
