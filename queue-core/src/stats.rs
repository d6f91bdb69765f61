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

/// The upper bounds of the wait buckets, in ms: a wait is counted in the first bucket whose
/// bound it does not exceed, a longer one in one more bucket after the last
/// ([`WAIT_BUCKETS`] in all). From 10 ms to 30 min, about three buckets a decade.
pub const WAIT_BOUNDS_MS: [u64; 14] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 1_800_000,
];

/// How many wait buckets a [`Waits`] has: one per bound and one for longer waits.
pub const WAIT_BUCKETS: usize = WAIT_BOUNDS_MS.len() + 1;

/// How many first starts waited how long, by bucket ([`WAIT_BOUNDS_MS`]): what the wait
/// percentiles are estimated from, as Prometheus's `histogram_quantile` does.
///
/// ```
/// use std::time::Duration;
/// use queue_core::stats::Waits;
///
/// let mut waits = Waits::default();
/// for ms in [3, 4, 5, 6, 7, 8, 9, 40, 45, 2_000] {
///     waits.add(Duration::from_millis(ms));
/// }
/// assert_eq!(waits.total(), 10);
/// // Half the starts waited at most 10 ms, 9 in 10 at most 50 ms, all of them at most 2.5 s.
/// assert!(waits.quantile(0.5).unwrap() <= Duration::from_millis(10));
/// assert!(waits.quantile(0.9).unwrap() <= Duration::from_millis(50));
/// assert!(waits.quantile(0.99).unwrap() > Duration::from_millis(1_000));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waits(pub [u64; WAIT_BUCKETS]);

impl Waits {
    /// The bucket a wait of `ms` falls in.
    pub fn bucket(ms: u64) -> usize {
        WAIT_BOUNDS_MS
            .iter()
            .position(|bound| ms <= *bound)
            .unwrap_or(WAIT_BOUNDS_MS.len())
    }

    /// Counts one start that waited `wait`.
    pub fn add(&mut self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.0[Self::bucket(ms)] += 1;
    }

    /// How many starts it counts.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Both counts added, bucket by bucket.
    pub fn merged(mut self, other: &Waits) -> Waits {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine = mine.saturating_add(theirs);
        }
        self
    }

    /// The wait that a share `q` (0 to 1) of the starts did not exceed, estimated by linear
    /// interpolation within its bucket (the lower bound of the last bucket, which has no
    /// upper one); `None` when no start was counted. Accurate to a bucket's width.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, n) in self.0.iter().enumerate() {
            if *n == 0 || ((below + n) as f64) < rank {
                below += n;
                continue;
            }
            let lower = if i == 0 { 0 } else { WAIT_BOUNDS_MS[i - 1] };
            let Some(upper) = WAIT_BOUNDS_MS.get(i) else {
                return Some(Duration::from_millis(lower));
            };
            let within = ((rank - below as f64) / *n as f64).clamp(0.0, 1.0);
            let ms = lower as f64 + (upper - lower) as f64 * within;
            return Some(Duration::from_millis(ms.round() as u64));
        }
        WAIT_BOUNDS_MS.last().map(|ms| Duration::from_millis(*ms))
    }

    /// `self - earlier`, bucket by bucket, each at least 0.
    fn since(&self, earlier: &Waits) -> Waits {
        let mut out = *self;
        for (mine, theirs) in out.0.iter_mut().zip(earlier.0) {
            *mine = mine.saturating_sub(theirs);
        }
        out
    }
}

/// The counter name of wait bucket `i` in a history slot.
fn bucket_name(i: usize) -> String {
    format!("w{i}")
}

/// What a worker counted over a span: jobs ended, failed for good, and first starts with
/// the sum of their waits and how they spread.
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
    /// Their waits by bucket.
    pub waits: Waits,
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
            waits: self.waits.since(&earlier.waits),
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
    /// Their waits by bucket.
    pub waits: Waits,
}

impl Point {
    /// The mean wait from dispatch to start of the jobs that started in it.
    pub fn mean_wait(&self) -> Option<Duration> {
        (self.starts > 0).then(|| Duration::from_millis(self.wait_ms / self.starts))
    }

    /// The wait a share `q` of the jobs that started in it did not exceed
    /// ([`Waits::quantile`]): `wait_quantile(0.95)` is the p95.
    pub fn wait_quantile(&self, q: f64) -> Option<Duration> {
        self.waits.quantile(q)
    }

    /// The points added together, at the first one's time: an hour of minutes, a day of
    /// hours.
    pub fn sum(points: &[Point]) -> Option<Point> {
        let first = points.first()?;
        Some(points.iter().fold(
            Point {
                at: first.at,
                processed: 0,
                failed: 0,
                starts: 0,
                wait_ms: 0,
                waits: Waits::default(),
            },
            |acc, p| Point {
                at: acc.at,
                processed: acc.processed + p.processed,
                failed: acc.failed + p.failed,
                starts: acc.starts + p.starts,
                wait_ms: acc.wait_ms + p.wait_ms,
                waits: acc.waits.merged(&p.waits),
            },
        ))
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
            let mut deltas = vec![
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
            // Only the buckets that change: a slot's buckets are mostly empty.
            deltas.extend(
                tally
                    .waits
                    .0
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let name = bucket_name(i);
                        let delta = clear(&name) + amount(*n);
                        (name, delta)
                    })
                    .filter(|(_, delta)| *delta != 0),
            );
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
                    waits: Waits(std::array::from_fn(|i| get(&bucket_name(i)))),
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
        let mut waits = Waits::default();
        waits.0[Waits::bucket(100)] = processed;
        Tally {
            processed,
            failed,
            starts: processed,
            wait_ms: processed * 100,
            waits,
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
        assert_eq!(h.minutes[58].waits.total(), 5, "the buckets add up too");
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

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let mut waits = Waits::default();
        assert_eq!(waits.quantile(0.5), None, "no start, no percentile");
        // 100 starts spread evenly over (100 ms, 250 ms]: the bucket's width.
        waits.0[Waits::bucket(200)] = 100;
        assert_eq!(waits.quantile(0.5), Some(Duration::from_millis(175)));
        assert_eq!(waits.quantile(1.0), Some(Duration::from_millis(250)));
        // 900 more at most 10 ms: the median moves into the first bucket, the p99 stays
        // in the 250 ms one.
        waits.0[0] = 900;
        assert_eq!(waits.quantile(0.5), Some(Duration::from_millis(6)));
        assert_eq!(waits.quantile(0.95), Some(Duration::from_millis(175)));
        // Longer than the last bound: the bound, the most the buckets can tell.
        let mut long = Waits::default();
        long.add(Duration::from_secs(7_200));
        assert_eq!(long.quantile(0.5), Some(Duration::from_millis(1_800_000)));
        assert_eq!(Waits::bucket(10), 0);
        assert_eq!(Waits::bucket(11), 1);
        assert_eq!(Waits::bucket(u64::MAX), WAIT_BUCKETS - 1);
    }

    #[tokio::test]
    async fn buckets_are_cleared_with_their_slot() {
        let storage = MemoryStorage::new();
        let mut slow = Tally {
            starts: 1,
            wait_ms: 60_000,
            ..Tally::default()
        };
        slow.waits.add(Duration::from_secs(60));
        record(&storage, at(0), slow).await.unwrap();
        let mut fast = Tally {
            starts: 1,
            wait_ms: 5,
            ..Tally::default()
        };
        fast.waits.add(Duration::from_millis(5));
        record(&storage, at(60), fast).await.unwrap();
        let h = history(&storage, at(60)).await.unwrap();
        let last = h.minutes[59];
        assert_eq!(last.waits.total(), 1, "minute 0's slow start left the slot");
        assert_eq!(last.wait_quantile(0.99), Some(Duration::from_millis(10)));
        let hour = Point::sum(&h.hours).unwrap();
        assert_eq!(hour.waits.total(), 2, "the day keeps both");
        assert_eq!(hour.starts, 2);
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
