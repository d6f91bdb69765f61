//! [`MemcachedStorage`]: queues built from memcached's atomic `incr`, `add` and `cas`.
//!
//! See the [crate docs](crate) for the design and what it guarantees; the comments here say
//! why each step is ordered the way it is.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use queue_core::storage::{duration_millis, from_unix_millis, new_token, unix_millis};
use queue_core::{
    Availability, Capabilities, Error, FailedJob, JobId, Lease, NewJob, QueueSize, ReserveRequest,
    Reserved, Result, Storage,
};
use tracing::{error, warn};

use crate::client::{Client, Cmd, Reply, Status};
use crate::error::MemcachedError;
use crate::keys::{escape, unescape, Keys, QueueKeys};
use crate::options::MemcachedOptions;
use crate::record::{truncate_text, FailedRecord, JobRecord, JobState};
use crate::DRIVER;

mod counters;
mod oldest;
mod signed;
mod sizes;
mod slots;
mod timers;

/// Width of a timer bucket: due times and lease deadlines are listed per second.
const BUCKET_MS: i64 = 1000;
/// Buckets younger than this many seconds are re-read on every sweep and never deleted, so
/// writers whose clocks run up to this far behind the sweeper's still land in a live bucket.
const LAG_BUCKETS: i64 = 10;
/// At most this many buckets are looked at per sweep (a sweep after long idleness catches
/// up over several calls).
const MAX_SWEEP_BUCKETS: i64 = 4096;
/// How often one process sweeps one queue's timers.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Claimed slots older than this are checked for orphans (a reserver that died between
/// claiming slots and reserving their jobs).
const JANITOR_AFTER_MS: i64 = 5000;
/// At most this many claimed slots are checked per janitor pass.
const JANITOR_MAX_SLOTS: u64 = 65_536;
/// The most slots claimed by one compare-and-swap of the head counter.
const MAX_CLAIM: u64 = 256;
/// How long a skipped slot's tombstone lives (a pusher later than this loses its slot).
const TOMBSTONE_TTL: u32 = 3600;
/// Marks a slot that was skipped: a pusher that finds it re-slots its job.
const TOMBSTONE: &[u8] = b"-";
/// Retries of one compare-and-swap loop before giving up.
const CAS_TRIES: usize = 32;
/// Room kept in every item for memcached's item header and the key.
const KEY_ROOM: usize = 512;
/// Room kept beside a payload for the failure text of its failed record.
const ERROR_ROOM: usize = 4096;
/// Keys per pipelined request when scanning ranges.
const SCAN_CHUNK: u64 = 1024;
/// The newest failed ids are never skipped by the low watermark: a `fail` may have taken
/// its id and not yet written the record.
const FAILED_MARGIN: u64 = 1024;
/// memcached reads relative TTLs only up to 30 days.
const MAX_TTL: u64 = 30 * 24 * 3600;

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

fn bucket(ms: i64) -> i64 {
    ms.div_euclid(BUCKET_MS)
}

fn lease_lost(lease: &Lease) -> Error {
    Error::LeaseLost {
        job_id: lease.job_id.0.clone(),
    }
}

fn text(reply: &Reply) -> Option<String> {
    reply
        .value()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A store of queues in memcached. Cheap to clone: clones share the connection pool.
///
/// ```no_run
/// # async fn demo() -> queue_core::Result<()> {
/// use queue_memcached::{MemcachedOptions, MemcachedStorage};
///
/// let store = MemcachedStorage::connect(MemcachedOptions::from_url("memcache://127.0.0.1:11211")?).await?;
/// let queue = queue_core::Queue::new(store);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MemcachedStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    keys: Keys,
    options: MemcachedOptions,
    item_size_max: usize,
    version: String,
    /// The epoch token this process believes in.
    epoch: Mutex<Option<String>>,
    losses: AtomicU64,
    local: Mutex<Local>,
}

/// What one process remembers to save round trips; forgotten when the state is lost.
#[derive(Debug, Default)]
struct Local {
    /// Queues this process has added to the `queues` list.
    registered: HashSet<String>,
    /// When this process last swept each queue's timers.
    swept: HashMap<String, Instant>,
    /// Counter names this process listed in their group, and until when it trusts that
    /// they are still listed.
    counter_names: HashMap<String, Instant>,
    /// Counter groups this process listed in the index, likewise.
    counter_groups: HashMap<String, Instant>,
}

/// A queue's counters as read at the start of a reservation.
#[derive(Debug, Clone, Copy)]
struct Ends {
    head: Option<(u64, u64)>,
    tail: u64,
    gen: u64,
}

/// A job record read with its CAS token.
#[derive(Debug)]
struct Held {
    id: u64,
    cas: u64,
    record: JobRecord,
}

/// One timer entry found due by a sweep.
#[derive(Debug)]
struct Due {
    held: Held,
    /// The newest bucket listing it.
    listed: i64,
}

impl MemcachedStorage {
    /// Connects, checks the server (memcached 1.6 or newer: the meta protocol), reads its
    /// item size limit and writes or reads the epoch key.
    pub async fn connect(options: MemcachedOptions) -> Result<Self> {
        options.validate()?;
        let client = Client::new(options.addr(), options.pool_limit(), options.timeout());
        let version = client.text("version", false).await?;
        let version = version
            .first()
            .and_then(|l| l.strip_prefix("VERSION "))
            .unwrap_or_default()
            .to_owned();
        let mut numbers = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
        let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        if (major, minor) < (1, 6) {
            return Err(MemcachedError::Config(format!(
                "memcached at {} is version `{version}`; this driver needs 1.6 or newer (the meta protocol)",
                options.addr()
            ))
            .into());
        }
        let settings = client.text("stats settings", true).await?;
        let item_size_max = settings
            .iter()
            .find_map(|l| l.strip_prefix("STAT item_size_max "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1024 * 1024);
        let keys = Keys::new(options.prefix_name(), &options.failed_prefix_name());
        let storage = MemcachedStorage {
            inner: Arc::new(Inner {
                client,
                keys,
                options,
                item_size_max,
                version,
                epoch: Mutex::new(None),
                losses: AtomicU64::new(0),
                local: Mutex::new(Local::default()),
            }),
        };
        let epoch = storage
            .run(vec![Cmd::get(storage.inner.keys.epoch())])
            .await?;
        storage.observe_epoch(&epoch[0]).await?;
        Ok(storage)
    }

    /// The server's largest item (`item_size_max`), read at connect.
    pub fn item_size_max(&self) -> usize {
        self.inner.item_size_max
    }

    /// The largest payload a job on `queue` named `name` may have: an item holds the payload
    /// and, once failed, the payload with its failure text.
    pub fn max_payload(&self, queue: &str, name: &str) -> usize {
        self.inner
            .item_size_max
            .saturating_sub(KEY_ROOM + ERROR_ROOM + 64 + queue.len() + name.len())
    }

    /// The server's version, read at connect.
    pub fn server_version(&self) -> &str {
        &self.inner.version
    }

    /// How many times this store found memcached's state gone (the epoch key missing or
    /// replaced: a restart, a flush or an eviction) since it connected.
    pub fn state_losses(&self) -> u64 {
        self.inner.losses.load(Ordering::Relaxed)
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        // Only caches live behind this lock: after a panic they are still usable.
        self.inner.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    async fn run(&self, cmds: Vec<Cmd>) -> Result<Vec<Reply>> {
        Ok(self.inner.client.run(&cmds).await?)
    }

    /// Compares the epoch key with the one this process knows; on a change, says loudly
    /// once that memcached lost the state, writes a new epoch and forgets local caches.
    async fn observe_epoch(&self, reply: &Reply) -> Result<()> {
        let seen = text(reply);
        {
            let known = self.inner.epoch.lock().unwrap_or_else(|p| p.into_inner());
            if seen.is_some() && *known == seen {
                return Ok(());
            }
        }
        let current = match seen {
            Some(token) => token,
            None => {
                let key = self.keys().epoch();
                let token = new_token();
                let replies = self
                    .run(vec![
                        Cmd::add(key.clone(), token.clone().into_bytes(), 0),
                        Cmd::get(key),
                    ])
                    .await?;
                text(&replies[1]).unwrap_or(token)
            }
        };
        let mut known = self.inner.epoch.lock().unwrap_or_else(|p| p.into_inner());
        if known.as_deref() == Some(current.as_str()) {
            return Ok(());
        }
        let lost = known.is_some();
        *known = Some(current);
        drop(known);
        if lost {
            self.inner.losses.fetch_add(1, Ordering::Relaxed);
            error!(
                server = %self.inner.client.addr(),
                prefix = %self.inner.options.prefix_name(),
                "memcached lost the queue state (it restarted, was flushed, or evicted the epoch key): \
                 every job, reservation, failed job and lock stored before is gone; counters start afresh"
            );
        }
        let mut local = self.local();
        local.registered.clear();
        local.swept.clear();
        local.counter_names.clear();
        local.counter_groups.clear();
        Ok(())
    }

    fn sweep_due(&self, queue: &str) -> bool {
        self.local()
            .swept
            .get(queue)
            .is_none_or(|at| at.elapsed() >= SWEEP_EVERY)
    }

    fn decode_job(&self, id: u64, reply: &Reply) -> Option<(u64, JobRecord)> {
        let data = reply.value()?;
        match JobRecord::decode(data) {
            Ok(record) => Some((reply.cas.unwrap_or(0), record)),
            Err(reason) => {
                error!(key = %self.keys().job(id), %reason, "skipping a corrupt job record");
                None
            }
        }
    }

    /// The commands that list `ids` in the timer bucket of `at` (before the records that
    /// point at it are written, so a sweeper never sees a timed record it cannot find).
    fn timer_cmds(&self, qk: &QueueKeys, at: i64, ids: &[u64], now: i64) -> Vec<Cmd> {
        let b = bucket(at);
        let list: String = ids.iter().map(|id| format!(",{id}")).collect();
        vec![
            Cmd::add(qk.timer(b), Vec::new(), 0),
            Cmd::append(qk.timer(b), list.into_bytes()),
            Cmd::incr(qk.timer_count(b), ids.len() as u64),
            Cmd::add(
                qk.cursor(),
                (bucket(now) - LAG_BUCKETS).to_string().into_bytes(),
                0,
            ),
        ]
    }

    fn check_timer_replies(&self, replies: &[Reply], ids: &[u64]) {
        if let Some(append) = replies.get(1) {
            if !append.ok() {
                error!(
                    ?ids,
                    status = ?append.status,
                    "could not list jobs in their timer bucket: if their worker dies they stay reserved"
                );
            }
        }
    }

    // ----- leases ----------------------------------------------------------------------

    fn lease_id(lease: &Lease) -> Result<u64> {
        lease.job_id.0.parse().map_err(|_| lease_lost(lease))
    }

    /// The job record behind `lease` if the lease is its current one.
    fn check_lease(&self, lease: &Lease, id: u64, reply: &Reply) -> Result<Held> {
        match self.decode_job(id, reply) {
            Some((cas, record)) if record.token() == Some(lease.token.as_str()) => {
                Ok(Held { id, cas, record })
            }
            _ => Err(lease_lost(lease)),
        }
    }

    async fn release_once(
        &self,
        lease: &Lease,
        id: u64,
        delay: Duration,
        refund: bool,
    ) -> Result<bool> {
        let now = now_ms();
        let at = now.saturating_add(duration_millis(delay));
        let immediate = at <= now;
        let qk = self.keys().queue(&lease.queue);
        let mut cmds = vec![Cmd::gets(self.keys().job(id)), Cmd::get(qk.gen())];
        if immediate {
            // Allocated before we know the lease is good, to save a round trip.
            cmds.push(Cmd::incr(qk.tail(), 1));
        }
        let replies = self.run(cmds).await?;
        let slot = if immediate {
            Some(
                replies[2]
                    .checked("allocate a slot")?
                    .number()
                    .ok_or_else(|| MemcachedError::Protocol("incr gave no number".into()))?,
            )
        } else {
            None
        };
        let held = match self.check_lease(lease, id, &replies[0]) {
            Ok(held) if held.record.queue == lease.queue => held,
            other => {
                if let Some(n) = slot {
                    self.run(vec![Cmd::add(
                        qk.slot(n),
                        TOMBSTONE.to_vec(),
                        TOMBSTONE_TTL,
                    )])
                    .await?;
                }
                return match other {
                    Ok(_) => Err(lease_lost(lease)),
                    Err(e) => Err(e),
                };
            }
        };
        let gen = replies[1].number().unwrap_or(0);
        let record = JobRecord {
            gen,
            attempts: if refund {
                held.record.attempts.saturating_sub(1)
            } else {
                held.record.attempts
            },
            state: match slot {
                Some(slot) => JobState::Waiting { slot },
                None => JobState::Delayed { at },
            },
            due: at,
            ..held.record.clone()
        };
        let mut cmds = match slot {
            Some(_) => Vec::new(),
            None => self.timer_cmds(&qk, at, &[id], now),
        };
        let cas_at = cmds.len();
        cmds.push(Cmd::cas(self.keys().job(id), record.encode(), held.cas, 0));
        if let Some(n) = slot {
            cmds.push(Cmd::add(qk.slot(n), id.to_string().into_bytes(), 0));
        }
        // The counts in the same request, as if the compare-and-swap succeeds (a process
        // killed after it leaves no count behind); undone if it did not.
        let target = match slot {
            Some(_) => qk.waiting(gen),
            None => qk.delayed(gen),
        };
        cmds.push(sizes::minus(qk.reserved(), 1));
        cmds.push(sizes::plus(target.clone(), 1));
        let replies = self.run(cmds).await?;
        if !replies[cas_at].ok() {
            self.run(vec![sizes::plus(qk.reserved(), 1), sizes::minus(target, 1)])
                .await?;
            return match &replies[cas_at].status {
                Status::Exists => Ok(false),
                Status::Refused(m) => Err(MemcachedError::Refused(m.clone()).into()),
                _ => Err(lease_lost(lease)),
            };
        }
        if slot.is_none() {
            self.check_timer_replies(&replies[..cas_at], &[id]);
        }
        if let Some(old) = held.record.timer() {
            self.run(vec![Cmd::decr(qk.timer_count(bucket(old)), 1)])
                .await?;
        }
        if slot.is_some() && !replies[cas_at + 1].ok() {
            self.reslot(&lease.queue, &qk, vec![id]).await?;
        }
        Ok(true)
    }

    async fn fail_once(&self, lease: &Lease, id: u64, reason: &str) -> Result<bool> {
        let keys = self.keys();
        let replies = self
            .run(vec![
                Cmd::gets(keys.job(id)),
                Cmd::get(keys.body(id)),
                Cmd::incr(keys.failed_next(), 1),
            ])
            .await?;
        let held = self.check_lease(lease, id, &replies[0])?;
        let failed_id = replies[2]
            .checked("allocate a failed id")?
            .number()
            .ok_or_else(|| MemcachedError::Protocol("incr gave no number".into()))?;
        let payload = match replies[1].value() {
            Some(body) => body.to_vec(),
            None => {
                error!(
                    job = id,
                    "the failed job's payload is gone (evicted?): storing it empty"
                );
                Vec::new()
            }
        };
        let mut record = FailedRecord {
            failed_at: now_ms(),
            attempts: held.record.attempts,
            job_id: id.to_string(),
            queue: held.record.queue.clone(),
            name: held.record.name.clone(),
            error: String::new(),
            payload,
        };
        let room = self
            .inner
            .item_size_max
            .saturating_sub(KEY_ROOM + record.size_without_error());
        record.error = truncate_text(reason, room);
        // Stored before the job is deleted: a crash in between leaves a duplicate in the
        // failed store, never a lost job.
        let stored = self
            .run(vec![Cmd::set(keys.failed(failed_id), record.encode())])
            .await?;
        stored[0].checked("store the failed job")?;
        // The count in the same request, as if the delete succeeds; undone if it did not.
        let qk = keys.queue(&held.record.queue);
        let deleted = self
            .run(vec![
                Cmd::delete_cas(keys.job(id), held.cas),
                sizes::minus(qk.reserved(), 1),
            ])
            .await?;
        if !deleted[0].ok() {
            self.run(vec![
                Cmd::delete(keys.failed(failed_id)),
                sizes::plus(qk.reserved(), 1),
            ])
            .await?;
            return match deleted[0].status {
                Status::Exists => Ok(false),
                _ => Err(lease_lost(lease)),
            };
        }
        let mut after = vec![Cmd::delete(keys.body(id))];
        if let Some(old) = held.record.timer() {
            after.push(Cmd::decr(qk.timer_count(bucket(old)), 1));
        }
        self.run(after).await?;
        Ok(true)
    }

    async fn extend_once(&self, lease: &Lease, id: u64, duration: Duration) -> Result<bool> {
        let replies = self.run(vec![Cmd::gets(self.keys().job(id))]).await?;
        let held = self.check_lease(lease, id, &replies[0])?;
        let now = now_ms();
        let deadline = now.saturating_add(duration_millis(duration));
        let qk = self.keys().queue(&held.record.queue);
        let record = JobRecord {
            state: JobState::Reserved {
                token: lease.token.clone(),
                deadline,
            },
            ..held.record.clone()
        };
        let mut cmds = self.timer_cmds(&qk, deadline, &[id], now);
        let cas_at = cmds.len();
        cmds.push(Cmd::cas(self.keys().job(id), record.encode(), held.cas, 0));
        let replies = self.run(cmds).await?;
        match &replies[cas_at].status {
            Status::Ok => {}
            Status::Exists => return Ok(false),
            Status::Refused(m) => return Err(MemcachedError::Refused(m.clone()).into()),
            _ => return Err(lease_lost(lease)),
        }
        self.check_timer_replies(&replies[..cas_at], &[id]);
        if let Some(old) = held.record.timer() {
            self.run(vec![Cmd::decr(qk.timer_count(bucket(old)), 1)])
                .await?;
        }
        Ok(true)
    }

    // ----- failed store ----------------------------------------------------------------

    /// The failed ids that may exist: `(low, next]`.
    async fn failed_range(&self) -> Result<(u64, u64)> {
        let keys = self.keys();
        let replies = self
            .run(vec![
                Cmd::get(keys.failed_next()),
                Cmd::get(keys.failed_low()),
            ])
            .await?;
        let next = replies[0].number().unwrap_or(0);
        let low = replies[1].number().unwrap_or(0).min(next);
        Ok((low, next))
    }

    /// The failed ids in `(low, next]` that exist, newest first, stopping after `want`.
    async fn failed_ids(&self, low: u64, next: u64, want: u64) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        let mut hi = next;
        while hi > low && (ids.len() as u64) < want {
            let lo = hi.saturating_sub(SCAN_CHUNK - 1).max(low + 1);
            let range: Vec<u64> = (lo..=hi).rev().collect();
            let replies = self
                .run(
                    range
                        .iter()
                        .map(|id| Cmd::exists(self.keys().failed(*id)))
                        .collect(),
                )
                .await?;
            ids.extend(
                range
                    .iter()
                    .zip(&replies)
                    .filter(|(_, r)| r.ok())
                    .map(|(id, _)| *id),
            );
            hi = lo - 1;
        }
        ids.truncate(usize::try_from(want).unwrap_or(usize::MAX));
        Ok(ids)
    }

    /// Moves the low watermark up (only ever up, and never into the newest
    /// [`FAILED_MARGIN`] ids below `next`), so scans skip ids known to be gone.
    async fn raise_failed_low(&self, to: u64, next: u64) -> Result<()> {
        let to = to.min(next.saturating_sub(FAILED_MARGIN));
        let key = self.keys().failed_low();
        for _ in 0..CAS_TRIES {
            let replies = self.run(vec![Cmd::gets(key.clone())]).await?;
            let cmd = match (replies[0].number(), replies[0].cas) {
                (Some(low), _) if low >= to => return Ok(()),
                (Some(_), Some(cas)) => Cmd::cas(key.clone(), to.to_string().into_bytes(), cas, 0),
                _ => Cmd::add(key.clone(), to.to_string().into_bytes(), 0),
            };
            if self.run(vec![cmd]).await?[0].ok() {
                return Ok(());
            }
        }
        Ok(())
    }

    fn decode_failed(&self, id: u64, reply: &Reply) -> Option<(u64, FailedRecord)> {
        let data = reply.value()?;
        match FailedRecord::decode(data) {
            Ok(record) => Some((reply.cas.unwrap_or(0), record)),
            Err(reason) => {
                warn!(key = %self.keys().failed(id), %reason, "skipping a corrupt failed-job record");
                None
            }
        }
    }

    async fn failed_records(&self, ids: &[u64]) -> Result<Vec<(u64, u64, FailedRecord)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(64) {
            let replies = self
                .run(
                    chunk
                        .iter()
                        .map(|id| Cmd::gets(self.keys().failed(*id)))
                        .collect(),
                )
                .await?;
            for (id, reply) in chunk.iter().zip(&replies) {
                if let Some((cas, record)) = self.decode_failed(*id, reply) {
                    out.push((*id, cas, record));
                }
            }
        }
        Ok(out)
    }

    fn push_limit_check(&self, job: &NewJob) -> Result<()> {
        let limit = self.max_payload(&job.queue, &job.name);
        if job.payload.len() > limit {
            return Err(Error::PayloadTooLarge {
                size: job.payload.len(),
                limit,
            });
        }
        Ok(())
    }
}

fn parse_slot(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn failed_job(id: u64, record: FailedRecord) -> FailedJob {
    FailedJob {
        id: id.to_string(),
        job_id: record.job_id,
        queue: record.queue,
        name: record.name,
        payload: record.payload,
        error: record.error,
        attempts: record.attempts,
        failed_at: from_unix_millis(record.failed_at),
    }
}

fn lock_value(owner: &str, expires: i64) -> Vec<u8> {
    format!("{expires}\n{owner}").into_bytes()
}

fn parse_lock(value: &[u8]) -> Option<(i64, &[u8])> {
    let split = value.iter().position(|b| *b == b'\n')?;
    let expires = std::str::from_utf8(&value[..split]).ok()?.parse().ok()?;
    Some((expires, &value[split + 1..]))
}

fn lock_ttl(ttl: Duration) -> u32 {
    // memcached's own expiry only collects the item: the expiry in the value decides.
    let secs = ttl.as_secs().saturating_add(2);
    if secs > MAX_TTL {
        0
    } else {
        secs as u32
    }
}

#[async_trait]
impl Storage for MemcachedStorage {
    fn driver(&self) -> &'static str {
        DRIVER
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            reserve_by_name: false,
            durable: false,
            wake_on_push: false,
        }
    }

    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        for job in &jobs {
            self.push_limit_check(job)?;
        }
        let keys = self.keys();
        let now = now_ms();
        let due: Vec<i64> = jobs
            .iter()
            .map(|job| match job.available {
                Availability::Now => now,
                Availability::After(d) => now.saturating_add(duration_millis(d)),
                Availability::At(t) => unix_millis(t),
            })
            .collect();
        let mut queues: Vec<&str> = Vec::new();
        for job in &jobs {
            if !queues.contains(&job.queue.as_str()) {
                queues.push(&job.queue);
            }
        }
        let immediate = |q: &str| {
            jobs.iter()
                .zip(&due)
                .filter(|(j, at)| j.queue == q && **at <= now)
                .count() as u64
        };
        let mut cmds = vec![
            Cmd::get(keys.epoch()),
            Cmd::incr(keys.ids(), jobs.len() as u64),
        ];
        let mut at_of: Vec<(usize, Option<(usize, u64)>)> = Vec::new();
        for q in &queues {
            let qk = keys.queue(q);
            let gen_at = cmds.len();
            cmds.push(Cmd::get(qk.gen()));
            let k = immediate(q);
            let tail_at = (k > 0).then(|| {
                cmds.push(Cmd::incr(qk.tail(), k));
                (cmds.len() - 1, k)
            });
            at_of.push((gen_at, tail_at));
        }
        let replies = self.run(cmds).await?;
        self.observe_epoch(&replies[0]).await?;
        let id_end = replies[1]
            .checked("allocate ids")?
            .number()
            .ok_or_else(|| MemcachedError::Protocol("incr gave no number".into()))?;
        let first_id = id_end + 1 - jobs.len() as u64;
        let mut gens = HashMap::new();
        let mut next_slot = HashMap::new();
        for (q, (gen_at, tail_at)) in queues.iter().zip(&at_of) {
            gens.insert(*q, replies[*gen_at].number().unwrap_or(0));
            if let Some((at, k)) = tail_at {
                let end = replies[*at]
                    .checked("allocate slots")?
                    .number()
                    .ok_or_else(|| MemcachedError::Protocol("incr gave no number".into()))?;
                next_slot.insert(*q, end + 1 - k);
            }
        }
        // Timer entries first, then payloads, then records, then slots: whoever follows a
        // slot or a timer entry finds everything behind it written.
        let mut timers: BTreeMap<(&str, i64), Vec<u64>> = BTreeMap::new();
        let mut body_cmds = Vec::new();
        let mut record_cmds = Vec::new();
        let mut slot_cmds = Vec::new();
        let mut slot_ids = Vec::new();
        let mut waiting: BTreeMap<&str, u64> = BTreeMap::new();
        let mut delayed: BTreeMap<&str, u64> = BTreeMap::new();
        let mut ids = Vec::with_capacity(jobs.len());
        for (i, (job, at)) in jobs.iter().zip(&due).enumerate() {
            let id = first_id + i as u64;
            let q = job.queue.as_str();
            let gen = gens.get(q).copied().unwrap_or(0);
            let state = if *at <= now {
                let slot = next_slot.get(q).copied().unwrap_or(0);
                next_slot.insert(q, slot + 1);
                slot_cmds.push(Cmd::add(
                    keys.queue(q).slot(slot),
                    id.to_string().into_bytes(),
                    0,
                ));
                slot_ids.push((q, id));
                *waiting.entry(q).or_default() += 1;
                JobState::Waiting { slot }
            } else {
                timers.entry((q, bucket(*at))).or_default().push(id);
                *delayed.entry(q).or_default() += 1;
                JobState::Delayed { at: *at }
            };
            let record = JobRecord {
                gen,
                attempts: 0,
                state,
                due: *at,
                queue: job.queue.clone(),
                name: job.name.clone(),
            };
            body_cmds.push(Cmd::set(keys.body(id), job.payload.clone()));
            record_cmds.push(Cmd::set(keys.job(id), record.encode()));
            ids.push(JobId(id.to_string()));
        }
        let mut cmds = Vec::new();
        let mut timer_spans = Vec::new();
        for ((q, b), list) in &timers {
            let start = cmds.len();
            cmds.extend(self.timer_cmds(&keys.queue(q), b * BUCKET_MS, list, now));
            timer_spans.push((start, list.clone()));
        }
        let stores_at = cmds.len();
        let stores = body_cmds.len() + record_cmds.len();
        cmds.extend(body_cmds);
        cmds.extend(record_cmds);
        let slots_at = cmds.len();
        cmds.extend(slot_cmds);
        for (q, n) in &waiting {
            cmds.push(sizes::plus(
                keys.queue(q).waiting(gens.get(q).copied().unwrap_or(0)),
                *n,
            ));
        }
        for (q, n) in &delayed {
            cmds.push(sizes::plus(
                keys.queue(q).delayed(gens.get(q).copied().unwrap_or(0)),
                *n,
            ));
        }
        let unregistered: Vec<&str> = {
            let local = self.local();
            queues
                .iter()
                .copied()
                .filter(|q| !local.registered.contains(*q))
                .collect()
        };
        if !unregistered.is_empty() {
            let lines: String = unregistered
                .iter()
                .map(|q| format!("{}\n", escape(q)))
                .collect();
            cmds.push(Cmd::add(keys.queues(), Vec::new(), 0));
            cmds.push(Cmd::append(keys.queues(), lines.into_bytes()));
        }
        let replies = self.run(cmds).await?;
        for (start, list) in &timer_spans {
            self.check_timer_replies(&replies[*start..*start + 4], list);
        }
        for reply in &replies[stores_at..stores_at + stores] {
            reply.checked("store a job")?;
        }
        let mut reslot: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for ((q, id), reply) in slot_ids.iter().zip(&replies[slots_at..]) {
            if !reply.ok() {
                reslot.entry(q).or_default().push(*id);
            }
        }
        for (q, list) in reslot {
            self.reslot(q, &keys.queue(q), list).await?;
        }
        self.local()
            .registered
            .extend(unregistered.iter().map(|q| (*q).to_owned()));
        Ok(ids)
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        if request.name.is_some() {
            return Err(Error::NotSupported {
                driver: DRIVER,
                operation: "reserving by job name",
            });
        }
        let limit = request.limit.max(1);
        let now = now_ms();
        let keys = self.keys();
        let mut cmds = vec![Cmd::get(keys.epoch())];
        for q in &request.queues {
            let qk = keys.queue(q);
            cmds.extend([
                Cmd::gets(qk.head()),
                Cmd::get(qk.tail()),
                Cmd::get(qk.gen()),
            ]);
        }
        let replies = self.run(cmds).await?;
        self.observe_epoch(&replies[0]).await?;
        let mut out = Vec::new();
        for (i, queue) in request.queues.iter().enumerate() {
            if out.len() >= limit {
                break;
            }
            let mut ends = Self::ends(&replies[1 + 3 * i..4 + 3 * i]);
            if self.sweep_due(queue) {
                let swept = self
                    .sweep(queue, ends.gen, now, Some((&mut out, limit, request.lease)))
                    .await?;
                if swept.promoted {
                    ends = self.read_ends(&keys.queue(queue)).await?;
                }
            }
            self.take_from_queue(queue, ends, now, request.lease, limit, &mut out)
                .await?;
        }
        Ok(out)
    }

    async fn extend(&self, lease: &Lease, duration: Duration) -> Result<()> {
        let id = Self::lease_id(lease)?;
        for _ in 0..CAS_TRIES {
            if self.extend_once(lease, id, duration).await? {
                return Ok(());
            }
        }
        Err(MemcachedError::Contention(format!("extend job {id}")).into())
    }

    async fn acknowledge(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        let keys = self.keys();
        let mut done = vec![false; leases.len()];
        let mut pending: Vec<(usize, u64)> = leases
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.job_id.0.parse().ok().map(|id| (i, id)))
            .collect();
        for _ in 0..CAS_TRIES {
            if pending.is_empty() {
                break;
            }
            let replies = self
                .run(
                    pending
                        .iter()
                        .map(|(_, id)| Cmd::gets(keys.job(*id)))
                        .collect(),
                )
                .await?;
            let mut current = Vec::new();
            for ((i, id), reply) in pending.iter().zip(&replies) {
                if let Ok(held) = self.check_lease(&leases[*i], *id, reply) {
                    current.push((*i, held));
                }
            }
            if current.is_empty() {
                break;
            }
            // The deletes and, in the same request, the counts as if every delete succeeds:
            // a process killed after it leaves no count behind. Failures are undone below.
            let mut cmds: Vec<Cmd> = current
                .iter()
                .map(|(_, h)| Cmd::delete_cas(keys.job(h.id), h.cas))
                .collect();
            let mut counted: BTreeMap<&str, u64> = BTreeMap::new();
            for (_, held) in &current {
                *counted.entry(&held.record.queue).or_default() += 1;
            }
            for (q, n) in &counted {
                cmds.push(sizes::minus(keys.queue(q).reserved(), *n));
            }
            let replies = self.run(cmds).await?;
            let mut retry = Vec::new();
            let mut after = Vec::new();
            let mut undo: BTreeMap<&str, u64> = BTreeMap::new();
            let mut timers: BTreeMap<(&str, i64), u64> = BTreeMap::new();
            for ((i, held), reply) in current.iter().zip(&replies) {
                match reply.status {
                    Status::Ok => {
                        done[*i] = true;
                        after.push(Cmd::delete(keys.body(held.id)));
                        if let Some(at) = held.record.timer() {
                            *timers.entry((&held.record.queue, bucket(at))).or_default() += 1;
                        }
                        continue;
                    }
                    Status::Exists => retry.push((*i, held.id)),
                    _ => {}
                }
                *undo.entry(&held.record.queue).or_default() += 1;
            }
            for (q, n) in undo {
                after.push(sizes::plus(keys.queue(q).reserved(), n));
            }
            for ((q, b), n) in timers {
                after.push(Cmd::decr(keys.queue(q).timer_count(b), n));
            }
            self.run(after).await?;
            pending = retry;
        }
        Ok(done)
    }

    async fn release(&self, lease: &Lease, delay: Duration, refund_attempt: bool) -> Result<()> {
        let id = Self::lease_id(lease)?;
        for _ in 0..CAS_TRIES {
            if self.release_once(lease, id, delay, refund_attempt).await? {
                return Ok(());
            }
        }
        Err(MemcachedError::Contention(format!("release job {id}")).into())
    }

    async fn fail(&self, lease: &Lease, error: &str) -> Result<()> {
        let id = Self::lease_id(lease)?;
        for _ in 0..CAS_TRIES {
            if self.fail_once(lease, id, error).await? {
                return Ok(());
            }
        }
        Err(MemcachedError::Contention(format!("fail job {id}")).into())
    }

    async fn size(&self, queue: &str) -> Result<QueueSize> {
        let qk = self.keys().queue(queue);
        let replies = self.run(vec![Cmd::get(qk.gen())]).await?;
        let gen = replies[0].number().unwrap_or(0);
        if self.sweep_due(queue) {
            // Due delayed jobs count as waiting, as soon as they are due.
            self.sweep(queue, gen, now_ms(), None).await?;
        }
        let replies = self
            .run(vec![
                Cmd::get(qk.waiting(gen)),
                Cmd::get(qk.delayed(gen)),
                Cmd::get(qk.reserved()),
            ])
            .await?;
        Ok(QueueSize {
            waiting: sizes::count(&replies[0]),
            delayed: sizes::count(&replies[1]),
            reserved: sizes::count(&replies[2]),
        })
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let keys = self.keys();
        let replies = self.run(vec![Cmd::gets(keys.queues())]).await?;
        let Some(list) = text(&replies[0]) else {
            return Ok(Vec::new());
        };
        let lines: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
        let names: BTreeSet<String> = lines.iter().filter_map(|l| unescape(l)).collect();
        if names.len() < lines.len() {
            // Every process appends the queues it pushes to; keep the list short.
            if let Some(cas) = replies[0].cas {
                let compact: String = names.iter().map(|q| format!("{}\n", escape(q))).collect();
                self.run(vec![Cmd::cas(keys.queues(), compact.into_bytes(), cas, 0)])
                    .await?;
            }
        }
        let names: Vec<String> = names.into_iter().collect();
        let gens = self
            .run(
                names
                    .iter()
                    .map(|q| Cmd::get(keys.queue(q).gen()))
                    .collect(),
            )
            .await?;
        let mut cmds = Vec::new();
        for (q, gen) in names.iter().zip(&gens) {
            let qk = keys.queue(q);
            let gen = gen.number().unwrap_or(0);
            cmds.extend([
                Cmd::get(qk.waiting(gen)),
                Cmd::get(qk.delayed(gen)),
                Cmd::get(qk.reserved()),
            ]);
        }
        let counts = self.run(cmds).await?;
        Ok(names
            .into_iter()
            .zip(counts.chunks(3))
            .filter(|(_, c)| c.iter().any(|r| sizes::count(r) > 0))
            .map(|(q, _)| q)
            .collect())
    }

    async fn clear(&self, queue: &str) -> Result<u64> {
        let qk = self.keys().queue(queue);
        let replies = self.run(vec![Cmd::incr(qk.gen(), 1)]).await?;
        let new = replies[0]
            .checked("bump the generation")?
            .number()
            .ok_or_else(|| MemcachedError::Protocol("incr gave no number".into()))?;
        let old = new.saturating_sub(1);
        // Waiting and delayed jobs of the old generation are now deleted; reservers and
        // sweepers drop their items when they meet them.
        let replies = self
            .run(vec![
                Cmd::get(qk.waiting(old)),
                Cmd::get(qk.delayed(old)),
                Cmd::delete(qk.waiting(old)),
                Cmd::delete(qk.delayed(old)),
            ])
            .await?;
        Ok(sizes::count(&replies[0]) + sizes::count(&replies[1]))
    }

    async fn failed_list(&self, offset: u64, limit: u64) -> Result<Vec<FailedJob>> {
        let (low, next) = self.failed_range().await?;
        let ids = self
            .failed_ids(low, next, offset.saturating_add(limit))
            .await?;
        let page: Vec<u64> = ids
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .collect();
        let records = self.failed_records(&page).await?;
        Ok(records
            .into_iter()
            .map(|(id, _, record)| failed_job(id, record))
            .collect())
    }

    async fn failed_get(&self, id: &str) -> Result<Option<FailedJob>> {
        let Ok(id) = id.parse::<u64>() else {
            return Ok(None);
        };
        let replies = self.run(vec![Cmd::get(self.keys().failed(id))]).await?;
        Ok(self
            .decode_failed(id, &replies[0])
            .map(|(_, record)| failed_job(id, record)))
    }

    async fn failed_count(&self) -> Result<u64> {
        let (low, next) = self.failed_range().await?;
        let ids = self.failed_ids(low, next, u64::MAX).await?;
        match ids.last() {
            Some(oldest) if *oldest > low + 1 => self.raise_failed_low(oldest - 1, next).await?,
            None if next > low => self.raise_failed_low(next, next).await?,
            _ => {}
        }
        Ok(ids.len() as u64)
    }

    async fn failed_retry(&self, id: &str) -> Result<Option<JobId>> {
        let Ok(id) = id.parse::<u64>() else {
            return Ok(None);
        };
        let key = self.keys().failed(id);
        for _ in 0..CAS_TRIES {
            let replies = self.run(vec![Cmd::gets(key.clone())]).await?;
            let Some(data) = replies[0].value().map(<[u8]>::to_vec) else {
                return Ok(None);
            };
            let Some((cas, record)) = self.decode_failed(id, &replies[0]) else {
                return Ok(None);
            };
            // Taken out first (only one retry wins), put back if the push fails.
            let deleted = self.run(vec![Cmd::delete_cas(key.clone(), cas)]).await?;
            match deleted[0].status {
                Status::Ok => {}
                Status::Exists => continue,
                _ => return Ok(None),
            }
            let job = NewJob {
                queue: record.queue,
                name: record.name,
                payload: record.payload,
                available: Availability::Now,
            };
            return match self.push(vec![job]).await {
                Ok(mut ids) => Ok(ids.pop()),
                Err(e) => {
                    self.run(vec![Cmd::add(key, data, 0)]).await?;
                    Err(e)
                }
            };
        }
        Err(MemcachedError::Contention(format!("retry failed job {id}")).into())
    }

    async fn failed_forget(&self, id: &str) -> Result<bool> {
        let Ok(id) = id.parse::<u64>() else {
            return Ok(false);
        };
        let replies = self.run(vec![Cmd::delete(self.keys().failed(id))]).await?;
        Ok(replies[0].ok())
    }

    async fn failed_flush(&self) -> Result<u64> {
        let (low, next) = self.failed_range().await?;
        let ids = self.failed_ids(low, next, u64::MAX).await?;
        let mut deleted = 0;
        for chunk in ids.chunks(SCAN_CHUNK as usize) {
            let replies = self
                .run(
                    chunk
                        .iter()
                        .map(|id| Cmd::delete(self.keys().failed(*id)))
                        .collect(),
                )
                .await?;
            deleted += replies.iter().filter(|r| r.ok()).count() as u64;
        }
        self.raise_failed_low(next, next).await?;
        Ok(deleted)
    }

    async fn failed_prune(&self, before: SystemTime) -> Result<u64> {
        let cut = unix_millis(before);
        let (low, next) = self.failed_range().await?;
        let ids = self.failed_ids(low, next, u64::MAX).await?;
        let records = self.failed_records(&ids).await?;
        let old: Vec<(u64, u64)> = records
            .iter()
            .filter(|(_, _, r)| r.failed_at < cut)
            .map(|(id, cas, _)| (*id, *cas))
            .collect();
        let mut deleted = 0;
        for chunk in old.chunks(SCAN_CHUNK as usize) {
            let replies = self
                .run(
                    chunk
                        .iter()
                        .map(|(id, cas)| Cmd::delete_cas(self.keys().failed(*id), *cas))
                        .collect(),
                )
                .await?;
            deleted += replies.iter().filter(|r| r.ok()).count() as u64;
        }
        Ok(deleted)
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let key = self.keys().lock(key);
        for _ in 0..CAS_TRIES {
            let now = now_ms();
            let value = lock_value(owner, now.saturating_add(duration_millis(ttl)));
            let replies = self.run(vec![Cmd::gets(key.clone())]).await?;
            let cmd = match (replies[0].value(), replies[0].cas) {
                (None, _) => Cmd::add(key.clone(), value, lock_ttl(ttl)),
                (Some(held), Some(cas)) => {
                    let free = match parse_lock(held) {
                        Some((expires, holder)) => holder == owner.as_bytes() || expires <= now,
                        None => true, // unreadable: treat as free rather than stuck forever
                    };
                    if !free {
                        return Ok(false);
                    }
                    Cmd::cas(key.clone(), value, cas, lock_ttl(ttl))
                }
                (Some(_), None) => {
                    return Err(MemcachedError::Protocol(
                        "a lock read without its CAS token".into(),
                    )
                    .into())
                }
            };
            let replies = self.run(vec![cmd]).await?;
            match &replies[0].status {
                Status::Ok => return Ok(true),
                Status::Refused(m) => return Err(MemcachedError::Refused(m.clone()).into()),
                _ => continue, // someone else moved first: look again
            }
        }
        Ok(false)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        let key = self.keys().lock(key);
        for _ in 0..CAS_TRIES {
            let replies = self.run(vec![Cmd::gets(key.clone())]).await?;
            let (Some(held), Some(cas)) = (replies[0].value(), replies[0].cas) else {
                return Ok(false);
            };
            match parse_lock(held) {
                Some((_, holder)) if holder == owner.as_bytes() => {}
                _ => return Ok(false),
            }
            let replies = self.run(vec![Cmd::delete_cas(key.clone(), cas)]).await?;
            match replies[0].status {
                Status::Ok => return Ok(true),
                Status::Exists => continue,
                _ => return Ok(false),
            }
        }
        Ok(false)
    }

    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        Ok(self.oldest_available_ms(queue).await?.map(from_unix_millis))
    }

    async fn add_counters(&self, deltas: &[(String, i64)], ttl: Option<Duration>) -> Result<()> {
        self.add_counters_impl(deltas, ttl).await
    }

    async fn counters(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        self.counters_impl(prefix).await
    }

    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let keys = self.keys();
        {
            // A sweep left due work behind (more expired leases than it could hand out).
            let local = self.local();
            if queues.iter().any(|q| !local.swept.contains_key(q)) {
                return Ok(());
            }
        }
        loop {
            let now_b = bucket(now_ms());
            let mut cmds = vec![Cmd::get(keys.epoch())];
            for q in queues {
                let qk = keys.queue(q);
                cmds.extend([
                    Cmd::get(qk.head()),
                    Cmd::get(qk.tail()),
                    Cmd::get(qk.timer_count(now_b - 1)),
                    Cmd::get(qk.timer_count(now_b)),
                ]);
            }
            let replies = self.run(cmds).await?;
            self.observe_epoch(&replies[0]).await?;
            for (q, r) in queues.iter().zip(replies[1..].chunks(4)) {
                let (head, tail) = (r[0].number().unwrap_or(0), r[1].number().unwrap_or(0));
                if tail > head {
                    return Ok(());
                }
                let timed = r[2].number().unwrap_or(0) + r[3].number().unwrap_or(0);
                if timed > 0 && self.sweep_due(q) {
                    return Ok(());
                }
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                return Ok(());
            }
            tokio::time::sleep((timeout - elapsed).min(self.inner.options.poll())).await;
        }
    }
}
