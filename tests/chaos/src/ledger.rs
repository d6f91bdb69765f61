//! The ledger: one JSON line per attempt START and END, written by the workers, read by the
//! harness while the run goes and by the checker after it.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which end of an attempt a line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The job body began.
    Start,
    /// The job body ended (`outcome` says how).
    End,
}

/// One ledger line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// START or END.
    pub ev: Event,
    /// The harness's logical job id.
    pub job: u64,
    /// The attempt number the engine gave (`ctx.attempt()`).
    pub attempt: u32,
    /// The worker process.
    pub pid: u32,
    /// Wall-clock microseconds since the Unix epoch.
    pub us: u64,
    /// The store's id of the job (`ctx.job_id()`), to match the worker's log lines.
    pub sid: String,
    /// A random number per attempt, the same on its START and END lines.
    pub nonce: u64,
    /// On END: `ok` (the body returned and the worker goes on to acknowledge), or
    /// `cancelled` (the body was dropped unfinished: a timeout or a hard shutdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// Wall-clock microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Reads a ledger as it grows: each call returns the whole lines written since the last.
#[derive(Debug)]
pub struct LedgerReader {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// Lines that were not a ledger entry (interleaved or torn writes would show here).
    pub corrupt: u64,
}

impl LedgerReader {
    /// A reader of `path` from its start (the file need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LedgerReader {
            path: path.into(),
            offset: 0,
            partial: Vec::new(),
            corrupt: 0,
        }
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entries of the lines completed since the last call.
    pub fn read_new(&mut self) -> std::io::Result<Vec<Entry>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(&bytes);
        let Some(last_newline) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Ok(Vec::new());
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        let mut entries = Vec::new();
        for line in complete.split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Entry>(line) {
                Ok(entry) => entries.push(entry),
                Err(_) => self.corrupt += 1,
            }
        }
        Ok(entries)
    }
}

/// One attempt, its START and END lines paired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The logical job.
    pub job: u64,
    /// The engine's attempt number.
    pub attempt: u32,
    /// The worker process.
    pub pid: u32,
    /// The store's id of the job.
    pub sid: String,
    /// When the body began (µs).
    pub start: u64,
    /// When it ended (µs), if it did.
    pub end: Option<u64>,
    /// How it ended.
    pub outcome: Option<String>,
}

impl Attempt {
    /// True if the body returned `Ok`.
    pub fn completed(&self) -> bool {
        self.outcome.as_deref() == Some("ok")
    }

    /// True if the attempt covers the instant `t` (an attempt that never ended covers all
    /// time after its start), with `slack` after its end.
    pub fn covers(&self, t: u64, slack: u64) -> bool {
        self.start <= t && self.end.is_none_or(|end| t <= end.saturating_add(slack))
    }
}

/// Pairs START and END lines into attempts, per logical job in order of start.
pub fn attempts(entries: &[Entry]) -> HashMap<u64, Vec<Attempt>> {
    let mut open: HashMap<(u32, u64, u64), Attempt> = HashMap::new();
    let mut done: Vec<Attempt> = Vec::new();
    for entry in entries {
        let key = (entry.pid, entry.job, entry.nonce);
        match entry.ev {
            Event::Start => {
                if let Some(previous) = open.insert(
                    key,
                    Attempt {
                        job: entry.job,
                        attempt: entry.attempt,
                        pid: entry.pid,
                        sid: entry.sid.clone(),
                        start: entry.us,
                        end: None,
                        outcome: None,
                    },
                ) {
                    done.push(previous);
                }
            }
            Event::End => match open.remove(&key) {
                Some(mut attempt) => {
                    attempt.end = Some(entry.us);
                    attempt.outcome = entry.outcome.clone();
                    done.push(attempt);
                }
                None => done.push(Attempt {
                    job: entry.job,
                    attempt: entry.attempt,
                    pid: entry.pid,
                    sid: entry.sid.clone(),
                    // An END without its START: keep it, so the checker sees the completion.
                    start: entry.us,
                    end: Some(entry.us),
                    outcome: entry.outcome.clone(),
                }),
            },
        }
    }
    done.extend(open.into_values());
    let mut by_job: HashMap<u64, Vec<Attempt>> = HashMap::new();
    for attempt in done {
        by_job.entry(attempt.job).or_default().push(attempt);
    }
    for list in by_job.values_mut() {
        list.sort_by_key(|a| (a.start, a.pid));
    }
    by_job
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ev: Event, job: u64, pid: u32, us: u64, nonce: u64, outcome: Option<&str>) -> Entry {
        Entry {
            ev,
            job,
            attempt: 1,
            pid,
            us,
            sid: format!("s{job}"),
            nonce,
            outcome: outcome.map(str::to_owned),
        }
    }

    #[test]
    fn pairs_starts_and_ends() {
        let entries = vec![
            entry(Event::Start, 1, 10, 100, 7, None),
            entry(Event::Start, 1, 11, 150, 8, None),
            entry(Event::End, 1, 11, 300, 8, Some("ok")),
            entry(Event::Start, 2, 10, 120, 9, None),
            entry(Event::End, 2, 10, 130, 9, Some("cancelled")),
        ];
        let by_job = attempts(&entries);
        let one = &by_job[&1];
        assert_eq!(one.len(), 2);
        assert_eq!((one[0].pid, one[0].end), (10, None));
        assert!(one[1].completed());
        assert!(!by_job[&2][0].completed());
        assert!(one[0].covers(10_000, 0));
        assert!(!one[1].covers(400, 50));
        assert!(one[1].covers(340, 50));
    }

    #[test]
    fn reader_returns_whole_lines_only() {
        let dir = std::env::temp_dir().join(format!("chaos-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.jsonl");
        let line = serde_json::to_string(&entry(Event::Start, 1, 2, 3, 4, None)).unwrap();
        std::fs::write(&path, format!("{line}\n{}", &line[..10])).unwrap();
        let mut reader = LedgerReader::new(&path);
        assert_eq!(reader.read_new().unwrap().len(), 1);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, format!("{}\nnot json\n", &line[10..]).as_bytes())
            .unwrap();
        assert_eq!(reader.read_new().unwrap().len(), 1);
        assert_eq!(reader.corrupt, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
