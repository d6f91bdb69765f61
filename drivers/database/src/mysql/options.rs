//! [`MySqlOptions`]: the URL, the table names and the knobs of a MySQL or MariaDB store.

use std::str::FromStr;
use std::time::Duration;

use queue_core::{Error, QueueSettings, Result};
use sqlx::mysql::MySqlConnectOptions;

use crate::dialect::{schema_sql, Dialect, Tables, DEFAULT_FAILED_TABLE, DEFAULT_TABLE};

/// How to open a MySQL or MariaDB store: a builder.
///
/// ```
/// use std::time::Duration;
/// use queue_database::MySqlOptions;
///
/// let options = MySqlOptions::new("mysql://app:secret@db.internal:3306/app")
///     .table("app_jobs")
///     .failed_table("app_failed_jobs")
///     .max_connections(16)
///     .acquire_timeout(Duration::from_secs(5));
/// assert_eq!(options.get_url(), "mysql://app:secret@db.internal:3306/app");
/// ```
///
/// # URLs
///
/// `mysql://user:password@host:port/database?param=value` (`mariadb://` is the same), as
/// sqlx reads them: `ssl-mode`, `ssl-ca`, `socket`, `charset` and the rest of sqlx's
/// parameters pass through.
#[derive(Debug, Clone)]
pub struct MySqlOptions {
    url: String,
    table: String,
    failed_table: String,
    max_connections: u32,
    acquire_timeout: Duration,
    migrate: bool,
    returning: Option<bool>,
    settings: QueueSettings,
}

impl Default for MySqlOptions {
    fn default() -> Self {
        MySqlOptions {
            url: "mysql://localhost/mysql".to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            failed_table: DEFAULT_FAILED_TABLE.to_owned(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            migrate: true,
            returning: None,
            settings: QueueSettings::default(),
        }
    }
}

impl MySqlOptions {
    /// Options for `url` with every other setting at its default: tables `jobs` and
    /// `failed_jobs`, up to 10 connections, a 5 s wait for a connection, and the tables
    /// created on connect.
    pub fn new(url: impl Into<String>) -> Self {
        MySqlOptions {
            url: url.into(),
            ..MySqlOptions::default()
        }
    }

    /// The database URL (see the type's docs).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// The jobs table (default `jobs`); the locks and counters tables are named after it,
    /// `{table}_locks` and `{table}_counters`.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The failed-jobs table (default `failed_jobs`).
    pub fn failed_table(mut self, table: impl Into<String>) -> Self {
        self.failed_table = table.into();
        self
    }

    /// Connections in the pool (default 10). A worker uses about two at a time whatever its
    /// concurrency (one reserving, one acknowledging); the rest serve dispatches, heartbeats
    /// and failures.
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

    /// The dispatch settings for [`DispatchWithin`](crate::DispatchWithin) (the payload limit
    /// and queue size limits; default [`QueueSettings::default`]).
    pub fn dispatch_settings(mut self, settings: QueueSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Forces the statements without `RETURNING` (MySQL's way) on MariaDB too, which has it.
    /// For testing that path on MariaDB; `None` (the default) decides by the server.
    #[doc(hidden)]
    pub fn use_returning(mut self, returning: Option<bool>) -> Self {
        self.returning = returning;
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
        Ok(schema_sql(Dialect::MySql, &self.tables()?))
    }

    pub(crate) fn wants_migrate(&self) -> bool {
        self.migrate
    }

    pub(crate) fn get_max_connections(&self) -> u32 {
        self.max_connections
    }

    pub(crate) fn get_acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    pub(crate) fn get_returning(&self) -> Option<bool> {
        self.returning
    }

    pub(crate) fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// The URL turned into sqlx's connect options, in UTC (the server's clock is read as
    /// `UNIX_TIMESTAMP(NOW(3))`, which a local time zone would shift across a DST change).
    pub(crate) fn connect_options(&self) -> Result<MySqlConnectOptions> {
        let url = &self.url;
        let rest = match url.split_once("://") {
            Some(("mysql" | "mariadb", rest)) => rest,
            _ => {
                return Err(Error::Config(format!(
                    "`{}` is not a MySQL URL: it must start with mysql:// or mariadb://",
                    queue_core::redact_url(url)
                )))
            }
        };
        let options = MySqlConnectOptions::from_str(&format!("mysql://{rest}")).map_err(|e| {
            Error::Config(format!(
                "bad MySQL URL `{}`: {e}",
                queue_core::redact_url(url)
            ))
        })?;
        Ok(options.timezone(Some("+00:00".to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = MySqlOptions::new("mariadb://u:p@h:3307/db")
            .connect_options()
            .unwrap();
        assert_eq!(o.get_port(), 3307);
        assert_eq!(o.get_database(), Some("db"));
        assert!(MySqlOptions::new("mysql://h/db").connect_options().is_ok());
        for bad in ["postgres://h/db", "sqlite://x.db", "mysql"] {
            assert!(MySqlOptions::new(bad).connect_options().is_err(), "{bad}");
        }
        assert!(MySqlOptions::new("mysql://h/db")
            .table("1x")
            .tables()
            .is_err());
    }
}
