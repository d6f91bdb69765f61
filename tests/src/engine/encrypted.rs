//! Encrypted payloads: stored sealed, run by a worker with the key; a tampered ciphertext, a
//! swapped job name and an unknown key id go to the failed store without running; a key
//! rotated out of activity still opens its jobs; a worker without keys leaves the jobs for
//! one that has them; its unique and limit keys are HMACs, not its data.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::storage::{Availability, JobState, NewJob, PageRequest, Pushed};
use queue_core::{Error, JobLimit, KeyRing, Queue, QueueSettings, Schedule, Schedules, StorageExt};
use serde_json::json;

use super::{run_worker, test_options};
use crate::cases::failed_list;
use crate::{request, unique, Store};

fn ring(active: &str) -> Arc<KeyRing> {
    let ring = KeyRing::new("k2", [2; 32])
        .unwrap()
        .with_key("k1", [1; 32])
        .unwrap()
        .activate(active)
        .unwrap();
    Arc::new(ring)
}

fn queue_with(store: &Store, keys: Option<Arc<KeyRing>>) -> Queue {
    let mut settings = QueueSettings::default();
    settings.keys = keys;
    Queue::with_settings(store.clone(), settings)
}

/// The stored job of a dispatch of `secret` by a queue with `keys`, as the store gets it.
fn sealed(queue: &Queue, q: &str, name: &str, secret: &str) -> NewJob {
    queue
        .dispatch_named(name, json!({ "iban": secret }))
        .on_queue(q)
        .encrypted()
        .into_new_job(queue.settings())
        .unwrap()
}

/// See the module docs.
pub async fn engine_encrypted_payloads(store: Store) {
    let q = unique("q");
    let worker_queue = queue_with(&store, Some(ring("k2")));
    let ran: Arc<Mutex<Vec<String>>> = Arc::default();
    for name in ["payout", "refund"] {
        let sink = ran.clone();
        worker_queue.listen(name, move |data: serde_json::Value, _ctx| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push(data["iban"].as_str().unwrap_or_default().to_owned());
                Ok(())
            }
        });
    }

    // No keys: the dispatch is refused, saying how to set them; nothing is stored.
    let err = queue_with(&store, None)
        .dispatch_named("payout", json!({ "iban": "DE-none" }))
        .on_queue(q.as_str())
        .encrypted()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Config(_)) && err.to_string().contains("RUNALL_KEYS"),
        "{err}"
    );

    // Stored sealed: the stored bytes hold neither the secret nor the data.
    worker_queue
        .dispatch_named("payout", json!({ "iban": "DE-plain-secret" }))
        .on_queue(q.as_str())
        .encrypted()
        .await
        .unwrap();
    let held = store
        .reserve(&request(&[&q], Duration::from_secs(5), 1))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&held[0].payload).into_owned();
    assert!(text.contains(r#""sealed":"rq1:k2:"#), "{text}");
    assert!(!text.contains("DE-plain-secret"), "{text}");
    assert!(
        text.contains(r#""name":"payout""#),
        "the name stays readable: {text}"
    );
    store.release(&held[0].lease, Duration::ZERO).await.unwrap();

    // Sealed with the older key (before a rotation): still opens.
    let old = queue_with(&store, Some(ring("k1")));
    store
        .push_one(sealed(&old, &q, "payout", "DE-old-key"))
        .await
        .unwrap();
    // Tampered: one character of the ciphertext changed.
    let mut tampered = sealed(&worker_queue, &q, "payout", "DE-tampered");
    let text = String::from_utf8(tampered.payload.clone()).unwrap();
    let at = text.find("rq1:k2:").unwrap() + 20;
    let flipped = if &text[at..=at] == "A" { "B" } else { "A" };
    tampered.payload = format!("{}{flipped}{}", &text[..at], &text[at + 1..]).into_bytes();
    store.push_one(tampered).await.unwrap();
    // Moved to another job type: the name is bound to the ciphertext.
    let mut moved = sealed(&worker_queue, &q, "payout", "DE-moved");
    moved.payload = String::from_utf8(moved.payload)
        .unwrap()
        .replace(r#""name":"payout""#, r#""name":"refund""#)
        .into_bytes();
    moved.name = "refund".into();
    store.push_one(moved).await.unwrap();
    // Sealed with a key the worker does not have.
    let stranger = queue_with(&store, Some(Arc::new(KeyRing::new("k9", [9; 32]).unwrap())));
    store
        .push_one(sealed(&stranger, &q, "payout", "DE-stranger"))
        .await
        .unwrap();

    let summary = run_worker(&worker_queue, test_options(&[&q])).await;
    let mut opened = ran.lock().unwrap().clone();
    opened.sort();
    assert_eq!(opened, ["DE-old-key", "DE-plain-secret"], "{summary:?}");
    assert_eq!(
        (summary.processed, summary.failed, summary.retried),
        (2, 3, 0)
    );
    let failed: Vec<_> = failed_list(&store, 1000)
        .await
        .into_iter()
        .filter(|f| f.queue == q)
        .collect();
    let reasons: Vec<&str> = failed.iter().map(|f| f.error.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.contains("undecryptable")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("was changed")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("job `refund`")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("\"k9\"")), "{reasons:?}");
    assert!(failed.iter().all(|f| f.attempts == 1), "never retried");
    for f in &failed {
        let text = String::from_utf8_lossy(&f.payload);
        assert!(
            !text.contains("DE-"),
            "no secret in the failed store: {text}"
        );
    }

    // A worker without keys puts encrypted jobs back for one that has them, then fails them.
    let mut job = sealed(&worker_queue, &q, "payout", "DE-later");
    job.available = Availability::Now;
    store.push_one(job).await.unwrap();
    let keyless = queue_with(&store, None);
    keyless.listen("payout", |_: serde_json::Value, _ctx| async { Ok(()) });
    let options = test_options(&[&q]).unknown_job_window(Duration::from_millis(300));
    let summary = run_worker(&keyless, options).await;
    assert_eq!((summary.processed, summary.failed), (0, 1), "{summary:?}");
    assert!(
        failed_list(&store, 1000)
            .await
            .iter()
            .any(|f| f.queue == q && f.error.contains("this worker has no keys")),
        "the reason names the missing keys"
    );

    // A stored schedule would keep the data readable in its timer job: refused.
    if store.capabilities().groups.is_some() {
        let schedule = Schedule::every(Duration::from_secs(60)).dispatch(
            worker_queue
                .dispatch_named("payout", json!({ "iban": "DE-scheduled" }))
                .on_queue(q.as_str())
                .encrypted(),
        );
        let err = Schedules::upsert_via(&worker_queue, unique("payouts"), schedule)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("encrypted"), "{err}");
    }

    // Its unique and limit keys are HMACs under the active key: the claim and the limit's
    // name the store keeps in the clear never hold the data, and the same data still gives
    // the same claim, so a duplicate is still one.
    let dispatch = || {
        worker_queue
            .dispatch_named("payout", json!({ "iban": "DE-unique" }))
            .on_queue(q.as_str())
            .encrypted()
            .unique_key("DE-unique-key")
            .limit(JobLimit::new("payouts").key("DE-limit-key"))
    };
    let job = dispatch().into_new_job(worker_queue.settings()).unwrap();
    let claim = job
        .unique
        .as_ref()
        .map(|u| u.key.clone())
        .unwrap_or_default();
    assert!(claim.starts_with("unique:payout:h:"), "{claim}");
    let text = String::from_utf8_lossy(&job.payload).into_owned();
    assert!(
        !claim.contains("DE-") && !text.contains("DE-"),
        "{claim} {text}"
    );
    assert!(text.contains(r#""limit":{"n":"payouts","k":"h:"#), "{text}");
    if store.capabilities().claims {
        let first = dispatch().await.unwrap();
        let second = dispatch().await.unwrap();
        assert!(
            matches!(&second, Pushed::Duplicate(id) if id == first.id()),
            "{first:?} {second:?}"
        );
        // Where the store lists jobs (memcached cannot).
        let listed = match store.inspect() {
            Ok(inspect) => inspect
                .jobs(&q, JobState::Waiting, PageRequest::first(100))
                .await
                .ok(),
            Err(_) => None,
        };
        if let Some(listed) = listed {
            let keys: Vec<_> = listed
                .items
                .iter()
                .filter_map(|j| j.unique_key.clone())
                .collect();
            assert_eq!(keys, [claim], "{listed:?}");
        }
    }
}

/// A job whose data holds one secret field (`queue_core::Secret`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Transfer {
    account: u64,
    iban: queue_core::Secret<String>,
}

/// Secret fields (`Secret<T>`): the stored job keeps its other fields readable and the
/// secret sealed (in the queue and in the failed store); the worker's job sees the value; a
/// sealed value moved to another job name, or a dispatch without keys, is refused; a worker
/// without keys leaves the job for one that has them.
pub async fn engine_secret_fields(store: Store) {
    let q = unique("q");
    let queue = queue_with(&store, Some(ring("k2")));
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    for name in ["transfer", "fails"] {
        let sink = seen.clone();
        queue.listen(name, move |t: Transfer, ctx| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push(format!("{} {}", t.account, t.iban.expose()));
                match ctx.name() {
                    "fails" => Err(queue_core::JobError::fail(format!("refused: {t:?}"))),
                    _ => Ok(()),
                }
            }
        });
    }
    let transfer = |account: u64, iban: &str| Transfer {
        account,
        iban: queue_core::Secret::new(iban.to_owned()),
    };
    let stored = queue
        .dispatch_named(
            "transfer",
            serde_json::to_value(transfer(7, "DE44-SECRET")).unwrap(),
        )
        .on_queue(q.as_str())
        .into_new_job(queue.settings())
        .unwrap();
    let text = String::from_utf8_lossy(&stored.payload).into_owned();
    assert!(!text.contains("DE44-SECRET"), "{text}");
    assert!(
        text.contains("\"account\":7") && text.contains("\"$secret\":\"rq1:k2:"),
        "{text}"
    );

    // Moved under another job's name, the sealed value does not open.
    let renamed = text.replacen("\"name\":\"transfer\"", "\"name\":\"fails\"", 1);
    assert_ne!(renamed, text, "the envelope names its job: {text}");
    let moved = NewJob::new(q.as_str(), "fails", renamed.into_bytes());
    store.push(vec![stored, moved]).await.unwrap();
    queue
        .dispatch_named(
            "fails",
            serde_json::to_value(transfer(8, "FR76-SECRET")).unwrap(),
        )
        .on_queue(q.as_str())
        .await
        .unwrap();
    let summary = run_worker(&queue, test_options(&[&q])).await;
    assert_eq!((summary.processed, summary.failed), (1, 2), "{summary:?}");
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, ["7 DE44-SECRET", "8 FR76-SECRET"]);
    let failed = failed_list(&store, 10).await;
    let ours: Vec<_> = failed.iter().filter(|f| f.queue == q).collect();
    assert_eq!(ours.len(), 2);
    for f in &ours {
        let text = String::from_utf8_lossy(&f.payload);
        assert!(
            !text.contains("SECRET"),
            "the failed store holds no secret: {text}"
        );
        assert!(!f.error.contains("SECRET"), "nor its error: {}", f.error);
    }
    assert!(
        ours.iter().any(|f| f.error.contains("undecryptable")),
        "{ours:?}"
    );

    // Without keys: the dispatch is refused, and a worker leaves the job for one with keys.
    let keyless = queue_with(&store, None);
    let err = keyless
        .dispatch_named("transfer", serde_json::to_value(transfer(9, "X")).unwrap())
        .on_queue(q.as_str())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("secret fields"), "{err}");
    queue
        .dispatch_named(
            "transfer",
            serde_json::to_value(transfer(10, "NL91-SECRET")).unwrap(),
        )
        .on_queue(q.as_str())
        .await
        .unwrap();
    keyless.listen("transfer", |_: serde_json::Value, _ctx| async { Ok(()) });
    let options = test_options(&[&q]).unknown_job_window(Duration::from_millis(300));
    let summary = run_worker(&keyless, options).await;
    assert_eq!((summary.processed, summary.failed), (0, 1), "{summary:?}");
    assert!(
        failed_list(&store, 1000).await.iter().any(|f| f.queue == q
            && f.error
                .contains("secret fields and this worker has no keys")),
        "the reason names the missing keys"
    );
    assert!(!seen.lock().unwrap().iter().any(|s| s.contains("NL91")));
}

/// A key rotation: jobs sealed with the old key (their whole data, or a secret field) that
/// a worker whose active key is the new one retries go back to their queue sealed with the
/// new key, in the settle that retries them, on stores that take a new payload there; their
/// next attempt opens them as before. On a store without it, they keep the old key (as the
/// crate docs say).
pub async fn engine_retried_jobs_are_resealed(store: Store) {
    let caps = store.capabilities();
    if caps.track.is_none() {
        println!(
            "engine_retried_jobs_are_resealed: not applicable to the {} driver (no jobs by id, \
             to read the stored payload; declared in its capabilities)",
            store.driver()
        );
        return;
    }
    let rewrite = caps.rewrite;
    let q = unique("q");
    let old = queue_with(&store, Some(ring("k1")));
    let worker_queue = queue_with(&store, Some(ring("k2")));
    // Per attempt: the secret it read, its number, the keys that sealed its stored job.
    type Seen = Vec<(String, u32, Vec<String>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    for name in ["payout", "transfer"] {
        let (sink, store) = (seen.clone(), store.clone());
        worker_queue.listen(name, move |data: serde_json::Value, ctx| {
            let (sink, store) = (sink.clone(), store.clone());
            async move {
                // The stored job, as this attempt was reserved.
                let stored = store
                    .track()
                    .unwrap()
                    .job(ctx.job_id())
                    .await
                    .unwrap()
                    .expect("a running job is in its queue");
                let keys = KeyRing::sealed_by(&stored.payload).unwrap_or_default();
                // A secret field reaches an untyped listener opened, still marked.
                let iban = &data["iban"];
                let secret = iban.as_str().or_else(|| iban["$secret"].as_str());
                let secret = secret.unwrap_or_default().to_owned();
                sink.lock().unwrap().push((secret, ctx.attempt(), keys));
                match ctx.attempt() {
                    1 => Err(queue_core::JobError::msg("the first attempt fails")),
                    _ => Ok(()),
                }
            }
        });
    }
    old.dispatch_named("payout", json!({ "iban": "DE-ROTATE" }))
        .on_queue(q.as_str())
        .encrypted()
        .tries(3)
        .await
        .unwrap();
    let transfer = Transfer {
        account: 1,
        iban: queue_core::Secret::new("FR-ROTATE".into()),
    };
    old.dispatch_named("transfer", serde_json::to_value(&transfer).unwrap())
        .on_queue(q.as_str())
        .tries(3)
        .await
        .unwrap();
    let summary = run_worker(&worker_queue, test_options(&[&q])).await;
    assert_eq!((summary.processed, summary.retried), (2, 2), "{summary:?}");
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    let second = if rewrite { "k2" } else { "k1" };
    let want = |secret: &str| {
        [
            (secret.to_owned(), 1, vec!["k1".to_owned()]),
            (secret.to_owned(), 2, vec![second.to_owned()]),
        ]
    };
    let mut expected: Vec<_> = want("DE-ROTATE")
        .into_iter()
        .chain(want("FR-ROTATE"))
        .collect();
    expected.sort();
    assert_eq!(got, expected, "rewrite: {rewrite}");
}
