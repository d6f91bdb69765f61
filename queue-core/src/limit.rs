//! Rate and concurrency limits: [`Limit`] (what a named limit allows) and [`JobLimit`]
//! (which limit, and which of its keys, a job is counted against).
//!
//! A limit is defined on the workers by name ([`WorkerOptions::limit`](crate::WorkerOptions::limit),
//! or `[limits]` in `job.toml`); a job names it (`#[job(limit = "stripe", limit_key =
//! "account_id")]`, or `.limit(..)` on a dispatch). Each key of a limit (each account, each
//! tenant) has its own budget.
//!
//! - [`Limit::rate`]: at most `count` jobs start per `per`, spaced evenly, with up to
//!   `burst` at once after a quiet spell (GCRA, a token bucket kept as one timestamp per key).
//! - [`Limit::concurrent`]: at most `n` jobs of a key run at once, across every worker. A
//!   slot is a lock owned by the job's lease: renewed by its heartbeat, freed when it is
//!   settled, and free again when a dead worker's lease runs out. Never a fixed TTL.
//!
//! A job over its limit is put back **without counting an attempt**. A rate-limited job is
//! given the next free start time of its key (its token is booked), so it is taken twice at
//! most: once to book, once to run. A job waiting for a concurrency slot looks again after
//! the worker's `lock_retry`. A job that would wait longer than its `max_throttle_wait`
//! fails with a reason that says so. A job body that meets a rate limit of its own (an HTTP
//! 429) returns [`JobError::rate_limited`](crate::JobError::rate_limited): its key is paused
//! for every worker, and the job goes back without counting an attempt.
//!
//! A whole queue can be limited too ([`WorkerOptions::queue_limit`](crate::WorkerOptions::queue_limit),
//! `[queue_limits]` in `job.toml`): every job taken from it counts against one budget, before
//! its own limit.
//!
//! ```
//! use std::time::Duration;
//! use queue_core::{Limit, WorkerOptions};
//!
//! let options = WorkerOptions::default()
//!     .limit("stripe", Limit::rate(100).per(Duration::from_secs(1)).burst(20))
//!     .limit("erp", Limit::concurrent(5));
//! assert_eq!(options.limits.len(), 2);
//! assert_eq!("600/min".parse::<Limit>().unwrap(), Limit::rate(600).per(Duration::from_secs(60)).into());
//! ```
//!
//! What each store can do: rate limits (and pausing a key) need the store's group counters
//! (SQL, Redis on one server, the file driver, memory); memcached and Redis Cluster have
//! none, and a worker with a rate limit refuses to start on them. Concurrency limits work on
//! every store (they are built on locks).
//!
//! Limits are checked by the worker after it reserves a job, not inside the store's reserve:
//! a job over its limit is reserved and put back (no attempt counted), which costs a round
//! trip or two per look.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a named limit allows per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// At most `count` starts per `per`, with bursts of up to `burst`.
    Rate(RateLimit),
    /// At most this many running at once.
    Concurrent(u32),
}

/// A rate: `count` starts per `per`, spaced evenly (one every `per / count`, rounded up to a
/// millisecond so the rate is never exceeded), with up to `burst` at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Starts per period.
    pub count: u32,
    /// The period (one second by default).
    pub per: Duration,
    /// How many may start at once after a quiet spell (1 by default: evenly spaced).
    pub burst: u32,
}

impl Limit {
    /// At most `count` starts per second (change the period with [`RateLimit::per`]).
    pub fn rate(count: u32) -> RateLimit {
        RateLimit {
            count,
            per: Duration::from_secs(1),
            burst: 1,
        }
    }

    /// At most `n` jobs of a key running at once.
    pub fn concurrent(n: u32) -> Limit {
        Limit::Concurrent(n)
    }

    /// Checks the numbers: a count, burst and concurrency of at least 1, a period of at
    /// least a millisecond.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("limit {self}: {what}")));
        match self {
            Limit::Concurrent(0) => bad("the concurrency must be at least 1"),
            Limit::Rate(r) if r.count == 0 => bad("the count must be at least 1"),
            Limit::Rate(r) if r.burst == 0 => bad("the burst must be at least 1"),
            Limit::Rate(r) if r.per < Duration::from_millis(1) => {
                bad("the period must be at least 1ms")
            }
            _ => Ok(()),
        }
    }
}

impl RateLimit {
    /// Sets the period the count is per.
    pub fn per(mut self, per: Duration) -> Self {
        self.per = per;
        self
    }

    /// Lets up to `burst` start at once after a quiet spell.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// The spacing between two starts, in seconds, as the limiter keeps it: `per / count`
    /// rounded up to a millisecond.
    pub fn interval_secs(&self) -> f64 {
        self.interval_ms() as f64 / 1000.0
    }

    /// The spacing between two starts, in milliseconds (at least 1).
    pub(crate) fn interval_ms(&self) -> i64 {
        let per = i64::try_from(self.per.as_millis()).unwrap_or(i64::MAX);
        let count = i64::from(self.count.max(1));
        ((per + count - 1) / count).max(1)
    }
}

impl From<RateLimit> for Limit {
    fn from(rate: RateLimit) -> Self {
        Limit::Rate(rate)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Concurrent(n) => write!(f, "concurrent({n})"),
            Limit::Rate(r) => {
                write!(f, "{}/{}", r.count, humantime::format_duration(r.per))?;
                if r.burst > 1 {
                    write!(f, " burst {}", r.burst)?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for Limit {
    type Err = Error;

    /// `"100/s"`, `"600/min"`, `"5/10s"`, `"1000/1h burst 50"`, or `"concurrent 5"`.
    fn from_str(text: &str) -> Result<Limit> {
        let bad = |why: &str| {
            Error::Config(format!(
                "limit {text:?}: {why} (write \"100/s\", \"600/min\", \"5/10s\", \
                 \"1000/1h burst 50\" or \"concurrent 5\")"
            ))
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let limit = match words.as_slice() {
            ["concurrent", n] => Limit::Concurrent(n.parse().map_err(|_| bad("not a number"))?),
            ["concurrent"] => return Err(bad("how many at once is missing")),
            [rate] | [rate, "burst", _] => {
                let (count, per) = rate.split_once('/').ok_or_else(|| bad("no `/`"))?;
                let count = count
                    .parse()
                    .map_err(|_| bad("the count is not a number"))?;
                let per = match per {
                    "s" | "sec" | "second" => Duration::from_secs(1),
                    "m" | "min" | "minute" => Duration::from_secs(60),
                    "h" | "hour" => Duration::from_secs(3600),
                    "d" | "day" => Duration::from_secs(86_400),
                    other => humantime::parse_duration(other)
                        .map_err(|_| bad("the period is not a duration"))?,
                };
                let burst = match words.get(2) {
                    Some(n) => n.parse().map_err(|_| bad("the burst is not a number"))?,
                    None => 1,
                };
                Limit::Rate(RateLimit { count, per, burst })
            }
            _ => return Err(bad("not a limit")),
        };
        limit.validate()?;
        Ok(limit)
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a name an operator writes (`what` says which, in the error): letters, digits,
/// `_`, `-` and `.`, at most `max` bytes. Limit names and encryption key ids.
pub(crate) fn check_plain_name(what: &str, name: &str, max: usize) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what} {name:?}: use letters, digits, `_`, `-` and `.` (at most {max} bytes)"
        )))
    }
}

/// Checks a limit's name: letters, digits, `_`, `-` and `.`, at most 100 bytes.
pub(crate) fn check_name(name: &str) -> Result<()> {
    check_plain_name("limit name", name, 100)
}

/// The limit a job is counted against: a named limit, the key within it (one budget per
/// key; none: one budget for the whole limit), and how long the job may wait for it.
///
/// Declared on the job type (`#[job(limit = "stripe", limit_key = "account_id",
/// max_throttle_wait = "1h")]`) or given to a dispatch ([`PendingDispatch::limit`](crate::PendingDispatch::limit)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLimit {
    /// The limit's name, as the workers define it.
    #[serde(rename = "n")]
    pub name: String,
    /// The key within the limit.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The longest the job may wait for its limit, in milliseconds, counted from its
    /// dispatch: a job whose earliest start, as its limit allows it, is later than that
    /// fails for good with a reason that says so. `None`: as long as it takes.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
}

impl JobLimit {
    /// Counted against the limit `name`, one budget for all its jobs.
    pub fn new(name: impl Into<String>) -> Self {
        JobLimit {
            name: name.into(),
            key: None,
            max_wait_ms: None,
        }
    }

    /// Counted against `key`'s own budget within the limit.
    pub fn key(mut self, key: impl fmt::Display) -> Self {
        self.key = Some(key.to_string());
        self
    }

    /// Fails the job when it would wait longer than `wait` for its limit.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait_ms = Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// The longest the job may wait, if bounded.
    pub fn max_wait_duration(&self) -> Option<Duration> {
        self.max_wait_ms.map(Duration::from_millis)
    }

    /// The limit of a queue (`WorkerOptions::queue_limit`, `[queue_limits]` in `job.toml`),
    /// which every job taken from it is counted against: named `queue/{queue}`, a name no
    /// limit of a job can have (`/` is not allowed in one), so the two never share a key.
    pub(crate) fn of_queue(queue: &str) -> Self {
        JobLimit::new(format!("queue/{queue}"))
    }

    /// Where the key's state lives: the group of its counters and the prefix of its slots.
    pub(crate) fn bucket(&self) -> String {
        match &self.key {
            Some(key) => format!("limit:{}:{key}", self.name),
            None => format!("limit:{}", self.name),
        }
    }

    /// The same limit with its key blinded by `keys` (an encrypted job's: the limit's
    /// counters and slots are named in the clear in the store).
    pub(crate) fn blinded(mut self, keys: &crate::KeyRing) -> Result<Self> {
        if let Some(key) = &self.key {
            self.key = Some(keys.blind("limit", &self.name, key)?);
        }
        Ok(self)
    }

    pub(crate) fn check(&self) -> Result<()> {
        check_name(&self.name)?;
        if self.key.as_ref().is_some_and(|k| k.len() > 200) {
            return Err(Error::Config(format!(
                "limit `{}`: a limit key is at most 200 bytes",
                self.name
            )));
        }
        Ok(())
    }
}

impl From<&str> for JobLimit {
    fn from(name: &str) -> Self {
        JobLimit::new(name)
    }
}

impl From<String> for JobLimit {
    fn from(name: String) -> Self {
        JobLimit::new(name)
    }
}

impl fmt::Display for JobLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}[{key}]", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits() {
        let rate = |count, secs, burst| {
            Limit::Rate(RateLimit {
                count,
                per: Duration::from_secs(secs),
                burst,
            })
        };
        for (text, limit) in [
            ("100/s", rate(100, 1, 1)),
            ("600/min", rate(600, 60, 1)),
            ("5/10s", rate(5, 10, 1)),
            ("1000/1h burst 50", rate(1000, 3600, 50)),
            ("concurrent 5", Limit::Concurrent(5)),
        ] {
            assert_eq!(text.parse::<Limit>().unwrap(), limit, "{text}");
        }
        for (bad, says) in [
            ("100", "no `/`"),
            ("x/s", "count"),
            ("5/soon", "period"),
            ("0/s", "at least 1"),
            ("5/s burst 0", "burst must be"),
            ("concurrent 0", "at least 1"),
            ("concurrent", "missing"),
            ("1/s 2", "not a limit"),
        ] {
            let err = bad.parse::<Limit>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn intervals_never_exceed_the_rate() {
        assert_eq!(Limit::rate(100).interval_ms(), 10);
        assert_eq!(Limit::rate(3).interval_ms(), 334);
        assert_eq!(Limit::rate(5000).interval_ms(), 1);
        assert_eq!(
            Limit::rate(60).per(Duration::from_secs(60)).interval_ms(),
            1000
        );
    }

    #[test]
    fn names_and_buckets() {
        assert!(check_name("stripe-eu.v2").is_ok());
        assert!(check_name("a:b").is_err());
        assert!(check_name("").is_err());
        assert_eq!(JobLimit::new("s").key(42).bucket(), "limit:s:42");
        assert_eq!(JobLimit::new("s").bucket(), "limit:s");
        assert!(JobLimit::new("s").key("k".repeat(201)).check().is_err());
    }
}
