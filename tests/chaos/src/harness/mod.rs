//! The harness: one run per scenario and driver, with its own table (key prefix,
//! directory), ledger, worker processes and fault log.

mod backend;
mod pool;
mod scenarios;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use queue_core::storage::{self, ConnectOptions, PageRequest};
use queue_core::{Job, NewJob, Queue, QueueSize, Storage, StorageExt};

use crate::check::{tie_failed, Dispatched, Evidence, Expect, Fault, Findings, WorkerLogs};
use crate::job::{ChaosJob, QUEUE};
use crate::ledger::{unix_micros, Entry, Event, LedgerReader};
use crate::report::{ScenarioReport, Verdict};

pub(crate) use pool::{Pool, WorkerSpec};

/// The scenarios, in the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// 1. 10,000 jobs, 4 workers, no faults.
    Baseline,
    /// 2. A worker SIGKILLed every 2 s and restarted.
    KillStorm,
    /// 3. SIGTERM with jobs in flight.
    GracefulStop,
    /// 4. A job that aborts its worker process.
    CrashLoop,
    /// 5. SIGSTOP longer than the lease, then SIGCONT.
    StoppedWorker,
    /// 6. The backend restarted mid-run.
    BackendRestart,
    /// 7. `without_overlapping` on one key, and SIGKILL of the holder.
    WithoutOverlapping,
    /// 8. Bad payloads written straight into the store.
    Poison,
    /// 9. A job that hangs, with a 2 s timeout.
    HangingJob,
    /// 10. Chains of jobs under the SIGKILL storm.
    ChainStorm,
    /// 11. Batches with callbacks under the SIGKILL storm.
    BatchStorm,
    /// 12. Rate and concurrency limits under the SIGKILL storm.
    LimitStorm,
    /// 13. Jobs cancelled by id, waiting and running, under the SIGKILL storm.
    CancelStorm,
}

impl Scenario {
    /// Every scenario, in order.
    pub const ALL: [Scenario; 13] = [
        Scenario::Baseline,
        Scenario::KillStorm,
        Scenario::GracefulStop,
        Scenario::CrashLoop,
        Scenario::StoppedWorker,
        Scenario::BackendRestart,
        Scenario::WithoutOverlapping,
        Scenario::Poison,
        Scenario::HangingJob,
        Scenario::ChainStorm,
        Scenario::BatchStorm,
        Scenario::LimitStorm,
        Scenario::CancelStorm,
    ];

    /// The scenario's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::KillStorm => "kill-storm",
            Scenario::GracefulStop => "graceful-stop",
            Scenario::CrashLoop => "crash-loop",
            Scenario::StoppedWorker => "stopped-worker",
            Scenario::BackendRestart => "backend-restart",
            Scenario::WithoutOverlapping => "without-overlapping",
            Scenario::Poison => "poison",
            Scenario::HangingJob => "hanging-job",
            Scenario::ChainStorm => "chain-storm",
            Scenario::BatchStorm => "batch-storm",
            Scenario::LimitStorm => "limit-storm",
            Scenario::CancelStorm => "cancel-storm",
        }
    }

    /// Parses a name or a number (1 to 13).
    pub fn parse(text: &str) -> Option<Scenario> {
        if let Ok(n) = text.parse::<usize>() {
            return n.checked_sub(1).and_then(|i| Self::ALL.get(i)).copied();
        }
        Self::ALL.into_iter().find(|s| s.name() == text)
    }
}

/// How to run the scenarios.
#[derive(Debug, Clone)]
pub struct Options {
    /// The store's URL.
    pub url: String,
    /// The short form (CI): fewer jobs, fewer faults, shorter leases.
    pub short: bool,
    /// Jobs of the main scenarios (1, 2 and 8), instead of 10,000 (2,000 short).
    pub jobs: Option<u64>,
    /// Worker processes, instead of each scenario's own.
    pub workers: Option<usize>,
    /// Jobs at once per worker, instead of each scenario's own.
    pub concurrency: Option<usize>,
    /// The lease, instead of each scenario's own.
    pub lease: Option<Duration>,
    /// The `chaos-worker` binary.
    pub worker_exe: PathBuf,
    /// Where each scenario keeps its ledger and logs.
    pub dir: PathBuf,
    /// Keep the ledger and logs of passing scenarios too.
    pub keep: bool,
    /// Allow scenario 6 to restart the backend (it stops a shared server for a few seconds).
    pub restart_backend: bool,
    /// How long scenario 6 keeps the backend down (2 s by default).
    pub outage: Option<Duration>,
}

/// Runs one scenario and returns its report; errors of the harness itself become a FAIL
/// with the reason (they are never silently a pass).
pub async fn run_scenario(options: &Options, scenario: Scenario) -> ScenarioReport {
    let url = queue_core::redact_url(&options.url);
    let started = Instant::now();
    let wall = std::time::SystemTime::now();
    let mut run = match Run::open(options, scenario).await {
        Ok(run) => run,
        Err(e) => {
            let mut report = ScenarioReport::skipped(
                scenario.name(),
                scheme(&options.url),
                &url,
                format!("cannot connect: {e:#}"),
            );
            if is_unknown_scheme(&e) {
                report.note = Some(format!("not run: {e:#}"));
            } else {
                report.check("the harness ran", false, format!("{e:#}"));
                report.decide();
            }
            return report;
        }
    };
    let outcome = scenarios::run(&mut run, options, scenario).await;
    let mut report = std::mem::replace(
        &mut run.report,
        ScenarioReport::new(scenario.name(), "", &url),
    );
    if let Err(e) = outcome {
        report.check("the harness ran", false, format!("{e:#}"));
    }
    if report.verdict != Verdict::Skipped || !report.checks.is_empty() {
        report.decide();
    }
    report.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    // The ledger's timings are wall-clock times (they come from several processes); the
    // harness's deadlines are monotonic. A gap between the two means the machine was paused.
    let jump = wall
        .elapsed()
        .map_or(0.0, |w| w.as_secs_f64() - started.elapsed().as_secs_f64());
    report.clock_jump = (jump.max(0.0) * 10.0).round() / 10.0;
    if report.clock_jump > 1.0 {
        report.details.push(format!(
            "the wall clock ran {:.1} s ahead of the monotonic clock during this run: the \
             machine was paused or its clock stepped, so its timings are void",
            report.clock_jump
        ));
    }
    if report.verdict == Verdict::Fail || options.keep {
        report.artifacts = Some(run.dir.display().to_string());
    } else {
        let _ = std::fs::remove_dir_all(&run.dir);
    }
    report
}

fn scheme(url: &str) -> &str {
    url.split_once(':').map_or(url, |(s, _)| s)
}

fn is_unknown_scheme(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<queue_core::Error>(),
            Some(queue_core::Error::UnknownScheme { .. })
        )
    })
}

/// A job to dispatch, with its options and what it should end as.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) job: ChaosJob,
    pub(crate) tries: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) lock: Option<String>,
    /// The rate or concurrency limit (and key) the job is counted against.
    pub(crate) limit: Option<queue_core::JobLimit>,
    pub(crate) label: String,
    pub(crate) expect: Expect,
}

/// One scenario against one store.
pub(crate) struct Run {
    pub(crate) url: String,
    pub(crate) dir: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) ledger: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) queue: Queue,
    reader: LedgerReader,
    pub(crate) entries: Vec<Entry>,
    /// Logical ids with an END ok.
    pub(crate) completed: HashSet<u64>,
    pub(crate) dispatched: Vec<Dispatched>,
    pub(crate) next_id: u64,
    pub(crate) faults: Vec<Fault>,
    pub(crate) report: ScenarioReport,
    /// The workers' logs, read by `finish`.
    pub(crate) logs: WorkerLogs,
    /// Ids of dispatches that returned an error (they may or may not have been stored).
    pub(crate) uncertain: HashSet<u64>,
    last_progress: Instant,
    failed_seen: u64,
    failed_checked: Instant,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Run {
    async fn open(options: &Options, scenario: Scenario) -> anyhow::Result<Run> {
        let token = &queue_core::storage::new_token()[..8];
        let table = format!("chaos_{}_{token}", scenario.name().replace('-', "_"));
        let failed_table = format!("{table}_failed");
        let mut connect = ConnectOptions::default();
        connect.table = Some(table.clone());
        connect.failed_table = Some(failed_table.clone());
        connect.migrate = true;
        let storage = storage::connect(&options.url, connect)
            .await
            .with_context(|| {
                format!("cannot connect to {}", queue_core::redact_url(&options.url))
            })?;
        let driver = storage.driver();
        let dir = options
            .dir
            .join(format!("{driver}-{}-{token}", scenario.name()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let config = dir.join("job.toml");
        std::fs::write(
            &config,
            format!("table = \"{table}\"\nfailed_table = \"{failed_table}\"\n"),
        )?;
        let ledger = dir.join("ledger.jsonl");
        let mut report = ScenarioReport::new(
            scenario.name(),
            driver,
            &queue_core::redact_url(&options.url),
        );
        report.durable = storage.capabilities().durable;
        report.set("table", &table);
        Ok(Run {
            url: options.url.clone(),
            dir,
            config,
            reader: LedgerReader::new(&ledger),
            ledger,
            queue: Queue::from_arc(storage.clone()),
            storage,
            entries: Vec::new(),
            completed: HashSet::new(),
            dispatched: Vec::new(),
            next_id: 1,
            faults: Vec::new(),
            report,
            logs: WorkerLogs::default(),
            uncertain: HashSet::new(),
            last_progress: Instant::now(),
            failed_seen: 0,
            failed_checked: Instant::now(),
        })
    }

    pub(crate) fn driver(&self) -> String {
        self.report.driver.clone()
    }

    pub(crate) fn pool(&self, options: &Options, spec: WorkerSpec) -> Pool {
        Pool::new(
            options.worker_exe.clone(),
            self.url.clone(),
            self.config.clone(),
            self.ledger.clone(),
            self.dir.clone(),
            spec,
        )
    }

    /// A new logical id.
    pub(crate) fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A good job sleeping a random time in `ms`.
    pub(crate) fn good(&mut self, ms: std::ops::RangeInclusive<u64>) -> Spec {
        let id = self.id();
        Spec {
            job: ChaosJob {
                id,
                ms: rand::random_range(ms),
                first_ms: None,
                mode: crate::job::Mode::Sleep,
            },
            tries: None,
            timeout: None,
            lock: None,
            limit: None,
            label: "good".to_owned(),
            expect: Expect::Complete,
        }
    }

    /// Dispatches jobs in batches through the queue; returns how many were dispatched.
    pub(crate) async fn dispatch(&mut self, specs: Vec<Spec>) -> anyhow::Result<usize> {
        let mut count = 0;
        let mut specs = specs.into_iter().peekable();
        while specs.peek().is_some() {
            let mut batch: Vec<Spec> = specs.by_ref().take(500).collect();
            let started = Instant::now();
            loop {
                let pending = batch.iter().map(|s| {
                    let mut d = self.queue.dispatch(s.job.clone()).on_queue(QUEUE);
                    if let Some(t) = s.tries {
                        d = d.tries(t);
                    }
                    if let Some(t) = s.timeout {
                        d = d.timeout(t);
                    }
                    if let Some(key) = &s.lock {
                        d = d.without_overlapping_key(key.clone());
                    }
                    if let Some(limit) = &s.limit {
                        d = d.limit(limit.clone());
                    }
                    d
                });
                let pushed_us = unix_micros();
                match self.queue.dispatch_many(pending.collect::<Vec<_>>()).await {
                    Ok(ids) => {
                        for (spec, sid) in batch.into_iter().zip(ids) {
                            self.dispatched.push(Dispatched {
                                id: spec.job.id,
                                sid: sid.into_id().0,
                                expect: spec.expect,
                                label: spec.label,
                                pushed_us,
                            });
                            count += 1;
                        }
                        break;
                    }
                    Err(e @ queue_core::Error::Backend { .. })
                        if started.elapsed() < Duration::from_secs(60) =>
                    {
                        // The backend blinked. Whether some of the batch was stored is not
                        // known (not every driver pushes all or none), so these ids are
                        // written off as uncertain and the batch goes again under new ones.
                        self.report.details.push(format!(
                            "a dispatch of {} jobs failed and was retried: {e}",
                            batch.len()
                        ));
                        for spec in &mut batch {
                            self.uncertain.insert(spec.job.id);
                            spec.job.id = self.id();
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("dispatching {} jobs failed", batch.len()))
                    }
                }
            }
        }
        Ok(count)
    }

    /// The dispatch of `s` as a part of a chain, a batch or a workflow, on the chaos queue.
    fn composed(&self, s: &Spec) -> queue_core::PendingDispatch {
        let mut d = self.queue.dispatch(s.job.clone()).on_queue(QUEUE);
        if let Some(t) = s.tries {
            d = d.tries(t);
        }
        d
    }

    /// Records `specs`, dispatched as parts of a chain, a batch or a workflow at
    /// `pushed_us`: a part waiting for others has no store id until it is released.
    fn expect_composed(&mut self, specs: impl IntoIterator<Item = Spec>, pushed_us: u64) {
        for spec in specs {
            self.dispatched.push(Dispatched {
                id: spec.job.id,
                sid: String::new(),
                expect: spec.expect,
                label: spec.label,
                pushed_us,
            });
        }
    }

    /// Dispatches each list of specs as one [`Chain`](queue_core::Chain) on the chaos
    /// queue; returns the chains' ids. Every link is expected to complete.
    pub(crate) async fn dispatch_chains(
        &mut self,
        chains: Vec<Vec<Spec>>,
    ) -> anyhow::Result<Vec<queue_core::ChainId>> {
        let mut ids = Vec::with_capacity(chains.len());
        for links in chains {
            let mut chain = queue_core::Chain::new().via(&self.queue);
            for s in &links {
                chain = chain.then(self.composed(s));
            }
            let pushed_us = unix_micros();
            ids.push(chain.dispatch().await.context("dispatching a chain")?);
            self.expect_composed(links, pushed_us);
        }
        Ok(ids)
    }

    /// Dispatches one [`Batch`](queue_core::Batch) of `members` with `then` and `finally`
    /// callbacks (chaos jobs too) on the chaos queue; returns its id. Every job is expected
    /// to complete.
    pub(crate) async fn dispatch_batch(
        &mut self,
        members: Vec<Spec>,
        then: Spec,
        finally: Spec,
    ) -> anyhow::Result<queue_core::BatchId> {
        let job = |s: &Spec| self.composed(s);
        let batch = queue_core::Batch::new()
            .add_many(members.iter().map(job))
            .then(job(&then))
            .finally(job(&finally))
            .via(&self.queue);
        let pushed_us = unix_micros();
        let id = batch.dispatch().await.context("dispatching a batch")?;
        self.expect_composed(members.into_iter().chain([then, finally]), pushed_us);
        Ok(id)
    }

    /// Dispatches one [`Workflow`](queue_core::Workflow) of chaos jobs on the chaos queue:
    /// `first`; a batch node `fan` of `members` after it; `side` after `first`; `last` after
    /// both `fan` and `side`. Returns its id. Every job is expected to complete.
    pub(crate) async fn dispatch_workflow(
        &mut self,
        first: Spec,
        members: Vec<Spec>,
        side: Spec,
        last: Spec,
    ) -> anyhow::Result<queue_core::WorkflowId> {
        let job = |s: &Spec| self.composed(s);
        let wf = queue_core::Workflow::new();
        let a = wf.add("first", job(&first));
        let fan = wf
            .add_batch(
                "fan",
                queue_core::Batch::new().add_many(members.iter().map(job)),
            )
            .after(&a);
        let b = wf.add("side", job(&side)).after(&a);
        wf.add("last", job(&last)).after_all([&fan, &b]);
        let pushed_us = unix_micros();
        let id = wf
            .via(&self.queue)
            .dispatch()
            .await
            .context("dispatching a workflow")?;
        self.expect_composed([first, side, last].into_iter().chain(members), pushed_us);
        Ok(id)
    }

    /// Pushes one raw job straight into the store. `Ok(None)`: the store refused it (the
    /// reason is returned); it counts as not dispatched.
    pub(crate) async fn push_raw(
        &mut self,
        name: &str,
        payload: Vec<u8>,
        label: &str,
        expect: Expect,
    ) -> anyhow::Result<Result<u64, String>> {
        let id = self.id();
        let job = NewJob::new(QUEUE, name, payload);
        let pushed_us = unix_micros();
        match self.storage.push(vec![job]).await {
            Ok(mut ids) => {
                let sid = ids.pop().context("push returned no id")?.into_id();
                self.dispatched.push(Dispatched {
                    id,
                    sid: sid.0,
                    expect,
                    label: label.to_owned(),
                    pushed_us,
                });
                Ok(Ok(id))
            }
            Err(e @ queue_core::Error::PayloadTooLarge { .. }) => Ok(Err(e.to_string())),
            Err(e) => Err(e).context(format!("pushing a {label} item failed")),
        }
    }

    /// Dispatches from `waiting` while fewer than `window` dispatched jobs are open (not
    /// completed): the queue holds no backlog, so a job that becomes available again (an
    /// expired lease, a job put back) is taken within a poll instead of waiting its turn
    /// behind older jobs (reservations are first-in first-out by available time).
    pub(crate) async fn feed(
        &mut self,
        waiting: &mut std::collections::VecDeque<Spec>,
        window: usize,
    ) -> anyhow::Result<()> {
        let open = self.dispatched.len().saturating_sub(self.completed.len());
        if open < window && !waiting.is_empty() {
            let take = (window - open).min(waiting.len());
            let batch: Vec<Spec> = waiting.drain(..take).collect();
            self.dispatch(batch).await?;
        }
        Ok(())
    }

    /// Reads new ledger lines.
    pub(crate) fn poll(&mut self) -> anyhow::Result<usize> {
        let new = self.reader.read_new().context("reading the ledger")?;
        let n = new.len();
        if n > 0 {
            self.last_progress = Instant::now();
        }
        for entry in new {
            if entry.ev == Event::End && entry.outcome.as_deref() == Some("ok") {
                self.completed.insert(entry.job);
            }
            self.entries.push(entry);
        }
        Ok(n)
    }

    /// Jobs dispatched that completed or sit in the failed store (approximately: the
    /// failed store is counted, not matched).
    async fn settled_count(&mut self) -> u64 {
        let done = self
            .dispatched
            .iter()
            .filter(|d| self.completed.contains(&d.id))
            .count() as u64;
        if done < self.dispatched.len() as u64
            && self.failed_checked.elapsed() > Duration::from_millis(500)
        {
            self.failed_checked = Instant::now();
            if let Ok(n) = self.failed_count().await {
                self.failed_seen = n;
            }
        }
        done + self.failed_seen
    }

    /// True when every dispatched job completed or failed, or nothing has happened for
    /// `quiet` and the store holds nothing more (the rest is lost).
    pub(crate) async fn settled(&mut self, quiet: Duration) -> bool {
        if self.settled_count().await >= self.dispatched.len() as u64 {
            return true;
        }
        if self.last_progress.elapsed() >= quiet {
            if let Ok(size) = self.queue_size().await {
                if size.total() == 0 {
                    return true;
                }
            }
        }
        false
    }

    /// One step of a scenario's loop: notes exited workers, reads the ledger, and says
    /// whether the jobs settled.
    pub(crate) async fn step(&mut self, pool: &mut Pool, quiet: Duration) -> anyhow::Result<bool> {
        pool.supervise(&mut self.faults)?;
        self.poll()?;
        Ok(self.settled(quiet).await)
    }

    /// Runs the workers until the jobs settle or `limit` passes. Returns false on timeout.
    pub(crate) async fn until_settled(
        &mut self,
        pool: &mut Pool,
        limit: Duration,
        quiet: Duration,
    ) -> anyhow::Result<bool> {
        let deadline = Instant::now() + limit;
        loop {
            if self.step(pool, quiet).await? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn failed_count(&self) -> queue_core::Result<u64> {
        self.storage.failed_store()?.count().await
    }

    pub(crate) async fn queue_size(&self) -> queue_core::Result<QueueSize> {
        self.storage.inspect()?.size(QUEUE).await
    }

    /// A store operation retried for up to 60 s (the backend may be coming back).
    pub(crate) async fn size(&self) -> anyhow::Result<QueueSize> {
        let started = Instant::now();
        loop {
            match self.queue_size().await {
                Ok(size) => return Ok(size),
                Err(e) if started.elapsed() > Duration::from_secs(60) => {
                    return Err(e).context("reading the queue size")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Stops the workers, lets leases run out, drains the queue with one more worker, and
    /// checks everything. Fills the common fields of the report.
    pub(crate) async fn finish(&mut self, pool: &mut Pool) -> anyhow::Result<Findings> {
        let patience = pool.spec.grace + Duration::from_secs(15);
        let killed = pool.shutdown(patience).await?;
        if !killed.is_empty() {
            self.report.details.push(format!(
                "workers {killed:?} did not exit within {patience:?} of SIGTERM and were killed"
            ));
        }
        self.poll()?;
        let mut size = self.size().await?;
        self.report.set("reserved_at_end", size.reserved);
        let mut drained_rounds = 0;
        let completed_before = self.completed.len();
        // One more worker takes what dead workers left once their leases ran out. It stops
        // when the store says the queue is empty; a round that finds nothing to do ends the
        // draining (a store whose counts disagree with its contents would never look empty).
        let drain_limit = (pool.spec.lease * 3).max(Duration::from_secs(20));
        for _ in 0..3 {
            if size.total() == 0 {
                break;
            }
            if size.reserved > 0 {
                tokio::time::sleep(pool.spec.lease + Duration::from_secs(1)).await;
            }
            drained_rounds += 1;
            let lines_before = self.entries.len();
            let failed_before = self.failed_count().await.unwrap_or(0);
            pool.drain(drain_limit).await?;
            self.poll()?;
            size = self.size().await?;
            let failed_after = self.failed_count().await.unwrap_or(0);
            if self.entries.len() == lines_before && failed_after == failed_before {
                break;
            }
        }
        self.report.set("drain_rounds", drained_rounds);
        self.report.set(
            "completed_by_drain",
            self.completed.len() - completed_before,
        );
        self.report.stuck = size.reserved;
        self.report.set("left_waiting", size.waiting + size.delayed);

        let mut failed = Vec::new();
        let mut page = PageRequest::first(500);
        loop {
            let got = self.storage.failed_store()?.list(page).await?;
            failed.extend(got.items);
            match got.next {
                Some(next) => page = PageRequest::after(next, 500),
                None => break,
            }
        }
        let mut logs = WorkerLogs::default();
        for (pid, path) in &pool.logs {
            logs.read(*pid, path);
        }
        for sample in &logs.samples {
            self.report.details.push(sample.clone());
        }
        self.report.refused_acks = logs.refused_count;
        self.report.set("lease_lost_logged", logs.lease_lost.len());
        self.report.set("ack_batches_failed", logs.ack_failed);
        self.report.set("store_errors_logged", logs.store_errors);
        self.report.set("panics", logs.panics);
        self.report
            .set("backend_errors_logged", logs.backend_errors);
        if logs.backend_errors > 0
            && !self
                .faults
                .iter()
                .any(|f| matches!(f, Fault::Backend { .. }))
        {
            self.report.details.push(format!(
                "the workers logged {} backend errors though the harness did not restart the \
                 backend (retried by the engine; a restart by someone else, or the driver \
                 giving up): {:?}",
                logs.backend_errors, logs.backend_error_kinds
            ));
        }
        let evidence = Evidence {
            failed: tie_failed(failed, &self.dispatched),
            dispatched: std::mem::take(&mut self.dispatched),
            entries: std::mem::take(&mut self.entries),
            corrupt_lines: self.reader.corrupt,
            faults: self.faults.clone(),
            uncertain: self.uncertain.clone(),
            logs,
        };
        let findings = evidence.check();
        let faults: String = self.faults.iter().map(|f| format!("{f:?}\n")).collect();
        let _ = std::fs::write(self.dir.join("faults.txt"), faults);
        self.report.jobs = evidence.dispatched.len() as u64;
        self.report.completed = findings.completed;
        self.report.lost = findings.lost.len() as u64;
        self.report.duplicated = findings.duplicated.len() as u64;
        self.report.allowed_duplicates = findings.allowed.len() as u64;
        self.report.unexpected = findings.unexpected.len() as u64;
        self.report.failed = evidence.failed.len() as u64;
        self.report.set("duplicate_excuses", &findings.excuses);
        if !findings.lost.is_empty() {
            let ids: Vec<u64> = findings.lost.iter().take(20).copied().collect();
            self.report
                .details
                .push(format!("lost jobs (first 20): {ids:?}"));
        }
        self.report
            .details
            .extend(findings.unexpected.iter().take(20).cloned());
        let mut died_starting = 0;
        for exit in &pool.exits {
            if !exit.expected || exit.code == Some(0) {
                continue;
            }
            let Some(after) = exit.after_term else {
                continue;
            };
            let ran_jobs = findings
                .attempts
                .values()
                .flatten()
                .any(|a| a.pid == exit.pid);
            if exit.final_stop && exit.signal == Some(15) && !ran_jobs {
                // SIGTERM reached a worker still connecting, before its signal handler was
                // installed: it died of the signal holding nothing.
                died_starting += 1;
                continue;
            }
            self.report.details.push(format!(
                "worker {} exited with {:?} (signal {:?}) {after:.1} s after SIGTERM",
                exit.pid, exit.code, exit.signal
            ));
        }
        if died_starting > 0 {
            self.report
                .set("workers_killed_by_sigterm_while_starting", died_starting);
        }
        self.report.faults.workers_started = pool.started;
        self.report.faults.kills = self
            .faults
            .iter()
            .filter(|f| matches!(f, Fault::Kill { .. }))
            .count() as u64;
        self.report.faults.stops = self
            .faults
            .iter()
            .filter(|f| matches!(f, Fault::Stop { .. }))
            .count() as u64;
        self.report.faults.terms = self
            .faults
            .iter()
            .filter(|f| matches!(f, Fault::Term { .. }))
            .count() as u64;
        self.report.faults.crashes = self
            .faults
            .iter()
            .filter(|f| matches!(f, Fault::Crash { .. }))
            .count() as u64;
        self.report.faults.backend_restarts = self
            .faults
            .iter()
            .filter(|f| matches!(f, Fault::Backend { .. }))
            .count() as u64;
        self.dispatched = evidence.dispatched;
        self.logs = evidence.logs;
        Ok(findings)
    }

    /// The common checks: lost 0 (when `durable_check`), every duplicate allowed, nothing
    /// unexpected, nothing stuck, nothing left.
    pub(crate) fn common_checks(&mut self, strict_duplicates: bool, lost_must_be_zero: bool) {
        let r = &mut self.report;
        if lost_must_be_zero {
            let lost = r.lost;
            r.check("lost 0", lost == 0, format!("lost {lost}"));
        }
        if strict_duplicates {
            let d = r.duplicated;
            r.check("duplicated 0", d == 0, format!("duplicated {d}"));
        } else {
            let u = r.unallowed_duplicates();
            r.check(
                "every duplicate allowed",
                u == 0,
                format!(
                    "duplicated {}, allowed {}",
                    r.duplicated, r.allowed_duplicates
                ),
            );
        }
        let u = r.unexpected;
        r.check("unexpected 0", u == 0, format!("unexpected {u}"));
        let s = r.stuck;
        r.check(
            "stuck 0",
            s == 0,
            format!("still reserved after leases and a drain: {s}"),
        );
        let left = r
            .extra
            .get("left_waiting")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let accounted = r.completed + r.failed + r.lost >= r.jobs;
        r.check(
            "nothing left waiting",
            left == 0,
            if left == 0 {
                "the queue is empty".to_owned()
            } else if accounted && r.lost == 0 {
                format!(
                    "the store counts {left} jobs waiting, yet every dispatched job completed or \
                     failed: its counts disagree with its contents"
                )
            } else {
                format!("{left} jobs still waiting after the drain")
            },
        );
    }

    /// Attempts per logical job, from the ledger read so far.
    pub(crate) fn attempts_now(&self) -> HashMap<u64, Vec<crate::ledger::Attempt>> {
        crate::ledger::attempts(&self.entries)
    }
}

/// The name of a job type, for the harness's raw pushes.
pub(crate) const CHAOS_NAME: &str = <ChaosJob as Job>::NAME;
