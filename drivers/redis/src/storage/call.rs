//! Building a script call and reading its reply.
//!
//! [`Call`] gathers the keys a call declares (the scripts refer to them by index) and its
//! arguments behind the head `scripts/lib.lua` reads: the claim prefix, the registry, and
//! the queue table (each queue's name and its `pending`, `reserved` and `seq` keys). The
//! helpers below turn a reply into values, or into
//! [`RedisDriverError::UnexpectedReply`] naming the operation.

use std::collections::HashMap;

use queue_core::{Availability, NewJob};
use redis::{Script, ScriptInvocation, ToRedisArgs, Value};

use super::{millis, MAX_MILLIS};
use crate::error::RedisDriverError;
use crate::keys::Keys;
use queue_core::storage::unix_millis;

/// One call of a script that starts with the head of `lib.lua`.
pub(crate) struct Call<'k> {
    keys: &'k Keys,
    /// Whether claims are on (one server): the head then carries the claim prefix.
    claims: bool,
    declared: Vec<String>,
    registry: usize,
    /// Per queue, in order of first use: its name and the index of its `pending` key.
    queues: Vec<(String, usize)>,
    queue_numbers: HashMap<String, usize>,
    body: Vec<Vec<u8>>,
}

impl<'k> Call<'k> {
    pub(crate) fn new(keys: &'k Keys, claims: bool) -> Self {
        Call {
            keys,
            claims,
            declared: Vec::new(),
            registry: 0,
            queues: Vec::new(),
            queue_numbers: HashMap::new(),
            body: Vec::new(),
        }
    }

    /// Declares `key`; returns its index in KEYS (from 1).
    pub(crate) fn key(&mut self, key: String) -> usize {
        self.declared.push(key);
        self.declared.len()
    }

    /// Declares the queue registry, which the scripts add the queues of new jobs to.
    pub(crate) fn registry(&mut self) -> &mut Self {
        self.registry = self.key(self.keys.registry());
        self
    }

    /// The number of `queue` in the queue table (from 1), declaring its keys on first use.
    pub(crate) fn queue(&mut self, queue: &str) -> usize {
        if let Some(&n) = self.queue_numbers.get(queue) {
            return n;
        }
        // The three keys follow each other: the scripts find them from the first.
        let pending = self.key(self.keys.pending(queue));
        self.key(self.keys.reserved(queue));
        self.key(self.keys.seq(queue));
        self.queues.push((queue.to_owned(), pending));
        self.queue_numbers
            .insert(queue.to_owned(), self.queues.len());
        self.queues.len()
    }

    /// Appends an argument after the head.
    pub(crate) fn arg(&mut self, value: impl ToRedisArgs) -> &mut Self {
        value.write_redis_args(&mut self.body);
        self
    }

    /// Appends a job as `read_job` in `lib.lua` reads it, declaring its queue and its claim.
    pub(crate) fn job(&mut self, job: &NewJob) -> &mut Self {
        let queue = self.queue(&job.queue);
        let (kind, ms) = match job.available {
            Availability::Now => ("r", 0),
            Availability::After(delay) => ("r", millis(delay)),
            Availability::At(at) => ("a", unix_millis(at).clamp(-MAX_MILLIS, MAX_MILLIS)),
        };
        self.arg(queue)
            .arg(kind)
            .arg(ms)
            .arg(job.name.as_bytes())
            .arg(job.payload.as_slice());
        match &job.unique {
            Some(unique) => {
                let claim = self.key(self.keys.claim(&unique.key));
                self.arg(claim)
                    .arg(unique.key.as_bytes())
                    .arg(unique.until.as_str())
            }
            None => self.arg(0),
        }
    }

    /// The invocation of `script`: the keys, the head, then the arguments.
    pub(crate) fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        for key in &self.declared {
            invocation.key(key);
        }
        let claim_prefix = if self.claims {
            self.keys.claim_prefix()
        } else {
            String::new()
        };
        invocation
            .arg(claim_prefix)
            .arg(self.registry)
            .arg(self.queues.len());
        for (name, pending) in &self.queues {
            invocation.arg(name.as_bytes()).arg(*pending);
        }
        for value in &self.body {
            invocation.arg(value.as_slice());
        }
        invocation
    }
}

/// An integer (or a decimal string).
pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// Bytes; `Nil` (a missing hash field) as empty.
pub(crate) fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Nil => Some(Vec::new()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

/// Text, invalid UTF-8 replaced.
pub(crate) fn text(value: Value) -> Option<String> {
    bytes(value).map(|b| match String::from_utf8(b) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// The items of an array reply (`Nil`: none), or the unexpected reply.
pub(crate) fn array(operation: &'static str, value: Value) -> Result<Vec<Value>, RedisDriverError> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(RedisDriverError::unexpected(operation, &other)),
    }
}

/// An array reply of exactly `N` items.
pub(crate) fn items<const N: usize>(
    operation: &'static str,
    value: Value,
) -> Result<[Value; N], RedisDriverError> {
    let items = array(operation, value)?;
    <[Value; N]>::try_from(items)
        .map_err(|items| RedisDriverError::unexpected(operation, &Value::Array(items)))
}

/// An array reply cut into records of `width` values.
pub(crate) fn records(
    operation: &'static str,
    value: Value,
    width: usize,
) -> Result<Vec<Vec<Value>>, RedisDriverError> {
    let items = array(operation, value)?;
    if items.len() % width != 0 {
        return Err(RedisDriverError::unexpected(
            operation,
            &Value::Array(items),
        ));
    }
    let mut out = Vec::with_capacity(items.len() / width);
    let mut items = items.into_iter();
    while items.len() > 0 {
        out.push(items.by_ref().take(width).collect());
    }
    Ok(out)
}

/// An integer reply, or the unexpected reply.
pub(crate) fn integer(operation: &'static str, value: &Value) -> Result<i64, RedisDriverError> {
    int(value).ok_or_else(|| RedisDriverError::unexpected(operation, value))
}
