//! The seam between the store, written once, and the three databases: [`Sql`], what each
//! database supplies (its connections, its statement texts where they differ, its conflict
//! classifier, its reservation), and `Io`, sqlx's executor, binds and decoding behind a few
//! functions, so that the store's code needs no sqlx bounds of its own.

use std::future::Future;

use futures::future::BoxFuture;
use queue_core::{ReserveRequest, Reserved, Result};
use sqlx::{Database, Decode, Encode, Executor, Row, Type, ValueRef as _};

use crate::options::SqlOptions;
use crate::retry::Conflict;
use crate::schema::{Dialect, Tables};
use crate::store::{Open, SqlStore};

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
pub enum Kind {
    /// A 64-bit integer.
    Int,
    /// A text.
    Text,
}

pub(crate) mod sealed {
    use super::*;

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

    /// What a database supplies to the store, beyond sqlx: its connections, the texts where
    /// its SQL differs, how it reports conflicts, and its reservation.
    pub trait Backend: Io + Sized {
        /// The driver's name (`sqlite`, `postgres`, `mysql`).
        const DRIVER: &'static str;
        /// Its schema.
        const DIALECT: Dialect;
        /// Connections of a store unless set.
        const CONNECTIONS: u32;
        /// What opens a write transaction; `None` where the store's transactions run on
        /// connections without autocommit (MySQL), which start one at their first statement.
        const BEGIN: Option<&'static str>;
        /// The server's clock in milliseconds since the Unix epoch, fixed for a statement.
        const NOW: &'static str;
        /// Locks the rows a `SELECT` from `{table} t` reads, until the commit.
        const FOR_UPDATE: &'static str;
        /// The most rows in one `INSERT` of jobs.
        const CHUNK: usize;
        /// The type a number is cast to to become text.
        const TEXT: &'static str;
        /// The type a value is cast to to become bytes (a row written by hand may hold
        /// anything in SQLite).
        const BLOB: &'static str;
        /// The empty bytes.
        const NO_BYTES: &'static str;
        /// The locks table's key column, quoted.
        const KEY: &'static str;
        /// Whether acknowledging a batch is one statement that says which were current
        /// (`DELETE ... RETURNING`): not on MySQL, which locks them first.
        const FAST_ACK: bool;
        /// The knobs of this database in [`SqlOptions`].
        type Knobs: Clone + std::fmt::Debug + Default + Send + Sync + 'static;
        /// What a store keeps for this database alone.
        type State: Send + Sync + 'static;

        /// Opens the connections (and checks the server).
        fn open(
            options: &SqlOptions<Self>,
            tables: &Tables,
        ) -> impl Future<Output = Result<Open<Self>>> + Send;

        /// The rows of the JSON array of arrays bound at this place, as a derived table `l`
        /// with these columns.
        fn rows(columns: &[(&str, Kind)]) -> String;
        /// `UPDATE {table} t` joined with `rows` on `t.id = l.id`, setting `set`.
        fn update_join(table: &str, set: &str, rows: &str) -> String;
        /// `DELETE` from `{table}` the rows whose id is in `rows`.
        fn delete_join(table: &str, rows: &str) -> String;
        /// The clause that adds the inserted `value` to the row's on a conflict over `key`.
        fn add_on_conflict(table: &str, key: &str) -> String;
        /// The `INSERT` of jobs made to return their ids where the server can, to skip a
        /// row whose claim is held (PostgreSQL, SQLite), and to wake listeners (PostgreSQL).
        fn returning_ids(insert: String, returning: bool, tables: &Tables) -> String;
        /// Wakes other processes' waiters for a JSON list of queues (PostgreSQL's `NOTIFY`).
        fn notify(_tables: &Tables) -> Option<String> {
            None
        }
        /// Takes a lock: `{key}`, owner, ttl ms (see [`lock_taken`](Self::lock_taken)).
        fn lock(locks: &str) -> String;
        /// The queues that hold jobs, sorted.
        fn queues(table: &str) -> String;

        /// A transient conflict the server undid the work for (see `retry`).
        fn conflict(error: &sqlx::Error) -> Option<Conflict>;
        /// An insert refused for a duplicate key (MySQL; the others skip it).
        fn duplicate(error: &sqlx::Error) -> bool;
        /// A migration statement refused because what it adds is there (a column).
        fn already_applied(error: &sqlx::Error) -> bool;
        /// The rows a statement changed.
        fn rows_affected(done: &Self::QueryResult) -> u64;
        /// The first id an `INSERT` without `RETURNING` gave (MySQL).
        fn last_insert_id(done: &Self::QueryResult) -> i64;
        /// Whether [`lock`](Self::lock)'s statement took the lock.
        fn lock_taken(done: &Self::QueryResult) -> bool;

        /// Reserves on `conn`, inside the caller's transaction on MySQL (which needs one:
        /// its mark goes into `deferred`, sent with the commit), in one statement elsewhere.
        fn reserve<'a>(
            store: &'a SqlStore<Self>,
            conn: &'a mut Self::Connection,
            deferred: &'a mut String,
            request: &'a ReserveRequest,
        ) -> BoxFuture<'a, Result<Vec<Reserved>>>;
        /// Whether [`ack_and_reserve`](Self::ack_and_reserve) is one statement (PostgreSQL).
        const ACK_AND_RESERVE: bool = false;
        /// Acknowledges `leases` (a JSON list of `[id, token]`) and reserves in one
        /// statement: the acknowledged `(id, token)` and the jobs reserved.
        fn ack_and_reserve<'a>(
            _store: &'a SqlStore<Self>,
            _conn: &'a mut Self::Connection,
            _leases: &'a str,
            _request: &'a ReserveRequest,
        ) -> BoxFuture<'a, Result<(Vec<(i64, String)>, Vec<Reserved>)>> {
            Box::pin(async {
                Err(queue_core::Error::backend(
                    Self::DRIVER,
                    "not one statement here",
                ))
            })
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
        /// Statements that serialise migrations between processes, and end that.
        const MIGRATE: (&'static str, &'static str);
    }
}
