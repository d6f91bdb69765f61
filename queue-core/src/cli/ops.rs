//! The operator commands: health, stats, restart, dispatch, clear.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::{Config, HealthThresholds};
use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::storage::{PageRequest, Storage, StorageExt};

/// OK, WARNING or CRITICAL, with the exit codes monitoring tools expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Status {
    Ok,
    Warning,
    Critical,
}

impl Status {
    fn of(value: u64, (warning, critical): (u64, u64)) -> Status {
        if value > critical {
            Status::Critical
        } else if value > warning {
            Status::Warning
        } else {
            Status::Ok
        }
    }

    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
        }
    }
}

#[derive(Debug, Serialize)]
struct QueueHealth {
    queue: String,
    waiting: u64,
    delayed: u64,
    reserved: u64,
    oldest_waiting_seconds: Option<u64>,
    status: Status,
}

#[derive(Debug, Serialize)]
struct Health {
    status: Status,
    queues: Vec<QueueHealth>,
    failed: u64,
    failed_status: Status,
    problems: Vec<String>,
    thresholds: ThresholdsJson,
}

#[derive(Debug, Serialize)]
struct ThresholdsJson {
    queue_size: (u64, u64),
    oldest_age_seconds: (u64, u64),
    failed: (u64, u64),
}

/// `runall health`: prints the report and returns its status.
pub(crate) async fn health(
    storage: &dyn Storage,
    config: &Config,
    queues: &[String],
    json: bool,
    out: &mut impl Write,
) -> Result<Status> {
    let t: HealthThresholds = config.health_thresholds();
    let inspect = storage.inspect()?;
    let mut names: BTreeSet<String> = queues.iter().cloned().collect();
    if names.is_empty() {
        names.extend(inspect.queues().await?);
        names.extend(config.queues.clone().unwrap_or_default());
    }
    let mut problems = Vec::new();
    let mut report = Vec::new();
    let now = SystemTime::now();
    for queue in names {
        let size = inspect.size(&queue).await?;
        let oldest = match inspect.oldest_available(&queue).await {
            Ok(t) => t.map(|t| now.duration_since(t).unwrap_or_default().as_secs()),
            Err(Error::NotSupported { .. }) => None,
            Err(e) => return Err(e),
        };
        let backlog = size.waiting + size.delayed;
        let size_status = Status::of(backlog, t.queue_size);
        if size_status > Status::Ok {
            problems.push(format!(
                "{queue}: {backlog} jobs waiting or delayed (warning above {}, critical above {})",
                t.queue_size.0, t.queue_size.1
            ));
        }
        let age_status = oldest.map_or(Status::Ok, |age| {
            Status::of(age, (t.oldest_age.0.as_secs(), t.oldest_age.1.as_secs()))
        });
        if age_status > Status::Ok {
            problems.push(format!(
                "{queue}: the oldest available job has waited {} (warning above {}, critical above {})",
                humantime::format_duration(Duration::from_secs(oldest.unwrap_or(0))),
                humantime::format_duration(t.oldest_age.0),
                humantime::format_duration(t.oldest_age.1)
            ));
        }
        report.push(QueueHealth {
            queue,
            waiting: size.waiting,
            delayed: size.delayed,
            reserved: size.reserved,
            oldest_waiting_seconds: oldest,
            status: size_status.max(age_status),
        });
    }
    let failed = storage.failed_store()?.count().await?;
    let failed_status = Status::of(failed, t.failed);
    if failed_status > Status::Ok {
        problems.push(format!(
            "{failed} jobs in the failed store (warning above {}, critical above {})",
            t.failed.0, t.failed.1
        ));
    }
    let status = report
        .iter()
        .map(|q| q.status)
        .chain([failed_status])
        .max()
        .unwrap_or(Status::Ok);
    let health = Health {
        status,
        queues: report,
        failed,
        failed_status,
        problems,
        thresholds: ThresholdsJson {
            queue_size: t.queue_size,
            oldest_age_seconds: (t.oldest_age.0.as_secs(), t.oldest_age.1.as_secs()),
            failed: t.failed,
        },
    };
    if json {
        let text =
            serde_json::to_string_pretty(&health).map_err(|e| Error::Payload(e.to_string()))?;
        let _ = writeln!(out, "{text}");
    } else {
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>8} {:>8} {:>10}  status",
            "queue", "waiting", "delayed", "reserved", "oldest"
        );
        for q in &health.queues {
            let oldest = q.oldest_waiting_seconds.map_or("-".into(), |s| {
                humantime::format_duration(Duration::from_secs(s)).to_string()
            });
            let _ = writeln!(
                out,
                "{:<16} {:>8} {:>8} {:>8} {:>10}  {}",
                q.queue,
                q.waiting,
                q.delayed,
                q.reserved,
                oldest,
                q.status.label()
            );
        }
        let _ = writeln!(
            out,
            "failed jobs: {} ({})",
            health.failed,
            health.failed_status.label()
        );
        for p in &health.problems {
            let _ = writeln!(out, "- {p}");
        }
        let _ = writeln!(out, "{}", health.status.label());
    }
    Ok(status)
}

/// How many failed jobs `runall stats` reads to count them by job name and queue.
const STATS_FAILED_SCAN: usize = 10_000;

/// `runall stats`: what the store holds, per queue and state, and the failed store by job
/// name and queue. Throughput is not kept in the store: workers record it through the
/// `metrics` facade.
pub(crate) async fn stats(storage: &dyn Storage, out: &mut impl Write) -> Result<()> {
    let inspect = storage.inspect()?;
    let _ = writeln!(
        out,
        "{:<28} {:>10} {:>10} {:>10}",
        "queue", "waiting", "delayed", "reserved"
    );
    for queue in inspect.queues().await? {
        let s = inspect.size(&queue).await?;
        let _ = writeln!(
            out,
            "{queue:<28} {:>10} {:>10} {:>10}",
            s.waiting, s.delayed, s.reserved
        );
    }
    let failed = storage.failed_store()?;
    let total = failed.count().await?;
    let mut by_job: std::collections::BTreeMap<String, u64> = Default::default();
    let mut by_queue: std::collections::BTreeMap<String, u64> = Default::default();
    let mut page = PageRequest::first(500);
    let mut read = 0;
    while read < STATS_FAILED_SCAN {
        let got = failed.list(page.clone()).await?;
        for job in &got.items {
            *by_job.entry(job.name.clone()).or_default() += 1;
            *by_queue.entry(job.queue.clone()).or_default() += 1;
        }
        read += got.items.len();
        match got.next {
            Some(next) => page = PageRequest::after(next, 500),
            None => break,
        }
    }
    let _ = writeln!(out);
    let scope = if (read as u64) < total {
        format!(" (the newest {read} of {total})")
    } else {
        String::new()
    };
    let _ = writeln!(out, "failed jobs{scope}:");
    let _ = writeln!(out, "{:<28} {:>10}", "job", "failed");
    for (name, n) in &by_job {
        let _ = writeln!(out, "{name:<28} {n:>10}");
    }
    let _ = writeln!(out, "{:<28} {:>10}", "queue", "failed");
    for (name, n) in &by_queue {
        let _ = writeln!(out, "{name:<28} {n:>10}");
    }
    Ok(())
}

/// `runall stats --watch`: refreshes in place on a terminal, every `every`, `rounds` times
/// (or until interrupted).
pub(crate) async fn watch_stats(
    storage: &dyn Storage,
    every: Duration,
    rounds: Option<u64>,
) -> Result<()> {
    let terminal = std::io::stdout().is_terminal();
    let mut round = 0;
    loop {
        let mut buffer = Vec::new();
        stats(storage, &mut buffer).await?;
        let mut out = std::io::stdout().lock();
        if terminal {
            let _ = write!(out, "\x1b[2J\x1b[H");
        }
        let _ = writeln!(
            out,
            "{}  (every {})",
            humantime::format_rfc3339_seconds(SystemTime::now()),
            humantime::format_duration(every)
        );
        let _ = out.write_all(&buffer);
        let _ = out.flush();
        drop(out);
        round += 1;
        if rounds.is_some_and(|r| round >= r) {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// What `runall dispatch` was given.
#[derive(Debug)]
pub(crate) struct DispatchArgs {
    pub(crate) name: String,
    pub(crate) json: String,
    pub(crate) queue: Option<String>,
    pub(crate) delay: Option<Duration>,
    pub(crate) at: Option<SystemTime>,
}

/// `runall dispatch NAME JSON`: checks the payload against the job type, then dispatches.
pub(crate) async fn dispatch(
    queue: &Queue,
    args: DispatchArgs,
    out: &mut impl Write,
) -> Result<()> {
    let value: serde_json::Value = serde_json::from_str(&args.json)
        .map_err(|e| Error::Payload(format!("the payload is not valid JSON: {e}")))?;
    let default_queue = match crate::registry::find(&args.name) {
        Some(registration) => {
            let raw = RawValue::from_string(value.to_string())
                .map_err(|e| Error::Payload(e.to_string()))?;
            registration.check(&raw).map_err(|e| {
                Error::Payload(format!("the payload does not fit job `{}`: {e}", args.name))
            })?;
            registration.queue.to_owned()
        }
        None if queue.listener_names().contains(&args.name) => "default".to_owned(),
        None => return Err(Error::UnknownJob { name: args.name }),
    };
    let mut pending = queue
        .dispatch_named(&args.name, value)
        .on_queue(args.queue.unwrap_or(default_queue));
    if let Some(delay) = args.delay {
        pending = pending.delay(delay);
    }
    if let Some(at) = args.at {
        pending = pending.at(at);
    }
    let id = pending.await?;
    let _ = writeln!(out, "dispatched {} as job {id}", args.name);
    Ok(())
}

/// `runall clear QUEUE`: asks first unless `force`.
pub(crate) async fn clear(
    storage: &dyn Storage,
    queue: &str,
    force: bool,
    out: &mut impl Write,
) -> Result<()> {
    let size = storage.inspect()?.size(queue).await?;
    if !force {
        if !std::io::stdin().is_terminal() {
            return Err(Error::Config(format!(
                "refusing to delete {} jobs from `{queue}` without confirmation: pass --force",
                size.waiting + size.delayed
            )));
        }
        let _ = write!(
            out,
            "Delete {} waiting and {} delayed jobs from `{queue}`? Type the queue name to confirm: ",
            size.waiting, size.delayed
        );
        let _ = out.flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if answer.trim() != queue {
            let _ = writeln!(out, "not confirmed; nothing deleted");
            return Ok(());
        }
    }
    let n = storage.inspect()?.clear(queue).await?;
    let _ = writeln!(
        out,
        "{n} jobs deleted from `{queue}` (reserved jobs are left to their workers)"
    );
    Ok(())
}
