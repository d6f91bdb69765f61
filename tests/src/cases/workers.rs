//! The worker registry ([`Workers`](queue_core::storage::Workers)): entries written with a
//! time to live, listed sorted by id until they expire or are removed.

use std::time::Duration;

use queue_core::StorageExt;

use crate::{unique, Store};

/// Two entries are listed sorted with their bytes intact; a beat replaces an entry; an entry
/// is gone once its time to live has passed; leaving removes an entry once.
pub async fn worker_registry_entries_expire_and_leave(store: Store) {
    let Some(workers) = store.capabilities().workers else {
        println!(
            "worker_registry_entries_expire_and_leave: not applicable to the {} driver (no \
             worker registry; declared in its capabilities)",
            store.driver()
        );
        return;
    };
    // Each case has a store of its own, but entries of other processes' workers may share it
    // (a shared server): look only at this case's ids.
    let prefix = unique("w");
    let (a, b, short) = (
        format!("{prefix}:a"),
        format!("{prefix}:b"),
        format!("{prefix}:c"),
    );
    let mine = |listed: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        listed
            .into_iter()
            .filter(|(id, _)| id.starts_with(&prefix))
            .collect()
    };
    let long = Duration::from_secs(60);
    let binary = [0u8, 255, b'{', 0x80, b'\n', b' '];
    workers.beat(&b, &binary, long).await.unwrap();
    workers
        .beat(&a, "{\"é\":1}".as_bytes(), long)
        .await
        .unwrap();
    assert_eq!(
        mine(workers.workers().await.unwrap()),
        [
            (a.clone(), "{\"é\":1}".as_bytes().to_vec()),
            (b.clone(), binary.to_vec())
        ],
        "both entries, sorted by id, their bytes intact"
    );

    workers.beat(&a, b"second", long).await.unwrap();
    assert_eq!(
        mine(workers.workers().await.unwrap()),
        [
            (a.clone(), b"second".to_vec()),
            (b.clone(), binary.to_vec())
        ],
        "a beat replaces the entry"
    );

    workers
        .beat(&short, b"short", Duration::from_secs(1))
        .await
        .unwrap();
    let listed = mine(workers.workers().await.unwrap());
    assert_eq!(
        listed.len(),
        3,
        "the short entry is listed before it expires"
    );
    assert_eq!(listed[2], (short.clone(), b"short".to_vec()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ids: Vec<String> = mine(workers.workers().await.unwrap())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [a.clone(), b.clone()], "the expired entry is gone");
    assert!(
        !workers.leave(&short).await.unwrap(),
        "an expired entry is not there to leave"
    );

    assert!(workers.leave(&a).await.unwrap(), "leave removes an entry");
    assert!(!workers.leave(&a).await.unwrap(), "and only once");
    let ids: Vec<String> = mine(workers.workers().await.unwrap())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, std::slice::from_ref(&b));
    assert!(workers.leave(&b).await.unwrap());
    assert!(mine(workers.workers().await.unwrap()).is_empty());
}
