//! Settling reserved jobs: the outcome of a run and the effects that go with it.

use std::time::Duration;

use super::types::{Lease, NewJob, Reserved};
use crate::error::{Error, Result};

/// What becomes of a reserved job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: the job leaves the queue. Releases a claim held until
    /// [`Succeeded`](super::Until::Succeeded) or [`Terminal`](super::Until::Terminal).
    Ack,
    /// A failed attempt to try again: the job waits `delay`, its attempt counted.
    Retry {
        /// How long it waits.
        delay: Duration,
    },
    /// Put back without counting the attempt (its lock was held, the worker is stopping
    /// before it ran): the job waits `delay`.
    Release {
        /// How long it waits.
        delay: Duration,
    },
    /// Failed for good: the job moves to the failed store with the reason. Releases a claim
    /// held until [`Terminal`](super::Until::Terminal); one held until
    /// [`Succeeded`](super::Until::Succeeded) stays with the failed job.
    Fail {
        /// Why: the last attempt's error.
        reason: String,
    },
}

/// A consequence of a settle, applied in the same atomic step as the job's transition and
/// not at all when the lease is stale: the transactional outbox every workflow feature
/// (batches, chains, callbacks) is built on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Pushes a follow-up job. It must carry a [`Unique`](super::Unique) key, its
    /// deterministic id: if the key is held, nothing is pushed, so a replayed step (or two
    /// steps racing to push the same callback) cannot push it twice. Drivers whose
    /// capabilities have `claims` support it.
    Push(NewJob),
    /// Adds each delta to a named counter of `group` (a missing counter starts at 0). Drivers
    /// with the [`Groups`](super::Groups) capability support it.
    Count {
        /// The group (a batch, a workflow).
        group: String,
        /// Counter names and the amounts to add.
        deltas: Vec<(String, i64)>,
    },
}

/// One settlement: a lease, what became of its job, and the effects of that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    /// The reservation being settled.
    pub lease: Lease,
    /// What becomes of the job.
    pub outcome: Outcome,
    /// What else happens in the same step.
    pub effects: Vec<Effect>,
}

impl Settle {
    /// Acknowledges the job.
    pub fn ack(lease: Lease) -> Self {
        Settle::new(lease, Outcome::Ack)
    }

    /// Retries the job after `delay`, the attempt counted.
    pub fn retry(lease: Lease, delay: Duration) -> Self {
        Settle::new(lease, Outcome::Retry { delay })
    }

    /// Puts the job back after `delay` without counting the attempt.
    pub fn release(lease: Lease, delay: Duration) -> Self {
        Settle::new(lease, Outcome::Release { delay })
    }

    /// Moves the job to the failed store.
    pub fn fail(lease: Lease, reason: impl Into<String>) -> Self {
        Settle::new(
            lease,
            Outcome::Fail {
                reason: reason.into(),
            },
        )
    }

    /// A settlement with no effects.
    pub fn new(lease: Lease, outcome: Outcome) -> Self {
        Settle {
            lease,
            outcome,
            effects: Vec::new(),
        }
    }

    /// Adds an effect.
    pub fn effect(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }
}

/// What a settlement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Settled {
    /// The transition and every effect were applied.
    Applied,
    /// The lease was no longer the job's current one (it ran out and another worker took
    /// the job, or the job was settled already): nothing was changed.
    Stale,
}

/// The reply of [`Storage::settle`](crate::Storage::settle).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettleReply {
    /// One per settlement, in order.
    pub settled: Vec<Settled>,
    /// The jobs reserved after settling, when a fetch was asked for.
    pub reserved: Vec<Reserved>,
}

/// The state of a lease after [`Storage::extend`](crate::Storage::extend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseStatus {
    /// Still this worker's, renewed.
    Held,
    /// Stale: another worker may have the job now. Stop working on it.
    Lost,
}

/// What every driver checks before applying any of a batch of settlements: each push effect
/// carries its deterministic key. A driver returns this error before changing anything.
pub fn check_effects(driver: &'static str, settles: &[Settle]) -> Result<()> {
    for settle in settles {
        for effect in &settle.effects {
            if let Effect::Push(job) = effect {
                if job.unique.is_none() {
                    return Err(Error::Contract {
                        driver,
                        problem: format!(
                            "a push effect of job {} has no unique key (its deterministic id)",
                            settle.lease.job_id
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}
