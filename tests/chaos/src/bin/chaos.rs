//! `chaos`: runs the fault-injection scenarios against one or more stores and prints what
//! it found, as a table and as JSON.
//!
//! ```text
//! chaos --url sqlite:///tmp/chaos.db --scenario all --json chaos.json
//! chaos --url redis://127.0.0.1:6379 --scenario kill-storm --short
//! ```
//!
//! Exit status: 0 when every scenario passed (or was skipped with a reason), 1 when one
//! failed, 2 on bad arguments.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use queue_chaos::report::{table, Summary, Verdict};
use queue_chaos::{run_scenario, Options, Scenario};

// The drivers, so that the harness's own connection (dispatch, inspection) takes any URL.
use queue_database as _;
use queue_file as _;
use queue_memcached as _;
use queue_redis as _;

#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    about = "Fault injection against real workers: lost, duplicated, stuck jobs, counted"
)]
struct Args {
    /// Store URL; repeat for several drivers (each runs every chosen scenario in turn).
    #[arg(long, required = true)]
    url: Vec<String>,
    /// Scenario names or numbers (1-12), comma-separated, or `all`; they run against every
    /// URL.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    scenario: Vec<String>,
    /// Jobs of the large scenarios (default 10,000; 2,000 with --short).
    #[arg(long)]
    jobs: Option<u64>,
    /// Worker processes (default: each scenario's own, 4 for most).
    #[arg(long)]
    workers: Option<usize>,
    /// Jobs at once per worker (default: each scenario's own).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Lease of reservations, as `5s` (default: each scenario's own).
    #[arg(long, value_parser = queue_core::parse_duration)]
    lease: Option<Duration>,
    /// The short form, for CI: fewer jobs and faults, shorter leases.
    #[arg(long)]
    short: bool,
    /// Write the results as JSON to this file (`-` for standard output).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where to keep each scenario's ledger and worker logs.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the ledger and logs of passing scenarios too (failing ones are always kept).
    #[arg(long)]
    keep: bool,
    /// Let scenario 6 restart the backend (a shared server goes down for a few seconds).
    #[arg(long)]
    restart_backend: bool,
    /// How long scenario 6 keeps the backend down, as `2s` (the default).
    #[arg(long, value_parser = queue_core::parse_duration)]
    outage: Option<Duration>,
    /// The worker binary (default: `chaos-worker` beside this one).
    #[arg(long)]
    worker: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let scenarios = parse_scenarios(&args.scenario)?;
    let worker_exe = match &args.worker {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("cannot find this binary's path")?
            .with_file_name("chaos-worker"),
    };
    anyhow::ensure!(
        worker_exe.exists(),
        "no worker binary at {} (build it with `cargo build -p queue-chaos`, or pass --worker)",
        worker_exe.display()
    );
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("queue-chaos"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut summary = Summary {
        command: std::env::args()
            .map(|a| queue_core::redact_url(&a))
            .collect::<Vec<_>>()
            .join(" "),
        started: humantime_now(),
        form: if args.short { "short" } else { "full" }.to_owned(),
        reports: Vec::new(),
    };
    let work = async {
        for url in &args.url {
            let options = Options {
                url: url.clone(),
                short: args.short,
                jobs: args.jobs,
                workers: args.workers,
                concurrency: args.concurrency,
                lease: args.lease,
                worker_exe: worker_exe.clone(),
                dir: dir.clone(),
                keep: args.keep,
                restart_backend: args.restart_backend,
                outage: args.outage,
            };
            for scenario in &scenarios {
                eprintln!(
                    "chaos: {} on {} ...",
                    scenario.name(),
                    queue_core::redact_url(url)
                );
                let mut report = run_scenario(&options, *scenario).await;
                if report.verdict == Verdict::Fail && report.clock_jump > 1.0 {
                    // A paused machine (a VM) makes every timing of that run wrong; the run
                    // is repeated once, and the report says so.
                    eprintln!(
                        "chaos: {} on {}: the machine was paused for {:.1} s; running it again",
                        scenario.name(),
                        queue_core::redact_url(url),
                        report.clock_jump
                    );
                    let jump = report.clock_jump;
                    report = run_scenario(&options, *scenario).await;
                    report.details.push(format!(
                        "run again: the first run failed while the machine was paused for {jump:.1} s"
                    ));
                }
                eprintln!(
                    "chaos: {} on {}: {:?} in {:.1} s",
                    report.scenario, report.driver, report.verdict, report.seconds
                );
                summary.reports.push(report);
            }
        }
    };
    tokio::select! {
        () = work => {}
        _ = tokio::signal::ctrl_c() => {
            // Dropping the scenario stops its workers and brings a stopped backend back.
            eprintln!("chaos: interrupted");
        }
    }
    print!("{}", table(&summary.reports));
    let _ = std::io::stdout().flush();
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary)?;
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(summary.passed())
}

fn parse_scenarios(names: &[String]) -> anyhow::Result<Vec<Scenario>> {
    let mut out = Vec::new();
    for name in names {
        let name = name.trim();
        if name == "all" {
            out.extend(Scenario::ALL);
            continue;
        }
        match Scenario::parse(name) {
            Some(s) => out.push(s),
            None => anyhow::bail!(
                "unknown scenario `{name}` (use 1-12, all, or one of: {})",
                Scenario::ALL.map(Scenario::name).join(", ")
            ),
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(*s));
    Ok(out)
}

fn humantime_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
