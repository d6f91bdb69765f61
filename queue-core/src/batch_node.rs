//! A batch as a workflow node ([`Workflow::add_batch`](crate::Workflow::add_batch)): two
//! jobs of this crate's own carry it.
//!
//! - The node's **start job** stands where an ordinary node's job would: pushed at once, or
//!   held until the nodes before it have ended. It releases the batch's members (each held
//!   under its own key with one dependency), or, when an edge into the node was not met,
//!   drops them, counts them cancelled and ends the node skipped.
//! - The node's **end job** is the batch's `finally`: once every member has ended it ends the
//!   node, succeeded if every member succeeded, failed otherwise (a member failed, or was
//!   cancelled).
//!
//! Each applies its effects in one atomic step guarded by a counter of the workflow's group
//! (`start:NODE`, `end:NODE`, from 0 to 1), so a job that runs again (its worker died after
//! the step, `runall batch retry` releasing the `finally` again) changes nothing.

use serde::{Deserialize, Serialize};

use crate::batch::{cancelled_unstarted, BatchId};
use crate::envelope::Step;
use crate::job::{Handle, Job, JobContext, JobError};
use crate::storage::{Effect, Guard};

/// The start job of a batch node.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BatchNodeStart {
    /// The batch's id.
    pub(crate) batch: String,
    /// How many members it has (held under `batch:ID:m1` to `batch:ID:mN`).
    pub(crate) members: u64,
    /// The node's name.
    pub(crate) node: String,
    /// The node's steps when it is skipped.
    pub(crate) skipped: Vec<Step>,
    /// The keys of the batch's callbacks, dropped with the members when the node is skipped.
    pub(crate) callbacks: Vec<String>,
}

impl Job for BatchNodeStart {
    const NAME: &'static str = "runall.batch-node-start";
    const TRIES: Option<u32> = Some(20);
}

impl Handle for BatchNodeStart {
    async fn handle(self, ctx: JobContext) -> Result<(), JobError> {
        let Some(workflow) = ctx.workflow() else {
            return Err(JobError::fail(
                "the start job of a batch node ran outside its workflow",
            ));
        };
        let dispatcher = workflow.dispatcher();
        let group = crate::workflow::group(&workflow.id().0);
        // Every node before this one has ended (the last of them released this job), so no
        // more skip marks can come.
        let counters = dispatcher.counters(&group).await.map_err(JobError::msg)?;
        let doomed = counters.get(&format!("skip:{}", self.node)) > 0;
        let keys = (1..=self.members).map(|i| format!("batch:{}:m{i}", self.batch));
        let effects: Vec<Effect> = if doomed {
            let n = i64::try_from(self.members).unwrap_or(i64::MAX);
            keys.chain(self.callbacks.iter().cloned())
                .map(|key| Effect::Skip { key })
                .chain([cancelled_unstarted(&BatchId(self.batch.clone()), n)])
                .chain(self.skipped.iter().map(Step::effect))
                .collect()
        } else {
            keys.map(|key| Effect::Deps { key, delta: -1 }).collect()
        };
        let guard = Guard::new(group, format!("start:{}", self.node), 0, 1);
        let groups = dispatcher.groups().map_err(JobError::msg)?;
        groups
            .apply_if(guard, effects)
            .await
            .map_err(JobError::msg)?;
        Ok(())
    }
}

/// The end job of a batch node: the batch's `finally`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BatchNodeEnd {
    /// The workflow's group.
    pub(crate) group: String,
    /// The node's name.
    pub(crate) node: String,
    /// The node's steps when it succeeded.
    pub(crate) succeeded: Vec<Step>,
    /// The node's steps when it failed.
    pub(crate) failed: Vec<Step>,
}

impl Job for BatchNodeEnd {
    const NAME: &'static str = "runall.batch-node-end";
    const TRIES: Option<u32> = Some(20);
}

impl Handle for BatchNodeEnd {
    async fn handle(self, ctx: JobContext) -> Result<(), JobError> {
        let Some(batch) = ctx.batch() else {
            return Err(JobError::fail(
                "the end job of a batch node ran outside its batch",
            ));
        };
        let status = batch.status().await.map_err(JobError::msg)?;
        let succeeded = status.failed == 0 && status.cancelled == 0 && !status.is_cancelled;
        let steps = if succeeded {
            &self.succeeded
        } else {
            &self.failed
        };
        let guard = Guard::new(self.group.clone(), format!("end:{}", self.node), 0, 1);
        let groups = batch.dispatcher().groups().map_err(JobError::msg)?;
        groups
            .apply_if(guard, steps.iter().map(Step::effect).collect())
            .await
            .map_err(JobError::msg)?;
        Ok(())
    }
}

inventory::submit! { crate::registry::JobRegistration::of::<BatchNodeStart>() }
inventory::submit! { crate::registry::JobRegistration::of::<BatchNodeEnd>() }
