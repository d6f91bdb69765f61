//! The Redis driver of `queue-core`: jobs, reservations, the failed store and locks in
//! Redis, every operation one atomic Lua script judged by the server's clock. It runs on one
//! server or on Redis Cluster (see [Cluster](#cluster)).
//!
//! # Tutorial
//!
//! Link the crate and connect by URL, or open a [`RedisStorage`] yourself:
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! use queue_core::{Queue, WorkerOptions};
//! use queue_redis as _; // registers the `redis://` scheme
//!
//! let queue = Queue::connect("redis://127.0.0.1:6379").await?;
//! queue.listen("ping", |n: u32, _ctx| async move {
//!     println!("ping {n}");
//!     Ok(())
//! });
//! queue.dispatch_named("ping", serde_json::json!(7)).on_queue("high").await?;
//! queue
//!     .worker(WorkerOptions::default().queues(["high", "default"]).concurrency(8))
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! use std::sync::Arc;
//! use queue_core::Queue;
//! use queue_redis::{RedisOptions, RedisStorage};
//!
//! let storage = RedisStorage::connect(RedisOptions::from_env().prefix("myapp")).await?;
//! let queue = Queue::from_arc(Arc::new(storage));
//! # let _ = queue; Ok(()) }
//! ```
//!
//! # URL
//!
//! | URL | connects to |
//! |---|---|
//! | `redis://[[user]:password@]host[:port][/db]` | one server (port 6379 by default, database 0) |
//! | `redis+unix:///path/to/redis.sock[?db=N]` | one server by Unix socket |
//! | `redis+cluster://[[user]:password@]host[:port][?nodes=host:port,host:port]` | a Redis Cluster, learning its slots from the nodes given |
//!
//! For example `redis://127.0.0.1:6379`, `redis://:secret@cache.internal:6379/2`,
//! `redis://worker:secret@cache.internal/0` (ACL user), `redis+unix:///run/redis.sock?db=2`,
//! and `redis+cluster://127.0.0.1:7000?nodes=127.0.0.1:7001,127.0.0.1:7002`. A cluster URL
//! names one node in the authority and any others in `nodes` (a comma-separated list of
//! `host[:port]`, IPv6 as `[::1]:7000`); they share the URL's user and password. One node
//! is enough to connect (the client learns the rest from `CLUSTER SLOTS`), but list several:
//! connecting needs one of them to answer, and the pub/sub subscriber tries them in turn.
//! A cluster has only database 0, so a cluster URL takes no other; `nodes` is its only
//! option. TLS (`rediss://`) is not built in. [`RedisOptions::from_env`] reads `REDIS_URL`,
//! which may be any of these.
//!
//! With `runall --connection redis://...`, the `table` setting is the key prefix and
//! `failed_table` the failed store's prefix.
//!
//! # Options
//!
//! See [`RedisOptions`]: the key [prefix](RedisOptions::prefix) (default `queue`, so
//! several applications can share one server), the failed store's prefix, timeouts,
//! [`allow_eviction`](RedisOptions::allow_eviction) and the
//! [scan limit](RedisOptions::name_scan_limit) of reservations by job name.
//!
//! # The server
//!
//! Redis 5 or later (scripts replicated by their effects, the default since 5.0, so they may
//! read `TIME` before writing). Tested with Redis 7.0.15 on a single server and on a local
//! Redis Cluster of three masters without replicas (127.0.0.1:7000-7002, as
//! `scripts/services.sh` starts it): the whole conformance suite on each, plus the
//! cluster's own tests (see [Cluster](#cluster)). Nothing needs creating: `migrate` does
//! nothing.
//!
//! An ACL user needs the keys under the prefix (`~{P:*}`, `~{P}:*`, `~P:lock:*`, or `~*`)
//! and the usual commands (`+@all -@dangerous` is plenty: `EVALSHA`, `SCRIPT LOAD`, `SADD`,
//! `SMEMBERS`, `ZCARD`, `HGET`, `HMGET`, `CLIENT ID`, `SUBSCRIBE`; on a cluster also
//! `CLUSTER SLOTS` and `CLUSTER NODES`). `CONFIG` is optional (see below). Without the
//! pub/sub channels (`&*` or `&{P:*}:notify`) everything works but idle workers poll instead
//! of being woken.
//!
//! Connecting reads `CONFIG GET maxmemory-policy` (on a cluster, from every master): under
//! any policy but `noeviction` a full Redis deletes keys, that is jobs, without a word, so
//! connecting fails with a message saying how to fix it (`CONFIG SET maxmemory-policy
//! noeviction`, naming the node on a cluster) unless [`RedisOptions::allow_eviction`] says
//! losing jobs is fine. Where `CONFIG` is disabled (many managed services) a warning is
//! logged and the driver carries on: check the policy in the provider's settings. The
//! policy is read at connect time only: a master added to the cluster later is not checked
//! until the next connect.
//!
//! # Guarantees
//!
//! - **At least once.** A job is deleted only by an acknowledge with its current lease. A
//!   worker that crashes (or hangs past its lease without a heartbeat) loses the lease; the
//!   job becomes available again when the lease runs out, its attempt already counted, and
//!   runs again (so a job that killed its worker on its last attempt goes to the failed
//!   store instead of looping).
//! - **No double delivery within a lease.** Reserve takes a job and records its lease
//!   deadline and a fresh token in one script; acknowledge, release, fail and extend check
//!   the token in the same script that acts (fencing), so a worker whose lease ran out and
//!   was taken by another can no longer touch the job. On one server nothing is moved by
//!   two commands in a row, so nothing vanishes between them; on a cluster `fail` and
//!   `failed_retry` take steps ordered so that nothing vanishes either (see
//!   [Cluster](#cluster)).
//! - **Order.** Strict priority across the queues of one reservation; first-in first-out
//!   by available time within a queue, jobs available at the same millisecond in push
//!   order.
//! - **Clock.** Due times, lease deadlines, failed times and lock expiry come from the
//!   server's clock (`TIME` inside the scripts; locks expire by Redis's own `PX`).
//! - **Durability is Redis's.** A push that returned is in the server's memory. It
//!   survives a restart only as far as persistence allows: with `appendonly yes` and
//!   `appendfsync always` nothing acknowledged is lost; with `appendfsync everysec` (the
//!   usual setting) a crash loses up to about a second of writes; with neither AOF nor RDB
//!   a restart loses everything; with RDB snapshots alone, everything since the last one.
//!   Replication is asynchronous, so a failover to a replica can lose pushes and
//!   acknowledges the old primary had confirmed (an acknowledged job may then run again).
//!   [`Capabilities::durable`](queue_core::Capabilities) is true only for AOF with
//!   `appendfsync always` (on a cluster, on every master), as read at connect time.
//! - **A dropped connection or a restart of Redis** fails the operations in flight with
//!   [`Error::Backend`](queue_core::Error::Backend) (the worker retries them with backoff);
//!   the connection is reopened by itself and the scripts reloaded on demand. An
//!   operation whose reply was lost may have been applied: a reservation then runs out and
//!   the job comes back, an acknowledge that did apply is harmless to repeat. On a cluster
//!   the cluster client reconnects to each node by itself, follows `MOVED`/`ASK` redirects
//!   and retries a command up to 5 times (after a redirect, a reconnect or `TRYAGAIN`)
//!   before failing it; a retried push whose first reply was lost can therefore push its
//!   jobs twice. While a master is down, operations on its slots fail and the others carry
//!   on (until the cluster itself stops serving: by default once the master is judged
//!   failed, after `cluster-node-timeout`, without a replica to take over). Every push also
//!   writes the queue registry (`{P}:queues`) and every `fail` the failed store (`{F}`), so
//!   while the master that owns one of those slots is down, pushes or fails of every queue
//!   fail with it.
//! - **Idle workers wake within milliseconds** of a push or release on their queues: the
//!   scripts publish on `{P:Q}:notify` and each store keeps one pub/sub connection (opened
//!   on its first wait, reopened by itself) that wakes the waiting tasks. Before sleeping a
//!   worker reads the earliest due time of its queues, so it never sleeps past the next
//!   delayed job or lease deadline, and never misses a push that came just before it
//!   subscribed. If the pub/sub connection is down, workers fall back to their polling
//!   interval. (Not `BLPOP`: Redis checks blocked clients' timeouts only `hz` times a
//!   second, so short waits overshoot by up to 100 ms, and a list token wakes one worker
//!   where a batch should wake all.) On a cluster the same `PUBLISH` reaches every node
//!   and one subscription on any node hears all queues (see [Cluster](#cluster)).
//! - **Batches.** `push` of many jobs is one script call (all or none) and one round
//!   trip; a reservation takes up to [`MAX_RESERVE`] jobs per call; a batch of
//!   acknowledges is one script call. On a cluster, a batch that spans queues is one
//!   script call per queue (all or none per queue: if one queue's call fails, the others'
//!   jobs may be in, and the push returns the error). Clearing a queue and flushing or
//!   pruning the failed store delete in chunks of 1,000 per call, so no call blocks Redis
//!   for long; they are therefore not atomic as a whole.
//! - **Reservation by name** (`runall run NAME`) looks at no more than
//!   [`name_scan_limit`](RedisOptions::name_scan_limit) available jobs per queue per call.
//!
//! # Keys
//!
//! With prefix `P` and queue `Q`: `{P:Q}:pending` (sorted set of jobs not reserved, scored
//! by available time: waiting and delayed are one structure, split by the current time),
//! `{P:Q}:reserved` (sorted set scored by lease deadline), `{P:Q}:job:<id>` (a hash per job:
//! name, payload, attempts, token), `{P:Q}:seq` (the id counter); `{P}:queues` (the set of
//! queue names); `{F}:failed:index`, `{F}:failed:job:<id>`, `{F}:failed:seq` (the failed
//! store, `F` defaulting to `P`); `P:lock:{K}` (locks); `{P:counters}:names`,
//! `{P:counters}:expiry` and `{P:counters}:c:<name>` (the counters of statistics and the
//! restart signal).
//!
//! **Job ids** are the queue's name, a slash and a number the queue counts up (`emails/17`),
//! so they are unique in the store (applications may use
//! [`JobContext::job_id`](queue_core::JobContext::job_id) as a key) while every key of a job
//! stays in its queue's slot. The number is all digits, so an id splits at its last slash
//! whatever the queue's name holds. A lease whose id is malformed or names another queue
//! than the lease is refused as stale ([`Error::LeaseLost`](queue_core::Error::LeaseLost),
//! or `false` from acknowledge). The failed store records this id as the failed job's
//! `job_id`; its own ids (`FailedJob::id`) are plain numbers, unique in the failed store.
//!
//! **Counters** (`runall stats`, `runall health`, `runall restart`): each counter is one
//! integer key, added to with `INCRBY` by one script per batch (atomic, one round trip);
//! with a TTL, Redis expires it (`PEXPIRE`). Their names are kept in a sorted set read by
//! prefix with `ZRANGEBYLEX`, never `KEYS`, so the restart poll each worker makes every
//! second is one short script call. Names whose counter expired or was deleted are pruned
//! when read, and each write also prunes up to 100 expired names. A counter that holds no
//! integer (written by hand) is left out when read and starts over from the next delta;
//! so does one whose sum would overflow 64 bits.
//!
//! # Cluster
//!
//! Connect with a `redis+cluster://` URL (see [URL](#url)). Every key of one queue carries
//! the hash tag `{P:Q}`, so each queue lives in one slot; the failed store (`{F}`), the
//! queue registry (`{P}`), the counters (`{P:counters}`) and each lock (`{K}`) have slots of
//! their own. Every script touches the keys of one slot only, so Redis Cluster runs each
//! one atomically on the node that owns the slot. One store implementation serves both
//! modes; what spans slots is split on a cluster, and runs as one script on one server as
//! before:
//!
//! | operation | on one server | on a cluster |
//! |---|---|---|
//! | push to several queues | one script | the registry, then one script per queue, all in flight at once: atomic per queue |
//! | reserve from several queues | one script | one script per queue in priority order, going on to the next only if this one had fewer jobs than still wanted (what the one script does too): strict priority kept |
//! | acknowledge leases of several queues | one script | one script per queue, at once |
//! | `wait` on several queues (the next due time) | one script | one script per queue, at once |
//! | `queues()` | one pipeline | one pipeline per queue, at once |
//! | `fail` (queue and failed store) | one script | three steps, below |
//! | `failed_retry` (failed store and queue) | one script | three steps, below |
//!
//! **`fail`** reads the job and checks the lease (the queue's slot), adds the job to the
//! failed store (its slot), then deletes the job from its queue if the lease still holds
//! (the queue's slot again, the acknowledge script). The job is never lost: if the process
//! dies after the second step, the job is in the failed store *and* still reserved until
//! its lease runs out, when it runs again (its attempt counted, as after any crash). If the
//! lease ran out between the steps and another worker took the job, the failed entry is
//! taken back out and `fail` reports the lease lost. A `fail` whose last step failed (a
//! dropped connection) and is called again may leave the job in the failed store twice.
//!
//! **`failed_retry`** claims the failed job (a field in its hash that two concurrent
//! retries cannot both set), pushes it on its queue, then deletes it from the failed
//! store. Never lost: if the process dies after the push, the job is on its queue and still
//! in the failed store (retrying it again would run it twice); if it dies after the claim,
//! the claim runs out after a minute and the retry can be done again.
//!
//! **Wake-up.** The scripts `PUBLISH` on `{P:Q}:notify` as on one server; a cluster forwards
//! every `PUBLISH` to every node over its bus, so the store's one pub/sub connection,
//! opened to the first node of the URL that answers (then to the nodes the cluster reports
//! with `CLUSTER NODES`), hears every queue whichever node owns it, and moves to another
//! node if its node goes down. Sharded pub/sub (`SPUBLISH`) was not used: it would spare the
//! cluster bus one small message per push but needs a subscription per node, RESP3 push
//! messages through the cluster client and a way to learn that a resubscription lost
//! messages. Measured on the local test cluster, on 2 cores shared with other work:
//! dispatch-to-start of an idle `runall work` worker in another process (`bench --jobs 5000
//! --samples 200`, release build, `--sleep 100`) had a p50 of 1.16 ms and a p99 of 18.5 ms,
//! against 0.96 ms and 4.7 ms on the single server in the same run; in the test
//! `idle_worker_starts_dispatched_jobs_promptly` (debug build, a worker polling only every
//! 5 s, the queue on another node than its subscription), 3.4 ms at the median.
//!
//! **Cost.** A push is two round trips on a cluster (the registry, then the queue's
//! script), one on a server: in the same `bench` run, 3,656 against 8,651 jobs/s
//! dispatched one by one, 98,883 against 107,702 batched, and 6,791 against 10,216 no-op
//! jobs/s through a worker at concurrency 8 (the cluster client routes every command through
//! a task of its own, and three servers share the two cores).
//!
//! **Connecting** checks `maxmemory-policy` and durability on every master. The cluster
//! client keeps a connection per node and reads replicas never (every read goes to the
//! master that owns the slot).
//!
//! **What was tested**, against three local masters without replicas: the whole
//! conformance suite; three queues on three different masters (checked with `CLUSTER
//! KEYSLOT` and `CLUSTER COUNTKEYSINSLOT`) taken in strict priority order by a reservation
//! and by a worker; `fail` and `failed_retry` with the queue and the failed store on
//! different masters, including stale leases, two retries at once and a retry that died
//! after its claim; waking on every node; the checks on every master; and a master stopped
//! and restarted under a running store (the other masters' queues carry on and stay woken,
//! the stopped one's fail with backend errors and work again after). Not tested: failover
//! to a replica, resharding while jobs run (the client follows `MOVED`/`ASK` redirects,
//! untried here), and managed cluster services.

mod connection;
mod error;
mod keys;
mod notify;
mod options;
mod scripts;
mod storage;

pub use error::RedisDriverError;
pub use options::{RedisOptions, DEFAULT_PREFIX, DEFAULT_URL};
pub use storage::{RedisStorage, MAX_RESERVE};

use std::sync::Arc;

use futures::future::BoxFuture;
use queue_core::{ConnectOptions, Storage};

/// The driver's name, as [`Storage::driver`] returns it.
pub const DRIVER: &str = "redis";

queue_core::__private::inventory::submit! {
    queue_core::DriverRegistration { schemes: &["redis", "redis+unix", "redis+cluster"], connect: connect_url }
}

/// Opens a [`RedisStorage`] for a URL chosen at run time.
fn connect_url(
    url: String,
    options: ConnectOptions,
) -> BoxFuture<'static, queue_core::Result<Arc<dyn Storage>>> {
    Box::pin(async move {
        let storage = RedisStorage::connect(RedisOptions::from_connect(url, &options)).await?;
        Ok(Arc::new(storage) as Arc<dyn Storage>)
    })
}
