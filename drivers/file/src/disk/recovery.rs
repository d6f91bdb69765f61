//! What a crash leaves behind, found at open and by a sweep every half minute (piggybacked on
//! `reserve`, skipped while another process holds the store's lock).
//!
//! Taking the lock finishes the intents of crashed steps (see [`super::journal`]); what is
//! left in `tmp/` after that is one of:
//!
//! - `ID.push`, `ID.N.push`, `ID.N.K.push`, and `.hold`, `.rec` and `.val` alike, and
//!   `ID.N.payload`: a job written for a push, a waiting job for a hold, a record for a settle
//!   or `Track::put_record`, a group's value, or a retried job's new version, of a step that
//!   never returned (nothing promised it): deleted after an hour, so that a slow step in
//!   progress keeps its files.
//! - `ID.intent`, `ID.N.record`, `ID.replace`, `ID.N.wait`, `ID.N.job`: a file a step under
//!   the lock was writing when it died (a failed record, a waiting job put or released by a
//!   plan), whose step is finished or never started: deleted.
//! - `ID.N.taken` without its intent (a power loss that lost the intent, or an intent set
//!   aside as damaged): a job outside both stores: moved to the failed store.
//! - Left by older versions of this driver, which failed a job in three steps without the
//!   journal: `ID.TOKEN.failing` (a job being failed), `ID.stray` (a foreign file being
//!   buried), `ID.failed` (its failed record, written but not yet in the failed store). Once
//!   a minute old (a process of the older version may still be in that step), a record goes
//!   into the failed store, and a job whose record is not there already goes too, with a
//!   reason saying that the original one was lost. `ID.counter` (statistics) is deleted.
//!
//! So no job is left outside both stores: every file that was a job is back in a queue or
//! in the failed store.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::journal::{failed_name, Intent, Locked, Move, Record, Take, Then};
use super::{guard, list, parse_names, read_if_there, remove_if_there, Disk, Result};
use crate::error::FileError;
use crate::format::{decode_failed, decode_job, is_id, new_id, now_ms, FailedName};

/// How often a process sweeps.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// How old a file of an older version's step must be before it counts as left by a crash.
const LEFTOVER_AGE: Duration = Duration::from_secs(60);
/// How old a staged push must be before it counts as abandoned.
const PUSH_AGE: Duration = Duration::from_secs(3600);

/// What a file in `tmp/` is, by its name.
enum Kind {
    Push,
    Orphan,
    Taken { intent: String },
    Failing { job_id: String },
    Stray,
    Failed { id: String },
    Other,
}

fn kind(name: &str) -> Kind {
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    match rest.as_slice() {
        ["push" | "hold" | "rec" | "val"]
        | [_, "push" | "hold" | "rec" | "val" | "payload"]
        | [_, _, "push" | "hold" | "rec" | "val"] => Kind::Push,
        ["intent"] | [_, "record" | "wait" | "job"] | ["replace"] | ["counter"] => Kind::Orphan,
        [_, "taken"] => Kind::Taken {
            intent: first.to_owned(),
        },
        [_, "failing"] => Kind::Failing {
            job_id: first.to_owned(),
        },
        ["stray"] => Kind::Stray,
        ["failed"] => Kind::Failed {
            id: first.to_owned(),
        },
        _ => Kind::Other,
    }
}

fn older_than(path: &Path, age: Duration) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .is_some_and(|d| d >= age)
}

impl Disk {
    /// At open: waits for the store's lock, which finishes crashed steps, then recovers what
    /// is left in `tmp/`.
    pub(super) fn recover(&self) -> Result<()> {
        let lock = self.lock()?;
        self.recover_leftovers(&lock)
    }

    /// The periodic sweep: at most every [`SWEEP_EVERY`]. Its errors are logged, not
    /// returned: it runs inside a reserve that has its own work.
    pub(super) fn maybe_sweep(&self) {
        {
            let mut at = guard(&self.swept_at);
            if at.elapsed() < SWEEP_EVERY {
                return;
            }
            *at = Instant::now();
        }
        if let Err(e) = self.sweep() {
            tracing::warn!(error = %e, "the file store's sweep failed");
        }
    }

    /// One sweep, if the store's lock is free now (whoever holds it finishes intents anyway).
    pub(crate) fn sweep(&self) -> Result<()> {
        match self.try_lock()? {
            Some(lock) => self.recover_leftovers(&lock),
            None => Ok(()),
        }
    }

    fn recover_leftovers(&self, lock: &Locked<'_>) -> Result<()> {
        let mut moves = Vec::new();
        let mut failing = Vec::new();
        for name in list(&self.tmp)? {
            let Some(text) = name.to_str() else {
                continue;
            };
            let path = self.tmp.join(&name);
            match kind(text) {
                Kind::Push if older_than(&path, PUSH_AGE) => {
                    remove_if_there(&path)?;
                }
                Kind::Orphan => {
                    remove_if_there(&path)?;
                }
                Kind::Taken { intent } if !self.journal.join(&intent).exists() => {
                    moves.push(self.recovery_move(
                        &name,
                        String::new(),
                        "it was found outside its queue after a crash (its step's intent was lost)",
                    ));
                }
                Kind::Failed { id } if older_than(&path, LEFTOVER_AGE) => {
                    self.recover_record(&path, &id)?;
                }
                Kind::Failing { job_id } if older_than(&path, LEFTOVER_AGE) => {
                    failing.push((name.clone(), job_id));
                }
                Kind::Stray if older_than(&path, LEFTOVER_AGE) => {
                    moves.push(self.recovery_move(
                        &name,
                        String::new(),
                        "a process stopped while moving this stray file to the failed store",
                    ));
                }
                _ => {}
            }
        }
        if !failing.is_empty() {
            // A job whose record made it into the failed store before the crash is there
            // already: its leftover is only deleted.
            let recorded = self.recorded_job_ids()?;
            for (name, job_id) in failing {
                if recorded.contains(&job_id) {
                    remove_if_there(&self.tmp.join(&name))?;
                } else {
                    moves.push(self.recovery_move(
                        &name,
                        job_id,
                        "the worker process stopped while moving this job to the failed store; \
                         the reason it failed was lost",
                    ));
                }
            }
        }
        if !moves.is_empty() {
            tracing::warn!(
                files = moves.len(),
                "moving jobs that crashed steps left in tmp/ to the failed store"
            );
            self.run(
                lock,
                &Intent {
                    id: new_id(),
                    moves,
                    publish: Vec::new(),
                    counts: Vec::new(),
                    sets: Vec::new(),
                    plan: None,
                    records: Vec::new(),
                },
            )?;
        }
        Ok(())
    }

    /// A move of a file in `tmp/` into the failed store.
    fn recovery_move(&self, name: &OsString, job_id: String, why: &str) -> Move {
        let path = self.tmp.join(name);
        let queue = read_if_there(&path)
            .ok()
            .flatten()
            .and_then(|bytes| decode_job(&bytes).ok())
            .map(|job| job.queue)
            .unwrap_or_default();
        let at = now_ms();
        Move {
            take: Take::File {
                path: self.rel_path(&path),
            },
            then: Then::Fail(Record {
                queue,
                job_id,
                attempts: 0,
                failed_at: at,
                failed_id: failed_name(at).file_name(),
                error: format!("{why} (recovered from {})", path.display()),
            }),
            claims: Vec::new(),
            counts: Vec::new(),
            publish: Vec::new(),
            waits: Vec::new(),
            replaces: false,
            records: Vec::new(),
            rewrite: None,
        }
    }

    /// An older version's failed record, written but not yet renamed into the failed store:
    /// one rename puts it there under the name it was meant to have.
    fn recover_record(&self, path: &Path, id: &str) -> Result<()> {
        let Some(bytes) = read_if_there(path)? else {
            return Ok(());
        };
        let probe = FailedName {
            at: 0,
            id: id.to_owned(),
        };
        let at = decode_failed(&bytes, &probe)
            .map(|f| f.failed_at)
            .unwrap_or_else(|_| now_ms());
        let name = FailedName {
            at: crate::format::clamp_ms(at),
            id: if is_id(id) { id.to_owned() } else { new_id() },
        };
        let to = self.failed.join(name.file_name());
        fs::rename(path, &to).map_err(FileError::io("rename", path))?;
        self.sync_dir(&self.failed)
    }

    /// The queue ids of the jobs in the failed store.
    fn recorded_job_ids(&self) -> Result<HashSet<String>> {
        let mut ids = HashSet::new();
        for name in parse_names(list(&self.failed)?, FailedName::parse).0 {
            let Some(bytes) = read_if_there(&self.failed.join(name.file_name()))? else {
                continue;
            };
            if let Ok(record) = decode_failed(&bytes, &name) {
                ids.insert(record.job_id);
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_tmp() {
        let id = "0123456789abcdef01234567";
        let is = |name: String, want: &str| {
            let got = match kind(&name) {
                Kind::Push => "push".to_owned(),
                Kind::Orphan => "orphan".to_owned(),
                Kind::Taken { intent } => format!("taken {intent}"),
                Kind::Failing { job_id } => format!("failing {job_id}"),
                Kind::Stray => "stray".to_owned(),
                Kind::Failed { id } => format!("failed {id}"),
                Kind::Other => "other".to_owned(),
            };
            assert_eq!(got, want, "{name}");
        };
        is(format!("{id}.push"), "push");
        is(format!("{id}.3.push"), "push");
        is(format!("{id}.3.0.push"), "push");
        is(format!("{id}.3.hold"), "push");
        is(format!("{id}.3.0.hold"), "push");
        is(format!("{id}.3.0.rec"), "push");
        is(format!("{id}.rec"), "push");
        is(format!("{id}.3.0.val"), "push");
        is(format!("{id}.3.payload"), "push");
        is(format!("{id}.4.wait"), "orphan");
        is(format!("{id}.4.job"), "orphan");
        is(format!("{id}.intent"), "orphan");
        is(format!("{id}.2.record"), "orphan");
        is(format!("{id}.replace"), "orphan");
        is(format!("{id}.counter"), "orphan");
        is(format!("{id}.2.taken"), format!("taken {id}").as_str());
        is(
            format!("{id}.tok3n.failing"),
            format!("failing {id}").as_str(),
        );
        is(format!("{id}.stray"), "stray");
        is(format!("{id}.failed"), format!("failed {id}").as_str());
        is("notes.txt".to_owned(), "other");
        is("a.b.c.d.e".to_owned(), "other");
    }
}
