//! The dispatch API end to end with typed jobs: derive, registration, default and explicit
//! connections, fakes, limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use queue_core::envelope::Envelope;
use queue_core::storage::Inspect;
use queue_core::{
    Error, Handle, Job, JobContext, JobError, MemoryStorage, Queue, QueueSettings, Storage,
    StorageExt, WorkerOptions,
};
use queue_tests::fault::Faulty;
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
    let memory = MemoryStorage::recording();
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
    assert!(
        MemoryStorage::new().pushed().is_empty(),
        "a plain store keeps no history"
    );
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
    let memory = MemoryStorage::recording();
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

/// Tests that each call `Queue::fake()` on threads of one process (as `cargo test` runs
/// them) see only their own dispatches.
#[test]
fn fakes_of_parallel_tests_do_not_see_each_other() {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let fake = Queue::fake();
                    for i in 0..50 {
                        SendEmail::dispatch(SendEmail {
                            to: format!("{t}@thread"),
                            subject: format!("{i}"),
                        })
                        .await
                        .unwrap();
                        tokio::task::yield_now().await;
                    }
                    let mine = fake.dispatched::<SendEmail>();
                    assert_eq!(mine.len(), 50, "thread {t} sees its 50 dispatches only");
                    assert!(mine.iter().all(|m| m.to == format!("{t}@thread")));
                })
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// `Queue::scope` makes a queue the default of everything awaited inside it, on any thread
/// of a multi-threaded runtime, over the thread's fake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_default_reaches_spawned_work() {
    let outer = Queue::fake();
    let inner = Queue::fake();
    let scoped = inner.clone();
    outer
        .scope(async move {
            scoped
                .scope(async {
                    SendEmail::dispatch(email()).await.unwrap();
                })
                .await;
        })
        .await;
    assert_eq!(inner.dispatched::<SendEmail>().len(), 1);
    assert!(outer.dispatched_all().is_empty());
}

/// A queue size limit does not count the queue on every dispatch, and is exact for one
/// dispatcher.
#[tokio::test]
async fn size_limits_count_the_queue_rarely() {
    let faulty = Faulty::new(std::sync::Arc::new(MemoryStorage::new()));
    let mut settings = QueueSettings::default();
    settings.max_queue_size = HashMap::from([("mail".to_owned(), 100_000), ("tiny".to_owned(), 5)]);
    let queue = Queue::with_settings(faulty.clone(), settings);
    for _ in 0..1_000 {
        queue.dispatch(email()).await.unwrap();
    }
    let counts = faulty.sizes.load(Ordering::SeqCst);
    assert!(
        counts <= 10,
        "1,000 dispatches counted the queue {counts} times (it used to be 1,000)"
    );
    for _ in 0..5 {
        queue.dispatch(email()).on_queue("tiny").await.unwrap();
    }
    assert!(matches!(
        queue.dispatch(email()).on_queue("tiny").await,
        Err(Error::QueueFull {
            size: 5,
            limit: 5,
            ..
        })
    ));
    // Room made by workers is seen: the queue is counted again before any refusal.
    let taken = faulty
        .reserve(&queue_core::ReserveRequest::new(
            ["tiny"],
            Duration::from_secs(60),
            2,
        ))
        .await
        .unwrap();
    faulty
        .acknowledge(&taken.iter().map(|r| r.lease.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    queue.dispatch(email()).on_queue("tiny").await.unwrap();
    queue.dispatch(email()).on_queue("tiny").await.unwrap();
    assert!(queue.dispatch(email()).on_queue("tiny").await.is_err());
}

/// Dispatches from many tasks at once share pushes; each still gets its own id, and one task
/// dispatching job after job pushes each at once.
#[tokio::test]
async fn concurrent_dispatches_share_pushes() {
    let faulty = Faulty::new(std::sync::Arc::new(MemoryStorage::new()));
    let queue = Queue::from_arc(faulty.clone());
    for _ in 0..100 {
        queue.dispatch(email()).await.unwrap();
    }
    assert_eq!(
        faulty.pushes.load(Ordering::SeqCst),
        100,
        "one by one: one push each"
    );
    assert_eq!(faulty.largest_push.load(Ordering::SeqCst), 1);

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..4 {
                    ids.push(queue.dispatch(email()).on_queue("shared").await.unwrap());
                }
                ids
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(ids.insert(id));
        }
    }
    assert_eq!(ids.len(), 200);
    let pushes = faulty.pushes.load(Ordering::SeqCst) - 100;
    assert!(
        pushes < 200,
        "200 concurrent dispatches took {pushes} pushes"
    );
    assert!(faulty.largest_push.load(Ordering::SeqCst) > 1);
    assert_eq!(faulty.size("shared").await.unwrap().total(), 200);
}

/// A shared push that fails is taken apart: the dispatch that caused it gets the error, the
/// others are stored and get their ids.
#[tokio::test]
async fn a_failed_shared_push_fails_only_its_own_dispatch() {
    let faulty = Faulty::new(std::sync::Arc::new(MemoryStorage::new()));
    *faulty.refuse_payloads_with.lock().unwrap() = Some(b"refuse-me".to_vec());
    let queue = Queue::from_arc(faulty.clone());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut job = email();
                if i % 5 == 4 {
                    job.subject = "refuse-me".into();
                }
                (i, queue.dispatch(job).on_queue("mixed").await)
            })
        })
        .collect();
    for task in tasks {
        let (i, result) = task.await.unwrap();
        match result {
            Ok(_) => assert_ne!(i % 5, 4, "dispatch {i} should have failed"),
            Err(e) => {
                assert_eq!(i % 5, 4, "dispatch {i} failed: {e}");
                assert!(e.to_string().contains("refused payload"), "{e}");
            }
        }
    }
    assert!(
        faulty.largest_refused.load(Ordering::SeqCst) > 1,
        "a refused push was shared (else this test proves nothing)"
    );
    assert_eq!(faulty.size("mixed").await.unwrap().total(), 16);
}

/// Unique by customer while it waits (Laravel's `ShouldBeUniqueUntilProcessing`).
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(name = "sync-customer", unique(by = ["customer_id"], until = "started"))]
struct SyncCustomer {
    customer_id: u64,
    reason: String,
}

impl Handle for SyncCustomer {
    async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

/// A type's declared uniqueness applies to typed dispatches, string-named ones (what `runall
/// dispatch` uses) and `dispatch_many`; a dispatch can change its key or drop it; it is
/// refused in a chain, with nothing stored.
#[tokio::test]
async fn declared_unique_jobs_hold_on_every_dispatch_path() {
    let queue = Queue::connect("memory://").await.unwrap();
    let sync = |id: u64, reason: &str| SyncCustomer {
        customer_id: id,
        reason: reason.into(),
    };
    let first = sync(7, "order").dispatch().via(&queue).await.unwrap();
    assert!(first.is_created());
    let holder = first.into_id();
    // Other fields do not count: the key is the customer.
    let again = sync(7, "refund").dispatch().via(&queue).await.unwrap();
    assert_eq!(again, queue_core::Dispatched::Duplicate(holder.clone()));
    let named = queue
        .dispatch_named(
            "sync-customer",
            serde_json::json!({"customer_id": 7, "reason": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(named, queue_core::Dispatched::Duplicate(holder.clone()));
    let bad = queue
        .dispatch_named("sync-customer", serde_json::json!({"id": 7}))
        .await
        .unwrap_err();
    assert!(
        bad.to_string()
            .contains("its key cannot be read from this payload"),
        "{bad}"
    );
    let many = queue
        .dispatch_many([
            sync(7, "a").dispatch(),
            sync(8, "b").dispatch(),
            sync(8, "c").dispatch(),
        ])
        .await
        .unwrap();
    assert_eq!(many[0], queue_core::Dispatched::Duplicate(holder.clone()));
    assert!(many[1].is_created());
    assert_eq!(
        many[2],
        queue_core::Dispatched::Duplicate(many[1].id().clone())
    );
    // Per dispatch: another key, or none.
    assert!(sync(7, "x")
        .dispatch()
        .unique_key("manual")
        .via(&queue)
        .await
        .unwrap()
        .is_created());
    assert!(sync(7, "y")
        .dispatch()
        .not_unique()
        .via(&queue)
        .await
        .unwrap()
        .is_created());
    let size = queue
        .storage()
        .inspect()
        .unwrap()
        .size("default")
        .await
        .unwrap();
    assert_eq!(size.waiting, 4, "7, 8, manual and the one without a key");

    let err = queue_core::Chain::new()
        .then(sync(9, "chained").dispatch())
        .via(&queue)
        .dispatch()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("job `sync-customer` is unique"),
        "{err}"
    );
    assert_eq!(
        queue
            .storage()
            .inspect()
            .unwrap()
            .size("default")
            .await
            .unwrap()
            .waiting,
        4
    );
}
