//! `runall serve`: the dashboard served by the worker binary (a command added to the
//! `Runner` with `Runner::command`), its loopback rule, its token, and a clean stop.

use queue_database as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn runall(dir: &tempfile::TempDir) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runall"));
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    cmd.arg("--connection").arg(url);
    cmd.arg("--config").arg(dir.path().join("job.toml"));
    cmd.env_remove("QUEUE_URL")
        .env_remove("RUNALL_DASHBOARD_TOKEN")
        .env_remove("RUNALL_DASHBOARD_READ_ONLY_TOKEN");
    cmd
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A GET over plain HTTP/1.1: the status line's code and the whole answer.
fn http_get(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    http(port, "GET", path, headers)
}

/// A request with no body over plain HTTP/1.1: the status line's code and the whole answer.
fn http(port: u16, method: &str, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Length: 0\r\n{headers}\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let code = answer.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, answer))
}

fn start(dir: &tempfile::TempDir, args: &[&str]) -> (Server, u16) {
    let port = free_port();
    let child = runall(dir)
        .arg("serve")
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runall starts");
    let server = Server(child);
    let started = Instant::now();
    while http_get(port, "/", "").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "runall serve answers"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

#[test]
fn serve_is_a_runall_command() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let help = runall(&dir).arg("--help").output().expect("runall runs");
    assert!(String::from_utf8_lossy(&help.stdout).contains("serve"));
    // Beyond the loopback interface only with a token.
    let out = runall(&dir)
        .args(["serve", "--bind", "0.0.0.0:0"])
        .output()
        .expect("runall runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a token"), "{stderr}");
    // The other commands still parse with it added.
    let size = runall(&dir).arg("size").output().expect("runall runs");
    assert!(size.status.success(), "{size:?}");
}

#[test]
fn serve_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (mut server, port) = start(&dir, &[]);
    let (code, page) = http_get(port, "/", "").expect("an answer");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("store: sqlite"), "{page}");
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(server.0.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Ok(Some(exit)) = server.0.try_wait() {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "it stops");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn serve_with_a_token() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (_server, port) = start(&dir, &["--token", "s3cret"]);
    assert_eq!(http_get(port, "/", "").map(|a| a.0), Some(401));
    let bearer = "Authorization: Bearer s3cret\r\n";
    assert_eq!(http_get(port, "/", bearer).map(|a| a.0), Some(200));
    let (code, answer) = http_get(port, "/failed?token=s3cret", "").expect("an answer");
    assert_eq!(code, 303, "{answer}");
    assert!(answer.contains("HttpOnly"), "{answer}");
    let cookie = "Cookie: runall_dashboard_token=s3cret\r\n";
    assert_eq!(http_get(port, "/failed", cookie).map(|a| a.0), Some(200));
}

/// Secure by default: without a token the dashboard is read-only (no button, every action
/// refused); `--read-only-token` opens the same read-only view, `--token` the actions.
#[test]
fn serve_is_read_only_without_a_token() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (server, port) = start(&dir, &[]);
    let (code, page) = http_get(port, "/", "").expect("an answer");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("read-only"), "{page}");
    let (code, answer) = http(port, "POST", "/queues/default/pause", "").expect("an answer");
    assert_eq!(code, 403, "{answer}");
    assert!(answer.contains("read-only"), "{answer}");
    drop(server);

    let (_server, port) = start(&dir, &["--token", "full", "--read-only-token", "look"]);
    let look = "Authorization: Bearer look\r\n";
    let (code, page) = http_get(port, "/", look).expect("an answer");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("read-only"), "{page}");
    let pause = "/queues/default/pause";
    assert_eq!(http(port, "POST", pause, look).map(|a| a.0), Some(403));
    assert_eq!(http(port, "POST", pause, "").map(|a| a.0), Some(401));
    let full = "Authorization: Bearer full\r\n";
    assert_eq!(http(port, "POST", pause, full).map(|a| a.0), Some(303));
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let paused = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async {
            let queue = queue_core::Queue::connect(&url).await.expect("the store");
            queue.paused().await.expect("paused")
        });
    assert_eq!(paused, ["default"]);
}

/// `runall work --metrics-addr`: the worker's metrics as Prometheus text, with explicit
/// histogram buckets; a job name the worker has no code for is counted as `other`.
#[test]
fn worker_serves_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let queue = queue_core::Queue::connect(&url).await.unwrap();
        for i in 0..5 {
            queue
                .dispatch_named(
                    "send-email",
                    serde_json::json!({ "to": format!("u{i}@example.com"), "subject": "hi" }),
                )
                .await
                .unwrap();
        }
        queue
            .dispatch_named("made-up-name", serde_json::json!({}))
            .await
            .unwrap();
    });
    let port = free_port();
    let child = runall(&dir)
        .args(["work", "--queue", "default", "--sleep", "50ms"])
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runall starts");
    let _worker = Server(child);
    let processed = "runall_jobs_processed_total{queue=\"default\",job=\"send-email\"} 5";
    let started = Instant::now();
    let text = loop {
        if let Some((200, text)) = http_get(port, "/metrics", "") {
            if text.contains(processed) && text.contains("job=\"other\"") {
                break text;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the worker's metrics never showed five jobs done: {:?}",
            http_get(port, "/metrics", "")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for expected in [
        "# TYPE runall_job_duration_seconds histogram",
        "runall_job_duration_seconds_bucket{queue=\"default\",job=\"send-email\",le=\"0.025\"}",
        "runall_job_duration_seconds_count{queue=\"default\",job=\"send-email\"} 5",
        "runall_job_wait_seconds_count{queue=\"default\",job=\"send-email\"} 5",
        "runall_jobs_released_total{queue=\"default\",job=\"other\"}",
        "runall_worker_slots ",
        "runall_worker_busy_slots ",
    ] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }
    assert!(!text.contains("made-up-name"), "{text}");
}

/// `runall top`: queues, the failed store, the live workers and rates, printed read after
/// read when stdout is not a terminal.
#[test]
fn top_shows_queues_workers_and_rates() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let dispatched = runall(&dir)
        .args([
            "dispatch",
            "send-email",
            r#"{"to":"a@example.com","subject":"hi"}"#,
        ])
        .output()
        .expect("runall runs");
    assert!(dispatched.status.success(), "{dispatched:?}");
    // A worker of another queue: the job stays waiting, and the worker is listed.
    let child = runall(&dir)
        .args([
            "work",
            "--queue",
            "elsewhere",
            "--concurrency",
            "3",
            "--sleep",
            "50ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runall starts");
    let _worker = Server(child);
    let started = Instant::now();
    let text = loop {
        let top = runall(&dir)
            .args(["top", "--rounds", "2", "--every", "100ms"])
            .output()
            .expect("runall runs");
        assert!(top.status.success(), "{top:?}");
        let text = String::from_utf8_lossy(&top.stdout).into_owned();
        if text.contains("workers 1 ") {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the worker never showed: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(text.matches("runall top · sqlite").count(), 2, "{text}");
    assert!(text.contains("busy 0 of 3 slots"), "{text}");
    assert!(text.contains("done 0.0/s   failed 0.0/s"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("default "))
        .unwrap_or_else(|| panic!("a row for default: {text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, ["default", "1", "0", "0", "running"], "{text}");
    assert!(text.contains("elsewhere"), "the worker's queues: {text}");
}
