//! A master of the local test cluster stops and comes back under a running store: queues on
//! the other masters carry on and their idle workers are still woken (the pub/sub
//! subscriber, which listened on the stopped node, moves to another), operations on the
//! stopped node's slots fail with backend errors, and work again once it is back. Against a
//! private cluster (`scripts/private-servers.sh redis-cluster`, 127.0.0.1:7100-7102), never
//! the one other tests use: it stops and restarts 127.0.0.1:7100.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_core::storage::Wake;
use queue_core::{Storage, StorageExt};
use queue_tests::{job, request, unique};

const LONG: Duration = Duration::from_secs(60);
const NODE: &str = "127.0.0.1:7100";
const NODE_URL: &str = "redis://127.0.0.1:7100";
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/private-servers.sh"
);

/// Starts the private cluster if it is not up and ok, and returns its URL.
fn private_cluster() -> Result<String, String> {
    let out = Command::new("bash")
        .args([SCRIPT, "redis-cluster"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// How the stopped node is started again: as `scripts/services.sh` starts it, from the
/// directory and nodes file it ran with (so it rejoins the cluster with its slots).
struct Restart {
    dir: String,
    nodes_file: String,
}

impl Restart {
    fn start(&self) {
        let _ = Command::new("redis-server")
            .args(["--port", "7100", "--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &self.nodes_file])
            .args(["--daemonize", "yes", "--save", "", "--appendonly", "no"])
            .args(["--bind", "127.0.0.1", "--dir", &self.dir])
            .status();
    }

    /// Whether the node answers and the cluster is ok again, within `patience`.
    fn wait_ok(&self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            let ok = redis::Client::open(NODE_URL)
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                .is_ok_and(|info| info.contains("cluster_state:ok"));
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

/// Starts the node again if the test stopped it and did not get to restart it (a panic).
impl Drop for Restart {
    fn drop(&mut self) {
        let answers = redis::Client::open(NODE_URL)
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok();
        if !answers {
            self.start();
            self.wait_ok(Duration::from_secs(30));
        }
    }
}

async fn config_get(conn: &mut redis::aio::MultiplexedConnection, name: &str) -> String {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(conn)
        .await
        .unwrap();
    reply[1].clone()
}

/// Waits on `queues` (empty), pushes to `push_to`, and returns how long after the push the
/// wait ended (it must not end before); then takes the job, leaving the queues empty.
async fn woken_by_push(
    store: &Arc<queue_redis::RedisStorage>,
    queues: &[String],
    push_to: &str,
) -> Duration {
    let waiter = {
        let (store, queues) = (store.clone(), queues.to_vec());
        tokio::spawn(async move {
            let waited = store.wait(&queues, Duration::from_secs(20)).await;
            (waited, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    if waiter.is_finished() {
        let (waited, _) = waiter.await.unwrap();
        panic!("woken with nothing to wake for: {waited:?}");
    }
    let pushed = Instant::now();
    store.push(vec![job(push_to, "w", b"x")]).await.unwrap();
    let (waited, woke) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap();
    waited.unwrap();
    let got = store.reserve(&request(&[push_to], LONG, 10)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        store.acknowledge(&[got[0].lease.clone()]).await.unwrap(),
        [true]
    );
    woke.saturating_duration_since(pushed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_stops_and_comes_back() {
    let url = match private_cluster() {
        Ok(url) => url,
        Err(e) => {
            queue_tests::server_missing::<()>("the private Redis Cluster", e);
            return;
        }
    };
    // The one test of this binary: the common helpers read the cluster's URL from here.
    std::env::set_var("REDIS_CLUSTER_URL", &url);
    let Some(mut admin) = common::cluster_admin().await else {
        return;
    };
    // A push also writes the queue registry (`{P}:queues`, a slot of its own): keep it off
    // the node that stops, or every push would fail while it is down.
    let options = loop {
        let options = common::cluster_options();
        let registry = format!("{{{}}}:queues", options.get_prefix());
        if common::node_of(&mut admin, &registry).await.1 != NODE {
            break options;
        }
    };
    let store = Arc::new(queue_redis::RedisStorage::connect(options).await.unwrap());
    let prefix = store.options().get_prefix().to_owned();
    let (mut elsewhere, mut here) = (None, None);
    while elsewhere.is_none() || here.is_none() {
        let q = unique("q");
        let (_, node) = common::node_of(&mut admin, &format!("{{{prefix}:{q}}}:pending")).await;
        if node == NODE {
            here.get_or_insert(q);
        } else {
            elsewhere.get_or_insert(q);
        }
    }
    let (elsewhere, here) = (elsewhere.unwrap(), here.unwrap());

    // Before: the subscriber listens on the URL's first node, 127.0.0.1:7100.
    let latency = woken_by_push(&store, std::slice::from_ref(&elsewhere), &elsewhere).await;
    assert!(
        latency < Duration::from_millis(500),
        "woken after {latency:?}"
    );

    let mut node = redis::Client::open(NODE_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let restart = Restart {
        dir: config_get(&mut node, "dir").await,
        nodes_file: config_get(&mut node, "cluster-config-file").await,
    };
    let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async(&mut node)
        .await;
    let stopped = Instant::now();

    // The subscriber moves to another node of the URL: it is subscribed there (`PUBSUB
    // NUMSUB` counts a node's own subscribers) soon after.
    let channel = format!("{{{prefix}:{elsewhere}}}:notify");
    let mut others = Vec::new();
    for port in [7101, 7102] {
        others.push(
            redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        );
    }
    'moved: loop {
        for conn in &mut others {
            let numsub: (String, u64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(conn)
                .await
                .unwrap();
            if numsub.1 > 0 {
                break 'moved;
            }
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "the subscriber did not move"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "the subscriber moved to another node {:?} after the stop",
        stopped.elapsed()
    );
    // (It wakes every waiter once after moving: messages may have been lost meanwhile.)
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The other masters carry on (the cluster marks the node failed only after its node
    // timeout, 15 s by default), and their queues' idle workers are still woken.
    let latency = woken_by_push(&store, std::slice::from_ref(&elsewhere), &elsewhere).await;
    println!("with {NODE} down: woken {latency:?} after a push");
    assert!(
        latency < Duration::from_millis(500),
        "woken after {latency:?}"
    );

    // The stopped node's slots: a backend error, not a hang.
    let asked = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        store.push(vec![job(&here, "h", b"y")]),
    )
    .await
    .expect("an answer")
    .unwrap_err();
    assert!(common::is_backend_error(&err), "{err}");
    println!(
        "a push to the stopped node's slot failed after {:?}: {err}",
        asked.elapsed()
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(14),
        "the steps above must finish within the node timeout ({:?})",
        stopped.elapsed()
    );

    // Back: the same store works on the node's slots again.
    restart.start();
    assert!(
        restart.wait_ok(Duration::from_secs(30)),
        "the cluster is ok again"
    );
    let mut failures = 0;
    loop {
        match store.push(vec![job(&here, "h", b"z")]).await {
            Ok(_) => break,
            Err(e) => {
                assert!(common::is_backend_error(&e), "{e}");
                failures += 1;
                assert!(failures < 40, "still failing: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    println!("after the restart, {failures} pushes failed before one went through");
    let back = store.reserve(&request(&[&here], LONG, 10)).await.unwrap();
    assert_eq!(
        back.len(),
        1,
        "the node restarted empty (no persistence): one job, pushed after"
    );
    assert_eq!(back[0].payload, b"z");
    assert_eq!(
        store.acknowledge(&[back[0].lease.clone()]).await.unwrap(),
        [true]
    );
    let latency = woken_by_push(&store, &[here.clone(), elsewhere.clone()], &here).await;
    println!("after the restart: woken {latency:?} after a push");
    assert!(
        latency < Duration::from_millis(500),
        "woken after {latency:?}"
    );
    drop(restart);
}
