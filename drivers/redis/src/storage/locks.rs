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
    /// reads the page's owners and remaining times to live (`PTTL`, from the server's `TIME`)
    /// in one pipeline. On Redis Cluster, where a `SCAN` reaches one node: `NotSupported`.
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
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for key in &names.items {
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
        let mut items = Vec::with_capacity(names.items.len());
        for key in names.items {
            let (Some(owner), Some(ttl)) = (replies.next(), replies.next()) else {
                return Err(RedisDriverError::unexpected("locks", &Value::Nil).into());
            };
            // Expired (or released) between the scan and the read: not held.
            let (Some(owner), Some(ttl)) = (text(owner), int(&ttl)) else {
                continue;
            };
            if ttl <= 0 {
                continue;
            }
            items.push(HeldLock {
                key,
                owner,
                expires_at: from_unix_millis(now.saturating_add(ttl)),
            });
        }
        Ok(Page {
            items,
            next: names.next,
        })
    }

    /// One `DEL`: a lock key exists only while it is held.
    async fn release(&self, key: &str) -> Result<bool> {
        let deleted: i64 = redis::cmd("DEL")
            .arg(self.keys().lock(key))
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(deleted > 0)
    }
}
