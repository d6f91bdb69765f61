//! Seed 001's payment sync as a batch: every student's payments synced by a job of their own,
//! dispatched in chunks into one open batch, a `then` job that writes the summary, and a
//! progress bar read from the store while workers (other processes) run the jobs.
//!
//! ```text
//! cargo build --release -p queue-examples
//! target/release/payment_sync --url sqlite:///tmp/sync.db --students 20000 &
//! target/release/runall --connection sqlite:///tmp/sync.db work --queue sync
//! target/release/runall --connection sqlite:///tmp/sync.db batch show BATCH_ID
//! ```
//!
//! `--no-wait` dispatches and exits after printing the batch's id.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use queue_core::{Batch, Job, Queue};
use queue_examples::{SyncRunDone, SyncStudentPayments};

use queue_database as _;
use queue_file as _;
use queue_redis as _;

struct Args {
    url: String,
    students: u64,
    chunk: u64,
    summary: String,
    wait: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        url: String::new(),
        students: 20_000,
        chunk: 1_000,
        summary: std::env::temp_dir()
            .join("payment-sync-summary.txt")
            .display()
            .to_string(),
        wait: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().with_context(|| format!("{what} needs a value"));
        match arg.as_str() {
            "--url" => args.url = value("--url")?,
            "--students" => args.students = value("--students")?.parse()?,
            "--chunk" => args.chunk = value("--chunk")?.parse::<u64>()?.max(1),
            "--summary" => args.summary = value("--summary")?,
            "--no-wait" => args.wait = false,
            other => bail!(
                "unknown argument {other} (--url URL --students N --chunk N --summary FILE --no-wait)"
            ),
        }
    }
    if args.url.is_empty() {
        bail!("--url is required (sqlite://..., postgres://..., redis://...)");
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let queue = Queue::connect(&args.url).await.context("connecting")?;
    let run = queue_core::storage::new_token()[..8].to_owned();
    let started = Instant::now();
    let mut batch = Batch::new()
        .then(SyncRunDone {
            run: run.clone(),
            students: args.students,
            summary: args.summary.clone(),
        })
        .via(&queue)
        .open()
        .await?;
    let id = batch.id().clone();
    println!("sync run {run}: batch {id}");
    let mut next = 1;
    while next <= args.students {
        let end = (next + args.chunk - 1).min(args.students);
        batch
            .add_many((next..=end).map(|student| {
                SyncStudentPayments {
                    run: run.clone(),
                    student,
                }
                .dispatch()
            }))
            .await?;
        next = end + 1;
    }
    batch.seal().await?;
    println!(
        "dispatched {} jobs in {:.1} s",
        args.students,
        started.elapsed().as_secs_f64()
    );
    if !args.wait {
        return Ok(());
    }
    // The progress bar: the batch's counts, read from the store.
    let watching = Instant::now();
    loop {
        let status = Batch::status(&queue, &id).await?;
        let done = status.total - status.pending;
        let rate = done as f64 / watching.elapsed().as_secs_f64().max(0.001);
        let eta = if rate > 0.0 {
            format!("{:.0} s", status.pending as f64 / rate)
        } else {
            "-".to_owned()
        };
        let filled = (status.percent() / 5.0) as usize;
        print!(
            "\r[{}{}] {:5.1} % {done}/{} ({} failed) {rate:.0}/s, ETA {eta}   ",
            "#".repeat(filled),
            " ".repeat(20 - filled.min(20)),
            status.percent(),
            status.total,
            status.failed
        );
        std::io::stdout().flush()?;
        if status.is_finished() {
            println!();
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("summary: {}", args.summary);
    Ok(())
}
