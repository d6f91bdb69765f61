//! Eight worker processes share one SQLite file: every job is taken exactly once and no
//! process sees a "database is locked" error (or any other).
//!
//! A test target without libtest's harness (`harness = false`): run without arguments it is
//! the test, and it starts itself eight times with `QUEUE_DB_CHILD_URL` set, each a worker
//! process. The child is not a test, so nothing here passes without checking anything.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use queue_core::storage::{Settle, StorageExt};
use queue_core::{NewJob, ReserveRequest, Storage};
use queue_database::SqliteStorage;

const JOBS: usize = 4_000;
const PROCESSES: usize = 8;
const QUEUE: &str = "shared";
const URL_VAR: &str = "QUEUE_DB_CHILD_URL";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    match std::env::var(URL_VAR) {
        Ok(url) => runtime.block_on(child(&url)),
        Err(_) => {
            runtime.block_on(eight_processes_share_one_file());
            println!("test eight_processes_share_one_file ... ok");
        }
    }
}

async fn eight_processes_share_one_file() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let store = SqliteStorage::connect(&url)
        .await
        .expect("the database opens");
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|i| NewJob::new(QUEUE, "n", i.to_string().into_bytes()))
        .collect();
    store.push(jobs).await.expect("pushed");
    store.close().await;

    let started = Instant::now();
    let exe = std::env::current_exe().expect("the test binary's path");
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .env(URL_VAR, &url)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a child process starts")
        })
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let (mut errors, mut per_process) = (Vec::new(), Vec::new());
    for child in children {
        let output = child.wait_with_output().expect("the child finishes");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut mine = 0;
        for line in stdout.lines() {
            if let Some(payload) = line.strip_prefix("processed ") {
                *seen.entry(payload.to_owned()).or_default() += 1;
                mine += 1;
            } else if let Some(error) = line.strip_prefix("error ") {
                errors.push(error.to_owned());
            }
        }
        per_process.push(mine);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "a child failed: {}\n{stderr}",
            output.status
        );
    }
    println!(
        "{PROCESSES} processes took {JOBS} jobs in {:?}: {per_process:?}",
        started.elapsed()
    );
    assert!(errors.is_empty(), "errors in the workers: {errors:?}");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs taken more than once: {twice:?}");
    assert_eq!(seen.len(), JOBS, "every job was taken");
    let working = per_process.iter().filter(|n| **n > 0).count();
    assert!(working > 1, "the work was shared: {per_process:?}");

    let store = SqliteStorage::connect(&url)
        .await
        .expect("the database reopens");
    assert_eq!(
        store.inspect().unwrap().size(QUEUE).await.unwrap().total(),
        0
    );
    store.close().await;
}

/// One worker process: settle and fetch until the queue is empty, printing each job and
/// each error on stdout for the parent.
async fn child(url: &str) {
    // Every child connects (and migrates) at the same moment as the others, on purpose.
    let store = match SqliteStorage::connect(url).await {
        Ok(store) => store,
        Err(e) => return println!("error connect: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for task in 0..2usize {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let (mut round, mut settles) = (0usize, Vec::new());
            while Instant::now() < deadline {
                round += 1;
                let limit = 1 + (round + task) % 8;
                let request = ReserveRequest::new([QUEUE], Duration::from_secs(60), limit);
                let got = match store
                    .settle(std::mem::take(&mut settles), Some(&request))
                    .await
                {
                    Ok(reply)
                        if reply
                            .settled
                            .iter()
                            .all(|s| *s == queue_core::storage::Settled::Applied) =>
                    {
                        reply.reserved
                    }
                    Ok(reply) => {
                        println!("error settle refused: {:?}", reply.settled);
                        reply.reserved
                    }
                    Err(e) => {
                        println!("error settle: {e}");
                        continue;
                    }
                };
                if got.is_empty() {
                    match store.inspect().unwrap().size(QUEUE).await {
                        Ok(size) if size.total() == 0 => break,
                        Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                        Err(e) => println!("error size: {e}"),
                    }
                    continue;
                }
                for job in got {
                    println!("processed {}", String::from_utf8_lossy(&job.payload));
                    settles.push(Settle::ack(job.lease));
                }
            }
            if !settles.is_empty() {
                if let Err(e) = store.settle(settles, None).await {
                    println!("error settle: {e}");
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
