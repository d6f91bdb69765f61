//! Admitting a reserved job under its [limit](crate::limit): a rate's token taken or booked
//! (GCRA on the key's `tat` counter, a compare-and-set), a concurrency slot taken (a lock
//! owned by the job's lease), a paused key honoured.
//!
//! The state of a key lives in the group `limit:{name}[:{key}]`: counter `tat` (the
//! theoretical arrival time of the next start, Unix ms) and `blocked` (paused until, Unix
//! ms, by [`JobError::rate_limited`](crate::JobError::rate_limited)). A job that books a
//! later token has it in the group `limit-booking:{job id}` (counter `at`, Unix ms), written
//! by the same compare-and-set that takes the token and removed when the job runs; the slots
//! of a concurrency limit are the locks `limit:{name}[:{key}]#{i}`. A queue's limit is named
//! `queue/{queue}` (its booking group ends in `:queue`), and is checked before the job's own.

use std::time::{Duration, SystemTime};

use crate::limit::{JobLimit, Limit, RateLimit};
use crate::storage::{counter, unix_millis, Effect, Guard, Reserved, Storage, StorageExt};

/// How many times a compare-and-set lost to another worker is tried again before the job is
/// put back for a moment instead.
const CAS_TRIES: usize = 8;

/// What becomes of a reserved job under its limit.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Run it (holding this concurrency slot, if any).
    Run(Option<String>),
    /// Put it back for this long, not counting the attempt.
    Wait(Duration),
    /// It would wait longer than it may: fail it for good with this reason.
    Fail(String),
}

/// The group that holds the time of a job's booked token: `limit-booking:{job id}` for the
/// job's own limit, with `:queue` after it for its queue's limit.
fn booking(job: &Reserved, of_queue: bool) -> String {
    if of_queue {
        format!("limit-booking:{}:queue", job.lease.job_id)
    } else {
        format!("limit-booking:{}", job.lease.job_id)
    }
}

/// How early a job with a booked token may start (clocks and timers are not exact).
const EARLY: i64 = 5;

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Admits `job` under `rule`, as the limit `limit` of its envelope names it. `lease` is the
/// worker's lease length (a slot is held for as long), `retry` how long a job waiting for a
/// slot waits before it looks again.
#[allow(clippy::too_many_arguments)]
pub(super) async fn admit(
    storage: &dyn Storage,
    gates: &super::Gates,
    job: &Reserved,
    limit: &JobLimit,
    rule: &Limit,
    lease: Duration,
    retry: Duration,
    dispatched_at: i64,
    of_queue: bool,
) -> crate::Result<Admission> {
    match rule {
        Limit::Rate(rate) => admit_rate(storage, job, limit, rate, dispatched_at, of_queue).await,
        Limit::Concurrent(n) => {
            let slot = Slot {
                n: *n,
                lease,
                retry,
            };
            admit_slot(storage, gates, job, limit, slot, dispatched_at).await
        }
    }
}

async fn admit_rate(
    storage: &dyn Storage,
    job: &Reserved,
    limit: &JobLimit,
    rate: &RateLimit,
    dispatched_at: i64,
    of_queue: bool,
) -> crate::Result<Admission> {
    let groups = storage.groups()?;
    let bucket = limit.bucket();
    let interval = rate.interval_ms();
    let tolerance = interval * i64::from(rate.burst.max(1) - 1);
    // A job that booked its token runs when it comes back at its time, and the booking is
    // gone. (One that comes back early, because its worker died before putting it back and
    // its lease ran out, waits for its time.) The key's counters are read at the same time,
    // for a job that has no booking.
    let booking_group = booking(job, of_queue);
    let (booked, counters) =
        futures::future::join(groups.counters(&booking_group), groups.counters(&bucket)).await;
    let at = counter(&booked?, "at");
    if at > 0 {
        let now = now_ms();
        if at > now + EARLY {
            return Ok(Admission::Wait(millis(at - now)));
        }
        groups.remove(&booking_group).await?;
        return Ok(Admission::Run(None));
    }
    let mut counters = Some(counters?);
    for _ in 0..CAS_TRIES {
        let counters = match counters.take() {
            Some(read) => read,
            None => groups.counters(&bucket).await?,
        };
        let (tat, blocked) = (counter(&counters, "tat"), counter(&counters, "blocked"));
        let now = now_ms();
        // The first moment this job may start: not before the key is unpaused, and not
        // before a token is free.
        let start = now.max(blocked).max(tat - tolerance);
        let wait = start - now;
        if let Some(reason) = too_late(limit, dispatched_at, start) {
            return Ok(Admission::Fail(format!(
                "throttled by limit `{limit}` ({}): its next free start is in {}, {reason}",
                Limit::Rate(*rate),
                humantime::format_duration(millis(wait)),
            )));
        }
        // The token at `start` is this job's: booked in the same step that takes it, and the
        // job runs when it comes back then.
        let guard = Guard::new(&bucket, "tat", tat, tat.max(start) + interval);
        let book = if wait > 0 {
            vec![Effect::Count {
                group: booking_group.clone(),
                deltas: vec![("at".to_owned(), start)],
            }]
        } else {
            Vec::new()
        };
        if !groups.apply_if(guard, book).await? {
            continue;
        }
        if wait <= 0 {
            return Ok(Admission::Run(None));
        }
        return Ok(Admission::Wait(millis(wait)));
    }
    Ok(Admission::Wait(contention()))
}

/// Why a job whose earliest start is `start` (Unix ms) fails: it is later than its
/// `max_throttle_wait` after its dispatch. `None`: it may wait.
fn too_late(limit: &JobLimit, dispatched_at: i64, start: i64) -> Option<String> {
    let max = limit.max_wait_ms?;
    let deadline = dispatched_at.saturating_add(i64::try_from(max).unwrap_or(i64::MAX));
    (dispatched_at > 0 && start > deadline).then(|| {
        format!(
            "{} after its dispatch: later than its max_throttle_wait of {}",
            humantime::format_duration(millis(start - dispatched_at)),
            humantime::format_duration(Duration::from_millis(max)),
        )
    })
}

/// A short, random wait after losing every compare-and-set to other workers.
fn contention() -> Duration {
    Duration::from_millis(20 + rand::random::<u64>() % 80)
}

/// A concurrency limit's size, how long a slot is held, how long a job waits to look again.
struct Slot {
    n: u32,
    lease: Duration,
    retry: Duration,
}

async fn admit_slot(
    storage: &dyn Storage,
    gates: &super::Gates,
    job: &Reserved,
    limit: &JobLimit,
    Slot { n, lease, retry }: Slot,
    dispatched_at: i64,
) -> crate::Result<Admission> {
    let bucket = limit.bucket();
    let now = now_ms();
    if let Ok(groups) = storage.groups() {
        // Whether the key is paused, from a copy read at most `LOOSE_GATE` ago: a pause
        // reaches other workers that much later (the worker that pauses a key forgets its
        // copies).
        let counters = match gates.fresh(&bucket) {
            Some(counters) => counters,
            None => {
                let counters = groups.counters(&bucket).await?;
                gates.store(&bucket, counters.clone());
                counters
            }
        };
        let blocked = counter(&counters, "blocked");
        if blocked > now {
            if let Some(reason) = too_late(limit, dispatched_at, blocked) {
                return Ok(Admission::Fail(format!(
                    "limit `{limit}` is paused (rate limited) until {reason}"
                )));
            }
            return Ok(Admission::Wait(millis(blocked - now)));
        }
    }
    // From a random slot, so workers racing for a key do not all try slot 0 first.
    let n = n.max(1);
    let first = rand::random::<u32>() % n;
    for i in 0..n {
        let slot = format!("{bucket}#{}", (first + i) % n);
        if storage.lock(&slot, &job.lease.token, lease).await? {
            return Ok(Admission::Run(Some(slot)));
        }
    }
    if let Some(reason) = too_late(limit, dispatched_at, now) {
        return Ok(Admission::Fail(format!(
            "throttled by limit `{limit}` (concurrent({n})): no slot free {reason}"
        )));
    }
    // Jittered, so the jobs waiting for a key do not all look at once.
    Ok(Admission::Wait(
        retry.mul_f64(0.75 + rand::random::<f64>() * 0.5),
    ))
}

/// Pauses `limit`'s key until `until` from now for every worker (a job saw an HTTP 429):
/// raises its `blocked` counter, never lowers it.
pub(super) async fn block(
    storage: &dyn Storage,
    limit: &JobLimit,
    until: Duration,
) -> crate::Result<()> {
    let groups = storage.groups()?;
    let bucket = limit.bucket();
    let until = now_ms() + i64::try_from(until.as_millis()).unwrap_or(i64::MAX / 4);
    for _ in 0..CAS_TRIES {
        let blocked = counter(&groups.counters(&bucket).await?, "blocked");
        if blocked >= until {
            return Ok(());
        }
        if groups
            .apply_if(Guard::new(&bucket, "blocked", blocked, until), Vec::new())
            .await?
        {
            return Ok(());
        }
    }
    Ok(())
}
