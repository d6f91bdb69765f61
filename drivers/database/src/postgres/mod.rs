//! The PostgreSQL driver: [`PgStorage`] and its [`PgOptions`].

mod listen;
mod options;
mod sql;
mod storage;

pub use options::PgOptions;
pub use storage::PgStorage;

use std::sync::Arc;

use futures::future::BoxFuture;
use queue_core::{ConnectOptions, Result, Storage};

queue_core::__private::inventory::submit! {
    queue_core::DriverRegistration { schemes: &["postgres", "postgresql"], connect: connect_url }
}

/// What `Queue::connect("postgres://...")` and `runall --connection postgres://...` call.
fn connect_url(
    url: String,
    options: ConnectOptions,
) -> BoxFuture<'static, Result<Arc<dyn Storage>>> {
    Box::pin(async move {
        let mut pg = PgOptions::new(url).migrate(options.migrate);
        if let Some(table) = options.table {
            pg = pg.table(table);
        }
        if let Some(table) = options.failed_table {
            pg = pg.failed_table(table);
        }
        let storage = PgStorage::connect_with(pg).await?;
        Ok(Arc::new(storage) as Arc<dyn Storage>)
    })
}
