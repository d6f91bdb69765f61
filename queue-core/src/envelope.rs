//! The envelope: how a job is encoded in a store.
//!
//! A stored job is one JSON object. The storage never reads it; the worker does:
//!
//! ```json
//! {"v":1,"name":"send-email","data":{"to":"a@b.c"},"tries":3,"timeout_ms":30000,
//!  "lock":"send-email","dispatched_at":1700000000000}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// The current envelope version.
pub const VERSION: u32 = 1;

/// A decoded envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

impl Envelope {
    /// Encodes the envelope.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Payload(e.to_string()))
    }

    /// Decodes an envelope, with an error that says what is wrong with the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, String> {
        if bytes.is_empty() {
            return Err("empty payload".into());
        }
        let text =
            std::str::from_utf8(bytes).map_err(|e| format!("payload is not valid UTF-8: {e}"))?;
        let envelope: Envelope = serde_json::from_str(text).map_err(|e| {
            if e.is_eof() {
                format!("payload is truncated JSON: {e}")
            } else {
                format!("payload is not a job envelope: {e}")
            }
        })?;
        if envelope.v != VERSION {
            return Err(format!(
                "envelope version {} is not supported (this worker reads version {VERSION})",
                envelope.v
            ));
        }
        if envelope.name.is_empty() {
            return Err("envelope has an empty job name".into());
        }
        Ok(envelope)
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
        };
        let bytes = env.encode().unwrap();
        let back = Envelope::decode(&bytes).unwrap();
        assert_eq!(back.name, "x");
        assert_eq!(back.data.get(), "{\"a\":1}");
        assert_eq!(back.tries, Some(2));
    }

    #[test]
    fn bad_bytes_have_reasons() {
        assert!(Envelope::decode(b"").unwrap_err().contains("empty"));
        assert!(Envelope::decode(&[0xff, 0xfe])
            .unwrap_err()
            .contains("UTF-8"));
        assert!(Envelope::decode(b"{\"v\":1,\"name\":\"x\",\"da")
            .unwrap_err()
            .contains("truncated"));
        assert!(Envelope::decode(b"[1,2]")
            .unwrap_err()
            .contains("not a job envelope"));
        let deep = "[".repeat(10_000);
        assert!(Envelope::decode(deep.as_bytes()).is_err());
    }
}
