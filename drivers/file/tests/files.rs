//! The file driver's own behaviour beyond the conformance suite: refusing a directory others
//! can write, damaged and stray files in a queue, the URL scheme, what is on disk, which
//! paths take the store's lock, and what crashed steps leave behind.

mod common;

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use queue_core::storage::{PageRequest, Wake};
use queue_core::{ConnectOptions, FailedJob, Queue, Storage, StorageExt, WorkerOptions};
use queue_file::{FileOptions, FileStorage};
use queue_tests::{job, request};

async fn failed_list(store: &impl Storage, n: usize) -> Vec<FailedJob> {
    store
        .failed_store()
        .unwrap()
        .list(PageRequest::first(n))
        .await
        .unwrap()
        .items
}

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
    let ids: Vec<_> = ids.iter().map(|p| p.id().clone()).collect();
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
    let mut dirs: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            "claims", "control", "failed", "groups", "jobs", "journal", "locks", "records", "tmp",
            "waiting", "workers"
        ]
    );
}

/// Records are files in `records/` as the crate docs say: written by `put_record` and by a
/// settle's `Effect::Record` (nothing left in `tmp/` or `journal/`), replaced whole, never
/// read once expired, pruned; a damaged one reads as none, stops nothing and is left. A
/// store made before records existed gets `records/` at open.
#[tokio::test]
async fn records_on_disk() {
    use queue_core::storage::{Cancellation, RecordKey};
    let (store, root) = common::open_fresh().await;
    let track = store.capabilities().track.unwrap();
    let ids = store.push(vec![job("q", "j", b"j")]).await.unwrap();
    let id = ids[0].id().clone();
    let got = store
        .reserve(&request(&["q"], Duration::from_secs(60), 1))
        .await
        .unwrap();
    assert!(track
        .put_record(
            &RecordKey::new(id.clone(), RecordKey::PROGRESS),
            b"1/2",
            Duration::from_secs(60),
            Some(&got[0].lease)
        )
        .await
        .unwrap());
    let progress = root.join("records").join(format!("{id}.progress"));
    let text = fs::read_to_string(&progress).unwrap();
    assert!(
        text.starts_with(&format!(
            "queue-file record v1\njob: {id}\nkind: progress\nexpires: "
        )) && text.ends_with("\npayload: 3\n\n1/2"),
        "{text}"
    );
    assert!(matches!(
        track
            .cancel(&id, Duration::from_secs(60), Vec::new())
            .await
            .unwrap(),
        Cancellation::Marked(_)
    ));
    store
        .settle_one(queue_core::Settle::ack(got[0].lease.clone()).effect(
            queue_core::Effect::Record {
                kind: RecordKey::STATUS.into(),
                value: b"done".to_vec(),
                ttl: Duration::from_millis(1),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        names_in(&root.join("records")),
        [
            format!("{id}.cancel"),
            format!("{id}.progress"),
            format!("{id}.status")
        ]
    );
    assert!(names_in(&root.join("tmp")).is_empty());
    assert!(names_in(&root.join("journal")).is_empty());

    // A damaged record and a stray file: read as none, left by pruning.
    fs::write(root.join("records").join(format!("{id}.other")), b"garbage").unwrap();
    fs::write(root.join("records/notes.txt"), b"mine").unwrap();
    let other = RecordKey::new(id.clone(), "other");
    assert_eq!(track.records(&[other]).await.unwrap(), vec![None]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let status = RecordKey::new(id.clone(), RecordKey::STATUS);
    assert_eq!(track.records(&[status]).await.unwrap(), vec![None]);
    assert_eq!(
        track.prune_records().await.unwrap(),
        1,
        "the expired status"
    );
    assert_eq!(track.prune_records().await.unwrap(), 0);
    assert_eq!(
        names_in(&root.join("records")),
        [
            format!("{id}.cancel"),
            format!("{id}.other"),
            format!("{id}.progress"),
            "notes.txt".to_owned()
        ]
    );

    // An older store, without `records/`: made at open.
    drop(store);
    fs::remove_dir_all(root.join("records")).unwrap();
    let store = FileStorage::open(FileOptions::new(&root)).await.unwrap();
    assert!(root.join("records").is_dir());
    let track = store.capabilities().track.unwrap();
    let key = RecordKey::new("any job", "note");
    assert!(track
        .put_record(&key, b"n", Duration::from_secs(60), None)
        .await
        .unwrap());
    assert_eq!(names_in(&root.join("records")), ["any%20job.note"]);
    assert_eq!(
        track.records(&[key]).await.unwrap(),
        vec![Some(b"n".to_vec())]
    );
}

fn hold(key: &str, deps: u32, job: queue_core::NewJob) -> queue_core::Effect {
    queue_core::Effect::Hold(queue_core::WaitingJob::new(key, deps, job))
}

fn deps(key: &str, delta: i64) -> queue_core::Effect {
    queue_core::Effect::Deps {
        key: key.to_owned(),
        delta,
    }
}

/// A waiting job is one file in `waiting/` as the crate docs say, rewritten when its
/// dependencies change; released, it is a job file in its queue, available after its delay
/// counted from the release. No step leaves anything in `tmp/` or `journal/`.
#[tokio::test]
async fn waiting_jobs_on_disk() {
    let (store, root) = common::open_fresh().await;
    let groups = store.groups().unwrap();
    let delayed = job("mail", "send", b"{}")
        .available(queue_core::Availability::After(Duration::from_secs(3600)))
        .unique(queue_core::Unique::new("claim"));
    groups
        .apply(vec![hold("order 42/notify", 2, delayed)])
        .await
        .unwrap();
    assert_eq!(names_in(&root.join("waiting")), ["order%2042%2Fnotify"]);
    let file = root.join("waiting/order%2042%2Fnotify");
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "queue-file waiting v1\nkey: order 42/notify\ndeps: 2\navailable: after 3600000\n\
         queue: mail\nname: send\nunique: claim\nuntil: terminal\npayload: 2\n\n{}"
    );
    assert!(
        names_in(&root.join("claims")).is_empty(),
        "no claim while it waits"
    );
    groups
        .apply(vec![deps("order 42/notify", -1)])
        .await
        .unwrap();
    assert!(fs::read_to_string(&file).unwrap().contains("\ndeps: 1\n"));
    assert!(names_in(&root.join("tmp")).is_empty());
    assert!(names_in(&root.join("journal")).is_empty());

    // Released by a settle: the job file in `ready/`, due an hour from now, with its claim.
    store.push(vec![job("work", "w", b"w")]).await.unwrap();
    let got = store
        .reserve(&request(&["work"], Duration::from_secs(60), 1))
        .await
        .unwrap();
    let before = queue_core::storage::unix_millis(std::time::SystemTime::now());
    store
        .settle_one(
            queue_core::Settle::ack(got[0].lease.clone()).effect(deps("order 42/notify", -1)),
        )
        .await
        .unwrap();
    assert!(names_in(&root.join("waiting")).is_empty());
    let ready = names_in(&root.join("jobs/mail/ready"));
    assert_eq!(ready.len(), 1);
    let due: i64 = ready[0][..15].parse().unwrap();
    assert!(
        due >= before + 3_600_000,
        "the delay counts from the release"
    );
    assert_eq!(
        fs::read_to_string(root.join("jobs/mail/ready").join(&ready[0])).unwrap(),
        "queue-file job v1\nqueue: mail\nname: send\nunique: claim\nuntil: terminal\n\
         payload: 2\n\n{}"
    );
    assert_eq!(names_in(&root.join("claims")), ["claim"]);
    assert!(names_in(&root.join("tmp")).is_empty());
    assert!(names_in(&root.join("journal")).is_empty());
}

/// A waiting-job file that is not one this driver wrote counts as no job waiting under its
/// key: it stops no step, and a hold of the key replaces it.
#[tokio::test]
async fn a_damaged_waiting_file_stops_nothing() {
    let (store, root) = common::open_fresh().await;
    let groups = store.groups().unwrap();
    fs::write(
        root.join("waiting/broken"),
        b"queue-file waiting v1\ndeps: x",
    )
    .unwrap();
    assert_eq!(groups.waiting("broken").await.unwrap(), None);
    groups
        .apply(vec![
            deps("broken", -1),
            queue_core::Effect::Skip {
                key: "broken".into(),
            },
        ])
        .await
        .unwrap();
    assert!(
        root.join("waiting/broken").exists(),
        "left for an operator to look at"
    );
    groups
        .apply(vec![hold("broken", 1, job("q", "fixed", b"f"))])
        .await
        .unwrap();
    assert_eq!(groups.waiting("broken").await.unwrap(), Some(1));
    groups.apply(vec![deps("broken", -1)]).await.unwrap();
    let got = store
        .reserve(&request(&["q"], Duration::from_secs(60), 5))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "fixed");
    assert!(names_in(&root.join("waiting")).is_empty());
    assert!(names_in(&root.join("tmp")).is_empty());
}

/// In one call, every settlement's claim changes come before any effect: a follow-up takes
/// the key of a job another settlement of the same call acknowledges, as on every driver
/// that applies the transitions first.
#[tokio::test]
async fn claims_are_released_before_the_effects_of_the_call() {
    let (store, _root) = common::open_fresh().await;
    let key = queue_core::Unique::new("shared");
    store
        .push(vec![
            job("a", "plain", b"1"),
            job("b", "holder", b"2").unique(key.clone()),
        ])
        .await
        .unwrap();
    let first = store
        .reserve(&request(&["a"], Duration::from_secs(60), 1))
        .await
        .unwrap();
    let holder = store
        .reserve(&request(&["b"], Duration::from_secs(60), 1))
        .await
        .unwrap();
    let reply = store
        .settle(
            vec![
                queue_core::Settle::ack(first[0].lease.clone())
                    .effect(queue_core::Effect::Push(job("c", "next", b"3").unique(key))),
                queue_core::Settle::ack(holder[0].lease.clone()),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, [queue_core::Settled::Applied; 2]);
    let got = store
        .reserve(&request(&["c"], Duration::from_secs(60), 1))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "the follow-up took the released key");
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A job's claim is in its file's header and in `claims/`; the claim goes with the job, and
/// no step leaves anything in `tmp/` or `journal/`.
#[tokio::test]
async fn claims_on_disk() {
    let (store, root) = common::open_fresh().await;
    let unique = queue_core::Unique::new("invoice 42").until(queue_core::Until::Succeeded);
    let pushed = store
        .push(vec![job("mail", "send", b"{}").unique(unique.clone())])
        .await
        .unwrap();
    assert!(pushed[0].is_created());
    let ready = names_in(&root.join("jobs/mail/ready"));
    let text = fs::read_to_string(root.join("jobs/mail/ready").join(&ready[0])).unwrap();
    assert!(
        text.contains("\nunique: invoice 42\nuntil: succeeded\n"),
        "{text}"
    );
    assert_eq!(names_in(&root.join("claims")), ["invoice%2042"]);
    let got = store
        .reserve(&request(&["mail"], Duration::from_secs(60), 1))
        .await
        .unwrap();
    store.fail(&got[0].lease, "no").await.unwrap();
    let failed = failed_list(&store, 1).await.remove(0);
    assert_eq!(failed.unique, Some(unique));
    let claim = fs::read_to_string(root.join("claims/invoice%2042")).unwrap();
    assert!(claim.contains(&failed.id), "held by the record: {claim}");
    assert!(store
        .failed_store()
        .unwrap()
        .forget(&failed.id)
        .await
        .unwrap());
    // Released by the record's deletion: the next push takes the key (and rewrites the file).
    let again = store
        .push(vec![
            job("mail", "send", b"{}").unique(queue_core::Unique::new("invoice 42"))
        ])
        .await
        .unwrap();
    assert!(again[0].is_created(), "{again:?}");
    let got = store
        .reserve(&request(&["mail"], Duration::from_secs(60), 1))
        .await
        .unwrap();
    assert_eq!(
        store.acknowledge(&[got[0].lease.clone()]).await.unwrap(),
        [true]
    );
    assert!(names_in(&root.join("claims")).is_empty(), "released");
    assert!(names_in(&root.join("tmp")).is_empty());
    assert!(names_in(&root.join("journal")).is_empty());
}

/// Pushes without claims, reservations, acknowledgements without effects, retries,
/// releases and renewals never wait for the store's lock: they are as cheap as one rename
/// each. A push with a claim does wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_paths_take_no_lock() {
    let (store, root) = common::open_fresh().await;
    let held = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.join("control/lock"))
        .unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let plain = async {
        let long = Duration::from_secs(60);
        store
            .push(vec![job("q", "n", b"1"), job("q", "n", b"2")])
            .await
            .unwrap();
        let got = store.reserve(&request(&["q"], long, 2)).await.unwrap();
        assert_eq!(got.len(), 2);
        assert!(store
            .extend(&[got[0].lease.clone(), got[1].lease.clone()], long)
            .await
            .unwrap()
            .iter()
            .all(|s| *s == queue_core::LeaseStatus::Held));
        store.retry(&got[0].lease, Duration::ZERO).await.unwrap();
        store.release(&got[1].lease, Duration::ZERO).await.unwrap();
        let got = store.reserve(&request(&["q"], long, 2)).await.unwrap();
        assert_eq!(
            store
                .acknowledge(&[got[0].lease.clone(), got[1].lease.clone()])
                .await
                .unwrap(),
            [true, true]
        );
    };
    tokio::time::timeout(Duration::from_secs(10), plain)
        .await
        .expect("no plain path waited for the store's lock");
    let claimed = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .push(vec![
                    job("q", "n", b"3").unique(queue_core::Unique::new("k"))
                ])
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!claimed.is_finished(), "a push with a claim takes the lock");
    drop(held);
    assert!(claimed.await.unwrap().unwrap()[0].is_created());
}

/// Sets a file's modification time `age` into the past.
fn backdate(path: &Path, age: Duration) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - age)
        .unwrap();
}

/// Defect D8: a process killed in the middle of failing a job (or of burying a stray file)
/// left the job in `tmp/`, outside both the queue and the failed store, and nothing ever
/// recovered it. This plants exactly the files such a process leaves, as older versions of
/// this driver wrote them (and one a step of the journal leaves when its intent is lost),
/// and checks that opening the store moves each job into the failed store exactly once,
/// keeps a record that was already written, and leaves alone a file young enough to belong
/// to a step still running in another process.
#[tokio::test]
async fn crash_leftovers_in_tmp_are_recovered_at_open() {
    let (store, root) = common::open_fresh().await;
    drop(store);
    let tmp = root.join("tmp");
    let old = Duration::from_secs(120);
    let job_file = |name: &str| -> Vec<u8> {
        format!("queue-file job v1\nqueue: mail\nname: {name}\npayload: 2\n\n{{}}").into_bytes()
    };
    let record = |job_id: &str, error: &str| -> Vec<u8> {
        format!(
            "queue-file job v1\nqueue: mail\nname: recorded\njob-id: {job_id}\nattempts: 3\n\
             failed-at: 1700000000000\nerror: {error}\npayload: 2\n\n{{}}"
        )
        .into_bytes()
    };
    let id = |n: u8| format!("{n:024x}");
    let planted = |name: String, bytes: Vec<u8>| {
        let path = tmp.join(name);
        fs::write(&path, bytes).unwrap();
        backdate(&path, old);
        path
    };
    // Killed after claiming the job, before writing its failed record.
    planted(format!("{}.tok1.failing", id(1)), job_file("claimed"));
    // Killed after writing the record, before renaming it into the failed store: the record
    // (with the real reason) goes in, the claimed job is not recorded twice.
    planted(
        format!("{}.failed", id(20)),
        record(&id(2), "the real reason"),
    );
    planted(format!("{}.tok2.failing", id(2)), job_file("recorded"));
    // Killed after the record went in, before deleting the claimed job.
    fs::write(
        root.join("failed")
            .join(format!("001700000000000-{}", id(30))),
        record(&id(3), "already recorded"),
    )
    .unwrap();
    planted(format!("{}.tok3.failing", id(3)), job_file("recorded"));
    // Killed while burying a stray file.
    planted(format!("{}.stray", id(4)), b"\xff stray bytes".to_vec());
    // A step of the journal whose intent is gone (a power loss): its taken job.
    planted(format!("{}.0.taken", id(5)), job_file("taken"));
    // Orphans of steps that never published anything.
    planted(format!("{}.intent", id(6)), b"{".to_vec());
    planted(
        format!("{}.counter", id(7)),
        b"name: c\nvalue: 1\n".to_vec(),
    );
    // Young: an older version's process may be in that step right now.
    let young = tmp.join(format!("{}.tok8.failing", id(8)));
    fs::write(&young, job_file("young")).unwrap();

    let store = FileStorage::open(FileOptions::new(&root)).await.unwrap();
    let failed = failed_list(&store, 100).await;
    let by_job = |job_id: &str| -> Vec<&FailedJob> {
        failed.iter().filter(|f| f.job_id == job_id).collect()
    };
    assert_eq!(failed.len(), 5, "{failed:#?}");
    let claimed = by_job(&id(1));
    assert_eq!(claimed.len(), 1, "{failed:#?}");
    assert_eq!(
        (claimed[0].queue.as_str(), claimed[0].name.as_str()),
        ("mail", "claimed")
    );
    assert_eq!(claimed[0].payload, b"{}");
    assert!(
        claimed[0]
            .error
            .contains("stopped while moving this job to the failed store"),
        "{}",
        claimed[0].error
    );
    let recorded = by_job(&id(2));
    assert_eq!(recorded.len(), 1, "one record: {failed:#?}");
    assert_eq!(recorded[0].error, "the real reason");
    assert_eq!(recorded[0].attempts, 3);
    assert_eq!(by_job(&id(3)).len(), 1, "not recorded twice: {failed:#?}");
    let stray = failed
        .iter()
        .find(|f| f.payload == b"\xff stray bytes")
        .expect("the stray file is in the failed store");
    assert!(stray.error.contains("stray"), "{}", stray.error);
    let taken = failed
        .iter()
        .find(|f| f.name == "taken")
        .expect("the taken job is in the failed store");
    assert!(taken.error.contains("outside its queue"), "{}", taken.error);
    assert_eq!(
        names_in(&tmp),
        [format!("{}.tok8.failing", id(8))],
        "only the young file is left"
    );
    drop(store);

    // Once it is old, the next open recovers it too.
    backdate(&young, old);
    let store = FileStorage::open(FileOptions::new(&root)).await.unwrap();
    assert_eq!(failed_list(&store, 100).await.len(), 6);
    assert!(names_in(&tmp).is_empty());
    assert!(names_in(&root.join("journal")).is_empty());

    // While the store is open, the sweep (every half minute inside `reserve`) does the same.
    planted(format!("{}.tok9.failing", id(9)), job_file("swept"));
    store.__sweep().await.unwrap();
    assert_eq!(failed_list(&store, 100).await.len(), 7);
    assert_eq!(failed_list(&store, 1).await[0].job_id, id(9));
    assert!(names_in(&tmp).is_empty());
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

    let failed = failed_list(&store, 100).await;
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
    assert_eq!(store.inspect().unwrap().size("q").await.unwrap().total(), 0);
    assert!(
        ready.join("a-directory").is_dir(),
        "directories are left alone"
    );
    // A failed record of a damaged file can still be retried by an operator: it comes back
    // (as a job the engine then fails with its own reason) instead of being stuck.
    let f = failed.iter().find(|f| f.job_id == id(3)).unwrap();
    assert!(store
        .failed_store()
        .unwrap()
        .retry(&f.id)
        .await
        .unwrap()
        .is_some());
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
    assert_eq!(
        store.inspect().unwrap().size("q").await.unwrap().waiting,
        13
    );
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
        .extend_one(&first[0].lease, Duration::from_secs(60))
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
    assert_eq!(a.inspect().unwrap().size("q").await.unwrap().total(), 0);
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

/// A push through another store on the directory (as from another process: nothing in
/// memory is shared) wakes an idle wait through the watch on the queue's `ready/`
/// directory, long before the wait's 30 s would end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_wakes_on_a_push_by_another_process() {
    let (store, root) = common::open_fresh().await;
    let other = FileStorage::open(FileOptions::new(&root)).await.unwrap();
    let queues = ["q".to_owned()];
    // The first wait starts the watch.
    store
        .wait(&queues, Duration::from_millis(10))
        .await
        .unwrap();
    let waiter = {
        let store = store.clone();
        let queues = queues.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            store.wait(&queues, Duration::from_secs(30)).await.unwrap();
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "nothing woke the waiter before the push"
    );
    other.push(vec![job("q", "w", b"x")]).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the other store's push, not by its 30 s timeout")
        .unwrap();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
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
        store.inspect().unwrap().size("q").await.unwrap().waiting,
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

/// A replacing push rewrites the queued job's file whole under the same id: the new name,
/// payload and due time, the old queue, attempts and claim (`until` as first pushed), the
/// claim file untouched; nothing is left in `tmp/` or `journal/`.
#[tokio::test]
async fn a_replaced_job_on_disk() {
    use queue_core::{Availability, Pushed, Settle, Unique, Until};
    let (store, root) = common::open_fresh().await;
    let ready = root.join("jobs/q/ready");
    let first = store
        .push_one(job("q", "first", b"1").unique(Unique::new("k").until(Until::Succeeded)))
        .await
        .unwrap()
        .into_id();
    // An attempt, then back in the queue: the job keeps its count.
    let got = store
        .reserve(&request(&["q"], Duration::from_secs(60), 1))
        .await
        .unwrap();
    store
        .settle(
            vec![Settle::retry(got[0].lease.clone(), Duration::ZERO)],
            None,
        )
        .await
        .unwrap();
    let claim = fs::read(root.join("claims/k")).unwrap();
    let at = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000);
    let replaced = store
        .push_one(
            job("elsewhere", "second", b"22")
                .available(Availability::At(at))
                .unique(Unique::new("k").replacing()),
        )
        .await
        .unwrap();
    assert_eq!(replaced, Pushed::Replaced(first.clone()));
    let names = names_in(&ready);
    assert_eq!(
        names,
        [format!("004000000000000-{first}-1")],
        "one file: the new due time, the same id and attempts"
    );
    let text = fs::read_to_string(ready.join(&names[0])).unwrap();
    assert!(
        text.contains("\nqueue: q\nname: second\nunique: k\nuntil: succeeded\npayload: 2\n\n22"),
        "{text}"
    );
    assert_eq!(fs::read(root.join("claims/k")).unwrap(), claim, "untouched");
    let elsewhere = root.join("jobs/elsewhere/ready");
    assert!(!elsewhere.exists() || names_in(&elsewhere).is_empty());
    assert!(names_in(&root.join("tmp")).is_empty());
    assert!(names_in(&root.join("journal")).is_empty());
    assert!(root.join("control/replaced").exists());
}

/// Names cached by another process (another handle) are not trusted once a job is replaced:
/// listing and reserving by name see the new name; a reservation by name that meets a job
/// renamed after its name was looked at puts it back untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_cached_elsewhere_follow_a_replacement() {
    use queue_core::storage::JobState;
    use queue_core::{Availability, Pushed, Unique};
    let dir = common::private_dir();
    let root = dir.path().join("store");
    let a = FileStorage::open(FileOptions::new(&root)).await.unwrap();
    let b = FileStorage::open(FileOptions::new(&root)).await.unwrap();
    let at = std::time::SystemTime::now() - Duration::from_secs(1);
    let debounced = |name: &str| {
        job("q", name, name.as_bytes())
            .available(Availability::At(at))
            .unique(Unique::new("k").replacing())
    };
    let names = |store: FileStorage| async move {
        let page = store
            .inspect()
            .unwrap()
            .jobs("q", JobState::Waiting, PageRequest::first(10))
            .await
            .unwrap();
        page.items.into_iter().map(|j| j.name).collect::<Vec<_>>()
    };
    let by_name = |name: &str| {
        let mut req = request(&["q"], Duration::from_secs(60), 10);
        req.name = Some(name.into());
        req
    };
    let id = a.push_one(debounced("a")).await.unwrap().into_id();
    assert_eq!(names(b.clone()).await, ["a"], "b caches the name");
    assert_eq!(
        a.push_one(debounced("b")).await.unwrap(),
        Pushed::Replaced(id.clone())
    );
    assert_eq!(names(b.clone()).await, ["b"]);
    assert!(b.reserve(&by_name("a")).await.unwrap().is_empty());
    // Renamed again, and b misses the generation (as if it read it just before): the same
    // file name (same due time and attempts), so only the reservation shows the new name.
    assert_eq!(
        a.push_one(debounced("c")).await.unwrap(),
        Pushed::Replaced(id.clone())
    );
    fs::copy(root.join("control/replaced"), root.join("seen")).unwrap();
    assert_eq!(names(b.clone()).await, ["c"]);
    assert_eq!(
        a.push_one(debounced("d")).await.unwrap(),
        Pushed::Replaced(id.clone())
    );
    fs::rename(root.join("seen"), root.join("control/replaced")).unwrap();
    assert!(
        b.reserve(&by_name("c")).await.unwrap().is_empty(),
        "put back"
    );
    let size = b.inspect().unwrap().size("q").await.unwrap();
    assert_eq!((size.waiting, size.reserved), (1, 0));
    let got = b.reserve(&by_name("d")).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (&got[0].lease.job_id, got[0].name.as_str(), got[0].attempts),
        (&id, "d", 1),
        "the attempt b put back was not counted"
    );
}

/// Two handles push replacing jobs of one key as fast as they can while a third reserves
/// and acknowledges: never two jobs for the key, every job created is delivered once, every
/// replaced or duplicate push names one of them, and the last push's payload is the last
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replacing_pushes_race_a_worker() {
    use std::collections::HashSet;

    use queue_core::{Pushed, Unique};
    const PUSHES: usize = 150;
    let dir = common::private_dir();
    let root = dir.path().join("store");
    let open = || FileStorage::open(FileOptions::new(&root).fsync(false));
    let (a, b, w) = (
        open().await.unwrap(),
        open().await.unwrap(),
        open().await.unwrap(),
    );
    let debounced =
        |payload: String| job("q", "d", payload.as_bytes()).unique(Unique::new("k").replacing());
    let pusher = |store: FileStorage, who: &'static str| {
        tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..PUSHES {
                out.push(
                    store
                        .push_one(debounced(format!("{who}{i}")))
                        .await
                        .unwrap(),
                );
            }
            out
        })
    };
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut delivered = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let got = w
                    .reserve(&request(&["q"], Duration::from_secs(60), 10))
                    .await
                    .unwrap();
                assert!(got.len() <= 1, "two jobs for one key: {got:?}");
                for r in got {
                    assert_eq!(
                        w.acknowledge(std::slice::from_ref(&r.lease)).await.unwrap(),
                        [true]
                    );
                    delivered.push((r.lease.job_id, r.payload));
                }
                if finished {
                    return delivered;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let (pa, pb) = (pusher(a.clone(), "a"), pusher(b, "b"));
    let mut pushed = pa.await.unwrap();
    pushed.extend(pb.await.unwrap());
    // Pushed again while the job holding the key runs (a duplicate) until it is queued.
    let last = loop {
        let last = a.push_one(debounced("last".into())).await.unwrap();
        pushed.push(last.clone());
        if !matches!(last, Pushed::Duplicate(_)) {
            break last;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let delivered = worker.await.unwrap();
    let created: HashSet<_> = pushed
        .iter()
        .filter(|p| p.is_created())
        .map(|p| p.id().clone())
        .collect();
    let ids: Vec<_> = delivered.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), created.len(), "each delivered once");
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), created);
    for p in &pushed {
        assert!(created.contains(p.id()), "{p:?} names a job created");
    }
    assert!(
        pushed.iter().any(|p| p.is_replaced()),
        "some pushes replaced ({} created)",
        created.len()
    );
    assert_eq!(delivered.last().unwrap().1, b"last");
    assert_eq!(delivered.last().unwrap().0, *last.id());
    assert!(names_in(&root.join("tmp")).is_empty());
    assert!(names_in(&root.join("journal")).is_empty());
}
