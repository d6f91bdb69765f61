//! Choosing a driver by URL: the registrations drivers submit through `inventory`, and
//! [`connect`].

use std::sync::Arc;

use futures::future::BoxFuture;

use super::memory::MemoryStorage;
use super::Storage;
use crate::error::Result;

/// Options handed to a driver's connect function when it is chosen by URL.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Table (or key, or directory) name for jobs; `None` uses the driver's default.
    pub table: Option<String>,
    /// Table (or key, or directory) name for failed jobs; `None` uses the driver's default.
    pub failed_table: Option<String>,
    /// Create the backend's tables or directories when connecting.
    pub migrate: bool,
}

impl ConnectOptions {
    /// The defaults: the driver's own table names, no migration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the jobs table (key prefix, directory).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// Sets the failed-jobs table (key prefix, directory).
    pub fn failed_table(mut self, table: impl Into<String>) -> Self {
        self.failed_table = Some(table.into());
        self
    }

    /// Creates what is missing when connecting.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }
}

/// A connect function: URL and options in, storage out.
pub type ConnectFn = fn(String, ConnectOptions) -> BoxFuture<'static, Result<Arc<dyn Storage>>>;

/// A driver that can be chosen by URL scheme. Drivers submit one through `inventory`:
///
/// ```ignore
/// queue_core::__private::inventory::submit! {
///     queue_core::DriverRegistration { schemes: &["sqlite"], connect: connect_sqlite }
/// }
/// ```
#[derive(Debug)]
pub struct DriverRegistration {
    /// URL schemes this driver answers (`sqlite`, `postgres`, `postgresql`).
    pub schemes: &'static [&'static str],
    /// Opens a storage for a URL.
    pub connect: ConnectFn,
}

inventory::collect!(DriverRegistration);

/// Produces the SQL a SQL driver would run to create its tables, for `runall table`.
pub type SchemaFn = fn(&str, &ConnectOptions) -> Result<String>;

/// A SQL driver's schema, by URL scheme, so `runall table` (Rakit's `job:table`) can print the
/// SQL for a team's own migration tool. Drivers without a schema (Redis, files) submit none.
#[derive(Debug)]
pub struct SchemaRegistration {
    /// URL schemes.
    pub schemes: &'static [&'static str],
    /// Returns the SQL for a URL and table names.
    pub schema: SchemaFn,
}

inventory::collect!(SchemaRegistration);

fn scheme_of(url: &str) -> &str {
    url.split_once(':').map(|(s, _)| s).unwrap_or(url)
}

/// The SQL that creates the tables of the store a URL names.
pub fn schema_sql(url: &str, options: &ConnectOptions) -> Result<String> {
    let scheme = scheme_of(url);
    for entry in inventory::iter::<SchemaRegistration> {
        if entry.schemes.contains(&scheme) {
            return (entry.schema)(url, options);
        }
    }
    Err(crate::Error::Config(format!(
        "`{scheme}` stores have no SQL schema to print: `runall table` is for SQL databases (sqlite, postgres, mysql)"
    )))
}

/// Opens the storage a URL names, through the driver registered for its scheme.
///
/// `memory://` always works: it is a fresh in-memory store.
pub async fn connect(url: &str, options: ConnectOptions) -> Result<Arc<dyn Storage>> {
    let scheme = scheme_of(url);
    if scheme == "memory" {
        return Ok(Arc::new(MemoryStorage::new()));
    }
    for driver in inventory::iter::<DriverRegistration> {
        if driver.schemes.contains(&scheme) {
            return (driver.connect)(url.to_owned(), options).await;
        }
    }
    let mut known: Vec<&str> = inventory::iter::<DriverRegistration>
        .into_iter()
        .flat_map(|d| d.schemes.iter().copied())
        .collect();
    known.push("memory");
    known.sort_unstable();
    Err(crate::Error::UnknownScheme {
        scheme: scheme.to_owned(),
        known: known.join(", "),
    })
}
