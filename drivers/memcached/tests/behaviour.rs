//! Behaviour specific to the memcached driver, against a real memcached (`MEMCACHED_URL`).
//! Some cases write keys by hand with the meta protocol to play a process that died half
//! way through an operation.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use queue_core::{Availability, ConnectOptions, Error, Storage};
use queue_memcached::{MemcachedOptions, MemcachedStorage};
use queue_tests::{job, request, unique};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const LONG: Duration = Duration::from_secs(60);

fn url() -> String {
    std::env::var("MEMCACHED_URL").unwrap_or_else(|_| "memcache://127.0.0.1:11211".into())
}

async fn connect(
    prefix: &str,
    tweak: impl FnOnce(MemcachedOptions) -> MemcachedOptions,
) -> Option<MemcachedStorage> {
    let url = url();
    let options = tweak(
        MemcachedOptions::from_url(&url)
            .expect("MEMCACHED_URL")
            .prefix(prefix),
    );
    match MemcachedStorage::connect(options).await {
        Ok(store) => Some(store),
        Err(e) => queue_tests::server_missing(&url, e),
    }
}

/// Sends one meta command and returns its first reply line (`HD`, `EN`, or the `VA n ...`
/// header of a value, which is left unread).
async fn raw(command: &str) -> String {
    let options = MemcachedOptions::from_url(&url()).unwrap();
    let stream = TcpStream::connect(options.addr()).await.unwrap();
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(format!("{command}\r\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    line.trim_end().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_limit_is_enforced_at_push() {
    let prefix = unique("t");
    let Some(store) = connect(&prefix, |o| o).await else {
        return;
    };
    let q = unique("q");
    let limit = store.max_payload(&q, "big");
    assert!(
        limit > 1_000_000 - 8192 && limit < store.item_size_max(),
        "{limit}"
    );
    let refused = store
        .push(vec![job(&q, "big", &vec![7u8; limit + 1])])
        .await;
    assert!(
        matches!(refused, Err(Error::PayloadTooLarge { size, limit: l }) if size == limit + 1 && l == limit),
        "{refused:?}"
    );
    assert_eq!(
        store.size(&q).await.unwrap().total(),
        0,
        "nothing half-pushed"
    );
    // The largest payload goes through, and fails into the failed store with a long reason.
    let payload: Vec<u8> = (0..limit).map(|i| (i % 251) as u8).collect();
    store.push(vec![job(&q, "big", &payload)]).await.unwrap();
    let got = store
        .reserve(&request(&[&q], LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(got.payload, payload);
    store
        .fail(&got.lease, &"why ".repeat(10_000))
        .await
        .unwrap();
    let failed = store.failed_list(0, 1).await.unwrap().remove(0);
    assert_eq!(failed.payload, payload);
    assert!(failed.error.starts_with("why why") && failed.error.ends_with("[truncated]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_left_empty_by_a_dead_pusher_is_skipped() {
    let prefix = unique("t");
    let Some(store) = connect(&prefix, |o| o.missing_slot_wait(Duration::from_millis(200))).await
    else {
        return;
    };
    let q = unique("q");
    store.push(vec![job(&q, "j", b"first")]).await.unwrap();
    // A pusher allocates slot 2 and dies before writing it.
    assert_eq!(raw(&format!("ma {prefix}:q:{q}:tail v")).await, "VA 1");
    store.push(vec![job(&q, "j", b"third")]).await.unwrap();
    let started = Instant::now();
    let got = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    let payloads: Vec<&[u8]> = got.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(payloads, vec![b"first".as_slice(), b"third".as_slice()]);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "waited for the slot first"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "but not for long"
    );
    // Had the pusher been merely slow, its late write is refused, so it knows to re-slot.
    assert_eq!(
        raw(&format!("ms {prefix}:q:{q}:s:2 2 ME\r\n99")).await,
        "NS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_reserver_that_died_mid_claim_come_back() {
    let prefix = unique("t");
    let Some(store) = connect(&prefix, |o| o).await else {
        return;
    };
    let q = unique("q");
    store
        .push(
            (0..3)
                .map(|i| job(&q, "j", format!("{i}").as_bytes()))
                .collect(),
        )
        .await
        .unwrap();
    // First reservation sets the queue up; take job 0 normally.
    let first = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    assert_eq!(first[0].payload, b"0");
    // Another process claims slots 2 and 3 (moves the head) and dies before reserving them.
    let head = raw(&format!("mg {prefix}:q:{q}:head c")).await;
    let cas = head
        .split(' ')
        .find_map(|f| f.strip_prefix('c'))
        .expect("head has a CAS token")
        .to_owned();
    assert_eq!(
        raw(&format!("ms {prefix}:q:{q}:head 1 C{cas}\r\n3")).await,
        "HD"
    );
    assert!(store
        .reserve(&request(&[&q], LONG, 10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.size(&q).await.unwrap().waiting,
        2,
        "still counted as waiting"
    );
    // The janitor puts them back once the claim is old enough.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut back = Vec::new();
    while back.len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        back.extend(store.reserve(&request(&[&q], LONG, 10)).await.unwrap());
    }
    let mut payloads: Vec<Vec<u8>> = back.iter().map(|r| r.payload.clone()).collect();
    payloads.sort();
    assert_eq!(payloads, vec![b"1".to_vec(), b"2".to_vec()]);
    assert!(back.iter().all(|r| r.attempts == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_never_take_the_same_job() {
    let prefix = unique("t");
    let (Some(a), Some(b)) = (connect(&prefix, |o| o).await, connect(&prefix, |o| o).await) else {
        return;
    };
    let q = unique("q");
    const N: usize = 4000;
    let pushers = [a.clone(), b.clone()].map(|store| {
        let q = q.clone();
        tokio::spawn(async move {
            for chunk in (0..N / 2).collect::<Vec<_>>().chunks(100) {
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
        })
    });
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store: Arc<dyn Storage> = Arc::new(if i % 2 == 0 { a.clone() } else { b.clone() });
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut empty = 0;
            while empty < 20 {
                let got = store.reserve(&request(&[&q], LONG, 8)).await.unwrap();
                if got.is_empty() {
                    empty += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    continue;
                }
                empty = 0;
                let leases: Vec<_> = got.iter().map(|r| r.lease.clone()).collect();
                assert!(store
                    .acknowledge(&leases)
                    .await
                    .unwrap()
                    .iter()
                    .all(|ok| *ok));
                seen.extend(got.into_iter().map(|r| r.lease.job_id));
            }
            seen
        }));
    }
    for p in pushers {
        p.await.unwrap();
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        all.len(),
        "no job twice"
    );
    assert_eq!(all.len(), 4000 / 2 * 2, "every job once");
    assert_eq!(a.size(&q).await.unwrap().total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_found_by_another_process() {
    let prefix = unique("t");
    let (Some(a), Some(b)) = (connect(&prefix, |o| o).await, connect(&prefix, |o| o).await) else {
        return;
    };
    let q = unique("q");
    a.push(vec![job(&q, "j", b"x")]).await.unwrap();
    let dead = a
        .reserve(&request(&[&q], Duration::from_millis(300), 1))
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = b.reserve(&request(&[&q], LONG, 1)).await.unwrap().remove(0);
    assert_eq!(got.lease.job_id, dead.lease.job_id);
    assert_eq!(got.attempts, 2);
    assert!(a
        .extend(&dead.lease, LONG)
        .await
        .unwrap_err()
        .is_lease_lost());
    assert_eq!(b.acknowledge(&[got.lease]).await.unwrap(), vec![true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_names_and_refused_by_name() {
    let prefix = unique("pre fix/ż");
    let Some(store) = connect(&prefix, |o| o).await else {
        return;
    };
    let long = "q".repeat(400);
    for q in ["with space", "a:b:c", "żółw 🐢", "new\nline", long.as_str()] {
        store.push(vec![job(q, "n", q.as_bytes())]).await.unwrap();
        assert_eq!(store.size(q).await.unwrap().waiting, 1, "{q:?}");
        assert!(
            store.queues().await.unwrap().iter().any(|name| name == q),
            "{q:?}"
        );
        let got = store
            .reserve(&request(&[q], LONG, 1))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(got.payload, q.as_bytes());
        assert_eq!(got.lease.queue, q);
        assert!(store.lock(q, "me", LONG).await.unwrap());
        assert!(!store.lock(q, "you", LONG).await.unwrap());
        assert!(store.unlock(q, "me").await.unwrap());
        store.acknowledge(&[got.lease]).await.unwrap();
    }
    let mut by_name = request(&["with space"], LONG, 1);
    by_name.name = Some("n".into());
    assert!(matches!(
        store.reserve(&by_name).await,
        Err(Error::NotSupported { .. })
    ));
    assert!(!store.capabilities().reserve_by_name && !store.capabilities().durable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chosen_by_url_scheme() {
    let url = url();
    let prefix = unique("t");
    for scheme in ["memcache", "memcached"] {
        let url = url
            .replacen("memcache://", &format!("{scheme}://"), 1)
            .replacen("memcached://", &format!("{scheme}://"), 1);
        let mut options = ConnectOptions::default();
        options.table = Some(prefix.clone());
        let store = match queue_core::storage::connect(&url, options).await {
            Ok(store) => store,
            Err(e) => {
                queue_tests::server_missing::<()>(&url, e);
                return;
            }
        };
        assert_eq!(store.driver(), "memcached");
        let q = unique("q");
        store.push(vec![job(&q, "n", b"x")]).await.unwrap();
        assert_eq!(store.size(&q).await.unwrap().waiting, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_from_two_processes_add_up_with_signs() {
    let prefix = unique("t");
    let (Some(a), Some(b)) = (connect(&prefix, |o| o).await, connect(&prefix, |o| o).await) else {
        return;
    };
    let (up, down) = (
        "stats:queue:x:up".to_owned(),
        "stats:queue:x:down".to_owned(),
    );
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (up, down) = (up.clone(), down.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..40 {
                store
                    .add_counters(
                        &[(up.clone(), 3), (down.clone(), -2), (up.clone(), -1)],
                        None,
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let want = vec![(down.clone(), -480), (up.clone(), 480)];
    assert_eq!(a.counters("stats:queue:x:").await.unwrap(), want);
    assert_eq!(b.counters("stats:").await.unwrap(), want);
    // Extremes survive the offset encoding.
    let edge = "stats:edge:min".to_owned();
    a.add_counters(&[(edge.clone(), i64::MIN + 1)], None)
        .await
        .unwrap();
    a.add_counters(&[(edge.clone(), -1)], None).await.unwrap();
    assert_eq!(
        b.counters(&edge).await.unwrap(),
        vec![(edge.clone(), i64::MIN)]
    );
    // Every counter of the store, sorted by name.
    let all: Vec<String> = a
        .counters("")
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(all, vec![edge, down, up]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_names_with_odd_characters() {
    let prefix = unique("t");
    let Some(store) = connect(&prefix, |o| o).await else {
        return;
    };
    let long = format!("x:{}", "ż".repeat(300));
    let names = [
        "x:with space",
        "x:new\nline",
        "x:per%cent",
        "x:a:b:c",
        long.as_str(),
    ];
    for (i, name) in names.iter().enumerate() {
        store
            .add_counters(&[((*name).to_owned(), i as i64 + 1)], None)
            .await
            .unwrap();
    }
    let mut want: Vec<(String, i64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| ((*n).to_owned(), i as i64 + 1))
        .collect();
    want.sort();
    assert_eq!(store.counters("x:").await.unwrap(), want);
    assert_eq!(
        store.counters("x:a:").await.unwrap(),
        vec![("x:a:b:c".to_owned(), 4)]
    );
    assert!(store.counters("x:a:b:c:").await.unwrap().is_empty());
    assert!(store.counters("y").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_expiry_is_memcacheds_too() {
    let prefix = unique("t");
    let Some(store) = connect(&prefix, |o| o).await else {
        return;
    };
    let name = "brief".to_owned();
    store
        .add_counters(&[(name.clone(), 1)], Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let header = raw(&format!("mg {prefix}:c:brief t")).await;
    assert!(header == "HD t7" || header == "HD t6", "{header}");
    assert!(raw(&format!("mg {prefix}:ce:brief t"))
        .await
        .starts_with("HD t"));
    // A write without a TTL makes the counter permanent again.
    store
        .add_counters(&[(name.clone(), 1)], None)
        .await
        .unwrap();
    assert_eq!(raw(&format!("mg {prefix}:c:brief t")).await, "HD t-1");
    assert_eq!(raw(&format!("mg {prefix}:ce:brief t")).await, "EN");
    assert_eq!(store.counters("brief").await.unwrap(), vec![(name, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_counters_leave_the_index() {
    let prefix = unique("t");
    let Some(store) = connect(&prefix, |o| o).await else {
        return;
    };
    let ttl = Some(Duration::from_secs(1));
    store
        .add_counters(
            &[
                ("rate:q:1:processed".into(), 1),
                ("rate:q:2:processed".into(), 2),
            ],
            ttl,
        )
        .await
        .unwrap();
    store
        .add_counters(&[("stats:job:j:processed".into(), 5)], None)
        .await
        .unwrap();
    assert_eq!(store.counters("rate:q:").await.unwrap().len(), 2);
    // memcached collects them within 3 seconds (whole seconds, rounded up, plus one).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(store.counters("rate:q:").await.unwrap().is_empty());
    assert_eq!(
        raw(&format!("mg {prefix}:cg:rate%3Aq v")).await,
        "EN",
        "the emptied group is deleted"
    );
    let root = raw(&format!("mg {prefix}:cr v")).await;
    assert_eq!(
        root,
        format!("VA {}", "stats%3Ajob\n".len()),
        "and dropped from the index"
    );
    // Written again later, it is listed again.
    store
        .add_counters(&[("rate:q:3:processed".into(), 7)], ttl)
        .await
        .unwrap();
    assert_eq!(
        store.counters("rate:").await.unwrap(),
        vec![("rate:q:3:processed".to_owned(), 7)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_keep_a_group_bounded_without_readers() {
    let prefix = unique("t");
    let Some(store) = connect(&prefix, |o| o).await else {
        return;
    };
    let batch = |from: usize| -> Vec<(String, i64)> {
        (from..from + 100)
            .map(|i| (format!("rate:q:{i:03}"), 1))
            .collect()
    };
    let ttl = Some(Duration::from_secs(1));
    for from in [0, 100, 200] {
        store.add_counters(&batch(from), ttl).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for from in [300, 400, 500] {
        store.add_counters(&batch(from), ttl).await.unwrap();
    }
    // Each name is `rate%3Aq%3ANNN\n` (15 bytes); the 300 gone ones were dropped at the
    // 512th append.
    let header = raw(&format!("mg {prefix}:cg:rate%3Aq v")).await;
    let size: usize = header
        .strip_prefix("VA ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{header}"));
    assert!(
        size <= 300 * 15,
        "{size} bytes: the expired names were kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldest_available_counts_expired_leases_and_due_jobs() {
    let prefix = unique("t");
    let (Some(a), Some(b)) = (connect(&prefix, |o| o).await, connect(&prefix, |o| o).await) else {
        return;
    };
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let q = unique("q");
    a.push(vec![job(&q, "j", b"leased")]).await.unwrap();
    let before = ms(SystemTime::now());
    a.reserve(&request(&[&q], Duration::from_millis(200), 1))
        .await
        .unwrap();
    let after = ms(SystemTime::now());
    let mut delayed = job(&q, "j", b"delayed");
    delayed.available = Availability::After(Duration::from_millis(400));
    let pushed = ms(SystemTime::now());
    a.push(vec![delayed]).await.unwrap();
    let pushed_end = ms(SystemTime::now());
    assert_eq!(b.oldest_available(&q).await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The expired lease counts from its deadline, seen by another process.
    let oldest = ms(b
        .oldest_available(&q)
        .await
        .unwrap()
        .expect("an expired lease"));
    assert!(
        oldest >= before + 200 && oldest <= after + 200,
        "{oldest} not in {}..={}",
        before + 200,
        after + 200
    );
    // Taken again, it no longer counts: the due delayed job does, from its due time.
    assert_eq!(
        b.reserve(&request(&[&q], LONG, 1)).await.unwrap()[0].payload,
        b"leased"
    );
    let oldest = ms(a.oldest_available(&q).await.unwrap().expect("a due job"));
    assert!(
        oldest >= pushed + 400 && oldest <= pushed_end + 400,
        "{oldest} not in {}..={}",
        pushed + 400,
        pushed_end + 400
    );
    a.clear(&q).await.unwrap();
    assert_eq!(a.oldest_available(&q).await.unwrap(), None, "cleared");
}
