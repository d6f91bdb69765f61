//! Waking idle workers: one pub/sub connection per store, subscribed to the `notify`
//! channel of every queue a worker waited on, fanning messages out to waiting tasks.
//!
//! Why pub/sub and not a blocking pop on a list: Redis checks the timeouts of blocked
//! clients only `hz` times a second (10 by default), so a `BLPOP` meant to end when a delayed
//! job is due in 30 ms ends after 100 ms; and a token in a list wakes one worker where a push
//! of a thousand jobs should wake them all. Here the due time is kept by a tokio timer and a
//! message wakes every waiter of the queue.
//!
//! The connection is opened on the first [`wait`](queue_core::Storage::wait), which waits
//! for the first attempt to connect (up to [`FIRST_CONNECT`]), so a store that only
//! dispatches never holds one. If it drops, a background task reopens it and subscribes
//! again, then wakes every waiter (messages published meanwhile are lost; a spurious
//! wake-up costs one reservation). Waiters never depend on a message alone: after
//! subscribing and before sleeping they read the earliest due time of their queues from
//! Redis (see `RedisStorage::wait`), so a push that happened before they subscribed is seen
//! then. Without pub/sub (the connection is down, or an ACL forbids the channels) workers
//! wait for their polling interval instead.
//!
//! On Redis Cluster the scripts still `PUBLISH` (not the sharded `SPUBLISH`): a cluster
//! forwards every `PUBLISH` to every node over its bus, so one subscription on any node hears
//! every queue, whichever node owns the queue's slot. The subscriber connects to the nodes
//! of the URL in turn, then to those the cluster reports (`CLUSTER NODES`), so it survives
//! the loss of the node it listened on. (Sharded pub/sub would save the bus that traffic,
//! but needs a subscription per node, RESP3 push messages through the cluster client, and
//! a way to learn that a resubscription lost messages; not worth it for one small message
//! per push.)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{PubSub, PubSubSink};
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, ConnectionInfo};
use tokio::sync::{watch, Notify};

/// How long the first wait waits for the subscriber's first attempt to connect.
const FIRST_CONNECT: Duration = Duration::from_secs(2);

/// The longest pause between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The waker of one store.
pub(crate) struct Waker {
    shared: Arc<Shared>,
    started: OnceLock<()>,
    /// Dropped with the store, which ends the background task.
    closed: watch::Sender<()>,
}

/// Where the subscriber connects.
pub(crate) enum Source {
    /// The one server.
    Single(redis::Client),
    /// Any node of a cluster: the URL's nodes first, then those the cluster reports.
    Cluster {
        /// The nodes the URL lists, with its credentials.
        seeds: Vec<ConnectionInfo>,
        /// The store's cluster connection, to ask for the current nodes.
        conn: ClusterConnection,
        /// How long one attempt to reach one node may take.
        connect_timeout: Duration,
    },
}

impl Source {
    /// A pub/sub connection to the server, or to the first node of the cluster that answers.
    async fn connect(&self) -> redis::RedisResult<PubSub> {
        match self {
            Source::Single(client) => client.get_async_pubsub().await,
            Source::Cluster {
                seeds,
                conn,
                connect_timeout,
            } => {
                // The URL's nodes first; only if none answers, those the cluster reports.
                let mut last = None;
                for node in seeds {
                    match subscribe_on(node, *connect_timeout).await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = Some(e),
                    }
                }
                let reported =
                    tokio::time::timeout(*connect_timeout, cluster_nodes(conn.clone(), seeds));
                for node in reported.await.unwrap_or_default() {
                    if seeds.iter().any(|s| s.addr() == node.addr()) {
                        continue;
                    }
                    match subscribe_on(&node, *connect_timeout).await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "no cluster node to subscribe on",
                    ))
                }))
            }
        }
    }
}

/// A pub/sub connection to one node, within `patience`.
async fn subscribe_on(node: &ConnectionInfo, patience: Duration) -> redis::RedisResult<PubSub> {
    let attempt = async { redis::Client::open(node.clone())?.get_async_pubsub().await };
    match tokio::time::timeout(patience, attempt).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from {} within {patience:?}", node.addr()),
        ))),
    }
}

/// The nodes the cluster reports (`CLUSTER NODES`) that are not failing, with the seeds'
/// credentials; empty if the cluster does not answer.
async fn cluster_nodes(
    mut conn: ClusterConnection,
    seeds: &[ConnectionInfo],
) -> Vec<ConnectionInfo> {
    let Some(template) = seeds.first() else {
        return Vec::new();
    };
    let listing: String = match redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
    {
        Ok(listing) => listing,
        Err(e) => {
            tracing::debug!(error = %e, "could not list the redis cluster's nodes");
            return Vec::new();
        }
    };
    parse_cluster_nodes(&listing)
        .into_iter()
        .map(|(host, port)| template.clone().set_addr(ConnectionAddr::Tcp(host, port)))
        .collect()
}

/// `host:port` of each healthy node in a `CLUSTER NODES` reply (lines of
/// `id host:port@bus[,hostname] flags ...`).
fn parse_cluster_nodes(listing: &str) -> Vec<(String, u16)> {
    listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _id = fields.next()?;
            let address = fields.next()?;
            let flags = fields.next()?;
            if flags
                .split(',')
                .any(|f| matches!(f, "fail" | "fail?" | "handshake" | "noaddr"))
            {
                return None;
            }
            let address = address.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port: u16 = port.parse().ok()?;
            (!host.is_empty() && port != 0).then(|| (host.to_owned(), port))
        })
        .collect()
}

struct Shared {
    source: Source,
    /// Channel name to the waiters of that channel.
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    subscription: tokio::sync::Mutex<Subscription>,
    /// Whether the subscriber finished its first attempt to connect (well or not).
    tried: watch::Sender<bool>,
}

#[derive(Default)]
struct Subscription {
    /// Every channel a waiter asked for (subscribed again after a reconnect).
    wanted: HashSet<String>,
    /// The live connection's command half, or `None` while (re)connecting.
    sink: Option<PubSubSink>,
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker")
            .field("started", &self.started.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Waker {
    pub(crate) fn new(source: Source) -> Self {
        Waker {
            shared: Arc::new(Shared {
                source,
                waiters: Mutex::default(),
                subscription: tokio::sync::Mutex::default(),
                tried: watch::channel(false).0,
            }),
            started: OnceLock::new(),
            closed: watch::channel(()).0,
        }
    }

    /// The waiters' handles of `channels`, created on first use.
    pub(crate) fn notifies(&self, channels: &[String]) -> Vec<Arc<Notify>> {
        let mut waiters = lock(&self.shared.waiters);
        channels
            .iter()
            .map(|c| waiters.entry(c.clone()).or_default().clone())
            .collect()
    }

    /// Makes sure the subscriber runs and is subscribed to `channels`, waiting at most
    /// `patience` for its first connection. Errors are logged, not returned: without
    /// messages, waits still end at their timeout.
    pub(crate) async fn subscribe(&self, channels: &[String], patience: Duration) {
        self.started.get_or_init(|| {
            let task = subscriber(Arc::downgrade(&self.shared), self.closed.subscribe());
            tokio::spawn(task);
        });
        let mut tried = self.shared.tried.subscribe();
        let mut sub = self.shared.subscription.lock().await;
        for channel in channels {
            if !sub.wanted.insert(channel.clone()) {
                continue;
            }
            if let Some(sink) = sub.sink.as_mut() {
                // A lost connection ends the stream too: the task reconnects and subscribes
                // to everything wanted, this channel included.
                if let Err(e) = sink.subscribe(channel).await {
                    warn_subscribe(channel, &e);
                }
            }
        }
        drop(sub);
        // Before the first connection nobody listens yet: wait for it (it subscribes to what
        // we just asked for) rather than sleep deaf.
        if !*tried.borrow_and_update() {
            let _ = tokio::time::timeout(patience.min(FIRST_CONNECT), tried.wait_for(|t| *t)).await;
        }
    }
}

impl Shared {
    fn wake(&self, channel: &str) {
        if let Some(notify) = lock(&self.waiters).get(channel) {
            notify.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for notify in lock(&self.waiters).values() {
            notify.notify_waiters();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked: every update is one insert.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

fn warn_subscribe(channel: &str, e: &redis::RedisError) {
    if is_connection_error(e) {
        tracing::debug!(error = %e, channel, "redis subscribe failed; the subscriber reconnects");
    } else {
        tracing::warn!(
            error = %e,
            channel,
            "redis refused the subscription: idle workers of this queue poll instead of being woken (grant the channel in the ACL?)"
        );
    }
}

/// Keeps a pub/sub connection open and subscribed until the store is dropped.
async fn subscriber(shared: Weak<Shared>, mut closed: watch::Receiver<()>) {
    let mut backoff = Duration::from_millis(50);
    let mut connections: u64 = 0;
    let mut warned = false;
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let connected = tokio::select! {
            _ = closed.changed() => return,
            connected = strong.source.connect() => connected,
        };
        drop(strong);
        let subscribed = match connected {
            Ok(pubsub) => {
                let (mut sink, stream) = pubsub.split();
                let Some(strong) = shared.upgrade() else {
                    return;
                };
                let mut sub = strong.subscription.lock().await;
                let mut failed = None;
                for channel in sub.wanted.clone() {
                    if let Err(e) = sink.subscribe(&channel).await {
                        warn_subscribe(&channel, &e);
                        if is_connection_error(&e) {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None => {
                        sub.sink = Some(sink);
                        Ok(stream)
                    }
                }
            }
            Err(e) => Err(e),
        };
        if let Some(strong) = shared.upgrade() {
            strong.tried.send_replace(true);
        }
        let mut stream = match subscribed {
            Ok(stream) => stream,
            Err(e) => {
                if warned {
                    tracing::debug!(error = %e, retry_in = ?backoff, "redis subscriber could not connect");
                } else {
                    tracing::warn!(
                        error = %e,
                        retry_in = ?backoff,
                        "redis subscriber could not connect: idle workers poll until it does"
                    );
                    warned = true;
                }
                tokio::select! {
                    _ = closed.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        warned = false;
        connections += 1;
        if connections > 1 {
            // Whatever was published while we were away is lost: let every waiter look.
            let Some(strong) = shared.upgrade() else {
                return;
            };
            strong.wake_all();
        }
        loop {
            tokio::select! {
                _ = closed.changed() => return,
                message = stream.next() => match message {
                    Some(message) => {
                        let Some(strong) = shared.upgrade() else { return };
                        strong.wake(message.get_channel_name());
                    }
                    None => break,
                },
            }
        }
        tracing::debug!("redis subscriber connection closed; reconnecting");
        let Some(strong) = shared.upgrade() else {
            return;
        };
        strong.subscription.lock().await.sink = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_are_parsed() {
        let listing = "\
96ee 127.0.0.1:7001@17001 master - 0 1796396110068 2 connected 5461-10922
72bd 127.0.0.1:7000@17000,node-a myself,master - 0 0 1 connected 0-5460
e528 127.0.0.1:7002@17002 master,fail - 0 0 3 disconnected 10923-16383
aaaa :0@0 master,noaddr - 0 0 0 disconnected
bbbb [::1]:7003@17003 slave 96ee 0 0 2 connected
";
        assert_eq!(
            parse_cluster_nodes(listing),
            [
                ("127.0.0.1".to_owned(), 7001),
                ("127.0.0.1".to_owned(), 7000),
                ("::1".to_owned(), 7003),
            ]
        );
    }
}
