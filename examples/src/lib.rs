//! Example jobs, after the seeds: sending an email, processing an upload, generating a report
//! that must never run twice at once, a flaky job that succeeds on retry, one that fails for
//! good, and an event-listener style string-named job.
//!
//! Linking this crate is all it takes for a worker to know these jobs: `#[derive(Job)]`
//! registers them. The `runall` binary in this package links it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use queue_core::{Handle, Job, JobContext, JobError, Queue};
use serde::{Deserialize, Serialize};

/// Sends an email (pretend). Three tries, 30 s per attempt, exponential backoff.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(
    name = "send-email",
    queue = "default",
    tries = 3,
    timeout = "30s",
    backoff = "exponential"
)]
pub struct SendEmail {
    /// Recipient.
    pub to: String,
    /// Subject line.
    pub subject: String,
}

impl Handle for SendEmail {
    async fn handle(self, ctx: JobContext) -> Result<(), JobError> {
        if !self.to.contains('@') {
            // Retrying will not fix a malformed address: straight to the failed store.
            return Err(JobError::fail(format!("malformed address `{}`", self.to)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        tracing::info!(to = %self.to, subject = %self.subject, job = %ctx.job_id(), "email sent");
        Ok(())
    }
}

/// Processes an uploaded file (pretend): high priority, short timeout.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(name = "process-upload", queue = "high", tries = 2, timeout = "10s")]
pub struct ProcessUpload {
    /// Where the upload was stored.
    pub path: String,
    /// Who uploaded it.
    pub user_id: u64,
}

impl Handle for ProcessUpload {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        tracing::info!(path = %self.path, user = self.user_id, "upload processed");
        Ok(())
    }
}

/// How many report jobs are running at this moment, to show that `without_overlapping`
/// holds.
pub static REPORTS_RUNNING: AtomicU64 = AtomicU64::new(0);
/// The most report jobs that ever ran at once.
pub static REPORTS_MAX_AT_ONCE: AtomicU64 = AtomicU64::new(0);

/// Generates a monthly report. Dispatch it `.without_overlapping()`: two at once would
/// double-count.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(
    name = "generate-report",
    queue = "low",
    timeout = "5m",
    backoff = "fixed:5s"
)]
pub struct GenerateReport {
    /// The month, as `2026-11`.
    pub month: String,
}

impl Handle for GenerateReport {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        let now = REPORTS_RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        REPORTS_MAX_AT_ONCE.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        REPORTS_RUNNING.fetch_sub(1, Ordering::SeqCst);
        tracing::info!(month = %self.month, "report generated");
        Ok(())
    }
}

/// Recomputes a customer's totals. Unique by customer while it waits (Laravel's
/// `ShouldBeUniqueUntilProcessing`): however many orders come in before a worker takes it,
/// one refresh is queued; once it runs, the next order queues the next one.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(name = "refresh-customer", unique(by = ["customer_id"], until = "started"))]
pub struct RefreshCustomer {
    /// The customer.
    pub customer_id: u64,
}

impl Handle for RefreshCustomer {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        tracing::info!(customer = self.customer_id, "customer totals refreshed");
        Ok(())
    }
}

/// Checks one monitor (seed 003): run by the monitor's stored schedule, every interval.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(name = "check-monitor", queue = "monitors", timeout = "30s")]
pub struct CheckMonitor {
    /// The monitor.
    pub id: u64,
}

impl Handle for CheckMonitor {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        // A real check would call the monitored URL; a short wait stands for it.
        tokio::time::sleep(Duration::from_millis(5)).await;
        tracing::debug!(monitor = self.id, "monitor checked");
        Ok(())
    }
}

/// Calls a partner's API, which allows a few calls a second per account: counted against the
/// limit `partner-api` (defined by the workers: `[limits]` in `job.toml`), one budget per
/// account. Logs each call with the time it started and its attempt.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(
    name = "call-partner",
    queue = "partner",
    limit = "partner-api",
    limit_key = "account"
)]
pub struct CallPartner {
    /// The partner account: each has its own budget.
    pub account: u64,
    /// Which call of the account this is.
    pub n: u64,
}

impl Handle for CallPartner {
    async fn handle(self, ctx: JobContext) -> Result<(), JobError> {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        tracing::info!(
            account = self.account,
            n = self.n,
            at_ms,
            attempt = ctx.attempt(),
            "partner called"
        );
        Ok(())
    }
}

/// Pays out to a bank account: its data (the IBAN) is stored encrypted with the keys of
/// `RUNALL_KEYS` (`#[job(encrypted)]`); the log says only which account was paid.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(name = "pay-out", queue = "payouts", encrypted)]
pub struct PayOut {
    /// The account.
    pub account: u64,
    /// Where the money goes: a secret.
    pub iban: String,
}

impl Handle for PayOut {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        tracing::info!(
            account = self.account,
            iban_len = self.iban.len(),
            "paid out"
        );
        Ok(())
    }
}

/// A scheduled heartbeat: logs the tick it belongs to (`ctx.dispatched_at()`), so a test
/// can count the runs of each tick.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Job)]
#[job(name = "heartbeat", queue = "heartbeats")]
pub struct Heartbeat {}

impl Handle for Heartbeat {
    async fn handle(self, ctx: JobContext) -> Result<(), JobError> {
        let tick = ctx
            .dispatched_at()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        tracing::info!(tick, "heartbeat");
        Ok(())
    }
}

/// Syncs a payment with a remote API that fails on the first try (seed 001), then works.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(name = "sync-payment", tries = 3, backoff = "1s")]
pub struct SyncPayment {
    /// The payment.
    pub payment_id: u64,
}

impl Handle for SyncPayment {
    async fn handle(self, ctx: JobContext) -> Result<(), JobError> {
        if ctx.attempt() == 1 {
            return Err(JobError::msg(
                "payment gateway timed out (it does that on the first try)",
            ));
        }
        tracing::info!(
            payment = self.payment_id,
            attempt = ctx.attempt(),
            "payment synced"
        );
        Ok(())
    }
}

/// Imports a file that does not exist: fails on every attempt and ends in the failed store.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(name = "import-legacy-file", tries = 2, backoff = "500ms")]
pub struct ImportLegacyFile {
    /// The file.
    pub path: String,
}

impl Handle for ImportLegacyFile {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        let text = tokio::fs::read_to_string(&self.path).await?;
        tracing::info!(bytes = text.len(), "imported");
        Ok(())
    }
}

/// A job that does nothing, for benchmarks.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(name = "noop", tries = 3)]
pub struct Noop {
    /// When it was dispatched, in microseconds since the benchmark started (for latency).
    pub sent_us: u64,
}

impl Handle for Noop {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

/// Registers the event-listener style jobs (no struct, a name and a closure), as Rakit's
/// `Event::listen('rakit.jobs.run: send-notification', ...)`.
pub fn listeners(queue: &Queue) {
    queue.listen(
        "send-notification",
        |payload: serde_json::Value, ctx| async move {
            let to = payload["to"].as_str().unwrap_or("nobody");
            tracing::info!(to, job = %ctx.job_id(), "notification sent");
            Ok(())
        },
    );
    // Panics: what a bug in a job body looks like to the worker (it catches the panic and
    // counts a failed attempt).
    queue.listen("explode", |payload: serde_json::Value, _ctx| async move {
        let why = payload["why"].as_str().unwrap_or("no reason").to_owned();
        panic!("exploded: {why}")
    });
}

/// Sleeps: for tests and demos of timeouts, leases and graceful shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(name = "sleep")]
pub struct Sleep {
    /// How long, in milliseconds.
    pub ms: u64,
}

impl Handle for Sleep {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(())
    }
}

/// Aborts the worker process: what a segfault or an OOM kill looks like to the queue. With
/// leases and attempts counted at reservation, it ends in the failed store after its tries.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(name = "abort-worker", tries = 2)]
pub struct AbortWorker {}

impl Handle for AbortWorker {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        std::process::abort();
    }
}

/// Appends how long it waited between dispatch and start, in microseconds of wall-clock time,
/// to a file: the benchmark's dispatch-to-start latency probe (the dispatcher and the worker
/// are different processes on one machine, so they share the clock).
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(name = "latency-probe", tries = 1)]
pub struct LatencyProbe {
    /// Wall-clock time of the dispatch, in microseconds since the Unix epoch.
    pub sent_us: u64,
    /// The file to append the measurement to.
    pub log: String,
}

/// Microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Handle for LatencyProbe {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        use std::io::Write;
        let waited = unix_micros().saturating_sub(self.sent_us);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        writeln!(file, "{waited}")?;
        Ok(())
    }
}

/// Seed 001's payment sync, one student: fetches the student's payments from the provider
/// (pretend: 2 ms) and stores them. Every 500th student's first attempt times out, so the
/// batch's counts (of jobs, never of attempts) can be told from a count of attempts.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(
    name = "sync-student-payments",
    queue = "sync",
    tries = 3,
    backoff = "200ms"
)]
pub struct SyncStudentPayments {
    /// The sync run.
    pub run: String,
    /// The student.
    pub student: u64,
}

impl Handle for SyncStudentPayments {
    async fn handle(self, ctx: JobContext) -> Result<(), JobError> {
        if self.student.is_multiple_of(500) && ctx.attempt() == 1 {
            return Err(JobError::msg("payment provider timed out"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(())
    }
}

/// Seed 001's summary, the `then` job of a sync run's batch: runs once every student's sync
/// succeeded, and appends one line to `summary` (a file).
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(name = "sync-run-done", queue = "sync")]
pub struct SyncRunDone {
    /// The sync run.
    pub run: String,
    /// How many students it synced.
    pub students: u64,
    /// The file the summary line is appended to.
    pub summary: String,
}

impl Handle for SyncRunDone {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.summary)?;
        writeln!(
            file,
            "sync run {}: payments of {} students synced",
            self.run, self.students
        )?;
        Ok(())
    }
}
