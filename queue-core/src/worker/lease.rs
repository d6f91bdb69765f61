//! Keeping a running job's lease (and its `without_overlapping` lock) alive, and stopping the
//! job as soon as either is lost or can no longer be confirmed.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::storage::{Lease, LeaseStatus, Storage};

/// Why a running job had to be stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lost {
    /// The store said the lease is stale: another worker may have the job.
    Lease,
    /// Another owner holds the job's `without_overlapping` lock or its limit's slot.
    Lock,
    /// The store could not confirm the lease (or the lock) before it would run out: it may
    /// have expired, so the job must stop before another worker can start it.
    Unconfirmed,
}

impl Lost {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Lost::Lease => "its lease was lost (another worker may run it now)",
            Lost::Lock => {
                "its without_overlapping lock or its limit's slot was taken by another job"
            }
            Lost::Unconfirmed => {
                "the store could not renew its lease before it ran out (a backend outage)"
            }
        }
    }
}

/// What a keeper renews.
pub(super) struct Held {
    pub(super) lease: Lease,
    /// Until when the lease is surely held: the moment its last renewal was asked for plus
    /// the lease length (the store's deadline is at least that).
    pub(super) lease_until: Instant,
    /// The locks it holds (its `without_overlapping` lock, its limit's slot) and until when
    /// each is surely held.
    pub(super) locks: Vec<(String, Instant)>,
}

/// Renews the lease (and the lock) every third of the lease until the job ends; returns only
/// when the job must stop. A renewal that fails for a backend error is tried again sooner;
/// when nothing confirms the lease (or the lock) up to a margin before it would run out, the
/// job is stopped, so two bodies of one job or one lock key never run at once, even across an
/// outage longer than the lease.
///
/// A renewal that reports the job cancelled ([`LeaseStatus::Cancelled`]) renews it all the
/// same and cancels `cancel`, once: the job is then ended by its runner.
pub(super) async fn keep(
    storage: Arc<dyn Storage>,
    mut held: Held,
    length: Duration,
    cancel: CancellationToken,
) -> Lost {
    let every = (length / 3).max(Duration::from_millis(50));
    let margin = (length / 10).clamp(Duration::from_millis(20), Duration::from_secs(2));
    let mut next = Instant::now() + every;
    loop {
        let confirmed = held
            .locks
            .iter()
            .map(|(_, until)| *until)
            .fold(held.lease_until, Instant::min);
        let give_up = confirmed.checked_sub(margin).unwrap_or(confirmed);
        tokio::time::sleep_until(next.min(give_up)).await;
        if Instant::now() >= give_up {
            return Lost::Unconfirmed;
        }
        let asked = Instant::now();
        let renewed = tokio::time::timeout_at(
            give_up,
            storage.extend(std::slice::from_ref(&held.lease), length),
        )
        .await;
        match renewed {
            Err(_) => return Lost::Unconfirmed,
            Ok(Ok(status))
                if matches!(
                    status.first(),
                    Some(LeaseStatus::Held | LeaseStatus::Cancelled)
                ) =>
            {
                held.lease_until = asked + length;
                next = asked + every;
                if status.first() == Some(&LeaseStatus::Cancelled) {
                    cancel.cancel();
                }
            }
            Ok(Ok(_)) => return Lost::Lease,
            Ok(Err(e)) => {
                warn!(error = %e, id = %held.lease.job_id, "could not renew the lease; trying again");
                next = Instant::now() + (every / 4).max(Duration::from_millis(20));
                continue;
            }
        }
        for (key, until) in &mut held.locks {
            let asked = Instant::now();
            match tokio::time::timeout_at(give_up, storage.lock(key, &held.lease.token, length))
                .await
            {
                Err(_) => return Lost::Unconfirmed,
                Ok(Ok(true)) => *until = asked + length,
                Ok(Ok(false)) => return Lost::Lock,
                Ok(Err(e)) => {
                    warn!(error = %e, lock = %key, "could not renew the lock; trying again");
                    next = Instant::now() + (every / 4).max(Duration::from_millis(20));
                    break;
                }
            }
        }
    }
}
