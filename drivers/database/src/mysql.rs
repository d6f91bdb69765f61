//! MySQL and MariaDB: [`MySqlStorage`], for any number of workers on any number of machines.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::TryStreamExt;
use queue_core::storage::new_token;
use queue_core::{Error, JobId, Lease, ReserveRequest, Reserved, Result};
use sqlx::mysql::{MySqlConnectOptions, MySqlQueryResult};
use sqlx::{Executor, MySql, MySqlConnection};

use crate::hot::Hot;
use crate::options::SqlOptions;
use crate::retry::Conflict;
use crate::schema::{Dialect, Tables};
use crate::sql::sealed::{AckedAndReserved, Backend, Deferred, Io, Reserving};
use crate::sql::Arg;
use crate::statements::fill;
use crate::store::{db, hex, millis, Open, SqlStore, Tx};

/// A queue store in a MySQL or MariaDB database. See [`SqlStore`] and the
/// [crate docs](crate#mysql-and-mariadb).
pub type MySqlStorage = SqlStore<MySql>;

/// How to open a [`MySqlStorage`]: a builder.
///
/// `mysql://user:password@host:port/database?param=value` (`mariadb://` is the same), as
/// sqlx reads them: `ssl-mode`, `ssl-ca`, `socket`, `charset` and the rest of sqlx's
/// parameters pass through.
pub type MySqlOptions = SqlOptions<MySql>;

/// How long picks may start after the last job taken before a queue is read from its start
/// again. A job due before that place (pushed with a time in the past, or whose lease ran
/// out long ago) waits at most this long for its turn.
const RESCAN: Duration = Duration::from_millis(500);

/// MySQL's knobs in [`MySqlOptions`].
#[derive(Debug, Clone, Default)]
pub struct MySqlKnobs {
    returning: Option<bool>,
}

impl SqlOptions<MySql> {
    /// Forces the statements without `RETURNING` (MySQL's way) on MariaDB too, which has it.
    /// For testing that path on MariaDB; `None` (the default) decides by the server.
    #[doc(hidden)]
    pub fn use_returning(mut self, returning: Option<bool>) -> Self {
        self.knobs.returning = returning;
        self
    }

    /// The URL turned into sqlx's connect options, in UTC (the clock is read as
    /// `UNIX_TIMESTAMP(NOW(3))`, which a local time zone would shift across a DST change).
    pub(crate) fn connect_options(&self) -> Result<MySqlConnectOptions> {
        let redacted = || queue_core::redact_url(&self.url);
        let Some(("mysql" | "mariadb", rest)) = self.url.split_once("://") else {
            return Err(Error::Config(format!(
                "`{}` is not a MySQL URL: it must start with mysql:// or mariadb://",
                redacted()
            )));
        };
        let options = MySqlConnectOptions::from_str(&format!("mysql://{rest}"))
            .map_err(|e| Error::Config(format!("bad MySQL URL `{}`: {e}", redacted())))?;
        Ok(options.timezone(Some("+00:00".to_owned())))
    }
}

/// Where a queue's last pick ended.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    due_at: i64,
    id: i64,
    /// When the queue was last read from its start.
    rescanned: Instant,
}

/// What a MySQL store keeps of its own: the server, the pick statements, and where the last
/// pick of each queue ended.
#[derive(Debug)]
pub struct MySqlState {
    version: String,
    mariadb: bool,
    /// The next due jobs of one queue, locked, skipping rows other workers hold. Binds:
    /// queue, name or NULL (twice), limit. Returns id, attempts, name, payload, due_at.
    pick: String,
    /// The same, from a place in the index on. Binds: queue, due_at, id, due_at, name or
    /// NULL (twice), limit.
    pick_after: String,
    /// Marks picked rows reserved, with `{prefix}` (a hex token), `{lease}` (ms) and `{ids}`
    /// (integers) pasted in: nothing a user controls.
    mark: String,
    cursors: Mutex<HashMap<String, Cursor>>,
}

/// Which server this is (true for MariaDB), refusing one without `SELECT ... FOR UPDATE
/// SKIP LOCKED`.
fn check_version(version: &str) -> Result<bool> {
    // Old clients' handshakes see MariaDB as "5.5.5-10.x"; the real version follows.
    let digits = version.strip_prefix("5.5.5-").unwrap_or(version);
    let mut numbers = digits
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let found = (
        numbers.next().unwrap_or(0),
        numbers.next().unwrap_or(0),
        numbers.next().unwrap_or(0),
    );
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let (least, name) = if mariadb {
        ((10, 6, 0), "MariaDB")
    } else {
        ((8, 0, 13), "MySQL")
    };
    if found < least {
        return Err(Error::Config(format!(
            "{name} {version} cannot reserve jobs safely: it has no `FOR UPDATE SKIP LOCKED` \
             (MySQL 8.0.13 or newer is needed, or MariaDB 10.6 or newer)"
        )));
    }
    Ok(mariadb)
}

impl Backend for MySql {
    const DRIVER: &'static str = "mysql";
    type Knobs = MySqlKnobs;
    type State = MySqlState;
    const DIALECT: Dialect = Dialect::MySql;
    // The store's transactions run on connections without autocommit: the first statement
    // starts one, and the last text sent ends it with its `COMMIT`.
    const BEGIN: Option<&'static str> = None;
    // `NOW(3)` is the start of the statement, the same for every row it touches.
    const NOW: &'static str = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)";
    // A statement is one packet: `max_allowed_packet` (16 MB by default) bounds it.
    const CHUNK: usize = 100;
    const TEXT: &'static str = "CHAR";
    const BLOB: &'static str = "BINARY";
    const NO_BYTES: &'static str = "''";
    const UNHEX: &'static str = "UNHEX({x})";
    // A no-op update: the row of the key is left as it is.
    const HOLD_NEW: &'static str = " ON DUPLICATE KEY UPDATE deps = {waiting_table}.deps";
    const KEY: &'static str = "`key`";
    const ROWS: &'static str = "JSON_TABLE(?, '$[*]' COLUMNS ({columns})) AS l";
    const INT: &'static str = "{name} BIGINT PATH '$[{i}]'";
    const STR: &'static str = "{name} LONGTEXT CHARACTER SET utf8mb4 PATH '$[{i}]'";
    // Joined, not `WHERE id IN (SELECT ...)`: MySQL reads the whole table for a single-table
    // `UPDATE` or `DELETE` with a subquery.
    const UPDATE_JOIN: &'static str = "UPDATE {table} AS t JOIN {rows} ON t.id = l.id SET {set}";
    const DELETE_JOIN: &'static str = "DELETE t FROM {table} AS t JOIN {rows} ON t.id = l.id";
    const ADD: &'static str = "ON DUPLICATE KEY UPDATE value = value + VALUES(value)";
    const SKIP_HELD: &'static str = "";
    // `FOR SHARE` is MySQL 8's alone; both servers know this form.
    const FOR_SHARE: &'static str = " LOCK IN SHARE MODE";
    const UPSERT_VALUE: &'static str = " ON DUPLICATE KEY UPDATE value = VALUES(value)";
    const UPSERT_WORKER: &'static str = " ON DUPLICATE KEY UPDATE entry = VALUES(entry), \
         expires_at = VALUES(expires_at)";
    const UPSERT_RECORD: &'static str = " ON DUPLICATE KEY UPDATE value = VALUES(value), \
         expires_at = VALUES(expires_at)";
    // A single-table `DELETE` takes a `LIMIT` (and cannot read its own table in a
    // subquery): one range of the expiry index.
    const PRUNE_RECORDS: &'static str = "DELETE FROM {records_table} WHERE expires_at <= {now} \
         ORDER BY expires_at LIMIT {chunk}";
    // A row of the key is refused with error 1062, which undoes the statement alone.
    const GUARD_NEW: &'static str = "";
    // One statement, no transaction: the owner changes only if the lock is free, ours or
    // expired; the expiry changes only if the owner is now ours (assignments run left to
    // right). Whether the lock was taken travels back in the insert id: 0 for a fresh row,
    // the new expiry when it was taken over or renewed, 1 when another owner holds it
    // (`LAST_INSERT_ID(expr)` sets the id the server reports).
    const LOCK: &'static str =
        "INSERT INTO {locks_table} (`key`, owner, expires_at) VALUES (?, ?, {now} + ?) \
         ON DUPLICATE KEY UPDATE \
         owner = IF(owner = VALUES(owner) OR expires_at <= {now}, VALUES(owner), owner), \
         expires_at = IF(owner = VALUES(owner), LAST_INSERT_ID(VALUES(expires_at)), \
         expires_at + 0 * LAST_INSERT_ID(1))";
    // DDL commits on its own in MySQL: a named lock makes processes that start together
    // take turns.
    const MIGRATE: (&'static str, &'static str) = (
        "DO GET_LOCK('queue_database_migrate', 60)",
        "DO RELEASE_LOCK('queue_database_migrate')",
    );

    async fn open(options: &SqlOptions<MySql>, tables: &Tables) -> Result<Open<MySql>> {
        let connect = options.connect_options()?;
        options.first_connection(&connect).await?;
        let pool_options = |autocommit: bool| {
            options.pool().after_connect(move |conn, _meta| {
                Box::pin(async move {
                    // Under REPEATABLE READ a read followed by a write can act on a stale
                    // snapshot and lose an update; a queue name too long for its column
                    // fails rather than being cut.
                    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .await?;
                    conn.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')")
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
            .map_err(db::<MySql>)?;
        let (version, id_step): (String, i64) =
            sqlx::query_as("SELECT VERSION(), CAST(@@auto_increment_increment AS SIGNED)")
                .fetch_one(&pool)
                .await
                .map_err(db::<MySql>)?;
        let mariadb = check_version(&version)?;
        let fill = |sql: &str| fill::<MySql>(tables, sql);
        // Under READ COMMITTED, InnoDB locks only the rows it returns; SKIP LOCKED passes
        // over rows another transaction holds instead of waiting for them. The index is
        // forced: on a table whose statistics are not computed yet the optimizer may prefer
        // a scan and a sort, which would lock every due job of the queue.
        let pick = |after: &str| {
            fill(&format!(
                "SELECT id, attempts, name, payload, due_at, unique_until FROM {{table}} FORCE INDEX ({{table}}_due) \
                 WHERE queue = ? AND due_at <= {{now}}{after} AND (? IS NULL OR name = ?) \
                 ORDER BY due_at, id LIMIT ? FOR UPDATE SKIP LOCKED"
            ))
        };
        Ok(Open {
            // A few connections kept at hand (a worker uses two at a time); the others stay
            // in the pool for `pool()`'s users.
            main: Hot::new(pool, (options.connections() / 2).clamp(1, 4) as usize),
            reads: None,
            pushes: None,
            txs: Some(Hot::discarding(
                pool_options(false).connect_lazy_with(connect),
                2,
            )),
            durable: true,
            returning: options.knobs.returning.unwrap_or(mariadb),
            id_step: id_step.max(1),
            state: MySqlState {
                version,
                mariadb,
                pick: pick(""),
                // InnoDB leaves the entries of taken and finished jobs in the index, marked
                // deleted, until its purge catches up: under a steady stream of jobs,
                // thousands sit at the front of a queue's range, and a pick from the front
                // steps over each. Starting after the last job this store took seeks past
                // them (two ranges of the index, which the server seeks to directly).
                pick_after: pick(" AND ((due_at = ? AND id > ?) OR due_at > ?)"),
                // Assignments run left to right: `available_at = due_at` comes first, while
                // `due_at` is still the old row's (when the job became available).
                mark: fill(
                    "UPDATE {table} SET available_at = due_at, attempts = attempts + 1, \
                     token = CONCAT('{prefix}', '-', id), reserved_until = {now} + {lease}, \
                     claim = IF(unique_until = 'started', NULL, claim) WHERE id IN ({ids}); ",
                ),
                cursors: Mutex::new(HashMap::new()),
            },
        })
    }

    /// Error 1213 (`ER_LOCK_DEADLOCK`, the transaction was rolled back) and 1205
    /// (`ER_LOCK_WAIT_TIMEOUT`, the statement was).
    fn conflict(error: &sqlx::Error) -> Option<Conflict> {
        match number(error)? {
            1213 => Some(Conflict::Deadlock),
            1205 => Some(Conflict::LockWaitTimeout),
            _ => None,
        }
    }

    /// Error 1062 (`ER_DUP_ENTRY`): only the statement is undone.
    fn duplicate(error: &sqlx::Error) -> bool {
        number(error) == Some(1062)
    }

    /// Errors 1060 (`ER_DUP_FIELDNAME`) and 1061 (`ER_DUP_KEYNAME`).
    fn already_applied(error: &sqlx::Error) -> bool {
        matches!(number(error), Some(1060 | 1061))
    }

    fn rows_affected(done: &MySqlQueryResult) -> u64 {
        done.rows_affected()
    }

    fn last_insert_id(done: &MySqlQueryResult) -> i64 {
        i64::try_from(done.last_insert_id()).unwrap_or(i64::MAX)
    }

    fn lock_taken(done: &MySqlQueryResult) -> bool {
        // See `lock`: 0 is a fresh lock, 1 another owner's, anything else ours.
        done.last_insert_id() != 1
    }

    /// A text of statements ending in the commit.
    fn ack_tx(_store: &SqlStore<MySql>, _fetch: bool) -> Tx {
        Tx::Begin
    }

    /// Deletes each lease in a statement of its own, sent with the reservation's mark and
    /// the commit, whose counts say which were current: one round trip, after the picks of
    /// the reservation. A job picked again because its lease had run out, acknowledged now,
    /// is gone: not reserved.
    fn ack<'a>(
        store: &'a SqlStore<MySql>,
        conn: &'a mut MySqlConnection,
        deferred: &'a mut Deferred,
        leases: &'a [(i64, &'a str)],
        fetch: Option<&'a ReserveRequest>,
    ) -> BoxFuture<'a, Result<AckedAndReserved>> {
        Box::pin(async move {
            let mut reserved = match fetch {
                Some(request) => {
                    let on = Reserving {
                        store,
                        conn: &mut *conn,
                        deferred: &mut *deferred,
                        request,
                    };
                    MySql::reserve(on).await?
                }
                None => Vec::new(),
            };
            // Tokens are pasted in: one that is not of the form this store makes (hex, a
            // dash, digits) cannot be current.
            let leases: Vec<&(i64, &str)> = leases
                .iter()
                .filter(|(_, t)| {
                    t.len() <= 64 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                .collect();
            let table = store.tables().jobs();
            let mut text: String = leases
                .iter()
                .map(|(id, token)| {
                    format!("DELETE FROM {table} WHERE id = {id} AND token = '{token}' AND reserved_until IS NOT NULL; ")
                })
                .collect();
            text.push_str(&deferred.text);
            text.push_str("COMMIT");
            let counts: Vec<u64> = conn
                .fetch_many(text.as_str())
                .try_filter_map(
                    |step| async move { Ok(step.left().map(|done| done.rows_affected())) },
                )
                .try_collect()
                .await
                .map_err(db::<MySql>)?;
            deferred.text.clear();
            deferred.committed = true;
            let acked: Vec<(i64, String)> = leases
                .iter()
                .zip(counts)
                .filter(|(_, n)| *n > 0)
                .map(|((id, token), _)| (*id, (*token).to_owned()))
                .collect();
            let gone: HashSet<String> = acked.iter().map(|(id, _)| id.to_string()).collect();
            reserved.retain(|r| !gone.contains(&r.lease.job_id.0));
            Ok((acked, reserved))
        })
    }

    /// One text, one round trip: an `UPDATE` per key, in order, then a `SELECT` of what is
    /// left (MySQL has no `UPDATE ... RETURNING`). Keys go in as hex literals and deltas as
    /// numbers: nothing a user sends is read as SQL.
    fn add_deps<'a>(
        store: &'a SqlStore<MySql>,
        conn: &'a mut MySqlConnection,
        changes: &'a [(&'a str, i64)],
    ) -> BoxFuture<'a, Result<Vec<(String, i64)>>> {
        Box::pin(async move {
            let table = store.tables().fill("{waiting_table}");
            let keys: Vec<String> = changes
                .iter()
                .map(|(key, _)| format!("X'{}'", hex(key.as_bytes())))
                .collect();
            let mut text = String::new();
            for (key, (_, delta)) in keys.iter().zip(changes) {
                text.push_str(&format!(
                    "UPDATE {table} SET deps = deps + ({delta}) WHERE `key` = {key}; "
                ));
            }
            text.push_str(&format!(
                "SELECT `key`, deps FROM {table} WHERE `key` IN ({})",
                keys.join(", ")
            ));
            let rows: Vec<sqlx::mysql::MySqlRow> = conn
                .fetch_many(text.as_str())
                .try_filter_map(|step| async move { Ok(step.right()) })
                .try_collect()
                .await
                .map_err(db::<MySql>)?;
            rows.iter()
                .map(|row| {
                    let deps = MySql::int(row, 1).map_err(db::<MySql>)?;
                    Ok((
                        MySql::text(row, 0).map_err(db::<MySql>)?,
                        deps.unwrap_or_default(),
                    ))
                })
                .collect()
        })
    }

    /// Picks each queue's next due jobs, locked, in priority order; the mark that reserves
    /// them goes with the commit. MySQL has no `UPDATE ... RETURNING`: the transaction is
    /// what makes the pick and the mark one step.
    fn reserve(on: Reserving<'_, MySql>) -> BoxFuture<'_, Result<Vec<Reserved>>> {
        Box::pin(async move {
            let limit = on.request.limit.max(1);
            let (prefix, mut ids, mut out) = (new_token(), Vec::new(), Vec::new());
            for queue in &on.request.queues {
                let want = limit - out.len();
                if want == 0 {
                    break;
                }
                for row in pick(on.store, on.conn, queue, on.request, want).await? {
                    let id = MySql::int(&row, 0)
                        .map_err(db::<MySql>)?
                        .unwrap_or_default();
                    let attempts = MySql::int(&row, 1).map_err(db::<MySql>)?.unwrap_or(0) + 1;
                    ids.push(id.to_string());
                    out.push(Reserved {
                        lease: Lease {
                            job_id: JobId(id.to_string()),
                            queue: queue.clone(),
                            token: format!("{prefix}-{id}"),
                        },
                        name: MySql::text(&row, 2).map_err(db::<MySql>)?,
                        payload: MySql::bytes(&row, 3).map_err(db::<MySql>)?,
                        attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
                    });
                }
            }
            if !ids.is_empty() {
                let mark = on.store.state().mark.replace("{prefix}", &prefix);
                let mark = mark.replace("{lease}", &millis(on.request.lease).to_string());
                on.deferred
                    .push_str(&mark.replace("{ids}", &ids.join(", ")));
            }
            Ok(out)
        })
    }
}

/// The server's error number, if the error is the server's.
fn number(error: &sqlx::Error) -> Option<u16> {
    let error = error
        .as_database_error()?
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()?;
    Some(error.number())
}

/// Locks the next `want` due jobs of `queue`, first due first, inside the caller's
/// transaction: after the place the last pick ended if that is recent and enough jobs are
/// there, else from the start of the queue.
async fn pick(
    store: &SqlStore<MySql>,
    conn: &mut MySqlConnection,
    queue: &str,
    request: &ReserveRequest,
    want: usize,
) -> Result<Vec<sqlx::mysql::MySqlRow>> {
    let state = store.state();
    let name = request.name.as_deref();
    let limit = i64::try_from(want).unwrap_or(i64::MAX);
    let cursor = {
        let cursors = state.cursors.lock().unwrap_or_else(|p| p.into_inner());
        cursors
            .get(queue)
            .copied()
            .filter(|c| c.rescanned.elapsed() < RESCAN)
    };
    let mut picked = Vec::new();
    if let Some(c) = cursor {
        let args = [
            Arg::Text(queue),
            Arg::Int(c.due_at),
            Arg::Int(c.id),
            Arg::Int(c.due_at),
            Arg::OptText(name),
            Arg::OptText(name),
            Arg::Int(limit),
        ];
        picked = MySql::fetch(conn, &state.pick_after, &args)
            .await
            .map_err(db::<MySql>)?;
    }
    let key = |row: &sqlx::mysql::MySqlRow| -> Result<(i64, i64)> {
        let int = |i| {
            MySql::int(row, i)
                .map_err(db::<MySql>)
                .map(Option::unwrap_or_default)
        };
        Ok((int(4)?, int(0)?))
    };
    let rescanned = picked.len() < want;
    if rescanned {
        // From the start: this also returns the rows just locked (a transaction does not
        // skip its own locks), so the two lists are merged. Rows locked beyond `want` are
        // let go at the commit.
        let args = [
            Arg::Text(queue),
            Arg::OptText(name),
            Arg::OptText(name),
            Arg::Int(limit),
        ];
        let from_start = MySql::fetch(conn, &state.pick, &args)
            .await
            .map_err(db::<MySql>)?;
        let seen: HashSet<(i64, i64)> = picked.iter().map(key).collect::<Result<_>>()?;
        for row in from_start {
            if !seen.contains(&key(&row)?) {
                picked.push(row);
            }
        }
        let mut keyed: Vec<((i64, i64), sqlx::mysql::MySqlRow)> = picked
            .into_iter()
            .map(|row| Ok((key(&row)?, row)))
            .collect::<Result<_>>()?;
        keyed.sort_unstable_by_key(|(k, _)| *k);
        keyed.truncate(want);
        picked = keyed.into_iter().map(|(_, row)| row).collect();
    }
    if let Some(last) = picked.last() {
        let (due_at, id) = key(last)?;
        let mut cursors = state.cursors.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cursors.entry(queue.to_owned()).or_insert(Cursor {
            due_at,
            id,
            rescanned: Instant::now(),
        });
        if rescanned {
            entry.rescanned = Instant::now();
        }
        if (due_at, id) > (entry.due_at, entry.id) || rescanned {
            (entry.due_at, entry.id) = (due_at, id);
        }
    }
    Ok(picked)
}

impl SqlStore<MySql> {
    /// The server's version string (`SELECT VERSION()`).
    pub fn server_version(&self) -> &str {
        &self.state().version
    }

    /// Whether the server is MariaDB (rather than MySQL).
    pub fn is_mariadb(&self) -> bool {
        self.state().mariadb
    }

    /// The server's plan for picking 8 jobs of `queue` (`EXPLAIN`), one line per table:
    /// `type`, `key` and `Extra`, for tests that check it reads the `{table}_due` index in
    /// order rather than the whole table.
    #[doc(hidden)]
    pub async fn explain_reserve(&self, queue: &str) -> Result<String> {
        let mut conn = self.main().get().await.map_err(db::<MySql>)?;
        let sql = format!("EXPLAIN {}", self.state().pick);
        let args = [
            Arg::Text(queue),
            Arg::OptText(None),
            Arg::OptText(None),
            Arg::Int(8),
        ];
        let rows = MySql::fetch(&mut conn, &sql, &args)
            .await
            .map_err(db::<MySql>)?;
        conn.keep();
        let mut out = Vec::new();
        for row in &rows {
            let field = |name: &str| -> Result<String> {
                let value: Option<Vec<u8>> = sqlx::Row::try_get(row, name).map_err(db::<MySql>)?;
                Ok(String::from_utf8_lossy(&value.unwrap_or_default()).into_owned())
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for (version, mariadb) in [
            ("10.11.19-MariaDB-0+deb12u1", true),
            ("10.6.0-MariaDB", true),
            ("11.4.2-MariaDB", true),
            ("5.5.5-10.11.2-MariaDB", true),
            ("8.0.36", false),
            ("8.4.0-commercial", false),
            ("9.1.0", false),
        ] {
            assert_eq!(check_version(version).unwrap(), mariadb, "{version}");
        }
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
