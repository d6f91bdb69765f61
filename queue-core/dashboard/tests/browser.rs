//! The dashboard in a real browser: Debian's `chromium`, headless, driven through
//! `chromedriver` with fantoccini. `bash scripts/services.sh` installs both. Outside CI a
//! machine without them skips this test with a notice; in CI (`CI=true`) it fails.

mod common;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use fantoccini::{Client, ClientBuilder, Locator};
use queue_core::{JobState, Queue, StorageExt};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The first of `names` found on `PATH`.
fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// `chromedriver`, ended when the test ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts chromedriver and connects a headless chromium session.
async fn browser(chromium: &std::path::Path, chromedriver: &std::path::Path) -> (Driver, Client) {
    let port = free_port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1200,900"],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return (driver, client),
            Err(e) if started.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no chromedriver session within 20 s: {e}"),
        }
    }
}

/// Serves `queue`'s dashboard under `/admin/jobs` on a free port.
async fn serve(queue: Queue) -> SocketAddr {
    let app = Router::new()
        .nest("/admin/jobs", queue_dashboard::router(queue.clone()))
        .nest(
            "/support/jobs",
            queue_dashboard::router_with(queue, queue_dashboard::Access::ReadOnly),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Polls `css`'s text until `want` holds, at most `within`.
async fn wait_text(
    client: &Client,
    css: &str,
    within: Duration,
    want: impl Fn(&str) -> bool,
) -> String {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < within {
        // The live table is replaced every second: a stale element is looked up again.
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if want(&text) {
                    return text;
                }
                last = text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{css}` did not come to the expected text within {within:?}: last {last:?}");
}

/// Clicks `css`, again if the live refresh replaced it in between.
async fn click(client: &Client, css: &str) {
    let mut last = None;
    for _ in 0..5 {
        match client.find(Locator::Css(css)).await {
            Ok(element) => match element.click().await {
                Ok(()) => return,
                Err(e) => last = Some(e.to_string()),
            },
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot click `{css}`: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    let (chromium, chromedriver) = match (
        which(&["chromium", "chromium-browser"]),
        which(&["chromedriver"]),
    ) {
        (Some(c), Some(d)) => (c, d),
        _ if in_ci() => panic!(
            "chromium and chromedriver are required in CI (bash scripts/services.sh installs them)"
        ),
        _ => {
            println!("skipped: no chromium or chromedriver on PATH (bash scripts/services.sh installs them)");
            return;
        }
    };
    let (queue, _dir) = common::sqlite().await;
    common::dispatch(&queue, "mail", 1).await;
    let addr = serve(queue.clone()).await;
    let (_driver, client) = browser(&chromium, &chromedriver).await;
    // The session is closed (and chromium with it) whether the checks pass or not.
    let checks = std::panic::AssertUnwindSafe(checks(&client, &queue, addr));
    let outcome = futures::FutureExt::catch_unwind(checks).await;
    let _ = client.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn checks(client: &Client, queue: &Queue, addr: SocketAddr) {
    let base = format!("http://{addr}/admin/jobs");

    // The overview renders, its script connects to `events`.
    client.goto(&base).await.expect("the overview loads");
    let title = client.title().await.expect("a title");
    assert_eq!(title, "Queues · runall");
    let waiting = "tr[data-queue=\"mail\"] td.waiting";
    wait_text(client, waiting, Duration::from_secs(10), |t| t == "1").await;
    wait_text(client, "#live-status", Duration::from_secs(10), |t| {
        t.starts_with("Live:")
    })
    .await;
    let css = client
        .execute(
            "return getComputedStyle(document.querySelector('header')).borderBottomStyle",
            vec![],
        )
        .await
        .expect("a style");
    assert_eq!(css, "solid", "the stylesheet loaded under the prefix");

    // A job dispatched after the page loaded shows up through SSE, with no reload.
    client
        .execute("window.__notReloaded = true", vec![])
        .await
        .expect("a marker");
    common::dispatch(queue, "mail", 2).await;
    common::dispatch(queue, "mail", 3).await;
    wait_text(client, waiting, Duration::from_secs(10), |t| t == "3").await;
    let marker = client
        .execute("return window.__notReloaded === true", vec![])
        .await
        .expect("the marker");
    assert_eq!(marker, serde_json::json!(true), "the page was not reloaded");
    if let Ok(path) = std::env::var("DASHBOARD_SCREENSHOT") {
        let png = client.screenshot().await.expect("a screenshot");
        std::fs::write(path, png).expect("the screenshot is written");
    }

    // The pause button pauses the queue; the page says so.
    click(client, "tr[data-queue=\"mail\"] button.pause").await;
    wait_text(client, "p.notice", Duration::from_secs(10), |t| {
        t.starts_with("Queue paused")
    })
    .await;
    wait_text(
        client,
        "tr[data-queue=\"mail\"] td.state",
        Duration::from_secs(5),
        |t| t == "paused",
    )
    .await;
    assert_eq!(queue.paused().await.expect("paused"), ["mail"]);
    let url = client.current_url().await.expect("a URL");
    assert_eq!(
        url.path(),
        "/admin/jobs",
        "back on the overview, under the prefix"
    );

    // A job's page cancels it.
    let id = common::dispatch(queue, "mail", 4).await;
    client
        .goto(&format!("{base}/jobs/{}", common::enc(&id.0)))
        .await
        .expect("the job page loads");
    wait_text(client, "dd.job-state", Duration::from_secs(10), |t| {
        t == "pending"
    })
    .await;
    click(client, "button.cancel").await;
    wait_text(client, "dd.job-state", Duration::from_secs(10), |t| {
        t == "cancelled"
    })
    .await;
    wait_text(client, "p.notice", Duration::from_secs(10), |t| {
        t.starts_with("Job cancelled")
    })
    .await;
    let status = queue.job(&id).await.expect("status").expect("known");
    assert_eq!(status.state, JobState::Cancelled);

    // Resume from the queue's page.
    click(client, "p.crumbs a:nth-of-type(2)").await;
    wait_text(client, "h1", Duration::from_secs(10), |t| t == "Queue mail").await;
    click(client, "button.resume").await;
    wait_text(client, "p.notice", Duration::from_secs(10), |t| {
        t == "Queue resumed."
    })
    .await;
    assert!(queue.paused().await.expect("paused").is_empty());

    // A form whose CSRF token was taken out is refused, and nothing changes.
    client
        .execute(
            "document.querySelectorAll('input[name=csrf]').forEach(function (i) { i.remove(); })",
            vec![],
        )
        .await
        .expect("the tokens removed");
    click(client, "button.pause").await;
    wait_text(client, "p.error", Duration::from_secs(10), |t| {
        t.contains("CSRF token")
    })
    .await;
    assert!(queue.paused().await.expect("paused").is_empty());

    // Retry from the failed page: the job is back on its queue.
    common::failed(queue, "mail", 5).await;
    client
        .goto(&format!("{base}/failed"))
        .await
        .expect("the failed page loads");
    click(client, "button.retry").await;
    wait_text(client, "p.notice", Duration::from_secs(10), |t| {
        t.starts_with("The failed job is back on its queue")
    })
    .await;
    let store = queue.storage().failed_store().expect("a failed store");
    assert_eq!(store.count().await.expect("count"), 0);

    // A batch's page follows its progress without a reload, until it has finished.
    queue.listen("step", |_: u32, _ctx| async move { Ok(()) });
    let batch = queue_core::Batch::new()
        .add_many((1..=2u32).map(|n| {
            queue
                .dispatch_named("step", serde_json::json!(n))
                .on_queue("steps")
        }))
        .via(queue)
        .dispatch()
        .await
        .expect("a batch");
    client
        .goto(&format!("{base}/batches/{}", common::enc(&batch.0)))
        .await
        .expect("the batch page loads");
    wait_text(client, "dd.pending", Duration::from_secs(10), |t| t == "2").await;
    client
        .execute("window.__notReloaded = true", vec![])
        .await
        .expect("a marker");
    queue
        .worker(
            queue_core::WorkerOptions::default()
                .queues(["steps"])
                .stop_when_empty(),
        )
        .run()
        .await
        .expect("the worker");
    wait_text(client, "dd.batch-state", Duration::from_secs(10), |t| {
        t == "finished"
    })
    .await;
    wait_text(client, "dd.succeeded", Duration::from_secs(5), |t| t == "2").await;
    let marker = client
        .execute("return window.__notReloaded === true", vec![])
        .await
        .expect("the marker");
    assert_eq!(marker, serde_json::json!(true), "the page was not reloaded");

    // A read-only mount: the same numbers, live, and no button anywhere.
    client
        .goto(&format!("http://{addr}/support/jobs"))
        .await
        .expect("the read-only overview loads");
    wait_text(client, "#live-status", Duration::from_secs(10), |t| {
        t.starts_with("Live:")
    })
    .await;
    wait_text(
        client,
        "header strong.read-only",
        Duration::from_secs(5),
        |t| t == "read-only",
    )
    .await;
    wait_text(client, waiting_cell(), Duration::from_secs(10), |t| {
        !t.is_empty()
    })
    .await;
    let buttons = client
        .execute(
            "return document.querySelectorAll('main button').length",
            vec![],
        )
        .await
        .expect("a count");
    assert_eq!(
        buttons,
        serde_json::json!(0),
        "a read-only page has no button"
    );
}

/// `starts` waits spread around `mean_ms` (a quarter at half of it, half at it, a quarter at
/// four times it), for the screenshots' history.
fn waits(starts: u64, mean_ms: u64) -> queue_core::stats::Waits {
    let mut waits = queue_core::stats::Waits::default();
    for (share, ms) in [(4, mean_ms / 2), (2, mean_ms), (4, mean_ms * 4)] {
        waits.0[queue_core::stats::Waits::bucket(ms)] += starts / share;
    }
    waits
}

fn waiting_cell() -> &'static str {
    "tr[data-queue=\"mail\"] td.waiting"
}

/// Generates the README's screenshots (`docs/screenshots/*.png`): a SQLite store with queues
/// waiting, delayed and paused, jobs failed for good, a batch half done, a stored schedule, a
/// worker running two jobs (one holding a `without_overlapping` lock), a day of throughput
/// history written as workers write it, each main page shot in
/// headless chromium. Run by `bash scripts/screenshots.sh`, which sets
/// `DASHBOARD_SCREENSHOTS` to the directory; ignored otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "generates the README's screenshots: bash scripts/screenshots.sh"]
async fn screenshots() {
    use queue_core::{Batch, JobError, Schedule, Schedules, WorkerOptions};

    let out = PathBuf::from(
        std::env::var("DASHBOARD_SCREENSHOTS").expect("DASHBOARD_SCREENSHOTS names a directory"),
    );
    std::fs::create_dir_all(&out).expect("the screenshot directory");
    let chromium = which(&["chromium", "chromium-browser"]).expect("chromium on PATH");
    let chromedriver = which(&["chromedriver"]).expect("chromedriver on PATH");
    let (queue, _dir) = common::sqlite().await;
    queue.listen("send-invoice", |_: serde_json::Value, _| async {
        tokio::time::sleep(Duration::from_secs(120)).await;
        Ok(())
    });
    queue.listen("charge-card", |card: serde_json::Value, _| async move {
        Err(JobError::fail(format!(
            "card {} declined: insufficient funds (code 51)",
            card["card"]
        )))
    });
    queue.listen("sync-payment", |n: u32, _| async move {
        if n.is_multiple_of(5) {
            Err(JobError::fail(format!(
                "payment {n}: gateway timeout after 30s"
            )))
        } else {
            Ok(())
        }
    });
    // Failed for good: six charges, three payments of the batch.
    for card in 1..=6u32 {
        queue
            .dispatch_named("charge-card", serde_json::json!({ "card": 4000 + card }))
            .on_queue("billing")
            .tries(1)
            .await
            .expect("dispatched");
    }
    let batch = Batch::new()
        .add_many((1..=15u32).map(|n| {
            queue
                .dispatch_named("sync-payment", serde_json::json!(n))
                .on_queue("billing")
                .tries(1)
        }))
        .allow_failures()
        .via(&queue)
        .dispatch()
        .await
        .expect("the batch");
    let _ = batch;
    let drained = queue
        .worker(
            WorkerOptions::default()
                .queues(["billing"])
                .concurrency(2)
                .stop_when_empty(),
        )
        .run()
        .await
        .expect("the billing worker");
    let _ = drained;
    // A second batch, part way through: 4 of its 10 members run.
    Batch::new()
        .add_many((1..=10u32).map(|n| {
            queue
                .dispatch_named("sync-payment", serde_json::json!(100 + n))
                .on_queue("imports")
        }))
        .via(&queue)
        .dispatch()
        .await
        .expect("the second batch");
    queue
        .worker(
            WorkerOptions::default()
                .queues(["imports"])
                .max_jobs(4)
                .prefetch(0),
        )
        .run()
        .await
        .expect("the imports worker");
    // Waiting, delayed and paused work; the first invoice, which a worker below runs, holds
    // a lock.
    queue
        .dispatch_named("send-invoice", serde_json::json!({ "invoice": 1 }))
        .on_queue("default")
        .without_overlapping_key("invoice:customer-42")
        .await
        .expect("dispatched");
    for n in 0..42u32 {
        queue
            .dispatch_named("send-invoice", serde_json::json!({ "invoice": 9000 + n }))
            .on_queue("default")
            .await
            .expect("dispatched");
    }
    for n in 0..17u32 {
        queue
            .dispatch_named("send-reminder", serde_json::json!({ "user": n }))
            .on_queue("emails")
            .delay(Duration::from_secs(3600))
            .await
            .expect("dispatched");
    }
    for n in 0..8u32 {
        queue
            .dispatch_named("monthly-report", serde_json::json!({ "tenant": n }))
            .on_queue("reports")
            .await
            .expect("dispatched");
    }
    queue.pause("reports").await.expect("paused");
    Schedules::upsert_via(
        &queue,
        "nightly-cleanup",
        Schedule::cron("0 3 * * *").dispatch(
            queue
                .dispatch_named("cleanup", serde_json::json!({}))
                .on_queue("low"),
        ),
    )
    .await
    .expect("the schedule");
    let worker = queue.worker(
        WorkerOptions::default()
            .queues(["default"])
            .concurrency(2)
            .prefetch(0),
    );
    let stop = worker.stop_handle();
    let running = tokio::spawn(worker.run());
    // Past the worker's first beat after it took its jobs: SQL stores count running jobs
    // from the workers' registry.
    tokio::time::sleep(queue_core::worker::BEAT_EVERY + Duration::from_secs(2)).await;

    // A day of throughput history, as workers would have written it (the charts show the
    // counts of the worker runs above in the current minute).
    let now = std::time::SystemTime::now();
    for ago in 1..60u64 {
        let wave = ((ago as f64) / 7.0).sin().abs();
        queue_core::stats::record(
            queue.storage().as_ref(),
            now - Duration::from_secs(60 * ago),
            queue_core::stats::Tally {
                processed: 40 + (wave * 80.0) as u64,
                failed: u64::from(ago % 11 == 0) * 9 + u64::from(ago % 3 == 0),
                starts: 50,
                wait_ms: 50 * (200 + (wave * 900.0) as u64),
                waits: waits(50, 200 + (wave * 900.0) as u64),
            },
        )
        .await
        .expect("history");
    }
    for ago in 1..24u64 {
        let wave = ((ago as f64) / 4.0).sin().abs();
        queue_core::stats::record(
            queue.storage().as_ref(),
            now - Duration::from_secs(3600 * ago),
            queue_core::stats::Tally {
                processed: 2000 + (wave * 4000.0) as u64,
                failed: 10 + ago % 5 * 7,
                starts: 2000,
                wait_ms: 2000 * 400,
                waits: waits(2000, 400),
            },
        )
        .await
        .expect("history");
    }

    let addr = serve(queue.clone()).await;
    let (_driver, client) = browser(&chromium, &chromedriver).await;
    let base = format!("http://{addr}/admin/jobs");
    let shots = async {
        let failed_job = queue
            .storage()
            .failed_store()
            .expect("a failed store")
            .list(queue_core::storage::PageRequest::first(1))
            .await
            .expect("failed jobs")
            .items
            .into_iter()
            .next()
            .expect("a failed job");
        for (file, path) in [
            ("overview.png", String::new()),
            ("queue.png", "/queues/default".to_owned()),
            ("failed-groups.png", "/failed/groups".to_owned()),
            (
                "failed-job.png",
                format!("/failed/{}", common::enc(&failed_job.id)),
            ),
            ("batches.png", "/batches".to_owned()),
            ("schedules.png", "/schedules".to_owned()),
            ("workers.png", "/workers".to_owned()),
            ("locks.png", "/locks".to_owned()),
        ] {
            client
                .goto(&format!("{base}{path}"))
                .await
                .expect("the page loads");
            // The overview is taller: its charts are below the table.
            let height = if path.is_empty() { 1500 } else { 900 };
            client
                .set_window_size(1200, height)
                .await
                .expect("the window is resized");
            // The overview's live table and the SSE status settle first.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let png = client.screenshot().await.expect("a screenshot");
            std::fs::write(out.join(file), png).expect("the screenshot is written");
            println!("wrote {}", out.join(file).display());
        }
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(shots)).await;
    let _ = client.close().await;
    stop.stop();
    let _ = running.await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
