//! [`PgStorage`]: the [`Storage`] trait on PostgreSQL.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::future::BoxFuture;
use queue_core::storage::{from_unix_millis, unix_millis};
use queue_core::{
    Availability, Capabilities, Error, FailedJob, JobId, Lease, NewJob, QueueSettings, QueueSize,
    ReserveRequest, Reserved, Result, Storage,
};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row};
use tokio::task::JoinHandle;

use super::listen::{listen_loop, Wake};
use super::options::PgOptions;
use super::sql::Statements;
use crate::common::{attempts, count, idle_sleep, lease_lost, millis, text};
use crate::dialect::{schema_sql, statements, Dialect, Tables};
use crate::hot::Hot;
use crate::retry::{pg_conflict, Borrows, Retry};

/// The driver's name, in errors and [`Storage::driver`].
pub(crate) const DRIVER: &str = "postgres";

/// The oldest server with everything the statements use (`gen_random_uuid()` is built in
/// from 13; `SKIP LOCKED` and generated columns are older).
const MIN_VERSION: i32 = 130_000;

/// Serialises `migrate` between processes that start at once (`CREATE TABLE IF NOT EXISTS`
/// is not safe against itself in PostgreSQL): an arbitrary constant advisory-lock key.
const MIGRATE_LOCK: i64 = 0x7175_6575_6564_6231;

/// A queue store in a PostgreSQL database, shared by any number of workers on any number of
/// machines.
///
/// Cheap to clone: clones share the connections. See the [crate docs](crate) for what it
/// guarantees.
///
/// Every operation is one statement: a reservation takes up to `limit` jobs over the
/// queues in priority order with `FOR UPDATE SKIP LOCKED` (workers never wait for each
/// other and never take the same job); a batch of acknowledgements is one `DELETE`; a push of
/// any number of jobs is one `INSERT` that also notifies idle workers. Idle workers wait on a
/// dedicated `LISTEN` connection and wake within milliseconds of a dispatch.
#[derive(Clone)]
pub struct PgStorage {
    inner: Arc<Inner>,
}

struct Inner {
    /// The pool `pool()` hands out, for the application's transactions.
    pool: PgPool,
    /// Pushes, on `pool`: their commits wait for the disk.
    dispatch: Hot<Postgres>,
    /// Everything else, on connections of the store's own: a worker's writes commit without
    /// waiting for the disk unless [`PgOptions::synchronous_worker_commits`], and the planner
    /// always takes the indexes.
    internal: Hot<Postgres>,
    sql: Statements,
    tables: Tables,
    channel: String,
    url: String,
    settings: QueueSettings,
    /// Wakes idle workers on notifications; `None` when listening is off.
    wake: Option<Arc<Wake>>,
    connect: PgConnectOptions,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// Counts `add_counters` calls with a TTL, to sweep expired counters now and then.
    sweeps: AtomicU64,
    /// Runs statements again after a deadlock, a serialization failure or a lock timeout.
    retry: Retry,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let task = self
            .listener
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

impl fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStorage")
            .field("url", &self.inner.url)
            .field("table", &self.inner.tables.jobs())
            .field("failed_table", &self.inner.tables.failed())
            .field("listen", &self.inner.wake.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) fn db(error: sqlx::Error) -> Error {
    Error::backend(DRIVER, error)
}

/// PostgreSQL text cannot hold NUL characters; an error message must never fail to be stored.
fn storable(error: &str) -> std::borrow::Cow<'_, str> {
    if error.contains('\0') {
        std::borrow::Cow::Owned(error.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(error)
    }
}

/// The columns of a new job, as the push statement's arrays.
#[derive(Default)]
struct Columns {
    queues: Vec<String>,
    names: Vec<String>,
    payloads: Vec<Vec<u8>>,
    ats: Vec<Option<i64>>,
    delays: Vec<i64>,
}

impl Columns {
    fn of(jobs: Vec<NewJob>) -> Columns {
        let mut c = Columns::default();
        for job in jobs {
            let (at, delay) = match job.available {
                Availability::Now => (None, 0),
                Availability::After(d) => (None, millis(d)),
                Availability::At(t) => (Some(unix_millis(t)), 0),
            };
            c.queues.push(job.queue);
            c.names.push(job.name);
            c.payloads.push(job.payload);
            c.ats.push(at);
            c.delays.push(delay);
        }
        c
    }
}

impl PgStorage {
    /// Connects to the database at `url` with default options and creates the tables that
    /// are missing. See [`PgOptions`] for the URL form and the knobs.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(PgOptions::new(url)).await
    }

    /// Connects with these options.
    pub async fn connect_with(options: PgOptions) -> Result<Self> {
        let tables = options.tables()?;
        let connect = options.connect_options()?;
        let pool_options = || {
            PgPoolOptions::new()
                .max_connections(options.get_max_connections())
                .acquire_timeout(options.get_acquire_timeout())
                .idle_timeout(Some(Duration::from_secs(300)))
        };
        let pool = pool_options()
            .connect_with(connect.clone())
            .await
            .map_err(db)?;
        check_version(&pool).await?;
        // A few connections kept at hand (a worker uses two at a time); the others stay in
        // the pools.
        let keep = (options.get_max_connections() / 2).clamp(1, 4) as usize;
        let dispatch = Hot::new(pool.clone(), keep.min(2));
        // The store's own connections. The planner settings make every plan the index plan
        // whatever the statistics say: a plan cached while a table held a thousand rows (or
        // had never been analysed) must not become a sort of a million rows later. They also
        // make the cost of an unavoidable sort look huge, which would have the server compile
        // the statement (JIT) at every run: these statements are far too short for that.
        let synchronous = if options.get_synchronous_worker_commits() {
            "on"
        } else {
            "off"
        };
        let internal = Hot::new(
            pool_options().connect_lazy_with(connect.clone().options([
                ("synchronous_commit", synchronous),
                ("enable_seqscan", "off"),
                ("enable_sort", "off"),
                ("jit", "off"),
            ])),
            keep,
        );
        // Unquoted names fold to lower case in PostgreSQL: the channel follows the table.
        let channel = format!("{}_added", tables.jobs().to_ascii_lowercase());
        let storage = PgStorage {
            inner: Arc::new(Inner {
                pool,
                dispatch,
                internal,
                sql: Statements::new(&tables, &channel),
                channel,
                tables,
                url: queue_core::redact_url(options.get_url()),
                settings: options.settings().clone(),
                wake: options.wants_listen().then(|| Arc::new(Wake::new())),
                connect,
                listener: Mutex::new(None),
                sweeps: AtomicU64::new(0),
                retry: Retry::new(DRIVER, pg_conflict),
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
        schema_sql(Dialect::Postgres, &self.inner.tables)
    }

    /// The notification channel pushes signal on (`{table}_added`, lower case).
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// The connection pool, for tests and tools that need raw SQL on the same database, and
    /// for transactions that dispatch with [`DispatchWithin`](crate::DispatchWithin).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The dispatch settings of [`DispatchWithin`](crate::DispatchWithin).
    pub fn dispatch_settings(&self) -> &QueueSettings {
        &self.inner.settings
    }

    /// How many times, since the store was opened, a statement was run again because the
    /// server undid it for a transient conflict with another transaction: a deadlock
    /// (SQLSTATE 40P01), a serialization failure (40001) or a lock timeout (55P03). See the
    /// [crate docs](crate#guarantees).
    pub fn conflict_retries(&self) -> u64 {
        self.inner.retry.retried()
    }

    /// Closes every connection and stops listening.
    pub async fn close(&self) {
        let task = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
        }
        self.inner.internal.clear();
        self.inner.dispatch.clear();
        self.inner.internal.pool().close().await;
        self.inner.pool.close().await;
    }

    /// Pushes jobs on the caller's connection, inside whatever transaction it is in: the
    /// jobs exist (and idle workers are notified) if and only if that transaction commits.
    /// Queue size limits of the [dispatch settings](PgOptions::dispatch_settings) are
    /// checked on the same connection.
    pub async fn push_on(&self, conn: &mut PgConnection, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let limits = &self.inner.settings.max_queue_size;
        if !limits.is_empty() {
            let mut adding: std::collections::HashMap<&str, u64> = Default::default();
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
        let columns = Columns::of(jobs);
        let ids = self
            .push_query(&columns)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        Ok(ids.into_iter().map(|id| JobId(id.to_string())).collect())
    }

    /// The server's plan for a reservation of 8 jobs over `queues` (`EXPLAIN`), for tests
    /// that check it reads the `{table}_due` index rather than the whole table.
    #[doc(hidden)]
    pub async fn explain_reserve(&self, queues: &[String]) -> Result<String> {
        let mut conn = self.inner.internal.get().await.map_err(db)?;
        let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {}", self.inner.sql.reserve))
            .bind(queues)
            .bind(None::<String>)
            .bind(60_000_i64)
            .bind(8_i64)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        conn.keep();
        Ok(lines.join("\n"))
    }

    fn push_query<'q>(
        &'q self,
        c: &'q Columns,
    ) -> sqlx::query::QueryScalar<'q, sqlx::Postgres, i64, sqlx::postgres::PgArguments> {
        sqlx::query_scalar::<_, i64>(&self.inner.sql.push)
            .bind(c.queues.as_slice())
            .bind(c.names.as_slice())
            .bind(c.payloads.as_slice())
            .bind(c.ats.as_slice())
            .bind(c.delays.as_slice())
    }

    fn reserved_from(row: &PgRow) -> Result<(String, (i64, i64), Reserved)> {
        let id: i64 = row.try_get(0).map_err(db)?;
        let queue: String = row.try_get(1).map_err(db)?;
        let token: String = row.try_get(2).map_err(db)?;
        let tries: i32 = row.try_get(3).map_err(db)?;
        let name: Option<String> = row.try_get(4).map_err(db)?;
        let payload: Option<Vec<u8>> = row.try_get(5).map_err(db)?;
        let available_at: i64 = row.try_get(6).map_err(db)?;
        Ok((
            queue.clone(),
            (available_at, id),
            Reserved {
                lease: Lease {
                    job_id: JobId(id.to_string()),
                    queue,
                    token,
                },
                name: name.unwrap_or_default(),
                payload: payload.unwrap_or_default(),
                attempts: attempts(i64::from(tries)),
            },
        ))
    }

    fn failed_from(row: &PgRow) -> Result<FailedJob> {
        let id: i64 = row.try_get(0).map_err(db)?;
        let tries: i32 = row.try_get(6).map_err(db)?;
        let failed_at: i64 = row.try_get(7).map_err(db)?;
        Ok(FailedJob {
            id: id.to_string(),
            job_id: row.try_get(1).map_err(db)?,
            queue: row.try_get(2).map_err(db)?,
            name: row.try_get(3).map_err(db)?,
            payload: row.try_get(4).map_err(db)?,
            error: row.try_get(5).map_err(db)?,
            attempts: attempts(i64::from(tries)),
            failed_at: from_unix_millis(failed_at),
        })
    }

    /// Runs one statement on a connection of the store's own (see [`Retry::on`]).
    async fn on_internal<'a, T, F>(&self, operation: &'static str, statement: F) -> Result<T>
    where
        F: for<'c> Fn(&'c mut PgConnection, Borrows<'c, 'a>) -> BoxFuture<'c, Result<T>>,
    {
        let inner = &self.inner;
        inner.retry.on(&inner.internal, operation, statement).await
    }

    /// The listener, started on first use.
    fn wake(&self) -> Option<&Arc<Wake>> {
        let wake = self.inner.wake.as_ref()?;
        let mut task = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if task.is_none() {
            *task = Some(tokio::spawn(listen_loop(
                self.inner.connect.clone(),
                self.inner.channel.clone(),
                wake.clone(),
            )));
        }
        Some(wake)
    }

    /// Milliseconds until the next job of `queues` is due. The worker drops a wait as soon
    /// as one of its jobs finishes: the query runs in a task of its own, so it is never cut
    /// off half-way (which would cost the connection).
    async fn next_due(&self, queues: &[String]) -> Result<Option<i64>> {
        let store = self.clone();
        let queues = queues.to_vec();
        tokio::spawn(async move { store.next_due_now(&queues).await })
            .await
            .map_err(|e| Error::backend(DRIVER, e))?
    }

    async fn next_due_now(&self, queues: &[String]) -> Result<Option<i64>> {
        let mut conn = self.inner.internal.get().await.map_err(db)?;
        let due = sqlx::query_scalar(&self.inner.sql.next_due)
            .bind(queues)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        conn.keep();
        Ok(due)
    }
}

async fn check_version(pool: &PgPool) -> Result<()> {
    let version: String = sqlx::query_scalar("SELECT current_setting('server_version_num')")
        .fetch_one(pool)
        .await
        .map_err(db)?;
    let number: i32 = version.trim().parse().unwrap_or(0);
    if number < MIN_VERSION {
        return Err(Error::Config(format!(
            "PostgreSQL 13 or newer is needed (for gen_random_uuid()), this server is version {version}"
        )));
    }
    Ok(())
}

#[async_trait]
impl Storage for PgStorage {
    fn driver(&self) -> &'static str {
        DRIVER
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            reserve_by_name: true,
            durable: true,
            wake_on_push: self.inner.wake.is_some(),
        }
    }

    async fn migrate(&self) -> Result<()> {
        let schema = self.schema_sql();
        let mut tx = self.inner.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for statement in statements(&schema) {
            sqlx::query(&statement)
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let columns = &Columns::of(jobs);
        let ids = self
            .inner
            .retry
            .on(&self.inner.dispatch, "push", |conn, _| {
                Box::pin(async move { self.push_query(columns).fetch_all(conn).await.map_err(db) })
            })
            .await?;
        Ok(ids.into_iter().map(|id| JobId(id.to_string())).collect())
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        if request.queues.is_empty() {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(request.limit.max(1)).unwrap_or(i64::MAX);
        let rows = self
            .on_internal("reserve", |conn, _| {
                Box::pin(async move {
                    sqlx::query(&self.inner.sql.reserve)
                        .bind(&request.queues)
                        .bind(request.name.as_deref())
                        .bind(millis(request.lease))
                        .bind(limit)
                        .fetch_all(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        let mut taken = Vec::with_capacity(rows.len());
        for row in &rows {
            let (queue, key, reserved) = Self::reserved_from(row)?;
            let rank = request
                .queues
                .iter()
                .position(|q| *q == queue)
                .unwrap_or(usize::MAX);
            taken.push(((rank, key), reserved));
        }
        // Queues in priority order, first due first within each: RETURNING promises no order.
        taken.sort_unstable_by_key(|(key, _)| *key);
        Ok(taken.into_iter().map(|(_, reserved)| reserved).collect())
    }

    async fn extend(&self, lease: &Lease, duration: Duration) -> Result<()> {
        let id: i64 = lease.job_id.0.parse().map_err(|_| lease_lost(lease))?;
        let done = self
            .on_internal("extend", |conn, _| {
                Box::pin(async move {
                    sqlx::query(&self.inner.sql.extend)
                        .bind(id)
                        .bind(lease.token.as_str())
                        .bind(millis(duration))
                        .execute(conn)
                        .await
                        .map_err(db)
                })
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
            let done = self
                .on_internal("acknowledge", |conn, _| {
                    Box::pin(async move {
                        sqlx::query(&self.inner.sql.acknowledge_one)
                            .bind(id)
                            .bind(lease.token.as_str())
                            .execute(conn)
                            .await
                            .map_err(db)
                    })
                })
                .await?;
            return Ok(vec![done.rows_affected() > 0]);
        }
        let parsed: Vec<Option<i64>> = leases.iter().map(|l| l.job_id.0.parse().ok()).collect();
        let (ids, tokens): (Vec<i64>, Vec<&str>) = leases
            .iter()
            .zip(&parsed)
            .filter_map(|(lease, id)| id.map(|id| (id, lease.token.as_str())))
            .unzip();
        if ids.is_empty() {
            return Ok(vec![false; leases.len()]);
        }
        let (ids, tokens) = (ids.as_slice(), tokens.as_slice());
        let rows: Vec<(i64, String)> = self
            .on_internal("acknowledge", |conn, _| {
                Box::pin(async move {
                    sqlx::query_as(&self.inner.sql.acknowledge)
                        .bind(ids)
                        .bind(tokens)
                        .fetch_all(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        let mut deleted: HashSet<(i64, String)> = rows.into_iter().collect();
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
        let back: i64 = self
            .on_internal("release", |conn, _| {
                Box::pin(async move {
                    sqlx::query_scalar(&self.inner.sql.release)
                        .bind(id)
                        .bind(lease.token.as_str())
                        .bind(millis(delay))
                        .bind(refund_attempt)
                        .fetch_one(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        if back == 0 {
            return Err(lease_lost(lease));
        }
        Ok(())
    }

    async fn fail(&self, lease: &Lease, error: &str) -> Result<()> {
        let id: i64 = lease.job_id.0.parse().map_err(|_| lease_lost(lease))?;
        let done = self
            .on_internal("fail", |conn, _| {
                Box::pin(async move {
                    sqlx::query(&self.inner.sql.fail)
                        .bind(id)
                        .bind(lease.token.as_str())
                        .bind(storable(error).as_ref())
                        .execute(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        if done.rows_affected() == 0 {
            return Err(lease_lost(lease));
        }
        Ok(())
    }

    async fn size(&self, queue: &str) -> Result<QueueSize> {
        let (waiting, delayed, reserved): (i64, i64, i64) = self
            .on_internal("size", |conn, _| {
                Box::pin(async move {
                    sqlx::query_as(&self.inner.sql.size)
                        .bind(queue)
                        .fetch_one(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(QueueSize {
            waiting: count(waiting),
            delayed: count(delayed),
            reserved: count(reserved),
        })
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let queues = self
            .on_internal("queues", |conn, _| {
                Box::pin(async move {
                    sqlx::query_scalar(&self.inner.sql.queues)
                        .fetch_all(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(queues)
    }

    async fn clear(&self, queue: &str) -> Result<u64> {
        let done = self
            .on_internal("clear", |conn, _| {
                Box::pin(async move {
                    sqlx::query(&self.inner.sql.clear)
                        .bind(queue)
                        .execute(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(done.rows_affected())
    }

    async fn failed_list(&self, offset: u64, limit: u64) -> Result<Vec<FailedJob>> {
        let rows = self
            .on_internal("failed_list", |conn, _| {
                Box::pin(async move {
                    sqlx::query(&self.inner.sql.failed_list)
                        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
                        .fetch_all(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        rows.iter().map(Self::failed_from).collect()
    }

    async fn failed_get(&self, id: &str) -> Result<Option<FailedJob>> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let row = self
            .on_internal("failed_get", |conn, _| {
                Box::pin(async move {
                    sqlx::query(&self.inner.sql.failed_get)
                        .bind(id)
                        .fetch_optional(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        row.as_ref().map(Self::failed_from).transpose()
    }

    async fn failed_count(&self) -> Result<u64> {
        let n: i64 = self
            .on_internal("failed_count", |conn, _| {
                Box::pin(async move {
                    sqlx::query_scalar(&self.inner.sql.failed_count)
                        .fetch_one(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(count(n))
    }

    async fn failed_retry(&self, id: &str) -> Result<Option<JobId>> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let new_id: Option<i64> = self
            .on_internal("failed_retry", |conn, _| {
                Box::pin(async move {
                    sqlx::query_scalar(&self.inner.sql.failed_retry)
                        .bind(id)
                        .fetch_optional(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(new_id.map(|id| JobId(id.to_string())))
    }

    async fn failed_forget(&self, id: &str) -> Result<bool> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(false);
        };
        let done = self
            .on_internal("failed_forget", |conn, _| {
                Box::pin(async move {
                    sqlx::query(&self.inner.sql.failed_delete)
                        .bind(id)
                        .execute(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn failed_flush(&self) -> Result<u64> {
        let done = self
            .on_internal("failed_flush", |conn, _| {
                Box::pin(async move {
                    sqlx::query(&self.inner.sql.failed_flush)
                        .execute(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(done.rows_affected())
    }

    async fn failed_prune(&self, before: SystemTime) -> Result<u64> {
        let done = self
            .on_internal("failed_prune", |conn, _| {
                Box::pin(async move {
                    sqlx::query(&self.inner.sql.failed_prune)
                        .bind(unix_millis(before))
                        .execute(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(done.rows_affected())
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let done = self
            .on_internal("lock", |conn, _| {
                Box::pin(async move {
                    sqlx::query(&self.inner.sql.lock)
                        .bind(storable(key).as_ref())
                        .bind(owner)
                        .bind(millis(ttl))
                        .execute(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        let done = self
            .on_internal("unlock", |conn, _| {
                Box::pin(async move {
                    sqlx::query(&self.inner.sql.unlock)
                        .bind(storable(key).as_ref())
                        .bind(owner)
                        .execute(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        let oldest: Option<i64> = self
            .on_internal("oldest_available", |conn, _| {
                Box::pin(async move {
                    sqlx::query_scalar(&self.inner.sql.oldest_available)
                        .bind(queue)
                        .fetch_one(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(oldest.map(from_unix_millis))
    }

    async fn add_counters(&self, deltas: &[(String, i64)], ttl: Option<Duration>) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let (names, values): (Vec<&str>, Vec<i64>) = deltas
            .iter()
            .map(|(name, delta)| (name.as_str(), *delta))
            .unzip();
        let (names, values) = (names.as_slice(), values.as_slice());
        // One statement: the whole batch or none of it, so a retry never adds a part twice.
        self.on_internal("add_counters", |conn, _| {
            Box::pin(async move {
                sqlx::query(&self.inner.sql.add_counters)
                    .bind(names)
                    .bind(values)
                    .bind(ttl.map(millis))
                    .execute(conn)
                    .await
                    .map_err(db)
            })
        })
        .await?;
        // Expired counters are left out when read; now and then they are deleted too.
        if ttl.is_some() && self.inner.sweeps.fetch_add(1, Ordering::Relaxed) % 256 == 0 {
            self.on_internal("counters_sweep", |conn, _| {
                Box::pin(async move {
                    sqlx::query(&self.inner.sql.counters_sweep)
                        .execute(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        }
        Ok(())
    }

    async fn counters(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        // Every name that starts with `prefix` sorts (by bytes) from `prefix` up to `prefix`
        // followed by the last character there is: the range lets the primary key find them.
        let end = format!("{prefix}\u{10ffff}");
        let end = end.as_str();
        let rows: Vec<(Option<String>, i64)> = self
            .on_internal("counters", |conn, _| {
                Box::pin(async move {
                    sqlx::query_as(&self.inner.sql.counters)
                        .bind(prefix)
                        .bind(end)
                        .fetch_all(conn)
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, value)| (text(name.map(String::into_bytes)), value))
            .collect())
    }

    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let Some(wake) = self.wake() else {
            let due = self.next_due(queues).await?;
            tokio::time::sleep(idle_sleep(due, timeout)).await;
            return Ok(());
        };
        // Subscribe before reading the next due time: a job committed after that read
        // notifies after it, so it is never missed.
        let Some(mut events) = wake.subscribe(timeout).await else {
            // Not listening (the server is down, or the listener is still connecting):
            // poll.
            let due = self.next_due(queues).await?;
            tokio::time::sleep(idle_sleep(due, timeout)).await;
            return Ok(());
        };
        let due = self.next_due(queues).await?;
        let sleep = idle_sleep(due, timeout);
        let _ = tokio::time::timeout(sleep, events.for_any_of(queues)).await;
        Ok(())
    }
}
