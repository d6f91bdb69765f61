//! Schedules under SIGKILL: four `runall work` processes run an `every 1s` schedule while one
//! of them is killed (`kill -9`) and restarted every 1.5 s. Every tick from the first to the
//! last is claimed exactly once and its job pushed once (one job id per tick); every tick's
//! job runs (a job running in a killed worker runs again: allowed, counted); none is missed.
//!
//! The long form the issue asks for (8 processes for 2 minutes, or 10 minutes) is the same
//! test with `SCHEDULE_STORM_WORKERS=8 SCHEDULE_STORM_SECS=120` (RELIABILITY.md has its
//! figures); CI runs the short form (4 processes, 12 s).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use queue_database as _;

/// How many worker processes (`SCHEDULE_STORM_WORKERS`, 4 by default).
fn workers() -> usize {
    std::env::var("SCHEDULE_STORM_WORKERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(4)
}

/// How long they run (`SCHEDULE_STORM_SECS`, 12 s by default).
fn run_for() -> Duration {
    Duration::from_secs(
        std::env::var("SCHEDULE_STORM_SECS")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n >= 4)
            .unwrap_or(12),
    )
}

const KILL_EVERY: Duration = Duration::from_millis(1500);

const CONFIG: &str = r#"
[[schedule]]
id = "heartbeat"
every = "1s"
job = "heartbeat"
overlap = "allow"
"#;

fn config(dir: &Path, url: &str, table: &str) -> PathBuf {
    let path = dir.join("job.toml");
    std::fs::write(
        &path,
        format!(
            "url = \"{url}\"\ntable = \"{table}\"\nfailed_table = \"{table}_failed\"\n{CONFIG}"
        ),
    )
    .unwrap();
    path
}

fn runall(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runall"));
    cmd.arg("--config").arg(config);
    cmd.env_remove("QUEUE_URL").env("QUEUE_LOG", "info");
    cmd
}

/// A worker whose output goes to a log file of its own.
fn start(config: &Path, log: &Path, max_time: Duration) -> Child {
    let file = std::fs::File::create(log).unwrap();
    runall(config)
        .args([
            "work",
            "--queue",
            "heartbeats",
            "--sleep",
            "50",
            "--max-time",
        ])
        .arg(format!("{}ms", max_time.as_millis().max(1)))
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap()
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()
}

/// One case at a time: each runs four workers, and two cases at once on two cores would
/// test the machine's load more than the schedules.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn schedules_survive_sigkill(url: &str, table: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), url, table);
    let (count, run) = (workers(), run_for());
    let started = Instant::now();
    let mut logs = Vec::new();
    let mut workers: Vec<Child> = (0..count)
        .map(|i| {
            let log = dir.path().join(format!("w{i}-0.log"));
            logs.push(log.clone());
            start(&config, &log, run)
        })
        .collect();
    let mut kills = 0;
    let mut victim = 0;
    while started.elapsed() + KILL_EVERY < run {
        std::thread::sleep(KILL_EVERY);
        workers[victim].kill().unwrap(); // SIGKILL
        workers[victim].wait().unwrap();
        kills += 1;
        let log = dir.path().join(format!("w{victim}-{kills}.log"));
        logs.push(log.clone());
        workers[victim] = start(&config, &log, run.saturating_sub(started.elapsed()));
        victim = (victim + 1) % count;
    }
    for worker in &mut workers {
        worker.wait().unwrap();
    }
    // Run what is left, claiming no more ticks.
    let drain = dir.path().join("drain.log");
    let out = output(runall(&config).args([
        "work",
        "--queue",
        "heartbeats",
        "--no-schedule",
        "--stop-when-empty",
    ]));
    std::fs::write(&drain, &out).unwrap();
    logs.push(drain);

    // tick -> job ids that ran it, and how many runs.
    let mut runs: BTreeMap<u64, (BTreeSet<String>, usize)> = BTreeMap::new();
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("heartbeat tick=")) {
            let tick: u64 = field(line, "tick").and_then(|t| t.parse().ok()).unwrap();
            let job = field(line, "job").unwrap_or("?").to_owned();
            let entry = runs.entry(tick).or_default();
            entry.0.insert(job);
            entry.1 += 1;
        }
    }
    let shown = output(runall(&config).args(["schedule", "show", "heartbeat"]));
    println!("{kills} kills; {shown}");
    let number = |name: &str| -> u64 {
        shown
            .split(&format!("{name} "))
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {shown}"))
    };
    let (ticks, missed) = (number("ticks"), number("missed"));
    let first = *runs.keys().next().expect("some ticks ran");
    let last = *runs.keys().last().unwrap();
    let span = (last - first) / 1000 + 1;
    let twice: usize = runs.values().map(|(_, n)| n - 1).sum();
    let pushed_twice: Vec<_> = runs.iter().filter(|(_, (ids, _))| ids.len() > 1).collect();
    println!(
        "{}: {count} workers for {run:?}: {} ticks ran from {first} to {last} ({span} in the span), {twice} runs again after a kill, {kills} kills, {} missed",
        url.split("://").next().unwrap_or(url),
        runs.len(),
        missed
    );
    assert!(
        pushed_twice.is_empty(),
        "ticks pushed twice: {pushed_twice:?}"
    );
    assert_eq!(
        runs.len() as u64,
        span,
        "every tick in the span ran: {runs:?}"
    );
    assert_eq!(ticks, span, "each tick claimed once: {shown}");
    assert_eq!(missed, 0, "{shown}");
    assert!(ticks >= 8, "{shown}");
    assert!(twice <= kills, "{twice} second runs for {kills} kills");
}

#[test]
fn schedules_survive_sigkill_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    schedules_survive_sigkill(&url, "jobs");
}

#[test]
fn schedules_survive_sigkill_on_postgres() {
    let url = std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    if std::net::TcpStream::connect("127.0.0.1:5432").is_err() {
        queue_tests::server_missing::<()>(&url, "connection refused");
        return;
    }
    schedules_survive_sigkill(&url, &queue_tests::unique("sched"));
}

#[test]
fn schedules_survive_sigkill_on_mariadb() {
    let url =
        std::env::var("MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    if std::net::TcpStream::connect("127.0.0.1:3306").is_err() {
        queue_tests::server_missing::<()>(&url, "connection refused");
        return;
    }
    schedules_survive_sigkill(&url, &queue_tests::unique("sched"));
}

#[test]
fn schedules_survive_sigkill_on_redis() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
        queue_tests::server_missing::<()>(&url, "connection refused");
        return;
    }
    schedules_survive_sigkill(&url, &queue_tests::unique("sched"));
}

#[test]
fn schedules_survive_sigkill_on_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("jobs").display());
    schedules_survive_sigkill(&url, "jobs");
}
