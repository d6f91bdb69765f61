//! The Redis driver of `queue-core`: jobs, reservations, the failed store and locks in
//! Redis, every operation one atomic Lua script judged by the server's clock.
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
//! `redis://[[user]:password@]host[:port][/db]`, for example `redis://127.0.0.1:6379`,
//! `redis://:secret@cache.internal:6379/2` or `redis://worker:secret@cache.internal/0`
//! (ACL user), and `redis+unix:///run/redis.sock?db=2` for a Unix socket. TLS (`rediss://`)
//! is not built in. [`RedisOptions::from_env`] reads `REDIS_URL`.
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
//! read `TIME` before writing); tested with Redis 7.0 on a single server. Nothing needs
//! creating: `migrate` does nothing.
//!
//! An ACL user needs the keys under the prefix (`~{P:*}`, `~{P}:*`, `~P:lock:*`, or `~*`)
//! and the usual commands (`+@all -@dangerous` is plenty: `EVALSHA`, `SCRIPT LOAD`, `SADD`,
//! `SMEMBERS`, `ZCARD`, `HGET`, `HMGET`, `CLIENT ID`, `SUBSCRIBE`). `CONFIG` is optional (see
//! below). Without the pub/sub channels (`&*` or `&{P:*}:notify`) everything works but idle
//! workers poll instead of being woken.
//!
//! Connecting reads `CONFIG GET maxmemory-policy`: under any policy but `noeviction` a full
//! Redis deletes keys, that is jobs, without a word, so connecting fails with a message
//! saying how to fix it (`CONFIG SET maxmemory-policy noeviction`) unless
//! [`RedisOptions::allow_eviction`] says losing jobs is fine. Where `CONFIG` is disabled
//! (many managed services) a warning is logged and the driver carries on: check the policy
//! in the provider's settings.
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
//!   was taken by another can no longer touch the job. Nothing is moved by two commands in
//!   a row, so nothing vanishes between them.
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
//!   `appendfsync always`, as read at connect time.
//! - **A dropped connection or a restart of Redis** fails the operations in flight with
//!   [`Error::Backend`](queue_core::Error::Backend) (the worker retries them with backoff);
//!   the connection is reopened by itself and the scripts reloaded on demand. An
//!   operation whose reply was lost may have been applied: a reservation then runs out and
//!   the job comes back, an acknowledge that did apply is harmless to repeat.
//! - **Idle workers wake within milliseconds** of a push or release on their queues: the
//!   scripts publish on `{P:Q}:notify` and each store keeps one pub/sub connection (opened
//!   on its first wait, reopened by itself) that wakes the waiting tasks. Before sleeping a
//!   worker reads the earliest due time of its queues, so it never sleeps past the next
//!   delayed job or lease deadline, and never misses a push that came just before it
//!   subscribed. If the pub/sub connection is down, workers fall back to their polling
//!   interval. (Not `BLPOP`: Redis checks blocked clients' timeouts only `hz` times a
//!   second, so short waits overshoot by up to 100 ms, and a list token wakes one worker
//!   where a batch should wake all.)
//! - **Batches.** `push` of many jobs is one script call (all or none) and one round
//!   trip; a reservation takes up to [`MAX_RESERVE`] jobs per call; a batch of
//!   acknowledges is one script call. Clearing a queue and flushing or pruning the failed
//!   store delete in chunks of 1,000 per call, so no call blocks Redis for long; they are
//!   therefore not atomic as a whole.
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
//! **Cluster.** Every key of one queue carries the hash tag `{P:Q}`, so each queue lives in
//! one slot, and the failed store and each lock have tags of their own. Only a single
//! server was tested. On Redis Cluster, pushing, reserving from one queue, acknowledging,
//! extending and releasing stay in one slot; what crosses slots and would have to be split
//! is a reservation across several queues (run the script per queue in priority order),
//! `fail` and `failed_retry` (queue and failed store), and the wait for several queues.
//! The counters share one slot of their own.

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
    queue_core::DriverRegistration { schemes: &["redis", "redis+unix"], connect: connect_url }
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
