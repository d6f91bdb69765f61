//! [`RedisStorage`]: the [`Storage`] trait on Redis, one Lua script per operation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use queue_core::storage::{duration_millis, from_unix_millis, new_token, unix_millis};
use queue_core::{
    Availability, Capabilities, Error, FailedJob, JobId, Lease, NewJob, QueueSize, ReserveRequest,
    Reserved, Result, Storage,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, Value};

use crate::error::{backend, RedisDriverError};
use crate::keys::{id_of, job_id, job_member, member, Keys};
use crate::notify::Waker;
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

/// A queue on Redis: jobs, reservations, the failed store and locks under one key prefix.
///
/// Cheap to clone (the connection is shared). See the [crate docs](crate) for the key
/// layout, the guarantees and how to connect.
#[derive(Debug, Clone)]
pub struct RedisStorage {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
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
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl RedisStorage {
    /// Connects to the server the options name.
    ///
    /// Fails if the server is unreachable ([`Error::Backend`]) or if its
    /// `maxmemory-policy` lets it evict keys ([`Error::Config`], unless
    /// [`RedisOptions::allow_eviction`]). Where `CONFIG` is disabled (managed Redis), a
    /// warning is logged and the connection is kept.
    pub async fn connect(options: RedisOptions) -> Result<Self> {
        options.validate().map_err(Error::Config)?;
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| Error::Config(format!("invalid redis url: {e}")))?;
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
            Err(_) => {
                return Err(Error::backend(
                    crate::DRIVER,
                    format!("no answer within {:?}", options.connect_timeout),
                ))
            }
        }
        let mut config = ConnectionManagerConfig::new()
            .set_connection_timeout(options.connect_timeout)
            .set_number_of_retries(3)
            .set_factor(100)
            .set_max_delay(2_000);
        if let Some(timeout) = options.response_timeout {
            config = config.set_response_timeout(timeout);
        }
        let mut conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(backend)?;
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
                waker: Waker::new(client),
            }),
        })
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    /// The id Redis gives the store's shared connection (`CLIENT ID`), to find it in
    /// `CLIENT LIST`. Blocking waits use a connection of their own.
    pub async fn client_id(&self) -> Result<i64> {
        redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut self.conn())
            .await
            .map_err(backend)
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
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

    /// Milliseconds until the earliest job of `queues` is due (0: now), `None` if empty.
    async fn due_in(&self, queues: &[String]) -> Result<Option<Duration>> {
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

/// Refuses a server that may evict keys, unless allowed.
async fn check_eviction(conn: &mut ConnectionManager, allow: bool) -> Result<()> {
    match server_config(conn, "maxmemory-policy").await {
        Ok(Some(policy)) if policy != "noeviction" => {
            if allow {
                tracing::warn!(
                    policy,
                    "the redis maxmemory-policy lets the server evict keys: jobs can vanish under memory pressure (allowed by RedisOptions::allow_eviction)"
                );
                Ok(())
            } else {
                Err(Error::Config(format!(
                    "the redis server's maxmemory-policy is `{policy}`: when it runs out of memory it silently deletes keys, and with them jobs; \
                     run `CONFIG SET maxmemory-policy noeviction` (and set it in redis.conf), \
                     or connect with RedisOptions::allow_eviction(true) to accept losing jobs"
                )))
            }
        }
        Ok(_) => Ok(()),
        Err(e) if is_connection_error(&e) => Err(backend(e)),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "could not read the redis maxmemory-policy (is CONFIG disabled?): make sure it is `noeviction`, or jobs can vanish when the server runs out of memory"
            );
            Ok(())
        }
    }
}

/// Whether a push that returned survives a restart: only with an append-only file synced
/// on every write. Unknown (CONFIG disabled) counts as no.
async fn is_durable(conn: &mut ConnectionManager) -> Result<bool> {
    let appendonly = server_config(conn, "appendonly").await;
    let fsync = server_config(conn, "appendfsync").await;
    match (appendonly, fsync) {
        (Ok(a), Ok(f)) => Ok(a.as_deref() == Some("yes") && f.as_deref() == Some("always")),
        (Err(e), _) | (_, Err(e)) if is_connection_error(&e) => Err(backend(e)),
        _ => Ok(false),
    }
}

async fn server_config(
    conn: &mut ConnectionManager,
    name: &str,
) -> Result<Option<String>, RedisError> {
    let map: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(conn)
        .await?;
    Ok(map.get(name).cloned())
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
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(SCRIPTS.push.get_hash()).arg(queues.len() * 2);
        for queue in &queues {
            eval.arg(self.keys().pending(queue))
                .arg(self.keys().seq(queue));
        }
        for job in &jobs {
            let (kind, ms) = match job.available {
                Availability::Now => ("r", 0),
                Availability::After(delay) => ("r", millis(delay)),
                Availability::At(at) => ("a", unix_millis(at).clamp(-MAX_MILLIS, MAX_MILLIS)),
            };
            eval.arg(index[job.queue.as_str()])
                .arg(kind)
                .arg(ms)
                .arg(job.name.as_bytes())
                .arg(job.payload.as_slice());
        }
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
        let mut invocation = SCRIPTS.reserve.prepare_invoke();
        for queue in &request.queues {
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
                let queue = request
                    .queues
                    .get(usize::try_from(int(&q)?).ok()?.checked_sub(1)?)?;
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
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("ZCARD").arg(self.keys().pending(name));
            pipe.cmd("ZCARD").arg(self.keys().reserved(name));
        }
        let counts: Vec<u64> = pipe.query_async(&mut conn).await.map_err(backend)?;
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
        let mut invocation = SCRIPTS.failed_forget.prepare_invoke();
        invocation
            .key(self.keys().failed_index())
            .key(self.keys().failed_job(&member))
            .arg(&member);
        let removed: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(removed == 1)
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
