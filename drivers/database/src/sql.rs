//! The seam between the store, written once, and the three databases: [`Sql`], what each
//! database supplies (its connections, its statement texts where they differ, its conflict
//! classifier, its reservation), and `Io`, sqlx's executor, binds and decoding behind a few
//! functions, so that the store's code needs no sqlx bounds of its own.

use std::collections::BTreeMap;
use std::future::Future;

use futures::future::BoxFuture;
use queue_core::{ReserveRequest, Reserved, Result};
use sqlx::{Database, Decode, Encode, Executor, Row, Type, ValueRef as _};

use crate::options::SqlOptions;
use crate::retry::Conflict;
use crate::schema::{Dialect, Tables};
use crate::store::{Open, SqlStore, Tx};

/// A database this crate speaks, named by sqlx's type for it: [`sqlx::Sqlite`],
/// [`sqlx::Postgres`], [`sqlx::MySql`] (each behind the cargo feature of its name).
///
/// The trait is sealed: what a database supplies to [`SqlStore`] is this crate's business.
pub trait Sql: sealed::Backend {}

impl<DB: sealed::Backend> Sql for DB {}

/// A value bound to a statement. Lists travel as one JSON text (see `Backend::rows`).
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    /// A number.
    Int(i64),
    /// A number or NULL.
    OptInt(Option<i64>),
    /// A text.
    Text(&'a str),
    /// A text or NULL.
    OptText(Option<&'a str>),
    /// Bytes.
    Bytes(&'a [u8]),
}

/// The type of a column of a JSON list (see `Backend::rows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A 64-bit integer.
    Int,
    /// A text.
    Text,
}

pub(crate) mod sealed {
    use super::*;

    /// The acknowledged `(id, token)` and the jobs reserved.
    pub(crate) type AckedAndReserved = (Vec<(i64, String)>, Vec<Reserved>);

    /// sqlx's executor, binds and decoding for the few types the store uses, written once
    /// for every database through one set of bounds.
    pub trait Io: Database {
        /// Runs one statement with its arguments (prepared, and cached per connection).
        fn execute<'c>(
            conn: &'c mut Self::Connection,
            sql: &'c str,
            args: &'c [Arg<'c>],
        ) -> BoxFuture<'c, sqlx::Result<Self::QueryResult>>;
        /// Runs one statement with its arguments and returns its rows.
        fn fetch<'c>(
            conn: &'c mut Self::Connection,
            sql: &'c str,
            args: &'c [Arg<'c>],
        ) -> BoxFuture<'c, sqlx::Result<Vec<Self::Row>>>;
        /// Runs statements without arguments, unprepared, in one round trip (`BEGIN`,
        /// `COMMIT`, MySQL's mark and commit, migrations).
        fn script<'c>(
            conn: &'c mut Self::Connection,
            sql: &'c str,
        ) -> BoxFuture<'c, sqlx::Result<()>>;
        /// A number column, of any integer width; NULL is `None`.
        fn int(row: &Self::Row, i: usize) -> sqlx::Result<Option<i64>>;
        /// A text column, decoded leniently: NULL is empty, bytes that are not UTF-8 are
        /// replaced (rows written by hand, binary columns).
        fn text(row: &Self::Row, i: usize) -> sqlx::Result<String>;
        /// A text column that may be NULL.
        fn opt_text(row: &Self::Row, i: usize) -> sqlx::Result<Option<String>>;
        /// A bytes column; NULL is empty.
        fn bytes(row: &Self::Row, i: usize) -> sqlx::Result<Vec<u8>>;
    }

    impl<DB> Io for DB
    where
        DB: Database,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
        for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
        for<'q> i32: Decode<'q, DB> + Type<DB>,
        for<'q> Option<i64>: Encode<'q, DB>,
        for<'q> &'q str: Encode<'q, DB> + Type<DB>,
        for<'q> Option<&'q str>: Encode<'q, DB>,
        for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
        for<'q> String: Decode<'q, DB> + Type<DB>,
        for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
        usize: sqlx::ColumnIndex<DB::Row>,
    {
        fn execute<'c>(
            conn: &'c mut DB::Connection,
            sql: &'c str,
            args: &'c [Arg<'c>],
        ) -> BoxFuture<'c, sqlx::Result<DB::QueryResult>> {
            Box::pin(async move { bind(sqlx::query(sql), args).execute(conn).await })
        }

        fn fetch<'c>(
            conn: &'c mut DB::Connection,
            sql: &'c str,
            args: &'c [Arg<'c>],
        ) -> BoxFuture<'c, sqlx::Result<Vec<DB::Row>>> {
            Box::pin(async move { bind(sqlx::query(sql), args).fetch_all(conn).await })
        }

        fn script<'c>(
            conn: &'c mut DB::Connection,
            sql: &'c str,
        ) -> BoxFuture<'c, sqlx::Result<()>> {
            // A bare `&str` goes without arguments, so MySQL takes several statements in
            // its text protocol.
            Box::pin(async move { conn.execute(sql).await.map(drop) })
        }

        fn int(row: &DB::Row, i: usize) -> sqlx::Result<Option<i64>> {
            let value = row.try_get_raw(i)?;
            if value.is_null() {
                return Ok(None);
            }
            let ty = value.type_info().into_owned();
            if <i64 as Type<DB>>::compatible(&ty) {
                row.try_get(i).map(Some)
            } else {
                row.try_get::<i32, _>(i).map(|n| Some(i64::from(n)))
            }
        }

        fn text(row: &DB::Row, i: usize) -> sqlx::Result<String> {
            let value = row.try_get_raw(i)?;
            if value.is_null() {
                return Ok(String::new());
            }
            let ty = value.type_info().into_owned();
            if <Vec<u8> as Type<DB>>::compatible(&ty) {
                let bytes: Vec<u8> = row.try_get(i)?;
                Ok(String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
            } else {
                row.try_get(i)
            }
        }

        fn opt_text(row: &DB::Row, i: usize) -> sqlx::Result<Option<String>> {
            if row.try_get_raw(i)?.is_null() {
                return Ok(None);
            }
            Self::text(row, i).map(Some)
        }

        fn bytes(row: &DB::Row, i: usize) -> sqlx::Result<Vec<u8>> {
            Ok(row.try_get::<Option<Vec<u8>>, _>(i)?.unwrap_or_default())
        }
    }

    fn bind<'q, DB>(
        mut query: sqlx::query::Query<'q, DB, DB::Arguments<'q>>,
        args: &'q [Arg<'q>],
    ) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
    where
        DB: Database,
        i64: Encode<'q, DB> + Type<DB>,
        Option<i64>: Encode<'q, DB>,
        &'q str: Encode<'q, DB> + Type<DB>,
        Option<&'q str>: Encode<'q, DB>,
        &'q [u8]: Encode<'q, DB> + Type<DB>,
    {
        for arg in args {
            query = match *arg {
                Arg::Int(n) => query.bind(n),
                Arg::OptInt(n) => query.bind(n),
                Arg::Text(s) => query.bind(s),
                Arg::OptText(s) => query.bind(s),
                Arg::Bytes(b) => query.bind(b),
            };
        }
        query
    }

    /// Statements without arguments to send with the commit (MySQL's mark), unless the
    /// work committed already, or a rollback instead when the work asked for one.
    #[derive(Debug, Default)]
    pub struct Deferred {
        pub(crate) text: String,
        pub(crate) committed: bool,
        pub(crate) undone: bool,
    }

    impl Deferred {
        pub(crate) fn push_str(&mut self, text: &str) {
            self.text.push_str(text);
        }

        /// Ends the transaction with a `ROLLBACK` (and nothing deferred) rather than a
        /// `COMMIT`, though the work succeeded: it found it had nothing to do.
        pub(crate) fn roll_back(&mut self) {
            self.text.clear();
            self.undone = true;
        }
    }

    /// What a reservation works with.
    pub struct Reserving<'a, DB: Backend> {
        pub(crate) store: &'a SqlStore<DB>,
        /// Inside the caller's transaction on MySQL.
        pub(crate) conn: &'a mut DB::Connection,
        pub(crate) deferred: &'a mut Deferred,
        pub(crate) request: &'a ReserveRequest,
    }

    impl<DB: Backend> std::fmt::Debug for Reserving<'_, DB> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Reserving")
                .field("request", self.request)
                .finish_non_exhaustive()
        }
    }

    /// What a database supplies to the store, beyond sqlx: its connections, the texts where
    /// its SQL differs (templates with `{table}`-like placeholders, the PostgreSQL and SQLite
    /// forms by default), how it reports conflicts, and its reservation.
    pub trait Backend: Io + Sized {
        /// The driver's name (`sqlite`, `postgres`, `mysql`).
        const DRIVER: &'static str;
        /// Its schema.
        const DIALECT: Dialect;
        /// Connections of a store unless set.
        const CONNECTIONS: u32 = 10;
        /// What opens a write transaction; `None` where the store's transactions run on
        /// connections without autocommit (MySQL), which start one at their first statement.
        const BEGIN: Option<&'static str> = Some("BEGIN");
        /// The server's clock in milliseconds since the Unix epoch, fixed for a statement.
        const NOW: &'static str;
        /// Locks the rows a `SELECT` from `{table} t` reads, until the commit.
        const FOR_UPDATE: &'static str = " FOR UPDATE";
        /// Locks the rows a `SELECT` from `{table} t` reads against changes, until the end
        /// of the statement's transaction (a fenced record's lease row: a settle waits).
        const FOR_SHARE: &'static str = " FOR SHARE OF t";
        /// Ends an `INSERT` into `{records_table}`: a row of the same (job id, kind) takes
        /// the new value and expiry.
        const UPSERT_RECORD: &'static str = " ON CONFLICT (job_id, kind) DO UPDATE SET \
             value = excluded.value, expires_at = excluded.expires_at";
        /// Ends an `INSERT` into `{workers_table}`: a row of the same id takes the new entry
        /// and expiry.
        const UPSERT_WORKER: &'static str = " ON CONFLICT (id) DO UPDATE SET \
             entry = excluded.entry, expires_at = excluded.expires_at";
        /// Ends an `INSERT` into `{values_table}`: a row of the same (group, name) takes the
        /// new value.
        const UPSERT_VALUE: &'static str =
            " ON CONFLICT (grp, name) DO UPDATE SET value = excluded.value";
        /// Deletes up to `{chunk}` expired records (`{now}`): one chunk of a prune. The outer
        /// condition is checked again on a row a concurrent write changed, so a record
        /// written again meanwhile stays.
        const PRUNE_RECORDS: &'static str = "DELETE FROM {records_table} \
             WHERE (job_id, kind) IN (SELECT job_id, kind FROM {records_table} \
             WHERE expires_at <= {now} LIMIT {chunk}) AND expires_at <= {now}";
        /// The most rows in one `INSERT` of jobs.
        const CHUNK: usize = 1000;
        /// The type a number is cast to to become text.
        const TEXT: &'static str = "TEXT";
        /// The type a value is cast to to become bytes (a row written by hand may hold
        /// anything in SQLite).
        const BLOB: &'static str;
        /// The empty bytes.
        const NO_BYTES: &'static str;
        /// The locks table's key column, quoted.
        const KEY: &'static str = "key";
        /// The rows of the JSON array of arrays bound at this place, as a derived table `l`
        /// with `{columns}`, each an [`INT`](Self::INT) or a [`STR`](Self::STR) at `{i}` named
        /// `{name}`.
        const ROWS: &'static str;
        /// A number column of [`ROWS`](Self::ROWS).
        const INT: &'static str;
        /// A text column of [`ROWS`](Self::ROWS).
        const STR: &'static str;
        /// `UPDATE {table} t` joined with `{rows}` on `t.id = l.id`, setting `{set}`.
        const UPDATE_JOIN: &'static str =
            "UPDATE {table} AS t SET {set} FROM {rows} WHERE t.id = l.id";
        /// `DELETE` from `{table}` the rows whose id is in `{rows}`.
        const DELETE_JOIN: &'static str = "DELETE FROM {table} AS t USING {rows} WHERE t.id = l.id";
        /// `DELETE` from `{table}` the reserved rows whose `(id, token)` is in `{rows}`,
        /// returning them (not on MySQL).
        const ACK: &'static str = "DELETE FROM {table} AS t USING {rows} WHERE t.id = l.id \
             AND t.token = l.token AND t.reserved_until IS NOT NULL RETURNING t.id, t.token";
        /// Adds the inserted `value` to the row's on a conflict over `{conflict}`.
        const ADD: &'static str =
            "ON CONFLICT ({conflict}) DO UPDATE SET value = {table}.value + excluded.value";
        /// Bytes from the hex text `{x}` (a waiting job's payload travels in a JSON list).
        const UNHEX: &'static str;
        /// Ends the `INSERT ... SELECT` of waiting jobs: a row whose key is taken is skipped.
        const HOLD_NEW: &'static str = " ON CONFLICT ({key}) DO NOTHING";
        /// Ends the `INSERT` of a guard's counter ([`Groups::apply_if`]): a row of the same
        /// (group, name) is skipped. MySQL refuses it with a duplicate-key error instead
        /// ([`duplicate`](Self::duplicate)): `INSERT IGNORE` would also let strict mode's
        /// errors through as warnings, and a no-op `ON DUPLICATE KEY UPDATE` counts the
        /// row it leaves as changed under `CLIENT_FOUND_ROWS`, as an insert is.
        ///
        /// [`Groups::apply_if`]: queue_core::storage::Groups::apply_if
        const GUARD_NEW: &'static str = " ON CONFLICT (grp, name) DO NOTHING";
        /// Skips a job whose claim is held (MySQL refuses it with an error instead).
        const SKIP_HELD: &'static str = " ON CONFLICT (claim) WHERE claim IS NOT NULL DO NOTHING";
        /// The `{insert}` of jobs (with `{skip}`) returning their ids in order, where the
        /// server can (and waking `{channel}`'s listeners on PostgreSQL).
        const RETURNING: &'static str = "{insert}{skip} RETURNING id";
        /// Wakes other processes' waiters for a JSON list of queues (PostgreSQL's `NOTIFY`).
        const NOTIFY: Option<&'static str> = None;
        /// Takes a lock: key, owner, ttl ms (see [`lock_taken`](Self::lock_taken)).
        const LOCK: &'static str = "INSERT INTO {locks_table} AS l ({key}, owner, expires_at) \
             VALUES (?, ?, {now} + ?) ON CONFLICT ({key}) DO UPDATE SET owner = excluded.owner, \
             expires_at = excluded.expires_at WHERE l.owner = excluded.owner OR l.expires_at <= {now}";
        /// The queues that hold jobs, sorted (`GROUP BY` on the index's first column is a
        /// loose index scan on MySQL, one probe per queue).
        const QUEUES: &'static str = "SELECT queue FROM {table} GROUP BY queue ORDER BY queue";
        /// Statements that serialise migrations between processes, and end that.
        const MIGRATE: (&'static str, &'static str);
        /// Whether a failed statement leaves the migration's transaction usable, so the
        /// schema version can be read again on the migrating connection (not PostgreSQL: an
        /// error aborts its transaction, so it reads on another connection).
        const MIGRATE_READS_HERE: bool = true;
        /// The knobs of this database in [`SqlOptions`].
        type Knobs: Clone + std::fmt::Debug + Default + Send + Sync + 'static;
        /// What a store keeps for this database alone.
        type State: Send + Sync + 'static;

        /// Opens the connections (and checks the server).
        fn open(
            options: &SqlOptions<Self>,
            tables: &Tables,
        ) -> impl Future<Output = Result<Open<Self>>> + Send;

        /// A transient conflict the server undid the work for (see `retry`). SQLite has
        /// none: a write waits for the file's lock (the busy timeout).
        fn conflict(_error: &sqlx::Error) -> Option<Conflict> {
            None
        }
        /// An insert refused for a duplicate key (MySQL; the others skip it).
        fn duplicate(_error: &sqlx::Error) -> bool {
            false
        }
        /// A migration statement refused because what it adds is there (a column, where
        /// the statement cannot say `IF NOT EXISTS`).
        fn already_applied(_error: &sqlx::Error) -> bool {
            false
        }
        /// The rows a statement changed.
        fn rows_affected(done: &Self::QueryResult) -> u64;
        /// The first id an `INSERT` without `RETURNING` gave (MySQL).
        fn last_insert_id(_done: &Self::QueryResult) -> i64 {
            0
        }
        /// Whether [`LOCK`](Self::LOCK) took the lock.
        fn lock_taken(done: &Self::QueryResult) -> bool {
            Self::rows_affected(done) > 0
        }

        /// Reserves on `conn`, inside the caller's transaction on MySQL (which needs one:
        /// its mark goes into `deferred`, sent with the commit), in one statement elsewhere.
        fn reserve(on: Reserving<'_, Self>) -> BoxFuture<'_, Result<Vec<Reserved>>>;
        /// Whether acknowledgements that carry effects (batch members, chain links) are
        /// fenced by the acknowledgement's own `DELETE ... RETURNING` (one statement deletes
        /// the current leases' jobs and names them), instead of locking the leases first.
        /// Not MySQL, which has no `RETURNING` and defers its delete to the commit.
        const ACK_EFFECTS_BY_DELETE: bool = false;
        /// How a settle of acknowledgements with effects uses its transaction: begun in a
        /// trip of its own, or ([`Tx::Inline`]) by [`INLINE_BEGIN`](Self::INLINE_BEGIN) in
        /// the acknowledgement's text, and committed by
        /// [`ack_effects_end`](Self::ack_effects_end).
        const ACK_EFFECTS_TX: Tx = Tx::Begin;
        /// What begins a transaction in the same text as its first statement (SQLite).
        const INLINE_BEGIN: &'static str = "BEGIN";
        /// The end of a settle of acknowledgements with effects, once the effects but the
        /// counters are applied: the reservation, then the counters. By default a statement
        /// each (the commit follows); under [`Tx::Inline`] one text that commits.
        fn ack_effects_end<'a>(
            store: &'a SqlStore<Self>,
            conn: &'a mut Self::Connection,
            deferred: &'a mut Deferred,
            counts: &'a BTreeMap<(String, String), i64>,
            fetch: Option<&'a ReserveRequest>,
        ) -> BoxFuture<'a, Result<Vec<Reserved>>> {
            Box::pin(async move {
                let reserved = match fetch {
                    Some(request) => {
                        Self::reserve(Reserving {
                            store,
                            conn: &mut *conn,
                            deferred,
                            request,
                        })
                        .await?
                    }
                    None => Vec::new(),
                };
                store.count(conn, counts).await?;
                Ok(reserved)
            })
        }
        /// Whether acknowledging leases (before a reservation when `fetch`) takes a
        /// transaction: not when it is one statement.
        fn ack_tx(_store: &SqlStore<Self>, fetch: bool) -> Tx {
            fetch.into()
        }
        /// Deletes the current ones of `leases` (`(id, token)`), then reserves when `fetch`
        /// says so: the leases it deleted, and the jobs reserved. By default one `DELETE ...
        /// RETURNING`, then [`reserve`](Self::reserve); where they share no transaction
        /// ([`ack_tx`](Self::ack_tx)), a failed reservation leaves the acknowledgements
        /// standing and reserves nothing.
        fn ack<'a>(
            store: &'a SqlStore<Self>,
            conn: &'a mut Self::Connection,
            deferred: &'a mut Deferred,
            leases: &'a [(i64, &'a str)],
            fetch: Option<&'a ReserveRequest>,
        ) -> BoxFuture<'a, Result<AckedAndReserved>> {
            Box::pin(async move {
                let acked = store.ack_json(conn, leases).await?;
                let Some(request) = fetch else {
                    return Ok((acked, Vec::new()));
                };
                let on = Reserving {
                    store,
                    conn,
                    deferred,
                    request,
                };
                match Self::reserve(on).await {
                    Ok(reserved) => Ok((acked, reserved)),
                    // Outside a transaction the acknowledgements are committed: they stand,
                    // and the worker asks for jobs again in its next call.
                    Err(e) if Self::ack_tx(store, true) == Tx::No => {
                        tracing::warn!(error = %e, "reserving after the acknowledgements failed");
                        Ok((acked, Vec::new()))
                    }
                    Err(e) => Err(e),
                }
            })
        }
        /// Adds each `(key, delta)` (in key order, no delta 0) to the dependencies left of the
        /// job waiting under the key, in the caller's transaction: the keys that have one,
        /// with what is left after it. By default one `UPDATE ... RETURNING deps` per key, in
        /// the order given, so that two transactions lock the keys they share in the same
        /// order.
        fn add_deps<'a>(
            store: &'a SqlStore<Self>,
            conn: &'a mut Self::Connection,
            changes: &'a [(&'a str, i64)],
        ) -> BoxFuture<'a, Result<Vec<(String, i64)>>> {
            Box::pin(async move { store.add_deps_each(conn, changes).await })
        }
        /// Whether [`insert_all`](Self::insert_all) inserts any number of jobs without a claim
        /// in one statement (PostgreSQL, with arrays).
        const INSERT_ALL: bool = false;
        /// Inserts jobs without a claim: their ids, in order.
        fn insert_all<'a>(
            _store: &'a SqlStore<Self>,
            _conn: &'a mut Self::Connection,
            _jobs: &'a [queue_core::NewJob],
        ) -> BoxFuture<'a, sqlx::Result<Vec<i64>>> {
            Box::pin(async { Err(sqlx::Error::Protocol("not one statement here".into())) })
        }
        /// Inserts jobs without a claim, all or none, on the calling thread, where the
        /// backend does that faster than through sqlx (SQLite: see its "Pushes on the
        /// calling thread"): their ids, in order. `None`: not here, go through sqlx.
        fn push_here<'a>(
            _store: &'a SqlStore<Self>,
            _jobs: &'a [queue_core::NewJob],
        ) -> BoxFuture<'a, Option<Result<Vec<i64>>>> {
            Box::pin(async { None })
        }
        /// Stops what the store's state runs (PostgreSQL's listener).
        fn close(_state: &Self::State) {}
        /// Makes sure pushes from other processes wake this one's waiters, if the database
        /// can (PostgreSQL's `LISTEN`): whether they do now.
        fn listening(
            _store: &SqlStore<Self>,
            _patience: std::time::Duration,
        ) -> BoxFuture<'_, bool> {
            Box::pin(async { false })
        }
    }
}
