//! The thirteen scenarios. Each dispatches its jobs, starts its workers, injects its faults
//! while the jobs run, then calls [`Run::finish`] and adds its own checks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use queue_core::{JobLimit, Limit};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::RngExt;

use super::backend::Backend;
use super::{Options, Pool, Run, Scenario, Spec, WorkerSpec, CHAOS_NAME};
use crate::check::{kill_recovery, stop_recovery, term_requeue, Expect, Fault};
use crate::job::{ChaosJob, Mode};
use crate::ledger::{unix_micros, Attempt};
use crate::report::Timing;

pub(super) async fn run(run: &mut Run, o: &Options, scenario: Scenario) -> anyhow::Result<()> {
    match scenario {
        Scenario::Baseline => baseline(run, o).await,
        Scenario::KillStorm => kill_storm(run, o).await,
        Scenario::GracefulStop => graceful_stop(run, o).await,
        Scenario::CrashLoop => crash_loop(run, o).await,
        Scenario::StoppedWorker => stopped_worker(run, o).await,
        Scenario::BackendRestart => backend_restart(run, o).await,
        Scenario::WithoutOverlapping => without_overlapping(run, o).await,
        Scenario::Poison => poison(run, o).await,
        Scenario::HangingJob => hanging_job(run, o).await,
        Scenario::ChainStorm => chain_storm(run, o).await,
        Scenario::BatchStorm => batch_storm(run, o).await,
        Scenario::LimitStorm => limit_storm(run, o).await,
        Scenario::CancelStorm => cancel_storm(run, o).await,
    }
}

fn pick<T>(o: &Options, full: T, short: T) -> T {
    if o.short {
        short
    } else {
        full
    }
}

fn jobs(o: &Options, full: u64, short: u64) -> u64 {
    o.jobs.unwrap_or(pick(o, full, short))
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

const QUIET: Duration = Duration::from_secs(5);

/// Checks that the run settled in time (a timeout is reported, the checks still run).
fn settled_check(run: &mut Run, settled: bool, limit: Duration) {
    run.report.check(
        "settled in time",
        settled,
        if settled {
            "every job completed or failed".to_owned()
        } else {
            format!("jobs still open after {}", secs(limit))
        },
    );
}

fn no_crashes(run: &mut Run) {
    let crashes = run
        .faults
        .iter()
        .filter(|f| matches!(f, Fault::Crash { .. }))
        .count();
    run.report.check(
        "no worker exited on its own",
        crashes == 0,
        format!("{crashes} worker exits"),
    );
}

/// The p99 of `samples` against `bound`, as a check, and the timing as the report's
/// recovery figure.
fn recovery(run: &mut Run, what: &str, samples: &[u64], bound: Duration, name: &str) {
    let timing = Timing::of(what, samples);
    let ok = timing.count > 0 && timing.p99_ms <= bound.as_secs_f64() * 1000.0;
    run.report.check(
        name,
        ok,
        format!(
            "{} samples, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; bound {:.0} ms",
            timing.count,
            timing.p50_ms,
            timing.p99_ms,
            timing.max_ms,
            bound.as_secs_f64() * 1000.0
        ),
    );
    run.report.recovery = Some(timing);
}

/// Scenario 1: Baseline: no faults at all.
async fn baseline(run: &mut Run, o: &Options) -> anyhow::Result<()> {
    let n = jobs(o, 10_000, 2_000);
    let spec = WorkerSpec {
        concurrency: o.concurrency.unwrap_or(4),
        lease: o.lease.unwrap_or(Duration::from_secs(10)),
        ..WorkerSpec::default()
    };
    let specs: Vec<Spec> = (0..n).map(|_| run.good(0..=5)).collect();
    run.dispatch(specs).await?;
    let mut pool = run.pool(o, spec);
    pool.respawn = false;
    let started = Instant::now();
    pool.start(o.workers.unwrap_or(4))?;
    let limit = Duration::from_secs(pick(o, 900, 300));
    let settled = run.until_settled(&mut pool, limit, QUIET).await?;
    let elapsed = started.elapsed().as_secs_f64();
    run.report.set(
        "jobs_per_second",
        (n as f64 / elapsed * 10.0).round() / 10.0,
    );
    run.finish(&mut pool).await?;
    settled_check(run, settled, limit);
    run.common_checks(true, true);
    no_crashes(run);
    Ok(())
}

/// Scenario 2, the SIGKILL storm: one worker killed every 2 s and restarted; jobs dispatched
/// at the pace the workers take them, so an orphan waits for its lease, not behind a backlog.
async fn kill_storm(run: &mut Run, o: &Options) -> anyhow::Result<()> {
    let n = jobs(o, 10_000, 1_500);
    let workers = o.workers.unwrap_or(4);
    let spec = WorkerSpec {
        concurrency: o.concurrency.unwrap_or(8),
        lease: o
            .lease
            .unwrap_or(pick(o, Duration::from_secs(5), Duration::from_secs(2))),
        ..WorkerSpec::default()
    };
    let window = workers * spec.concurrency * 2;
    // A job killed at every attempt rightly ends in the failed store, and kills every ~2 s
    // with a 2 s lease re-orphan a recovered job often enough (the orphans of one kill come
    // back together, at about the next kill) that 5 tries ran out in CI: the jobs get 20, and
    // the kills are jittered so they do not keep step with the leases.
    let mut waiting: VecDeque<Spec> = (0..n)
        .map(|_| {
            let mut s = run.good(20..=200);
            s.tries = Some(20);
            s
        })
        .collect();
    let mut pool = run.pool(o, spec.clone());
    pool.start(workers)?;
    let every = || Duration::from_millis(rand::rng().random_range(1500..=2500));
    let mut next_kill = Instant::now() + every();
    let limit = Duration::from_secs(pick(o, 1200, 300));
    let deadline = Instant::now() + limit;
    let settled = loop {
        let all_done = run.step(&mut pool, QUIET).await?;
        if waiting.is_empty() && all_done {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        run.feed(&mut waiting, window).await?;
        if Instant::now() >= next_kill {
            next_kill += every();
            let pids = pool.settled_pids(Duration::from_millis(500));
            if let Some(pid) = pids.choose(&mut rand::rng()).copied() {
                pool.kill(pid, &mut run.faults).await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let findings = run.finish(&mut pool).await?;
    settled_check(run, settled, limit);
    run.common_checks(false, true);
    let rec = kill_recovery(&findings.attempts, &run.faults, &HashSet::new());
    run.report
        .set("orphans_reorphaned_before_start", rec.reorphaned);
    let samples = rec.samples;
    let never_open: Vec<u64> = rec
        .never
        .into_iter()
        .filter(|j| !run.completed.contains(j))
        .collect();
    run.report.check(
        "every orphan ran again",
        never_open.is_empty(),
        format!("orphaned jobs never retried: {never_open:?}"),
    );
    let bound = spec.lease + spec.sleep + Duration::from_millis(500);
    recovery(
        run,
        "from SIGKILL to the next attempt's start, per orphaned job",
        &samples,
        bound,
        "orphan recovery p99 within lease + check interval (+0.5 s)",
    );
    Ok(())
}

/// Scenario 3: Graceful stop: SIGTERM with jobs in flight, every 2 s, a worker at a time.
async fn graceful_stop(run: &mut Run, o: &Options) -> anyhow::Result<()> {
    let n = pick(o, 400, 50);
    let spec = WorkerSpec {
        concurrency: o.concurrency.unwrap_or(4),
        lease: o.lease.unwrap_or(Duration::from_secs(30)),
        grace: Duration::from_secs(1),
        ..WorkerSpec::default()
    };
    let mut specs = Vec::new();
    for i in 0..n {
        let mut s = if i % 10 < 3 {
            let mut s = run.good(2000..=4000);
            s.label = "long".into();
            s
        } else {
            run.good(50..=300)
        };
        s.tries = Some(10);
        specs.push(s);
    }
    specs.shuffle(&mut rand::rng());
    let workers = o.workers.unwrap_or(4);
    let window = (workers * spec.concurrency / 2).max(1);
    let mut waiting: VecDeque<Spec> = specs.into();
    let mut pool = run.pool(o, spec.clone());
    pool.start(workers)?;
    let every = Duration::from_secs(2);
    let mut next = Instant::now() + every;
    let max_terms = pick(o, 20, 6);
    let mut terms = 0;
    let limit = Duration::from_secs(pick(o, 600, 240));
    let deadline = Instant::now() + limit;
    let settled = loop {
        let all_done = run.step(&mut pool, QUIET).await?;
        if all_done && waiting.is_empty() {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        run.feed(&mut waiting, window).await?;
        // Stop signalling once the last jobs are out: a worker signalled every 2 s while it
        // runs the last 3 s job would interrupt that job until it runs out of tries (an
        // interrupted attempt counts, so such a job ends in the failed store, not in a loop).
        if Instant::now() >= next && terms < max_terms && !waiting.is_empty() {
            next += every;
            let busy = busy_pids(&run.attempts_now());
            let pids: Vec<u32> = pool
                .settled_pids(Duration::from_secs(1))
                .into_iter()
                .filter(|p| busy.contains(p))
                .collect();
            if let Some(pid) = pids.choose(&mut rand::rng()).copied() {
                pool.term(pid, &mut run.faults)?;
                terms += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let findings = run.finish(&mut pool).await?;
    settled_check(run, settled, limit);
    run.common_checks(true, true);
    no_crashes(run);
    let slow: Vec<String> = pool
        .exits
        .iter()
        .filter(|e| !e.final_stop)
        .filter_map(|e| {
            let after = e.after_term?;
            let ok = e.code == Some(0) && after <= spec.grace.as_secs_f64() + 3.0;
            (!ok).then(|| format!("worker {} exit {:?} after {after:.1} s", e.pid, e.code))
        })
        .collect();
    run.report.check(
        "every worker exits 0 within its grace period after SIGTERM",
        slow.is_empty(),
        format!(
            "{} workers stopped by SIGTERM during the run; slow or failed: {slow:?}",
            pool.exits
                .iter()
                .filter(|e| e.after_term.is_some() && !e.final_stop)
                .count()
        ),
    );
    let (samples, never) = term_requeue(&findings.attempts, &run.faults);
    run.report
        .set("interrupted_attempts", samples.len() + never.len());
    run.report.check(
        "every interrupted job ran again",
        never.is_empty(),
        format!("never again: {never:?}"),
    );
    let bound = spec.grace + spec.sleep + Duration::from_secs(2);
    recovery(
        run,
        "from SIGTERM to the next start of each job interrupted at the end of the grace period",
        &samples,
        bound,
        "interrupted jobs available again at once (p99 within grace + 2 s, lease 30 s)",
    );
    if samples.is_empty() {
        // No job outlived the grace period: say so rather than fail on an empty sample.
        if let Some(c) = run.report.checks.last_mut() {
            c.ok = None;
            c.detail = "no job was interrupted (every one finished within the grace period)".into();
        }
    }
    Ok(())
}

/// The pids with an attempt running.
fn busy_pids(by_job: &HashMap<u64, Vec<Attempt>>) -> HashSet<u32> {
    by_job
        .values()
        .flatten()
        .filter(|a| a.end.is_none())
        .map(|a| a.pid)
        .collect()
}

/// Scenario 4: Crash loop: jobs that abort their worker process.
async fn crash_loop(run: &mut Run, o: &Options) -> anyhow::Result<()> {
    let n = jobs(o, 600, 300);
    let crashers = 3u64;
    let tries = 2u32;
    let spec = WorkerSpec {
        concurrency: o.concurrency.unwrap_or(2),
        lease: o
            .lease
            .unwrap_or(pick(o, Duration::from_secs(3), Duration::from_secs(2))),
        ..WorkerSpec::default()
    };
    let mut specs: Vec<Spec> = (0..n).map(|_| run.good(5..=20)).collect();
    let mut abort_ids = HashSet::new();
    for k in 0..crashers {
        let id = run.id();
        abort_ids.insert(id);
        let at = (n * (1 + 3 * k) / 10) as usize;
        specs.insert(
            at.min(specs.len()),
            Spec {
                job: ChaosJob {
                    id,
                    ms: 0,
                    first_ms: None,
                    mode: Mode::Abort,
                },
                tries: Some(tries),
                timeout: None,
                lock: None,
                limit: None,
                label: "abort".into(),
                expect: Expect::Fail {
                    reasons: vec!["attempts exhausted".into()],
                    attempts: None,
                },
            },
        );
    }
    run.dispatch(specs).await?;
    let mut pool = run.pool(o, spec.clone());
    pool.start(o.workers.unwrap_or(4))?;
    let limit = Duration::from_secs(pick(o, 600, 240));
    let settled = run.until_settled(&mut pool, limit, QUIET).await?;
    let findings = run.finish(&mut pool).await?;
    settled_check(run, settled, limit);
    run.common_checks(false, true);
    let mut starts = Vec::new();
    for id in &abort_ids {
        let n = findings.attempts.get(id).map_or(0, Vec::len);
        starts.push(n);
    }
    run.report.check(
        "each crashing job ran exactly its tries, then went to the failed store",
        starts.iter().all(|n| *n == tries as usize),
        format!("starts per crashing job: {starts:?} (tries {tries})"),
    );
    let crashes = run.report.faults.crashes;
    run.report.check(
        "each crash took down one worker, which was replaced",
        crashes == u64::from(tries) * crashers,
        format!(
            "{crashes} worker exits for {crashers} jobs of {tries} tries; {} workers started",
            run.report.faults.workers_started
        ),
    );
    let samples = kill_recovery(&findings.attempts, &run.faults, &abort_ids).samples;
    let timing = Timing::of(
        "from a crash to the next start of each job the crashed worker held",
        &samples,
    );
    run.report.recovery = Some(timing);
    Ok(())
}

/// Scenario 5: Stopped worker: SIGSTOP for longer than the lease, then SIGCONT.
async fn stopped_worker(run: &mut Run, o: &Options) -> anyhow::Result<()> {
    let n = pick(o, 240, 60);
    let stops = pick(o, 6, 2);
    let spec = WorkerSpec {
        concurrency: o.concurrency.unwrap_or(4),
        lease: o
            .lease
            .unwrap_or(pick(o, Duration::from_secs(3), Duration::from_secs(2))),
        ..WorkerSpec::default()
    };
    let stop_for = spec.lease + Duration::from_secs(2);
    let workers = o.workers.unwrap_or(4);
    let window = (workers * spec.concurrency / 2).max(1);
    let mut waiting: VecDeque<Spec> = (0..n).map(|_| run.good(1000..=2000)).collect();
    let mut pool = run.pool(o, spec.clone());
    pool.start(workers)?;
    let limit = Duration::from_secs(pick(o, 600, 240));
    let deadline = Instant::now() + limit;
    let mut next = Instant::now() + Duration::from_secs(2);
    let mut current: Option<(u32, u64, Instant)> = None;
    let mut done = 0;
    let settled = loop {
        let all_done = run.step(&mut pool, QUIET).await?;
        if all_done && current.is_none() && waiting.is_empty() {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        run.feed(&mut waiting, window).await?;
        match current {
            None if done < stops && Instant::now() >= next => {
                let busy = busy_pids(&run.attempts_now());
                let pids: Vec<u32> = pool
                    .settled_pids(Duration::from_secs(1))
                    .into_iter()
                    .filter(|p| busy.contains(p))
                    .collect();
                if let Some(pid) = pids.choose(&mut rand::rng()).copied() {
                    let at = unix_micros();
                    Pool::signal(pid, "STOP")?;
                    // The SIGCONT comes from a timer of its own, not from this loop: on
                    // SQLite a worker stopped inside a write transaction holds the file's
                    // write lock, and this loop's own dispatches would wait for it (for
                    // as long as they retry) before it ever sent the SIGCONT.
                    tokio::spawn(async move {
                        tokio::time::sleep(stop_for).await;
                        let _ = Pool::signal(pid, "CONT");
                    });
                    current = Some((pid, at, Instant::now()));
                }
            }
            Some((pid, at, since)) if since.elapsed() >= stop_for => {
                Pool::signal(pid, "CONT")?;
                run.faults.push(Fault::Stop {
                    pid,
                    at,
                    until: unix_micros(),
                });
                current = None;
                done += 1;
                next = Instant::now() + Duration::from_secs(1);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if let Some((pid, at, _)) = current {
        let _ = Pool::signal(pid, "CONT");
        run.faults.push(Fault::Stop {
            pid,
            at,
            until: unix_micros(),
        });
    }
    let findings = run.finish(&mut pool).await?;
    settled_check(run, settled, limit);
    run.common_checks(false, true);
    // A stopped worker is fenced either way: the store refuses its late acknowledgements, or,
    // when it wakes before it finished the job, its lease keeper sees the lease could not be
    // renewed and stops the job itself (`stopped the job:` in its log).
    let refused = run.report.refused_acks;
    let stopped = run.logs.lease_lost.len() as u64;
    run.report.check(
        "a stopped worker's late work fenced (acknowledges refused or jobs stopped)",
        refused + stopped > 0,
        format!(
            "{refused} acknowledges refused, {stopped} jobs stopped by their worker in {done} stops of {}",
            secs(stop_for)
        ),
    );
    // Acknowledged completions: completions whose acknowledge was not refused.
    let mut twice = Vec::new();
    let mut refused_jobs = 0;
    for (job, list) in &findings.attempts {
        let completions: Vec<&Attempt> = list.iter().filter(|a| a.completed()).collect();
        let refused: Vec<&&Attempt> = completions
            .iter()
            .filter(|a| run.logs.refused.contains(&(a.pid, a.sid.clone())))
            .collect();
        if refused.is_empty() {
            continue;
        }
        refused_jobs += 1;
        if completions.len() - refused.len() != 1 {
            twice.push(*job);
        }
    }
    run.report.check(
        "each job whose late acknowledge was refused completed once by its new holder",
        twice.is_empty(),
        format!("{refused_jobs} jobs with a refused acknowledge; not exactly one accepted completion: {twice:?}"),
    );
    let (samples, _) = stop_recovery(&findings.attempts, &run.faults);
    let bound = spec.lease + spec.sleep + Duration::from_millis(500);
    recovery(
        run,
        "from SIGSTOP to the start of the job by another worker",
        &samples,
        bound,
        "a stopped worker's jobs taken over within lease + check interval (+0.5 s)",
    );
    Ok(())
}

/// Scenario 6: The backend restarted mid-run.
async fn backend_restart(run: &mut Run, o: &Options) -> anyhow::Result<()> {
    let driver = run.driver();
    let Some(backend) = Backend::for_url(&run.url) else {
        run.report.note = Some(format!(
            "not applicable: {driver} has no server to restart (embedded)"
        ));
        return Ok(());
    };
    if !o.restart_backend {
        run.report.note =
            Some("not run: restarting a shared server needs --restart-backend".into());
        return Ok(());
    }
    let n = jobs(o, 3_000, 1_000);
    let workers = o.workers.unwrap_or(4);
    let spec = WorkerSpec {
        concurrency: o.concurrency.unwrap_or(4),
        lease: o
            .lease
            .unwrap_or(pick(o, Duration::from_secs(5), Duration::from_secs(3))),
        ..WorkerSpec::default()
    };
    let specs: Vec<Spec> = (0..n).map(|_| run.good(5..=20)).collect();
    run.dispatch(specs).await?;
    let mut pool = run.pool(o, spec.clone());
    pool.respawn = false;
    pool.start(workers)?;
    let before = pool.pids();
    let warmup = Instant::now();
    while (run.completed.len() as u64) < n / 4 && warmup.elapsed() < Duration::from_secs(120) {
        run.step(&mut pool, QUIET).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done_before = run.completed.len();
    let down_at = unix_micros();
    let down_for = o.outage.unwrap_or(Duration::from_secs(2));
    {
        let mut outage = backend.take_down()?;
        let went_down = unix_micros();
        run.report
            .set("seconds_to_go_down", (went_down - down_at) as f64 / 1e6);
        // Keep reading the ledger while the backend is down (no store calls: they would
        // wait for their timeouts and stretch the outage).
        let until = Instant::now() + down_for;
        while Instant::now() < until {
            pool.supervise(&mut run.faults)?;
            run.poll()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        outage.bring_up()?;
    }
    let port_back = unix_micros();
    // "Back" is when a client's request succeeds again, not only the port.
    let back_deadline = Instant::now() + Duration::from_secs(60);
    let back = loop {
        if run.queue_size().await.is_ok() {
            break unix_micros();
        }
        if Instant::now() >= back_deadline {
            anyhow::bail!("the harness's own connection did not recover within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    run.faults.push(Fault::Backend {
        at: down_at,
        until: back,
    });
    run.report
        .set("outage_seconds", (back - down_at) as f64 / 1e6);
    run.report
        .set("port_back_to_first_success_ms", (back - port_back) / 1000);
    run.report.set("completed_before_restart", done_before);
    // Probes: jobs pushed after the return, so every worker has something to resume with
    // even where the restart lost the queue. They must outlast the reserve backoff's cap
    // (5 s) even when the workers that resumed first fill their slots and their prefetch
    // buffers (up to twice their concurrency each): five rounds of 1.5 s jobs.
    let probes: Vec<Spec> = (0..workers * spec.concurrency * 5)
        .map(|_| {
            let mut s = run.good(1500..=1500);
            s.label = "probe".into();
            s
        })
        .collect();
    let probe_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match run.dispatch(probes.clone()).await {
            Ok(_) => break,
            Err(e) if Instant::now() >= probe_deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let limit = Duration::from_secs(pick(o, 600, 240));
    let settled = run.until_settled(&mut pool, limit, QUIET).await?;
    let alive = pool.pids();
    let findings = run.finish(&mut pool).await?;
    settled_check(run, settled, limit);
    let durable = run.report.durable;
    run.common_checks(false, durable);
    if !durable {
        let lost = run.report.lost;
        run.report.not_applicable(
            "lost 0",
            format!(
                "{driver} is not durable in this configuration (Capabilities::durable = false): \
                 the restart lost {lost} of {} jobs, as the driver's documentation says",
                run.report.jobs
            ),
        );
    }
    if driver == "memcached" {
        let logged = run.logs.state_lost;
        run.report.check(
            "the state loss is reported by the driver",
            logged > 0,
            format!("{logged} `lost the queue state` lines in the workers' logs"),
        );
    }
    let gone: Vec<u32> = before
        .iter()
        .filter(|p| !alive.contains(p))
        .copied()
        .collect();
    run.report.check(
        "no worker stopped for good",
        gone.is_empty(),
        format!("workers that exited during the run: {gone:?}"),
    );
    let mut resume = Vec::new();
    let mut never = Vec::new();
    for pid in &before {
        let first = findings
            .attempts
            .values()
            .flatten()
            .filter(|a| a.pid == *pid && a.start >= back)
            .map(|a| a.start)
            .min();
        match first {
            Some(t) => resume.push(t - back),
            None => never.push(*pid),
        }
    }
    run.report.check(
        "every worker resumed",
        never.is_empty(),
        format!("workers with no job after the return: {never:?}"),
    );
    let timing = Timing::of(
        "from the backend answering again to each worker's first job start",
        &resume,
    );
    run.report.check(
        "every worker resumed within 5 s of the backend's return",
        never.is_empty() && timing.max_ms <= 5000.0,
        format!(
            "resume per worker: max {:.0} ms, p50 {:.0} ms (outage {:.1} s)",
            timing.max_ms,
            timing.p50_ms,
            (back - down_at) as f64 / 1e6
        ),
    );
    run.report.recovery = Some(timing);
    Ok(())
}

/// Scenario 7: `without_overlapping`: many workers, one lock key; then SIGKILL of the holder.
async fn without_overlapping(run: &mut Run, o: &Options) -> anyhow::Result<()> {
    let n = pick(o, 1_000, 60);
    let key = "chaos-lock".to_owned();
    let spec = WorkerSpec {
        concurrency: o.concurrency.unwrap_or(2),
        lease: o
            .lease
            .unwrap_or(pick(o, Duration::from_secs(3), Duration::from_secs(2))),
        sleep: Duration::from_millis(100),
        ..WorkerSpec::default()
    };
    let locked = |mut s: Spec| {
        s.lock = Some(key.clone());
        s.tries = Some(10);
        s
    };
    let specs: Vec<Spec> = (0..n).map(|_| locked(run.good(2..=10))).collect();
    run.dispatch(specs).await?;
    let mut pool = run.pool(o, spec.clone());
    pool.start(o.workers.unwrap_or(8))?;
    let limit = Duration::from_secs(pick(o, 900, 300));
    let phase1 = run.until_settled(&mut pool, limit, QUIET).await?;
    let phase1_secs = run
        .entries
        .iter()
        .map(|e| e.us)
        .max()
        .zip(run.entries.iter().map(|e| e.us).min())
        .map_or(0.0, |(max, min)| (max - min) as f64 / 1e6);
    run.report.set("phase1_seconds", phase1_secs);

    // Phase 2: a holder that would keep the lock for a minute is killed.
    let long_id = run.id();
    let long = locked(Spec {
        job: ChaosJob {
            id: long_id,
            ms: 10,
            first_ms: Some(60_000),
            mode: Mode::Sleep,
        },
        tries: None,
        timeout: None,
        lock: None,
        limit: None,
        label: "long holder".into(),
        expect: Expect::Complete,
    });
    run.dispatch(vec![long]).await?;
    let followers: Vec<Spec> = (0..10).map(|_| locked(run.good(10..=10))).collect();
    run.dispatch(followers).await?;
    let wait = Instant::now();
    let holder = loop {
        run.step(&mut pool, QUIET).await?;
        if let Some(e) = run.entries.iter().find(|e| e.job == long_id) {
            break Some(e.pid);
        }
        if wait.elapsed() > Duration::from_secs(60) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut kill_at = None;
    if let Some(pid) = holder {
        tokio::time::sleep(Duration::from_millis(500)).await;
        pool.kill(pid, &mut run.faults).await?;
        kill_at = run.faults.iter().rev().find_map(|f| match f {
            Fault::Kill { at, .. } => Some(*at),
            _ => None,
        });
    }
    let phase2 = run.until_settled(&mut pool, limit, QUIET).await?;
    let findings = run.finish(&mut pool).await?;
    settled_check(run, phase1 && phase2, limit);
    run.common_checks(false, true);

    // Overlaps: every attempt holds the lock from its start to its end (or to its worker's
    // death).
    let death: HashMap<u32, u64> = run
        .faults
        .iter()
        .filter_map(|f| match *f {
            Fault::Kill { pid, at } | Fault::Crash { pid, at } => Some((pid, at)),
            _ => None,
        })
        .collect();
    let mut intervals: Vec<(u64, u64, u64)> = findings
        .attempts
        .values()
        .flatten()
        .map(|a| {
            let end = a
                .end
                .or_else(|| death.get(&a.pid).copied())
                .unwrap_or(u64::MAX);
            (a.start, end, a.job)
        })
        .collect();
    intervals.sort_unstable();
    let mut overlaps = Vec::new();
    let mut held_until = 0u64;
    let mut held_by = 0u64;
    for (start, end, job) in &intervals {
        if *start < held_until {
            overlaps.push(format!(
                "job {job} started while job {held_by} held the lock"
            ));
        }
        if *end > held_until {
            held_until = *end;
            held_by = *job;
        }
    }
    run.report.set("locked_attempts", intervals.len());
    run.report.check(
        "0 overlapping intervals",
        overlaps.is_empty(),
        format!(
            "{} overlaps in {} attempts{}",
            overlaps.len(),
            intervals.len(),
            overlaps
                .first()
                .map(|o| format!(": {o}"))
                .unwrap_or_default()
        ),
    );
    match (holder, kill_at) {
        (Some(_), Some(at)) => {
            let next = findings
                .attempts
                .values()
                .flatten()
                .filter(|a| a.start > at)
                .map(|a| a.start)
                .min();
            let samples: Vec<u64> = next.map(|t| t - at).into_iter().collect();
            // The lock's TTL is the lease; a job that found it held retries after 500 ms.
            let bound =
                spec.lease + Duration::from_millis(500) + spec.sleep + Duration::from_millis(500);
            recovery(
                run,
                "from SIGKILL of the lock holder to the next locked job's start",
                &samples,
                bound,
                "the lock is free within the lease after SIGKILL of its holder",
            );
        }
        _ => run.report.check(
            "the lock is free within the lease after SIGKILL of its holder",
            false,
            "the long holder never started".to_owned(),
        ),
    }
    Ok(())
}

/// The bad items of scenario 8: (label, name, payload, acceptable reasons).
fn poison_items(count: usize) -> Vec<(String, String, Vec<u8>, Vec<String>)> {
    let envelope = |name: &str, data: &str| {
        format!("{{\"v\":1,\"name\":\"{name}\",\"data\":{data}}}").into_bytes()
    };
    let reasons = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut kinds: Vec<(String, String, Vec<u8>, Vec<String>)> = Vec::new();
    for i in 0..count {
        let item = match i % 12 {
            0 => (
                "invalid-utf8",
                CHAOS_NAME.to_owned(),
                vec![0xff, 0xfe, b'{', 0xc3, 0x28],
                reasons(&["not valid UTF-8"]),
            ),
            1 => {
                let mut full = envelope(CHAOS_NAME, "{\"id\":1,\"ms\":5}");
                full.truncate(10 + i % 20);
                (
                    "truncated-json",
                    CHAOS_NAME.to_owned(),
                    full,
                    reasons(&["truncated JSON"]),
                )
            }
            2 => (
                "unknown-name",
                "no-such-job".to_owned(),
                envelope("no-such-job", "{}"),
                reasons(&["unknown job name"]),
            ),
            3 => (
                "wrong-shape",
                CHAOS_NAME.to_owned(),
                envelope(CHAOS_NAME, "{\"id\":\"seven\"}"),
                reasons(&["does not fit job"]),
            ),
            4 => (
                "wrong-shape",
                CHAOS_NAME.to_owned(),
                envelope(CHAOS_NAME, "\"a string\""),
                reasons(&["does not fit job"]),
            ),
            5 => (
                "not-an-envelope",
                CHAOS_NAME.to_owned(),
                b"[1,2,3]".to_vec(),
                reasons(&["not a job envelope"]),
            ),
            6 => (
                "nesting-10000",
                CHAOS_NAME.to_owned(),
                deep.clone().into_bytes(),
                reasons(&["not a job envelope", "does not fit job"]),
            ),
            7 => (
                "nesting-10000-in-data",
                CHAOS_NAME.to_owned(),
                envelope(CHAOS_NAME, &deep),
                reasons(&["not a job envelope", "does not fit job"]),
            ),
            8 => (
                "empty",
                String::new(),
                Vec::new(),
                reasons(&["empty payload"]),
            ),
            9 => (
                "null",
                CHAOS_NAME.to_owned(),
                b"null".to_vec(),
                reasons(&["not a job envelope"]),
            ),
            10 => (
                "nul-bytes",
                CHAOS_NAME.to_owned(),
                vec![0, 0, 0, 0],
                reasons(&["not a job envelope"]),
            ),
            _ => (
                "unsupported-version",
                CHAOS_NAME.to_owned(),
                br#"{"v":99,"name":"chaos","data":{"id":1}}"#.to_vec(),
                // A newer envelope waits for a newer worker (none here: the window is 0 s).
                reasons(&["newer than this worker reads"]),
            ),
        };
        kinds.push((item.0.to_owned(), item.1, item.2, item.3));
    }
    // Two 10 MB bodies: a valid envelope whose data is a 10 MB string (the wrong shape).
    for slot in [count / 3, 2 * count / 3] {
        if slot < kinds.len() {
            let big = format!("\"{}\"", "x".repeat(10 * 1024 * 1024));
            kinds[slot] = (
                "10mb-body".to_owned(),
                CHAOS_NAME.to_owned(),
                envelope(CHAOS_NAME, &big),
                reasons(&["does not fit job"]),
            );
        }
    }
    kinds
}

/// Scenario 8: Poison payloads written straight into the store among good jobs.
async fn poison(run: &mut Run, o: &Options) -> anyhow::Result<()> {
    let n = jobs(o, 10_000, 2_000);
    let bad = poison_items(100);
    let spec = WorkerSpec {
        concurrency: o.concurrency.unwrap_or(4),
        lease: o.lease.unwrap_or(Duration::from_secs(10)),
        tries: 3,
        ..WorkerSpec::default()
    };
    let chunk = (n as usize / bad.len()).max(1);
    let mut left = n as usize;
    let mut refused = Vec::new();
    // (poison id, the good job pushed just before it, kind)
    let mut neighbours = Vec::new();
    let mut labels: HashMap<String, u64> = HashMap::new();
    for (label, name, payload, reasons) in bad {
        let take = chunk.min(left);
        left -= take;
        let specs: Vec<Spec> = (0..take).map(|_| run.good(0..=2)).collect();
        let before = specs.last().map(|s| s.job.id);
        run.dispatch(specs).await?;
        let expect = Expect::Fail {
            reasons,
            attempts: Some(1),
        };
        match run
            .push_raw(&name, payload, &format!("poison:{label}"), expect)
            .await?
        {
            Ok(id) => {
                *labels.entry(label.clone()).or_default() += 1;
                if let Some(before) = before {
                    neighbours.push((id, before, label));
                }
            }
            Err(reason) => refused.push(format!("{label}: {reason}")),
        }
    }
    let rest: Vec<Spec> = (0..left).map(|_| run.good(0..=2)).collect();
    run.dispatch(rest).await?;
    run.report.set("poison_by_kind", &labels);
    run.report.set("refused_at_push", &refused);
    let mut pool = run.pool(o, spec.clone());
    pool.respawn = false;
    pool.start(o.workers.unwrap_or(4))?;
    let limit = Duration::from_secs(pick(o, 900, 300));
    let settled = run.until_settled(&mut pool, limit, QUIET).await?;
    let findings = run.finish(&mut pool).await?;
    settled_check(run, settled, limit);
    run.common_checks(true, true);
    no_crashes(run);
    let panics = run.logs.panics;
    run.report
        .check("0 panics", panics == 0, format!("{panics} panics logged"));
    let in_failed = neighbours
        .iter()
        .filter(|(id, _, _)| findings.failed_by_job.contains_key(id))
        .count();
    run.report.check(
        "every bad item in the failed store with a typed reason, after one attempt",
        in_failed == neighbours.len() && run.report.unexpected == 0,
        format!(
            "{in_failed} of {} bad items in the failed store; {} refused at push: {refused:?}",
            neighbours.len(),
            refused.len()
        ),
    );
    // From the moment its neighbour in the queue started to the moment it was failed.
    let mut lags = Vec::new();
    let mut worst: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for (id, before, label) in &neighbours {
        let Some(failed) = findings.failed_by_job.get(id) else {
            continue;
        };
        let Some(start) = findings
            .attempts
            .get(before)
            .and_then(|l| l.first())
            .map(|a| a.start)
        else {
            continue;
        };
        let failed_at = failed
            .record
            .failed_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let lag = failed_at.saturating_sub(start);
        let w = worst.entry(label.clone()).or_default();
        *w = (*w).max(lag / 1000);
        lags.push(lag);
    }
    run.report.set("max_lag_ms_by_kind", &worst);
    // A poll of the worker, plus time for the 10 MB bodies to travel and be written: on
    // SQLite every writer waits for the one committing (fsyncing) a 10 MB body, and a CI
    // run on a busy disk measured `BEGIN IMMEDIATE` waits of 1.1 s (p99 2.3 s against the
    // earlier bound of poll + 2 s), and a later one 3.4 s (p99 3.38 s against poll + 3 s)
    // while the whole suite shared the two cores. A worker that crashed on a bad item is
    // caught by the checks above (no crashes, one attempt each), not by this bound.
    let bound = spec.sleep + Duration::from_secs(5);
    recovery(
        run,
        "from the start of the good job queued just before a bad item to the bad item in the failed store",
        &lags,
        bound,
        "each bad item failed within a poll of its turn",
    );
    Ok(())
}

/// Scenario 9: A hanging job with a 2 s timeout.
async fn hanging_job(run: &mut Run, o: &Options) -> anyhow::Result<()> {
    let n = jobs(o, 300, 100);
    let hangs = 3u64;
    let tries = 3u32;
    let timeout = Duration::from_secs(2);
    let spec = WorkerSpec {
        concurrency: o.concurrency.unwrap_or(2),
        lease: o.lease.unwrap_or(Duration::from_secs(5)),
        backoff: "fixed:500ms".into(),
        ..WorkerSpec::default()
    };
    let mut specs: Vec<Spec> = (0..n).map(|_| run.good(5..=20)).collect();
    let mut hang_ids = Vec::new();
    for k in 0..hangs {
        let id = run.id();
        hang_ids.push(id);
        let at = (n * (1 + 3 * k) / 10) as usize;
        specs.insert(
            at.min(specs.len()),
            Spec {
                job: ChaosJob {
                    id,
                    ms: 0,
                    first_ms: None,
                    mode: Mode::Hang,
                },
                tries: Some(tries),
                timeout: Some(timeout),
                lock: None,
                limit: None,
                label: "hang".into(),
                expect: Expect::Fail {
                    reasons: vec!["timed out after 2s".into()],
                    attempts: Some(tries),
                },
            },
        );
    }
    run.dispatch(specs).await?;
    let mut pool = run.pool(o, spec.clone());
    pool.respawn = false;
    pool.start(o.workers.unwrap_or(2))?;
    let limit = Duration::from_secs(pick(o, 300, 120));
    let settled = run.until_settled(&mut pool, limit, QUIET).await?;
    let findings = run.finish(&mut pool).await?;
    settled_check(run, settled, limit);
    run.common_checks(true, true);
    no_crashes(run);
    let mut cancel = Vec::new();
    let mut per_job = Vec::new();
    let mut not_cancelled = 0;
    for id in &hang_ids {
        let list = findings.attempts.get(id).cloned().unwrap_or_default();
        per_job.push(list.len());
        for a in &list {
            match (a.end, a.outcome.as_deref()) {
                (Some(end), Some("cancelled")) => cancel.push(end - a.start),
                _ => not_cancelled += 1,
            }
        }
    }
    run.report.check(
        "each hanging job retried, then failed after its tries",
        per_job.iter().all(|n| *n == tries as usize),
        format!("attempts per hanging job: {per_job:?} (tries {tries})"),
    );
    let reasons: Vec<String> = hang_ids
        .iter()
        .filter_map(|id| findings.failed_by_job.get(id))
        .map(|f| f.record.error.clone())
        .collect();
    run.report.set("hang_failure_reasons", &reasons);
    run.report.check(
        "every hanging attempt cancelled",
        not_cancelled == 0 && !cancel.is_empty(),
        format!("{} cancelled, {not_cancelled} not", cancel.len()),
    );
    let too_early = cancel.iter().filter(|c| **c < 1_900_000).count();
    run.report.check(
        "no attempt cancelled before its timeout",
        too_early == 0,
        format!("{too_early} attempts ended before 2 s"),
    );
    recovery(
        run,
        "from a hanging attempt's start to its cancellation (timeout 2 s)",
        &cancel,
        Duration::from_secs(3),
        "cancelled within 3 s",
    );
    Ok(())
}

/// Runs the workers until the jobs settle or `limit` passes, SIGKILLing one (replaced) every
/// 1.5-2.5 s, as the kill storm does. Returns false on timeout.
async fn storm(run: &mut Run, pool: &mut Pool, limit: Duration) -> anyhow::Result<bool> {
    let every = || Duration::from_millis(rand::rng().random_range(1500..=2500));
    let mut next_kill = Instant::now() + every();
    let deadline = Instant::now() + limit;
    loop {
        if run.step(pool, QUIET).await? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        if Instant::now() >= next_kill {
            next_kill += every();
            let pids = pool.settled_pids(Duration::from_millis(500));
            if let Some(pid) = pids.choose(&mut rand::rng()).copied() {
                pool.kill(pid, &mut run.faults).await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// From the ledger: each job's first successful end, and every attempt's start (µs).
fn ledger_times(entries: &[crate::ledger::Entry]) -> (HashMap<u64, u64>, HashMap<u64, Vec<u64>>) {
    let mut first_ok: HashMap<u64, u64> = HashMap::new();
    let mut starts: HashMap<u64, Vec<u64>> = HashMap::new();
    for e in entries {
        match e.ev {
            crate::ledger::Event::Start => starts.entry(e.job).or_default().push(e.us),
            crate::ledger::Event::End if e.outcome.as_deref() == Some("ok") => {
                let t = first_ok.entry(e.job).or_insert(e.us);
                *t = (*t).min(e.us);
            }
            _ => {}
        }
    }
    (first_ok, starts)
}

/// Scenario 10, chains under the SIGKILL storm: chains of links of 50-300 ms, one worker
/// killed every 1.5-2.5 s and restarted. Each link may run again after a kill (at least
/// once), but starts only after the link before it succeeded, and each chain's counters
/// count every link exactly once.
async fn chain_storm(run: &mut Run, o: &Options) -> anyhow::Result<()> {
    let driver = run.driver();
    if run.storage.capabilities().groups.is_none() {
        run.report.note = Some(format!(
            "not applicable: {driver} has no waiting jobs, so it refuses chains (documented)"
        ));
        return Ok(());
    }
    // Long enough for several kills: about 2 s of work per chain, two or more rounds of the
    // workers' slots.
    let (chains, links) = pick(o, (400, 20), (60, 12));
    let workers = o.workers.unwrap_or(4);
    let spec = WorkerSpec {
        concurrency: o.concurrency.unwrap_or(8),
        lease: o
            .lease
            .unwrap_or(pick(o, Duration::from_secs(5), Duration::from_secs(2))),
        ..WorkerSpec::default()
    };
    let order: Vec<Vec<u64>> = {
        let mut all = Vec::with_capacity(chains);
        let mut specs = Vec::with_capacity(chains);
        for _ in 0..chains {
            let chain: Vec<Spec> = (0..links)
                .map(|_| {
                    let mut s = run.good(50..=300);
                    s.tries = Some(20);
                    s
                })
                .collect();
            all.push(chain.iter().map(|s| s.job.id).collect());
            specs.push(chain);
        }
        let ids = run.dispatch_chains(specs).await?;
        run.report.set("chains", chains as u64);
        run.report.set("links_per_chain", links as u64);
        let mut pool = run.pool(o, spec.clone());
        pool.start(workers)?;
        let limit = Duration::from_secs(pick(o, 1200, 300));
        let settled = storm(run, &mut pool, limit).await?;
        run.finish(&mut pool).await?;
        settled_check(run, settled, limit);
        run.common_checks(false, true);
        // Counters: every link counted once as succeeded, whatever ran twice.
        let mut wrong = Vec::new();
        for id in &ids {
            let status = queue_core::Chain::status(&run.queue, id).await?;
            if (
                status.links,
                status.succeeded,
                status.failed,
                status.skipped,
            ) != (links as u64, links as u64, 0, 0)
            {
                wrong.push(format!("{id}: {status:?}"));
            }
        }
        run.report.check(
            "chain counters exact",
            wrong.is_empty(),
            if wrong.is_empty() {
                format!("{chains} chains, each {links} of {links} links succeeded, counted once")
            } else {
                format!(
                    "{} chains off: {:?}",
                    wrong.len(),
                    &wrong[..wrong.len().min(5)]
                )
            },
        );
        all
    };
    // Order: no attempt of a link starts before the first successful end of the one before.
    let (first_ok, starts) = ledger_times(&run.entries);
    let mut early = 0;
    for chain in &order {
        for pair in chain.windows(2) {
            let Some(&done) = first_ok.get(&pair[0]) else {
                continue;
            };
            early += starts
                .get(&pair[1])
                .map_or(0, |s| s.iter().filter(|&&t| t < done).count());
        }
    }
    let kills = run
        .faults
        .iter()
        .filter(|f| matches!(f, Fault::Kill { .. }))
        .count();
    run.report.set("kills", kills as u64);
    run.report.check(
        "each link starts after the one before it succeeded",
        early == 0,
        format!("{early} attempts started before their predecessor's first success"),
    );
    Ok(())
}

/// Scenario 11, batches under the SIGKILL storm: batches of members of 20-200 ms, each with
/// a `then` and a `finally` job, one worker killed every 1.5-2.5 s and restarted. Every
/// member and callback completes (at least once: a kill may run one again); each batch's
/// counters count every member exactly once; each callback starts only after every member of
/// its batch succeeded.
async fn batch_storm(run: &mut Run, o: &Options) -> anyhow::Result<()> {
    let driver = run.driver();
    if run.storage.capabilities().groups.is_none() {
        run.report.note = Some(format!(
            "not applicable: {driver} has no group counters, so it refuses batches (documented)"
        ));
        return Ok(());
    }
    let (batches, members) = pick(o, (100, 100), (12, 60));
    let workers = o.workers.unwrap_or(4);
    let spec = WorkerSpec {
        concurrency: o.concurrency.unwrap_or(8),
        lease: o
            .lease
            .unwrap_or(pick(o, Duration::from_secs(5), Duration::from_secs(2))),
        ..WorkerSpec::default()
    };
    let tried = |run: &mut Run| {
        let mut s = run.good(20..=200);
        s.tries = Some(20);
        s
    };
    let mut groups = Vec::with_capacity(batches);
    for _ in 0..batches {
        let specs: Vec<Spec> = (0..members).map(|_| tried(run)).collect();
        let (then, finally) = (tried(run), tried(run));
        let member_ids: Vec<u64> = specs.iter().map(|s| s.job.id).collect();
        let callbacks = [then.job.id, finally.job.id];
        let id = run.dispatch_batch(specs, then, finally).await?;
        groups.push((id, member_ids, callbacks));
    }
    run.report.set("batches", batches as u64);
    run.report.set("members_per_batch", members as u64);
    // A few chains and one workflow with a batch node in the same storm.
    let (chains, links, fan) = pick(o, (5, 10, 20), (2, 5, 10));
    let chain_specs: Vec<Vec<Spec>> = (0..chains)
        .map(|_| (0..links).map(|_| tried(run)).collect())
        .collect();
    let chain_order: Vec<Vec<u64>> = chain_specs
        .iter()
        .map(|c| c.iter().map(|s| s.job.id).collect())
        .collect();
    let chain_ids = run.dispatch_chains(chain_specs).await?;
    let (first, side, last) = (tried(run), tried(run), tried(run));
    let fan_specs: Vec<Spec> = (0..fan).map(|_| tried(run)).collect();
    let fan_ids: Vec<u64> = fan_specs.iter().map(|s| s.job.id).collect();
    let (first_id, side_id, last_id) = (first.job.id, side.job.id, last.job.id);
    let workflow = run.dispatch_workflow(first, fan_specs, side, last).await?;
    run.report.set("chains", chains as u64);
    run.report.set("links_per_chain", links as u64);
    run.report.set("workflow_batch_node_members", fan as u64);
    let mut pool = run.pool(o, spec.clone());
    pool.start(workers)?;
    let limit = Duration::from_secs(pick(o, 1200, 300));
    let settled = storm(run, &mut pool, limit).await?;
    run.finish(&mut pool).await?;
    settled_check(run, settled, limit);
    run.common_checks(false, true);
    let mut wrong = Vec::new();
    for (id, _, _) in &groups {
        let s = queue_core::Batch::status(&run.queue, id).await?;
        let m = members as u64;
        if (s.total, s.pending, s.succeeded, s.failed, s.cancelled) != (m, 0, m, 0, 0)
            || !s.is_finished()
        {
            wrong.push(format!("{id}: {s:?}"));
        }
    }
    run.report.check(
        "batch counters exact",
        wrong.is_empty(),
        if wrong.is_empty() {
            format!(
                "{batches} batches, each {members} of {members} members succeeded, counted once"
            )
        } else {
            format!(
                "{} batches off: {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(5)]
            )
        },
    );
    // Callbacks: no attempt starts before the last member's first success.
    let (first_ok, starts) = ledger_times(&run.entries);
    let mut early = 0;
    for (_, member_ids, callbacks) in &groups {
        let Some(last) = member_ids
            .iter()
            .map(|m| first_ok.get(m).copied())
            .max()
            .flatten()
        else {
            continue;
        };
        for callback in callbacks {
            early += starts
                .get(callback)
                .map_or(0, |s| s.iter().filter(|&&t| t < last).count());
        }
    }
    run.report.check(
        "each callback starts after its batch's members",
        early == 0,
        format!("{early} callback attempts started before their batch's last member succeeded"),
    );

    // The chains: every link counted once, each after the one before it.
    let mut wrong = Vec::new();
    for id in &chain_ids {
        let s = queue_core::Chain::status(&run.queue, id).await?;
        let n = links as u64;
        if (s.links, s.succeeded, s.failed, s.skipped) != (n, n, 0, 0) {
            wrong.push(format!("{id}: {s:?}"));
        }
    }
    let after = |before: &[u64], job: u64| -> usize {
        let Some(done) = before
            .iter()
            .map(|b| first_ok.get(b).copied())
            .max()
            .flatten()
        else {
            return 0;
        };
        starts
            .get(&job)
            .map_or(0, |s| s.iter().filter(|&&t| t < done).count())
    };
    let early_links: usize = chain_order
        .iter()
        .flat_map(|c| c.windows(2))
        .map(|pair| after(&pair[..1], pair[1]))
        .sum();
    run.report.check(
        "chains in the storm exact and in order",
        wrong.is_empty() && early_links == 0,
        format!(
            "{chains} chains of {links}: {} off {:?}, {early_links} links started before the one before succeeded",
            wrong.len(),
            &wrong[..wrong.len().min(3)]
        ),
    );

    // The workflow: every node succeeded once; its batch node counted every member once;
    // no node started before the nodes before it succeeded.
    let status = queue_core::Workflow::status(&run.queue, &workflow).await?;
    let nodes_ok = (
        status.nodes,
        status.succeeded,
        status.failed,
        status.skipped,
    ) == (4, 4, 0, 0);
    let known: std::collections::HashSet<String> =
        groups.iter().map(|(id, _, _)| id.0.clone()).collect();
    let mut node_batches = Vec::new();
    let mut page = queue_core::storage::PageRequest::first(500);
    loop {
        let listed = queue_core::Batch::list(&run.queue, page).await?;
        node_batches.extend(
            listed
                .items
                .into_iter()
                .filter(|(id, _)| !known.contains(&id.0)),
        );
        match listed.next {
            Some(next) => page = queue_core::storage::PageRequest::after(next, 500),
            None => break,
        }
    }
    let f = fan as u64;
    let node_ok = match node_batches.as_slice() {
        [(_, s)] => {
            (s.total, s.pending, s.succeeded, s.failed, s.cancelled) == (f, 0, f, 0, 0)
                && s.is_finished()
        }
        _ => false,
    };
    let early_nodes = fan_ids
        .iter()
        .map(|&m| after(&[first_id], m))
        .sum::<usize>()
        + after(&[first_id], side_id)
        + after(&[fan_ids.as_slice(), &[side_id]].concat(), last_id);
    run.report.check(
        "the workflow and its batch node exact and in order",
        nodes_ok && node_ok && early_nodes == 0,
        format!(
            "nodes (total, succeeded, failed, skipped) {:?}; its batch node's members (total, \
             succeeded, failed, cancelled) {:?}; {early_nodes} node attempts started before \
             the nodes before them succeeded",
            (
                status.nodes,
                status.succeeded,
                status.failed,
                status.skipped
            ),
            node_batches
                .iter()
                .map(|(_, s)| (s.total, s.succeeded, s.failed, s.cancelled))
                .collect::<Vec<_>>()
        ),
    );
    let kills = run
        .faults
        .iter()
        .filter(|f| matches!(f, Fault::Kill { .. }))
        .count();
    run.report.set("kills", kills as u64);
    Ok(())
}

/// The concurrency limit of scenario 12 (`[limits]` in the workers' job.toml): its jobs
/// spread over [`SLOT_KEYS`], each key [`SLOTS`] at once.
const SLOTS_LIMIT: &str = "chaos-slots";
/// How many jobs of a key of [`SLOTS_LIMIT`] may run at once.
const SLOTS: u32 = 2;
/// The keys of [`SLOTS_LIMIT`].
const SLOT_KEYS: [&str; 3] = ["acct-1", "acct-2", "acct-3"];
/// The rate limit of scenario 12, on drivers with group counters; its jobs on one key.
const RATE_LIMIT: &str = "chaos-rate";
/// [`RATE_LIMIT`]'s rate, as `job.toml` writes it.
const RATE: &str = "20/s";

/// Jobs of one limit key in scenario 12: dispatched while fewer than `window` are open.
struct Keyed {
    name: String,
    window: usize,
    waiting: VecDeque<Spec>,
    ids: Vec<u64>,
}

/// Scenario 12, limits under the SIGKILL storm: jobs of 50-300 ms on three keys of a
/// `concurrent 2` limit and, on drivers with group counters, on one key of a `20/s` limit,
/// 4 workers, one SIGKILLed every 1.5-2.5 s and restarted. The limits reach the workers
/// through `[limits]` in their job.toml. Each key's jobs are dispatched while few are open,
/// so the rate key's booked tokens lie well within a lease. From the ledger: never more than
/// 2 bodies of a key at once (a body its worker's SIGKILL cut short counted as running until
/// the worker was dead); every attempt number explained by kills, none counted for waiting; any k ≥ 4
/// starts of the rate key span at least (k - 1) × 50 ms, less the pick-up latency.
async fn limit_storm(run: &mut Run, o: &Options) -> anyhow::Result<()> {
    let driver = run.driver();
    let rated = run.storage.capabilities().groups.is_some();
    let rate = match RATE.parse::<Limit>()? {
        Limit::Rate(rate) => rate,
        other => anyhow::bail!("{RATE} parsed as {other}"),
    };
    // The limiter's spacing: the period over the count, rounded up to a millisecond.
    let interval_us = (rate.per.as_millis() as u64).div_ceil(u64::from(rate.count)) * 1000;
    let base = std::fs::read_to_string(&run.config)?;
    if !rated {
        // A worker with a rate limit refuses to start where there are no group counters.
        let (refused, detail) = refuses_rate_limit(run, o, &base).await?;
        run.report.check(
            "a worker with a rate limit refuses to start (no group counters)",
            refused,
            detail,
        );
    }
    let mut limits = format!("\n[limits]\n{SLOTS_LIMIT} = \"concurrent {SLOTS}\"\n");
    if rated {
        limits.push_str(&format!("{RATE_LIMIT} = \"{RATE}\"\n"));
    }
    std::fs::write(&run.config, format!("{base}{limits}"))?;

    let (per_key, rate_jobs) = pick(o, (400, 1000), (40, 120));
    let workers = o.workers.unwrap_or(4);
    let spec = WorkerSpec {
        concurrency: o.concurrency.unwrap_or(4),
        lease: o
            .lease
            .unwrap_or(pick(o, Duration::from_secs(5), Duration::from_secs(2))),
        // A job whose booked token is due is taken at the next look of an idle worker.
        sleep: Duration::from_millis(100),
        ..WorkerSpec::default()
    };
    let keyed = |run: &mut Run, name: String, limit: JobLimit, n: usize, window: usize| {
        let waiting = (0..n)
            .map(|_| {
                let mut s = run.good(50..=300);
                s.tries = Some(20);
                s.limit = Some(limit.clone());
                s.label = name.clone();
                s
            })
            .collect();
        Keyed {
            name,
            window,
            waiting,
            ids: Vec::new(),
        }
    };
    // Six times the slots of a key open: most of them wait, put back again and again.
    let mut keys: Vec<Keyed> = SLOT_KEYS
        .iter()
        .map(|k| {
            let limit = JobLimit::new(SLOTS_LIMIT).key(k);
            keyed(run, format!("{SLOTS_LIMIT}[{k}]"), limit, per_key, 12)
        })
        .collect();
    // One second of the rate's tokens open: a token is booked at most a second ahead.
    let rate_key = rated.then(|| {
        let limit = JobLimit::new(RATE_LIMIT).key("api");
        keyed(run, format!("{RATE_LIMIT}[api]"), limit, rate_jobs, 20)
    });
    keys.extend(rate_key);
    run.report.set("slot_keys", SLOT_KEYS.len());
    run.report.set("jobs_per_slot_key", per_key);
    run.report
        .set("rate_key_jobs", if rated { rate_jobs } else { 0 });

    let mut pool = run.pool(o, spec.clone());
    pool.start(workers)?;
    let every = || Duration::from_millis(rand::rng().random_range(1500..=2500));
    let mut next_kill = Instant::now() + every();
    let limit = Duration::from_secs(pick(o, 1200, 300));
    let deadline = Instant::now() + limit;
    let mut reaped: HashMap<u32, u64> = HashMap::new();
    let settled = loop {
        let all_done = run.step(&mut pool, QUIET).await?;
        if all_done && keys.iter().all(|k| k.waiting.is_empty()) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        for key in &mut keys {
            let open = key
                .ids
                .iter()
                .filter(|id| !run.completed.contains(id))
                .count();
            if open < key.window && !key.waiting.is_empty() {
                let take = (key.window - open).min(key.waiting.len());
                let batch: Vec<Spec> = key.waiting.drain(..take).collect();
                let before = run.dispatched.len();
                run.dispatch(batch).await?;
                key.ids
                    .extend(run.dispatched[before..].iter().map(|d| d.id));
            }
        }
        if Instant::now() >= next_kill {
            next_kill += every();
            let pids = pool.settled_pids(Duration::from_millis(500));
            if let Some(pid) = pids.choose(&mut rand::rng()).copied() {
                pool.kill(pid, &mut run.faults).await?;
                // Dead by now (reaped): the latest its bodies can have run.
                reaped.insert(pid, unix_micros());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let findings = run.finish(&mut pool).await?;
    settled_check(run, settled, limit);
    run.common_checks(false, true);
    let kills = run
        .faults
        .iter()
        .filter(|f| matches!(f, Fault::Kill { .. }))
        .count();
    run.report.set("kills", kills as u64);
    let bodies_of = |key: &Keyed| -> Vec<Attempt> {
        key.ids
            .iter()
            .filter_map(|id| findings.attempts.get(id))
            .flatten()
            .cloned()
            .collect()
    };
    let pushed: HashMap<u64, u64> = run.dispatched.iter().map(|d| (d.id, d.pushed_us)).collect();

    // Concurrency: per key, the bodies running at once; a body cut short by a SIGKILL runs
    // until its worker was reaped (it died between the signal and then, a few ms).
    let deaths = crate::check::deaths(&run.faults, &reaped);
    let (mut over, mut under, mut lines) = (Vec::new(), Vec::new(), Vec::new());
    let mut most = serde_json::Map::new();
    for key in keys.iter().filter(|k| k.name.starts_with(SLOTS_LIMIT)) {
        let a = crate::check::at_once(&bodies_of(key), &deaths, SLOTS as usize);
        lines.push(format!(
            "{}: {} bodies ({} ended, {} cut short by a kill, {} with no end and no kill), \
             at most {} at once ended only, {} with the killed ones",
            key.name,
            a.ended + a.killed + a.open,
            a.ended,
            a.killed,
            a.open,
            a.most_ended,
            a.most
        ));
        most.insert(
            key.name.clone(),
            serde_json::json!({ "ended_only": a.most_ended, "with_killed": a.most }),
        );
        if a.most > SLOTS as usize || a.most_ended > SLOTS as usize {
            let (at, jobs) = a.first_excess.unwrap_or_default();
            over.push(format!(
                "{}: {} at once at {at} µs (jobs {jobs:?})",
                key.name, a.most
            ));
        }
        if a.most_ended < SLOTS as usize {
            under.push(format!("{}: at most {}", key.name, a.most_ended));
        }
    }
    run.report.set("most_running_per_key", most);
    run.report.check(
        "at most 2 running at once per key",
        over.is_empty(),
        if over.is_empty() {
            lines.join("; ")
        } else {
            format!("{}; {}", over.join("; "), lines.join("; "))
        },
    );
    run.report.check(
        "each key reached 2 at once (the limit was what held the jobs back)",
        under.is_empty(),
        if under.is_empty() {
            format!("every key of {SLOTS_LIMIT} had 2 bodies running at some point")
        } else {
            under.join("; ")
        },
    );

    // Attempts: each counted attempt explained by a kill, none by waiting for a limit.
    let audit = crate::check::attempt_audit(
        &findings.attempts,
        &pushed,
        &run.faults,
        &run.logs,
        1_000_000,
    );
    run.report.set("bodies_above_attempt_1", audit.retried);
    run.report.set("max_attempt", audit.max_attempt);
    run.report
        .set("bodies_waited_1s_without_a_kill", audit.waited_unfaulted);
    run.report.check(
        "no attempt counted for waiting",
        audit.unexplained.is_empty(),
        format!(
            "{} bodies, {} of them at an attempt above 1 (highest {}); {} with more attempts \
             counted than the kills between their dispatch and their start explain; {} started \
             1 s or more after their dispatch with no kill in between (put back while they \
             waited), each at attempt 1 unless listed{}",
            audit.bodies,
            audit.retried,
            audit.max_attempt,
            audit.unexplained.len(),
            audit.waited_unfaulted,
            audit
                .unexplained
                .first()
                .map(|u| format!(": {u}"))
                .unwrap_or_default()
        ),
    );
    // How long jobs waited for their limit, dispatch to first start.
    for (what, prefix) in [("slot_keys", SLOTS_LIMIT), ("rate_key", RATE_LIMIT)] {
        let samples: Vec<u64> = keys
            .iter()
            .filter(|k| k.name.starts_with(prefix))
            .flat_map(|k| k.ids.iter())
            .filter_map(|id| {
                let first = findings.attempts.get(id)?.first()?.start;
                Some(first.saturating_sub(*pushed.get(id)?))
            })
            .collect();
        if !samples.is_empty() {
            let t = Timing::of("dispatch to first start", &samples);
            run.report.set(
                &format!("{what}_wait_ms"),
                serde_json::json!({ "p50": t.p50_ms, "p99": t.p99_ms, "max": t.max_ms }),
            );
        }
    }

    // Rate: any k >= 4 starts of the rate key span at least (k - 1) intervals, less the
    // pick-up latency. Every body start takes a token of its own (a run again after a kill
    // takes a new one), but a start can come after its token: a job whose booked token is due
    // becomes available then and is taken at the next look of a worker (its idle wait) with
    // a free slot (a job buffered behind a running one waits for it, up to a body), so a late
    // start and the punctual ones after it bunch. The margin is that: the idle wait and the
    // longest body, plus one interval per SIGKILL from a lease before the window to its end
    // (a worker killed between booking a job's token and putting the job back leaves it to
    // run when its lease runs out, after its token: one start more than the tokens there).
    let rule = format!(
        "k starts of the rate key span at least (k - 1) × {} ms less a margin (k >= 4)",
        interval_us / 1000
    );
    match keys.iter().find(|k| k.name.starts_with(RATE_LIMIT)) {
        None => run.report.not_applicable(
            rule,
            format!(
                "{driver} has no group counters: a worker with a rate limit refuses to start \
                 there (Error::NotSupported), so only the concurrency limit ran"
            ),
        ),
        Some(key) => {
            let margin = spec.sleep + Duration::from_millis(300);
            let starts: Vec<u64> = bodies_of(key).iter().map(|a| a.start).collect();
            let (first, last) = (starts.iter().min(), starts.iter().max());
            let observed = match (first, last) {
                (Some(&f), Some(&l)) if l > f => (starts.len() - 1) as f64 / ((l - f) as f64 / 1e6),
                _ => 0.0,
            };
            run.report.set("rate_key_starts", starts.len());
            run.report.set(
                "rate_key_starts_per_second",
                (observed * 10.0).round() / 10.0,
            );
            match crate::check::rate_shortfall(&starts, interval_us, 4) {
                None => run
                    .report
                    .check(rule, false, format!("only {} starts", starts.len())),
                Some((short, i, j)) => {
                    // Each SIGKILL between a lease before the window and its end can have
                    // left one booked job to run when its lease ran out, after its token:
                    // one start more in the window, so one interval more of margin.
                    let mut sorted = starts.clone();
                    sorted.sort_unstable();
                    let from = sorted[i].saturating_sub(spec.lease.as_micros() as u64);
                    let to = sorted[j];
                    let kills = run
                        .faults
                        .iter()
                        .filter(|f| matches!(f, Fault::Kill { at, .. } if (from..=to).contains(at)))
                        .count() as i64;
                    let margin = margin + Duration::from_micros(kills as u64 * interval_us);
                    let margin_us = margin.as_micros() as i64;
                    run.report
                        .set("rate_worst_shortfall_ms", short as f64 / 1000.0);
                    run.report.check(
                        rule,
                        short <= margin_us,
                        format!(
                            "{} starts at {:.1}/s (limit {RATE}); the worst: starts {i} to {j} \
                             ({} of them) span {} ms less than {} × {} ms; margin {} ms ({kills} \
                             SIGKILLs in and a lease before the window)",
                            starts.len(),
                            observed,
                            j - i + 1,
                            short as f64 / 1000.0,
                            j - i,
                            interval_us / 1000,
                            margin.as_millis()
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Starts one worker whose job.toml (`base` plus a rate limit) defines a rate limit, on a
/// store without group counters, with nothing queued: it must refuse to start, saying why.
async fn refuses_rate_limit(run: &Run, o: &Options, base: &str) -> anyhow::Result<(bool, String)> {
    let config = run.dir.join("job-rate.toml");
    std::fs::write(
        &config,
        format!("{base}\n[limits]\n{RATE_LIMIT} = \"{RATE}\"\n"),
    )?;
    let mut cmd = tokio::process::Command::new(&o.worker_exe);
    cmd.arg("--connection")
        .arg(&run.url)
        .arg("--config")
        .arg(&config)
        .args(["work", "--queue", crate::job::QUEUE, "--once"])
        .env(crate::job::LEDGER_ENV, &run.ledger)
        .env_remove("QUEUE_URL")
        .env_remove("QUEUE_CONFIG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(Duration::from_secs(60), cmd.output()).await {
        Ok(out) => out?,
        Err(_) => {
            return Ok((
                false,
                "the worker ran for 60 s instead of refusing".to_owned(),
            ))
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = text
        .lines()
        .find(|l| l.contains("rate limits"))
        .map(|l| l.trim().chars().take(240).collect::<String>());
    Ok(match said {
        Some(line) if !out.status.success() => (true, format!("{}: {line}", out.status)),
        _ => (
            false,
            format!(
                "{}, output: {}",
                out.status,
                text.trim().chars().take(240).collect::<String>()
            ),
        ),
    })
}

/// Scenario 13, cancels under the SIGKILL storm: jobs of 200–1,500 ms that stop when
/// cancelled, 4 workers keeping finished jobs, one killed every 1.5–2.5 s and restarted,
/// while the harness cancels a random unfinished job every 40 ms (a quarter of them in all):
/// a job removed by its cancel never starts after it; a job marked while running starts no
/// retried attempt after it; every cancelled job ends `cancelled` (or `succeeded`, the cancel
/// too late, with a completed attempt in the ledger), none in the failed store; the others
/// are not lost.
async fn cancel_storm(run: &mut Run, o: &Options) -> anyhow::Result<()> {
    let driver = run.driver();
    if run.storage.capabilities().track.is_none() {
        run.report.note = Some(format!(
            "not applicable: {driver} has no jobs by id, so it cannot cancel (documented)"
        ));
        return Ok(());
    }
    let n = jobs(o, 2_000, 300);
    let workers = o.workers.unwrap_or(4);
    let spec = WorkerSpec {
        concurrency: o.concurrency.unwrap_or(4),
        lease: o
            .lease
            .unwrap_or(pick(o, Duration::from_secs(5), Duration::from_secs(2))),
        ..WorkerSpec::default()
    };
    let specs: Vec<Spec> = (0..n)
        .map(|_| {
            let mut s = run.good(200..=1500);
            s.job.mode = Mode::Cooperative;
            s.tries = Some(20);
            s
        })
        .collect();
    run.dispatch(specs).await?;
    let mut pool = run.pool(o, spec.clone());
    pool.extra = vec!["--keep-finished".into(), "1h".into()];
    pool.start(workers)?;
    let every = || Duration::from_millis(rand::rng().random_range(1500..=2500));
    let mut next_kill = Instant::now() + every();
    let to_cancel = n / 4;
    let (mut removed, mut marked, mut ended_before) = (0u64, 0u64, 0u64);
    let mut aim_running = false;
    let limit = Duration::from_secs(pick(o, 900, 300));
    let deadline = Instant::now() + limit;
    let settled = loop {
        if run.step(&mut pool, QUIET).await? {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        if Instant::now() >= next_kill {
            next_kill += every();
            let pids = pool.settled_pids(Duration::from_millis(500));
            if let Some(pid) = pids.choose(&mut rand::rng()).copied() {
                pool.kill(pid, &mut run.faults).await?;
            }
        }
        if removed + marked < to_cancel {
            // Every other cancel aims at a job whose body runs now (a START with no END in
            // the ledger so far), the others at any unfinished job (most of them waiting).
            let running: HashSet<u64> = {
                let mut open = HashMap::new();
                for e in &run.entries {
                    match e.ev {
                        crate::ledger::Event::Start => {
                            open.insert((e.job, e.nonce), ());
                        }
                        crate::ledger::Event::End => {
                            open.remove(&(e.job, e.nonce));
                        }
                    }
                }
                open.into_keys().map(|(job, _)| job).collect()
            };
            aim_running = !aim_running;
            let open: Vec<usize> = (0..run.dispatched.len())
                .filter(|i| {
                    let d = &run.dispatched[*i];
                    matches!(d.expect, Expect::Complete)
                        && !run.completed.contains(&d.id)
                        && (!aim_running || running.contains(&d.id))
                })
                .collect();
            if let Some(&i) = open.choose(&mut rand::rng()) {
                let sid = queue_core::JobId(run.dispatched[i].sid.clone());
                let outcome = run.queue.cancel(&sid).await;
                let at_us = unix_micros();
                match outcome {
                    Ok(queue_core::CancelOutcome::Cancelled(_)) => {
                        removed += 1;
                        run.dispatched[i].expect = Expect::Cancelled {
                            removed: true,
                            at_us,
                        };
                    }
                    Ok(queue_core::CancelOutcome::Requested(_)) => {
                        marked += 1;
                        run.dispatched[i].expect = Expect::Cancelled {
                            removed: false,
                            at_us,
                        };
                    }
                    Ok(_) => ended_before += 1,
                    Err(e) => run
                        .report
                        .details
                        .push(format!("a cancel of job {sid} failed: {e}")),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    };
    let findings = run.finish(&mut pool).await?;
    settled_check(run, settled, limit);
    run.common_checks(false, true);
    run.report.set("cancels_removed", removed);
    run.report.set("cancels_marked_running", marked);
    run.report
        .set("cancels_of_jobs_already_ended", ended_before);
    // How each cancelled job ended, by its status (kept by the workers: `--keep-finished`).
    let (mut ended_cancelled, mut too_late, mut wrong) = (0u64, 0u64, Vec::new());
    let cancelled: Vec<(u64, String, bool)> = run
        .dispatched
        .iter()
        .filter_map(|d| match d.expect {
            Expect::Cancelled { removed, .. } => Some((d.id, d.sid.clone(), removed)),
            _ => None,
        })
        .collect();
    for (id, sid, was_removed) in cancelled {
        let status = run.queue.job(&queue_core::JobId(sid.clone())).await;
        let completed = findings
            .attempts
            .get(&id)
            .is_some_and(|list| list.iter().any(Attempt::completed));
        match status.map(|s| s.map(|s| s.state)) {
            Ok(Some(queue_core::JobState::Cancelled)) => ended_cancelled += 1,
            Ok(Some(queue_core::JobState::Succeeded)) if !was_removed && completed => too_late += 1,
            other => wrong.push(format!("job {id} ({sid}): {other:?}")),
        }
    }
    run.report
        .set("cancelled_jobs_ended_cancelled", ended_cancelled);
    run.report
        .set("cancelled_jobs_succeeded_too_late", too_late);
    run.report.check(
        "every cancelled job ends cancelled (or succeeded, too late)",
        wrong.is_empty(),
        format!(
            "{} others: {:?}",
            wrong.len(),
            wrong.iter().take(5).collect::<Vec<_>>()
        ),
    );
    run.report.check(
        "cancels reached both waiting and running jobs",
        removed > 0 && marked > 0,
        format!("removed {removed}, marked running {marked}"),
    );
    Ok(())
}
