//! Behaviour specific to the memcached driver, against a real memcached (`MEMCACHED_URL`).
//! Some cases write keys by hand with the meta protocol to play a process that died half
//! way through an operation.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use queue_core::storage::PageRequest;
use queue_core::{Availability, ConnectOptions, Error, Pushed, Storage, StorageExt, Unique, Until};
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
        store.inspect().unwrap().size(&q).await.unwrap().total(),
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
    let failed = store.failed_store().unwrap();
    let failed = failed
        .list(PageRequest::first(1))
        .await
        .unwrap()
        .items
        .remove(0);
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
        store.inspect().unwrap().size(&q).await.unwrap().waiting,
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
        .extend_one(&dead.lease, LONG)
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
        assert_eq!(
            store.inspect().unwrap().size(q).await.unwrap().waiting,
            1,
            "{q:?}"
        );
        assert!(
            store
                .inspect()
                .unwrap()
                .queues()
                .await
                .unwrap()
                .iter()
                .any(|name| name == q),
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
        assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().waiting, 1);
    }
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
    assert_eq!(
        b.inspect().unwrap().oldest_available(&q).await.unwrap(),
        None
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The expired lease counts from its deadline, seen by another process.
    let oldest = ms(b
        .inspect()
        .unwrap()
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
    let oldest = ms(a
        .inspect()
        .unwrap()
        .oldest_available(&q)
        .await
        .unwrap()
        .expect("a due job"));
    assert!(
        oldest >= pushed + 400 && oldest <= pushed_end + 400,
        "{oldest} not in {}..={}",
        pushed + 400,
        pushed_end + 400
    );
    a.inspect().unwrap().clear(&q).await.unwrap();
    assert_eq!(
        a.inspect().unwrap().oldest_available(&q).await.unwrap(),
        None,
        "cleared"
    );
}

/// Fills `key` with the largest value memcached accepts, so that appending one more entry
/// to it is refused (a timer sub-bucket of about 115,000 ids).
async fn fill(key: &str, item_size_max: usize) {
    let (mut low, mut high) = (item_size_max - 4096, item_size_max);
    while low < high {
        let mid = (low + high).div_ceil(2);
        match raw(&format!("ms {key} {mid} T600\r\n{}", ",".repeat(mid)))
            .await
            .as_str()
        {
            "HD" => low = mid,
            _ => high = mid - 1,
        }
    }
    assert_eq!(
        raw(&format!("ms {key} {low} T600\r\n{}", ",".repeat(low))).await,
        "HD"
    );
}

/// Review D1: a job no timer bucket lists is never found again, so a push whose bucket
/// refuses the entry must fail and leave nothing behind (before, it logged and returned Ok).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_timer_bucket_fails_the_push_and_leaves_nothing() {
    let prefix = unique("t");
    let Some(store) = connect(&prefix, |o| o).await else {
        return;
    };
    let q = unique("q");
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let at = UNIX_EPOCH + Duration::from_millis(second * 1000 + 500);
    // Job 1 is available now, job 2 is due at `at`: listed in sub-bucket 2 of its second.
    let bucket = format!("{prefix}:q:{q}:t:{second}:2");
    fill(&bucket, store.item_size_max()).await;
    let batch = || {
        vec![
            job(&q, "j", b"now"),
            job(&q, "j", b"at").available(Availability::At(at)),
        ]
    };
    let refused = store.push(batch()).await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("timer bucket")),
        "{refused:?}"
    );
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
    let started = Instant::now();
    assert!(store
        .reserve(&request(&[&q], LONG, 10))
        .await
        .unwrap()
        .is_empty());
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "its slot was given up at once"
    );
    assert_eq!(raw(&format!("md {bucket}")).await, "HD");
    store.push(batch()).await.unwrap();
    let size = store.inspect().unwrap().size(&q).await.unwrap();
    assert_eq!((size.waiting, size.delayed), (1, 1));
}

/// Review D1: the same for the lease deadline a reservation lists. The job is not taken,
/// the error is returned, and the job is back at once, its attempt not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_timer_bucket_fails_the_reservation_and_the_job_comes_back() {
    let prefix = unique("t");
    let Some(store) = connect(&prefix, |o| o).await else {
        return;
    };
    let q = unique("q");
    store.push(vec![job(&q, "j", b"x")]).await.unwrap();
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let buckets: Vec<String> = (deadline - 1..=deadline + 2)
        .map(|b| format!("{prefix}:q:{q}:t:{b}:1"))
        .collect();
    for bucket in &buckets {
        fill(bucket, store.item_size_max()).await;
    }
    let refused = store.reserve(&request(&[&q], LONG, 1)).await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("timer bucket")),
        "{refused:?}"
    );
    for bucket in &buckets {
        raw(&format!("md {bucket}")).await;
    }
    let got = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    assert_eq!(got.len(), 1, "the job is available again at once");
    assert_eq!((got[0].payload.as_slice(), got[0].attempts), (&b"x"[..], 1));
}

/// Review D10: a value length announced by the server is bounded by its `item_size_max`. A
/// server (corrupt, or a hostile peer on plain TCP) announcing more fails the call instead of
/// making the process allocate it, or panic on `size + 2` overflowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_longer_than_the_server_allows_is_refused() {
    for size in [u64::MAX.to_string(), "2000000".into()] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = match line.as_str() {
                    "version" => "VERSION 1.6.21\r\n".to_owned(),
                    "stats settings" => "STAT item_size_max 1048576\r\nEND\r\n".to_owned(),
                    _ => format!("VA {size}\r\n"),
                };
                write.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let options = MemcachedOptions::from_url(&format!("memcache://{addr}")).unwrap();
        let err = MemcachedStorage::connect(options).await.unwrap_err();
        assert!(
            err.to_string().contains("more than its item size limit"),
            "{err}"
        );
    }
}

/// A claim left behind by a process that died between a job's transition and the claim's
/// release names a job that no longer holds the key: the next push takes it over. A claim
/// just written whose job is not stored yet (a push in flight) still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_holder_is_gone_is_taken_over() {
    let prefix = unique("t");
    let Some(store) = connect(&prefix, |o| o).await else {
        return;
    };
    let q = unique("q");
    let unique_job = |key: &str| job(&q, "u", b"x").unique(Unique::new(key));
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    // Written by hand as a push writes it: `j JOB_ID WRITTEN_AT_MS`.
    let claim = |key: &str, value: String| {
        let command = format!("ms {prefix}:u:{key} {} T600\r\n{value}", value.len());
        async move { assert_eq!(raw(&command).await, "HD") }
    };
    // Job 999 never existed, or was acknowledged by a process that died before releasing.
    claim("gone", format!("j 999 {}", ms - 60_000)).await;
    assert!(store
        .push_one(unique_job("gone"))
        .await
        .unwrap()
        .is_created());
    claim("in-flight", format!("j 999 {ms}")).await;
    assert_eq!(
        store.push_one(unique_job("in-flight")).await.unwrap(),
        Pushed::Duplicate("999".into())
    );
    // A holder that was cleared, or reserved with a claim until it started, holds nothing.
    let cleared = store.push_one(unique_job("cleared")).await.unwrap();
    store.inspect().unwrap().clear(&q).await.unwrap();
    assert!(store
        .push_one(unique_job("cleared"))
        .await
        .unwrap()
        .is_created());
    let started = job(&q, "s", b"s").unique(Unique::new("started").until(Until::Started));
    let holder = store.push_one(started.clone()).await.unwrap().into_id();
    let live = store.push_one(unique_job("live")).await.unwrap().into_id();
    let taken = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    assert_eq!(taken.len(), 3, "{cleared:?} was cleared");
    // The release after the reservation is lost: the claim is written back by hand.
    claim("started", format!("j {holder} {}", ms - 60_000)).await;
    assert!(store.push_one(started).await.unwrap().is_created());
    assert_eq!(
        store.push_one(unique_job("live")).await.unwrap(),
        Pushed::Duplicate(live),
        "a running job keeps its key"
    );
}

/// Review D1: a `dispatch_at` campaign, 200,000 jobs due at one instant on one queue,
/// pushed in chunks by two processes, fits in that second's timer sub-buckets (about 115,000
/// entries fill one), and reservers of both processes run every job once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_thousand_jobs_due_at_one_instant_all_run() {
    const N: usize = 200_000;
    let prefix = unique("t");
    let (Some(a), Some(b)) = (connect(&prefix, |o| o).await, connect(&prefix, |o| o).await) else {
        return;
    };
    let q = unique("q");
    let (started, at) = (Instant::now(), SystemTime::now() + Duration::from_secs(6));
    let pushers = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(p, store)| {
            let q = q.clone();
            tokio::spawn(async move {
                for chunk in (p * N / 2..(p + 1) * N / 2)
                    .collect::<Vec<_>>()
                    .chunks(5000)
                {
                    let jobs = chunk.iter().map(|i| {
                        job(&q, "n", i.to_string().as_bytes()).available(Availability::At(at))
                    });
                    store.push(jobs.collect()).await.unwrap();
                }
            })
        });
    for pusher in pushers.collect::<Vec<_>>() {
        pusher.await.unwrap();
    }
    let pushed = started.elapsed();
    assert!(SystemTime::now() < at, "pushed before their time");
    assert_eq!(
        a.inspect().unwrap().size(&q).await.unwrap().delayed,
        N as u64
    );
    tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let mut reservers = Vec::new();
    for i in 0..8 {
        let store: Arc<dyn Storage> = Arc::new(if i % 2 == 0 { a.clone() } else { b.clone() });
        let q = q.clone();
        reservers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(40);
            while Instant::now() < deadline {
                let got = store.reserve(&request(&[&q], LONG, 256)).await.unwrap();
                if got.is_empty() {
                    let size = store.inspect().unwrap().size(&q).await.unwrap();
                    if size.total() == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let leases: Vec<_> = got.iter().map(|r| r.lease.clone()).collect();
                assert!(store.acknowledge(&leases).await.unwrap().iter().all(|a| *a));
                seen.extend(
                    got.into_iter()
                        .map(|r| String::from_utf8(r.payload).unwrap()),
                );
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for r in reservers {
        all.extend(r.await.unwrap());
    }
    eprintln!(
        "{N} jobs pushed in {pushed:?}, all run {:?} later",
        started.elapsed() - pushed
    );
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(
        (all.len(), distinct.len()),
        (N, N),
        "every job once, none twice"
    );
}

/// Debounce is not supported: a push with a job asking to replace a queued job is refused
/// whole, before anything is written (no job, no claim).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_is_refused_before_anything_is_written() {
    let prefix = unique("t");
    let Some(store) = connect(&prefix, |o| o).await else {
        return;
    };
    assert!(!store.capabilities().replace);
    let (q, key) = (unique("q"), unique("k"));
    let err = store
        .push(vec![
            job(&q, "plain", b"p"),
            job(&q, "a", b"r").unique(Unique::new(&key).replacing()),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotSupported {
                operation: "replacing a queued job (debounce)",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(store
        .reserve(&request(&[&q], LONG, 10))
        .await
        .unwrap()
        .is_empty());
    // The key was not claimed.
    let holder = store
        .push_one(job(&q, "b", b"b").unique(Unique::new(&key)))
        .await
        .unwrap();
    assert!(holder.is_created(), "{holder:?}");
}
