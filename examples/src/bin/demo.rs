//! The demo: a fresh SQLite store, every kind of dispatch, one worker run until the queues
//! are empty, and a report of what happened.
//!
//! ```text
//! cargo run --release -p queue-examples --bin demo
//! ```

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use queue_core::StorageExt as _;
use queue_core::{Job, Queue, WorkerOptions};
use queue_examples::{
    GenerateReport, ImportLegacyFile, ProcessUpload, RefreshCustomer, SendEmail, SyncPayment,
    REPORTS_MAX_AT_ONCE,
};
use serde_json::json;

// Link the SQLite driver so `sqlite://` URLs resolve.
use queue_database as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUEUE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let path = std::env::temp_dir().join("runall-demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let url = format!("sqlite://{}", path.display());
    println!("== store: {url}");
    let queue = Queue::connect(&url).await.context("connecting to SQLite")?;
    queue_examples::listeners(&queue);
    Queue::set_default(queue.clone());

    println!("== dispatching");
    SendEmail::dispatch(SendEmail {
        to: "ana@example.com".into(),
        subject: "Welcome".into(),
    })
    .on_queue("high")
    .await?;
    ProcessUpload {
        path: "/uploads/cat.png".into(),
        user_id: 7,
    }
    .dispatch()
    .await?;
    SendEmail {
        to: "budi@example.com".into(),
        subject: "Your invoice".into(),
    }
    .dispatch()
    .await?;
    queue
        .dispatch_named("send-notification", json!({"to": "citra@example.com"}))
        .on_queue("low")
        .await?;
    SendEmail {
        to: "later@example.com".into(),
        subject: "Two seconds later".into(),
    }
    .dispatch()
    .delay(Duration::from_secs(2))
    .await?;
    SendEmail::dispatch_at(
        SystemTime::now() + Duration::from_secs(1),
        SendEmail {
            to: "at@example.com".into(),
            subject: "At a set time".into(),
        },
    )
    .await?;
    for _ in 0..3 {
        GenerateReport {
            month: "2026-11".into(),
        }
        .dispatch()
        .without_overlapping()
        .await?;
    }
    let mut refreshes = 0;
    for _ in 0..3 {
        let dispatched = RefreshCustomer { customer_id: 7 }.dispatch().await?;
        refreshes += usize::from(dispatched.is_created());
    }
    println!("   refresh-customer: 3 dispatches for customer 7, {refreshes} stored (unique)");
    SyncPayment { payment_id: 42 }.dispatch().await?;
    ImportLegacyFile {
        path: "/nonexistent/legacy.csv".into(),
    }
    .dispatch()
    .await?;
    SendEmail {
        to: "not-an-address".into(),
        subject: "Oops".into(),
    }
    .dispatch()
    .await?;

    for q in ["high", "default", "low"] {
        let s = queue.storage().inspect()?.size(q).await?;
        println!(
            "   {q:<8} waiting {:>2}  delayed {:>2}",
            s.waiting, s.delayed
        );
    }

    println!("== running a worker (--queue high,default,low --concurrency 4 --stop-when-empty)");
    let started = Instant::now();
    let summary = queue
        .worker(
            WorkerOptions::default()
                .queues(["high", "default", "low"])
                .concurrency(4)
                .sleep(Duration::from_millis(200))
                .stop_when_empty(),
        )
        .run()
        .await?;

    println!("== what happened ({:.1?})", started.elapsed());
    println!(
        "   processed {}, retried {}, failed {}, put back while a lock was held {}",
        summary.processed, summary.retried, summary.failed, summary.released
    );
    println!(
        "   generate-report ran at most {} at once (without_overlapping)",
        REPORTS_MAX_AT_ONCE.load(Ordering::SeqCst)
    );
    println!("   failed store:");
    for failed in queue
        .storage()
        .failed_store()?
        .list(queue_core::storage::PageRequest::first(10))
        .await?
        .items
    {
        println!(
            "     #{} {} after {} attempt(s): {}",
            failed.id, failed.name, failed.attempts, failed.error
        );
    }
    println!(
        "   inspect it: cargo run -p queue-examples --bin runall -- --connection {url} failed list"
    );
    Ok(())
}
