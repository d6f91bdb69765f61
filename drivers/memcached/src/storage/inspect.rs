//! The operator's view ([`Inspect`]) and the restart signal ([`Control`]).

use std::collections::BTreeSet;
use std::time::SystemTime;

use async_trait::async_trait;
use queue_core::storage::{
    from_unix_millis, Control, Inspect, JobState, JobSummary, Page, PageRequest,
};
use queue_core::{Error, QueueSize, Result};

use super::{incremented, now_ms, parse_slot, sizes, text, MemcachedStorage};
use crate::client::Cmd;
use crate::keys::{escape, unescape};
use crate::record::JobState as Record;
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
        let qk = self.keys().queue(queue);
        let gen = self.run(vec![Cmd::get(qk.gen())]).await?[0].number();
        let (gen, now) = (gen.unwrap_or(0), now_ms());
        // Always sweep (not only every 250 ms): due delayed jobs move into slots, and the
        // sweep reports the oldest of those and of the expired reservations it met.
        let mut oldest = self.sweep(queue, gen, now, None).await?.oldest;
        let reads = vec![
            Cmd::get(qk.head()),
            Cmd::get(qk.tail()),
            Cmd::get(qk.waiting(gen)),
        ];
        let replies = self.run(reads).await?;
        let (head, tail) = (
            replies[0].number().unwrap_or(0),
            replies[1].number().unwrap_or(0),
        );
        // Slots come out in push order: the first live ones past the head hold the jobs that
        // waited longest. At most 1,024 slots are looked at, 32 a round trip (a queue just
        // cleared may hold many slots of jobs that no longer count).
        let (mut n, end) = (head + 1, tail.min(head + 1024));
        while n <= end && sizes::count(&replies[2]) > 0 {
            let slots: Vec<u64> = (n..=end.min(n + 31)).collect();
            n += 32;
            let ids = self.run(slots.iter().map(|s| Cmd::get(qk.slot(*s))).collect());
            let entries: Vec<(u64, u64)> = (slots.iter().zip(&ids.await?))
                .filter_map(|(s, r)| Some((*s, parse_slot(r.value()?)?)))
                .collect();
            let reads = entries.iter().map(|(_, id)| Cmd::get(self.keys().job(*id)));
            let records = self.run(reads.collect()).await?;
            let found = entries
                .iter()
                .zip(&records)
                .filter_map(|((slot, id), reply)| {
                    let (_, r) = self.decode_job(*id, reply)?;
                    (r.state == Record::Waiting { slot: *slot } && r.gen >= gen).then_some(r.due)
                });
            if let Some(due) = found.min() {
                // A writer's clock a little ahead must not make a job look unborn.
                oldest = Some(oldest.map_or(due, |o| o.min(due)).min(now));
                break;
            }
        }
        Ok(oldest.map(from_unix_millis))
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
