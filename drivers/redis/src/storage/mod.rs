//! [`RedisStorage`]: the [`Storage`] contract on Redis, one Lua script per transition.
//!
//! The same code serves one server and Redis Cluster ([`Connection`]). What would cross
//! hash slots (several queues in one call, a queue and the failed store) runs as one script
//! on one server and is split per slot on a cluster (`cluster.rs`); claims and group
//! counters, which would tie a job's slot to another, are refused there.

mod call;
mod cluster;
mod failed;
mod inspect;
mod setup;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use queue_core::storage::{check_effects, duration_millis, new_token};
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

/// A queue on Redis: jobs, reservations, the failed store, claims, group counters and locks
/// under one key prefix.
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
    async fn invoke(&self, invocation: &ScriptInvocation<'_>) -> Result<Value> {
        invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)
    }

    /// Refuses, before anything changes, a batch the contract or the backend cannot take:
    /// a push effect without its key, and on a cluster any effect.
    fn check_settles(&self, settles: &[Settle]) -> Result<()> {
        check_effects(DRIVER, settles)?;
        for effect in settles.iter().flat_map(|s| &s.effects) {
            let refused = match effect {
                Effect::Push(_) if self.split() => CLAIMS_ON_CLUSTER,
                Effect::Count { .. } if self.split() => GROUPS_ON_CLUSTER,
                Effect::Push(_) | Effect::Count { .. } => continue,
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
                    invocation
                        .key(self.keys().claim(&unique.key))
                        .arg(declared)
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
                other => Err(RedisDriverError::unexpected("push", &other).into()),
            })
            .collect()
    }

    /// One call of the settle script: `settles` (each fenced by its token, with its
    /// effects), then, with `fetch`, a reservation from its queues (in priority order) of up
    /// to its limit. A settlement whose lease names no job of its queue is stale without
    /// being sent.
    async fn settle_batch(
        &self,
        settles: &[&Settle],
        fetch: Option<Fetch<'_>>,
    ) -> Result<(Vec<Settled>, Vec<Reserved>)> {
        let mut settled = vec![Settled::Stale; settles.len()];
        let sent: Vec<(usize, String)> = settles
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, job_member(&s.lease.queue, &s.lease.job_id.0)?)))
            .collect();
        if sent.is_empty() && fetch.is_none() {
            return Ok((settled, Vec::new()));
        }
        let mut call = self.call();
        let fails = sent
            .iter()
            .any(|(i, _)| matches!(settles[*i].outcome, Outcome::Fail { .. }));
        if fails {
            let seq = call.key(self.keys().failed_seq());
            call.key(self.keys().failed_index());
            call.arg(seq);
        } else {
            call.arg(0);
        }
        call.arg(sent.len());
        for (i, member) in &sent {
            let settle = settles[*i];
            let queue = call.queue(&settle.lease.queue);
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
                .arg(value)
                .arg(settle.effects.len());
            for effect in &settle.effects {
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
                    // `check_settles` refused it before.
                    _ => {}
                }
            }
        }
        match &fetch {
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
        let reply = self.invoke(&call.invocation(&SCRIPTS.settle)).await?;
        let [applied, reserved] = items("settle", reply)?;
        let applied = array("settle", applied)?;
        if applied.len() != sent.len() {
            return Err(RedisDriverError::unexpected("settle", &Value::Array(applied)).into());
        }
        for ((i, _), value) in sent.iter().zip(&applied) {
            settled[*i] = match integer("settle", value)? {
                1 => Settled::Applied,
                _ => Settled::Stale,
            };
        }
        let reserved = match fetch {
            Some(fetch) => parse_reserved(fetch.queues, reserved)?,
            None => Vec::new(),
        };
        Ok((settled, reserved))
    }

    /// One call of the extend script for `leases`; a lease whose id names no job of its
    /// queue is lost without being sent.
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
            if integer("extend", value)? == 1 {
                statuses[i] = LeaseStatus::Held;
            }
        }
        Ok(statuses)
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
            .failed(self)
            .inspect(self)
            .control(self)
            .wake(self);
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
        Ok(self.settle_batch(&[], Some(fetch)).await?.1)
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
            .settle_batch(&settles.iter().collect::<Vec<_>>(), fetch)
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

    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        let mut invocation = SCRIPTS.unlock.prepare_invoke();
        invocation.key(self.keys().lock(key)).arg(owner);
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
