//! The connect-time checks on Redis Cluster look at every master: `maxmemory-policy` (a
//! single node that may evict keys is refused) and durability (AOF with `appendfsync
//! always` on every master). One test in a binary of its own: it changes the nodes'
//! settings for a moment (and puts them back, even after a panic).

mod common;

use queue_core::{Error, Storage};
use queue_redis::RedisStorage;
use queue_tests::{job, unique};

const SETTINGS: [&str; 3] = ["maxmemory-policy", "appendonly", "appendfsync"];

/// Puts every node's settings back, even after a panic.
struct Restore {
    /// Per node URL, the settings as they were.
    nodes: Vec<(String, Vec<(String, String)>)>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        for (url, settings) in &self.nodes {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                continue;
            };
            let Ok(mut conn) = client.get_connection() else {
                continue;
            };
            for (name, value) in settings {
                let _: redis::RedisResult<()> = redis::cmd("CONFIG")
                    .arg("SET")
                    .arg(name)
                    .arg(value)
                    .query(&mut conn);
            }
        }
    }
}

async fn config_set(url: &str, name: &str, value: &str) {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async(&mut conn)
        .await
        .unwrap();
}

async fn config_get(url: &str, name: &str) -> String {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(&mut conn)
        .await
        .unwrap();
    reply[1].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_and_durability_are_checked_on_every_master() {
    if common::cluster_admin().await.is_none() {
        return;
    }
    let seeds = common::cluster_seeds();
    if seeds.len() < 2 {
        println!("skipped: the cluster URL names one node; this test needs each master's URL");
        return;
    }
    let mut nodes = Vec::new();
    for url in &seeds {
        let mut settings = Vec::new();
        for name in SETTINGS {
            settings.push((name.to_owned(), config_get(url, name).await));
        }
        nodes.push((url.clone(), settings));
    }
    let restore = Restore { nodes };
    for (url, settings) in &restore.nodes {
        assert_eq!(
            settings[0].1, "noeviction",
            "the test cluster's node {url} starts with noeviction"
        );
    }
    let last = seeds.last().unwrap();
    let last_node = last.rsplit(['/', '@']).next().unwrap();

    // One master (not the first the URL names) that may evict keys is refused, by name.
    config_set(last, "maxmemory-policy", "allkeys-lru").await;
    let err = RedisStorage::connect(common::cluster_options())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{message}");
    assert!(
        message.contains("allkeys-lru")
            && message.contains(last_node)
            && message.contains("CONFIG SET maxmemory-policy noeviction"),
        "{message}"
    );
    let store = RedisStorage::connect(common::cluster_options().allow_eviction(true))
        .await
        .unwrap();
    store
        .push(vec![job(&unique("q"), "e", b"x")])
        .await
        .unwrap();
    config_set(last, "maxmemory-policy", "noeviction").await;

    // Durable only when every master syncs its AOF on every write.
    let store = RedisStorage::connect(common::cluster_options())
        .await
        .unwrap();
    assert!(!store.capabilities().durable, "no AOF: not durable");
    for url in &seeds {
        config_set(url, "appendonly", "yes").await;
        config_set(url, "appendfsync", "always").await;
    }
    let store = RedisStorage::connect(common::cluster_options())
        .await
        .unwrap();
    assert!(store.capabilities().durable, "AOF always on every master");
    config_set(last, "appendfsync", "everysec").await;
    let store = RedisStorage::connect(common::cluster_options())
        .await
        .unwrap();
    assert!(
        !store.capabilities().durable,
        "one master syncing every second is not durable"
    );

    let original = restore.nodes.clone();
    drop(restore);
    for (url, settings) in &original {
        for (name, value) in settings {
            assert_eq!(&config_get(url, name).await, value, "{url} {name} is back");
        }
    }
}
