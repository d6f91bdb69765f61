//! Building a script call and reading its reply.
//!
//! [`Call`] gathers the keys a call declares and its arguments behind the head
//! `scripts/lib/head.lua` reads: each queue's `pending`, `reserved` and `seq` keys come
//! first, in the order of the queue table, then the other keys (named in the arguments by
//! their position among them), then the registry if declared; the arguments start with the
//! claim prefix, the registry flag and the queue names. The helpers below turn a reply into
//! values, or into [`RedisDriverError::UnexpectedReply`] naming the operation.

use std::collections::HashMap;

use queue_core::storage::unix_millis;
use queue_core::{Availability, NewJob};
use redis::{Script, ScriptInvocation, ToRedisArgs, Value};

use super::{millis, MAX_MILLIS};
use crate::error::RedisDriverError;
use crate::keys::Keys;

/// One call of a script that starts with the head of `lib/head.lua`.
pub(crate) struct Call<'k> {
    keys: &'k Keys,
    /// Whether claims are on (one server): the head then carries the claim prefix.
    claims: bool,
    registry: bool,
    queue_keys: Vec<String>,
    queue_names: Vec<String>,
    queue_numbers: HashMap<String, usize>,
    other_keys: Vec<String>,
    body: Vec<Vec<u8>>,
}

impl<'k> Call<'k> {
    pub(crate) fn new(keys: &'k Keys, claims: bool) -> Self {
        Call {
            keys,
            claims,
            registry: false,
            queue_keys: Vec::new(),
            queue_names: Vec::new(),
            queue_numbers: HashMap::new(),
            other_keys: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Declares `key`; returns its reference for the scripts' `key()` (from 1).
    pub(crate) fn key(&mut self, key: String) -> usize {
        self.other_keys.push(key);
        self.other_keys.len()
    }

    /// Declares the queue registry, which the scripts add the queues of new jobs to.
    pub(crate) fn registry(&mut self) -> &mut Self {
        self.registry = true;
        self
    }

    /// The number of `queue` in the queue table (from 1), declaring its keys on first use.
    pub(crate) fn queue(&mut self, queue: &str) -> usize {
        if let Some(&n) = self.queue_numbers.get(queue) {
            return n;
        }
        self.queue_keys.push(self.keys.pending(queue));
        self.queue_keys.push(self.keys.reserved(queue));
        self.queue_keys.push(self.keys.seq(queue));
        self.queue_names.push(queue.to_owned());
        let n = self.queue_names.len();
        self.queue_numbers.insert(queue.to_owned(), n);
        n
    }

    /// Appends an argument after the head.
    pub(crate) fn arg(&mut self, value: impl ToRedisArgs) -> &mut Self {
        value.write_redis_args(&mut self.body);
        self
    }

    /// Appends a job as `read_job` in `lib/push.lua` reads it, declaring its queue and its
    /// claim. A claim's `replace` is not passed: only the push script replaces.
    pub(crate) fn job(&mut self, job: &NewJob) -> &mut Self {
        let queue = self.queue(&job.queue);
        self.arg(queue)
            .arg(available(job.available))
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
        for key in self.queue_keys.iter().chain(&self.other_keys) {
            invocation.key(key);
        }
        if self.registry {
            invocation.key(self.keys.registry());
        }
        let claim_prefix = if self.claims {
            self.keys.claim_prefix()
        } else {
            String::new()
        };
        invocation
            .arg(claim_prefix)
            .arg(if self.registry { "1" } else { "0" })
            .arg(self.queue_names.len());
        for name in &self.queue_names {
            invocation.arg(name.as_bytes());
        }
        for value in &self.body {
            invocation.arg(value.as_slice());
        }
        invocation
    }
}

/// When a job is available, as the push scripts read it: '' now, `+<ms>` after a delay,
/// `<ms>` at a Unix time.
pub(crate) fn available(available: Availability) -> String {
    match available {
        Availability::Now => String::new(),
        Availability::After(delay) => format!("+{}", millis(delay)),
        Availability::At(at) => unix_millis(at).clamp(-MAX_MILLIS, MAX_MILLIS).to_string(),
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
