//! The envelope: how a job is encoded in a store.
//!
//! A stored job is one JSON object. The storage never reads it; the worker does:
//!
//! ```json
//! {"v":1,"name":"send-email","data":{"to":"a@b.c"},"tries":3,"timeout_ms":30000,
//!  "lock":"send-email","dispatched_at":1700000000000}
//! ```
//!
//! A job of a chain (or any job whose end changes other jobs) is written as version 2 with
//! an `after` field: the effects its settlement carries when it succeeds and when it fails
//! for good. A batch member is written as version 3, its `after` short (`{"batch":{"id":..,
//! "cb":..}}`, from which the worker derives the same effects). A worker that reads only an
//! older version puts such a job back for one that reads it (a rolling deploy), instead of
//! running it and dropping what it must do after. A job counted against a
//! [limit](crate::Limit) is written as version 4 with a `limit` field
//! (`{"n":"stripe","k":"acct_1"}`), so an older worker never runs it unlimited. An encrypted
//! job is written as version 5, its data `null` and a `sealed` field holding it encrypted
//! (see [`KeyRing`](crate::KeyRing)).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// The newest envelope version this crate reads. It writes version 1 unless the job has an
/// [`after`](Envelope::after), which version 1 readers would ignore; version 3 for a batch
/// member, whose `after` is written short ([`After::member`]), which version 2 readers
/// would not understand.
pub const VERSION: u32 = 5;

/// The version written for a job with `after` (or without), and with a limit (version 4:
/// older readers would run the job without counting it against its limit).
pub(crate) fn version_for(after: &Option<After>, limited: bool, sealed: bool) -> u32 {
    match after {
        _ if sealed => 5,
        _ if limited => 4,
        Some(after) if after.member.is_some() => 3,
        Some(_) => 2,
        None => 1,
    }
}

/// A decoded envelope. Fields this version does not know are ignored, so a newer writer
/// may add fields (readers ship before writers) without old workers refusing its jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version.
    pub v: u32,
    /// The job's name.
    pub name: String,
    /// The job's own data, still encoded.
    pub data: Box<RawValue>,
    /// Attempts allowed, if the dispatch or the job type fixed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tries: Option<u32>,
    /// Errors before it fails for good, whatever tries remain, if the dispatch or the job
    /// type set it. Readers older than this field retry such a job up to its tries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_exceptions: Option<u32>,
    /// Timeout of one attempt in milliseconds, if the dispatch or the job type fixed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// How long after its dispatch it may still be retried, in milliseconds, if the
    /// dispatch set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_until_ms: Option<u64>,
    /// Whether a timed-out attempt fails it for good, if the dispatch said so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_on_timeout: bool,
    /// The `without_overlapping` lock key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// How long the job goes back for while its lock is held, in ms (Laravel's
    /// `releaseAfter`); the worker's `lock_retry` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_retry_ms: Option<u64>,
    /// When it was dispatched, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub dispatched_at: i64,
    /// When a delayed dispatch made it available, in milliseconds since the Unix epoch
    /// (`None`: at its dispatch). Read for the wait a worker reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<i64>,
    /// The trace context of its dispatch (see [`TracePropagator`](crate::TracePropagator)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<std::collections::BTreeMap<String, String>>,
    /// What the job's end changes in other jobs (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<After>,
    /// The limit the job is counted against (version 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<crate::limit::JobLimit>,
    /// The job's data sealed with a key of the [`KeyRing`](crate::KeyRing) (version 5;
    /// `data` is then `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// For a debounced dispatch with a `max_wait`: when the burst it belongs to began (Unix
    /// ms), carried from the queued job it replaces to the one that replaces it. Readers
    /// that do not know it ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<i64>,
}

/// What a job's end changes in other jobs: the effects its settlement carries, by outcome.
/// Written by [`Chain`](crate::Chain) at dispatch, applied by the worker in the job's own
/// settle step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct After {
    /// When it succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub succeeded: Vec<Step>,
    /// When it fails for good (to the failed store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<Step>,
    /// When it is skipped without running (see [`skip_if`](Self::skip_if)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Step>,
    /// Skip the job, settling it with [`skipped`](Self::skipped), when this counter is above
    /// zero as it starts: a workflow node one of whose edges was not met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_if: Option<SkipIf>,
    /// When it ends (succeeded, failed for good or skipped), hold a copy of it under this
    /// key, waiting for [`AGAIN`] dependencies, in the same step: a batch's callback, which
    /// `Batch::retry` can release again by lowering them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_again: Option<String>,
    /// A batch member's `after`, written short (version 3): every member of a batch ends
    /// the same way, so its steps and its skip gate are derived from the batch's id and
    /// callbacks when the envelope is read, and fill the fields above.
    #[serde(rename = "batch", default, skip_serializing_if = "Option::is_none")]
    pub member: Option<Member>,
    /// A workflow node's name: when it succeeds with an output, its settle keeps the output
    /// as a value of the workflow's group under this name, for the nodes after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A batch member's `after`, written short: see [`After::member`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The batch's id.
    pub id: String,
    /// Its callbacks: `then` 1, `catch` 2, `finally` 4.
    #[serde(rename = "cb", default)]
    pub callbacks: u8,
    /// Whether it lets every member run when one fails.
    #[serde(rename = "af", default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_failures: bool,
}

/// The dependencies a copy held by [`After::hold_again`] waits for: more than any number of
/// members' ends can count down, and less than Redis's scripts keep exact (10^15).
pub const AGAIN: i64 = 1 << 49;

impl After {
    /// The effects that hold the job `job` again, if it asks for it.
    pub(crate) fn again(&self, job: &crate::storage::Reserved) -> Vec<crate::Effect> {
        let Some(key) = &self.hold_again else {
            return Vec::new();
        };
        let copy = crate::storage::NewJob::new(&*job.lease.queue, &*job.name, job.payload.clone());
        // Held with one dependency, then raised in the same step (holds apply before
        // dependency changes): a waiting job's `deps` is a `u32`.
        vec![
            crate::Effect::Hold(crate::WaitingJob::new(key.clone(), 1, copy)),
            crate::Effect::Deps {
                key: key.clone(),
                delta: AGAIN - 1,
            },
        ]
    }
}

/// A counter of a group that, above zero, means a job is to be skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipIf {
    /// The group.
    pub group: String,
    /// The counter.
    pub counter: String,
    /// Whether a copy of the counters read a moment ago will do (a batch's cancel flag,
    /// which only rises and may be seen a little late by other workers), instead of a read
    /// for this job (a workflow node's mark, which must be exact).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub loose: bool,
}

/// One effect of [`After`], as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    /// [`Effect::Deps`](crate::Effect::Deps).
    Deps {
        /// The waiting job's key.
        key: String,
        /// What to add to its dependencies left.
        delta: i64,
    },
    /// [`Effect::Skip`](crate::Effect::Skip).
    Skip {
        /// The waiting job's key.
        key: String,
    },
    /// [`Effect::Count`](crate::Effect::Count).
    Count {
        /// The group.
        group: String,
        /// Counter names and amounts.
        deltas: Vec<(String, i64)>,
    },
}

impl Step {
    /// The storage effect.
    pub fn effect(&self) -> crate::Effect {
        match self {
            Step::Deps { key, delta } => crate::Effect::Deps {
                key: key.clone(),
                delta: *delta,
            },
            Step::Skip { key } => crate::Effect::Skip { key: key.clone() },
            Step::Count { group, deltas } => crate::Effect::Count {
                group: group.clone(),
                deltas: deltas.clone(),
            },
        }
    }
}

impl Envelope {
    /// How long the job waited from when it became available (its dispatch, or the end of
    /// its delay) to `now` (Unix ms): `None` where that is not known, for a chain's link or a
    /// workflow's node, which first wait for the jobs before them.
    pub(crate) fn waited(&self, now: i64) -> Option<std::time::Duration> {
        if self.dispatched_at <= 0 {
            return None;
        }
        if self
            .after
            .as_ref()
            .is_some_and(|after| after.member.is_none())
        {
            return None;
        }
        let from = self.dispatched_at.max(self.due_at.unwrap_or(0));
        let waited = u64::try_from(now.saturating_sub(from)).unwrap_or(0);
        Some(std::time::Duration::from_millis(waited))
    }

    /// Encodes the envelope.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Payload(e.to_string()))
    }

    /// Decodes an envelope, with an error that says what is wrong with the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Bad("empty payload".into()));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| DecodeError::Bad(format!("payload is not valid UTF-8: {e}")))?;
        // The version first: a newer envelope may have a shape this worker cannot read.
        if let Ok(probe) = serde_json::from_str::<Probe>(text) {
            if probe.v > VERSION {
                return Err(DecodeError::Newer {
                    version: probe.v,
                    name: probe.name.unwrap_or_default(),
                    dispatched_at: probe.dispatched_at.unwrap_or(0),
                });
            }
        }
        let mut envelope: Envelope = serde_json::from_str(text).map_err(|e| {
            DecodeError::Bad(if e.is_eof() {
                format!("payload is truncated JSON: {e}")
            } else {
                format!("payload is not a job envelope: {e}")
            })
        })?;
        if envelope.v == 0 || envelope.v > VERSION {
            return Err(DecodeError::Bad(format!(
                "envelope version {} is not supported (this worker reads versions 1 to {VERSION})",
                envelope.v
            )));
        }
        if envelope.name.is_empty() {
            return Err(DecodeError::Bad("envelope has an empty job name".into()));
        }
        if let Some(after) = &mut envelope.after {
            if let Some(member) = after.member.clone() {
                crate::batch::expand_member(after, &member);
            }
        }
        Ok(envelope)
    }
}

/// The fields every envelope version keeps.
#[derive(Deserialize)]
struct Probe {
    v: u32,
    name: Option<String>,
    dispatched_at: Option<i64>,
}

/// Why bytes are not an envelope this worker can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Written by a newer version of this crate: another worker may read it.
    Newer {
        /// The envelope's version.
        version: u32,
        /// The job's name, if it could be read.
        name: String,
        /// When it was dispatched, in milliseconds since the Unix epoch (0 if unknown).
        dispatched_at: i64,
    },
    /// Not an envelope at all, or a broken one: no worker will ever read it.
    Bad(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Newer { version, name, .. } => write!(
                f,
                "job `{name}` has envelope version {version}, newer than this worker reads ({VERSION})"
            ),
            DecodeError::Bad(reason) => f.write_str(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let env = Envelope {
            v: VERSION,
            name: "x".into(),
            data: RawValue::from_string("{\"a\":1}".into()).unwrap(),
            tries: Some(2),
            max_exceptions: None,
            timeout_ms: None,
            retry_until_ms: None,
            fail_on_timeout: false,
            lock: None,
            lock_retry_ms: None,
            due_at: None,
            trace: None,
            dispatched_at: 5,
            after: None,
            limit: Some(crate::limit::JobLimit::new("l").key(7)),
            sealed: None,
            burst: None,
        };
        let bytes = env.encode().unwrap();
        let back = Envelope::decode(&bytes).unwrap();
        assert_eq!(back.name, "x");
        assert_eq!(back.data.get(), "{\"a\":1}");
        assert_eq!(back.tries, Some(2));
        assert_eq!(back.limit, env.limit);
        assert_eq!(version_for(&None, true, false), 4);
        assert_eq!(version_for(&None, false, false), 1);
    }

    #[test]
    fn bad_bytes_have_reasons() {
        let reason = |bytes: &[u8]| Envelope::decode(bytes).unwrap_err().to_string();
        assert!(reason(b"").contains("empty"));
        assert!(reason(&[0xff, 0xfe]).contains("UTF-8"));
        assert!(reason(b"{\"v\":1,\"name\":\"x\",\"da").contains("truncated"));
        assert!(reason(b"[1,2]").contains("not a job envelope"));
        let deep = "[".repeat(10_000);
        assert!(Envelope::decode(deep.as_bytes()).is_err());
    }
}

#[cfg(test)]
mod versions {
    use super::*;

    /// A batch member is written short, as version 3, and read with its steps and gate.
    #[test]
    fn a_batch_member_is_written_short_and_read_whole() {
        let after = After {
            member: Some(Member {
                id: "b1".into(),
                callbacks: 1 | 4,
                allow_failures: false,
            }),
            ..After::default()
        };
        assert_eq!(version_for(&Some(after.clone()), false, false), 3);
        let env = Envelope {
            v: version_for(&Some(after.clone()), false, false),
            name: "m".into(),
            data: RawValue::from_string("{}".into()).unwrap(),
            tries: None,
            max_exceptions: None,
            timeout_ms: None,
            retry_until_ms: None,
            fail_on_timeout: false,
            lock: None,
            lock_retry_ms: None,
            due_at: None,
            trace: None,
            dispatched_at: 5,
            after: Some(after),
            limit: None,
            sealed: None,
            burst: None,
        };
        let bytes = env.encode().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains(r#""after":{"batch":{"id":"b1","cb":5}}"#),
            "{text}"
        );
        let read = Envelope::decode(&bytes).unwrap().after.unwrap();
        let gate = read.skip_if.as_ref().unwrap();
        assert_eq!(
            (gate.group.as_str(), gate.counter.as_str()),
            ("batch:b1", "cancel")
        );
        let keys = |steps: &[Step]| -> Vec<String> {
            steps
                .iter()
                .filter_map(|s| match s {
                    Step::Deps { key, .. } => Some(key.clone()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(keys(&read.succeeded), ["batch:b1:then", "batch:b1:finally"]);
        assert_eq!(keys(&read.failed), ["batch:b1:then", "batch:b1:finally"]);
        assert!(!read.skipped.is_empty());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let bytes = br#"{"v":1,"name":"x","data":{},"trace":{"id":"abc"},"dispatched_at":5}"#;
        let envelope = Envelope::decode(bytes).unwrap();
        assert_eq!(envelope.name, "x");
    }

    #[test]
    fn a_newer_version_is_told_apart_from_garbage() {
        let bytes = br#"{"v":99,"name":"x","payload":[1,2],"dispatched_at":77}"#;
        assert_eq!(
            Envelope::decode(bytes).unwrap_err(),
            DecodeError::Newer {
                version: 99,
                name: "x".into(),
                dispatched_at: 77
            }
        );
        assert!(matches!(
            Envelope::decode(br#"{"v":0,"name":"x","data":{}}"#),
            Err(DecodeError::Bad(_))
        ));
    }
}
