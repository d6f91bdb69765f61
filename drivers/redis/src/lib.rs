//! The Redis driver of `queue-core`: jobs, reservations, unique claims, group counters,
//! waiting jobs, jobs by id and their records, the failed store and locks in Redis, every
//! transition one atomic Lua script judged by the server's clock. It runs on one server or
//! on Redis Cluster (see [Cluster](#cluster)); claims, group counters and waiting jobs on one
//! server only.
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
//! read `TIME` anywhere). Tested with Redis 7.0.15 on a single server and on a local Redis
//! Cluster of three masters without replicas (127.0.0.1:7000-7002, as `scripts/services.sh`
//! starts it): the whole conformance suite on each, plus the driver's own tests. Nothing
//! needs creating: there is no migration.
//!
//! An ACL user needs the keys under the prefix (`~{P:*}`, `~{P}:*`, `~P:lock:*`, or `~*`)
//! and the usual commands (`+@all -@dangerous` is plenty: `EVALSHA`, `SCRIPT LOAD`, `SADD`,
//! `SMEMBERS`, `ZCARD`, `HGETALL`, `HMGET`, `MGET`, `SET`, `DEL`, `CLIENT ID`, `SUBSCRIBE`; on a cluster also
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
//! policy is read at connect time only.
//!
//! # What is atomic
//!
//! Each job's transition and its effects, fenced by its lease token, is one script: one
//! atomic step on the server or node that holds the job's queue. Beyond that:
//!
//! | call | on one server | on Redis Cluster |
//! |---|---|---|
//! | `push` | one script for the whole batch, claims included: all or none | the registry, then one script per queue, all in flight at once: all or none per queue; a job with a [`Unique`](queue_core::Unique) claim is refused |
//! | `settle` | one script for the whole batch: every settlement (token check, outcome, claim release, group counters, records), then the effects of the applied ones kind by kind (pushes with their claims, waiting jobs held, dependency changes summed per key and the jobs they release pushed, skips), then the fetch | one script per queue for its acknowledges, retries and releases (the first queue of the fetch reserving in the same script), a `fail` in three steps (below), the rest of the fetch queue by queue; effects refused but records ([`Effect::Record`](queue_core::Effect::Record), written in the script of the job's queue, a `fail`'s in its last step) |
//! | [`Groups::apply`](queue_core::storage::Groups::apply) | the settle script with no settlement: all the effects or none | refused |
//! | [`Groups::apply_if`](queue_core::storage::Groups::apply_if) | the same script and call, the guard's counter checked and set in it before anything is written | refused |
//! | `reserve` | one script over all the queues | one script per queue in priority order |
//! | `extend` | one script (a renewed lease whose job carries a `cancel` record is reported `Cancelled`) | one script per queue |
//! | [`Track::cancel`](queue_core::storage::Track::cancel) | one script on the job's queue: removed or marked | the same |
//! | [`Track::put_record`](queue_core::storage::Track::put_record) | fenced: one script checking the lease's token; plain: one `SET ... PX` | the same |
//! | [`Track::records`](queue_core::storage::Track::records) | one `MGET` | one `MGET` per queue (slot), all in flight at once |
//! | failed store `retry` | one script (the failed job, its queue, its claim) | three steps (below) |
//! | `clear`, failed store `flush`, `prune` | chunks of 1,000 per script, so no call blocks Redis for long: not one step as a whole | the same |
//!
//! A settle on one server is one `EVALSHA` per call, fetch included, and so is a push: a
//! worker's round trip is one command (checked by a test with `MONITOR`). The exception is a
//! settle or an apply with dependency changes ([`Effect::Deps`](queue_core::Effect::Deps)):
//! the script declares every key it touches, and a job it releases goes to a queue (and
//! takes a claim) that only the waiting job knows, so the driver first reads the queue and
//! claim of the jobs waiting under those keys (one pipelined `HMGET`), and the script checks
//! that they still are what was read before changing anything. If one was replaced in
//! between, nothing changes and the driver reads again; after 5 such rounds in a row the call
//! fails with [`Error::Backend`](queue_core::Error::Backend), nothing changed. A settlement
//! that names a job of another queue than its lease's, or a malformed id, is stale. A group
//! counter that cannot be added to (it holds no integer, or the sum would overflow 64 bits)
//! fails the call with [`Error::Backend`](queue_core::Error::Backend): the settlements before
//! it in the batch are applied with their effects, that one and the rest are not (a replay
//! finds the applied ones stale); in an apply, nothing is.
//!
//! **What Redis Cluster refuses**, with [`Error::NotSupported`](queue_core::Error::NotSupported)
//! and before anything changes: unique claims (a push with [`Unique`](queue_core::Unique), an
//! [`Effect::Push`](queue_core::Effect::Push)), group counters
//! ([`Effect::Count`](queue_core::Effect::Count)) and waiting jobs
//! ([`Effect::Hold`](queue_core::Effect::Hold), [`Deps`](queue_core::Effect::Deps),
//! [`Skip`](queue_core::Effect::Skip), in a settle or in
//! [`Groups::apply`](queue_core::storage::Groups::apply)), and
//! [`Groups::apply_if`](queue_core::storage::Groups::apply_if) whatever its effects (its
//! guard is a group counter). A claim's key spans queues, and a group or a waiting job spans
//! jobs of any queue, so they live in slots of their own, and a script may touch one slot
//! only: the job's transition and its claim, counter or the job it releases could not be one
//! step. Putting them in the queue's slot would change what a key means (one namespace per
//! store), so the capabilities say `claims: false` and no `groups` instead. Everything else
//! works as on one server, [`Effect::Record`](queue_core::Effect::Record) included: a job's
//! records live in its queue's slot.
//!
//! # Guarantees
//!
//! - **At least once.** A job is deleted only by an acknowledge with its current lease. A
//!   worker that crashes (or hangs past its lease without a heartbeat) loses the lease; the
//!   job becomes available again when the lease runs out, its attempt already counted.
//! - **Fencing.** Reserve records a fresh token with the lease deadline; every settle and
//!   extend checks the token in the script that acts, so a worker whose lease ran out and
//!   was taken by another can no longer touch the job, nor push, count, hold, release or
//!   skip anything for it, nor write a record of it.
//! - **Claims** (one server): a claim is a key holding the id of the job that holds it,
//!   checked and set in the push script (a second job of the same key in the same batch is
//!   a duplicate of the first). It is released in the script of the transition its `until`
//!   names: reserve (`started`), acknowledge, fail (`terminal`), clear, and the failed store's
//!   forget, flush and prune; a job failing with `succeeded` keeps it under its id, and a
//!   retry of it claims the key again or reports the holder. A push with
//!   [`Unique::replace`](queue_core::Unique::replace) whose key is held by a queued job (in
//!   its queue's `pending`: neither reserved nor in the failed store) gives that job its
//!   name, payload and availability in the same script, rescoring it where it is, wakes its
//!   queue and reports [`Pushed::Replaced`](queue_core::Pushed::Replaced); the holder may be
//!   on any queue, found from the id the claim holds (`<queue>/<number>`). A reserved or
//!   failed holder makes it a duplicate; in one batch, a later job of the key replaces the
//!   earlier one. Only `push` replaces: a push effect of a settle or an apply with
//!   `replace` is a duplicate of a holder as without it.
//! - **Order.** Strict priority across the queues of one reservation; first-in first-out
//!   by available time within a queue, jobs available at the same millisecond in push
//!   order.
//! - **Clock.** Due times, lease deadlines, failed times and lock expiry come from the
//!   server's clock (`TIME` inside the scripts; locks expire by Redis's own `PX`).
//! - **Durability is Redis's.** A push that returned is in the server's memory. It survives
//!   a restart only as far as persistence allows: with `appendonly yes` and `appendfsync
//!   always` nothing acknowledged is lost; with `appendfsync everysec` a crash loses up to
//!   about a second of writes; with RDB snapshots alone, everything since the last one.
//!   Replication is asynchronous, so a failover can lose writes the old primary confirmed.
//!   [`Capabilities::durable`](queue_core::Capabilities) is true only for AOF with
//!   `appendfsync always` (on a cluster, on every master), as read at connect time.
//! - **A dropped connection or a restart of Redis** fails the operations in flight with
//!   [`Error::Backend`](queue_core::Error::Backend) (the worker retries them); the
//!   connection is reopened by itself and the scripts reloaded on demand. An operation whose
//!   reply was lost may have been applied: a reservation then runs out and the job comes
//!   back, a settlement that did apply is stale when repeated. On a cluster the client
//!   follows `MOVED`/`ASK` redirects and retries a command up to 5 times (after a redirect,
//!   a reconnect or `TRYAGAIN`), so a retried push whose first reply was lost can push its
//!   jobs twice. While a master is down, operations on its slots fail and the others carry
//!   on; every push also writes the registry (`{P}:queues`) and every `fail` the failed store
//!   (`{F}`), so while the master of one of those slots is down, those fail for every queue.
//! - **Idle workers wake within milliseconds** of a push, retry or release on their queues:
//!   the scripts `PUBLISH` on `{P:Q}:notify` and each store keeps one pub/sub connection
//!   (opened on its first wait, reopened by itself) that wakes the waiting tasks. Before
//!   sleeping a worker reads the earliest due time of its queues, so it never sleeps past the
//!   next delayed job or lease deadline, and never misses a push that came just before it
//!   subscribed. (Not `BLPOP`: Redis checks blocked clients' timeouts only `hz` times a
//!   second, and a list token wakes one worker where a batch should wake all.)
//! - **Batches.** A reservation takes up to [`MAX_RESERVE`] jobs per call; a page of a
//!   listing holds up to 10,000 items.
//! - **Reservation by name** (`runall run NAME`) looks at no more than
//!   [`name_scan_limit`](RedisOptions::name_scan_limit) available jobs per queue per call.
//!
//! # Capabilities
//!
//! - **Failed store**: a sorted set by failed time and a hash per failed job; listed newest
//!   first by a cursor (the failed time and id of the last item), so a page costs the same
//!   anywhere in the list.
//! - **Inspect**: sizes, queues (from the registry, those that hold jobs), chunked clear,
//!   the oldest available job, and [`jobs`](queue_core::storage::Inspect::jobs) by state
//!   first due first, by a cursor (due time and id): waiting and delayed jobs are the one
//!   `pending` sorted set split at the current time, reserved ones the `reserved` set. A page
//!   after a cursor whose job left the listing since walks the jobs due in the same
//!   millisecond to find its place.
//! - **Groups** (one server): a hash per group, counters added with `HINCRBY` in the settle
//!   script, read with `HGETALL` and sorted by name.
//!   [`apply_if`](queue_core::storage::Groups::apply_if) is one call of the settle script
//!   like `apply` (one `EVALSHA`, even with no effects): the guard's counter, a field of
//!   the group's hash like any other, is read first in the script, and unless it holds the
//!   expected value (a missing field holds 0) the call writes nothing, not even the hash,
//!   and returns `false`; otherwise it is set before the effects are applied (so a count in
//!   the same call adds to the new value), and put back with the other counters if one
//!   cannot be added to. Values are compared as the decimal text Redis holds, exact over all
//!   of `i64` (Lua's numbers are not beyond 2^53); a guard counter holding anything else
//!   fails the call with [`Error::Backend`](queue_core::Error::Backend).
//!   Waiting jobs: a hash per key, `{P}:waiting:<key>`, holding the dependencies left and
//!   everything needed to push the job (queue, name, payload, its availability as given,
//!   its claim), stored, counted down and released or dropped in the settle script; a
//!   released job is pushed as a push is
//!   (its delay counted from the release, its claim taken or, if held, the job dropped, its
//!   queue registered, idle workers woken), so the same call's fetch can take it.
//!   Dependencies left saturate at ±10^15, where Lua's numbers are still exact integers
//!   (beyond any real count).
//! - **Jobs by id and records** ([`Track`](queue_core::storage::Track), on one server and on
//!   a cluster): a job id names its queue and number, so
//!   [`job`](queue_core::storage::Track::job) is one script reading the queue's two sorted
//!   sets and the job's hash by the server's clock (reserved while in `reserved`, due at its
//!   lease deadline; delayed while its available time is to come; else waiting), and
//!   [`cancel`](queue_core::storage::Track::cancel) is one script that either removes a job
//!   in `pending` or in `reserved` past its deadline (its hash, its entry and its claim if it
//!   still holds it, as `clear` does) or, for one reserved under a live lease, writes its
//!   `cancel` record: a reservation and a cancel never both win. A record is a string
//!   `{P:Q}:record:<member>:<kind>` in the job's queue's slot with a `PX` expiry (Redis
//!   deletes it, so `prune_records` returns 0; a time to live of zero deletes it), written
//!   by a settlement's [`Effect::Record`](queue_core::Effect::Record) in the settle script
//!   (only when the settlement applies; on a cluster a `fail` writes its records in its
//!   last step, with the job's removal from its queue), by a fenced `put_record` in a script
//!   that checks the job's token, and by `cancel`; the extend script reports a renewed lease
//!   whose job has a `cancel` record as `Cancelled`. All of them are atomic on one server
//!   and on a cluster alike, since the keys share the job's slot. Records outlive their job
//!   until they expire; a record key whose id this store could never have made reads as
//!   missing and is not written (`put_record` answers `false`).
//! - **Control**: the restart generation is one key, `{P}:restart`, raised with `INCR`.
//! - **Wake**: pub/sub, as above.
//! - **The worker registry** ([`Workers`](queue_core::storage::Workers), `runall workers`,
//!   on one server and on a cluster alike): `{P}:workers`, a sorted set of worker ids scored
//!   by when their entries expire (the server's clock, `TIME`), and `{P}:workers:entries`, a
//!   hash of the entries, in one hash slot. A beat is one script (the entry and its expiry
//!   written, up to 100 expired entries deleted); a listing is one script that deletes the
//!   expired entries and reads the others; leaving is one script.
//!
//! # Keys
//!
//! With prefix `P` and queue `Q`: `{P:Q}:pending` (sorted set of jobs not reserved, scored
//! by available time: waiting and delayed are one structure, split by the current time),
//! `{P:Q}:reserved` (sorted set scored by lease deadline), `{P:Q}:job:<id>` (a hash per job:
//! name, payload, attempts, token, unique key and until), `{P:Q}:seq` (the id counter),
//! `{P:Q}:record:<id>:<kind>` (a record of a job, with a `PX` expiry);
//! `{P}:queues` (the set of queue names), `{P}:claim:<key>` (a claim: the holder's id),
//! `{P}:group:<group>` (a group's counters), `{P}:waiting:<key>` (a waiting job: its
//! dependencies left and its job), `{P}:restart` (the restart generation), `{P}:workers`
//! and `{P}:workers:entries` (the worker registry);
//! `{F}:failed:index`, `{F}:failed:job:<id>`, `{F}:failed:seq` (the failed store, `F`
//! defaulting to `P`); `P:lock:{K}` (locks) and `P:parked:{K}` (the jobs parked on a lock,
//! in the lock's slot).
//!
//! A `without_overlapping` job put back while its key is busy (`Effect::Park`, one server
//! only) is added to the lock's parked set by the settle script, which sees whether the
//! lock is held in the same step (a free lock: the job is due at once), and its hash keeps
//! the lock's name in `k`. The unlock script (also a release by force) deletes the lock and
//! makes the first parked job whose hash still names the lock and that still waits for a
//! later time due now, publishing on its queue's channel; it drops the entries it passes
//! (16 at most). Any settlement of the job clears `k`. On Redis Cluster the capability
//! `park` is false: the lock and the job live in different slots, so a job whose key is
//! busy looks again after its delay.
//!
//! Scripts declare the keys they are given (a queue's `pending`, `reserved` and `seq`, each
//! claim a push checks, each group a settle counts, each waiting job's key, the queue and
//! claim of each job a dependency change may release, the failed store's keys, the registry)
//! and build three kinds from them: a job's hash and its records from its queue's key (the
//! same slot), and on one server the claim a transition releases, found in the job's hash. Redis routes and
//! checks scripts by their declared keys; a key built in a declared key's slot is fine on a
//! cluster too, and claims are not used there.
//!
//! **Job ids** are the queue's name, a slash and a number the queue counts up (`emails/17`),
//! so they are unique in the store (applications may use
//! [`JobContext::job_id`](queue_core::JobContext::job_id) as a key) while every key of a job
//! stays in its queue's slot. The number is all digits, so an id splits at its last slash
//! whatever the queue's name holds. A lease whose id is malformed or names another queue
//! than the lease is stale. The failed store records this id as the failed job's `job_id`;
//! its own ids (`FailedJob::id`) are plain numbers, unique in the failed store.
//!
//! # Cluster
//!
//! Connect with a `redis+cluster://` URL (see [URL](#url)). Every key of one queue carries
//! the hash tag `{P:Q}`, so each queue lives in one slot; the failed store (`{F}`), the
//! store-wide keys (`{P}`) and each lock (`{K}`) have slots of their own. What spans slots
//! is split as the table in [What is atomic](#what-is-atomic) says; claims, group counters
//! and waiting jobs are refused. A job's records share its queue's slot, so jobs by id,
//! cancels and records work as on one server.
//!
//! **`fail`** reads the job and checks the lease (the queue's slot), adds the job to the
//! failed store (its slot), then deletes the job from its queue if the lease still holds
//! (the queue's slot again, the settle script's acknowledge). The job is never lost: if the
//! process dies after the second step, the job is in the failed store *and* still reserved
//! until its lease runs out, when it runs again (its attempt counted, as after any crash). If
//! the lease ran out between the steps and another worker took the job, the failed entry is
//! taken back out and the settlement is stale. A `fail` whose last step failed (a dropped
//! connection) and is sent again may leave the job in the failed store twice.
//!
//! **Retrying a failed job** claims the failed job (a field in its hash that two concurrent
//! retries cannot both set), pushes it on its queue, then deletes it from the failed store.
//! Never lost: if the process dies after the push, the job is on its queue and still in the
//! failed store (retrying it again would run it twice); if it dies after the claim, the
//! claim runs out after a minute and the retry can be done again.
//!
//! **A settle over several queues** is one script per queue, all in flight at once, so
//! each queue's settlements are atomic together but not with another queue's; a lease given
//! twice in one call is stale the second time, as on one server.
//!
//! **Wake-up.** The scripts `PUBLISH` on `{P:Q}:notify` as on one server; a cluster forwards
//! every `PUBLISH` to every node over its bus, so the store's one pub/sub connection, opened
//! to the first node of the URL that answers (then to the nodes the cluster reports with
//! `CLUSTER NODES`), hears every queue whichever node owns it, and moves to another node if
//! its node goes down. (Sharded pub/sub would spare the bus one small message per push but
//! needs a subscription per node and a way to learn that a resubscription lost messages.)
//!
//! **Cost.** A push is two round trips on a cluster (the registry, then the queue's script),
//! one on a server. The cluster client routes every command through a task of its own.
//!
//! **What was tested**, against three local masters without replicas: the whole
//! conformance suite; three queues on three different masters taken in strict priority
//! order by a reservation and by a worker, and settled in one call; `fail` and the retry of
//! a failed job with the queue and the failed store on different masters, including stale
//! leases, two retries at once and a retry that died after its claim; the refusals; waking
//! on every node; the connect-time checks on every master; and a master stopped and
//! restarted under a running store. Not tested: failover to a replica, resharding while jobs
//! run (the client follows `MOVED`/`ASK` redirects, untried here), and managed cluster
//! services.

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

/// The driver's name, as [`Capabilities::driver`](queue_core::Capabilities) says it.
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
