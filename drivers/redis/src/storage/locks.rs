//! Locks for operators: the lock keys `{P}:lock:{<key>}` found by `SCAN` (no index is kept,
//! so taking a lock stays one script), their owners and expiries read in one pipeline; a
//! release is a `DEL` (Redis expires locks by itself, so a key that exists is held).

use async_trait::async_trait;
use queue_core::storage::{from_unix_millis, HeldLock, Locks, Page, PageRequest};
use queue_core::{Error, Result};
use redis::Value;

use super::call::{int, text};
use super::inspect::glob_escape;
use super::RedisStorage;
use crate::error::{backend, RedisDriverError};
use crate::DRIVER;

#[async_trait]
impl Locks for RedisStorage {
    /// `SCAN`s the whole keyspace for the lock keys (a second or so per million keys), then
    /// reads the page's owners and expiries (`PEXPIRETIME`; before Redis 7.0 the server's
    /// `TIME` plus each `PTTL`) in one pipeline. On Redis Cluster, where a `SCAN` reaches one node: `NotSupported`.
    async fn locks(&self, page: PageRequest) -> Result<Page<HeldLock>> {
        if self.split() {
            return Err(Error::NotSupported {
                driver: DRIVER,
                operation: "listing locks on Redis Cluster (a SCAN reaches one node; \
                            releasing a lock by its key works)",
            });
        }
        let start = self.keys().lock("");
        // `{P}:lock:{` then the key and `}`.
        let open = start.trim_end_matches('}');
        let pattern = format!("{}*", glob_escape(open));
        let keys = self.scan(&pattern).await?.into_iter().filter_map(|k| {
            k.strip_prefix(open)
                .and_then(|rest| rest.strip_suffix('}'))
                .map(str::to_owned)
        });
        let names = Page::of_names(keys.collect::<Vec<_>>(), "", &page);
        if names.items.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        let items = match self.held_exactly(&names.items).await {
            Ok(items) => items,
            // Redis before 7.0 has no `PEXPIRETIME`: the server's clock plus each `PTTL`,
            // exact to a millisecond or so.
            Err(e)
                if matches!(e.kind(), redis::ErrorKind::Server(_))
                    && e.to_string()
                        .to_ascii_lowercase()
                        .contains("unknown command") =>
            {
                self.held_from_ttl(&names.items).await?
            }
            Err(e) => return Err(backend(e)),
        };
        Ok(Page {
            items,
            next: names.next,
        })
    }

    /// The unlock script for any owner: a lock key exists only while it is held; the job
    /// parked on it longest ago is woken (on one server).
    async fn release(&self, key: &str) -> Result<bool> {
        self.unlock_as(key, None).await
    }
}

impl RedisStorage {
    /// The owners and absolute expiries (`PEXPIRETIME`, Redis 7.0+) of the lock keys in one
    /// pipeline: the expiry read is the one stored, so two listings agree to the millisecond.
    async fn held_exactly(&self, keys: &[String]) -> redis::RedisResult<Vec<HeldLock>> {
        let mut pipe = redis::pipe();
        for key in keys {
            let full = self.keys().lock(key);
            pipe.cmd("GET").arg(&full).cmd("PEXPIRETIME").arg(&full);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.conn()).await?;
        let mut replies = replies.into_iter();
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            let (Some(owner), Some(expiry)) = (replies.next(), replies.next()) else {
                break;
            };
            // Expired (or released) between the scan and the read (`-2`), or never expiring
            // (`-1`, which no lock taken here is): not listed.
            let (Some(owner), Some(expiry)) = (text(owner), int(&expiry)) else {
                continue;
            };
            if expiry <= 0 {
                continue;
            }
            items.push(HeldLock {
                key: key.clone(),
                owner,
                expires_at: from_unix_millis(expiry),
            });
        }
        Ok(items)
    }

    /// The same from the server's `TIME` and each key's `PTTL`, for servers before 7.0.
    async fn held_from_ttl(&self, keys: &[String]) -> Result<Vec<HeldLock>> {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for key in keys {
            let full = self.keys().lock(key);
            pipe.cmd("GET").arg(&full).cmd("PTTL").arg(&full);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.conn()).await.map_err(backend)?;
        let mut replies = replies.into_iter();
        let now = match replies.next() {
            Some(Value::Array(time)) => {
                let secs = time
                    .first()
                    .and_then(|v| text(v.clone())?.parse::<i64>().ok());
                let micros = time
                    .get(1)
                    .and_then(|v| text(v.clone())?.parse::<i64>().ok());
                match (secs, micros) {
                    (Some(s), Some(us)) => s.saturating_mul(1000).saturating_add(us / 1000),
                    _ => {
                        return Err(RedisDriverError::unexpected("time", &Value::Array(time)).into())
                    }
                }
            }
            other => {
                return Err(
                    RedisDriverError::unexpected("time", &other.unwrap_or(Value::Nil)).into(),
                )
            }
        };
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            let (Some(owner), Some(ttl)) = (replies.next(), replies.next()) else {
                return Err(RedisDriverError::unexpected("locks", &Value::Nil).into());
            };
            let (Some(owner), Some(ttl)) = (text(owner), int(&ttl)) else {
                continue;
            };
            if ttl <= 0 {
                continue;
            }
            items.push(HeldLock {
                key: key.clone(),
                owner,
                expires_at: from_unix_millis(now.saturating_add(ttl)),
            });
        }
        Ok(items)
    }
}
