//! The checker: reads what the harness dispatched, the ledger, the faults it injected, the
//! workers' logs and the store after the run, and says what went wrong, Jepsen-style.
//!
//! Definitions (per logical job, that is per dispatch that returned Ok):
//!
//! - **completed**: at least one attempt wrote END with outcome `ok`.
//! - **lost**: expected to complete, never completed, and not in the failed store.
//! - **duplicated**: completed more than once.
//! - **allowed duplicate**: a duplicated job where every completion after the first (in order
//!   of start) has an earlier completed attempt that overlapped a fault of its worker: a
//!   SIGKILL or a crash of its process, a SIGSTOP, a lease lapse (the worker logged that its
//!   acknowledge was refused or its lease was lost), or a restart of the backend; "overlapped"
//!   means the fault fell between the attempt's start and [`ACK_SLACK_US`] after its end, the
//!   window in which its acknowledge was still on its way.
//! - **unexpected**: anything else: a job expected to complete in the failed store, a job
//!   expected to fail that completed or is missing from the failed store, a failure reason of
//!   the wrong kind, ledger lines of jobs never dispatched, corrupt ledger lines, panics.
//! - **stuck**: still reserved once every lease ran out and a final worker drained the queue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use queue_core::envelope::Envelope;
use queue_core::FailedJob;

use crate::job::ChaosJob;
use crate::ledger::{attempts, Attempt, Entry};

/// How long after an attempt's END its acknowledge may still be in flight (µs): a fault in
/// this window can make a finished job run again.
pub const ACK_SLACK_US: u64 = 3_000_000;

/// What a dispatched job should end as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Completes (at least once).
    Complete,
    /// Ends in the failed store with an error containing one of `reasons`, after exactly
    /// `attempts` attempts if given.
    Fail {
        /// Acceptable substrings of the failure reason.
        reasons: Vec<String>,
        /// The attempt count the failed record must show.
        attempts: Option<u32>,
    },
    /// Cancelled by the harness (`Queue::cancel`) at `at_us`: never in the failed store, not
    /// lost. `removed`: the cancel removed it from its queue, so no attempt starts after it.
    /// Otherwise it was running: no attempt past the first starts after it (a retried
    /// attempt reads the cancel mark before its body runs; a first attempt reserved before
    /// the cancel may still start, and is stopped from its heartbeat).
    Cancelled {
        /// Removed from its queue (else marked while running).
        removed: bool,
        /// When the cancel returned (µs).
        at_us: u64,
    },
}

/// How long after a cancel returned an attempt may still start and be one that was already
/// past its cancel check (clocks of one machine; the time between the check and the START
/// line).
pub const CANCEL_SLACK_US: u64 = 200_000;

/// One job whose dispatch returned Ok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    /// The harness's id.
    pub id: u64,
    /// The store's id from `push`.
    pub sid: String,
    /// What it should end as.
    pub expect: Expect,
    /// A label for reports (`good`, `abort`, `poison:invalid-utf8`...).
    pub label: String,
    /// When it was pushed (µs).
    pub pushed_us: u64,
}

/// A fault the harness injected or saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of a worker.
    Kill {
        /// The worker.
        pid: u32,
        /// When (µs).
        at: u64,
    },
    /// A worker exited on its own with a failure (a job aborted it).
    Crash {
        /// The worker.
        pid: u32,
        /// When the harness saw it (µs).
        at: u64,
    },
    /// SIGSTOP of a worker, continued at `until`.
    Stop {
        /// The worker.
        pid: u32,
        /// When stopped (µs).
        at: u64,
        /// When continued (µs).
        until: u64,
    },
    /// SIGTERM of a worker (a graceful stop: not an excuse for duplicates).
    Term {
        /// The worker.
        pid: u32,
        /// When (µs).
        at: u64,
    },
    /// The backend was down from `at` until `until` (answering again).
    Backend {
        /// Going down (µs).
        at: u64,
        /// Answering again (µs).
        until: u64,
    },
}

/// What the workers' logs say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerLogs {
    /// (pid, store id) of jobs whose acknowledge was refused.
    pub refused: HashSet<(u32, String)>,
    /// (pid, store id) of jobs whose lease was lost while they ran.
    pub lease_lost: HashSet<(u32, String)>,
    /// Refused acknowledges in all.
    pub refused_count: u64,
    /// "acknowledge failed:" lines (a batch that could not reach the store after its
    /// retries: those jobs run again after their lease).
    pub ack_failed: u64,
    /// "job panicked" lines.
    pub panics: u64,
    /// "reserve failed" lines.
    pub reserve_failed: u64,
    /// Lines where the driver says the backend lost its state (memcached after a restart).
    pub state_lost: u64,
    /// Lines that carry a backend error (a restart, a dropped connection), retried or not.
    pub backend_errors: u64,
    /// A few distinct backend errors.
    pub backend_error_kinds: Vec<String>,
    /// Store operations that failed for good ("could not put the job back", "could not
    /// move the job to the failed store").
    pub store_errors: u64,
    /// A few of the error lines, for the report.
    pub samples: Vec<String>,
}

impl WorkerLogs {
    /// Reads one worker's log.
    pub fn read(&mut self, pid: u32, path: &Path) {
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        for line in text.lines() {
            if line.contains("backend error") {
                self.backend_errors += 1;
                if let Some(at) = line.find("error=") {
                    let message: String = line[at..].chars().take(160).collect();
                    if self.backend_error_kinds.len() < 3
                        && !self
                            .backend_error_kinds
                            .iter()
                            .any(|k| k.get(..40) == message.get(..40))
                    {
                        self.backend_error_kinds.push(message);
                    }
                }
            }
            let id = field(line, "id");
            if line.contains("acknowledge was refused") {
                self.refused_count += 1;
                if let Some(id) = id {
                    self.refused.insert((pid, id));
                }
            } else if line.contains("stopped the job:") {
                if let Some(id) = id {
                    self.lease_lost.insert((pid, id));
                }
            } else if line.contains("could not settle these jobs") {
                self.ack_failed += 1;
                self.sample(pid, line);
            } else if line.contains("job panicked") || line.contains("panicked at") {
                self.panics += 1;
                self.sample(pid, line);
            } else if line.contains("reserve failed") {
                self.reserve_failed += 1;
            } else if line.contains("lost the queue state") {
                self.state_lost += 1;
            } else if line.contains("could not settle the job") {
                self.store_errors += 1;
                self.sample(pid, line);
            }
        }
    }

    fn sample(&mut self, pid: u32, line: &str) {
        if self.samples.len() < 10 {
            let short: String = line.chars().take(300).collect();
            self.samples.push(format!("worker {pid}: {short}"));
        }
    }
}

/// The value of `key=value` in a log line.
fn field(line: &str, key: &str) -> Option<String> {
    let needle = format!(" {key}=");
    let start = line.find(&needle)? + needle.len();
    let value: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    Some(value.trim_matches('"').to_owned())
}

/// A failed-store record, tied to the dispatch it came from when it can be.
#[derive(Debug, Clone)]
pub struct FailedRecord {
    /// The logical id, if known.
    pub job: Option<u64>,
    /// The record.
    pub record: FailedJob,
}

/// Ties failed-store records to dispatches: by the store's id, else by the payload.
pub fn tie_failed(failed: Vec<FailedJob>, dispatched: &[Dispatched]) -> Vec<FailedRecord> {
    let by_sid: HashMap<&str, u64> = dispatched.iter().map(|d| (d.sid.as_str(), d.id)).collect();
    failed
        .into_iter()
        .map(|record| {
            let job = by_sid.get(record.job_id.as_str()).copied().or_else(|| {
                let envelope = Envelope::decode(&record.payload).ok()?;
                serde_json::from_str::<ChaosJob>(envelope.data.get())
                    .ok()
                    .map(|j| j.id)
            });
            FailedRecord { job, record }
        })
        .collect()
}

/// Everything the checker reads.
#[derive(Debug, Default)]
pub struct Evidence {
    /// The dispatches that returned Ok.
    pub dispatched: Vec<Dispatched>,
    /// Every ledger line.
    pub entries: Vec<Entry>,
    /// Ledger lines that did not parse.
    pub corrupt_lines: u64,
    /// Injected faults.
    pub faults: Vec<Fault>,
    /// The workers' logs.
    pub logs: WorkerLogs,
    /// The failed store after the run.
    pub failed: Vec<FailedRecord>,
    /// Jobs whose dispatch returned an error: if they ran, they were stored after all
    /// (not an anomaly), and they are not expected to run.
    pub uncertain: HashSet<u64>,
}

/// Why an attempt may have run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Excuse {
    /// Its worker was killed or crashed.
    Kill,
    /// Its worker was stopped.
    Stop,
    /// Its worker's lease lapsed (refused acknowledge, lost lease).
    LeaseLapse,
    /// The backend restarted.
    Backend,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Attempts per logical job, in order of start.
    pub attempts: HashMap<u64, Vec<Attempt>>,
    /// Jobs expected to complete that completed.
    pub completed: u64,
    /// Lost jobs.
    pub lost: Vec<u64>,
    /// Jobs completed more than once.
    pub duplicated: Vec<u64>,
    /// Of those, explained by faults.
    pub allowed: Vec<u64>,
    /// The excuses that explained them.
    pub excuses: BTreeMap<String, u64>,
    /// Unexpected things, spelled out.
    pub unexpected: Vec<String>,
    /// Failed-store records by logical id.
    pub failed_by_job: HashMap<u64, FailedRecord>,
}

impl Evidence {
    /// Why `attempt` may have been followed by another, if a fault explains it.
    pub fn excuse(&self, attempt: &Attempt) -> Option<Excuse> {
        for fault in &self.faults {
            match *fault {
                Fault::Kill { pid, at } | Fault::Crash { pid, at }
                    if pid == attempt.pid && attempt.covers(at, ACK_SLACK_US) =>
                {
                    return Some(Excuse::Kill)
                }
                Fault::Stop { pid, at, until }
                    if pid == attempt.pid
                        && at <= attempt.end.map_or(u64::MAX, |e| e + ACK_SLACK_US)
                        && until >= attempt.start =>
                {
                    return Some(Excuse::Stop)
                }
                Fault::Backend { at, until }
                    if at <= attempt.end.map_or(u64::MAX, |e| e + ACK_SLACK_US)
                        && until + ACK_SLACK_US >= attempt.start =>
                {
                    return Some(Excuse::Backend)
                }
                _ => {}
            }
        }
        let key = (attempt.pid, attempt.sid.clone());
        if self.logs.refused.contains(&key) || self.logs.lease_lost.contains(&key) {
            return Some(Excuse::LeaseLapse);
        }
        None
    }

    /// Runs the checks that apply to every scenario.
    pub fn check(&self) -> Findings {
        let mut findings = Findings {
            attempts: attempts(&self.entries),
            ..Findings::default()
        };
        let dispatched: HashMap<u64, &Dispatched> =
            self.dispatched.iter().map(|d| (d.id, d)).collect();
        for record in &self.failed {
            match record.job {
                Some(job) if dispatched.contains_key(&job) => {
                    findings.failed_by_job.insert(job, record.clone());
                }
                Some(job) if self.uncertain.contains(&job) => {}
                _ => findings.unexpected.push(format!(
                    "the failed store holds job {} ({}) that the harness did not dispatch: {}",
                    record.record.job_id, record.record.name, record.record.error
                )),
            }
        }
        let mut strangers: Vec<u64> = findings
            .attempts
            .keys()
            .filter(|id| !dispatched.contains_key(id) && !self.uncertain.contains(id))
            .copied()
            .collect();
        strangers.sort_unstable();
        for id in strangers {
            findings.unexpected.push(format!(
                "the ledger shows job {id}, which was never dispatched"
            ));
        }
        if self.corrupt_lines > 0 {
            findings.unexpected.push(format!(
                "{} ledger lines did not parse (torn or interleaved writes)",
                self.corrupt_lines
            ));
        }
        if self.logs.panics > 0 {
            findings
                .unexpected
                .push(format!("{} panics in the workers' logs", self.logs.panics));
        }

        let empty = Vec::new();
        for d in &self.dispatched {
            let list = findings.attempts.get(&d.id).unwrap_or(&empty);
            let completions: Vec<&Attempt> = list.iter().filter(|a| a.completed()).collect();
            let failed = findings.failed_by_job.get(&d.id);
            match &d.expect {
                // Checked below: a cancelled job may end either way, never lost.
                Expect::Cancelled { .. } => {
                    if !completions.is_empty() {
                        findings.completed += 1;
                    }
                }
                Expect::Complete => {
                    if !completions.is_empty() {
                        findings.completed += 1;
                    }
                    if let Some(f) = failed {
                        findings.unexpected.push(format!(
                            "job {} ({}) is in the failed store after {} attempts: {}",
                            d.id, d.label, f.record.attempts, f.record.error
                        ));
                    } else if completions.is_empty() {
                        findings.lost.push(d.id);
                    }
                }
                Expect::Fail { reasons, attempts } => {
                    if !completions.is_empty() {
                        findings.unexpected.push(format!(
                            "job {} ({}) was expected to fail but completed",
                            d.id, d.label
                        ));
                    }
                    match failed {
                        None => findings.unexpected.push(format!(
                            "job {} ({}) was expected in the failed store and is not there",
                            d.id, d.label
                        )),
                        Some(f) => {
                            if !reasons.iter().any(|r| f.record.error.contains(r.as_str())) {
                                findings.unexpected.push(format!(
                                    "job {} ({}) failed with `{}`; expected a reason containing one of {:?}",
                                    d.id,
                                    d.label,
                                    short(&f.record.error),
                                    reasons
                                ));
                            }
                            if let Some(n) = attempts {
                                if f.record.attempts != *n {
                                    findings.unexpected.push(format!(
                                        "job {} ({}) failed after {} attempts; expected {n}",
                                        d.id, d.label, f.record.attempts
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            if let Expect::Cancelled { removed, at_us } = &d.expect {
                if let Some(f) = failed {
                    findings.unexpected.push(format!(
                        "job {} ({}) was cancelled and is in the failed store: {}",
                        d.id, d.label, f.record.error
                    ));
                }
                let late = list
                    .iter()
                    .find(|a| a.start > at_us + CANCEL_SLACK_US && (*removed || a.attempt > 1));
                if let Some(a) = late {
                    findings.unexpected.push(format!(
                        "job {} ({}) was cancelled ({}) and attempt {} started {} ms after",
                        d.id,
                        d.label,
                        if *removed {
                            "removed"
                        } else {
                            "marked running"
                        },
                        a.attempt,
                        (a.start - at_us) / 1000
                    ));
                }
            }
            if completions.len() > 1 {
                findings.duplicated.push(d.id);
                let mut allowed = true;
                let mut reasons = Vec::new();
                for (k, later) in completions.iter().enumerate().skip(1) {
                    let excuse = completions[..k]
                        .iter()
                        .find_map(|earlier| self.excuse(earlier));
                    match excuse {
                        Some(e) => reasons.push(e),
                        None => {
                            allowed = false;
                            findings.unexpected.push(format!(
                                "job {} completed again (attempt {} on worker {}) with no fault to explain it: {}",
                                d.id,
                                later.attempt,
                                later.pid,
                                describe(&completions)
                            ));
                        }
                    }
                }
                if allowed {
                    findings.allowed.push(d.id);
                    for r in reasons {
                        *findings.excuses.entry(format!("{r:?}")).or_default() += 1;
                    }
                }
            }
        }
        findings
    }
}

fn short(text: &str) -> String {
    let s: String = text.chars().take(160).collect();
    if s.len() < text.len() {
        format!("{s}…")
    } else {
        s
    }
}

fn describe(list: &[&Attempt]) -> String {
    list.iter()
        .map(|a| {
            format!(
                "[attempt {} pid {} {}..{}]",
                a.attempt,
                a.pid,
                a.start,
                a.end.map_or("-".to_owned(), |e| e.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What [`kill_recovery`] measured.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// µs from the fault to the start of the job's next attempt, per orphaned attempt.
    pub samples: Vec<u64>,
    /// Jobs whose orphaned attempt was never followed by another.
    pub never: Vec<u64>,
    /// Orphans whose next reservation was itself lost before its job started (the next
    /// attempt seen has a number more than one higher: a worker took the job in time and
    /// was killed before it began): left out of `samples`, which would charge the second
    /// fault's lease to the first.
    pub reorphaned: u64,
}

/// For each killed or crashed worker: the attempts it left running (or finished but maybe
/// unacknowledged, when the job ran again), and how long until each job's next attempt
/// started, in µs from the fault. Jobs in `skip` (the crashers themselves) are left out.
pub fn kill_recovery(
    by_job: &HashMap<u64, Vec<Attempt>>,
    faults: &[Fault],
    skip: &HashSet<u64>,
) -> Recovery {
    let mut out = Recovery::default();
    for fault in faults {
        let (pid, at) = match *fault {
            Fault::Kill { pid, at } | Fault::Crash { pid, at } => (pid, at),
            _ => continue,
        };
        for (job, list) in by_job {
            if skip.contains(job) {
                continue;
            }
            for a in list.iter().filter(|a| a.pid == pid && a.start <= at) {
                let next = list.iter().find(|b| b.start > at);
                let orphan = match a.end {
                    None => true,
                    Some(end) => next.is_some() && end + ACK_SLACK_US >= at,
                };
                if !orphan {
                    continue;
                }
                match next {
                    Some(n) if n.attempt > a.attempt + 1 => out.reorphaned += 1,
                    Some(n) => out.samples.push(n.start - at),
                    None => out.never.push(*job),
                }
            }
        }
    }
    out
}

/// For each stopped worker: the attempts running when it was stopped, and how long until
/// another worker started the job (µs from the stop).
pub fn stop_recovery(
    by_job: &HashMap<u64, Vec<Attempt>>,
    faults: &[Fault],
) -> (Vec<u64>, Vec<u64>) {
    let mut samples = Vec::new();
    let mut never = Vec::new();
    for fault in faults {
        let Fault::Stop { pid, at, .. } = *fault else {
            continue;
        };
        for (job, list) in by_job {
            for a in list.iter().filter(|a| a.pid == pid && a.covers(at, 0)) {
                let _ = a;
                match list.iter().find(|b| b.start > at && b.pid != pid) {
                    Some(n) => samples.push(n.start - at),
                    None => never.push(*job),
                }
            }
        }
    }
    (samples, never)
}

/// For each SIGTERM: the attempts its worker interrupted (END `cancelled` after the
/// signal), and how long until each job started again (µs from the signal).
pub fn term_requeue(by_job: &HashMap<u64, Vec<Attempt>>, faults: &[Fault]) -> (Vec<u64>, Vec<u64>) {
    let mut samples = Vec::new();
    let mut never = Vec::new();
    for fault in faults {
        let Fault::Term { pid, at } = *fault else {
            continue;
        };
        for (job, list) in by_job {
            for a in list.iter().filter(|a| {
                a.pid == pid
                    && a.start <= at
                    && a.outcome.as_deref() == Some("cancelled")
                    && a.end.is_some_and(|e| e >= at)
            }) {
                match list.iter().find(|b| b.start > a.start && b.start >= at) {
                    Some(n) => samples.push(n.start - at),
                    None => never.push(*job),
                }
            }
        }
    }
    (samples, never)
}

/// By when each worker that was SIGKILLed or crashed was dead (µs), by pid: a body it left
/// running wrote a START and no END, and ran until then. A kill's `at` is taken just before
/// `kill(1)` is run, and the worker goes on for a moment (it may even START a job after
/// `at`): its death lies between `at` and the harness reaping it, given in `reaped` where
/// known, which is used instead. A crash's `at` is when the harness saw the exit, already
/// no earlier than the death.
pub fn deaths(faults: &[Fault], reaped: &HashMap<u32, u64>) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    for fault in faults {
        let (pid, dead) = match *fault {
            Fault::Kill { pid, at } => (pid, reaped.get(&pid).copied().unwrap_or(at).max(at)),
            Fault::Crash { pid, at } => (pid, at),
            _ => continue,
        };
        let t = out.entry(pid).or_insert(dead);
        *t = (*t).min(dead);
    }
    out
}

/// How many job bodies ran at once under one key of a concurrency limit, from the ledger.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AtOnce {
    /// Bodies with both a START and an END line.
    pub ended: usize,
    /// Bodies with a START and no END whose worker was killed (or crashed): counted as
    /// running until it was dead (see [`deaths`]).
    pub killed: usize,
    /// Bodies with a START, no END and no death of their worker: counted as running until
    /// the end of time (nothing tells when they stopped).
    pub open: usize,
    /// The most running at once, counting the ended bodies only.
    pub most_ended: usize,
    /// The most running at once, counting the ended bodies, the killed ones until their
    /// worker's death and the open ones for ever.
    pub most: usize,
    /// The first moment (µs) more than the limit ran (counted as `most` counts), with the
    /// jobs running then.
    pub first_excess: Option<(u64, Vec<u64>)>,
}

/// The most intervals `[start, end)` open at once, and the first moment more than `limit`
/// were (an interval that ends at the moment another starts is not counted with it).
fn sweep(intervals: &[(u64, u64, u64)], limit: usize) -> (usize, Option<(u64, Vec<u64>)>) {
    let mut events: Vec<(u64, i64)> = intervals
        .iter()
        .flat_map(|&(start, end, _)| [(start, 1), (end, -1)])
        .collect();
    // At one instant, ends (-1) before starts (+1).
    events.sort_unstable();
    let (mut running, mut most, mut excess) = (0i64, 0i64, None);
    for (t, delta) in events {
        running += delta;
        most = most.max(running);
        if excess.is_none() && usize::try_from(running).unwrap_or(0) > limit {
            let jobs = intervals
                .iter()
                .filter(|&&(start, end, _)| start <= t && t < end)
                .map(|&(_, _, job)| job)
                .collect();
            excess = Some((t, jobs));
        }
    }
    (usize::try_from(most).unwrap_or(0), excess)
}

/// How many of `bodies` (the attempts of the jobs of one key) ran at once: once counting
/// only the bodies whose START and END are both in the ledger, once counting too each body
/// with no END as running until its worker was killed (`deaths`), or for ever if its worker
/// was not.
pub fn at_once<'a>(
    bodies: impl IntoIterator<Item = &'a Attempt>,
    deaths: &HashMap<u32, u64>,
    limit: usize,
) -> AtOnce {
    let mut out = AtOnce::default();
    let (mut ended, mut all) = (Vec::new(), Vec::new());
    for a in bodies {
        match a.end {
            Some(end) => {
                out.ended += 1;
                ended.push((a.start, end, a.job));
                all.push((a.start, end, a.job));
            }
            None => match deaths.get(&a.pid) {
                Some(&death) if death >= a.start => {
                    out.killed += 1;
                    all.push((a.start, death, a.job));
                }
                _ => {
                    out.open += 1;
                    all.push((a.start, u64::MAX, a.job));
                }
            },
        }
    }
    out.most_ended = sweep(&ended, limit).0;
    (out.most, out.first_excess) = sweep(&all, limit);
    out
}

/// The worst shortfall of a key's starts against its rate: over every `k >= min_k`
/// consecutive starts (in order of time), how much less than `(k - 1) × interval_us` they
/// span, in µs (negative: every such run of starts kept the rate with that much to spare),
/// with the indexes of the first and last start of the worst. `None` with fewer than
/// `min_k` starts.
pub fn rate_shortfall(
    starts: &[u64],
    interval_us: u64,
    min_k: usize,
) -> Option<(i64, usize, usize)> {
    let mut sorted = starts.to_vec();
    sorted.sort_unstable();
    let gap = min_k.max(2) - 1;
    let mut worst: Option<(i64, usize, usize)> = None;
    for i in 0..sorted.len() {
        for j in i + gap..sorted.len() {
            let least = i64::try_from((j - i) as u64 * interval_us).unwrap_or(i64::MAX);
            let span = i64::try_from(sorted[j] - sorted[i]).unwrap_or(i64::MAX);
            let short = least - span;
            if worst.is_none_or(|(w, _, _)| short > w) {
                worst = Some((short, i, j));
            }
        }
    }
    worst
}

/// What [`attempt_audit`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AttemptAudit {
    /// Bodies (attempts with a START) looked at.
    pub bodies: usize,
    /// Of those, bodies whose attempt number is above 1.
    pub retried: usize,
    /// The highest attempt number seen.
    pub max_attempt: u32,
    /// Bodies that started at least the `waited` given after their dispatch with no kill,
    /// crash or lapsed lease in between: their jobs were put back while they waited, with no
    /// fault to count an attempt, so each must be at attempt 1.
    pub waited_unfaulted: usize,
    /// Bodies whose attempt number no fault explains, spelled out.
    pub unexplained: Vec<String>,
}

/// Whether each body's attempt number is explained by faults. An attempt is counted when
/// a job is reserved and given back when it is put back (waiting for a limit, a lock), so
/// the attempts counted before a body are reservations that were lost: to a SIGKILL or a
/// crash of the worker holding it (each death takes at most one reservation of a job with
/// it), or to a lease that lapsed (logged by its worker). A body's `attempt - 1` must be at
/// most the kills and crashes of any worker between its job's dispatch (`pushed`, µs) and
/// its START, plus the job's earlier bodies whose lease lapsed. An attempt counted for
/// waiting shows here unless a kill happens to cover it. Bodies that started `waited` µs or
/// more after their dispatch with no fault in between are counted too (`waited_unfaulted`).
pub fn attempt_audit(
    by_job: &HashMap<u64, Vec<Attempt>>,
    pushed: &HashMap<u64, u64>,
    faults: &[Fault],
    logs: &WorkerLogs,
    waited: u64,
) -> AttemptAudit {
    let mut deaths: Vec<u64> = faults
        .iter()
        .filter_map(|f| match *f {
            Fault::Kill { at, .. } | Fault::Crash { at, .. } => Some(at),
            _ => None,
        })
        .collect();
    deaths.sort_unstable();
    let mut out = AttemptAudit::default();
    let mut jobs: Vec<(&u64, &u64)> = pushed.iter().collect();
    jobs.sort_unstable();
    for (job, &from) in jobs {
        let Some(list) = by_job.get(job) else {
            continue;
        };
        for a in list {
            out.bodies += 1;
            out.max_attempt = out.max_attempt.max(a.attempt);
            let kills = deaths
                .iter()
                .filter(|&&t| t >= from && t <= a.start)
                .count();
            let lapses = list
                .iter()
                .filter(|b| b.start < a.start)
                .filter(|b| {
                    let key = (b.pid, b.sid.clone());
                    logs.refused.contains(&key) || logs.lease_lost.contains(&key)
                })
                .count();
            if kills + lapses == 0 && a.start.saturating_sub(from) >= waited {
                out.waited_unfaulted += 1;
            }
            if a.attempt <= 1 {
                continue;
            }
            out.retried += 1;
            if a.attempt as usize - 1 > kills + lapses {
                out.unexplained.push(format!(
                    "job {job}: attempt {} on worker {} started {:.1} s after its dispatch, \
                     with {kills} kills and {lapses} lapsed leases in between",
                    a.attempt,
                    a.pid,
                    a.start.saturating_sub(from) as f64 / 1e6
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Entry, Event};

    fn line(ev: Event, job: u64, pid: u32, us: u64, nonce: u64, ok: bool) -> Entry {
        Entry {
            ev,
            job,
            attempt: 1,
            pid,
            us,
            sid: format!("s{job}"),
            nonce,
            outcome: (ev == Event::End).then(|| if ok { "ok" } else { "cancelled" }.to_owned()),
        }
    }

    fn good(id: u64) -> Dispatched {
        Dispatched {
            id,
            sid: format!("s{id}"),
            expect: Expect::Complete,
            label: "good".into(),
            pushed_us: 0,
        }
    }

    #[test]
    fn lost_duplicated_and_allowed() {
        let evidence = Evidence {
            dispatched: vec![good(1), good(2), good(3), good(4)],
            entries: vec![
                // 1: once.
                line(Event::Start, 1, 10, 100, 1, false),
                line(Event::End, 1, 10, 200, 1, true),
                // 2: twice, the first on a worker killed just after it finished: allowed.
                line(Event::Start, 2, 10, 100, 2, false),
                line(Event::End, 2, 10, 300, 2, true),
                line(Event::Start, 2, 11, 5_000_000, 3, false),
                line(Event::End, 2, 11, 5_000_100, 3, true),
                // 3: twice with no fault: not allowed.
                line(Event::Start, 3, 11, 100, 4, false),
                line(Event::End, 3, 11, 200, 4, true),
                line(Event::Start, 3, 12, 900, 5, false),
                line(Event::End, 3, 12, 1000, 5, true),
                // 4: never completed.
                line(Event::Start, 4, 10, 100, 6, false),
            ],
            faults: vec![Fault::Kill { pid: 10, at: 400 }],
            ..Evidence::default()
        };
        let f = evidence.check();
        assert_eq!(f.completed, 3);
        assert_eq!(f.lost, vec![4]);
        assert_eq!(f.duplicated, vec![2, 3]);
        assert_eq!(f.allowed, vec![2]);
        assert_eq!(f.unexpected.len(), 1, "{:?}", f.unexpected);
        let r = kill_recovery(&f.attempts, &evidence.faults, &HashSet::new());
        assert_eq!(r.samples, vec![5_000_000 - 400]);
        assert_eq!(r.never, vec![4]);
    }

    #[test]
    fn log_fields() {
        let line = "2025-01-01T00:00:00.000001Z  WARN job done but its acknowledge was refused: the lease ran out and the job may run again job=chaos id=chaos/17";
        assert_eq!(field(line, "id").as_deref(), Some("chaos/17"));
        assert_eq!(field(line, "job").as_deref(), Some("chaos"));
        assert_eq!(field(line, "nope"), None);
    }

    fn body(job: u64, pid: u32, attempt: u32, start: u64, end: Option<u64>) -> Attempt {
        Attempt {
            job,
            attempt,
            pid,
            sid: format!("s{job}"),
            start,
            end,
            outcome: end.map(|_| "ok".to_owned()),
        }
    }

    #[test]
    fn bodies_at_once() {
        let deaths = deaths(&[Fault::Kill { pid: 9, at: 480 }], &[(9, 500)].into());
        let bodies = [
            body(1, 1, 1, 0, Some(100)),
            body(2, 2, 1, 100, Some(300)),
            // Killed at 500: running 150..500.
            body(3, 9, 1, 150, None),
            body(4, 1, 1, 200, Some(250)),
        ];
        let a = at_once(&bodies, &deaths, 2);
        assert_eq!((a.ended, a.killed, a.open), (3, 1, 0));
        assert_eq!((a.most_ended, a.most), (2, 3));
        assert_eq!(a.first_excess, Some((200, vec![2, 3, 4])));
        // A body that ends as another starts is not counted with it.
        let back_to_back = [body(1, 1, 1, 0, Some(100)), body(2, 1, 1, 100, Some(200))];
        assert_eq!(at_once(&back_to_back, &deaths, 1).most, 1);
        // A START just after the signal was sent, before the worker died: cut short by the
        // kill (running until the reaping), not open for ever.
        let late = [body(1, 9, 1, 490, None), body(2, 1, 1, 495, Some(600))];
        let a = at_once(&late, &deaths, 1);
        assert_eq!((a.killed, a.open, a.most), (1, 0, 2));
        // No END and no death: running for ever.
        let open = [body(1, 3, 1, 0, None), body(2, 1, 1, 1000, Some(1100))];
        let a = at_once(&open, &deaths, 1);
        assert_eq!((a.open, a.most, a.most_ended), (1, 2, 1));
    }

    #[test]
    fn rate_shortfalls() {
        let even: Vec<u64> = (0..10).map(|i| i * 50_000).collect();
        assert_eq!(rate_shortfall(&even, 50_000, 4).map(|w| w.0), Some(0));
        let mut bunched = even.clone();
        bunched[5] = 210_000;
        bunched[6] = 220_000;
        // Starts 0..6 (k = 7) span 220 ms of the 300 they must (the first of the worst).
        assert_eq!(rate_shortfall(&bunched, 50_000, 4), Some((80_000, 0, 6)));
        assert_eq!(rate_shortfall(&even[..3], 50_000, 4), None);
    }

    #[test]
    fn attempts_explained_by_kills_only() {
        let mut by_job = HashMap::new();
        by_job.insert(
            1,
            vec![body(1, 1, 1, 100, None), body(1, 2, 2, 900, Some(950))],
        );
        by_job.insert(2, vec![body(2, 2, 3, 900, Some(950))]);
        let pushed: HashMap<u64, u64> = [(1, 0), (2, 0)].into();
        let faults = [Fault::Kill { pid: 1, at: 200 }];
        let audit = attempt_audit(&by_job, &pushed, &faults, &WorkerLogs::default(), 50);
        assert_eq!((audit.bodies, audit.retried, audit.max_attempt), (3, 2, 3));
        // Only job 1's first body started with no kill before it.
        assert_eq!(audit.waited_unfaulted, 1);
        // Job 2's third attempt: one kill explains one lost reservation, not two.
        assert_eq!(audit.unexplained.len(), 1, "{:?}", audit.unexplained);
        assert!(audit.unexplained[0].starts_with("job 2:"));
    }
}
