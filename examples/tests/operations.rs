//! The operator commands of the real `runall` binary (dispatch, health, stats, restart, clear,
//! queue size limits, table, batches, chains and workflows) against SQLite and against Redis.

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
        text(&out).contains("worker stopped (--max-time reached): 2 processed"),
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
        text(&out).contains("queue `default` is full: 1 jobs waiting, the limit is 1"),
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
        listing.contains("malformed address `broken`") && listing.contains("1 of 1 failed jobs"),
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
    assert!(text(&out).contains("1 jobs retried"), "{}", text(&out));
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
        text(&out).contains("0 failed jobs older than 1h deleted"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["failed", "flush"]));
    assert!(
        text(&out).contains("1 failed jobs deleted"),
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

/// `runall batch show | cancel`, `runall chain` and `runall workflow` read and change what an
/// application dispatched.
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
        text(&out).contains("0.0 % done, 2 of 2 pending, 0 succeeded, 0 failed, 0 cancelled"),
        "{}",
        text(&out)
    );
    let out = run(store.runall("").args(["batch", "cancel", &batch.0]));
    assert!(out.status.success());
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
