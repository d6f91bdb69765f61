//! [`MySqlStorage`]: the [`Storage`] trait on MySQL 8 or MariaDB 10.6+.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use queue_core::storage::{from_unix_millis, new_token, unix_millis};
use queue_core::{
    Availability, Capabilities, Error, FailedJob, JobId, Lease, NewJob, QueueSettings, QueueSize,
    ReserveRequest, Reserved, Result, Storage,
};
use sqlx::mysql::{
    MySql, MySqlArguments, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlQueryResult, MySqlRow,
};
use sqlx::query::Query;
use sqlx::{Connection, Executor, Row};
use tokio::sync::Notify;

use super::options::MySqlOptions;
use super::sql::Statements;
use crate::common::{attempts, chunk_sizes, count, idle_sleep, lease_lost, millis, text};
use crate::dialect::{schema_sql, statements, Dialect, Tables};
use crate::hot::Hot;
use crate::retry::{mysql_conflict, settle, Retry};

/// The driver's name, in errors and [`Storage::driver`].
pub(crate) const DRIVER: &str = "mysql";

/// How long picks may start after the last job taken before a queue is read from its start
/// again. A job due before that place (pushed with a time in the past, or whose lease ran
/// out long ago) waits at most this long for its turn.
const RESCAN: Duration = Duration::from_millis(500);

/// Where a queue's last pick ended.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    due_at: i64,
    id: i64,
    /// When the queue was last read from its start.
    rescanned: Instant,
}

/// A picked row: id, attempts, name, payload, due_at.
type Picked = (i64, i32, Option<Vec<u8>>, Option<Vec<u8>>, i64);

/// Which server answers, as far as the statements care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    MariaDb,
    MySql,
}

/// A queue store in a MySQL or MariaDB database, shared by any number of workers on any
/// number of machines.
///
/// Cheap to clone: clones share the connections. See the [crate docs](crate) for what it
/// guarantees.
///
/// Every connection runs at `READ COMMITTED` (under `REPEATABLE READ` a read-then-write can
/// lose an update) in UTC. A reservation is one short transaction per call: the next due
/// jobs of each queue are read `FOR UPDATE SKIP LOCKED` (workers never wait for each other
/// and never take the same job) and marked reserved by id. A batch of acknowledgements is one
/// `DELETE` (with `RETURNING` on MariaDB). Idle workers poll, waking early for pushes made by
/// their own process and never sleeping past the next due job.
#[derive(Clone)]
pub struct MySqlStorage {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Hot<MySql>,
    /// Connections without autocommit, for reservations: the pick starts a transaction by
    /// itself, and the mark ends it with its COMMIT, two round trips in all.
    claim: Hot<MySql>,
    sql: Statements,
    tables: Tables,
    url: String,
    settings: QueueSettings,
    flavor: Flavor,
    version: String,
    /// Whether `INSERT` and `DELETE` can say `RETURNING` (MariaDB).
    returning: bool,
    /// `@@auto_increment_increment`: the step between the ids of one multi-row insert
    /// (MySQL, without `RETURNING`).
    id_step: i64,
    /// Wakes this process's idle workers when it pushes.
    pushed: Notify,
    /// Per queue: where the last pick ended, `(due_at, id)`, and when the queue was last
    /// read from its start (see [`RESCAN`]).
    cursors: Mutex<HashMap<String, Cursor>>,
    /// Counts `add_counters` calls with a TTL, to sweep expired counters now and then.
    sweeps: AtomicU64,
    /// Runs operations again after a deadlock or a lock-wait timeout.
    retry: Retry,
}

impl fmt::Debug for MySqlStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStorage")
            .field("url", &self.inner.url)
            .field("server", &self.inner.version)
            .field("table", &self.inner.tables.jobs())
            .field("failed_table", &self.inner.tables.failed())
            .finish_non_exhaustive()
    }
}

pub(crate) fn db(error: sqlx::Error) -> Error {
    Error::backend(DRIVER, error)
}

/// The arguments of one job in a push.
fn job_binds(job: &NewJob) -> (&str, &str, &[u8], Option<i64>, i64) {
    let (at, delay) = match job.available {
        Availability::Now => (None, 0),
        Availability::After(d) => (None, millis(d)),
        Availability::At(t) => (Some(unix_millis(t)), 0),
    };
    (&job.queue, &job.name, &job.payload, at, delay)
}

/// Which server this is, and whether it can do `SELECT ... FOR UPDATE SKIP LOCKED`.
fn check_version(version: &str) -> Result<Flavor> {
    // Old clients' handshakes see MariaDB as "5.5.5-10.x"; the real version follows.
    let digits = version.strip_prefix("5.5.5-").unwrap_or(version);
    let numbers: Vec<u32> = digits
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    let found = (
        numbers.first().copied().unwrap_or(0),
        numbers.get(1).copied().unwrap_or(0),
        numbers.get(2).copied().unwrap_or(0),
    );
    if version.to_ascii_lowercase().contains("mariadb") {
        if found < (10, 6, 0) {
            return Err(Error::Config(format!(
                "MariaDB {version} cannot reserve jobs safely: it has no `FOR UPDATE SKIP LOCKED` \
                 (MariaDB 10.6 or newer is needed, or MySQL 8.0.13 or newer)"
            )));
        }
        Ok(Flavor::MariaDb)
    } else {
        if found < (8, 0, 13) {
            return Err(Error::Config(format!(
                "MySQL {version} cannot reserve jobs safely: `FOR UPDATE SKIP LOCKED` and \
                 expression defaults need MySQL 8.0.13 or newer (or MariaDB 10.6 or newer)"
            )));
        }
        Ok(Flavor::MySql)
    }
}

impl MySqlStorage {
    /// Connects to the database at `url` with default options and creates the tables that
    /// are missing. See [`MySqlOptions`] for the URL form and the knobs.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(MySqlOptions::new(url)).await
    }

    /// Connects with these options. Refuses a server without `SKIP LOCKED` (MySQL before
    /// 8.0.13, MariaDB before 10.6) with a message that says so.
    pub async fn connect_with(options: MySqlOptions) -> Result<Self> {
        let tables = options.tables()?;
        let connect = options.connect_options()?;
        let pool_options = |autocommit: bool| {
            MySqlPoolOptions::new()
                .max_connections(options.get_max_connections())
                .acquire_timeout(options.get_acquire_timeout())
                .idle_timeout(Some(Duration::from_secs(300)))
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        // Claims read and write under locks, but statements that read
                        // without one (sizes, counters) must see the latest commits, and
                        // REPEATABLE READ's snapshots allow lost updates in read-then-write
                        // sequences.
                        conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                            .await?;
                        // A queue name too long for its column fails rather than being cut.
                        conn.execute(
                            "SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')",
                        )
                        .await?;
                        if !autocommit {
                            conn.execute("SET SESSION autocommit = 0").await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = pool_options(true)
            .connect_with(connect.clone())
            .await
            .map_err(db)?;
        let claim = pool_options(false).connect_lazy_with(connect);
        let (version, id_step): (String, i64) =
            sqlx::query_as("SELECT VERSION(), CAST(@@auto_increment_increment AS SIGNED)")
                .fetch_one(&pool)
                .await
                .map_err(db)?;
        let flavor = check_version(&version)?;
        let returning = options.get_returning().unwrap_or(flavor == Flavor::MariaDb);
        let storage = MySqlStorage {
            inner: Arc::new(Inner {
                // A few connections kept at hand: a worker uses two at a time.
                // A few connections kept at hand (a worker uses two at a time); the others
                // stay in the pool for `pool()`'s users.
                pool: Hot::new(
                    pool,
                    (options.get_max_connections() / 2).clamp(1, 4) as usize,
                ),
                claim: Hot::discarding(claim, 2),
                sql: Statements::new(&tables, returning),
                tables,
                url: queue_core::redact_url(options.get_url()),
                settings: options.settings().clone(),
                flavor,
                version,
                returning,
                id_step: id_step.max(1),
                pushed: Notify::new(),
                cursors: Mutex::new(HashMap::new()),
                sweeps: AtomicU64::new(0),
                retry: Retry::new(DRIVER, mysql_conflict),
            }),
        };
        if options.wants_migrate() {
            storage.migrate().await?;
        }
        Ok(storage)
    }

    /// The table names this store uses.
    pub fn tables(&self) -> &Tables {
        &self.inner.tables
    }

    /// The schema this store creates (see [`schema_sql`]).
    pub fn schema_sql(&self) -> String {
        schema_sql(Dialect::MySql, &self.inner.tables)
    }

    /// The server's version string (`SELECT VERSION()`).
    pub fn server_version(&self) -> &str {
        &self.inner.version
    }

    /// Whether the server is MariaDB (rather than MySQL).
    pub fn is_mariadb(&self) -> bool {
        self.inner.flavor == Flavor::MariaDb
    }

    /// The connection pool (every connection at `READ COMMITTED`), for tests and tools that
    /// need raw SQL on the same database, and for transactions that dispatch with
    /// [`DispatchWithin`](crate::DispatchWithin).
    pub fn pool(&self) -> &MySqlPool {
        self.inner.pool.pool()
    }

    /// The dispatch settings of [`DispatchWithin`](crate::DispatchWithin).
    pub fn dispatch_settings(&self) -> &QueueSettings {
        &self.inner.settings
    }

    /// How many times, since the store was opened, an operation was run again because the
    /// server undid it for a transient conflict with another transaction: a deadlock (error
    /// 1213) or a lock-wait timeout (1205). See the [crate docs](crate#guarantees).
    pub fn conflict_retries(&self) -> u64 {
        self.inner.retry.retried()
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.inner.pool.clear();
        self.inner.claim.clear();
        self.inner.claim.pool().close().await;
        self.inner.pool.pool().close().await;
    }

    /// Pushes jobs on the caller's connection, inside whatever transaction it is in: the
    /// jobs exist if and only if that transaction commits. Queue size limits of the
    /// [dispatch settings](MySqlOptions::dispatch_settings) are checked on the same
    /// connection.
    pub async fn push_on(
        &self,
        conn: &mut MySqlConnection,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<JobId>> {
        let limits = &self.inner.settings.max_queue_size;
        if !limits.is_empty() {
            let mut adding: HashMap<&str, u64> = HashMap::new();
            for job in &jobs {
                *adding.entry(job.queue.as_str()).or_default() += 1;
            }
            for (queue, n) in adding {
                if let Some(limit) = limits.get(queue) {
                    let size: i64 = sqlx::query_scalar(&self.inner.sql.total)
                        .bind(queue)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(db)?;
                    let size = count(size);
                    if size + n > *limit {
                        return Err(Error::QueueFull {
                            queue: queue.to_owned(),
                            size,
                            limit: *limit,
                        });
                    }
                }
            }
        }
        self.insert(conn, &jobs).await
    }

    /// The server's plan for picking 8 jobs of `queue` (`EXPLAIN`), one line per table:
    /// `type`, `key` and `Extra`, for tests that check it reads the `{table}_due` index in
    /// order rather than the whole table.
    #[doc(hidden)]
    pub async fn explain_reserve(&self, queue: &str) -> Result<String> {
        let mut conn = self.inner.pool.get().await.map_err(db)?;
        let rows = sqlx::query(&format!("EXPLAIN {}", self.inner.sql.reserve_pick))
            .bind(queue)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(8_i64)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        conn.keep();
        let mut out = Vec::new();
        for row in &rows {
            let field = |name: &str| -> Result<String> {
                Ok(text(row.try_get::<Option<Vec<u8>>, _>(name).map_err(db)?))
            };
            out.push(format!(
                "type={} key={} extra={}",
                field("type")?,
                field("key")?,
                field("Extra")?
            ));
        }
        Ok(out.join("\n"))
    }

    /// Locks the next `want` due jobs of `queue`, first due first, inside the caller's
    /// transaction: after the place the last pick ended if that is recent and enough jobs
    /// are there, else from the start of the queue.
    async fn pick(
        &self,
        conn: &mut MySqlConnection,
        queue: &str,
        request: &ReserveRequest,
        want: usize,
    ) -> Result<Vec<Picked>> {
        let sql = &self.inner.sql;
        let name = request.name.as_deref();
        let limit = i64::try_from(want).unwrap_or(i64::MAX);
        let cursor = self
            .inner
            .cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .copied()
            .filter(|c| c.rescanned.elapsed() < RESCAN);
        let mut picked: Vec<Picked> = Vec::new();
        if let Some(cursor) = cursor {
            picked = sqlx::query_as(&sql.reserve_pick_after)
                .bind(queue)
                .bind(cursor.due_at)
                .bind(cursor.id)
                .bind(cursor.due_at)
                .bind(name)
                .bind(name)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await
                .map_err(db)?;
        }
        let rescanned = picked.len() < want;
        if rescanned {
            // From the start: this also returns the rows just locked (a transaction does not
            // skip its own locks), so the two lists are merged. Rows locked beyond `want`
            // are let go at the commit.
            let from_start: Vec<Picked> = sqlx::query_as(&sql.reserve_pick)
                .bind(queue)
                .bind(name)
                .bind(name)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await
                .map_err(db)?;
            let seen: HashSet<i64> = picked.iter().map(|p| p.0).collect();
            picked.extend(from_start.into_iter().filter(|p| !seen.contains(&p.0)));
            picked.sort_unstable_by_key(|p| (p.4, p.0));
            picked.truncate(want);
        }
        if let Some(last) = picked.last() {
            let mut cursors = self.inner.cursors.lock().unwrap_or_else(|p| p.into_inner());
            let entry = cursors.entry(queue.to_owned()).or_insert(Cursor {
                due_at: last.4,
                id: last.0,
                rescanned: Instant::now(),
            });
            if rescanned {
                entry.rescanned = Instant::now();
            }
            if (last.4, last.0) > (entry.due_at, entry.id) || rescanned {
                entry.due_at = last.4;
                entry.id = last.0;
            }
        }
        Ok(picked)
    }

    /// The multi-row inserts of a push, on a connection (in a transaction when there are
    /// several).
    async fn insert(&self, conn: &mut MySqlConnection, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        let mut ids = Vec::with_capacity(jobs.len());
        let sizes = chunk_sizes(jobs.len());
        let mut jobs = jobs.iter();
        for size in sizes {
            let mut query = sqlx::query(self.inner.sql.push.get(size));
            for job in jobs.by_ref().take(size) {
                let (queue, name, payload, at, delay) = job_binds(job);
                query = query
                    .bind(queue)
                    .bind(name)
                    .bind(payload)
                    .bind(at)
                    .bind(delay);
            }
            if self.inner.returning {
                let rows = query.fetch_all(&mut *conn).await.map_err(db)?;
                let mut chunk: Vec<i64> = rows
                    .iter()
                    .map(|row| row.try_get::<i64, _>(0))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(db)?;
                chunk.sort_unstable();
                ids.extend(chunk);
            } else {
                // A multi-row INSERT ... VALUES is a "simple insert": InnoDB gives its rows
                // consecutive ids (by the increment) in every lock mode, the first of which
                // is LAST_INSERT_ID().
                let done = query.execute(&mut *conn).await.map_err(db)?;
                let first = i64::try_from(done.last_insert_id()).unwrap_or(i64::MAX);
                let step = self.inner.id_step;
                ids.extend((0..size as i64).map(|i| first + i * step));
            }
        }
        Ok(ids.into_iter().map(|id| JobId(id.to_string())).collect())
    }

    fn failed_from(row: &MySqlRow) -> Result<FailedJob> {
        let id: i64 = row.try_get(0).map_err(db)?;
        let tries: i32 = row.try_get(6).map_err(db)?;
        let failed_at: i64 = row.try_get(7).map_err(db)?;
        Ok(FailedJob {
            id: id.to_string(),
            job_id: text(row.try_get(1).map_err(db)?),
            queue: text(row.try_get(2).map_err(db)?),
            name: text(row.try_get(3).map_err(db)?),
            payload: row
                .try_get::<Option<Vec<u8>>, _>(4)
                .map_err(db)?
                .unwrap_or_default(),
            error: text(row.try_get(5).map_err(db)?),
            attempts: attempts(i64::from(tries)),
            failed_at: from_unix_millis(failed_at),
        })
    }

    /// Runs one statement on a connection kept at hand, as its own transaction
    /// (autocommit), again after a transient conflict (see [`Retry`]).
    async fn execute<'q, F>(&self, operation: &'static str, query: F) -> Result<MySqlQueryResult>
    where
        F: Fn() -> Query<'q, MySql, MySqlArguments> + Sync,
    {
        let query = &query;
        self.inner
            .retry
            .on(&self.inner.pool, operation, |conn, _| {
                Box::pin(async move { query().execute(conn).await.map_err(db) })
            })
            .await
    }

    /// Like [`execute`](Self::execute), for a statement that returns rows.
    async fn fetch_all<'q, F>(&self, operation: &'static str, query: F) -> Result<Vec<MySqlRow>>
    where
        F: Fn() -> Query<'q, MySql, MySqlArguments> + Sync,
    {
        let query = &query;
        self.inner
            .retry
            .on(&self.inner.pool, operation, |conn, _| {
                Box::pin(async move { query().fetch_all(conn).await.map_err(db) })
            })
            .await
    }

    /// Deletes one lease if it is current; returns whether it was.
    async fn acknowledge_one(&self, id: i64, token: &str) -> Result<bool> {
        let done = self
            .execute("acknowledge", || {
                sqlx::query(&self.inner.sql.acknowledge_one)
                    .bind(id)
                    .bind(token)
            })
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes the current ones of `pairs`; returns which were deleted. Each statement is
    /// its own transaction and is retried alone: a batch of several statements, some of
    /// which committed, is never run again as a whole (those would now delete nothing and
    /// be reported as not acknowledged).
    async fn delete_leases(&self, pairs: &[(i64, &str)]) -> Result<HashSet<(i64, String)>> {
        let mut deleted = HashSet::with_capacity(pairs.len());
        let mut rest = pairs;
        for size in chunk_sizes(pairs.len()) {
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            self.delete_chunk(chunk, &mut deleted).await?;
        }
        Ok(deleted)
    }

    /// One statement's worth of [`delete_leases`](Self::delete_leases): `chunk` has one of
    /// the sizes of [`CHUNKS`](crate::common::CHUNKS).
    async fn delete_chunk(
        &self,
        chunk: &[(i64, &str)],
        deleted: &mut HashSet<(i64, String)>,
    ) -> Result<()> {
        let sql = &self.inner.sql;
        let delete = || {
            let mut query = sqlx::query(sql.acknowledge.get(chunk.len()));
            for (id, _) in chunk {
                query = query.bind(*id);
            }
            for (id, token) in chunk {
                query = query.bind(*id).bind(*token);
            }
            query
        };
        if self.inner.returning {
            for row in &self.fetch_all("acknowledge", delete).await? {
                let id: i64 = row.try_get(0).map_err(db)?;
                let token: Vec<u8> = row.try_get(1).map_err(db)?;
                deleted.insert((id, text(Some(token))));
            }
            return Ok(());
        }
        // Without RETURNING: the count says how many were deleted.
        let distinct: HashSet<(i64, &str)> = chunk.iter().copied().collect();
        let ids: HashSet<i64> = distinct.iter().map(|(id, _)| *id).collect();
        if ids.len() < distinct.len() {
            // A job named with two tokens (a stale lease beside the current one): one
            // lease at a time, so the count answers for each.
            for (id, token) in &distinct {
                if self.acknowledge_one(*id, token).await? {
                    deleted.insert((*id, (*token).to_owned()));
                }
            }
            return Ok(());
        }
        // All of them, in the usual case.
        let done = self.execute("acknowledge", delete).await?;
        let count = usize::try_from(done.rows_affected()).unwrap_or(usize::MAX);
        if count == distinct.len() {
            deleted.extend(
                distinct
                    .iter()
                    .map(|(id, token)| (*id, (*token).to_owned())),
            );
            return Ok(());
        }
        // Some were stale. A lease whose job is still there (under another token) was
        // stale; of those whose job is gone, this statement deleted `count`: if that is
        // all of them they were current, else which ones cannot be told, and they are
        // reported as not acknowledged (the job may be said to run again; it does not).
        let mut ids: Vec<i64> = ids.into_iter().collect();
        ids.sort_unstable();
        let mut present = HashSet::new();
        let mut left = ids.as_slice();
        for size in chunk_sizes(ids.len()) {
            let (part, tail) = left.split_at(size);
            left = tail;
            let check = || {
                let mut check = sqlx::query(sql.acknowledge_check.get(part.len()));
                for id in part {
                    check = check.bind(*id);
                }
                check
            };
            for row in self.fetch_all("acknowledge", check).await? {
                present.insert(row.try_get::<i64, _>(0).map_err(db)?);
            }
        }
        let gone: Vec<&(i64, &str)> = distinct
            .iter()
            .filter(|(id, _)| !present.contains(id))
            .collect();
        if gone.len() == count {
            deleted.extend(gone.iter().map(|(id, token)| (*id, (*token).to_owned())));
        }
        Ok(())
    }

    /// Deletes expired counters (up to a thousand): read without a lock, deleted by name in
    /// name order, each statement its own transaction (see the statements for why).
    async fn sweep_counters(&self) -> Result<()> {
        let sql = &self.inner.sql;
        let rows = self
            .fetch_all("counters_sweep", || sqlx::query(&sql.counters_expired))
            .await?;
        let names: Vec<Vec<u8>> = rows
            .iter()
            .map(|row| row.try_get::<Vec<u8>, _>(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(db)?;
        let mut rest = names.as_slice();
        for size in chunk_sizes(names.len()) {
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            self.execute("counters_sweep", || {
                let mut query = sqlx::query(sql.counters_sweep.get(chunk.len()));
                for name in chunk {
                    query = query.bind(name.as_slice());
                }
                query
            })
            .await?;
        }
        Ok(())
    }

    /// One attempt at a push: one statement, or a transaction of several.
    async fn push_once(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        let mut conn = self.inner.pool.get().await.map_err(db)?;
        let ids = if jobs.len() == 1 {
            self.insert(&mut conn, jobs).await?
        } else {
            let mut tx = conn.begin().await.map_err(db)?;
            let ids = self.insert(&mut tx, jobs).await;
            settle(tx, ids, DRIVER).await?
        };
        conn.keep();
        Ok(ids)
    }

    /// One attempt at a reservation: one transaction on a connection without autocommit.
    async fn reserve_once(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        let mut conn = self.inner.claim.get().await.map_err(db)?;
        match self.claim(&mut conn, request).await {
            Ok(out) => {
                conn.keep();
                Ok(out)
            }
            Err(error) => {
                // Nothing was taken: the next picks start from the queues' front rather
                // than after rows this attempt locked and gave back.
                {
                    let mut cursors = self.inner.cursors.lock().unwrap_or_else(|p| p.into_inner());
                    for queue in &request.queues {
                        cursors.remove(queue);
                    }
                }
                if self.inner.retry.conflict(&error).is_some() {
                    // A deadlock undid the whole transaction; a lock-wait timeout only the
                    // statement, leaving the picks' locks: end it before trying again, and
                    // keep the connection, now clean. Any other failure drops the
                    // connection, which closes it, and the server rolls back.
                    (&mut *conn).execute("ROLLBACK").await.map_err(db)?;
                    conn.keep();
                }
                Err(error)
            }
        }
    }

    /// The picks and the mark of a reservation, committed, on `conn`.
    async fn claim(
        &self,
        conn: &mut MySqlConnection,
        request: &ReserveRequest,
    ) -> Result<Vec<Reserved>> {
        let limit = request.limit.max(1);
        let mut out: Vec<Reserved> = Vec::new();
        let mut ids = Vec::new();
        let prefix = new_token();
        // Without autocommit, the first pick starts the transaction. The queues in priority
        // order: each picks its next due jobs, locked, skipping other workers' rows.
        for queue in &request.queues {
            let want = limit - out.len();
            if want == 0 {
                break;
            }
            for (id, tries, name, payload, _) in self.pick(conn, queue, request, want).await? {
                ids.push(id.to_string());
                out.push(Reserved {
                    lease: Lease {
                        job_id: JobId(id.to_string()),
                        queue: queue.clone(),
                        token: format!("{prefix}-{id}"),
                    },
                    name: text(name),
                    payload: payload.unwrap_or_default(),
                    attempts: attempts(i64::from(tries) + 1),
                });
            }
        }
        // Mark and commit in one round trip (or just end the transaction if nothing was
        // due). If the mark fails, the COMMIT after it does not run.
        let end = if ids.is_empty() {
            "COMMIT".to_owned()
        } else {
            self.inner
                .sql
                .reserve_mark
                .replace("{prefix}", &prefix)
                .replace("{lease}", &millis(request.lease).to_string())
                .replace("{ids}", &ids.join(", "))
        };
        conn.execute(end.as_str()).await.map_err(db)?;
        Ok(out)
    }
}

#[async_trait]
impl Storage for MySqlStorage {
    fn driver(&self) -> &'static str {
        DRIVER
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            reserve_by_name: true,
            durable: true,
            // Only pushes from this process wake its idle workers; others are seen at the
            // next poll.
            wake_on_push: false,
        }
    }

    async fn migrate(&self) -> Result<()> {
        // DDL commits on its own in MySQL; `CREATE TABLE IF NOT EXISTS` is safe against
        // itself (the server's metadata lock serialises it).
        let schema = self.schema_sql();
        for statement in statements(&schema) {
            let mut conn = self.inner.pool.get().await.map_err(db)?;
            sqlx::query(&statement)
                .persistent(false)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            conn.keep();
        }
        Ok(())
    }

    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let jobs = jobs.as_slice();
        let ids = self
            .inner
            .retry
            .run("push", || self.push_once(jobs))
            .await?;
        self.inner.pushed.notify_waiters();
        Ok(ids)
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        self.inner
            .retry
            .run("reserve", || self.reserve_once(request))
            .await
    }

    async fn extend(&self, lease: &Lease, duration: Duration) -> Result<()> {
        let id: i64 = lease.job_id.0.parse().map_err(|_| lease_lost(lease))?;
        // The connection reports rows matched (CLIENT_FOUND_ROWS), so an extension to the
        // same deadline still counts.
        let done = self
            .execute("extend", || {
                sqlx::query(&self.inner.sql.extend)
                    .bind(millis(duration))
                    .bind(id)
                    .bind(lease.token.as_str())
            })
            .await?;
        if done.rows_affected() == 0 {
            return Err(lease_lost(lease));
        }
        Ok(())
    }

    async fn acknowledge(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        if let [lease] = leases {
            let Ok(id) = lease.job_id.0.parse::<i64>() else {
                return Ok(vec![false]);
            };
            return Ok(vec![self.acknowledge_one(id, &lease.token).await?]);
        }
        let parsed: Vec<Option<i64>> = leases.iter().map(|l| l.job_id.0.parse().ok()).collect();
        let pairs: Vec<(i64, &str)> = leases
            .iter()
            .zip(&parsed)
            .filter_map(|(lease, id)| id.map(|id| (id, lease.token.as_str())))
            .collect();
        if pairs.is_empty() {
            return Ok(vec![false; leases.len()]);
        }
        let mut deleted = self.delete_leases(&pairs).await?;
        Ok(leases
            .iter()
            .zip(parsed)
            .map(|(lease, id)| {
                // Removing makes a lease named twice in one batch count once, as it would
                // one after the other.
                id.is_some_and(|id| deleted.remove(&(id, lease.token.clone())))
            })
            .collect())
    }

    async fn release(&self, lease: &Lease, delay: Duration, refund_attempt: bool) -> Result<()> {
        let id: i64 = lease.job_id.0.parse().map_err(|_| lease_lost(lease))?;
        let done = self
            .execute("release", || {
                sqlx::query(&self.inner.sql.release)
                    .bind(millis(delay))
                    .bind(refund_attempt)
                    .bind(id)
                    .bind(lease.token.as_str())
            })
            .await?;
        if done.rows_affected() == 0 {
            return Err(lease_lost(lease));
        }
        self.inner.pushed.notify_waiters();
        Ok(())
    }

    async fn fail(&self, lease: &Lease, error: &str) -> Result<()> {
        let id: i64 = lease.job_id.0.parse().map_err(|_| lease_lost(lease))?;
        let sql = &self.inner.sql;
        let moved = self
            .inner
            .retry
            .run("fail", || async move {
                let mut conn = self.inner.pool.get().await.map_err(db)?;
                let mut tx = conn.begin().await.map_err(db)?;
                let moved = async {
                    let held: Option<i64> = sqlx::query_scalar(&sql.lock_reserved)
                        .bind(id)
                        .bind(lease.token.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                    if held.is_none() {
                        return Ok(false);
                    }
                    sqlx::query(&sql.fail_copy)
                        .bind(error)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                    sqlx::query(&sql.delete)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                    Ok(true)
                }
                .await;
                let moved = settle(tx, moved, DRIVER).await?;
                conn.keep();
                Ok(moved)
            })
            .await?;
        if !moved {
            return Err(lease_lost(lease));
        }
        Ok(())
    }

    async fn size(&self, queue: &str) -> Result<QueueSize> {
        let rows = self
            .fetch_all("size", || sqlx::query(&self.inner.sql.size).bind(queue))
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| Error::backend(DRIVER, sqlx::Error::RowNotFound))?;
        let (waiting, delayed, reserved): (i64, i64, i64) = (
            row.try_get(0).map_err(db)?,
            row.try_get(1).map_err(db)?,
            row.try_get(2).map_err(db)?,
        );
        Ok(QueueSize {
            waiting: count(waiting),
            delayed: count(delayed),
            reserved: count(reserved),
        })
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let rows = self
            .fetch_all("queues", || sqlx::query(&self.inner.sql.queues))
            .await?;
        rows.iter()
            .map(|row| Ok(text(row.try_get(0).map_err(db)?)))
            .collect()
    }

    async fn clear(&self, queue: &str) -> Result<u64> {
        let done = self
            .execute("clear", || sqlx::query(&self.inner.sql.clear).bind(queue))
            .await?;
        Ok(done.rows_affected())
    }

    async fn failed_list(&self, offset: u64, limit: u64) -> Result<Vec<FailedJob>> {
        let rows = self
            .fetch_all("failed_list", || {
                sqlx::query(&self.inner.sql.failed_list)
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            })
            .await?;
        rows.iter().map(Self::failed_from).collect()
    }

    async fn failed_get(&self, id: &str) -> Result<Option<FailedJob>> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let rows = self
            .fetch_all("failed_get", || {
                sqlx::query(&self.inner.sql.failed_get).bind(id)
            })
            .await?;
        rows.first().map(Self::failed_from).transpose()
    }

    async fn failed_count(&self) -> Result<u64> {
        let rows = self
            .fetch_all("failed_count", || sqlx::query(&self.inner.sql.failed_count))
            .await?;
        let n: i64 = rows
            .first()
            .ok_or_else(|| Error::backend(DRIVER, sqlx::Error::RowNotFound))?
            .try_get(0)
            .map_err(db)?;
        Ok(count(n))
    }

    async fn failed_retry(&self, id: &str) -> Result<Option<JobId>> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let sql = &self.inner.sql;
        let returning = self.inner.returning;
        let new_id = self
            .inner
            .retry
            .run("failed_retry", || async move {
                let mut conn = self.inner.pool.get().await.map_err(db)?;
                let mut tx = conn.begin().await.map_err(db)?;
                let new_id = async {
                    let found: Option<i64> = sqlx::query_scalar(&sql.failed_lock)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                    if found.is_none() {
                        return Ok(None);
                    }
                    let copy = sqlx::query(&sql.failed_copy_back).bind(id);
                    let new_id = if returning {
                        let row = copy.fetch_one(&mut *tx).await.map_err(db)?;
                        row.try_get::<i64, _>(0).map_err(db)?
                    } else {
                        let done = copy.execute(&mut *tx).await.map_err(db)?;
                        i64::try_from(done.last_insert_id()).unwrap_or(i64::MAX)
                    };
                    sqlx::query(&sql.failed_delete)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                    Ok(Some(new_id))
                }
                .await;
                let new_id = settle(tx, new_id, DRIVER).await?;
                conn.keep();
                Ok(new_id)
            })
            .await?;
        if new_id.is_some() {
            self.inner.pushed.notify_waiters();
        }
        Ok(new_id.map(|id| JobId(id.to_string())))
    }

    async fn failed_forget(&self, id: &str) -> Result<bool> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(false);
        };
        let done = self
            .execute("failed_forget", || {
                sqlx::query(&self.inner.sql.failed_delete).bind(id)
            })
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn failed_flush(&self) -> Result<u64> {
        let done = self
            .execute("failed_flush", || sqlx::query(&self.inner.sql.failed_flush))
            .await?;
        Ok(done.rows_affected())
    }

    async fn failed_prune(&self, before: SystemTime) -> Result<u64> {
        let done = self
            .execute("failed_prune", || {
                sqlx::query(&self.inner.sql.failed_prune).bind(unix_millis(before))
            })
            .await?;
        Ok(done.rows_affected())
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let done = self
            .execute("lock", || {
                sqlx::query(&self.inner.sql.lock)
                    .bind(key)
                    .bind(owner)
                    .bind(millis(ttl))
            })
            .await?;
        // See the statement: 0 is a fresh lock, 1 another owner's, anything else ours renewed
        // or taken over.
        Ok(done.last_insert_id() != 1)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        let done = self
            .execute("unlock", || {
                sqlx::query(&self.inner.sql.unlock).bind(key).bind(owner)
            })
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        let rows = self
            .fetch_all("oldest_available", || {
                sqlx::query(&self.inner.sql.oldest_available).bind(queue)
            })
            .await?;
        let oldest: Option<i64> = rows
            .first()
            .ok_or_else(|| Error::backend(DRIVER, sqlx::Error::RowNotFound))?
            .try_get(0)
            .map_err(db)?;
        Ok(oldest.map(from_unix_millis))
    }

    async fn add_counters(&self, deltas: &[(String, i64)], ttl: Option<Duration>) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        // In name order, so two batches lock their rows in the same order (no deadlock
        // between them; a transaction of the application's can still meet one).
        let mut deltas: Vec<&(String, i64)> = deltas.iter().collect();
        deltas.sort_by(|a, b| a.0.cmp(&b.0));
        let deltas = deltas.as_slice();
        let ttl = ttl.map(millis);
        let sql = &self.inner.sql;
        let sizes = chunk_sizes(deltas.len());
        let sizes = sizes.as_slice();
        fn counters<'q>(
            sql: &'q Statements,
            chunk: &[&'q (String, i64)],
            ttl: Option<i64>,
        ) -> sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments> {
            let mut query = sqlx::query(sql.add_counters.get(chunk.len()));
            for (name, delta) in chunk {
                query = query.bind(name.as_str()).bind(*delta).bind(ttl);
            }
            query
        }
        // The whole batch at once, or not at all: a retry after a conflict never adds a
        // part of it twice.
        self.inner
            .retry
            .run("add_counters", || async move {
                let mut conn = self.inner.pool.get().await.map_err(db)?;
                if let [size] = sizes[..] {
                    counters(sql, &deltas[..size], ttl)
                        .execute(&mut *conn)
                        .await
                        .map_err(db)?;
                } else {
                    let mut tx = conn.begin().await.map_err(db)?;
                    let added = async {
                        let mut rest = deltas;
                        for &size in sizes {
                            let (chunk, tail) = rest.split_at(size);
                            rest = tail;
                            counters(sql, chunk, ttl)
                                .execute(&mut *tx)
                                .await
                                .map_err(db)?;
                        }
                        Ok(())
                    }
                    .await;
                    settle(tx, added, DRIVER).await?;
                }
                conn.keep();
                Ok(())
            })
            .await?;
        // Expired counters are left out when read; now and then they are deleted too.
        if ttl.is_some() && self.inner.sweeps.fetch_add(1, Ordering::Relaxed) % 256 == 0 {
            self.sweep_counters().await?;
        }
        Ok(())
    }

    async fn counters(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        // Names are bytes: every name that starts with `prefix` sorts from `prefix` up to
        // `prefix` followed by the last character there is, a range of the primary key.
        let end = format!("{prefix}\u{10ffff}");
        let rows = self
            .fetch_all("counters", || {
                sqlx::query(&self.inner.sql.counters)
                    .bind(prefix)
                    .bind(end.as_str())
                    .bind(prefix)
                    .bind(prefix)
            })
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    text(row.try_get(0).map_err(db)?),
                    row.try_get(1).map_err(db)?,
                ))
            })
            .collect()
    }

    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let pushed = self.inner.pushed.notified();
        tokio::pin!(pushed);
        pushed.as_mut().enable();
        // The worker drops a wait as soon as one of its jobs finishes: the query runs in a
        // task of its own, so it is never cut off half-way (which would cost the connection).
        let store = self.clone();
        let queues = queues.to_vec();
        let sleep = tokio::spawn(async move {
            let mut sleep = timeout;
            let mut conn = store.inner.pool.get().await.map_err(db)?;
            for queue in &queues {
                let due: Option<i64> = sqlx::query_scalar(&store.inner.sql.next_due)
                    .bind(queue.as_str())
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db)?;
                sleep = idle_sleep(due, sleep);
            }
            conn.keep();
            Ok::<_, Error>(sleep)
        })
        .await
        .map_err(|e| Error::backend(DRIVER, e))??;
        let _ = tokio::time::timeout(sleep, pushed).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            check_version("10.11.19-MariaDB-0+deb12u1").unwrap(),
            Flavor::MariaDb
        );
        assert_eq!(check_version("10.6.0-MariaDB").unwrap(), Flavor::MariaDb);
        assert_eq!(check_version("11.4.2-MariaDB").unwrap(), Flavor::MariaDb);
        assert_eq!(check_version("8.0.36").unwrap(), Flavor::MySql);
        assert_eq!(check_version("8.4.0-commercial").unwrap(), Flavor::MySql);
        assert_eq!(check_version("9.1.0").unwrap(), Flavor::MySql);
        assert_eq!(
            check_version("5.5.5-10.11.2-MariaDB").unwrap(),
            Flavor::MariaDb
        );
        for old in [
            "10.5.23-MariaDB",
            "5.7.44-log",
            "8.0.12",
            "5.5.5-10.3.39-MariaDB",
        ] {
            let e = check_version(old).unwrap_err().to_string();
            assert!(e.contains("SKIP LOCKED"), "{old}: {e}");
        }
    }
}
