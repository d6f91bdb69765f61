//! The cases of the v2 contract: settle and fetch in one call, stale leases in a batch,
//! effects applied with their transition (or not at all), unique claims on every path, and
//! listing jobs by state a page at a time.

use std::collections::HashSet;
use std::time::Duration;

use queue_core::storage::{JobState, PageRequest};
use queue_core::{
    Effect, Error, Lease, NewJob, Outcome, Pushed, Settle, Settled, StorageExt, Unique, Until,
};

use super::{failed_list, ids, LONG, PAST_SHORT, SHORT};
use crate::{job, request, unique, Store};

fn unique_job(queue: &str, payload: &[u8], key: &str, until: Until) -> NewJob {
    job(queue, "u", payload).unique(Unique::new(key).until(until))
}

async fn reserve_all(store: &Store, queue: &str, n: usize) -> Vec<queue_core::Reserved> {
    let got = store.reserve(&request(&[queue], LONG, n)).await.unwrap();
    assert_eq!(got.len(), n, "{n} jobs available on {queue}");
    got
}

async fn total(store: &Store, queue: &str) -> u64 {
    store.inspect().unwrap().size(queue).await.unwrap().total()
}

fn skip(case: &str, store: &Store, what: &str) {
    println!(
        "{case}: not applicable to the {} driver ({what}; declared in its capabilities)",
        store.driver()
    );
}

/// One call settles finished jobs and reserves the next ones, FIFO as `reserve` would.
pub async fn settle_and_fetch_in_one_call(store: Store) {
    let q = unique("q");
    let pushed = ids(store
        .push(
            (0..4)
                .map(|i| job(&q, "s", format!("{i}").as_bytes()))
                .collect(),
        )
        .await
        .unwrap());
    let first = reserve_all(&store, &q, 1).await.remove(0);
    assert_eq!(first.lease.job_id, pushed[0]);
    let reply = store
        .settle(
            vec![Settle::ack(first.lease.clone())],
            Some(&request(&[&q], LONG, 2)),
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied]);
    let fetched: Vec<_> = reply
        .reserved
        .iter()
        .map(|r| r.lease.job_id.clone())
        .collect();
    assert_eq!(fetched, pushed[1..3], "the next two, in order");
    assert!(reply.reserved.iter().all(|r| r.attempts == 1));
    assert_eq!(total(&store, &q).await, 3, "the acknowledged job is gone");
    // A fetch with nothing to settle is a plain reservation; settling with no fetch reserves
    // nothing.
    let reply = store
        .settle(Vec::new(), Some(&request(&[&q], LONG, 5)))
        .await
        .unwrap();
    assert!(reply.settled.is_empty());
    assert_eq!(reply.reserved.len(), 1);
    let leases: Vec<Settle> = reply
        .reserved
        .iter()
        .map(|r| Settle::ack(r.lease.clone()))
        .collect();
    let reply = store.settle(leases, None).await.unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied]);
    assert!(reply.reserved.is_empty());
}

/// In a batch, a stale lease is reported stale and changes nothing (its effects included),
/// while the others are applied.
pub async fn stale_leases_in_a_batch(store: Store) {
    let q = unique("q");
    let follow = unique("follow");
    store
        .push(
            (0..3)
                .map(|i| job(&q, "b", format!("{i}").as_bytes()))
                .collect(),
        )
        .await
        .unwrap();
    let held = reserve_all(&store, &q, 3).await;
    // The second job is settled once already: its lease is stale from now on.
    store.acknowledge(&[held[1].lease.clone()]).await.unwrap();
    let mut stale = Settle::fail(held[1].lease.clone(), "too late");
    if store.capabilities().claims {
        stale = stale.effect(Effect::Push(
            job(&follow, "f", b"never").unique(Unique::new(unique("never"))),
        ));
    }
    let group = unique("g");
    if store.capabilities().groups.is_some() {
        stale = stale.effect(Effect::Count {
            group: group.clone(),
            deltas: vec![("done".into(), 1)],
        });
    }
    let reply = store
        .settle(
            vec![
                Settle::ack(held[0].lease.clone()),
                stale,
                Settle::retry(held[2].lease.clone(), Duration::ZERO),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        reply.settled,
        vec![Settled::Applied, Settled::Stale, Settled::Applied]
    );
    assert_eq!(
        store.failed_store().unwrap().count().await.unwrap(),
        0,
        "the stale fail was not applied"
    );
    if store.capabilities().claims {
        assert_eq!(
            total(&store, &follow).await,
            0,
            "no follow-up from a stale step"
        );
    }
    if let Some(groups) = store.capabilities().groups {
        assert!(groups.counters(&group).await.unwrap().is_empty());
    }
    let again = reserve_all(&store, &q, 1).await.remove(0);
    assert_eq!(again.lease.job_id, held[2].lease.job_id);
    assert_eq!(again.attempts, 2, "a retry keeps the attempt counted");
    // Settling the same lease twice in one batch applies it once.
    let reply = store
        .settle(
            vec![
                Settle::ack(again.lease.clone()),
                Settle::ack(again.lease.clone()),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied, Settled::Stale]);
    assert_eq!(total(&store, &q).await, 0);
}

/// A push effect pushes its follow-up in the settle's step; a replay, or a second step with
/// the same deterministic id, pushes nothing more; a push effect without its key is refused
/// before anything changes.
pub async fn push_effects_are_exactly_once(store: Store) {
    if !store.capabilities().claims {
        return skip("push_effects_are_exactly_once", &store, "no unique claims");
    }
    let (q, next) = (unique("q"), unique("next"));
    let key = unique("callback");
    store
        .push(vec![
            job(&q, "a", b"a"),
            job(&q, "b", b"b"),
            job(&q, "c", b"c"),
        ])
        .await
        .unwrap();
    let held = reserve_all(&store, &q, 3).await;
    let follow_up = || Effect::Push(job(&next, "then", b"follow-up").unique(Unique::new(&key)));
    let first = Settle::ack(held[0].lease.clone()).effect(follow_up());
    assert_eq!(
        store
            .settle(vec![first.clone()], None)
            .await
            .unwrap()
            .settled,
        vec![Settled::Applied]
    );
    assert_eq!(total(&store, &next).await, 1, "pushed with the transition");
    assert_eq!(
        store.settle(vec![first], None).await.unwrap().settled,
        vec![Settled::Stale],
        "a replay is stale"
    );
    let second = Settle::ack(held[1].lease.clone()).effect(follow_up());
    assert_eq!(
        store.settle(vec![second], None).await.unwrap().settled,
        vec![Settled::Applied],
        "the step applies"
    );
    assert_eq!(
        total(&store, &next).await,
        1,
        "the deterministic id kept the second push out"
    );
    let got = reserve_all(&store, &next, 1).await.remove(0);
    assert_eq!(
        (got.name.as_str(), got.payload.as_slice()),
        ("then", &b"follow-up"[..])
    );

    let keyless = Settle::ack(held[2].lease.clone()).effect(Effect::Push(job(&next, "x", b"x")));
    let err = store.settle(vec![keyless], None).await.unwrap_err();
    assert!(matches!(err, Error::Contract { .. }), "{err}");
    assert_eq!(
        store.extend(&[held[2].lease.clone()], LONG).await.unwrap(),
        vec![queue_core::LeaseStatus::Held],
        "a refused batch changed nothing"
    );
}

/// Counter deltas are applied with their transition, exactly once per settled job, under
/// concurrency, and never for a stale lease; a group can be read and removed.
pub async fn count_effects_are_exact(store: Store) {
    let Some(groups) = store.capabilities().groups else {
        return skip("count_effects_are_exact", &store, "no group counters");
    };
    let q = unique("q");
    let group = unique("batch");
    const N: usize = 400;
    store
        .push(
            (0..N)
                .map(|i| job(&q, "m", format!("{i}").as_bytes()))
                .collect(),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (store, q, group) = (store.clone(), q.clone(), group.clone());
        tasks.push(tokio::spawn(async move {
            let mut settled = 0;
            loop {
                let got = store.reserve(&request(&[&q], LONG, 7)).await.unwrap();
                if got.is_empty() {
                    return settled;
                }
                let batch: Vec<Settle> = got
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let (outcome, counter) = if (worker + i) % 5 == 0 {
                            (
                                Outcome::Fail {
                                    reason: "no".into(),
                                },
                                "failed",
                            )
                        } else {
                            (Outcome::Ack, "succeeded")
                        };
                        Settle::new(r.lease.clone(), outcome).effect(Effect::Count {
                            group: group.clone(),
                            deltas: vec![(counter.into(), 1), ("pending".into(), -1)],
                        })
                    })
                    .collect();
                let replay = batch.clone();
                let reply = store.settle(batch, None).await.unwrap();
                assert!(reply.settled.iter().all(|s| *s == Settled::Applied));
                // A replay of the whole batch (a lost reply, a redelivery) counts nothing.
                let reply = store.settle(replay, None).await.unwrap();
                assert!(reply.settled.iter().all(|s| *s == Settled::Stale));
                settled += got.len();
            }
        }));
    }
    let mut settled = 0;
    for task in tasks {
        settled += task.await.unwrap();
    }
    assert_eq!(settled, N);
    let counters = groups.counters(&group).await.unwrap();
    let get = |name: &str| {
        counters
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    };
    let failed = failed_list(&store, N).await.len() as i64;
    assert_eq!(get("pending"), -(N as i64), "{counters:?}");
    assert_eq!(get("succeeded") + get("failed"), N as i64, "{counters:?}");
    assert_eq!(
        get("failed"),
        failed,
        "one count per failed job: {counters:?}"
    );
    let names: Vec<&str> = counters.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["failed", "pending", "succeeded"], "sorted by name");
    assert!(groups.remove(&group).await.unwrap());
    assert!(groups.counters(&group).await.unwrap().is_empty());
    assert!(!groups.remove(&group).await.unwrap());
}

/// Acknowledgements with effects (the settle of batch members and chain links, which some
/// drivers fence by the acknowledgement itself): in a call that mixes current and stale
/// leases, only the current ones' effects apply, and a lease named twice counts once.
pub async fn acks_with_effects_count_current_leases_only(store: Store) {
    let Some(groups) = store.capabilities().groups else {
        return skip(
            "acks_with_effects_count_current_leases_only",
            &store,
            "no group counters",
        );
    };
    let q = unique("q");
    let group = unique("acks");
    store
        .push((0..6).map(|i| job(&q, "m", &[i])).collect())
        .await
        .unwrap();
    let got = store.reserve(&request(&[&q], LONG, 6)).await.unwrap();
    assert_eq!(got.len(), 6);
    let ack = |r: &queue_core::Reserved| {
        Settle::new(r.lease.clone(), Outcome::Ack).effect(Effect::Count {
            group: group.clone(),
            deltas: vec![("done".into(), 1)],
        })
    };
    let first: Vec<Settle> = got[..3].iter().map(ack).collect();
    let reply = store.settle(first, None).await.unwrap();
    assert!(reply.settled.iter().all(|s| *s == Settled::Applied));
    // Three stale (settled above), three current, one of them twice.
    let mut mixed: Vec<Settle> = got.iter().map(ack).collect();
    mixed.push(ack(&got[5]));
    let reply = store.settle(mixed, None).await.unwrap();
    assert_eq!(
        reply.settled,
        [
            Settled::Stale,
            Settled::Stale,
            Settled::Stale,
            Settled::Applied,
            Settled::Applied,
            Settled::Applied,
            Settled::Stale
        ]
    );
    assert_eq!(
        groups.counters(&group).await.unwrap(),
        [("done".to_owned(), 6)]
    );
    assert_eq!(store.inspect().unwrap().size(&q).await.unwrap().total(), 0);
    groups.remove(&group).await.unwrap();
}

/// Groups are listed by prefix, sorted by their bytes, a page at a time; a removed group is
/// no longer listed.
pub async fn groups_are_listed_by_prefix(store: Store) {
    let Some(groups) = store.capabilities().groups else {
        return skip("groups_are_listed_by_prefix", &store, "no group counters");
    };
    // Prefixes of their own, so other cases' groups never show; `*`, `?` and `[` are listed
    // as they are (not read as a pattern) and `_` and `%` too.
    let prefix = format!("{}:l*?[%_", unique("list"));
    let other = format!("{}:l*x[%_", unique("list"));
    let mut names: Vec<String> = (0..7).map(|i| format!("{prefix}{i:02}")).collect();
    names.push(format!("{prefix}é"));
    let mut effects: Vec<Effect> = names
        .iter()
        .chain([&other, &prefix[..prefix.len() - 1].to_owned()])
        .map(|group| Effect::Count {
            group: group.clone(),
            deltas: vec![("created".into(), 1)],
        })
        .collect();
    effects.reverse();
    groups.apply(effects).await.unwrap();
    let mut listed = Vec::new();
    let mut page = PageRequest::first(3);
    let mut pages = 0;
    loop {
        let got = groups.list(&prefix, page.clone()).await.unwrap();
        assert!(got.items.len() <= 3, "{got:?}");
        pages += 1;
        listed.extend(got.items);
        match got.next {
            Some(next) => page = PageRequest::after(next, 3),
            None => break,
        }
        assert!(pages < 10, "the listing does not end: {listed:?}");
    }
    assert_eq!(
        listed, names,
        "every group with the prefix, once, in byte order"
    );
    assert!(groups.remove(&names[0]).await.unwrap());
    let got = groups.list(&prefix, PageRequest::first(100)).await.unwrap();
    assert_eq!(got.items, names[1..], "a removed group is not listed");
    assert_eq!(got.next, None);
}

/// A job pushed with a key held by another is a duplicate naming the holder; the claim is
/// released by the transition its `until` names, on every path.
pub async fn unique_claims_follow_the_job(store: Store) {
    if !store.capabilities().claims {
        return skip("unique_claims_follow_the_job", &store, "no unique claims");
    }
    let q = unique("q");
    let key = unique("k");

    // Terminal: held while waiting and running, released by the acknowledgement.
    let pushed = store
        .push(vec![
            unique_job(&q, b"1", &key, Until::Terminal),
            unique_job(&q, b"2", &key, Until::Terminal),
        ])
        .await
        .unwrap();
    let holder = match &pushed[0] {
        Pushed::Created(id) => id.clone(),
        other => panic!("first push: {other:?}"),
    };
    assert_eq!(pushed[1], Pushed::Duplicate(holder.clone()), "same batch");
    assert_eq!(
        store
            .push_one(unique_job(&q, b"3", &key, Until::Terminal))
            .await
            .unwrap(),
        Pushed::Duplicate(holder.clone())
    );
    let running = reserve_all(&store, &q, 1).await.remove(0);
    assert!(!store
        .push_one(unique_job(&q, b"4", &key, Until::Terminal))
        .await
        .unwrap()
        .is_created());
    store.retry(&running.lease, Duration::ZERO).await.unwrap();
    assert!(
        !store
            .push_one(unique_job(&q, b"5", &key, Until::Terminal))
            .await
            .unwrap()
            .is_created(),
        "a retry keeps the claim"
    );
    let running = reserve_all(&store, &q, 1).await.remove(0);
    store.acknowledge(&[running.lease]).await.unwrap();
    let again = store
        .push_one(unique_job(&q, b"6", &key, Until::Terminal))
        .await
        .unwrap();
    assert!(again.is_created(), "released by the acknowledgement");

    // Started: released by the reservation.
    let started = unique("k");
    store
        .push_one(unique_job(&q, b"s", &started, Until::Started))
        .await
        .unwrap();
    let all = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(store
        .push_one(unique_job(&q, b"s2", &started, Until::Started))
        .await
        .unwrap()
        .is_created());
    // Terminal: released by a failure too.
    let failing = all
        .iter()
        .find(|r| r.payload == b"6")
        .expect("the terminal job");
    store.fail(&failing.lease, "no").await.unwrap();
    assert!(store
        .push_one(unique_job(&q, b"7", &key, Until::Terminal))
        .await
        .unwrap()
        .is_created());
    let leftovers = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    let mut leases: Vec<Lease> = leftovers.iter().map(|r| r.lease.clone()).collect();
    leases.extend(
        all.iter()
            .filter(|r| r.payload == b"s")
            .map(|r| r.lease.clone()),
    );
    store.acknowledge(&leases).await.unwrap();
    assert_eq!(total(&store, &q).await, 0);
}

/// `until = succeeded`: a job that fails keeps its key in the failed store; retrying it keeps
/// the key, forgetting it releases the key; a failed job whose key was taken meanwhile stays.
pub async fn unique_claims_in_the_failed_store(store: Store) {
    if !store.capabilities().claims {
        return skip(
            "unique_claims_in_the_failed_store",
            &store,
            "no unique claims",
        );
    }
    let q = unique("q");
    let key = unique("k");
    let first = store
        .push_one(unique_job(&q, b"1", &key, Until::Succeeded))
        .await
        .unwrap()
        .into_id();
    let running = reserve_all(&store, &q, 1).await.remove(0);
    store.fail(&running.lease, "broke").await.unwrap();
    assert_eq!(
        store
            .push_one(unique_job(&q, b"2", &key, Until::Succeeded))
            .await
            .unwrap(),
        Pushed::Duplicate(first.clone()),
        "the failed job holds its key"
    );
    let failed = failed_list(&store, 10).await.remove(0);
    assert_eq!(
        failed.unique,
        Some(Unique::new(&key).until(Until::Succeeded))
    );
    let retried = store
        .failed_store()
        .unwrap()
        .retry(&failed.id)
        .await
        .unwrap()
        .expect("it was there");
    let Pushed::Created(new_id) = retried else {
        panic!("retry: {retried:?}");
    };
    assert!(
        !store
            .push_one(unique_job(&q, b"3", &key, Until::Succeeded))
            .await
            .unwrap()
            .is_created(),
        "the retried job holds the key"
    );
    let running = reserve_all(&store, &q, 1).await.remove(0);
    assert_eq!(running.lease.job_id, new_id);
    store.fail(&running.lease, "broke again").await.unwrap();
    let failed = failed_list(&store, 10).await.remove(0);
    assert!(store
        .failed_store()
        .unwrap()
        .forget(&failed.id)
        .await
        .unwrap());
    assert!(
        store
            .push_one(unique_job(&q, b"4", &key, Until::Terminal))
            .await
            .unwrap()
            .is_created(),
        "forgetting released the key"
    );

    // A terminal claim is released by the failure; a retry claims it again, and stays in
    // the failed store while another job holds it.
    let other = unique("k");
    store
        .push_one(unique_job(&q, b"5", &other, Until::Terminal))
        .await
        .unwrap();
    let all = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    let five = all.iter().find(|r| r.payload == b"5").expect("job 5");
    store.fail(&five.lease, "no").await.unwrap();
    let holder = store
        .push_one(unique_job(&q, b"6", &other, Until::Terminal))
        .await
        .unwrap();
    assert!(holder.is_created());
    let failed = failed_list(&store, 10)
        .await
        .into_iter()
        .find(|f| f.payload == b"5")
        .expect("job 5 failed");
    assert_eq!(
        store
            .failed_store()
            .unwrap()
            .retry(&failed.id)
            .await
            .unwrap(),
        Some(Pushed::Duplicate(holder.into_id()))
    );
    assert!(
        store
            .failed_store()
            .unwrap()
            .get(&failed.id)
            .await
            .unwrap()
            .is_some(),
        "a retry refused for its key leaves the failed job where it was"
    );
}

/// Clearing a queue releases the keys of the jobs it deletes.
pub async fn clear_releases_claims(store: Store) {
    if !store.capabilities().claims {
        return skip("clear_releases_claims", &store, "no unique claims");
    }
    let q = unique("q");
    let key = unique("k");
    store
        .push_one(unique_job(&q, b"1", &key, Until::Terminal))
        .await
        .unwrap();
    assert_eq!(store.inspect().unwrap().clear(&q).await.unwrap(), 1);
    assert!(store
        .push_one(unique_job(&q, b"2", &key, Until::Terminal))
        .await
        .unwrap()
        .is_created());
}

/// 1,000 dispatches of one key from 50 concurrent tasks make one job.
pub async fn unique_claims_under_contention(store: Store) {
    if !store.capabilities().claims {
        return skip("unique_claims_under_contention", &store, "no unique claims");
    }
    let q = unique("q");
    let key = unique("k");
    let mut tasks = Vec::new();
    for t in 0..50 {
        let (store, q, key) = (store.clone(), q.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for i in 0..20 {
                let payload = format!("{t}-{i}");
                let jobs = vec![unique_job(&q, payload.as_bytes(), &key, Until::Terminal)];
                results.extend(store.push(jobs).await.unwrap());
            }
            results
        }));
    }
    let mut created = Vec::new();
    let mut holders = HashSet::new();
    for task in tasks {
        for pushed in task.await.unwrap() {
            holders.insert(pushed.id().clone());
            if pushed.is_created() {
                created.push(pushed.into_id());
            }
        }
    }
    assert_eq!(created.len(), 1, "one job for one key");
    assert_eq!(holders.len(), 1, "every duplicate names the one holder");
    assert_eq!(total(&store, &q).await, 1);
}

/// Jobs listed by state, first due first, a page at a time by cursor.
pub async fn list_jobs_by_state(store: Store) {
    let inspect = store.inspect().unwrap();
    let q = unique("q");
    store
        .push(
            (0..5)
                .map(|i| job(&q, "w", format!("w{i}").as_bytes()))
                .collect(),
        )
        .await
        .unwrap();
    store
        .push(vec![job(&q, "d", b"d").available(
            queue_core::Availability::After(Duration::from_secs(3600)),
        )])
        .await
        .unwrap();
    let held = reserve_all(&store, &q, 1).await.remove(0);
    let first = match inspect
        .jobs(&q, JobState::Waiting, PageRequest::first(3))
        .await
    {
        Ok(page) => page,
        Err(Error::NotSupported { .. }) => {
            return skip("list_jobs_by_state", &store, "it cannot list its keys");
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(first.items.len(), 3);
    let second = inspect
        .jobs(
            &q,
            JobState::Waiting,
            PageRequest::after(first.next.clone().expect("a second page"), 3),
        )
        .await
        .unwrap();
    assert_eq!(second.items.len(), 1);
    let waiting: Vec<_> = first.items.iter().chain(&second.items).collect();
    let ids: HashSet<_> = waiting.iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids.len(), 4, "no job twice across pages");
    assert!(waiting
        .iter()
        .all(|j| j.state == JobState::Waiting && j.queue == q));
    assert!(!ids.contains(&held.lease.job_id));
    // Each listed with its payload, byte for byte.
    let mut payloads: Vec<_> = waiting.iter().map(|j| j.payload.clone()).collect();
    payloads.push(held.payload.clone());
    payloads.sort();
    let pushed: Vec<Vec<u8>> = (0..5).map(|i| format!("w{i}").into_bytes()).collect();
    assert_eq!(payloads, pushed);
    let delayed = inspect
        .jobs(&q, JobState::Delayed, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(delayed.items.len(), 1);
    assert_eq!(delayed.items[0].name, "d");
    assert_eq!(delayed.items[0].payload, b"d");
    assert_eq!(delayed.next, None);
    let reserved = inspect
        .jobs(&q, JobState::Reserved, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(reserved.items.len(), 1);
    assert_eq!(reserved.items[0].id, held.lease.job_id);
    assert_eq!(reserved.items[0].attempts, 1);
    assert_eq!(reserved.items[0].payload, held.payload);
}

/// A settle with effects whose job's lease ran out (nobody took the job, so the token is
/// still current) is applied, and the same call's fetch does not hand that job out again.
/// (MySQL deleted such rows only at the commit, and its fetch picked them.)
pub async fn a_job_settled_with_effects_is_not_fetched_by_its_own_call(store: Store) {
    let caps = store.capabilities();
    let effect = if caps.groups.is_some() {
        Effect::Count {
            group: unique("g"),
            deltas: vec![("done".into(), 1)],
        }
    } else if caps.claims {
        Effect::Push(job(&unique("follow"), "f", b"f").unique(Unique::new(unique("k"))))
    } else {
        return skip(
            "a_job_settled_with_effects_is_not_fetched_by_its_own_call",
            &store,
            "no effects",
        );
    };
    let q = unique("q");
    store.push(vec![job(&q, "once", b"once")]).await.unwrap();
    let held = store
        .reserve(&request(&[&q], Duration::from_millis(50), 1))
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = store
        .settle(
            vec![Settle::ack(held[0].lease.clone()).effect(effect)],
            Some(&request(&[&q], LONG, 5)),
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied]);
    assert!(
        reply.reserved.is_empty(),
        "the acknowledged job came back: {:?}",
        reply
            .reserved
            .iter()
            .map(|r| &r.lease.job_id)
            .collect::<Vec<_>>()
    );
    assert_eq!(total(&store, &q).await, 0);
}

/// `Unique::replace` (debounce): a queued job holding the key takes the new job's name,
/// payload and availability and keeps its id; a reserved or failed holder makes the push a
/// duplicate; within one push the later job replaces the earlier.
pub async fn replacing_pushes(store: Store) {
    let caps = store.capabilities();
    let q = unique("q");
    let key = unique("k");
    let replacing = |payload: &[u8], name: &str| {
        NewJob::new(&q, name, payload.to_vec()).unique(Unique::new(&key).replacing())
    };
    if !caps.replace {
        if caps.claims {
            let err = store.push(vec![replacing(b"1", "a")]).await.unwrap_err();
            assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        }
        return skip("replacing_pushes", &store, "it cannot replace a queued job");
    }
    let first = store.push_one(replacing(b"1", "a")).await.unwrap();
    let Pushed::Created(holder) = first else {
        panic!("{first:?}");
    };
    // Replaced while waiting, and pushed back an hour.
    let later =
        replacing(b"2", "b").available(queue_core::Availability::After(Duration::from_secs(3600)));
    assert_eq!(
        store.push_one(later).await.unwrap(),
        Pushed::Replaced(holder.clone())
    );
    assert!(
        store
            .reserve(&request(&[&q], LONG, 10))
            .await
            .unwrap()
            .is_empty(),
        "delayed by the replacement"
    );
    assert_eq!(total(&store, &q).await, 1, "still one job");
    // Replaced again, due now: the worker gets the last payload under the first id.
    assert_eq!(
        store.push_one(replacing(b"3", "c")).await.unwrap(),
        Pushed::Replaced(holder.clone())
    );
    let got = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (
            got[0].lease.job_id.clone(),
            got[0].name.as_str(),
            got[0].payload.as_slice(),
            got[0].attempts
        ),
        (holder.clone(), "c", b"3".as_slice(), 1)
    );
    // Reserved: a duplicate, nothing replaced.
    assert_eq!(
        store.push_one(replacing(b"4", "d")).await.unwrap(),
        Pushed::Duplicate(holder.clone())
    );
    store.acknowledge(&[got[0].lease.clone()]).await.unwrap();
    // Free again; two in one push: the second replaces the first.
    let both = store
        .push(vec![replacing(b"5", "e"), replacing(b"6", "f")])
        .await
        .unwrap();
    let Pushed::Created(second) = &both[0] else {
        panic!("{both:?}");
    };
    assert_eq!(both[1], Pushed::Replaced(second.clone()));
    // A push without `replace` is still a duplicate.
    assert_eq!(
        store
            .push_one(NewJob::new(&q, "g", b"7".to_vec()).unique(Unique::new(&key)))
            .await
            .unwrap(),
        Pushed::Duplicate(second.clone())
    );
    let got = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].name.as_str(), got[0].payload.as_slice()),
        ("f", b"6".as_slice())
    );
    // A failed holder (until succeeded) keeps its key: a duplicate.
    let kept = unique("k");
    let failing =
        NewJob::new(&q, "h", b"8".to_vec()).unique(Unique::new(&kept).until(Until::Succeeded));
    store.acknowledge(&[got[0].lease.clone()]).await.unwrap();
    let failing_id = store.push_one(failing).await.unwrap().into_id();
    let running = reserve_all(&store, &q, 1).await.remove(0);
    store.fail(&running.lease, "no").await.unwrap();
    let again = store
        .push_one(
            NewJob::new(&q, "i", b"9".to_vec())
                .unique(Unique::new(&kept).until(Until::Succeeded).replacing()),
        )
        .await
        .unwrap();
    assert!(matches!(again, Pushed::Duplicate(_)), "{again:?}");
    let _ = failing_id;
    assert_eq!(total(&store, &q).await, 0);
}

/// A settle that puts a job back (retry or release) with [`Effect::Payload`] stores the new
/// payload in the same step: the next reservation gets it, the attempts count as the
/// outcome says. A stale settle changes nothing; a payload effect with an outcome that does
/// not keep the job is refused. A store without the capability refuses the effect.
pub async fn settle_replaces_the_payload_of_a_job_put_back(store: Store) {
    let q = unique("q");
    store.push(vec![job(&q, "j", b"old")]).await.unwrap();
    let first = reserve_all(&store, &q, 1).await.remove(0);
    let with = |outcome: Outcome, lease: &Lease, payload: &[u8]| Settle {
        lease: lease.clone(),
        outcome,
        effects: vec![Effect::Payload(payload.to_vec())],
    };
    let retry = Outcome::Retry {
        delay: Duration::ZERO,
    };
    if !store.capabilities().rewrite {
        let err = store
            .settle(vec![with(retry, &first.lease, b"new")], None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        let again = store.reserve(&request(&[&q], LONG, 1)).await.unwrap();
        assert!(again.is_empty(), "the refused settle changed nothing");
        return skip(
            "settle_replaces_the_payload_of_a_job_put_back",
            &store,
            "its settles take no new payload",
        );
    }
    let err = store
        .settle(vec![with(Outcome::Ack, &first.lease, b"new")], None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Contract { .. }), "{err:?}");

    let reply = store
        .settle(vec![with(retry.clone(), &first.lease, b"new")], None)
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied]);
    let second = reserve_all(&store, &q, 1).await.remove(0);
    assert_eq!(second.lease.job_id, first.lease.job_id);
    assert_eq!(
        (second.payload.as_slice(), second.attempts),
        (&b"new"[..], 2)
    );

    // The first lease is stale now: its settle writes nothing.
    let reply = store
        .settle(vec![with(retry, &first.lease, b"stale")], None)
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Stale]);
    let release = Outcome::Release {
        delay: Duration::ZERO,
    };
    let reply = store
        .settle(vec![with(release, &second.lease, b"newer")], None)
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied]);
    let third = reserve_all(&store, &q, 1).await.remove(0);
    assert_eq!(
        (third.payload.as_slice(), third.attempts),
        (&b"newer"[..], 2),
        "a release does not count the attempt"
    );
    store.acknowledge(&[third.lease]).await.unwrap();
    assert_eq!(total(&store, &q).await, 0);
}

/// The throughput history (`queue_core::stats`) on this store's group counters: minutes and
/// hours add up, a slot an hour (a day) old is taken over and cleared in one step, and 4
/// writers at once lose no count. In rings of this case's own, so live workers' counts never
/// mix in.
pub async fn stats_history_adds_up_and_rolls_over(store: Store) {
    use queue_core::stats::{history_in, record_in, Tally};
    use std::time::SystemTime;

    if store.capabilities().groups.is_none() {
        let err = queue_core::stats::history(store.as_ref(), SystemTime::now())
            .await
            .unwrap_err();
        assert!(
            matches!(err, queue_core::Error::NotSupported { .. }),
            "{err:?}"
        );
        return skip(
            "stats_history_adds_up_and_rolls_over",
            &store,
            "no group counters",
        );
    }
    let scope = unique("stats");
    let at =
        |minute: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 20_000 + minute * 60);
    let tally = |processed: u64| {
        let mut waits = queue_core::stats::Waits::default();
        // All but one waited 10 ms; one waited a minute.
        waits.0[0] = processed - 1;
        waits.add(Duration::from_secs(60));
        Tally {
            processed,
            failed: processed / 2,
            starts: processed,
            wait_ms: processed * 10,
            waits,
        }
    };
    record_in(store.as_ref(), &scope, at(0), tally(3))
        .await
        .unwrap();
    record_in(store.as_ref(), &scope, at(0), tally(2))
        .await
        .unwrap();
    record_in(store.as_ref(), &scope, at(1), tally(4))
        .await
        .unwrap();
    let h = history_in(store.as_ref(), &scope, at(1)).await.unwrap();
    assert_eq!((h.minutes[58].processed, h.minutes[58].failed), (5, 2));
    assert_eq!(h.minutes[58].mean_wait(), Some(Duration::from_millis(10)));
    assert_eq!(
        h.minutes[58].waits.0[queue_core::stats::Waits::bucket(60_000)],
        2,
        "the buckets add up: one slow start in each of the two writes"
    );
    assert_eq!(h.minutes[58].waits.total(), 5);
    assert!(h.minutes[58].wait_quantile(0.5) <= Some(Duration::from_millis(10)));
    assert!(h.minutes[58].wait_quantile(0.95) > Some(Duration::from_secs(30)));
    assert_eq!((h.minutes[59].processed, h.hours[23].processed), (4, 9));
    record_in(store.as_ref(), &scope, at(60), tally(7))
        .await
        .unwrap();
    let h = history_in(store.as_ref(), &scope, at(60)).await.unwrap();
    assert_eq!(h.minutes[59].processed, 7, "minute 0's slot was cleared");
    assert_eq!(
        h.minutes[59].waits.total(),
        7,
        "and its buckets with it (7 starts, not 12)"
    );
    assert_eq!((h.hours[22].processed, h.hours[23].processed), (9, 7));
    record_in(store.as_ref(), &scope, at(24 * 60), tally(1))
        .await
        .unwrap();
    let h = history_in(store.as_ref(), &scope, at(24 * 60))
        .await
        .unwrap();
    assert_eq!(h.hours[23].processed, 1, "hour 0's slot was cleared");
    let writers = (0..4).map(|_| {
        let (store, scope) = (store.clone(), scope.clone());
        tokio::spawn(async move {
            for _ in 0..5 {
                record_in(store.as_ref(), &scope, at(24 * 60 + 2), tally(1))
                    .await
                    .unwrap();
            }
        })
    });
    for writer in writers {
        writer.await.unwrap();
    }
    let h = history_in(store.as_ref(), &scope, at(24 * 60 + 2))
        .await
        .unwrap();
    assert_eq!(
        h.minutes[59].processed, 20,
        "4 writers at once lose nothing"
    );
    assert_eq!(h.hours[23].processed, 21);
    assert_eq!(h.hours[23].waits.total(), 21);
}

/// `Effect::Park`: jobs put back while their lock is held wait for it; an unlock makes the
/// one parked longest ago due at once (one per unlock, its attempt given back by the
/// release), a release by force does too, a park whose lock is free already is due at once
/// (no wake-up lost), one whose lock's holder dies is due when the lock expires, and a
/// later settle without it ends the parking. A park with an
/// outcome that does not keep the job is refused; a store without the capability refuses
/// the effect and changes nothing.
pub async fn parked_jobs_wait_for_their_lock(store: Store) {
    let q = unique("q");
    let key = unique("gate");
    let park = |lease: &Lease, delay: Duration| Settle {
        lease: lease.clone(),
        outcome: Outcome::Release { delay },
        effects: vec![Effect::Park { key: key.clone() }],
    };
    store
        .push(vec![job(&q, "one", b"1"), job(&q, "two", b"2")])
        .await
        .unwrap();
    let got = reserve_all(&store, &q, 2).await;
    if !store.capabilities().park {
        let err = store
            .settle(vec![park(&got[0].lease, LONG)], None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        let size = store.inspect().unwrap().size(&q).await.unwrap();
        assert_eq!(size.reserved, 2, "the refused settle changed nothing");
        return skip(
            "parked_jobs_wait_for_their_lock",
            &store,
            "it parks no job on a lock",
        );
    }
    let err = store
        .settle(
            vec![Settle {
                outcome: Outcome::Ack,
                ..park(&got[0].lease, LONG)
            }],
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Contract { .. }), "{err:?}");

    assert!(store.lock(&key, "holder", LONG).await.unwrap());
    let reply = store
        .settle(
            vec![park(&got[0].lease, LONG), park(&got[1].lease, LONG)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied, Settled::Applied]);
    let none = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    assert!(none.is_empty(), "both parked for their delay: {none:?}");

    // The holder's unlock wakes the first one parked, and only it.
    assert!(store.unlock(&key, "holder").await.unwrap());
    let first = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].lease.job_id, got[0].lease.job_id);
    assert_eq!(first[0].attempts, 1, "the release gave its attempt back");
    assert!(!store.unlock(&key, "holder").await.unwrap());

    // A release by force wakes the next.
    assert!(store.lock(&key, "other", LONG).await.unwrap());
    if let Some(locks) = store.capabilities().locks {
        assert!(locks.release(&key).await.unwrap());
        let woken = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
        assert_eq!(woken.len(), 1, "{woken:?}");
        assert_eq!(woken[0].lease.job_id, got[1].lease.job_id);
        // Parked on a free lock: due at once.
        let reply = store
            .settle(vec![park(&woken[0].lease, LONG)], None)
            .await
            .unwrap();
        assert_eq!(reply.settled, vec![Settled::Applied]);
        let again = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
        assert_eq!(again.len(), 1, "no wake-up lost: {again:?}");
        store.acknowledge(&[again[0].lease.clone()]).await.unwrap();
    } else {
        assert!(store.unlock(&key, "other").await.unwrap());
        let woken = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
        assert_eq!(woken.len(), 1, "{woken:?}");
        store.acknowledge(&[woken[0].lease.clone()]).await.unwrap();
    }

    // A job parked for a short delay comes back by itself; retried without a park, it is
    // no longer woken by the lock.
    assert!(store.lock(&key, "holder", LONG).await.unwrap());
    let reply = store
        .settle(vec![park(&first[0].lease, SHORT)], None)
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied]);
    tokio::time::sleep(PAST_SHORT).await;
    let back = reserve_all(&store, &q, 1).await.remove(0);
    assert_eq!(back.lease.job_id, got[0].lease.job_id);
    store.retry(&back.lease, LONG).await.unwrap();
    assert!(store.unlock(&key, "holder").await.unwrap());
    let none = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    assert!(
        none.is_empty(),
        "a retry is not woken by the lock: {none:?}"
    );
    assert_eq!(total(&store, &q).await, 1);

    // Parked on a lock whose holder then dies: due when the lock expires, not after its
    // own (long) delay.
    store.push(vec![job(&q, "three", b"3")]).await.unwrap();
    let third = reserve_all(&store, &q, 1).await.remove(0);
    assert!(store.lock(&key, "dies", SHORT).await.unwrap());
    let reply = store
        .settle(vec![park(&third.lease, LONG)], None)
        .await
        .unwrap();
    assert_eq!(reply.settled, vec![Settled::Applied]);
    tokio::time::sleep(PAST_SHORT).await;
    let back = store.reserve(&request(&[&q], LONG, 10)).await.unwrap();
    assert_eq!(back.len(), 1, "due by the lock's expiry: {back:?}");
    assert_eq!(back[0].lease.job_id, third.lease.job_id);
}
