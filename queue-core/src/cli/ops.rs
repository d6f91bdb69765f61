//! The operator commands: health, stats, restart, dispatch, clear, workers.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::{Config, HealthThresholds};
use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::storage::{PageRequest, Storage, StorageExt};

use super::words::{count, span};

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
    warnings: &[String],
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
                "{queue}: {} (warning above {}, critical above {})",
                count(backlog, "job waiting or delayed", "jobs waiting or delayed"),
                t.queue_size.0,
                t.queue_size.1
            ));
        }
        let age_status = oldest.map_or(Status::Ok, |age| {
            Status::of(age, (t.oldest_age.0.as_secs(), t.oldest_age.1.as_secs()))
        });
        if age_status > Status::Ok {
            problems.push(format!(
                "{queue}: the oldest available job has waited {} (warning above {}, critical above {})",
                span(Duration::from_secs(oldest.unwrap_or(0))),
                span(t.oldest_age.0),
                span(t.oldest_age.1)
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
            "{} in the failed store (warning above {}, critical above {})",
            count(failed, "job", "jobs"),
            t.failed.0,
            t.failed.1
        ));
    }
    // Late schedules and paused queues.
    let schedules_status = if warnings.is_empty() {
        Status::Ok
    } else {
        Status::Warning
    };
    problems.extend(warnings.iter().cloned());
    let status = report
        .iter()
        .map(|q| q.status)
        .chain([failed_status, schedules_status])
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
    match pending.await? {
        crate::Dispatched::Created(id) => {
            let _ = writeln!(out, "dispatched {} as job {id}", args.name);
        }
        crate::Dispatched::Duplicate(id) => {
            let _ = writeln!(
                out,
                "not dispatched: {} is unique and job {id} holds its key",
                args.name
            );
        }
        crate::Dispatched::Replaced(id) => {
            let _ = writeln!(
                out,
                "dispatched {}: it replaced queued job {id}, which held its key",
                args.name
            );
        }
    }
    Ok(())
}

/// `runall clear QUEUE`: asks first unless `force`.
pub(crate) async fn clear(
    jobs: &Queue,
    queue: &str,
    force: bool,
    out: &mut impl Write,
) -> Result<()> {
    let size = jobs.storage().inspect()?.size(queue).await?;
    if !force {
        if !std::io::stdin().is_terminal() {
            return Err(Error::Config(format!(
                "refusing to delete {} from `{queue}` without confirmation: pass --force",
                count(size.waiting + size.delayed, "job", "jobs")
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
    let n = jobs.clear(queue).await?;
    let _ = writeln!(
        out,
        "{} deleted from `{queue}` (reserved jobs are left to their workers; those of a batch, chain, workflow or schedule were ended as cancelled)",
        count(n, "job", "jobs")
    );
    Ok(())
}

/// One line of a batch's progress: percent, counts, rate and ETA, flags.
pub(crate) fn batch_line(
    id: &crate::BatchId,
    s: &crate::BatchStatus,
    running: Option<u64>,
) -> String {
    use std::fmt::Write as _;
    let now = SystemTime::now();
    let running = running
        .map(|n| format!(", {n} running"))
        .unwrap_or_default();
    let mut line = format!(
        "batch {id}: {:.1} % done, {} of {} pending, {} succeeded, {} failed, {} cancelled{running}",
        s.percent(),
        s.pending,
        s.total,
        s.succeeded,
        s.failed,
        s.cancelled,
    );
    if let Some(rate) = s.rate(now) {
        let _ = write!(line, ", {rate:.1}/s");
    }
    match s.eta(now) {
        Some(eta) if !eta.is_zero() && s.pending > 0 => {
            let eta = Duration::from_secs(eta.as_secs().max(1));
            let _ = write!(line, ", ETA {}", humantime::format_duration(eta));
        }
        _ => {}
    }
    if let Some(at) = s.created_at {
        let _ = write!(line, ", created {}", humantime::format_rfc3339_seconds(at));
    }
    if s.is_cancelled {
        line.push_str(" (cancelled)");
    }
    if !s.is_sealed {
        line.push_str(" (open: not sealed)");
    } else if s.is_finished() {
        line.push_str(" (finished)");
    }
    line
}

/// `runall batch list`: the first `limit` batches by id.
pub(crate) async fn batch_list(queue: &Queue, limit: usize, out: &mut impl Write) -> Result<()> {
    let mut page = PageRequest::first(limit.clamp(1, 500));
    let mut shown = 0;
    loop {
        let got = crate::Batch::list(queue, page).await?;
        for (id, status) in &got.items {
            if shown == limit {
                let _ = writeln!(out, "(more: raise --limit)");
                return Ok(());
            }
            let _ = writeln!(out, "{}", batch_line(id, status, None));
            shown += 1;
        }
        match got.next {
            Some(next) => page = PageRequest::after(next, 500),
            None => break,
        }
    }
    if shown == 0 {
        let _ = writeln!(out, "no batches");
    }
    Ok(())
}

/// `runall batch show ID --watch`: on a terminal a bar redrawn in place, else a line per
/// refresh, until the batch finishes or Ctrl-C.
/// How many of the batch's members run now, for `runall batch show`; `None` on a store
/// that cannot list its jobs (memcached), or when the listing fails (the counts are shown
/// anyway).
pub(crate) async fn running(queue: &Queue, id: &crate::BatchId) -> Option<u64> {
    match crate::Batch::running(queue, id).await {
        Ok(n) => Some(n),
        Err(Error::NotSupported { .. }) => None,
        Err(e) => {
            tracing::warn!(error = %e, batch = %id, "could not count the batch's running members");
            None
        }
    }
}

pub(crate) async fn batch_watch(queue: &Queue, id: &crate::BatchId, every: Duration) -> Result<()> {
    let terminal = std::io::stdout().is_terminal();
    loop {
        let status = crate::Batch::status(queue, id).await?;
        let line = batch_line(id, &status, running(queue, id).await);
        let mut out = std::io::stdout().lock();
        if terminal {
            let width = 30usize;
            let filled = (status.percent() / 100.0 * width as f64).round() as usize;
            let filled = filled.min(width);
            let _ = write!(
                out,
                "\r\x1b[2K[{}{}] {line}",
                "#".repeat(filled),
                ".".repeat(width - filled)
            );
        } else {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        drop(out);
        if status.is_finished() {
            if terminal {
                println!();
            }
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => {
                if terminal {
                    println!();
                }
                return Ok(());
            }
        }
    }
}

/// `runall schedule list | show | pause | resume | run-now | remove`.
pub(crate) async fn schedule(
    queue: &Queue,
    command: super::ScheduleCommand,
    out: &mut impl Write,
) -> Result<()> {
    use super::ScheduleCommand as C;
    let line = |s: &crate::ScheduleState| {
        let at = |t: Option<SystemTime>| match t {
            Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
            None => "-".to_owned(),
        };
        format!(
            "{}  {}  next {}  last {}  ticks {}  missed {}{}{}{}",
            s.id,
            s.when,
            at(s.next),
            at(s.last),
            s.ticks,
            s.missed,
            if s.full > 0 {
                format!(" ({} for a full queue)", s.full)
            } else {
                String::new()
            },
            if s.runs > 1 {
                "  (one run buffered)"
            } else {
                ""
            },
            if s.paused { "  PAUSED" } else { "" }
        )
    };
    match command {
        C::List => {
            let schedules = queue.schedules();
            let mut shown = 0;
            for schedule in &schedules {
                let state = queue.schedule_state(schedule.id_str()).await?;
                let _ = writeln!(out, "{}", line(&state));
                shown += 1;
            }
            // Stored schedules, where the store keeps group counters.
            let mut page = PageRequest::first(500);
            while queue.storage().capabilities().groups.is_some() {
                let ids = queue.stored_schedules(page).await?;
                for id in ids.items {
                    if schedules.iter().all(|s| s.id_str() != id) {
                        let state = queue.schedule_state(&id).await?;
                        let _ = writeln!(out, "{}", line(&state));
                        shown += 1;
                    }
                }
                match ids.next {
                    Some(next) => page = PageRequest::after(next, 500),
                    None => break,
                }
            }
            if shown == 0 {
                let _ = writeln!(
                    out,
                    "no schedules ([[schedule]] in job.toml, Queue::schedule or Schedules::upsert in code)"
                );
            }
        }
        C::Show { id } => {
            let state = queue.schedule_state(&id).await?;
            let _ = writeln!(out, "{}", line(&state));
        }
        C::Pause { id } => {
            queue.pause_schedule(&id).await?;
            let _ = writeln!(out, "schedule {id} paused");
        }
        C::Resume { id } => {
            queue.resume_schedule(&id).await?;
            let _ = writeln!(out, "schedule {id} resumed");
        }
        C::Remove { id } => {
            if queue.schedules().iter().any(|s| s.id_str() == id) {
                return Err(Error::Config(format!(
                    "schedule {id} is defined in code or in job.toml: remove it there (every \
                     worker that defines it runs it)"
                )));
            }
            if crate::Schedules::remove_via(queue, &id).await? {
                let _ = writeln!(out, "schedule {id} removed");
            } else {
                return Err(Error::NotFound {
                    what: "stored schedule",
                    id,
                });
            }
        }
        C::RunNow { id } => {
            let pushed = queue.run_schedule_now(&id).await?;
            // `runs` counts only with overlap = buffer_one.
            let runs = queue.schedule_state(&id).await.map_or(0, |s| s.runs);
            let _ = match (pushed, runs) {
                (true, 2..) => writeln!(
                    out,
                    "schedule {id}: one run buffered, it starts when the running one ends \
                     (overlap = buffer_one)"
                ),
                (true, _) => writeln!(out, "schedule {id}: one run pushed"),
                (false, 2..) => writeln!(
                    out,
                    "schedule {id}: not pushed, a run is running and another is buffered \
                     (overlap = buffer_one)"
                ),
                (false, _) => writeln!(
                    out,
                    "schedule {id}: not pushed, a run is queued or running (overlap = skip)"
                ),
            };
        }
    }
    Ok(())
}

/// The schedules whose next tick is more than two periods late (no worker runs schedules),
/// each as a line for `runall health`. Stores without groups have none to read.
pub(crate) async fn late_schedules(queue: &Queue) -> Result<Vec<String>> {
    let now = SystemTime::now();
    let mut late = Vec::new();
    for schedule in queue.schedules() {
        let state = match queue.schedule_state(schedule.id_str()).await {
            Ok(state) => state,
            Err(Error::NotSupported { .. }) => return Ok(late),
            Err(e) => return Err(e),
        };
        let (Some(next), Some(period)) = (
            state.next,
            state.next.and_then(|n| schedule.period_after(n)),
        ) else {
            continue;
        };
        if state.is_late(now, period) {
            late.push(format!(
                "schedule {}: its tick at {} is {} late, more than two periods ({}): is any worker running schedules?",
                state.id,
                humantime::format_rfc3339_seconds(next),
                span(Duration::from_secs(
                    now.duration_since(next).unwrap_or_default().as_secs()
                )),
                span(period)
            ));
        }
    }
    Ok(late)
}

/// `runall job ID`: one job's status.
pub(crate) async fn show_job(
    queue: &Queue,
    id: &crate::JobId,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let Some(status) = queue.job(id).await? else {
        return Err(Error::NotFound {
            what:
                "job (it never existed, or it ended and its status was not kept: see keep_finished)",
            id: id.0.clone(),
        });
    };
    if json {
        let _ = writeln!(out, "{}", status.to_json());
        return Ok(());
    }
    let when = |t: Option<SystemTime>| t.map(|t| humantime::format_rfc3339_seconds(t).to_string());
    let mut lines = vec![
        ("id", status.id.0.clone()),
        ("state", status.state.to_string()),
        ("queue", status.queue.clone()),
        ("name", status.name.clone()),
        ("attempts", status.attempts.to_string()),
    ];
    if let Some(p) = &status.progress {
        let percent = p
            .percent()
            .map(|pc| format!(" ({pc:.0}%)"))
            .unwrap_or_default();
        lines.push(("progress", format!("{} of {}{percent}", p.done, p.of)));
    }
    let times = [
        ("due", status.due_at),
        ("dispatched", status.dispatched_at),
        ("started", status.started_at),
        ("finished", status.finished_at),
    ];
    for (label, time) in times {
        if let Some(t) = when(time) {
            lines.push((label, t));
        }
    }
    if let Some(key) = &status.unique_key {
        lines.push(("unique key", key.clone()));
    }
    if let Some(group) = &status.group {
        let show = match group.kind {
            crate::GroupKind::Batch => format!("runall batch show {}", group.id),
            _ => format!("runall {} {}", group.kind.as_str(), group.id),
        };
        lines.push(("part of", format!("{group} (`{show}`)")));
    }
    if status.cancel_requested {
        let note = match status.state {
            crate::JobState::Succeeded => "yes, too late: it succeeded first",
            crate::JobState::Running => "yes: its worker stops it on its next heartbeat",
            _ => "yes",
        };
        lines.push(("cancel asked", note.to_owned()));
    }
    if let Some(error) = &status.error {
        lines.push(("error", error.clone()));
    }
    if let Some(output) = &status.output {
        lines.push(("output", output.to_string()));
    }
    for (label, value) in lines {
        let _ = writeln!(out, "{label:<12} {value}");
    }
    Ok(())
}

/// `runall cancel ID`.
pub(crate) async fn cancel_job(
    queue: &Queue,
    id: &crate::JobId,
    out: &mut impl Write,
) -> Result<()> {
    use crate::CancelOutcome as C;
    match queue.cancel(id).await? {
        C::Cancelled(status) => {
            let _ = writeln!(
                out,
                "job {id} ({}) cancelled: it will never run",
                status.name
            );
        }
        C::Requested(status) => {
            let _ = writeln!(out, "job {id} ({}) is running: its worker stops it on its next heartbeat (`runall job {id}` shows how it ended)", status.name);
        }
        C::Finished(status) => {
            let _ = writeln!(
                out,
                "job {id} ({}) had ended already ({}): nothing to cancel",
                status.name, status.state
            );
        }
        C::NotFound => {
            return Err(Error::NotFound {
                what: "job",
                id: id.0.clone(),
            })
        }
    }
    Ok(())
}

/// What `runall keys status` counts for one key id.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sealed {
    queued: u64,
    failed: u64,
}

/// How many stored jobs each key sealed: queued (waiting, delayed, running) and in the
/// failed store. `None` counts jobs with nothing sealed; `unreadable`, payloads that are
/// not envelopes.
#[derive(Debug, Default)]
struct KeyCounts {
    by_key: std::collections::BTreeMap<Option<String>, Sealed>,
    unreadable: u64,
}

impl KeyCounts {
    fn tally(&mut self, payload: &[u8], failed: bool) {
        let Some(ids) = crate::KeyRing::sealed_by(payload) else {
            self.unreadable += 1;
            return;
        };
        let ids = if ids.is_empty() {
            vec![None]
        } else {
            ids.into_iter().map(Some).collect()
        };
        for id in ids {
            let entry = self.by_key.entry(id).or_default();
            if failed {
                entry.failed += 1;
            } else {
                entry.queued += 1;
            }
        }
    }
}

/// The jobs of a listing at a time `keys status` reads.
const KEYS_PAGE: usize = 500;

/// `runall keys status`: how many stored jobs each key id sealed, so an operator knows when
/// an old key can leave `RUNALL_KEYS` (when it seals none).
pub(crate) async fn keys_status(storage: &dyn Storage, out: &mut impl Write) -> Result<()> {
    use crate::storage::JobState;
    let refuse = |driver: &'static str| Error::NotSupported {
        driver,
        operation:
            "runall keys status (it reads every stored job, and this store cannot list them)",
    };
    let inspect = storage.inspect().map_err(|_| refuse(storage.driver()))?;
    let mut counts = KeyCounts::default();
    for queue in inspect.queues().await? {
        for state in [JobState::Waiting, JobState::Delayed, JobState::Reserved] {
            let mut page = PageRequest::first(KEYS_PAGE);
            loop {
                let got = match inspect.jobs(&queue, state, page).await {
                    Err(Error::NotSupported { driver, .. }) => return Err(refuse(driver)),
                    other => other?,
                };
                for job in &got.items {
                    counts.tally(&job.payload, false);
                }
                match got.next {
                    Some(next) => page = PageRequest::after(next, KEYS_PAGE),
                    None => break,
                }
            }
        }
    }
    if let Ok(failed) = storage.failed_store() {
        let mut page = PageRequest::first(KEYS_PAGE);
        loop {
            let got = failed.list(page).await?;
            for job in &got.items {
                counts.tally(&job.payload, true);
            }
            match got.next {
                Some(next) => page = PageRequest::after(next, KEYS_PAGE),
                None => break,
            }
        }
    }
    let ring = crate::KeyRing::from_env().ok().flatten();
    let _ = writeln!(out, "{:<16} {:>10} {:>10}", "key", "queued", "failed");
    for (id, sealed) in &counts.by_key {
        let (label, note) = match (id, &ring) {
            (None, _) => ("(none)".to_owned(), "nothing sealed".to_owned()),
            (Some(id), Some(ring)) if ring.active() == id => (id.clone(), "active".to_owned()),
            (Some(id), Some(ring)) if ring.ids().contains(&id.as_str()) => {
                (id.clone(), "in RUNALL_KEYS, not active".to_owned())
            }
            (Some(id), Some(_)) => (
                id.clone(),
                "NOT in RUNALL_KEYS: workers with these keys cannot open these jobs".to_owned(),
            ),
            (Some(id), None) => (id.clone(), String::new()),
        };
        let _ = writeln!(
            out,
            "{label:<16} {:>10} {:>10}   {note}",
            sealed.queued, sealed.failed
        );
    }
    if counts.unreadable > 0 {
        let _ = writeln!(
            out,
            "{} not counted: not a job envelope",
            count(counts.unreadable, "job", "jobs")
        );
    }
    if let Some(ring) = &ring {
        for id in ring.ids() {
            let used = counts.by_key.contains_key(&Some(id.to_owned()));
            if !used && id != ring.active() {
                let _ = writeln!(
                    out,
                    "key {id} seals no stored job: it can leave RUNALL_KEYS"
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "(a snapshot: a job that moves while the queues are read may be missed or counted twice; \
         a chain link or workflow node waiting for the jobs before it is counted once they \
         release it)"
    );
    Ok(())
}

/// `runall workers`: the live workers of the store, one line each (or JSON, every field of
/// [`WorkerInfo`](crate::WorkerInfo) with the jobs each runs).
/// `runall locks [--release KEY]`.
pub(crate) async fn locks(
    queue: &Queue,
    release: Option<String>,
    out: &mut impl Write,
) -> Result<()> {
    let locks = queue.storage().locks()?;
    if let Some(key) = release {
        if locks.release(&key).await? {
            let _ = writeln!(
                out,
                "lock {key} released: another job of its key may start now"
            );
        } else {
            let _ = writeln!(out, "no one held lock {key}: nothing was changed");
        }
        return Ok(());
    }
    let mut page = crate::storage::PageRequest::first(500);
    let now = std::time::SystemTime::now();
    let mut any = false;
    loop {
        let held = locks.locks(page).await?;
        for lock in &held.items {
            any = true;
            let left = lock.expires_at.duration_since(now).unwrap_or_default();
            let _ = writeln!(
                out,
                "{}  held by {}  expires in {}s",
                lock.key,
                lock.owner,
                left.as_secs()
            );
        }
        match held.next {
            Some(next) => page = crate::storage::PageRequest::after(next, 500),
            None => break,
        }
    }
    if !any {
        let _ = writeln!(out, "no lock is held");
    }
    Ok(())
}

pub(crate) async fn workers(queue: &Queue, json: bool, out: &mut impl Write) -> Result<()> {
    let workers = queue.workers().await?;
    if json {
        let text =
            serde_json::to_string_pretty(&workers).map_err(|e| Error::Payload(e.to_string()))?;
        let _ = writeln!(out, "{text}");
        return Ok(());
    }
    if workers.is_empty() {
        let _ = writeln!(out, "no worker is running");
        return Ok(());
    }
    let rows: Vec<[String; 7]> = workers
        .iter()
        .map(|w| {
            let queues = match (w.every_queue, w.queues.is_empty()) {
                (true, true) => "*".to_owned(),
                (true, false) => format!("* ({})", w.queues.join(",")),
                (false, _) => w.queues.join(","),
            };
            [
                w.id.clone(),
                w.host.clone(),
                w.pid.to_string(),
                queues,
                format!("{}/{}", w.busy, w.slots),
                humantime::format_rfc3339_seconds(w.started_at).to_string(),
                format!("{}s ago", w.beat_age().as_secs()),
            ]
        })
        .collect();
    let header = [
        "id",
        "host",
        "pid",
        "queues",
        "busy",
        "started",
        "last beat",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    // Numbers right-aligned, text left-aligned; the last column unpadded.
    let line = |cells: [&str; 7]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let cell = match i {
                2 | 4 => format!("{cell:>width$}"),
                6 => cell.to_string(),
                _ => format!("{cell:<width$}"),
            };
            text.push_str(&cell);
            if i < 6 {
                text.push_str("  ");
            }
        }
        text
    };
    let _ = writeln!(out, "{}", line(header));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row.each_ref().map(String::as_str)));
    }
    let (busy, slots) = workers
        .iter()
        .fold((0, 0), |(b, s), w| (b + w.busy, s + w.slots));
    let _ = writeln!(
        out,
        "{}, {busy} of {} busy",
        count(workers.len() as u64, "worker", "workers"),
        count(slots as u64, "slot", "slots")
    );
    Ok(())
}
