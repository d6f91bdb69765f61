//! Eight worker processes share one SQLite file: every job is taken exactly once and no
//! process sees a "database is locked" error (or any other).
//!
//! The test binary runs itself eight times: the `child` test does nothing unless the parent
//! set `QUEUE_DB_CHILD_URL`, in which case it is one worker process.
#![cfg(feature = "sqlite")]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use queue_core::{NewJob, ReserveRequest, Storage};
use queue_database::SqliteStorage;

const JOBS: usize = 4_000;
const PROCESSES: usize = 8;
const QUEUE: &str = "shared";
const URL_VAR: &str = "QUEUE_DB_CHILD_URL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_share_one_file() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let store = SqliteStorage::connect(&url)
        .await
        .expect("the database opens");
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|i| NewJob {
            queue: QUEUE.to_owned(),
            name: "n".to_owned(),
            payload: i.to_string().into_bytes(),
            available: Default::default(),
        })
        .collect();
    store.push(jobs).await.expect("pushed");
    store.close().await;

    let started = Instant::now();
    let exe = std::env::current_exe().expect("the test binary's path");
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "child", "--nocapture", "--test-threads=1"])
                .env(URL_VAR, &url)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a child process starts")
        })
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut errors = Vec::new();
    let mut per_process = Vec::new();
    for child in children {
        let output = child.wait_with_output().expect("the child finishes");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut mine = 0;
        for line in stdout.lines() {
            // libtest writes `test child ... ` with no newline before the test's own output.
            let line = line.trim_start_matches("test child ... ");
            if let Some(payload) = line.strip_prefix("processed ") {
                *seen.entry(payload.to_owned()).or_default() += 1;
                mine += 1;
            } else if let Some(error) = line.strip_prefix("error ") {
                errors.push(error.to_owned());
            }
        }
        per_process.push(mine);
        assert!(
            output.status.success(),
            "a child failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let elapsed = started.elapsed();
    println!("{PROCESSES} processes took {JOBS} jobs in {elapsed:?}: {per_process:?}");
    assert!(errors.is_empty(), "errors in the workers: {errors:?}");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs taken more than once: {twice:?}");
    assert_eq!(seen.len(), JOBS, "every job was taken");
    assert!(
        per_process.iter().filter(|n| **n > 0).count() > 1,
        "the work was shared: {per_process:?}"
    );

    let store = SqliteStorage::connect(&url)
        .await
        .expect("the database reopens");
    assert_eq!(store.size(QUEUE).await.unwrap().total(), 0);
    store.close().await;
}

/// One worker process: reserve and acknowledge until the queue is empty, printing each job
/// and each error on stdout for the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child() {
    let Ok(url) = std::env::var(URL_VAR) else {
        return;
    };
    // Every child connects (and migrates) at the same moment as the others, on purpose.
    let store = match SqliteStorage::connect(&url).await {
        Ok(store) => store,
        Err(e) => {
            println!("error connect: {e}");
            return;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for task in 0..2usize {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut round = 0usize;
            while Instant::now() < deadline {
                round += 1;
                let request = ReserveRequest {
                    queues: vec![QUEUE.to_owned()],
                    lease: Duration::from_secs(60),
                    limit: 1 + (round + task) % 8,
                    name: None,
                };
                let got = match store.reserve(&request).await {
                    Ok(got) => got,
                    Err(e) => {
                        println!("error reserve: {e}");
                        continue;
                    }
                };
                if got.is_empty() {
                    match store.size(QUEUE).await {
                        Ok(size) if size.total() == 0 => break,
                        Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                        Err(e) => println!("error size: {e}"),
                    }
                    continue;
                }
                let leases: Vec<_> = got.iter().map(|r| r.lease.clone()).collect();
                match store.acknowledge(&leases).await {
                    Ok(acked) if acked.iter().all(|a| *a) => {}
                    Ok(acked) => println!("error acknowledge refused: {acked:?}"),
                    Err(e) => println!("error acknowledge: {e}"),
                }
                for job in got {
                    println!("processed {}", String::from_utf8_lossy(&job.payload));
                }
            }
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            println!("error task: {e}");
        }
    }
    store.close().await;
}
