//! Tests that need processes of their own: several workers on one directory, and file modes
//! under different umasks (the umask is per process, so each runs in a child).
//!
//! The children are this test binary run again with an environment variable naming their
//! part; without it, the child tests return at once.

mod common;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use queue_core::{ReserveRequest, Storage};
use queue_file::{FileOptions, FileStorage};

const WORKER_DIR: &str = "QUEUE_FILE_TEST_WORKER_DIR";
const WORKER_OUT: &str = "QUEUE_FILE_TEST_WORKER_OUT";
const UMASK_DIR: &str = "QUEUE_FILE_TEST_UMASK_DIR";
const UMASK: &str = "QUEUE_FILE_TEST_UMASK";

/// Runs the test `name` of this binary in a child process with `env`.
fn child(name: &str, env: &[(&str, &Path)], extra: &[(&str, &str)]) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

const JOBS: usize = 2_000;
const WORKERS: usize = 6;

/// Six processes reserve and acknowledge from one directory holding 2,000 jobs: every job
/// is delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_share_a_directory() {
    let dir = common::private_dir();
    let root = dir.path().join("store");
    let store = FileStorage::open(FileOptions::new(&root)).await.unwrap();
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(500) {
        store
            .push(
                chunk
                    .iter()
                    .map(|i| queue_tests::job("shared", "n", i.to_string().as_bytes()))
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
            child(
                "worker_child",
                &[(WORKER_DIR, &root), (WORKER_OUT, out)],
                &[],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("a worker process starts")
        })
        .collect();
    for c in children {
        let output = c.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "a worker process failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
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
    assert_eq!(store.size("shared").await.unwrap().total(), 0);
}

/// One worker process of [`worker_processes_share_a_directory`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_child() {
    let (Some(root), Some(out)) = (std::env::var_os(WORKER_DIR), std::env::var_os(WORKER_OUT))
    else {
        return;
    };
    let store = FileStorage::open(FileOptions::new(root)).await.unwrap();
    let request = ReserveRequest {
        queues: vec!["shared".into()],
        lease: Duration::from_secs(60),
        limit: 7,
        name: None,
    };
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

/// Directories 0700 and files 0600 under umasks 022, 000 and 277.
#[test]
fn modes_whatever_the_umask() {
    for umask in ["022", "000", "277"] {
        let dir = common::private_dir();
        let output = child("umask_child", &[(UMASK_DIR, dir.path())], &[(UMASK, umask)])
            .output()
            .expect("the child starts");
        assert!(
            output.status.success(),
            "umask {umask}: the child failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let root = dir.path().join("store");
        let paths = common::walk(&root);
        assert!(
            paths.len() > 10,
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
    }
}

/// The child of [`modes_whatever_the_umask`]: sets its umask and uses every kind of file.
#[tokio::test(flavor = "current_thread")]
async fn umask_child() {
    let (Some(dir), Ok(umask)) = (std::env::var_os(UMASK_DIR), std::env::var(UMASK)) else {
        return;
    };
    let mask = u32::from_str_radix(&umask, 8).unwrap();
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(mask));
    let root = Path::new(&dir).join("store");
    let store = FileStorage::open(FileOptions::new(&root)).await.unwrap();
    let ids = store
        .push(vec![
            queue_tests::job("modes", "a", b"1"),
            queue_tests::job("modes", "b", b"2"),
            queue_tests::job("other queue/é", "c", b"3"),
        ])
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    let request = queue_tests::request(&["modes"], Duration::from_secs(60), 1);
    let got = store.reserve(&request).await.unwrap();
    store
        .fail(&got[0].lease, "for the failed store")
        .await
        .unwrap();
    let held = store.reserve(&request).await.unwrap();
    assert_eq!(held.len(), 1, "one job stays reserved");
    assert!(store
        .lock("a key", "me", Duration::from_secs(60))
        .await
        .unwrap());
}

const DYING_DIR: &str = "QUEUE_FILE_TEST_DYING_DIR";

/// A worker process that dies holding jobs gives them back when their lease runs out: the
/// next reservation counts a second attempt, and the dead worker's leases are stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_process_returns_its_jobs_after_the_lease() {
    let dir = common::private_dir();
    let root = dir.path().join("store");
    let store = FileStorage::open(FileOptions::new(&root)).await.unwrap();
    store
        .push(
            (0..50)
                .map(|i| queue_tests::job("dying", "n", i.to_string().as_bytes()))
                .collect(),
        )
        .await
        .unwrap();
    let output = child("dying_child", &[(DYING_DIR, &root)], &[])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let size = store.size("dying").await.unwrap();
    assert_eq!(
        (size.waiting, size.reserved),
        (0, 50),
        "the dead worker held them all"
    );
    assert!(store
        .reserve(&queue_tests::request(
            &["dying"],
            Duration::from_secs(60),
            100
        ))
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let back = store
        .reserve(&queue_tests::request(
            &["dying"],
            Duration::from_secs(60),
            100,
        ))
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
}

/// The child of [`a_dead_worker_process_returns_its_jobs_after_the_lease`]: reserves
/// everything with a short lease and exits at once, acknowledging nothing.
#[tokio::test(flavor = "current_thread")]
async fn dying_child() {
    let Some(root) = std::env::var_os(DYING_DIR) else {
        return;
    };
    let store = FileStorage::open(FileOptions::new(root)).await.unwrap();
    let got = store
        .reserve(&queue_tests::request(
            &["dying"],
            Duration::from_millis(300),
            100,
        ))
        .await
        .unwrap();
    assert_eq!(got.len(), 50);
    std::process::exit(0);
}
