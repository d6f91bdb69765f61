//! `--overlap N`: what `without_overlapping` costs, through the public API.
//!
//! - **Contention**: `N` jobs of 5 ms on one lock key, drained by two in-process workers at
//!   concurrency 4 (`lock_retry` 50 ms, a 5 s lease). Reports the time from the first start
//!   to the last against the ideal (`N` x 5 ms, one at a time), how many times the jobs went
//!   back to their queue (releases: one per look at a busy key), and whether the store parks
//!   jobs on a lock (`Capabilities::park`: a waiting job is woken by the holder's unlock
//!   instead of looking again every `lock_retry`).
//! - **Overhead**: 10,000 no-op jobs each with a key of its own (never busy), drained by one
//!   worker at concurrency 8, against the same jobs with no lock: a lock and an unlock per
//!   job (on SQL the unlock's transaction also looks for a job parked on the key).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use queue_core::{Queue, StorageExt as _, WorkerOptions};
use serde_json::json;

/// One row of the contention table.
pub(crate) async fn contention(queue: &Queue, n: usize) -> anyhow::Result<Vec<String>> {
    const WORK: Duration = Duration::from_millis(5);
    let driver = queue.storage().driver();
    let parks = queue.storage().capabilities().park;
    let key = format!("bench-overlap-{}", std::process::id());
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    {
        let starts = starts.clone();
        queue.listen("overlapping", move |_: u64, _ctx| {
            let starts = starts.clone();
            async move {
                starts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Instant::now());
                tokio::time::sleep(WORK).await;
                Ok(())
            }
        });
    }
    queue
        .dispatch_many((0..n).map(|i| {
            queue
                .dispatch_named("overlapping", json!(i))
                .on_queue("bench-overlap")
                .without_overlapping_key(key.clone())
        }))
        .await?;
    let options = || {
        WorkerOptions::default()
            .queues(["bench-overlap"])
            .concurrency(4)
            .sleep(Duration::from_millis(50))
            .lease(Duration::from_secs(5))
            .lock_retry(Duration::from_millis(50))
            .stop_when_empty()
    };
    let (a, b) = tokio::join!(queue.worker(options()).run(), queue.worker(options()).run());
    let (a, b) = (a?, b?);
    if a.failed + b.failed > 0 {
        bail!("{} jobs failed", a.failed + b.failed);
    }
    let mut starts = starts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    starts.sort();
    let (Some(first), Some(last)) = (starts.first(), starts.last()) else {
        bail!("no job ran");
    };
    let measured = (*last - *first).as_secs_f64() + WORK.as_secs_f64();
    let ideal = n as f64 * WORK.as_secs_f64();
    Ok(vec![
        driver.to_owned(),
        if parks { "yes" } else { "no" }.to_owned(),
        format!("{n}"),
        format!("{ideal:.2}"),
        format!("{measured:.2}"),
        format!("{:.2}", measured / ideal),
        format!("{}", a.released + b.released),
        format!("{:.2}", (a.released + b.released) as f64 / n as f64),
    ])
}

/// One row of the overhead table: jobs/s without a lock and with a lock of their own.
pub(crate) async fn overhead(queue: &Queue) -> anyhow::Result<Vec<String>> {
    const JOBS: usize = 10_000;
    let driver = queue.storage().driver();
    let pid = std::process::id();
    queue.listen("overlap-noop", |_: u64, _ctx| async { Ok(()) });
    let run = |locked: bool| {
        let queue = queue.clone();
        async move {
            let mut left = JOBS;
            while left > 0 {
                let chunk = left.min(1000);
                queue
                    .dispatch_many((0..chunk).map(|i| {
                        let d = queue
                            .dispatch_named("overlap-noop", json!(i))
                            .on_queue("bench-overlap-noop");
                        match locked {
                            true => d.without_overlapping_key(format!("noop-{pid}-{left}-{i}")),
                            false => d,
                        }
                    }))
                    .await?;
                left -= chunk;
            }
            let started = Instant::now();
            let options = WorkerOptions::default()
                .queues(["bench-overlap-noop"])
                .concurrency(8)
                .sleep(Duration::from_millis(10))
                .stop_when_empty();
            let summary = queue.worker(options).run().await?;
            if summary.failed > 0 || summary.released > 0 {
                bail!(
                    "{} jobs failed and {} went back: no key was meant to be busy",
                    summary.failed,
                    summary.released
                );
            }
            anyhow::Ok(JOBS as f64 / started.elapsed().as_secs_f64())
        }
    };
    let plain = run(false).await?;
    let locked = run(true).await?;
    Ok(vec![
        driver.to_owned(),
        format!("{plain:.0}"),
        format!("{locked:.0}"),
        format!("{:.2}", locked / plain),
    ])
}
