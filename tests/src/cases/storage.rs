//! The cases of the core contract and the failed store, inspection and wake-up capabilities
//! that every driver in the tree has.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use queue_core::storage::PageRequest;
use queue_core::{Availability, Error, NewJob, StorageExt};

use super::{failed_list, ids, LONG, PAST_SHORT, SHORT};
use crate::{job, request, unique, Store};

/// Push, reserve, acknowledge; the first reservation counts attempt 1.
pub async fn push_reserve_acknowledge(store: Store) {
    let q = unique("q");
    let ids = ids(store.push(vec![job(&q, "a", b"one")]).await.unwrap());
    assert_eq!(ids.len(), 1);
    let got = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].lease.job_id, ids[0]);
    assert_eq!(got[0].lease.queue, q);
    assert_eq!(got[0].payload, b"one");
    assert_eq!(got[0].name, "a");
    assert_eq!(got[0].attempts, 1);
    assert!(
        store
            .reserve(&request(&[&q], LONG, 1))
            .await
            .unwrap()
            .is_empty(),
        "a reserved job is hidden"
    );
    assert_eq!(
        store.acknowledge(&[got[0].lease.clone()]).await.unwrap(),
        vec![true]
    );
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
    assert!(store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .is_empty());
}

/// Payloads come back byte for byte, garbage included: the worker must see what is stored.
pub async fn payload_bytes_round_trip(store: Store) {
    let q = unique("q");
    let payloads: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0x00, 0x80],
        b"{\"v\":1,\"name\":\"x\",\"da".to_vec(),
        "unicode: żółw 🐢 \u{0}".as_bytes().to_vec(),
        vec![b'x'; 200_000],
    ];
    for p in &payloads {
        store.push(vec![job(&q, "raw", p)]).await.unwrap();
    }
    let got = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    let got: Vec<Vec<u8>> = got.into_iter().map(|r| r.payload).collect();
    assert_eq!(got, payloads);
}

/// `push` of many returns one id per job, in order, all distinct.
pub async fn push_many_keeps_order(store: Store) {
    let q = unique("q");
    let jobs: Vec<NewJob> = (0..50)
        .map(|i| job(&q, "n", format!("{i}").as_bytes()))
        .collect();
    let ids = ids(store.push(jobs).await.unwrap());
    assert_eq!(ids.len(), 50);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 50);
    let got = store.reserve(&request(&[&q], LONG, 50)).await.unwrap();
    let order: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8(r.payload.clone()).unwrap())
        .collect();
    let expected: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(order, expected, "FIFO within a queue");
    let got_ids: Vec<_> = got.iter().map(|r| r.lease.job_id.clone()).collect();
    assert_eq!(got_ids, ids);
}

/// Strict priority across queues, FIFO within each.
pub async fn priority_and_fifo(store: Store) {
    let (high, default, low) = (unique("high"), unique("default"), unique("low"));
    for i in 0..3 {
        store
            .push(vec![job(&low, "j", format!("low{i}").as_bytes())])
            .await
            .unwrap();
        store
            .push(vec![job(&default, "j", format!("default{i}").as_bytes())])
            .await
            .unwrap();
        store
            .push(vec![job(&high, "j", format!("high{i}").as_bytes())])
            .await
            .unwrap();
    }
    let queues = [high.as_str(), default.as_str(), low.as_str()];
    let mut order = Vec::new();
    for _ in 0..9 {
        let got = store.reserve(&request(&queues, LONG, 1)).await.unwrap();
        assert_eq!(got.len(), 1);
        order.push(String::from_utf8(got[0].payload.clone()).unwrap());
    }
    assert_eq!(
        order,
        ["high0", "high1", "high2", "default0", "default1", "default2", "low0", "low1", "low2"]
    );
    // A batch fills from the highest queue first.
    for i in 0..2 {
        store
            .push(vec![job(&low, "j", format!("l{i}").as_bytes())])
            .await
            .unwrap();
        store
            .push(vec![job(&high, "j", format!("h{i}").as_bytes())])
            .await
            .unwrap();
    }
    let got = store.reserve(&request(&queues, LONG, 3)).await.unwrap();
    let order: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8(r.payload.clone()).unwrap())
        .collect();
    assert_eq!(order, ["h0", "h1", "l0"]);
}

/// Delayed jobs (`After` and `At`) are never reserved before their time.
pub async fn delayed_availability(store: Store) {
    let q = unique("q");
    let mut later = job(&q, "d", b"after");
    later.available = Availability::After(Duration::from_millis(500));
    let mut at = job(&q, "d", b"at");
    at.available = Availability::At(SystemTime::now() + Duration::from_millis(500));
    store.push(vec![later, at]).await.unwrap();
    store.push(vec![job(&q, "d", b"now")]).await.unwrap();
    let size = store.inspect().unwrap().size(&q).await.unwrap();
    assert_eq!((size.waiting, size.delayed), (1, 2));
    let got = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    assert_eq!(got.len(), 1, "only the undelayed job is available");
    assert_eq!(got[0].payload, b"now");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let got = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    let mut payloads: Vec<_> = got.iter().map(|r| r.payload.clone()).collect();
    payloads.sort();
    assert_eq!(payloads, vec![b"after".to_vec(), b"at".to_vec()]);
}

/// `limit` caps a reservation; several jobs come back from one call.
pub async fn reserve_limit_and_batch(store: Store) {
    let q = unique("q");
    store
        .push((0..10).map(|_| job(&q, "b", b"x")).collect())
        .await
        .unwrap();
    assert_eq!(
        store.reserve(&request(&[&q], LONG, 4)).await.unwrap().len(),
        4
    );
    assert_eq!(
        store
            .reserve(&request(&[&q], LONG, 100))
            .await
            .unwrap()
            .len(),
        6
    );
    assert_eq!(
        store.inspect().unwrap().size(&q).await.unwrap().reserved,
        10
    );
}

/// 10,000 jobs, 8 concurrent reservers: each job delivered exactly once.
pub async fn no_double_delivery(store: Store) {
    let q = unique("q");
    const N: usize = 10_000;
    for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
        store
            .push(
                chunk
                    .iter()
                    .map(|i| job(&q, "n", i.to_string().as_bytes()))
                    .collect(),
            )
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut empty = 0;
            while empty < 3 {
                let got = store.reserve(&request(&[&q], LONG, 16)).await.unwrap();
                if got.is_empty() {
                    empty += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                empty = 0;
                let leases: Vec<_> = got.iter().map(|r| r.lease.clone()).collect();
                let acked = store.acknowledge(&leases).await.unwrap();
                assert!(acked.iter().all(|a| *a), "fresh leases acknowledge");
                seen.extend(
                    got.into_iter()
                        .map(|r| String::from_utf8(r.payload).unwrap()),
                );
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), N, "every job delivered once, none twice");
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), N, "no job delivered twice");
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
}

/// A job whose lease ran out is available again, its attempt counted, with a new token.
pub async fn lease_expiry_and_recovery(store: Store) {
    let q = unique("q");
    store.push(vec![job(&q, "l", b"x")]).await.unwrap();
    let first = store
        .reserve(&request(&[&q], SHORT, 1))
        .await
        .unwrap()
        .remove(0);
    assert!(store
        .reserve(&request(&[&q], SHORT, 1))
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(PAST_SHORT).await;
    let second = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    assert_eq!(
        second.len(),
        1,
        "the expired reservation is available again"
    );
    let second = &second[0];
    assert_eq!(second.lease.job_id, first.lease.job_id);
    assert_eq!(second.attempts, 2);
    assert_ne!(second.lease.token, first.lease.token);
}

/// Fencing: a stale lease can neither acknowledge, release, fail nor extend.
pub async fn stale_lease_is_refused(store: Store) {
    let q = unique("q");
    store.push(vec![job(&q, "f", b"x")]).await.unwrap();
    let stale = store
        .reserve(&request(&[&q], SHORT, 1))
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(PAST_SHORT).await;
    let current = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        store
            .acknowledge(std::slice::from_ref(&stale.lease))
            .await
            .unwrap(),
        vec![false]
    );
    assert!(matches!(
        store.retry(&stale.lease, Duration::ZERO).await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        store.release(&stale.lease, Duration::ZERO).await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        store.fail(&stale.lease, "stale").await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        store.extend_one(&stale.lease, LONG).await,
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(store.failed_store().unwrap().count().await.unwrap(), 0);
    assert_eq!(
        store.inspect().unwrap().size(&q).await.unwrap().reserved,
        1,
        "the current holder keeps it"
    );
    assert_eq!(
        store
            .acknowledge(&[current.lease.clone(), stale.lease.clone()])
            .await
            .unwrap(),
        vec![true, false]
    );
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
}

/// `extend` keeps a reservation past its first lease (the heartbeat).
pub async fn extend_keeps_reservation(store: Store) {
    let q = unique("q");
    store.push(vec![job(&q, "e", b"x")]).await.unwrap();
    let held = store
        .reserve(&request(&[&q], SHORT, 1))
        .await
        .unwrap()
        .remove(0);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        store.extend_one(&held.lease, SHORT).await.unwrap();
    }
    assert!(
        store
            .reserve(&request(&[&q], LONG, 1))
            .await
            .unwrap()
            .is_empty(),
        "still held after 800 ms"
    );
    assert_eq!(store.acknowledge(&[held.lease]).await.unwrap(), vec![true]);
}

/// A retried job waits for its delay, then comes back with the attempt counted.
pub async fn retry_with_delay(store: Store) {
    let q = unique("q");
    store.push(vec![job(&q, "r", b"x")]).await.unwrap();
    let first = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    store
        .retry(&first.lease, Duration::from_millis(500))
        .await
        .unwrap();
    let size = store.inspect().unwrap().size(&q).await.unwrap();
    assert_eq!((size.delayed, size.reserved), (1, 0));
    assert!(store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .is_empty());
    assert!(
        store
            .acknowledge(std::slice::from_ref(&first.lease))
            .await
            .unwrap()
            == vec![false],
        "a retried lease is stale"
    );
    tokio::time::sleep(PAST_SHORT).await;
    let again = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.attempts, 2);
    assert_eq!(again.payload, b"x");
}

/// A release gives the attempt back (a job whose lock was held).
pub async fn release_refunds_attempt(store: Store) {
    let q = unique("q");
    store.push(vec![job(&q, "r", b"x")]).await.unwrap();
    let first = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    store.release(&first.lease, Duration::ZERO).await.unwrap();
    let again = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.attempts, 1);
}

/// `fail` moves a job to the failed store with everything an operator needs.
pub async fn fail_moves_to_failed_store(store: Store) {
    let q = unique("q");
    let ids = ids(store
        .push(vec![job(&q, "boom", b"payload-1")])
        .await
        .unwrap());
    let got = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    let before = SystemTime::now() - Duration::from_secs(5);
    store.fail(&got.lease, "it broke: reason").await.unwrap();
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
    assert_eq!(store.failed_store().unwrap().count().await.unwrap(), 1);
    let failed = failed_list(&store, 10).await;
    assert_eq!(failed.len(), 1);
    let f = &failed[0];
    assert_eq!(f.job_id, ids[0].0);
    assert_eq!(f.queue, q);
    assert_eq!(f.name, "boom");
    assert_eq!(f.payload, b"payload-1");
    assert_eq!(f.error, "it broke: reason");
    assert_eq!(f.attempts, 1);
    assert!(f.failed_at >= before && f.failed_at <= SystemTime::now() + Duration::from_secs(5));
    assert_eq!(
        store
            .failed_store()
            .unwrap()
            .get(&f.id)
            .await
            .unwrap()
            .as_ref(),
        Some(f)
    );
    assert_eq!(
        store
            .failed_store()
            .unwrap()
            .get("no-such-id")
            .await
            .unwrap(),
        None
    );
}

/// List (newest first, paged), retry, forget and flush.
pub async fn failed_store_operations(store: Store) {
    let q = unique("q");
    for i in 0..5 {
        store
            .push(vec![job(&q, "f", format!("p{i}").as_bytes())])
            .await
            .unwrap();
        let got = store
            .reserve(&request(&[&q], LONG, 1))
            .await
            .unwrap()
            .remove(0);
        store.fail(&got.lease, &format!("e{i}")).await.unwrap();
        // Distinct failure times, so newest-first is well defined on every backend.
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let all = failed_list(&store, 100).await;
    let errors: Vec<&str> = all.iter().map(|f| f.error.as_str()).collect();
    assert_eq!(errors, ["e4", "e3", "e2", "e1", "e0"], "newest first");
    // Pages follow each other by cursor.
    let failed = store.failed_store().unwrap();
    let first = failed.list(PageRequest::first(2)).await.unwrap();
    let errors = |page: &[queue_core::FailedJob]| -> Vec<String> {
        page.iter().map(|f| f.error.clone()).collect()
    };
    assert_eq!(errors(&first.items), ["e4", "e3"]);
    let cursor = first.next.expect("more pages");
    let second = failed.list(PageRequest::after(cursor, 2)).await.unwrap();
    assert_eq!(errors(&second.items), ["e2", "e1"]);
    let third = failed
        .list(PageRequest::after(second.next.expect("more pages"), 2))
        .await
        .unwrap();
    assert_eq!(errors(&third.items), ["e0"]);
    assert_eq!(third.next, None, "the last page says so");

    let new_id = store
        .failed_store()
        .unwrap()
        .retry(&all[0].id)
        .await
        .unwrap()
        .expect("retried")
        .into_id();
    assert_eq!(store.failed_store().unwrap().count().await.unwrap(), 4);
    let again = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.lease.job_id, new_id);
    assert_eq!(again.payload, b"p4");
    assert_eq!(again.attempts, 1, "a retried job starts its attempts again");
    assert_eq!(
        store
            .failed_store()
            .unwrap()
            .retry(&all[0].id)
            .await
            .unwrap(),
        None,
        "retried once only"
    );

    assert!(store
        .failed_store()
        .unwrap()
        .forget(&all[1].id)
        .await
        .unwrap());
    assert!(!store
        .failed_store()
        .unwrap()
        .forget(&all[1].id)
        .await
        .unwrap());
    assert_eq!(store.failed_store().unwrap().count().await.unwrap(), 3);
    assert_eq!(store.failed_store().unwrap().flush().await.unwrap(), 3);
    assert_eq!(store.failed_store().unwrap().count().await.unwrap(), 0);
    assert!(failed_list(&store, 10).await.is_empty());
}

/// Prune deletes only failures older than the cut-off.
pub async fn failed_prune(store: Store) {
    let q = unique("q");
    for i in 0..3 {
        store
            .push(vec![job(&q, "p", format!("{i}").as_bytes())])
            .await
            .unwrap();
        let got = store
            .reserve(&request(&[&q], LONG, 1))
            .await
            .unwrap()
            .remove(0);
        store.fail(&got.lease, "old").await.unwrap();
    }
    let past = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(store.failed_store().unwrap().prune(past).await.unwrap(), 0);
    assert_eq!(store.failed_store().unwrap().count().await.unwrap(), 3);
    let future = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(
        store.failed_store().unwrap().prune(future).await.unwrap(),
        3
    );
    assert_eq!(store.failed_store().unwrap().count().await.unwrap(), 0);
}

/// `backlog_at_most`: each count exact below the cap and the cap at or beyond it; reserved
/// jobs are in neither the waiting nor the delayed count, and counted right where the store
/// counts them.
pub async fn capped_backlog(store: Store) {
    let q = unique("capped");
    store
        .push((0..5).map(|_| job(&q, "s", b"x")).collect())
        .await
        .unwrap();
    let delayed: Vec<_> = (0..3)
        .map(|_| {
            let mut j = job(&q, "s", b"x");
            j.available = Availability::After(Duration::from_secs(3600));
            j
        })
        .collect();
    store.push(delayed).await.unwrap();
    assert_eq!(
        store.reserve(&request(&[&q], LONG, 2)).await.unwrap().len(),
        2
    );
    let inspect = store.inspect().unwrap();
    let size = inspect.size(&q).await.unwrap();
    assert_eq!((size.waiting, size.delayed, size.reserved), (3, 3, 2));
    for (cap, want, reserved) in [
        (100, (3, 3), 2),
        (3, (3, 3), 2),
        (2, (2, 2), 2),
        (1, (1, 1), 1),
    ] {
        let got = inspect.backlog_at_most(&q, cap).await.unwrap();
        assert_eq!((got.waiting, got.delayed), want, "cap {cap}");
        // A store may leave the reserved ones out; one that counts them counts them right.
        if let Some(n) = got.reserved {
            assert_eq!(n, reserved, "cap {cap}");
        }
    }
    let none = inspect.backlog_at_most(&unique("none"), 10).await.unwrap();
    assert_eq!((none.waiting, none.delayed), (0, 0));
    assert!(none.reserved.is_none_or(|n| n == 0));
}

/// Sizes by state, the list of queues, and clear.
pub async fn sizes_queues_and_clear(store: Store) {
    let (a, b) = (unique("a"), unique("b"));
    store
        .push((0..3).map(|_| job(&a, "s", b"x")).collect())
        .await
        .unwrap();
    let mut delayed = job(&a, "s", b"x");
    delayed.available = Availability::After(Duration::from_secs(3600));
    store.push(vec![delayed, job(&b, "s", b"y")]).await.unwrap();
    store.reserve(&request(&[&a], LONG, 1)).await.unwrap();
    let size = store.inspect().unwrap().size(&a).await.unwrap();
    assert_eq!((size.waiting, size.delayed, size.reserved), (2, 1, 1));
    assert_eq!(store.inspect().unwrap().size(&b).await.unwrap().waiting, 1);
    assert_eq!(
        store
            .inspect()
            .unwrap()
            .size(&unique("none"))
            .await
            .unwrap()
            .total(),
        0
    );
    let queues = store.inspect().unwrap().queues().await.unwrap();
    assert!(queues.contains(&a) && queues.contains(&b), "{queues:?}");
    assert_eq!(
        store.inspect().unwrap().clear(&a).await.unwrap(),
        3,
        "clear removes what is not reserved"
    );
    let size = store.inspect().unwrap().size(&a).await.unwrap();
    assert_eq!((size.waiting, size.delayed, size.reserved), (0, 0, 1));
    assert_eq!(
        store.inspect().unwrap().size(&b).await.unwrap().waiting,
        1,
        "other queues untouched"
    );
}

/// 8 tasks contend for one lock: never two inside at once.
pub async fn lock_mutual_exclusion(store: Store) {
    let key = unique("lock");
    let inside = Arc::new(AtomicUsize::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (store, key, inside, entered) =
            (store.clone(), key.clone(), inside.clone(), entered.clone());
        tasks.push(tokio::spawn(async move {
            let owner = format!("owner-{t}");
            let mut mine = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while mine < 5 && tokio::time::Instant::now() < deadline {
                if store.lock(&key, &owner, LONG).await.unwrap() {
                    assert_eq!(
                        inside.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders at once"
                    );
                    entered.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    assert!(store.unlock(&key, &owner).await.unwrap());
                    mine += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            mine
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 40, "every task got the lock five times");
    assert_eq!(entered.load(Ordering::SeqCst), 40);
}

/// Only the owner unlocks; the owner renews; a lock expires on its own.
pub async fn lock_owner_and_expiry(store: Store) {
    let key = unique("lock");
    assert!(store.lock(&key, "a", SHORT).await.unwrap());
    assert!(!store.lock(&key, "b", SHORT).await.unwrap());
    assert!(
        !store.unlock(&key, "b").await.unwrap(),
        "only the owner unlocks"
    );
    assert!(
        store.lock(&key, "a", SHORT).await.unwrap(),
        "the owner renews"
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert!(
        store.lock(&key, "b", LONG).await.unwrap(),
        "an expired lock is free"
    );
    assert!(!store.unlock(&key, "a").await.unwrap());
    assert!(store.unlock(&key, "b").await.unwrap());
    assert!(store.lock(&key, "c", LONG).await.unwrap());
}

/// Every lock held, a page at a time: the ones whose key starts with `base`.
async fn held_locks(
    locks: &dyn queue_core::storage::Locks,
    base: &str,
    limit: usize,
) -> queue_core::Result<Vec<queue_core::storage::HeldLock>> {
    let mut out = Vec::new();
    let mut page = queue_core::storage::PageRequest::first(limit);
    for _ in 0..100_000 {
        let read = locks.locks(page).await?;
        assert!(read.items.len() <= limit);
        out.extend(read.items.into_iter().filter(|l| l.key.starts_with(base)));
        match read.next {
            Some(next) => page = queue_core::storage::PageRequest::after(next, limit),
            None => return Ok(out),
        }
    }
    panic!("the cursor of the locks does not end");
}

/// `Locks`: the locks held are listed by key with their owners and expiries (expired ones
/// left out), and a lock is released by force: its owner's unlock then finds nothing and
/// another owner takes it. A store that cannot list (memcached) still releases.
pub async fn locks_are_listed_and_released_by_force(store: Store) {
    let Some(locks) = store.capabilities().locks else {
        println!(
            "locks_are_listed_and_released_by_force: not applicable to the {} driver",
            store.driver()
        );
        return;
    };
    let base = unique("held");
    let keys = [
        format!("{base}-a"),
        format!("{base}-b"),
        format!("{base}-c ünï"),
        format!("{base}-gone"),
    ];
    let before = std::time::SystemTime::now();
    assert!(store.lock(&keys[0], "owner-a", LONG).await.unwrap());
    assert!(store.lock(&keys[1], "owner-b", LONG).await.unwrap());
    assert!(store.lock(&keys[2], "owner-c", LONG).await.unwrap());
    assert!(store.lock(&keys[3], "owner-d", SHORT).await.unwrap());
    tokio::time::sleep(PAST_SHORT).await;
    let listing = match held_locks(locks, &base, 500).await {
        Ok(held) => Some(held),
        Err(Error::NotSupported { .. }) => None,
        Err(e) => panic!("{e:?}"),
    };
    if let Some(held) = &listing {
        let seen: Vec<(&str, &str)> = held
            .iter()
            .map(|l| (l.key.as_str(), l.owner.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (keys[0].as_str(), "owner-a"),
                (keys[1].as_str(), "owner-b"),
                (keys[2].as_str(), "owner-c"),
            ],
            "held locks by key, the expired one left out"
        );
        for lock in held {
            assert!(
                lock.expires_at > before && lock.expires_at <= before + LONG + LONG,
                "{lock:?}"
            );
        }
        let paged = held_locks(locks, &base, 1).await.unwrap();
        let keyed = |locks: &[queue_core::storage::HeldLock]| -> Vec<(String, String)> {
            locks
                .iter()
                .map(|l| (l.key.clone(), l.owner.clone()))
                .collect()
        };
        assert_eq!(
            keyed(&paged),
            keyed(held),
            "a page at a time, the same locks"
        );
        // The same expiries, give or take the millisecond a store that reports a time to
        // live (Redis before 7.0) may round either way.
        for (one, all) in paged.iter().zip(held) {
            let apart = match one.expires_at.duration_since(all.expires_at) {
                Ok(d) => d,
                Err(e) => e.duration(),
            };
            assert!(apart <= Duration::from_millis(2), "{one:?} against {all:?}");
        }
    }

    assert!(locks.release(&keys[0]).await.unwrap(), "a held lock");
    assert!(
        !store.unlock(&keys[0], "owner-a").await.unwrap(),
        "its owner finds it gone"
    );
    assert!(store.lock(&keys[0], "owner-z", LONG).await.unwrap());
    assert!(!locks.release(&keys[3]).await.unwrap(), "an expired lock");
    assert!(!locks.release(&unique("never")).await.unwrap());
    assert!(locks.release(&keys[2]).await.unwrap());
    if listing.is_some() {
        let owners: Vec<(String, String)> = held_locks(locks, &base, 500)
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.key, l.owner))
            .collect();
        assert_eq!(
            owners,
            [
                (keys[0].clone(), "owner-z".to_owned()),
                (keys[1].clone(), "owner-b".to_owned()),
            ]
        );
    }
    assert!(locks.release(&keys[0]).await.unwrap());
    assert!(locks.release(&keys[1]).await.unwrap());
}

/// `ReserveRequest::name` takes only jobs of that name (`runall run NAME`).
pub async fn reserve_by_name(store: Store) {
    if !store.capabilities().reserve_by_name {
        println!(
            "reserve_by_name: not applicable to the {} driver (declared in its capabilities)",
            store.driver()
        );
        return;
    }
    let (high, q) = (unique("high"), unique("q"));
    store
        .push(vec![
            job(&q, "other", b"1"),
            job(&q, "wanted", b"2"),
            job(&q, "other", b"3"),
            job(&q, "wanted", b"4"),
        ])
        .await
        .unwrap();
    let mut req = request(&[&q], LONG, 10);
    req.name = Some("wanted".into());
    let got = store.reserve(&req).await.unwrap();
    let payloads: Vec<_> = got.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, vec![b"2".to_vec(), b"4".to_vec()]);
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().waiting, 2);
    // Over several queues: the name filters each, and the higher queue comes first.
    store
        .push(vec![
            job(&q, "wanted", b"5"),
            job(&high, "other", b"6"),
            job(&high, "wanted", b"7"),
            job(&q, "wanted", b"8"),
        ])
        .await
        .unwrap();
    let mut req = request(&[&high, &q], LONG, 2);
    req.name = Some("wanted".into());
    let got = store.reserve(&req).await.unwrap();
    let payloads: Vec<_> = got.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, vec![b"7".to_vec(), b"5".to_vec()]);
    let got = store.reserve(&req).await.unwrap();
    let payloads: Vec<_> = got.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, vec![b"8".to_vec()]);
    assert_eq!(
        store.inspect().unwrap().size(&high).await.unwrap().waiting,
        1
    );
}

/// The age of the oldest available job, for `runall health`.
pub async fn oldest_available(store: Store) {
    let q = unique("q");
    assert_eq!(
        store.inspect().unwrap().oldest_available(&q).await.unwrap(),
        None
    );
    let before = SystemTime::now() - Duration::from_secs(2);
    store.push(vec![job(&q, "o", b"1")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    store.push(vec![job(&q, "o", b"2")]).await.unwrap();
    let mut delayed = job(&q, "o", b"3");
    delayed.available = Availability::After(Duration::from_secs(3600));
    store.push(vec![delayed]).await.unwrap();
    let first = store
        .inspect()
        .unwrap()
        .oldest_available(&q)
        .await
        .unwrap()
        .expect("something waits");
    assert!(
        first >= before && first <= SystemTime::now() + Duration::from_secs(2),
        "{first:?}"
    );
    store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    let second = store
        .inspect()
        .unwrap()
        .oldest_available(&q)
        .await
        .unwrap()
        .expect("the second job waits");
    assert!(second > first, "the reserved job no longer counts");
    store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    assert_eq!(
        store.inspect().unwrap().oldest_available(&q).await.unwrap(),
        None,
        "delayed jobs do not count"
    );
}

/// An idle `wait` returns soon after a push (drivers with the wake capability), and never
/// sleeps much past the next delayed job.
pub async fn wait_wakes_on_push(store: Store) {
    let Some(wake) = store.capabilities().wake else {
        println!("wait_wakes_on_push: not applicable to the {} driver (it polls; declared in its capabilities)", store.driver());
        return;
    };
    let q = unique("q");
    let queues = vec![q.clone()];
    let pusher = {
        let (store, q) = (store.clone(), q.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            store.push(vec![job(&q, "w", b"x")]).await.unwrap();
        })
    };
    let started = std::time::Instant::now();
    wake.wait(&queues, Duration::from_secs(10)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "woken by the push, not the 10 s timeout"
    );
    pusher.await.unwrap();
    store.reserve(&request(&[&q], LONG, 1)).await.unwrap();

    let mut later = job(&q, "w", b"later");
    later.available = Availability::After(Duration::from_millis(500));
    store.push(vec![later]).await.unwrap();
    // The push itself may wake a waiter at once; what matters is that the delayed job's
    // time ends the wait, not the 10 s timeout.
    let started = std::time::Instant::now();
    while store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the delayed job became available"
        );
        wake.wait(&queues, Duration::from_secs(10)).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// Queue names, job names, errors, lock keys and owners outside ASCII come back exactly as
/// they went in: in a reservation, in the failed store, after a retry, in the queue list.
pub async fn non_ascii_text_round_trips(store: Store) {
    let q = unique("q_é日本");
    let name = "café-отчёт 🦀";
    let payload = "{\"to\":\"zoë@例え.jp\"}".as_bytes();
    store.push(vec![job(&q, name, payload)]).await.unwrap();
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().waiting, 1);
    assert!(
        store
            .inspect()
            .unwrap()
            .queues()
            .await
            .unwrap()
            .contains(&q),
        "queue listed"
    );
    let got = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!((got.name.as_str(), got.payload.as_slice()), (name, payload));
    let error = "échec: 失败 ❌";
    store.fail(&got.lease, error).await.unwrap();
    let failed = failed_list(&store, 10).await;
    let failed = failed
        .iter()
        .find(|f| f.queue == q)
        .expect("the job is in the failed store under its queue");
    assert_eq!(
        (
            failed.name.as_str(),
            failed.payload.as_slice(),
            failed.error.as_str()
        ),
        (name, payload, error)
    );
    store
        .failed_store()
        .unwrap()
        .retry(&failed.id)
        .await
        .unwrap()
        .expect("retried");
    let again = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (again.name.as_str(), again.payload.as_slice()),
        (name, payload)
    );
    store.acknowledge(&[again.lease]).await.unwrap();

    let key = format!("{q}:rapport-ünïcode");
    assert!(store.lock(&key, "ouvrier-é", LONG).await.unwrap());
    assert!(!store.lock(&key, "другой", LONG).await.unwrap());
    assert!(!store.unlock(&key, "другой").await.unwrap());
    assert!(store.unlock(&key, "ouvrier-é").await.unwrap());
    assert!(store.lock(&key, "другой", LONG).await.unwrap());
}
