//! [`SqlStore`]: the storage contract on a SQL database, written once over the [`Sql`] seam.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use queue_core::storage::{
    check_effect_list, check_effects, check_record, duration_millis, from_unix_millis, unix_millis,
    Backlog, Cancellation, Capabilities, Control, Effect, FailedStore, Groups, Guard, HeldLock,
    Inspect, JobState, JobSummary, LeaseStatus, Locks, Outcome, Page, PageRequest, RecordKey,
    Settle, SettleReply, Settled, Track, Unique, Until, Wake, Workers,
};
use queue_core::{
    Availability, Error, FailedJob, JobId, Lease, NewJob, Pushed, QueueSettings, QueueSize,
    ReserveRequest, Reserved, Result, Storage, WaitingJob,
};

use crate::hot::Hot;
use crate::options::SqlOptions;
use crate::retry::Retry;
use crate::schema::{last_version, schema_after, schema_sql, statements, Tables};
use crate::sql::sealed::{Backend, Deferred, Reserving};
use crate::sql::{Arg, Sql};
use crate::statements::{chunk_sizes, Statements, PRUNE_CHUNK};
use crate::wake::{idle_sleep, Waker};

/// Reads the schema version: the number of the last file under `migrations/<database>/`
/// applied ([`last_version`] once `migrate` ran), kept in the control table under the name
/// `schema` since version 5. The control table is named after the jobs table, which may be
/// used with another failed table: when the failed table is missing the read fails, and
/// every file runs again (skipping what is there), so it is made.
const SCHEMA_VERSION_SQL: &str = "SELECT value FROM {control_table} WHERE name = 'schema' \
     AND NOT EXISTS (SELECT 1 FROM {failed_table} WHERE 1 = 0)";

/// Column `i` of the first row as a count: 0 for no row, NULL or a negative number.
fn first_count<DB: Sql>(rows: &[DB::Row], i: usize) -> Result<u64> {
    let n = rows
        .first()
        .map_or(Ok(None), |row| DB::int(row, i))
        .map_err(db::<DB>)?;
    Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
}

/// Durations are stored as milliseconds added to the database's clock; capping them keeps
/// the sum inside a 64-bit integer while still meaning "forever".
const MAX_MILLIS: i64 = i64::MAX / 4;

/// A queue store in a SQL database: [`SqliteStorage`](crate::SqliteStorage),
/// [`PgStorage`](crate::PgStorage) or [`MySqlStorage`](crate::MySqlStorage). See the
/// [crate docs](crate) for what each database guarantees.
///
/// Cheap to clone: clones share the connections.
pub struct SqlStore<DB: Sql> {
    inner: Arc<Inner<DB>>,
}

impl<DB: Sql> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            inner: self.inner.clone(),
        }
    }
}

/// What a database's `open` hands to the store.
pub struct Open<DB: Backend> {
    /// Single statements (and the store's transactions, unless `txs`).
    pub(crate) main: Hot<DB>,
    /// Reads, where they have connections of their own (SQLite).
    pub(crate) reads: Option<Hot<DB>>,
    /// Pushes, where they have connections of their own (PostgreSQL: commits that wait for
    /// the disk, on the pool applications get).
    pub(crate) pushes: Option<Hot<DB>>,
    /// Transactions, where they have connections of their own (MySQL: without autocommit).
    pub(crate) txs: Option<Hot<DB>>,
    /// Jobs survive a restart.
    pub(crate) durable: bool,
    /// `INSERT ... RETURNING id` works (not on MySQL).
    pub(crate) returning: bool,
    /// The step between the ids of one multi-row insert, without `RETURNING`.
    pub(crate) id_step: i64,
    pub(crate) state: DB::State,
}

/// One attempt at an operation: a connection, in a transaction or not, and statements
/// without arguments to send with the commit (MySQL's mark).
struct Unit<'h, DB: Backend> {
    conn: crate::hot::Lent<'h, DB>,
    tx: bool,
    deferred: Deferred,
}

/// How an operation uses a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tx {
    /// None: each statement commits on its own.
    No,
    /// One, begun in a trip of its own before the work.
    Begin,
    /// One the work begins itself, in the same text as its first statements, and commits
    /// (setting [`Deferred::committed`]): one trip to the database for the whole unit
    /// (SQLite). A failure rolls it back, and a dropped attempt never returns the
    /// connection to the pool, as with [`Tx::Begin`].
    Inline,
}

impl From<bool> for Tx {
    fn from(tx: bool) -> Self {
        if tx {
            Tx::Begin
        } else {
            Tx::No
        }
    }
}

/// Runs `$body` with `$conn` (the connection) and `$deferred` on a connection of `$hot`, in
/// one transaction when `$tx`, and all of it again after a transient conflict (see `retry`).
/// A `?` in the body ends the attempt, not the caller.
macro_rules! unit {
    ($store:expr, $op:expr, $hot:expr, $tx:expr, |$conn:ident, $deferred:ident| $body:expr) => {{
        let store = $store;
        let mut retries = 0;
        loop {
            let mut unit = store.begin($hot, $tx.into()).await?;
            let done = async {
                let Unit { conn, deferred, .. } = &mut unit;
                let ($conn, $deferred) = (&mut **conn, deferred);
                $body
            }
            .await;
            if let Some(done) = store.end(unit, done, $op, &mut retries).await {
                break done;
            }
        }
    }};
}

impl<DB: Backend> fmt::Debug for Open<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Open")
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

struct Inner<DB: Backend> {
    open: Open<DB>,
    sql: Statements,
    tables: Tables,
    url: String,
    settings: QueueSettings,
    retry: Retry,
    waker: Arc<Waker>,
    idle_poll: Duration,
}

impl<DB: Sql> fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("driver", &DB::DRIVER)
            .field("url", &self.inner.url)
            .field("table", &self.inner.tables.jobs())
            .field("failed_table", &self.inner.tables.failed())
            .finish_non_exhaustive()
    }
}

pub(crate) fn db<DB: Backend>(error: sqlx::Error) -> Error {
    Error::backend(DB::DRIVER, error)
}

/// A duration in milliseconds, capped at [`MAX_MILLIS`].
pub(crate) fn millis(duration: Duration) -> i64 {
    duration_millis(duration).min(MAX_MILLIS)
}

/// When a job is due: an absolute time, or a delay from the database's clock (ms).
pub(crate) fn due(available: Availability) -> (Option<i64>, i64) {
    match available {
        Availability::Now => (None, 0),
        Availability::After(d) => (None, millis(d)),
        Availability::At(t) => (Some(unix_millis(t)), 0),
    }
}

/// A text every database stores: PostgreSQL's cannot hold NUL (nor can its JSON).
fn storable(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

pub(crate) fn json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::backend("database", e))
}

/// Bytes as hex digits (lower case): a payload in a JSON list, a key pasted into MySQL's
/// text as `X'...'` (nothing but digits and letters a to f).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// Refuses an effect of a kind this store does not know (one a newer `queue-core` added)
/// before anything of the call is changed: ignoring it would lose it.
fn supported<DB: Backend>(effects: &[Effect]) -> Result<()> {
    let known = |effect: &Effect| {
        matches!(
            effect,
            Effect::Push(_)
                | Effect::Count { .. }
                | Effect::Hold(_)
                | Effect::Deps { .. }
                | Effect::Skip { .. }
                | Effect::Record { .. }
                | Effect::Payload(_)
                | Effect::Park { .. }
                | Effect::Value { .. }
        )
    };
    match effects.iter().all(known) {
        true => Ok(()),
        false => Err(unknown_effect::<DB>()),
    }
}

fn unknown_effect<DB: Backend>() -> Error {
    Error::NotSupported {
        driver: DB::DRIVER,
        operation: "an effect of a kind this version of the driver does not know",
    }
}

/// The effects of one call (a settle's current settlements, or an apply), by kind, in the
/// order they apply: pushes, waiting jobs held (the first one of a key), dependency changes
/// (summed per key), skips, records of the settled jobs (the last one of a key), counters.
/// Keys are sorted, so that two calls lock the rows they share in the same order.
#[derive(Debug, Default)]
struct Effects<'e> {
    pushes: Vec<NewJob>,
    holds: BTreeMap<String, &'e WaitingJob>,
    deps: BTreeMap<String, i64>,
    skips: BTreeSet<String>,
    /// By (job id, kind): the value and its time to live (ms).
    records: BTreeMap<(String, &'e str), (&'e [u8], i64)>,
    counts: BTreeMap<(String, String), i64>,
    /// Group values by (group, name): the last one of a key.
    values: BTreeMap<(String, String), &'e [u8]>,
}

impl<'e> Effects<'e> {
    /// Adds an effect of the settled job `job` (`None`: of an apply, which has no job and
    /// whose record effects `check_effect_list` refused).
    fn add<DB: Backend>(&mut self, effect: &'e Effect, job: Option<&JobId>) -> Result<()> {
        match effect {
            Effect::Record { kind, value, ttl } => {
                let Some(job) = job else {
                    return Err(Error::Contract {
                        driver: DB::DRIVER,
                        problem: "a record effect outside a settle names no job".into(),
                    });
                };
                self.records.insert(
                    (storable(&job.0), kind.as_str()),
                    (value.as_slice(), millis(*ttl)),
                );
            }
            Effect::Push(job) => self.pushes.push(job.clone()),
            Effect::Hold(waiting) => {
                self.holds.entry(storable(&waiting.key)).or_insert(waiting);
            }
            Effect::Deps { key, delta } => {
                let sum = self.deps.entry(storable(key)).or_default();
                *sum = sum.saturating_add(*delta);
            }
            Effect::Skip { key } => {
                self.skips.insert(storable(key));
            }
            Effect::Count { group, deltas } => {
                for (name, delta) in deltas {
                    *self
                        .counts
                        .entry((storable(group), storable(name)))
                        .or_default() += delta;
                }
            }
            Effect::Value { group, name, value } => {
                self.values
                    .insert((storable(group), storable(name)), value.as_slice());
            }
            _ => return Err(unknown_effect::<DB>()),
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.pushes.is_empty()
            && self.holds.is_empty()
            && self.deps.is_empty()
            && self.skips.is_empty()
            && self.records.is_empty()
            && self.counts.is_empty()
            && self.values.is_empty()
    }
}

/// The leases an acknowledgement deleted, from its `RETURNING id, token` rows.
pub(crate) fn acked_rows<DB: Backend>(rows: &[DB::Row]) -> Result<Vec<(i64, String)>> {
    rows.iter()
        .map(|row| {
            let id = DB::int(row, 0).map_err(db::<DB>)?.unwrap_or_default();
            Ok((id, DB::text(row, 1).map_err(db::<DB>)?))
        })
        .collect()
}

/// The id a lease names, if it is one of this store's.
fn id_of(lease: &Lease) -> Option<i64> {
    lease.job_id.0.parse().ok()
}

/// Jobs as `RETURNING id, queue, token, attempts, name, payload, available_at` gives them,
/// in the order of the pick: queues by priority, then first available first (`RETURNING`
/// promises no order).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn reserved_rows<DB: Backend>(
    rows: &[DB::Row],
    queues: &[String],
) -> Result<Vec<Reserved>> {
    let mut taken = Vec::with_capacity(rows.len());
    for row in rows {
        let int = |i| DB::int(row, i).map_err(db::<DB>);
        let id = int(0)?.unwrap_or_default();
        let queue = DB::text(row, 1).map_err(db::<DB>)?;
        let rank = queues.iter().position(|q| *q == queue);
        let key = (rank, int(6)?.unwrap_or(i64::MIN), id);
        let reserved = Reserved {
            lease: Lease {
                job_id: JobId(id.to_string()),
                queue,
                token: DB::text(row, 2).map_err(db::<DB>)?,
            },
            name: DB::text(row, 4).map_err(db::<DB>)?,
            payload: DB::bytes(row, 5).map_err(db::<DB>)?,
            attempts: u32::try_from(int(3)?.unwrap_or(0).max(0)).unwrap_or(u32::MAX),
        };
        taken.push((key, reserved));
    }
    taken.sort_unstable_by_key(|(key, _)| *key);
    Ok(taken.into_iter().map(|(_, reserved)| reserved).collect())
}

impl<DB: Sql> SqlStore<DB> {
    /// Opens a store at `url` with default options, creating what is missing of the schema.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(SqlOptions::new(url)).await
    }

    /// Opens a store with these options.
    pub async fn connect_with(options: SqlOptions<DB>) -> Result<Self> {
        let tables = options.tables()?;
        let open = DB::open(&options, &tables).await?;
        let store = SqlStore {
            inner: Arc::new(Inner {
                sql: Statements::new::<DB>(&tables, open.returning),
                open,
                tables,
                url: queue_core::redact_url(options.get_url()),
                settings: options.settings.clone(),
                retry: Retry::new(DB::DRIVER, DB::conflict),
                waker: Arc::new(Waker::new()),
                idle_poll: options.idle_poll,
            }),
        };
        if options.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// The table names this store uses.
    pub fn tables(&self) -> &Tables {
        &self.inner.tables
    }

    /// The schema this store creates (see [`schema_sql`]).
    pub fn schema_sql(&self) -> String {
        schema_sql(DB::DIALECT, &self.inner.tables)
    }

    /// The connection pool for the application's own SQL and transactions (see
    /// [`DispatchWithin`](crate::DispatchWithin)). On SQLite it is the store's one
    /// connection that writes (an in-memory database lives on it alone): the store hands it
    /// back here, and waits for it while the application holds it.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        let open = &self.inner.open;
        let hot = open.pushes.as_ref().unwrap_or(&open.main);
        if hot.pool().options().get_max_connections() == 1 {
            hot.clear();
        }
        hot.pool()
    }

    /// The dispatch settings of [`DispatchWithin`](crate::DispatchWithin).
    pub fn dispatch_settings(&self) -> &QueueSettings {
        &self.inner.settings
    }

    /// How many times, since the store was opened, an operation was run again because the
    /// server undid it for a transient conflict with another transaction (see the
    /// [crate docs](crate#guarantees)).
    pub fn conflict_retries(&self) -> u64 {
        self.inner.retry.retried()
    }

    /// Closes every connection.
    pub async fn close(&self) {
        let open = &self.inner.open;
        DB::close(&open.state);
        for hot in [
            Some(&open.main),
            open.reads.as_ref(),
            open.pushes.as_ref(),
            open.txs.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            hot.clear();
            hot.pool().close().await;
        }
    }

    pub(crate) fn state(&self) -> &DB::State {
        &self.inner.open.state
    }

    pub(crate) fn main(&self) -> &Hot<DB> {
        &self.inner.open.main
    }

    fn reads(&self) -> &Hot<DB> {
        self.inner
            .open
            .reads
            .as_ref()
            .unwrap_or(&self.inner.open.main)
    }

    /// Where a transaction runs: MySQL's connections without autocommit, else pushes'
    /// connections for a push, else the main ones.
    fn tx_hot(&self, push: bool) -> &Hot<DB> {
        let open = &self.inner.open;
        let pushes = open.pushes.as_ref().filter(|_| push);
        open.txs.as_ref().or(pushes).unwrap_or(&open.main)
    }

    /// Creates what is missing of the schema (idempotent; serialised between processes).
    pub async fn migrate(&self) -> Result<()> {
        // DDL takes the strongest table locks even when there is nothing to change (`ALTER
        // TABLE .. ADD COLUMN IF NOT EXISTS` locks before it looks): re-running it while
        // other workers settle jobs would wait behind them, or deadlock with them. A database
        // already at this version (or at a newer one, a newer build's) is left alone.
        let version = self.inner.tables.fill(SCHEMA_VERSION_SQL);
        let target = last_version(DB::DIALECT);
        let current = |version: Option<i64>| version.is_some_and(|v| v >= target);
        if current(self.schema_version(&version).await) {
            return Ok(());
        }
        let mut conn = self.main().get().await.map_err(db::<DB>)?;
        // A transaction or a session lock is open until the end.
        conn.discard_unless_kept();
        let (start, end) = DB::MIGRATE;
        DB::script(&mut conn, start).await.map_err(db::<DB>)?;
        // Another process may have migrated while this one waited for the lock.
        let found = if DB::MIGRATE_READS_HERE {
            match DB::fetch(&mut conn, &version, &[]).await {
                Ok(rows) => rows.first().and_then(|row| DB::int(row, 0).ok().flatten()),
                Err(_) => None,
            }
        } else {
            self.schema_version(&version).await
        };
        if !current(found) {
            // Only the files after the version the database says it is at: a database of
            // version 5 gets the waiting-jobs table, and no `ALTER TABLE` of 0005 runs again
            // on the tables workers are using. One that cannot say (made before version 5,
            // or new) gets every file, skipping what is there.
            let missing = schema_after(DB::DIALECT, &self.inner.tables, found.unwrap_or(0));
            for statement in statements(&missing) {
                match DB::script(&mut conn, &statement).await {
                    Err(e) if DB::already_applied(&e) => {}
                    done => done.map_err(db::<DB>)?,
                }
            }
            let mark = self.inner.tables.fill(&format!(
                "DELETE FROM {{control_table}} WHERE name = 'schema'; \
                 INSERT INTO {{control_table}} (name, value) VALUES ('schema', {target})"
            ));
            for statement in mark.split("; ") {
                DB::script(&mut conn, statement).await.map_err(db::<DB>)?;
            }
        }
        DB::script(&mut conn, end).await.map_err(db::<DB>)?;
        conn.keep();
        Ok(())
    }

    /// The schema version the database says it has; `None` when it cannot say (no control
    /// table yet: a database older than version 5, or none at all).
    async fn schema_version(&self, sql: &str) -> Option<i64> {
        let mut conn = self.main().get().await.ok()?;
        let rows = DB::fetch(&mut conn, sql, &[]).await.ok()?;
        conn.keep();
        rows.first().and_then(|row| DB::int(row, 0).ok().flatten())
    }

    /// A connection of `hot` for one attempt at an operation, in a transaction when `tx`.
    async fn begin<'h>(&self, hot: &'h Hot<DB>, tx: Tx) -> Result<Unit<'h, DB>> {
        let mut conn = hot.get().await.map_err(db::<DB>)?;
        if tx != Tx::No {
            // Before the `BEGIN`: a future dropped while it runs (a caller's timeout) may
            // leave it run all the same (sqlx's SQLite worker finishes what it was sent), and
            // a connection in an open transaction must never go back to the pool: it would
            // hold SQLite's write lock for good.
            conn.discard_unless_kept();
        }
        if tx == Tx::Begin {
            if let Some(begin) = DB::BEGIN {
                DB::script(&mut conn, begin).await.map_err(db::<DB>)?;
            }
        }
        Ok(Unit {
            conn,
            tx: tx != Tx::No,
            deferred: Deferred::default(),
        })
    }

    /// Ends an attempt: commits what succeeded (with the deferred statements), or rolls it
    /// back if it asked for that ([`Deferred::roll_back`]), and keeps the connection at
    /// hand; rolls back what failed. `None` when the failure was a transient
    /// conflict to run the whole operation again for.
    ///
    /// A connection whose state is unknown (the rollback failed, or the future was dropped
    /// half-way) is closed, and the server ends what was open on it.
    async fn end<T>(
        &self,
        unit: Unit<'_, DB>,
        done: Result<T>,
        op: &'static str,
        retries: &mut u32,
    ) -> Option<Result<T>> {
        let Unit {
            mut conn,
            tx,
            mut deferred,
        } = unit;
        if tx && !deferred.committed {
            deferred.push_str(if deferred.undone {
                "ROLLBACK"
            } else {
                "COMMIT"
            });
        }
        let done = match done {
            Ok(done) if !deferred.text.is_empty() => DB::script(&mut conn, &deferred.text)
                .await
                .map_err(db::<DB>)
                .map(|()| done),
            done => done,
        };
        match done {
            Ok(done) => {
                conn.keep();
                Some(Ok(done))
            }
            Err(error) => {
                if tx && DB::script(&mut conn, "ROLLBACK").await.is_ok() {
                    conn.keep();
                }
                match self.inner.retry.again(op, &error, retries).await {
                    true => None,
                    false => Some(Err(error)),
                }
            }
        }
    }

    async fn execute(conn: &mut DB::Connection, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let done = DB::execute(conn, sql, args).await.map_err(db::<DB>)?;
        Ok(DB::rows_affected(&done))
    }

    async fn fetch(conn: &mut DB::Connection, sql: &str, args: &[Arg<'_>]) -> Result<Vec<DB::Row>> {
        DB::fetch(conn, sql, args).await.map_err(db::<DB>)
    }

    /// One statement on a connection of `hot`.
    async fn one(
        &self,
        op: &'static str,
        hot: &Hot<DB>,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Vec<DB::Row>> {
        unit!(self, op, hot, false, |conn, _d| Self::fetch(
            conn, sql, args
        )
        .await)
    }

    /// One statement on a connection of `hot`: the rows it changed.
    async fn change(&self, op: &'static str, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        unit!(self, op, self.main(), false, |conn, _d| Self::execute(
            conn, sql, args
        )
        .await)
    }

    /// The first column of the first row of a read, as a number.
    async fn number(&self, op: &'static str, sql: &str, args: &[Arg<'_>]) -> Result<Option<i64>> {
        let rows = self.one(op, self.reads(), sql, args).await?;
        rows.first()
            .map(|row| DB::int(row, 0).map_err(db::<DB>))
            .transpose()
            .map(Option::flatten)
    }

    /// Tells this process's waiters (and, on PostgreSQL, every process's, from inside the
    /// transaction `conn` is in) that jobs of `queues` may be available.
    async fn notify(&self, conn: &mut DB::Connection, queues: &[&str]) -> Result<()> {
        match &self.inner.sql.notify {
            Some(sql) if !queues.is_empty() => {
                Self::execute(conn, sql, &[Arg::Text(&json(&queues)?)])
                    .await
                    .map(drop)
            }
            _ => Ok(()),
        }
    }

    /// Makes the job parked on the lock `key` longest ago due now, once the lock's row is
    /// deleted: one read of the parked rows (nothing more when none is parked, the common
    /// case), then for each row looked at its deletion and, for the first whose job still
    /// waits as parked, the update that makes it due (which checks that again) and the
    /// notification of its queue's waiters. A park committed before the lock's deletion is
    /// read here; one after it found the lock free and made its job due itself (the park
    /// reads the lock's row `FOR UPDATE`). A crash between the deletion and this leaves the
    /// job due by the lock's expiry, as the park read it.
    async fn wake_parked(&self, key: &str) -> Result<()> {
        let sql = &self.inner.sql;
        let rows = self
            .one("parked", self.main(), &sql.parked, &[Arg::Text(key)])
            .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut looked = Vec::with_capacity(rows.len());
        for row in &rows {
            looked.push((
                DB::int(row, 0).map_err(db::<DB>)?.unwrap_or_default(),
                DB::text(row, 1).map_err(db::<DB>)?,
                DB::int(row, 2).map_err(db::<DB>)?.unwrap_or_default(),
                DB::int(row, 3).map_err(db::<DB>)?.unwrap_or(0) > 0,
            ));
        }
        let woken = unit!(self, "wake", self.main(), false, |conn, _d| {
            let mut woken = Vec::new();
            for (id, queue, until, waits) in &looked {
                // Woken or moved on since: its park is over either way.
                Self::execute(conn, &sql.unpark, &[Arg::Int(*id)]).await?;
                if !*waits {
                    continue;
                }
                let args = [Arg::Int(*id), Arg::Int(*until)];
                if Self::execute(conn, &sql.wake, &args).await? > 0 {
                    woken.push(queue.clone());
                    break;
                }
            }
            let names: Vec<&str> = woken.iter().map(String::as_str).collect();
            self.notify(conn, &names).await?;
            Ok(woken)
        })?;
        self.woke(woken.iter().map(String::as_str));
        Ok(())
    }

    fn woke<'q>(&self, queues: impl IntoIterator<Item = &'q str>) {
        let mut seen = HashSet::new();
        for queue in queues {
            if seen.insert(queue) {
                self.inner.waker.send(queue);
            }
        }
    }

    /// Pushes jobs on the caller's connection, inside whatever transaction it is in: the
    /// jobs exist (and, on PostgreSQL, idle workers are notified) if and only if that
    /// transaction commits. Queue size limits of the
    /// [dispatch settings](SqlOptions::dispatch_settings) are checked on the same
    /// connection. A job with a unique claim needs the connection to be in a transaction:
    /// its insert and the check of the failed store are two statements.
    pub async fn push_on(
        &self,
        conn: &mut DB::Connection,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Pushed>> {
        let limits = &self.inner.settings.max_queue_size;
        let mut adding: HashMap<&str, u64> = HashMap::new();
        for job in jobs.iter().filter(|job| limits.contains_key(&job.queue)) {
            *adding.entry(job.queue.as_str()).or_default() += 1;
        }
        for (queue, n) in adding {
            let rows = Self::fetch(conn, &self.inner.sql.size, &[Arg::Text(queue)]).await?;
            let mut size = 0;
            for i in 0..3 {
                size += rows
                    .first()
                    .map_or(Ok(None), |row| DB::int(row, i))
                    .map_err(db::<DB>)?
                    .unwrap_or(0);
            }
            let (size, limit) = (u64::try_from(size).unwrap_or(0), limits[queue]);
            if size + n > limit {
                return Err(Error::QueueFull {
                    queue: queue.to_owned(),
                    size,
                    limit,
                });
            }
        }
        Ok(self.insert(conn, &jobs, None).await?.pushed)
    }

    /// Inserts jobs on `conn`: runs of jobs without a claim in a few multi-row statements,
    /// each job with one on its own (see [`insert_claimed`](Self::insert_claimed)).
    async fn insert(
        &self,
        conn: &mut DB::Connection,
        jobs: &[NewJob],
        except: Option<i64>,
    ) -> Result<Inserted> {
        let mut out = Vec::with_capacity(jobs.len());
        let mut woken = Vec::new();
        let mut rest = jobs;
        while let Some(first) = rest.first() {
            if first.unique.is_some() {
                let pushed = self.insert_claimed(conn, first, except, &mut woken).await?;
                if pushed.is_created() {
                    woken.push(first.queue.clone());
                }
                out.push(pushed);
                rest = &rest[1..];
                continue;
            }
            let plain = rest.iter().take_while(|job| job.unique.is_none()).count();
            let sizes = match DB::INSERT_ALL {
                true => vec![plain],
                false => chunk_sizes(plain, DB::CHUNK),
            };
            for size in sizes {
                let (chunk, tail) = rest.split_at(size);
                rest = tail;
                let ids = match DB::INSERT_ALL {
                    true => DB::insert_all(self, conn, chunk).await,
                    false => self.insert_rows(conn, chunk).await,
                };
                let ids = ids.map_err(db::<DB>)?;
                out.extend(
                    ids.into_iter()
                        .map(|id| Pushed::Created(JobId(id.to_string()))),
                );
                woken.extend(chunk.iter().map(|job| job.queue.clone()));
            }
        }
        Ok(Inserted { pushed: out, woken })
    }

    /// One multi-row `INSERT`: the ids, in order (none for a job whose claim is held, on
    /// the databases that skip it; MySQL refuses it with an error). Jobs with a claim go
    /// one at a time.
    async fn insert_rows(
        &self,
        conn: &mut DB::Connection,
        jobs: &[NewJob],
    ) -> sqlx::Result<Vec<i64>> {
        let values: Vec<(Option<i64>, i64)> = jobs.iter().map(|job| due(job.available)).collect();
        let mut args = Vec::with_capacity(jobs.len() * 8);
        for (job, (at, delay)) in jobs.iter().zip(&values) {
            args.extend([
                Arg::Text(&job.queue),
                Arg::Text(&job.name),
                Arg::Bytes(&job.payload),
                Arg::OptInt(*at),
                Arg::Int(*delay),
            ]);
            if let Some(unique) = &job.unique {
                let key = Arg::Text(&unique.key);
                args.extend([key, Arg::Text(unique.until.as_str()), key]);
            }
        }
        let claimed = jobs.first().is_some_and(|job| job.unique.is_some());
        let sql = match claimed {
            true => &self.inner.sql.push_claimed,
            false => self.inner.sql.push(jobs.len()),
        };
        if self.inner.open.returning {
            let rows = DB::fetch(conn, sql, &args).await?;
            let mut ids = rows
                .iter()
                .map(|row| DB::int(row, 0).map(Option::unwrap_or_default))
                .collect::<sqlx::Result<Vec<_>>>()?;
            ids.sort_unstable();
            return Ok(ids);
        }
        // A multi-row INSERT ... VALUES is a "simple insert": InnoDB gives its rows
        // consecutive ids (by the increment) in every lock mode, the first of which is
        // LAST_INSERT_ID().
        let first = DB::last_insert_id(&DB::execute(conn, sql, &args).await?);
        let step = self.inner.open.id_step;
        Ok((0..jobs.len() as i64).map(|i| first + i * step).collect())
    }

    /// Inserts a job with a claim, or finds who holds its key. The unique index lets one
    /// waiting or running job hold a key (a second insert waits for the first to commit);
    /// then the failed store is checked, in a statement of its own so that it sees a job
    /// that failed while the insert waited. `except` is a failed job being retried, whose
    /// own claim does not count.
    ///
    /// A push that replaces looks for the holder first (see
    /// [`replace_held`](Self::replace_held)), and again after an insert its key refused: the
    /// job that took the key meanwhile may be queued. The queue of a job it replaced goes
    /// into `woken` when the job's availability moved earlier.
    async fn insert_claimed(
        &self,
        conn: &mut DB::Connection,
        job: &NewJob,
        except: Option<i64>,
        woken: &mut Vec<String>,
    ) -> Result<Pushed> {
        let key = job.unique.as_ref().map_or("", |u| u.key.as_str());
        let replace = job.unique.as_ref().is_some_and(|u| u.replace);
        let sql = &self.inner.sql;
        for _ in 0..3 {
            if replace {
                if let Some(pushed) = self.replace_held(conn, job, key, woken).await? {
                    return Ok(pushed);
                }
            }
            let inserted = match self.insert_rows(conn, std::slice::from_ref(job)).await {
                Ok(ids) => ids.first().copied(),
                Err(e) if DB::duplicate(&e) => None,
                Err(e) => return Err(db::<DB>(e)),
            };
            if let Some(id) = inserted {
                let args = [Arg::Text(key), Arg::Int(except.unwrap_or(-1))];
                let rows = Self::fetch(conn, &sql.failed_holder, &args).await?;
                let Some(row) = rows.first() else {
                    return Ok(Pushed::Created(JobId(id.to_string())));
                };
                Self::execute(conn, &sql.delete_job, &[Arg::Int(id)]).await?;
                return Ok(Pushed::Duplicate(JobId(
                    DB::text(row, 0).map_err(db::<DB>)?,
                )));
            }
            if replace {
                // Held by a job that took the key since the look: look again.
                continue;
            }
            let rows = Self::fetch(conn, &sql.live_holder, &[Arg::Text(key)]).await?;
            if let Some(row) = rows.first() {
                let holder = DB::int(row, 0).map_err(db::<DB>)?.unwrap_or_default();
                return Ok(Pushed::Duplicate(JobId(holder.to_string())));
            }
            // The holder let go between the two statements: try again.
        }
        Err(Error::backend(
            DB::DRIVER,
            format!("the claim on `{key}` kept changing hands"),
        ))
    }

    /// For a push that replaces: the job holding its key, if one does. Queued (not
    /// reserved), it takes the push's name, payload and availability, keeping its id, queue,
    /// attempts and claim: `Replaced`. Reserved (a job whose lease ran out included, until a
    /// worker takes it again: the memory driver's rule), `Duplicate`. `None` when no job
    /// holds the key (the insert decides, and checks the failed store). A holder reserved or
    /// let go between the read and the `UPDATE` is read again.
    ///
    /// Race-free with reservations without locking anything first: the `UPDATE` of the
    /// holder's row (by its id) checks its claim and `reserved_until IS NULL` and counts the
    /// rows it matched. A reservation that took the row first makes it wait for that commit
    /// and then match nothing; one that comes after passes over the row (`SKIP LOCKED`) until
    /// the push commits, or on SQLite waits for the file's write lock. Locking the row by
    /// its claim instead (`SELECT ... FOR UPDATE`) deadlocks on MySQL with a reservation
    /// whose mark releases a claim held until the job starts (each holds a lock of the
    /// row's the other wants: the claim's index entry, the row).
    ///
    /// Waking: the holder's queue when the new availability is before its old one (a
    /// `NOTIFY` in the transaction on PostgreSQL; `woken` for this process's waiters).
    async fn replace_held(
        &self,
        conn: &mut DB::Connection,
        job: &NewJob,
        key: &str,
        woken: &mut Vec<String>,
    ) -> Result<Option<Pushed>> {
        let sql = &self.inner.sql;
        let (at, delay) = due(job.available);
        for _ in 0..3 {
            let args = [Arg::OptInt(at), Arg::Int(delay), Arg::Text(key)];
            let rows = Self::fetch(conn, &sql.replace_holder, &args).await?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let int = |i| {
                DB::int(row, i)
                    .map_err(db::<DB>)
                    .map(Option::unwrap_or_default)
            };
            let (id, queued, earlier) = (int(0)?, int(2)? == 1, int(3)? == 1);
            if !queued {
                return Ok(Some(Pushed::Duplicate(JobId(id.to_string()))));
            }
            let args = [
                Arg::Text(&job.name),
                Arg::Bytes(&job.payload),
                Arg::OptInt(at),
                Arg::Int(delay),
                Arg::Int(id),
                Arg::Text(key),
            ];
            // The rows matched (MySQL's count too: sqlx connects with CLIENT_FOUND_ROWS), so
            // a push that changes nothing still counts its row.
            if Self::execute(conn, &sql.replace, &args).await? == 1 {
                if earlier {
                    let queue = DB::text(row, 1).map_err(db::<DB>)?;
                    self.notify(conn, &[queue.as_str()]).await?;
                    woken.push(queue);
                }
                return Ok(Some(Pushed::Replaced(JobId(id.to_string()))));
            }
            // Reserved or let go since the read: read again.
        }
        Err(Error::backend(
            DB::DRIVER,
            format!("the claim on `{key}` kept changing hands"),
        ))
    }

    /// The current ones of `ids`, locked until the commit: id to (token, queue).
    async fn lock_leases(
        &self,
        conn: &mut DB::Connection,
        ids: &[i64],
    ) -> Result<HashMap<i64, (String, String)>> {
        let list: Vec<[i64; 1]> = ids.iter().map(|id| [*id]).collect();
        let rows = Self::fetch(
            conn,
            &self.inner.sql.lock_leases,
            &[Arg::Text(&json(&list)?)],
        )
        .await?;
        let mut current = HashMap::with_capacity(rows.len());
        for row in &rows {
            let id = DB::int(row, 0).map_err(db::<DB>)?.unwrap_or_default();
            let lease = (
                DB::text(row, 1).map_err(db::<DB>)?,
                DB::text(row, 2).map_err(db::<DB>)?,
            );
            current.insert(id, lease);
        }
        Ok(current)
    }

    /// Settles plain acknowledgements (no effects, no other outcome): the current leases'
    /// jobs deleted, with the reservation in the same transaction (see [`Backend::ack`]).
    async fn settle_acks(
        &self,
        settles: &[Settle],
        fetch: Option<&ReserveRequest>,
    ) -> Result<SettleReply> {
        let pairs: Vec<(i64, &str)> = settles
            .iter()
            .filter_map(|s| Some((id_of(&s.lease)?, s.lease.token.as_str())))
            .collect();
        let tx = DB::ack_tx(self, fetch.is_some());
        let hot = match tx {
            Tx::No => self.main(),
            Tx::Begin | Tx::Inline => self.tx_hot(false),
        };
        let (acked, reserved) = unit!(self, "settle", hot, tx, |conn, deferred| {
            DB::ack(self, conn, deferred, &pairs, fetch).await
        })?;
        let mut acked: HashSet<(i64, String)> = acked.into_iter().collect();
        let settled = settles
            .iter()
            .map(|s| {
                // Removing makes a lease named twice in one batch count once.
                let current =
                    id_of(&s.lease).is_some_and(|id| acked.remove(&(id, s.lease.token.clone())));
                if current {
                    Settled::Applied
                } else {
                    Settled::Stale
                }
            })
            .collect();
        Ok(SettleReply { settled, reserved })
    }

    /// Deletes the current ones of `pairs` (`[id, token]`), in one statement: the ones it
    /// deleted.
    pub(crate) async fn ack_json(
        &self,
        conn: &mut DB::Connection,
        pairs: &[(i64, &str)],
    ) -> Result<Vec<(i64, String)>> {
        let rows = Self::fetch(conn, &self.inner.sql.ack, &[Arg::Text(&json(&pairs)?)]).await?;
        acked_rows::<DB>(&rows)
    }

    /// The `INSERT` of `rows` jobs without a claim (`rows`: a size of
    /// [`chunk_sizes`]).
    #[cfg(feature = "sqlite")]
    pub(crate) fn push_sql(&self, rows: usize) -> &str {
        self.inner.sql.push(rows)
    }

    /// The acknowledgement's text (binds the `[id, token]` pairs as JSON; returns the
    /// leases it deleted as `(id, token)` rows).
    /// The counters' text (binds `[group, name, delta]` rows as JSON).
    #[cfg(feature = "sqlite")]
    pub(crate) fn count_sql(&self) -> &str {
        &self.inner.sql.count
    }

    #[cfg(feature = "sqlite")]
    pub(crate) fn ack_sql(&self) -> &str {
        &self.inner.sql.ack
    }

    /// Settles acknowledgements that carry effects (batch members, chain links, workflow
    /// nodes), in one transaction: the acknowledgement's `DELETE ... RETURNING` deletes the
    /// current leases' jobs and names them (the fence: a stale one deletes nothing), then
    /// the effects of those alone but the counters (see
    /// [`apply_effects`](Self::apply_effects)), then the reservation and the counters
    /// ([`Backend::ack_effects_end`]), then the commit. Two statements fewer than
    /// [`settle_all`](Self::settle_all), and on SQLite three trips in all when no waiting
    /// job is released.
    async fn settle_acks_with_effects(
        &self,
        settles: &[Settle],
        fetch: Option<&ReserveRequest>,
    ) -> Result<(SettleReply, Vec<String>)> {
        let pairs: Vec<(i64, &str)> = settles
            .iter()
            .filter_map(|s| Some((id_of(&s.lease)?, s.lease.token.as_str())))
            .collect();
        let tx = DB::ACK_EFFECTS_TX;
        unit!(self, "settle", self.tx_hot(false), tx, |conn, deferred| {
            let acked = if tx == Tx::Inline {
                let text = format!("{}; {}", DB::INLINE_BEGIN, self.inner.sql.ack);
                let rows = Self::fetch(conn, &text, &[Arg::Text(&json(&pairs)?)]).await?;
                acked_rows::<DB>(&rows)?
            } else {
                self.ack_json(conn, &pairs).await?
            };
            let mut acked: HashSet<(i64, String)> = acked.into_iter().collect();
            let mut effects = Effects::default();
            let mut settled = Vec::with_capacity(settles.len());
            for settle in settles {
                // Removing makes a lease named twice in one call count once.
                let current = id_of(&settle.lease)
                    .is_some_and(|id| acked.remove(&(id, settle.lease.token.clone())));
                if !current {
                    settled.push(Settled::Stale);
                    continue;
                }
                settled.push(Settled::Applied);
                for effect in &settle.effects {
                    effects.add::<DB>(effect, Some(&settle.lease.job_id))?;
                }
            }
            let woken = self.apply_effects(conn, &effects).await?;
            let reserved =
                DB::ack_effects_end(self, conn, deferred, &effects.counts, fetch).await?;
            let queues: Vec<&str> = woken.iter().map(String::as_str).collect();
            self.notify(conn, &queues).await?;
            Ok((SettleReply { settled, reserved }, woken.clone()))
        })
    }

    /// Settles anything, in one transaction: the leases are locked and checked first, then
    /// each transition is applied to the current ones, then their effects but the counters
    /// (see [`apply_effects`](Self::apply_effects)), then the reservation (which can take
    /// the jobs pushed or released), then the counters, in (group, name) order, last, then
    /// the commit.
    async fn settle_all(
        &self,
        settles: &[Settle],
        fetch: Option<&ReserveRequest>,
    ) -> Result<(SettleReply, Vec<String>)> {
        unit!(
            self,
            "settle",
            self.tx_hot(false),
            true,
            |conn, deferred| {
                let ids: Vec<i64> = settles.iter().filter_map(|s| id_of(&s.lease)).collect();
                let current = self.lock_leases(conn, &ids).await?;
                let mut used = HashSet::new();
                let (mut gone, mut waits, mut fails, mut woken) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let mut payloads = Vec::new();
                let mut parks = Vec::new();
                let mut effects = Effects::default();
                let mut settled = Vec::with_capacity(settles.len());
                for settle in settles {
                    let id = id_of(&settle.lease).filter(|id| {
                        current
                            .get(id)
                            .is_some_and(|(token, _)| *token == settle.lease.token)
                            && used.insert(*id)
                    });
                    let Some(id) = id else {
                        settled.push(Settled::Stale);
                        continue;
                    };
                    settled.push(Settled::Applied);
                    match &settle.outcome {
                        Outcome::Ack => gone.push([id]),
                        Outcome::Retry { delay } => waits.push([id, millis(*delay), 0]),
                        Outcome::Release { delay } => waits.push([id, millis(*delay), 1]),
                        Outcome::Fail { reason } => {
                            gone.push([id]);
                            fails.push((id, storable(reason)));
                        }
                    }
                    if !matches!(settle.outcome, Outcome::Ack | Outcome::Fail { .. }) {
                        woken.push(current[&id].1.clone());
                    }
                    for effect in &settle.effects {
                        match effect {
                            // Only with a retry or a release (`check_effects`): the row stays.
                            Effect::Payload(payload) => payloads.push((id, payload.as_slice())),
                            Effect::Park { key } => parks.push((id, storable(key))),
                            _ => effects.add::<DB>(effect, Some(&settle.lease.job_id))?,
                        }
                    }
                }
                let sql = &self.inner.sql;
                if !fails.is_empty() {
                    Self::execute(conn, &sql.fail, &[Arg::Text(&json(&fails)?)]).await?;
                }
                let inserts = !effects.pushes.is_empty() || !effects.deps.is_empty();
                let defer = !gone.is_empty() && DB::BEGIN.is_none() && !inserts;
                if defer {
                    // The rows are locked: their ids (numbers) go with the commit, and save
                    // a round trip (MySQL). Not before a push or a released job: its claim
                    // may be one of theirs.
                    let ids: Vec<String> = gone.iter().map(|[id]| id.to_string()).collect();
                    let table = self.inner.tables.jobs();
                    deferred.push_str(&format!(
                        "DELETE FROM {table} WHERE id IN ({}); ",
                        ids.join(", ")
                    ));
                } else if !gone.is_empty() {
                    Self::execute(conn, &sql.delete, &[Arg::Text(&json(&gone)?)]).await?;
                }
                if !waits.is_empty() {
                    Self::execute(conn, &sql.wait, &[Arg::Text(&json(&waits)?)]).await?;
                }
                // Rare (a retried job sealed again with a new key): a statement each.
                for (id, payload) in &payloads {
                    let args = [Arg::Bytes(payload), Arg::Int(*id)];
                    Self::execute(conn, &sql.set_payload, &args).await?;
                }
                // Rare too (a job whose lock was busy): parked while the lock is held, its
                // row locked until the commit so that an unlock waits for this park to be
                // visible, or finds the lock gone and the job due at once.
                for (id, key) in &parks {
                    let held = Self::fetch(conn, &sql.lock_held, &[Arg::Text(key)]).await?;
                    let held = match held.first() {
                        Some(row) if DB::int(row, 0).map_err(db::<DB>)?.unwrap_or(0) > 0 => {
                            DB::int(row, 1).map_err(db::<DB>)?
                        }
                        _ => None,
                    };
                    Self::execute(conn, &sql.unpark, &[Arg::Int(*id)]).await?;
                    if let Some(expires) = held {
                        // Due by the lock's expiry at the latest: a holder that died leaves
                        // it to expire, and the job looks again then.
                        let args = [Arg::Int(expires), Arg::Int(expires), Arg::Int(*id)];
                        Self::execute(conn, &sql.due_by, &args).await?;
                        let args = [Arg::Text(key), Arg::Int(*id)];
                        Self::execute(conn, &sql.park, &args).await?;
                    } else {
                        Self::execute(conn, &sql.due_now, &[Arg::Int(*id)]).await?;
                    }
                }
                woken.extend(self.apply_effects(conn, &effects).await?);
                let mut reserved = match fetch {
                    Some(request) => {
                        DB::reserve(Reserving {
                            store: self,
                            conn,
                            deferred,
                            request,
                        })
                        .await?
                    }
                    None => Vec::new(),
                };
                if defer {
                    // A transaction does not skip its own locks: a row deleted only at the
                    // commit, whose lease had run out, could be picked again by this fetch
                    // and handed out after it is gone.
                    let gone: HashSet<i64> = gone.iter().map(|[id]| *id).collect();
                    reserved.retain(|r| id_of(&r.lease).is_none_or(|id| !gone.contains(&id)));
                }
                self.count(conn, &effects.counts).await?;
                let queues: Vec<&str> = woken.iter().map(String::as_str).collect();
                self.notify(conn, &queues).await?;
                Ok((SettleReply { settled, reserved }, woken.clone()))
            }
        )
    }

    /// Applies the effects of one call but its counters on `conn`, inside the caller's
    /// transaction, kind by kind: the pushes, the waiting jobs held, the dependency changes
    /// (the jobs whose last dependencies they meet pushed with their claims: one whose
    /// claim is held is dropped, as a duplicate push is), the skips, the records of the
    /// settled jobs (one `INSERT ... SELECT` that replaces those of the same keys). The
    /// queues of the jobs pushed.
    async fn apply_effects(
        &self,
        conn: &mut DB::Connection,
        effects: &Effects<'_>,
    ) -> Result<Vec<String>> {
        let sql = &self.inner.sql;
        let mut woken = self.insert(conn, &effects.pushes, None).await?.woken;
        if !effects.holds.is_empty() {
            let rows: Vec<_> = effects
                .holds
                .iter()
                .map(|(key, waiting)| {
                    let job = &waiting.job;
                    let (at, delay) = due(job.available);
                    let unique = job.unique.as_ref();
                    (
                        key.as_str(),
                        i64::from(waiting.deps),
                        job.queue.as_str(),
                        job.name.as_str(),
                        hex(&job.payload),
                        at,
                        delay,
                        unique.map(|u| u.key.as_str()),
                        unique.map(|u| u.until.as_str()),
                    )
                })
                .collect();
            Self::execute(conn, &sql.hold, &[Arg::Text(&json(&rows)?)]).await?;
        }
        // A sum of 0 changes nothing: a waiting job always has a dependency left.
        let changes: Vec<(&str, i64)> = effects
            .deps
            .iter()
            .filter(|(_, delta)| **delta != 0)
            .map(|(key, delta)| (key.as_str(), *delta))
            .collect();
        if !changes.is_empty() {
            let mut released = Vec::new();
            for (key, left) in DB::add_deps(self, conn, &changes).await? {
                if left <= 0 {
                    released.extend(self.release(conn, &key).await?);
                }
            }
            woken.extend(self.insert(conn, &released, None).await?.woken);
        }
        for key in &effects.skips {
            Self::execute(conn, &sql.unhold, &[Arg::Text(key)]).await?;
        }
        if !effects.records.is_empty() {
            let rows: Vec<(&str, &str, String, i64)> = effects
                .records
                .iter()
                .map(|((job, kind), (value, ttl))| (job.as_str(), *kind, hex(value), *ttl))
                .collect();
            Self::execute(conn, &sql.records_put, &[Arg::Text(&json(&rows)?)]).await?;
        }
        if !effects.values.is_empty() {
            let rows: Vec<(&str, &str, String)> = effects
                .values
                .iter()
                .map(|((group, name), value)| (group.as_str(), name.as_str(), hex(value)))
                .collect();
            Self::execute(conn, &sql.values_put, &[Arg::Text(&json(&rows)?)]).await?;
        }
        Ok(woken)
    }

    /// [`Backend::add_deps`] by one `UPDATE ... RETURNING deps` per key.
    pub(crate) async fn add_deps_each(
        &self,
        conn: &mut DB::Connection,
        changes: &[(&str, i64)],
    ) -> Result<Vec<(String, i64)>> {
        let mut left = Vec::with_capacity(changes.len());
        for (key, delta) in changes {
            let args = [Arg::Int(*delta), Arg::Text(key)];
            let rows = Self::fetch(conn, &self.inner.sql.deps, &args).await?;
            if let Some(row) = rows.first() {
                let deps = DB::int(row, 0).map_err(db::<DB>)?.unwrap_or_default();
                left.push(((*key).to_owned(), deps));
            }
        }
        Ok(left)
    }

    /// Deletes the job waiting under `key` (its dependencies are met, its row locked by the
    /// change that met them): the job to push.
    async fn release(&self, conn: &mut DB::Connection, key: &str) -> Result<Option<NewJob>> {
        let sql = &self.inner.sql;
        let args = [Arg::Text(key)];
        let rows = if self.inner.open.returning {
            Self::fetch(conn, &sql.release, &args).await?
        } else {
            let rows = Self::fetch(conn, &sql.released, &args).await?;
            Self::execute(conn, &sql.unhold, &args).await?;
            rows
        };
        rows.first().map(Self::waiting_job_from).transpose()
    }

    /// The job of a waiting job's row (its `WAITING_COLUMNS`).
    fn waiting_job_from(row: &DB::Row) -> Result<NewJob> {
        let text = |i| DB::text(row, i).map_err(db::<DB>);
        let at = DB::int(row, 3).map_err(db::<DB>)?;
        let delay = DB::int(row, 4).map_err(db::<DB>)?.unwrap_or(0);
        let available = match at {
            Some(at) => Availability::At(from_unix_millis(at)),
            None if delay > 0 => {
                Availability::After(Duration::from_millis(u64::try_from(delay).unwrap_or(0)))
            }
            None => Availability::Now,
        };
        let until = DB::opt_text(row, 6).map_err(db::<DB>)?;
        Ok(NewJob {
            queue: text(0)?,
            name: text(1)?,
            payload: DB::bytes(row, 2).map_err(db::<DB>)?,
            available,
            unique: DB::opt_text(row, 5).map_err(db::<DB>)?.map(|key| Unique {
                key,
                until: until.as_deref().and_then(Until::parse).unwrap_or_default(),
                // Not stored with the claim: a push's own.
                replace: false,
            }),
        })
    }

    /// Checks and sets a guard's counter on `conn`, inside the caller's transaction: whether
    /// it held the value expected (a missing counter holds 0), in which case it now holds the
    /// value set, its row locked until the commit. Nothing is changed otherwise.
    ///
    /// First the row as it is: one conditional `UPDATE` (or, when the value set is the one
    /// expected, a `SELECT ... FOR UPDATE` of the row if it holds it). A second process
    /// expecting the same value waits for the first one's commit, then finds the new value
    /// and loses. When 0 is expected and no row matched, the row may be missing: an `INSERT`
    /// makes it, holding the value set, unless another process's row is there (skipped, or
    /// refused on MySQL, once that process committed). That row is then read without a lock
    /// (on MySQL the refused insert left a shared lock on it, and several losers asking to
    /// write it would deadlock): unless it holds 0, the guard lost; if it does (or it is gone
    /// again), all of it once more.
    async fn guard(&self, conn: &mut DB::Connection, guard: &Guard) -> Result<bool> {
        let sql = &self.inner.sql;
        let (group, name) = (storable(&guard.group), storable(&guard.counter));
        let (grp, counter) = (Arg::Text(&group), Arg::Text(&name));
        let (expect, set) = (Arg::Int(guard.expect), Arg::Int(guard.set));
        for _ in 0..3 {
            let held = if guard.expect == guard.set {
                !Self::fetch(conn, &sql.guard_hold, &[grp, counter, expect])
                    .await?
                    .is_empty()
            } else {
                Self::execute(conn, &sql.guard_set, &[set, grp, counter, expect]).await? == 1
            };
            if held {
                return Ok(true);
            }
            if guard.expect != 0 {
                return Ok(false);
            }
            let made = match DB::execute(conn, &sql.guard_new, &[grp, counter, set]).await {
                Ok(done) => DB::rows_affected(&done) == 1,
                Err(e) if DB::duplicate(&e) => false,
                Err(e) => return Err(db::<DB>(e)),
            };
            if made {
                return Ok(true);
            }
            let rows = Self::fetch(conn, &sql.guard_read, &[grp, counter]).await?;
            let value = match rows.first() {
                Some(row) => DB::int(row, 0).map_err(db::<DB>)?,
                None => None,
            };
            if value.is_some_and(|v| v != 0) {
                return Ok(false);
            }
        }
        Err(Error::backend(
            DB::DRIVER,
            format!("the counter `{name}` of group `{group}` kept changing"),
        ))
    }

    /// Adds to the group counters on `conn`, in (group, name) order.
    pub(crate) async fn count(
        &self,
        conn: &mut DB::Connection,
        counts: &BTreeMap<(String, String), i64>,
    ) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let rows: Vec<(&str, &str, i64)> = counts
            .iter()
            .map(|((g, n), d)| (g.as_str(), n.as_str(), *d))
            .collect();
        Self::execute(conn, &self.inner.sql.count, &[Arg::Text(&json(&rows)?)])
            .await
            .map(drop)
    }

    async fn next_due(&self, queues: &[String]) -> Result<Option<i64>> {
        let mut due: Option<i64> = None;
        for queue in queues {
            if let Some(next) = self
                .number("wait", &self.inner.sql.next_due, &[Arg::Text(queue)])
                .await?
            {
                due = Some(due.map_or(next, |d| d.min(next)));
            }
        }
        Ok(due)
    }

    fn failed_from(row: &DB::Row) -> Result<FailedJob> {
        let int = |i| {
            DB::int(row, i)
                .map_err(db::<DB>)
                .map(Option::unwrap_or_default)
        };
        let text = |i| DB::text(row, i).map_err(db::<DB>);
        let key = DB::opt_text(row, 8).map_err(db::<DB>)?;
        let until = DB::opt_text(row, 9).map_err(db::<DB>)?;
        Ok(FailedJob {
            id: int(0)?.to_string(),
            job_id: text(1)?,
            queue: text(2)?,
            name: text(3)?,
            payload: DB::bytes(row, 4).map_err(db::<DB>)?,
            error: text(5)?,
            attempts: u32::try_from(int(6)?.max(0)).unwrap_or(u32::MAX),
            failed_at: from_unix_millis(int(7)?),
            unique: key.map(|key| Unique {
                key,
                until: until.as_deref().and_then(Until::parse).unwrap_or_default(),
                // Not stored with the claim: a push's own.
                replace: false,
            }),
        })
    }
}

/// What an insert did: each job's outcome, in order, and the queues whose idle workers to
/// wake: of the jobs created, and of the queued jobs replaced whose availability moved
/// earlier.
struct Inserted {
    pushed: Vec<Pushed>,
    woken: Vec<String>,
}

fn cursor_error<DB: Backend>(cursor: &str) -> Error {
    Error::Contract {
        driver: DB::DRIVER,
        problem: format!("`{cursor}` is not a cursor of this store"),
    }
}

#[async_trait]
impl<DB: Sql> Storage for SqlStore<DB> {
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities::complete(DB::DRIVER, self)
            .track(self)
            .workers(self)
            .locks(self)
            .rewrite(true)
            .park(true)
            .durable(self.inner.open.durable)
            .atomic_push(true)
    }

    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let pushes = self.inner.open.pushes.as_ref().unwrap_or(self.main());
        let plain = jobs.iter().all(|job| job.unique.is_none());
        // One statement, its own transaction, where it can be; else one transaction.
        let single = plain && (DB::INSERT_ALL || chunk_sizes(jobs.len(), DB::CHUNK).len() == 1);
        if plain {
            if let Some(ids) = DB::push_here(self, &jobs).await {
                let pushed: Vec<Pushed> = ids?
                    .into_iter()
                    .map(|id| Pushed::Created(JobId(id.to_string())))
                    .collect();
                self.woke(jobs.iter().map(|job| job.queue.as_str()));
                return Ok(pushed);
            }
        }
        let hot = if single { pushes } else { self.tx_hot(true) };
        let inserted = unit!(self, "push", hot, !single, |conn, _d| self
            .insert(conn, &jobs, None)
            .await)?;
        self.woke(inserted.woken.iter().map(String::as_str));
        Ok(inserted.pushed)
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        if request.queues.is_empty() {
            return Ok(Vec::new());
        }
        let txs = self.inner.open.txs.as_ref();
        unit!(
            self,
            "reserve",
            txs.unwrap_or(self.main()),
            txs.is_some(),
            |conn, deferred| DB::reserve(Reserving {
                store: self,
                conn,
                deferred,
                request
            })
            .await
        )
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        let ids: Vec<i64> = leases.iter().filter_map(id_of).collect();
        if ids.is_empty() {
            return Ok(vec![LeaseStatus::Lost; leases.len()]);
        }
        unit!(self, "extend", self.tx_hot(false), true, |conn, _d| {
            // The leases locked, each with whether its job is marked for cancelling: the
            // mark is read by the statement that locks, no trip more.
            let list: Vec<[i64; 1]> = ids.iter().map(|id| [*id]).collect();
            let sql = &self.inner.sql.extend_leases;
            let rows = Self::fetch(conn, sql, &[Arg::Text(&json(&list)?)]).await?;
            let mut current = HashMap::with_capacity(rows.len());
            for row in &rows {
                let id = DB::int(row, 0).map_err(db::<DB>)?.unwrap_or_default();
                let token = DB::text(row, 1).map_err(db::<DB>)?;
                let cancelled = DB::int(row, 2).map_err(db::<DB>)? == Some(1);
                current.insert(id, (token, cancelled));
            }
            let held =
                |l: &Lease| id_of(l).and_then(|id| current.get(&id).filter(|(t, _)| *t == l.token));
            let renew: Vec<[i64; 2]> = leases
                .iter()
                .filter(|l| held(l).is_some())
                .filter_map(|l| Some([id_of(l)?, millis(lease)]))
                .collect();
            if !renew.is_empty() {
                Self::execute(conn, &self.inner.sql.extend, &[Arg::Text(&json(&renew)?)]).await?;
            }
            Ok(leases
                .iter()
                .map(|l| match held(l) {
                    Some((_, true)) => LeaseStatus::Cancelled,
                    Some((_, false)) => LeaseStatus::Held,
                    None => LeaseStatus::Lost,
                })
                .collect())
        })
    }

    async fn settle(
        &self,
        settles: Vec<Settle>,
        fetch: Option<&ReserveRequest>,
    ) -> Result<SettleReply> {
        check_effects(DB::DRIVER, &settles)?;
        for settle in &settles {
            supported::<DB>(&settle.effects)?;
        }
        let fetch = fetch.filter(|request| !request.queues.is_empty());
        let acks = settles.iter().all(|s| s.outcome == Outcome::Ack);
        if acks && settles.iter().all(|s| s.effects.is_empty()) {
            return self.settle_acks(&settles, fetch).await;
        }
        let (reply, woken) = if acks && DB::ACK_EFFECTS_BY_DELETE {
            self.settle_acks_with_effects(&settles, fetch).await?
        } else {
            self.settle_all(&settles, fetch).await?
        };
        self.woke(woken.iter().map(String::as_str));
        Ok(reply)
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let key = storable(key);
        let args = [Arg::Text(&key), Arg::Text(owner), Arg::Int(millis(ttl))];
        unit!(self, "lock", self.main(), false, |conn, _d| {
            let done = DB::execute(conn, &self.inner.sql.lock, &args)
                .await
                .map_err(db::<DB>)?;
            Ok(DB::lock_taken(&done))
        })
    }

    /// Deletes the lock row, then wakes the job parked on the key longest ago (see the
    /// crate docs, "Jobs parked on a lock").
    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        let key = storable(key);
        let removed = self
            .change(
                "unlock",
                &self.inner.sql.unlock,
                &[Arg::Text(&key), Arg::Text(owner)],
            )
            .await?
            > 0;
        if removed {
            self.wake_parked(&key).await?;
        }
        Ok(removed)
    }
}

/// Locks for operators: the locks table read by key (its primary key), a page at a time;
/// a release is one `DELETE` of an unexpired row (an expired one is deleted too, and
/// counts as not held).
#[async_trait]
impl<DB: Sql> Locks for SqlStore<DB> {
    async fn locks(&self, page: PageRequest) -> Result<Page<HeldLock>> {
        let limit = page.limit.max(1);
        let after = page.after.as_deref().map(storable).unwrap_or_default();
        let rows = self
            .one(
                "locks",
                self.reads(),
                &self.inner.sql.locks_list,
                &[
                    Arg::Text(&after),
                    Arg::Int(i64::try_from(limit + 1).unwrap_or(i64::MAX)),
                ],
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            items.push(HeldLock {
                key: DB::text(row, 0).map_err(db::<DB>)?,
                owner: DB::text(row, 1).map_err(db::<DB>)?,
                expires_at: from_unix_millis(DB::int(row, 2).map_err(db::<DB>)?.unwrap_or(0)),
            });
        }
        let next = (items.len() > limit).then(|| items[limit - 1].key.clone());
        items.truncate(limit);
        Ok(Page { items, next })
    }

    async fn release(&self, key: &str) -> Result<bool> {
        let key = storable(key);
        let sql = &self.inner.sql;
        let held = self
            .change("release_lock", &sql.lock_release, &[Arg::Text(&key)])
            .await?;
        let expired = self
            .change("release_lock", &sql.lock_expired, &[Arg::Text(&key)])
            .await?;
        if held + expired > 0 {
            self.wake_parked(&key).await?;
        }
        Ok(held > 0)
    }
}

#[async_trait]
impl<DB: Sql> FailedStore for SqlStore<DB> {
    async fn list(&self, page: PageRequest) -> Result<Page<FailedJob>> {
        let before = match &page.after {
            Some(cursor) => cursor
                .parse::<i64>()
                .map_err(|_| cursor_error::<DB>(cursor))?,
            None => i64::MAX,
        };
        let limit = page.limit.max(1);
        let args = [
            Arg::Int(before),
            Arg::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        let rows = self
            .one(
                "failed_list",
                self.reads(),
                &self.inner.sql.failed_list,
                &args,
            )
            .await?;
        let items = rows
            .iter()
            .map(Self::failed_from)
            .collect::<Result<Vec<_>>>()?;
        let next = items
            .last()
            .filter(|_| items.len() == limit)
            .map(|last| last.id.clone());
        Ok(Page { items, next })
    }

    async fn get(&self, id: &str) -> Result<Option<FailedJob>> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let rows = self
            .one(
                "failed_get",
                self.reads(),
                &self.inner.sql.failed_get,
                &[Arg::Int(id)],
            )
            .await?;
        rows.first().map(Self::failed_from).transpose()
    }

    async fn count(&self) -> Result<u64> {
        let n = self
            .number("failed_count", &self.inner.sql.failed_count, &[])
            .await?;
        Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
    }

    async fn retry(&self, id: &str) -> Result<Option<Pushed>> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let sql = &self.inner.sql;
        let retried = unit!(self, "failed_retry", self.tx_hot(true), true, |conn, _d| {
            let rows = Self::fetch(conn, &sql.failed_take, &[Arg::Int(id)]).await?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let text = |i| DB::text(row, i).map_err(db::<DB>);
            let until = DB::opt_text(row, 4).map_err(db::<DB>)?;
            let job = NewJob {
                queue: text(0)?,
                name: text(1)?,
                payload: DB::bytes(row, 2).map_err(db::<DB>)?,
                available: Availability::Now,
                unique: DB::opt_text(row, 3).map_err(db::<DB>)?.map(|key| Unique {
                    key,
                    until: until.as_deref().and_then(Until::parse).unwrap_or_default(),
                    // Not stored with the claim: a push's own.
                    replace: false,
                }),
            };
            let inserted = self
                .insert(conn, std::slice::from_ref(&job), Some(id))
                .await?;
            let Some(pushed) = inserted.pushed.into_iter().next() else {
                return Ok(None);
            };
            if pushed.is_created() {
                Self::execute(conn, &sql.failed_delete, &[Arg::Int(id)]).await?;
                self.notify(conn, &[job.queue.as_str()]).await?;
            }
            Ok(Some((pushed, job.queue)))
        })?;
        Ok(retried.map(|(pushed, queue)| {
            self.woke([queue.as_str()]);
            pushed
        }))
    }

    async fn forget(&self, id: &str) -> Result<bool> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(false);
        };
        Ok(self
            .change(
                "failed_forget",
                &self.inner.sql.failed_delete,
                &[Arg::Int(id)],
            )
            .await?
            > 0)
    }

    async fn flush(&self) -> Result<u64> {
        self.change("failed_flush", &self.inner.sql.failed_flush, &[])
            .await
    }

    async fn prune(&self, before: SystemTime) -> Result<u64> {
        self.change(
            "failed_prune",
            &self.inner.sql.failed_prune,
            &[Arg::Int(unix_millis(before))],
        )
        .await
    }
}

#[async_trait]
impl<DB: Sql> Inspect for SqlStore<DB> {
    async fn size(&self, queue: &str) -> Result<QueueSize> {
        let rows = self
            .one(
                "size",
                self.reads(),
                &self.inner.sql.size,
                &[Arg::Text(queue)],
            )
            .await?;
        let count = |i| first_count::<DB>(&rows, i);
        Ok(QueueSize {
            waiting: count(0)?,
            delayed: count(1)?,
            reserved: count(2)?,
        })
    }

    async fn backlog_at_most(&self, queue: &str, cap: u64) -> Result<Backlog> {
        let limit = i64::try_from(cap).unwrap_or(i64::MAX);
        let rows = self
            .one(
                "size",
                self.reads(),
                &self.inner.sql.backlog_at_most,
                &[
                    Arg::Text(queue),
                    Arg::Int(limit),
                    Arg::Text(queue),
                    Arg::Int(limit),
                ],
            )
            .await?;
        let count = |i| first_count::<DB>(&rows, i);
        Ok(Backlog {
            waiting: count(0)?,
            delayed: count(1)?,
            // Counting them walks the queue's rows: the registry says what runs.
            reserved: None,
        })
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let rows = self
            .one("queues", self.reads(), &self.inner.sql.queues, &[])
            .await?;
        rows.iter()
            .map(|row| DB::text(row, 0).map_err(db::<DB>))
            .collect()
    }

    async fn clear(&self, queue: &str) -> Result<u64> {
        // Deleted jobs take their claims with them.
        self.change("clear", &self.inner.sql.clear, &[Arg::Text(queue)])
            .await
    }

    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        let oldest = self
            .number(
                "oldest_available",
                &self.inner.sql.oldest_available,
                &[Arg::Text(queue)],
            )
            .await?;
        Ok(oldest.map(from_unix_millis))
    }

    async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        page: PageRequest,
    ) -> Result<Page<JobSummary>> {
        let (due, id) = match &page.after {
            Some(cursor) => cursor
                .split_once(':')
                .and_then(|(due, id)| Some((due.parse::<i64>().ok()?, id.parse::<i64>().ok()?)))
                .ok_or_else(|| cursor_error::<DB>(cursor))?,
            None => (i64::MIN, i64::MIN),
        };
        let limit = page.limit.max(1);
        let sql = &self.inner.sql.jobs[match state {
            JobState::Waiting => 0,
            JobState::Delayed => 1,
            JobState::Reserved => 2,
        }];
        let args = [
            Arg::Text(queue),
            Arg::Int(due),
            Arg::Int(id),
            Arg::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        let rows = self.one("jobs", self.reads(), sql, &args).await?;
        let mut items = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in &rows {
            let int = |i| {
                DB::int(row, i)
                    .map_err(db::<DB>)
                    .map(Option::unwrap_or_default)
            };
            let (id, due_at) = (int(0)?, int(4)?);
            last = Some(format!("{due_at}:{id}"));
            items.push(JobSummary {
                id: JobId(id.to_string()),
                queue: DB::text(row, 1).map_err(db::<DB>)?,
                name: DB::text(row, 2).map_err(db::<DB>)?,
                // Rows written by hand may hold anything here: it is only shown.
                attempts: u32::try_from(DB::int(row, 3).ok().flatten().unwrap_or(0).max(0))
                    .unwrap_or(u32::MAX),
                state,
                due_at: from_unix_millis(due_at),
                unique_key: DB::opt_text(row, 5).map_err(db::<DB>)?,
                payload: DB::bytes(row, 6).map_err(db::<DB>)?,
            });
        }
        Ok(Page {
            next: last.filter(|_| items.len() == limit),
            items,
        })
    }
}

/// The id of one of this store's jobs: an integer written as this store writes it (`"12"`,
/// not `"+12"` nor `"012"`).
fn job_id_of(id: &JobId) -> Option<i64> {
    id.0.parse::<i64>().ok().filter(|n| n.to_string() == id.0)
}

impl<DB: Sql> SqlStore<DB> {
    /// A job as [`JOB_COLUMNS`](crate::statements::JOB_COLUMNS) gives it.
    fn summary_from(row: &DB::Row) -> Result<JobSummary> {
        let int = |i| {
            DB::int(row, i)
                .map_err(db::<DB>)
                .map(Option::unwrap_or_default)
        };
        Ok(JobSummary {
            id: JobId(int(0)?.to_string()),
            queue: DB::text(row, 1).map_err(db::<DB>)?,
            name: DB::text(row, 2).map_err(db::<DB>)?,
            // Rows written by hand may hold anything here: it is only shown.
            attempts: u32::try_from(DB::int(row, 3).ok().flatten().unwrap_or(0).max(0))
                .unwrap_or(u32::MAX),
            state: match int(6)? {
                2 => JobState::Reserved,
                1 => JobState::Delayed,
                _ => JobState::Waiting,
            },
            due_at: from_unix_millis(int(4)?),
            unique_key: DB::opt_text(row, 5).map_err(db::<DB>)?,
            payload: DB::bytes(row, 7).map_err(db::<DB>)?,
        })
    }
}

/// Jobs by id: each call one statement, or (`cancel`) one transaction. Records are rows of
/// `{table}_records` keyed by (job id, kind), read only before their `expires_at` (the
/// database's clock), deleted by [`prune_records`](Track::prune_records).
#[async_trait]
impl<DB: Sql> Track for SqlStore<DB> {
    async fn job(&self, id: &JobId) -> Result<Option<JobSummary>> {
        let Some(id) = job_id_of(id) else {
            return Ok(None);
        };
        let rows = self
            .one("job", self.reads(), &self.inner.sql.job, &[Arg::Int(id)])
            .await?;
        rows.first().map(Self::summary_from).transpose()
    }

    /// One transaction: the job's row read and locked (a reservation taking it meanwhile
    /// waits, or the row was taken first and this waits for its commit), then deleted (its
    /// claim goes with it) and the effects applied as [`Groups::apply`] applies them, or,
    /// reserved under a lease that has not run out by the database's clock, its `cancel`
    /// record written. An effect that fails rolls the whole transaction back.
    async fn cancel(
        &self,
        id: &JobId,
        mark_for: Duration,
        effects: Vec<Effect>,
    ) -> Result<Cancellation> {
        check_effect_list(DB::DRIVER, &effects, "a cancel")?;
        let mut sorted = Effects::default();
        for effect in &effects {
            sorted.add::<DB>(effect, None)?;
        }
        let Some(id) = job_id_of(id) else {
            return Ok(Cancellation::NotFound);
        };
        let sql = &self.inner.sql;
        let (cancellation, woken) = unit!(self, "cancel", self.tx_hot(true), true, |conn, _d| {
            let rows = Self::fetch(conn, &sql.cancel_take, &[Arg::Int(id)]).await?;
            let Some(row) = rows.first() else {
                return Ok((Cancellation::NotFound, Vec::new()));
            };
            let summary = Self::summary_from(row)?;
            let live = DB::int(row, 8).map_err(db::<DB>)? == Some(1);
            if live {
                let args = [
                    Arg::Text(&summary.id.0),
                    Arg::Text(RecordKey::CANCEL),
                    Arg::Bytes(&[]),
                    Arg::Int(millis(mark_for)),
                ];
                Self::execute(conn, &sql.record_put, &args).await?;
                return Ok((Cancellation::Marked(summary), Vec::new()));
            }
            Self::execute(conn, &sql.delete_job, &[Arg::Int(id)]).await?;
            let mut woken = Vec::new();
            if !sorted.is_empty() {
                woken = self.apply_effects(conn, &sorted).await?;
                self.count(conn, &sorted.counts).await?;
                let queues: Vec<&str> = woken.iter().map(String::as_str).collect();
                self.notify(conn, &queues).await?;
            }
            Ok((Cancellation::Removed(summary), woken))
        })?;
        self.woke(woken.iter().map(String::as_str));
        Ok(cancellation)
    }

    /// One statement for all the keys.
    async fn records(&self, keys: &[RecordKey]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<(usize, String, String)> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| (i, storable(&key.job_id.0), storable(&key.kind)))
            .collect();
        let rows = self
            .one(
                "records",
                self.reads(),
                &self.inner.sql.records,
                &[Arg::Text(&json(&list)?)],
            )
            .await?;
        let mut out = vec![None; keys.len()];
        for row in &rows {
            let i = DB::int(row, 0).map_err(db::<DB>)?;
            let slot = i
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| out.get_mut(i));
            if let Some(slot) = slot {
                *slot = Some(DB::bytes(row, 1).map_err(db::<DB>)?);
            }
        }
        Ok(out)
    }

    /// One statement: with a fence, an `INSERT ... SELECT` from the job's row holding the
    /// lease's token (locked for the statement on PostgreSQL and MySQL), so nothing is
    /// written once the job was settled or reserved again.
    async fn put_record(
        &self,
        key: &RecordKey,
        value: &[u8],
        ttl: Duration,
        fence: Option<&Lease>,
    ) -> Result<bool> {
        check_record(DB::DRIVER, key, fence)?;
        let job = storable(&key.job_id.0);
        let (job, kind, ttl) = (Arg::Text(&job), Arg::Text(&key.kind), Arg::Int(millis(ttl)));
        let sql = &self.inner.sql;
        let written = match fence {
            None => {
                self.change(
                    "put_record",
                    &sql.record_put,
                    &[job, kind, Arg::Bytes(value), ttl],
                )
                .await?
            }
            Some(lease) => {
                let Some(id) = id_of(lease) else {
                    return Ok(false);
                };
                let args = [
                    job,
                    kind,
                    Arg::Bytes(value),
                    ttl,
                    Arg::Int(id),
                    Arg::Text(&lease.token),
                ];
                self.change("put_record", &sql.record_put_fenced, &args)
                    .await?
            }
        };
        Ok(written > 0)
    }

    /// Statements of up to 1,000 rows each (one range of the expiry index), each its own
    /// transaction, until one deletes fewer.
    async fn prune_records(&self) -> Result<u64> {
        let mut pruned = 0;
        loop {
            let n = self
                .change("prune_records", &self.inner.sql.records_prune, &[])
                .await?;
            pruned += n;
            if n < u64::try_from(PRUNE_CHUNK).unwrap_or(u64::MAX) {
                return Ok(pruned);
            }
        }
    }
}

#[async_trait]
impl<DB: Sql> Groups for SqlStore<DB> {
    async fn counters(&self, group: &str) -> Result<Vec<(String, i64)>> {
        let group = storable(group);
        let rows = self
            .one(
                "counters",
                self.reads(),
                &self.inner.sql.counters,
                &[Arg::Text(&group)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let value = DB::int(row, 1).map_err(db::<DB>)?.unwrap_or(0);
                Ok((DB::text(row, 0).map_err(db::<DB>)?, value))
            })
            .collect()
    }

    async fn value(&self, group: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let (group, name) = (storable(group), storable(name));
        let rows = self
            .one(
                "value",
                self.reads(),
                &self.inner.sql.value,
                &[Arg::Text(&group), Arg::Text(&name)],
            )
            .await?;
        match rows.first() {
            Some(row) => Ok(Some(DB::bytes(row, 0).map_err(db::<DB>)?)),
            None => Ok(None),
        }
    }

    /// The values first, then the counters: a crash in between leaves the group listed,
    /// for the next prune.
    async fn remove(&self, group: &str) -> Result<bool> {
        let group = storable(group);
        self.change(
            "remove_values",
            &self.inner.sql.remove_values,
            &[Arg::Text(&group)],
        )
        .await?;
        Ok(self
            .change(
                "remove_group",
                &self.inner.sql.remove_group,
                &[Arg::Text(&group)],
            )
            .await?
            > 0)
    }

    /// One indexed range read of the counters table (its key begins with the group).
    async fn list(&self, prefix: &str, page: PageRequest) -> Result<Page<String>> {
        let prefix = storable(prefix);
        let after = page.after.as_deref().map(storable).unwrap_or_default();
        let limit = page.limit.max(1);
        let args = [
            Arg::Text(&prefix),
            Arg::Text(&after),
            Arg::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        let rows = self
            .one(
                "group_list",
                self.reads(),
                &self.inner.sql.group_list,
                &args,
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let name = DB::text(row, 0).map_err(db::<DB>)?;
            // Sorted by bytes: past the first name without the prefix, none has it.
            if !name.starts_with(&prefix) {
                return Ok(Page { items, next: None });
            }
            items.push(name);
        }
        let next = items.last().filter(|_| items.len() == limit).cloned();
        Ok(Page { items, next })
    }

    /// One transaction, on the connections pushes use (on PostgreSQL its commit waits for
    /// the disk, as a push's does: it dispatches).
    async fn apply(&self, effects: Vec<Effect>) -> Result<()> {
        check_effect_list(DB::DRIVER, &effects, "an apply")?;
        let mut sorted = Effects::default();
        for effect in &effects {
            sorted.add::<DB>(effect, None)?;
        }
        if sorted.is_empty() {
            return Ok(());
        }
        let woken = unit!(self, "apply", self.tx_hot(true), true, |conn, _d| {
            let woken = self.apply_effects(conn, &sorted).await?;
            self.count(conn, &sorted.counts).await?;
            let queues: Vec<&str> = woken.iter().map(String::as_str).collect();
            self.notify(conn, &queues).await?;
            Ok(woken)
        })?;
        self.woke(woken.iter().map(String::as_str));
        Ok(())
    }

    /// [`apply`](Self::apply)'s transaction, begun by the guard's check-and-set (see
    /// `SqlStore::guard`) and rolled back, with nothing else run, when the counter does not
    /// hold the value expected. The effects are checked before anything is changed.
    async fn apply_if(&self, guard: Guard, effects: Vec<Effect>) -> Result<bool> {
        check_effect_list(DB::DRIVER, &effects, "an apply")?;
        let mut sorted = Effects::default();
        for effect in &effects {
            sorted.add::<DB>(effect, None)?;
        }
        let woken = unit!(
            self,
            "apply_if",
            self.tx_hot(true),
            true,
            |conn, deferred| {
                if !self.guard(conn, &guard).await? {
                    deferred.roll_back();
                    return Ok(None);
                }
                let woken = self.apply_effects(conn, &sorted).await?;
                self.count(conn, &sorted.counts).await?;
                let queues: Vec<&str> = woken.iter().map(String::as_str).collect();
                self.notify(conn, &queues).await?;
                Ok(Some(woken))
            }
        )?;
        let Some(woken) = woken else {
            return Ok(false);
        };
        self.woke(woken.iter().map(String::as_str));
        Ok(true)
    }

    async fn waiting(&self, key: &str) -> Result<Option<i64>> {
        let key = storable(key);
        self.number("waiting", &self.inner.sql.waiting, &[Arg::Text(&key)])
            .await
    }
}

#[async_trait]
impl<DB: Sql> Control for SqlStore<DB> {
    async fn restart_generation(&self) -> Result<u64> {
        let n = self
            .number(
                "restart_generation",
                &self.inner.sql.restart_generation,
                &[],
            )
            .await?;
        Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
    }

    async fn request_restart(&self) -> Result<()> {
        self.change("request_restart", &self.inner.sql.request_restart, &[])
            .await
            .map(drop)
    }
}

/// The worker registry: a row per worker in `{table}_workers`, its expiry by the database's
/// clock; listing and beating delete the expired rows.
#[async_trait]
impl<DB: Sql> Workers for SqlStore<DB> {
    /// Two statements: an upsert, then the expired rows deleted (so they do not pile up in
    /// a store nobody lists).
    async fn beat(&self, id: &str, entry: &[u8], ttl: Duration) -> Result<()> {
        let id = storable(id);
        let sql = &self.inner.sql;
        let args = [Arg::Text(&id), Arg::Bytes(entry), Arg::Int(millis(ttl))];
        self.change("worker_beat", &sql.worker_beat, &args).await?;
        self.change("workers_prune", &sql.workers_prune, &[])
            .await
            .map(drop)
    }

    /// Two statements: the expired rows deleted, then the others read.
    async fn workers(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let sql = &self.inner.sql;
        self.change("workers_prune", &sql.workers_prune, &[])
            .await?;
        let rows = self.one("workers", self.main(), &sql.workers, &[]).await?;
        rows.iter()
            .map(|row| {
                Ok((
                    DB::text(row, 0).map_err(db::<DB>)?,
                    DB::bytes(row, 1).map_err(db::<DB>)?,
                ))
            })
            .collect()
    }

    /// One statement: the row deleted if it has not expired.
    async fn leave(&self, id: &str) -> Result<bool> {
        let id = storable(id);
        let n = self
            .change(
                "worker_leave",
                &self.inner.sql.worker_leave,
                &[Arg::Text(&id)],
            )
            .await?;
        Ok(n > 0)
    }
}

#[async_trait]
impl<DB: Sql> Wake for SqlStore<DB> {
    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        // Subscribed before reading the next due time: a job committed after that read
        // wakes this wait.
        let mut events = self.inner.waker.subscribe();
        if DB::listening(self, timeout).await {
            let due = self.next_due_in_a_task(queues).await?;
            let _ = tokio::time::timeout(idle_sleep(due, timeout), events.for_any_of(queues)).await;
            return Ok(());
        }
        // No wake-ups from other processes: look again and again, 2 ms after the wait began
        // (just after a reserve found nothing), then twice as long each time, up to
        // `idle_poll`. A push by this process still wakes the wait at once.
        let deadline = tokio::time::Instant::now() + timeout;
        let ceiling = self.inner.idle_poll.max(FIRST_LOOK);
        let mut every = FIRST_LOOK;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let nap = every.min(left);
            if tokio::time::timeout(nap, events.for_any_of(queues))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if self
                .next_due_in_a_task(queues)
                .await?
                .is_some_and(|ms| ms <= 0)
            {
                return Ok(());
            }
            every = (every * 2).min(ceiling);
        }
    }
}

impl<DB: Sql> SqlStore<DB> {
    /// [`next_due`](Self::next_due) in a task of its own: the worker drops a wait as soon as
    /// one of its jobs finishes, and a query cut off half-way would cost the connection.
    async fn next_due_in_a_task(&self, queues: &[String]) -> Result<Option<i64>> {
        let store = self.clone();
        let owned = queues.to_vec();
        tokio::spawn(async move { store.next_due(&owned).await })
            .await
            .map_err(|e| Error::backend(DB::DRIVER, e))?
    }
}

/// Where the database cannot wake a waiting worker, its first look comes this long after the
/// wait began.
const FIRST_LOOK: Duration = Duration::from_millis(2);

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl<DB: Sql> SqlStore<DB> {
    pub(crate) fn waker(&self) -> &Arc<Waker> {
        &self.inner.waker
    }
}
