//! Locks with expiry: one file per key in `locks/`, holding its owner and expiry.
//!
//! Every change to a lock file happens while holding an exclusive `flock(2)` on that very file,
//! so reading "expired" and writing the new owner is one step no other process can cut into
//! (a rename-to-tombstone scheme cannot make a renewal or an unlock atomic with the check
//! before it). The kernel drops a `flock` when its holder dies, so a crashed process never
//! leaves a key stuck; the lock itself still lasts until its expiry, as it should. Unlocking
//! deletes the file while holding the `flock`; whoever opened the old file before that notices,
//! after taking the `flock`, that the path no longer names their file and starts again.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use queue_core::storage::duration_millis;
use rustix::fs::{flock, FlockOperation};

use crate::error::FileError;
use crate::format::{decode_lock, decode_lock_key, encode_lock, key_file_name, now_ms};

/// Opens the file at `path` (creating it empty, which for a lock means free) and takes its
/// `flock`, retrying when the path was replaced or removed meanwhile.
pub(crate) fn open_guarded(path: &Path) -> io::Result<File> {
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        loop {
            match flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let held = file.metadata()?;
        match fs::metadata(path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                if held.mode() & 0o777 != 0o600 {
                    file.set_permissions(Permissions::from_mode(0o600))?;
                }
                return Ok(file);
            }
            // Unlocked (deleted) between our open and our flock: try the new file.
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn read_all(file: &mut File) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Takes `key` for `owner` for `ttl` if it is free, expired or already `owner`'s.
pub(crate) fn lock(dir: &Path, key: &str, owner: &str, ttl: Duration) -> Result<bool, FileError> {
    let path = dir.join(key_file_name(key));
    let io = |op| FileError::io(op, &path);
    let mut file = open_guarded(&path).map_err(io("lock"))?;
    let now = now_ms();
    let free = match decode_lock(&read_all(&mut file).map_err(io("read"))?) {
        None => true,
        Some((holder, expires)) => holder == owner || expires <= now,
    };
    if free {
        let content = encode_lock(key, owner, now.saturating_add(duration_millis(ttl)));
        file.set_len(0).map_err(io("truncate"))?;
        file.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
        file.write_all(&content).map_err(io("write"))?;
    }
    Ok(free)
}

/// Releases `key` if `owner` holds it.
pub(crate) fn unlock(dir: &Path, key: &str, owner: &str) -> Result<bool, FileError> {
    delete_if(dir, key, |current| {
        let mine = current.as_ref().is_some_and(|(holder, _)| holder == owner);
        // Ours, or an empty file (free): deleted.
        (mine || current.is_none(), mine)
    })
}

/// Releases `key` whoever holds it: whether it was held (not expired).
pub(crate) fn release(dir: &Path, key: &str) -> Result<bool, FileError> {
    delete_if(dir, key, |current| {
        (true, current.is_some_and(|(_, expires)| expires > now_ms()))
    })
}

/// Reads `key`'s lock file under its `flock` and asks `decide` of its owner and expiry
/// (`None`: free): whether to delete the file, which happens while the `flock` is held,
/// and what to return. A missing file is not created: `false`.
fn delete_if(
    dir: &Path,
    key: &str,
    decide: impl FnOnce(Option<(String, i64)>) -> (bool, bool),
) -> Result<bool, FileError> {
    let path = dir.join(key_file_name(key));
    let io = |op| FileError::io(op, &path);
    match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("stat")(e)),
        Ok(_) => {}
    }
    let mut file = open_guarded(&path).map_err(io("lock"))?;
    let (delete, answer) = decide(decode_lock(&read_all(&mut file).map_err(io("read"))?));
    if delete {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove")(e)),
        }
    }
    drop(file);
    Ok(answer)
}

/// Every lock held and not expired: (key, owner, expiry in Unix ms), read without the
/// `flock`s (a file being rewritten at that moment reads as garbled and is left out). A
/// file of an older version whose long key was hashed into its name is left out too.
pub(crate) fn held(dir: &Path) -> Result<Vec<(String, String, i64)>, FileError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FileError::io("list", dir)(e)),
    };
    let now = now_ms();
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(FileError::io("list", dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let bytes = match fs::read(entry.path()) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FileError::io("read", entry.path())(e)),
        };
        let (Some((owner, expires)), Some(key)) =
            (decode_lock(&bytes), decode_lock_key(&bytes, &name))
        else {
            continue;
        };
        if expires > now {
            out.push((key, owner, expires));
        }
    }
    Ok(out)
}
