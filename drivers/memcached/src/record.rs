//! The binary layout of the items the driver stores: a job's state record, a failed job, and
//! a record kept for a job ([`Track`](queue_core::storage::Track)).
//!
//! Layouts start with a version byte so a later version can read or refuse older items.
//! Decoding never panics: a malformed item is reported as corrupt and skipped.

use queue_core::{Unique, Until};

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobState {
    /// Ready, referenced by slot `slot` of its queue.
    Waiting { slot: u64 },
    /// Not available before `at` (Unix ms); listed in the timer bucket of `at`.
    Delayed { at: i64 },
    /// Taken by a worker until `deadline` (Unix ms); listed in the timer bucket of `deadline`.
    Reserved { token: String, deadline: i64 },
}

/// A job's state record (`{prefix}:j:{id}`); its payload lives in a separate item
/// (`{prefix}:b:{id}`) that never changes, so state changes move only a few bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobRecord {
    /// The queue's generation when the job was last put back: `clear` bumps the generation,
    /// and waiting or delayed jobs of an older generation count as deleted.
    pub(crate) gen: u64,
    pub(crate) attempts: u32,
    pub(crate) state: JobState,
    /// When the job became (or becomes) available: its push or due time, or when it was
    /// released. A reservation leaves it as it was.
    pub(crate) due: i64,
    pub(crate) queue: String,
    pub(crate) name: String,
    /// Its unique claim as pushed (the claim item `P:u:KEY` names the job holding it).
    pub(crate) unique: Option<Unique>,
}

/// A job in the failed store (`{failed_prefix}:f:{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailedRecord {
    pub(crate) failed_at: i64,
    pub(crate) attempts: u32,
    pub(crate) job_id: String,
    pub(crate) queue: String,
    pub(crate) name: String,
    pub(crate) error: String,
    pub(crate) unique: Option<Unique>,
    pub(crate) payload: Vec<u8>,
}

/// The layout of job records (3: with the unique claim).
const JOB_VERSION: u8 = 3;
/// The layout of a job's records (`{prefix}:r:{id}:{kind}`): version, expiry (Unix ms, i64
/// little-endian), then the value as given.
const TRACK_VERSION: u8 = 1;
/// The layout of failed records (2: with the unique claim).
const FAILED_VERSION: u8 = 2;

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

fn put_unique(out: &mut Vec<u8>, unique: &Option<Unique>) {
    match unique {
        None => out.push(0),
        Some(u) => {
            out.push(match u.until {
                Until::Started => 1,
                Until::Succeeded => 2,
                Until::Terminal => 3,
            });
            put_str(out, u.key.as_bytes());
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.data.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?.try_into().map_err(|_| "truncated".into())
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a text field is not UTF-8".into())
    }

    fn unique(&mut self) -> Result<Option<Unique>, String> {
        let until = match self.u8()? {
            0 => return Ok(None),
            1 => Until::Started,
            2 => Until::Succeeded,
            3 => Until::Terminal,
            other => return Err(format!("unknown claim kind {other}")),
        };
        Ok(Some(Unique::new(self.string()?).until(until)))
    }
}

impl JobRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.queue.len() + self.name.len());
        out.push(JOB_VERSION);
        out.extend_from_slice(&self.gen.to_le_bytes());
        out.extend_from_slice(&self.attempts.to_le_bytes());
        match &self.state {
            JobState::Waiting { slot } => {
                out.push(0);
                out.extend_from_slice(&slot.to_le_bytes());
            }
            JobState::Delayed { at } => {
                out.push(1);
                out.extend_from_slice(&at.to_le_bytes());
            }
            JobState::Reserved { token, deadline } => {
                out.push(2);
                out.extend_from_slice(&deadline.to_le_bytes());
                put_str(&mut out, token.as_bytes());
            }
        }
        out.extend_from_slice(&self.due.to_le_bytes());
        put_str(&mut out, self.queue.as_bytes());
        put_str(&mut out, self.name.as_bytes());
        put_unique(&mut out, &self.unique);
        out
    }

    pub(crate) fn decode(data: &[u8]) -> Result<JobRecord, String> {
        let mut r = Reader { data };
        let version = r.u8()?;
        if version != JOB_VERSION {
            return Err(format!("unknown job record version {version}"));
        }
        let gen = r.u64()?;
        let attempts = r.u32()?;
        let state = match r.u8()? {
            0 => JobState::Waiting { slot: r.u64()? },
            1 => JobState::Delayed { at: r.i64()? },
            2 => {
                let deadline = r.i64()?;
                JobState::Reserved {
                    token: r.string()?,
                    deadline,
                }
            }
            other => return Err(format!("unknown job state {other}")),
        };
        let due = r.i64()?;
        let queue = r.string()?;
        let name = r.string()?;
        let unique = r.unique()?;
        if !r.data.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok(JobRecord {
            gen,
            attempts,
            state,
            due,
            queue,
            name,
            unique,
        })
    }

    /// The lease token, if reserved.
    pub(crate) fn token(&self) -> Option<&str> {
        match &self.state {
            JobState::Reserved { token, .. } => Some(token),
            _ => None,
        }
    }

    /// The time whose timer bucket lists this job, if any.
    pub(crate) fn timer(&self) -> Option<i64> {
        match &self.state {
            JobState::Waiting { .. } => None,
            JobState::Delayed { at } => Some(*at),
            JobState::Reserved { deadline, .. } => Some(*deadline),
        }
    }
}

impl FailedRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.error.len() + self.payload.len());
        out.push(FAILED_VERSION);
        out.extend_from_slice(&self.failed_at.to_le_bytes());
        out.extend_from_slice(&self.attempts.to_le_bytes());
        put_str(&mut out, self.job_id.as_bytes());
        put_str(&mut out, self.queue.as_bytes());
        put_str(&mut out, self.name.as_bytes());
        put_str(&mut out, self.error.as_bytes());
        put_unique(&mut out, &self.unique);
        out.extend_from_slice(&self.payload);
        out
    }

    pub(crate) fn decode(data: &[u8]) -> Result<FailedRecord, String> {
        let mut r = Reader { data };
        let version = r.u8()?;
        if version != FAILED_VERSION {
            return Err(format!("unknown failed record version {version}"));
        }
        Ok(FailedRecord {
            failed_at: r.i64()?,
            attempts: r.u32()?,
            job_id: r.string()?,
            queue: r.string()?,
            name: r.string()?,
            error: r.string()?,
            unique: r.unique()?,
            payload: r.data.to_vec(),
        })
    }
}

/// A job's record as stored: its expiry (Unix ms, judged by the reader: memcached's own
/// expiry has whole seconds only and only collects the item) and its value.
pub(crate) fn encode_track(expires: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + value.len());
    out.push(TRACK_VERSION);
    out.extend_from_slice(&expires.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// The inverse of [`encode_track`]: the expiry and the value.
pub(crate) fn decode_track(data: &[u8]) -> Result<(i64, &[u8]), String> {
    let mut r = Reader { data };
    let version = r.u8()?;
    if version != TRACK_VERSION {
        return Err(format!("unknown record version {version}"));
    }
    let expires = r.i64()?;
    Ok((expires, r.data))
}

/// Bytes a record item holds besides its value.
pub(crate) const TRACK_OVERHEAD: usize = 9;

/// Cuts `text` to at most `max` bytes on a character boundary, saying so.
pub(crate) fn truncate_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    const MARK: &str = " [truncated]";
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// Job ids in a timer bucket: `,12,13,12` (duplicates and garbage are harmless).
pub(crate) fn parse_ids(data: &[u8]) -> Vec<u64> {
    let mut ids: Vec<u64> = data
        .split(|b| *b == b',')
        .filter_map(|part| std::str::from_utf8(part).ok()?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_round_trip() {
        let claims = [None, Some(Unique::new("k ü").until(Until::Started))];
        for (state, unique) in [
            JobState::Waiting { slot: 7 },
            JobState::Delayed { at: -5 },
            JobState::Reserved {
                token: "abc".into(),
                deadline: 1_700_000_000_000,
            },
        ]
        .into_iter()
        .zip(claims.iter().cycle())
        {
            let r = JobRecord {
                gen: 3,
                attempts: 2,
                state,
                due: 1_700_000_000_123,
                queue: "q ü".into(),
                name: "n".into(),
                unique: unique.clone(),
            };
            assert_eq!(JobRecord::decode(&r.encode()), Ok(r));
        }
        assert!(JobRecord::decode(b"").is_err());
        assert!(JobRecord::decode(&[1, 2, 3]).is_err());
        assert!(JobRecord::decode(&[9; 40]).is_err());
    }

    #[test]
    fn failed_round_trip() {
        let f = FailedRecord {
            failed_at: 12,
            attempts: 1,
            job_id: "4".into(),
            queue: "q".into(),
            name: "n".into(),
            error: "e".into(),
            unique: Some(Unique::new("k").until(Until::Succeeded)),
            payload: vec![0xff, 0, 1],
        };
        assert_eq!(FailedRecord::decode(&f.encode()), Ok(f));
    }

    #[test]
    fn track_round_trip() {
        let value: Vec<u8> = (0..=255u8).collect();
        let data = encode_track(-3, &value);
        assert_eq!(data.len(), TRACK_OVERHEAD + value.len());
        assert_eq!(decode_track(&data), Ok((-3, &value[..])));
        assert_eq!(decode_track(&encode_track(7, b"")), Ok((7, &b""[..])));
        assert!(decode_track(b"").is_err());
        assert!(decode_track(&[1, 2, 3]).is_err());
        assert!(decode_track(&[9; 20]).is_err());
    }

    #[test]
    fn truncation_and_ids() {
        assert_eq!(truncate_text("short", 10), "short");
        let cut = truncate_text(&"ż".repeat(100), 40);
        assert!(cut.len() <= 40 && cut.ends_with("[truncated]"));
        assert_eq!(parse_ids(b",3,1,x,3,,2"), vec![1, 2, 3]);
    }
}
