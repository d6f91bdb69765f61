//! Small pieces every dialect's storage uses: turning stored values into the trait's types,
//! capping durations, splitting batches into statements of fixed sizes, and the length of an
//! idle wait.

use std::time::Duration;

use queue_core::storage::duration_millis;
use queue_core::{Error, Lease};

/// Durations are stored as milliseconds added to the server's clock; capping them keeps the
/// sum inside a 64-bit integer while still meaning "forever".
pub(crate) const MAX_MILLIS: i64 = i64::MAX / 4;

/// A duration in milliseconds, capped at [`MAX_MILLIS`].
pub(crate) fn millis(duration: Duration) -> i64 {
    duration_millis(duration).min(MAX_MILLIS)
}

/// A stored text that may not be UTF-8 (or may be NULL, in a row written by hand).
pub(crate) fn text(bytes: Option<Vec<u8>>) -> String {
    match bytes {
        None => String::new(),
        Some(bytes) => String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// A stored count, never negative.
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A stored attempt count, clamped into `u32`.
pub(crate) fn attempts(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// The error of a lease that is no longer the job's current one.
pub(crate) fn lease_lost(lease: &Lease) -> Error {
    Error::LeaseLost {
        job_id: lease.job_id.0.clone(),
    }
}

/// Rows per multi-row statement, largest first. Taken greedily, any count is a sum of these
/// with at most one statement under ten rows: one row is one statement, 57 are six, 1,000
/// are ten; and only these eleven texts are ever prepared per kind of statement.
#[cfg_attr(not(any(feature = "sqlite", feature = "mysql")), allow(dead_code))]
pub(crate) const CHUNKS: [usize; 11] = [100, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1];

/// The sizes, from [`CHUNKS`], that `total` rows are split into, largest first.
#[cfg_attr(not(any(feature = "sqlite", feature = "mysql")), allow(dead_code))]
pub(crate) fn chunk_sizes(total: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut left = total;
    for size in CHUNKS {
        while left >= size {
            sizes.push(size);
            left -= size;
        }
    }
    sizes
}

/// How long an idle worker sleeps when nothing wakes it: the worker's `timeout`, but never
/// past the next due job (`due_in_ms`: milliseconds until it is due, negative when overdue).
/// Something overdue that the last reserve did not take (another job name, another worker's
/// row lock) must not turn the wait into a busy loop, so an overdue job still allows a short
/// pause.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(dead_code)
)]
pub(crate) fn idle_sleep(due_in_ms: Option<i64>, timeout: Duration) -> Duration {
    match due_in_ms {
        Some(due) => {
            let due = if due <= 0 { 25 } else { due.unsigned_abs() };
            timeout.min(Duration::from_millis(due))
        }
        None => timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_add_up() {
        for total in [0, 1, 9, 10, 57, 100, 101, 1000, 1234] {
            let sizes = chunk_sizes(total);
            assert_eq!(sizes.iter().sum::<usize>(), total);
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]));
        }
        assert_eq!(chunk_sizes(57), vec![10, 10, 10, 10, 10, 7]);
    }

    #[test]
    fn sleeps() {
        let t = Duration::from_secs(3);
        assert_eq!(idle_sleep(None, t), t);
        assert_eq!(idle_sleep(Some(-5), t), Duration::from_millis(25));
        assert_eq!(idle_sleep(Some(200), t), Duration::from_millis(200));
        assert_eq!(idle_sleep(Some(10_000), t), t);
    }

    #[test]
    fn texts() {
        assert_eq!(text(None), "");
        assert_eq!(text(Some(vec![0xff, b'A'])), "\u{fffd}A");
        assert_eq!(attempts(-3), 0);
        assert_eq!(count(-1), 0);
    }
}
