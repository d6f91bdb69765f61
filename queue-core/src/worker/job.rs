//! One reserved job, from its reservation to its settlement: decode, lock, run under its
//! timeout and its lease keeper, then settle.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use super::lease::{self, Held, Lost};
use super::limit::Admission;
use super::metrics::{self, Counted};
use super::Shared;
use crate::batch::CurrentBatch;
use crate::envelope::{After, DecodeError, Envelope, Step};
use crate::events::{JobEvent, JobEventKind};
use crate::job::{JobContext, JobError, Retry};
use crate::limit::JobLimit;
use crate::registry::Handler;
use crate::status::{Ended, JobState, Tracker, KEEP_UNSUCCESSFUL};
use crate::storage::{
    unix_millis, Effect, Outcome, RecordKey, Reserved, Settle, Settled, StorageExt,
};

/// How long a copy of a group's counters serves a loose skip gate (a batch's cancel flag):
/// other workers see a cancel at most this late; this worker's own failures clear the copy.
pub(super) const LOOSE_GATE: Duration = Duration::from_millis(250);

tokio::task_local! {
    /// Set while a job's body runs (in the task the worker spawns for it): where the body
    /// panicked, when a panic hook noted it.
    static BODY_PANIC: Arc<std::sync::OnceLock<String>>;
}

/// For a panic hook: whether the panic happening now is in a job's body, which the worker
/// catches and reports in its own log line (noting `location` for that line). False for a
/// panic anywhere else, a task the body spawned included.
#[cfg(feature = "cli")]
pub(crate) fn job_body_panicked(location: Option<String>) -> bool {
    BODY_PANIC
        .try_with(|noted| {
            if let Some(location) = location {
                let _ = noted.set(location);
            }
        })
        .is_ok()
}

/// How a job's reservation ends, before its settlement is sent.
struct Finish {
    /// What to settle; `None` when the lease is gone and there is nothing to settle.
    settle: Option<Settle>,
    /// What to count and log once the settlement is applied.
    report: Report,
    /// The locks to release after settling: the `without_overlapping` lock, the limit's slot.
    locks: Vec<String>,
    /// A group to delete once the settlement is applied: the count of a job's errors
    /// (`max_exceptions`) when it ends.
    forget: Option<String>,
    /// What its status record says besides its outcome.
    lived: Lived,
}

/// What a job's status record says besides its outcome, as far as it got.
#[derive(Default)]
struct Lived {
    group: Option<crate::status::Group>,
    dispatched_at: Option<i64>,
    started_at: Option<i64>,
    tracker: Option<Arc<Tracker>>,
    cancel_requested: bool,
}

/// How long a cancelled job's body has to return before it is aborted.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

enum Report {
    Done {
        name: String,
        took: Duration,
    },
    Retried {
        name: String,
        took: Option<Duration>,
        error: Option<String>,
    },
    Released {
        name: String,
    },
    Interrupted {
        name: String,
    },
    Failed {
        name: String,
        reason: String,
    },
    Stopped {
        name: String,
        why: Lost,
    },
    /// A workflow node skipped without running: an edge into it was not met.
    Bypassed {
        name: String,
    },
    /// The job discarded itself ([`JobError::discard`]).
    Discarded {
        name: String,
        reason: String,
    },
    /// Someone cancelled the job while it ran ([`crate::Queue::cancel`]).
    Cancelled {
        name: String,
    },
    Skipped,
}

/// Runs one reserved job to its end. `asked` is when its reservation was asked for: its lease
/// runs from a moment after that. `slot` is its concurrency slot, given back as soon as the
/// body is done, before the settlement goes to the store, so the next job can be fetched in
/// the same round trip.
pub(super) async fn process(
    shared: Arc<Shared>,
    job: Reserved,
    asked: Instant,
    slot: OwnedSemaphorePermit,
) {
    let span = job_span(&job);
    crate::trace::attach(&job.payload, &span);
    process_in_span(shared, job, asked, slot)
        .instrument(span)
        .await
}

/// The span of one job's run, named and filled after OpenTelemetry's messaging conventions
/// (a `process` operation of a consumer), so a tracing-opentelemetry layer exports it as
/// such; every line the worker and the job's body log while it runs is inside it.
/// `job.outcome` is filled once the job's end is settled.
fn job_span(job: &Reserved) -> tracing::Span {
    tracing::info_span!(
        "job",
        otel.name = %format_args!("process {}", job.lease.queue),
        otel.kind = "consumer",
        messaging.system = "runall",
        messaging.operation.type = "process",
        messaging.destination.name = %job.lease.queue,
        messaging.message.id = %job.lease.job_id,
        job.name = %job.name,
        job.attempt = job.attempts,
        job.outcome = tracing::field::Empty,
    )
}

async fn process_in_span(
    shared: Arc<Shared>,
    job: Reserved,
    asked: Instant,
    slot: OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let _busy = metrics::Busy::start();
    let _running = shared
        .running
        .start(&job.lease.job_id.0, &job.name, &job.lease.queue);
    let mut finish = prepare_and_run(&shared, &job, asked).await;
    if let Some(effect) = status_record(&shared, &job, &finish) {
        if let Some(settle) = finish.settle.as_mut() {
            settle.effects.push(effect);
        }
    }
    if let Some(settle) = finish.settle.as_mut() {
        if let Some(effect) = resealed(&shared, &job, &settle.outcome) {
            settle.effects.push(effect);
        }
    }
    // A failure whose step changes other jobs (a batch failing fast, a workflow's nodes
    // marked to skip) keeps its slot until the step is applied: the next job this worker
    // starts, which may be one of those, then sees it. Failures are rare; every other slot
    // is given back at once.
    let marks = finish.settle.as_ref().is_some_and(|s| {
        matches!(s.outcome, Outcome::Fail { .. }) && s.effects.iter().any(|e| !e.needs_track())
    });
    let slot = if marks {
        Some(slot)
    } else {
        drop(slot);
        None
    };
    let settled = match finish.settle {
        Some(settle) => shared.settle(settle, started.elapsed()).await,
        None => None,
    };
    if marks {
        // What this worker read of the groups may be out of date now.
        shared.gates.clear();
    }
    drop(slot);
    report(&shared, &job, finish.report, settled);
    if let (Some(group), Some(Settled::Applied)) = (finish.forget, settled) {
        if let Ok(groups) = shared.storage.groups() {
            if let Err(e) = groups.remove(&group).await {
                warn!(error = %e, group = %group, "could not delete the count of a finished job's errors");
            }
        }
    }
    for key in finish.locks {
        if let Err(e) = shared.storage.unlock(&key, &job.lease.token).await {
            warn!(error = %e, lock = %key, "could not release lock; it expires with its lease");
        }
    }
}

/// The record of a job's status when its settle ends it, written by that settle: for a job
/// that succeeded only if the worker keeps finished jobs. `None` on a store without jobs by
/// id, and for a settle that puts the job back.
fn status_record(shared: &Shared, job: &Reserved, finish: &Finish) -> Option<Effect> {
    shared.storage.capabilities().track?;
    let settle = finish.settle.as_ref()?;
    let keep = shared.options.keep_finished;
    let (state, name, error) = match (&settle.outcome, &finish.report) {
        (Outcome::Ack, Report::Done { name, .. }) => (JobState::Succeeded, name, None),
        (Outcome::Ack, Report::Discarded { name, reason }) => {
            (JobState::Discarded, name, Some(reason.clone()))
        }
        (Outcome::Ack, Report::Bypassed { name }) => (JobState::Skipped, name, None),
        (Outcome::Ack, Report::Cancelled { name }) => (
            JobState::Cancelled,
            name,
            Some("cancelled while it ran".to_owned()),
        ),
        (Outcome::Fail { reason }, Report::Failed { name, .. }) => {
            (JobState::Failed, name, Some(reason.clone()))
        }
        _ => return None,
    };
    let ttl = match state {
        JobState::Succeeded => keep?,
        _ => keep.unwrap_or(KEEP_UNSUCCESSFUL),
    };
    let lived = &finish.lived;
    let (progress, output) = match &lived.tracker {
        Some(tracker) => tracker.take(),
        None => (None, None),
    };
    let ended = Ended {
        state,
        queue: job.lease.queue.clone(),
        name: name.clone(),
        attempts: job.attempts,
        error: error.map(crate::status::cut_error),
        output,
        progress,
        dispatched_at: lived.dispatched_at.filter(|at| *at > 0),
        started_at: lived.started_at,
        finished_at: unix_millis(SystemTime::now()),
        cancel_requested: lived.cancel_requested,
        group: lived.group.clone(),
    };
    Some(Effect::Record {
        kind: RecordKey::STATUS.to_owned(),
        value: ended.encode(),
        ttl,
    })
}

/// The job's new payload, sealed again with the active key, when it goes back to its queue
/// and some of it was sealed with an older key (a key rotation): its next run, and the
/// failed store if it ends there, hold it under the active key. Only on stores that take a
/// new payload in the settle ([`Capabilities::rewrite`](crate::storage::Capabilities::rewrite)).
fn resealed(shared: &Shared, job: &Reserved, outcome: &Outcome) -> Option<Effect> {
    if !matches!(outcome, Outcome::Retry { .. } | Outcome::Release { .. }) {
        return None;
    }
    if !shared.storage.capabilities().rewrite {
        return None;
    }
    let keys = shared.dispatcher.settings().keys().ok()?;
    let payload = keys.reseal(&job.payload)?;
    tracing::debug!(
        job = %job.name,
        id = %job.lease.job_id,
        key = keys.active(),
        "sealed again with the active key"
    );
    Some(Effect::Payload(payload))
}

async fn prepare_and_run(shared: &Shared, job: &Reserved, asked: Instant) -> Finish {
    let lease = &job.lease;
    let length = shared.options.lease;
    let mut lease_until = asked + length;
    // A job that starts half a lease or more after it was reserved (the reply came back late,
    // or this process was paused in between: SIGSTOP, a long GC pause, a VM migration) may
    // have lost its lease already, and another worker may be running it: renew the lease
    // first, and leave the job alone if that is refused.
    let waited = asked.elapsed();
    if waited >= length / 2 {
        let renewing = Instant::now();
        if let Err(e) = shared.storage.extend_one(lease, length).await {
            warn!(
                job = %job.name,
                id = %lease.job_id,
                waited = ?waited,
                error = %e,
                "a job reserved too long ago to still hold its lease (was this worker paused?) \
                 could not be renewed: not running it, another worker has it or will"
            );
            return Finish {
                settle: None,
                report: Report::Skipped,
                locks: Vec::new(),
                forget: None,
                lived: Lived::default(),
            };
        }
        lease_until = renewing + length;
    }
    let mut envelope = match Envelope::decode(&job.payload) {
        Ok(envelope) => envelope,
        Err(DecodeError::Newer {
            version,
            name,
            dispatched_at,
        }) => {
            let what = DecodeError::Newer {
                version,
                name: name.clone(),
                dispatched_at,
            }
            .to_string();
            return defer_unknown(shared, job, name, what, dispatched_at);
        }
        Err(DecodeError::Bad(reason)) => {
            return fail(job, job.name.clone(), format!("bad payload: {reason}"));
        }
    };
    // An encrypted job is sealed whole, its secret fields with it; any other job's secret
    // fields are sealed one by one.
    let sealed_whole = envelope.sealed.is_some();
    if let Some(sealed) = envelope.sealed.take() {
        let keys = match shared.dispatcher.settings().keys() {
            Ok(keys) => keys,
            Err(e) => {
                let what = format!(
                    "job `{}` is encrypted and this worker has no keys ({e})",
                    envelope.name
                );
                return defer_unknown(shared, job, envelope.name, what, envelope.dispatched_at);
            }
        };
        let opened = keys.open(&envelope.name, &sealed).and_then(|plain| {
            let text =
                String::from_utf8(plain).map_err(|_| "the opened data is not UTF-8".to_owned())?;
            serde_json::value::RawValue::from_string(text)
                .map_err(|_| "the opened data is not JSON".to_owned())
        });
        match opened {
            Ok(data) => envelope.data = data,
            Err(reason) => {
                return fail(
                    job,
                    envelope.name,
                    format!("undecryptable (never run, not retried): {reason}"),
                );
            }
        }
    }
    if !sealed_whole && crate::secret::may_hold(envelope.data.get()) {
        let keys = match shared.dispatcher.settings().keys() {
            Ok(keys) => keys,
            Err(e) => {
                let what = format!(
                    "job `{}` has secret fields and this worker has no keys ({e})",
                    envelope.name
                );
                return defer_unknown(shared, job, envelope.name, what, envelope.dispatched_at);
            }
        };
        match crate::secret::open(keys, &envelope.name, &envelope.data) {
            Ok(data) => envelope.data = data,
            Err(reason) => {
                return fail(
                    job,
                    envelope.name,
                    format!("a secret field is undecryptable (never run, not retried): {reason}"),
                );
            }
        }
    }
    let after = envelope.after.clone();
    let dispatched_at = envelope.dispatched_at;
    if let Some(after) = &after {
        if let Some(mut finish) = skip_if(shared, job, &envelope.name, after).await {
            finish.lived.dispatched_at = Some(dispatched_at);
            finish.lived.group = crate::status::Group::of(after);
            return finish;
        }
    }
    let mut finish = run_decoded(shared, job, envelope, lease_until, length).await;
    finish.lived.dispatched_at = Some(dispatched_at);
    finish.lived.group = after.as_ref().and_then(crate::status::Group::of);
    finish.with_after(after.as_ref(), job)
}

/// A workflow node one of whose edges was not met is settled as skipped, without running:
/// its own effects for that case tell the nodes after it. `None`: run it.
async fn skip_if(shared: &Shared, job: &Reserved, name: &str, after: &After) -> Option<Finish> {
    let gate = after.skip_if.as_ref()?;
    let cached = gate
        .loose
        .then(|| shared.gates.fresh(&gate.group))
        .flatten();
    let counters = match (cached, shared.storage.groups()) {
        (Some(counters), _) => Ok(counters),
        (None, Ok(groups)) => groups.counters(&gate.group).await.inspect(|counters| {
            if gate.loose {
                shared.gates.store(&gate.group, counters.clone());
            }
        }),
        (None, Err(e)) => Err(e),
    };
    match counters {
        Ok(counters) => {
            let marked = counters
                .iter()
                .any(|(counter, value)| *counter == gate.counter && *value > 0);
            marked.then(|| {
                let mut settle = Settle::ack(job.lease.clone());
                settle.effects = after.skipped.iter().map(Step::effect).collect();
                settle.effects.extend(after.again(job));
                Finish {
                    settle: Some(settle),
                    report: Report::Bypassed {
                        name: name.to_owned(),
                    },
                    locks: Vec::new(),
                    forget: None,
                    lived: Lived::default(),
                }
            })
        }
        Err(e) => {
            warn!(error = %e, job = %name, id = %job.lease.job_id, "could not read whether the job is to be skipped: putting it back");
            Some(release(job, name.to_owned(), shared.options.lock_retry))
        }
    }
}

/// [`prepare_and_run`] once the envelope is read.
async fn run_decoded(
    shared: &Shared,
    job: &Reserved,
    envelope: Envelope,
    lease_until: Instant,
    length: Duration,
) -> Finish {
    let lease = &job.lease;
    let Some(handler) = shared.handlers.get(&envelope.name) else {
        let what = crate::Error::UnknownJob {
            name: envelope.name.clone(),
        }
        .to_string();
        return defer_unknown(
            shared,
            job,
            envelope.name.clone(),
            what,
            envelope.dispatched_at,
        );
    };
    let max_attempts = envelope
        .tries
        .or(handler.tries)
        .unwrap_or(shared.options.tries)
        .max(1);
    if job.attempts > max_attempts {
        let reason = format!(
            "attempts exhausted: attempt {} of {max_attempts} never finished (its worker stopped \
             or lost its lease while running it)",
            job.attempts - 1
        );
        return fail(job, envelope.name, reason);
    }

    let mut locks = Vec::new();
    if let Some(key) = &envelope.lock {
        let locking = Instant::now();
        match shared.storage.lock(key, &lease.token, length).await {
            Ok(true) => locks.push((key.clone(), locking + length)),
            Ok(false) => {
                // Where the store parks it, the job waits for the key's release (woken at
                // once), at most its own delay or the lock's life (a crashed holder's lock
                // ends within a lease); elsewhere it looks again after its delay.
                let parks = shared.storage.capabilities().park;
                let fallback = if parks {
                    length.max(shared.options.lock_retry)
                } else {
                    shared.options.lock_retry
                };
                let retry = envelope
                    .lock_retry_ms
                    .map_or(fallback, Duration::from_millis);
                debug!(job = %envelope.name, id = %lease.job_id, lock = %key, retry = ?retry, parks, "lock held: putting the job back");
                let mut finish = release(job, envelope.name, retry);
                if let (true, Some(settle)) = (parks, finish.settle.as_mut()) {
                    settle.effects.push(Effect::Park { key: key.clone() });
                }
                return finish;
            }
            Err(e) => {
                warn!(error = %e, lock = %key, "could not take lock: putting the job back");
                return release(job, envelope.name, shared.options.lock_retry);
            }
        }
    }
    // The queue's limit first, then the job's own: each admits it or puts it back.
    let queue_limit = shared
        .options
        .queue_limits
        .get(&lease.queue)
        .map(|rule| (JobLimit::of_queue(&lease.queue), Some(rule), true));
    let own_limit = envelope
        .limit
        .as_ref()
        .map(|limit| (limit.clone(), shared.options.limits.get(&limit.name), false));
    for (limit, rule, of_queue) in queue_limit.into_iter().chain(own_limit) {
        let locking = Instant::now();
        let admitted = match rule {
            Some(rule) => {
                super::limit::admit(
                    shared.storage.as_ref(),
                    &shared.gates,
                    job,
                    &limit,
                    rule,
                    length,
                    shared.options.lock_retry,
                    envelope.dispatched_at,
                    of_queue,
                )
                .await
            }
            None => {
                let what = format!("limit `{}` is not defined on this worker", limit.name);
                let mut finish = defer_unknown(
                    shared,
                    job,
                    envelope.name.clone(),
                    what,
                    envelope.dispatched_at,
                );
                finish.locks = locks.into_iter().map(|(key, _)| key).collect();
                return finish;
            }
        };
        let mut finish = match admitted {
            Ok(Admission::Run(slot)) => {
                locks.extend(slot.map(|slot| (slot, locking + length)));
                None
            }
            Ok(Admission::Wait(wait)) => {
                debug!(job = %envelope.name, id = %lease.job_id, %limit, wait = ?wait, "over its limit: putting the job back (no attempt counted)");
                Some(release(job, envelope.name.clone(), wait))
            }
            Ok(Admission::Fail(reason)) => Some(fail(job, envelope.name.clone(), reason)),
            Err(e) => {
                warn!(error = %e, %limit, "could not check the job's limit: putting it back");
                Some(release(
                    job,
                    envelope.name.clone(),
                    shared.options.lock_retry,
                ))
            }
        };
        if let Some(finish) = &mut finish {
            finish.locks = locks.iter().map(|(key, _)| key.clone()).collect();
        }
        if let Some(finish) = finish {
            return finish;
        }
    }
    if job.attempts > 1 && cancel_marked(shared, job).await {
        info!(job = %envelope.name, id = %lease.job_id, "job cancelled while it waited for its retry: not running it");
        return Finish {
            settle: Some(Settle::ack(lease.clone())),
            report: Report::Cancelled {
                name: envelope.name,
            },
            locks: locks.into_iter().map(|(key, _)| key).collect(),
            forget: None,
            lived: Lived {
                cancel_requested: true,
                ..Lived::default()
            },
        };
    }
    let lock_keys = locks.iter().map(|(key, _)| key.clone()).collect();
    let held = Held {
        lease: lease.clone(),
        lease_until,
        locks,
    };
    let mut finish = run(shared, job, &envelope, handler, max_attempts, held).await;
    finish.locks = lock_keys;
    finish
}

/// Whether someone asked to cancel the job (read before a retried attempt runs: a cancel
/// that met the job running, which then failed before its heartbeat saw it).
async fn cancel_marked(shared: &Shared, job: &Reserved) -> bool {
    let Ok(track) = shared.storage.track() else {
        return false;
    };
    let key = RecordKey::new(job.lease.job_id.clone(), RecordKey::CANCEL);
    match track.records(std::slice::from_ref(&key)).await {
        Ok(records) => records.first().is_some_and(Option::is_some),
        Err(e) => {
            warn!(error = %e, id = %job.lease.job_id, "could not read whether the job was cancelled: running it (a cancel is seen on its heartbeat)");
            false
        }
    }
}

impl Finish {
    /// Adds the effects the job's envelope asks for on the outcome it settles with: its
    /// chain's next link released, the links after a failure skipped, its counters. They go
    /// in the job's own settle step, so they happen exactly when its transition does.
    /// A copy of the job is held again when it ends, if its envelope asks for it.
    fn with_after(mut self, after: Option<&After>, job: &Reserved) -> Finish {
        let (Some(after), Some(settle)) = (after, self.settle.as_mut()) else {
            return self;
        };
        let steps = match settle.outcome {
            // A discarded job ends as a skipped one (a workflow node, a batch member), or
            // where nothing says how a skipped one ends (a chain link), as a failed one: what
            // comes after it does not run.
            Outcome::Ack
                if matches!(
                    self.report,
                    Report::Discarded { .. } | Report::Cancelled { .. }
                ) =>
            {
                if after.skipped.is_empty() {
                    &after.failed
                } else {
                    &after.skipped
                }
            }
            Outcome::Ack => &after.succeeded,
            Outcome::Fail { .. } => &after.failed,
            Outcome::Retry { .. } | Outcome::Release { .. } => return self,
        };
        settle.effects.extend(steps.iter().map(Step::effect));
        settle.effects.extend(after.again(job));
        // A workflow node that succeeded keeps its output for the nodes after it, in the
        // same step that lets them run.
        if let (Outcome::Ack, Report::Done { .. }, Some(node)) =
            (&settle.outcome, &self.report, &after.node)
        {
            let output = self.lived.tracker.as_ref().and_then(|t| t.output());
            if let (Some(value), Some(group)) = (output, crate::workflow::group_of(after)) {
                settle.effects.push(Effect::Value {
                    group,
                    name: node.clone(),
                    value,
                });
            }
        }
        self
    }
}

fn fail(job: &Reserved, name: String, reason: String) -> Finish {
    Finish {
        settle: Some(Settle::fail(job.lease.clone(), reason.clone())),
        report: Report::Failed { name, reason },
        locks: Vec::new(),
        forget: None,
        lived: Lived::default(),
    }
}

fn release(job: &Reserved, name: String, delay: Duration) -> Finish {
    Finish {
        settle: Some(Settle::release(job.lease.clone(), delay)),
        report: Report::Released { name },
        locks: Vec::new(),
        forget: None,
        lived: Lived::default(),
    }
}

/// A job this worker cannot run (an unknown name, a newer envelope) goes back for another
/// worker while it is younger than the window, and to the failed store after.
fn defer_unknown(
    shared: &Shared,
    job: &Reserved,
    name: String,
    what: String,
    dispatched_at: i64,
) -> Finish {
    let window = shared.options.unknown_job_window;
    let age = Duration::from_millis(
        u64::try_from(unix_millis(SystemTime::now()).saturating_sub(dispatched_at)).unwrap_or(0),
    );
    if dispatched_at > 0 && age < window {
        let delay = (window - age).min(Duration::from_secs(30));
        info!(
            job = %name,
            id = %job.lease.job_id,
            retry_in = ?delay,
            "{what}: putting it back for a worker that knows it (a rolling deploy?)"
        );
        return release(job, name, delay);
    }
    let reason = format!(
        "{what}; it was put back for {} after its dispatch for a worker that knows it, and none took it",
        humantime::format_duration(window)
    );
    fail(job, name, reason)
}

enum Ran {
    Done,
    Failed(JobError),
    Shutdown,
    Stopped(Lost),
    Cancelled,
}

async fn run(
    shared: &Shared,
    job: &Reserved,
    envelope: &Envelope,
    handler: &Handler,
    max_attempts: u32,
    held: Held,
) -> Finish {
    let lease = &job.lease;
    let name = envelope.name.clone();
    let track = shared.storage.capabilities().track.is_some();
    let tracker = Arc::new(Tracker::new(
        track.then(|| shared.storage.clone()),
        lease.clone(),
    ));
    let requested = CancellationToken::new();
    let ctx = JobContext {
        job_id: lease.job_id.clone(),
        name: name.clone(),
        queue: lease.queue.clone(),
        attempt: job.attempts,
        max_attempts,
        release: Arc::default(),
        cancel: CancellationToken::new(),
        dispatched_at: crate::storage::from_unix_millis(envelope.dispatched_at),
        batch: envelope
            .after
            .as_ref()
            .and_then(|after| CurrentBatch::of(after, &shared.dispatcher, &shared.gates)),
        workflow: envelope
            .after
            .as_ref()
            .and_then(|after| crate::workflow::CurrentWorkflow::of(after, &shared.dispatcher)),
        tracker: tracker.clone(),
        storage: Some(shared.storage.clone()),
    };
    let started = Instant::now();
    let started_at = unix_millis(SystemTime::now());
    let started_body = (handler.run)(&envelope.data, ctx.clone()).map(|body| {
        crate::middleware::wrap(shared.options.middleware.0.clone(), ctx.clone(), body)
    });
    let ran = match started_body {
        Err(e) => (
            Ran::Failed(JobError::fail(format!(
                "payload does not fit job `{name}`: {e}"
            ))),
            false,
        ),
        Ok(future) => {
            let timeout = envelope
                .timeout_ms
                .map(Duration::from_millis)
                .or(handler.timeout)
                .unwrap_or(shared.options.timeout);
            info!(job = %name, id = %lease.job_id, queue = %lease.queue, attempt = job.attempts, "job started");
            if job.attempts == 1 {
                let waited = envelope.waited(started_at);
                if let Some(waited) = waited {
                    let ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX / 4);
                    shared.counters.starts.fetch_add(1, Ordering::Relaxed);
                    shared.counters.wait_ms.fetch_add(ms, Ordering::Relaxed);
                    shared.counters.waits[crate::stats::Waits::bucket(ms)]
                        .fetch_add(1, Ordering::Relaxed);
                }
                metrics::wait(shared, &lease.queue, &name, waited);
            }
            shared.dispatcher.events().emit(|| {
                JobEvent::new(
                    JobEventKind::Started,
                    lease.job_id.clone(),
                    &lease.queue,
                    &name,
                    job.attempts,
                )
            });
            let mut keeper = tokio::spawn(lease::keep(
                shared.storage.clone(),
                held,
                shared.options.lease,
                requested.clone(),
            ));
            let noted = Arc::new(std::sync::OnceLock::new());
            // The body runs in a task of its own: in the job's span too.
            let future = future.instrument(tracing::Span::current());
            let mut task = match &shared.job_scope {
                Some(scope) => tokio::spawn(BODY_PANIC.scope(
                    noted.clone(),
                    crate::dispatcher::scope(scope.clone(), future),
                )),
                None => tokio::spawn(BODY_PANIC.scope(noted.clone(), future)),
            };
            let mut hard_stop = shared.hard_stop.clone();
            let mut aborted = false;
            let mut timed_out = false;
            let ran = tokio::select! {
                result = tokio::time::timeout(timeout, &mut task) => match result {
                    Ok(Ok(Ok(()))) => Ran::Done,
                    Ok(Ok(Err(e))) => Ran::Failed(e),
                    Ok(Err(join)) => match join.try_into_panic() {
                        Ok(panic) => {
                            let at = noted.get().map(|at| format!(" at {at}")).unwrap_or_default();
                            Ran::Failed(JobError::msg(format!("job panicked{at}: {}", panic_message(&*panic))))
                        }
                        Err(_) => Ran::Failed(JobError::msg("job task was cancelled")),
                    },
                    Err(_) => {
                        task.abort();
                        aborted = true;
                        timed_out = true;
                        Ran::Failed(JobError::msg(format!("job timed out after {}", humantime::format_duration(timeout))))
                    }
                },
                _ = hard_stop.wait_for(|stop| *stop) => {
                    task.abort();
                    aborted = true;
                    Ran::Shutdown
                }
                lost = &mut keeper => {
                    ctx.cancel.cancel();
                    task.abort();
                    aborted = true;
                    Ran::Stopped(lost.unwrap_or(Lost::Unconfirmed))
                }
                _ = requested.cancelled() => Ran::Cancelled,
            };
            let ran = match ran {
                Ran::Cancelled => {
                    // Someone cancelled the job: the body sees it and has a grace to return,
                    // its lease still renewed meanwhile.
                    info!(job = %name, id = %lease.job_id, "job cancelled while it runs: stopping it");
                    ctx.cancel.cancel();
                    match tokio::time::timeout(CANCEL_GRACE, &mut task).await {
                        Ok(Ok(Ok(()))) => Ran::Done,
                        Ok(_) => Ran::Cancelled,
                        Err(_) => {
                            task.abort();
                            aborted = true;
                            Ran::Cancelled
                        }
                    }
                }
                ran => ran,
            };
            keeper.abort();
            if aborted {
                // Aborting only asks: wait until the body is dropped, so that it is gone
                // before the job is reported stopped or its lock is released. A body that
                // blocks its thread cannot be dropped until it yields: wait a moment only.
                let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
            }
            (ran, timed_out)
        }
    };
    let (mut ran, timed_out) = ran;
    // A failure after a cancel reached the job ends it cancelled, not retried.
    if requested.is_cancelled() && matches!(ran, Ran::Failed(_)) {
        ran = Ran::Cancelled;
    }
    let lived = Lived {
        group: None,
        dispatched_at: None,
        started_at: Some(started_at),
        tracker: Some(tracker),
        cancel_requested: requested.is_cancelled(),
    };
    let took = started.elapsed();
    let max_exceptions = envelope.max_exceptions;
    let mut finish = match ran {
        Ran::Done => match ctx.released() {
            Some(delay) => {
                info!(job = %name, id = %lease.job_id, delay = ?delay, "job released itself");
                Finish {
                    settle: Some(Settle::retry(lease.clone(), delay)),
                    report: Report::Retried {
                        name,
                        took: None,
                        error: None,
                    },
                    locks: Vec::new(),
                    forget: None,
                    lived: Lived::default(),
                }
            }
            None => Finish {
                settle: Some(Settle::ack(lease.clone())),
                report: Report::Done { name, took },
                locks: Vec::new(),
                forget: None,
                lived: Lived::default(),
            },
        },
        Ran::Shutdown => {
            info!(job = %name, id = %lease.job_id, "interrupted by shutdown: putting it back (the attempt counts)");
            Finish {
                settle: Some(Settle::retry(lease.clone(), Duration::ZERO)),
                report: Report::Interrupted { name },
                locks: Vec::new(),
                forget: None,
                lived: Lived::default(),
            }
        }
        Ran::Cancelled => Finish {
            settle: Some(Settle::ack(lease.clone())),
            report: Report::Cancelled { name },
            locks: Vec::new(),
            forget: None,
            lived: Lived::default(),
        },
        Ran::Stopped(why) => Finish {
            settle: None,
            report: Report::Stopped { name, why },
            locks: Vec::new(),
            forget: None,
            lived: Lived::default(),
        },
        Ran::Failed(err) if err.retry() == Retry::Discard => Finish {
            settle: Some(Settle::ack(lease.clone())),
            report: Report::Discarded {
                name,
                reason: err.message().to_owned(),
            },
            locks: Vec::new(),
            forget: None,
            lived: Lived::default(),
        },
        Ran::Failed(err) if matches!(err.retry(), Retry::RateLimited(_)) => {
            let Retry::RateLimited(delay) = err.retry() else {
                unreachable!("matched above")
            };
            rate_limited(shared, job, envelope, name, delay).await
        }
        Ran::Failed(err) if matches!(err.retry(), Retry::Throttled(_)) => {
            let Retry::Throttled(delay) = err.retry() else {
                unreachable!("matched above")
            };
            info!(job = %name, id = %lease.job_id, delay = ?delay, reason = %err.message(), "held back by middleware: the job goes back (no attempt counted)");
            release(job, name, delay)
        }
        Ran::Failed(err) if timed_out && (envelope.fail_on_timeout || handler.fail_on_timeout) => {
            let reason = format!("{} (fail_on_timeout: not retried)", err.message());
            fail(job, name, reason)
        }
        Ran::Failed(err) => {
            let last = job.attempts >= max_attempts;
            let retry_until = envelope
                .retry_until_ms
                .map(Duration::from_millis)
                .or(handler.retry_until);
            let past = retry_until.filter(|until| {
                let deadline = envelope
                    .dispatched_at
                    .saturating_add(i64::try_from(until.as_millis()).unwrap_or(i64::MAX));
                envelope.dispatched_at > 0 && unix_millis(SystemTime::now()) > deadline
            });
            // The errors of the job so far, this one included, when that reaches its
            // `max_exceptions` (read only for a failure that would otherwise be retried).
            let exceeded = match (max_exceptions, err.retry()) {
                (Some(max), Retry::Backoff | Retry::After(_)) if !last && past.is_none() => {
                    let count = errors_so_far(shared, job).await.saturating_add(1);
                    (count >= i64::from(max)).then_some((count, max))
                }
                _ => None,
            };
            match err.retry() {
                Retry::Never => fail(job, name, err.message().to_owned()),
                _ if past.is_some() && !last => {
                    let reason = format!(
                        "{} (attempt {} of {max_attempts}; not retried: past its retry_until, {} \
                         after its dispatch)",
                        err.message(),
                        job.attempts,
                        humantime::format_duration(past.unwrap_or_default())
                    );
                    fail(job, name, reason)
                }
                _ if last => {
                    let reason = format!(
                        "{} (attempt {} of {max_attempts})",
                        err.message(),
                        job.attempts
                    );
                    fail(job, name, reason)
                }
                _ if exceeded.is_some() => {
                    let (count, max) = exceeded.unwrap_or_default();
                    let reason = format!(
                        "{} (attempt {} of {max_attempts}; not retried: error {count} of its \
                         max_exceptions {max})",
                        err.message(),
                        job.attempts
                    );
                    fail(job, name, reason)
                }
                retry => {
                    let delay = match retry {
                        Retry::After(delay) => delay,
                        _ => handler
                            .backoff
                            .as_ref()
                            .unwrap_or(&shared.options.backoff)
                            .delay(job.attempts),
                    };
                    warn!(
                        job = %name,
                        id = %lease.job_id,
                        attempt = job.attempts,
                        max_attempts,
                        retry_in = ?delay,
                        error = %err,
                        "job failed; will retry"
                    );
                    let mut settle = Settle::retry(lease.clone(), delay);
                    if max_exceptions.is_some() && shared.storage.capabilities().groups.is_some() {
                        // Counted in the step that retries it: a stale settle counts nothing.
                        settle = settle.effect(Effect::Count {
                            group: errors_group(job),
                            deltas: vec![(ERRORS.to_owned(), 1)],
                        });
                    }
                    Finish {
                        settle: Some(settle),
                        report: Report::Retried {
                            name,
                            took: Some(took),
                            error: Some(err.message().to_owned()),
                        },
                        locks: Vec::new(),
                        forget: None,
                        lived: Lived::default(),
                    }
                }
            }
        }
    };
    // A job that ends after errors counted for its `max_exceptions` leaves their count
    // behind: delete it once the end is applied.
    let ends = finish
        .settle
        .as_ref()
        .is_some_and(|s| matches!(s.outcome, Outcome::Ack | Outcome::Fail { .. }));
    if max_exceptions.is_some() && job.attempts > 1 && ends {
        finish.forget = Some(errors_group(job));
    }
    finish.lived = lived;
    finish
}

/// The group counting a job's errors for its `max_exceptions`, and its counter.
fn errors_group(job: &Reserved) -> String {
    format!("errors:{}", job.lease.job_id)
}
const ERRORS: &str = "n";

/// The errors counted for `job` before this attempt (0 when none, or when they cannot be
/// read: the job then runs again, bounded by its tries).
async fn errors_so_far(shared: &Shared, job: &Reserved) -> i64 {
    if job.attempts <= 1 {
        return 0;
    }
    let Ok(groups) = shared.storage.groups() else {
        return 0;
    };
    match groups.counters(&errors_group(job)).await {
        Ok(counters) => counters
            .iter()
            .find(|(name, _)| name == ERRORS)
            .map_or(0, |(_, n)| *n),
        Err(e) => {
            warn!(error = %e, id = %job.lease.job_id, "could not read the count of the job's errors (max_exceptions): retrying it, bounded by its tries");
            0
        }
    }
}

/// A job that met a rate limit of its own ([`JobError::rate_limited`]): its limit's key (or,
/// for a job naming no limit, its queue's limit) is paused for every worker, and the job goes back without counting an attempt, unless it
/// would then wait past its `max_throttle_wait` (counted from its dispatch).
async fn rate_limited(
    shared: &Shared,
    job: &Reserved,
    envelope: &Envelope,
    name: String,
    delay: Duration,
) -> Finish {
    let lease = &job.lease;
    // Its own limit's key, or else its queue's limit.
    let limit = envelope.limit.clone().or_else(|| {
        shared
            .options
            .queue_limits
            .contains_key(&lease.queue)
            .then(|| JobLimit::of_queue(&lease.queue))
    });
    if let Some(limit) = &limit {
        let waited = unix_millis(SystemTime::now()).saturating_sub(envelope.dispatched_at);
        let waited = Duration::from_millis(u64::try_from(waited).unwrap_or(0));
        if let Some(max) = limit.max_wait_duration() {
            if envelope.dispatched_at > 0 && waited + delay > max {
                let reason = format!(
                    "rate limited for {} (limit `{limit}`), {} after its dispatch: longer than \
                     its max_throttle_wait of {}",
                    humantime::format_duration(delay),
                    humantime::format_duration(waited),
                    humantime::format_duration(max),
                );
                return fail(job, name, reason);
            }
        }
        let blocked = super::limit::block(shared.storage.as_ref(), limit, delay).await;
        shared.gates.clear();
        match blocked {
            Ok(()) => {
                info!(job = %name, id = %lease.job_id, %limit, delay = ?delay, "rate limited: its limit's key is paused and the job goes back (no attempt counted)");
            }
            Err(e) => {
                warn!(job = %name, id = %lease.job_id, %limit, error = %e, "rate limited, and its limit's key could not be paused: only this job goes back (no attempt counted)");
            }
        }
    } else {
        info!(job = %name, id = %lease.job_id, delay = ?delay, "rate limited: the job goes back (no attempt counted; it names no limit to pause)");
    }
    release(job, name, delay)
}

/// The event of a settlement that was applied.
fn event(job: &Reserved, report: &Report) -> Option<JobEvent> {
    use JobEventKind as K;
    let (kind, name, error, took) = match report {
        Report::Done { name, took } => (K::Succeeded, name, None, Some(*took)),
        Report::Retried { name, took, error } => (K::Retrying, name, error.clone(), *took),
        Report::Released { name } | Report::Interrupted { name } => (K::Released, name, None, None),
        Report::Failed { name, reason } => (K::Failed, name, Some(reason.clone()), None),
        Report::Discarded { name, reason } => (K::Discarded, name, Some(reason.clone()), None),
        Report::Cancelled { name } => (K::Cancelled, name, None, None),
        Report::Bypassed { name } => (K::Skipped, name, None, None),
        Report::Stopped { .. } | Report::Skipped => return None,
    };
    let lease = &job.lease;
    let event = JobEvent::new(kind, lease.job_id.clone(), &lease.queue, name, job.attempts);
    Some(
        match error {
            Some(error) => event.error(error),
            None => event,
        }
        .took(took),
    )
}

/// Counts and logs what a settlement did, and sends its event.
fn report(shared: &Shared, job: &Reserved, report: Report, settled: Option<Settled>) {
    let lease = &job.lease;
    let queue = lease.queue.as_str();
    let counters = &shared.counters;
    let applied = settled == Some(Settled::Applied);
    if applied {
        let events = shared.dispatcher.events();
        if events.listening() {
            if let Some(event) = event(job, &report) {
                events.emit(|| event);
            }
        }
    }
    if applied {
        let outcome = match &report {
            Report::Done { .. } => "succeeded",
            Report::Retried { .. } => "retried",
            Report::Released { .. } => "released",
            Report::Interrupted { .. } => "interrupted",
            Report::Failed { .. } => "failed",
            Report::Bypassed { .. } => "skipped",
            Report::Discarded { .. } => "discarded",
            Report::Cancelled { .. } => "cancelled",
            Report::Stopped { .. } | Report::Skipped => "",
        };
        if !outcome.is_empty() {
            tracing::Span::current().record("job.outcome", outcome);
        }
    }
    match report {
        Report::Skipped => {}
        Report::Stopped { name, why } => {
            warn!(job = %name, id = %lease.job_id, "stopped the job: {}", why.describe());
            counters.interrupted.fetch_add(1, Ordering::Relaxed);
            metrics::count(shared, Counted::Interrupted, queue, &name);
        }
        Report::Done { name, .. } if settled == Some(Settled::Stale) => {
            warn!(job = %name, id = %lease.job_id, "job done but its acknowledge was refused: the lease ran out and the job may run again");
        }
        _ if settled == Some(Settled::Stale) => {
            warn!(id = %lease.job_id, "could not settle the job: its lease ran out and another worker may have it");
        }
        _ if !applied => {
            warn!(id = %lease.job_id, "could not settle the job: the store could not be reached; it runs again after its lease");
        }
        Report::Done { name, took } => {
            counters.processed.fetch_add(1, Ordering::Relaxed);
            metrics::count(shared, Counted::Processed, queue, &name);
            metrics::duration(shared, queue, &name, took);
            info!(job = %name, id = %lease.job_id, duration = ?took, "job done");
        }
        Report::Retried { name, took, .. } => {
            counters.retried.fetch_add(1, Ordering::Relaxed);
            metrics::count(shared, Counted::Retried, queue, &name);
            if let Some(took) = took {
                metrics::duration(shared, queue, &name, took);
            }
        }
        Report::Released { name } => {
            counters.released.fetch_add(1, Ordering::Relaxed);
            metrics::count(shared, Counted::Released, queue, &name);
        }
        Report::Interrupted { name } => {
            counters.released.fetch_add(1, Ordering::Relaxed);
            metrics::count(shared, Counted::Interrupted, queue, &name);
        }
        Report::Discarded { name, reason } => {
            counters.discarded.fetch_add(1, Ordering::Relaxed);
            metrics::count(shared, Counted::Discarded, queue, &name);
            info!(job = %name, id = %lease.job_id, reason, "job discarded: it can never succeed (not a failure, not retried)");
        }
        Report::Cancelled { name } => {
            counters.cancelled.fetch_add(1, Ordering::Relaxed);
            metrics::count(shared, Counted::Cancelled, queue, &name);
            info!(job = %name, id = %lease.job_id, "job cancelled (not a failure, not retried)");
        }
        Report::Bypassed { name } => {
            info!(job = %name, id = %lease.job_id, "skipped without running: an edge of its workflow into it was not met");
        }
        Report::Failed { name, reason } => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            metrics::count(shared, Counted::Failed, queue, &name);
            error!(id = %lease.job_id, name = %name, queue, attempts = job.attempts, reason, "job failed for good: moved to the failed store");
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic payload".to_owned()
    }
}
