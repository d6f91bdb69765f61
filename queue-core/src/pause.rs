//! Pausing a queue for every worker of a store (`runall pause QUEUE`, [`Queue::pause`]).
//!
//! A queue is paused by a counter of the group [`GROUP`], named after the queue (1: paused).
//! Workers read the group when they start and about once a second after
//! ([`POLL`]), and leave paused queues out of their reservations: a paused queue's jobs are
//! not reserved at all, so no attempt is spent and their order is kept. Jobs a worker had
//! already reserved (running, or prefetched) finish. Needs the store's group counters.
//!
//! [`Queue::pause`]: crate::Queue::pause

use std::collections::BTreeSet;
use std::time::Duration;

use crate::error::Result;
use crate::storage::{Groups, Guard, Storage, StorageExt};

/// The group whose counters say which queues are paused.
pub(crate) const GROUP: &str = "_paused";

/// How often a worker reads which queues are paused.
pub(crate) const POLL: Duration = Duration::from_secs(1);

/// The queues paused now.
pub(crate) async fn paused(storage: &dyn Storage) -> Result<BTreeSet<String>> {
    let groups = storage.groups()?;
    Ok(groups
        .counters(GROUP)
        .await?
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(queue, _)| queue)
        .collect())
}

/// Pauses (`true`) or resumes `queue`; returns whether that changed anything.
pub(crate) async fn set(storage: &dyn Storage, queue: &str, pause: bool) -> Result<bool> {
    let groups: &dyn Groups = storage.groups()?;
    let want = i64::from(pause);
    loop {
        let now = groups
            .counters(GROUP)
            .await?
            .into_iter()
            .find(|(q, _)| q == queue)
            .map_or(0, |(_, v)| v);
        if (now > 0) == pause {
            return Ok(false);
        }
        if groups
            .apply_if(Guard::new(GROUP, queue, now, want), Vec::new())
            .await?
        {
            return Ok(true);
        }
    }
}
