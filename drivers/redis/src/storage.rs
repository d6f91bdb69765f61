//! [`RedisStorage`]: the [`Storage`] trait on Redis, one Lua script per operation.
//!
//! The same code serves one server and Redis Cluster ([`Connection`]). What would cross
//! hash slots (several queues in one call, a queue and the failed store) runs as one script
//! on one server and is split per slot on a cluster: see the `*_split` methods, and the
//! crate docs for what each split guarantees.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::future::try_join_all;
use queue_core::storage::{duration_millis, from_unix_millis, new_token, unix_millis};
use queue_core::{
    Availability, Capabilities, Error, FailedJob, JobId, Lease, NewJob, QueueSize, ReserveRequest,
    Reserved, Result, Storage,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{Cmd, FromRedisValue, RedisError, Script, Value};

use crate::connection::{Connection, Target};
use crate::error::{backend, RedisDriverError};
use crate::keys::{id_of, job_id, job_member, member, Keys};
use crate::notify::{Source, Waker};
use crate::options::RedisOptions;
use crate::scripts::SCRIPTS;
use crate::DRIVER;

/// The most jobs one reservation takes, whatever the limit asked: one script call stays
/// short and its reply small.
pub const MAX_RESERVE: usize = 1_000;

/// How many entries the chunked scripts (clear, flush, prune) delete per call.
const CHUNK: usize = 1_000;

/// Times and durations handed to the scripts stay within this many milliseconds of zero
/// (about 3,000 years), where Lua's numbers are exact integers.
const MAX_MILLIS: i64 = 100_000_000_000_000;

/// When a job is due already but the reservation just before found nothing (a job released
/// in between, or one of another name for a worker that runs only one name), `wait` pauses
/// this long at most instead of returning at once, so such a worker cannot spin.
const DUE_NOW_PAUSE: Duration = Duration::from_millis(20);

/// How long a retry of a failed job on Redis Cluster holds its claim on it (see
/// `failed_claim.lua`): a retry that died between its steps can be done again after this.
const RETRY_CLAIM: Duration = Duration::from_secs(60);

/// How many times the cluster client retries a command (after a redirect, a reconnect or
/// `TRYAGAIN`) before it fails it.
const CLUSTER_RETRIES: u32 = 5;

/// A queue on Redis: jobs, reservations, the failed store and locks under one key prefix.
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
    capabilities: Capabilities,
    waker: Waker,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStorage")
            .field("prefix", &self.options.prefix)
            .field("failed_prefix", &self.options.get_failed_prefix())
            .field("cluster", &self.conn.is_cluster())
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl RedisStorage {
    /// Connects to the server or the cluster the options name.
    ///
    /// Fails if the server is unreachable (for a cluster: if none of the nodes the URL lists
    /// answers) ([`Error::Backend`]) or if its `maxmemory-policy` (any master's, for a
    /// cluster) lets it evict keys ([`Error::Config`], unless [`RedisOptions::allow_eviction`]). Where
    /// `CONFIG` is disabled (managed Redis), a warning is logged and the connection is kept.
    pub async fn connect(options: RedisOptions) -> Result<Self> {
        options.validate().map_err(Error::Config)?;
        let (mut conn, source) = match Target::parse(&options.url).map_err(Error::Config)? {
            Target::Single(client) => {
                let conn = connect_single(&client, &options).await?;
                (Connection::Single(conn), Source::Single(client))
            }
            Target::Cluster(nodes) => {
                let conn = connect_cluster(&nodes, &options).await?;
                let source = Source::Cluster {
                    seeds: nodes,
                    conn: conn.clone(),
                    connect_timeout: options.connect_timeout,
                };
                (Connection::Cluster(conn), source)
            }
        };
        check_eviction(&mut conn, options.allow_eviction).await?;
        let durable = is_durable(&mut conn).await?;
        let keys = Keys::new(&options.prefix, options.get_failed_prefix());
        Ok(RedisStorage {
            inner: Arc::new(Inner {
                conn,
                keys,
                capabilities: Capabilities {
                    reserve_by_name: true,
                    durable,
                    wake_on_push: true,
                },
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
    /// `CLIENT LIST`. Blocking waits use a connection of their own. On a cluster, the id of
    /// the store's connection to one node, chosen at random.
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

    /// Runs a pipeline whose last command is an `EVALSHA` of `script`, loading the script
    /// if the server does not know it (a restart empties its script cache).
    async fn query_loading(&self, pipe: &redis::Pipeline, script: &Script) -> Result<Vec<Value>> {
        let mut conn = self.conn();
        match pipe.query_async::<Vec<Value>>(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                script.load_async(&mut conn).await.map_err(backend)?;
                pipe.query_async(&mut conn).await.map_err(backend)
            }
            result => result.map_err(backend),
        }
    }

    /// Runs one `EVALSHA` of `script`, loading the script if the server (on a cluster:
    /// every node) does not know it.
    async fn eval_loading(&self, eval: &Cmd, script: &Script) -> Result<Value> {
        let mut conn = self.conn();
        match eval.query_async::<Value>(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                script.load_async(&mut conn).await.map_err(backend)?;
                eval.query_async(&mut conn).await.map_err(backend)
            }
            result => result.map_err(backend),
        }
    }

    /// The `EVALSHA` of the push script for `queues` and their jobs (each job with the
    /// 1-based index of its queue in `queues`).
    fn push_eval<'a>(
        &self,
        queues: &[&str],
        jobs: impl Iterator<Item = (usize, &'a NewJob)>,
    ) -> Cmd {
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(SCRIPTS.push.get_hash()).arg(queues.len() * 2);
        for queue in queues {
            eval.arg(self.keys().pending(queue))
                .arg(self.keys().seq(queue));
        }
        for (index, job) in jobs {
            let (kind, ms) = match job.available {
                Availability::Now => ("r", 0),
                Availability::After(delay) => ("r", millis(delay)),
                Availability::At(at) => ("a", unix_millis(at).clamp(-MAX_MILLIS, MAX_MILLIS)),
            };
            eval.arg(index)
                .arg(kind)
                .arg(ms)
                .arg(job.name.as_bytes())
                .arg(job.payload.as_slice());
        }
        eval
    }

    /// Adds queue names to the registry (its own slot), as its own command.
    async fn register(&self, queues: &[&str]) -> Result<()> {
        redis::cmd("SADD")
            .arg(self.keys().registry())
            .arg(queues)
            .exec_async(&mut self.conn())
            .await
            .map_err(backend)
    }

    /// Push on a cluster: the registry first, then one script per queue (each atomic, all
    /// in flight at once).
    async fn push_split(&self, jobs: &[NewJob], queues: &[&str]) -> Result<Vec<JobId>> {
        self.register(queues).await?;
        let calls = queues.iter().map(|queue| async move {
            let mine = jobs.iter().filter(|job| job.queue == *queue);
            let eval = self.push_eval(&[queue], mine.map(|job| (1, job)));
            let reply = self.eval_loading(&eval, &SCRIPTS.push).await?;
            array(reply).map_err(|r| Error::from(RedisDriverError::unexpected("push", &r)))
        });
        let replies = try_join_all(calls).await?;
        let mut ids: Vec<std::vec::IntoIter<Value>> =
            replies.into_iter().map(Vec::into_iter).collect();
        jobs.iter()
            .map(|job| {
                let q = queues.iter().position(|q| *q == job.queue)?;
                let n = int(&ids[q].next()?)?;
                Some(JobId(format!("{}/{n}", job.queue)))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| RedisDriverError::unexpected("push", &Value::Nil).into())
    }

    /// One call of the reserve script over `queues` (in priority order), at most `limit` jobs.
    async fn reserve_from(
        &self,
        request: &ReserveRequest,
        queues: &[String],
        limit: usize,
    ) -> Result<Vec<Reserved>> {
        let mut invocation = SCRIPTS.reserve.prepare_invoke();
        for queue in queues {
            invocation.key(self.keys().pending(queue));
            invocation.key(self.keys().reserved(queue));
        }
        invocation
            .arg(millis(request.lease))
            .arg(limit)
            .arg(format!("{}.", new_token()));
        match &request.name {
            Some(name) => invocation.arg("1").arg(name.as_bytes()),
            None => invocation.arg("0").arg(""),
        };
        invocation.arg(self.inner.options.name_scan_limit);
        let reply: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let items = array(reply).map_err(|r| RedisDriverError::unexpected("reserve", &r))?;
        if items.len() % 6 != 0 {
            return Err(RedisDriverError::unexpected("reserve", &Value::Array(items)).into());
        }
        let mut out = Vec::with_capacity(items.len() / 6);
        let mut items = items.into_iter();
        while let Some(q) = items.next() {
            let mut take = || items.next().unwrap_or(Value::Nil);
            let (member, name, payload, attempts, token) = (take(), take(), take(), take(), take());
            let parsed = (|| {
                let queue = queues.get(usize::try_from(int(&q)?).ok()?.checked_sub(1)?)?;
                Some(Reserved {
                    lease: Lease {
                        job_id: JobId(job_id(queue, &text(member)?)),
                        queue: queue.clone(),
                        token: text(token)?,
                    },
                    name: text(name)?,
                    payload: bytes(payload)?,
                    attempts: u32::try_from(int(&attempts)?.max(0)).unwrap_or(u32::MAX),
                })
            })();
            match parsed {
                Some(reserved) => out.push(reserved),
                None => return Err(RedisDriverError::unexpected("reserve", &q).into()),
            }
        }
        Ok(out)
    }

    /// One call of the acknowledge script for `leases` (those with a valid id); the answer
    /// per lease, `false` for an invalid id.
    async fn acknowledge_batch(&self, leases: &[&Lease]) -> Result<Vec<bool>> {
        let mut results = vec![false; leases.len()];
        let mut positions = Vec::with_capacity(leases.len());
        let mut invocation = SCRIPTS.acknowledge.prepare_invoke();
        for (i, lease) in leases.iter().enumerate() {
            let Some(member) = job_member(&lease.queue, &lease.job_id.0) else {
                continue;
            };
            invocation
                .key(self.keys().job(&lease.queue, &member))
                .key(self.keys().reserved(&lease.queue))
                .arg(member)
                .arg(&lease.token);
            positions.push(i);
        }
        if positions.is_empty() {
            return Ok(results);
        }
        let reply: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let acked = array(reply).map_err(|r| RedisDriverError::unexpected("acknowledge", &r))?;
        if acked.len() != positions.len() {
            return Err(RedisDriverError::unexpected("acknowledge", &Value::Array(acked)).into());
        }
        for (position, value) in positions.into_iter().zip(&acked) {
            results[position] = int(value) == Some(1);
        }
        Ok(results)
    }

    /// `fail` on a cluster, where the job's queue and the failed store are two slots: read
    /// the job (checking the lease), add it to the failed store, then delete it from its
    /// queue if the lease still holds, else take the failed entry back out. The job is
    /// never lost: if the process dies after the second step, the job is in the failed store
    /// and still reserved until its lease runs out, when it runs again.
    async fn fail_split(&self, lease: &Lease, member: &str, error: &str) -> Result<()> {
        let job = self.keys().job(&lease.queue, member);
        let fields: Vec<Value> = redis::cmd("HMGET")
            .arg(&job)
            .arg(&["n", "p", "a", "t"])
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let [name, payload, attempts, token] = <[Value; 4]>::try_from(fields)
            .map_err(|f| RedisDriverError::unexpected("fail", &Value::Array(f)))?;
        if text(token).as_deref() != Some(lease.token.as_str()) {
            return Err(lost(lease));
        }
        let mut add = SCRIPTS.failed_add.prepare_invoke();
        add.key(self.keys().failed_seq())
            .key(self.keys().failed_index())
            .arg(&lease.job_id.0)
            .arg(&lease.queue)
            .arg(bytes(name).unwrap_or_default())
            .arg(bytes(payload).unwrap_or_default())
            .arg(error)
            .arg(int(&attempts).unwrap_or(0));
        let reply: Value = add.invoke_async(&mut self.conn()).await.map_err(backend)?;
        let failed = text(reply.clone())
            .filter(|m| !m.is_empty())
            .ok_or_else(|| RedisDriverError::unexpected("fail", &reply))?;
        if self.acknowledge_batch(&[lease]).await? == [true] {
            return Ok(());
        }
        // The lease ran out between the steps and another worker has the job: it is not
        // ours to fail.
        self.forget_failed(&failed).await?;
        Err(lost(lease))
    }

    /// Deletes one failed job by member; whether it was there.
    async fn forget_failed(&self, member: &str) -> Result<bool> {
        let mut invocation = SCRIPTS.failed_forget.prepare_invoke();
        invocation
            .key(self.keys().failed_index())
            .key(self.keys().failed_job(member))
            .arg(member);
        let removed: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(removed == 1)
    }

    /// `failed_retry` on a cluster: claim the failed job, push it on its queue, then delete
    /// it from the failed store. Never lost: if the process dies after the push, the job is
    /// on its queue and still in the failed store (a second retry would run it twice); if
    /// it dies before, the claim runs out after [`RETRY_CLAIM`] and the retry can be done
    /// again.
    async fn failed_retry_split(&self, member: &str) -> Result<Option<JobId>> {
        let mut claim = SCRIPTS.failed_claim.prepare_invoke();
        claim
            .key(self.keys().failed_job(member))
            .arg(millis(RETRY_CLAIM));
        let reply: Value = claim
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let fields = array(reply).map_err(|r| RedisDriverError::unexpected("failed_retry", &r))?;
        if fields.is_empty() {
            return Ok(None);
        }
        let [queue, name, payload] = <[Value; 3]>::try_from(fields)
            .map_err(|f| RedisDriverError::unexpected("failed_retry", &Value::Array(f)))?;
        let (Some(queue), Some(name), Some(payload)) = (text(queue), text(name), bytes(payload))
        else {
            return Err(RedisDriverError::unexpected("failed_retry", &Value::Nil).into());
        };
        let job = NewJob {
            queue,
            name,
            payload,
            available: Availability::Now,
        };
        let pushed = self
            .push_split(std::slice::from_ref(&job), &[job.queue.as_str()])
            .await;
        let id = match pushed.map(|mut ids| ids.pop()) {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Err(RedisDriverError::unexpected("failed_retry", &Value::Nil).into())
            }
            Err(e) => {
                // Give the claim back, so the retry can be done again at once (best effort:
                // otherwise it runs out by itself).
                let _: redis::RedisResult<i64> = redis::cmd("HDEL")
                    .arg(self.keys().failed_job(member))
                    .arg("r")
                    .query_async(&mut self.conn())
                    .await;
                return Err(e);
            }
        };
        self.forget_failed(member).await?;
        Ok(Some(id))
    }

    /// Runs a lease-checking script (extend, release, fail): 0 means the lease is stale.
    async fn fenced(
        &self,
        operation: &'static str,
        lease: &Lease,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<()> {
        let reply: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match int(&reply) {
            Some(1) => Ok(()),
            Some(0) => Err(lost(lease)),
            _ => Err(RedisDriverError::unexpected(operation, &reply).into()),
        }
    }

    /// Milliseconds until the earliest job of `queues` is due (0: now), `None` if empty:
    /// one script call, or on a cluster one per queue (all in flight at once).
    async fn due_in(&self, queues: &[String]) -> Result<Option<Duration>> {
        if !self.split() || queues.len() < 2 {
            return self.due_in_one(queues).await;
        }
        let each = try_join_all(
            queues
                .iter()
                .map(|q| self.due_in_one(std::slice::from_ref(q))),
        )
        .await?;
        Ok(each.into_iter().flatten().min())
    }

    /// One call of the due script over `queues`.
    async fn due_in_one(&self, queues: &[String]) -> Result<Option<Duration>> {
        let mut invocation = SCRIPTS.due.prepare_invoke();
        for queue in queues {
            invocation.key(self.keys().pending(queue));
            invocation.key(self.keys().reserved(queue));
        }
        let reply: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match int(&reply) {
            Some(ms) if ms >= 0 => Ok(Some(Duration::from_millis(ms as u64))),
            Some(_) => Ok(None),
            None => Err(RedisDriverError::unexpected("wait", &reply).into()),
        }
    }

    /// Runs a chunked delete script until it deletes less than a chunk; returns the total.
    async fn drain(
        &self,
        operation: &'static str,
        script: &Script,
        key: String,
        bound: Option<String>,
    ) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let mut invocation = script.prepare_invoke();
            invocation.key(&key);
            if let Some(bound) = &bound {
                invocation.arg(bound);
            }
            invocation.arg(CHUNK);
            let reply: Value = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)?;
            let n = int(&reply).ok_or_else(|| RedisDriverError::unexpected(operation, &reply))?;
            let n = u64::try_from(n).unwrap_or(0);
            total += n;
            if n < CHUNK as u64 {
                return Ok(total);
            }
        }
    }
}

/// One server through a connection manager that reconnects by itself.
async fn connect_single(
    client: &redis::Client,
    options: &RedisOptions,
) -> Result<ConnectionManager> {
    // One plain attempt first: a wrong password or an unreachable server is reported at
    // once instead of after the connection manager's retries.
    match tokio::time::timeout(
        options.connect_timeout,
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(Ok(_probe)) => {}
        Ok(Err(e)) => return Err(backend(e)),
        Err(_) => return Err(no_answer(options)),
    }
    let mut config = ConnectionManagerConfig::new()
        .set_connection_timeout(options.connect_timeout)
        .set_number_of_retries(3)
        .set_factor(100)
        .set_max_delay(2_000);
    if let Some(timeout) = options.response_timeout {
        config = config.set_response_timeout(timeout);
    }
    ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(backend)
}

/// A cluster through the redis crate's async cluster client, which learns the slots from
/// the nodes given, keeps a connection per node, follows `MOVED`/`ASK` redirects and
/// reconnects by itself.
async fn connect_cluster(
    nodes: &[redis::ConnectionInfo],
    options: &RedisOptions,
) -> Result<redis::cluster_async::ClusterConnection> {
    let mut builder = ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(options.connect_timeout)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(50)
        .max_retry_wait(2_000)
        .retry_wait_formula(100, 2);
    if let Some(timeout) = options.response_timeout {
        builder = builder.response_timeout(timeout);
    }
    let client = builder
        .build()
        .map_err(|e| Error::Config(format!("invalid redis cluster url: {e}")))?;
    match tokio::time::timeout(options.connect_timeout, client.get_async_connection()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(backend(e)),
        Err(_) => Err(no_answer(options)),
    }
}

fn no_answer(options: &RedisOptions) -> Error {
    Error::backend(
        crate::DRIVER,
        format!("no answer within {:?}", options.connect_timeout),
    )
}

/// Refuses a server (on a cluster: any master) that may evict keys, unless allowed.
async fn check_eviction(conn: &mut Connection, allow: bool) -> Result<()> {
    let policies = match server_config(conn, "maxmemory-policy").await {
        Ok(policies) => policies,
        Err(e) if is_connection_error(&e) => return Err(backend(e)),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "could not read the redis maxmemory-policy (is CONFIG disabled?): make sure it is `noeviction`, or jobs can vanish when the server runs out of memory"
            );
            return Ok(());
        }
    };
    let evicting = policies
        .into_iter()
        .find_map(|(node, policy)| policy.filter(|p| p != "noeviction").map(|p| (node, p)));
    let Some((node, policy)) = evicting else {
        return Ok(());
    };
    let server = if node.is_empty() {
        "the redis server's".to_owned()
    } else {
        format!("the redis cluster node {node}'s")
    };
    if allow {
        tracing::warn!(
            policy,
            node,
            "the redis maxmemory-policy lets the server evict keys: jobs can vanish under memory pressure (allowed by RedisOptions::allow_eviction)"
        );
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{server} maxmemory-policy is `{policy}`: when it runs out of memory it silently deletes keys, and with them jobs; \
             run `CONFIG SET maxmemory-policy noeviction` (and set it in redis.conf{every}), \
             or connect with RedisOptions::allow_eviction(true) to accept losing jobs",
            every = if node.is_empty() { "" } else { ", on every node" }
        )))
    }
}

/// Whether a push that returned survives a restart: only with an append-only file synced
/// on every write (on a cluster: on every master). Unknown (CONFIG disabled) counts as no.
async fn is_durable(conn: &mut Connection) -> Result<bool> {
    let appendonly = server_config(conn, "appendonly").await;
    let fsync = server_config(conn, "appendfsync").await;
    match (appendonly, fsync) {
        (Ok(a), Ok(f)) => Ok(!a.is_empty()
            && a.iter().all(|(_, v)| v.as_deref() == Some("yes"))
            && !f.is_empty()
            && f.iter().all(|(_, v)| v.as_deref() == Some("always"))),
        (Err(e), _) | (_, Err(e)) if is_connection_error(&e) => Err(backend(e)),
        _ => Ok(false),
    }
}

/// A setting as each master has it (`CONFIG GET`): the node's address (empty on one
/// server) and its value.
async fn server_config(
    conn: &mut Connection,
    name: &str,
) -> Result<Vec<(String, Option<String>)>, RedisError> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg(name);
    conn.on_every_master(&cmd)
        .await?
        .into_iter()
        .map(|(node, reply)| {
            let map = HashMap::<String, String>::from_redis_value(&reply)?;
            Ok((node, map.get(name).cloned()))
        })
        .collect()
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

fn lost(lease: &Lease) -> Error {
    Error::LeaseLost {
        job_id: lease.job_id.0.clone(),
    }
}

/// A duration for the scripts, in milliseconds.
fn millis(duration: Duration) -> i64 {
    duration_millis(duration).min(MAX_MILLIS)
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Nil => Some(Vec::new()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    bytes(value).map(|b| match String::from_utf8(b) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

fn array(value: Value) -> std::result::Result<Vec<Value>, Value> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(other),
    }
}

/// A failed job from its member and the fields j, q, n, p, e, a, f.
fn failed_job(member: &str, fields: Vec<Value>) -> Option<FailedJob> {
    let mut fields = fields.into_iter();
    let mut next = || fields.next();
    let job_id = text(next()?)?;
    let queue = text(next()?)?;
    let name = text(next()?)?;
    let payload = bytes(next()?)?;
    let error = text(next()?)?;
    let attempts = int(&next()?)?;
    let failed_at = int(&next()?)?;
    Some(FailedJob {
        id: id_of(member),
        job_id,
        queue,
        name,
        payload,
        error,
        attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
        failed_at: from_unix_millis(failed_at),
    })
}

#[async_trait]
impl Storage for RedisStorage {
    fn driver(&self) -> &'static str {
        DRIVER
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities
    }

    async fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut queues: Vec<&str> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for job in &jobs {
            index.entry(job.queue.as_str()).or_insert_with(|| {
                queues.push(job.queue.as_str());
                queues.len()
            });
        }
        if self.split() {
            return self.push_split(&jobs, &queues).await;
        }
        let eval = self.push_eval(
            &queues,
            jobs.iter().map(|job| (index[job.queue.as_str()], job)),
        );
        // The registry of queue names is a global key (another hash slot): it goes in the
        // same round trip, before the jobs, and adding a name twice is harmless.
        let mut pipe = redis::pipe();
        pipe.cmd("SADD")
            .arg(self.keys().registry())
            .arg(&queues)
            .ignore();
        pipe.add_command(eval);
        let reply = self.query_loading(&pipe, &SCRIPTS.push).await?;
        let reply = reply.into_iter().next().unwrap_or(Value::Nil);
        let ids = array(reply).map_err(|r| RedisDriverError::unexpected("push", &r))?;
        if ids.len() != jobs.len() {
            return Err(RedisDriverError::unexpected("push", &Value::Array(ids)).into());
        }
        ids.iter()
            .zip(&jobs)
            .map(|(id, job)| int(id).map(|n| JobId(format!("{}/{n}", job.queue))))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| RedisDriverError::unexpected("push", &Value::Array(ids.clone())).into())
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        if request.queues.is_empty() {
            return Ok(Vec::new());
        }
        let limit = request.limit.clamp(1, MAX_RESERVE);
        if !self.split() {
            return self.reserve_from(request, &request.queues, limit).await;
        }
        // On a cluster, one script per queue in priority order: the next queue only if this
        // one had fewer available jobs than still wanted, which is what the one script does
        // on one server.
        let mut out: Vec<Reserved> = Vec::new();
        for queue in &request.queues {
            let want = limit - out.len();
            let got = self
                .reserve_from(request, std::slice::from_ref(queue), want)
                .await?;
            let exhausted = got.len() < want;
            out.extend(got);
            if !exhausted {
                break;
            }
        }
        Ok(out)
    }

    async fn extend(&self, lease: &Lease, duration: Duration) -> Result<()> {
        let member = job_member(&lease.queue, &lease.job_id.0).ok_or_else(|| lost(lease))?;
        let mut invocation = SCRIPTS.extend.prepare_invoke();
        invocation
            .key(self.keys().job(&lease.queue, &member))
            .key(self.keys().reserved(&lease.queue))
            .arg(&member)
            .arg(&lease.token)
            .arg(millis(duration));
        self.fenced("extend", lease, invocation).await
    }

    async fn acknowledge(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        if !self.split() {
            return self
                .acknowledge_batch(&leases.iter().collect::<Vec<_>>())
                .await;
        }
        // On a cluster, one script per queue, all in flight at once.
        let mut by_queue: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, lease) in leases.iter().enumerate() {
            by_queue.entry(lease.queue.as_str()).or_default().push(i);
        }
        let calls = by_queue.values().map(|positions| async move {
            let batch: Vec<&Lease> = positions.iter().map(|&i| &leases[i]).collect();
            Ok::<_, Error>((positions, self.acknowledge_batch(&batch).await?))
        });
        let mut results = vec![false; leases.len()];
        for (positions, acked) in try_join_all(calls).await? {
            for (&position, acked) in positions.iter().zip(acked) {
                results[position] = acked;
            }
        }
        Ok(results)
    }

    async fn release(&self, lease: &Lease, delay: Duration, refund_attempt: bool) -> Result<()> {
        let member = job_member(&lease.queue, &lease.job_id.0).ok_or_else(|| lost(lease))?;
        let mut invocation = SCRIPTS.release.prepare_invoke();
        invocation
            .key(self.keys().job(&lease.queue, &member))
            .key(self.keys().reserved(&lease.queue))
            .key(self.keys().pending(&lease.queue))
            .arg(&member)
            .arg(&lease.token)
            .arg(millis(delay))
            .arg(if refund_attempt { "1" } else { "0" });
        self.fenced("release", lease, invocation).await
    }

    async fn fail(&self, lease: &Lease, error: &str) -> Result<()> {
        let member = job_member(&lease.queue, &lease.job_id.0).ok_or_else(|| lost(lease))?;
        if self.split() {
            return self.fail_split(lease, &member, error).await;
        }
        let mut invocation = SCRIPTS.fail.prepare_invoke();
        invocation
            .key(self.keys().job(&lease.queue, &member))
            .key(self.keys().reserved(&lease.queue))
            .key(self.keys().failed_seq())
            .key(self.keys().failed_index())
            .arg(&member)
            .arg(&lease.token)
            .arg(&lease.job_id.0)
            .arg(&lease.queue)
            .arg(error);
        self.fenced("fail", lease, invocation).await
    }

    async fn size(&self, queue: &str) -> Result<QueueSize> {
        let mut invocation = SCRIPTS.size.prepare_invoke();
        invocation
            .key(self.keys().pending(queue))
            .key(self.keys().reserved(queue));
        let reply: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let counts = array(reply).map_err(|r| RedisDriverError::unexpected("size", &r))?;
        let n: Vec<u64> = counts
            .iter()
            .filter_map(int)
            .map(|n| u64::try_from(n).unwrap_or(0))
            .collect();
        match n[..] {
            [waiting, delayed, reserved] => Ok(QueueSize {
                waiting,
                delayed,
                reserved,
            }),
            _ => Err(RedisDriverError::unexpected("size", &Value::Array(counts)).into()),
        }
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys().registry())
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        if names.is_empty() {
            return Ok(names);
        }
        names.sort();
        let counts: Vec<u64> = if self.split() {
            // On a cluster, one pipeline per queue (its slot), all in flight at once.
            let calls = names.iter().map(|name| {
                let mut pipe = redis::pipe();
                pipe.cmd("ZCARD").arg(self.keys().pending(name));
                pipe.cmd("ZCARD").arg(self.keys().reserved(name));
                let mut conn = self.conn();
                async move { pipe.query_async::<Vec<u64>>(&mut conn).await }
            });
            let each = try_join_all(calls).await.map_err(backend)?;
            each.into_iter().flatten().collect()
        } else {
            let mut pipe = redis::pipe();
            for name in &names {
                pipe.cmd("ZCARD").arg(self.keys().pending(name));
                pipe.cmd("ZCARD").arg(self.keys().reserved(name));
            }
            pipe.query_async(&mut conn).await.map_err(backend)?
        };
        if counts.len() != names.len() * 2 {
            return Err(RedisDriverError::unexpected("queues", &Value::Nil).into());
        }
        Ok(names
            .into_iter()
            .zip(counts.chunks(2))
            .filter(|(_, c)| c.iter().sum::<u64>() > 0)
            .map(|(name, _)| name)
            .collect())
    }

    async fn clear(&self, queue: &str) -> Result<u64> {
        self.drain("clear", &SCRIPTS.clear, self.keys().pending(queue), None)
            .await
    }

    async fn failed_list(&self, offset: u64, limit: u64) -> Result<Vec<FailedJob>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = i64::try_from(offset).unwrap_or(i64::MAX);
        let stop = i64::try_from(offset.saturating_add(limit - 1)).unwrap_or(i64::MAX);
        let mut invocation = SCRIPTS.failed_page.prepare_invoke();
        invocation
            .key(self.keys().failed_index())
            .arg(start)
            .arg(stop);
        let reply: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let items = array(reply).map_err(|r| RedisDriverError::unexpected("failed_list", &r))?;
        if items.len() % 8 != 0 {
            return Err(RedisDriverError::unexpected("failed_list", &Value::Array(items)).into());
        }
        let mut out = Vec::with_capacity(items.len() / 8);
        let mut items = items.into_iter();
        while let Some(member) = items.next() {
            let fields: Vec<Value> = items.by_ref().take(7).collect();
            let job = text(member.clone())
                .and_then(|m| failed_job(&m, fields))
                .ok_or_else(|| RedisDriverError::unexpected("failed_list", &member))?;
            out.push(job);
        }
        Ok(out)
    }

    async fn failed_get(&self, id: &str) -> Result<Option<FailedJob>> {
        let Some(member) = member(id) else {
            return Ok(None);
        };
        let fields: Vec<Value> = redis::cmd("HMGET")
            .arg(self.keys().failed_job(&member))
            .arg(&["j", "q", "n", "p", "e", "a", "f"])
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if matches!(fields.last(), None | Some(Value::Nil)) {
            return Ok(None);
        }
        let reply = Value::Array(fields.clone());
        failed_job(&member, fields)
            .map(Some)
            .ok_or_else(|| RedisDriverError::unexpected("failed_get", &reply).into())
    }

    async fn failed_count(&self) -> Result<u64> {
        redis::cmd("ZCARD")
            .arg(self.keys().failed_index())
            .query_async(&mut self.conn())
            .await
            .map_err(backend)
    }

    async fn failed_retry(&self, id: &str) -> Result<Option<JobId>> {
        let Some(member) = member(id) else {
            return Ok(None);
        };
        if self.split() {
            return self.failed_retry_split(&member).await;
        }
        let hash = self.keys().failed_job(&member);
        // The queue's keys are named after the queue the failed job records, so read it
        // first; the script checks it again and answers -1 if the job went meanwhile.
        for _ in 0..3 {
            let queue: Option<String> = redis::cmd("HGET")
                .arg(&hash)
                .arg("q")
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
            let Some(queue) = queue else { return Ok(None) };
            let mut eval = redis::cmd("EVALSHA");
            eval.arg(SCRIPTS.failed_retry.get_hash())
                .arg(4)
                .arg(self.keys().failed_index())
                .arg(&hash)
                .arg(self.keys().pending(&queue))
                .arg(self.keys().seq(&queue))
                .arg(&member)
                .arg(&queue);
            let mut pipe = redis::pipe();
            pipe.cmd("SADD")
                .arg(self.keys().registry())
                .arg(&queue)
                .ignore();
            pipe.add_command(eval);
            let reply = self.query_loading(&pipe, &SCRIPTS.failed_retry).await?;
            let reply = reply.into_iter().next().unwrap_or(Value::Nil);
            match int(&reply) {
                Some(n) if n >= 0 => return Ok(Some(JobId(format!("{queue}/{n}")))),
                Some(_) => continue,
                None => return Err(RedisDriverError::unexpected("failed_retry", &reply).into()),
            }
        }
        Ok(None)
    }

    async fn failed_forget(&self, id: &str) -> Result<bool> {
        let Some(member) = member(id) else {
            return Ok(false);
        };
        self.forget_failed(&member).await
    }

    async fn failed_flush(&self) -> Result<u64> {
        let index = self.keys().failed_index();
        self.drain(
            "failed_flush",
            &SCRIPTS.failed_prune,
            index,
            Some("+inf".to_owned()),
        )
        .await
    }

    async fn failed_prune(&self, before: SystemTime) -> Result<u64> {
        let index = self.keys().failed_index();
        let bound = format!("({}", unix_millis(before).clamp(-MAX_MILLIS, MAX_MILLIS));
        self.drain("failed_prune", &SCRIPTS.failed_prune, index, Some(bound))
            .await
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let mut invocation = SCRIPTS.lock.prepare_invoke();
        invocation
            .key(self.keys().lock(key))
            .arg(owner)
            .arg(millis(ttl).max(1));
        let taken: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(taken == 1)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<bool> {
        let mut invocation = SCRIPTS.unlock.prepare_invoke();
        invocation.key(self.keys().lock(key)).arg(owner);
        let released: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(released == 1)
    }

    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        let mut invocation = SCRIPTS.oldest.prepare_invoke();
        invocation
            .key(self.keys().pending(queue))
            .key(self.keys().reserved(queue));
        let reply: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let items =
            array(reply).map_err(|r| RedisDriverError::unexpected("oldest_available", &r))?;
        match items.as_slice() {
            [] => Ok(None),
            [at] => int(at)
                .map(|ms| Some(from_unix_millis(ms)))
                .ok_or_else(|| RedisDriverError::unexpected("oldest_available", at).into()),
            _ => Err(RedisDriverError::unexpected("oldest_available", &Value::Array(items)).into()),
        }
    }

    async fn add_counters(&self, deltas: &[(String, i64)], ttl: Option<Duration>) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut invocation = SCRIPTS.counters_add.prepare_invoke();
        invocation
            .key(self.keys().counter_names())
            .key(self.keys().counter_expiry());
        match ttl {
            Some(ttl) => invocation.arg(millis(ttl)),
            None => invocation.arg(""),
        };
        for (name, delta) in deltas {
            invocation.arg(name.as_bytes()).arg(*delta);
        }
        let _: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn counters(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        // Every name that starts with the prefix lies in [prefix, prefix + 0xFF): no UTF-8
        // string holds the byte 0xFF.
        let (min, max) = if prefix.is_empty() {
            (b"-".to_vec(), b"+".to_vec())
        } else {
            let mut min = b"[".to_vec();
            min.extend_from_slice(prefix.as_bytes());
            let mut max = b"(".to_vec();
            max.extend_from_slice(prefix.as_bytes());
            max.push(0xff);
            (min, max)
        };
        let mut invocation = SCRIPTS.counters_read.prepare_invoke();
        invocation
            .key(self.keys().counter_names())
            .key(self.keys().counter_expiry())
            .arg(min)
            .arg(max);
        let reply: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let items = array(reply).map_err(|r| RedisDriverError::unexpected("counters", &r))?;
        if items.len() % 2 != 0 {
            return Err(RedisDriverError::unexpected("counters", &Value::Array(items)).into());
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut items = items.into_iter();
        while let (Some(name), Some(value)) = (items.next(), items.next()) {
            let Some(name) = text(name) else { continue };
            // A value that is not an integer (written by hand) is left out; the next
            // `add_counters` on it starts it over.
            match int(&value) {
                Some(value) => out.push((name, value)),
                None => {
                    tracing::warn!(counter = %name, "a redis counter holds no integer: left out")
                }
            }
        }
        Ok(out)
    }

    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        if queues.is_empty() || timeout.is_zero() {
            tokio::time::sleep(timeout).await;
            return Ok(());
        }
        let channels: Vec<String> = queues.iter().map(|q| self.keys().channel(q)).collect();
        let notifies = self.inner.waker.notifies(&channels);
        // Listen before looking: a push after the look below wakes us, a push before it is
        // seen by the look.
        let mut woken: Vec<_> = notifies.iter().map(|n| Box::pin(n.notified())).collect();
        for notified in &mut woken {
            notified.as_mut().enable();
        }
        self.inner.waker.subscribe(&channels, timeout).await;
        let sleep = match self.due_in(queues).await? {
            None => timeout,
            Some(due) if due.is_zero() => timeout.min(DUE_NOW_PAUSE),
            Some(due) => timeout.min(due),
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = futures::future::select_all(woken) => {}
        }
        Ok(())
    }
}
