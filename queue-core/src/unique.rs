//! Unique jobs: at most one job per key is queued, whichever path dispatches it.
//!
//! A [`UniqueJob`] is declared on the job type (`#[job(unique(..))]`) or given per dispatch
//! ([`PendingDispatch::unique_key`](crate::PendingDispatch::unique_key),
//! [`PendingDispatch::unique`](crate::PendingDispatch::unique)). It becomes the job's
//! [claim](crate::storage::Unique), written by the same atomic step that stores the job and
//! released by the step that moves the job past its [`Until`]: so there is no lock to expire
//! and none left behind by a crash (a crashed worker's job still exists and is run again; it
//! holds its key legitimately until then).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::storage::{unix_millis, Unique, Until};

/// Storage keys longer than this are shortened: their tail is replaced by a hash (MySQL keeps
/// 512 bytes of a key, memcached 250 of a whole key).
const MAX_KEY: usize = 200;

/// What a dispatch does when its key is held by another job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnConflict {
    /// Store nothing and report [`Dispatched::Duplicate`](crate::Dispatched) with the id of
    /// the job holding the key (Laravel's `ShouldBeUnique`, River's "skipped as duplicate").
    #[default]
    Skip,
    /// Store nothing and fail the dispatch with [`Error::Duplicate`](crate::Error::Duplicate).
    Error,
    /// If the job holding the key is still queued (not started), it takes this dispatch's
    /// payload and availability, keeping its id: [`Dispatched::Replaced`](crate::Dispatched).
    /// If it has started (or failed, holding its key), as [`Skip`](Self::Skip). What
    /// [`debounce`](crate::PendingDispatch::debounce) uses.
    Replace,
}

/// A job's uniqueness: its key, how long it holds the key, and what a duplicate does.
///
/// ```
/// use std::time::Duration;
/// use queue_core::{OnConflict, UniqueJob, Until};
///
/// let unique = UniqueJob::key("customer:42")
///     .until(Until::Started)             // one waiting at a time; a running one does not count
///     .per_queue()                       // the key is per queue, not across queues
///     .within(Duration::from_secs(600))  // and per 10-minute period
///     .on_conflict(OnConflict::Error);
/// assert_eq!(unique.key_part(), "customer:42");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueJob {
    key: String,
    until: Until,
    per_queue: bool,
    within: Option<Duration>,
    on_conflict: OnConflict,
}

impl UniqueJob {
    /// Unique by `key`, among jobs of the same name, across queues, held until the job
    /// leaves the queue (succeeded or failed for good); a duplicate is skipped. An empty key
    /// makes the job type itself unique: one at a time.
    pub fn key(key: impl Into<String>) -> Self {
        UniqueJob {
            key: key.into(),
            until: Until::Terminal,
            per_queue: false,
            within: None,
            on_conflict: OnConflict::Skip,
        }
    }

    /// Until when the job holds its key: [`Until::Started`] (a worker took it),
    /// [`Until::Succeeded`] (a job that fails for good keeps it while in the failed store),
    /// or [`Until::Terminal`] (the default).
    pub fn until(mut self, until: Until) -> Self {
        self.until = until;
        self
    }

    /// Makes the key per queue: the same key on two queues is two keys.
    pub fn per_queue(mut self) -> Self {
        self.per_queue = true;
        self
    }

    /// Adds the current period of length `period` to the key (River's `ByPeriod`, Oban's
    /// `period`): one job per key per period, counted from the Unix epoch, whatever the
    /// claim's `until`. A zero period is ignored.
    pub fn within(mut self, period: Duration) -> Self {
        self.within = (!period.is_zero()).then_some(period);
        self
    }

    /// What a dispatch does when the key is held.
    pub fn on_conflict(mut self, on_conflict: OnConflict) -> Self {
        self.on_conflict = on_conflict;
        self
    }

    /// Replaces the key, keeping the other settings.
    pub(crate) fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// The key as given (without the job name, queue or period the claim adds).
    pub fn key_part(&self) -> &str {
        &self.key
    }

    /// Until when the key is held.
    pub fn until_state(&self) -> Until {
        self.until
    }

    /// What a duplicate does.
    pub fn conflict(&self) -> OnConflict {
        self.on_conflict
    }

    /// The same uniqueness with its key blinded by `keys` (an encrypted job's: the claim
    /// the store keeps in the clear must not hold its data).
    pub(crate) fn blinded(mut self, keys: &crate::KeyRing, name: &str) -> crate::Result<Self> {
        self.key = keys.blind("unique", name, &self.key)?;
        Ok(self)
    }

    /// The claim as stored for a job named `name` on `queue`, dispatched at `now`:
    /// `unique:{name}:{key}`, then `@{queue}` if per queue and `#{period number}` if within a
    /// period; shortened with a SHA-256 of the whole when longer than 200 bytes. An encrypted
    /// job's key is an HMAC of it under the active key (`h:` and 32 hex digits).
    pub fn claim(&self, name: &str, queue: &str, now: SystemTime) -> Unique {
        let mut key = format!("unique:{name}:{}", self.key);
        if self.per_queue {
            let _ = write!(key, "@{queue}");
        }
        if let Some(period) = self.within {
            let period_ms = i128::try_from(period.as_millis())
                .unwrap_or(i128::MAX)
                .max(1);
            let _ = write!(
                key,
                "#{}",
                i128::from(unix_millis(now)).div_euclid(period_ms)
            );
        }
        if key.len() > MAX_KEY {
            let digest = Sha256::digest(key.as_bytes());
            let mut cut = MAX_KEY - 65;
            while !key.is_char_boundary(cut) {
                cut -= 1;
            }
            key.truncate(cut);
            key.push('~');
            for byte in digest {
                let _ = write!(key, "{byte:02x}");
            }
        }
        let claim = Unique::new(key).until(self.until);
        if self.on_conflict == OnConflict::Replace {
            claim.replacing()
        } else {
            claim
        }
    }
}

/// Builds the key of `#[job(unique(by = [..]))]` from the named fields' JSON values.
/// Not public API: the derive's generated code calls it.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct FieldsKey(String);

impl FieldsKey {
    /// Appends `name=value`, the value as JSON.
    pub fn field<T: Serialize + ?Sized>(mut self, name: &str, value: &T) -> Self {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(name);
        self.0.push('=');
        match serde_json::to_string(value) {
            Ok(json) => self.0.push_str(&json),
            // The whole job then fails to serialize too, and its dispatch says why.
            Err(e) => {
                let _ = write!(self.0, "<{e}>");
            }
        }
        self
    }

    /// The key.
    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_name_the_job_queue_and_period() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let plain = UniqueJob::key("c:1").claim("sync", "high", at);
        assert_eq!(plain, Unique::new("unique:sync:c:1"));
        let all = UniqueJob::key("c:1")
            .per_queue()
            .within(Duration::from_secs(60))
            .until(Until::Started)
            .claim("sync", "high", at);
        assert_eq!(
            all,
            Unique::new("unique:sync:c:1@high#16").until(Until::Started)
        );
        let next = SystemTime::UNIX_EPOCH + Duration::from_secs(1_020);
        assert_eq!(
            UniqueJob::key("")
                .within(Duration::from_secs(60))
                .claim("sync", "q", next)
                .key,
            "unique:sync:#17"
        );
    }

    #[test]
    fn long_keys_are_shortened_by_a_hash_of_the_whole() {
        let at = SystemTime::UNIX_EPOCH;
        let long = "é".repeat(300);
        let a = UniqueJob::key(format!("{long}a")).claim("n", "q", at).key;
        let b = UniqueJob::key(format!("{long}b")).claim("n", "q", at).key;
        assert!(a.len() <= MAX_KEY, "{}", a.len());
        assert_ne!(a, b, "the hash covers the tail");
        assert!(a.starts_with("unique:n:é"));
    }

    #[test]
    fn fields_make_a_key() {
        let key = FieldsKey::default()
            .field("customer_id", &42)
            .field("region", "eu")
            .finish();
        assert_eq!(key, "customer_id=42,region=\"eu\"");
    }
}
