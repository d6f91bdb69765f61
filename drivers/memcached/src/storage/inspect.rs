//! The operator's view ([`Inspect`]), the restart signal ([`Control`]) and polling for work
//! ([`Wake`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use queue_core::storage::{
    from_unix_millis, Control, Inspect, JobState, JobSummary, Page, PageRequest, Wake,
};
use queue_core::{Error, QueueSize, Result};

use super::{bucket, incremented, now_ms, sizes, text, MemcachedStorage};
use crate::client::Cmd;
use crate::keys::{escape, unescape};
use crate::DRIVER;

#[async_trait]
impl Inspect for MemcachedStorage {
    async fn size(&self, queue: &str) -> Result<QueueSize> {
        let qk = self.keys().queue(queue);
        let replies = self.run(vec![Cmd::get(qk.gen())]).await?;
        let gen = replies[0].number().unwrap_or(0);
        if self.sweep_due(queue) {
            // Due delayed jobs count as waiting, as soon as they are due.
            self.sweep(queue, gen, now_ms(), None).await?;
        }
        let replies = self
            .run(vec![
                Cmd::get(qk.waiting(gen)),
                Cmd::get(qk.delayed(gen)),
                Cmd::get(qk.reserved()),
            ])
            .await?;
        Ok(QueueSize {
            waiting: sizes::count(&replies[0]),
            delayed: sizes::count(&replies[1]),
            reserved: sizes::count(&replies[2]),
        })
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let keys = self.keys();
        let replies = self.run(vec![Cmd::gets(keys.queues())]).await?;
        let Some(list) = text(&replies[0]) else {
            return Ok(Vec::new());
        };
        let lines: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
        let names: BTreeSet<String> = lines.iter().filter_map(|l| unescape(l)).collect();
        if let (true, Some(cas)) = (names.len() < lines.len(), replies[0].cas) {
            // Every process appends the queues it pushes to; keep the list short.
            let compact: String = names.iter().map(|q| format!("{}\n", escape(q))).collect();
            self.run(vec![Cmd::cas(keys.queues(), compact.into_bytes(), cas, 0)])
                .await?;
        }
        let names: Vec<String> = names.into_iter().collect();
        let gens = names.iter().map(|q| Cmd::get(keys.queue(q).gen()));
        let gens = self.run(gens.collect()).await?;
        let mut cmds = Vec::new();
        for (q, gen) in names.iter().zip(&gens) {
            let (qk, gen) = (keys.queue(q), gen.number().unwrap_or(0));
            cmds.extend([
                Cmd::get(qk.waiting(gen)),
                Cmd::get(qk.delayed(gen)),
                Cmd::get(qk.reserved()),
            ]);
        }
        let counts = self.run(cmds).await?;
        Ok(names
            .into_iter()
            .zip(counts.chunks(3))
            .filter(|(_, c)| c.iter().any(|r| sizes::count(r) > 0))
            .map(|(q, _)| q)
            .collect())
    }

    async fn clear(&self, queue: &str) -> Result<u64> {
        let qk = self.keys().queue(queue);
        let replies = self.run(vec![Cmd::incr(qk.gen(), 1)]).await?;
        let old = incremented(&replies[0], "bump the generation")?.saturating_sub(1);
        // Waiting and delayed jobs of the old generation are now deleted; reservers and
        // sweepers drop their items when they meet them, and their claims are free (a claim
        // whose holder was cleared is taken over by the next push of its key).
        let replies = self
            .run(vec![
                Cmd::get(qk.waiting(old)),
                Cmd::get(qk.delayed(old)),
                Cmd::delete(qk.waiting(old)),
                Cmd::delete(qk.delayed(old)),
            ])
            .await?;
        Ok(sizes::count(&replies[0]) + sizes::count(&replies[1]))
    }

    async fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        Ok(self.oldest_available_ms(queue).await?.map(from_unix_millis))
    }

    async fn jobs(&self, _: &str, _: JobState, _: PageRequest) -> Result<Page<JobSummary>> {
        Err(Error::NotSupported {
            driver: DRIVER,
            operation: "listing jobs (memcached cannot list keys; a delayed or reserved job \
                        is found only through the second it is due in)",
        })
    }
}

#[async_trait]
impl Control for MemcachedStorage {
    async fn restart_generation(&self) -> Result<u64> {
        let replies = self.run(vec![Cmd::get(self.keys().restart())]).await?;
        Ok(replies[0].number().unwrap_or(0))
    }

    async fn request_restart(&self) -> Result<()> {
        let replies = self.run(vec![Cmd::incr(self.keys().restart(), 1)]).await?;
        incremented(&replies[0], "request a restart").map(|_| ())
    }
}

#[async_trait]
impl Wake for MemcachedStorage {
    /// Polls (memcached cannot notify): every `poll` interval, one request reads each queue's
    /// head and tail and the counts of the current timer buckets.
    async fn wait(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let keys = self.keys();
        {
            // A sweep left due work behind (more expired leases than it could hand out).
            let local = self.local();
            if queues.iter().any(|q| !local.swept.contains_key(q)) {
                return Ok(());
            }
        }
        loop {
            let now_b = bucket(now_ms());
            let mut cmds = vec![Cmd::get(keys.epoch())];
            for q in queues {
                let qk = keys.queue(q);
                cmds.extend([
                    Cmd::get(qk.head()),
                    Cmd::get(qk.tail()),
                    Cmd::get(qk.timer_count(now_b - 1)),
                    Cmd::get(qk.timer_count(now_b)),
                ]);
            }
            let replies = self.run(cmds).await?;
            self.observe_epoch(&replies[0]).await?;
            for (q, r) in queues.iter().zip(replies[1..].chunks(4)) {
                let (head, tail) = (r[0].number().unwrap_or(0), r[1].number().unwrap_or(0));
                if tail > head {
                    return Ok(());
                }
                let timed = r[2].number().unwrap_or(0) + r[3].number().unwrap_or(0);
                if timed > 0 && self.sweep_due(q) {
                    return Ok(());
                }
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                return Ok(());
            }
            tokio::time::sleep((timeout - elapsed).min(self.inner.options.poll())).await;
        }
    }
}
