//! Throughput history: how many jobs the workers ended, failed, and how long the jobs waited
//! from their dispatch (or due time) to their first start, by minute for the last hour and by
//! hour for the last day, as the dashboard's overview charts them.
//!
//! The workers write it, never the dashboard (which reads nothing while no tab is open): at
//! each beat of the worker registry ([`BEAT_EVERY`](crate::worker::BEAT_EVERY)) and when it
//! stops, a worker adds what it counted since its last write to two slots, its minute's and
//! its hour's. The slots are group counters in two rings (`stats:m:{minute % 60}`,
//! `stats:h:{hour % 24}`), so the history never grows: a slot still holding an older minute
//! is taken over by a compare-and-set on its `at` counter, which clears it in the same step.
//! A write costs each worker a read and a write per slot every 10 s, nothing per job.
//!
//! Needs group counters (SQL, Redis on one server, the file driver, memory) and the worker
//! registry; on other stores nothing is recorded and [`history`] says `NotSupported`.
//! Counts come from worker processes' own counters, so a worker killed between two beats
//! loses up to 10 s of its counts (the jobs themselves are not affected).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! use std::time::SystemTime;
//! use queue_core::stats::{self, Tally};
//! use queue_core::Queue;
//!
//! let queue = Queue::connect("memory://").await?;
//! let now = SystemTime::now();
//! stats::record(queue.storage().as_ref(), now, Tally { processed: 5, failed: 1, ..Tally::default() }).await?;
//! let history = stats::history(queue.storage().as_ref(), now).await?;
//! assert_eq!(history.minutes.last().map(|m| (m.processed, m.failed)), Some((5, 1)));
//! # Ok(()) }
//! ```

use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::storage::{counter, unix_millis, Effect, Guard, Storage, StorageExt};

/// What a worker counted over a span: jobs ended, failed for good, and first starts with
/// the sum of their waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Jobs that succeeded.
    pub processed: u64,
    /// Jobs that failed for good (to the failed store).
    pub failed: u64,
    /// First attempts started.
    pub starts: u64,
    /// Their waits from dispatch (or due time) to start, summed, in ms.
    pub wait_ms: u64,
}

impl Tally {
    fn is_empty(&self) -> bool {
        *self == Tally::default()
    }

    /// `self - earlier`, each counter at least 0.
    pub(crate) fn since(&self, earlier: &Tally) -> Tally {
        Tally {
            processed: self.processed.saturating_sub(earlier.processed),
            failed: self.failed.saturating_sub(earlier.failed),
            starts: self.starts.saturating_sub(earlier.starts),
            wait_ms: self.wait_ms.saturating_sub(earlier.wait_ms),
        }
    }
}

/// One minute or one hour of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// When it began.
    pub at: SystemTime,
    /// Jobs that succeeded in it.
    pub processed: u64,
    /// Jobs that failed for good in it.
    pub failed: u64,
    /// First attempts that started in it.
    pub starts: u64,
    /// Their waits summed, in ms.
    pub wait_ms: u64,
}

impl Point {
    /// The mean wait from dispatch to start of the jobs that started in it.
    pub fn mean_wait(&self) -> Option<Duration> {
        (self.starts > 0).then(|| Duration::from_millis(self.wait_ms / self.starts))
    }
}

/// The last 60 minutes and the last 24 hours, oldest first, each ending with the current one
/// (still filling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// By minute.
    pub minutes: Vec<Point>,
    /// By hour.
    pub hours: Vec<Point>,
}

/// A ring: its slots' letter, how many, and how long each is.
struct Ring {
    letter: &'static str,
    slots: i64,
    span_ms: i64,
}

const MINUTES: Ring = Ring {
    letter: "m",
    slots: 60,
    span_ms: 60_000,
};

const HOURS: Ring = Ring {
    letter: "h",
    slots: 24,
    span_ms: 3_600_000,
};

/// The groups' prefix of the workers' history.
const SCOPE: &str = "stats";

impl Ring {
    /// The group of the slot of the span numbered `n` (Unix time divided by the span).
    fn group(&self, scope: &str, n: i64) -> String {
        format!("{scope}:{}:{}", self.letter, n.rem_euclid(self.slots))
    }
}

/// How many times a slot taken over by another worker is read again.
const TRIES: usize = 5;

fn amount(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX / 4)
}

/// Adds `tally` to the minute and the hour of `now`. Nothing to add writes nothing. A store
/// without group counters refuses with `NotSupported`.
pub async fn record(storage: &dyn Storage, now: SystemTime, tally: Tally) -> Result<()> {
    record_in(storage, SCOPE, now, tally).await
}

/// [`record`] into the rings of `scope` instead of the workers' (the conformance suite's,
/// which must not share the slots live workers write).
#[doc(hidden)]
pub async fn record_in(
    storage: &dyn Storage,
    scope: &str,
    now: SystemTime,
    tally: Tally,
) -> Result<()> {
    if tally.is_empty() {
        return Ok(());
    }
    let groups = storage.groups()?;
    let now = unix_millis(now);
    for ring in [&MINUTES, &HOURS] {
        let n = now.div_euclid(ring.span_ms);
        let group = ring.group(scope, n);
        let mut added = false;
        for _ in 0..TRIES {
            let counters = groups.counters(&group).await?;
            let at = counter(&counters, "at");
            if at > n {
                // A worker whose clock runs ahead took the slot over for a later span:
                // this span's counts no longer have a place in the ring.
                added = true;
                break;
            }
            let clear = |name: &str| {
                if at == n {
                    0
                } else {
                    -counter(&counters, name)
                }
            };
            let deltas = vec![
                (
                    "processed".to_owned(),
                    clear("processed") + amount(tally.processed),
                ),
                ("failed".to_owned(), clear("failed") + amount(tally.failed)),
                ("starts".to_owned(), clear("starts") + amount(tally.starts)),
                (
                    "wait_ms".to_owned(),
                    clear("wait_ms") + amount(tally.wait_ms),
                ),
            ];
            let effects = vec![Effect::Count {
                group: group.clone(),
                deltas,
            }];
            // The slot holds this span: add to it, guarded so a worker that took it over in
            // between (it never goes back) makes this one read again. It holds an older
            // span: take it over, clearing it in the same step.
            if groups
                .apply_if(Guard::new(&group, "at", at, n), effects)
                .await?
            {
                added = true;
                break;
            }
        }
        if !added {
            return Err(Error::backend(
                storage.driver(),
                format!("the stats slot {group} changed under {TRIES} writes in a row"),
            ));
        }
    }
    Ok(())
}

/// Reads the last 60 minutes and 24 hours up to `now`. A slot holding another span than the
/// one asked for (nothing was recorded in it) reads as zeros.
pub async fn history(storage: &dyn Storage, now: SystemTime) -> Result<History> {
    history_in(storage, SCOPE, now).await
}

/// [`history`] of the rings of `scope` (see [`record_in`]).
#[doc(hidden)]
pub async fn history_in(storage: &dyn Storage, scope: &str, now: SystemTime) -> Result<History> {
    let groups = storage.groups()?;
    let now = unix_millis(now);
    let mut out = Vec::with_capacity(2);
    for ring in [&MINUTES, &HOURS] {
        let last = now.div_euclid(ring.span_ms);
        let spans: Vec<i64> = (last - ring.slots + 1..=last).collect();
        let reads = spans
            .iter()
            .map(|n| groups.counters_owned(ring.group(scope, *n)));
        let read = futures::future::try_join_all(reads).await?;
        let points = spans
            .iter()
            .zip(read)
            .map(|(n, counters)| {
                let held = counter(&counters, "at") == *n;
                let get = |name: &str| {
                    if held {
                        u64::try_from(counter(&counters, name)).unwrap_or(0)
                    } else {
                        0
                    }
                };
                Point {
                    at: SystemTime::UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(n * ring.span_ms).unwrap_or(0)),
                    processed: get("processed"),
                    failed: get("failed"),
                    starts: get("starts"),
                    wait_ms: get("wait_ms"),
                }
            })
            .collect();
        out.push(points);
    }
    let hours = out.pop().unwrap_or_default();
    let minutes = out.pop().unwrap_or_default();
    Ok(History { minutes, hours })
}

/// [`Groups::counters`](crate::storage::Groups::counters) owning its group name, for joins.
trait CountersOwned {
    fn counters_owned(
        &self,
        group: String,
    ) -> futures::future::BoxFuture<'_, Result<Vec<(String, i64)>>>;
}

impl CountersOwned for dyn crate::storage::Groups + '_ {
    fn counters_owned(
        &self,
        group: String,
    ) -> futures::future::BoxFuture<'_, Result<Vec<(String, i64)>>> {
        Box::pin(async move { self.counters(&group).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    fn at(minute: u64) -> SystemTime {
        // A day boundary, so minute and hour slots line up with the test's numbers.
        SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 20_000 + minute * 60)
    }

    fn tally(processed: u64, failed: u64) -> Tally {
        Tally {
            processed,
            failed,
            starts: processed,
            wait_ms: processed * 100,
        }
    }

    #[tokio::test]
    async fn minutes_and_hours_add_up_and_old_slots_are_cleared() {
        let storage = MemoryStorage::new();
        record(&storage, at(0), tally(3, 1)).await.unwrap();
        record(&storage, at(0), tally(2, 0)).await.unwrap();
        record(&storage, at(1), tally(4, 0)).await.unwrap();
        let h = history(&storage, at(1)).await.unwrap();
        assert_eq!((h.minutes.len(), h.hours.len()), (60, 24));
        assert_eq!(h.minutes[59].at, at(1));
        assert_eq!((h.minutes[58].processed, h.minutes[58].failed), (5, 1));
        assert_eq!(h.minutes[59].processed, 4);
        assert_eq!(h.minutes[58].mean_wait(), Some(Duration::from_millis(100)));
        assert_eq!(h.hours[23].processed, 9, "the hour holds both minutes");
        assert!(h.minutes[..58].iter().all(|p| p.processed == 0));
        // An hour later minute 0's slot is minute 60's: the old counts are gone from it;
        // minute 1 is the oldest of the last 60.
        record(&storage, at(60), tally(7, 0)).await.unwrap();
        let h = history(&storage, at(60)).await.unwrap();
        assert_eq!(h.minutes[59].processed, 7);
        assert_eq!(h.minutes[0].processed, 4);
        assert_eq!(h.minutes.iter().map(|p| p.processed).sum::<u64>(), 11);
        assert_eq!(h.hours[22].processed, 9);
        assert_eq!(h.hours[23].processed, 7);
        // A day later the hour's slot is cleared too.
        record(&storage, at(24 * 60), tally(1, 0)).await.unwrap();
        let h = history(&storage, at(24 * 60)).await.unwrap();
        assert_eq!(
            h.hours[23].processed, 1,
            "hour 0's counts are gone from its slot"
        );
        assert_eq!(h.hours[0].processed, 7);
        assert_eq!(h.hours.iter().map(|p| p.processed).sum::<u64>(), 8);
        // Nothing to add writes nothing.
        record(&storage, at(24 * 60), Tally::default())
            .await
            .unwrap();
        assert_eq!(history(&storage, at(24 * 60)).await.unwrap(), h);
    }

    #[tokio::test]
    async fn concurrent_writers_lose_nothing() {
        let storage = std::sync::Arc::new(MemoryStorage::new());
        let writers = (0..8).map(|_| {
            let storage = storage.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    record(storage.as_ref(), at(5), tally(1, 0)).await.unwrap();
                }
            })
        });
        for writer in writers {
            writer.await.unwrap();
        }
        let h = history(storage.as_ref(), at(5)).await.unwrap();
        assert_eq!(h.minutes[59].processed, 80);
        assert_eq!(h.hours[23].processed, 80);
    }
}
