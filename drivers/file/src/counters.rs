//! Counters (worker statistics, the restart signal): one file per counter in `counters/`.
//!
//! A change takes the counter file's `flock` (as locks do), then writes the new value to a
//! temporary file and renames it over the old one, so readers, who take no lock, always see a
//! whole file. Counters are not synced: they are statistics and signals, not jobs.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use queue_core::storage::duration_millis;

use crate::error::FileError;
use crate::format::{decode_counter, encode_counter, lock_file_name, new_id, now_ms};
use crate::lock::{open_guarded, read_all};

/// Adds each delta to its counter; with `ttl` the counters written expire that long from now.
pub(crate) fn add(
    dir: &Path,
    tmp: &Path,
    deltas: &[(String, i64)],
    ttl: Option<Duration>,
) -> Result<(), FileError> {
    let now = now_ms();
    let expires = ttl.map(|ttl| now.saturating_add(duration_millis(ttl)));
    for (name, delta) in deltas {
        let path = dir.join(lock_file_name(name));
        let io = |op| FileError::io(op, &path);
        let mut file = open_guarded(&path).map_err(io("lock"))?;
        let value = match decode_counter(&read_all(&mut file).map_err(io("read"))?) {
            Some((stored, value, at)) if stored == *name && at.is_none_or(|at| at > now) => value,
            _ => 0,
        };
        let staged = tmp.join(format!("{}.counter", new_id()));
        crate::disk::write_new(
            &staged,
            &encode_counter(name, value.saturating_add(*delta), expires),
        )?;
        if let Err(e) = fs::rename(&staged, &path) {
            let _ = fs::remove_file(&staged);
            return Err(io("rename")(e));
        }
        drop(file);
    }
    Ok(())
}

/// The live counters whose names start with `prefix`, sorted by name. Expired ones are
/// deleted on the way.
pub(crate) fn list(dir: &Path, prefix: &str) -> Result<Vec<(String, i64)>, FileError> {
    let now = now_ms();
    let mut out = BTreeMap::new();
    for file in crate::disk::list(dir)? {
        let path = dir.join(&file);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FileError::io("read", path)(e)),
        };
        let Some((name, value, expires)) = decode_counter(&bytes) else {
            continue;
        };
        if expires.is_some_and(|at| at <= now) {
            remove_expired(&path, now)?;
        } else if name.starts_with(prefix) {
            out.insert(name, value);
        }
    }
    Ok(out.into_iter().collect())
}

fn remove_expired(path: &Path, now: i64) -> Result<(), FileError> {
    let io = |op| FileError::io(op, path);
    let mut file = open_guarded(path).map_err(io("lock"))?;
    let expired = match decode_counter(&read_all(&mut file).map_err(io("read"))?) {
        Some((_, _, expires)) => expires.is_some_and(|at| at <= now),
        None => true,
    };
    if expired {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove")(e)),
        }
    }
    Ok(())
}
