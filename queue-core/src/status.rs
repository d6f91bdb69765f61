//! A job's status by id ([`Queue::job`](crate::Queue::job)), its progress and its output, and
//! cancelling it ([`Queue::cancel`](crate::Queue::cancel)).
//!
//! Where the answer comes from:
//!
//! - a job still in a queue (pending, scheduled, running, retrying) is read from the store
//!   itself ([`Track::job`](crate::storage::Track::job)), with its progress record;
//! - a job that ended leaves a status record, written by the very step that ends it (the
//!   settle, with [`Effect::Record`](crate::Effect::Record)): always when it failed, was
//!   discarded, cancelled or skipped, and when it succeeded only if the worker keeps finished
//!   jobs ([`WorkerOptions::keep_finished`](crate::WorkerOptions::keep_finished), off by
//!   default: it costs a write per job);
//! - anything else is unknown: it never existed, or its status was not kept or expired.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! use queue_core::{JobState, Queue};
//!
//! let queue = Queue::connect("memory://").await?;
//! let id = queue.dispatch_named("report", serde_json::json!({})).await?.into_id();
//! let status = queue.job(&id).await?.expect("it is in its queue");
//! assert_eq!(status.state, JobState::Pending);
//! assert!(queue.cancel(&id).await?.is_cancelled());
//! assert_eq!(queue.job(&id).await?.map(|s| s.state), Some(JobState::Cancelled));
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::time::Instant;
use tracing::warn;

use crate::error::{Error, Result};
use crate::storage::{
    self, from_unix_millis, unix_millis, Cancellation, Effect, JobId, JobSummary, Lease, RecordKey,
    Storage, StorageExt,
};

/// The largest output a job may keep ([`JobContext::output`](crate::JobContext::output)),
/// as JSON: 64 KiB.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// How long the status of a job that did not succeed is kept when the worker does not keep
/// finished jobs: a day.
pub const KEEP_UNSUCCESSFUL: Duration = Duration::from_secs(24 * 3600);

/// The most of an error a status record keeps (the failed store keeps all of it): an error
/// can quote the job's data (serde quotes a string it did not expect, a 10 MB one whole).
pub(crate) const MAX_STATUS_ERROR: usize = 4096;

/// `error` cut to [`MAX_STATUS_ERROR`] bytes at a character boundary, saying so.
pub(crate) fn cut_error(error: String) -> String {
    if error.len() <= MAX_STATUS_ERROR {
        return error;
    }
    let mut end = MAX_STATUS_ERROR;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… (cut: {} bytes in all; the failed store keeps the whole error)",
        &error[..end],
        error.len()
    )
}

/// How long a cancel mark on a running job is kept: long enough for any heartbeat to see it.
pub(crate) const CANCEL_MARK: Duration = Duration::from_secs(24 * 3600);

/// How long progress is kept after its last write.
const KEEP_PROGRESS: Duration = Duration::from_secs(24 * 3600);

/// At most one progress write a second per job.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// In its queue, available, never tried yet.
    Pending,
    /// In its queue, waiting for its time (a delayed dispatch), never tried yet.
    Scheduled,
    /// Held by a worker now.
    Running,
    /// In its queue again after a failed attempt (or a release), waiting for its next one.
    Retrying,
    /// Done.
    Succeeded,
    /// Failed for good: it is in the failed store.
    Failed,
    /// Cancelled before it finished ([`Queue::cancel`](crate::Queue::cancel)).
    Cancelled,
    /// Ended by its body as one that can never succeed ([`JobError::discard`](crate::JobError::discard)).
    Discarded,
    /// A workflow node that did not run because an edge into it was not met.
    Skipped,
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            JobState::Pending | JobState::Scheduled | JobState::Running | JobState::Retrying
        )
    }

    /// The state's name, as `runall job` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Discarded => "discarded",
            JobState::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a running job got, as it said with [`JobContext::progress`](crate::JobContext::progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Units done.
    pub done: u64,
    /// Units in all (0 when unknown).
    pub of: u64,
    /// When it was said (Unix ms).
    pub at: i64,
}

impl Progress {
    /// Done as a percentage (`None` when the total is unknown), at most 100.
    pub fn percent(&self) -> Option<f64> {
        (self.of > 0).then(|| (self.done as f64 * 100.0 / self.of as f64).min(100.0))
    }
}

/// What a job is part of: a batch member, a chain's link, a workflow's node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Group {
    /// A batch, a chain or a workflow.
    pub kind: GroupKind,
    /// Its id (what `runall batch show`, `runall chain` and `runall workflow` take).
    pub id: String,
}

/// What kind of [`Group`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GroupKind {
    /// A member of a [`Batch`](crate::Batch).
    Batch,
    /// A link of a [`Chain`](crate::Chain).
    Chain,
    /// A node of a [`Workflow`](crate::Workflow).
    Workflow,
}

impl GroupKind {
    /// Its name, as `runall job` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKind::Batch => "batch",
            GroupKind::Chain => "chain",
            GroupKind::Workflow => "workflow",
        }
    }
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.id)
    }
}

impl Group {
    /// The group named by a counter group or a waiting key of the composition code:
    /// `batch:ID[:..]`, `chain:ID[:..]`, `wf:ID[:..]`.
    fn from_name(name: &str) -> Option<Group> {
        let (prefix, rest) = name.split_once(':')?;
        let kind = match prefix {
            "batch" => GroupKind::Batch,
            "chain" => GroupKind::Chain,
            "wf" => GroupKind::Workflow,
            _ => return None,
        };
        let id = rest.split(':').next().filter(|id| !id.is_empty())?;
        Some(Group {
            kind,
            id: id.to_owned(),
        })
    }

    /// The group a job belongs to, from what its end changes ([`After`](crate::envelope::After)).
    pub(crate) fn of(after: &crate::envelope::After) -> Option<Group> {
        use crate::envelope::Step;
        if let Some(member) = &after.member {
            return Some(Group {
                kind: GroupKind::Batch,
                id: member.id.clone(),
            });
        }
        let gate = after.skip_if.iter().map(|gate| gate.group.as_str());
        let steps = [&after.succeeded, &after.failed, &after.skipped]
            .into_iter()
            .flatten()
            .map(|step| match step {
                Step::Count { group, .. } => group.as_str(),
                Step::Deps { key, .. } | Step::Skip { key } => key.as_str(),
            });
        gate.chain(steps).find_map(Group::from_name)
    }

    /// The group of the job whose payload is `payload`, if it reads as an envelope.
    fn of_payload(payload: &[u8]) -> Option<Group> {
        let envelope = crate::envelope::Envelope::decode(payload).ok()?;
        Group::of(envelope.after.as_ref()?)
    }
}

/// What [`Queue::job`](crate::Queue::job) knows of a job.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobStatus {
    /// Its id.
    pub id: JobId,
    /// Where it is in its life.
    pub state: JobState,
    /// Its queue.
    pub queue: String,
    /// Its name.
    pub name: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Its last progress, if it said any.
    pub progress: Option<Progress>,
    /// What it returned ([`JobContext::output`](crate::JobContext::output)), as JSON.
    pub output: Option<serde_json::Value>,
    /// Why it failed, was discarded or was cancelled (at most 4 KiB of it: the failed
    /// store keeps the whole error).
    pub error: Option<String>,
    /// Its unique key, while it holds one (a job in its queue only).
    pub unique_key: Option<String>,
    /// When it is due (in its queue): available at, or its lease's end while running.
    pub due_at: Option<SystemTime>,
    /// When it was dispatched (a finished job only).
    pub dispatched_at: Option<SystemTime>,
    /// When its last attempt started (a finished job only).
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub finished_at: Option<SystemTime>,
    /// Someone asked to cancel it while it ran: true also for a job that succeeded anyway
    /// (the cancel came too late).
    pub cancel_requested: bool,
    /// The batch, chain or workflow it is part of. (A link or node waiting for the ones
    /// before it has no id yet: it gets one when they release it. Until then it shows in
    /// its chain's or workflow's status.)
    pub group: Option<Group>,
}

impl JobStatus {
    /// The status as JSON, times in Unix milliseconds: what `runall job ID --json` prints
    /// and the dashboard's `api/jobs/{id}` answers.
    pub fn to_json(&self) -> serde_json::Value {
        let millis = |t: Option<SystemTime>| t.map(crate::storage::unix_millis);
        serde_json::json!({
            "id": self.id.0,
            "state": self.state,
            "queue": self.queue,
            "name": self.name,
            "attempts": self.attempts,
            "progress": self.progress,
            "output": self.output,
            "error": self.error,
            "unique_key": self.unique_key,
            "due_at": millis(self.due_at),
            "dispatched_at": millis(self.dispatched_at),
            "started_at": millis(self.started_at),
            "finished_at": millis(self.finished_at),
            "cancel_requested": self.cancel_requested,
            "group": self.group,
        })
    }

    fn live(summary: JobSummary, progress: Option<Progress>, cancel_requested: bool) -> Self {
        let group = Group::of_payload(&summary.payload);
        let state = match summary.state {
            storage::JobState::Reserved => JobState::Running,
            _ if summary.attempts > 0 => JobState::Retrying,
            storage::JobState::Delayed => JobState::Scheduled,
            _ => JobState::Pending,
        };
        JobStatus {
            id: summary.id,
            state,
            queue: summary.queue,
            name: summary.name,
            attempts: summary.attempts,
            progress,
            output: None,
            error: None,
            unique_key: summary.unique_key,
            due_at: Some(summary.due_at),
            dispatched_at: None,
            started_at: None,
            finished_at: None,
            cancel_requested,
            group,
        }
    }
}

/// A finished job's status record, as stored (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ended {
    pub(crate) state: JobState,
    pub(crate) queue: String,
    pub(crate) name: String,
    pub(crate) attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) output: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dispatched_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) started_at: Option<i64>,
    pub(crate) finished_at: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) cancel_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<Group>,
}

impl Ended {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn into_status(self, id: JobId) -> JobStatus {
        JobStatus {
            id,
            state: self.state,
            queue: self.queue,
            name: self.name,
            attempts: self.attempts,
            progress: self.progress,
            output: self
                .output
                .and_then(|raw| serde_json::from_str(raw.get()).ok()),
            error: self.error,
            unique_key: None,
            due_at: None,
            dispatched_at: self.dispatched_at.map(from_unix_millis),
            started_at: self.started_at.map(from_unix_millis),
            finished_at: Some(from_unix_millis(self.finished_at)),
            cancel_requested: self.cancel_requested,
            group: self.group,
        }
    }
}

/// What [`Queue::cancel`](crate::Queue::cancel) did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The job was waiting (or scheduled, or retrying): it was removed and will never run.
    Cancelled(JobStatus),
    /// The job is running: the worker running it learns of the cancel on its next heartbeat
    /// (a third of the lease at most), its body sees
    /// [`ctx.is_cancelled()`](crate::JobContext::is_cancelled) and has 5 s to return
    /// before it is stopped. It ends cancelled, or succeeded if it finished first.
    Requested(JobStatus),
    /// The job had ended already (its state says how), and nothing was changed.
    Finished(JobStatus),
    /// No job with that id is known.
    NotFound,
}

impl CancelOutcome {
    /// Whether the job was cancelled now (it will never run).
    pub fn is_cancelled(&self) -> bool {
        matches!(self, CancelOutcome::Cancelled(_))
    }
}

/// [`Queue::job`](crate::Queue::job).
pub(crate) async fn find(storage: &dyn Storage, id: &JobId) -> Result<Option<JobStatus>> {
    let track = storage.track()?;
    let keys = [
        RecordKey::new(id.clone(), RecordKey::STATUS),
        RecordKey::new(id.clone(), RecordKey::PROGRESS),
        RecordKey::new(id.clone(), RecordKey::CANCEL),
    ];
    // The job first, then its records: a job that ends in between has its status written
    // by then (the settle that removes it writes it).
    let live = track.job(id).await?;
    let mut records = track.records(&keys).await?.into_iter();
    let (ended, progress, cancel) = (
        records.next().flatten(),
        records.next().flatten(),
        records.next().flatten(),
    );
    let progress = progress.and_then(|bytes| serde_json::from_slice::<Progress>(&bytes).ok());
    if let Some(summary) = live {
        return Ok(Some(JobStatus::live(summary, progress, cancel.is_some())));
    }
    let Some(bytes) = ended else {
        return Ok(None);
    };
    let ended: Ended = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Payload(format!(
            "the status record of job {id} is not readable: {e}"
        ))
    })?;
    Ok(Some(ended.into_status(id.clone())))
}

/// [`Queue::cancel`](crate::Queue::cancel).
pub(crate) async fn cancel(storage: &dyn Storage, id: &JobId) -> Result<CancelOutcome> {
    cancel_listed(storage, id, None).await
}

/// [`cancel`], given the job as a listing just read it (`Batch::cancel`), which spares its
/// first look at the job.
pub(crate) async fn cancel_listed(
    storage: &dyn Storage,
    id: &JobId,
    mut listed: Option<&JobSummary>,
) -> Result<CancelOutcome> {
    // A job that starts, or is put back, between the store's cancel and the look at its
    // status is asked again: a few times, then reported as it is.
    for _ in 0..3 {
        match cancel_once(storage, id, listed.take()).await? {
            Some(outcome) => return Ok(outcome),
            None => continue,
        }
    }
    Ok(match find(storage, id).await? {
        Some(status) if status.state.is_finished() => CancelOutcome::Finished(status),
        Some(status) => CancelOutcome::Requested(status),
        None => CancelOutcome::NotFound,
    })
}

async fn cancel_once(
    storage: &dyn Storage,
    id: &JobId,
    listed: Option<&JobSummary>,
) -> Result<Option<CancelOutcome>> {
    let track = storage.track()?;
    // What the job's batch, chain or workflow does when it ends without running, read from
    // the job (its `after` never changes) and applied by the store in the step that
    // removes it.
    let effects = match listed {
        Some(summary) => composition_effects(summary),
        None => match track.job(id).await? {
            Some(summary) => composition_effects(&summary),
            None => Vec::new(),
        },
    };
    Ok(Some(match track.cancel(id, CANCEL_MARK, effects).await? {
        Cancellation::Removed(summary) => {
            let ended = Ended {
                state: JobState::Cancelled,
                queue: summary.queue.clone(),
                name: summary.name.clone(),
                attempts: summary.attempts,
                error: Some("cancelled before it ran".into()),
                output: None,
                progress: None,
                dispatched_at: None,
                started_at: None,
                finished_at: unix_millis(SystemTime::now()),
                cancel_requested: true,
                group: Group::of_payload(&summary.payload),
            };
            let key = RecordKey::new(id.clone(), RecordKey::STATUS);
            track
                .put_record(&key, &ended.encode(), KEEP_UNSUCCESSFUL, None)
                .await?;
            CancelOutcome::Cancelled(ended.into_status(id.clone()))
        }
        Cancellation::Marked(summary) => {
            CancelOutcome::Requested(JobStatus::live(summary, None, true))
        }
        Cancellation::NotFound => match find(storage, id).await? {
            Some(status) if status.state.is_finished() => CancelOutcome::Finished(status),
            Some(_) => return Ok(None),
            None => CancelOutcome::NotFound,
        },
    }))
}

/// The effects with which a removed job that was part of a batch, a chain or a workflow
/// ends there as a discarded one would: a batch member counted cancelled, a workflow node
/// skipped (the skip passes down its edges), a chain link as a failed one (the links after
/// it skipped, `catch` and `finally` released). The store applies them in the step that
/// removes the job ([`Track::cancel`](crate::storage::Track::cancel)).
pub(crate) fn composition_effects(job: &JobSummary) -> Vec<Effect> {
    let Ok(envelope) = crate::envelope::Envelope::decode(&job.payload) else {
        return Vec::new();
    };
    let Some(after) = envelope.after else {
        return Vec::new();
    };
    let steps = if after.skipped.is_empty() {
        &after.failed
    } else {
        &after.skipped
    };
    let removed = storage::Reserved {
        lease: Lease {
            job_id: job.id.clone(),
            queue: job.queue.clone(),
            token: String::new(),
        },
        name: job.name.clone(),
        payload: job.payload.clone(),
        attempts: job.attempts,
    };
    let mut effects: Vec<_> = steps.iter().map(crate::envelope::Step::effect).collect();
    effects.extend(after.again(&removed));
    effects
}

/// What a running job said of itself: its progress and its output, and where to write the
/// progress (fenced by its lease), at most once a second.
#[derive(Debug)]
pub(crate) struct Tracker {
    storage: Option<Arc<dyn Storage>>,
    lease: Lease,
    state: Mutex<Said>,
}

#[derive(Debug, Default)]
struct Said {
    progress: Option<Progress>,
    written: Option<Instant>,
    output: Option<Box<RawValue>>,
}

impl Tracker {
    /// A tracker writing to `storage` (`None`: progress is only kept in memory, for the
    /// job's final status or a unit test).
    pub(crate) fn new(storage: Option<Arc<dyn Storage>>, lease: Lease) -> Self {
        Tracker {
            storage,
            lease,
            state: Mutex::default(),
        }
    }

    pub(crate) async fn progress(&self, done: u64, of: u64) {
        let progress = Progress {
            done,
            of,
            at: unix_millis(SystemTime::now()),
        };
        let due = {
            let Ok(mut said) = self.state.lock() else {
                return;
            };
            said.progress = Some(progress);
            let due = said.written.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
            if due {
                said.written = Some(Instant::now());
            }
            due
        };
        let Some(storage) = self.storage.as_ref().filter(|_| due) else {
            return;
        };
        let Ok(track) = storage.track() else {
            return;
        };
        let key = RecordKey::new(self.lease.job_id.clone(), RecordKey::PROGRESS);
        let value = serde_json::to_vec(&progress).unwrap_or_default();
        if let Err(e) = track
            .put_record(&key, &value, KEEP_PROGRESS, Some(&self.lease))
            .await
        {
            warn!(error = %e, id = %self.lease.job_id, "could not write the job's progress");
        }
    }

    pub(crate) fn set_output(&self, output: Box<RawValue>) {
        if let Ok(mut said) = self.state.lock() {
            said.output = Some(output);
        }
    }

    /// The output as it stands, in JSON.
    pub(crate) fn output(&self) -> Option<Vec<u8>> {
        let said = self.state.lock().ok()?;
        said.output
            .as_ref()
            .map(|raw| raw.get().as_bytes().to_vec())
    }

    /// The last progress and the output, for the job's status record.
    pub(crate) fn take(&self) -> (Option<Progress>, Option<Box<RawValue>>) {
        match self.state.lock() {
            Ok(mut said) => (said.progress, said.output.take()),
            Err(_) => (None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        assert_eq!(cut_error("short".into()), "short");
        let long = format!(
            "{}é{}",
            "x".repeat(MAX_STATUS_ERROR - 1),
            "y".repeat(10_000_000)
        );
        let cut = cut_error(long);
        assert!(cut.len() < MAX_STATUS_ERROR + 100, "{}", cut.len());
        assert!(cut.ends_with("bytes in all; the failed store keeps the whole error)"));
        assert!(
            !cut.contains('é'),
            "é straddles the limit and is left out whole"
        );
    }
}
