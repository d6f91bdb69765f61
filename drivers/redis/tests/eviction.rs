//! The connect-time check of `maxmemory-policy`, against the real server. One test in a
//! binary of its own: it changes the server's policy for a moment (and puts it back).

mod common;

use queue_core::{Error, Storage};
use queue_redis::RedisStorage;
use queue_tests::{job, request, unique};

/// Puts the server's policy back and deletes the test's ACL user, even after a panic.
struct Restore {
    url: String,
    policy: String,
    user: Option<String>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let _: redis::RedisResult<()> = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(&self.policy)
            .query(&mut conn);
        if let Some(user) = &self.user {
            let _: redis::RedisResult<i64> =
                redis::cmd("ACL").arg("DELUSER").arg(user).query(&mut conn);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_policy_is_checked_at_connect() {
    let Some(mut admin) = common::admin().await else {
        return;
    };
    let url = common::url();
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut admin)
        .await
        .unwrap();
    let original = policy[1].clone();
    let mut restore = Restore {
        url: url.clone(),
        policy: original.clone(),
        user: None,
    };

    // A server that may evict keys is refused, with the fix in the message.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut admin)
        .await
        .unwrap();
    let err = RedisStorage::connect(common::options()).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{message}");
    assert!(
        message.contains("allkeys-lru")
            && message.contains("CONFIG SET maxmemory-policy noeviction"),
        "{message}"
    );
    assert!(message.contains("allow_eviction"), "{message}");
    // ... unless the application says so.
    let store = RedisStorage::connect(common::options().allow_eviction(true))
        .await
        .unwrap();
    let q = unique("q");
    store.push(vec![job(&q, "e", b"x")]).await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg(&restore.policy)
        .query_async(&mut admin)
        .await
        .unwrap();

    // Managed Redis often refuses CONFIG: the driver warns and carries on. A user without
    // the CONFIG command stands in for it.
    if restore.policy == "noeviction" && url.starts_with("redis://") && !url.contains('@') {
        let user = unique("qtest_user");
        restore.user = Some(user.clone());
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&user)
            .arg("on")
            .arg(">secret")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .arg("-config")
            .query_async(&mut admin)
            .await
            .unwrap();
        let limited = url.replacen("redis://", &format!("redis://{user}:secret@"), 1);
        let store =
            RedisStorage::connect(queue_redis::RedisOptions::new(limited).prefix(common::prefix()))
                .await
                .unwrap();
        assert!(
            !store.capabilities().durable,
            "unknown persistence is not durable"
        );
        store.push(vec![job(&q, "e", b"y")]).await.unwrap();
        assert_eq!(
            store
                .reserve(&request(&[&q], std::time::Duration::from_secs(5), 1))
                .await
                .unwrap()
                .len(),
            1
        );
    } else {
        println!("skipped the CONFIG-disabled case: the test server's URL has credentials or its policy is not noeviction");
    }
    drop(restore);
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(policy[1], original, "the server's policy is back");
}
