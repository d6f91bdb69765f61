//! `--keep-finished`: what keeping succeeded jobs' status costs. The same no-op jobs drained
//! by one in-process worker at concurrency 8, with and without
//! [`WorkerOptions::keep_finished`], the two alternated so that a drift of the machine falls
//! on both.

use std::time::{Duration, Instant};

use anyhow::bail;
use queue_core::{Queue, StorageExt as _, WorkerOptions};
use serde_json::json;

/// One row: the driver, jobs/s without and with `keep_finished` (the medians of `rounds`
/// alternated runs, with their ranges), and the ratio of the medians.
pub(crate) async fn overhead(
    queue: &Queue,
    jobs: usize,
    rounds: usize,
) -> anyhow::Result<Vec<String>> {
    let driver = queue.storage().driver();
    if queue.storage().capabilities().track.is_none() {
        bail!("{driver} keeps no job status (no jobs by id)");
    }
    queue.listen("kept-noop", |_: u64, _ctx| async { Ok(()) });
    let run = |keep: bool| {
        let queue = queue.clone();
        async move {
            let mut left = jobs;
            while left > 0 {
                let chunk = left.min(1000);
                queue
                    .dispatch_many((0..chunk).map(|i| {
                        queue
                            .dispatch_named("kept-noop", json!(i))
                            .on_queue("bench-keep")
                    }))
                    .await?;
                left -= chunk;
            }
            let started = Instant::now();
            let mut options = WorkerOptions::default()
                .queues(["bench-keep"])
                .concurrency(8)
                .sleep(Duration::from_millis(10))
                .stop_when_empty();
            if keep {
                options = options.keep_finished(Duration::from_secs(3600));
            }
            let summary = queue.worker(options).run().await?;
            if summary.processed != jobs as u64 {
                bail!("processed {} of {jobs} jobs", summary.processed);
            }
            anyhow::Ok(jobs as f64 / started.elapsed().as_secs_f64())
        }
    };
    let (mut plain, mut kept) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        plain.push(run(false).await?);
        kept.push(run(true).await?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let range = |v: &[f64]| format!("{:.0}–{:.0}", v[0], v[v.len() - 1]);
    let (p, k) = (median(&mut plain), median(&mut kept));
    Ok(vec![
        driver.to_owned(),
        format!("{p:.0} ({})", range(&plain)),
        format!("{k:.0} ({})", range(&kept)),
        format!("{:.2}", k / p),
    ])
}
