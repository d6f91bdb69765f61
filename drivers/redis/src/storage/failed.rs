//! The failed store: a sorted set of failed jobs by failed time and a hash per failed job,
//! under the failed prefix (`{F}:failed:*`).

use std::time::SystemTime;

use async_trait::async_trait;
use queue_core::storage::{from_unix_millis, unix_millis, FailedStore, Page, PageRequest};
use queue_core::{Error, FailedJob, JobId, NewJob, Pushed, Result, Unique, Until};
use redis::{Script, ScriptInvocation, Value};

use super::call::{array, bytes, int, integer, items, records, text};
use super::{RedisStorage, CHUNK, MAX_MILLIS, MAX_PAGE};
use crate::error::{backend, RedisDriverError};
use crate::keys::{id_of, member};
use crate::scripts::SCRIPTS;
use crate::DRIVER;

/// The fields of a failed job's hash, in the order [`failed_job`] reads them.
const FIELDS: [&str; 9] = ["j", "q", "n", "p", "e", "a", "f", "u", "w"];

/// A failed job from its member and the fields of [`FIELDS`] (`u`, `w` empty without a
/// claim).
fn failed_job(member: &str, fields: Vec<Value>) -> Option<FailedJob> {
    let [j, q, n, p, e, a, f, u, w] = <[Value; 9]>::try_from(fields).ok()?;
    let until = text(w)?;
    Some(FailedJob {
        id: id_of(member),
        job_id: text(j)?,
        queue: text(q)?,
        name: text(n)?,
        payload: bytes(p)?,
        error: text(e)?,
        attempts: u32::try_from(int(&a)?.max(0)).unwrap_or(u32::MAX),
        failed_at: from_unix_millis(int(&f)?),
        unique: match Until::parse(&until) {
            Some(until) => Some(Unique::new(text(u)?).until(until)),
            None => None,
        },
    })
}

/// A cursor `<ms>:<id>` of this driver's listings as (score, member).
pub(super) fn parse_cursor(cursor: &str) -> Result<(i64, String)> {
    cursor
        .split_once(':')
        .and_then(|(at, id)| Some((at.parse().ok()?, member(id)?)))
        .ok_or_else(|| Error::Contract {
            driver: DRIVER,
            problem: format!("`{cursor}` is not a cursor of this store"),
        })
}

/// The next page's cursor from a script's `{score, member}` (empty: the last page).
pub(super) fn next_cursor(operation: &'static str, value: Value) -> Result<Option<String>> {
    let items = array(operation, value)?;
    match <[Value; 2]>::try_from(items) {
        Ok([score, member]) => {
            let score = integer(operation, &score)?;
            let member =
                text(member).ok_or_else(|| RedisDriverError::unexpected(operation, &Value::Nil))?;
            Ok(Some(format!("{score}:{}", id_of(&member))))
        }
        Err(items) if items.is_empty() => Ok(None),
        Err(items) => Err(RedisDriverError::unexpected(operation, &Value::Array(items)).into()),
    }
}

impl RedisStorage {
    /// Deletes one failed job by member, releasing a claim it holds; whether it was there.
    pub(super) async fn forget_failed(&self, member: &str) -> Result<bool> {
        let mut call = self.call();
        call.key(self.keys().failed_index());
        call.key(self.keys().failed_job(member));
        call.arg(member);
        let reply = self
            .invoke(&call.invocation(&SCRIPTS.failed_forget))
            .await?;
        Ok(integer("failed_forget", &reply)? == 1)
    }

    /// Runs a chunked delete script until it deletes less than a chunk; returns the total.
    pub(super) async fn drain(
        &self,
        operation: &'static str,
        script: &Script,
        make: impl Fn(&Script) -> ScriptInvocation<'_>,
    ) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let reply = self.invoke(&make(script)).await?;
            let n = u64::try_from(integer(operation, &reply)?).unwrap_or(0);
            total += n;
            if n < CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// Deletes the failed jobs up to a `ZRANGEBYSCORE` bound, a chunk per call.
    async fn prune_to(&self, operation: &'static str, bound: String) -> Result<u64> {
        self.drain(operation, &SCRIPTS.failed_prune, |script| {
            let mut call = self.call();
            call.key(self.keys().failed_index());
            call.arg(&bound).arg(CHUNK);
            call.invocation(script)
        })
        .await
    }

    /// `retry` on one server: the queue's keys and the claim are named after what the failed
    /// job records, so read it first; the script checks the queue and the key again and
    /// answers -1 if they changed meanwhile (the job was retried and failed again).
    async fn retry_single(&self, member: &str) -> Result<Option<Pushed>> {
        let hash = self.keys().failed_job(member);
        for _ in 0..3 {
            let fields: Vec<Value> = redis::cmd("HMGET")
                .arg(&hash)
                .arg(&["q", "n", "p", "u", "w"])
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
            let [queue, name, payload, key, until] = <[Value; 5]>::try_from(fields)
                .map_err(|f| RedisDriverError::unexpected("failed_retry", &Value::Array(f)))?;
            if queue == Value::Nil {
                return Ok(None);
            }
            let (Some(queue), Some(name), Some(payload), Some(key), Some(until)) = (
                text(queue),
                text(name),
                bytes(payload),
                text(key),
                text(until),
            ) else {
                return Err(RedisDriverError::unexpected("failed_retry", &Value::Nil).into());
            };
            let mut job = NewJob::new(queue, name, payload);
            job.unique = Until::parse(&until).map(|until| Unique::new(key).until(until));
            let mut call = self.call();
            call.queue(&job.queue);
            call.registry();
            let index = call.key(self.keys().failed_index());
            call.key(hash.clone());
            call.arg(index).arg(member).job(&job);
            let reply = self.invoke(&call.invocation(&SCRIPTS.failed_retry)).await?;
            match reply {
                Value::Int(n) if n >= 0 => {
                    return Ok(Some(Pushed::Created(JobId(format!("{}/{n}", job.queue)))))
                }
                Value::Int(_) => continue,
                holder @ (Value::BulkString(_) | Value::SimpleString(_)) => {
                    return Ok(text(holder).map(|h| Pushed::Duplicate(JobId(h))))
                }
                other => return Err(RedisDriverError::unexpected("failed_retry", &other).into()),
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl FailedStore for RedisStorage {
    async fn list(&self, page: PageRequest) -> Result<Page<FailedJob>> {
        let after = page.after.as_deref().map(parse_cursor).transpose()?;
        let mut invocation = SCRIPTS.failed_page.prepare_invoke();
        invocation.key(self.keys().failed_index());
        match &after {
            Some((score, member)) => invocation.arg(*score).arg(member),
            None => invocation.arg("").arg(""),
        };
        invocation.arg(page.limit.clamp(1, MAX_PAGE));
        let reply = self.invoke(&invocation).await?;
        let [next, found] = items("failed_list", reply)?;
        let mut out = Vec::new();
        for mut record in records("failed_list", found, 10)? {
            let fields = record.split_off(1);
            let member = record.pop().and_then(text);
            let job = member.and_then(|m| failed_job(&m, fields));
            out.push(job.ok_or_else(|| RedisDriverError::unexpected("failed_list", &Value::Nil))?);
        }
        Ok(Page {
            items: out,
            next: next_cursor("failed_list", next)?,
        })
    }

    async fn get(&self, id: &str) -> Result<Option<FailedJob>> {
        let Some(member) = member(id) else {
            return Ok(None);
        };
        let fields: Vec<Value> = redis::cmd("HMGET")
            .arg(self.keys().failed_job(&member))
            .arg(&FIELDS)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if matches!(fields.get(6), None | Some(Value::Nil)) {
            return Ok(None);
        }
        let reply = Value::Array(fields.clone());
        failed_job(&member, fields)
            .map(Some)
            .ok_or_else(|| RedisDriverError::unexpected("failed_get", &reply).into())
    }

    async fn count(&self) -> Result<u64> {
        redis::cmd("ZCARD")
            .arg(self.keys().failed_index())
            .query_async(&mut self.conn())
            .await
            .map_err(backend)
    }

    async fn retry(&self, id: &str) -> Result<Option<Pushed>> {
        let Some(member) = member(id) else {
            return Ok(None);
        };
        if self.split() {
            return self.failed_retry_split(&member).await;
        }
        self.retry_single(&member).await
    }

    async fn forget(&self, id: &str) -> Result<bool> {
        match member(id) {
            Some(member) => self.forget_failed(&member).await,
            None => Ok(false),
        }
    }

    async fn flush(&self) -> Result<u64> {
        self.prune_to("failed_flush", "+inf".to_owned()).await
    }

    async fn prune(&self, before: SystemTime) -> Result<u64> {
        let bound = format!("({}", unix_millis(before).clamp(-MAX_MILLIS, MAX_MILLIS));
        self.prune_to("failed_prune", bound).await
    }
}
