//! The conformance cases. Each takes a fresh store; none depends on another.
//!
//! - `storage`: the core contract (push, reserve, extend, settle, locks) and the failed-store,
//!   inspection and wake-up capabilities every driver in the tree has;
//! - `contract`: settle and fetch in one call, stale leases in a batch, effects, unique
//!   claims and listing by state: what the v2 contract added;
//! - `track`: single jobs by id (status, cancellation, records kept for a job);
//! - `waiting`: waiting jobs released by their dependencies (chains, workflows, callbacks);
//! - `workers`: the worker registry (entries with a time to live).

mod contract;
mod storage;
mod track;
mod waiting;
mod workers;

use std::time::Duration;

use queue_core::storage::PageRequest;
use queue_core::{FailedJob, JobId, Pushed, StorageExt};

pub use crate::engine::*;
pub use contract::*;
pub use storage::*;
pub use track::*;
pub use waiting::*;
pub use workers::*;

use crate::Store;

/// A lease long enough never to run out during a case.
pub const LONG: Duration = Duration::from_secs(60);
/// A lease short enough to watch it run out.
pub const SHORT: Duration = Duration::from_millis(400);
/// Longer than [`SHORT`] with room for a slow machine.
pub const PAST_SHORT: Duration = Duration::from_millis(900);

/// The ids of jobs that were all created (a push without claims).
pub fn ids(pushed: Vec<Pushed>) -> Vec<JobId> {
    pushed
        .into_iter()
        .map(|p| match p {
            Pushed::Created(id) => id,
            other => panic!("a job without a claim was not created: {other:?}"),
        })
        .collect()
}

/// The newest `n` jobs of the failed store.
pub async fn failed_list(store: &Store, n: usize) -> Vec<FailedJob> {
    store
        .failed_store()
        .unwrap()
        .list(PageRequest::first(n))
        .await
        .unwrap()
        .items
}
