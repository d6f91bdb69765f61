//! The worker registry (`Workers`): one file per worker in `workers/`, named after its id
//! ([`key_file_name`]), holding the id, when the entry expires (the process's clock) and the
//! entry ([`WorkerFile`]).
//!
//! Each worker writes only its own file, staged in `tmp/` (synced if the store syncs) and
//! renamed over the old one, so a reader takes no lock and sees the old entry or the new.
//! Listing (and each beat) deletes the files of expired entries. A worker whose entry had
//! expired (it stalled past its time to live) and that beats at the very moment a listing
//! deletes its file is listed again at its next beat.

use std::fs;
use std::time::Duration;

use queue_core::storage::duration_millis;

use super::{list, read_if_there, remove_if_there, write_new, Disk, Result};
use crate::error::FileError;
use crate::format::{decode_worker, encode_worker, key_file_name, new_id, now_ms, WorkerFile};

impl Disk {
    /// Writes the entry `id`, kept for `ttl`, over its old one; deletes expired entries.
    pub(crate) fn worker_beat(&self, id: &str, entry: &[u8], ttl: Duration) -> Result<()> {
        let now = now_ms();
        let file = WorkerFile {
            id: id.to_owned(),
            expires: now.saturating_add(duration_millis(ttl)),
            entry: entry.to_vec(),
        };
        // `.rec`: a staged file the sweep leaves alone for an hour (see `recovery`).
        let staged = self.tmp.join(format!("{}.rec", new_id()));
        let path = self.workers.join(key_file_name(id));
        let written = write_new(&staged, &encode_worker(&file)).and_then(|f| {
            if self.fsync {
                f.sync_data().map_err(FileError::io("sync", &staged))?;
            }
            drop(f);
            fs::rename(&staged, &path).map_err(FileError::io("rename", &path))
        });
        if let Err(e) = written {
            let _ = fs::remove_file(&staged);
            return Err(e);
        }
        self.live_workers(now).map(drop)
    }

    /// The entries not expired, sorted by id; deletes the files of expired ones (and of
    /// files that are not entries).
    pub(crate) fn workers(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut live = self.live_workers(now_ms())?;
        live.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(live)
    }

    fn live_workers(&self, now: i64) -> Result<Vec<(String, Vec<u8>)>> {
        let mut live = Vec::new();
        for name in list(&self.workers)? {
            let path = self.workers.join(&name);
            let Some(bytes) = read_if_there(&path)? else {
                continue;
            };
            match decode_worker(&bytes) {
                Ok(worker) if worker.expires > now => live.push((worker.id, worker.entry)),
                _ => {
                    remove_if_there(&path)?;
                }
            }
        }
        Ok(live)
    }

    /// Deletes the entry `id`; whether it was there and had not expired.
    pub(crate) fn worker_leave(&self, id: &str) -> Result<bool> {
        let path = self.workers.join(key_file_name(id));
        let live = read_if_there(&path)?
            .and_then(|bytes| decode_worker(&bytes).ok())
            .is_some_and(|worker| worker.id == id && worker.expires > now_ms());
        Ok(remove_if_there(&path)? && live)
    }
}
