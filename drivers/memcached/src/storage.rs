//! [`MemcachedStorage`]: queues built from memcached's atomic `incr`, `add` and `cas`.
//!
//! See the [crate docs](crate) for the design and what it guarantees; the comments here say
//! why each step is ordered the way it is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use queue_core::storage::{
    check_effects, duration_millis, new_token, unix_millis, HeldLock, Locks, Page, PageRequest,
};
use queue_core::{
    Availability, Capabilities, Effect, Error, JobId, Lease, LeaseStatus, NewJob, Outcome, Pushed,
    ReserveRequest, Reserved, Result, Settle, SettleReply, Settled, Storage,
};
use tracing::error;

use crate::client::{Client, Cmd, Reply, Status};
use crate::error::MemcachedError;
use crate::keys::{escape, Keys};
use crate::options::MemcachedOptions;
use crate::record::{JobRecord, JobState};
use crate::DRIVER;

mod claims;
mod failed;
mod inspect;
mod settle;
mod sizes;
mod slots;
mod timers;
mod track;
mod wait;
mod workers;

use timers::Timers;

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
/// claiming slots and reserving their jobs). Also how long a live process is assumed never to
/// stall in the middle of an operation.
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

/// Refuses jobs that ask to replace a queued job holding their key (`Unique::replace`,
/// debounce), before anything is written: a queued job's payload, record and due-time entry
/// are separate items, so rewriting them cannot be one step against a reservation.
fn refuse_replace(jobs: &[NewJob]) -> Result<()> {
    if jobs
        .iter()
        .any(|job| job.unique.as_ref().is_some_and(|u| u.replace))
    {
        return Err(Error::NotSupported {
            driver: DRIVER,
            operation: "replacing a queued job (debounce)",
        });
    }
    Ok(())
}

fn bucket(ms: i64) -> i64 {
    ms.div_euclid(BUCKET_MS)
}

fn text(reply: &Reply) -> Option<String> {
    reply
        .value()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn parse_slot(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The number an `incr` replied, or an error.
fn incremented(reply: &Reply, what: &str) -> Result<u64> {
    Ok(reply
        .checked(what)?
        .number()
        .ok_or_else(|| MemcachedError::Protocol(format!("{what}: incr gave no number")))?)
}

fn tombstone(key: String) -> Cmd {
    Cmd::add(key, TOMBSTONE.to_vec(), TOMBSTONE_TTL)
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
    /// Queues a task of this process is sweeping now (another task does not start a second
    /// sweep of the same buckets).
    sweeping: HashSet<String>,
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

impl Held {
    /// The compare-and-swap that reserves the job under `token` until `deadline`.
    fn reserve(&self, keys: &Keys, token: &str, deadline: i64) -> Cmd {
        let state = JobState::Reserved {
            token: token.to_owned(),
            deadline,
        };
        let attempts = self.record.attempts.saturating_add(1);
        let record = JobRecord {
            attempts,
            state,
            ..self.record.clone()
        };
        Cmd::cas(keys.job(self.id), record.encode(), self.cas, 0)
    }

    /// The reservation handed out once that compare-and-swap succeeded.
    fn reserved(self, queue: &str, token: String, payload: Vec<u8>) -> Reserved {
        let job_id = JobId(self.id.to_string());
        Reserved {
            lease: Lease {
                job_id,
                queue: queue.to_owned(),
                token,
            },
            name: self.record.name,
            payload,
            attempts: self.record.attempts.saturating_add(1),
        }
    }
}

impl MemcachedStorage {
    /// Connects, checks the server (memcached 1.6 or newer: the meta protocol), reads its
    /// item size limit and writes or reads the epoch key.
    pub async fn connect(options: MemcachedOptions) -> Result<Self> {
        options.validate()?;
        let client = Client::new(options.addr(), options.pool_size, options.io_timeout);
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
        client.limit_values(item_size_max);
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
                 every job, reservation, failed job, claim and lock stored before is gone"
            );
        }
        let mut local = self.local();
        local.registered.clear();
        local.swept.clear();
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

    fn lease_id(lease: &Lease) -> Option<u64> {
        lease.job_id.0.parse().ok()
    }

    /// The job record behind `lease` if the lease is its current one.
    fn check_lease(&self, lease: &Lease, id: u64, reply: &Reply) -> Option<Held> {
        match self.decode_job(id, reply) {
            Some((cas, record))
                if record.token() == Some(lease.token.as_str()) && record.queue == lease.queue =>
            {
                Some(Held { id, cas, record })
            }
            _ => None,
        }
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

#[async_trait]
impl Storage for MemcachedStorage {
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities::new(DRIVER)
            .durable(false)
            .claims(true)
            .rewrite(true)
            .failed(self)
            .inspect(self)
            .track(self)
            .control(self)
            .wake(self)
            .workers(self)
            .locks(self)
    }

    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>> {
        refuse_replace(&jobs)?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        for job in &jobs {
            self.push_limit_check(job)?;
        }
        let (keys, now) = (self.keys(), now_ms());
        let due: Vec<i64> = jobs
            .iter()
            .map(|job| match job.available {
                Availability::Now => now,
                Availability::After(d) => now.saturating_add(duration_millis(d)),
                Availability::At(t) => unix_millis(t),
            })
            .collect();
        // Per queue: (generation, next new slot, jobs available now, jobs delayed).
        let mut queues: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
        for (job, at) in jobs.iter().zip(&due) {
            queues.entry(job.queue.clone()).or_default().2 += u64::from(*at <= now);
        }
        // One request allocates the ids and the slots of the jobs available now.
        let mut cmds = vec![
            Cmd::get(keys.epoch()),
            Cmd::incr(keys.ids(), jobs.len() as u64),
        ];
        for (q, (_, _, available, _)) in &queues {
            cmds.extend([
                Cmd::get(keys.queue(q).gen()),
                Cmd::incr(keys.queue(q).tail(), *available),
            ]);
        }
        let replies = self.run(cmds).await?;
        self.observe_epoch(&replies[0]).await?;
        let first_id = incremented(&replies[1], "allocate ids")? + 1 - jobs.len() as u64;
        for (q, pair) in queues.values_mut().zip(replies[2..].chunks(2)) {
            q.0 = pair[0].number().unwrap_or(0);
            q.1 = incremented(&pair[1], "allocate slots")? + 1 - q.2;
        }
        let ids: Vec<u64> = (first_id..).take(jobs.len()).collect();
        let mut slots: Vec<Option<u64>> = Vec::with_capacity(jobs.len());
        for (job, at) in jobs.iter().zip(&due) {
            let q = queues.entry(job.queue.clone()).or_default();
            slots.push((*at <= now).then(|| {
                q.1 += 1;
                q.1 - 1
            }));
        }
        // Claims before anything that makes a job reachable: a job that loses its key is
        // not stored, and its slot gets a tombstone.
        let wanted: Vec<(usize, &str)> = jobs
            .iter()
            .enumerate()
            .filter_map(|(i, j)| j.unique.as_ref().map(|u| (i, u.key.as_str())))
            .collect();
        let mut taken: Vec<Option<JobId>> = vec![None; jobs.len()];
        let mut won = Vec::new();
        if !wanted.is_empty() {
            let asked: Vec<(&str, u64)> = wanted.iter().map(|(i, k)| (*k, ids[*i])).collect();
            let claimed = self.claim(&asked).await?;
            for ((i, _), holder) in wanted.iter().zip(claimed.taken) {
                taken[*i] = holder;
            }
            won = claimed.won;
        }
        // Timer entries in a request of their own, before the records that point at them:
        // if one cannot be written (its bucket is full), nothing of this push is stored.
        let mut timers = Timers::default();
        for (i, job) in jobs.iter().enumerate() {
            if taken[i].is_none() && slots[i].is_none() {
                timers.add(&job.queue, due[i], ids[i]);
            }
        }
        if let Err(e) = self.with_timers(&timers, Vec::new()).await {
            let slots = jobs
                .iter()
                .zip(&slots)
                .filter_map(|(job, slot)| Some(tombstone(keys.queue(&job.queue).slot((*slot)?))));
            let claims = won.into_iter().map(|(key, cas)| Cmd::delete_cas(key, cas));
            self.run(slots.chain(claims).collect()).await?;
            return Err(e);
        }
        // Payloads and records, then slots (tombstones for duplicates), then the counts:
        // whoever follows a slot or a timer entry finds everything behind it written.
        let mut cmds = Vec::new();
        let mut slot_cmds = Vec::new();
        let mut slotted = Vec::new();
        let mut pushed = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.into_iter().enumerate() {
            let q = queues.entry(job.queue.clone()).or_default();
            let (id, slot_key) = (ids[i], slots[i].map(|n| keys.queue(&job.queue).slot(n)));
            if let Some(holder) = taken[i].take() {
                slot_cmds.extend(slot_key.map(tombstone));
                slotted.extend(slots[i].map(|_| None));
                pushed.push(Pushed::Duplicate(holder));
                continue;
            }
            let state = match (slots[i], slot_key) {
                (Some(slot), Some(key)) => {
                    slot_cmds.push(Cmd::add(key, id.to_string().into_bytes(), 0));
                    slotted.push(Some((job.queue.clone(), id, slot)));
                    JobState::Waiting { slot }
                }
                _ => {
                    q.3 += 1;
                    JobState::Delayed { at: due[i] }
                }
            };
            let record = JobRecord {
                gen: q.0,
                attempts: 0,
                state,
                due: due[i],
                queue: job.queue,
                name: job.name,
                unique: job.unique,
            };
            cmds.push(Cmd::set(keys.body(id), job.payload));
            cmds.push(Cmd::set(keys.job(id), record.encode()));
            pushed.push(Pushed::Created(JobId(id.to_string())));
        }
        let stores = cmds.len();
        cmds.extend(slot_cmds);
        let waiting = slotted
            .iter()
            .flatten()
            .fold(BTreeMap::new(), |mut n, (q, _, _)| {
                *n.entry(q.as_str()).or_insert(0) += 1;
                n
            });
        for (q, (gen, _, _, delayed)) in &queues {
            let qk = keys.queue(q);
            cmds.push(sizes::plus(
                qk.waiting(*gen),
                waiting.get(q.as_str()).copied().unwrap_or(0),
            ));
            cmds.push(sizes::plus(qk.delayed(*gen), *delayed));
        }
        let unregistered: Vec<&String> = {
            let local = self.local();
            queues
                .keys()
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
        for reply in &replies[..stores] {
            reply.checked("store a job")?;
        }
        // A slot a reserver gave up on (it wrote a tombstone): the job takes a new one.
        for (entry, reply) in slotted.iter().zip(&replies[stores..]) {
            if let (Some((q, id, slot)), false) = (entry, reply.ok()) {
                self.reslot(q, &keys.queue(q), vec![(*id, *slot)]).await?;
            }
        }
        let mut local = self.local();
        local.registered.extend(unregistered.into_iter().cloned());
        Ok(pushed)
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        if request.name.is_some() {
            return Err(Error::NotSupported {
                driver: DRIVER,
                operation: "reserving by job name (runall run NAME)",
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
                let taken = (&mut out, limit, request.lease);
                match self.sweep(queue, ends.gen, now, Some(taken)).await {
                    Ok(swept) if swept.promoted => {
                        ends = self.read_ends(&keys.queue(queue)).await?
                    }
                    Ok(_) => {}
                    Err(e) if out.is_empty() => return Err(e),
                    // Never drop jobs already reserved: they would wait out their lease.
                    Err(e) => {
                        error!(%queue, error = %e, "sweeping the timers failed");
                        return Ok(out);
                    }
                }
            }
            if let Err(e) = self
                .take_from_queue(queue, ends, now, request.lease, limit, &mut out)
                .await
            {
                if out.is_empty() {
                    return Err(e);
                }
                error!(%queue, error = %e, "reserving failed part way: returning the jobs taken");
                return Ok(out);
            }
        }
        Ok(out)
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        self.extend_leases(leases, lease).await
    }

    async fn settle(
        &self,
        settles: Vec<Settle>,
        fetch: Option<&ReserveRequest>,
    ) -> Result<SettleReply> {
        check_effects(DRIVER, &settles)?;
        // A counter update or a waiting job's dependency change cannot be tied to the job's
        // transition with single-key steps: a crash between the two would apply it twice or
        // never. Refused before anything (any effect but a push or a record, unknown ones
        // included). A record is written once, right after the transition (see the crate
        // docs): a replay of the settle is stale and writes nothing.
        let mut effects = settles.iter().flat_map(|s| &s.effects);
        if effects.any(|e| {
            !matches!(
                e,
                Effect::Push(_) | Effect::Record { .. } | Effect::Payload(_)
            )
        }) {
            return Err(Error::NotSupported {
                driver: DRIVER,
                operation: "group counters and waiting jobs (batches, chains, workflows)",
            });
        }
        for effect in settles.iter().flat_map(|s| &s.effects) {
            if let Effect::Record { value, .. } = effect {
                self.check_record_size(value)?;
            }
        }
        let mut settled = vec![Settled::Stale; settles.len()];
        let mut seen = HashSet::new();
        let mut acks = Vec::new();
        for (i, settle) in settles.into_iter().enumerate() {
            let pushes = settle.effects.iter().any(|e| matches!(e, Effect::Push(_)));
            // The same lease twice in one call: the second is stale.
            if !seen.insert(settle.lease.clone())
                || (pushes && !self.apply_effects(&settle).await?)
            {
                continue;
            }
            if settle.outcome == Outcome::Ack {
                acks.push((i, settle.lease, settle.effects));
            } else if self
                .transition(&settle.lease, &settle.outcome, &settle.effects)
                .await?
            {
                settled[i] = Settled::Applied;
            }
        }
        let at: Vec<usize> = acks.iter().map(|(i, _, _)| *i).collect();
        let leases: Vec<Lease> = acks.iter().map(|(_, lease, _)| lease.clone()).collect();
        let records: Vec<&[Effect]> = acks.iter().map(|(_, _, e)| e.as_slice()).collect();
        for (i, acked) in at
            .into_iter()
            .zip(self.acknowledge(&leases, &records).await?)
        {
            if acked {
                settled[i] = Settled::Applied;
            }
        }
        let reserved = match fetch {
            Some(request) => self.reserve(request).await?,
            None => Vec::new(),
        };
        Ok(SettleReply { settled, reserved })
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let key = self.keys().lock(key);
        for _ in 0..CAS_TRIES {
            let now = now_ms();
            let value = format!("{}\n{owner}", now.saturating_add(duration_millis(ttl)));
            let replies = self.run(vec![Cmd::gets(key.clone())]).await?;
            // memcached's own expiry only collects the item: the expiry in the value decides.
            let ttl = match ttl.as_secs().saturating_add(2) {
                secs if secs > MAX_TTL => 0,
                secs => secs as u32,
            };
            let cmd = match (replies[0].value(), replies[0].cas) {
                (None, _) => Cmd::add(key.clone(), value.into_bytes(), ttl),
                (Some(held), Some(cas)) => {
                    let free = match parse_lock(held) {
                        Some((expires, holder)) => holder == owner.as_bytes() || expires <= now,
                        None => true, // unreadable: treat as free rather than stuck forever
                    };
                    if !free {
                        return Ok(false);
                    }
                    Cmd::cas(key.clone(), value.into_bytes(), cas, ttl)
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
}

/// Locks for operators: memcached cannot list its keys, so [`locks`](Locks::locks) is
/// refused; a release reads the lock's item and deletes it by compare-and-swap.
#[async_trait]
impl Locks for MemcachedStorage {
    async fn locks(&self, _: PageRequest) -> Result<Page<HeldLock>> {
        Err(Error::NotSupported {
            driver: DRIVER,
            operation: "listing locks (memcached cannot list keys; a lock is released by its key)",
        })
    }

    async fn release(&self, key: &str) -> Result<bool> {
        let key = self.keys().lock(key);
        for _ in 0..CAS_TRIES {
            let replies = self.run(vec![Cmd::gets(key.clone())]).await?;
            let (Some(held), Some(cas)) = (replies[0].value(), replies[0].cas) else {
                return Ok(false);
            };
            let live = parse_lock(held).is_some_and(|(expires, _)| expires > now_ms());
            let replies = self.run(vec![Cmd::delete_cas(key.clone(), cas)]).await?;
            match replies[0].status {
                Status::Ok => return Ok(live),
                Status::Exists => continue,
                _ => return Ok(false),
            }
        }
        Ok(false)
    }
}

/// A lock item: `{expires ms}\n{owner}`.
fn parse_lock(value: &[u8]) -> Option<(i64, &[u8])> {
    let split = value.iter().position(|b| *b == b'\n')?;
    let expires = std::str::from_utf8(&value[..split]).ok()?.parse().ok()?;
    Some((expires, &value[split + 1..]))
}
