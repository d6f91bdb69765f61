//! Single jobs by id ([`Track`](queue_core::storage::Track)): finding a job, cancelling it,
//! and the records kept for it (written plainly, fenced by a lease, or by a settle).

use std::time::Duration;

use queue_core::storage::{Cancellation, JobState, RecordKey};
use queue_core::{Availability, Effect, Error, JobId, Pushed, Settle, Settled, StorageExt, Unique};

use super::{ids, LONG, PAST_SHORT, SHORT};
use crate::{job, request, unique, Store};

fn skip(case: &str, store: &Store) {
    println!(
        "{case}: not applicable to the {} driver (no jobs by id; declared in its capabilities)",
        store.driver()
    );
}

/// A record effect of kind `kind` holding `value`, kept for `ttl`.
fn record(kind: &str, value: &[u8], ttl: Duration) -> Effect {
    Effect::Record {
        kind: kind.into(),
        value: value.to_vec(),
        ttl,
    }
}

/// An id of the same shape as `like` that no job of this store has: the driver must answer
/// `None`, whatever the shape of its ids.
fn missing_like(like: &JobId) -> JobId {
    match like.0.rsplit_once('/') {
        Some((queue, _)) => JobId(format!("{queue}/999999999")),
        None => JobId("999999999".into()),
    }
}

/// `Track::job` finds a job by its id while it is in a queue, in the state it is in, and
/// nothing once it is gone or for an id the store never made.
pub async fn track_finds_jobs_by_id(store: Store) {
    let Some(track) = store.capabilities().track else {
        return skip("track_finds_jobs_by_id", &store);
    };
    let q = unique("q");
    let mut later = job(&q, "later", b"l");
    later.available = Availability::After(Duration::from_secs(60));
    let pushed = ids(store
        .push(vec![job(&q, "first", b"1"), job(&q, "second", b"2"), later])
        .await
        .unwrap());
    let taken = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].lease.job_id, pushed[0]);

    let first = track
        .job(&pushed[0])
        .await
        .unwrap()
        .expect("the reserved job");
    assert_eq!(
        (
            first.state,
            first.queue.as_str(),
            first.name.as_str(),
            first.attempts,
            first.payload.as_slice(),
        ),
        (JobState::Reserved, q.as_str(), "first", 1, &b"1"[..])
    );
    let second = track
        .job(&pushed[1])
        .await
        .unwrap()
        .expect("the waiting job");
    assert_eq!(
        (
            second.state,
            second.name.as_str(),
            second.attempts,
            second.payload.as_slice()
        ),
        (JobState::Waiting, "second", 0, &b"2"[..])
    );
    assert_eq!(second.id, pushed[1]);
    let delayed = track
        .job(&pushed[2])
        .await
        .unwrap()
        .expect("the delayed job");
    assert_eq!(
        (
            delayed.state,
            delayed.name.as_str(),
            delayed.payload.as_slice()
        ),
        (JobState::Delayed, "later", &b"l"[..])
    );
    assert!(delayed.due_at > std::time::SystemTime::now() + Duration::from_secs(30));

    assert_eq!(track.job(&missing_like(&pushed[0])).await.unwrap(), None);
    assert_eq!(track.job(&JobId("not an id".into())).await.unwrap(), None);
    assert_eq!(track.job(&JobId(String::new())).await.unwrap(), None);

    store
        .acknowledge(std::slice::from_ref(&taken[0].lease))
        .await
        .unwrap();
    assert_eq!(
        track.job(&pushed[0]).await.unwrap(),
        None,
        "gone once acknowledged"
    );
    let again = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    store.fail(&again[0].lease, "no").await.unwrap();
    assert_eq!(
        track.job(&pushed[1]).await.unwrap(),
        None,
        "gone once failed"
    );
}

/// `Track::cancel` removes a waiting or delayed job (its claim released) so that it never
/// runs, marks a reserved one so that the next extend reports it cancelled, and removes one
/// whose lease ran out.
pub async fn track_cancel_removes_or_marks(store: Store) {
    let Some(track) = store.capabilities().track else {
        return skip("track_cancel_removes_or_marks", &store);
    };
    let q = unique("q");
    let key = unique("key");
    let claims = store.capabilities().claims;
    let mut waiting = job(&q, "waiting", b"w");
    if claims {
        waiting = waiting.unique(Unique::new(&key));
    }
    let mut delayed = job(&q, "delayed", b"d");
    delayed.available = Availability::After(Duration::from_secs(60));
    let running = ids(store.push(vec![job(&q, "running", b"r")]).await.unwrap());
    let taken = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
    assert_eq!(taken[0].lease.job_id, running[0]);
    let pushed = ids(store.push(vec![waiting, delayed]).await.unwrap());

    match track.cancel(&pushed[0], LONG, Vec::new()).await.unwrap() {
        Cancellation::Removed(job) => {
            assert_eq!(
                (job.name.as_str(), job.state, job.payload.as_slice()),
                ("waiting", JobState::Waiting, &b"w"[..])
            )
        }
        other => panic!("a waiting job is removed, not {other:?}"),
    }
    match track.cancel(&pushed[1], LONG, Vec::new()).await.unwrap() {
        Cancellation::Removed(job) => {
            assert_eq!(
                (job.state, job.payload.as_slice()),
                (JobState::Delayed, &b"d"[..])
            )
        }
        other => panic!("a delayed job is removed, not {other:?}"),
    }
    assert_eq!(track.job(&pushed[0]).await.unwrap(), None);
    assert_eq!(
        track.cancel(&pushed[0], LONG, Vec::new()).await.unwrap(),
        Cancellation::NotFound
    );
    assert_eq!(
        track
            .cancel(&missing_like(&pushed[0]), LONG, Vec::new())
            .await
            .unwrap(),
        Cancellation::NotFound
    );
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 1);
    if claims {
        let again = job(&q, "waiting", b"w2").unique(Unique::new(&key));
        assert!(
            matches!(store.push_one(again).await.unwrap(), Pushed::Created(_)),
            "a cancelled job's claim is released"
        );
    }

    // The reserved job is marked: its lease stays held, and every extend says cancelled.
    match track.cancel(&running[0], LONG, Vec::new()).await.unwrap() {
        Cancellation::Marked(summary) => assert_eq!(summary.state, JobState::Reserved),
        other => panic!("a reserved job is marked, not {other:?}"),
    }
    let mark = RecordKey::new(running[0].clone(), RecordKey::CANCEL);
    assert!(track.records(&[mark]).await.unwrap()[0].is_some());
    for _ in 0..2 {
        let status = store
            .extend(std::slice::from_ref(&taken[0].lease), LONG)
            .await
            .unwrap();
        assert_eq!(status, vec![queue_core::LeaseStatus::Cancelled]);
    }
    assert!(track.job(&running[0]).await.unwrap().is_some());
    assert_eq!(
        store
            .acknowledge(std::slice::from_ref(&taken[0].lease))
            .await
            .unwrap(),
        vec![true],
        "a marked job is still settled by its lease"
    );

    // A reservation whose lease ran out is removed: its worker's settle is then stale.
    let q2 = unique("q");
    let late = ids(store.push(vec![job(&q2, "late", b"x")]).await.unwrap());
    let stale = store.reserve(&request(&[&q2], SHORT, 1)).await.unwrap();
    tokio::time::sleep(PAST_SHORT).await;
    assert!(matches!(
        track.cancel(&late[0], LONG, Vec::new()).await.unwrap(),
        Cancellation::Removed { .. }
    ));
    assert!(store
        .reserve(&request(&[&q2], LONG, 1))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .acknowledge(std::slice::from_ref(&stale[0].lease))
            .await
            .unwrap(),
        vec![false]
    );
}

/// A cancel applies the effects it is given in the step that removes the job (a batch
/// member counted cancelled, the job after it released), and none when it only marks a
/// reserved job, finds nothing, or is refused; a store without groups refuses them.
pub async fn track_cancel_applies_effects_with_the_removal(store: Store) {
    const CASE: &str = "track_cancel_applies_effects_with_the_removal";
    let Some(track) = store.capabilities().track else {
        return skip(CASE, &store);
    };
    let q = unique("q");
    let group = unique("g");
    let count = |n| Effect::Count {
        group: group.clone(),
        deltas: vec![("cancelled".to_owned(), n)],
    };
    let Some(groups) = store.capabilities().groups else {
        let pushed = ids(store.push(vec![job(&q, "w", b"w")]).await.unwrap());
        let err = track
            .cancel(&pushed[0], LONG, vec![count(1)])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        assert!(
            track.job(&pushed[0]).await.unwrap().is_some(),
            "a refused cancel leaves the job"
        );
        return;
    };
    let cancelled = || async {
        groups
            .counters(&group)
            .await
            .unwrap()
            .into_iter()
            .find(|(name, _)| name == "cancelled")
            .map_or(0, |(_, n)| n)
    };
    // A job waiting for the cancelled one, released by the cancel's dependency change.
    let (key, next_q) = (unique("k"), unique("next"));
    groups
        .apply(vec![Effect::Hold(queue_core::WaitingJob::new(
            &key,
            1,
            job(&next_q, "next", b"n"),
        ))])
        .await
        .unwrap();
    let pushed = ids(store
        .push(vec![job(&q, "w", b"w"), job(&q, "r", b"r")])
        .await
        .unwrap());
    let release = Effect::Deps {
        key: key.clone(),
        delta: -1,
    };

    // Refused effects refuse the step: the job stays, nothing is counted.
    let bad = Effect::Push(job(&q, "no-key", b"x"));
    let err = track
        .cancel(&pushed[0], LONG, vec![count(1), bad])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Contract { .. }), "{err:?}");
    assert!(track.job(&pushed[0]).await.unwrap().is_some());
    assert_eq!(cancelled().await, 0);

    // Removed: counted and released in the same step.
    match track
        .cancel(&pushed[0], LONG, vec![count(1), release.clone()])
        .await
        .unwrap()
    {
        Cancellation::Removed(job) => assert_eq!(job.name, "w"),
        other => panic!("a waiting job is removed, not {other:?}"),
    }
    assert_eq!(cancelled().await, 1);
    assert_eq!(groups.waiting(&key).await.unwrap(), None, "released");
    let next = store.reserve(&request(&[&next_q], LONG, 5)).await.unwrap();
    assert_eq!(next.len(), 1, "the job after it was pushed");
    assert_eq!(next[0].name, "next");

    // Gone: nothing found, nothing counted.
    assert_eq!(
        track
            .cancel(&pushed[0], LONG, vec![count(1)])
            .await
            .unwrap(),
        Cancellation::NotFound
    );
    assert_eq!(cancelled().await, 1);

    // Reserved under a live lease: marked, nothing counted.
    let taken = store.reserve(&request(&[&q], SHORT, 1)).await.unwrap();
    assert_eq!(taken[0].lease.job_id, pushed[1]);
    match track
        .cancel(&pushed[1], LONG, vec![count(1)])
        .await
        .unwrap()
    {
        Cancellation::Marked(summary) => assert_eq!(summary.state, JobState::Reserved),
        other => panic!("a reserved job is marked, not {other:?}"),
    }
    assert_eq!(cancelled().await, 1);

    // Its lease ran out: removed, counted; its worker's settle is then stale, its effects
    // never applied.
    tokio::time::sleep(PAST_SHORT).await;
    assert!(matches!(
        track
            .cancel(&pushed[1], LONG, vec![count(1)])
            .await
            .unwrap(),
        Cancellation::Removed(_)
    ));
    assert_eq!(cancelled().await, 2);
    let reply = store
        .settle(
            vec![Settle::ack(taken[0].lease.clone()).effect(count(10))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Stale]);
    assert_eq!(cancelled().await, 2);
}

/// Cancels race with reservations: each job is either removed (and never reserved) or
/// marked while reserved, never both and never lost.
pub async fn track_cancel_races_reserve(store: Store) {
    let Some(track) = store.capabilities().track else {
        return skip("track_cancel_races_reserve", &store);
    };
    let q = unique("q");
    const N: usize = 60;
    let pushed = ids(store
        .push(
            (0..N)
                .map(|i| job(&q, "r", format!("{i}").as_bytes()))
                .collect(),
        )
        .await
        .unwrap());
    let reserver = {
        let (store, q) = (store.clone(), q.clone());
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store.reserve(&request(&[&q], LONG, 3)).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|r| r.lease.job_id));
            }
        })
    };
    let mut removed = Vec::new();
    let mut marked = Vec::new();
    for id in &pushed {
        match track.cancel(id, LONG, Vec::new()).await.unwrap() {
            Cancellation::Removed { .. } => removed.push(id.clone()),
            Cancellation::Marked(_) => marked.push(id.clone()),
            Cancellation::NotFound => panic!("job {id} is in the queue until acknowledged"),
        }
    }
    let reserved = reserver.await.unwrap();
    for id in &removed {
        assert!(!reserved.contains(id), "job {id} was removed and reserved");
    }
    for id in &marked {
        assert!(
            reserved.contains(id),
            "job {id} was marked but never reserved"
        );
    }
    assert_eq!(removed.len() + marked.len(), N);
    assert_eq!(
        removed.len() + reserved.len(),
        N,
        "every job removed or reserved once"
    );
}

/// Records: written plainly or fenced by the job's current lease, read back, never read past
/// their time to live; bad keys and fences of another job refused.
pub async fn track_records_and_fences(store: Store) {
    let Some(track) = store.capabilities().track else {
        return skip("track_records_and_fences", &store);
    };
    let q = unique("q");
    let pushed = ids(store
        .push(vec![job(&q, "p", b"x"), job(&q, "o", b"y")])
        .await
        .unwrap());
    let key = |kind: &str| RecordKey::new(pushed[0].clone(), kind);
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    assert!(track
        .put_record(&key("plain"), &bytes, LONG, None)
        .await
        .unwrap());
    assert!(track
        .put_record(&key("short"), b"s", SHORT, None)
        .await
        .unwrap());
    assert_eq!(
        track
            .records(&[
                key("plain"),
                key("short"),
                key("none"),
                RecordKey::new(pushed[1].clone(), "plain")
            ])
            .await
            .unwrap(),
        vec![Some(bytes.clone()), Some(b"s".to_vec()), None, None]
    );
    assert!(track.records(&[]).await.unwrap().is_empty());
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(track.records(&[key("short")]).await.unwrap(), vec![None]);
    track.prune_records().await.unwrap();
    assert_eq!(
        track.records(&[key("plain")]).await.unwrap(),
        vec![Some(bytes)]
    );

    // Fenced: only by the current lease of the same job.
    let first = store.reserve(&request(&[&q], SHORT, 1)).await.unwrap();
    assert_eq!(first[0].lease.job_id, pushed[0]);
    let progress = key(RecordKey::PROGRESS);
    assert!(track
        .put_record(&progress, b"1/10", LONG, Some(&first[0].lease))
        .await
        .unwrap());
    tokio::time::sleep(PAST_SHORT).await;
    let second = store.reserve(&request(&[&q], LONG, 2)).await.unwrap();
    assert!(second.iter().any(|r| r.lease.job_id == pushed[0]));
    assert!(
        !track
            .put_record(&progress, b"2/10", LONG, Some(&first[0].lease))
            .await
            .unwrap(),
        "a stale lease writes nothing"
    );
    assert_eq!(
        track
            .records(std::slice::from_ref(&progress))
            .await
            .unwrap(),
        vec![Some(b"1/10".to_vec())]
    );
    let current = second.iter().find(|r| r.lease.job_id == pushed[0]).unwrap();
    assert!(track
        .put_record(&progress, b"3/10", LONG, Some(&current.lease))
        .await
        .unwrap());
    let other = second.iter().find(|r| r.lease.job_id == pushed[1]).unwrap();
    assert!(matches!(
        track
            .put_record(&progress, b"x", LONG, Some(&other.lease))
            .await,
        Err(Error::Contract { .. })
    ));
    for bad in ["", "with space", "a/b", &"k".repeat(33)] {
        assert!(
            matches!(
                track.put_record(&key(bad), b"x", LONG, None).await,
                Err(Error::Contract { .. })
            ),
            "kind `{bad}` is refused"
        );
    }
    store
        .acknowledge(std::slice::from_ref(&current.lease))
        .await
        .unwrap();
    assert!(
        !track
            .put_record(&progress, b"4/10", LONG, Some(&current.lease))
            .await
            .unwrap(),
        "a settled job's lease writes nothing"
    );
    assert_eq!(
        track.records(&[progress]).await.unwrap(),
        vec![Some(b"3/10".to_vec())],
        "records outlive their job"
    );
}

/// `Effect::Record` is written by the settle that applies, with the job's transition, and
/// not at all by a stale one; it is refused outside a settle.
pub async fn track_record_effects_apply_with_the_settle(store: Store) {
    let Some(track) = store.capabilities().track else {
        return skip("track_record_effects_apply_with_the_settle", &store);
    };
    let q = unique("q");
    store
        .push((0..3).map(|i| job(&q, "e", &[i])).collect())
        .await
        .unwrap();
    let taken = store.reserve(&request(&[&q], LONG, 3)).await.unwrap();
    assert_eq!(taken.len(), 3);
    let status = |i: usize| RecordKey::new(taken[i].lease.job_id.clone(), RecordKey::STATUS);
    let reply = store
        .settle(
            vec![
                Settle::ack(taken[0].lease.clone()).effect(record(
                    RecordKey::STATUS,
                    b"succeeded",
                    LONG,
                )),
                Settle::fail(taken[1].lease.clone(), "bad")
                    .effect(record(RecordKey::STATUS, b"failed", LONG))
                    .effect(record("extra", b"", SHORT)),
                Settle::retry(taken[2].lease.clone(), Duration::from_secs(60)).effect(record(
                    RecordKey::STATUS,
                    b"retrying",
                    LONG,
                )),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied; 3]);
    let extra = RecordKey::new(taken[1].lease.job_id.clone(), "extra");
    assert_eq!(
        track
            .records(&[status(0), status(1), status(2), extra.clone()])
            .await
            .unwrap(),
        vec![
            Some(b"succeeded".to_vec()),
            Some(b"failed".to_vec()),
            Some(b"retrying".to_vec()),
            Some(Vec::new())
        ]
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(track.records(&[extra]).await.unwrap(), vec![None]);

    // A replay of an applied settle, and a settle of a stale lease, write nothing.
    let replay = store
        .settle(
            vec![Settle::ack(taken[0].lease.clone()).effect(record(
                RecordKey::STATUS,
                b"replayed",
                LONG,
            ))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(replay.settled, vec![Settled::Stale]);
    assert_eq!(
        track.records(&[status(0)]).await.unwrap(),
        vec![Some(b"succeeded".to_vec())]
    );

    // A bad kind is refused before anything changes.
    let q2 = unique("q");
    store.push(vec![job(&q2, "b", b"b")]).await.unwrap();
    let bad = store.reserve(&request(&[&q2], LONG, 1)).await.unwrap();
    assert!(matches!(
        store
            .settle(
                vec![Settle::ack(bad[0].lease.clone()).effect(record("no good", b"", LONG))],
                None
            )
            .await,
        Err(Error::Contract { .. })
    ));
    assert_eq!(
        store
            .acknowledge(std::slice::from_ref(&bad[0].lease))
            .await
            .unwrap(),
        vec![true],
        "the refused settle changed nothing"
    );
    if let Some(groups) = store.capabilities().groups {
        assert!(matches!(
            groups
                .apply(vec![record(RecordKey::STATUS, b"", LONG)])
                .await,
            Err(Error::Contract { .. })
        ));
    }
}
