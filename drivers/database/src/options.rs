//! [`SqlOptions`]: the URL, the table names and the knobs of a store. The knobs one database
//! alone has are set in that database's own `impl` block (see [`SqliteOptions`](crate::SqliteOptions),
//! [`PgOptions`](crate::PgOptions), [`MySqlOptions`](crate::MySqlOptions)).

use std::fmt;
use std::time::Duration;

use queue_core::{QueueSettings, Result};

use crate::schema::{schema_sql, Tables, DEFAULT_FAILED_TABLE, DEFAULT_TABLE};
use crate::sql::Sql;

/// How to open a store on the database `DB`: a builder.
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
pub struct SqlOptions<DB: Sql> {
    pub(crate) url: String,
    table: String,
    failed_table: String,
    max_connections: Option<u32>,
    pub(crate) acquire_timeout: Duration,
    pub(crate) idle_poll: Duration,
    pub(crate) migrate: bool,
    pub(crate) settings: QueueSettings,
    pub(crate) knobs: DB::Knobs,
}

impl<DB: Sql> Clone for SqlOptions<DB> {
    fn clone(&self) -> Self {
        SqlOptions {
            url: self.url.clone(),
            table: self.table.clone(),
            failed_table: self.failed_table.clone(),
            max_connections: self.max_connections,
            acquire_timeout: self.acquire_timeout,
            idle_poll: self.idle_poll,
            migrate: self.migrate,
            settings: self.settings.clone(),
            knobs: self.knobs.clone(),
        }
    }
}

impl<DB: Sql> fmt::Debug for SqlOptions<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlOptions")
            .field("url", &queue_core::redact_url(&self.url))
            .field("table", &self.table)
            .field("failed_table", &self.failed_table)
            .field("max_connections", &self.connections())
            .field("migrate", &self.migrate)
            .field("knobs", &self.knobs)
            .finish_non_exhaustive()
    }
}

impl<DB: Sql> SqlOptions<DB> {
    /// Options for `url` with every other setting at its default: tables `jobs` and
    /// `failed_jobs`, 4 connections on SQLite and 10 per pool elsewhere, a 5 s wait for a
    /// connection, the tables created on connect.
    pub fn new(url: impl Into<String>) -> Self {
        SqlOptions {
            url: url.into(),
            table: DEFAULT_TABLE.to_owned(),
            failed_table: DEFAULT_FAILED_TABLE.to_owned(),
            max_connections: None,
            acquire_timeout: Duration::from_secs(5),
            idle_poll: Duration::from_millis(20),
            migrate: true,
            settings: QueueSettings::default(),
            knobs: DB::Knobs::default(),
        }
    }

    /// The database URL (see the crate docs for each database's forms).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// The jobs table (default `jobs`); the locks, group counters, control and waiting-jobs
    /// tables are named after it: `{table}_locks`, `{table}_groups`, `{table}_control`,
    /// `{table}_waiting`.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The failed-jobs table (default `failed_jobs`).
    pub fn failed_table(mut self, table: impl Into<String>) -> Self {
        self.failed_table = table.into();
        self
    }

    /// Connections (per pool on PostgreSQL and MySQL, which have two; in all on SQLite, at
    /// least 2: one writes, the others read).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = Some(max.max(1));
        self
    }

    /// How long an operation waits for a connection (default 5 s) before it fails; while
    /// the server is down, how long each attempt takes to give up.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The longest a waiting worker goes between two looks for jobs where the database cannot
    /// wake it for a push by another process (20 ms by default; never longer than the
    /// worker's `--sleep`). That is MySQL and MariaDB always, and PostgreSQL or SQLite only
    /// when `LISTEN` or the file watch is unavailable. A look is one indexed query per queue
    /// for the next due time: 2 ms after the wait began, then twice as long each time up to
    /// this. Larger values cost the server less while idle and make the first job after a
    /// quiet spell start later.
    pub fn idle_poll(mut self, every: Duration) -> Self {
        self.idle_poll = every;
        self
    }

    /// Whether connecting creates what is missing of the schema (default true).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// The dispatch settings for [`DispatchWithin`](crate::DispatchWithin) (the payload limit
    /// and queue size limits; default [`QueueSettings::default`]). A
    /// [`Queue`](queue_core::Queue) has its own settings for its dispatches.
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

    /// The schema these options create.
    pub fn schema_sql(&self) -> Result<String> {
        Ok(schema_sql(DB::DIALECT, &self.tables()?))
    }

    /// The connections asked for, or the database's default.
    pub(crate) fn connections(&self) -> u32 {
        self.max_connections.unwrap_or(DB::CONNECTIONS)
    }

    /// Opens one connection outside any pool, and closes it. A pool retries a refused
    /// connection until its acquire timeout and then says only "pool timed out"; this says
    /// at once what happened (connection refused, a bad password, an unknown database). A
    /// server that accepts and never answers is given up on after the acquire timeout.
    pub(crate) async fn first_connection(
        &self,
        connect: &<DB::Connection as sqlx::Connection>::Options,
    ) -> Result<()> {
        use sqlx::Connection as _;
        match tokio::time::timeout(self.acquire_timeout, DB::Connection::connect_with(connect))
            .await
        {
            Ok(Ok(conn)) => {
                // Only a probe: the pools open their own.
                let _ = conn.close().await;
                Ok(())
            }
            Ok(Err(e)) => Err(queue_core::Error::backend(DB::DRIVER, e)),
            Err(_) => Err(queue_core::Error::backend(
                DB::DRIVER,
                queue_core::Message(format!(
                    "the server accepted no connection within {} ms (the acquire timeout)",
                    self.acquire_timeout.as_millis()
                )),
            )),
        }
    }

    /// A pool of these options' size and patience, closing connections idle for 5 minutes.
    pub(crate) fn pool(&self) -> sqlx::pool::PoolOptions<DB> {
        sqlx::pool::PoolOptions::new()
            .max_connections(self.connections())
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(Some(Duration::from_secs(300)))
    }
}

/// What `Queue::connect(url)` and `runall --connection url` call, for each database's
/// schemes.
pub(crate) fn connect_url<DB: Sql>(
    url: String,
    options: queue_core::ConnectOptions,
) -> futures::future::BoxFuture<'static, Result<std::sync::Arc<dyn queue_core::Storage>>> {
    Box::pin(async move {
        let mut sql = SqlOptions::<DB>::new(url).migrate(options.migrate);
        if let Some(table) = options.table {
            sql = sql.table(table);
        }
        if let Some(table) = options.failed_table {
            sql = sql.failed_table(table);
        }
        let storage = crate::SqlStore::connect_with(sql).await?;
        Ok(std::sync::Arc::new(storage) as std::sync::Arc<dyn queue_core::Storage>)
    })
}

/// The URL schemes each database answers, for `Queue::connect(url)`.
macro_rules! register {
    ($($feature:literal: $db:ty => $schemes:expr;)*) => {$(
        #[cfg(feature = $feature)]
        queue_core::__private::inventory::submit! {
            queue_core::DriverRegistration { schemes: $schemes, connect: connect_url::<$db> }
        }
    )*};
}

register! {
    "sqlite": sqlx::Sqlite => &["sqlite"];
    "postgres": sqlx::Postgres => &["postgres", "postgresql"];
    "mysql": sqlx::MySql => &["mysql", "mariadb"];
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(feature = "postgres", feature = "mysql"))]
    fn server_urls() {
        use crate::{MySqlOptions, PgOptions};
        let pg = PgOptions::new("postgresql://u:p@h:5433/db?application_name=w").connect_options();
        let my = MySqlOptions::new("mariadb://u:p@h:3307/db").connect_options();
        let (pg, my) = (pg.unwrap(), my.unwrap());
        assert_eq!((pg.get_port(), pg.get_database()), (5433, Some("db")));
        assert_eq!((my.get_port(), my.get_database()), (3307, Some("db")));
        for bad in ["sqlite://x.db", "redis://h", "postgres", "mysql"] {
            assert!(PgOptions::new(bad).connect_options().is_err(), "{bad}");
            assert!(MySqlOptions::new(bad).connect_options().is_err(), "{bad}");
        }
        assert!(PgOptions::new("mysql://h/db").connect_options().is_err());
        assert!(MySqlOptions::new("postgres://h/db")
            .connect_options()
            .is_err());
    }
}
