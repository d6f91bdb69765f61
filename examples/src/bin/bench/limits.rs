//! `--limits N`: what limits cost and how exact they are, through the public API.
//!
//! - **Rate accuracy**: `N` jobs of one key through `Limit::rate(R)` (R = N / 20 by default,
//!   so a run takes about 20 s; `--limit-rate R` sets it), drained by two in-process workers
//!   at concurrency 8. Reports the time from the first start to the last against the ideal
//!   `(N - 1) / R`, how many times the worker looked at each job (1 for a job that ran at
//!   once, 2 for one that booked a later token), and the most attempts any job had (1: no
//!   attempt was counted for waiting).
//! - **Overhead**: 10,000 no-op jobs spread over 100 keys of a rate limit high enough never
//!   to throttle (1,000/s per key), and of a `concurrent(1000)` limit, drained by one worker
//!   at concurrency 8, against the same jobs with no limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use queue_core::{JobLimit, Limit, Queue, StorageExt as _, WorkerOptions};
use serde_json::json;

/// One row of the accuracy table.
pub(crate) async fn accuracy(
    queue: &Queue,
    n: usize,
    per_second: u32,
) -> anyhow::Result<Vec<String>> {
    let driver = queue.storage().driver();
    if queue.storage().capabilities().groups.is_none() {
        return Ok(vec![driver.to_owned(), "- (no group counters)".to_owned()]);
    }
    let name = format!("bench-rate-{}", std::process::id());
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let most = Arc::new(AtomicU64::new(0));
    {
        let (starts, most) = (starts.clone(), most.clone());
        queue.listen("rated", move |_: u64, ctx| {
            let (starts, most) = (starts.clone(), most.clone());
            async move {
                starts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Instant::now());
                most.fetch_max(u64::from(ctx.attempt()), Ordering::Relaxed);
                Ok(())
            }
        });
    }
    let limit = JobLimit::new(&name).key("one");
    let mut left = n;
    while left > 0 {
        let chunk = left.min(1000);
        queue
            .dispatch_many((0..chunk).map(|i| {
                queue
                    .dispatch_named("rated", json!(i))
                    .on_queue("bench-rate")
                    .limit(limit.clone())
            }))
            .await?;
        left -= chunk;
    }
    let options = || {
        WorkerOptions::default()
            .queues(["bench-rate"])
            .concurrency(8)
            .sleep(Duration::from_millis(50))
            .limit(&name, Limit::rate(per_second))
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
    let measured = (*last - *first).as_secs_f64();
    let ideal = (n.saturating_sub(1)) as f64 * Limit::rate(per_second).interval_secs();
    let looks = (starts.len() as u64 + a.released + b.released) as f64 / starts.len() as f64;
    Ok(vec![
        driver.to_owned(),
        format!("{n}"),
        format!("{per_second}/s"),
        format!("{ideal:.2}"),
        format!("{measured:.2}"),
        format!("{:.3}", measured / ideal),
        format!("{looks:.2}"),
        format!("{}", most.load(Ordering::Relaxed)),
    ])
}

/// One row of the overhead table: jobs/s with no limit, with a rate limit, with a
/// concurrency limit, and the ratios.
pub(crate) async fn overhead(queue: &Queue) -> anyhow::Result<Vec<String>> {
    const JOBS: usize = 10_000;
    const KEYS: usize = 100;
    let driver = queue.storage().driver();
    let groups = queue.storage().capabilities().groups.is_some();
    let pid = std::process::id();
    let (rate_name, slot_name) = (format!("bench-r-{pid}"), format!("bench-c-{pid}"));
    queue.listen("limited-noop", |_: u64, _ctx| async { Ok(()) });
    let run = |limit: Option<String>| {
        let queue = queue.clone();
        let (rate_name, slot_name) = (rate_name.clone(), slot_name.clone());
        async move {
            let mut left = JOBS;
            while left > 0 {
                let chunk = left.min(1000);
                queue
                    .dispatch_many((0..chunk).map(|i| {
                        let d = queue
                            .dispatch_named("limited-noop", json!(i))
                            .on_queue("bench-limits");
                        match &limit {
                            Some(name) => d.limit(JobLimit::new(name).key(i % KEYS)),
                            None => d,
                        }
                    }))
                    .await?;
                left -= chunk;
            }
            let started = Instant::now();
            let mut options = WorkerOptions::default()
                .queues(["bench-limits"])
                .concurrency(8)
                .sleep(Duration::from_millis(10))
                .limit(&slot_name, Limit::concurrent(1000))
                .stop_when_empty();
            // A store without group counters refuses a worker with a rate limit.
            if groups {
                options = options.limit(&rate_name, Limit::rate(1000).burst(100));
            }
            let summary = queue.worker(options).run().await?;
            if summary.failed > 0 || summary.released > 0 {
                bail!(
                    "{} jobs failed and {} went back: the limits were meant never to bind",
                    summary.failed,
                    summary.released
                );
            }
            anyhow::Ok(JOBS as f64 / started.elapsed().as_secs_f64())
        }
    };
    let plain = run(None).await?;
    let rated = if groups {
        Some(run(Some(rate_name.clone())).await?)
    } else {
        None
    };
    let slotted = run(Some(slot_name.clone())).await?;
    let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    let ratio = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.2}", v / plain));
    Ok(vec![
        driver.to_owned(),
        format!("{plain:.0}"),
        cell(rated),
        ratio(rated),
        format!("{slotted:.0}"),
        ratio(Some(slotted)),
    ])
}
