//! Seed 003's monitors as stored schedules: one schedule per monitor, each checked on its own
//! interval by whichever worker claims the tick. No job requeues itself and no sweep query
//! runs in the application, so the queue holds at most one check per monitor, however long
//! the workers were down.
//!
//! ```text
//! cargo build --release -p queue-examples
//! target/release/monitors --url sqlite:///tmp/monitors.db --monitors 1000 --interval 10s
//! target/release/runall --connection sqlite:///tmp/monitors.db work --queue monitors --concurrency 8 &
//! target/release/monitors --url sqlite:///tmp/monitors.db --watch 60s
//! ```
//!
//! `--monitors N --interval D` stores (or changes) N monitors' schedules and exits; running it
//! again with the same arguments changes nothing. `--remove N` removes monitors 1 to N.
//! `--watch D` samples the `monitors` queue for D and reports its largest size and the checks
//! the schedules claimed meanwhile.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use queue_core::{Job, Overlap, Queue, Schedule, Schedules, StorageExt, Upserted};
use queue_examples::CheckMonitor;

use queue_database as _;
use queue_file as _;
use queue_redis as _;

struct Args {
    url: String,
    monitors: u64,
    interval: Duration,
    remove: u64,
    watch: Option<Duration>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        url: String::new(),
        monitors: 0,
        interval: Duration::from_secs(10),
        remove: 0,
        watch: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().with_context(|| format!("{what} needs a value"));
        match arg.as_str() {
            "--url" => args.url = value("--url")?,
            "--monitors" => args.monitors = value("--monitors")?.parse()?,
            "--interval" => {
                args.interval = queue_core::parse_duration(&value("--interval")?)
                    .map_err(anyhow::Error::msg)?
            }
            "--remove" => args.remove = value("--remove")?.parse()?,
            "--watch" => {
                args.watch = Some(
                    queue_core::parse_duration(&value("--watch")?).map_err(anyhow::Error::msg)?,
                )
            }
            other => bail!(
                "unknown argument {other} (--url URL --monitors N --interval D --remove N --watch D)"
            ),
        }
    }
    if args.url.is_empty() {
        bail!("--url is required (sqlite://..., postgres://..., redis://...)");
    }
    Ok(args)
}

/// The checks claimed so far by the schedules of monitors 1 to `n`.
async fn claimed(queue: &Queue, n: u64) -> anyhow::Result<(u64, u64)> {
    let (mut ticks, mut missed) = (0, 0);
    for id in 1..=n {
        if let Ok(state) = queue.schedule_state(&format!("monitor:{id}")).await {
            ticks += state.ticks;
            missed += state.missed;
        }
    }
    Ok((ticks, missed))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let queue = Queue::connect(&args.url).await.context("connecting")?;
    if args.monitors > 0 {
        let started = Instant::now();
        let (mut created, mut changed, mut unchanged) = (0, 0, 0);
        for id in 1..=args.monitors {
            let schedule = Schedule::every(args.interval)
                .overlap(Overlap::Skip)
                .dispatch(CheckMonitor { id }.dispatch());
            match Schedules::upsert_via(&queue, format!("monitor:{id}"), schedule).await? {
                Upserted::Created => created += 1,
                Upserted::Changed => changed += 1,
                _ => unchanged += 1,
            }
        }
        println!(
            "{} monitors every {}: {created} created, {changed} changed, {unchanged} unchanged in {:.1?}",
            args.monitors,
            humantime::format_duration(args.interval),
            started.elapsed()
        );
    }
    for id in 1..=args.remove {
        Schedules::remove_via(&queue, &format!("monitor:{id}")).await?;
    }
    if args.remove > 0 {
        println!("monitors 1 to {} removed", args.remove);
    }
    if let Some(watch) = args.watch {
        let known = {
            let mut n = 0;
            let mut page = queue_core::storage::PageRequest::first(1000);
            loop {
                let ids = queue.stored_schedules(page).await?;
                n += ids
                    .items
                    .iter()
                    .filter(|id| id.starts_with("monitor:"))
                    .count() as u64;
                match ids.next {
                    Some(next) => page = queue_core::storage::PageRequest::after(next, 1000),
                    None => break,
                }
            }
            n
        };
        let inspect = queue.storage().inspect()?;
        let (before, _) = claimed(&queue, known).await?;
        let started = Instant::now();
        let mut largest = 0;
        while started.elapsed() < watch {
            largest = largest.max(inspect.size("monitors").await?.total());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (after, missed) = claimed(&queue, known).await?;
        println!(
            "{known} monitors: {} checks claimed in {:.0?}, {missed} ticks missed in all; the monitors queue held at most {largest} jobs",
            after - before,
            watch
        );
    }
    Ok(())
}
