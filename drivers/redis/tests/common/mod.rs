//! What the driver's own tests share: the server URL (and the cluster's), fresh prefixes,
//! admin connections, and a sweep of keys that earlier runs left behind.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use queue_redis::{RedisOptions, RedisStorage};

/// Test prefixes start with this and the creation time in seconds, so a later run can
/// delete what an earlier one left without touching a run in progress.
const TAG: &str = "qtest";

/// Keys of runs older than this are swept.
const STALE: Duration = Duration::from_secs(600);

/// The local test cluster that `scripts/services.sh` starts.
pub(crate) const DEFAULT_CLUSTER_URL: &str =
    "redis+cluster://127.0.0.1:7000?nodes=127.0.0.1:7001,127.0.0.1:7002";

pub(crate) fn url() -> String {
    RedisOptions::from_env().get_url().to_owned()
}

/// `$REDIS_CLUSTER_URL`, or the local test cluster.
pub(crate) fn cluster_url() -> String {
    std::env::var("REDIS_CLUSTER_URL").unwrap_or_else(|_| DEFAULT_CLUSTER_URL.to_owned())
}

/// The seed nodes of the cluster URL as plain `redis://host:port` URLs (credentials and
/// all), for admin connections that reach one node each.
pub(crate) fn cluster_seeds() -> Vec<String> {
    let url = cluster_url();
    let rest = url.split_once("://").map(|(_, rest)| rest).unwrap_or(&url);
    let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
    let base = base.trim_end_matches('/').trim_end_matches("/0");
    let (userinfo, first) = match base.rsplit_once('@') {
        Some((userinfo, host)) => (format!("{userinfo}@"), host),
        None => (String::new(), base),
    };
    let mut seeds = vec![format!("redis://{userinfo}{first}")];
    for pair in query.split('&') {
        if let Some(nodes) = pair.strip_prefix("nodes=") {
            seeds.extend(
                nodes
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(|n| format!("redis://{userinfo}{n}")),
            );
        }
    }
    seeds
}

/// An admin connection to the test cluster, or `None` (after the skip notice) if it is
/// unreachable or not ok.
pub(crate) async fn cluster_admin() -> Option<redis::cluster_async::ClusterConnection> {
    let url = cluster_url();
    let connected = async {
        let client = redis::cluster::ClusterClient::new(cluster_seeds())?;
        let mut conn = client.get_async_connection().await?;
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut conn)
            .await?;
        if !info.contains("cluster_state:ok") {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                "the cluster is not ok",
                info,
            )));
        }
        Ok::<_, redis::RedisError>(conn)
    };
    match tokio::time::timeout(Duration::from_secs(10), connected).await {
        Ok(Ok(conn)) => {
            sweep_cluster().await;
            Some(conn)
        }
        Ok(Err(e)) => queue_tests::server_missing(&url, e),
        Err(_) => queue_tests::server_missing(&url, "no answer within 10 s"),
    }
}

/// Options for a fresh, isolated store on the test cluster.
pub(crate) fn cluster_options() -> RedisOptions {
    RedisOptions::new(cluster_url()).prefix(prefix())
}

/// A fresh store on the test cluster, or `None` if it is down.
pub(crate) async fn cluster_store() -> Option<RedisStorage> {
    cluster_admin().await?;
    Some(
        RedisStorage::connect(cluster_options())
            .await
            .expect("the redis driver connects to the cluster"),
    )
}

/// The masters of the test cluster as `(host:port, first slot, last slot)` ranges.
pub(crate) async fn cluster_slots(
    admin: &mut redis::cluster_async::ClusterConnection,
) -> Vec<(String, u16, u16)> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(admin)
        .await
        .expect("CLUSTER SLOTS");
    slots
        .into_iter()
        .map(|range| {
            let redis::Value::Array(range) = range else {
                panic!("CLUSTER SLOTS entry {range:?}")
            };
            let start: u16 = redis::FromRedisValue::from_redis_value_ref(&range[0]).unwrap();
            let end: u16 = redis::FromRedisValue::from_redis_value_ref(&range[1]).unwrap();
            let (host, port): (String, u16) = match &range[2] {
                redis::Value::Array(master) => (
                    redis::FromRedisValue::from_redis_value_ref(&master[0]).unwrap(),
                    redis::FromRedisValue::from_redis_value_ref(&master[1]).unwrap(),
                ),
                other => panic!("CLUSTER SLOTS master {other:?}"),
            };
            (format!("{host}:{port}"), start, end)
        })
        .collect()
}

/// The slot of `key` (`CLUSTER KEYSLOT`) and the master that owns it.
pub(crate) async fn node_of(
    admin: &mut redis::cluster_async::ClusterConnection,
    key: &str,
) -> (u16, String) {
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(admin)
        .await
        .expect("CLUSTER KEYSLOT");
    let node = cluster_slots(admin)
        .await
        .into_iter()
        .find(|(_, start, end)| (*start..=*end).contains(&slot))
        .map(|(node, _, _)| node)
        .expect("every slot is served");
    (slot, node)
}

/// A fresh prefix: `qtest<unix seconds>_<random>`.
pub(crate) fn prefix() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    queue_tests::unique(&format!("{TAG}{secs}"))
}

/// An admin connection to the test server, or `None` (after the skip notice) if it is down.
pub(crate) async fn admin() -> Option<redis::aio::MultiplexedConnection> {
    let url = url();
    let connected = async {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    match connected.await {
        Ok(mut conn) => {
            sweep(&mut conn).await;
            Some(conn)
        }
        Err(e) => queue_tests::server_missing(&url, e),
    }
}

/// Options for a fresh, isolated store.
pub(crate) fn options() -> RedisOptions {
    RedisOptions::from_env().prefix(prefix())
}

/// A fresh store, or `None` if the server is down.
pub(crate) async fn store() -> Option<RedisStorage> {
    admin().await?;
    Some(
        RedisStorage::connect(options())
            .await
            .expect("the redis driver connects"),
    )
}

/// Sweeps every node of the test cluster (each key on the node that holds it), once per
/// process.
async fn sweep_cluster() {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    for seed in cluster_seeds() {
        let Ok(client) = redis::Client::open(seed.as_str()) else {
            continue;
        };
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            sweep_node(&mut conn, true).await;
        }
    }
}

/// Deletes the keys of test runs older than [`STALE`], once per process.
async fn sweep(conn: &mut redis::aio::MultiplexedConnection) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    sweep_node(conn, false).await;
}

/// Deletes the stale test keys of one server or cluster node (on a node, one key per
/// `UNLINK`: the keys of one call must share a slot).
async fn sweep_node(conn: &mut redis::aio::MultiplexedConnection, one_by_one: bool) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{TAG}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
        else {
            return;
        };
        let stale: Vec<&String> = keys
            .iter()
            .filter(|k| created(k).is_some_and(|t| now.saturating_sub(t) > STALE.as_secs()))
            .collect();
        if one_by_one {
            for key in &stale {
                let _: redis::RedisResult<i64> =
                    redis::cmd("UNLINK").arg(key).query_async(conn).await;
            }
        } else if !stale.is_empty() {
            let _: redis::RedisResult<i64> =
                redis::cmd("UNLINK").arg(&stale).query_async(conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// The creation time a test key's prefix records.
fn created(key: &str) -> Option<u64> {
    let rest = &key[key.find(TAG)? + TAG.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if rest[digits.len()..].starts_with('_') {
        digits.parse().ok()
    } else {
        None
    }
}

/// Whether `err` is the driver's backend error (an unreachable server or node).
pub(crate) fn is_backend_error(err: &queue_core::Error) -> bool {
    matches!(
        err,
        queue_core::Error::Backend {
            driver: "redis",
            ..
        }
    )
}

/// Where a test runs: the single server or the cluster. A case written once over a
/// `Backend` runs on both (see [`on_both`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `REDIS_URL`, the single server.
    Single,
    /// `REDIS_CLUSTER_URL`, the local test cluster.
    Cluster,
}

impl Backend {
    pub(crate) fn url(self) -> String {
        match self {
            Backend::Single => url(),
            Backend::Cluster => cluster_url(),
        }
    }

    /// Options for a fresh, isolated store.
    pub(crate) fn options(self) -> RedisOptions {
        match self {
            Backend::Single => options(),
            Backend::Cluster => cluster_options(),
        }
    }

    /// An admin connection (after the sweep), or `None` if the backend is down (outside CI).
    pub(crate) async fn admin(self) -> Option<Admin> {
        match self {
            Backend::Single => admin().await.map(Admin::Single),
            Backend::Cluster => cluster_admin().await.map(Admin::Cluster),
        }
    }

    /// A fresh store, or `None` if the backend is down (outside CI).
    pub(crate) async fn store(self) -> Option<RedisStorage> {
        self.admin().await?;
        Some(
            RedisStorage::connect(self.options())
                .await
                .expect("the redis driver connects"),
        )
    }
}

/// An admin connection to the single server or the cluster (each command goes to the node
/// of its key).
#[derive(Clone)]
pub(crate) enum Admin {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Admin {
    /// Runs `cmd`, panicking on an error.
    pub(crate) async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> T {
        let result = match self {
            Admin::Single(conn) => cmd.query_async(conn).await,
            Admin::Cluster(conn) => cmd.query_async(conn).await,
        };
        result.unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
    }

    /// Runs `cmd` on the server, or on every node of the cluster the URL names.
    pub(crate) async fn on_every_node(&mut self, cmd: &redis::Cmd) {
        match self {
            Admin::Single(conn) => cmd.exec_async(conn).await.unwrap(),
            Admin::Cluster(_) => {
                for seed in cluster_seeds() {
                    let mut node = redis::Client::open(seed.as_str())
                        .unwrap()
                        .get_multiplexed_async_connection()
                        .await
                        .unwrap();
                    cmd.exec_async(&mut node).await.unwrap();
                }
            }
        }
    }
}

/// Stamps one test per backend for each case, `async fn case(backend: Backend)` in the
/// file: `single::case` and `cluster::case`.
#[allow(unused_macros)] // used by the test files that run cases on both backends
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod single {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::common::Backend::Single).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::common::Backend::Cluster).await;
                }
            )*
        }
    };
}
#[allow(unused_imports)] // used by the test files that run cases on both backends
pub(crate) use on_both;
