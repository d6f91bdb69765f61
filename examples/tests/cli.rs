//! The real `runall` binary against a real SQLite file: commands, exit codes, signals,
//! crashes, and several worker processes on one file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use queue_core::StorageExt as _;
use queue_core::{Job, Queue};
use queue_database as _;
use queue_examples::{AbortWorker, ImportLegacyFile, Noop, SendEmail, Sleep};

struct Store {
    _dir: tempfile::TempDir,
    path: PathBuf,
    url: String,
}

fn store() -> Store {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("jobs.db");
    let url = format!("sqlite://{}", path.display());
    Store {
        _dir: dir,
        path,
        url,
    }
}

fn runall(store: &Store) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runall"));
    cmd.arg("--connection").arg(&store.url);
    // No job.toml from the working directory leaks in.
    cmd.arg("--config").arg(store.path.with_extension("toml"));
    cmd.env_remove("QUEUE_URL").env("QUEUE_LOG", "info");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("runall runs");
    eprintln!(
        "--- {:?}\nstdout:\n{}\nstderr:\n{}",
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn queue(store: &Store) -> Queue {
    Queue::connect(&store.url)
        .await
        .expect("connect to the SQLite file")
}

fn email(to: &str) -> SendEmail {
    SendEmail {
        to: to.into(),
        subject: "hello".into(),
    }
}

fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{sig} worked");
}

async fn wait_until_reserved(queue: &Queue, name: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while queue
        .storage()
        .inspect()
        .unwrap()
        .size(name)
        .await
        .unwrap()
        .reserved
        < n
    {
        assert!(
            Instant::now() < deadline,
            "a worker reserved the job within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn migrate_work_size_and_the_failed_store() {
    let store = store();
    let out = run(runall(&store).arg("migrate"));
    assert!(out.status.success());
    assert!(stdout(&out).contains("migrated sqlite://"));

    let q = queue(&store).await;
    email("a@example.com")
        .dispatch()
        .on_queue("high")
        .via(&q)
        .await
        .unwrap();
    email("b@example.com").dispatch().via(&q).await.unwrap();
    email("not-an-address").dispatch().via(&q).await.unwrap();
    ImportLegacyFile {
        path: "/nonexistent/file.csv".into(),
    }
    .dispatch()
    .via(&q)
    .await
    .unwrap();
    q.dispatch_named("no-such-job", serde_json::json!({}))
        .await
        .unwrap();

    let out = run(runall(&store).args(["size", "default"]));
    assert!(out.status.success());
    assert!(stdout(&out).contains("default"));

    let out = run(runall(&store).args([
        "work",
        "--queue",
        "high,default",
        "--sleep",
        "50",
        "--stop-when-empty",
        "--backoff",
        "fixed:100ms",
        // No rolling deploy here: a job no worker knows fails at once.
        "--unknown-job-window",
        "0s",
    ]));
    assert!(out.status.success(), "the worker exits 0");
    let text = stdout(&out);
    assert!(
        text.contains("worker stopped (queues empty): 2 processed, 1 retried, 3 failed"),
        "{text}"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("job started")
            && log.contains("job done")
            && log.contains("job failed for good"),
        "{log}"
    );
    assert!(log.contains("unknown job name `no-such-job`"), "{log}");

    let out = run(runall(&store).args(["failed", "list"]));
    let text = stdout(&out);
    assert!(
        text.contains("import-legacy-file")
            && text.contains("no-such-job")
            && text.contains("malformed address"),
        "{text}"
    );
    assert!(text.contains("3 of 3 failed jobs"), "{text}");

    let failed = q
        .storage()
        .failed_store()
        .unwrap()
        .list(queue_core::storage::PageRequest::first(10))
        .await
        .unwrap()
        .items;
    let import = failed
        .iter()
        .find(|f| f.name == "import-legacy-file")
        .unwrap();
    let out = run(runall(&store).args(["failed", "show", &import.id]));
    let text = stdout(&out);
    assert!(
        text.contains("attempts:  2")
            && text.contains("/nonexistent/file.csv")
            && text.contains("No such file"),
        "{text}"
    );

    let out = run(runall(&store).args(["failed", "retry", &import.id]));
    assert!(stdout(&out).contains("1 job retried"), "{}", stdout(&out));
    assert_eq!(
        q.storage()
            .inspect()
            .unwrap()
            .size("default")
            .await
            .unwrap()
            .waiting,
        1
    );
    let unknown = failed.iter().find(|f| f.name == "no-such-job").unwrap();
    let out = run(runall(&store).args(["failed", "forget", &unknown.id]));
    assert!(out.status.success());
    let out = run(runall(&store).args(["failed", "forget", &unknown.id]));
    assert_eq!(out.status.code(), Some(1), "forgetting twice is an error");
    let out = run(runall(&store).args(["failed", "flush"]));
    assert!(
        stdout(&out).contains("1 failed job deleted"),
        "{}",
        stdout(&out)
    );
    let out = run(runall(&store).args(["failed", "prune", "--older-than", "7d"]));
    assert!(out.status.success());
}

#[tokio::test]
async fn run_takes_only_the_named_job() {
    let store = store();
    let q = queue(&store).await;
    email("a@example.com").dispatch().via(&q).await.unwrap();
    Noop { sent_us: 0 }.dispatch().via(&q).await.unwrap();
    let out = run(runall(&store).args(["run", "send-email", "--sleep", "50", "--stop-when-empty"]));
    assert!(out.status.success());
    assert!(stdout(&out).contains("1 processed"), "{}", stdout(&out));
    let size = q
        .storage()
        .inspect()
        .unwrap()
        .size("default")
        .await
        .unwrap();
    assert_eq!(size.waiting, 1, "the noop job is still there");

    let out = run(runall(&store).args(["run", "no-such-job"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown job name `no-such-job`"));
}

#[tokio::test]
async fn bad_configuration_is_refused_with_the_key() {
    let store = store();
    let config = store.path.with_extension("toml");
    std::fs::write(&config, "max_retries = 3\nsleep_msec = 10\n").unwrap();
    let out = run(runall(&store).args(["size"]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sleep_msec"), "{err}");

    // Nothing listens on port 1: the error says so at once (not "pool timed out" after the
    // 5 s acquire timeout), and is not called a configuration error.
    for url in [
        "postgres://app:hunter2@127.0.0.1:1/app",
        "mysql://app:hunter2@127.0.0.1:1/app",
    ] {
        let started = Instant::now();
        let out = run(Command::new(env!("CARGO_BIN_EXE_runall"))
            .args(["--connection", url, "size"])
            .arg("--config")
            .arg(config.with_extension("none")));
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("hunter2"),
            "the password never appears: {err}"
        );
        assert!(
            err.contains("cannot connect to") && err.to_lowercase().contains("refused"),
            "{err}"
        );
        assert!(
            !err.contains("configuration error") && !err.contains("timed out"),
            "{err}"
        );
        assert!(took < Duration::from_secs(3), "{url}: took {took:?}");
    }
}

#[tokio::test]
async fn sigterm_lets_running_jobs_finish() {
    let store = store();
    let q = queue(&store).await;
    Sleep { ms: 1500 }.dispatch().via(&q).await.unwrap();
    let mut child = runall(&store)
        .args(["work", "--sleep", "50", "--grace", "10s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_reserved(&q, "default", 1).await;
    signal(&child, "TERM");
    let status =
        wait_for(&mut child, Duration::from_secs(10)).expect("the worker exits after the job");
    assert!(status.success(), "exit 0 after SIGTERM");
    let out = child.wait_with_output().unwrap();
    assert!(
        stdout(&out).contains("worker stopped (stopped by signal): 1 processed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        q.storage()
            .inspect()
            .unwrap()
            .size("default")
            .await
            .unwrap()
            .total(),
        0
    );
}

#[tokio::test]
async fn sigterm_past_the_grace_period_puts_the_job_back() {
    let store = store();
    let q = queue(&store).await;
    Sleep { ms: 60_000 }.dispatch().via(&q).await.unwrap();
    let mut child = runall(&store)
        .args([
            "work", "--sleep", "50", "--grace", "300ms", "--lease", "60s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_reserved(&q, "default", 1).await;
    signal(&child, "INT");
    let status = wait_for(&mut child, Duration::from_secs(10))
        .expect("the worker exits after its grace period");
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        stdout(&out).contains("worker stopped (stopped by signal): 0 processed"),
        "{}",
        stdout(&out)
    );
    let size = q
        .storage()
        .inspect()
        .unwrap()
        .size("default")
        .await
        .unwrap();
    assert_eq!(
        (size.waiting, size.reserved),
        (1, 0),
        "back at once, not after the 60 s lease"
    );
}

#[tokio::test]
async fn a_killed_worker_s_job_runs_again_after_its_lease() {
    let store = store();
    let q = queue(&store).await;
    Sleep { ms: 3_000 }.dispatch().via(&q).await.unwrap();
    let mut first = runall(&store)
        .args(["work", "--sleep", "50", "--lease", "1s"])
        .spawn()
        .unwrap();
    wait_until_reserved(&q, "default", 1).await;
    signal(&first, "KILL");
    let _ = first.wait();
    let out = run(runall(&store).args([
        "work",
        "--sleep",
        "100",
        "--lease",
        "1s",
        "--stop-when-empty",
    ]));
    assert!(stdout(&out).contains("1 processed"), "{}", stdout(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("attempt=2"),
        "the second run is attempt 2"
    );
}

#[tokio::test]
async fn a_job_that_kills_its_worker_ends_in_the_failed_store() {
    let store = store();
    let q = queue(&store).await;
    AbortWorker {}.dispatch().via(&q).await.unwrap();
    email("x@example.com").dispatch().via(&q).await.unwrap();
    let mut runs = 0;
    while q
        .storage()
        .inspect()
        .unwrap()
        .size("default")
        .await
        .unwrap()
        .total()
        > 0
    {
        runs += 1;
        assert!(runs <= 6, "the crash loop ends");
        let _ = run(runall(&store).args([
            "work",
            "--sleep",
            "50",
            "--lease",
            "500ms",
            "--stop-when-empty",
        ]));
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let failed = q
        .storage()
        .failed_store()
        .unwrap()
        .list(queue_core::storage::PageRequest::first(10))
        .await
        .unwrap()
        .items;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].name, "abort-worker");
    assert!(
        failed[0].error.contains("attempts exhausted"),
        "{}",
        failed[0].error
    );
}

#[tokio::test]
async fn eight_worker_processes_share_one_file() {
    let store = store();
    let q = queue(&store).await;
    for _ in 0..4 {
        q.dispatch_many((0..1000).map(|_| Noop { sent_us: 0 }.dispatch()))
            .await
            .unwrap();
    }
    let children: Vec<Child> = (0..8)
        .map(|_| {
            runall(&store)
                .args([
                    "work",
                    "--concurrency",
                    "4",
                    "--sleep",
                    "20",
                    "--stop-when-empty",
                ])
                .env("QUEUE_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut processed = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.to_lowercase().contains("busy") && !err.to_lowercase().contains("locked"),
            "no busy errors: {err}"
        );
        // sqlx notes a statement over 1 s (`slow statement`: on a loaded 2-core machine, a
        // BEGIN IMMEDIATE waiting its turn behind seven other writers); that is latency,
        // not a failure.
        let problems: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .filter(|l| !l.contains("slow statement"))
            .collect();
        assert!(problems.is_empty(), "no errors or warnings: {err}");
        let text = stdout(&out);
        let n: u64 = text
            .split(": ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a summary line: {text}"));
        processed += n;
    }
    assert_eq!(processed, 4000, "every job exactly once across 8 processes");
    assert_eq!(
        q.storage()
            .inspect()
            .unwrap()
            .size("default")
            .await
            .unwrap()
            .total(),
        0
    );
    assert_eq!(
        q.storage().failed_store().unwrap().count().await.unwrap(),
        0
    );
    let _ = Path::new(&store.path);
}

#[tokio::test]
async fn stop_conditions_once_max_jobs_max_time_and_memory() {
    let store = store();
    let q = queue(&store).await;
    q.dispatch_many((0..10).map(|_| Noop { sent_us: 0 }.dispatch()))
        .await
        .unwrap();

    let out = run(runall(&store).args(["work", "--once"]));
    assert!(
        stdout(&out).contains("worker stopped (--once): 1 processed"),
        "{}",
        stdout(&out)
    );
    let out = run(runall(&store).args(["work", "--max-jobs", "4", "--concurrency", "2"]));
    assert!(
        stdout(&out).contains("worker stopped (--max-jobs reached): 4 processed"),
        "{}",
        stdout(&out)
    );
    let out = run(runall(&store).args(["work", "--memory", "1"]));
    assert!(out.status.success(), "exceeding --memory is a clean stop");
    assert!(
        stdout(&out).contains("worker stopped (--memory exceeded): 0 processed"),
        "{}",
        stdout(&out)
    );
    let started = Instant::now();
    let out = run(runall(&store).args(["work", "--max-time", "1s", "--sleep", "50"]));
    assert!(
        stdout(&out).contains("worker stopped (--max-time reached): 5 processed"),
        "{}",
        stdout(&out)
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    let out = run(runall(&store).args(["work", "--once"]));
    assert!(
        stdout(&out).contains("worker stopped (queues empty): 0 processed"),
        "--once with nothing to do: {}",
        stdout(&out)
    );

    // Rakit's max_job and sleep_ms from job.toml.
    q.dispatch_many((0..3).map(|_| Noop { sent_us: 0 }.dispatch()))
        .await
        .unwrap();
    std::fs::write(
        store.path.with_extension("toml"),
        "max_job = 2\nsleep_ms = 10\n",
    )
    .unwrap();
    let out = run(runall(&store).arg("work"));
    assert!(
        stdout(&out).contains("worker stopped (--max-jobs reached): 2 processed"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn progress_bar_on_a_terminal() {
    // `script` (util-linux) gives the worker a pseudo-terminal.
    if Command::new("script").arg("--version").output().is_err() {
        // util-linux is on every Debian machine: its absence in CI is a broken machine, not a
        // reason to pass.
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!(
                "`script` (util-linux) is missing in CI: no pseudo-terminal for the progress bar"
            );
        }
        println!(
            "skipped: `script` is not installed, no pseudo-terminal to test the progress bar on"
        );
        return;
    }
    let store = store();
    let q = queue(&store).await;
    for _ in 0..4 {
        Sleep { ms: 200 }.dispatch().via(&q).await.unwrap();
    }
    let command = format!(
        "{} --connection {} --config {} work --stop-when-empty --sleep 50",
        env!("CARGO_BIN_EXE_runall"),
        store.url,
        store.path.with_extension("toml").display()
    );
    let out = run(Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("QUEUE_LOG"));
    let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    assert!(
        screen.contains("/4 done") && screen.contains("failed") && screen.contains("ETA"),
        "{screen}"
    );
    assert!(
        screen.contains("worker stopped (queues empty): 4 processed"),
        "{screen}"
    );
    assert!(
        !screen.contains("job started"),
        "no per-job log lines under the bar: {screen}"
    );
}

/// SIGTERM while the worker is still connecting (here to a server that accepts the connection
/// and never answers) ends it at once with exit status 0, not killed by the signal.
#[tokio::test]
async fn sigterm_while_connecting_exits_cleanly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream); // accepted, never answered
        }
    });
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runall"))
        .arg("--connection")
        .arg(format!("postgres://nobody@127.0.0.1:{port}/silent"))
        .arg("--config")
        .arg(dir.path().join("job.toml"))
        .env_remove("QUEUE_URL")
        .env("QUEUE_LOG", "info")
        .arg("work")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the worker is still connecting to the silent server"
    );
    signal(&child, "TERM");
    let status = wait_for(&mut child, Duration::from_secs(5)).expect("the worker exits at once");
    let out = child.wait_with_output().unwrap();
    assert!(status.success(), "exit 0, not killed: {status:?}");
    assert!(
        stdout(&out).contains("worker stopped (signal before it started): 0 processed"),
        "{}",
        stdout(&out)
    );
}
