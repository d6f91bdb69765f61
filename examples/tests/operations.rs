//! The operator commands of the real `runall` binary (dispatch, health, stats, restart, clear,
//! queue size limits, table, batches, chains, workflows, schedules and limits) against SQLite
//! and against Redis.

// The SQLite driver, linked in for the test's own `Queue::connect`.
use queue_database as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Store {
    dir: tempfile::TempDir,
    url: String,
    table: String,
}

impl Store {
    fn sqlite() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        Store {
            dir,
            url,
            table: "jobs".into(),
        }
    }

    /// Redis with a prefix of its own, or `None` (with the skip notice) when Redis is down.
    fn redis() -> Option<Store> {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
            return queue_tests::server_missing(&url, "connection refused");
        }
        let table = queue_tests::unique("opscli");
        Some(Store {
            dir: tempfile::tempdir().unwrap(),
            url,
            table,
        })
    }

    fn config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("job.toml");
        std::fs::write(
            &path,
            format!(
                "url = \"{}\"\ntable = \"{}\"\nfailed_table = \"{}_failed\"\n{extra}",
                self.url, self.table, self.table
            ),
        )
        .unwrap();
        path
    }

    fn runall(&self, extra_config: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runall"));
        cmd.arg("--config").arg(self.config(extra_config));
        cmd.env_remove("QUEUE_URL").env("QUEUE_LOG", "info");
        cmd
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("runall runs");
    eprintln!(
        "--- {:?}\nstdout:\n{}\nstderr:\n{}",
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn operations(store: &Store) {
    // dispatch: checked against the job type.
    let out = run(store.runall("").args([
        "dispatch",
        "send-email",
        r#"{"to":"a@example.com","subject":"hi"}"#,
        "--queue",
        "high",
    ]));
    assert!(out.status.success());
    assert!(
        text(&out).contains("dispatched send-email as job"),
        "{}",
        text(&out)
    );
    let out = run(store
        .runall("")
        .args(["dispatch", "send-email", r#"{"to":1}"#]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("does not fit job `send-email`"),
        "{}",
        text(&out)
    );
    let out = run(store
        .runall("")
        .args(["dispatch", "send-email", "{not json"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not valid JSON"), "{}", text(&out));
    // A unique job type: the second dispatch for the customer stores nothing (the worker
    // below runs the first).
    let refresh = [
        "dispatch",
        "refresh-customer",
        r#"{"customer_id":7}"#,
        "--queue",
        "low",
    ];
    let out = run(store.runall("").args(refresh));
    assert!(
        text(&out).contains("dispatched refresh-customer as job"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(refresh));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("not dispatched: refresh-customer is unique and job"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["dispatch", "no-such-job", "{}"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("unknown job name `no-such-job`"));
    let out =
        run(store
            .runall("")
            .args(["dispatch", "send-notification", r#"{"to":"b@example.com"}"#]));
    assert!(out.status.success(), "listeners take any JSON");
    let out = run(store.runall("").args([
        "dispatch",
        "send-email",
        r#"{"to":"c@example.com","subject":"later"}"#,
        "--delay",
        "1h",
    ]));
    assert!(out.status.success());
    let out = run(store.runall("").args([
        "dispatch",
        "send-email",
        r#"{"to":"c@example.com","subject":"x"}"#,
        "--at",
        "2099-01-01T00:00:00Z",
    ]));
    assert!(out.status.success());
    let out = run(store.runall("").args(["size", "default"]));
    assert!(text(&out).contains("default"), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["default", "1", "2", "0"]),
        "{}",
        text(&out)
    );

    // health: thresholds from the config, exit codes 0 / 1 / 2, JSON.
    let out = run(store.runall("").args(["health"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("OK"));
    let out = run(store
        .runall("[health]\nqueue_size_warning = 1\n")
        .args(["health"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("WARNING") && text(&out).contains("default: 3 jobs waiting or delayed"),
        "{}",
        text(&out)
    );
    let out = run(store
        .runall("[health]\nqueue_size_warning = 0\nqueue_size_critical = 2\n")
        .args(["health", "--json"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("health --json prints JSON");
    assert_eq!(json["status"], "CRITICAL");
    assert!(json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["queue"] == "high" && q["waiting"] == 1));
    let out = run(store
        .runall("[health]\nfailed_warning = 10\nfailed_critical = 5\n")
        .args(["health"]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "a warning above its critical is a configuration error"
    );
    assert!(text(&out).contains("warning threshold is above its critical"));

    // work, then stats: what the store holds (statistics of work done are metrics now).
    // (The two delayed jobs would keep a --stop-when-empty worker waiting: stop on time.)
    let out = run(store.runall("").args([
        "work",
        "--queue",
        "high,default,low",
        "--max-time",
        "2s",
        "--sleep",
        "50",
    ]));
    assert!(
        text(&out).contains("worker stopped (--max-time reached): 3 processed"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["stats"]));
    assert!(out.status.success());
    let stats = text(&out);
    assert!(
        stats
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["default", "0", "2", "0"]),
        "the two delayed jobs: {stats}"
    );
    assert!(stats.contains("failed jobs:"), "{stats}");
    let out =
        run(store
            .runall("")
            .args(["stats", "--watch", "--interval", "100ms", "--rounds", "2"]));
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("failed jobs:")
            .count(),
        2,
        "two refreshes"
    );

    // clear: refuses without confirmation when stdin is not a terminal.
    let out = run(store.runall("").args(["clear", "default"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--force"), "{}", text(&out));
    let out = run(store.runall("").args(["clear", "default", "--force"]));
    assert!(
        text(&out).contains("2 jobs deleted from `default`"),
        "{}",
        text(&out)
    );

    // Queue size limit from the config.
    let limited = "[max_queue_size]\ndefault = 1\n";
    assert!(run(store.runall(limited).args([
        "dispatch",
        "send-email",
        r#"{"to":"d@example.com","subject":"1"}"#
    ]))
    .status
    .success());
    let out = run(store.runall(limited).args([
        "dispatch",
        "send-email",
        r#"{"to":"d@example.com","subject":"2"}"#,
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("queue `default` is full: 1 job waiting, the limit is 1"),
        "{}",
        text(&out)
    );

    // The failed store: list, show, retry, forget, prune, flush.
    assert!(run(store.runall("").args([
        "dispatch",
        "send-email",
        r#"{"to":"broken","subject":"x"}"#,
        "--queue",
        "low"
    ]))
    .status
    .success());
    let work = |store: &Store| {
        run(store.runall("").args([
            "work",
            "--queue",
            "low",
            "--stop-when-empty",
            "--sleep",
            "50",
        ]))
    };
    assert!(text(&work(store)).contains("1 failed"));
    let out = run(store.runall("").args(["failed", "list"]));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listing.contains("malformed address `broken`") && listing.contains("1 of 1 failed job"),
        "{listing}"
    );
    let id = listing
        .lines()
        .find(|l| l.contains("send-email"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a row with the failed job's id")
        .to_owned();
    let out = run(store.runall("").args(["failed", "show", &id]));
    assert!(
        text(&out).contains("\"to\":\"broken\"") && text(&out).contains("queue:     low"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["failed", "retry", "all"]));
    assert!(text(&out).contains("1 job retried"), "{}", text(&out));
    assert!(
        text(&work(store)).contains("1 failed"),
        "the retried job ran (and failed) again"
    );
    let out = run(store.runall("").args(["failed", "list"]));
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("send-email"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the failed job again")
        .to_owned();
    assert!(run(store.runall("").args(["failed", "forget", &id]))
        .status
        .success());
    assert!(run(store.runall("").args([
        "dispatch",
        "send-email",
        r#"{"to":"broken","subject":"y"}"#,
        "--queue",
        "low"
    ]))
    .status
    .success());
    assert!(text(&work(store)).contains("1 failed"));
    let out = run(store
        .runall("")
        .args(["failed", "prune", "--older-than", "1h"]));
    assert!(
        text(&out).contains("0 failed jobs older than 1 hour deleted"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["failed", "flush"]));
    assert!(
        text(&out).contains("1 failed job deleted"),
        "{}",
        text(&out)
    );

    // table: the SQL for a team's own migration tool, or a clear refusal.
    let out = run(store.runall("").args(["table"]));
    if store.url.starts_with("sqlite") {
        assert!(out.status.success());
        assert!(
            text(&out).contains("CREATE TABLE IF NOT EXISTS jobs"),
            "{}",
            text(&out)
        );
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out).contains("no SQL schema"), "{}", text(&out));
    }

    // restart: a running worker notices within a few seconds and exits 0.
    let mut worker = store
        .runall("")
        .args(["work", "--sleep", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let out = run(store.runall("").args(["restart"]));
    assert!(text(&out).contains("restart signal sent"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the worker exits within seconds of the restart signal"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let out = worker.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("worker stopped (restart signal)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn operations_on_sqlite() {
    operations(&Store::sqlite());
}

#[test]
fn operations_on_redis() {
    if let Some(store) = Store::redis() {
        operations(&store);
    }
}

/// The queues of the `job started` lines of a worker's log, in order.
fn started_queues(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("job started"))
        .filter_map(|l| l.split("queue=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `runall work` with no `--queue` (and no `queues` in job.toml) works every queue the store
/// holds: high, default, low, then the others by name; a queue that appears while it runs
/// is picked up.
fn every_queue(store: &Store) {
    for queue in ["zeta", "low", "alpha", "default", "high"] {
        let out = run(store.runall("").args([
            "dispatch",
            "send-notification",
            r#"{"to":"q@example.com"}"#,
            "--queue",
            queue,
        ]));
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = run(store
        .runall("")
        .args(["work", "--stop-when-empty", "--sleep", "50ms"]));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        started_queues(&out),
        ["high", "default", "low", "alpha", "zeta"],
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("worker stopped (queues empty): 5 processed"),
        "{}",
        text(&out)
    );

    // A queue that appears while the worker runs.
    let worker = store
        .runall("")
        .args(["work", "--max-time", "4s", "--sleep", "50ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let out = run(store.runall("").args([
        "dispatch",
        "send-notification",
        r#"{"to":"late@example.com"}"#,
        "--queue",
        "appeared",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let out = worker.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(started_queues(&out), ["appeared"], "{}", text(&out));
    assert_eq!(processed(&out), 1, "{}", text(&out));

    // `queues` in job.toml still chooses.
    let out = run(store.runall("").args([
        "dispatch",
        "send-notification",
        r#"{"to":"q@example.com"}"#,
        "--queue",
        "other",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(store.runall("queues = [\"mail\"]\n").args([
        "work",
        "--stop-when-empty",
        "--sleep",
        "50ms",
    ]));
    assert_eq!(processed(&out), 0, "{}", text(&out));
}

#[test]
fn every_queue_on_sqlite() {
    every_queue(&Store::sqlite());
}

#[test]
fn every_queue_on_redis() {
    if let Some(store) = Store::redis() {
        every_queue(&store);
    }
}

/// `--sleep` takes a unit; a bare number is milliseconds, and one that looks like seconds
/// draws a warning. `--concurrency 0` and `--retries 0` are refused. A missing failed job is
/// "not found", not a configuration error. A job that panics is reported once, in the
/// worker's own log line. Counts read "1 job", durations "1 hour".
#[test]
fn flags_errors_and_words() {
    let store = Store::sqlite();
    let out = run(store.runall("").args(["work", "--once", "--sleep", "3"]));
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("warning: --sleep 3 is 3 milliseconds") && err.contains("--sleep 3s"),
        "{err}"
    );
    // With nothing in the store, --once finds nothing and stops.
    assert!(
        text(&out).contains("worker stopped (queues empty): 0 processed"),
        "{}",
        text(&out)
    );
    for sleep in ["3s", "500ms", "50"] {
        let out = run(store.runall("").args(["work", "--once", "--sleep", sleep]));
        assert!(out.status.success(), "{}", text(&out));
        assert!(!text(&out).contains("warning"), "{sleep}: {}", text(&out));
    }
    let out = run(store.runall("sleep_ms = 3\n").args(["work", "--once"]));
    assert!(
        text(&out).contains("`sleep_ms = 3` in job.toml is 3 milliseconds"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["work", "--sleep", "3 fortnights"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    for (flag, value) in [("--concurrency", "0"), ("--retries", "0")] {
        let out = run(store.runall("").args(["work", flag, value]));
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains(&format!("invalid value '0' for '{flag}"))
                && text(&out).contains("must be at least 1"),
            "{}",
            text(&out)
        );
    }
    let out = run(store.runall("concurrency = 0\n").args(["work", "--once"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("`concurrency`: must be at least 1"),
        "{}",
        text(&out)
    );

    // A failed job that is not there.
    for command in [
        vec!["failed", "show", "4242"],
        vec!["failed", "forget", "4242"],
        vec!["failed", "retry", "4242"],
    ] {
        let out = run(store.runall("").args(&command));
        assert_eq!(out.status.code(), Some(1), "{command:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.contains("no failed job with id 4242") && !err.contains("configuration"),
            "{command:?}: {err}"
        );
    }

    // A job that panics: one report, the worker's, with where it panicked.
    let out = run(store.runall("").args([
        "dispatch",
        "explode",
        r#"{"why":"on purpose"}"#,
        "--queue",
        "bugs",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    // (Without RUST_BACKTRACE, which asks for Rust's own panic message too.)
    let out = run(store.runall("").env_remove("RUST_BACKTRACE").args([
        "work",
        "--stop-when-empty",
        "--sleep",
        "50ms",
        "--retries",
        "1",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        err.matches("exploded: on purpose").count(),
        1,
        "the panic is reported once: {err}"
    );
    assert!(
        err.lines().any(|l| l.contains("job failed for good")
            && l.contains("job panicked at examples/src/lib.rs:")
            && l.contains("exploded: on purpose")),
        "{err}"
    );
    assert!(!err.contains("thread '"), "no default panic message: {err}");
    assert!(
        text(&out).contains("worker stopped (queues empty): 0 processed, 0 retried, 1 failed"),
        "{}",
        text(&out)
    );

    // Counts and durations in words.
    let out = run(store.runall("").args(["failed", "list"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 of 1 failed job\n"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["failed", "retry", "all"]));
    assert!(text(&out).contains("1 job retried"), "{}", text(&out));
    // RUST_BACKTRACE=1 asks for Rust's own panic message as well.
    let out = run(store.runall("").env("RUST_BACKTRACE", "1").args([
        "work",
        "--stop-when-empty",
        "--sleep",
        "50ms",
        "--retries",
        "1",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("thread '") && err.matches("exploded: on purpose").count() == 2,
        "{err}"
    );
    let out = run(store
        .runall("")
        .args(["failed", "prune", "--older-than", "7d"]));
    assert!(
        text(&out).contains("0 failed jobs older than 7 days deleted"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["failed", "flush"]));
    assert!(
        text(&out).contains("1 failed job deleted"),
        "{}",
        text(&out)
    );
}

/// `runall batch show | cancel`, `runall chain` and `runall workflow` read and change what an
/// application dispatched.
/// `runall locks` lists the locks held and `--release KEY` releases one by force.
#[test]
fn locks_from_the_command_line() {
    use queue_core::Queue;
    let store = Store::sqlite();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let queue = rt.block_on(async {
        let queue = Queue::connect(&store.url).await.unwrap();
        assert!(queue
            .storage()
            .lock("report:7", "lease-abc", std::time::Duration::from_secs(120))
            .await
            .unwrap());
        queue
    });
    let out = run(store.runall("").args(["locks"]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("report:7  held by lease-abc  expires in 1"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["locks", "--release", "report:7"]));
    assert!(
        text(&out).contains("lock report:7 released"),
        "{}",
        text(&out)
    );
    rt.block_on(async {
        assert!(!queue
            .storage()
            .unlock("report:7", "lease-abc")
            .await
            .unwrap());
    });
    let out = run(store.runall("").args(["locks"]));
    assert!(text(&out).contains("no lock is held"), "{}", text(&out));
    let out = run(store.runall("").args(["locks", "--release", "report:7"]));
    assert!(
        text(&out).contains("no one held lock report:7"),
        "{}",
        text(&out)
    );
}

#[test]
fn batches_chains_and_workflows_from_the_command_line() {
    use queue_core::{Batch, Chain, Queue, Workflow};
    let store = Store::sqlite();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (batch, chain, workflow) = rt.block_on(async {
        let queue = Queue::connect(&store.url).await.unwrap();
        let job = |to: &str| {
            queue.dispatch_named(
                "send-email",
                serde_json::json!({ "to": to, "subject": "hi" }),
            )
        };
        let batch = Batch::new()
            .add(job("a@example.com"))
            .add(job("b@example.com"))
            .via(&queue)
            .dispatch()
            .await
            .unwrap();
        let chain = Chain::new()
            .then(job("c@example.com"))
            .then(job("d@example.com"))
            .via(&queue)
            .dispatch()
            .await
            .unwrap();
        let wf = Workflow::new();
        let first = wf.add("first", job("e@example.com"));
        wf.add("second", job("f@example.com")).after(&first);
        let workflow = wf.via(&queue).dispatch().await.unwrap();
        (batch, chain, workflow)
    });
    let out = run(store.runall("").args(["batch", "show", &batch.0]));
    assert!(out.status.success());
    assert!(
        text(&out)
            .contains("0.0 % done, 2 of 2 pending, 0 succeeded, 0 failed, 0 cancelled, 0 running"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["batch", "cancel", &batch.0]));
    assert!(out.status.success());
    assert!(
        text(&out).contains("(2 removed from their queues now, counted cancelled)"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["batch", "show", &batch.0]));
    assert!(text(&out).contains("(cancelled)"), "{}", text(&out));
    let out = run(store.runall("").args(["batch", "show", "nosuch"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no batch with id nosuch"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["chain", &chain.0]));
    assert!(
        text(&out).contains("2 links, 0 succeeded, 0 failed, 0 skipped"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["workflow", &workflow.0]));
    assert!(
        text(&out).contains("2 nodes, 0 succeeded, 0 failed, 0 skipped"),
        "{}",
        text(&out)
    );
    // A worker runs the batch's members as cancelled (never their bodies) and the chain.
    let out = run(store
        .runall("")
        .args(["work", "--stop-when-empty", "--sleep", "50"]));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(store.runall("").args(["batch", "show", &batch.0]));
    assert!(
        text(&out).contains("100.0 % done, 0 of 2 pending, 0 succeeded, 0 failed, 2 cancelled"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["chain", &chain.0]));
    assert!(
        text(&out).contains("2 links, 2 succeeded, 0 failed, 0 skipped (finished)"),
        "{}",
        text(&out)
    );
    // `workflow --prune-older-than`: a finished workflow younger than that stays; with 0s
    // it goes.
    let out = run(store.runall("").args(["workflow", &workflow.0]));
    assert!(
        text(&out).contains("2 nodes, 2 succeeded, 0 failed, 0 skipped (finished)"),
        "{}",
        text(&out)
    );
    let out = run(store
        .runall("")
        .args(["workflow", "--prune-older-than", "1h"]));
    assert!(
        text(&out).contains("pruned 0 finished workflows dispatched more than 1 hour ago"),
        "{}",
        text(&out)
    );
    let out = run(store
        .runall("")
        .args(["workflow", "--prune-older-than", "0s"]));
    assert!(
        text(&out).contains("pruned 1 finished workflow dispatched more than"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["workflow", &workflow.0]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // `batch retry`: nothing failed in the cancelled batch.
    let out = run(store.runall("").args(["batch", "retry", &batch.0]));
    assert!(
        text(&out).contains("0 failed members back in their queues"),
        "{}",
        text(&out)
    );

    // `batch list` shows every batch with its progress; `show --watch` ends when the batch
    // has finished; `prune` deletes finished batches older than it is told, and with
    // `--unfinished` the others and their callbacks.
    let open = rt.block_on(async {
        let queue = Queue::connect(&store.url).await.unwrap();
        let open = Batch::new()
            .add(queue.dispatch_named(
                "send-email",
                serde_json::json!({ "to": "g@example.com", "subject": "hi" }),
            ))
            .then(queue.dispatch_named(
                "send-email",
                serde_json::json!({ "to": "then@example.com", "subject": "hi" }),
            ))
            .via(&queue)
            .open()
            .await
            .unwrap();
        open.id().clone()
    });
    let out = run(store.runall("").args(["batch", "retry", &open.0]));
    assert!(
        text(&out).contains("0 failed members back in their queues"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["batch", "retry", "nosuch"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no batch with id nosuch"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["batch", "list"]));
    let listed = text(&out);
    assert!(out.status.success(), "{listed}");
    assert!(
        listed.contains(&format!("batch {batch}: 100.0 % done"))
            && listed.contains("(cancelled) (finished)"),
        "{listed}"
    );
    assert!(
        listed.contains(&format!(
            "batch {open}: 0.0 % done, 1 of 1 pending, 0 succeeded, 0 failed, 0 cancelled"
        )) && listed.contains("(open: not sealed)"),
        "{listed}"
    );
    assert!(listed.contains(", created 20"), "{listed}");
    let out =
        run(store
            .runall("")
            .args(["batch", "show", &batch.0, "--watch", "--interval", "50ms"]));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out)
            .lines()
            .filter(|l| l.contains("100.0 % done"))
            .count(),
        1
    );
    // Nothing is older than an hour: nothing pruned.
    let out = run(store
        .runall("")
        .args(["batch", "prune", "--older-than", "1h"]));
    assert!(
        text(&out).contains("pruned 0 finished batches"),
        "{}",
        text(&out)
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = run(store
        .runall("")
        .args(["batch", "prune", "--older-than", "0s"]));
    assert!(
        text(&out).contains("pruned 1 finished batch created"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["batch", "show", &batch.0]));
    assert!(text(&out).contains("no batch with id"), "{}", text(&out));
    let out = run(store.runall("").args(["batch", "show", &open.0]));
    assert!(
        out.status.success(),
        "the unfinished one is kept: {}",
        text(&out)
    );
    let out = run(store
        .runall("")
        .args(["batch", "prune", "--older-than", "0s", "--unfinished"]));
    assert!(
        text(&out).contains("pruned 1 batch created"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["batch", "list"]));
    assert!(text(&out).contains("no batches"), "{}", text(&out));
    rt.block_on(async {
        let queue = Queue::connect(&store.url).await.unwrap();
        let groups = queue_core::StorageExt::groups(queue.storage().as_ref()).unwrap();
        assert_eq!(
            groups.waiting(&format!("batch:{open}:then")).await.unwrap(),
            None,
            "the pruned batch's callback is dropped"
        );
    });

    // `failed retry` of a batch member counts it pending again (not on top of its failure).
    let member_batch = rt.block_on(async {
        let queue = Queue::connect(&store.url).await.unwrap();
        let email = |to: &str| {
            queue.dispatch_named(
                "send-email",
                serde_json::json!({ "to": to, "subject": "hi" }),
            )
        };
        let id = Batch::new()
            .add(email("h@example.com"))
            .add(email("malformed"))
            .finally(email("finally@example.com"))
            .allow_failures()
            .via(&queue)
            .dispatch()
            .await
            .unwrap();
        id
    });
    let work = || {
        run(store
            .runall("")
            .args(["work", "--stop-when-empty", "--sleep", "50"]))
    };
    assert!(work().status.success());
    let show = || {
        text(&run(store.runall("").args([
            "batch",
            "show",
            &member_batch.0,
        ])))
    };
    assert!(
        show().contains("0 of 2 pending, 1 succeeded, 1 failed"),
        "{}",
        show()
    );
    let listed = text(&run(store.runall("").args(["failed", "list"])));
    let failed_id = listed
        .lines()
        .find(|l| l.contains("malformed address"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the member failed: {listed}"))
        .to_owned();
    let out = run(store.runall("").args(["failed", "retry", &failed_id]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        show().contains("1 of 2 pending, 1 succeeded, 0 failed"),
        "{}",
        show()
    );
    assert!(work().status.success());
    assert!(
        show().contains("0 of 2 pending, 1 succeeded, 1 failed"),
        "{}",
        show()
    );
}

/// Seed 001's payment sync: the example dispatches 600 students in chunks into one open
/// batch, a `runall work` process runs them, and the batch's `then` job writes the summary
/// once; the counts are of students, not of attempts (student 500 needs two).
#[test]
fn payment_sync_example() {
    let store = Store::sqlite();
    let summary = store.dir.path().join("summary.txt");
    let out = run(Command::new(env!("CARGO_BIN_EXE_payment_sync")).args([
        "--url",
        &store.url,
        "--students",
        "600",
        "--chunk",
        "250",
        "--no-wait",
        "--summary",
        &summary.display().to_string(),
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let batch = stdout
        .split_whitespace()
        .skip_while(|w| *w != "batch")
        .nth(1)
        .expect("the batch's id is printed")
        .to_owned();
    let out = run(store.runall("").args(["batch", "show", &batch]));
    assert!(
        text(&out).contains("0 of 600 pending") || text(&out).contains("600 of 600 pending"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args([
        "work",
        "--queue",
        "sync",
        "--stop-when-empty",
        "--sleep",
        "50",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(store.runall("").args(["batch", "show", &batch]));
    assert!(
        text(&out).contains("100.0 % done, 0 of 600 pending, 600 succeeded, 0 failed, 0 cancelled"),
        "{}",
        text(&out)
    );
    let written = std::fs::read_to_string(&summary).expect("the then job wrote the summary");
    assert_eq!(
        written.lines().collect::<Vec<_>>().len(),
        1,
        "the summary is written once: {written}"
    );
    assert!(
        written.contains("payments of 600 students synced"),
        "{written}"
    );
}

/// How many jobs a `runall work` run reports it processed.
fn processed(out: &Output) -> u64 {
    let text = text(out);
    let at = text.find(" processed").expect("a summary line");
    let digits: String = text[..at]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.chars().rev().collect::<String>().parse().unwrap()
}

/// `[[schedule]]` in job.toml, run by two `runall work` processes at once: every tick runs
/// once; `runall schedule list | show | pause | resume | run-now`; `--no-schedule`; a bad
/// schedule is refused with its reason.
#[test]
fn schedules_from_the_command_line() {
    let store = Store::sqlite();
    let schedule = r#"
[[schedule]]
id = "notify"
every = "1s"
job = "send-notification"
payload = { to = "s@example.com" }
queue = "sched"
overlap = "allow"
"#;
    let out = run(store.runall(schedule).args(["schedule", "list"]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("notify  every 1s  next -"),
        "{}",
        text(&out)
    );

    let workers: Vec<_> = (0..2)
        .map(|_| {
            store
                .runall(schedule)
                .args([
                    "work",
                    "--queue",
                    "sched",
                    "--max-time",
                    "4s",
                    "--sleep",
                    "50",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = workers
        .into_iter()
        .map(|w| w.wait_with_output().unwrap())
        .collect();
    let ran: u64 = outs.iter().map(processed).sum();
    let out = run(store.runall(schedule).args(["schedule", "show", "notify"]));
    let shown = text(&out);
    let ticks: u64 = shown
        .split("ticks ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{shown}"));
    // The last tick's job may still be queued when both workers stop on time.
    let left = run(store.runall(schedule).args(["size", "sched"]));
    assert!(
        ran == ticks || (ran + 1 == ticks && text(&left).contains("1")),
        "{ran} runs for {ticks} ticks: {shown}"
    );
    assert!((2..=5).contains(&ticks), "{shown}");
    assert!(shown.contains("missed 0"), "{shown}");

    let out = run(store.runall(schedule).args(["schedule", "pause", "notify"]));
    assert!(
        text(&out).contains("schedule notify paused"),
        "{}",
        text(&out)
    );
    let out = run(store.runall(schedule).args(["schedule", "list"]));
    assert!(text(&out).contains("PAUSED"), "{}", text(&out));
    let out = run(store
        .runall(schedule)
        .args(["schedule", "resume", "notify"]));
    assert!(
        text(&out).contains("schedule notify resumed"),
        "{}",
        text(&out)
    );
    let out = run(store
        .runall(schedule)
        .args(["schedule", "run-now", "notify"]));
    assert!(text(&out).contains("one run pushed"), "{}", text(&out));
    let out = run(store
        .runall(schedule)
        .args(["schedule", "remove", "notify"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("defined in code or in job.toml"),
        "{}",
        text(&out)
    );
    // --no-schedule: this worker runs what is queued and claims no tick.
    let before = text(&run(store
        .runall(schedule)
        .args(["schedule", "show", "notify"])));
    let out = run(store.runall(schedule).args([
        "work",
        "--queue",
        "sched",
        "--no-schedule",
        "--max-time",
        "2s",
        "--sleep",
        "50",
    ]));
    assert!(processed(&out) >= 1, "the run pushed now: {}", text(&out));
    let after = text(&run(store
        .runall(schedule)
        .args(["schedule", "show", "notify"])));
    let ticks_of = |s: &str| {
        s.split("ticks ")
            .nth(1)
            .map(|r| r.split_whitespace().next().map(str::to_owned))
    };
    assert_eq!(
        ticks_of(&before),
        ticks_of(&after),
        "no tick claimed: {before} / {after}"
    );
    // No worker has run it for over two periods: health warns.
    std::thread::sleep(Duration::from_millis(1200));
    let out = run(store.runall(schedule).args(["health"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("schedule notify: its tick at") && text(&out).contains("late"),
        "{}",
        text(&out)
    );

    let out = run(store
        .runall("[[schedule]]\ncron = \"61 * * * *\"\njob = \"send-notification\"\n")
        .args(["schedule", "list"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("bad cron expression `61 * * * *`"),
        "{}",
        text(&out)
    );
    let out = run(store
        .runall("[[schedule]]\nevery = \"1m\"\njob = \"no-such-job\"\n")
        .args(["schedule", "list"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("unknown job `no-such-job`"),
        "{}",
        text(&out)
    );
}

/// `runall schedule run-now` and `show` for a stored schedule (`Schedules::upsert`) with
/// `overlap = buffer_one`: a run, one buffered behind it, then nothing.
#[test]
fn stored_schedules_run_now_from_the_command_line() {
    use queue_core::{Overlap, Queue, Schedule, Schedules};
    let store = Store::sqlite();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let queue = Queue::connect(&store.url).await.unwrap();
        let schedule = Schedule::every(Duration::from_secs(3600))
            .overlap(Overlap::BufferOne)
            .dispatch(
                queue
                    .dispatch_named("send-notification", serde_json::json!({ "to": "m@e.x" }))
                    .on_queue("sched"),
            );
        Schedules::upsert_via(&queue, "monitor:7", schedule)
            .await
            .unwrap();
    });
    let run_now = || {
        let out = run(store.runall("").args(["schedule", "run-now", "monitor:7"]));
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    let said = run_now();
    assert!(
        said.contains("schedule monitor:7: one run pushed"),
        "{said}"
    );
    let said = run_now();
    assert!(said.contains("one run buffered"), "{said}");
    let said = run_now();
    assert!(said.contains("not pushed"), "{said}");
    let out = run(store.runall("").args(["schedule", "show", "monitor:7"]));
    let shown = text(&out);
    assert!(
        shown.contains("monitor:7  every 1h (stored)") && shown.contains("(one run buffered)"),
        "{shown}"
    );
    let out = run(store.runall("").args(["size", "sched"]));
    assert!(
        text(&out).contains('1'),
        "one queued, one held: {}",
        text(&out)
    );
    let out = run(store.runall("").args(["schedule", "run-now", "nope"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

/// Seed 003's monitors (`examples/src/bin/monitors.rs`): 100 stored schedules every 2 s,
/// run by a `runall work` process; the queue never holds more than one check per monitor;
/// the same upsert again changes nothing; removed monitors leave the listing.
#[test]
fn monitors_example() {
    let store = Store::sqlite();
    let monitors = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_monitors"));
        cmd.args(["--url", &store.url]).args(args);
        run(&mut cmd)
    };
    let out = monitors(&["--monitors", "100", "--interval", "2s"]);
    assert!(
        text(&out).contains("100 monitors every 2s: 100 created"),
        "{}",
        text(&out)
    );
    let out = monitors(&["--monitors", "100", "--interval", "2s"]);
    assert!(
        text(&out).contains("0 created, 0 changed, 100 unchanged"),
        "{}",
        text(&out)
    );

    let worker = store
        .runall("")
        .args([
            "work",
            "--queue",
            "monitors",
            "--concurrency",
            "4",
            "--max-time",
            "8s",
            "--sleep",
            "50",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let out = monitors(&["--watch", "6s"]);
    let worker = worker.wait_with_output().unwrap();
    assert!(worker.status.success(), "{}", text(&worker));
    let report = text(&out);
    let number_before = |word: &str| -> u64 {
        let at = report.find(word).unwrap_or_else(|| panic!("{report}"));
        report[..at]
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{report}"))
    };
    let checks = number_before(" checks claimed");
    let largest: u64 = report
        .split("held at most ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(report.contains("100 monitors:"), "{report}");
    // 100 monitors every 2 s for 6 s: about 300 checks.
    assert!((200..=400).contains(&checks), "{report}");
    assert!(largest <= 100, "one check per monitor at most: {report}");

    let out = monitors(&["--remove", "50"]);
    assert!(
        text(&out).contains("monitors 1 to 50 removed"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["schedule", "list"]));
    let listed = text(&out)
        .lines()
        .filter(|l| l.starts_with("monitor:"))
        .count();
    assert_eq!(listed, 50, "{}", text(&out));
    assert!(
        text(&out).contains("monitor:99  every 2s (stored)  next"),
        "{}",
        text(&out)
    );
    // `runall schedule remove` removes a stored schedule; a missing one is an error.
    let out = run(store.runall("").args(["schedule", "remove", "monitor:99"]));
    assert!(
        text(&out).contains("schedule monitor:99 removed"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["schedule", "list"]));
    assert!(!text(&out).contains("monitor:99 "), "{}", text(&out));
    let out = run(store.runall("").args(["schedule", "remove", "monitor:99"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no stored schedule with id monitor:99"),
        "{}",
        text(&out)
    );
}

/// A job type with `#[job(limit = "partner-api", limit_key = "account")]`, dispatched with
/// `runall dispatch` and run by `runall work` with `[limits] partner-api = "5/s"`: an
/// account's calls start at least 200 ms apart (less a margin for pick-up), none a second
/// attempt; a worker whose `job.toml` does not define the limit puts the jobs back for one
/// that does, without running them.
#[test]
fn limits_from_job_toml() {
    let store = Store::sqlite();
    for n in 0..8 {
        let payload = format!(r#"{{"account":1,"n":{n}}}"#);
        let out = run(store
            .runall("")
            .args(["dispatch", "call-partner", &payload]));
        assert!(out.status.success(), "{}", text(&out));
    }
    // No `[limits]`: the jobs wait for a worker that defines the limit (here, as the window
    // is short, a moment: the rest of the window after their dispatch).
    let out = run(store.runall("").args([
        "work",
        "--queue",
        "partner",
        "--max-time",
        "1s",
        "--sleep",
        "50",
        "--unknown-job-window",
        "3s",
    ]));
    assert_eq!(processed(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("limit `partner-api` is not defined on this worker"),
        "{}",
        text(&out)
    );
    let limits = "[limits]\npartner-api = \"5/s\"\n";
    let out = run(store.runall(limits).args([
        "work",
        "--queue",
        "partner",
        "--concurrency",
        "4",
        "--stop-when-empty",
        "--sleep",
        "50",
    ]));
    assert_eq!(processed(&out), 8, "{}", text(&out));
    let log = text(&out);
    let mut starts: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("partner called"))
        .map(|l| {
            assert!(l.contains("attempt=1"), "{l}");
            let at = l.split("at_ms=").nth(1).unwrap_or_else(|| panic!("{l}"));
            at.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();
    starts.sort_unstable();
    assert_eq!(starts.len(), 8, "{log}");
    for (i, pair) in starts.windows(5).enumerate() {
        assert!(
            pair[4] - pair[0] + 120 >= 800,
            "calls {i} to {} started within {} ms",
            i + 4,
            pair[4] - pair[0]
        );
    }
}

/// `runall pause QUEUE` and `runall resume QUEUE`: a paused queue's jobs stay queued (no
/// worker takes them; `--stop-when-empty` does not wait for them), `runall size` marks it,
/// `runall health` warns; resumed, they run.
#[test]
fn pause_and_resume_from_the_command_line() {
    let store = Store::sqlite();
    let out = run(store.runall("").args([
        "dispatch",
        "send-notification",
        r#"{"to":"p@example.com"}"#,
        "--queue",
        "mail",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(store.runall("").args(["pause", "mail"]));
    assert!(text(&out).contains("queue mail paused"), "{}", text(&out));
    let out = run(store.runall("").args(["size"]));
    assert!(
        text(&out)
            .lines()
            .any(|l| l.starts_with("mail") && l.ends_with("PAUSED")),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["health"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("queue mail is paused"),
        "{}",
        text(&out)
    );
    let work = || {
        run(store.runall("").args([
            "work",
            "--queue",
            "mail",
            "--stop-when-empty",
            "--sleep",
            "50",
        ]))
    };
    let out = work();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(processed(&out), 0, "{}", text(&out));
    let out = run(store.runall("").args(["resume", "mail"]));
    assert!(text(&out).contains("queue mail resumed"), "{}", text(&out));
    let out = work();
    assert_eq!(processed(&out), 1, "{}", text(&out));
    let out = run(store.runall("").args(["health"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// `#[job(encrypted)]` through the real binary: `runall keys generate` makes a key; with
/// `RUNALL_KEYS` set, `runall dispatch` stores the job sealed (the IBAN is nowhere in the
/// store's files) and `runall work` runs it; without keys, the dispatch is refused saying how
/// to set them.
#[test]
fn encrypted_jobs_from_the_command_line() {
    let store = Store::sqlite();
    let out = run(store.runall("").args(["keys", "generate", "k1"]));
    assert!(out.status.success(), "{}", text(&out));
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(key.starts_with("k1:") && key.len() == 3 + 44, "{key}");
    let payload = r#"{"account":7,"iban":"DE-SECRET-4242"}"#;
    let out = run(store.runall("").args(["dispatch", "pay-out", payload]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("RUNALL_KEYS"), "{}", text(&out));

    let out = run(store
        .runall("")
        .env("RUNALL_KEYS", &key)
        .args(["dispatch", "pay-out", payload]));
    assert!(out.status.success(), "{}", text(&out));
    for entry in std::fs::read_dir(store.dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        let found = bytes.windows(14).any(|w| w == b"DE-SECRET-4242");
        assert!(!found, "the IBAN is stored in the clear");
    }
    let out = run(store.runall("").env("RUNALL_KEYS", &key).args([
        "work",
        "--queue",
        "payouts",
        "--stop-when-empty",
        "--sleep",
        "50",
    ]));
    assert_eq!(processed(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("paid out"), "{}", text(&out));
    assert!(!text(&out).contains("DE-SECRET-4242"), "{}", text(&out));
}

/// `runall keys status` through the real binary, on SQLite and on Redis: it counts the
/// stored jobs each key id sealed (and those with nothing sealed) while a rotation is under
/// way, and once the jobs sealed with the old key have run, says the old key can go.
#[test]
fn keys_status_counts_jobs_per_key() {
    let stores = [Some(Store::sqlite()), Store::redis()];
    for store in stores.into_iter().flatten() {
        let key = |id: &str| {
            let out = run(store.runall("").args(["keys", "generate", id]));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let (k1, k2) = (key("k1"), key("k2"));
        let both = format!("{k2},{k1}"); // k2 active: the first one
        let payout = r#"{"account":7,"iban":"DE-SECRET-4242"}"#;
        let dispatch = |keys: &str, name: &str, payload: &str| {
            let out = run(store
                .runall("")
                .env("RUNALL_KEYS", keys)
                .args(["dispatch", name, payload]));
            assert!(out.status.success(), "{}", text(&out));
        };
        dispatch(&k1, "pay-out", payout);
        dispatch(&both, "pay-out", payout);
        dispatch(&both, "pay-out", payout);
        dispatch(&both, "send-notification", r#"{"to":"s@example.com"}"#);

        let status = || {
            let out = run(store
                .runall("")
                .env("RUNALL_KEYS", &both)
                .args(["keys", "status"]));
            assert!(out.status.success(), "{}", text(&out));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let row = |shown: &str, key: &str| -> Vec<String> {
            shown
                .lines()
                .find(|l| l.split_whitespace().next() == Some(key))
                .unwrap_or_else(|| panic!("no row for {key} in:\n{shown}"))
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let shown = status();
        assert_eq!(row(&shown, "k1")[1..3], ["1", "0"], "{shown}");
        assert!(shown.contains("not active"), "{shown}");
        assert_eq!(row(&shown, "k2")[1..4], ["2", "0", "active"], "{shown}");
        assert_eq!(row(&shown, "(none)")[1..3], ["1", "0"], "{shown}");
        assert!(!shown.contains("can leave"), "{shown}");

        let out = run(store.runall("").env("RUNALL_KEYS", &both).args([
            "work",
            "--queue",
            "payouts",
            "--stop-when-empty",
            "--sleep",
            "50",
        ]));
        assert_eq!(processed(&out), 3, "{}", text(&out));
        let shown = status();
        assert!(
            shown.contains("key k1 seals no stored job: it can leave RUNALL_KEYS"),
            "{shown}"
        );
        assert!(
            !shown
                .lines()
                .any(|l| l.starts_with("k1 ") || l.starts_with("k2 ")),
            "{shown}"
        );
        assert_eq!(row(&shown, "(none)")[1..3], ["1", "0"], "{shown}");
    }
}

/// The id a `runall dispatch` printed.
fn dispatched_id(out: &Output) -> String {
    let text = text(out);
    text.lines()
        .find_map(|l| l.split(" as job ").nth(1))
        .unwrap_or_else(|| panic!("no id in: {text}"))
        .trim()
        .to_owned()
}

/// `runall job ID` and `runall cancel ID` through the real binary on SQLite: a queued job
/// shows pending and is cancelled for good (the worker then runs nothing), a job that ran
/// under `--keep-finished` shows succeeded with its times, and unknown ids are a not-found
/// error (exit 1).
#[test]
fn job_status_and_cancel_from_the_command_line() {
    let store = Store::sqlite();
    let dispatch = || {
        run(store.runall("").args([
            "dispatch",
            "send-notification",
            r#"{"to":"s@example.com"}"#,
            "--queue",
            "mail",
        ]))
    };
    let first = dispatched_id(&dispatch());
    let out = run(store.runall("").args(["job", &first]));
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains("state        pending") && shown.contains("send-notification"),
        "{shown}"
    );
    let out = run(store.runall("").args(["job", &first, "--json"]));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["state"], "pending", "{json}");
    assert_eq!(json["queue"], "mail", "{json}");

    let out = run(store.runall("").args(["cancel", &first]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("cancelled: it will never run"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["job", &first]));
    assert!(
        text(&out).contains("state        cancelled"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["cancel", &first]));
    assert!(
        text(&out).contains("had ended already (cancelled)"),
        "{}",
        text(&out)
    );

    let second = dispatched_id(&dispatch());
    let out = run(store.runall("").args([
        "work",
        "--queue",
        "mail",
        "--stop-when-empty",
        "--sleep",
        "50ms",
        "--keep-finished",
        "1h",
    ]));
    assert_eq!(
        processed(&out),
        1,
        "only the job not cancelled ran: {}",
        text(&out)
    );
    let out = run(store.runall("").args(["job", &second]));
    let shown = text(&out);
    assert!(shown.contains("state        succeeded"), "{shown}");
    assert!(
        shown.contains("attempts     1") && shown.contains("finished "),
        "{shown}"
    );

    for command in ["job", "cancel"] {
        let out = run(store.runall("").args([command, "424242"]));
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("no job"), "{}", text(&out));
    }
}

/// `runall workers` through the real binary on SQLite: nothing listed before a worker runs;
/// a running `runall work` listed with its host, pid, queues and slots, busy once a job runs
/// (at its next beat), in the table and as JSON; gone once it stopped on SIGTERM.
#[test]
fn workers_from_the_command_line() {
    let store = Store::sqlite();
    let out = run(store.runall("").args(["workers"]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no worker is running"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["workers", "--json"]));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json, serde_json::json!([]));

    let out =
        run(store
            .runall("")
            .args(["dispatch", "sleep", r#"{"ms":20000}"#, "--queue", "slow"]));
    assert!(out.status.success(), "{}", text(&out));
    let mut worker = store
        .runall("")
        .args([
            "work",
            "--queue",
            "slow,other",
            "--concurrency",
            "3",
            "--sleep",
            "50ms",
            "--grace",
            "1s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runall work starts");
    let pid = worker.id();
    let listed = |out: &Output| {
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .expect("JSON")
            .into_iter()
            .find(|w| w["pid"] == pid)
    };
    // Listed at its first beat (when it starts); busy from a later one (every 10 s).
    let deadline = Instant::now() + Duration::from_secs(40);
    let busy = loop {
        let out = run(store.runall("").args(["workers", "--json"]));
        assert!(out.status.success(), "{}", text(&out));
        if let Some(entry) = listed(&out) {
            if entry["busy"] == 1 {
                break entry;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the worker never listed itself busy"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(busy["queues"], serde_json::json!(["slow", "other"]));
    assert_eq!(busy["slots"], 3);
    assert_eq!(busy["running"][0]["name"], "sleep");
    assert_eq!(busy["running"][0]["queue"], "slow");
    assert!(!busy["host"].as_str().unwrap_or_default().is_empty());

    let out = run(store.runall("").args(["workers"]));
    let shown = text(&out);
    let line = shown
        .lines()
        .find(|l| l.contains(&format!(" {pid} ")))
        .unwrap_or_else(|| panic!("a line for pid {pid}: {shown}"));
    assert!(
        line.contains("slow,other") && line.contains("1/3") && line.ends_with("s ago"),
        "{line}"
    );
    assert!(shown.starts_with("id "), "{shown}");
    assert!(shown.contains("1 worker, 1 of 3 slots busy"), "{shown}");

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -TERM worked");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(_)) = worker.try_wait() {
            break;
        }
        assert!(Instant::now() < deadline, "the worker stopped on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run(store.runall("").args(["workers"]));
    assert!(
        text(&out).contains("no worker is running"),
        "a worker that stopped leaves the list: {}",
        text(&out)
    );
}
