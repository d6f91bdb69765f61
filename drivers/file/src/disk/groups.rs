//! Group counters (`groups/GROUP`, changed by `Effect::Count`) and the restart signal
//! (`control/restart`).
//!
//! Both are changed only under the store's lock and replaced whole (a temporary file renamed
//! over the old one), so readers take no lock. A group file records the last intent whose
//! deltas it holds: an intent finished again after a crash finds its own id there and adds
//! nothing twice.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::journal::Locked;
use super::{read_if_there, remove_if_there, Disk, Result};
use crate::error::FileError;
use crate::format::key_file_name;

/// What `groups/GROUP` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct GroupFile {
    group: String,
    /// The intent whose deltas were added last.
    applied: String,
    counters: BTreeMap<String, i64>,
}

impl Disk {
    fn read_group(&self, group: &str) -> Result<Option<GroupFile>> {
        let path = self.groups.join(key_file_name(group));
        let Some(bytes) = read_if_there(&path)? else {
            return Ok(None);
        };
        match serde_json::from_slice::<GroupFile>(&bytes) {
            Ok(file) if file.group == group => Ok(Some(file)),
            Ok(_) | Err(_) => Err(FileError::Damaged {
                path,
                reason: "a group's counter file that is not one this driver wrote".into(),
            }),
        }
    }

    /// Adds an intent's deltas to a group's counters, unless that intent already did.
    pub(super) fn add_counts(
        &self,
        _: &Locked<'_>,
        intent: &str,
        group: &str,
        deltas: &BTreeMap<&str, i64>,
    ) -> Result<()> {
        let mut file = self.read_group(group)?.unwrap_or_else(|| GroupFile {
            group: group.to_owned(),
            ..GroupFile::default()
        });
        if file.applied == intent {
            return Ok(());
        }
        for (name, delta) in deltas {
            let value = file.counters.entry((*name).to_owned()).or_default();
            *value = value.saturating_add(*delta);
        }
        file.applied = intent.to_owned();
        let path = self.groups.join(key_file_name(group));
        let bytes = serde_json::to_vec(&file).map_err(|e| FileError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        self.replace(&path, &bytes)
    }

    /// A group's counters, sorted by name.
    pub(crate) fn counters(&self, group: &str) -> Result<Vec<(String, i64)>> {
        Ok(self
            .read_group(group)?
            .map(|f| f.counters.into_iter().collect())
            .unwrap_or_default())
    }

    /// Deletes a group's counters; whether it had any.
    pub(crate) fn remove_group(&self, group: &str) -> Result<bool> {
        let _lock = self.lock()?;
        remove_if_there(&self.groups.join(key_file_name(group)))
    }

    pub(crate) fn restart_generation(&self) -> Result<u64> {
        let path = self.control.join("restart");
        let Some(bytes) = read_if_there(&path)? else {
            return Ok(0);
        };
        String::from_utf8_lossy(&bytes)
            .trim()
            .parse()
            .map_err(|_| FileError::Damaged {
                path,
                reason: "the restart generation is not a number".into(),
            })
    }

    pub(crate) fn request_restart(&self) -> Result<()> {
        let _lock = self.lock()?;
        let next = self.restart_generation().unwrap_or(0).wrapping_add(1);
        self.replace(
            &self.control.join("restart"),
            format!("{next}\n").as_bytes(),
        )
    }
}
