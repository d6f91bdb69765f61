//! Tests that need processes of their own: several workers on one directory, steps of the
//! journal killed at each point and finished by the next process (waiting jobs' steps
//! included), file modes under different umasks (the umask is per process).
//!
//! This binary is its own test runner (`harness = false` in Cargo.toml). Run with
//! `QUEUE_FILE_CHILD=<part>` it is one of the child processes the tests start; otherwise it
//! runs the tests, filtered by the words given on its command line, and reports each. So a
//! child is never counted as a test that passed.

mod common;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use queue_core::storage::{Guard, JobState, PageRequest, RecordKey};
use queue_core::{
    Effect, FailedJob, NewJob, Outcome, Pushed, ReserveRequest, Settle, Settled, Storage,
    StorageExt, Unique, WaitingJob,
};
use queue_file::{FileOptions, FileStorage};
use queue_tests::{job, request};

/// Which child a process is, and the directory of its store.
const CHILD: &str = "QUEUE_FILE_CHILD";
const DIR: &str = "QUEUE_FILE_CHILD_DIR";
/// Where a child writes what it did.
const OUT: &str = "QUEUE_FILE_CHILD_OUT";
const UMASK: &str = "QUEUE_FILE_CHILD_UMASK";
/// The step a crash child runs and the point where it dies.
const SCENARIO: &str = "QUEUE_FILE_CHILD_SCENARIO";
const CRASH_AT: &str = "QUEUE_FILE_CHILD_CRASH_AT";

type Test = (&'static str, fn());

const TESTS: &[Test] = &[
    (
        "worker_processes_share_a_directory",
        worker_processes_share_a_directory,
    ),
    (
        "effects_from_several_processes_apply_once",
        effects_from_several_processes_apply_once,
    ),
    (
        "guarded_steps_from_several_processes_apply_once",
        guarded_steps_from_several_processes_apply_once,
    ),
    (
        "a_dead_worker_process_returns_its_jobs_after_the_lease",
        a_dead_worker_process_returns_its_jobs_after_the_lease,
    ),
    (
        "a_step_killed_at_any_point_is_finished_once",
        a_step_killed_at_any_point_is_finished_once,
    ),
    (
        "a_push_killed_at_any_point_publishes_with_its_claim",
        a_push_killed_at_any_point_publishes_with_its_claim,
    ),
    (
        "a_replacing_push_killed_at_any_point_leaves_one_version",
        a_replacing_push_killed_at_any_point_leaves_one_version,
    ),
    (
        "a_retry_with_a_new_payload_killed_at_any_point_leaves_one_version",
        a_retry_with_a_new_payload_killed_at_any_point_leaves_one_version,
    ),
    (
        "waiting_jobs_killed_at_any_point_change_once",
        waiting_jobs_killed_at_any_point_change_once,
    ),
    (
        "a_guarded_step_killed_at_any_point_applies_once",
        a_guarded_step_killed_at_any_point_applies_once,
    ),
    ("modes_whatever_the_umask", modes_whatever_the_umask),
];

fn main() -> ExitCode {
    if let Ok(part) = std::env::var(CHILD) {
        return children(&part);
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let chosen: Vec<&Test> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f)))
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, test) in &chosen {
        let result = std::panic::catch_unwind(test);
        println!(
            "test {name} ... {}",
            if result.is_ok() { "ok" } else { "FAILED" }
        );
        if result.is_err() {
            failed.push(*name);
        }
    }
    let passed = chosen.len() - failed.len();
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        TESTS.len() - chosen.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// This binary as the child `part`, on the store at `dir`.
fn child(part: &str, dir: &Path, env: &[(&str, &str)]) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.env(CHILD, part).env(DIR, dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("{name} is set")))
}

fn children(part: &str) -> ExitCode {
    let dir = env_path(DIR);
    let rt = runtime();
    match part {
        "worker" => rt.block_on(worker_child(dir)),
        "effects" => rt.block_on(effects_child(dir)),
        "guarded" => rt.block_on(guarded_child(dir)),
        "dying" => rt.block_on(dying_child(dir)),
        "crash" => rt.block_on(crash_child(dir)),
        "umask" => rt.block_on(umask_child(dir)),
        other => panic!("no child part {other}"),
    }
    ExitCode::SUCCESS
}

async fn open(root: &Path) -> FileStorage {
    FileStorage::open(FileOptions::new(root))
        .await
        .expect("the store opens")
}

async fn failed_list(store: &FileStorage) -> Vec<FailedJob> {
    store
        .failed_store()
        .unwrap()
        .list(PageRequest::first(10_000))
        .await
        .unwrap()
        .items
}

async fn size(store: &FileStorage, queue: &str) -> queue_core::QueueSize {
    store.inspect().unwrap().size(queue).await.unwrap()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn wait_all(children: Vec<std::process::Child>) {
    for c in children {
        let output = c.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "a child process failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

const JOBS: usize = 2_000;
const WORKERS: usize = 6;

/// Six processes reserve and acknowledge from one directory holding 2,000 jobs: every job
/// is delivered exactly once.
fn worker_processes_share_a_directory() {
    runtime().block_on(async {
        let dir = common::private_dir();
        let root = dir.path().join("store");
        let store = open(&root).await;
        for chunk in (0..JOBS).collect::<Vec<_>>().chunks(500) {
            store
                .push(
                    chunk
                        .iter()
                        .map(|i| job("shared", "n", i.to_string().as_bytes()))
                        .collect(),
                )
                .await
                .unwrap();
        }
        let outs: Vec<_> = (0..WORKERS)
            .map(|i| dir.path().join(format!("worker-{i}.out")))
            .collect();
        let children: Vec<_> = outs
            .iter()
            .map(|out| {
                child("worker", &root, &[(OUT, out.to_str().unwrap())])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("a worker process starts")
            })
            .collect();
        wait_all(children);
        let mut all = Vec::new();
        let mut busy = 0;
        for out in &outs {
            let text = fs::read_to_string(out).unwrap();
            let got: Vec<String> = text.lines().map(str::to_owned).collect();
            busy += usize::from(!got.is_empty());
            all.extend(got);
        }
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), JOBS, "every job delivered");
        assert_eq!(all.len(), JOBS, "no job delivered twice");
        assert!(busy >= 2, "the work was shared ({busy} processes got jobs)");
        assert_eq!(size(&store, "shared").await.total(), 0);
    });
}

/// One worker process of [`worker_processes_share_a_directory`].
async fn worker_child(root: PathBuf) {
    let out = env_path(OUT);
    let store = open(&root).await;
    let request = ReserveRequest::new(["shared"], Duration::from_secs(60), 7);
    let mut seen = Vec::new();
    let mut empty = 0;
    while empty < 5 {
        let got = store.reserve(&request).await.unwrap();
        if got.is_empty() {
            empty += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        empty = 0;
        let leases: Vec<_> = got.iter().map(|r| r.lease.clone()).collect();
        assert!(store
            .acknowledge(&leases)
            .await
            .unwrap()
            .into_iter()
            .all(|ok| ok));
        seen.extend(
            got.into_iter()
                .map(|r| String::from_utf8(r.payload).unwrap()),
        );
    }
    let mut text = seen.join("\n");
    text.push('\n');
    fs::write(out, if seen.is_empty() { String::new() } else { text }).unwrap();
}

const EFFECT_JOBS: usize = 400;
const FOLLOW_UPS: usize = 40;

/// Four processes settle 400 jobs, each with a counter delta, a follow-up job whose key 40 of
/// them share, and one of the 400 dependencies of a waiting job, failing every fifth: the
/// counters add up exactly, each key is pushed once, the waiting job is released once, every
/// failed job is in the failed store once, and nothing is left in `tmp/` or `journal/`. The
/// store's lock is what keeps the processes' steps apart.
fn effects_from_several_processes_apply_once() {
    runtime().block_on(async {
        let dir = common::private_dir();
        let root = dir.path().join("store");
        let store = open(&root).await;
        store
            .push(
                (0..EFFECT_JOBS)
                    .map(|i| job("work", "n", i.to_string().as_bytes()))
                    .collect(),
            )
            .await
            .unwrap();
        let groups = store.groups().unwrap();
        groups
            .apply(vec![Effect::Hold(WaitingJob::new(
                "fan-in",
                EFFECT_JOBS as u32,
                job("joined", "join", b"j"),
            ))])
            .await
            .unwrap();
        let children: Vec<_> = (0..4)
            .map(|_| {
                child("effects", &root, &[])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("a process starts")
            })
            .collect();
        wait_all(children);
        let counters = store.groups().unwrap().counters("batch").await.unwrap();
        let get = |name: &str| {
            counters
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v)
        };
        let failed = failed_list(&store).await;
        assert_eq!(failed.len(), EFFECT_JOBS / 5, "{counters:?}");
        assert_eq!(get("failed"), (EFFECT_JOBS / 5) as i64, "{counters:?}");
        assert_eq!(get("done"), EFFECT_JOBS as i64, "{counters:?}");
        assert_eq!(get("pending"), -(EFFECT_JOBS as i64), "{counters:?}");
        assert_eq!(size(&store, "work").await.total(), 0);
        assert_eq!(
            size(&store, "next").await.waiting,
            FOLLOW_UPS as u64,
            "one follow-up per key"
        );
        assert_eq!(names_in(&root.join("claims")).len(), FOLLOW_UPS);
        assert_eq!(groups.waiting("fan-in").await.unwrap(), None);
        assert_eq!(size(&store, "joined").await.waiting, 1, "released once");
        assert!(names_in(&root.join("waiting")).is_empty());
        assert!(names_in(&root.join("tmp")).is_empty());
        assert!(names_in(&root.join("journal")).is_empty());
    });
}

/// One process of [`effects_from_several_processes_apply_once`].
async fn effects_child(root: PathBuf) {
    let store = open(&root).await;
    let request = ReserveRequest::new(["work"], Duration::from_secs(60), 5);
    loop {
        let got = store.reserve(&request).await.unwrap();
        if got.is_empty() {
            return;
        }
        let settles: Vec<Settle> = got
            .iter()
            .map(|r| {
                let n: usize = String::from_utf8_lossy(&r.payload).parse().unwrap();
                let (outcome, counter) = if n.is_multiple_of(5) {
                    (
                        Outcome::Fail {
                            reason: format!("job {n} fails"),
                        },
                        "failed",
                    )
                } else {
                    (Outcome::Ack, "succeeded")
                };
                let key = format!("next-{}", n % FOLLOW_UPS);
                Settle::new(r.lease.clone(), outcome)
                    .effect(Effect::Count {
                        group: "batch".into(),
                        deltas: vec![
                            ("done".into(), 1),
                            (counter.into(), 1),
                            ("pending".into(), -1),
                        ],
                    })
                    .effect(Effect::Push(
                        job("next", "then", key.as_bytes()).unique(Unique::new(key)),
                    ))
                    .effect(Effect::Deps {
                        key: "fan-in".into(),
                        delta: -1,
                    })
            })
            .collect();
        let reply = store.settle(settles, None).await.unwrap();
        assert!(reply.settled.iter().all(|s| *s == Settled::Applied));
    }
}

const TICKS: i64 = 60;
const RACERS: usize = 4;

/// Four processes race through 60 ticks of a schedule, each trying every tick with
/// `apply_if` (the counter at the tick, set to the next) and a step that counts a win and
/// pushes the tick's job: each tick is won exactly once across the processes (the wins they
/// report and the counter add up to 60), the counter ends at 60, one job per tick, and
/// nothing is left in `tmp/` or `journal/` by the refused steps.
fn guarded_steps_from_several_processes_apply_once() {
    runtime().block_on(async {
        let dir = common::private_dir();
        let root = dir.path().join("store");
        let store = open(&root).await;
        let outs: Vec<_> = (0..RACERS)
            .map(|i| dir.path().join(format!("racer-{i}.out")))
            .collect();
        let children: Vec<_> = outs
            .iter()
            .map(|out| {
                child("guarded", &root, &[(OUT, out.to_str().unwrap())])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("a process starts")
            })
            .collect();
        wait_all(children);
        let mut won = Vec::new();
        for out in &outs {
            let text = fs::read_to_string(out).unwrap();
            won.extend(text.lines().map(|l| l.parse::<i64>().unwrap()));
        }
        won.sort_unstable();
        assert_eq!(won, (0..TICKS).collect::<Vec<_>>(), "each tick won once");
        let counters = store.groups().unwrap().counters("schedule").await.unwrap();
        assert_eq!(
            counters,
            [("next".to_owned(), TICKS), ("wins".to_owned(), TICKS)]
        );
        assert_eq!(size(&store, "ticks").await.waiting, TICKS as u64);
        assert!(names_in(&root.join("tmp")).is_empty());
        assert!(names_in(&root.join("journal")).is_empty());
    });
}

/// One process of [`guarded_steps_from_several_processes_apply_once`]: writes the ticks it
/// won.
async fn guarded_child(root: PathBuf) {
    let out = env_path(OUT);
    let store = open(&root).await;
    let groups = store.groups().unwrap();
    let mut won = Vec::new();
    for tick in 0..TICKS {
        let key = format!("tick-{tick}");
        let applied = groups
            .apply_if(
                Guard::new("schedule", "next", tick, tick + 1),
                vec![
                    Effect::Push(job("ticks", "tick", key.as_bytes()).unique(Unique::new(key))),
                    Effect::Count {
                        group: "schedule".into(),
                        deltas: vec![("wins".into(), 1)],
                    },
                ],
            )
            .await
            .unwrap();
        if applied {
            won.push(tick.to_string());
        }
    }
    let text: String = won.iter().map(|t| format!("{t}\n")).collect();
    fs::write(out, text).unwrap();
}

/// A worker process that dies holding jobs gives them back when their lease runs out: the
/// next reservation counts a second attempt, and the dead worker's leases are stale.
fn a_dead_worker_process_returns_its_jobs_after_the_lease() {
    runtime().block_on(async {
        let dir = common::private_dir();
        let root = dir.path().join("store");
        let store = open(&root).await;
        store
            .push(
                (0..50)
                    .map(|i| job("dying", "n", i.to_string().as_bytes()))
                    .collect(),
            )
            .await
            .unwrap();
        let output = child("dying", &root, &[]).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let held = size(&store, "dying").await;
        assert_eq!(
            (held.waiting, held.reserved),
            (0, 50),
            "the dead worker held them all"
        );
        let long = Duration::from_secs(60);
        assert!(store
            .reserve(&request(&["dying"], long, 100))
            .await
            .unwrap()
            .is_empty());
        tokio::time::sleep(Duration::from_millis(600)).await;
        let back = store
            .reserve(&request(&["dying"], long, 100))
            .await
            .unwrap();
        assert_eq!(back.len(), 50);
        assert!(
            back.iter().all(|r| r.attempts == 2),
            "the dead worker's attempt counted"
        );
        let order: Vec<String> = back
            .iter()
            .map(|r| String::from_utf8(r.payload.clone()).unwrap())
            .collect();
        assert_eq!(
            order,
            (0..50).map(|i| i.to_string()).collect::<Vec<_>>(),
            "still FIFO"
        );
        let leases: Vec<_> = back.iter().map(|r| r.lease.clone()).collect();
        assert!(store
            .acknowledge(&leases)
            .await
            .unwrap()
            .into_iter()
            .all(|ok| ok));
    });
}

/// The child of [`a_dead_worker_process_returns_its_jobs_after_the_lease`]: reserves
/// everything with a short lease and exits at once, acknowledging nothing.
async fn dying_child(root: PathBuf) {
    let store = open(&root).await;
    let got = store
        .reserve(&request(&["dying"], Duration::from_millis(300), 100))
        .await
        .unwrap();
    assert_eq!(got.len(), 50);
    std::process::exit(0);
}

/// Where a step of the journal can die: after its intent is durable, after its moves are
/// taken, after its claims, counters and publications, after its taken files went where
/// they go (the intent still there).
const POINTS: [&str; 4] = ["written", "taken", "applied", "finalized"];

/// Runs the crash child with `scenario` until it dies at `point`.
fn crash(root: &Path, scenario: &str, point: &str) {
    let output = child("crash", root, &[(SCENARIO, scenario), (CRASH_AT, point)])
        .output()
        .unwrap();
    assert_eq!(
        output.status.signal(),
        Some(rustix::process::Signal::ABORT.as_raw()),
        "{scenario} at {point}: the child died at the point ({:?}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A settlement with a counter delta, a follow-up job and a record, killed at each point of
/// its step: the next process to open the store finishes it, so that the job is settled (or,
/// killed before its move was taken, still reserved) and never lost, the counter is added
/// once and the follow-up pushed and the record written exactly when the job was settled,
/// the job's claim goes with it, and opening again changes nothing more.
fn a_step_killed_at_any_point_is_finished_once() {
    runtime().block_on(async {
        for outcome in ["ack", "fail"] {
            for point in POINTS {
                let dir = common::private_dir();
                let root = dir.path().join("store");
                let store = open(&root).await;
                let pushed = store
                    .push(vec![job("q", "victim", b"v").unique(Unique::new("victim"))])
                    .await
                    .unwrap();
                let status = RecordKey::new(pushed[0].id().clone(), RecordKey::STATUS);
                drop(store);
                crash(&root, outcome, point);
                let case = format!("{outcome} killed at {point}");
                // Twice: the second open must find nothing left to do.
                for round in 0..2 {
                    let store = open(&root).await;
                    let settled = point != "written";
                    let counters = store.groups().unwrap().counters("g").await.unwrap();
                    let failed = failed_list(&store).await;
                    let waiting_next = size(&store, "next").await.waiting;
                    let victim = size(&store, "q").await;
                    let record = store
                        .capabilities()
                        .track
                        .unwrap()
                        .records(std::slice::from_ref(&status))
                        .await
                        .unwrap();
                    let victim_pushed = store
                        .push(vec![job("q", "again", b"a").unique(Unique::new("victim"))])
                        .await
                        .unwrap();
                    if settled {
                        assert_eq!(counters, [("done".to_owned(), 1)], "{case} ({round})");
                        assert_eq!(waiting_next, 1, "{case}: the follow-up once ({round})");
                        assert_eq!(victim.total(), 0, "{case}: settled ({round})");
                        assert_eq!(
                            record,
                            [Some(outcome.as_bytes().to_vec())],
                            "{case}: the record with the job ({round})"
                        );
                        if outcome == "fail" {
                            assert_eq!(failed.len(), 1, "{case}: one record ({round})");
                            assert_eq!(failed[0].error, "killed while failing");
                            assert_eq!(failed[0].name, "victim");
                        } else {
                            assert!(failed.is_empty(), "{case} ({round})");
                        }
                        assert!(
                            victim_pushed[0].is_created(),
                            "{case}: the claim was released with the job ({round})"
                        );
                    } else {
                        assert!(counters.is_empty(), "{case}: nothing counted ({round})");
                        assert_eq!(waiting_next, 0, "{case}: no follow-up ({round})");
                        assert!(failed.is_empty(), "{case} ({round})");
                        assert_eq!(victim.reserved, 1, "{case}: still reserved ({round})");
                        assert_eq!(record, [None], "{case}: no record ({round})");
                        assert!(
                            !victim_pushed[0].is_created(),
                            "{case}: the job keeps its claim ({round})"
                        );
                    }
                    // Undo the probe (a waiting job) so that the second round sees the same
                    // store; the victim, reserved, is not cleared.
                    let cleared = store.inspect().unwrap().clear("q").await.unwrap();
                    assert_eq!(cleared, u64::from(victim_pushed[0].is_created()), "{case}");
                    assert!(names_in(&root.join("tmp")).is_empty(), "{case}");
                    assert!(names_in(&root.join("journal")).is_empty(), "{case}");
                }
            }
        }
    });
}

/// A push of a job with a claim, killed at each point of its step: once its intent is
/// written the job is published with its claim when the next process opens the store.
fn a_push_killed_at_any_point_publishes_with_its_claim() {
    runtime().block_on(async {
        for point in ["written", "applied", "finalized"] {
            let dir = common::private_dir();
            let root = dir.path().join("store");
            drop(open(&root).await);
            crash(&root, "push", point);
            let store = open(&root).await;
            assert_eq!(size(&store, "q").await.waiting, 1, "{point}");
            let again = store
                .push(vec![job("q", "again", b"a").unique(Unique::new("pushed"))])
                .await
                .unwrap();
            assert!(
                !again[0].is_created(),
                "{point}: the claim holds: {again:?}"
            );
            let got = store
                .reserve(&request(&["q"], Duration::from_secs(60), 1))
                .await
                .unwrap();
            assert_eq!(got[0].payload, b"p", "{point}");
            assert_eq!(again[0].id(), &got[0].lease.job_id, "{point}");
            assert!(names_in(&root.join("tmp")).is_empty(), "{point}");
            assert!(names_in(&root.join("journal")).is_empty(), "{point}");
        }
    });
}

/// A push replacing a queued job (`Unique::replace`), killed at each point of its step:
/// killed before the old version was taken, the job is as it was; after, the next process
/// to open the store publishes the new version. Either way one job holds the key, under its
/// id, attempts and claim, and opening again changes nothing more.
fn a_replacing_push_killed_at_any_point_leaves_one_version() {
    runtime().block_on(async {
        for point in POINTS {
            let dir = common::private_dir();
            let root = dir.path().join("store");
            let store = open(&root).await;
            let id = store
                .push_one(job("q", "old", b"old").unique(Unique::new("debounced")))
                .await
                .unwrap()
                .into_id();
            drop(store);
            crash(&root, "replace", point);
            let (name, payload): (&str, &[u8]) = match point {
                "written" => ("old", b"old"),
                _ => ("new", b"new"),
            };
            for round in 0..2 {
                let case = format!("killed at {point} ({round})");
                let store = open(&root).await;
                let jobs = store
                    .inspect()
                    .unwrap()
                    .jobs("q", JobState::Waiting, PageRequest::first(10))
                    .await
                    .unwrap()
                    .items;
                assert_eq!(jobs.len(), 1, "{case}: one job");
                assert_eq!(
                    (&jobs[0].id, jobs[0].name.as_str(), jobs[0].attempts),
                    (&id, name, 0),
                    "{case}"
                );
                assert_eq!(jobs[0].unique_key.as_deref(), Some("debounced"), "{case}");
                assert_eq!(size(&store, "q").await.total(), 1, "{case}");
                let again = store
                    .push(vec![
                        job("q", "probe", b"p").unique(Unique::new("debounced"))
                    ])
                    .await
                    .unwrap();
                assert_eq!(
                    again,
                    [Pushed::Duplicate(id.clone())],
                    "{case}: the claim holds"
                );
                assert!(names_in(&root.join("tmp")).is_empty(), "{case}");
                assert!(names_in(&root.join("journal")).is_empty(), "{case}");
                assert!(failed_list(&store).await.is_empty(), "{case}");
            }
            let store = open(&root).await;
            let got = store
                .reserve(&request(&["q"], Duration::from_secs(60), 10))
                .await
                .unwrap();
            assert_eq!(got.len(), 1, "{point}");
            assert_eq!(
                (&got[0].lease.job_id, got[0].payload.as_slice()),
                (&id, payload),
                "{point}"
            );
        }
    });
}

/// A retry that gives the job a new payload (`Effect::Payload`, how a worker re-seals an
/// encrypted job with the active key) with a counter delta, killed at each point of its
/// step: the job comes back once, with the new payload and its attempt counted if the move
/// was taken, with the old one after its lease if not; it keeps its claim, the counter is
/// added with the move only, and nothing is left in `tmp/` or `journal/`.
fn a_retry_with_a_new_payload_killed_at_any_point_leaves_one_version() {
    runtime().block_on(async {
        for point in POINTS {
            let dir = common::private_dir();
            let root = dir.path().join("store");
            let store = open(&root).await;
            let id = store
                .push_one(job("q", "sealed", b"old").unique(Unique::new("sealed")))
                .await
                .unwrap()
                .into_id();
            drop(store);
            crash(&root, "rewrite", point);
            let taken = point != "written";
            for round in 0..2 {
                let case = format!("killed at {point} ({round})");
                let store = open(&root).await;
                let size = size(&store, "q").await;
                assert_eq!(size.total(), 1, "{case}: one job {size:?}");
                assert_eq!(size.reserved, u64::from(!taken), "{case}: {size:?}");
                let counters = store.groups().unwrap().counters("g").await.unwrap();
                let want: Vec<(String, i64)> = if taken {
                    vec![("retried".to_owned(), 1)]
                } else {
                    Vec::new()
                };
                assert_eq!(counters, want, "{case}");
                let again = store
                    .push(vec![job("q", "probe", b"p").unique(Unique::new("sealed"))])
                    .await
                    .unwrap();
                assert_eq!(
                    again,
                    [Pushed::Duplicate(id.clone())],
                    "{case}: the claim holds"
                );
                assert!(names_in(&root.join("tmp")).is_empty(), "{case}");
                assert!(names_in(&root.join("journal")).is_empty(), "{case}");
                assert!(failed_list(&store).await.is_empty(), "{case}");
            }
            // Past the crash child's lease of 200 ms: a job whose move was not taken is
            // back too.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let store = open(&root).await;
            let got = store
                .reserve(&request(&["q"], Duration::from_secs(60), 10))
                .await
                .unwrap();
            assert_eq!(got.len(), 1, "{point}");
            let payload: &[u8] = if taken { b"new" } else { b"old" };
            assert_eq!(
                (&got[0].lease.job_id, got[0].payload.as_slice()),
                (&id, payload),
                "{point}"
            );
        }
    });
}

fn hold(key: &str, deps: u32, job: NewJob) -> Effect {
    Effect::Hold(WaitingJob::new(key, deps, job))
}

fn deps(key: &str, delta: i64) -> Effect {
    Effect::Deps {
        key: key.to_owned(),
        delta,
    }
}

/// The waiting-job effects of the crash tests' `waiting` and `apply` steps: `release` meets
/// its last dependency, `stay` loses one of two, `skip` is skipped, `new` is held.
fn waiting_effects() -> Vec<Effect> {
    vec![
        deps("release", -1),
        deps("stay", -1),
        Effect::Skip { key: "skip".into() },
        hold("new", 1, job("next", "new", b"n")),
        Effect::Count {
            group: "g".into(),
            deltas: vec![("done".into(), 1)],
        },
    ]
}

/// What every step of the journal can reach with waiting-job effects in a settle: the
/// points of [`POINTS`] and `planned` (the intent written again with its plan).
const WAITING_POINTS: [&str; 5] = ["written", "taken", "planned", "applied", "finalized"];

/// A settlement and an apply with waiting-job effects (a release with a claim, a dependency
/// change, a skip, a hold, a counter), each killed at each point of its step: the next
/// process to open the store finishes it, so that every effect happens once exactly when the
/// step happened (the settlement: when its move was taken; the apply: once its intent was
/// written), the released job is in its queue once with its claim, and opening again
/// changes nothing more.
fn waiting_jobs_killed_at_any_point_change_once() {
    runtime().block_on(async {
        for scenario in ["waiting", "apply"] {
            for point in WAITING_POINTS {
                if scenario == "apply" && point == "planned" {
                    continue; // an apply's intent has its plan from the start
                }
                let dir = common::private_dir();
                let root = dir.path().join("store");
                let store = open(&root).await;
                store.push(vec![job("q", "victim", b"v")]).await.unwrap();
                store
                    .groups()
                    .unwrap()
                    .apply(vec![
                        hold(
                            "release",
                            1,
                            job("next", "released", b"r").unique(Unique::new("released")),
                        ),
                        hold("stay", 2, job("next", "stay", b"s")),
                        hold("skip", 1, job("next", "skipped", b"k")),
                    ])
                    .await
                    .unwrap();
                drop(store);
                crash(&root, scenario, point);
                let case = format!("{scenario} killed at {point}");
                let happened = scenario == "apply" || point != "written";
                for round in 0..2 {
                    let store = open(&root).await;
                    let groups = store.groups().unwrap();
                    let mut left = Vec::new();
                    for key in ["release", "stay", "skip", "new"] {
                        left.push(groups.waiting(key).await.unwrap());
                    }
                    let counters = groups.counters("g").await.unwrap();
                    let next = size(&store, "next").await;
                    let probe = store
                        .push(vec![job("probe", "p", b"p").unique(Unique::new("released"))])
                        .await
                        .unwrap();
                    if happened {
                        assert_eq!(left, [None, Some(1), None, Some(1)], "{case} ({round})");
                        assert_eq!(counters, [("done".to_owned(), 1)], "{case} ({round})");
                        assert_eq!(next.total(), 1, "{case}: released once ({round})");
                        assert!(
                            !probe[0].is_created(),
                            "{case}: the released job holds its claim ({round})"
                        );
                    } else {
                        assert_eq!(left, [Some(1), Some(2), Some(1), None], "{case} ({round})");
                        assert!(counters.is_empty(), "{case}: nothing counted ({round})");
                        assert_eq!(next.total(), 0, "{case}: nothing released ({round})");
                        assert!(probe[0].is_created(), "{case}: no claim taken ({round})");
                    }
                    if scenario == "waiting" {
                        let victim = size(&store, "q").await;
                        assert_eq!(
                            victim.total(),
                            u64::from(!happened),
                            "{case}: settled or still reserved ({round})"
                        );
                    }
                    // Undo the probe so that the second round sees the same store.
                    store.inspect().unwrap().clear("probe").await.unwrap();
                    assert!(names_in(&root.join("tmp")).is_empty(), "{case} ({round})");
                    assert!(names_in(&root.join("journal")).is_empty(), "{case}");
                }
                let store = open(&root).await;
                let got = store
                    .reserve(&request(&["next"], Duration::from_secs(60), 5))
                    .await
                    .unwrap();
                let names: Vec<&str> = got.iter().map(|r| r.name.as_str()).collect();
                let want: &[&str] = if happened { &["released"] } else { &[] };
                assert_eq!(names, want, "{case}");
            }
        }
    });
}

/// The effects of the crash test's `guarded` step: a job pushed with a claim and a counter
/// of the guard's own group.
fn guarded_effects() -> Vec<Effect> {
    vec![
        Effect::Push(job("ticks", "tick", b"t").unique(Unique::new("tick"))),
        Effect::Count {
            group: "schedule".into(),
            deltas: vec![("wins".into(), 1)],
        },
    ]
}

/// An `apply_if` that wins (the counter at 5, set to 9), killed at each point of its step:
/// its intent was written before any of them, so the next process to open the store sets the
/// counter and applies the effects, both once (the counter's delta is not added twice, the
/// job is pushed once with its claim); opening again changes nothing more, and the tick is
/// then refused while the next one applies.
fn a_guarded_step_killed_at_any_point_applies_once() {
    runtime().block_on(async {
        for point in POINTS {
            let dir = common::private_dir();
            let root = dir.path().join("store");
            let store = open(&root).await;
            let groups = store.groups().unwrap();
            assert!(groups
                .apply_if(Guard::new("schedule", "next", 0, 5), vec![])
                .await
                .unwrap());
            drop(store);
            crash(&root, "guarded", point);
            let case = format!("guarded killed at {point}");
            for round in 0..2 {
                let store = open(&root).await;
                let groups = store.groups().unwrap();
                let counters = groups.counters("schedule").await.unwrap();
                assert_eq!(
                    counters,
                    [("next".to_owned(), 9), ("wins".to_owned(), 1)],
                    "{case} ({round})"
                );
                assert_eq!(size(&store, "ticks").await.waiting, 1, "{case} ({round})");
                let again = store
                    .push(vec![job("ticks", "again", b"a").unique(Unique::new("tick"))])
                    .await
                    .unwrap();
                assert!(!again[0].is_created(), "{case}: the claim holds ({round})");
                assert!(names_in(&root.join("tmp")).is_empty(), "{case} ({round})");
                assert!(names_in(&root.join("journal")).is_empty(), "{case}");
            }
            let store = open(&root).await;
            let groups = store.groups().unwrap();
            let refused = groups
                .apply_if(Guard::new("schedule", "next", 5, 9), guarded_effects())
                .await
                .unwrap();
            assert!(!refused, "{case}: the tick was won already");
            let next = groups
                .apply_if(Guard::new("schedule", "next", 9, 10), vec![])
                .await
                .unwrap();
            assert!(next, "{case}: the next tick applies");
            assert_eq!(
                groups.counters("schedule").await.unwrap(),
                [("next".to_owned(), 10), ("wins".to_owned(), 1)],
                "{case}"
            );
            assert!(names_in(&root.join("tmp")).is_empty(), "{case}");
        }
    });
}

/// The child of the crash tests: runs one step that dies at `CRASH_AT`.
async fn crash_child(root: PathBuf) {
    let scenario = std::env::var(SCENARIO).unwrap();
    let point: &'static str = std::env::var(CRASH_AT).unwrap().leak();
    let store = open(&root).await;
    if scenario == "apply" {
        queue_file::__crash_at(point);
        store
            .groups()
            .unwrap()
            .apply(waiting_effects())
            .await
            .unwrap();
        std::process::exit(3); // not reached: the apply dies at the point
    }
    if scenario == "guarded" {
        queue_file::__crash_at(point);
        store
            .groups()
            .unwrap()
            .apply_if(Guard::new("schedule", "next", 5, 9), guarded_effects())
            .await
            .unwrap();
        std::process::exit(3); // not reached: the step dies at the point
    }
    if scenario == "replace" {
        queue_file::__crash_at(point);
        let new = job("q", "new", b"new").unique(Unique::new("debounced").replacing());
        store.push(vec![new]).await.unwrap();
        std::process::exit(3); // not reached: the push dies at the point
    }
    if scenario == "push" {
        queue_file::__crash_at(point);
        let pushed: NewJob = job("q", "pushed", b"p").unique(Unique::new("pushed"));
        store.push(vec![pushed]).await.unwrap();
        std::process::exit(3); // not reached: the push dies at the point
    }
    // A short lease: killed before its move was taken, the job must come back after it.
    let got = store
        .reserve(&request(&["q"], Duration::from_millis(200), 1))
        .await
        .unwrap();
    if scenario == "rewrite" {
        let settle = Settle::new(
            got[0].lease.clone(),
            Outcome::Retry {
                delay: Duration::ZERO,
            },
        )
        .effect(Effect::Payload(b"new".to_vec()))
        .effect(Effect::Count {
            group: "g".into(),
            deltas: vec![("retried".into(), 1)],
        });
        queue_file::__crash_at(point);
        store.settle(vec![settle], None).await.unwrap();
        std::process::exit(3);
    }
    if scenario == "waiting" {
        let settle = waiting_effects()
            .into_iter()
            .fold(Settle::ack(got[0].lease.clone()), Settle::effect);
        queue_file::__crash_at(point);
        store.settle(vec![settle], None).await.unwrap();
        std::process::exit(3);
    }
    let outcome = match scenario.as_str() {
        "ack" => Outcome::Ack,
        _ => Outcome::Fail {
            reason: "killed while failing".into(),
        },
    };
    let settle = Settle::new(got[0].lease.clone(), outcome)
        .effect(Effect::Count {
            group: "g".into(),
            deltas: vec![("done".into(), 1)],
        })
        .effect(Effect::Push(
            job("next", "then", b"n").unique(Unique::new("next")),
        ))
        .effect(Effect::Record {
            kind: RecordKey::STATUS.into(),
            value: scenario.as_bytes().to_vec(),
            ttl: Duration::from_secs(3600),
        });
    queue_file::__crash_at(point);
    store.settle(vec![settle], None).await.unwrap();
    std::process::exit(3);
}

/// Directories 0700 and files 0600 under umasks 022, 000 and 277.
fn modes_whatever_the_umask() {
    for umask in ["022", "000", "277"] {
        let dir = common::private_dir();
        let output = child("umask", dir.path(), &[(UMASK, umask)])
            .output()
            .expect("the child starts");
        assert!(
            output.status.success(),
            "umask {umask}: the child failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let root = dir.path().join("store");
        let paths = common::walk(&root);
        assert!(
            paths.len() > 15,
            "umask {umask}: the child wrote a store: {paths:?}"
        );
        for path in paths {
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let want = if meta.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(
                mode,
                want,
                "umask {umask}: {} is {mode:04o}",
                path.display()
            );
        }
        for file in ["claims", "groups", "failed", "locks"] {
            assert_eq!(
                names_in(&root.join(file)).len(),
                1,
                "umask {umask}: one file in {file}/"
            );
        }
        assert!(root.join("control/restart").is_file());
    }
}

/// The child of [`modes_whatever_the_umask`]: sets its umask and makes every kind of file.
async fn umask_child(dir: PathBuf) {
    let umask = std::env::var(UMASK).unwrap();
    let mask = u32::from_str_radix(&umask, 8).unwrap();
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(mask));
    let store = open(&dir.join("store")).await;
    let pushed = store
        .push(vec![
            job("modes", "a", b"1"),
            job("modes", "b", b"2").unique(Unique::new("b")),
            job("other queue/é", "c", b"3"),
        ])
        .await
        .unwrap();
    assert_eq!(pushed.len(), 3);
    let request = request(&["modes"], Duration::from_secs(60), 1);
    let got = store.reserve(&request).await.unwrap();
    let settle = Settle::fail(got[0].lease.clone(), "for the failed store").effect(Effect::Count {
        group: "g".into(),
        deltas: vec![("n".into(), 1)],
    });
    assert_eq!(
        store.settle(vec![settle], None).await.unwrap().settled,
        [Settled::Applied]
    );
    let held = store.reserve(&request).await.unwrap();
    assert_eq!(held.len(), 1, "one job stays reserved");
    assert!(store
        .lock("a key", "me", Duration::from_secs(60))
        .await
        .unwrap());
    store.control().unwrap().request_restart().await.unwrap();
}
