//! The worker registry: a sorted set of worker ids scored by when their entries expire (the
//! server's clock) and a hash of the entries, both under `{P}` (one hash slot, so each call is
//! one script on Redis Cluster too).

use std::time::Duration;

use async_trait::async_trait;
use queue_core::storage::Workers;
use queue_core::Result;

use super::call::{bytes, integer, records, text};
use super::{millis, RedisStorage};
use crate::error::RedisDriverError;
use crate::scripts::SCRIPTS;

#[async_trait]
impl Workers for RedisStorage {
    /// One script: the entry and its expiry written, up to 100 expired entries deleted.
    async fn beat(&self, id: &str, entry: &[u8], ttl: Duration) -> Result<()> {
        let mut invocation = SCRIPTS.workers_beat.prepare_invoke();
        invocation
            .key(self.keys().workers())
            .key(self.keys().worker_entries())
            .arg(id)
            .arg(entry)
            .arg(millis(ttl).max(1));
        self.invoke(&invocation).await.map(drop)
    }

    /// One script: the expired entries deleted, the others read; sorted here by id.
    async fn workers(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut invocation = SCRIPTS.workers_list.prepare_invoke();
        invocation
            .key(self.keys().workers())
            .key(self.keys().worker_entries());
        let reply = self.invoke(&invocation).await?;
        let mut out = Vec::new();
        for pair in records("workers", reply, 2)? {
            let mut pair = pair.into_iter();
            let (Some(id), Some(entry)) = (pair.next(), pair.next()) else {
                continue;
            };
            let bad = || RedisDriverError::unexpected("workers", &redis::Value::Nil);
            out.push((text(id).ok_or_else(bad)?, bytes(entry).ok_or_else(bad)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// One script.
    async fn leave(&self, id: &str) -> Result<bool> {
        let mut invocation = SCRIPTS.workers_leave.prepare_invoke();
        invocation
            .key(self.keys().workers())
            .key(self.keys().worker_entries())
            .arg(id);
        let reply = self.invoke(&invocation).await?;
        Ok(integer("leave", &reply)? == 1)
    }
}
