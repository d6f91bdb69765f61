//! Unique claims: one file per held key in `claims/`, naming the job that holds it.
//!
//! Every change is made under the store's lock (so checking a key and taking it are one
//! step) and replaces the file whole (a temporary file renamed over it), so a reader without
//! the lock always sees a whole file. A claim is created before its job is published and
//! released after its job is gone, both inside one step of the journal, so a crash never
//! leaves a job whose claim vanished early nor a claim without its job.
//!
//! A claim held by a failed record (`until = succeeded`) is valid while that record exists:
//! forgetting, flushing or pruning the record releases the key without touching the claim
//! file, which the next look at the key then deletes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::journal::{ClaimOp, Locked};
use super::{read_if_there, remove_if_there, Disk, Result};
use crate::error::FileError;
use crate::format::key_file_name;

/// What `claims/KEY` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ClaimFile {
    pub(super) key: String,
    /// The holder's id in its queue (also once it is in the failed store).
    pub(super) job_id: String,
    pub(super) queue: String,
    /// The failed record holding the key, once the job failed.
    #[serde(default)]
    pub(super) failed: Option<String>,
}

impl Disk {
    fn claim_path(&self, key: &str) -> PathBuf {
        self.claims.join(key_file_name(key))
    }

    /// The claim on `key` as written, without judging it; a damaged file counts as free.
    fn read_claim(&self, key: &str) -> Result<Option<ClaimFile>> {
        let path = self.claim_path(key);
        let Some(bytes) = read_if_there(&path)? else {
            return Ok(None);
        };
        match serde_json::from_slice::<ClaimFile>(&bytes) {
            Ok(claim) if claim.key == key => Ok(Some(claim)),
            Ok(_) | Err(_) => {
                tracing::error!(path = %path.display(), "a damaged claim file: the key counts as free");
                Ok(None)
            }
        }
    }

    /// Whether a claim read from disk still holds: a failed record's claim lasts as long as
    /// the record.
    fn holds(&self, claim: &ClaimFile) -> bool {
        match &claim.failed {
            Some(failed) => self.failed.join(failed).exists(),
            None => true,
        }
    }

    /// Who holds `key`, read without the lock (a hint: the answer may change at once).
    pub(super) fn claim_hint(&self, key: &str) -> Result<Option<ClaimFile>> {
        Ok(self.read_claim(key)?.filter(|c| self.holds(c)))
    }

    /// Who holds `key`, under the lock; a claim that no longer holds is deleted.
    pub(super) fn claim_holder(&self, _: &Locked<'_>, key: &str) -> Result<Option<ClaimFile>> {
        let Some(claim) = self.read_claim(key)? else {
            return Ok(None);
        };
        if self.holds(&claim) {
            return Ok(Some(claim));
        }
        remove_if_there(&self.claim_path(key))?;
        Ok(None)
    }

    /// Writes a claim whole.
    pub(super) fn set_claim(&self, _: &Locked<'_>, claim: &ClaimFile) -> Result<()> {
        let path = self.claim_path(&claim.key);
        let bytes = serde_json::to_vec(claim).map_err(|e| FileError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        self.replace(&path, &bytes)
    }

    /// Applies one conditional claim change of a step.
    pub(super) fn apply_claim(&self, lock: &Locked<'_>, op: &ClaimOp) -> Result<()> {
        match op {
            ClaimOp::Release { key, job_id } => {
                self.release_claim(lock, key, job_id)?;
            }
            ClaimOp::ToFailed {
                key,
                job_id,
                failed,
            } => {
                if let Some(claim) = self.read_claim(key)? {
                    if claim.job_id == *job_id && claim.failed.is_none() {
                        self.set_claim(
                            lock,
                            &ClaimFile {
                                failed: Some(failed.clone()),
                                ..claim
                            },
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Releases `key` if the job `job_id` (not a failed record) holds it. One unlink: needs
    /// no intent.
    pub(super) fn release_claim(&self, _: &Locked<'_>, key: &str, job_id: &str) -> Result<bool> {
        match self.read_claim(key)? {
            Some(claim) if claim.job_id == job_id && claim.failed.is_none() => {
                remove_if_there(&self.claim_path(key))
            }
            _ => Ok(false),
        }
    }
}
