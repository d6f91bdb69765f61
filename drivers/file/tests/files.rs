//! The file driver's own behaviour beyond the conformance suite: refusing a directory others
//! can write, damaged and stray files in a queue, the URL scheme, what is on disk.

mod common;

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use queue_core::{ConnectOptions, Queue, Storage, WorkerOptions};
use queue_file::{FileOptions, FileStorage};
use queue_tests::{job, request};

#[tokio::test]
async fn refuses_a_directory_others_can_write() {
    let dir = common::private_dir();
    let root = dir.path().join("store");
    fs::create_dir(&root).unwrap();
    for mode in [0o777, 0o775, 0o722, 0o702] {
        fs::set_permissions(&root, Permissions::from_mode(mode)).unwrap();
        let err = FileStorage::open(FileOptions::new(&root))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&root.display().to_string()), "{err}");
        assert!(err.contains(&format!("{mode:04o}")), "{err}");
        assert!(err.contains("writable by group or others"), "{err}");
    }
    // Through the URL scheme too.
    let url = format!("file://{}", root.display());
    let err = queue_core::storage::connect(&url, ConnectOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("writable by group or others"),
        "{err}"
    );
    // Readable by others is the owner's choice; our own sub-directories stay private.
    fs::set_permissions(&root, Permissions::from_mode(0o755)).unwrap();
    FileStorage::open(FileOptions::new(&root)).await.unwrap();
    assert_eq!(
        fs::metadata(root.join("jobs"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
}

#[tokio::test]
async fn creates_a_private_directory_or_refuses_a_missing_one() {
    let dir = common::private_dir();
    let root = dir.path().join("a/b/store");
    let err = FileStorage::open(FileOptions::new(&root).migrate(false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    FileStorage::open(FileOptions::new(&root)).await.unwrap();
    assert_eq!(
        fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o700
    );
    fs::write(dir.path().join("plain"), b"x").unwrap();
    let err = FileStorage::open(FileOptions::new(dir.path().join("plain")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[tokio::test]
async fn url_scheme_and_options() {
    let dir = common::private_dir();
    let root = dir.path().join("store");
    let url = format!("file://{}?fsync=false", root.display());
    let mut options = ConnectOptions::default();
    options.table = Some("q".into());
    options.failed_table = Some("dead".into());
    options.migrate = true;
    let store = queue_core::storage::connect(&url, options).await.unwrap();
    assert_eq!(store.driver(), "file");
    assert!(!store.capabilities().durable, "fsync=false is not durable");
    store.push(vec![job("x", "n", b"p")]).await.unwrap();
    let got = store
        .reserve(&request(&["x"], Duration::from_secs(60), 1))
        .await
        .unwrap();
    store.fail(&got[0].lease, "e").await.unwrap();
    assert_eq!(fs::read_dir(root.join("q/x/ready")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(root.join("dead")).unwrap().count(), 1);
    let durable = FileStorage::open(FileOptions::new(&root)).await.unwrap();
    assert!(durable.capabilities().durable);
}

/// The files are what the crate docs say they are, and an operator can read them.
#[tokio::test]
async fn layout_on_disk() {
    let (store, root) = common::open_fresh().await;
    let ids = store
        .push(vec![job("mail", "send-email", b"{\"to\":\"a@b.c\"}")])
        .await
        .unwrap();
    let ready: Vec<_> = fs::read_dir(root.join("jobs/mail/ready"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(ready.len(), 1);
    let name = ready[0].to_str().unwrap().to_owned();
    assert!(name.ends_with(&format!("-{}-0", ids[0])), "{name}");
    let text = fs::read_to_string(root.join("jobs/mail/ready").join(&name)).unwrap();
    assert_eq!(
        text,
        "queue-file job v1\nqueue: mail\nname: send-email\npayload: 14\n\n{\"to\":\"a@b.c\"}"
    );
    let got = store
        .reserve(&request(&["mail"], Duration::from_secs(60), 1))
        .await
        .unwrap();
    let reserved: Vec<_> = fs::read_dir(root.join("jobs/mail/reserved"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let reserved = reserved[0].to_str().unwrap().to_owned();
    assert!(
        reserved.ends_with(&format!("-{}-1-{}", ids[0], got[0].lease.token)),
        "{reserved}"
    );
    assert!(
        fs::read_dir(root.join("tmp")).unwrap().next().is_none(),
        "nothing left in tmp/"
    );
}

/// Writes `bytes` as a file straight into a queue's directory, as another program might.
fn plant(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap();
}

/// Stray and damaged files written straight into a queue go to the failed store with a
/// reason and their bytes; the worker keeps running and does the good job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_do_not_wedge_the_queue() {
    let (store, root) = common::open_fresh().await;
    let queue = Queue::new(store.clone());
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = done.clone();
    queue.listen("good", move |_: serde_json::Value, _ctx| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    });
    queue
        .dispatch_named("good", serde_json::json!(1))
        .on_queue("q")
        .await
        .unwrap();
    let ready = root.join("jobs/q/ready");
    let reserved = root.join("jobs/q/reserved");
    let id = |n: u8| format!("{:024x}", n);
    let planted: Vec<(&str, String, Vec<u8>)> = vec![
        ("stray name", "garbage.txt".into(), vec![0xff, 0x00, 0xfe]),
        (
            "truncated header",
            format!("000000000000001-{}-0", id(1)),
            b"queue-file job v1\nqueue: q\nna".to_vec(),
        ),
        (
            "non-utf8 header",
            format!("000000000000001-{}-0", id(2)),
            b"queue-file job v1\nqueue: q\nname: \xff\xfe\npayload: 2\n\nhi".to_vec(),
        ),
        (
            "truncated payload",
            format!("000000000000001-{}-0", id(3)),
            b"queue-file job v1\nqueue: q\nname: good\npayload: 100\n\n{\"v\"".to_vec(),
        ),
        ("empty", format!("000000000000001-{}-0", id(4)), Vec::new()),
        (
            "no header",
            format!("000000000000001-{}-0", id(5)),
            b"just some bytes".to_vec(),
        ),
    ];
    for (_, name, bytes) in &planted {
        plant(&ready, name, bytes);
    }
    plant(&reserved, "not-a-reservation", b"junk in reserved/");
    fs::create_dir(ready.join("a-directory")).unwrap();

    let summary = tokio::time::timeout(
        Duration::from_secs(30),
        queue
            .worker(
                WorkerOptions::default()
                    .queues(["q"])
                    .sleep(Duration::from_millis(50))
                    .stop_when_empty(),
            )
            .run(),
    )
    .await
    .expect("the worker stopped")
    .expect("the worker ran");
    assert_eq!(summary.processed, 1, "the good job ran");
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 1);

    let failed = store.failed_list(0, 100).await.unwrap();
    assert_eq!(failed.len(), planted.len() + 1, "{failed:#?}");
    for (what, name, bytes) in &planted {
        let f = failed
            .iter()
            .find(|f| f.job_id == *name || name.get(16..40) == Some(f.job_id.as_str()))
            .unwrap_or_else(|| panic!("{what}: in the failed store"));
        assert_eq!(&f.payload, bytes, "{what}: the bytes are kept");
        assert_eq!(f.queue, "q", "{what}");
        if *what == "stray name" {
            assert!(
                f.error.contains("not a job file name"),
                "{what}: {}",
                f.error
            );
        } else {
            assert!(f.error.contains("is damaged"), "{what}: {}", f.error);
        }
    }
    let reasons: Vec<&str> = failed.iter().map(|f| f.error.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("truncated")),
        "{reasons:#?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("not valid UTF-8") || r.contains("not UTF-8")),
        "{reasons:#?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not-a-reservation")),
        "{reasons:#?}"
    );
    assert_eq!(store.size("q").await.unwrap().total(), 0);
    assert!(
        ready.join("a-directory").is_dir(),
        "directories are left alone"
    );
    // A failed record of a damaged file can still be retried by an operator: it comes back
    // (as a job the engine then fails with its own reason) instead of being stuck.
    let f = failed.iter().find(|f| f.job_id == id(3)).unwrap();
    assert!(store.failed_retry(&f.id).await.unwrap().is_some());
}

/// Reserving by name, FIFO, with other names left waiting.
#[tokio::test]
async fn reserve_by_name_keeps_order_and_others() {
    let (store, _root) = common::open_fresh().await;
    let jobs = (0..20).map(|i| {
        job(
            "q",
            if i % 3 == 0 { "want" } else { "other" },
            i.to_string().as_bytes(),
        )
    });
    store.push(jobs.collect()).await.unwrap();
    let mut req = request(&["q"], Duration::from_secs(60), 100);
    req.name = Some("want".into());
    let got = store.reserve(&req).await.unwrap();
    let got: Vec<String> = got
        .into_iter()
        .map(|r| String::from_utf8(r.payload).unwrap())
        .collect();
    assert_eq!(got, ["0", "3", "6", "9", "12", "15", "18"]);
    assert_eq!(store.size("q").await.unwrap().waiting, 13);
}

/// Two stores on one directory in one process behave like two processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_directory() {
    let dir = common::private_dir();
    let root = dir.path().join("store");
    let a = FileStorage::open(FileOptions::new(&root)).await.unwrap();
    let b = FileStorage::open(FileOptions::new(&root)).await.unwrap();
    a.push(vec![job("q", "n", b"1")]).await.unwrap();
    // b lists the queue now; a job pushed through a later must still be seen by b.
    let first = b
        .reserve(&request(&["q"], Duration::from_millis(300), 1))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    a.push(vec![job("q", "n", b"2")]).await.unwrap();
    let second = b
        .reserve(&request(&["q"], Duration::from_secs(60), 1))
        .await
        .unwrap();
    assert_eq!(second[0].payload, b"2");
    // a recovers b's expired reservation; b's lease is then stale everywhere.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let taken = a
        .reserve(&request(&["q"], Duration::from_secs(60), 1))
        .await
        .unwrap();
    assert_eq!(taken[0].lease.job_id, first[0].lease.job_id);
    assert_eq!(taken[0].attempts, 2);
    assert!(b
        .extend(&first[0].lease, Duration::from_secs(60))
        .await
        .unwrap_err()
        .is_lease_lost());
    assert_eq!(
        b.acknowledge(&[first[0].lease.clone()]).await.unwrap(),
        [false]
    );
    assert_eq!(
        b.acknowledge(&[taken[0].lease.clone(), second[0].lease.clone()])
            .await
            .unwrap(),
        [true, true]
    );
    assert_eq!(a.size("q").await.unwrap().total(), 0);
}

/// An idle wait ends when the next delayed job is due, and does not spin on a due job the
/// worker does not take (another name).
#[tokio::test]
async fn wait_ends_at_the_next_due_job_and_does_not_spin() {
    let (store, _root) = common::open_fresh().await;
    let mut later = job("q", "wanted", b"x");
    later.available = queue_core::Availability::After(Duration::from_millis(400));
    store
        .push(vec![later, job("q", "other", b"y")])
        .await
        .unwrap();
    let mut req = request(&["q"], Duration::from_secs(60), 1);
    req.name = Some("wanted".into());
    let queues = ["q".to_owned()];
    assert!(store.reserve(&req).await.unwrap().is_empty());
    let started = std::time::Instant::now();
    store.wait(&queues, Duration::from_secs(5)).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.reserve(&req).await.unwrap().len(), 1, "due now");
    assert!(store.reserve(&req).await.unwrap().is_empty());
    let started = std::time::Instant::now();
    store
        .wait(&queues, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "no spinning on the other job"
    );
}

/// A push through the same store wakes an idle wait at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_wakes_on_a_push_in_this_process() {
    let (store, _root) = common::open_fresh().await;
    let pusher = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            store.push(vec![job("q", "w", b"x")]).await.unwrap();
        })
    };
    let started = std::time::Instant::now();
    store
        .wait(&["q".to_owned()], Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "woken by the push"
    );
    pusher.await.unwrap();
}

/// A queue's directories removed by hand while processes run are made again.
#[tokio::test]
async fn queue_directories_removed_by_hand_come_back() {
    let (store, root) = common::open_fresh().await;
    store.push(vec![job("q", "n", b"1")]).await.unwrap();
    fs::remove_dir(root.join("jobs/q/reserved")).unwrap();
    let got = store
        .reserve(&request(&["q"], Duration::from_secs(60), 1))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "reserved/ was made again");
    store.acknowledge(&[got[0].lease.clone()]).await.unwrap();
    fs::remove_dir_all(root.join("jobs/q")).unwrap();
    store.push(vec![job("q", "n", b"2")]).await.unwrap();
    assert_eq!(
        store.size("q").await.unwrap().waiting,
        1,
        "ready/ was made again"
    );
}

/// A queue longer than what a process keeps listed in memory still comes out whole and FIFO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_queue_comes_out_in_order() {
    let dir = common::private_dir();
    let store = FileStorage::open(FileOptions::new(dir.path().join("store")).fsync(false))
        .await
        .unwrap();
    let n = 10_500;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1500) {
        store
            .push(
                chunk
                    .iter()
                    .map(|i| job("long", "n", i.to_string().as_bytes()))
                    .collect(),
            )
            .await
            .unwrap();
    }
    let mut next = 0;
    loop {
        let got = store
            .reserve(&request(&["long"], Duration::from_secs(60), 700))
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        for r in &got {
            assert_eq!(
                String::from_utf8_lossy(&r.payload),
                next.to_string(),
                "FIFO"
            );
            next += 1;
        }
        let leases: Vec<_> = got.into_iter().map(|r| r.lease).collect();
        store.acknowledge(&leases).await.unwrap();
    }
    assert_eq!(next, n);
}
