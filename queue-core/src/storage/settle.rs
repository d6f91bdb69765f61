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

/// A compare-and-set on one group counter, checked and changed by the same atomic step as
/// the effects it guards ([`Groups::apply_if`](super::Groups::apply_if)): the claim of a
/// schedule's tick, which many processes race for and exactly one wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// The group.
    pub group: String,
    /// The counter's name.
    pub counter: String,
    /// The value it must hold for the step to apply (a missing counter holds 0).
    pub expect: i64,
    /// The value it holds after the step.
    pub set: i64,
}

impl Guard {
    /// Applies when `counter` of `group` holds `expect`, and sets it to `set`.
    pub fn new(
        group: impl Into<String>,
        counter: impl Into<String>,
        expect: i64,
        set: i64,
    ) -> Self {
        Guard {
            group: group.into(),
            counter: counter.into(),
            expect,
            set,
        }
    }
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
    /// Stores a [waiting job](WaitingJob) under its key: it is not reserved until its
    /// dependencies reach zero ([`Deps`](Effect::Deps)). Nothing happens if a waiting job
    /// already has that key, so a replay cannot store it twice. Drivers with the
    /// [`Groups`](super::Groups) capability support it.
    Hold(WaitingJob),
    /// Adds `delta` to the dependencies left of the waiting job under `key` (a finishing
    /// step gives -1, adding a member to an open batch +1). When they reach zero or below,
    /// the job is pushed to its queue in the same step (with its unique claim, if any: a
    /// job whose key is held is dropped as a duplicate would be) and the key is free again.
    /// Nothing happens if no job waits under `key` (it was released or skipped already).
    /// The changes to one key within one call are summed before they are applied. Drivers
    /// with the [`Groups`](super::Groups) capability support it.
    Deps {
        /// The waiting job's key.
        key: String,
        /// What to add to its dependencies left.
        delta: i64,
    },
    /// Removes the waiting job under `key` without running it (its dependencies can no
    /// longer be met). Nothing happens if no job waits under `key`. Drivers with the
    /// [`Groups`](super::Groups) capability support it.
    Skip {
        /// The waiting job's key.
        key: String,
    },
    /// Writes a record of the settled job (its status once finished), kept for `ttl`,
    /// replacing one of the same kind. Only in a settle (an [`apply`](super::Groups::apply)
    /// has no job). Drivers with the [`Track`](super::Track) capability support it.
    Record {
        /// The record's kind (see [`RecordKey`](super::RecordKey)).
        kind: String,
        /// What it holds.
        value: Vec<u8>,
        /// How long it is kept.
        ttl: Duration,
    },
    /// Replaces the settled job's payload, byte for byte, as it goes back to its queue:
    /// only in a settle whose outcome keeps the job ([`Retry`](Outcome::Retry) or
    /// [`Release`](Outcome::Release)). A retried encrypted job is re-sealed with the active
    /// key this way. Drivers with [`Capabilities::rewrite`](super::Capabilities::rewrite)
    /// support it.
    Payload(Vec<u8>),
    /// Parks the settled job on the lock `key` as it goes back to its queue: only in a settle
    /// whose outcome keeps the job ([`Retry`](Outcome::Retry) or
    /// [`Release`](Outcome::Release)). Its delay still bounds the wait, and so does the
    /// lock's expiry as the step reads it (a holder that dies leaves its lock to expire, and
    /// the job looks again then; a live holder's heartbeat has renewed it), but the next
    /// [`unlock`](crate::Storage::unlock) of `key` (or its release by force,
    /// [`Locks::release`](super::Locks::release)) makes the job parked on it longest ago due at
    /// once, in the same step that frees the key: a `without_overlapping` job whose key is
    /// busy waits for the key instead of going round every few hundred milliseconds. If the
    /// lock is not held when the settle applies (freed between the worker's try and this
    /// step), the job is due at once instead: no wake-up is lost. A later settle of the job
    /// without it ends the parking. Drivers with
    /// [`Capabilities::park`](super::Capabilities::park) support it.
    Park {
        /// The lock the job waits for.
        key: String,
    },
    /// Stores `value` under `name` in `group`, replacing what was there: data a group keeps
    /// next to its counters (a workflow node's output, read by the nodes after it), read
    /// with [`Groups::value`](super::Groups::value) and deleted with the group's counters by
    /// [`Groups::remove`](super::Groups::remove). At most [`MAX_VALUE`] bytes. A replay
    /// writes the same bytes again. Drivers with the [`Groups`](super::Groups) capability
    /// support it.
    Value {
        /// The group (a workflow).
        group: String,
        /// The value's name in the group.
        name: String,
        /// What it holds.
        value: Vec<u8>,
    },
}

/// The largest [`Effect::Value`] a driver must keep: 64 KiB, the size of a job's output.
pub const MAX_VALUE: usize = 64 * 1024;

impl Effect {
    /// Whether it needs the [`Groups`](super::Groups) capability (everything but a push,
    /// a record, a payload and a park).
    pub fn needs_groups(&self) -> bool {
        !matches!(
            self,
            Effect::Push(_) | Effect::Record { .. } | Effect::Payload(_) | Effect::Park { .. }
        )
    }

    /// Whether it needs the [`Track`](super::Track) capability (a record).
    pub fn needs_track(&self) -> bool {
        matches!(self, Effect::Record { .. })
    }
}

/// A job held back until its dependencies are met: a chain's next link, a workflow's node, a
/// batch's callback. Stored by [`Effect::Hold`], released by [`Effect::Deps`], dropped by
/// [`Effect::Skip`].
///
/// Waiting jobs are not in any queue: they are not reserved, not counted in a queue's size
/// and not listed with its jobs. Their keys are a namespace of their own, apart from unique
/// claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingJob {
    /// Its key (deterministic: a workflow's id and the node's name).
    pub key: String,
    /// How many dependencies it waits for: at least 1.
    pub deps: u32,
    /// The job pushed when they are met. Its availability counts from then.
    pub job: NewJob,
}

impl WaitingJob {
    /// `job`, held under `key` until `deps` dependencies are met.
    pub fn new(key: impl Into<String>, deps: u32, job: NewJob) -> Self {
        WaitingJob {
            key: key.into(),
            deps,
            job,
        }
    }
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
    /// Still this worker's, renewed, but someone asked to cancel the job
    /// ([`Track::cancel`](super::Track::cancel)): stop it and settle it. Only drivers with
    /// the [`Track`](super::Track) capability report it.
    Cancelled,
}

/// What every driver checks before applying any of a batch of settlements: each push effect
/// carries its deterministic key, each waiting job a key and at least one dependency. A
/// driver returns this error before changing anything.
pub fn check_effects(driver: &'static str, settles: &[Settle]) -> Result<()> {
    for settle in settles {
        check_list(
            driver,
            &settle.effects,
            &format!("job {}", settle.lease.job_id),
            true,
        )?;
        let keeps = matches!(
            settle.outcome,
            Outcome::Retry { .. } | Outcome::Release { .. }
        );
        let own = settle.effects.iter().find_map(|e| match e {
            Effect::Payload(_) => Some("a payload"),
            Effect::Park { .. } => Some("a park"),
            _ => None,
        });
        if let (false, Some(what)) = (keeps, own) {
            return Err(Error::Contract {
                driver,
                problem: format!(
                    "{what} effect of job {} with an outcome that does not keep the job \
                     (only a retry or a release does)",
                    settle.lease.job_id
                ),
            });
        }
    }
    Ok(())
}

/// What every driver checks before [`Track::put_record`](super::Track::put_record): the key
/// is [valid](super::RecordKey::is_valid), and a fence is a lease of the same job.
pub fn check_record(
    driver: &'static str,
    key: &super::RecordKey,
    fence: Option<&Lease>,
) -> Result<()> {
    if !key.is_valid() {
        return Err(Error::Contract {
            driver,
            problem: format!(
                "a record kind must be 1 to 32 ASCII letters, digits, `-` or `_`, and name a job: \
                 not `{}` of job `{}`",
                key.kind, key.job_id
            ),
        });
    }
    if let Some(lease) = fence.filter(|lease| lease.job_id != key.job_id) {
        return Err(Error::Contract {
            driver,
            problem: format!(
                "a record of job {} fenced by a lease of job {}",
                key.job_id, lease.job_id
            ),
        });
    }
    Ok(())
}

/// [`check_effects`] for the effects of one [`Groups::apply`](super::Groups::apply) (`of`
/// names whose effects they are, for the error).
pub fn check_effect_list(driver: &'static str, effects: &[Effect], of: &str) -> Result<()> {
    check_list(driver, effects, of, false)
}

fn check_list(driver: &'static str, effects: &[Effect], of: &str, settle: bool) -> Result<()> {
    let problem = |problem: String| {
        Err(Error::Contract {
            driver,
            problem: format!("{problem} (effects of {of})"),
        })
    };
    for effect in effects {
        match effect {
            Effect::Push(job) if job.unique.is_none() => {
                return problem(format!(
                    "a push effect of a `{}` job has no unique key (its deterministic id)",
                    job.name
                ));
            }
            Effect::Push(job) if job.unique.as_ref().is_some_and(|u| u.replace) => {
                return problem(format!(
                    "a push effect of a `{}` job asks to replace a queued job: only \
                     Storage::push replaces (an effect's key is its deterministic id)",
                    job.name
                ));
            }
            Effect::Hold(waiting) if waiting.job.unique.as_ref().is_some_and(|u| u.replace) => {
                return problem(format!(
                    "a waiting `{}` job asks to replace a queued job: only Storage::push replaces",
                    waiting.job.name
                ));
            }
            Effect::Hold(waiting) if waiting.key.is_empty() || waiting.deps == 0 => {
                return problem(format!(
                    "a waiting `{}` job needs a key and at least one dependency (key `{}`, {} dependencies)",
                    waiting.job.name, waiting.key, waiting.deps
                ));
            }
            Effect::Value { group, name, .. } if group.is_empty() || name.is_empty() => {
                return problem("a value effect needs a group and a name".into());
            }
            Effect::Value { group, name, value } if value.len() > MAX_VALUE => {
                return problem(format!(
                    "value `{name}` of group `{group}` holds {} bytes, more than {MAX_VALUE}",
                    value.len()
                ));
            }
            Effect::Deps { key, .. } | Effect::Skip { key } if key.is_empty() => {
                return problem("a dependency effect names no key".into());
            }
            Effect::Record { .. } if !settle => {
                return problem("a record effect outside a settle names no job".into());
            }
            Effect::Payload(_) if !settle => {
                return problem("a payload effect outside a settle names no job".into());
            }
            Effect::Park { .. } if !settle => {
                return problem("a park effect outside a settle names no job".into());
            }
            Effect::Park { key } if key.is_empty() => {
                return problem("a park effect names no lock".into());
            }
            Effect::Record { kind, .. }
                if !super::RecordKey::new("job", kind.as_str()).is_valid() =>
            {
                return problem(format!(
                    "a record kind must be 1 to 32 ASCII letters, digits, `-` or `_`, not `{kind}`"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
