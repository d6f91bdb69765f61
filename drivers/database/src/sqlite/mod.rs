//! The SQLite driver: [`SqliteStorage`] and its [`SqliteOptions`].

mod options;
mod sql;
mod storage;

pub use options::{SqliteOptions, Synchronous};
pub use storage::SqliteStorage;

use std::sync::Arc;

use futures::future::BoxFuture;
use queue_core::{ConnectOptions, Result, Storage};

queue_core::__private::inventory::submit! {
    queue_core::DriverRegistration { schemes: &["sqlite"], connect: connect_url }
}

/// What `Queue::connect("sqlite://...")` and `runall --connection sqlite://...` call.
fn connect_url(
    url: String,
    options: ConnectOptions,
) -> BoxFuture<'static, Result<Arc<dyn Storage>>> {
    Box::pin(async move {
        let mut sqlite = SqliteOptions::new(url).migrate(options.migrate);
        if let Some(table) = options.table {
            sqlite = sqlite.table(table);
        }
        if let Some(table) = options.failed_table {
            sqlite = sqlite.failed_table(table);
        }
        let storage = SqliteStorage::connect_with(sqlite).await?;
        Ok(Arc::new(storage) as Arc<dyn Storage>)
    })
}
