//! Waiting for jobs: memcached cannot tell a waiting worker about a push, so the wait looks,
//! cheaply and more rarely the longer it waits.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use queue_core::storage::Wake;
use queue_core::Result;

use super::MemcachedStorage;
use crate::client::Cmd;

/// The first look comes this long after a wait begins; each next one twice as long after the
/// last, up to [`MemcachedOptions::idle_poll`](crate::MemcachedOptions::idle_poll).
const FIRST_LOOK: Duration = Duration::from_millis(2);

impl MemcachedStorage {
    /// Whether a reserve on `queues` has something to do now: a slot pushed and not yet
    /// claimed (or a head to repair), or timers due for a sweep. One pipelined request.
    async fn worth_reserving(&self, queues: &[String]) -> Result<bool> {
        if queues.iter().any(|q| self.sweep_due(q)) {
            return Ok(true);
        }
        let keys = self.keys();
        let cmds = queues
            .iter()
            .flat_map(|q| {
                let qk = keys.queue(q);
                [Cmd::get(qk.head()), Cmd::get(qk.tail())]
            })
            .collect();
        let replies = self.run(cmds).await?;
        Ok(replies.chunks(2).any(
            |ends| match (ends[0].number(), ends[1].number().unwrap_or(0)) {
                (None, tail) => tail > 0,
                (Some(head), tail) => head != tail,
            },
        ))
    }
}

/// A poll that tightens while jobs flow: 2 ms after the wait begins (just after a reserve
/// found nothing), doubling up to `idle_poll`. A push by any process is seen within
/// `idle_poll`; delayed jobs are found by the sweep, which a wait lets run every 250 ms.
#[async_trait]
impl Wake for MemcachedStorage {
    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let ceiling = self.inner.options.idle_poll.max(FIRST_LOOK);
        let mut every = FIRST_LOOK;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            tokio::time::sleep(every.min(left)).await;
            if self.worth_reserving(queues).await? {
                return Ok(());
            }
            every = (every * 2).min(ceiling);
        }
    }
}
