//! The dispatch API end to end with typed jobs: derive, registration, default and explicit
//! connections, fakes, limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use queue_core::envelope::Envelope;
use queue_core::{
    Error, Handle, Job, JobContext, JobError, MemoryStorage, Queue, QueueSettings, Storage,
    WorkerOptions,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Job)]
#[job(
    name = "send-email",
    queue = "mail",
    tries = 4,
    timeout = "30s",
    backoff = "exponential"
)]
struct SendEmail {
    to: String,
    subject: String,
}

static SENT: AtomicU32 = AtomicU32::new(0);

impl Handle for SendEmail {
    async fn handle(self, ctx: JobContext) -> Result<(), JobError> {
        assert_eq!(ctx.name(), "send-email");
        assert_eq!(ctx.max_attempts(), 4);
        SENT.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize, Job)]
struct GenerateReport {
    month: u32,
}

impl Handle for GenerateReport {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn email() -> SendEmail {
    SendEmail {
        to: "a@b.c".into(),
        subject: "hi".into(),
    }
}

fn envelope_of(bytes: &[u8]) -> Envelope {
    Envelope::decode(bytes).expect("a valid envelope")
}

#[test]
fn derive_sets_the_job_metadata() {
    assert_eq!(SendEmail::NAME, "send-email");
    assert_eq!(SendEmail::QUEUE, "mail");
    assert_eq!(SendEmail::TRIES, Some(4));
    assert_eq!(SendEmail::TIMEOUT, Some(Duration::from_secs(30)));
    assert_eq!(
        GenerateReport::NAME,
        "generate-report",
        "default name is the kebab-case type name"
    );
    assert_eq!(GenerateReport::QUEUE, "default");
    assert!(
        queue_core::registry::find("send-email").is_some(),
        "registered through inventory"
    );
    assert!(queue_core::registry::find("generate-report").is_some());
}

#[tokio::test]
async fn typed_dispatch_through_an_explicit_queue() {
    let memory = MemoryStorage::new();
    let queue = Queue::new(memory.clone());
    queue.dispatch(email()).await.unwrap();
    SendEmail::dispatch(email())
        .on_queue("high")
        .via(&queue)
        .await
        .unwrap();
    email()
        .dispatch()
        .delay(Duration::from_secs(60))
        .via(&queue)
        .await
        .unwrap();
    SendEmail::dispatch_at(SystemTime::now() + Duration::from_secs(3600), email())
        .via(&queue)
        .await
        .unwrap();
    GenerateReport { month: 11 }
        .dispatch()
        .without_overlapping()
        .via(&queue)
        .await
        .unwrap();
    GenerateReport { month: 12 }
        .dispatch()
        .without_overlapping_key("report:acme")
        .via(&queue)
        .await
        .unwrap();

    let pushed = memory.pushed();
    let queues: Vec<&str> = pushed.iter().map(|j| j.queue.as_str()).collect();
    assert_eq!(
        queues,
        ["mail", "high", "mail", "mail", "default", "default"]
    );
    let env = envelope_of(&pushed[0].payload);
    assert_eq!(env.name, "send-email");
    assert_eq!(env.tries, Some(4));
    assert_eq!(env.timeout_ms, Some(30_000));
    assert_eq!(
        serde_json::from_str::<SendEmail>(env.data.get()).unwrap(),
        email()
    );
    assert_eq!(
        envelope_of(&pushed[4].payload).lock.as_deref(),
        Some("generate-report")
    );
    assert_eq!(
        envelope_of(&pushed[5].payload).lock.as_deref(),
        Some("report:acme")
    );
    assert_eq!(memory.size("mail").await.unwrap().delayed, 2);
    assert_eq!(memory.size("mail").await.unwrap().waiting, 1);
}

#[tokio::test]
async fn typed_jobs_run_from_the_registry() {
    let queue = Queue::new(MemoryStorage::new());
    let before = SENT.load(Ordering::SeqCst);
    for _ in 0..3 {
        queue.dispatch(email()).await.unwrap();
    }
    let summary = queue
        .worker(WorkerOptions::default().queues(["mail"]).stop_when_empty())
        .run()
        .await
        .unwrap();
    assert_eq!(summary.processed, 3);
    assert!(SENT.load(Ordering::SeqCst) >= before + 3);
}

#[tokio::test]
async fn fake_queue_records_dispatches_through_the_default() {
    // The only test in this binary that touches the process-wide default.
    let fake = Queue::fake();
    SendEmail::dispatch(email()).on_queue("high").await.unwrap();
    fake.dispatch_named("ping", serde_json::json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(fake.dispatched::<SendEmail>(), vec![email()]);
    assert_eq!(
        fake.dispatched_named("ping"),
        vec![serde_json::json!({"n": 1})]
    );
    let all = fake.dispatched_all();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].queue, "high");
}

#[tokio::test]
async fn oversized_payloads_are_refused_at_dispatch() {
    let memory = MemoryStorage::new();
    let queue = Queue::new(memory.clone());
    let big = SendEmail {
        to: "a@b.c".into(),
        subject: "x".repeat(1024 * 1024 + 1),
    };
    match queue.dispatch(big).await {
        Err(Error::PayloadTooLarge { size, limit }) => {
            assert!(size > limit);
            assert_eq!(limit, 1024 * 1024);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert!(memory.pushed().is_empty(), "nothing was stored");

    let mut settings = QueueSettings::default();
    settings.max_payload = 100;
    let small = Queue::with_settings(Arc::new(MemoryStorage::new()), settings);
    let err = small
        .dispatch_named("x", serde_json::json!("y".repeat(200)))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("larger than the limit of 100 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn full_queues_refuse_dispatches() {
    let mut settings = QueueSettings::default();
    settings.max_queue_size = HashMap::from([("mail".to_owned(), 2)]);
    let queue = Queue::with_settings(Arc::new(MemoryStorage::new()), settings);
    queue.dispatch(email()).await.unwrap();
    queue.dispatch(email()).await.unwrap();
    match queue.dispatch(email()).await {
        Err(Error::QueueFull { queue, size, limit }) => {
            assert_eq!((queue.as_str(), size, limit), ("mail", 2, 2))
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    queue.dispatch(email()).on_queue("other").await.unwrap();
}
