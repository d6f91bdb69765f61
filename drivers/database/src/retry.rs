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
//! statement that waited, so a transaction that met one is rolled back explicitly (the
//! store's `unit`) before the next attempt.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use queue_core::Error;

/// Attempts after the first, at most.
pub(crate) const RETRIES: u32 = 5;

/// The wait before the first retry; it doubles each time (5, 10, 20, 40, 80 ms), and each
/// wait is drawn at random between half of it and all of it, so that the transactions that
/// met do not meet again at once.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// A transient conflict the server reported, and undid the work for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// MySQL 1213 (SQLSTATE 40001), PostgreSQL 40P01: the whole transaction was rolled back.
    Deadlock,
    /// MySQL 1205 (`innodb_lock_wait_timeout`): the statement was rolled back, the
    /// transaction is still open. PostgreSQL 55P03 (`lock_timeout`): the transaction was
    /// aborted.
    LockWaitTimeout,
    /// PostgreSQL 40001, under `REPEATABLE READ` or `SERIALIZABLE` (a server or role
    /// default): the transaction was rolled back. (MySQL reports its serialization failures
    /// as deadlocks.)
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

/// The retry policy of one store, and the count of retries it made.
pub(crate) struct Retry {
    driver: &'static str,
    classify: fn(&sqlx::Error) -> Option<Conflict>,
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
    pub(crate) fn new(
        driver: &'static str,
        classify: fn(&sqlx::Error) -> Option<Conflict>,
    ) -> Retry {
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

    /// Whether an operation that failed with `error` after `retries` retries is to be run
    /// again: only after a conflict, at most [`RETRIES`] times; the backoff is slept here.
    /// Each attempt must be the whole operation, on a connection of its own, and must leave
    /// nothing open when it fails.
    pub(crate) async fn again(
        &self,
        operation: &'static str,
        error: &Error,
        retries: &mut u32,
    ) -> bool {
        let Some(conflict) = self.conflict(error) else {
            return false;
        };
        if *retries == RETRIES {
            tracing::warn!(
                driver = self.driver,
                operation,
                %conflict,
                %error,
                "still conflicting after {RETRIES} retries: giving up"
            );
            return false;
        }
        *retries += 1;
        self.retried.fetch_add(1, Ordering::Relaxed);
        let wait = backoff(*retries);
        tracing::debug!(
            driver = self.driver,
            operation,
            %conflict,
            %error,
            retry = *retries,
            ?wait,
            "transient conflict: the server undid the attempt, running it again"
        );
        tokio::time::sleep(wait).await;
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for a dialect: a pool timeout plays the conflict (a real server error
    /// cannot be built outside sqlx).
    fn timeouts_conflict(error: &sqlx::Error) -> Option<Conflict> {
        matches!(error, sqlx::Error::PoolTimedOut).then_some(Conflict::Deadlock)
    }

    fn conflict() -> Error {
        Error::backend("test", sqlx::Error::PoolTimedOut)
    }

    /// Runs `attempt` as the store runs an operation: again while [`Retry::again`] says so.
    /// The number of attempts, and the last error.
    async fn attempts(
        retry: &Retry,
        mut attempt: impl FnMut(u32) -> Option<Error>,
    ) -> (u32, Option<Error>) {
        let (mut calls, mut retries) = (0, 0);
        loop {
            calls += 1;
            match attempt(calls) {
                Some(error) if retry.again("op", &error, &mut retries).await => {}
                last => return (calls, last),
            }
        }
    }

    #[tokio::test]
    async fn a_conflict_is_retried_until_it_passes() {
        let retry = Retry::new("test", timeouts_conflict);
        let (calls, last) = attempts(&retry, |n| (n < 3).then(conflict)).await;
        assert!(last.is_none(), "the third attempt passes");
        assert_eq!((calls, retry.retried()), (3, 2));
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let retry = Retry::new("test", timeouts_conflict);
        let (calls, last) = attempts(&retry, |_| Some(conflict())).await;
        assert!(retry.conflict(&last.expect("gives up")).is_some());
        assert_eq!((calls, retry.retried()), (RETRIES + 1, u64::from(RETRIES)));
    }

    /// A lost connection (or anything that is not a conflict the server undid) surfaces at
    /// once: the attempt may have committed.
    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let retry = Retry::new("test", timeouts_conflict);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let errors: [fn(std::io::Error) -> Error; 3] = [
            |io| Error::backend("test", sqlx::Error::Io(io)),
            |_| Error::backend("test", sqlx::Error::WorkerCrashed),
            |_| Error::LeaseLost {
                job_id: "1".to_owned(),
            },
        ];
        for error in errors {
            let kind = reset.kind();
            let (calls, last) = attempts(&retry, |_| Some(error(kind.into()))).await;
            assert!(last.is_some());
            assert_eq!(calls, 1);
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
}
