//! `oldest_available`: when the longest-waiting available job of a queue became available,
//! for `runall health`. Cheap and bounded: a sweep (which reports due delayed jobs it
//! promotes and expired reservations it leaves for later) and a look at the first slots
//! past the head.

use super::{now_ms, parse_slot, sizes, MemcachedStorage};
use crate::client::Cmd;
use crate::record::JobState;
use queue_core::Result;

/// Slots read per round trip when looking for the oldest waiting job.
const OLDEST_CHUNK: u64 = 32;
/// At most this many slots past the head are looked at (a queue just cleared may hold many
/// slots of jobs that no longer count).
const OLDEST_MAX_SLOTS: u64 = 1024;

impl MemcachedStorage {
    /// The earliest time (Unix ms) since which a job of `queue` has been available, or
    /// `None`. See the crate docs ("Operations") for what is looked at.
    pub(super) async fn oldest_available_ms(&self, queue: &str) -> Result<Option<i64>> {
        let qk = self.keys().queue(queue);
        let replies = self.run(vec![Cmd::get(qk.gen())]).await?;
        let gen = replies[0].number().unwrap_or(0);
        let now = now_ms();
        // Always sweep (not only every 250 ms): due delayed jobs move into slots, and the
        // sweep reads the records of every expired reservation, which is what we need.
        let swept = self.sweep(queue, gen, now, None).await?;
        let mut oldest = swept.oldest;
        let replies = self
            .run(vec![
                Cmd::get(qk.head()),
                Cmd::get(qk.tail()),
                Cmd::get(qk.waiting(gen)),
            ])
            .await?;
        let head = replies[0].number().unwrap_or(0);
        let tail = replies[1].number().unwrap_or(0);
        let waiting = sizes::count(&replies[2]);
        if waiting > 0 && tail > head {
            // Slots come out in push order: the first live ones past the head hold the jobs
            // that waited longest.
            let end = tail.min(head + OLDEST_MAX_SLOTS);
            let mut n = head + 1;
            while n <= end {
                let to = (n + OLDEST_CHUNK - 1).min(end);
                let slots: Vec<u64> = (n..=to).collect();
                let replies = self
                    .run(slots.iter().map(|s| Cmd::get(qk.slot(*s))).collect())
                    .await?;
                let entries: Vec<(u64, u64)> = slots
                    .iter()
                    .zip(&replies)
                    .filter_map(|(s, r)| r.value().and_then(parse_slot).map(|id| (*s, id)))
                    .collect();
                let records = self
                    .run(
                        entries
                            .iter()
                            .map(|(_, id)| Cmd::get(self.keys().job(*id)))
                            .collect(),
                    )
                    .await?;
                let found = entries
                    .iter()
                    .zip(&records)
                    .filter_map(|((slot, id), reply)| {
                        let (_, record) = self.decode_job(*id, reply)?;
                        let live = record.state == (JobState::Waiting { slot: *slot })
                            && record.gen >= gen;
                        live.then_some(record.due)
                    })
                    .min();
                if let Some(due) = found {
                    // A writer's clock a little ahead must not make a job look unborn.
                    oldest = Some(oldest.map_or(due, |o| o.min(due)).min(now));
                    break;
                }
                n = to + 1;
            }
        }
        Ok(oldest)
    }
}
