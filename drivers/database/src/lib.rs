//! The SQL database driver of `queue-core` (docs to come).

mod hot;
#[cfg(feature = "mysql")]
mod mysql;
mod options;
#[cfg(feature = "postgres")]
mod postgres;
mod retry;
mod schema;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod statements;
mod store;
mod wake;
mod within;

#[cfg(feature = "mysql")]
pub use mysql::{MySqlOptions, MySqlStorage};
pub use options::SqlOptions;
#[cfg(feature = "postgres")]
pub use postgres::{PgOptions, PgStorage};
pub use schema::{
    schema_for_url, schema_sql, Dialect, Tables, DEFAULT_FAILED_TABLE, DEFAULT_TABLE,
};
pub use sql::Sql;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStorage, Synchronous};
pub use store::SqlStore;
pub use within::{dispatch_many_within, DispatchWithin};
