//! Schedules stored at run time, one per entity (seed 003: one per monitor), created,
//! changed and removed by the application while workers run.
//!
//! A stored schedule is two things in the store. Its state, the group `schedule:{id}` (as a
//! schedule in code has), plus `def`: a hash of its definition. And a *timer*: a job on the
//! reserved queue [`TIMERS`] whose payload is the definition and whose due time is the
//! schedule's next tick. Workers reserve due timers, claim the tick exactly as for a schedule
//! in code (the guarded step on `next`), and put the timer back until the following tick
//! (a release: no attempt counted). The timer is only an index of when to look: exactly once
//! per tick comes from the guarded step, whichever workers hold the timer.
//!
//! Changing a schedule pushes a timer for the new definition and moves `def` to it in one
//! guarded step; a timer whose definition is no longer `def` (changed, or removed) is
//! dropped when it comes due. There is never more than one timer per definition: its unique
//! claim is `schedule:{id}#{def}`.
//!
//! The definition is also kept readable, for [`Queue::run_schedule_now`](crate::Queue) and
//! `runall schedule show`, as counters of the group `schedule.def:{id}`: `def` (its hash),
//! `len` (its length in bytes) and `w00000`, `w00001`, ... (its bytes, six to a counter, so
//! that every store keeps them exact). They are written by the very step that moves `def`,
//! as deltas from the counters read: a definition's words are a function of its hash, so a
//! step that applies under the guard on `def` finds them as they were read. A definition
//! over [`READABLE_MAX`] bytes is not kept readable (its run-now is refused).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{tick, CatchUp, Look, Schedule, When, SPEC_MASK};
use crate::dispatch::{PendingDispatch, Template};
use crate::dispatcher::{self, Dispatcher};
use crate::error::{Error, Result};
use crate::storage::{
    from_unix_millis, unix_millis, Effect, Guard, NewJob, ReserveRequest, Settle, StorageExt,
    Unique,
};

/// The queue of stored schedules' timers. Reserved: no worker serves it as a job queue.
pub(crate) const TIMERS: &str = "_schedules";
/// How long a worker holds the timers it reserved.
const TIMER_LEASE: Duration = Duration::from_secs(30);
/// Timers reserved at once.
const TIMERS_PER_CALL: usize = 100;
/// How soon a paused schedule's timer is looked at again.
const PAUSED_NAP: Duration = Duration::from_secs(5);

/// The longest definition kept readable (a run-now of a longer one is refused).
const READABLE_MAX: usize = 16 * 1024;
/// Bytes per counter of a readable definition (48 bits: exact in every store's counters).
const WORD_BYTES: usize = 6;

/// The group that keeps the definition of the stored schedule `id` readable.
fn def_group(id: &str) -> String {
    format!("schedule.def:{id}")
}

/// The name of the counter holding the `i`-th word of a definition.
fn word_name(i: usize) -> String {
    format!("w{i:05}")
}

/// A definition's bytes as counters (none over [`READABLE_MAX`]).
fn words(bytes: &[u8]) -> Vec<i64> {
    if bytes.len() > READABLE_MAX {
        return Vec::new();
    }
    bytes
        .chunks(WORD_BYTES)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word[8 - WORD_BYTES..8 - WORD_BYTES + chunk.len()].copy_from_slice(chunk);
            i64::from_be_bytes(word)
        })
        .collect()
}

/// The bytes `len` long that [`words`] made.
fn unwords(words: &[i64], len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(words.len() * WORD_BYTES);
    for word in words {
        bytes.extend_from_slice(&word.to_be_bytes()[8 - WORD_BYTES..]);
    }
    bytes.truncate(len);
    bytes
}

/// The counters of a readable definition, as read.
struct Readable(std::collections::HashMap<String, i64>);

impl Readable {
    async fn read(dispatcher: &Dispatcher, id: &str) -> Result<Readable> {
        let counters = dispatcher.groups()?.counters(&def_group(id)).await?;
        Ok(Readable(counters.into_iter().collect()))
    }

    fn get(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// The definition's hash these counters hold (0: none).
    fn def(&self) -> i64 {
        self.get("def")
    }

    /// Its words.
    fn words(&self) -> Vec<i64> {
        let mut words: Vec<(usize, i64)> = self
            .0
            .iter()
            .filter_map(|(name, v)| Some((name.strip_prefix('w')?.parse().ok()?, *v)))
            .collect();
        words.sort_unstable();
        words.into_iter().map(|(_, v)| v).collect()
    }

    /// The deltas that make these counters hold `bytes` with hash `def` (nothing, for
    /// `def` 0).
    fn deltas_to(&self, def: i64, bytes: &[u8]) -> Vec<(String, i64)> {
        let (old, new) = (
            self.words(),
            if def == 0 { Vec::new() } else { words(bytes) },
        );
        let len = if def == 0 { 0 } else { bytes.len() as i64 };
        let mut deltas = vec![
            ("def".to_owned(), def - self.def()),
            ("len".to_owned(), len - self.get("len")),
        ];
        for i in 0..old.len().max(new.len()) {
            let delta = new.get(i).copied().unwrap_or(0) - old.get(i).copied().unwrap_or(0);
            deltas.push((word_name(i), delta));
        }
        deltas.retain(|(_, delta)| *delta != 0);
        deltas
    }
}

/// The stored schedule `id` as its definition says, if it is stored (`None`: no stored
/// schedule has this id). Refused for one stored before definitions were kept readable
/// (upsert it again, changed, to make it readable) or longer than [`READABLE_MAX`].
pub(crate) async fn definition(dispatcher: &Dispatcher, id: &str) -> Result<Option<Schedule>> {
    for _ in 0..10 {
        let def = dispatcher
            .counters(&format!("schedule:{id}"))
            .await?
            .get("def");
        if def == 0 {
            return Ok(None);
        }
        let readable = Readable::read(dispatcher, id).await?;
        if readable.def() != def {
            if readable.def() == 0 {
                return Err(Error::Config(format!(
                    "stored schedule {id}: its definition is not kept readable (stored by \
                     an older version): upsert it again with a change to store it readable"
                )));
            }
            // Changed between the two reads: read again.
            continue;
        }
        let len = usize::try_from(readable.get("len")).unwrap_or(0);
        if len > READABLE_MAX {
            return Err(Error::Config(format!(
                "stored schedule {id}: its definition is {len} bytes, over the \
                 {READABLE_MAX} kept readable"
            )));
        }
        let bytes = unwords(&readable.words(), len);
        if hash(&bytes) != def {
            return Err(Error::Config(format!(
                "stored schedule {id}: its readable definition does not match its hash"
            )));
        }
        let schedule = serde_json::from_slice::<Definition>(&bytes)
            .map_err(|e| Error::Payload(format!("stored schedule {id}: {e}")))
            .and_then(Definition::schedule)?;
        return Ok(Some(schedule));
    }
    Err(Error::Config(format!(
        "stored schedule {id}: changed ten times while it was read; try again"
    )))
}

/// A stored schedule's definition: the timer's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Definition {
    v: u32,
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tz: Option<String>,
    overlap: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    catch_up_all: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jitter_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<u64>,
    job: Template,
}

impl Definition {
    fn of(schedule: &Schedule) -> Result<Definition> {
        let (every_ms, cron, tz) = match schedule.when() {
            Some(When::Every(period)) => (
                Some(u64::try_from(period.as_millis()).unwrap_or(u64::MAX)),
                None,
                None,
            ),
            Some(When::Cron { text, tz_name, .. }) => {
                (None, Some(text.clone()), Some(tz_name.clone()))
            }
            None => return Err(Error::Config(schedule.describe())),
        };
        let Some(job) = &schedule.job else {
            return Err(Error::Config(format!(
                "schedule {}: no job",
                schedule.id_str()
            )));
        };
        Ok(Definition {
            v: 1,
            id: schedule.id_str().to_owned(),
            every_ms,
            cron,
            tz,
            overlap: schedule.overlap.as_str().to_owned(),
            catch_up_all: match schedule.catch_up {
                CatchUp::Latest => None,
                CatchUp::All { max } => Some(max),
            },
            jitter_ms: schedule
                .jitter
                .map(|j| u64::try_from(j.as_millis()).unwrap_or(u64::MAX)),
            until_ms: schedule.until.map(unix_millis),
            limit: schedule.limit,
            job: job.template()?,
        })
    }

    fn schedule(self) -> Result<Schedule> {
        let mut schedule = match (self.every_ms, &self.cron) {
            (Some(ms), None) => Schedule::every(Duration::from_millis(ms)),
            (None, Some(cron)) => Schedule::cron(cron).tz(self.tz.as_deref().unwrap_or("UTC")),
            _ => return Err(Error::Config("neither `every` nor `cron`".into())),
        };
        schedule = schedule
            .id(self.id)
            .overlap(self.overlap.parse().map_err(Error::Config)?)
            .dispatch(PendingDispatch::from_template(self.job));
        if let Some(max) = self.catch_up_all {
            schedule = schedule.catch_up(CatchUp::All { max });
        }
        if let Some(ms) = self.jitter_ms {
            schedule = schedule.jitter(Duration::from_millis(ms));
        }
        if let Some(ms) = self.until_ms {
            schedule = schedule.until(from_unix_millis(ms));
        }
        if let Some(limit) = self.limit {
            schedule = schedule.limit(limit);
        }
        schedule.check()
    }
}

/// The hash of a definition's bytes, below 2^50 and never 0.
fn hash(bytes: &[u8]) -> i64 {
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (i64::from_le_bytes(first) & SPEC_MASK).max(1)
}

/// What [`Schedules::upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upserted {
    /// A new schedule.
    Created,
    /// An existing schedule, changed: its next tick is computed again from now.
    Changed,
    /// An existing schedule with this very definition: nothing changed.
    Unchanged,
}

/// Schedules stored in the store at run time, one per entity (seed 003's monitors: each
/// checked on its own interval, with no sweep query and no job that requeues itself).
///
/// Every worker that runs schedules runs them (each tick claimed once, as for schedules in
/// code), within about a second of their tick. Ids share one namespace with the schedules
/// given to [`Queue::schedule`](crate::Queue::schedule). Every [`Overlap`](crate::Overlap)
/// policy applies, and [`Queue::run_schedule_now`](crate::Queue::run_schedule_now),
/// [`pause_schedule`](crate::Queue::pause_schedule) and
/// [`schedule_state`](crate::Queue::schedule_state) take their ids.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
/// use std::time::Duration;
/// use queue_core::{Queue, Schedule, Schedules, Upserted};
///
/// let queue = Queue::connect("memory://").await?;
/// let check = |id: u64| {
///     Schedule::every(Duration::from_secs(30))
///         .dispatch(queue.dispatch_named("check-monitor", serde_json::json!({ "id": id })))
/// };
/// assert_eq!(Schedules::upsert_via(&queue, "monitor:42", check(42)).await?, Upserted::Created);
/// assert_eq!(Schedules::upsert_via(&queue, "monitor:42", check(42)).await?, Upserted::Unchanged);
/// assert!(Schedules::remove_via(&queue, "monitor:42").await?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Schedules;

impl Schedules {
    /// Stores the schedule `id`, or changes it, through the default queue (see
    /// [`PendingDispatch::send`](crate::PendingDispatch::send)). Idempotent: the same
    /// definition again changes nothing. The schedule's own `.id(..)` is replaced by `id`.
    pub async fn upsert(id: impl Into<String>, schedule: Schedule) -> Result<Upserted> {
        upsert(&dispatcher::resolve(None)?, id.into(), schedule).await
    }

    /// [`upsert`](Self::upsert) through `queue`.
    pub async fn upsert_via(
        queue: impl AsRef<Dispatcher>,
        id: impl Into<String>,
        schedule: Schedule,
    ) -> Result<Upserted> {
        upsert(queue.as_ref(), id.into(), schedule).await
    }

    /// Removes the stored schedule `id` (its state included); `false` if there was none.
    /// A run queued already stays queued.
    pub async fn remove(id: &str) -> Result<bool> {
        remove(&dispatcher::resolve(None)?, id).await
    }

    /// [`remove`](Self::remove) through `queue`.
    pub async fn remove_via(queue: impl AsRef<Dispatcher>, id: &str) -> Result<bool> {
        remove(queue.as_ref(), id).await
    }
}

async fn upsert(dispatcher: &Dispatcher, id: String, schedule: Schedule) -> Result<Upserted> {
    dispatcher.needs_groups("stored schedules (their state is kept in group counters)")?;
    let storage = dispatcher.storage();
    if !storage.capabilities().claims {
        return Err(Error::NotSupported {
            driver: storage.driver(),
            operation: "stored schedules (their timers are unique jobs)",
        });
    }
    let schedule = schedule.id(id).check()?;
    let bytes = serde_json::to_vec(&Definition::of(&schedule)?)
        .map_err(|e| Error::Payload(format!("schedule {}: {e}", schedule.id_str())))?;
    let def = hash(&bytes);
    let group = schedule.group();
    for _ in 0..3 {
        let old = dispatcher.counters(&group).await?.get("def");
        if old == def {
            return Ok(Upserted::Unchanged);
        }
        // The readable copy: it holds `old` (or nothing, stored by an older version);
        // anything else is a change made between the two reads.
        let readable = Readable::read(dispatcher, schedule.id_str()).await?;
        if readable.def() != old && readable.def() != 0 {
            continue;
        }
        // Due at once: the first worker to see it sets the schedule's first tick.
        let timer = NewJob::new(TIMERS, "schedule", bytes.clone())
            .unique(Unique::new(format!("{group}#{def}")));
        let guard = Guard::new(&group, "def", old, def);
        let copy = Effect::Count {
            group: def_group(schedule.id_str()),
            deltas: readable.deltas_to(def, &bytes),
        };
        if dispatcher
            .groups()?
            .apply_if(guard, vec![Effect::Push(timer), copy])
            .await?
        {
            return Ok(if old == 0 {
                Upserted::Created
            } else {
                Upserted::Changed
            });
        }
    }
    Err(Error::Config(format!(
        "schedule {}: changed by others three times while this change was made; try again",
        schedule.id_str()
    )))
}

async fn remove(dispatcher: &Dispatcher, id: &str) -> Result<bool> {
    let group = format!("schedule:{id}");
    let groups = dispatcher.groups()?;
    let old = dispatcher.counters(&group).await?.get("def");
    if old == 0 {
        return Ok(false);
    }
    let readable = Readable::read(dispatcher, id).await?;
    let mut effects = Vec::new();
    if readable.def() == old {
        effects.push(Effect::Count {
            group: def_group(id),
            deltas: readable.deltas_to(0, &[]),
        });
    }
    if readable.def() != old && readable.def() != 0
        || !groups
            .apply_if(Guard::new(&group, "def", old, 0), effects)
            .await?
    {
        return Err(Error::Config(format!(
            "schedule {id}: changed by another process while it was removed; try again"
        )));
    }
    groups.remove(&group).await?;
    groups.remove(&def_group(id)).await?;
    Ok(true)
}

/// Reserves the due timers, claims their schedules' ticks, and puts each timer back until
/// its next tick (or drops it: a changed or removed schedule, one that has ended). Returns
/// how many timers it handled.
pub(crate) async fn run_timers(dispatcher: &Dispatcher) -> Result<usize> {
    let storage = dispatcher.storage();
    // A plain read first: a reservation is a locking read, and on MySQL/MariaDB one that
    // finds nothing still locks the next index entry (another queue's first job) for a
    // moment, which would make this worker's own next reservation skip that job.
    if let Ok(inspect) = storage.inspect() {
        if inspect.oldest_available(TIMERS).await?.is_none() {
            return Ok(0);
        }
    }
    let request = ReserveRequest::new([TIMERS], TIMER_LEASE, TIMERS_PER_CALL);
    let timers = storage.reserve(&request).await?;
    let n = timers.len();
    let mut settles = Vec::with_capacity(n);
    for timer in timers {
        let lease = timer.lease;
        let schedule = serde_json::from_slice::<Definition>(&timer.payload)
            .map_err(|e| Error::Payload(e.to_string()))
            .and_then(Definition::schedule);
        let schedule = match schedule {
            Ok(schedule) => schedule,
            Err(e) => {
                tracing::warn!(error = %e, "a stored schedule cannot be read: moved to the failed store");
                settles.push(Settle::fail(
                    lease,
                    format!("stored schedule cannot be read: {e}"),
                ));
                continue;
            }
        };
        let def = dispatcher.counters(&schedule.group()).await?.get("def");
        if def != hash(&timer.payload) {
            // Changed (a newer timer holds it) or removed.
            settles.push(Settle::ack(lease));
            continue;
        }
        let settle = match tick(dispatcher, &schedule).await {
            Ok(Look::Next(at)) => Settle::release(
                lease,
                at.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            ),
            Ok(Look::Paused) => Settle::release(lease, PAUSED_NAP),
            Ok(Look::Ended) => Settle::ack(lease),
            Err(e) => {
                tracing::debug!(schedule = schedule.id_str(), error = %e, "stored schedule tick failed");
                Settle::release(lease, Duration::from_secs(1))
            }
        };
        settles.push(settle);
    }
    if !settles.is_empty() {
        storage.settle(settles, None).await?;
    }
    Ok(n)
}

#[cfg(test)]
pub(super) fn tests_words(bytes: &[u8]) -> Vec<i64> {
    words(bytes)
}

#[cfg(test)]
pub(super) fn tests_unwords(words: &[i64], len: usize) -> Vec<u8> {
    unwords(words, len)
}
