//! Transactional dispatch: a job pushed on the application's own connection, inside its
//! transaction, exists if and only if that transaction commits.

use futures::future::BoxFuture;
use queue_core::{Error, JobId, PendingDispatch, Result};

use crate::sql::Sql;
use crate::SqlStore;

/// Dispatches a job inside the application's own database transaction: the job exists if and
/// only if the transaction commits, and (on PostgreSQL) idle workers are woken at the
/// commit, not before.
///
/// Import the trait and finish a dispatch with `.within(&mut *tx, &storage)` instead of
/// `.await`: `tx` is the application's `sqlx::Transaction` (or connection) on the store's
/// database (`queue_database::sqlx` is the sqlx this driver uses), `storage` the store whose
/// tables the job goes to. The options of the dispatch
/// (queue, delay, tries, timeout, lock) apply as usual; `.via(..)` is ignored.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use queue_core::{Handle, Job, JobContext, JobError};
/// use queue_database::{DispatchWithin, PgStorage};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, Job)]
/// #[job(name = "send-welcome-email")]
/// struct SendWelcomeEmail {
///     user_id: i64,
/// }
///
/// impl Handle for SendWelcomeEmail {
///     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
///         Ok(())
///     }
/// }
///
/// let storage = PgStorage::connect("postgres://app@localhost/app").await?;
/// let mut tx = storage.pool().begin().await?; // or the application's own pool
/// let user_id: i64 = sqlx::query_scalar("INSERT INTO users (email) VALUES ($1) RETURNING id")
///     .bind("ada@example.com")
///     .fetch_one(&mut *tx)
///     .await?;
/// SendWelcomeEmail { user_id }
///     .dispatch()
///     .on_queue("emails")
///     .within(&mut *tx, &storage)
///     .await?;
/// tx.commit().await?; // the user and the job, or neither
/// # Ok(()) }
/// ```
pub trait DispatchWithin: Sized {
    /// Pushes the job on `conn`, inside its transaction, into `storage`'s tables; returns
    /// the job's id (final once the transaction commits).
    fn within<'a, DB: Sql>(
        self,
        conn: &'a mut DB::Connection,
        storage: &'a SqlStore<DB>,
    ) -> BoxFuture<'a, Result<JobId>>;
}

impl DispatchWithin for PendingDispatch {
    fn within<'a, DB: Sql>(
        self,
        conn: &'a mut DB::Connection,
        storage: &'a SqlStore<DB>,
    ) -> BoxFuture<'a, Result<JobId>> {
        Box::pin(async move {
            let mut ids = dispatch_many_within(conn, storage, [self]).await?;
            ids.pop()
                .ok_or_else(|| Error::backend("database", "push returned no id"))
        })
    }
}

/// Dispatches many jobs inside the application's transaction, by
/// [`DispatchWithin::within`]'s rules; returns their ids in order.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use queue_core::Queue;
/// use queue_database::{dispatch_many_within, MySqlStorage};
///
/// let storage = MySqlStorage::connect("mysql://app@localhost/app").await?;
/// let queue = Queue::new(storage.clone());
/// let mut tx = storage.pool().begin().await?;
/// let jobs = (1..=3).map(|n| queue.dispatch_named("ping", serde_json::json!(n)));
/// let ids = dispatch_many_within(&mut *tx, &storage, jobs).await?;
/// assert_eq!(ids.len(), 3);
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub async fn dispatch_many_within<DB: Sql>(
    conn: &mut DB::Connection,
    storage: &SqlStore<DB>,
    jobs: impl IntoIterator<Item = PendingDispatch>,
) -> Result<Vec<JobId>> {
    let settings = storage.dispatch_settings();
    let jobs = jobs
        .into_iter()
        .map(|job| job.into_new_job(settings))
        .collect::<Result<Vec<_>>>()?;
    let pushed = storage.push_on(conn, jobs).await?;
    Ok(pushed.into_iter().map(|p| p.into_id()).collect())
}
