//! `job.toml`: the settings file, with Rakit's keys.
//!
//! Every key is optional. Unknown keys and bad values are refused with the key and the reason.
//!
//! ```toml
//! # Where jobs are stored: a URL, or a driver name (Rakit's `driver`) with its local default:
//! #   database / sqlite -> sqlite://jobs.db     file -> file://storage/jobs
//! #   redis -> redis://127.0.0.1:6379          memcached -> memcache://127.0.0.1:11211
//! driver = "sqlite://jobs.db"
//! # Or the URL on its own, when `driver` names a driver (the URL wins).
//! # url = "postgres://app@db/app"
//! table = "jobs"                  # table (or key prefix, or directory) of waiting jobs
//! failed_table = "failed_jobs"    # ... of failed jobs
//! max_job = 0                     # a worker stops after this many jobs; 0 = no limit
//! max_retries = 3                 # attempts of jobs that do not set `tries`
//! sleep_ms = 1000                 # idle wait of a worker, in milliseconds
//! # sleep = "1s"                  # ... or with a unit (give one of the two)
//! logging = true                  # false logs only warnings and errors
//! queues = ["high", "default", "low"]   # worker queues in priority order (unset: every
//!                                 # queue the store holds: high, default, low, the rest
//!                                 # by name)
//! concurrency = 1                 # jobs at once per worker process
//! timeout = "60s"                 # per attempt, for jobs that do not set `timeout`
//! retry_after = "15s"             # the lease: a dead worker's job returns after this long
//! backoff = "exponential"         # for jobs that do not set `backoff`
//! max_payload = 1048576           # bytes; larger dispatches are refused
//! grace = "30s"                   # on SIGTERM, how long running jobs may finish
//! overlap_delay = "500ms"         # a job whose without_overlapping lock is held (or
//!                                 # that waits for a concurrent limit's slot) is tried
//!                                 # again after this long
//! keep_finished = "24h"           # keep succeeded jobs' status and output, readable by id
//!                                 # (`runall job ID`); unset: not kept (a write saved
//!                                 # per job). Other ends are always kept (this, or a day)
//! unknown_job_window = "1h"       # a job of an unknown name waits this long for a worker
//!                                 # that knows it (rolling deploys), then fails
//! prefetch = 8                    # reserved jobs held beyond the free slots (unset: adapted)
//!
//! [max_queue_size]                # per-queue limits; a dispatch over one fails (see
//!                                 # queue_core::Dispatcher for how exact it is)
//! default = 100000
//!
//! [limits]                        # named limits jobs count against (#[job(limit = "..")])
//! stripe = "100/s"                # a rate: "600/min", "5/10s", "1000/1h burst 50"
//! erp = "concurrent 5"            # at most 5 running at once, across every worker
//!
//! [queue_limits]                  # limits of whole queues: every job taken from the queue
//! emails = "60/min"               # counts against one budget across every worker (before
//!                                 # its own limit, if it names one)
//!
//! [[schedule]]                    # a recurring job, run by `runall work` (--no-schedule: not)
//! id = "nightly-report"           # its state in the store is kept under it (default: job)
//! cron = "0 3 * * *"              # or every = "10s"
//! tz = "Asia/Jakarta"             # for cron; UTC by default
//! job = "generate-report"         # a job type or a listener
//! payload = { month = "last" }    # its payload ({} by default)
//! queue = "low"                   # default: the job type's queue
//! overlap = "skip"                # or "allow": run while the previous run is not done;
//!                                 # or "buffer_one": one run kept pending until then
//! catch_up = "latest"             # or "all:24": a run for each missed tick, at most 24
//! jitter = "5s"                   # a random delay of each run, up to this
//! until = "2027-01-31T00:00:00Z"  # no tick after this time
//! limit = 100                     # at most this many runs in all
//!
//! [health]                        # thresholds of `runall health` (these are the defaults)
//! queue_size_warning = 100        # waiting + delayed jobs on one queue
//! queue_size_critical = 1000
//! oldest_age_warning = "5m"       # how long the oldest available job has waited
//! oldest_age_critical = "30m"
//! failed_warning = 5              # jobs in the failed store
//! failed_critical = 100
//! ```
//!
//! The environment overrides the file: `QUEUE_URL` for the connection.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::job::{parse_duration, Backoff};

/// The contents of `job.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// A URL, or a driver name: `database`, `sqlite`, `file`, `redis`, `memcached`,
    /// `postgres`, `mysql`, `memory`.
    pub driver: Option<String>,
    /// The connection URL; wins over `driver`.
    pub url: Option<String>,
    /// Table (key prefix, directory) of jobs.
    pub table: Option<String>,
    /// Table (key prefix, directory) of failed jobs.
    pub failed_table: Option<String>,
    /// Jobs a worker takes before it stops; 0 for no limit (Rakit's `max_job`).
    pub max_job: Option<u64>,
    /// Default attempts (Rakit's `max_retries`).
    pub max_retries: Option<u32>,
    /// Idle wait in milliseconds (Rakit's `sleep_ms`).
    pub sleep_ms: Option<u64>,
    /// Idle wait with its unit, as `500ms` or `3s` (instead of `sleep_ms`).
    pub sleep: Option<String>,
    /// Log each job (true) or only warnings and errors (false).
    pub logging: Option<bool>,
    /// Worker queues in priority order.
    pub queues: Option<Vec<String>>,
    /// Jobs at once per worker.
    pub concurrency: Option<usize>,
    /// Default timeout of an attempt, as `30s`.
    pub timeout: Option<String>,
    /// The lease, as `15s` (Laravel's `retry_after`).
    pub retry_after: Option<String>,
    /// Default backoff, as `exponential`, `fixed:10s` or `1s,5s,30s`.
    pub backoff: Option<String>,
    /// Largest payload in bytes.
    pub max_payload: Option<usize>,
    /// Shutdown grace period, as `30s`.
    pub grace: Option<String>,
    /// How long a job whose `without_overlapping` lock is held waits before it is tried
    /// again, as `5s` (the worker's `lock_retry`).
    pub overlap_delay: Option<String>,
    /// How long the status of a succeeded job is kept, as `24h` (the worker's
    /// `keep_finished`).
    pub keep_finished: Option<String>,
    /// How long a job of an unknown name is put back for another worker, as `1h`.
    pub unknown_job_window: Option<String>,
    /// Reserved jobs a worker holds beyond its free slots (unset: adapted; 0: off).
    pub prefetch: Option<usize>,
    /// Per-queue size limits.
    pub max_queue_size: Option<HashMap<String, u64>>,
    /// Thresholds of `runall health`.
    pub health: Option<HealthConfig>,
    /// Recurring schedules run by `runall work` (`[[schedule]]` tables).
    pub schedule: Option<Vec<ScheduleConfig>>,
    /// Named limits (`[limits]`), by name.
    pub limits: Option<std::collections::BTreeMap<String, crate::Limit>>,
    /// Limits of whole queues (`[queue_limits]`), by queue.
    pub queue_limits: Option<std::collections::BTreeMap<String, crate::Limit>>,
}

/// One `[[schedule]]` of `job.toml`: a job pushed at every tick, by whichever worker claims
/// the tick (see [`Schedule`](crate::Schedule)).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ScheduleConfig {
    /// The schedule's id (its state in the store is kept under it). Defaults to `job`.
    pub id: Option<String>,
    /// An interval, as `10s` (ticks on its multiples since the Unix epoch).
    pub every: Option<String>,
    /// A cron expression, as `0 3 * * *` (five fields, or six with seconds first).
    pub cron: Option<String>,
    /// The IANA time zone of `cron`, as `Asia/Jakarta` (UTC by default).
    pub tz: Option<String>,
    /// The job's name: a `#[derive(Job)]` type linked into the binary, or a listener.
    pub job: String,
    /// The job's payload (a TOML table or value; `{}` by default).
    pub payload: Option<toml::Value>,
    /// The queue (the job type's own by default, else `default`).
    pub queue: Option<String>,
    /// `skip` (default: no tick runs while the previous run is queued or running), `allow`
    /// or `buffer_one` (one run kept pending until the previous one ends).
    pub overlap: Option<String>,
    /// `latest` (default: one run for the ticks missed while no worker ran) or `all:N` (a run
    /// for each, at most N).
    pub catch_up: Option<String>,
    /// A random delay of each tick's job, up to this, as `5s`.
    pub jitter: Option<String>,
    /// No tick after this time, as `2027-01-31T00:00:00Z` (RFC 3339).
    pub until: Option<String>,
    /// At most this many runs in all.
    pub limit: Option<u64>,
}

impl ScheduleConfig {
    /// The schedule, checked (cron expression, time zone, durations, policies).
    pub fn to_schedule(&self) -> Result<crate::Schedule> {
        let id = self.id.clone().unwrap_or_else(|| self.job.clone());
        let bad = |what: String| Error::Config(format!("schedule {id}: {what}"));
        let mut schedule = match (&self.every, &self.cron) {
            (Some(every), None) => crate::Schedule::every(
                parse_duration(every).map_err(|e| bad(format!("`every`: {e}")))?,
            ),
            (None, Some(cron)) => crate::Schedule::cron(cron),
            _ => return Err(bad("give exactly one of `every` and `cron`".into())),
        };
        if let Some(tz) = &self.tz {
            if self.cron.is_none() {
                return Err(bad(
                    "`tz` applies to `cron` only (`every` is absolute)".into()
                ));
            }
            schedule = schedule.tz(tz);
        }
        let payload = match &self.payload {
            Some(value) => {
                serde_json::to_value(value).map_err(|e| bad(format!("`payload`: {e}")))?
            }
            None => serde_json::json!({}),
        };
        let queue = self
            .queue
            .clone()
            .or_else(|| crate::registry::find(&self.job).map(|r| r.queue.to_owned()))
            .unwrap_or_else(|| "default".to_owned());
        schedule = schedule
            .id(id.clone())
            .dispatch(crate::PendingDispatch::named(&self.job, &payload).on_queue(queue));
        if let Some(overlap) = &self.overlap {
            schedule = schedule.overlap(
                overlap
                    .parse()
                    .map_err(|e| bad(format!("`overlap`: {e}")))?,
            );
        }
        if let Some(catch_up) = &self.catch_up {
            let parsed = match catch_up.split_once(':') {
                None if catch_up == "latest" => Some(crate::CatchUp::Latest),
                Some(("all", n)) => n.parse().ok().map(|max| crate::CatchUp::All { max }),
                _ => None,
            };
            schedule = schedule.catch_up(parsed.ok_or_else(|| {
                bad(format!(
                    "bad `catch_up` `{catch_up}`, expected latest or all:N"
                ))
            })?);
        }
        if let Some(until) = &self.until {
            let end = humantime::parse_rfc3339_weak(until).map_err(|e| {
                bad(format!(
                    "bad `until` `{until}` ({e}), expected a time as 2027-01-31T00:00:00Z"
                ))
            })?;
            schedule = schedule.until(end);
        }
        if let Some(limit) = self.limit {
            schedule = schedule.limit(limit);
        }
        if let Some(jitter) = &self.jitter {
            schedule =
                schedule.jitter(parse_duration(jitter).map_err(|e| bad(format!("`jitter`: {e}")))?);
        }
        schedule.check()
    }
}

/// The `[health]` table: when `runall health` says WARNING or CRITICAL. Defaults from the
/// operations guide the design came from: queue size 100 / 1,000, oldest waiting job
/// 5 minutes / 30 minutes, failed jobs 5 / 100.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HealthConfig {
    /// Jobs waiting + delayed on one queue above which it is WARNING.
    pub queue_size_warning: Option<u64>,
    /// ... CRITICAL.
    pub queue_size_critical: Option<u64>,
    /// Age of the oldest available job above which it is WARNING, as `5m`.
    pub oldest_age_warning: Option<String>,
    /// ... CRITICAL, as `30m`.
    pub oldest_age_critical: Option<String>,
    /// Failed jobs above which it is WARNING.
    pub failed_warning: Option<u64>,
    /// ... CRITICAL.
    pub failed_critical: Option<u64>,
}

/// Thresholds with the defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    /// (warning, critical) on waiting + delayed jobs per queue.
    pub queue_size: (u64, u64),
    /// (warning, critical) on the age of the oldest available job.
    pub oldest_age: (Duration, Duration),
    /// (warning, critical) on the failed store.
    pub failed: (u64, u64),
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            queue_size: (100, 1000),
            oldest_age: (Duration::from_secs(300), Duration::from_secs(1800)),
            failed: (5, 100),
        }
    }
}

/// Driver names accepted in `driver`, with the URL each means when no `url` is given.
const DRIVER_DEFAULTS: &[(&str, Option<&str>)] = &[
    ("database", Some("sqlite://jobs.db")),
    ("sqlite", Some("sqlite://jobs.db")),
    ("file", Some("file://storage/jobs")),
    ("redis", Some("redis://127.0.0.1:6379")),
    ("memcached", Some("memcache://127.0.0.1:11211")),
    ("memory", Some("memory://")),
    ("postgres", None),
    ("mysql", None),
];

impl Config {
    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                Self::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(Error::Config(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Parses and validates the text of a `job.toml`.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let duration = |key: &str, value: &Option<String>| -> Result<(), String> {
            match value {
                Some(v) => parse_duration(v)
                    .map(drop)
                    .map_err(|e| format!("`{key}`: {e}")),
                None => Ok(()),
            }
        };
        duration("timeout", &self.timeout)?;
        duration("retry_after", &self.retry_after)?;
        duration("grace", &self.grace)?;
        duration("overlap_delay", &self.overlap_delay)?;
        duration("keep_finished", &self.keep_finished)?;
        if let Some(sleep) = &self.sleep {
            if sleep.trim().parse::<u64>().is_ok() {
                return Err(format!(
                    "`sleep`: give a unit, as \"{0}ms\" or \"{0}s\" (or `sleep_ms = {0}` for \
                     milliseconds)",
                    sleep.trim()
                ));
            }
            duration("sleep", &self.sleep)?;
            if self.sleep_ms.is_some() {
                return Err("`sleep` and `sleep_ms` are the same setting: give one".into());
            }
        }
        duration("unknown_job_window", &self.unknown_job_window)?;
        for (key, value) in [
            ("timeout", &self.timeout),
            ("retry_after", &self.retry_after),
            ("overlap_delay", &self.overlap_delay),
            ("keep_finished", &self.keep_finished),
        ] {
            if value.as_deref().and_then(|v| parse_duration(v).ok()) == Some(Duration::ZERO) {
                return Err(format!("`{key}`: must be greater than zero"));
            }
        }
        if let Some(b) = &self.backoff {
            Backoff::parse(b).map_err(|e| format!("`backoff`: {e}"))?;
        }
        for name in self.limits.iter().flatten().map(|(name, _)| name) {
            crate::limit::check_name(name).map_err(|e| format!("`limits`: {e}"))?;
        }
        for schedule in self.schedule.iter().flatten() {
            schedule.to_schedule().map(drop).map_err(|e| match e {
                Error::Config(text) => text,
                other => other.to_string(),
            })?;
        }
        if let Some(h) = &self.health {
            duration("health.oldest_age_warning", &h.oldest_age_warning)?;
            duration("health.oldest_age_critical", &h.oldest_age_critical)?;
            let t = self.health_thresholds();
            if t.queue_size.0 > t.queue_size.1
                || t.oldest_age.0 > t.oldest_age.1
                || t.failed.0 > t.failed.1
            {
                return Err("`health`: a warning threshold is above its critical threshold".into());
            }
        }
        if self.max_retries == Some(0) {
            return Err("`max_retries`: must be at least 1".into());
        }
        if self.concurrency == Some(0) {
            return Err("`concurrency`: must be at least 1".into());
        }
        if self.queues.as_ref().is_some_and(|q| q.is_empty()) {
            return Err("`queues`: must name at least one queue".into());
        }
        if let Some(driver) = &self.driver {
            if !driver.contains(':') && !DRIVER_DEFAULTS.iter().any(|(n, _)| n == driver) {
                let names: Vec<&str> = DRIVER_DEFAULTS.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "`driver`: unknown driver `{driver}` (use a URL or one of: {})",
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The connection URL: `url`, else `driver` (a URL, or a driver name's default), else
    /// `sqlite://jobs.db`.
    pub fn connection_url(&self) -> Result<String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        match &self.driver {
            None => Ok("sqlite://jobs.db".to_owned()),
            Some(d) if d.contains(':') => Ok(d.clone()),
            Some(d) => match DRIVER_DEFAULTS.iter().find(|(n, _)| n == d) {
                Some((_, Some(url))) => Ok((*url).to_owned()),
                _ => Err(Error::Config(format!(
                    "driver `{d}` needs a `url` (for example {d}://user@host/database)"
                ))),
            },
        }
    }

    /// `timeout` as a duration.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.as_deref().and_then(|t| parse_duration(t).ok())
    }

    /// `retry_after` as a duration.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
    }

    /// The idle wait: `sleep`, else `sleep_ms`.
    pub fn sleep(&self) -> Option<Duration> {
        match &self.sleep {
            Some(sleep) => parse_duration(sleep).ok(),
            None => self.sleep_ms.map(Duration::from_millis),
        }
    }

    /// `overlap_delay` as a duration.
    pub fn overlap_delay(&self) -> Option<Duration> {
        self.overlap_delay
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
    }

    /// `keep_finished` as a duration.
    pub fn keep_finished(&self) -> Option<Duration> {
        self.keep_finished
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
    }

    /// `grace` as a duration.
    pub fn grace(&self) -> Option<Duration> {
        self.grace.as_deref().and_then(|t| parse_duration(t).ok())
    }

    /// `unknown_job_window` as a duration.
    pub fn unknown_job_window(&self) -> Option<Duration> {
        self.unknown_job_window
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
    }

    /// The health thresholds, defaults filled in.
    pub fn health_thresholds(&self) -> HealthThresholds {
        let mut t = HealthThresholds::default();
        if let Some(h) = &self.health {
            let age = |v: &Option<String>| v.as_deref().and_then(|v| parse_duration(v).ok());
            t.queue_size = (
                h.queue_size_warning.unwrap_or(t.queue_size.0),
                h.queue_size_critical.unwrap_or(t.queue_size.1),
            );
            t.oldest_age = (
                age(&h.oldest_age_warning).unwrap_or(t.oldest_age.0),
                age(&h.oldest_age_critical).unwrap_or(t.oldest_age.1),
            );
            t.failed = (
                h.failed_warning.unwrap_or(t.failed.0),
                h.failed_critical.unwrap_or(t.failed.1),
            );
        }
        t
    }

    /// `backoff` parsed.
    pub fn backoff(&self) -> Option<Backoff> {
        self.backoff.as_deref().and_then(|b| Backoff::parse(b).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let c = Config::parse(
            "[[schedule]]\nid = \"n\"\ncron = \"0 3 * * *\"\ntz = \"Asia/Jakarta\"\njob = \"j\"\n\
             payload = { a = 1 }\nqueue = \"low\"\novercap = 1\n",
        );
        assert!(c.unwrap_err().contains("unknown field `overcap`"));
        let c = Config::parse(
            "[[schedule]]\nevery = \"10s\"\njob = \"j\"\nuntil = \"2027-01-31T00:00:00Z\"\n\
             limit = 3\ncatch_up = \"all:5\"\noverlap = \"allow\"\n",
        )
        .unwrap();
        let schedule = c.schedule.unwrap()[0].to_schedule().unwrap();
        assert_eq!(schedule.id_str(), "j");
        assert_eq!(schedule.describe(), "every 10s");
        assert_eq!(schedule.overlap_policy(), crate::Overlap::Allow);
        for (text, overlap) in [
            ("skip", crate::Overlap::Skip),
            ("allow", crate::Overlap::Allow),
            ("buffer_one", crate::Overlap::BufferOne),
        ] {
            let c = Config::parse(&format!(
                "[[schedule]]\nevery = \"10s\"\njob = \"j\"\noverlap = \"{text}\"\n"
            ))
            .unwrap();
            let schedule = c.schedule.unwrap()[0].to_schedule().unwrap();
            assert_eq!(schedule.overlap_policy(), overlap);
            assert_eq!(overlap.as_str(), text);
        }
        for (bad, says) in [
            (
                "every = \"10s\"\ncron = \"* * * * *\"",
                "exactly one of `every` and `cron`",
            ),
            (
                "every = \"10s\"\ntz = \"UTC\"",
                "`tz` applies to `cron` only",
            ),
            (
                "cron = \"* * * * *\"\ntz = \"Nowhere/Place\"",
                "unknown time zone",
            ),
            ("every = \"10s\"\nuntil = \"soon\"", "bad `until` `soon`"),
            (
                "every = \"10s\"\ncatch_up = \"some\"",
                "bad `catch_up` `some`",
            ),
            (
                "every = \"10s\"\noverlap = \"maybe\"",
                "bad overlap `maybe`, expected skip, allow or buffer_one",
            ),
            (
                "every = \"10s\"\noverlap = \"buffer-one\"",
                "bad overlap `buffer-one`",
            ),
        ] {
            let err = Config::parse(&format!("[[schedule]]\njob = \"j\"\n{bad}\n")).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn rakit_keys() {
        let c = Config::parse(
            "driver = 'database'\ntable = 'rakit_jobs'\nfailed_table = 'rakit_failed_jobs'\nmax_job = 100\nmax_retries = 3\nsleep_ms = 1000\nlogging = true\n",
        )
        .unwrap();
        assert_eq!(c.connection_url().unwrap(), "sqlite://jobs.db");
        assert_eq!(c.table.as_deref(), Some("rakit_jobs"));
        assert_eq!(c.max_job, Some(100));
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        let e = Config::parse("drivr = 'redis'").unwrap_err();
        assert!(e.contains("drivr"), "{e}");
        let e = Config::parse("timeout = '10 parsecs'").unwrap_err();
        assert!(e.contains("timeout"), "{e}");
        let e = Config::parse("driver = 'mongodb'").unwrap_err();
        assert!(e.contains("unknown driver"), "{e}");
        let e = Config::parse("max_retries = 0").unwrap_err();
        assert!(e.contains("max_retries"), "{e}");
        assert!(Config::parse("driver = 'postgres'")
            .unwrap()
            .connection_url()
            .is_err());
    }

    #[test]
    fn sleep_with_a_unit_or_in_milliseconds() {
        let c = Config::parse("sleep = '3s'\n").unwrap();
        assert_eq!(c.sleep(), Some(Duration::from_secs(3)));
        let c = Config::parse("sleep = '500ms'\n").unwrap();
        assert_eq!(c.sleep(), Some(Duration::from_millis(500)));
        let c = Config::parse("sleep_ms = 250\n").unwrap();
        assert_eq!(c.sleep(), Some(Duration::from_millis(250)));
        assert_eq!(Config::default().sleep(), None);
        let e = Config::parse("sleep = '3'\n").unwrap_err();
        assert!(e.contains("give a unit, as \"3ms\" or \"3s\""), "{e}");
        let e = Config::parse("sleep = '3s'\nsleep_ms = 3000\n").unwrap_err();
        assert!(e.contains("give one"), "{e}");
        let e = Config::parse("sleep = 'soon'\n").unwrap_err();
        assert!(e.contains("`sleep`"), "{e}");
    }

    #[test]
    fn overlap_delay() {
        let c = Config::parse("overlap_delay = '5s'\n").unwrap();
        assert_eq!(c.overlap_delay(), Some(Duration::from_secs(5)));
        let e = Config::parse("overlap_delay = '0s'\n").unwrap_err();
        assert!(
            e.contains("`overlap_delay`: must be greater than zero"),
            "{e}"
        );
        let e = Config::parse("concurrency = 0\n").unwrap_err();
        assert!(e.contains("`concurrency`: must be at least 1"), "{e}");
    }

    #[test]
    fn queue_limits() {
        let c =
            Config::parse("[queue_limits]\nemails = '60/min'\ndefault = 'concurrent 3'\n").unwrap();
        let limits = c.queue_limits.unwrap();
        assert_eq!(
            limits["emails"],
            crate::Limit::rate(60).per(Duration::from_secs(60)).into()
        );
        assert_eq!(limits["default"], crate::Limit::concurrent(3));
        let e = Config::parse("[queue_limits]\nemails = 'sixty a minute'\n").unwrap_err();
        assert!(e.to_string().contains("not a limit"), "{e}");
    }

    #[test]
    fn limits() {
        let c = Config::parse("[limits]\nstripe = '100/s'\nerp = 'concurrent 5'\n").unwrap();
        let limits = c.limits.unwrap();
        assert_eq!(limits["stripe"], crate::Limit::rate(100).into());
        assert_eq!(limits["erp"], crate::Limit::concurrent(5));
        let e = Config::parse("[limits]\nstripe = '100 per second'\n").unwrap_err();
        assert!(e.contains("100 per second"), "{e}");
        let e = Config::parse("[limits]\n'a:b' = '1/s'\n").unwrap_err();
        assert!(e.contains("limit name"), "{e}");
    }
}
