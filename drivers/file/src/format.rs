//! The on-disk format: file names that carry a job's state, and file contents that carry what
//! never changes (queue, name, claim, payload) plus, for failed jobs, why they failed, and for
//! waiting jobs, their key, dependencies left and availability. (The driver's own bookkeeping
//! files, claims, group counters and intents, are JSON, in their modules.)
//!
//! Every state change of a job is a `rename` of its file, so each one is atomic and only one
//! process can win it; a job given a new payload (a retry re-sealing it) is a new file, staged
//! and renamed into place by a step of the journal, its old file then deleted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use queue_core::storage::{duration_millis, from_unix_millis, unix_millis};
use queue_core::{Availability, Unique, Until};

/// Digits of a zero-padded millisecond time in a file name (enough for the year 33658).
const TIME_WIDTH: usize = 15;
/// The largest time a file name can hold.
const MAX_TIME: i64 = 999_999_999_999_999;
/// Hex digits of a job or failed-record id.
const ID_LEN: usize = 24;
/// The first line of every job and failed-record file.
const MAGIC: &[u8] = b"queue-file job v1\n";
/// The first line of every waiting-job file.
const WAITING_MAGIC: &[u8] = b"queue-file waiting v1\n";
/// The first line of every record file.
const RECORD_MAGIC: &[u8] = b"queue-file record v1\n";
/// The first line of every worker registry file.
const WORKER_MAGIC: &[u8] = b"queue-file worker v1\n";
/// The longest encoded queue name or lock key used as is in a file name.
const MAX_COMPONENT: usize = 200;

/// The process's clock in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

/// A time as it fits in a file name.
pub(crate) fn clamp_ms(ms: i64) -> i64 {
    ms.clamp(0, MAX_TIME)
}

/// A fresh id: 16 hex digits of a per-process strictly increasing sequence seeded from the
/// clock in nanoseconds (so ids sort by creation, which gives FIFO among jobs due at the same
/// millisecond) and 8 hex digits that tell processes apart.
pub(crate) fn new_id() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static PROCESS: OnceLock<u32> = OnceLock::new();
    let process = *PROCESS.get_or_init(|| {
        let token = queue_core::storage::new_token();
        u32::from_str_radix(&token[..8], 16).unwrap_or(std::process::id())
    });
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    let seq = loop {
        let next = nanos.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    format!("{seq:016x}{process:08x}")
}

/// Whether `s` is an id [`new_id`] makes.
pub(crate) fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_token(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn parse_time(s: &str) -> Option<i64> {
    if s.len() != TIME_WIDTH || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_attempts(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A job waiting in `ready/`: `AVAILABLE-ID-ATTEMPTS`, e.g.
/// `001717000000000-17d9a1c2b3e4f500a1b2c3d4-0`. Sorting names sorts by (available at, id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ReadyName {
    pub(crate) at: i64,
    pub(crate) id: String,
    pub(crate) attempts: u32,
}

impl ReadyName {
    pub(crate) fn file_name(&self) -> String {
        format!("{:015}-{}-{}", clamp_ms(self.at), self.id, self.attempts)
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        let mut parts = name.split('-');
        let at = parse_time(parts.next()?)?;
        let id = parts.next().filter(|s| is_id(s))?.to_owned();
        let attempts = parse_attempts(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(ReadyName { at, id, attempts })
    }
}

/// A job in `reserved/`: `DEADLINE-ID-ATTEMPTS-TOKEN`. The token fences the reservation: a
/// worker whose token is no longer in the name has lost the job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ReservedName {
    pub(crate) deadline: i64,
    pub(crate) id: String,
    pub(crate) attempts: u32,
    pub(crate) token: String,
}

impl ReservedName {
    pub(crate) fn file_name(&self) -> String {
        format!(
            "{:015}-{}-{}-{}",
            clamp_ms(self.deadline),
            self.id,
            self.attempts,
            self.token
        )
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        let mut parts = name.split('-');
        let deadline = parse_time(parts.next()?)?;
        let id = parts.next().filter(|s| is_id(s))?.to_owned();
        let attempts = parse_attempts(parts.next()?)?;
        let token = parts.next().filter(|s| is_token(s))?.to_owned();
        if parts.next().is_some() {
            return None;
        }
        Some(ReservedName {
            deadline,
            id,
            attempts,
            token,
        })
    }
}

/// A record in `failed/`: `FAILED_AT-ID`; the whole name is the failed job's id, so sorting
/// names sorts oldest first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FailedName {
    pub(crate) at: i64,
    pub(crate) id: String,
}

impl FailedName {
    pub(crate) fn file_name(&self) -> String {
        format!("{:015}-{}", clamp_ms(self.at), self.id)
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        let (at, id) = name.split_once('-')?;
        let at = parse_time(at)?;
        if !is_id(id) {
            return None;
        }
        Some(FailedName {
            at,
            id: id.to_owned(),
        })
    }
}

/// The bytes of a name component written as `%XX`: all but ASCII letters, digits, `_`, `-`
/// and `.` (every byte of a non-ASCII character included).
const NAME_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'-').remove(b'.');

/// A name as one path component: a leading dot is escaped too, so that no name is `.`, `..`
/// or a hidden file.
pub(crate) fn encode_name(s: &str) -> String {
    match s.strip_prefix('.') {
        Some(rest) => format!("%2E{}", utf8_percent_encode(rest, NAME_ESCAPED)),
        None => utf8_percent_encode(s, NAME_ESCAPED).to_string(),
    }
}

/// A header value: `%`, control characters and DEL as `%XX`, everything else as it is, so
/// an operator reads non-ASCII text whole (`percent-encoding` always escapes non-ASCII,
/// hence this loop).
fn encode_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || c.is_ascii_control() {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The inverse of both encodings. `None` if the bytes are not UTF-8. A `%` not followed by
/// two hex digits is kept as it is (the crate's leniency): names are checked by encoding
/// them back, and a value read that way still round-trips.
fn decode(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|cow| cow.into_owned())
}

/// A queue name as a directory name: letters, digits, `_`, `-` and `.` as they are, every
/// other byte (and a leading dot) as `%XX`; the empty name is `%`. `None` if too long.
pub(crate) fn queue_dir_name(queue: &str) -> Option<String> {
    if queue.is_empty() {
        return Some("%".to_owned());
    }
    let name = encode_name(queue);
    (name.len() <= MAX_COMPONENT).then_some(name)
}

/// The queue a directory name stands for, if it is one this driver made.
pub(crate) fn queue_from_dir_name(name: &str) -> Option<String> {
    if name == "%" {
        return Some(String::new());
    }
    let queue = decode(name)?;
    (queue_dir_name(&queue).as_deref() == Some(name)).then_some(queue)
}

/// A lock key, claim key or group name as a file name; names too long for one keep a
/// readable prefix and end in a 128-bit hash that is the same in every process and build.
pub(crate) fn key_file_name(key: &str) -> String {
    let name = encode_name(key);
    if !key.is_empty() && name.len() <= MAX_COMPONENT {
        return name;
    }
    let prefix: String = name.chars().take(100).collect();
    format!(
        "{prefix}~{:016x}{:016x}",
        fnv1a(key, 0xcbf2_9ce4_8422_2325),
        fnv1a(key, 0x8422_2325_cbf2_9ce4)
    )
}

fn fnv1a(s: &str, seed: u64) -> u64 {
    s.bytes().fold(seed, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A record's file name in `records/`: the job id as a key file name, a dot, and the kind
/// (which has no dot: [`RecordKey::is_valid`](queue_core::storage::RecordKey::is_valid)
/// kinds only), so a job's records sort together.
pub(crate) fn record_file_name(job_id: &str, kind: &str) -> String {
    format!("{}.{kind}", key_file_name(job_id))
}

/// What a job file holds besides its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobFile {
    pub(crate) queue: String,
    pub(crate) name: String,
    /// The job's unique claim, as pushed.
    pub(crate) unique: Option<Unique>,
    pub(crate) payload: Vec<u8>,
}

/// What a failed record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailedFile {
    pub(crate) job: JobFile,
    pub(crate) job_id: String,
    pub(crate) attempts: u32,
    pub(crate) failed_at: i64,
    pub(crate) error: String,
}

/// What a waiting-job file (`waiting/KEY`) holds: a job held back until its dependencies are
/// met, then published as a job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WaitingFile {
    pub(crate) key: String,
    /// Dependencies left (at least 1 while the file exists; any number as read).
    pub(crate) deps: i64,
    /// When the job becomes available, as pushed: a delay counts from its release.
    pub(crate) available: Availability,
    pub(crate) job: JobFile,
}

/// A record kept for a job (`records/JOB.KIND`): its value and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordFile {
    pub(crate) job_id: String,
    pub(crate) kind: String,
    /// Milliseconds since the Unix epoch: the record is not read from then on.
    pub(crate) expires: i64,
    pub(crate) value: Vec<u8>,
}

/// What the start of a job file says: enough to reserve by name and to know the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) name: String,
    pub(crate) unique: Option<Unique>,
}

fn header(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(encode_value(value).as_bytes());
    out.push(b'\n');
}

fn job_headers(out: &mut Vec<u8>, job: &JobFile) {
    out.extend_from_slice(MAGIC);
    job_fields(out, job);
}

fn job_fields(out: &mut Vec<u8>, job: &JobFile) {
    header(out, "queue", &job.queue);
    header(out, "name", &job.name);
    if let Some(unique) = &job.unique {
        header(out, "unique", &unique.key);
        header(out, "until", unique.until.as_str());
    }
}

fn finish(mut out: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    out.extend_from_slice(format!("payload: {}\n\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out
}

/// A job file:
///
/// ```text
/// queue-file job v1
/// queue: emails
/// name: send-email
/// unique: invoice-42          (only for a job pushed with a claim)
/// until: terminal             (idem)
/// payload: 42
///
/// <42 payload bytes>
/// ```
///
/// Header values are UTF-8 with `%`, control characters and DEL written as `%XX`.
pub(crate) fn encode_job(job: &JobFile) -> Vec<u8> {
    let mut out = Vec::with_capacity(job.payload.len() + 128);
    job_headers(&mut out, job);
    finish(out, &job.payload)
}

/// A failed record: a job file with `job-id`, `attempts`, `failed-at` (milliseconds since the
/// Unix epoch) and `error` in its header, so that retrying it is one rename back into a queue.
pub(crate) fn encode_failed(failed: &FailedFile) -> Vec<u8> {
    let mut out = Vec::with_capacity(failed.job.payload.len() + failed.error.len() + 256);
    job_headers(&mut out, &failed.job);
    header(&mut out, "job-id", &failed.job_id);
    header(&mut out, "attempts", &failed.attempts.to_string());
    header(&mut out, "failed-at", &failed.failed_at.to_string());
    header(&mut out, "error", &failed.error);
    finish(out, &failed.job.payload)
}

/// A waiting job: a job file with another first line and the waiting job's own fields first:
///
/// ```text
/// queue-file waiting v1
/// key: order-42/notify
/// deps: 2                     (dependencies left)
/// available: after 5000       (`now`, `after MILLIS` from its release, or `at MILLIS`)
/// queue: emails
/// name: send-email
/// unique: invoice-42          (only for a job with a claim)
/// until: terminal             (idem)
/// payload: 42
///
/// <42 payload bytes>
/// ```
pub(crate) fn encode_waiting(waiting: &WaitingFile) -> Vec<u8> {
    let mut out = Vec::with_capacity(waiting.job.payload.len() + waiting.key.len() + 160);
    out.extend_from_slice(WAITING_MAGIC);
    header(&mut out, "key", &waiting.key);
    header(&mut out, "deps", &waiting.deps.to_string());
    let available = match waiting.available {
        Availability::Now => "now".to_owned(),
        Availability::After(delay) => format!("after {}", duration_millis(delay)),
        Availability::At(at) => format!("at {}", unix_millis(at)),
    };
    header(&mut out, "available", &available);
    job_fields(&mut out, &waiting.job);
    finish(out, &waiting.job.payload)
}

/// A record file:
///
/// ```text
/// queue-file record v1
/// job: 0123456789abcdef01234567
/// kind: status
/// expires: 1717000000000      (milliseconds since the Unix epoch)
/// payload: 9
///
/// <9 value bytes>
/// ```
pub(crate) fn encode_record(record: &RecordFile) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.value.len() + record.job_id.len() + 96);
    out.extend_from_slice(RECORD_MAGIC);
    header(&mut out, "job", &record.job_id);
    header(&mut out, "kind", &record.kind);
    header(&mut out, "expires", &record.expires.to_string());
    finish(out, &record.value)
}

/// A file's header lines and the bytes after them.
struct Parsed<'a> {
    fields: Vec<(&'a str, String)>,
    body: &'a [u8],
}

impl Parsed<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        get(&self.fields, key)
    }
}

fn get<'a>(fields: &'a [(&str, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

fn unique_of(fields: &[(&str, String)]) -> Option<Unique> {
    let key = get(fields, "unique")?;
    let until = get(fields, "until")
        .and_then(Until::parse)
        .unwrap_or_default();
    Some(Unique::new(key).until(until))
}

fn parse_fields(head: &str) -> Result<Vec<(&str, String)>, String> {
    let mut fields = Vec::new();
    for line in head.split('\n') {
        let (key, value) = line
            .split_once(": ")
            .ok_or_else(|| format!("its header line {line:?} is not `key: value`"))?;
        let value = decode(value).ok_or_else(|| {
            format!("the `{key}` value in its header is badly encoded or not UTF-8")
        })?;
        fields.push((key, value));
    }
    Ok(fields)
}

fn parse(bytes: &[u8]) -> Result<Parsed<'_>, String> {
    parse_as(bytes, MAGIC)
}

/// [`parse`] for a file whose first line is `magic`.
fn parse_as<'a>(bytes: &'a [u8], magic: &[u8]) -> Result<Parsed<'a>, String> {
    let rest = bytes.strip_prefix(magic).ok_or_else(|| {
        format!(
            "it does not start with the `{}` line",
            String::from_utf8_lossy(magic).trim_end()
        )
    })?;
    let end = rest
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or_else(|| "its header is truncated (no blank line after it)".to_owned())?;
    let head = std::str::from_utf8(&rest[..end])
        .map_err(|_| "its header is not valid UTF-8".to_owned())?;
    let parsed = Parsed {
        fields: parse_fields(head)?,
        body: &rest[end + 2..],
    };
    let length: usize = parsed
        .get("payload")
        .ok_or_else(|| "its header has no `payload` length".to_owned())?
        .parse()
        .map_err(|_| "its `payload` length is not a number".to_owned())?;
    if parsed.body.len() != length {
        return Err(format!(
            "it is truncated or padded: the header says {length} payload bytes, the file has {}",
            parsed.body.len()
        ));
    }
    Ok(parsed)
}

/// Reads a job file; the error says what is wrong with it, for the failed store.
pub(crate) fn decode_job(bytes: &[u8]) -> Result<JobFile, String> {
    let parsed = parse(bytes)?;
    Ok(JobFile {
        queue: parsed.get("queue").unwrap_or_default().to_owned(),
        name: parsed
            .get("name")
            .ok_or_else(|| "its header has no `name`".to_owned())?
            .to_owned(),
        unique: unique_of(&parsed.fields),
        payload: parsed.body.to_vec(),
    })
}

/// Reads a waiting-job file; the error says what is wrong with it.
pub(crate) fn decode_waiting(bytes: &[u8]) -> Result<WaitingFile, String> {
    let parsed = parse_as(bytes, WAITING_MAGIC)?;
    let field = |key: &str| {
        parsed
            .get(key)
            .ok_or_else(|| format!("its header has no `{key}`"))
    };
    let deps = field("deps")?
        .parse()
        .map_err(|_| "its `deps` is not a number".to_owned())?;
    let available = field("available")?;
    let millis = |text: &str| {
        text.parse::<i64>()
            .map_err(|_| format!("its `available` ({available}) is not a number of milliseconds"))
    };
    let available = match available.split_once(' ') {
        None if available == "now" => Availability::Now,
        Some(("after", ms)) => Availability::After(std::time::Duration::from_millis(
            u64::try_from(millis(ms)?).map_err(|_| "its `available` delay is negative")?,
        )),
        Some(("at", ms)) => Availability::At(from_unix_millis(millis(ms)?)),
        _ => {
            return Err(format!(
                "its `available` ({available}) is not `now`, `after MILLIS` or `at MILLIS`"
            ))
        }
    };
    Ok(WaitingFile {
        key: field("key")?.to_owned(),
        deps,
        available,
        job: JobFile {
            queue: parsed.get("queue").unwrap_or_default().to_owned(),
            name: field("name")?.to_owned(),
            unique: unique_of(&parsed.fields),
            payload: parsed.body.to_vec(),
        },
    })
}

/// An entry of the worker registry, in `workers/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerFile {
    pub(crate) id: String,
    /// Milliseconds since the Unix epoch: the entry is not listed from then on.
    pub(crate) expires: i64,
    pub(crate) entry: Vec<u8>,
}

/// A worker registry file:
///
/// ```text
/// queue-file worker v1
/// id: host:1234:0a1b2c3d
/// expires: 1717000000000      (milliseconds since the Unix epoch)
/// payload: 9
///
/// <9 entry bytes>
/// ```
pub(crate) fn encode_worker(worker: &WorkerFile) -> Vec<u8> {
    let mut out = Vec::with_capacity(worker.entry.len() + worker.id.len() + 80);
    out.extend_from_slice(WORKER_MAGIC);
    header(&mut out, "id", &worker.id);
    header(&mut out, "expires", &worker.expires.to_string());
    finish(out, &worker.entry)
}

/// Reads a worker registry file; the error says what is wrong with it.
pub(crate) fn decode_worker(bytes: &[u8]) -> Result<WorkerFile, String> {
    let parsed = parse_as(bytes, WORKER_MAGIC)?;
    let field = |key: &str| {
        parsed
            .get(key)
            .ok_or_else(|| format!("its header has no `{key}`"))
    };
    Ok(WorkerFile {
        id: field("id")?.to_owned(),
        expires: field("expires")?
            .parse()
            .map_err(|_| "its `expires` is not a number of milliseconds".to_owned())?,
        entry: parsed.body.to_vec(),
    })
}

/// Reads a record file; the error says what is wrong with it.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<RecordFile, String> {
    let parsed = parse_as(bytes, RECORD_MAGIC)?;
    let field = |key: &str| {
        parsed
            .get(key)
            .ok_or_else(|| format!("its header has no `{key}`"))
    };
    Ok(RecordFile {
        job_id: field("job")?.to_owned(),
        kind: field("kind")?.to_owned(),
        expires: field("expires")?
            .parse()
            .map_err(|_| "its `expires` is not a number of milliseconds".to_owned())?,
        value: parsed.body.to_vec(),
    })
}

/// Reads the name and claim from the start of a job file (the header, without the payload).
/// `None` if the header is not all there.
pub(crate) fn decode_head(bytes: &[u8]) -> Option<Head> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let end = rest.windows(2).position(|w| w == b"\n\n")?;
    let head = std::str::from_utf8(&rest[..end]).ok()?;
    let fields = parse_fields(head).ok()?;
    Some(Head {
        name: get(&fields, "name")?.to_owned(),
        unique: unique_of(&fields),
    })
}

/// Reads only the job name from the start of a job file, however damaged the rest is (for
/// the failed record of a damaged file).
pub(crate) fn decode_name(bytes: &[u8]) -> Option<String> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let head = rest.split(|b| *b == b'\n').take_while(|l| !l.is_empty());
    for line in head {
        let line = std::str::from_utf8(line).ok()?;
        if let Some(value) = line.strip_prefix("name: ") {
            return decode(value);
        }
    }
    None
}

/// Reads a failed record; `name` supplies the failure time when the header lacks it.
pub(crate) fn decode_failed(bytes: &[u8], name: &FailedName) -> Result<FailedFile, String> {
    let parsed = parse(bytes)?;
    let job = JobFile {
        queue: parsed.get("queue").unwrap_or_default().to_owned(),
        name: parsed.get("name").unwrap_or_default().to_owned(),
        unique: unique_of(&parsed.fields),
        payload: parsed.body.to_vec(),
    };
    Ok(FailedFile {
        job,
        job_id: parsed.get("job-id").unwrap_or_default().to_owned(),
        attempts: parsed
            .get("attempts")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
        failed_at: parsed
            .get("failed-at")
            .and_then(|a| a.parse().ok())
            .unwrap_or(name.at),
        error: parsed.get("error").unwrap_or_default().to_owned(),
    })
}

/// A lock file's contents: `owner: OWNER` and `expires: MILLIS` lines.
pub(crate) fn encode_lock(key: &str, owner: &str, expires: i64) -> Vec<u8> {
    let mut out = Vec::new();
    header(&mut out, "owner", owner);
    header(&mut out, "expires", &expires.to_string());
    header(&mut out, "key", key);
    out
}

/// The key a lock file names: its `key` header (absent from files of older versions), else
/// its file name if that is the key's own encoding (not a hashed long key).
pub(crate) fn decode_lock_key(bytes: &[u8], file_name: &str) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    if let Some(key) = text.lines().find_map(|line| line.strip_prefix("key: ")) {
        return decode(key);
    }
    let key = decode(file_name)?;
    (key_file_name(&key) == file_name).then_some(key)
}

/// The owner and expiry in a lock file; `None` (a free lock) for an empty or garbled one.
pub(crate) fn decode_lock(bytes: &[u8]) -> Option<(String, i64)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut owner = None;
    let mut expires = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("owner: ") {
            owner = decode(v);
        } else if let Some(v) = line.strip_prefix("expires: ") {
            expires = v.parse().ok();
        }
    }
    Some((owner?, expires?))
}

/// Every parser of the on-disk format at once, for the fuzz target: none may panic, and what
/// parses must encode back to something that parses to the same value.
#[doc(hidden)]
pub fn fuzz_parsers(bytes: &[u8], file_name: &str) {
    if let Ok(job) = decode_job(bytes) {
        let again = encode_job(&job);
        assert_eq!(
            decode_job(&again).as_ref(),
            Ok(&job),
            "a job file round-trips"
        );
        assert_eq!(
            decode_head(&again),
            Some(Head {
                name: job.name.clone(),
                unique: job.unique.clone()
            }),
            "the head of a job file is its name and claim"
        );
    }
    let _ = decode_name(bytes);
    let _ = decode_head(bytes);
    if let Some(name) = FailedName::parse(file_name) {
        if let Ok(failed) = decode_failed(bytes, &name) {
            let again = encode_failed(&failed);
            assert_eq!(
                decode_failed(&again, &name).as_ref(),
                Ok(&failed),
                "a failed record round-trips"
            );
        }
    }
    if let Some(ready) = ReadyName::parse(file_name) {
        assert_eq!(ReadyName::parse(&ready.file_name()).as_ref(), Some(&ready));
    }
    if let Some(reserved) = ReservedName::parse(file_name) {
        assert_eq!(
            ReservedName::parse(&reserved.file_name()).as_ref(),
            Some(&reserved)
        );
    }
    if let Some(queue) = queue_from_dir_name(file_name) {
        assert_eq!(
            queue_dir_name(&queue).and_then(|d| queue_from_dir_name(&d)),
            Some(queue)
        );
    }
    if let Ok(waiting) = decode_waiting(bytes) {
        let again = encode_waiting(&waiting);
        assert_eq!(
            decode_waiting(&again).as_ref(),
            Ok(&waiting),
            "a waiting-job file round-trips"
        );
        assert_eq!(
            decode_job(&encode_job(&waiting.job)).as_ref(),
            Ok(&waiting.job),
            "a released job is a job file"
        );
    }
    if let Ok(record) = decode_record(bytes) {
        let again = encode_record(&record);
        assert_eq!(
            decode_record(&again).as_ref(),
            Ok(&record),
            "a record file round-trips"
        );
    }
    let _ = decode_lock(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(queue: &str, name: &str, payload: &[u8]) -> JobFile {
        JobFile {
            queue: queue.into(),
            name: name.into(),
            unique: None,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn names_round_trip_and_sort() {
        let a = ReadyName {
            at: 5,
            id: new_id(),
            attempts: 0,
        };
        let b = ReadyName {
            at: 5,
            id: new_id(),
            attempts: 3,
        };
        assert!(a.file_name() < b.file_name(), "ids sort by creation");
        assert_eq!(ReadyName::parse(&a.file_name()), Some(a.clone()));
        let r = ReservedName {
            deadline: 9,
            id: a.id.clone(),
            attempts: 1,
            token: queue_core::storage::new_token(),
        };
        assert_eq!(ReservedName::parse(&r.file_name()), Some(r));
        let f = FailedName {
            at: 1_700_000_000_000,
            id: new_id(),
        };
        assert_eq!(FailedName::parse(&f.file_name()), Some(f));
        for bad in [
            "",
            "x",
            "000000000000005-zz-0",
            "5-abc-0",
            "000000000000005-0017a0b1c2d3e4f5a1b2c3d4-0-extra-x",
        ] {
            assert_eq!(ReadyName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn queue_names_encode_safely() {
        for q in [
            "default",
            "",
            ".",
            "..",
            "a/b",
            "é",
            "%",
            "with space",
            ".hidden",
        ] {
            let dir = queue_dir_name(q).unwrap();
            assert!(
                !dir.contains('/') && dir != "." && dir != ".." && !dir.starts_with('.'),
                "{q} -> {dir}"
            );
            assert_eq!(queue_from_dir_name(&dir).as_deref(), Some(q));
        }
        assert_eq!(queue_dir_name("a/b .c").as_deref(), Some("a%2Fb%20.c"));
        assert_eq!(queue_dir_name(".x").as_deref(), Some("%2Ex"));
        assert_eq!(queue_dir_name(&"x".repeat(300)), None);
        assert_eq!(queue_from_dir_name("A%2f"), None, "only our own spelling");
        assert_eq!(queue_from_dir_name("A%zz"), None, "only our own spelling");
    }

    #[test]
    fn files_round_trip() {
        let payload = vec![0xff, 0, b'\n', b'\n', 1];
        let bytes = encode_job(&job("q\n%", "na me", &payload));
        let decoded = decode_job(&bytes).unwrap();
        assert_eq!(decoded, job("q\n%", "na me", &payload));
        assert_eq!(decode_name(&bytes).as_deref(), Some("na me"));
        assert_eq!(
            decode_head(&bytes),
            Some(Head {
                name: "na me".into(),
                unique: None
            })
        );
        assert!(decode_job(&bytes[..bytes.len() - 1])
            .unwrap_err()
            .contains("truncated"));
        assert!(decode_job(b"garbage").is_err());
        let claimed = JobFile {
            unique: Some(Unique::new("key: 1\n%").until(Until::Succeeded)),
            ..decoded.clone()
        };
        let bytes = encode_job(&claimed);
        assert_eq!(decode_job(&bytes).unwrap(), claimed);
        assert_eq!(decode_head(&bytes).unwrap().unique, claimed.unique);
        let failed = FailedFile {
            job: claimed,
            job_id: new_id(),
            attempts: 2,
            failed_at: 77,
            error: "line 1\nline 2".into(),
        };
        let name = FailedName {
            at: 77,
            id: new_id(),
        };
        assert_eq!(
            decode_failed(&encode_failed(&failed), &name).unwrap(),
            failed
        );
        // A failed record reads as a job file: retrying one is a rename.
        assert_eq!(decode_job(&encode_failed(&failed)).unwrap(), failed.job);
        assert_eq!(
            decode_lock(&encode_lock("k", "own er", 12)),
            Some(("own er".into(), 12))
        );
        assert_eq!(decode_lock(b""), None);
    }

    #[test]
    fn non_ascii_headers_round_trip() {
        // Found by the fuzz target: bytes of non-ASCII characters were written one by one
        // as if each were a character of its own, so "café" came back as "cafÃ©".
        for text in ["café", "отчёт", "日本語 %\n", "\u{749}\u{89}", "emoji 🦀"] {
            let bytes = encode_job(&job(text, text, b"{}"));
            let decoded = decode_job(&bytes).unwrap();
            assert_eq!(
                (decoded.queue.as_str(), decoded.name.as_str()),
                (text, text)
            );
            assert_eq!(decode_name(&bytes).as_deref(), Some(text));
            assert_eq!(
                decode_lock(&encode_lock(text, text, 1)),
                Some((text.to_owned(), 1))
            );
            let dir = queue_dir_name(text).unwrap();
            assert!(dir.is_ascii(), "{dir}");
            assert_eq!(queue_from_dir_name(&dir).as_deref(), Some(text));
        }
        let text = String::from_utf8(encode_job(&job("q", "café", b""))).unwrap();
        assert!(text.contains("name: café\n"), "kept readable: {text}");
    }

    #[test]
    fn fuzz_finding_non_ascii_name_round_trips() {
        // The input the fuzz target stopped on (first line: a file name, then the file).
        let input = include_bytes!("../tests/data/fuzz-non-ascii-name");
        let i = input.iter().position(|b| *b == b'\n').unwrap();
        fuzz_parsers(&input[i + 1..], &String::from_utf8_lossy(&input[..i]));
    }

    #[test]
    fn record_files_round_trip() {
        let record = RecordFile {
            job_id: "0123456789abcdef01234567".into(),
            kind: "status".into(),
            expires: 1_700_000_000_123,
            value: (0..=255u8).chain([b'\n', b'\n']).collect(),
        };
        let bytes = encode_record(&record);
        assert_eq!(decode_record(&bytes).as_ref(), Ok(&record));
        assert!(decode_job(&bytes).is_err(), "a record is no job file");
        fuzz_parsers(&bytes, "x");
        let text = String::from_utf8(encode_record(&RecordFile {
            value: b"done".to_vec(),
            ..record.clone()
        }))
        .unwrap();
        assert_eq!(
            text,
            "queue-file record v1\njob: 0123456789abcdef01234567\nkind: status\n\
             expires: 1700000000123\npayload: 4\n\ndone"
        );
        for bad in [
            text.replace("expires: 1700000000123", "expires: soon"),
            text.replace("kind: status\n", ""),
            text.replace("payload: 4", "payload: 5"),
            text.replace("record v1", "job v1"),
        ] {
            assert!(decode_record(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(
            record_file_name("0123456789abcdef01234567", "progress"),
            "0123456789abcdef01234567.progress"
        );
        assert_eq!(record_file_name("a/b", "cancel"), "a%2Fb.cancel");
    }

    #[test]
    fn waiting_files_round_trip() {
        let at = from_unix_millis(1_700_000_000_123);
        for available in [
            Availability::Now,
            Availability::After(std::time::Duration::from_millis(5_000)),
            Availability::At(at),
            Availability::At(from_unix_millis(-5)),
        ] {
            let waiting = WaitingFile {
                key: "wf:1/node %\n".into(),
                deps: 3,
                available,
                job: JobFile {
                    unique: Some(Unique::new("claim").until(Until::Started)),
                    ..job("q", "then", b"\n\npayload")
                },
            };
            let bytes = encode_waiting(&waiting);
            assert_eq!(decode_waiting(&bytes).as_ref(), Ok(&waiting));
            assert!(decode_job(&bytes).is_err(), "a waiting job is no job file");
            fuzz_parsers(&bytes, "x");
        }
        let text = String::from_utf8(encode_waiting(&WaitingFile {
            key: "k".into(),
            deps: 2,
            available: Availability::After(std::time::Duration::from_secs(5)),
            job: job("mail", "send", b"{}"),
        }))
        .unwrap();
        assert_eq!(
            text,
            "queue-file waiting v1\nkey: k\ndeps: 2\navailable: after 5000\nqueue: mail\n\
             name: send\npayload: 2\n\n{}"
        );
        for bad in [
            text.replace("deps: 2", "deps: two"),
            text.replace("after 5000", "later"),
            text.replace("after 5000", "after -1"),
            text.replace("key: k\n", ""),
            text.replace("payload: 2", "payload: 3"),
            text.replace("waiting v1", "job v1"),
        ] {
            assert!(decode_waiting(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_keys_hash() {
        let a = key_file_name(&"k".repeat(500));
        let b = key_file_name(&format!("{}x", "k".repeat(499)));
        assert!(a.len() < 255 && a != b);
        assert_ne!(key_file_name(""), "");
    }
}
