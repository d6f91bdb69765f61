//! The operator's capabilities: inspection, group counters and waiting jobs, the restart
//! signal, and the wake-ups of idle workers.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::future::try_join_all;
use queue_core::storage::{
    check_effect_list, from_unix_millis, Control, Groups, Guard, Inspect, JobState, JobSummary,
    Page, PageRequest, Wake,
};
use queue_core::{Effect, Error, JobId, QueueSize, Result};
use redis::Value;

use super::call::{array, bytes, int, integer, items, records, text};
use super::failed::{next_cursor, parse_cursor};
use super::{RedisStorage, CHUNK, GROUPS_ON_CLUSTER, MAX_PAGE};
use crate::error::{backend, RedisDriverError};
use crate::keys::job_id;
use crate::scripts::SCRIPTS;
use crate::DRIVER;

/// When a job is due already but the reservation just before found nothing (a job released
/// in between, or one of another name for a worker that runs only one name), `wait` pauses
/// this long at most instead of returning at once, so such a worker cannot spin.
const DUE_NOW_PAUSE: Duration = Duration::from_millis(20);

impl RedisStorage {
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
        let reply = self.invoke(&invocation).await?;
        let ms = integer("wait", &reply)?;
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }
}

#[async_trait]
impl Inspect for RedisStorage {
    async fn size(&self, queue: &str) -> Result<QueueSize> {
        let mut invocation = SCRIPTS.size.prepare_invoke();
        invocation
            .key(self.keys().pending(queue))
            .key(self.keys().reserved(queue));
        let reply = self.invoke(&invocation).await?;
        let [waiting, delayed, reserved] = items("size", reply)?;
        let count = |v: &Value| integer("size", v).map(|n| u64::try_from(n).unwrap_or(0));
        Ok(QueueSize {
            waiting: count(&waiting)?,
            delayed: count(&delayed)?,
            reserved: count(&reserved)?,
        })
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
        self.drain("clear", &SCRIPTS.clear, |script| {
            let mut call = self.call();
            call.queue(queue);
            call.arg(CHUNK);
            call.invocation(script)
        })
        .await
    }

    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        let mut invocation = SCRIPTS.oldest.prepare_invoke();
        invocation
            .key(self.keys().pending(queue))
            .key(self.keys().reserved(queue));
        let reply = self.invoke(&invocation).await?;
        match array("oldest_available", reply)?.as_slice() {
            [] => Ok(None),
            [at] => Ok(Some(from_unix_millis(integer("oldest_available", at)?))),
            more => Err(RedisDriverError::unexpected(
                "oldest_available",
                &Value::Array(more.to_vec()),
            )
            .into()),
        }
    }

    async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        page: PageRequest,
    ) -> Result<Page<JobSummary>> {
        let after = page.after.as_deref().map(parse_cursor).transpose()?;
        let mut invocation = SCRIPTS.jobs.prepare_invoke();
        invocation
            .key(self.keys().pending(queue))
            .key(self.keys().reserved(queue))
            .arg(match state {
                JobState::Waiting => "w",
                JobState::Delayed => "d",
                JobState::Reserved => "r",
            });
        match &after {
            Some((score, member)) => invocation.arg(*score).arg(member),
            None => invocation.arg("").arg(""),
        };
        invocation.arg(page.limit.clamp(1, MAX_PAGE));
        let reply = self.invoke(&invocation).await?;
        let [next, found] = items("jobs", reply)?;
        let mut out = Vec::new();
        for record in records("jobs", found, 7)? {
            let bad = || RedisDriverError::unexpected("jobs", &Value::Array(record.clone()));
            let [member, due, name, attempts, key, until, payload] =
                <[Value; 7]>::try_from(record.clone()).map_err(|_| bad())?;
            let parsed = (|| {
                let until = text(until)?;
                Some(JobSummary {
                    id: JobId(job_id(queue, &text(member)?)),
                    queue: queue.to_owned(),
                    name: text(name)?,
                    attempts: u32::try_from(int(&attempts)?.max(0)).unwrap_or(u32::MAX),
                    state,
                    due_at: from_unix_millis(int(&due)?),
                    unique_key: if until.is_empty() {
                        None
                    } else {
                        Some(text(key)?)
                    },
                    payload: bytes(payload)?,
                })
            })();
            out.push(parsed.ok_or_else(bad)?);
        }
        Ok(Page {
            items: out,
            next: next_cursor("jobs", next)?,
        })
    }
}

/// One server only: a group's counters, like a waiting job, would live in another slot than
/// the jobs that count (or release it) on a cluster, whose capabilities leave them out.
#[async_trait]
impl Groups for RedisStorage {
    async fn counters(&self, group: &str) -> Result<Vec<(String, i64)>> {
        let reply: Value = redis::cmd("HGETALL")
            .arg(self.keys().group(group))
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let pairs: Vec<(Value, Value)> = match reply {
            Value::Map(pairs) => pairs,
            other => {
                let mut flat = array("counters", other)?.into_iter();
                let mut pairs = Vec::new();
                while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                    pairs.push((name, value));
                }
                pairs
            }
        };
        let mut out = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            let count = integer("counters", &value)?;
            let name =
                text(name).ok_or_else(|| RedisDriverError::unexpected("counters", &value))?;
            out.push((name, count));
        }
        out.sort();
        Ok(out)
    }

    async fn value(&self, group: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let reply: Value = redis::cmd("HGET")
            .arg(self.keys().values(group))
            .arg(name.as_bytes())
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match reply {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => Ok(Some(bytes)),
            other => Err(RedisDriverError::unexpected("value", &other).into()),
        }
    }

    /// One `DEL` of the group's counters and values; whether the counters were there.
    async fn remove(&self, group: &str) -> Result<bool> {
        let (counters, _): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(self.keys().group(group))
            .cmd("DEL")
            .arg(self.keys().values(group))
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(counters == 1)
    }

    /// `SCAN`s the whole keyspace for the group keys (no index is kept, so counting stays one
    /// `HINCRBY`): for operators, a second or so per million keys.
    async fn list(&self, prefix: &str, page: PageRequest) -> Result<Page<String>> {
        let start = self.keys().group("");
        let pattern = format!("{}{}*", glob_escape(&start), glob_escape(prefix));
        let names = self
            .scan(&pattern)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&start).map(str::to_owned));
        Ok(Page::of_names(names, prefix, &page))
    }

    /// One call of the settle script with no settlement and no fetch: the effects with their
    /// counters first, so that a counter that cannot be added to leaves everything as it was.
    async fn apply(&self, effects: Vec<Effect>) -> Result<()> {
        check_effect_list(DRIVER, &effects, "an apply")?;
        self.check_supported(&effects)?;
        if effects.is_empty() {
            return Ok(());
        }
        self.settle_batch(&[], &effects, None).await?;
        Ok(())
    }

    /// The same call with the guard checked and set first, in the script, before anything
    /// is written (a refused step writes nothing, not even the group's hash): counters are
    /// compared as the decimal text Redis holds, exact over all of `i64`. Even with no
    /// effects it is one call. On a cluster: refused as `apply` refuses its effects, and
    /// for the guard's counter as a count is.
    async fn apply_if(&self, guard: Guard, effects: Vec<Effect>) -> Result<bool> {
        check_effect_list(DRIVER, &effects, "an apply")?;
        self.check_supported(&effects)?;
        if self.split() {
            return Err(Error::NotSupported {
                driver: DRIVER,
                operation: GROUPS_ON_CLUSTER,
            });
        }
        self.apply_guarded(&guard, &effects).await
    }

    async fn waiting(&self, key: &str) -> Result<Option<i64>> {
        let reply: Value = redis::cmd("HGET")
            .arg(self.keys().waiting(key))
            .arg("d")
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match reply {
            Value::Nil => Ok(None),
            other => Ok(Some(integer("waiting", &other)?)),
        }
    }
}

#[async_trait]
impl Control for RedisStorage {
    async fn restart_generation(&self) -> Result<u64> {
        let reply: Value = redis::cmd("GET")
            .arg(self.keys().restart())
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match reply {
            Value::Nil => Ok(0),
            other => int(&other)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| RedisDriverError::unexpected("restart_generation", &other).into()),
        }
    }

    async fn request_restart(&self) -> Result<()> {
        redis::cmd("INCR")
            .arg(self.keys().restart())
            .exec_async(&mut self.conn())
            .await
            .map_err(backend)
    }
}

#[async_trait]
impl Wake for RedisStorage {
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

/// `text` matched literally by a `SCAN ... MATCH` pattern.
impl RedisStorage {
    /// Every key matching `pattern`, by `SCAN` over the whole keyspace (1,000 a call): on
    /// one server, for operators' listings.
    pub(super) async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let mut cursor = 0u64;
        loop {
            let reply: Value = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
            let mut parts = array("scan", reply)?.into_iter();
            let (Some(next), Some(keys)) = (parts.next(), parts.next()) else {
                return Err(RedisDriverError::unexpected("scan", &Value::Nil).into());
            };
            cursor = text(next.clone())
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| RedisDriverError::unexpected("scan", &next))?;
            found.extend(array("scan", keys)?.into_iter().filter_map(text));
            if cursor == 0 {
                return Ok(found);
            }
        }
    }
}

pub(super) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
