//! Running an operation again when the server undid it because of a transient conflict
//! with another transaction: a deadlock, a lock wait that timed out, a serialization
//! failure.
//!
//! Only errors after which nothing of the attempt can have been committed are retried: the
//! server answered, on a live connection, that it undid the statement or the whole
//! transaction. Anything else (a lost connection, a pool timeout, a reply that never came)
//! leaves it unknown whether a commit happened, so it surfaces as it is, and the worker's
//! own backoff deals with it: a push whose commit went through but whose answer was lost is
//! never pushed twice.
//!
//! Every attempt runs the whole operation again, from a fresh connection of the store's
//! pool: a deadlock undoes the whole transaction, and a lock-wait timeout (MySQL) only the
//! statement that waited, so a transaction that met one is rolled back explicitly
//! ([`settle`]) before the next attempt.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use queue_core::{Error, Result};

use crate::hot::Hot;

/// Attempts after the first, at most.
pub(crate) const RETRIES: u32 = 5;

/// The wait before the first retry; it doubles each time (5, 10, 20, 40, 80 ms), and each
/// wait is drawn at random between half of it and all of it, so that the transactions that
/// met do not meet again at once.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// A transient conflict the server reported, and undid the work for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// MySQL 1213 (SQLSTATE 40001), PostgreSQL 40P01: the whole transaction was rolled back.
    Deadlock,
    /// MySQL 1205 (`innodb_lock_wait_timeout`): the statement was rolled back, the
    /// transaction is still open. PostgreSQL 55P03 (`lock_timeout`): the transaction was
    /// aborted.
    LockWaitTimeout,
    /// PostgreSQL 40001, under `REPEATABLE READ` or `SERIALIZABLE` (a server or role
    /// default): the transaction was rolled back.
    // MySQL reports its serialization failures as deadlocks (1213).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    SerializationFailure,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conflict::Deadlock => "deadlock",
            Conflict::LockWaitTimeout => "lock wait timeout",
            Conflict::SerializationFailure => "serialization failure",
        })
    }
}

/// Tells a dialect's transient conflicts from every other error.
pub(crate) type Classify = fn(&sqlx::Error) -> Option<Conflict>;

/// MySQL and MariaDB: error 1213 (`ER_LOCK_DEADLOCK`) and 1205 (`ER_LOCK_WAIT_TIMEOUT`).
#[cfg(feature = "mysql")]
pub(crate) fn mysql_conflict(error: &sqlx::Error) -> Option<Conflict> {
    let error = error
        .as_database_error()?
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()?;
    match error.number() {
        1213 => Some(Conflict::Deadlock),
        1205 => Some(Conflict::LockWaitTimeout),
        _ => None,
    }
}

/// PostgreSQL: SQLSTATE 40P01 (`deadlock_detected`), 40001 (`serialization_failure`) and
/// 55P03 (`lock_not_available`, a `lock_timeout` set on the server or the role).
#[cfg(feature = "postgres")]
pub(crate) fn pg_conflict(error: &sqlx::Error) -> Option<Conflict> {
    let error = error
        .as_database_error()?
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?;
    match error.code() {
        "40P01" => Some(Conflict::Deadlock),
        "40001" => Some(Conflict::SerializationFailure),
        "55P03" => Some(Conflict::LockWaitTimeout),
        _ => None,
    }
}

/// The second argument of a [`Retry::on`] statement. It only tells the compiler that what the
/// statement's future borrows (for `'a`) outlives its borrow of the connection (`'c`): a
/// `for<'c>` closure could otherwise borrow nothing but `'static` data.
pub(crate) type Borrows<'c, 'a> = PhantomData<&'c &'a ()>;

/// The retry policy of one store, and the count of retries it made.
pub(crate) struct Retry {
    driver: &'static str,
    classify: Classify,
    retried: AtomicU64,
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("driver", &self.driver)
            .field("retried", &self.retried())
            .finish()
    }
}

impl Retry {
    pub(crate) fn new(driver: &'static str, classify: Classify) -> Retry {
        Retry {
            driver,
            classify,
            retried: AtomicU64::new(0),
        }
    }

    /// How many attempts were made again after a conflict, since the store was opened.
    pub(crate) fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// The conflict behind `error`, if it is one (a backend error from sqlx that the
    /// dialect classifies as a transient conflict).
    pub(crate) fn conflict(&self, error: &Error) -> Option<Conflict> {
        match error {
            Error::Backend { source, .. } => source
                .downcast_ref::<sqlx::Error>()
                .and_then(|e| (self.classify)(e)),
            _ => None,
        }
    }

    /// Runs `attempt` until it succeeds, fails with anything but a conflict, or has been run
    /// [`RETRIES`] times more. Each attempt must be the whole operation, on a connection of
    /// its own, and must leave nothing open when it fails (see [`settle`]).
    pub(crate) async fn run<T, F, Fut>(&self, operation: &'static str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut retries = 0;
        loop {
            let error = match attempt().await {
                Ok(done) => return Ok(done),
                Err(error) => error,
            };
            let Some(conflict) = self.conflict(&error) else {
                return Err(error);
            };
            if retries == RETRIES {
                tracing::warn!(
                    driver = self.driver,
                    operation,
                    %conflict,
                    %error,
                    "still conflicting after {RETRIES} retries: giving up"
                );
                return Err(error);
            }
            retries += 1;
            self.retried.fetch_add(1, Ordering::Relaxed);
            let wait = backoff(retries);
            tracing::debug!(
                driver = self.driver,
                operation,
                %conflict,
                %error,
                retry = retries,
                ?wait,
                "transient conflict: the server undid the attempt, running it again"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Runs one statement as an operation of [`run`](Self::run): each attempt takes a
    /// connection of `hot`, runs `statement` on it and keeps the connection at hand if that
    /// succeeded. After a failure the connection is dropped without being kept, so it goes
    /// back to the pool to be checked (or is closed, from a [discarding](Hot::discarding)
    /// `hot`).
    ///
    /// `statement` gets the connection and a [`Borrows`] marker, to be ignored (`|conn, _|`).
    pub(crate) async fn on<'a, DB, T, F>(
        &self,
        hot: &Hot<DB>,
        operation: &'static str,
        statement: F,
    ) -> Result<T>
    where
        DB: sqlx::Database,
        F: for<'c> Fn(&'c mut DB::Connection, Borrows<'c, 'a>) -> BoxFuture<'c, Result<T>>,
    {
        let statement = &statement;
        self.run(operation, || async move {
            let mut conn = hot
                .get()
                .await
                .map_err(|e| Error::backend(self.driver, e))?;
            let done = statement(&mut conn, PhantomData).await?;
            conn.keep();
            Ok(done)
        })
        .await
    }
}

/// The wait before retry number `retry` (from 1): [`FIRST_BACKOFF`] doubled each time,
/// drawn between half of that and all of it.
fn backoff(retry: u32) -> Duration {
    let full = FIRST_BACKOFF * 2_u32.saturating_pow(retry.saturating_sub(1));
    full.mul_f64(0.5 + unit_random() * 0.5)
}

/// A number in `[0, 1)`, different at each call: the standard library's hasher keys are
/// random per thread and change with every `RandomState`. Plenty for spreading retries.
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // The top 53 bits, as many as an f64 holds exactly.
    (bits >> 11) as f64 / (1_u64 << 53) as f64
}

/// Ends a transaction by its outcome: commits after `Ok`, rolls back after `Err` and
/// returns the error. The explicit rollback matters after a MySQL lock-wait timeout, which
/// undoes only the statement that waited: the transaction's earlier statements, and their
/// locks, would otherwise stay until the connection is next used. If the rollback itself
/// fails, its error is returned instead (the connection's state is unknown: not a conflict,
/// not retried).
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) async fn settle<DB: sqlx::Database, T>(
    tx: sqlx::Transaction<'_, DB>,
    result: Result<T>,
    driver: &'static str,
) -> Result<T> {
    match result {
        Ok(done) => {
            tx.commit().await.map_err(|e| Error::backend(driver, e))?;
            Ok(done)
        }
        Err(error) => {
            tx.rollback().await.map_err(|e| Error::backend(driver, e))?;
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    /// Stands in for a dialect: a pool timeout plays the conflict (a real server error
    /// cannot be built outside sqlx).
    fn timeouts_conflict(error: &sqlx::Error) -> Option<Conflict> {
        matches!(error, sqlx::Error::PoolTimedOut).then_some(Conflict::Deadlock)
    }

    fn conflict() -> Error {
        Error::backend("test", sqlx::Error::PoolTimedOut)
    }

    #[tokio::test]
    async fn a_conflict_is_retried_until_it_passes() {
        let retry = Retry::new("test", timeouts_conflict);
        let calls = AtomicU32::new(0);
        let got = retry
            .run("op", || async {
                if calls.fetch_add(1, Ordering::Relaxed) < 2 {
                    Err(conflict())
                } else {
                    Ok(7)
                }
            })
            .await
            .expect("the third attempt passes");
        assert_eq!(got, 7);
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert_eq!(retry.retried(), 2);
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let retry = Retry::new("test", timeouts_conflict);
        let calls = AtomicU32::new(0);
        let got: Result<()> = retry
            .run("op", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(conflict())
            })
            .await;
        assert!(retry.conflict(&got.expect_err("gives up")).is_some());
        assert_eq!(calls.load(Ordering::Relaxed), RETRIES + 1);
        assert_eq!(retry.retried(), u64::from(RETRIES));
    }

    /// A lost connection (or anything that is not a conflict the server undid) surfaces at
    /// once: the attempt may have committed.
    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let retry = Retry::new("test", timeouts_conflict);
        let errors: [fn() -> Error; 3] = [
            || {
                Error::backend(
                    "test",
                    sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
                )
            },
            || Error::backend("test", sqlx::Error::WorkerCrashed),
            || Error::LeaseLost {
                job_id: "1".to_owned(),
            },
        ];
        for error in errors {
            let calls = AtomicU32::new(0);
            let got: Result<()> = retry
                .run("op", || async {
                    calls.fetch_add(1, Ordering::Relaxed);
                    Err(error())
                })
                .await;
            assert!(got.is_err());
            assert_eq!(calls.load(Ordering::Relaxed), 1);
        }
        assert_eq!(retry.retried(), 0);
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        for retry in 1..=RETRIES {
            let full = FIRST_BACKOFF * 2_u32.pow(retry - 1);
            let wait = backoff(retry);
            assert!(wait >= full / 2 && wait <= full, "{retry}: {wait:?}");
        }
        let draws: std::collections::HashSet<u64> =
            (0..32).map(|_| unit_random().to_bits()).collect();
        assert!(draws.len() > 1, "the jitter varies");
        assert!((0..1000)
            .map(|_| unit_random())
            .all(|x| (0.0..1.0).contains(&x)));
    }

    /// Dialects: errors that are not from the server are never conflicts.
    #[test]
    fn dialects_see_no_conflict_in_client_errors() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        #[cfg(feature = "mysql")]
        {
            assert_eq!(mysql_conflict(&io), None);
            assert_eq!(mysql_conflict(&sqlx::Error::PoolTimedOut), None);
        }
        #[cfg(feature = "postgres")]
        {
            assert_eq!(pg_conflict(&io), None);
            assert_eq!(pg_conflict(&sqlx::Error::PoolTimedOut), None);
        }
        let _ = io;
    }
}
