//! Jobs by id, end to end: status through a job's life, progress while it runs, its output,
//! the status kept when it ends, and cancelling it waiting or running.

use std::time::{Duration, Instant};

use queue_core::storage::{self, PageRequest};
use queue_core::{
    Batch, CancelOutcome, Chain, Error, GroupKind, JobError, JobId, JobState, JobStatus, Queue,
    StorageExt,
};
use serde_json::json;

use super::{run_worker, test_options};
use crate::{unique, Store};

fn skip(case: &str, store: &Store) {
    println!(
        "{case}: not applicable to the {} driver (no jobs by id; declared in its capabilities)",
        store.driver()
    );
}

/// Polls the job's status until `until` holds, for at most 20 s.
async fn wait_for(
    queue: &Queue,
    id: &JobId,
    what: &str,
    until: impl Fn(&JobStatus) -> bool,
) -> JobStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = queue.job(id).await.unwrap();
        if let Some(status) = status.as_ref().filter(|s| until(s)) {
            return status.clone();
        }
        assert!(
            Instant::now() < deadline,
            "job {id}: {what}, still {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A job's state by id from dispatch to its end: pending, scheduled, running with its
/// progress, then succeeded with its output and progress (kept by a worker with
/// `keep_finished`), failed with its error and discarded with its reason (kept by any
/// worker); a succeeded job's status is not kept without `keep_finished`.
pub async fn engine_job_status(store: Store) {
    let queue = Queue::from_arc(store.clone());
    if store.capabilities().track.is_none() {
        let err = queue.job(&JobId("1".into())).await.unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        return skip("engine_job_status", &store);
    }
    let q = unique("status");
    queue.listen("report", |payload: serde_json::Value, ctx| async move {
        let rows = payload["rows"].as_u64().unwrap_or(0);
        for done in 1..=rows {
            ctx.progress(done, rows).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        ctx.output(&json!({ "rows": rows, "file": "report.csv" }))
            .map_err(JobError::fail)?;
        Ok(())
    });
    queue.listen("broken", |_: serde_json::Value, _ctx| async move {
        Err(JobError::fail("the input is malformed"))
    });
    queue.listen("gone", |_: serde_json::Value, _ctx| async move {
        Err(JobError::discard("the order was deleted"))
    });
    queue.listen("huge", |_: serde_json::Value, ctx| async move {
        let big = "x".repeat(queue_core::MAX_OUTPUT + 1);
        match ctx.output(&big) {
            Err(Error::PayloadTooLarge { .. }) => Ok(()),
            other => Err(JobError::fail(format!(
                "a huge output was not refused: {other:?}"
            ))),
        }
    });

    let report = queue
        .dispatch_named("report", json!({ "rows": 8 }))
        .on_queue(q.as_str())
        .await
        .unwrap()
        .into_id();
    let later = queue
        .dispatch_named("report", json!({ "rows": 1 }))
        .on_queue(q.as_str())
        .delay(Duration::from_secs(3600))
        .await
        .unwrap()
        .into_id();
    let status = queue.job(&report).await.unwrap().expect("a dispatched job");
    assert_eq!(
        (
            status.state,
            status.name.as_str(),
            status.queue.as_str(),
            status.attempts
        ),
        (JobState::Pending, "report", q.as_str(), 0)
    );
    let status = queue.job(&later).await.unwrap().expect("a delayed job");
    assert_eq!(status.state, JobState::Scheduled);
    assert!(status.due_at.unwrap() > std::time::SystemTime::now() + Duration::from_secs(3000));
    assert!(queue.cancel(&later).await.unwrap().is_cancelled());

    let broken = queue
        .dispatch_named("broken", json!({}))
        .on_queue(q.as_str())
        .await
        .unwrap()
        .into_id();
    let gone = queue
        .dispatch_named("gone", json!({}))
        .on_queue(q.as_str())
        .await
        .unwrap()
        .into_id();
    let huge = queue
        .dispatch_named("huge", json!({}))
        .on_queue(q.as_str())
        .await
        .unwrap()
        .into_id();

    let worker = {
        let queue = queue.clone();
        let options = test_options(&[&q]).keep_finished(Duration::from_secs(3600));
        tokio::spawn(async move { run_worker(&queue, options).await })
    };
    let running = wait_for(&queue, &report, "running with progress", |s| {
        s.state == JobState::Running && s.progress.is_some_and(|p| p.done >= 2)
    })
    .await;
    assert_eq!(running.attempts, 1);
    assert_eq!(running.progress.map(|p| p.of), Some(8));
    let summary = worker.await.unwrap();
    assert_eq!(summary.processed, 2, "{summary:?}");

    let done = queue
        .job(&report)
        .await
        .unwrap()
        .expect("kept: keep_finished");
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(
        done.output,
        Some(json!({ "rows": 8, "file": "report.csv" }))
    );
    assert_eq!(done.progress.map(|p| (p.done, p.of)), Some((8, 8)));
    assert_eq!(done.progress.and_then(|p| p.percent()), Some(100.0));
    let (started, finished) = (done.started_at.unwrap(), done.finished_at.unwrap());
    assert!(finished.duration_since(started).unwrap() >= Duration::from_millis(1000));
    assert!(done.dispatched_at.unwrap() <= started);
    assert!(!done.cancel_requested);

    let failed = queue
        .job(&broken)
        .await
        .unwrap()
        .expect("a failed job is kept");
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.error.unwrap().contains("the input is malformed"));
    let discarded = queue
        .job(&gone)
        .await
        .unwrap()
        .expect("a discarded job is kept");
    assert_eq!(discarded.state, JobState::Discarded);
    assert_eq!(discarded.error.as_deref(), Some("the order was deleted"));
    let huge = queue
        .job(&huge)
        .await
        .unwrap()
        .expect("kept: keep_finished");
    assert_eq!((huge.state, huge.output), (JobState::Succeeded, None));
    let cancelled = queue
        .job(&later)
        .await
        .unwrap()
        .expect("a cancelled job is kept");
    assert_eq!(cancelled.state, JobState::Cancelled);
    match queue.cancel(&report).await.unwrap() {
        CancelOutcome::Finished(status) => assert_eq!(status.state, JobState::Succeeded),
        other => panic!("a finished job is not cancelled again: {other:?}"),
    }
    assert_eq!(
        queue.cancel(&JobId("no such job".into())).await.unwrap(),
        CancelOutcome::NotFound
    );

    // Without keep_finished a succeeded job leaves no status; a failed one still does.
    let plain = queue
        .dispatch_named("report", json!({ "rows": 0 }))
        .on_queue(q.as_str())
        .await
        .unwrap()
        .into_id();
    let broken = queue
        .dispatch_named("broken", json!({}))
        .on_queue(q.as_str())
        .await
        .unwrap()
        .into_id();
    run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(queue.job(&plain).await.unwrap(), None);
    assert_eq!(
        queue.job(&broken).await.unwrap().map(|s| s.state),
        Some(JobState::Failed)
    );
}

/// A running job is cancelled from outside its worker: a body that watches
/// `ctx.is_cancelled()` returns and the job ends cancelled (not failed, not retried); one
/// that ignores it is stopped after the grace; the worker counts both, keeps running, and
/// the cancelled jobs' unique keys are free again.
pub async fn engine_cancel_running_jobs(store: Store) {
    let queue = Queue::from_arc(store.clone());
    if store.capabilities().track.is_none() {
        let err = queue.cancel(&JobId("1".into())).await.unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        return skip("engine_cancel_running_jobs", &store);
    }
    let q = unique("cancel");
    queue.listen("polite", |_: serde_json::Value, ctx| async move {
        for step in 0..400u64 {
            if ctx.is_cancelled() {
                return Err(JobError::msg("stopped: cancelled"));
            }
            ctx.progress(step, 400).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    });
    queue.listen("stubborn", |_: serde_json::Value, _ctx| async move {
        tokio::time::sleep(Duration::from_secs(40)).await;
        Ok(())
    });
    queue.listen("quick", |_: serde_json::Value, _ctx| async move { Ok(()) });
    let claims = store.capabilities().claims;
    let mut polite = queue
        .dispatch_named("polite", json!({}))
        .on_queue(q.as_str());
    if claims {
        polite = polite.unique_key("the-report");
    }
    let polite = polite.await.unwrap().into_id();
    let stubborn = queue
        .dispatch_named("stubborn", json!({}))
        .on_queue(q.as_str())
        .await
        .unwrap()
        .into_id();
    let options = test_options(&[&q])
        .concurrency(2)
        .lease(Duration::from_millis(900))
        .keep_finished(Duration::from_secs(3600));
    let worker = {
        let (queue, options) = (queue.clone(), options.clone());
        tokio::spawn(async move { run_worker(&queue, options).await })
    };
    for id in [&polite, &stubborn] {
        wait_for(&queue, id, "running", |s| s.state == JobState::Running).await;
    }
    let asked = Instant::now();
    for id in [&polite, &stubborn] {
        match queue.cancel(id).await.unwrap() {
            CancelOutcome::Requested(status) => assert!(status.cancel_requested),
            other => panic!("a running job's cancel is requested: {other:?}"),
        }
        let running = queue.job(id).await.unwrap().unwrap();
        assert!(running.cancel_requested, "{running:?}");
    }
    let ended = wait_for(&queue, &polite, "cancelled", |s| s.state.is_finished()).await;
    assert_eq!(ended.state, JobState::Cancelled, "{ended:?}");
    assert!(ended.cancel_requested);
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "seen within a heartbeat (a third of the 900 ms lease), not {:?}",
        asked.elapsed()
    );
    let ended = wait_for(&queue, &stubborn, "cancelled", |s| s.state.is_finished()).await;
    assert_eq!(ended.state, JobState::Cancelled, "{ended:?}");
    let summary = worker.await.unwrap();
    assert_eq!(
        (summary.cancelled, summary.failed, summary.retried),
        (2, 0, 0),
        "{summary:?}"
    );
    assert!(crate::cases::failed_list(&store, 10)
        .await
        .iter()
        .all(|f| f.queue != q));
    if claims {
        let again = queue
            .dispatch_named("quick", json!({}))
            .on_queue(q.as_str())
            .unique_key("the-report")
            .await
            .unwrap();
        assert!(
            again.is_created(),
            "the cancelled job's key is free: {again:?}"
        );
        run_worker(&queue, options).await;
    }
}

/// Job events, in the process whose queue dispatches and whose worker runs the jobs: each
/// job's dispatch, its attempts' starts and its end, in order, with the error where there
/// is one; `Queue::on` runs its handler once per event of its kind.
pub async fn engine_job_events(store: Store) {
    use queue_core::JobEventKind as K;
    let queue = Queue::from_arc(store.clone());
    let q = unique("events");
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = failures.clone();
    queue
        .on(K::Failed, move |event| {
            seen.lock().unwrap().push(event.name.clone());
        })
        .unwrap();
    let mut events = queue.events();
    queue.listen("fine", |_: serde_json::Value, _ctx| async { Ok(()) });
    queue.listen("flaky", |_: serde_json::Value, ctx| async move {
        match ctx.attempt() {
            1 => Err(JobError::msg("first attempt fails")),
            _ => Err(JobError::fail("second attempt fails for good")),
        }
    });
    queue.listen("gone", |_: serde_json::Value, _ctx| async {
        Err(JobError::discard("nothing to do"))
    });
    let mut ids = Vec::new();
    for name in ["fine", "flaky", "gone"] {
        let id = queue
            .dispatch_named(name, json!({}))
            .on_queue(q.as_str())
            .tries(2)
            .await
            .unwrap()
            .into_id();
        ids.push(id);
    }
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!(
        (summary.processed, summary.failed, summary.discarded),
        (1, 1, 1)
    );
    let mut got = Vec::new();
    while got.len() < 11 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("every event arrives")
            .expect("the queue is alive");
        got.push(event);
    }
    assert_eq!(events.lost(), 0);
    let of = |id: &JobId| -> Vec<(K, u32, Option<String>)> {
        got.iter()
            .filter(|e| &e.id == id)
            .map(|e| (e.kind, e.attempt, e.error.clone()))
            .collect()
    };
    assert_eq!(
        of(&ids[0]),
        [
            (K::Dispatched, 0, None),
            (K::Started, 1, None),
            (K::Succeeded, 1, None)
        ]
    );
    assert_eq!(
        of(&ids[1]),
        [
            (K::Dispatched, 0, None),
            (K::Started, 1, None),
            (K::Retrying, 1, Some("first attempt fails".into())),
            (K::Started, 2, None),
            (K::Failed, 2, Some("second attempt fails for good".into())),
        ]
    );
    let gone = of(&ids[2]);
    assert_eq!(gone.len(), 3, "{gone:?}");
    assert_eq!(gone[2], (K::Discarded, 1, Some("nothing to do".into())));
    assert!(got.iter().all(|e| e.queue == q));
    let deadline = Instant::now() + Duration::from_secs(5);
    while failures.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*failures.lock().unwrap(), ["flaky"]);
}

/// A job's status names the batch or chain it is part of: read from its payload while it
/// waits in its queue, and kept in its status record once it ends (succeeded with
/// `keep_finished`, or failed).
pub async fn engine_job_status_names_its_group(store: Store) {
    let skip = |store: &Store| {
        println!(
            "engine_job_status_names_its_group: not applicable to the {} driver (it lacks jobs \
             by id, batches or a listing of its jobs; declared in its capabilities)",
            store.driver()
        )
    };
    let caps = store.capabilities();
    if caps.track.is_none() || caps.groups.is_none() {
        return skip(&store);
    }
    let Ok(inspect) = store.inspect() else {
        return skip(&store);
    };
    let queue = Queue::from_arc(store.clone());
    let q = unique("grouped");
    queue.listen("ok", |_: serde_json::Value, _ctx| async move { Ok(()) });
    queue.listen("bad", |_: serde_json::Value, _ctx| async move {
        Err(JobError::fail("it cannot work"))
    });
    let on_q = |name: &str| {
        queue
            .dispatch_named(name, json!({}))
            .on_queue(q.as_str())
            .tries(1)
    };
    let batch = Batch::new()
        .add(on_q("ok"))
        .add(on_q("bad"))
        .allow_failures()
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    let chain = Chain::new()
        .then(on_q("ok"))
        .then(on_q("ok"))
        .via(&queue)
        .dispatch()
        .await
        .unwrap();
    let listed = match inspect
        .jobs(&q, storage::JobState::Waiting, PageRequest::first(10))
        .await
    {
        Ok(page) => page.items,
        Err(Error::NotSupported { .. }) => return skip(&store),
        Err(e) => panic!("{e}"),
    };
    // The two members and the chain's first link (the second waits for it, without an id).
    assert_eq!(listed.len(), 3, "{listed:?}");
    let mut in_batch = Vec::new();
    let mut link = None;
    for job in &listed {
        let status = queue.job(&job.id).await.unwrap().expect("a waiting job");
        assert_eq!(status.state, JobState::Pending);
        let group = status.group.expect("a member or a link names its group");
        match group.kind {
            GroupKind::Batch => {
                assert_eq!(group.id, batch.0);
                in_batch.push((job.id.clone(), job.name.clone()));
            }
            GroupKind::Chain => {
                assert_eq!(group.id, chain.0);
                link = Some(job.id.clone());
            }
            other => panic!("not a workflow: {other:?}"),
        }
    }
    assert_eq!(in_batch.len(), 2);
    let link = link.expect("the chain's first link");

    let options = test_options(&[&q]).keep_finished(Duration::from_secs(3600));
    let summary = run_worker(&queue, options).await;
    assert_eq!((summary.processed, summary.failed), (3, 1), "{summary:?}");
    for (id, name) in &in_batch {
        let status = queue.job(id).await.unwrap().expect("kept");
        let want = if name == "ok" {
            JobState::Succeeded
        } else {
            JobState::Failed
        };
        assert_eq!(status.state, want, "{name}");
        let group = status.group.expect("kept with its status");
        assert_eq!(
            (group.kind, group.id.as_str()),
            (GroupKind::Batch, batch.0.as_str())
        );
    }
    let status = queue.job(&link).await.unwrap().expect("kept");
    assert_eq!(status.state, JobState::Succeeded);
    let group = status.group.expect("kept with its status");
    assert_eq!(
        (group.kind, group.id.as_str()),
        (GroupKind::Chain, chain.0.as_str())
    );
}
