//! Benchmarks every driver the same way, through the public API.
//!
//! ```text
//! cargo build --release -p queue-examples
//! target/release/bench --url sqlite://bench.db --url redis://127.0.0.1:6379 --jobs 20000
//! ```
//!
//! For each URL: dispatch one by one (from one task, then from 8 tasks at once), dispatch
//! batched (1,000 per call), end-to-end no-op jobs per second with a worker at concurrency 1
//! and 8 (in-process), dispatch-to-start latency p50/p99 of an idle `runall` worker in
//! another process (so no in-process shortcut wakes it), the peak RSS of a real `runall`
//! worker process draining the jobs, and how long the driver kept a single-threaded tokio
//! runtime from running other tasks (the stall column: a 1 ms ticker on a `current_thread`
//! runtime while a worker at concurrency 8 drains the queue on the same thread; a driver
//! that blocks its thread on I/O shows up there).
//!
//! `--raw` adds each backend's raw ceiling (the simplest loop claiming and deleting waiting
//! jobs 100 at a time with the backend's own client, `raw.rs`) and our e2e c=8 figure as a
//! share of it. `--scale 1,2,4` adds a table of real `runall work` processes draining the
//! same backlog together.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use queue_core::storage::{self, ConnectOptions};
use queue_core::StorageExt as _;
use queue_core::{Job, Queue, WorkerOptions};
use queue_examples::{unix_micros, LatencyProbe, Noop};

use queue_database as _;
use queue_file as _;
use queue_memcached as _;
use queue_redis as _;

mod dashboard;
mod keep;
mod limits;
mod overlap;
mod raw;

const USAGE: &str = "usage: bench [--url URL]... [--jobs N] [--samples N] [--sleep MS] \
                     [--scale 1,2,4] [--raw] [--limits N [--limit-rate R]] [--overlap N] \
                     [--keep-finished ROUNDS] [--dashboard N]";

struct Args {
    urls: Vec<String>,
    jobs: usize,
    samples: usize,
    sleep_ms: u64,
    /// Numbers of `runall work` processes for the scale-out table (none: no table).
    scale: Vec<usize>,
    /// Also measure each backend's raw ceiling (see `raw.rs`).
    raw: bool,
    /// Only the limits tables, with this many jobs through one rate limit (`limits.rs`).
    limits: Option<usize>,
    /// The rate of that limit, per second (default: the jobs over 20 s).
    limit_rate: Option<u32>,
    /// Only the `without_overlapping` tables, with this many jobs on one key (`overlap.rs`).
    overlap: Option<usize>,
    /// Only the `keep_finished` table, with this many alternated rounds (`keep.rs`).
    keep_finished: Option<usize>,
    /// Only the dashboard's page times, on a store of this many jobs (`dashboard.rs`).
    dashboard: Option<usize>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        urls: Vec::new(),
        jobs: 20_000,
        samples: 200,
        sleep_ms: 100,
        scale: Vec::new(),
        raw: false,
        limits: None,
        limit_rate: None,
        overlap: None,
        keep_finished: None,
        dashboard: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--url" => args.urls.push(it.next().context("--url needs a value")?),
            "--jobs" => args.jobs = it.next().context("--jobs needs a value")?.parse()?,
            "--samples" => args.samples = it.next().context("--samples needs a value")?.parse()?,
            "--sleep" => args.sleep_ms = it.next().context("--sleep needs a value")?.parse()?,
            "--scale" => {
                let list = it.next().context("--scale needs a value such as 1,2,4")?;
                args.scale = list
                    .split(',')
                    .map(|k| k.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--scale takes process counts such as 1,2,4")?;
                if args.scale.contains(&0) {
                    bail!("--scale: a process count is at least 1");
                }
            }
            "--raw" => args.raw = true,
            "--limits" => args.limits = Some(it.next().context("--limits needs a value")?.parse()?),
            "--overlap" => {
                args.overlap = Some(it.next().context("--overlap needs a value")?.parse()?)
            }
            "--limit-rate" => {
                args.limit_rate = Some(it.next().context("--limit-rate needs a value")?.parse()?)
            }
            "--keep-finished" => {
                args.keep_finished = Some(
                    it.next()
                        .context("--keep-finished needs a number of rounds")?
                        .parse()?,
                )
            }
            "--dashboard" => {
                args.dashboard = Some(
                    it.next()
                        .context("--dashboard needs a number of jobs")?
                        .parse()?,
                )
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} ({USAGE})"),
        }
    }
    if args.urls.is_empty() {
        let path = std::env::temp_dir().join("runall-bench.db");
        args.urls.push(format!("sqlite://{}", path.display()));
    }
    Ok(args)
}

async fn fresh(url: &str, table: &str) -> anyhow::Result<Queue> {
    // The files go once per process, before its first store: every step has a table of its
    // own, and a store of an earlier step may still be closing its connections (sqlx closes
    // them in the background). A SQLite file removed under an open connection is lost to the
    // others: its last connection to close deletes the `-wal` file by name, the new file's,
    // and a `runall` child then found the table empty ("processed 0 of 20000 jobs").
    static CLEARED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let first = {
        let mut cleared = CLEARED.lock().unwrap_or_else(|p| p.into_inner());
        let first = !cleared.iter().any(|u| u == url);
        if first {
            cleared.push(url.to_owned());
        }
        first
    };
    if first {
        if let Some(path) = url.strip_prefix("sqlite://") {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
        if let Some(path) = url.strip_prefix("file://") {
            let _ = std::fs::remove_dir_all(path);
        }
    }
    let options = ConnectOptions::new()
        .table(table)
        .failed_table(format!("{table}_failed"))
        .migrate(true);
    let storage = storage::connect(url, options).await?;
    Ok(Queue::from_arc(storage))
}

fn rate(n: usize, elapsed: Duration) -> String {
    format!("{:.0}", n as f64 / elapsed.as_secs_f64())
}

async fn drain(queue: &Queue, concurrency: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut options = WorkerOptions::default()
        .queues(["bench"])
        .concurrency(concurrency)
        .sleep(Duration::from_millis(10))
        .stop_when_empty();
    // `BENCH_PREFETCH=N` fixes the worker's prefetch (unset: adaptive, as `runall work`).
    if let Some(n) = std::env::var("BENCH_PREFETCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options = options.prefetch(n);
    }
    let summary = queue.worker(options).run().await?;
    let elapsed = started.elapsed();
    if summary.failed > 0 {
        bail!("{} jobs failed during the benchmark", summary.failed);
    }
    Ok(elapsed)
}

async fn fill(queue: &Queue, n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut left = n;
    while left > 0 {
        let chunk = left.min(1000);
        queue
            .dispatch_many((0..chunk).map(|_| Noop { sent_us: 0 }.dispatch().on_queue("bench")))
            .await?;
        left -= chunk;
    }
    Ok(started.elapsed())
}

/// `n` waiting no-op jobs as the members of one batch (open, added 1,000 at a time, sealed)
/// with a `then` job.
async fn fill_batch(queue: &Queue, n: usize) -> anyhow::Result<()> {
    let mut batch = queue_core::Batch::new()
        .then(Noop { sent_us: 0 }.dispatch().on_queue("bench"))
        .via(queue)
        .open()
        .await?;
    let mut left = n;
    while left > 0 {
        let chunk = left.min(1000);
        batch
            .add_many((0..chunk).map(|_| Noop { sent_us: 0 }.dispatch().on_queue("bench")))
            .await?;
        left -= chunk;
    }
    batch.seal().await?;
    Ok(())
}

async fn bench(url: &str, args: &Args) -> anyhow::Result<Vec<String>> {
    let table = format!("bench_{}", std::process::id());
    let queue = fresh(url, &table).await?;
    let driver = queue.storage().driver();
    let n = args.jobs;

    // Dispatch, one by one.
    let one_by_one = n.min(5_000);
    let started = Instant::now();
    for _ in 0..one_by_one {
        Noop { sent_us: 0 }
            .dispatch()
            .on_queue("bench")
            .via(&queue)
            .await?;
    }
    let single = rate(one_by_one, started.elapsed());
    drain(&queue, 8).await?;

    // Dispatch, one by one from 8 tasks at once (a web server's handlers).
    let per_task = one_by_one / 8;
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    Noop { sent_us: 0 }
                        .dispatch()
                        .on_queue("bench")
                        .via(&queue)
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let eight_tasks = rate(per_task * 8, started.elapsed());
    drain(&queue, 8).await?;

    // Dispatch, batched.
    let batched = rate(n, fill(&queue, n).await?);

    // End to end, concurrency 1 and 8 (the queue already holds n jobs).
    let c1 = rate(n, drain(&queue, 1).await?);
    fill(&queue, n).await?;
    let c8_time = drain(&queue, 8).await?;
    let c8 = rate(n, c8_time);

    // The same, the jobs being the members of one batch with a `then` job: each member's
    // settle also counts it and moves the callback on (and its start reads the batch's
    // cancel flag, from a copy of up to 250 ms). Stores without groups refuse batches.
    let batch_c8 = if queue.storage().capabilities().groups.is_some() {
        fill_batch(&queue, n).await?;
        rate(n + 1, drain(&queue, 8).await?)
    } else {
        "-".to_owned()
    };

    // How late a 1 ms ticker runs while a worker drains n jobs on the same single thread.
    fill(&queue, n).await?;
    let (stall_p99, stall_max) = stall(url, &table).await?;

    // The in-memory store lives in this process: no other process sees its jobs, so it has
    // no cross-process latency or worker RSS.
    let in_process = url.starts_with("memory:");

    // Dispatch-to-start latency of an idle `runall` worker in another process.
    let (p50, p99) = if in_process {
        ("-".into(), "-".into())
    } else {
        latency(&queue, url, &table, args)
            .await
            .unwrap_or_else(|e| (format!("error: {e}"), "-".into()))
    };

    // Peak RSS of a real worker process draining n jobs.
    let rss = if in_process {
        "-".into()
    } else {
        fill(&queue, n).await?;
        worker_rss(url, &table, n).unwrap_or_else(|e| format!("error: {e}"))
    };

    let mut extra = Vec::new();
    if args.raw {
        match raw::ceiling(url, n).await {
            Ok(Some(ceiling)) => {
                let ours = n as f64 / c8_time.as_secs_f64();
                extra.push(format!("{ceiling:.0}"));
                extra.push(format!("{:.2}", ours / ceiling));
            }
            Ok(None) => extra.extend(["-".to_owned(), "-".to_owned()]),
            Err(e) => extra.extend([format!("error: {e:#}"), "-".to_owned()]),
        }
    }

    let mut row = vec![
        driver.to_owned(),
        single,
        eight_tasks,
        batched,
        c1,
        c8,
        batch_c8,
        p50,
        p99,
        rss,
        stall_p99,
        stall_max,
    ];
    row.extend(extra);
    Ok(row)
}

/// Drains the waiting jobs with a worker at concurrency 8 on a new `current_thread` runtime
/// (its own connections), with a task on the same thread that sleeps 1 ms at a time and
/// records how late it wakes. Every task shares the one thread, so a driver call that blocks
/// it (a synchronous socket read, a lock held across I/O) delays the ticker by as long.
/// Returns the p99 and the largest lateness in ms.
async fn stall(url: &str, table: &str) -> anyhow::Result<(String, String)> {
    let (url, table) = (url.to_owned(), table.to_owned());
    let run = move || -> anyhow::Result<Vec<Duration>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let options = ConnectOptions::new()
                .table(&table)
                .failed_table(format!("{table}_failed"));
            let queue = Queue::from_arc(storage::connect(&url, options).await?);
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let ticker = tokio::spawn({
                let done = done.clone();
                async move {
                    let mut late = Vec::new();
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let started = Instant::now();
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        late.push(started.elapsed().saturating_sub(Duration::from_millis(1)));
                    }
                    late
                }
            });
            let drained = drain(&queue, 8).await;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let late = ticker.await?;
            drained?;
            anyhow::Ok(late)
        })
    };
    let mut late = tokio::task::spawn_blocking(run).await??;
    late.sort_unstable();
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    let i = ((late.len() as f64 * 0.99).ceil() as usize).clamp(1, late.len().max(1)) - 1;
    Ok(match (late.get(i), late.last()) {
        (Some(p99), Some(max)) => (ms(*p99), ms(*max)),
        _ => ("-".into(), "-".into()),
    })
}

/// Starts an idle `runall work` child, dispatches probes one at a time with gaps spread over
/// the worker's polling cycle, and reads how long each waited.
async fn latency(
    queue: &Queue,
    url: &str,
    table: &str,
    args: &Args,
) -> anyhow::Result<(String, String)> {
    let runall = runall_path()?;
    let dir = std::env::temp_dir().join(format!("bench-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("latency.log");
    let _ = std::fs::remove_file(&log);
    let config = dir.join("job.toml");
    std::fs::write(&config, format!("url = \"{url}\"\ntable = \"{table}\"\nfailed_table = \"{table}_failed\"\nlogging = false\n"))?;
    let mut child = Command::new(runall)
        .arg("--config")
        .arg(&config)
        .args([
            "work",
            "--queue",
            "latency",
            "--sleep",
            &format!("{}ms", args.sleep_ms),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let result = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..args.samples {
            let probe = LatencyProbe {
                sent_us: unix_micros(),
                log: log.display().to_string(),
            };
            probe.dispatch().on_queue("latency").via(queue).await?;
            let deadline = Instant::now() + Duration::from_millis(args.sleep_ms + 3000);
            loop {
                let done = std::fs::read_to_string(&log)
                    .map(|t| t.lines().count())
                    .unwrap_or(0);
                if done > i {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("probe {i} did not run within {} ms", args.sleep_ms + 3000);
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            // A random gap, so that dispatches land uniformly over the worker's polling cycle.
            let gap = unix_micros() % (args.sleep_ms * 1000 + 20_000);
            tokio::time::sleep(Duration::from_micros(gap)).await;
        }
        let text = std::fs::read_to_string(&log)?;
        anyhow::Ok(
            text.lines()
                .filter_map(|l| l.trim().parse::<u64>().ok())
                .collect::<Vec<u64>>(),
        )
    }
    .await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let mut lat = result?;
    lat.sort_unstable();
    let pct = |p: f64| -> String {
        if lat.is_empty() {
            return "-".into();
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        format!("{:.2}", lat[i] as f64 / 1000.0)
    };
    Ok((pct(0.50), pct(0.99)))
}

fn runall_path() -> anyhow::Result<std::path::PathBuf> {
    let runall = std::env::current_exe()?.with_file_name("runall");
    if !runall.exists() {
        bail!(
            "{} not built (cargo build --release -p queue-examples)",
            runall.display()
        );
    }
    Ok(runall)
}

/// A `runall` configuration file for `url` and `table`, removed when dropped.
struct RunallConfig(std::path::PathBuf);

impl RunallConfig {
    fn new(url: &str, table: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("bench-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            format!("url = \"{url}\"\ntable = \"{table}\"\nfailed_table = \"{table}_failed\"\nlogging = false\n"),
        )?;
        Ok(RunallConfig(path))
    }

    /// `runall work --stop-when-empty --concurrency 8` on the bench queue, not yet started.
    fn worker(&self) -> anyhow::Result<Command> {
        let mut cmd = Command::new(runall_path()?);
        cmd.arg("--config").arg(&self.0).args([
            "work",
            "--queue",
            "bench",
            "--concurrency",
            "8",
            "--sleep",
            "10ms",
            "--stop-when-empty",
        ]);
        Ok(cmd)
    }
}

impl Drop for RunallConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How many jobs a `runall work` process says it processed.
fn processed(stdout: &str) -> Option<usize> {
    let (before, _) = stdout.split_once(" processed")?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Drains `n` waiting jobs with `k` real `runall work --concurrency 8` processes started at
/// once; jobs per second from their start to the last one's exit (start-up included).
fn scale_out(url: &str, table: &str, n: usize, k: usize) -> anyhow::Result<String> {
    let config = RunallConfig::new(url, table)?;
    let started = Instant::now();
    let children = (0..k)
        .map(|_| {
            config
                .worker()?
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .context("starting runall")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut total = 0;
    let mut outputs = String::new();
    for child in children {
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        total += processed(&stdout)
            .with_context(|| format!("runall did not report its jobs: {stdout} {stderr}"))?;
        outputs.push_str(&format!("\n--- stdout:\n{stdout}--- stderr:\n{stderr}"));
    }
    let elapsed = started.elapsed();
    if total != n {
        bail!("{k} runall processes processed {total} of {n} jobs; their output:{outputs}");
    }
    Ok(rate(n, elapsed))
}

/// Runs `runall work --stop-when-empty --concurrency 8` as a child and reads the peak memory
/// it reports.
fn worker_rss(url: &str, table: &str, n: usize) -> anyhow::Result<String> {
    let config = RunallConfig::new(url, table)?;
    let out = config.worker()?.output()?;
    drop(config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.contains(&format!("{n} processed")) {
        bail!(
            "runall did not process {n} jobs: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mb = stdout
        .split("peak memory ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("runall did not report its peak memory")?;
    Ok(mb.to_owned())
}

/// One row of the scale-out table: each process count on a fresh table.
async fn scale_row(url: &str, args: &Args) -> Vec<String> {
    let mut row = Vec::new();
    for &k in &args.scale {
        let table = format!("bench_{}_x{k}", std::process::id());
        let result = async {
            let queue = fresh(url, &table).await?;
            fill(&queue, args.jobs).await?;
            let (url, table, n) = (url.to_owned(), table.clone(), args.jobs);
            tokio::task::spawn_blocking(move || scale_out(&url, &table, n, k)).await?
        }
        .await;
        row.push(result.unwrap_or_else(|e| format!("error: {e:#}")));
    }
    row
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if let Some(n) = args.limits {
        return limit_tables(&args, n).await;
    }
    if let Some(n) = args.overlap {
        return overlap_tables(&args, n.max(1)).await;
    }
    if let Some(rounds) = args.keep_finished {
        return keep_table(&args, rounds.max(1)).await;
    }
    if let Some(n) = args.dashboard {
        return dashboard_table(&args, n.max(1)).await;
    }
    println!(
        "jobs per run: {}; latency samples: {}; idle worker --sleep {} ms",
        args.jobs, args.samples, args.sleep_ms
    );
    let (raw_head, raw_rule) = if args.raw {
        (" raw drain jobs/s | e2e c=8 / raw |", "---|---|")
    } else {
        ("", "")
    };
    println!("| driver | dispatch 1-by-1 jobs/s | dispatch 8 tasks jobs/s | dispatch batched jobs/s | e2e c=1 jobs/s | e2e c=8 jobs/s | e2e c=8 batch jobs/s | latency p50 ms | latency p99 ms | worker peak RSS MB | stall p99 ms | stall max ms |{raw_head}");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|{raw_rule}");
    for url in &args.urls {
        match bench(url, &args).await {
            Ok(row) => println!("| {} |", row.join(" | ")),
            Err(e) => println!("| {} | error: {e:#} |", queue_core::redact_url(url)),
        }
    }
    if !args.scale.is_empty() {
        println!();
        println!(
            "scale-out: {} waiting jobs drained by k `runall work --concurrency 8` processes (jobs/s, start-up included)",
            args.jobs
        );
        let heads: Vec<String> = args.scale.iter().map(|k| format!("k={k}")).collect();
        println!("| driver | {} |", heads.join(" | "));
        println!("|---|{}", "---|".repeat(args.scale.len()));
        for url in args.urls.iter().filter(|u| !u.starts_with("memory:")) {
            let row = scale_row(url, &args).await;
            println!("| {} | {} |", queue_core::redact_url(url), row.join(" | "));
        }
    }
    for url in &args.urls {
        if let Err(e) = drop_tables(url).await {
            eprintln!(
                "bench: could not drop this run's tables on {}: {e:#}",
                queue_core::redact_url(url)
            );
        }
    }
    Ok(())
}

/// `--keep-finished ROUNDS`: the table of `keep.rs`, one row per URL.
async fn keep_table(args: &Args, rounds: usize) -> anyhow::Result<()> {
    println!(
        "keep_finished: {} no-op jobs drained by one in-process worker at concurrency 8, jobs/s, median (range) of {rounds} alternated runs",
        args.jobs
    );
    println!("| driver | not kept | keep_finished | ratio |");
    println!("|---|---|---|---|");
    for url in &args.urls {
        let table = format!("bench_{}_keep", std::process::id());
        let row = async {
            let queue = fresh(url, &table).await?;
            keep::overhead(&queue, args.jobs, rounds).await
        }
        .await;
        match row {
            Ok(row) => println!("| {} |", row.join(" | ")),
            Err(e) => println!("| {} | error: {e:#} |", queue_core::redact_url(url)),
        }
        if let Err(e) = drop_tables(url).await {
            eprintln!("bench: could not drop this run's tables: {e:#}");
        }
    }
    Ok(())
}

/// `--dashboard N`: each page's server time on a store of N jobs (`dashboard.rs`).
async fn dashboard_table(args: &Args, n: usize) -> anyhow::Result<()> {
    println!("dashboard pages on {n} jobs (1/3 delayed) over 3 queues, 1 % failed (at most 10,000) under 20 errors, one batch: server time of each page, ms, median (range) of 7 requests");
    println!("| driver | page | median ms | range ms | body KiB |");
    println!("|---|---|---|---|---|");
    for url in &args.urls {
        let table = format!("bench_{}_dash", std::process::id());
        let rows = async {
            let queue = fresh(url, &table).await?;
            dashboard::pages(&queue, n).await
        }
        .await;
        match rows {
            Ok(rows) => {
                for row in rows {
                    println!("| {} |", row.join(" | "));
                }
            }
            Err(e) => println!("| {} | error: {e:#} |", queue_core::redact_url(url)),
        }
        if let Err(e) = drop_tables(url).await {
            eprintln!("bench: could not drop this run's tables: {e:#}");
        }
    }
    Ok(())
}

/// `--limits N`: the two tables of `limits.rs`, one row per URL.
async fn limit_tables(args: &Args, n: usize) -> anyhow::Result<()> {
    let per_second = args
        .limit_rate
        .unwrap_or_else(|| u32::try_from((n / 20).max(1)).unwrap_or(u32::MAX));
    println!("rate accuracy: {n} jobs of one key through Limit::rate({per_second}), two in-process workers at concurrency 8");
    println!("| driver | jobs | rate | ideal first-to-last start s | measured s | measured / ideal | looks per job | most attempts |");
    println!("|---|---|---|---|---|---|---|---|");
    table_rows(args, "rate", |queue| async move {
        limits::accuracy(&queue, n, per_second).await
    })
    .await;
    println!();
    println!("overhead: 10,000 no-op jobs over 100 keys, one worker at concurrency 8 (jobs/s; limits that never bind)");
    println!(
        "| driver | no limit | rate(1000/s) per key | ratio | concurrent(1000) per key | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    table_rows(args, "limits", |queue| async move {
        limits::overhead(&queue).await
    })
    .await;
    for url in &args.urls {
        if let Err(e) = drop_tables(url).await {
            eprintln!("bench: could not drop this run's tables: {e:#}");
        }
    }
    Ok(())
}

/// `--overlap N`: the two tables of `overlap.rs`, one row per URL.
async fn overlap_tables(args: &Args, n: usize) -> anyhow::Result<()> {
    println!("contention: {n} jobs of 5 ms on one without_overlapping key, two in-process workers at concurrency 4 (lock_retry 50 ms)");
    println!("| driver | parks | jobs | ideal s (one at a time) | measured s | measured / ideal | releases | releases per job |");
    println!("|---|---|---|---|---|---|---|---|");
    table_rows(args, "overlap", |queue| async move {
        overlap::contention(&queue, n).await
    })
    .await;
    println!();
    println!("overhead: 10,000 no-op jobs, one worker at concurrency 8 (jobs/s; each job's own key, never busy)");
    println!("| driver | no lock | without_overlapping | ratio |");
    println!("|---|---|---|---|");
    table_rows(args, "overlap_noop", |queue| async move {
        overlap::overhead(&queue).await
    })
    .await;
    for url in &args.urls {
        if let Err(e) = drop_tables(url).await {
            eprintln!("bench: could not drop this run's tables: {e:#}");
        }
    }
    Ok(())
}

/// Prints one table row per URL, each from `row` on a fresh store of the table
/// `bench_PID_{suffix}` (an error is a row too).
async fn table_rows<F, Fut>(args: &Args, suffix: &str, row: F)
where
    F: Fn(Queue) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<String>>>,
{
    for url in &args.urls {
        let table = format!("bench_{}_{suffix}", std::process::id());
        let cells = match fresh(url, &table).await {
            Ok(queue) => row(queue).await,
            Err(e) => Err(e),
        };
        match cells {
            Ok(cells) => println!("| {} |", cells.join(" | ")),
            Err(e) => println!("| {} | error: {e:#} |", queue_core::redact_url(url)),
        }
    }
}

/// Drops the tables this run made on PostgreSQL and MySQL (all named `bench_PID...`), so
/// repeated runs leave nothing behind. SQLite files and directories are removed by the next
/// run's [`fresh`]; Redis and memcached keep only what the drained queues left.
async fn drop_tables(url: &str) -> anyhow::Result<()> {
    use sqlx::{Connection, Executor};
    let pattern = format!("bench\\_{}%", std::process::id());
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE $1",
        )
        .bind(&pattern)
        .fetch_all(&mut conn)
        .await?;
        for name in names {
            conn.execute(format!("DROP TABLE IF EXISTS \"{name}\" CASCADE").as_str())
                .await?;
        }
    } else if url.starts_with("mysql") {
        let mut conn = sqlx::MySqlConnection::connect(url).await?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name LIKE ?",
        )
        .bind(&pattern)
        .fetch_all(&mut conn)
        .await?;
        for name in names {
            conn.execute(format!("DROP TABLE IF EXISTS `{name}`").as_str())
                .await?;
        }
    }
    Ok(())
}
