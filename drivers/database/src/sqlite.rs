//! SQLite: [`SqliteStorage`] on one file, shared by every worker process of one machine.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use queue_core::{Error, NewJob, ReserveRequest, Reserved, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row as _, Sqlite, SqliteConnection};

use crate::hot::Hot;
use crate::options::SqlOptions;
use crate::schema::{Dialect, Tables};
use crate::sql::sealed::{AckedAndReserved, Backend, Deferred, Io, Reserving};
use crate::sql::Arg;
use crate::statements::chunk_sizes;
use crate::store::{acked_rows, db, due, json, millis, reserved_rows, Open, SqlStore, Tx};
use crate::wake::{Waker, EVERYONE};

/// A queue store in one SQLite file. See [`SqlStore`] and the [crate docs](crate#sqlite).
pub type SqliteStorage = SqlStore<Sqlite>;

/// How to open a [`SqliteStorage`]: a builder, with SQLite's own knobs.
///
/// ```
/// use std::time::Duration;
/// use queue_database::{SqliteOptions, Synchronous};
///
/// let options = SqliteOptions::new("sqlite://var/jobs.db")
///     .table("app_jobs")
///     .synchronous(Synchronous::Full)
///     .busy_timeout(Duration::from_secs(30));
/// assert_eq!(options.get_url(), "sqlite://var/jobs.db");
/// ```
pub type SqliteOptions = SqlOptions<Sqlite>;

/// The oldest SQLite with `unixepoch('subsec')` and `unhex`.
const MIN_VERSION: (u32, u32) = (3, 42);

/// How hard SQLite works to get a commit onto the disk (`PRAGMA synchronous`).
///
/// The store always runs in WAL mode. With [`Normal`](Synchronous::Normal), the default, a
/// commit is written to the write-ahead log but not flushed to the disk: a crash of the
/// *process* loses nothing that was committed, but a power loss or an operating-system crash
/// can lose the last transactions (the database itself stays consistent). With
/// [`Full`](Synchronous::Full) every commit is flushed before it returns, so it survives a
/// power loss too, at the price of one `fsync` per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Synchronous {
    /// Commits survive a crash of the process, not of the machine. Fast.
    #[default]
    Normal,
    /// Commits survive a power loss: each is flushed to the disk.
    Full,
}

impl FromStr for Synchronous {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Ok(Synchronous::Normal),
            "full" => Ok(Synchronous::Full),
            other => Err(Error::Config(format!(
                "unknown synchronous setting `{other}`: use `normal` or `full`"
            ))),
        }
    }
}

impl fmt::Display for Synchronous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Synchronous::Normal => "normal",
            Synchronous::Full => "full",
        })
    }
}

/// SQLite's knobs in [`SqliteOptions`].
#[derive(Debug, Clone)]
pub struct SqliteKnobs {
    synchronous: Option<Synchronous>,
    busy_timeout: Duration,
}

impl Default for SqliteKnobs {
    fn default() -> Self {
        SqliteKnobs {
            synchronous: None,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// # URLs
///
/// - `sqlite://jobs.db`: `jobs.db` relative to the working directory;
/// - `sqlite:///var/lib/app/jobs.db`: an absolute path;
/// - `sqlite::memory:`: a private in-memory database, gone when the store is dropped (one
///   connection; for tests);
/// - `?synchronous=full` (or `normal`) sets [`Synchronous`]; sqlx's own parameters (`mode`,
///   `vfs`, `immutable`) pass through.
///
/// The file is created if it is missing (its directory must exist).
impl SqlOptions<Sqlite> {
    /// How commits reach the disk (default [`Synchronous::Normal`]; a URL's
    /// `?synchronous=` is used when this is not called).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.knobs.synchronous = Some(synchronous);
        self
    }

    /// How long a write waits for another process's write to finish before it gives up with
    /// "database is locked" (default 10 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.knobs.busy_timeout = timeout;
        self
    }

    /// The URL turned into sqlx's options: whether the database is in memory, and how
    /// commits reach the disk.
    fn resolve(&self) -> Result<Resolved> {
        let url = &self.url;
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                Error::Config(format!(
                    "`{url}` is not a SQLite URL: it must start with `sqlite:`"
                ))
            })?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut synchronous = None;
        let mut memory = path == ":memory:";
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "synchronous" => synchronous = Some(value.parse::<Synchronous>()?),
                "mode" | "vfs" | "immutable" => {
                    memory |= key == "mode" && value == "memory";
                    passed.push(pair);
                }
                other => {
                    return Err(Error::Config(format!(
                        "unknown parameter `{other}` in SQLite URL `{url}`: known are synchronous, mode, vfs, immutable"
                    )))
                }
            }
        }
        if path.is_empty() && !memory {
            return Err(Error::Config(format!(
                "no database file in SQLite URL `{url}`: use sqlite://jobs.db, sqlite:///abs/path.db or sqlite::memory:"
            )));
        }
        let mut sqlx_url = format!("sqlite://{path}");
        if !passed.is_empty() {
            sqlx_url = format!("{sqlx_url}?{}", passed.join("&"));
        }
        let synchronous = self.knobs.synchronous.or(synchronous).unwrap_or_default();
        let connect = SqliteConnectOptions::from_str(&sqlx_url)
            .map_err(|e| Error::Config(format!("bad SQLite URL `{url}`: {e}")))?
            .create_if_missing(true)
            .busy_timeout(self.knobs.busy_timeout)
            .synchronous(match synchronous {
                Synchronous::Normal => SqliteSynchronous::Normal,
                Synchronous::Full => SqliteSynchronous::Full,
            });
        Ok(Resolved {
            connect,
            memory,
            synchronous,
            plain: passed.is_empty(),
        })
    }
}

/// A SQLite URL, understood.
struct Resolved {
    /// sqlx's options.
    connect: SqliteConnectOptions,
    /// The database is in memory (private to one connection).
    memory: bool,
    synchronous: Synchronous,
    /// No parameter of sqlx's own (`mode`, `vfs`, `immutable`): a plain file, which a
    /// connection of rusqlite opens alike.
    plain: bool,
}

/// True for "database is locked" (SQLITE_BUSY) and "database table is locked" (SQLITE_LOCKED).
fn is_busy(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Switches the file to WAL mode, so reading never blocks writing. Unlike other statements,
/// the switch takes a lock SQLite does not wait for, so when several processes open a new
/// file at once it is retried here for up to the busy timeout.
async fn enable_wal(pool: &SqlitePool, patience: Duration) -> Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL")
            .fetch_one(pool)
            .await
        {
            Ok(mode) => {
                if !mode.eq_ignore_ascii_case("wal") {
                    tracing::warn!(journal_mode = %mode, "SQLite did not switch to WAL mode: readers and the writer will block each other");
                }
                return Ok(());
            }
            Err(e) if is_busy(&e) && started.elapsed() < patience => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(db::<Sqlite>(e)),
        }
    }
}

/// What a SQLite store keeps of its own: the reservation of one queue, and the watch on its
/// file.
pub struct SqliteState {
    /// The reservation's `UPDATE ... SET`, up to its `WHERE`. Binds: lease ms.
    reserve_set: String,
    /// The pick of one queue's next due jobs (ids): binds queue, name or NULL (twice),
    /// limit.
    reserve_one: String,
    /// The same with their due times, an arm of a pick from several queues.
    reserve_arm: String,
    /// The database file (`None`: in memory).
    file: Option<PathBuf>,
    /// The connection that pushes on the calling thread (`None`: not for this database, or
    /// closed). See [`Direct`].
    direct: Mutex<Option<Direct>>,
    /// Started by the first idle wait: `Err` when the file cannot be watched (waiters poll).
    watch: Mutex<Option<std::result::Result<FileWatch, ()>>>,
}

impl std::fmt::Debug for SqliteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteState")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Other processes' writes wake this one's idle waiters: the directory of the database is
/// watched (inotify on Linux, through `notify`), and a change to the database file or its
/// write-ahead log wakes every waiter, which looks for jobs. At most one wake-up every
/// [`WATCH_COALESCE`], so a busy writer elsewhere does not turn idle waiters into a busy
/// loop. Polling at `--sleep` stays as the fallback.
struct FileWatch {
    watching: Arc<Mutex<Watching>>,
    relay: tokio::task::JoinHandle<()>,
}

/// The watcher and whether it is on. It is on only while a worker of this store waits: a
/// busy worker's own writes would otherwise cost an event each (a tenth of the CPU of a
/// busy SQLite worker, measured with `perf`). The relay turns it off when it sees an event
/// that no waiter is subscribed for; the next wait turns it on before it reads the queue.
struct Watching {
    watcher: notify::RecommendedWatcher,
    dir: PathBuf,
    on: bool,
}

impl Watching {
    fn turn_on(&mut self) -> notify::Result<()> {
        use notify::{RecursiveMode, Watcher as _};
        if !self.on {
            self.watcher.watch(&self.dir, RecursiveMode::NonRecursive)?;
            self.on = true;
        }
        Ok(())
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// The shortest time between two wake-ups of a file watch.
const WATCH_COALESCE: Duration = Duration::from_millis(2);

fn watch_file(file: &Path, waker: Arc<Waker>) -> notify::Result<FileWatch> {
    use notify::{EventKind, Watcher as _};
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .map(OsStr::to_os_string)
        .unwrap_or_default();
    let mut wal = name.clone();
    wal.push("-wal");
    let signal = Arc::new(tokio::sync::Notify::new());
    let tx = signal.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == name || n == wal));
        if ours && matches!(event.kind, EventKind::Modify(_) | EventKind::Create(_)) {
            tx.notify_one();
        }
    })?;
    let mut watching = Watching {
        watcher,
        dir: dir.to_path_buf(),
        on: false,
    };
    watching.turn_on()?;
    let watching = Arc::new(Mutex::new(watching));
    let shared = watching.clone();
    let relay = tokio::spawn(async move {
        loop {
            signal.notified().await;
            waker.send(EVERYONE);
            {
                // Checked under the lock a wait takes to turn the watch on, after it
                // subscribed: a waiter is either counted here or turns the watch on again.
                let mut w = shared.lock().unwrap_or_else(|p| p.into_inner());
                if w.on && waker.waiters() == 0 {
                    let dir = w.dir.clone();
                    let _ = w.watcher.unwatch(&dir);
                    w.on = false;
                }
            }
            tokio::time::sleep(WATCH_COALESCE).await;
        }
    });
    Ok(FileWatch { watching, relay })
}

/// Pushes on the calling thread: a connection of rusqlite's to the same file, used by the
/// tokio thread that runs the push (under `tokio::task::block_in_place`, so the thread's
/// other tasks move on meanwhile).
///
/// sqlx runs each SQLite connection on a thread of its own, and every statement is a trip
/// there and back: two hand-offs between threads, which cost more than a single-row
/// insert. Dispatching one job after another this way went from about 14,000 to 25,000
/// jobs/s (BENCHMARKS.md, "Pushes on the calling thread"). The hand-off is what costs, not
/// sqlx: a writer thread of our own answering by a channel measured the same as sqlx.
///
/// Only pushes: acknowledgements and reservations this way measured slower (a worker's
/// thread runs jobs too, and handing them to another thread for every call cost more than
/// the trip it saved), so they stay with sqlx. Only on a runtime with several threads
/// (`block_in_place` needs one; elsewhere the push goes through sqlx as before), and only
/// for a plain file (no `mode`, `vfs` or `immutable` in the URL). The writer connection of
/// sqlx is held meanwhile, so the process's writes still go one at a time. While another
/// process holds the file's write lock, the push waits for it (up to the busy timeout) on
/// this thread; the task that pushes, with whatever it joins or selects on, waits with it.
struct Direct {
    conn: rusqlite::Connection,
}

impl Direct {
    /// The connection, with the store's synchronous mode and busy timeout; `None` (with a
    /// warning: pushes go through sqlx) when it cannot be opened.
    fn open(file: &Path, synchronous: Synchronous, knobs: &SqliteKnobs) -> Option<Direct> {
        use rusqlite::OpenFlags;
        let opened = rusqlite::Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|conn| {
            conn.busy_timeout(knobs.busy_timeout)?;
            // Every size of insert stays prepared.
            conn.set_prepared_statement_cache_capacity(32);
            conn.pragma_update(None, "synchronous", synchronous.to_string())?;
            Ok(conn)
        });
        match opened {
            Ok(conn) => Some(Direct { conn }),
            Err(e) => {
                tracing::warn!(error = %e, file = %file.display(), "cannot open a second connection to the database file: pushes go through sqlx's thread");
                None
            }
        }
    }

    /// Whether writes of `state` can run on this thread now.
    fn usable(state: &SqliteState) -> bool {
        use tokio::runtime::{Handle, RuntimeFlavor};
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
            && state
                .direct
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
    }

    /// Runs `work` on this thread with the store's connection, while the tokio thread's
    /// other tasks move on. Call only when [`usable`](Self::usable).
    fn run<T>(state: &SqliteState, work: impl FnOnce(&Direct) -> rusqlite::Result<T>) -> Result<T> {
        tokio::task::block_in_place(|| {
            let direct = state.direct.lock().unwrap_or_else(|p| p.into_inner());
            match direct.as_ref() {
                Some(direct) => work(direct).map_err(|e| Error::backend(Sqlite::DRIVER, e)),
                None => Err(Error::backend(Sqlite::DRIVER, "the store is closed")),
            }
        })
    }

    /// Inserts `jobs` (none with a claim), all or none: the ids, in order. Up to
    /// [`Sqlite::CHUNK`] rows in one statement, its own transaction; more in one
    /// transaction.
    fn insert(&self, store: &SqlStore<Sqlite>, jobs: &[NewJob]) -> rusqlite::Result<Vec<i64>> {
        let sizes = chunk_sizes(jobs.len(), Sqlite::CHUNK);
        if let [size] = sizes[..] {
            return self.insert_rows(store.push_sql(size), jobs);
        }
        self.in_transaction(|| {
            let mut ids = Vec::with_capacity(jobs.len());
            let mut rest = jobs;
            for size in sizes {
                let (chunk, tail) = rest.split_at(size);
                rest = tail;
                ids.extend(self.insert_rows(store.push_sql(size), chunk)?);
            }
            Ok(ids)
        })
    }

    /// Runs `work` in a write transaction: committed if it succeeds, rolled back if it or
    /// the commit fails.
    fn in_transaction<T>(&self, work: impl FnOnce() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let done = work().and_then(|done| self.conn.execute_batch("COMMIT").map(|()| done));
        if done.is_err() && !self.conn.is_autocommit() {
            // The error is what counts; a rollback that fails too leaves the transaction
            // to the next `BEGIN`, which fails in turn until SQLite ends it.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        done
    }

    /// Runs `sql`, the `INSERT ... RETURNING id` of `jobs.len()` rows: the ids, in order.
    fn insert_rows(&self, sql: &str, jobs: &[NewJob]) -> rusqlite::Result<Vec<i64>> {
        let mut statement = self.conn.prepare_cached(sql)?;
        let mut at = 1;
        for job in jobs {
            let (due_at, delay) = due(job.available);
            statement.raw_bind_parameter(at, &job.queue)?;
            statement.raw_bind_parameter(at + 1, &job.name)?;
            statement.raw_bind_parameter(at + 2, &job.payload)?;
            statement.raw_bind_parameter(at + 3, due_at)?;
            statement.raw_bind_parameter(at + 4, delay)?;
            at += 5;
        }
        let mut rows = statement.raw_query();
        let mut ids = Vec::with_capacity(jobs.len());
        while let Some(row) = rows.next()? {
            ids.push(row.get::<_, i64>(0)?);
        }
        ids.sort_unstable();
        Ok(ids)
    }
}

impl Backend for Sqlite {
    const DRIVER: &'static str = "sqlite";
    type Knobs = SqliteKnobs;
    type State = SqliteState;
    const DIALECT: Dialect = Dialect::Sqlite;
    const CONNECTIONS: u32 = 4;
    // A write holds the file's write lock from its first step: no write has to upgrade a
    // read lock half-way, the one case where SQLite fails at once with "database is locked".
    const BEGIN: Option<&'static str> = Some("BEGIN IMMEDIATE");
    // Within one statement every use returns the same instant.
    const NOW: &'static str = "CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)";
    // A transaction holds the file's write lock from its start.
    const FOR_UPDATE: &'static str = "";
    const FOR_SHARE: &'static str = "";
    const BLOB: &'static str = "BLOB";
    const NO_BYTES: &'static str = "X''";
    const UNHEX: &'static str = "unhex({x})";
    const ROWS: &'static str = "(SELECT {columns} FROM json_each(?)) AS l";
    const INT: &'static str = "json_extract(value, '$[{i}]') AS {name}";
    const STR: &'static str = "json_extract(value, '$[{i}]') AS {name}";
    // SQLite's `DELETE` has no `USING`: its planner looks the ids up by primary key.
    const DELETE_JOIN: &'static str = "DELETE FROM {table} WHERE id IN (SELECT l.id FROM {rows})";
    const ACK: &'static str =
        "DELETE FROM {table} WHERE (id, token) IN (SELECT l.id, l.token FROM {rows}) \
         AND reserved_until IS NOT NULL RETURNING id, token";
    const MIGRATE: (&'static str, &'static str) = ("BEGIN IMMEDIATE", "COMMIT");
    const ACK_EFFECTS_BY_DELETE: bool = true;
    const ACK_EFFECTS_TX: Tx = Tx::Inline;
    const INLINE_BEGIN: &'static str = "BEGIN IMMEDIATE";

    /// The counters, the reservation and `COMMIT` in one text.
    fn ack_effects_end<'a>(
        store: &'a SqlStore<Sqlite>,
        conn: &'a mut SqliteConnection,
        deferred: &'a mut Deferred,
        counts: &'a BTreeMap<(String, String), i64>,
        fetch: Option<&'a ReserveRequest>,
    ) -> BoxFuture<'a, Result<Vec<Reserved>>> {
        Box::pin(async move {
            let rows: Vec<(&str, &str, i64)> = counts
                .iter()
                .map(|((g, n), d)| (g.as_str(), n.as_str(), *d))
                .collect();
            let counts = json(&rows)?;
            let mut text = String::new();
            let mut args = Vec::new();
            if !rows.is_empty() {
                text.push_str(store.count_sql());
                text.push_str("; ");
                args.push(Arg::Text(&counts));
            }
            if let Some(request) = fetch {
                let (reserve, reserve_args) = reservation(store.state(), request);
                text.push_str(&reserve);
                text.push_str("; ");
                args.extend(reserve_args);
            }
            text.push_str("COMMIT");
            let rows = Sqlite::fetch(conn, &text, &args)
                .await
                .map_err(db::<Sqlite>)?;
            deferred.committed = true;
            match fetch {
                Some(request) => reserved_rows::<Sqlite>(&rows, &request.queues),
                None => Ok(Vec::new()),
            }
        })
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn open(options: &SqlOptions<Sqlite>, tables: &Tables) -> Result<Open<Sqlite>> {
        let Resolved {
            connect,
            memory,
            synchronous,
            plain,
        } = options.resolve()?;
        let file = (!memory).then(|| connect.get_filename().to_path_buf());
        let pool = |max: u32| {
            SqlitePoolOptions::new()
                .max_connections(max)
                .test_before_acquire(false)
        };
        // Writes go through one connection: SQLite has one writer per file at a time
        // anyway, and queueing writers in the process is fairer and faster than letting
        // them race for the file lock. Reads (sizes, the failed store) use the others.
        let (writer, reader) = if memory {
            // One connection holds the private in-memory database alive: never let it go.
            let only = pool(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(connect)
                .await
                .map_err(db::<Sqlite>)?;
            (only, None)
        } else {
            let writer = pool(1)
                .connect_with(connect.clone())
                .await
                .map_err(db::<Sqlite>)?;
            enable_wal(&writer, options.knobs.busy_timeout).await?;
            let readers = options.connections().max(2) - 1;
            (writer, Some(pool(readers).connect_lazy_with(connect)))
        };
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&writer)
            .await
            .map_err(db::<Sqlite>)?;
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        if (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < MIN_VERSION {
            return Err(Error::Config(format!(
                "SQLite {}.{} or newer is needed, this one is {version}",
                MIN_VERSION.0, MIN_VERSION.1
            )));
        }
        let fill = |sql: &str| crate::statements::fill::<Sqlite>(tables, sql);
        // `available_at = due_at` (the old row's value) records when the job became
        // available for this reservation, so sorting the rows by it gives back the order of
        // the pick: RETURNING promises no order.
        let reserve_set = fill(
            "UPDATE {table} SET attempts = CAST(attempts AS INTEGER) + 1, token = lower(hex(randomblob(16))), \
             available_at = due_at, reserved_until = {now} + ?, \
             claim = CASE WHEN unique_until = 'started' THEN NULL ELSE claim END",
        );
        let pick = "FROM {table} WHERE queue = ? AND due_at <= {now} \
                    AND (? IS NULL OR name = ?) ORDER BY due_at, id LIMIT ?";
        let reserve_one = fill(&format!("SELECT id {pick}"));
        let reserve_arm = fill(&format!("SELECT id, due_at {pick}"));
        Ok(Open {
            main: Hot::new(writer, 1),
            reads: reader.map(|reader| Hot::new(reader, 2)),
            pushes: None,
            txs: None,
            durable: !memory,
            returning: true,
            id_step: 1,
            state: SqliteState {
                reserve_set,
                reserve_one,
                reserve_arm,
                direct: Mutex::new(match (&file, plain) {
                    (Some(file), true) => Direct::open(file, synchronous, &options.knobs),
                    _ => None,
                }),
                file,
                watch: Mutex::new(None),
            },
        })
    }

    fn listening(store: &SqlStore<Sqlite>, _patience: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let state = store.state();
            let Some(file) = &state.file else {
                return false;
            };
            let mut watch = state.watch.lock().unwrap_or_else(|p| p.into_inner());
            let complain = |e: notify::Error| {
                tracing::warn!(
                    error = %e,
                    file = %file.display(),
                    "cannot watch the database file: idle workers poll for other processes' jobs"
                );
            };
            match &*watch {
                None => *watch = Some(watch_file(file, store.waker().clone()).map_err(complain)),
                Some(Ok(w)) => {
                    let turned_on = w
                        .watching
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .turn_on();
                    if let Err(e) = turned_on {
                        complain(e);
                        return false;
                    }
                }
                Some(Err(())) => {}
            }
            matches!(*watch, Some(Ok(_)))
        })
    }

    fn close(state: &SqliteState) {
        state.watch.lock().unwrap_or_else(|p| p.into_inner()).take();
        state
            .direct
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    fn push_here<'a>(
        store: &'a SqlStore<Sqlite>,
        jobs: &'a [NewJob],
    ) -> BoxFuture<'a, Option<Result<Vec<i64>>>> {
        Box::pin(async move {
            let state = store.state();
            if !Direct::usable(state) {
                return None;
            }
            // The process's own writes queue for the writer connection, as ever: holding
            // it, this thread is the only one of the process to write, and never waits for
            // SQLite's lock on another connection of its own.
            let writer = match store.main().get().await {
                Ok(writer) => writer,
                Err(e) => return Some(Err(db::<Sqlite>(e))),
            };
            let done = Direct::run(state, |direct| direct.insert(store, jobs));
            // Untouched while this thread wrote.
            writer.keep();
            Some(done)
        })
    }

    fn already_applied(error: &sqlx::Error) -> bool {
        error
            .as_database_error()
            .is_some_and(|e| e.message().starts_with("duplicate column name"))
    }

    /// An acknowledgement and the reservation after it go in one text to SQLite's thread,
    /// `BEGIN IMMEDIATE`, the `DELETE`, the reservation's `UPDATE` and `COMMIT`: one trip
    /// and one commit (one flush under `synchronous = FULL`) for the whole unit, instead of
    /// a trip per statement.
    fn ack_tx(_store: &SqlStore<Sqlite>, fetch: bool) -> Tx {
        match fetch {
            true => Tx::Inline,
            false => Tx::No,
        }
    }

    fn ack<'a>(
        store: &'a SqlStore<Sqlite>,
        conn: &'a mut SqliteConnection,
        deferred: &'a mut Deferred,
        leases: &'a [(i64, &'a str)],
        fetch: Option<&'a ReserveRequest>,
    ) -> BoxFuture<'a, Result<AckedAndReserved>> {
        Box::pin(async move {
            let Some(request) = fetch else {
                return Ok((store.ack_json(conn, leases).await?, Vec::new()));
            };
            let pairs = json(&leases)?;
            let (reserve, reserve_args) = reservation(store.state(), request);
            let text = format!("BEGIN IMMEDIATE; {}; {reserve}; COMMIT", store.ack_sql());
            let mut args = Vec::with_capacity(reserve_args.len() + 1);
            args.push(Arg::Text(&pairs));
            args.extend(reserve_args);
            let rows = Sqlite::fetch(conn, &text, &args)
                .await
                .map_err(db::<Sqlite>)?;
            deferred.committed = true;
            // The acknowledgement returns (id, token); the reservation more columns.
            let (acked, picked): (Vec<_>, Vec<_>) =
                rows.into_iter().partition(|row| row.len() == 2);
            Ok((
                acked_rows::<Sqlite>(&acked)?,
                reserved_rows::<Sqlite>(&picked, &request.queues)?,
            ))
        })
    }

    fn reserve(on: Reserving<'_, Sqlite>) -> BoxFuture<'_, Result<Vec<Reserved>>> {
        Box::pin(async move {
            let (sql, args) = reservation(on.store.state(), on.request);
            let rows = Sqlite::fetch(on.conn, &sql, &args)
                .await
                .map_err(db::<Sqlite>)?;
            reserved_rows::<Sqlite>(&rows, &on.request.queues)
        })
    }
}

/// What the reservation returns.
const RESERVE_RETURNING: &str =
    "RETURNING id, queue, token, attempts, CAST(name AS BLOB), CAST(payload AS BLOB), available_at";

/// The reservation of `request` as one statement, with its arguments: up to `limit` due
/// jobs, from the queues in strict priority order (each queue's pick reads at most `limit`
/// rows of its index, so a deep backlog costs nothing more), marked reserved and returned.
fn reservation<'r>(state: &SqliteState, request: &'r ReserveRequest) -> (String, Vec<Arg<'r>>) {
    let limit = i64::try_from(request.limit.max(1)).unwrap_or(i64::MAX);
    let name = request.name.as_deref();
    let mut args = vec![Arg::Int(millis(request.lease))];
    for queue in &request.queues {
        args.extend([
            Arg::Text(queue),
            Arg::OptText(name),
            Arg::OptText(name),
            Arg::Int(limit),
        ]);
    }
    let (set, returning) = (&state.reserve_set, RESERVE_RETURNING);
    let sql = match request.queues.len() {
        1 => format!("{set} WHERE id IN ({}) {returning}", state.reserve_one),
        queues => {
            let arms: Vec<String> = (0..queues)
                .map(|rank| {
                    format!(
                        "SELECT id, {rank} AS r, due_at FROM ({})",
                        state.reserve_arm
                    )
                })
                .collect();
            args.push(Arg::Int(limit));
            format!(
                "{set} WHERE id IN (SELECT id FROM ({}) ORDER BY r, due_at, id LIMIT ?) {returning}",
                arms.join(" UNION ALL ")
            )
        }
    };
    (sql, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reservation from several queues is one statement that reads each queue's pick
    /// from the due index by range (never the whole table), whatever the backlog.
    #[tokio::test]
    async fn a_reservation_from_several_queues_reads_each_from_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let store = SqliteStorage::connect(&url).await.unwrap();
        let request = ReserveRequest::new(["a", "b", "c"], Duration::from_secs(60), 8);
        let (sql, _) = reservation(store.state(), &request);
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(store.pool())
                .await
                .unwrap();
        let steps: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        let by_index = steps
            .iter()
            .filter(|s| **s == "SEARCH jobs USING INDEX jobs_due (queue=? AND due_at<?)")
            .count();
        assert_eq!(by_index, 3, "{steps:?}");
        assert!(
            !steps.iter().any(|s| s.starts_with("SCAN jobs")),
            "{steps:?}"
        );
    }

    /// The row id and the synchronous mode the direct connection last saw (its
    /// `last_insert_rowid()`: 0 before it inserted anything).
    fn direct_view(store: &SqliteStorage) -> Option<(i64, i64)> {
        let direct = store.state().direct.lock().unwrap();
        let conn = &direct.as_ref()?.conn;
        let synchronous = conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        Some((conn.last_insert_rowid(), synchronous))
    }

    async fn store_at(dir: &tempfile::TempDir, query: &str) -> SqliteStorage {
        let url = format!("sqlite://{}{query}", dir.path().join("jobs.db").display());
        SqliteStorage::connect(&url).await.unwrap()
    }

    /// On a runtime with several threads, pushes run on the calling thread through the
    /// direct connection (it inserted the job), which commits as the URL says; the
    /// reservation and acknowledgement through sqlx see the job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_run_on_the_calling_thread_with_several_threads() {
        use queue_core::{Settle, Storage};
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(&dir, "?synchronous=full").await;
        assert_eq!(direct_view(&store), Some((0, 2)), "FULL is 2");
        let pushed = store
            .push(vec![NewJob::new("q", "n", b"1".to_vec())])
            .await
            .unwrap();
        let id = pushed[0].id().0.parse::<i64>().unwrap();
        assert_eq!(direct_view(&store), Some((id, 2)));
        let request = ReserveRequest::new(["q"], Duration::from_secs(60), 1);
        let got = store.reserve(&request).await.unwrap();
        assert_eq!(got[0].lease.job_id.0, id.to_string());
        let reply = store
            .settle(vec![Settle::ack(got[0].lease.clone())], Some(&request))
            .await
            .unwrap();
        assert_eq!(reply.settled, vec![queue_core::Settled::Applied]);
        assert!(reply.reserved.is_empty());
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(left, 0);
        // A push of more rows than one statement takes is all or none: one transaction.
        let many: Vec<_> = (0..1234)
            .map(|i| NewJob::new("q", "n", format!("{i}").into_bytes()))
            .collect();
        assert_eq!(store.push(many).await.unwrap().len(), 1234);
        store.close().await;
        assert_eq!(direct_view(&store), None, "closed with the store");
        let default = store_at(&dir, "").await;
        assert_eq!(direct_view(&default), Some((0, 1)), "NORMAL is 1");
    }

    /// On a runtime of one thread the writes go through sqlx, as `block_in_place` needs
    /// several threads: the direct connection never inserts.
    #[tokio::test]
    async fn writes_go_through_sqlx_on_one_thread() {
        use queue_core::Storage;
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(&dir, "").await;
        store
            .push(vec![NewJob::new("q", "n", b"1".to_vec())])
            .await
            .unwrap();
        assert_eq!(direct_view(&store), Some((0, 1)));
    }

    /// A database in memory, or a file opened with sqlx's own parameters, has no direct
    /// connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_direct_connection_in_memory_or_with_sqlx_parameters() {
        let memory = SqliteStorage::connect("sqlite::memory:").await.unwrap();
        assert_eq!(direct_view(&memory), None);
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(&dir, "?mode=rwc").await;
        assert_eq!(direct_view(&store), None);
    }

    #[test]
    fn urls() {
        let resolve = |url: &str| {
            SqliteOptions::new(url)
                .resolve()
                .map(|r| (r.connect, r.memory, r.synchronous))
        };
        let (connect, memory, synchronous) = resolve("sqlite://jobs.db").unwrap();
        assert_eq!(
            (connect.get_filename(), memory, synchronous),
            (std::path::Path::new("jobs.db"), false, Synchronous::Normal)
        );
        let (connect, _, synchronous) =
            resolve("sqlite:///tmp/x/jobs.db?synchronous=FULL").unwrap();
        assert_eq!(
            (connect.get_filename(), synchronous),
            (std::path::Path::new("/tmp/x/jobs.db"), Synchronous::Full)
        );
        let builder = SqliteOptions::new("sqlite:///tmp/j.db?synchronous=full")
            .synchronous(Synchronous::Normal);
        assert_eq!(
            builder.resolve().unwrap().synchronous,
            Synchronous::Normal,
            "the builder wins over the URL"
        );
        assert!(resolve("sqlite::memory:").unwrap().1);
        assert!(resolve("sqlite://:memory:").unwrap().1);
        assert!(SqliteOptions::new("sqlite://j.db").resolve().unwrap().plain);
        assert!(
            !SqliteOptions::new("sqlite://j.db?mode=rwc")
                .resolve()
                .unwrap()
                .plain
        );
        for bad in [
            "postgres://x",
            "sqlite://",
            "sqlite://jobs.db?synchronous=off",
            "sqlite://jobs.db?password=x",
        ] {
            assert!(resolve(bad).is_err(), "{bad}");
        }
        assert!(SqliteOptions::new("sqlite://j.db")
            .table("x;y")
            .tables()
            .is_err());
    }
}
