//! The files in deploy/, checked as far as this machine allows: the systemd unit with
//! `systemd-analyze verify`, the compose file with `docker-compose config`, and the Supervisor
//! program run for real by supervisord with real `runall` workers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use queue_core::StorageExt as _;
use queue_core::{Job, Queue};
use queue_database as _;
use queue_examples::SendEmail;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn tool_missing(tool: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{tool} is missing in CI: scripts/services.sh installs it");
    }
    println!("skipped: {tool} is not installed (scripts/services.sh installs it)");
}

#[test]
fn systemd_unit_verifies() {
    if !have("systemd-analyze") {
        return tool_missing("systemd-analyze");
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(deploy("runall@.service")).unwrap();
    let unit = unit.replace("/usr/local/bin/runall", env!("CARGO_BIN_EXE_runall"));
    let path = dir.path().join("runall@high.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaints: Vec<&str> = text.lines().filter(|l| l.contains("runall@")).collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze: {text}"
    );
}

#[test]
fn compose_file_is_valid() {
    let (program, args): (&str, &[&str]) = if have("docker-compose") {
        ("docker-compose", &["config", "-q"])
    } else {
        return tool_missing("docker-compose");
    };
    let out = Command::new(program)
        .args(["-f"])
        .arg(deploy("docker-compose.yml"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = Command::new(program)
        .args(["-f"])
        .arg(deploy("docker-compose.yml"))
        .arg("config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&config.stdout);
    for needle in [
        "worker-high",
        "worker-low",
        "runall health",
        "postgres:16",
        "stop_grace_period",
    ] {
        assert!(text.contains(needle), "compose config mentions {needle}");
    }
}

#[tokio::test]
async fn supervisor_runs_the_three_pools() {
    if !have("supervisord") || !have("supervisorctl") {
        return tool_missing("supervisord");
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let url = format!("sqlite://{}", db.display());
    let queue = Queue::connect(&url).await.unwrap();

    let ours = std::fs::read_to_string(deploy("supervisor-runall.conf")).unwrap();
    let logs = dir.path().display().to_string();
    let ours = ours
        .replace("/usr/local/bin/runall", env!("CARGO_BIN_EXE_runall"))
        .replace("postgres://app@127.0.0.1/app", &url)
        .replace("/srv/app/job.toml", &format!("{logs}/job.toml"))
        .replace("directory=/srv/app", &format!("directory={logs}"))
        .replace("/var/log/runall", &logs)
        .lines()
        .filter(|l| !l.starts_with("user="))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path().join("runall.conf"), ours).unwrap();
    let sock = dir.path().join("supervisor.sock");
    let main = dir.path().join("supervisord.conf");
    std::fs::write(
        &main,
        format!(
            "[unix_http_server]\nfile={sock}\n\n[supervisord]\nlogfile={logs}/supervisord.log\npidfile={logs}/supervisord.pid\nchildlogdir={logs}\n\n\
             [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl=unix://{sock}\n\n[include]\nfiles={logs}/runall.conf\n",
            sock = sock.display()
        ),
    )
    .unwrap();
    let started = Command::new("supervisord")
        .arg("-c")
        .arg(&main)
        .status()
        .unwrap();
    assert!(started.success(), "supervisord started");
    let ctl = |args: &[&str]| {
        let out = Command::new("supervisorctl")
            .arg("-c")
            .arg(&main)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = String::new();
    while Instant::now() < deadline {
        status = ctl(&["status"]);
        if status.matches("RUNNING").count() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let running = status.matches("RUNNING").count();
    if running == 5 {
        for q in ["high", "default", "low"] {
            for _ in 0..5 {
                SendEmail {
                    to: "ops@example.com".into(),
                    subject: q.into(),
                }
                .dispatch()
                .on_queue(q)
                .via(&queue)
                .await
                .unwrap();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let mut left = 0;
            for q in ["high", "default", "low"] {
                left += queue
                    .storage()
                    .inspect()
                    .unwrap()
                    .size(q)
                    .await
                    .unwrap()
                    .total();
            }
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let _ = ctl(&["shutdown"]);
    assert_eq!(
        running, 5,
        "2 high + 2 default + 1 low workers RUNNING: {status}"
    );
    for q in ["high", "default", "low"] {
        assert_eq!(
            queue
                .storage()
                .inspect()
                .unwrap()
                .size(q)
                .await
                .unwrap()
                .total(),
            0,
            "the {q} pool drained its queue"
        );
    }
    assert_eq!(
        queue
            .storage()
            .failed_store()
            .unwrap()
            .count()
            .await
            .unwrap(),
        0
    );
}

/// The Prometheus files: the scrape config and the alert rules pass `promtool check`, the
/// rules' unit tests (`runall-alerts.test.yml`) pass `promtool test rules`, and every metric
/// the rules and the Grafana dashboard read is one the worker or the dashboard documents
/// (and their tests check they serve).
#[test]
fn prometheus_files_check() {
    if !have("promtool") {
        return tool_missing("promtool");
    }
    let dir = deploy("");
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "runall-alerts.yml"],
        vec!["test", "rules", "runall-alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let served: String = [
        "../queue-core/src/worker/metrics.rs",
        "../queue-core/dashboard/src/metrics.rs",
    ]
    .iter()
    .map(|file| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap())
    .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana-dashboard.json")).unwrap())
            .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().clone())
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(exprs.len(), 10, "{exprs:?}");
    exprs.push(std::fs::read_to_string(deploy("runall-alerts.yml")).unwrap());
    let mut names = Vec::new();
    for expr in &exprs {
        for (at, _) in expr.match_indices("runall_") {
            let name: String = expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.starts_with("runall_") || name.len() <= "runall_".len() {
                continue;
            }
            let base = name.strip_suffix("_bucket").unwrap_or(&name).to_owned();
            names.push(base);
        }
    }
    names.sort();
    names.dedup();
    assert!(names.len() >= 9, "{names:?}");
    for name in names {
        assert!(
            served.contains(&format!("`{name}`")),
            "{name} is read by deploy/ but not one the worker or the dashboard serves"
        );
    }
}
