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
//! for good. A worker that reads only version 1 puts such a job back for one that reads it
//! (a rolling deploy), instead of running it and dropping what it must do after.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// The newest envelope version this crate reads. It writes version 1 unless the job has an
/// [`after`](Envelope::after), which version 1 readers would ignore.
pub const VERSION: u32 = 2;

/// The version written for a job with `after` (or without).
pub(crate) fn version_for(after: &Option<After>) -> u32 {
    if after.is_some() {
        2
    } else {
        1
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
    /// Timeout of one attempt in milliseconds, if the dispatch or the job type fixed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The `without_overlapping` lock key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// When it was dispatched, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub dispatched_at: i64,
    /// What the job's end changes in other jobs (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<After>,
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
        let envelope: Envelope = serde_json::from_str(text).map_err(|e| {
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
            timeout_ms: None,
            lock: None,
            dispatched_at: 5,
            after: None,
        };
        let bytes = env.encode().unwrap();
        let back = Envelope::decode(&bytes).unwrap();
        assert_eq!(back.name, "x");
        assert_eq!(back.data.get(), "{\"a\":1}");
        assert_eq!(back.tries, Some(2));
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
