//! The chaos job: sleeps, aborts its process or hangs, as its payload says, and writes one
//! ledger line when each attempt starts and one when it ends.
//!
//! The ledger is a file outside the store under test, named by the worker's
//! [`LEDGER_ENV`] variable. Every line is written with one `write(2)` on a file opened with
//! `O_APPEND`, so the lines of concurrent worker processes interleave whole; a process killed
//! with SIGKILL leaves every line it wrote (they are in the page cache once `write` returns).

use std::fs::File;
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use queue_core::{Handle, Job, JobContext, JobError};
use serde::{Deserialize, Serialize};

use crate::ledger::{unix_micros, Entry, Event};

/// The environment variable that names the ledger file of a worker process.
pub const LEDGER_ENV: &str = "CHAOS_LEDGER";

/// The queue chaos jobs go on.
pub const QUEUE: &str = "chaos";

/// The job name chaos jobs are stored under.
pub const NAME: &str = "chaos";

/// What an attempt of a [`ChaosJob`] does between its START and END lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Sleeps `ms` (or `first_ms` on attempt 1) and succeeds.
    #[default]
    Sleep,
    /// Aborts the worker process (SIGABRT): what a segfault or an OOM kill looks like.
    Abort,
    /// Never finishes by itself: only the job's timeout (or a shutdown) ends it.
    Hang,
    /// Sleeps as `Sleep` does, but returns as soon as the job is cancelled
    /// (`ctx.cancelled()`), with an error: its END line says `cancelled`.
    Cooperative,
}

/// The job the harness dispatches: its own logical id, a duration and a mode.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(name = "chaos", queue = "chaos")]
pub struct ChaosJob {
    /// The harness's id for the job (not the store's id: it survives retries and
    /// `failed retry`).
    pub id: u64,
    /// How long each attempt sleeps, in milliseconds.
    #[serde(default)]
    pub ms: u64,
    /// How long the first attempt sleeps instead of `ms` (a holder that is killed while the
    /// retries are quick).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_ms: Option<u64>,
    /// What the attempt does.
    #[serde(default)]
    pub mode: Mode,
}

impl Handle for ChaosJob {
    async fn handle(self, ctx: JobContext) -> Result<(), JobError> {
        let attempt = Attempt::start(&self, &ctx).map_err(JobError::msg)?;
        match self.mode {
            Mode::Abort => std::process::abort(),
            Mode::Hang => std::future::pending::<()>().await,
            Mode::Cooperative => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(self.ms)) => {}
                    _ = ctx.cancelled() => {
                        // Dropped unfinished: the END line says `cancelled`.
                        drop(attempt);
                        return Err(JobError::msg("stopped: the job was cancelled"));
                    }
                }
            }
            Mode::Sleep => {
                let ms = match (ctx.attempt(), self.first_ms) {
                    (1, Some(first)) => first,
                    _ => self.ms,
                };
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        attempt.finish().map_err(JobError::msg)
    }
}

/// One running attempt: its START line is written; its END line is written by
/// [`finish`](Attempt::finish), or with outcome `cancelled` when the attempt is dropped
/// unfinished (the job's timeout or a shutdown past its grace period aborted it).
struct Attempt {
    entry: Entry,
    finished: bool,
}

impl Attempt {
    fn start(job: &ChaosJob, ctx: &JobContext) -> std::io::Result<Attempt> {
        let entry = Entry {
            ev: Event::Start,
            job: job.id,
            attempt: ctx.attempt(),
            pid: std::process::id(),
            us: unix_micros(),
            sid: ctx.job_id().to_string(),
            nonce: rand::random(),
            outcome: None,
        };
        append(&entry)?;
        Ok(Attempt {
            entry,
            finished: false,
        })
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.finished = true;
        self.end("ok")
    }

    fn end(&self, outcome: &str) -> std::io::Result<()> {
        let entry = Entry {
            ev: Event::End,
            us: unix_micros(),
            outcome: Some(outcome.to_owned()),
            ..self.entry.clone()
        };
        append(&entry)
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.finished {
            // Nothing to do about a failed write here: the missing END line shows in the
            // checker as an attempt that never ended.
            let _ = self.end("cancelled");
        }
    }
}

/// Appends one entry to the ledger as one line with one `write` call. Without a ledger
/// (`CHAOS_LEDGER` unset) nothing is written.
fn append(entry: &Entry) -> std::io::Result<()> {
    static LEDGER: OnceLock<Option<File>> = OnceLock::new();
    let ledger = LEDGER.get_or_init(|| {
        let path = std::env::var_os(LEDGER_ENV)?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    let Some(mut file) = ledger.as_ref() else {
        if std::env::var_os(LEDGER_ENV).is_some() {
            return Err(std::io::Error::other("the ledger file could not be opened"));
        }
        return Ok(());
    };
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    // One write of one short line to an O_APPEND file: whole, never interleaved with
    // another process's line. A short write (which a local file system does not do for a
    // few hundred bytes) would still finish the line, just not atomically.
    let written = file.write(&line)?;
    if written < line.len() {
        file.write_all(&line[written..])?;
    }
    Ok(())
}
