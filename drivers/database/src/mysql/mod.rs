//! The MySQL and MariaDB driver: [`MySqlStorage`] and its [`MySqlOptions`].

mod options;
mod sql;
mod storage;

pub use options::MySqlOptions;
pub use storage::MySqlStorage;

use std::sync::Arc;

use futures::future::BoxFuture;
use queue_core::{ConnectOptions, Result, Storage};

queue_core::__private::inventory::submit! {
    queue_core::DriverRegistration { schemes: &["mysql", "mariadb"], connect: connect_url }
}

/// What `Queue::connect("mysql://...")` and `runall --connection mysql://...` call.
fn connect_url(
    url: String,
    options: ConnectOptions,
) -> BoxFuture<'static, Result<Arc<dyn Storage>>> {
    Box::pin(async move {
        let mut mysql = MySqlOptions::new(url).migrate(options.migrate);
        if let Some(table) = options.table {
            mysql = mysql.table(table);
        }
        if let Some(table) = options.failed_table {
            mysql = mysql.failed_table(table);
        }
        let storage = MySqlStorage::connect_with(mysql).await?;
        Ok(Arc::new(storage) as Arc<dyn Storage>)
    })
}
