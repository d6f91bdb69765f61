//! Statistics that workers keep in the store, so that every worker of a store adds up, and
//! the restart signal.
//!
//! Counter names:
//!
//! | counter | meaning |
//! |---|---|
//! | `stats:job:{name}:processed` / `:failed` | totals per job name |
//! | `stats:queue:{queue}:processed` / `:failed` | totals per queue |
//! | `rate:{queue}:{minute}:processed` / `:failed` | per minute since the Unix epoch, kept two hours |
//! | `control:restart` | bumped by `runall restart`; workers that see it change stop gracefully |

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::error::Result;
use crate::storage::{unix_millis, Storage};

/// The counter `runall restart` bumps.
pub const RESTART: &str = "control:restart";

/// How long per-minute throughput buckets are kept.
pub const RATE_TTL: Duration = Duration::from_secs(2 * 3600);

/// What happened to a job, for the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Processed,
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::Failed => "failed",
        }
    }
}

/// The current minute since the Unix epoch.
pub fn minute_of(time: SystemTime) -> i64 {
    unix_millis(time) / 60_000
}

/// Counts kept in memory between flushes.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    totals: Mutex<HashMap<String, i64>>,
    rates: Mutex<HashMap<String, i64>>,
}

impl Recorder {
    pub(crate) fn record(&self, name: &str, queue: &str, outcome: Outcome) {
        let what = outcome.as_str();
        if let Ok(mut totals) = self.totals.lock() {
            *totals
                .entry(format!("stats:job:{name}:{what}"))
                .or_default() += 1;
            *totals
                .entry(format!("stats:queue:{queue}:{what}"))
                .or_default() += 1;
        }
        let minute = minute_of(SystemTime::now());
        if let Ok(mut rates) = self.rates.lock() {
            *rates
                .entry(format!("rate:{queue}:{minute}:{what}"))
                .or_default() += 1;
        }
    }

    /// Writes what was counted since the last flush. On error the counts are kept for the
    /// next flush.
    pub(crate) async fn flush(&self, storage: &dyn Storage) -> Result<()> {
        let totals: Vec<(String, i64)> = match self.totals.lock() {
            Ok(mut t) => t.drain().collect(),
            Err(_) => Vec::new(),
        };
        let rates: Vec<(String, i64)> = match self.rates.lock() {
            Ok(mut r) => r.drain().collect(),
            Err(_) => Vec::new(),
        };
        let mut result = Ok(());
        if !totals.is_empty() {
            if let Err(e) = storage.add_counters(&totals, None).await {
                self.put_back(&self.totals, totals);
                result = Err(e);
            }
        }
        if !rates.is_empty() {
            if let Err(e) = storage.add_counters(&rates, Some(RATE_TTL)).await {
                self.put_back(&self.rates, rates);
                result = Err(e);
            }
        }
        result
    }

    fn put_back(&self, map: &Mutex<HashMap<String, i64>>, counts: Vec<(String, i64)>) {
        if let Ok(mut map) = map.lock() {
            for (k, v) in counts {
                *map.entry(k).or_default() += v;
            }
        }
    }
}

/// Statistics read back from a store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// (job name, processed, failed), sorted by name.
    pub jobs: Vec<(String, i64, i64)>,
    /// (queue, processed, failed), sorted by name.
    pub queues: Vec<(String, i64, i64)>,
}

/// Reads the totals workers kept in the store.
pub async fn read_stats(storage: &dyn Storage) -> Result<Stats> {
    let counters = storage.counters("stats:").await?;
    let mut jobs: HashMap<String, (i64, i64)> = HashMap::new();
    let mut queues: HashMap<String, (i64, i64)> = HashMap::new();
    for (key, value) in counters {
        let Some(rest) = key.strip_prefix("stats:") else {
            continue;
        };
        let (kind, rest) = match rest.split_once(':') {
            Some(split) => split,
            None => continue,
        };
        let Some((name, what)) = rest.rsplit_once(':') else {
            continue;
        };
        let map = match kind {
            "job" => &mut jobs,
            "queue" => &mut queues,
            _ => continue,
        };
        let entry = map.entry(name.to_owned()).or_default();
        match what {
            "processed" => entry.0 += value,
            "failed" => entry.1 += value,
            _ => {}
        }
    }
    let sorted = |map: HashMap<String, (i64, i64)>| {
        let mut v: Vec<(String, i64, i64)> = map.into_iter().map(|(k, (p, f))| (k, p, f)).collect();
        v.sort();
        v
    };
    Ok(Stats {
        jobs: sorted(jobs),
        queues: sorted(queues),
    })
}

/// Jobs processed and failed on `queue` in the last `minutes` whole minutes plus the
/// current one.
pub async fn recent_throughput(
    storage: &dyn Storage,
    queue: &str,
    minutes: i64,
) -> Result<(i64, i64)> {
    let now = minute_of(SystemTime::now());
    let prefix = format!("rate:{queue}:");
    let mut processed = 0;
    let mut failed = 0;
    for (key, value) in storage.counters(&prefix).await? {
        let Some(rest) = key.strip_prefix(&prefix) else {
            continue;
        };
        let Some((minute, what)) = rest.split_once(':') else {
            continue;
        };
        let Ok(minute) = minute.parse::<i64>() else {
            continue;
        };
        if minute < now - minutes {
            continue;
        }
        match what {
            "processed" => processed += value,
            "failed" => failed += value,
            _ => {}
        }
    }
    Ok((processed, failed))
}

/// The restart generation: workers remember it at start and stop when it changes.
pub async fn restart_generation(storage: &dyn Storage) -> Result<i64> {
    Ok(storage
        .counters(RESTART)
        .await?
        .into_iter()
        .find(|(k, _)| k == RESTART)
        .map_or(0, |(_, v)| v))
}

/// Signals every worker of the store to finish its current jobs and exit.
pub async fn signal_restart(storage: &dyn Storage) -> Result<()> {
    storage.add_counters(&[(RESTART.to_owned(), 1)], None).await
}
