//! [`SqliteStorage`]: the [`Storage`] trait on one SQLite file.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use queue_core::storage::{from_unix_millis, unix_millis};
use queue_core::{
    Availability, Capabilities, Error, FailedJob, JobId, Lease, NewJob, QueueSize, ReserveRequest,
    Reserved, Result, Storage,
};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, Sqlite, Transaction};
use tokio::sync::Notify;

use super::options::{Resolved, SqliteOptions, Synchronous};
use super::sql::Statements;
use crate::common::{attempts, chunk_sizes, count, idle_sleep, lease_lost, millis, text};
use crate::dialect::{schema_sql, Dialect, Tables};

/// The driver's name, in errors and [`Storage::driver`].
const DRIVER: &str = "sqlite";

/// The oldest SQLite with `unixepoch('subsec')`.
const MIN_VERSION: (u32, u32) = (3, 42);

/// A queue store in one SQLite file, shared safely by every worker process on the machine.
///
/// Cheap to clone: clones share the connections. See the [crate docs](crate) for what it
/// guarantees.
///
/// Inside a process, writes go through one connection (SQLite has one writer per file at a
/// time anyway, and queueing writers in the process is fairer and faster than letting them
/// race for the file lock); reads (sizes, the failed store) use the others. Between
/// processes, every write is a single statement (which takes the write lock at its first
/// step) or a `BEGIN IMMEDIATE` transaction (which takes it at `BEGIN`), so no write has to
/// upgrade a read lock half-way, the one case where SQLite fails with "database is locked"
/// without waiting; a process that finds the file locked waits for up to the busy timeout.
#[derive(Clone)]
pub struct SqliteStorage {
    inner: Arc<Inner>,
}

struct Inner {
    writer: SqlitePool,
    reader: SqlitePool,
    sql: Statements,
    tables: Tables,
    url: String,
    memory: bool,
    synchronous: Synchronous,
    /// Wakes this process's idle workers when it pushes (other processes' pushes are seen
    /// at the next poll).
    pushed: Notify,
    /// Counts `add_counters` calls with a TTL, to sweep expired counters now and then.
    sweeps: AtomicU64,
}

impl fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("url", &self.inner.url)
            .field("table", &self.inner.tables.jobs())
            .field("failed_table", &self.inner.tables.failed())
            .field("synchronous", &self.inner.synchronous)
            .finish_non_exhaustive()
    }
}

fn db(error: sqlx::Error) -> Error {
    Error::backend(DRIVER, error)
}

/// True for "database is locked" (SQLITE_BUSY) and "database table is locked" (SQLITE_LOCKED).
fn is_busy(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

impl SqliteStorage {
    /// Opens (and creates, if missing) the database at `url` with default options, and
    /// creates the tables that are missing. See [`SqliteOptions`] for the URL forms.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(SqliteOptions::new(url)).await
    }

    /// Opens the database with these options.
    pub async fn connect_with(options: SqliteOptions) -> Result<Self> {
        let Resolved {
            connect,
            tables,
            memory,
            synchronous,
            readers,
            busy_timeout,
        } = options.resolve()?;
        let (writer, reader) = if memory {
            // One connection holds the private in-memory database alive: never let it go.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false)
                .connect_with(connect)
                .await
                .map_err(db)?;
            (pool.clone(), pool)
        } else {
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .connect_with(connect.clone())
                .await
                .map_err(db)?;
            // WAL lets readers and the writer work at once. The mode is kept in the file, so
            // it is set once here rather than by every connection.
            enable_wal(&writer, busy_timeout).await?;
            let reader = SqlitePoolOptions::new()
                .max_connections(readers)
                .test_before_acquire(false)
                .connect_lazy_with(connect);
            (writer, reader)
        };
        check_version(&writer).await?;
        let storage = SqliteStorage {
            inner: Arc::new(Inner {
                writer,
                reader,
                sql: Statements::new(&tables),
                tables,
                url: options.get_url().to_owned(),
                memory,
                synchronous,
                pushed: Notify::new(),
                sweeps: AtomicU64::new(0),
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
        schema_sql(Dialect::Sqlite, &self.inner.tables)
    }

    /// The connections that write, for tests and tools that need raw SQL on the same
    /// database (an in-memory database is reachable only through them).
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.writer
    }

    /// Closes every connection, checkpointing the write-ahead log into the file.
    pub async fn close(&self) {
        self.inner.reader.close().await;
        self.inner.writer.close().await;
    }

    /// A write transaction that holds the write lock from its start, so it never has to
    /// upgrade a read lock (the upgrade is what fails with "database is locked" without
    /// waiting). If the future is dropped half-way, sqlx rolls the transaction back before
    /// the connection is used again.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.inner
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)
    }

    /// A reserved row and its place in the pick: (available at, id).
    fn reserved_from(row: &SqliteRow, queue: &str) -> Result<((i64, i64), Reserved)> {
        let id: i64 = row.try_get(0).map_err(db)?;
        let token: String = row.try_get(1).map_err(db)?;
        let tries: i64 = row.try_get(2).map_err(db)?;
        let name: Option<Vec<u8>> = row.try_get(3).map_err(db)?;
        let payload: Option<Vec<u8>> = row.try_get(4).map_err(db)?;
        let available_at: Option<i64> = row.try_get(5).map_err(db)?;
        Ok((
            (available_at.unwrap_or(i64::MIN), id),
            Reserved {
                lease: Lease {
                    job_id: JobId(id.to_string()),
                    queue: queue.to_owned(),
                    token,
                },
                name: text(name),
                payload: payload.unwrap_or_default(),
                attempts: attempts(tries),
            },
        ))
    }

    fn failed_from(row: &SqliteRow) -> Result<FailedJob> {
        let id: i64 = row.try_get(0).map_err(db)?;
        let tries: Option<i64> = row.try_get(6).map_err(db)?;
        let failed_at: Option<i64> = row.try_get(7).map_err(db)?;
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
            attempts: attempts(tries.unwrap_or(0)),
            failed_at: from_unix_millis(failed_at.unwrap_or(0)),
        })
    }
}

/// Switches the file to WAL mode. Unlike other statements, the switch takes a lock that
/// SQLite does not wait for, so when several processes open a new file at once it is
/// retried here for up to the busy timeout.
async fn enable_wal(pool: &SqlitePool, patience: Duration) -> Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL")
            .fetch_one(pool)
            .await
        {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                tracing::warn!(
                    journal_mode = %mode,
                    "SQLite did not switch to WAL mode: readers and the writer will block each other"
                );
                return Ok(());
            }
            Err(e) if is_busy(&e) && started.elapsed() < patience => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(db(e)),
        }
    }
}

async fn check_version(pool: &SqlitePool) -> Result<()> {
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(pool)
        .await
        .map_err(db)?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_VERSION {
        return Err(Error::Config(format!(
            "SQLite {}.{} or newer is needed (for unixepoch('subsec')), this one is {version}",
            MIN_VERSION.0, MIN_VERSION.1
        )));
    }
    Ok(())
}

#[async_trait]
impl Storage for SqliteStorage {
    fn driver(&self) -> &'static str {
        DRIVER
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            reserve_by_name: true,
            durable: !self.inner.memory,
            // Only pushes from this process wake its idle workers; other processes' pushes
            // are seen at the next poll.
            wake_on_push: false,
        }
    }

    async fn migrate(&self) -> Result<()> {
        let schema = self.schema_sql();
        let mut tx = self.begin_write().await?;
        // SQLite runs every statement of a multi-statement text; `raw_sql` would do the same
        // but its future is not `Send` inside `async_trait`.
        sqlx::query(&schema)
            .persistent(false)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let total = jobs.len();
        // Split into multi-row INSERTs of the fixed sizes, largest first.
        let chunks: Vec<(usize, &str)> = chunk_sizes(total)
            .into_iter()
            .map(|size| (size, self.inner.sql.push(size)))
            .collect();
        let mut jobs = jobs.into_iter();
        let mut ids = Vec::with_capacity(total);
        let single = chunks.len() == 1;
        let mut tx = if single {
            None
        } else {
            Some(self.begin_write().await?)
        };
        for (size, sql) in chunks {
            let mut query = sqlx::query_scalar::<_, i64>(sql);
            for job in jobs.by_ref().take(size) {
                let (at, delay) = match job.available {
                    Availability::Now => (None, 0),
                    Availability::After(d) => (None, millis(d)),
                    Availability::At(t) => (Some(unix_millis(t)), 0),
                };
                query = query
                    .bind(job.queue)
                    .bind(job.name)
                    .bind(job.payload)
                    .bind(at)
                    .bind(delay);
            }
            let mut chunk_ids = match tx.as_mut() {
                Some(tx) => query.fetch_all(&mut **tx).await,
                None => query.fetch_all(&self.inner.writer).await,
            }
            .map_err(db)?;
            // Rows are inserted in order with growing ids; RETURNING's order is not promised.
            chunk_ids.sort_unstable();
            ids.extend(chunk_ids.into_iter().map(|id| JobId(id.to_string())));
        }
        if let Some(tx) = tx {
            tx.commit().await.map_err(db)?;
        }
        self.inner.pushed.notify_waiters();
        Ok(ids)
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        let limit = request.limit.max(1);
        let lease = millis(request.lease);
        let mut out: Vec<Reserved> = Vec::with_capacity(limit.min(1024));
        // One statement per queue, each atomic on its own (a write from its first step, so
        // two processes never take the same job); the queues are taken in priority order.
        for queue in &request.queues {
            let want = limit - out.len();
            if want == 0 {
                break;
            }
            let rows = sqlx::query(&self.inner.sql.reserve)
                .bind(queue.as_str())
                .bind(request.name.as_deref())
                .bind(lease)
                .bind(i64::try_from(want).unwrap_or(i64::MAX))
                .fetch_all(&self.inner.writer)
                .await
                .map_err(db)?;
            let mut taken = Vec::with_capacity(rows.len());
            for row in &rows {
                taken.push(Self::reserved_from(row, queue)?);
            }
            // First due first, as picked: RETURNING promises no order.
            taken.sort_unstable_by_key(|(key, _)| *key);
            out.extend(taken.into_iter().map(|(_, reserved)| reserved));
        }
        Ok(out)
    }

    async fn extend(&self, lease: &Lease, duration: Duration) -> Result<()> {
        let id: i64 = lease.job_id.0.parse().map_err(|_| lease_lost(lease))?;
        let done = sqlx::query(&self.inner.sql.extend)
            .bind(id)
            .bind(lease.token.as_str())
            .bind(millis(duration))
            .execute(&self.inner.writer)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(lease_lost(lease));
        }
        Ok(())
    }

    async fn acknowledge(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        if let [lease] = leases {
            // The common case of a lone acknowledgement: no JSON, no rows back.
            let Ok(id) = lease.job_id.0.parse::<i64>() else {
                return Ok(vec![false]);
            };
            let done = sqlx::query(&self.inner.sql.acknowledge_one)
                .bind(id)
                .bind(lease.token.as_str())
                .execute(&self.inner.writer)
                .await
                .map_err(db)?;
            return Ok(vec![done.rows_affected() > 0]);
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
        let list = serde_json::to_string(&pairs)
            .map_err(|e| Error::backend(DRIVER, format!("could not encode leases: {e}")))?;
        let rows = sqlx::query(&self.inner.sql.acknowledge)
            .bind(list)
            .fetch_all(&self.inner.writer)
            .await
            .map_err(db)?;
        let mut deleted: HashSet<(i64, String)> = HashSet::with_capacity(rows.len());
        for row in &rows {
            deleted.insert((row.try_get(0).map_err(db)?, row.try_get(1).map_err(db)?));
        }
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
        let done = sqlx::query(&self.inner.sql.release)
            .bind(id)
            .bind(lease.token.as_str())
            .bind(millis(delay))
            .bind(refund_attempt)
            .execute(&self.inner.writer)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(lease_lost(lease));
        }
        self.inner.pushed.notify_waiters();
        Ok(())
    }

    async fn fail(&self, lease: &Lease, error: &str) -> Result<()> {
        let id: i64 = lease.job_id.0.parse().map_err(|_| lease_lost(lease))?;
        let sql = &self.inner.sql;
        let mut tx = self.begin_write().await?;
        let copied = sqlx::query(&sql.fail_copy)
            .bind(id)
            .bind(lease.token.as_str())
            .bind(error)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if copied.rows_affected() == 0 {
            tx.rollback().await.map_err(db)?;
            return Err(lease_lost(lease));
        }
        sqlx::query(&sql.fail_delete)
            .bind(id)
            .bind(lease.token.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn size(&self, queue: &str) -> Result<QueueSize> {
        let (waiting, delayed, reserved): (i64, i64, i64) = sqlx::query_as(&self.inner.sql.size)
            .bind(queue)
            .fetch_one(&self.inner.reader)
            .await
            .map_err(db)?;
        Ok(QueueSize {
            waiting: count(waiting),
            delayed: count(delayed),
            reserved: count(reserved),
        })
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let rows: Vec<Option<Vec<u8>>> = sqlx::query_scalar(&self.inner.sql.queues)
            .fetch_all(&self.inner.reader)
            .await
            .map_err(db)?;
        Ok(rows.into_iter().map(text).collect())
    }

    async fn clear(&self, queue: &str) -> Result<u64> {
        let done = sqlx::query(&self.inner.sql.clear)
            .bind(queue)
            .execute(&self.inner.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn failed_list(&self, offset: u64, limit: u64) -> Result<Vec<FailedJob>> {
        let rows = sqlx::query(&self.inner.sql.failed_list)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.reader)
            .await
            .map_err(db)?;
        rows.iter().map(Self::failed_from).collect()
    }

    async fn failed_get(&self, id: &str) -> Result<Option<FailedJob>> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let row = sqlx::query(&self.inner.sql.failed_get)
            .bind(id)
            .fetch_optional(&self.inner.reader)
            .await
            .map_err(db)?;
        row.as_ref().map(Self::failed_from).transpose()
    }

    async fn failed_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(&self.inner.sql.failed_count)
            .fetch_one(&self.inner.reader)
            .await
            .map_err(db)?;
        Ok(count(n))
    }

    async fn failed_retry(&self, id: &str) -> Result<Option<JobId>> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let sql = &self.inner.sql;
        let mut tx = self.begin_write().await?;
        let new_id: Option<i64> = sqlx::query_scalar(&sql.failed_retry)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let Some(new_id) = new_id else {
            tx.rollback().await.map_err(db)?;
            return Ok(None);
        };
        sqlx::query(&sql.failed_delete)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.inner.pushed.notify_waiters();
        Ok(Some(JobId(new_id.to_string())))
    }

    async fn failed_forget(&self, id: &str) -> Result<bool> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(false);
        };
        let done = sqlx::query(&self.inner.sql.failed_delete)
            .bind(id)
            .execute(&self.inner.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn failed_flush(&self) -> Result<u64> {
        let done = sqlx::query(&self.inner.sql.failed_flush)
            .execute(&self.inner.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn failed_prune(&self, before: SystemTime) -> Result<u64> {
        let done = sqlx::query(&self.inner.sql.failed_prune)
            .bind(unix_millis(before))
            .execute(&self.inner.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let done = sqlx::query(&self.inner.sql.lock)
            .bind(key)
            .bind(owner)
            .bind(millis(ttl))
            .execute(&self.inner.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        let done = sqlx::query(&self.inner.sql.unlock)
            .bind(key)
            .bind(owner)
            .execute(&self.inner.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        let oldest: Option<i64> = sqlx::query_scalar(&self.inner.sql.oldest_available)
            .bind(queue)
            .fetch_one(&self.inner.reader)
            .await
            .map_err(db)?;
        Ok(oldest.map(from_unix_millis))
    }

    async fn add_counters(&self, deltas: &[(String, i64)], ttl: Option<Duration>) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let pairs = serde_json::to_string(deltas)
            .map_err(|e| Error::backend(DRIVER, format!("could not encode counters: {e}")))?;
        sqlx::query(&self.inner.sql.add_counters)
            .bind(pairs)
            .bind(ttl.map(millis))
            .execute(&self.inner.writer)
            .await
            .map_err(db)?;
        // Expired counters are left out when read; now and then they are deleted too.
        if ttl.is_some() && self.inner.sweeps.fetch_add(1, Ordering::Relaxed) % 256 == 0 {
            sqlx::query(&self.inner.sql.counters_sweep)
                .execute(&self.inner.writer)
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    async fn counters(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        // Every name that starts with `prefix` sorts from `prefix` up to `prefix` followed by
        // the last character there is: the range lets the primary key find them.
        let end = format!("{prefix}\u{10ffff}");
        let rows: Vec<(Option<Vec<u8>>, i64)> = sqlx::query_as(&self.inner.sql.counters)
            .bind(prefix)
            .bind(end)
            .fetch_all(&self.inner.reader)
            .await
            .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(name, value)| (text(name), value))
            .collect())
    }

    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let pushed = self.inner.pushed.notified();
        tokio::pin!(pushed);
        pushed.as_mut().enable();
        let mut sleep = timeout;
        for queue in queues {
            let due: Option<i64> = sqlx::query_scalar(&self.inner.sql.next_due)
                .bind(queue.as_str())
                .fetch_one(&self.inner.reader)
                .await
                .map_err(db)?;
            sleep = idle_sleep(due, sleep);
        }
        let _ = tokio::time::timeout(sleep, pushed).await;
        Ok(())
    }
}
