//! [`SqliteOptions`]: the URL, the table names and the knobs of a SQLite store.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use queue_core::{Error, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteSynchronous};

use crate::dialect::{schema_sql, Dialect, Tables, DEFAULT_FAILED_TABLE, DEFAULT_TABLE};

/// How hard SQLite works to get a commit onto the disk (`PRAGMA synchronous`).
///
/// The store always runs in WAL mode. With [`Normal`](Synchronous::Normal), the default, a
/// commit is written to the write-ahead log but not flushed to the disk: a crash of the
/// *process* loses nothing that was committed, but a power loss or an operating-system crash
/// can lose the last transactions (jobs pushed, acknowledged or failed in the last moments;
/// the database itself stays consistent). With [`Full`](Synchronous::Full) every commit is
/// flushed before `push` returns, so it survives a power loss too, at the price of one
/// `fsync` per transaction (a few hundred to a few thousand transactions a second,
/// depending on the disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Synchronous {
    /// Commits survive a crash of the process, not of the machine. Fast.
    #[default]
    Normal,
    /// Commits survive a power loss: each is flushed to the disk.
    Full,
}

impl Synchronous {
    fn to_sqlx(self) -> SqliteSynchronous {
        match self {
            Synchronous::Normal => SqliteSynchronous::Normal,
            Synchronous::Full => SqliteSynchronous::Full,
        }
    }
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

/// How to open a SQLite store: a builder.
///
/// ```
/// use std::time::Duration;
/// use queue_database::{SqliteOptions, Synchronous};
///
/// let options = SqliteOptions::new("sqlite://var/jobs.db")
///     .table("app_jobs")
///     .failed_table("app_failed_jobs")
///     .max_connections(4)
///     .synchronous(Synchronous::Full)
///     .busy_timeout(Duration::from_secs(30));
/// assert_eq!(options.get_url(), "sqlite://var/jobs.db");
/// ```
///
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    url: String,
    table: String,
    failed_table: String,
    max_connections: u32,
    synchronous: Option<Synchronous>,
    busy_timeout: Duration,
    migrate: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            url: "sqlite://jobs.db".to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            failed_table: DEFAULT_FAILED_TABLE.to_owned(),
            max_connections: 4,
            synchronous: None,
            busy_timeout: Duration::from_secs(10),
            migrate: true,
        }
    }
}

impl SqliteOptions {
    /// Options for `url` with every other setting at its default: tables `jobs` and
    /// `failed_jobs`, 4 connections, [`Synchronous::Normal`], a 10 s busy timeout, and the
    /// tables created on connect.
    pub fn new(url: impl Into<String>) -> Self {
        SqliteOptions {
            url: url.into(),
            ..SqliteOptions::default()
        }
    }

    /// The database URL (see the type's docs).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// The jobs table (default `jobs`); the locks table is named after it, `{table}_locks`.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The failed-jobs table (default `failed_jobs`).
    pub fn failed_table(mut self, table: impl Into<String>) -> Self {
        self.failed_table = table.into();
        self
    }

    /// Connections in all (default 4, at least 2): one writes, the others read. SQLite has
    /// one writer at a time per file anyway, so more rarely helps.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// How commits reach the disk (default [`Synchronous::Normal`]; a URL's
    /// `?synchronous=` is used when this is not called).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = Some(synchronous);
        self
    }

    /// How long a write waits for another process's write to finish before it gives up with
    /// "database is locked" (default 10 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Whether connecting creates the tables that are missing (default true).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// The database URL.
    pub fn get_url(&self) -> &str {
        &self.url
    }

    /// The table names, checked.
    pub fn tables(&self) -> Result<Tables> {
        Tables::new(&self.table, &self.failed_table)
    }

    /// The schema these options create (what [`Storage::migrate`](queue_core::Storage::migrate)
    /// applies).
    pub fn schema_sql(&self) -> Result<String> {
        Ok(schema_sql(Dialect::Sqlite, &self.tables()?))
    }

    pub(crate) fn wants_migrate(&self) -> bool {
        self.migrate
    }

    /// Everything checked and turned into what the pools need.
    pub(crate) fn resolve(&self) -> Result<Resolved> {
        let tables = self.tables()?;
        let url = &self.url;
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                Error::Config(format!(
                    "`{url}` is not a SQLite URL: it must start with `sqlite:`"
                ))
            })?;
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let mut synchronous = None;
        let mut memory = path == ":memory:";
        let mut passed = Vec::new();
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "synchronous" => synchronous = Some(value.parse::<Synchronous>()?),
                "mode" | "vfs" | "immutable" => {
                    if key == "mode" && value == "memory" {
                        memory = true;
                    }
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
            sqlx_url.push('?');
            sqlx_url.push_str(&passed.join("&"));
        }
        let synchronous = self.synchronous.or(synchronous).unwrap_or_default();
        let connect = SqliteConnectOptions::from_str(&sqlx_url)
            .map_err(|e| Error::Config(format!("bad SQLite URL `{url}`: {e}")))?
            .create_if_missing(true)
            .busy_timeout(self.busy_timeout)
            .synchronous(synchronous.to_sqlx());
        Ok(Resolved {
            connect,
            tables,
            memory,
            synchronous,
            readers: self.max_connections.max(2) - 1,
            busy_timeout: self.busy_timeout,
        })
    }
}

/// [`SqliteOptions`] checked and ready.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) connect: SqliteConnectOptions,
    pub(crate) tables: Tables,
    pub(crate) memory: bool,
    pub(crate) synchronous: Synchronous,
    pub(crate) readers: u32,
    pub(crate) busy_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let r = SqliteOptions::new("sqlite://jobs.db").resolve().unwrap();
        assert!(!r.memory);
        assert_eq!(r.connect.get_filename(), std::path::Path::new("jobs.db"));
        assert_eq!(r.synchronous, Synchronous::Normal);

        let r = SqliteOptions::new("sqlite:///tmp/x/jobs.db?synchronous=FULL")
            .resolve()
            .unwrap();
        assert_eq!(
            r.connect.get_filename(),
            std::path::Path::new("/tmp/x/jobs.db")
        );
        assert_eq!(r.synchronous, Synchronous::Full);

        let r = SqliteOptions::new("sqlite:///tmp/j.db?synchronous=full")
            .synchronous(Synchronous::Normal)
            .resolve()
            .unwrap();
        assert_eq!(
            r.synchronous,
            Synchronous::Normal,
            "the builder wins over the URL"
        );

        assert!(
            SqliteOptions::new("sqlite::memory:")
                .resolve()
                .unwrap()
                .memory
        );
        assert!(
            SqliteOptions::new("sqlite://:memory:")
                .resolve()
                .unwrap()
                .memory
        );

        for bad in [
            "postgres://x",
            "sqlite://",
            "sqlite://jobs.db?synchronous=off",
            "sqlite://jobs.db?password=x",
        ] {
            assert!(SqliteOptions::new(bad).resolve().is_err(), "{bad}");
        }
        assert!(SqliteOptions::new("sqlite://j.db")
            .table("x;y")
            .resolve()
            .is_err());
    }

    #[test]
    fn connections() {
        assert_eq!(
            SqliteOptions::new("sqlite://j.db")
                .resolve()
                .unwrap()
                .readers,
            3
        );
        let r = SqliteOptions::new("sqlite://j.db")
            .max_connections(1)
            .resolve()
            .unwrap();
        assert_eq!(r.readers, 1);
    }
}
