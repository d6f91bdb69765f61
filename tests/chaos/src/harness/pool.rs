//! Worker processes: started from the `chaos-worker` binary, signalled with `kill(1)`,
//! restarted when they die, and stopped at the end.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::process::{Child, Command};

use crate::check::Fault;
use crate::job::LEDGER_ENV;
use crate::ledger::unix_micros;

/// How the workers run: the flags of `chaos-worker work`.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSpec {
    pub(crate) concurrency: usize,
    pub(crate) lease: Duration,
    pub(crate) sleep: Duration,
    pub(crate) grace: Duration,
    pub(crate) tries: u32,
    pub(crate) backoff: String,
    pub(crate) timeout: Duration,
}

impl Default for WorkerSpec {
    fn default() -> Self {
        WorkerSpec {
            concurrency: 4,
            lease: Duration::from_secs(5),
            sleep: Duration::from_millis(200),
            grace: Duration::from_secs(5),
            tries: 5,
            backoff: "fixed:200ms".to_owned(),
            timeout: Duration::from_secs(60),
        }
    }
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

struct Proc {
    child: Child,
    pid: u32,
    started: Instant,
    /// SIGTERM sent at (µs): its exit is expected.
    termed: Option<u64>,
    /// Stopped by `shutdown` at the end of the scenario (not one of its faults).
    final_stop: bool,
}

/// How a worker ended.
#[derive(Debug, Clone)]
pub(crate) struct Exit {
    pub(crate) pid: u32,
    /// `None` if killed by a signal.
    pub(crate) code: Option<i32>,
    pub(crate) signal: Option<i32>,
    /// Seconds from SIGTERM to exit, for workers asked to stop.
    pub(crate) after_term: Option<f64>,
    pub(crate) expected: bool,
    /// Stopped by the harness at the end of the scenario.
    pub(crate) final_stop: bool,
}

/// The worker processes of one scenario.
pub(crate) struct Pool {
    exe: PathBuf,
    url: String,
    config: PathBuf,
    ledger: PathBuf,
    dir: PathBuf,
    pub(crate) spec: WorkerSpec,
    procs: Vec<Proc>,
    /// Start a new worker when one exits (a supervisor's job), until `shutdown`.
    pub(crate) respawn: bool,
    closing: bool,
    next: usize,
    pub(crate) logs: Vec<(u32, PathBuf)>,
    pub(crate) exits: Vec<Exit>,
    pub(crate) started: u64,
    /// More arguments for every worker's `work` command (the draining one's too).
    pub(crate) extra: Vec<String>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.pids())
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(
        exe: PathBuf,
        url: String,
        config: PathBuf,
        ledger: PathBuf,
        dir: PathBuf,
        spec: WorkerSpec,
    ) -> Pool {
        Pool {
            exe,
            url,
            config,
            ledger,
            dir,
            spec,
            procs: Vec::new(),
            respawn: true,
            closing: false,
            next: 0,
            logs: Vec::new(),
            exits: Vec::new(),
            started: 0,
            extra: Vec::new(),
        }
    }

    fn command(&mut self, extra: &[&str]) -> anyhow::Result<(Command, PathBuf)> {
        self.next += 1;
        let log = self.dir.join(format!("worker-{:03}.log", self.next));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let out = file.try_clone()?;
        let s = &self.spec;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--connection")
            .arg(&self.url)
            .arg("--config")
            .arg(&self.config)
            .arg("work")
            .args(["--queue", crate::job::QUEUE])
            .args(["--concurrency", &s.concurrency.to_string()])
            .args(["--lease", &millis(s.lease)])
            .args(["--sleep", &millis(s.sleep)])
            .args(["--grace", &millis(s.grace)])
            .args(["--retries", &s.tries.to_string()])
            .args(["--backoff", &s.backoff])
            .args(["--timeout", &millis(s.timeout)])
            // The poison scenario writes jobs of names no worker knows and of a newer
            // envelope: with no rolling deploy they must fail at once, not wait an hour.
            .args(["--unknown-job-window", "0s"])
            .args(extra)
            .args(&self.extra)
            .env(LEDGER_ENV, &self.ledger)
            .env(
                "QUEUE_LOG",
                std::env::var("CHAOS_WORKER_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .env_remove("QUEUE_URL")
            .env_remove("QUEUE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        Ok((cmd, log))
    }

    /// Starts one worker; returns its pid.
    pub(crate) fn spawn(&mut self) -> anyhow::Result<u32> {
        let (mut cmd, log) = self.command(&[])?;
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))?;
        let Some(pid) = child.id() else {
            bail!("the worker exited before it had a pid");
        };
        let renamed = log.with_file_name(format!("worker-{:03}-{pid}.log", self.next));
        let log = match std::fs::rename(&log, &renamed) {
            Ok(()) => renamed,
            Err(_) => log,
        };
        self.logs.push((pid, log));
        self.procs.push(Proc {
            child,
            pid,
            started: Instant::now(),
            termed: None,
            final_stop: false,
        });
        self.started += 1;
        Ok(pid)
    }

    /// Starts `n` workers.
    pub(crate) fn start(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            self.spawn()?;
        }
        Ok(())
    }

    /// The pids of the workers alive.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// The pids of workers running for at least `age` and not asked to stop.
    pub(crate) fn settled_pids(&self, age: Duration) -> Vec<u32> {
        self.procs
            .iter()
            .filter(|p| p.termed.is_none() && p.started.elapsed() >= age)
            .map(|p| p.pid)
            .collect()
    }

    /// Notes workers that exited, records crashes as faults, and starts replacements.
    pub(crate) fn supervise(&mut self, faults: &mut Vec<Fault>) -> anyhow::Result<()> {
        let mut i = 0;
        while i < self.procs.len() {
            let status = self.procs[i].child.try_wait()?;
            let Some(status) = status else {
                i += 1;
                continue;
            };
            let proc = self.procs.remove(i);
            self.record_exit(&proc, status, faults);
            if self.respawn && !self.closing {
                self.spawn()?;
            }
        }
        Ok(())
    }

    fn record_exit(
        &mut self,
        proc: &Proc,
        status: std::process::ExitStatus,
        faults: &mut Vec<Fault>,
    ) {
        use std::os::unix::process::ExitStatusExt;
        let now = unix_micros();
        let expected = proc.termed.is_some();
        if !expected {
            faults.push(Fault::Crash {
                pid: proc.pid,
                at: now,
            });
        }
        self.exits.push(Exit {
            pid: proc.pid,
            code: status.code(),
            signal: status.signal(),
            after_term: proc.termed.map(|t| now.saturating_sub(t) as f64 / 1e6),
            expected,
            final_stop: proc.final_stop,
        });
    }

    /// Sends a signal with `kill(1)`.
    pub(crate) fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -{sig} {pid} failed ({status})");
        }
        Ok(())
    }

    /// SIGKILLs a worker (recorded as a fault), reaps it and, if `respawn`, starts another.
    pub(crate) async fn kill(&mut self, pid: u32, faults: &mut Vec<Fault>) -> anyhow::Result<()> {
        let Some(i) = self.procs.iter().position(|p| p.pid == pid) else {
            bail!("no worker {pid}");
        };
        faults.push(Fault::Kill {
            pid,
            at: unix_micros(),
        });
        Self::signal(pid, "KILL")?;
        let mut proc = self.procs.remove(i);
        let status = proc.child.wait().await?;
        use std::os::unix::process::ExitStatusExt;
        self.exits.push(Exit {
            pid,
            code: status.code(),
            signal: status.signal(),
            after_term: None,
            expected: true,
            final_stop: false,
        });
        if self.respawn && !self.closing {
            self.spawn()?;
        }
        Ok(())
    }

    /// SIGTERMs a worker (recorded as a fault); `supervise` sees it exit.
    pub(crate) fn term(&mut self, pid: u32, faults: &mut Vec<Fault>) -> anyhow::Result<()> {
        let Some(proc) = self.procs.iter_mut().find(|p| p.pid == pid) else {
            bail!("no worker {pid}");
        };
        let at = unix_micros();
        proc.termed = Some(at);
        faults.push(Fault::Term { pid, at });
        Self::signal(pid, "TERM")
    }

    /// Stops every worker: SIGTERM, then SIGKILL for any still alive after `patience`.
    /// Returns the pids that had to be killed.
    pub(crate) async fn shutdown(&mut self, patience: Duration) -> anyhow::Result<Vec<u32>> {
        self.closing = true;
        let at = unix_micros();
        for proc in &mut self.procs {
            if proc.termed.is_none() {
                proc.final_stop = true;
                proc.termed = Some(at);
                // A worker that exited meanwhile is reaped below.
                let _ = Self::signal(proc.pid, "TERM");
            }
        }
        let deadline = Instant::now() + patience;
        let mut killed = Vec::new();
        while let Some(mut proc) = self.procs.pop() {
            let left = deadline.saturating_duration_since(Instant::now());
            let status = match tokio::time::timeout(left, proc.child.wait()).await {
                Ok(status) => status?,
                Err(_) => {
                    killed.push(proc.pid);
                    let _ = Self::signal(proc.pid, "KILL");
                    proc.child.wait().await?
                }
            };
            let mut ignored = Vec::new();
            self.record_exit(&proc, status, &mut ignored);
        }
        Ok(killed)
    }

    /// Runs one more worker until the queue is empty (or `limit`), to take the reservations
    /// left by dead workers once their leases ran out. Returns its pid.
    pub(crate) async fn drain(&mut self, limit: Duration) -> anyhow::Result<Option<u32>> {
        let max_time = millis(limit);
        let (mut cmd, log) = self.command(&["--stop-when-empty", "--max-time", &max_time])?;
        let mut child = cmd.spawn().context("cannot start the drain worker")?;
        let pid = child.id();
        if let Some(pid) = pid {
            self.logs.push((pid, log));
            self.started += 1;
        }
        match tokio::time::timeout(limit + Duration::from_secs(30), child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                child.kill().await?;
            }
        }
        Ok(pid)
    }
}
