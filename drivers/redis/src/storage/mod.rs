//! [`RedisStorage`]: the [`Storage`] contract on Redis, one Lua script per transition.
//!
//! The same code serves one server and Redis Cluster ([`Connection`]). What would cross
//! hash slots (several queues in one call, a queue and the failed store) runs as one script
//! on one server and is split per slot on a cluster (`cluster.rs`); claims, group counters
//! and waiting jobs, which would tie a job's slot to another, are refused there. A job's
//! records (`track.rs`) live in its queue's slot, so they work on both.

mod call;
mod cluster;
mod failed;
mod inspect;
mod locks;
mod setup;
mod track;
mod workers;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use queue_core::storage::{check_effects, duration_millis, new_token, Guard};
use queue_core::{
    Capabilities, Effect, Error, JobId, Lease, LeaseStatus, NewJob, Outcome, Pushed,
    ReserveRequest, Reserved, Result, Settle, SettleReply, Settled, Storage,
};
use redis::{ScriptInvocation, Value};

use self::call::{array, int, integer, items, records, text, Call};
use crate::connection::{Connection, Target};
use crate::error::{backend, RedisDriverError};
use crate::keys::{job_id, job_member, Keys};
use crate::notify::{Source, Waker};
use crate::options::RedisOptions;
use crate::scripts::SCRIPTS;
use crate::DRIVER;

/// The most jobs one reservation takes, whatever the limit asked: one script call stays
/// short and its reply small.
pub const MAX_RESERVE: usize = 1_000;

/// How many entries the chunked scripts (clear, flush, prune) delete per call.
const CHUNK: usize = 1_000;

/// The most items one page of a listing holds, whatever the limit asked.
const MAX_PAGE: usize = 10_000;

/// Times and durations handed to the scripts stay within this many milliseconds of zero
/// (about 3,000 years), where Lua's numbers are exact integers.
const MAX_MILLIS: i64 = 100_000_000_000_000;

/// What a cluster refuses: a claim lives in a slot of its own, apart from its job's queue.
const CLAIMS_ON_CLUSTER: &str =
    "unique claims and push effects on Redis Cluster (a job and its claim are in different hash slots)";

/// What a cluster refuses: a group's counters live apart from the job's queue.
const GROUPS_ON_CLUSTER: &str =
    "group counters on Redis Cluster (a job and its group are in different hash slots)";

/// What a cluster refuses: a waiting job lives apart from the jobs it waits for and from
/// the queue it is released to.
const PARK_ON_CLUSTER: &str =
    "parking a job on a lock on Redis Cluster (the lock and the job live in different slots)";
const WAITING_ON_CLUSTER: &str =
    "waiting jobs on Redis Cluster (a job and the jobs waiting on it are in different hash slots)";

/// How many times a settle or an apply reads the waiting jobs it may release and calls its
/// script again when one of them was replaced in between (see `scripts/settle.lua`).
const WAITING_READS: usize = 5;

/// A queue on Redis: jobs, reservations, the failed store, claims, group counters, waiting
/// jobs and locks under one key prefix.
///
/// Cheap to clone (the connection is shared). See the [crate docs](crate) for the key
/// layout, the guarantees and how to connect.
#[derive(Debug, Clone)]
pub struct RedisStorage {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    keys: Keys,
    options: RedisOptions,
    durable: bool,
    waker: Waker,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStorage")
            .field("prefix", &self.options.prefix)
            .field("failed_prefix", &self.options.get_failed_prefix())
            .field("cluster", &self.conn.is_cluster())
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl RedisStorage {
    /// Connects to the server or the cluster the options name.
    ///
    /// Fails if the server is unreachable (for a cluster: if none of the nodes the URL lists
    /// answers) ([`Error::Backend`]) or if its `maxmemory-policy` (any master's, for a
    /// cluster) lets it evict keys ([`Error::Config`], unless
    /// [`RedisOptions::allow_eviction`]). Where `CONFIG` is disabled (managed Redis), a
    /// warning is logged and the connection is kept.
    pub async fn connect(options: RedisOptions) -> Result<Self> {
        options.validate().map_err(Error::Config)?;
        let (mut conn, source) = match Target::parse(&options.url).map_err(Error::Config)? {
            Target::Single(client) => {
                let conn = setup::connect_single(&client, &options).await?;
                (Connection::Single(conn), Source::Single(client))
            }
            Target::Cluster(nodes) => {
                let conn = setup::connect_cluster(&nodes, &options).await?;
                let source = Source::Cluster {
                    seeds: nodes,
                    conn: conn.clone(),
                    connect_timeout: options.connect_timeout,
                };
                (Connection::Cluster(conn), source)
            }
        };
        setup::check_eviction(&mut conn, options.allow_eviction).await?;
        let durable = setup::is_durable(&mut conn).await?;
        let keys = Keys::new(&options.prefix, options.get_failed_prefix());
        Ok(RedisStorage {
            inner: Arc::new(Inner {
                conn,
                keys,
                durable,
                options,
                waker: Waker::new(source),
            }),
        })
    }

    /// Whether this store talks to a Redis Cluster (a `redis+cluster://` URL).
    pub fn is_cluster(&self) -> bool {
        self.inner.conn.is_cluster()
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    /// The id Redis gives the store's shared connection (`CLIENT ID`), to find it in
    /// `CLIENT LIST`. On a cluster, the id of the store's connection to one node, chosen at
    /// random.
    pub async fn client_id(&self) -> Result<i64> {
        redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut self.conn())
            .await
            .map_err(backend)
    }

    fn conn(&self) -> Connection {
        self.inner.conn.clone()
    }

    /// Whether operations that span hash slots must be split (a cluster).
    fn split(&self) -> bool {
        self.inner.conn.is_cluster()
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// A call of a script that starts with the head of `lib.lua`; claims are off on a
    /// cluster.
    fn call(&self) -> Call<'_> {
        Call::new(self.keys(), !self.split())
    }

    /// Runs a script, loading it first if the server (on a cluster: the node) does not know
    /// it (a restart empties its script cache).
    /// Runs a script (`EVALSHA`, loading it when the server lacks it). A `SCRIPT FLUSH`
    /// between the load and the call (an operator, a failover, another process) makes the
    /// call fail with `NOSCRIPT` again: it is tried again a few times.
    async fn invoke(&self, invocation: &ScriptInvocation<'_>) -> Result<Value> {
        let mut tries = 0;
        loop {
            match invocation.invoke_async(&mut self.conn()).await {
                Err(e)
                    if tries < 3
                        && e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    tries += 1;
                }
                done => return done.map_err(backend),
            }
        }
    }

    /// Refuses, before anything changes, a batch the contract or the backend cannot take:
    /// an effect [`check_effects`] refuses, and on a cluster any effect but a record.
    fn check_settles(&self, settles: &[Settle]) -> Result<()> {
        check_effects(DRIVER, settles)?;
        self.check_supported(settles.iter().flat_map(|s| &s.effects))
    }

    /// Refuses effects this store cannot apply: on a cluster every kind but a record and a
    /// payload (each would tie the job's slot to another; a record and the job's hash live
    /// in the job's slot), anywhere a kind this driver does not know.
    fn check_supported<'e>(&self, effects: impl IntoIterator<Item = &'e Effect>) -> Result<()> {
        for effect in effects {
            let refused = match effect {
                Effect::Push(_) if self.split() => CLAIMS_ON_CLUSTER,
                Effect::Count { .. } | Effect::Value { .. } if self.split() => GROUPS_ON_CLUSTER,
                Effect::Park { .. } if self.split() => PARK_ON_CLUSTER,
                Effect::Hold(_) | Effect::Deps { .. } | Effect::Skip { .. } if self.split() => {
                    WAITING_ON_CLUSTER
                }
                Effect::Push(_)
                | Effect::Count { .. }
                | Effect::Hold(_)
                | Effect::Deps { .. }
                | Effect::Skip { .. }
                | Effect::Record { .. }
                | Effect::Payload(_)
                | Effect::Park { .. }
                | Effect::Value { .. } => continue,
                _ => "an effect this driver does not know",
            };
            return Err(Error::NotSupported {
                driver: DRIVER,
                operation: refused,
            });
        }
        Ok(())
    }

    /// One call of the push script for `jobs` (see `scripts/push.lua` for the layout); on
    /// one server the registry goes in the same script.
    async fn push_batch(&self, jobs: &[&NewJob]) -> Result<Vec<Pushed>> {
        let mut queues: Vec<&str> = Vec::new();
        let mut numbers: HashMap<&str, usize> = HashMap::new();
        for job in jobs {
            numbers.entry(job.queue.as_str()).or_insert_with(|| {
                queues.push(job.queue.as_str());
                queues.len()
            });
        }
        let registry = !self.split();
        let mut invocation = SCRIPTS.push.prepare_invoke();
        for queue in &queues {
            invocation
                .key(self.keys().pending(queue))
                .key(self.keys().seq(queue));
        }
        invocation.arg(queues.len());
        for queue in &queues {
            invocation.arg(queue.as_bytes());
        }
        let mut declared = 2 * queues.len();
        for job in jobs {
            invocation
                .arg(numbers[job.queue.as_str()])
                .arg(call::available(job.available))
                .arg(job.name.as_bytes())
                .arg(job.payload.as_slice());
            match &job.unique {
                Some(unique) => {
                    declared += 1;
                    // Negative: the claim replaces a queued holder.
                    let reference = if unique.replace {
                        -(declared as i64)
                    } else {
                        declared as i64
                    };
                    invocation
                        .key(self.keys().claim(&unique.key))
                        .arg(reference)
                        .arg(unique.key.as_bytes())
                        .arg(unique.until.as_str());
                }
                None => {
                    invocation.arg(0);
                }
            }
        }
        if registry {
            invocation.key(self.keys().registry());
        }
        let reply = self.invoke(&invocation).await?;
        let results = array("push", reply)?;
        if results.len() != jobs.len() {
            return Err(RedisDriverError::unexpected("push", &Value::Array(results)).into());
        }
        results
            .into_iter()
            .zip(jobs)
            .map(|(result, job)| match result {
                Value::Int(n) => Ok(Pushed::Created(JobId(format!("{}/{n}", job.queue)))),
                holder @ (Value::BulkString(_) | Value::SimpleString(_)) => text(holder)
                    .map(|h| Pushed::Duplicate(JobId(h)))
                    .ok_or_else(|| RedisDriverError::unexpected("push", &Value::Nil).into()),
                Value::Array(replaced) => match <[Value; 1]>::try_from(replaced) {
                    Ok([holder]) => text(holder)
                        .map(|h| Pushed::Replaced(JobId(h)))
                        .ok_or_else(|| RedisDriverError::unexpected("push", &Value::Nil).into()),
                    Err(other) => {
                        Err(RedisDriverError::unexpected("push", &Value::Array(other)).into())
                    }
                },
                other => Err(RedisDriverError::unexpected("push", &other).into()),
            })
            .collect()
    }

    /// One call of the settle script: `settles` (each fenced by its token, with its
    /// effects), then `loose` effects (applied with no lease, as [`Groups::apply`] does),
    /// then, with `fetch`, a reservation from its queues (in priority order) of up to its
    /// limit. A settlement whose lease names no job of its queue is stale without being sent.
    ///
    /// With dependency changes among the effects, the jobs waiting under their keys are read
    /// first, so that the script is given the keys of the jobs it may release; if one of them
    /// was replaced in between, the script changes nothing and this reads them again (see
    /// `scripts/settle.lua`), [`WAITING_READS`] times at most.
    ///
    /// [`Groups::apply`]: queue_core::storage::Groups::apply
    async fn settle_batch(
        &self,
        settles: &[&Settle],
        loose: &[Effect],
        fetch: Option<Fetch<'_>>,
    ) -> Result<(Vec<Settled>, Vec<Reserved>)> {
        let batch = Batch::new(settles, loose, fetch);
        if batch.sent.is_empty() && loose.is_empty() && fetch.is_none() {
            return Ok((vec![Settled::Stale; settles.len()], Vec::new()));
        }
        let (settled, _, reserved) = self.run_batch(&batch).await?;
        Ok((settled, reserved))
    }

    /// One call of the settle script removing the job of `lease` (its token unused) if it
    /// is waiting, delayed or reserved under a lease that ran out, with `effects` in the
    /// same step (see `scripts/settle.lua`): whether it did.
    pub(crate) async fn cancel_removing(&self, lease: Lease, effects: Vec<Effect>) -> Result<bool> {
        let settle = Settle {
            lease,
            outcome: Outcome::Ack,
            effects,
        };
        let settles = [&settle];
        let mut batch = Batch::new(&settles, &[], None);
        if batch.sent.is_empty() {
            return Ok(false);
        }
        batch.cancel = true;
        let (settled, _, _) = self.run_batch(&batch).await?;
        Ok(settled.first() == Some(&Settled::Applied))
    }

    /// One call of the settle script applying `effects` with no lease only if `guard`'s
    /// counter holds its expected value, which the same call sets (see `scripts/settle.lua`):
    /// whether it applied. [`Groups::apply_if`] on one server.
    ///
    /// [`Groups::apply_if`]: queue_core::storage::Groups::apply_if
    async fn apply_guarded(&self, guard: &Guard, effects: &[Effect]) -> Result<bool> {
        let mut batch = Batch::new(&[], effects, None);
        batch.guard = Some(guard);
        let (_, applied, _) = self.run_batch(&batch).await?;
        Ok(applied)
    }

    /// Calls the settle script for `batch` (reading the waiting jobs first, again while one
    /// was replaced in between): the outcome of each settlement, whether the effects with no
    /// lease applied, the reserved jobs.
    async fn run_batch(&self, batch: &Batch<'_>) -> Result<(Vec<Settled>, bool, Vec<Reserved>)> {
        for _ in 0..WAITING_READS {
            let waiting = self.waiting_jobs(&batch.guarded).await?;
            let call = self.settle_call(batch, &waiting);
            let reply = self.invoke(&call.invocation(&SCRIPTS.settle)).await?;
            if matches!(reply, Value::Int(-1)) {
                // A job waiting under a guarded key was replaced since it was read.
                continue;
            }
            return batch.parse(reply);
        }
        Err(RedisDriverError::WaitingChanged {
            attempts: WAITING_READS,
        }
        .into())
    }

    /// The settle script's call for `batch`, given the queue and claim of the job waiting
    /// under each of its guarded keys as read.
    fn settle_call(&self, batch: &Batch<'_>, waiting: &[Option<WaitingKeys>]) -> Call<'_> {
        let mut call = self.call();
        let effects = || {
            batch
                .sent
                .iter()
                .flat_map(|(i, _)| &batch.settles[*i].effects)
                .chain(batch.loose)
        };
        if effects().any(|e| matches!(e, Effect::Push(_) | Effect::Deps { .. })) {
            // Pushed and released jobs add their queues to the registry, as a push does.
            call.registry();
        }
        let fails = batch
            .sent
            .iter()
            .any(|(i, _)| matches!(batch.settles[*i].outcome, Outcome::Fail { .. }));
        if fails {
            let seq = call.key(self.keys().failed_seq());
            call.key(self.keys().failed_index());
            call.arg(seq);
        } else {
            call.arg(0);
        }
        for (queue, unique) in waiting.iter().flatten() {
            call.queue(queue);
            if let Some(unique) = unique {
                call.key(self.keys().claim(unique));
            }
        }
        call.arg(batch.guarded.len());
        for key in &batch.guarded {
            let key = call.key(self.keys().waiting(key));
            call.arg(key);
        }
        call.arg(batch.sent.len() + usize::from(batch.has_loose()));
        for (i, member) in &batch.sent {
            let settle = batch.settles[*i];
            let queue = call.queue(&settle.lease.queue);
            if batch.cancel {
                // A cancel's removal with its effects (`Track::cancel`): no token.
                call.arg("x").arg(queue).arg(member).arg("").arg("");
                self.effects(&mut call, &settle.effects);
                continue;
            }
            if settle.outcome == Outcome::Ack && settle.effects.is_empty() {
                // The hot path: a plain acknowledge, four values.
                call.arg("a")
                    .arg(queue)
                    .arg(member)
                    .arg(&settle.lease.token);
                continue;
            }
            let (code, value) = match &settle.outcome {
                Outcome::Ack => ("A", Vec::new()),
                Outcome::Retry { delay } => ("r", millis(*delay).to_string().into_bytes()),
                Outcome::Release { delay } => ("l", millis(*delay).to_string().into_bytes()),
                Outcome::Fail { reason } => ("f", reason.as_bytes().to_vec()),
            };
            call.arg(code)
                .arg(queue)
                .arg(member)
                .arg(&settle.lease.token)
                .arg(value);
            self.effects(&mut call, &settle.effects);
        }
        if let Some(guard) = batch.guard {
            let group = call.key(self.keys().group(&guard.group));
            call.arg("g")
                .arg(group)
                .arg(guard.counter.as_bytes())
                .arg(guard.expect)
                .arg(guard.set);
            self.effects(&mut call, batch.loose);
        } else if !batch.loose.is_empty() {
            call.arg("e");
            self.effects(&mut call, batch.loose);
        }
        match &batch.fetch {
            None => {
                call.arg(0);
            }
            Some(fetch) => {
                call.arg(fetch.queues.len());
                for queue in fetch.queues {
                    let number = call.queue(queue);
                    call.arg(number);
                }
                call.arg(millis(fetch.request.lease))
                    .arg(fetch.limit)
                    .arg(format!("{}.", new_token()));
                if let Some(name) = &fetch.request.name {
                    call.arg(name.as_bytes())
                        .arg(self.inner.options.name_scan_limit);
                }
            }
        }
        call
    }

    /// Appends `effects` as the settle script reads them (their number, then each),
    /// declaring the keys they name: a pushed or held job's queue and claim, a group, a
    /// waiting job's key. A record names none: the script builds its key in the settled
    /// job's slot.
    fn effects(&self, call: &mut Call<'_>, effects: &[Effect]) {
        call.arg(effects.len());
        for effect in effects {
            match effect {
                Effect::Push(job) => {
                    call.arg("p").job(job);
                }
                Effect::Count { group, deltas } => {
                    let key = call.key(self.keys().group(group));
                    call.arg("c").arg(key).arg(deltas.len());
                    for (name, delta) in deltas {
                        call.arg(name.as_bytes()).arg(*delta);
                    }
                }
                Effect::Hold(waiting) => {
                    let key = call.key(self.keys().waiting(&waiting.key));
                    call.arg("h").arg(key).arg(waiting.deps).job(&waiting.job);
                }
                Effect::Deps { key, delta } => {
                    let key = call.key(self.keys().waiting(key));
                    call.arg("d").arg(key).arg(*delta);
                }
                Effect::Skip { key } => {
                    let key = call.key(self.keys().waiting(key));
                    call.arg("s").arg(key);
                }
                Effect::Record { kind, value, ttl } => {
                    call.arg("R")
                        .arg(kind.as_bytes())
                        .arg(value.as_slice())
                        .arg(millis(*ttl));
                }
                Effect::Payload(payload) => {
                    call.arg("P").arg(payload.as_slice());
                }
                Effect::Park { key } => {
                    let lock = call.key(self.keys().lock(key));
                    let parked = call.key(self.keys().parked(key));
                    call.arg("K").arg(lock).arg(parked);
                }
                Effect::Value { group, name, value } => {
                    let key = call.key(self.keys().values(group));
                    call.arg("v")
                        .arg(key)
                        .arg(name.as_bytes())
                        .arg(value.as_slice());
                }
                // `check_supported` refused it before.
                _ => {}
            }
        }
    }

    /// The queue and the unique key of the job waiting under each of `keys` (`None` where
    /// none waits): one pipelined round trip, none without keys.
    async fn waiting_jobs(&self, keys: &BTreeSet<&str>) -> Result<Vec<Option<WaitingKeys>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HMGET")
                .arg(self.keys().waiting(key))
                .arg(&["q", "u"]);
        }
        let replies: Vec<Vec<Value>> = pipe.query_async(&mut self.conn()).await.map_err(backend)?;
        replies
            .into_iter()
            .map(|fields| {
                let bad = || RedisDriverError::unexpected("waiting", &Value::Array(fields.clone()));
                match <[Value; 2]>::try_from(fields.clone()).map_err(|_| bad())? {
                    [Value::Nil, _] => Ok(None),
                    [queue, Value::Nil] => Ok(Some((text(queue).ok_or_else(bad)?, None))),
                    [queue, unique] => Ok(Some((
                        text(queue).ok_or_else(bad)?,
                        Some(text(unique).ok_or_else(bad)?),
                    ))),
                }
            })
            .collect::<std::result::Result<_, RedisDriverError>>()
            .map_err(Into::into)
    }

    /// One call of the extend script for `leases`; a lease whose id names no job of its
    /// queue is lost without being sent. A renewed lease whose job carries a `cancel`
    /// record is [`LeaseStatus::Cancelled`].
    async fn extend_batch(&self, leases: &[&Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        let mut statuses = vec![LeaseStatus::Lost; leases.len()];
        let mut call = self.call();
        call.arg(millis(lease));
        let mut sent = Vec::with_capacity(leases.len());
        for (i, held) in leases.iter().enumerate() {
            let Some(member) = job_member(&held.queue, &held.job_id.0) else {
                continue;
            };
            let queue = call.queue(&held.queue);
            call.arg(queue).arg(member).arg(&held.token);
            sent.push(i);
        }
        if sent.is_empty() {
            return Ok(statuses);
        }
        let reply = self.invoke(&call.invocation(&SCRIPTS.extend)).await?;
        let renewed = array("extend", reply)?;
        if renewed.len() != sent.len() {
            return Err(RedisDriverError::unexpected("extend", &Value::Array(renewed)).into());
        }
        for (i, value) in sent.into_iter().zip(&renewed) {
            statuses[i] = match integer("extend", value)? {
                0 => LeaseStatus::Lost,
                1 => LeaseStatus::Held,
                2 => LeaseStatus::Cancelled,
                _ => return Err(RedisDriverError::unexpected("extend", value).into()),
            };
        }
        Ok(statuses)
    }
}

/// The queue of a waiting job and its unique key, if it has one: the keys its release
/// touches.
type WaitingKeys = (String, Option<String>);

/// What one settle call sends: the settlements (those whose lease names a job of its queue,
/// with the job's member), effects with no lease and the counter guard they apply under if
/// any (`apply_if`, no settlement then), the fetch, and the keys of the dependency changes,
/// which the script guards (sorted, each once).
struct Batch<'a> {
    settles: &'a [&'a Settle],
    sent: Vec<(usize, String)>,
    loose: &'a [Effect],
    guard: Option<&'a Guard>,
    fetch: Option<Fetch<'a>>,
    guarded: BTreeSet<&'a str>,
    /// The settlements are cancels (`x` entries): each removes its job if it is waiting,
    /// delayed or reserved under a lease that ran out, whatever its token.
    cancel: bool,
}

impl<'a> Batch<'a> {
    fn new(settles: &'a [&'a Settle], loose: &'a [Effect], fetch: Option<Fetch<'a>>) -> Self {
        let sent: Vec<(usize, String)> = settles
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, job_member(&s.lease.queue, &s.lease.job_id.0)?)))
            .collect();
        let guarded = sent
            .iter()
            .flat_map(|(i, _)| &settles[*i].effects)
            .chain(loose)
            .filter_map(|effect| match effect {
                Effect::Deps { key, .. } => Some(key.as_str()),
                _ => None,
            })
            .collect();
        Batch {
            settles,
            sent,
            loose,
            guard: None,
            fetch,
            guarded,
            cancel: false,
        }
    }

    /// Whether the call has an entry of effects with no lease: with effects, or with a
    /// guard (whose counter it sets even with none).
    fn has_loose(&self) -> bool {
        !self.loose.is_empty() || self.guard.is_some()
    }

    /// The outcome of each settlement and the reserved jobs, from the script's reply.
    #[cfg(test)]
    fn reply(&self, reply: Value) -> Result<(Vec<Settled>, Vec<Reserved>)> {
        let (settled, _, reserved) = self.parse(reply)?;
        Ok((settled, reserved))
    }

    /// The outcome of each settlement, whether the effects with no lease applied (`true`
    /// when there are none) and the reserved jobs, from the script's reply (one 0 or 1 per
    /// settlement sent, then 1 for the effects with no lease, or under a guard 0 if its
    /// counter did not hold the value; the reservation).
    fn parse(&self, reply: Value) -> Result<(Vec<Settled>, bool, Vec<Reserved>)> {
        let [applied, reserved] = items("settle", reply)?;
        let applied = array("settle", applied)?;
        if applied.len() != self.sent.len() + usize::from(self.has_loose()) {
            return Err(RedisDriverError::unexpected("settle", &Value::Array(applied)).into());
        }
        let mut settled = vec![Settled::Stale; self.settles.len()];
        for ((i, _), value) in self.sent.iter().zip(&applied) {
            settled[*i] = match integer("settle", value)? {
                1 => Settled::Applied,
                _ => Settled::Stale,
            };
        }
        let mut loose = true;
        if let Some(value) = applied.get(self.sent.len()) {
            match integer("settle", value)? {
                1 => {}
                0 if self.guard.is_some() => loose = false,
                _ => return Err(RedisDriverError::unexpected("settle", value).into()),
            }
        }
        let reserved = match self.fetch {
            Some(fetch) => parse_reserved(fetch.queues, reserved)?,
            None => Vec::new(),
        };
        Ok((settled, loose, reserved))
    }
}

/// What a settle call reserves after settling: from `queues` (the request's, or one of them
/// on a cluster) up to `limit` jobs.
#[derive(Clone, Copy)]
struct Fetch<'a> {
    request: &'a ReserveRequest,
    queues: &'a [String],
    limit: usize,
}

impl<'a> Fetch<'a> {
    /// The whole request, `None` if it names no queue.
    fn of(request: &'a ReserveRequest) -> Option<Self> {
        (!request.queues.is_empty()).then(|| Fetch {
            request,
            queues: &request.queues,
            limit: request.limit.clamp(1, MAX_RESERVE),
        })
    }
}

/// The jobs a reservation took: six values each (the position of its queue in `queues`,
/// member, name, payload, attempts, token).
fn parse_reserved(queues: &[String], reply: Value) -> Result<Vec<Reserved>> {
    records("reserve", reply, 6)?
        .into_iter()
        .map(|record| {
            let bad = || RedisDriverError::unexpected("reserve", &Value::Array(record.clone()));
            let [position, member, name, payload, attempts, token] =
                <[Value; 6]>::try_from(record.clone()).map_err(|_| bad())?;
            let parsed = (|| {
                let queue = queues.get(usize::try_from(int(&position)?).ok()?.checked_sub(1)?)?;
                Some(Reserved {
                    lease: Lease {
                        job_id: JobId(job_id(queue, &text(member)?)),
                        queue: queue.clone(),
                        token: text(token)?,
                    },
                    name: text(name)?,
                    payload: call::bytes(payload)?,
                    attempts: u32::try_from(int(&attempts)?.max(0)).unwrap_or(u32::MAX),
                })
            })();
            parsed.ok_or_else(|| bad().into())
        })
        .collect()
}

/// A duration for the scripts, in milliseconds.
fn millis(duration: Duration) -> i64 {
    duration_millis(duration).min(MAX_MILLIS)
}

#[async_trait]
impl Storage for RedisStorage {
    fn capabilities(&self) -> Capabilities<'_> {
        let capabilities = Capabilities::new(DRIVER)
            .durable(self.inner.durable)
            .atomic_push(!self.split())
            .reserve_by_name(true)
            .claims(!self.split())
            .replace(!self.split())
            .failed(self)
            .inspect(self)
            .track(self)
            .rewrite(true)
            .park(!self.split())
            .control(self)
            .wake(self)
            .workers(self)
            .locks(self);
        if self.split() {
            capabilities
        } else {
            capabilities.groups(self)
        }
    }

    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<Pushed>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        if self.split() {
            return self.push_split(&jobs).await;
        }
        self.push_batch(&jobs.iter().collect::<Vec<_>>()).await
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        let Some(fetch) = Fetch::of(request) else {
            return Ok(Vec::new());
        };
        if self.split() {
            return self.reserve_split(fetch).await;
        }
        Ok(self.settle_batch(&[], &[], Some(fetch)).await?.1)
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        if self.split() {
            return self.extend_split(leases, lease).await;
        }
        self.extend_batch(&leases.iter().collect::<Vec<_>>(), lease)
            .await
    }

    async fn settle(
        &self,
        settles: Vec<Settle>,
        fetch: Option<&ReserveRequest>,
    ) -> Result<SettleReply> {
        self.check_settles(&settles)?;
        let fetch = fetch.and_then(Fetch::of);
        if self.split() {
            return self.settle_split(&settles, fetch).await;
        }
        let (settled, reserved) = self
            .settle_batch(&settles.iter().collect::<Vec<_>>(), &[], fetch)
            .await?;
        Ok(SettleReply { settled, reserved })
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let mut invocation = SCRIPTS.lock.prepare_invoke();
        invocation
            .key(self.keys().lock(key))
            .arg(owner)
            .arg(millis(ttl).max(1));
        let reply = self.invoke(&invocation).await?;
        Ok(integer("lock", &reply)? == 1)
    }

    /// One script: the lock deleted if `owner` holds it, and (on one server) the job parked
    /// on it longest ago made due.
    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        self.unlock_as(key, Some(owner)).await
    }
}

impl RedisStorage {
    /// Deletes the lock `key` if `owner` holds it (any owner: `None`, a release by force),
    /// and on one server wakes the job parked on it longest ago; whether it was held.
    pub(crate) async fn unlock_as(&self, key: &str, owner: Option<&str>) -> Result<bool> {
        let mut invocation = SCRIPTS.unlock.prepare_invoke();
        invocation
            .key(self.keys().lock(key))
            .key(self.keys().parked(key))
            .arg(owner.unwrap_or(""))
            .arg(u8::from(owner.is_none()))
            .arg(u8::from(!self.split()));
        let reply = self.invoke(&invocation).await?;
        Ok(integer("unlock", &reply)? == 1)
    }
}

/// Positions of `settles` whose lease came earlier in the batch: stale whatever becomes of
/// the first (every applied settlement ends its token). On one server the script sees this
/// by itself; a cluster settles queues in parallel calls and must decide it up front.
fn repeated(settles: &[Settle]) -> HashSet<usize> {
    let mut seen = HashSet::new();
    settles
        .iter()
        .enumerate()
        .filter(|(_, s)| !seen.insert((&s.lease.job_id, &s.lease.token)))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use queue_core::storage::{Groups, Inspect};
    use queue_core::{NewJob, Unique, WaitingJob};
    use queue_tests::unique;

    use super::*;

    /// A store under a fresh prefix on the test server (`REDIS_URL`), or `None` if it is
    /// down. The prefix starts as the integration tests' do, so their sweep deletes it.
    async fn store() -> Option<RedisStorage> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let options = RedisOptions::from_env().prefix(unique(&format!("qtest{secs}")));
        let url = options.get_url().to_owned();
        match RedisStorage::connect(options).await {
            Ok(store) => Some(store),
            Err(e) => queue_tests::server_missing(&url, e),
        }
    }

    /// The race the guard of `scripts/settle.lua` is for, played step by step: the driver
    /// reads the job waiting under a dependency change's key, the job is replaced (here: held
    /// after a read that found none, on a queue and with a claim the call does not declare),
    /// and the call answers -1 having changed nothing. With a fresh read, the same batch
    /// releases the job.
    #[tokio::test]
    async fn a_stale_read_of_a_waiting_job_changes_nothing() {
        let Some(store) = store().await else {
            return;
        };
        let (q, key) = (unique("q"), unique("k"));
        let effects = [Effect::Deps {
            key: key.clone(),
            delta: -1,
        }];
        let no_settles: [&Settle; 0] = [];
        let batch = Batch::new(&no_settles, &effects, None);
        let stale = store.waiting_jobs(&batch.guarded).await.unwrap();
        assert_eq!(stale, [None]);
        let job = NewJob::new(&q, "w", b"w".to_vec()).unique(Unique::new(unique("u")));
        store
            .apply(vec![Effect::Hold(WaitingJob::new(&key, 1, job))])
            .await
            .unwrap();
        let fresh = store.waiting_jobs(&batch.guarded).await.unwrap();
        let queue_only = vec![Some((q.clone(), None))];
        for read in [&stale, &queue_only] {
            let call = store.settle_call(&batch, read);
            let reply = store
                .invoke(&call.invocation(&SCRIPTS.settle))
                .await
                .unwrap();
            assert_eq!(reply, Value::Int(-1), "{read:?}");
            assert_eq!(store.waiting(&key).await.unwrap(), Some(1));
            assert_eq!(store.size(&q).await.unwrap().total(), 0);
        }
        let call = store.settle_call(&batch, &fresh);
        let reply = store
            .invoke(&call.invocation(&SCRIPTS.settle))
            .await
            .unwrap();
        assert_eq!(batch.reply(reply).unwrap(), (Vec::new(), Vec::new()));
        assert_eq!(store.waiting(&key).await.unwrap(), None);
        assert_eq!(store.size(&q).await.unwrap().total(), 1, "released");
    }
}
