//! Transactional dispatch: a job pushed on the application's own connection, inside its
//! transaction, exists if and only if that transaction commits.

use futures::future::BoxFuture;
use queue_core::{Error, JobId, NewJob, PendingDispatch, QueueSettings, Result};

mod sealed {
    pub trait Sealed {}
}

/// A connection or transaction of the application that jobs can be dispatched within:
/// `sqlx::Transaction<'_, Postgres>`, `PgConnection`, `PoolConnection<Postgres>` with the
/// `postgres` feature; `sqlx::Transaction<'_, MySql>`, `MySqlConnection`,
/// `PoolConnection<MySql>` with the `mysql` feature.
///
/// Its [`Storage`](DispatchConnection::Storage) is the store whose tables (and dispatch
/// settings) the job goes to: [`PgStorage`](crate::PgStorage) or
/// [`MySqlStorage`](crate::MySqlStorage). The trait is sealed; use it through
/// [`DispatchWithin::within`] and [`dispatch_many_within`].
pub trait DispatchConnection: sealed::Sealed + Send {
    /// The store a dispatch on this connection goes to.
    type Storage: Sync;

    /// Pushes jobs on this connection, in its transaction.
    #[doc(hidden)]
    fn push_jobs<'a>(
        &'a mut self,
        storage: &'a Self::Storage,
        jobs: Vec<NewJob>,
    ) -> BoxFuture<'a, Result<Vec<JobId>>>;

    /// The settings a dispatch is checked against (payload size, queue size limits).
    #[doc(hidden)]
    fn settings(storage: &Self::Storage) -> &QueueSettings;
}

/// Dispatches a job inside the application's own database transaction: the job exists if and
/// only if the transaction commits, and (on PostgreSQL) idle workers are woken at the commit,
/// not before.
///
/// Import the trait and finish a dispatch with `.within(&mut tx, &storage)` instead of
/// `.await`: `tx` is the application's `sqlx::Transaction` (or a bare connection), `storage`
/// the [`PgStorage`](crate::PgStorage) or [`MySqlStorage`](crate::MySqlStorage) whose tables
/// the job goes to. The options of the dispatch (queue, delay, tries, timeout, lock) apply as
/// usual; `.via(..)` is ignored.
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
/// let pool = storage.pool().clone(); // or the application's own pool on the same database
///
/// let mut tx = pool.begin().await?;
/// let user_id: i64 = sqlx::query_scalar("INSERT INTO users (email) VALUES ($1) RETURNING id")
///     .bind("ada@example.com")
///     .fetch_one(&mut *tx)
///     .await?;
/// SendWelcomeEmail { user_id }
///     .dispatch()
///     .on_queue("emails")
///     .within(&mut tx, &storage)
///     .await?;
/// tx.commit().await?; // the user and the job, or neither
/// # Ok(()) }
/// ```
pub trait DispatchWithin: Sized {
    /// Pushes the job on `conn`, inside its transaction, into `storage`'s tables; returns
    /// the job's id (final once the transaction commits).
    fn within<'a, C>(
        self,
        conn: &'a mut C,
        storage: &'a C::Storage,
    ) -> BoxFuture<'a, Result<JobId>>
    where
        C: DispatchConnection + ?Sized;
}

impl DispatchWithin for PendingDispatch {
    fn within<'a, C>(self, conn: &'a mut C, storage: &'a C::Storage) -> BoxFuture<'a, Result<JobId>>
    where
        C: DispatchConnection + ?Sized,
    {
        Box::pin(async move {
            let job = self.into_new_job(C::settings(storage))?;
            let mut ids = conn.push_jobs(storage, vec![job]).await?;
            ids.pop()
                .ok_or_else(|| Error::backend("database", "push returned no id"))
        })
    }
}

/// Dispatches many jobs inside the application's transaction, in one statement per
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
/// let ids = dispatch_many_within(&mut tx, &storage, jobs).await?;
/// assert_eq!(ids.len(), 3);
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub async fn dispatch_many_within<C>(
    conn: &mut C,
    storage: &C::Storage,
    jobs: impl IntoIterator<Item = PendingDispatch>,
) -> Result<Vec<JobId>>
where
    C: DispatchConnection + ?Sized,
{
    let settings = C::settings(storage);
    let jobs = jobs
        .into_iter()
        .map(|job| job.into_new_job(settings))
        .collect::<Result<Vec<_>>>()?;
    conn.push_jobs(storage, jobs).await
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use crate::PgStorage;
    use sqlx::pool::PoolConnection;
    use sqlx::postgres::PgConnection;
    use sqlx::{Postgres, Transaction};

    impl sealed::Sealed for PgConnection {}
    impl DispatchConnection for PgConnection {
        type Storage = PgStorage;

        fn push_jobs<'a>(
            &'a mut self,
            storage: &'a PgStorage,
            jobs: Vec<NewJob>,
        ) -> BoxFuture<'a, Result<Vec<JobId>>> {
            Box::pin(storage.push_on(self, jobs))
        }

        fn settings(storage: &PgStorage) -> &QueueSettings {
            storage.dispatch_settings()
        }
    }

    impl sealed::Sealed for Transaction<'_, Postgres> {}
    impl DispatchConnection for Transaction<'_, Postgres> {
        type Storage = PgStorage;

        fn push_jobs<'a>(
            &'a mut self,
            storage: &'a PgStorage,
            jobs: Vec<NewJob>,
        ) -> BoxFuture<'a, Result<Vec<JobId>>> {
            Box::pin(storage.push_on(self, jobs))
        }

        fn settings(storage: &PgStorage) -> &QueueSettings {
            storage.dispatch_settings()
        }
    }

    impl sealed::Sealed for PoolConnection<Postgres> {}
    impl DispatchConnection for PoolConnection<Postgres> {
        type Storage = PgStorage;

        fn push_jobs<'a>(
            &'a mut self,
            storage: &'a PgStorage,
            jobs: Vec<NewJob>,
        ) -> BoxFuture<'a, Result<Vec<JobId>>> {
            Box::pin(storage.push_on(self, jobs))
        }

        fn settings(storage: &PgStorage) -> &QueueSettings {
            storage.dispatch_settings()
        }
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use crate::MySqlStorage;
    use sqlx::mysql::MySqlConnection;
    use sqlx::pool::PoolConnection;
    use sqlx::{MySql, Transaction};

    impl sealed::Sealed for MySqlConnection {}
    impl DispatchConnection for MySqlConnection {
        type Storage = MySqlStorage;

        fn push_jobs<'a>(
            &'a mut self,
            storage: &'a MySqlStorage,
            jobs: Vec<NewJob>,
        ) -> BoxFuture<'a, Result<Vec<JobId>>> {
            Box::pin(storage.push_on(self, jobs))
        }

        fn settings(storage: &MySqlStorage) -> &QueueSettings {
            storage.dispatch_settings()
        }
    }

    impl sealed::Sealed for Transaction<'_, MySql> {}
    impl DispatchConnection for Transaction<'_, MySql> {
        type Storage = MySqlStorage;

        fn push_jobs<'a>(
            &'a mut self,
            storage: &'a MySqlStorage,
            jobs: Vec<NewJob>,
        ) -> BoxFuture<'a, Result<Vec<JobId>>> {
            Box::pin(storage.push_on(self, jobs))
        }

        fn settings(storage: &MySqlStorage) -> &QueueSettings {
            storage.dispatch_settings()
        }
    }

    impl sealed::Sealed for PoolConnection<MySql> {}
    impl DispatchConnection for PoolConnection<MySql> {
        type Storage = MySqlStorage;

        fn push_jobs<'a>(
            &'a mut self,
            storage: &'a MySqlStorage,
            jobs: Vec<NewJob>,
        ) -> BoxFuture<'a, Result<Vec<JobId>>> {
            Box::pin(storage.push_on(self, jobs))
        }

        fn settings(storage: &MySqlStorage) -> &QueueSettings {
            storage.dispatch_settings()
        }
    }
}
