//! [`PgOptions`]: the URL, the table names and the knobs of a PostgreSQL store.

use std::str::FromStr;
use std::time::Duration;

use queue_core::{Error, QueueSettings, Result};
use sqlx::postgres::PgConnectOptions;

use crate::dialect::{schema_sql, Dialect, Tables, DEFAULT_FAILED_TABLE, DEFAULT_TABLE};

/// How to open a PostgreSQL store: a builder.
///
/// ```
/// use std::time::Duration;
/// use queue_database::PgOptions;
///
/// let options = PgOptions::new("postgres://app:secret@db.internal:5432/app")
///     .table("app_jobs")
///     .failed_table("app_failed_jobs")
///     .max_connections(16)
///     .acquire_timeout(Duration::from_secs(5));
/// assert_eq!(options.get_url(), "postgres://app:secret@db.internal:5432/app");
/// ```
///
/// # URLs
///
/// `postgres://user:password@host:port/database?param=value` (or `postgresql://`), as
/// `libpq` and sqlx read them: `sslmode`, `sslrootcert`, `application_name`, `options` and
/// the rest of sqlx's parameters pass through. A host may be a Unix socket directory
/// (`postgres://%2Fvar%2Frun%2Fpostgresql/app`).
#[derive(Debug, Clone)]
pub struct PgOptions {
    url: String,
    table: String,
    failed_table: String,
    max_connections: u32,
    acquire_timeout: Duration,
    migrate: bool,
    listen: bool,
    synchronous_worker_commits: bool,
    settings: QueueSettings,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            url: "postgres://localhost/postgres".to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            failed_table: DEFAULT_FAILED_TABLE.to_owned(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            migrate: true,
            listen: true,
            synchronous_worker_commits: false,
            settings: QueueSettings::default(),
        }
    }
}

impl PgOptions {
    /// Options for `url` with every other setting at its default: tables `jobs` and
    /// `failed_jobs`, up to 10 connections, a 5 s wait for a connection, the tables created on
    /// connect, idle workers woken by `LISTEN`, and workers' commits not waiting for the
    /// disk (see [`synchronous_worker_commits`](Self::synchronous_worker_commits)).
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            ..PgOptions::default()
        }
    }

    /// The database URL (see the type's docs).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// The jobs table (default `jobs`); the locks and counters tables are named after it,
    /// `{table}_locks` and `{table}_counters`, and so is the notification channel,
    /// `{table}_added`.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The failed-jobs table (default `failed_jobs`).
    pub fn failed_table(mut self, table: impl Into<String>) -> Self {
        self.failed_table = table.into();
        self
    }

    /// Connections per pool (default 10). A store has two pools: the one
    /// [`PgStorage::pool`](crate::PgStorage::pool) hands out to the application, which
    /// pushes use too, and its own for everything else (a worker uses about two of those at
    /// a time whatever its concurrency: one reserving, one acknowledging). Idle workers add
    /// one connection that listens.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long an operation waits for a connection (default 5 s) before it fails; while the
    /// server is down, this is how long each attempt takes to give up.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Whether connecting creates the tables that are missing (default true).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Whether idle workers `LISTEN` for dispatches (default true): a push notifies, in its
    /// own transaction, and waiting workers wake within milliseconds instead of at their
    /// next poll. Without it, workers poll every `--sleep`.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// Whether a worker's own writes (reserving, acknowledging, releasing, extending,
    /// failing) wait for the write-ahead log to reach the disk (default false).
    ///
    /// Pushes always do: a job is durable once `push` returns. A worker's writes do not by
    /// default (`synchronous_commit = off` for them only), which makes a worker several times
    /// faster on an ordinary disk. What it costs: if the *server machine* crashes (not a
    /// clean restart, which flushes everything), the last fraction of a second of those
    /// writes can be lost, so a job acknowledged just before the crash runs again, or a job
    /// failed just before it goes back to its queue. That is the at-least-once promise every
    /// driver makes anyway. Set this to true to have every acknowledgement on the disk first.
    pub fn synchronous_worker_commits(mut self, synchronous: bool) -> Self {
        self.synchronous_worker_commits = synchronous;
        self
    }

    /// The dispatch settings for [`DispatchWithin`](crate::DispatchWithin) (the payload limit
    /// and queue size limits; default [`QueueSettings::default`]). A [`Queue`](queue_core::Queue)
    /// has its own settings for its dispatches.
    pub fn dispatch_settings(mut self, settings: QueueSettings) -> Self {
        self.settings = settings;
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
        Ok(schema_sql(Dialect::Postgres, &self.tables()?))
    }

    pub(crate) fn wants_migrate(&self) -> bool {
        self.migrate
    }

    pub(crate) fn wants_listen(&self) -> bool {
        self.listen
    }

    pub(crate) fn get_max_connections(&self) -> u32 {
        self.max_connections
    }

    pub(crate) fn get_acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    pub(crate) fn get_synchronous_worker_commits(&self) -> bool {
        self.synchronous_worker_commits
    }

    pub(crate) fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// The URL turned into sqlx's connect options.
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions> {
        let url = &self.url;
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("postgres" | "postgresql")) {
            return Err(Error::Config(format!(
                "`{}` is not a PostgreSQL URL: it must start with postgres:// or postgresql://",
                queue_core::redact_url(url)
            )));
        }
        PgConnectOptions::from_str(url).map_err(|e| {
            Error::Config(format!(
                "bad PostgreSQL URL `{}`: {e}",
                queue_core::redact_url(url)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = PgOptions::new("postgres://u:p@h:5433/db?application_name=w")
            .connect_options()
            .unwrap();
        assert_eq!(o.get_port(), 5433);
        assert_eq!(o.get_database(), Some("db"));
        assert!(PgOptions::new("postgresql://h/db")
            .connect_options()
            .is_ok());
        for bad in ["mysql://h/db", "sqlite://x.db", "postgres"] {
            assert!(PgOptions::new(bad).connect_options().is_err(), "{bad}");
        }
        assert!(PgOptions::new("postgres://h/db")
            .table("a b")
            .tables()
            .is_err());
    }
}
