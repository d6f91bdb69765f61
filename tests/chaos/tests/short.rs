//! The short form of the chaos harness, run in CI against every driver: each test runs the
//! real `chaos` binary (which starts real `chaos-worker` processes) with `--short` and checks
//! the figures it reports.
//!
//! Servers come from `POSTGRES_URL`, `MYSQL_URL`, `REDIS_URL` and `MEMCACHED_URL` (local
//! defaults). A server that is not running prints `skipped: no server at URL` outside CI and
//! fails the test with `CI=true`. The backend-restart scenario stops and starts its server,
//! so it runs only in CI or with `CHAOS_RESTART_BACKEND=1` (elsewhere it reports itself not
//! run), and then against a private server of the same kind on a port of its own
//! (`scripts/private-servers.sh`), never one other tests use.
//!
//! The tests run one at a time (they kill and restart processes, and share the servers),
//! under one lock.

use std::net::{TcpStream, ToSocketAddrs};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use queue_chaos::report::{ScenarioReport, Summary, Verdict};

static SERIAL: Mutex<()> = Mutex::new(());

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn restart_backend() -> bool {
    in_ci() || std::env::var("CHAOS_RESTART_BACKEND").is_ok_and(|v| v == "1")
}

fn env_url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Whether the server of `url` accepts a connection (`None`: it does not; the skip was
/// printed).
fn server_up(url: &str, default_port: u16) -> Option<()> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(default_port)),
        None => (hostport.to_owned(), default_port),
    };
    let addrs = match (host.as_str(), port).to_socket_addrs() {
        Ok(addrs) => addrs.collect::<Vec<_>>(),
        Err(e) => return queue_tests::server_missing(url, e),
    };
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(_) => return Some(()),
            Err(e) => last = Some(e),
        }
    }
    queue_tests::server_missing(
        url,
        last.map_or_else(|| "no address".to_owned(), |e| e.to_string()),
    )
}

/// Every scenario but backend-restart (6).
const ALL_BUT_RESTART: &str = "1,2,3,4,5,7,8,9,10,11,12,13";

/// Runs every scenario's short form against `url` and returns the reports; where the
/// backend is restarted (`private` names the server's kind), backend-restart runs against a
/// private server of that kind instead.
fn chaos(url: &str, private: Option<&str>) -> Vec<ScenarioReport> {
    match private {
        Some(kind) if restart_backend() => {
            let mut reports = chaos_run(url, ALL_BUT_RESTART, false);
            let private_url = private_server(kind);
            reports.extend(chaos_run(&private_url, "backend-restart", true));
            reports
        }
        _ => chaos_run(url, "all", false),
    }
}

/// Starts the private server of `kind` (if it is not running) and returns its URL.
fn private_server(kind: &str) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/private-servers.sh"
    );
    let out = Command::new("bash")
        .arg(script)
        .arg(kind)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "the private {kind} server did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs the short form of `scenarios` against `url`.
fn chaos_run(url: &str, scenarios: &str, restart: bool) -> Vec<ScenarioReport> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let json = dir.path().join("chaos.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chaos"));
    cmd.args(["--url", url, "--short", "--scenario", scenarios])
        .arg("--json")
        .arg(&json)
        .arg("--dir")
        .arg(std::env::temp_dir().join("queue-chaos-ci"))
        .arg("--worker")
        .arg(env!("CARGO_BIN_EXE_chaos-worker"));
    if restart {
        cmd.arg("--restart-backend");
    }
    let out = cmd.output().expect("the chaos binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&json).expect("chaos wrote its JSON");
    let summary: Summary = serde_json::from_str(&text).expect("the JSON is a summary");
    assert_eq!(summary.form, "short");
    summary.reports
}

fn get<'a>(reports: &'a [ScenarioReport], scenario: &str) -> &'a ScenarioReport {
    reports
        .iter()
        .find(|r| r.scenario == scenario)
        .unwrap_or_else(|| panic!("no report for {scenario}"))
}

/// The guarantees every driver must show in the short form.
fn assert_guarantees(reports: &[ScenarioReport]) {
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .map(|r| {
            let checks: Vec<String> = r
                .checks
                .iter()
                .filter(|c| c.ok == Some(false))
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            format!("{} ({}): {checks:?} {:?}", r.scenario, r.driver, r.details)
        })
        .collect();
    assert!(failed.is_empty(), "failed scenarios: {failed:#?}");

    for r in reports.iter().filter(|r| r.verdict == Verdict::Pass) {
        assert_eq!(r.stuck, 0, "{}: stuck", r.scenario);
        assert_eq!(
            r.unallowed_duplicates(),
            0,
            "{}: unallowed duplicates",
            r.scenario
        );
        assert_eq!(r.unexpected, 0, "{}: unexpected", r.scenario);
        if r.scenario != "backend-restart" || r.durable {
            assert_eq!(r.lost, 0, "{}: lost", r.scenario);
        }
    }
    let baseline = get(reports, "baseline");
    assert_eq!(baseline.duplicated, 0);
    assert!(baseline.jobs >= 1000, "the baseline ran its jobs");
    let storm = get(reports, "kill-storm");
    assert!(
        storm.faults.kills >= 2,
        "the storm killed workers: {:?}",
        storm.faults
    );
    let stopped = get(reports, "stopped-worker");
    // Fenced either way: the store refused the late acknowledgements, or the stopped
    // worker's lease keeper stopped the job itself when it woke (the scenario's own check).
    assert!(
        stopped
            .find_check(
                "a stopped worker's late work fenced (acknowledges refused or jobs stopped)"
            )
            .is_some_and(|c| c.ok == Some(true)),
        "a stopped worker's late work was fenced: {:?}",
        stopped.checks
    );
    let overlap = get(reports, "without-overlapping");
    assert!(
        overlap
            .find_check("0 overlapping intervals")
            .is_some_and(|c| c.ok == Some(true)),
        "{:?}",
        overlap.checks
    );
    let limits = get(reports, "limit-storm");
    for name in [
        "at most 2 running at once per key",
        "no attempt counted for waiting",
    ] {
        assert!(
            limits.find_check(name).is_some_and(|c| c.ok == Some(true)),
            "limit-storm: {name}: {:?}",
            limits.checks
        );
    }
    // The rate key runs where the driver has group counters; elsewhere a worker with a rate
    // limit refuses to start, and the rate check is not applicable.
    let rate = limits
        .checks
        .iter()
        .find(|c| c.name.starts_with("k starts of the rate key"));
    let refused = limits
        .find_check("a worker with a rate limit refuses to start (no group counters)")
        .is_some_and(|c| c.ok == Some(true));
    assert!(
        rate.is_some_and(|c| c.ok == Some(true) || (c.ok.is_none() && refused)),
        "limit-storm: the rate key: {:?}",
        limits.checks
    );
    let cancels = get(reports, "cancel-storm");
    if cancels
        .note
        .as_deref()
        .is_none_or(|n| !n.starts_with("not applicable"))
    {
        for name in [
            "every cancelled job ends cancelled (or succeeded, too late)",
            "cancels reached both waiting and running jobs",
        ] {
            assert!(
                cancels.find_check(name).is_some_and(|c| c.ok == Some(true)),
                "cancel-storm: {name}: {:?}",
                cancels.checks
            );
        }
    }
    let poison = get(reports, "poison");
    assert!(
        poison.failed >= 90,
        "bad items in the failed store: {}",
        poison.failed
    );
    let hanging = get(reports, "hanging-job");
    assert!(hanging
        .recovery
        .as_ref()
        .is_some_and(|t| t.max_ms <= 3000.0));
    let restart = get(reports, "backend-restart");
    if restart_backend()
        && restart
            .note
            .as_deref()
            .is_none_or(|n| !n.starts_with("not applicable"))
    {
        assert_eq!(restart.verdict, Verdict::Pass, "{:?}", restart.checks);
        assert_eq!(restart.faults.backend_restarts, 1);
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn sqlite() {
    let _serial = lock();
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite://{}", dir.path().join("chaos.db").display());
    let reports = chaos(&url, None);
    assert_guarantees(&reports);
}

#[test]
fn file() {
    let _serial = lock();
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("file://{}", dir.path().join("store").display());
    let reports = chaos(&url, None);
    assert_guarantees(&reports);
}

#[test]
fn postgres() {
    let _serial = lock();
    let url = env_url("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test");
    if server_up(&url, 5432).is_none() {
        return;
    }
    assert_guarantees(&chaos(&url, Some("postgres")));
}

#[test]
fn mysql() {
    let _serial = lock();
    let url = env_url("MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    if server_up(&url, 3306).is_none() {
        return;
    }
    assert_guarantees(&chaos(&url, Some("mysql")));
}

#[test]
fn redis() {
    let _serial = lock();
    let url = env_url("REDIS_URL", "redis://127.0.0.1:6379");
    if server_up(&url, 6379).is_none() {
        return;
    }
    assert_guarantees(&chaos(&url, Some("redis")));
}

#[test]
fn memcached() {
    let _serial = lock();
    let url = env_url("MEMCACHED_URL", "memcache://127.0.0.1:11211");
    if server_up(&url, 11211).is_none() {
        return;
    }
    assert_guarantees(&chaos(&url, Some("memcached")));
}
