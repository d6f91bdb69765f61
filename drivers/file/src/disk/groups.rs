//! Group counters (`groups/GROUP`, changed by `Effect::Count` and set by the guard of
//! `Groups::apply_if`) and the restart signal (`control/restart`).
//!
//! Both are changed only under the store's lock and replaced whole (a temporary file renamed
//! over the old one), so readers take no lock. A group file records the last intent whose
//! deltas it holds: an intent finished again after a crash finds its own id there and adds
//! nothing twice.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use queue_core::storage::RecordKey;

use super::journal::Locked;
use super::waiting::{value_owner, values_prefix, VALUE_KIND};
use super::{list, read_if_there, remove_if_there, Disk, Result};
use crate::error::FileError;
use crate::format::{decode_record, encode_name, key_file_name};

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

    /// Sets an intent's values of a group's counters, then adds its deltas, unless that
    /// intent already did (in one write of the group's file).
    pub(super) fn add_counts(
        &self,
        _: &Locked<'_>,
        intent: &str,
        group: &str,
        sets: &BTreeMap<&str, i64>,
        deltas: &BTreeMap<&str, i64>,
    ) -> Result<()> {
        let mut file = self.read_group(group)?.unwrap_or_else(|| GroupFile {
            group: group.to_owned(),
            ..GroupFile::default()
        });
        if file.applied == intent {
            return Ok(());
        }
        for (name, value) in sets {
            file.counters.insert((*name).to_owned(), *value);
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

    /// What a group's counter holds (0 if it is missing), read under the lock: what a
    /// guard is checked against.
    pub(super) fn counter(&self, _: &Locked<'_>, group: &str, name: &str) -> Result<i64> {
        Ok(self
            .read_group(group)?
            .and_then(|f| f.counters.get(name).copied())
            .unwrap_or(0))
    }

    /// A group's counters, sorted by name.
    pub(crate) fn counters(&self, group: &str) -> Result<Vec<(String, i64)>> {
        Ok(self
            .read_group(group)?
            .map(|f| f.counters.into_iter().collect())
            .unwrap_or_default())
    }

    /// The names of the groups starting with `prefix`, unsorted: the files whose names
    /// could hold one, each read for the name it holds.
    pub(crate) fn group_names(&self, prefix: &str) -> Result<Vec<String>> {
        // A long name's file keeps the first 100 characters of its encoded name.
        let start: String = encode_name(prefix).chars().take(100).collect();
        let mut names = Vec::new();
        for file in list(&self.groups)? {
            let Some(file) = file.to_str() else { continue };
            if !file.starts_with(&start) {
                continue;
            }
            let path = self.groups.join(file);
            let Some(bytes) = read_if_there(&path)? else {
                continue;
            };
            match serde_json::from_slice::<GroupFile>(&bytes) {
                Ok(group) => names.push(group.group),
                Err(e) => {
                    return Err(FileError::Damaged {
                        path,
                        reason: format!(
                            "a group's counter file that is not one this driver wrote: {e}"
                        ),
                    })
                }
            }
        }
        Ok(names)
    }

    /// A group's value (`Effect::Value`), kept as a record that never expires.
    pub(crate) fn group_value(&self, group: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let owner = value_owner(group, name);
        Ok(self
            .records(&[RecordKey::new(owner, VALUE_KIND)])?
            .pop()
            .flatten())
    }

    /// Deletes a group's values, then its counters; whether it had any counter. The values
    /// are found by listing `records/` for the file names theirs could have, each read for
    /// the owner it holds.
    pub(crate) fn remove_group(&self, group: &str) -> Result<bool> {
        let prefix = values_prefix(group);
        let start: String = encode_name(&prefix).chars().take(100).collect();
        let lock = self.lock()?;
        for file in list(&self.records)? {
            let Some(file) = file.to_str() else { continue };
            if !file.starts_with(&start) {
                continue;
            }
            let path = self.records.join(file);
            let Some(bytes) = read_if_there(&path)? else {
                continue;
            };
            if decode_record(&bytes).is_ok_and(|r| r.job_id.starts_with(&prefix)) {
                remove_if_there(&path)?;
            }
        }
        let removed = remove_if_there(&self.groups.join(key_file_name(group)))?;
        drop(lock);
        Ok(removed)
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
