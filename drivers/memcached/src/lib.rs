//! The memcached driver of `queue-core`: queues in a memcached server, for deployments that
//! already run one and accept that **jobs live only in memory**.
//!
//! # Read this first: what memcached can and cannot promise
//!
//! - **Not durable.** Jobs, reservations, failed jobs and locks exist only in memcached's
//!   memory. A restart of memcached, a `flush_all`, or an eviction under memory pressure
//!   loses them. [`Capabilities::durable`](queue_core::Capabilities) is `false`.
//! - **At-least-once, only while memcached keeps the items.** As long as memcached neither
//!   restarts nor evicts, a job pushed is delivered until a worker acknowledges it; a job
//!   whose worker dies comes back when its lease runs out.
//! - **State loss is detected, loudly.** On connect the driver writes an epoch key
//!   (`{prefix}:epoch`, a random token, no expiry). Every `push`, `reserve` and `wait` reads
//!   it in the same round trip as its other keys; when it is gone or replaced, the driver
//!   logs at `error` level, once per loss, that the state was lost, writes a new epoch and
//!   carries on with fresh counters. [`MemcachedStorage::state_losses`] counts these events.
//! - **Size memcached so it never evicts** (`-m` well above the queue's peak, and watch
//!   `evictions` in `stats`). Items are stored without expiry; only LRU eviction removes them.
//! - `reserve_by_name` is not supported (a slot queue cannot skip jobs by name): a request
//!   with a name fails with [`Error::NotSupported`](queue_core::Error::NotSupported), and
//!   `Capabilities::reserve_by_name` is `false`.
//! - A `push` of several jobs is not all-or-none: an error part way may leave some pushed.
//! - No push notifications: `wait` polls (every 100 ms by default), so
//!   `Capabilities::wake_on_push` is `false`.
//! - Times (delays, lease deadlines, lock expiry) are judged by the workers' clocks, which
//!   must agree within 10 seconds; memcached's clock has only whole seconds.
//! - One server. Client-side sharding would split the counters of a queue from its items.
//!
//! # Connecting
//!
//! ```no_run
//! # async fn demo() -> queue_core::Result<()> {
//! use queue_core::Queue;
//! use queue_memcached as _; // links the driver so `memcache://` URLs work
//!
//! let queue = Queue::connect("memcache://127.0.0.1:11211?prefix=myapp").await?;
//! # Ok(()) }
//! ```
//!
//! The URL is `memcache://host[:port][?option=value&...]` (or `memcached://`; the port
//! defaults to 11211). Options ([`MemcachedOptions`]):
//!
//! | option | default | what |
//! |---|---|---|
//! | `prefix` | `queue` (or the config's `table`) | key prefix of everything |
//! | `failed_prefix` | `{prefix}_failed` (or `failed_table`) | key prefix of the failed store |
//! | `pool` | 16 | connections (concurrent round trips) |
//! | `timeout` | `5s` | one round trip, or connecting |
//! | `missing_slot_wait` | `1s` | how long a reservation waits for a claimed slot a pusher has not written yet |
//! | `poll` | `100ms` | how often `wait` looks for work (memcached cannot notify) |
//!
//! A `prefix` in the URL wins over the config's `table` (likewise `failed_prefix` over
//! `failed_table`). Needs memcached 1.6 or newer (the meta protocol). Payloads up to the
//! server's `item_size_max` (read from `stats settings` at connect, 1 MiB by default) minus
//! about 5 KiB are accepted; a larger one is refused at push with
//! [`Error::PayloadTooLarge`](queue_core::Error::PayloadTooLarge), never lost later.
//!
//! # How queues are built on a cache
//!
//! memcached has no lists, no transactions and no scripts; it has atomic `incr`, `add`
//! (store if absent) and `cas` (store if unchanged since read) on single keys. Everything
//! below is made of those.
//!
//! **Slots.** Each queue has a `tail` counter and a `head` counter. A push allocates slot
//! numbers with one `incr tail` and writes, in one pipelined request and in this order, the
//! job's payload (`{prefix}:b:{id}`), its state record (`{prefix}:j:{id}`: attempts, state,
//! lease token and deadline, and the time it became available) and the slot item (`{prefix}:q:{queue}:s:{n}` = id, written
//! with `add`). A reservation reads `head` with its CAS token and `tail`, claims up to
//! `limit` slots (at most 256) with one `cas` of `head` (so no two workers, in any process,
//! ever claim the same slot), reads the slots and the records, and moves each record from *waiting* to
//! *reserved* with a `cas` of the record: attempts + 1, a fresh token, the lease deadline.
//! Slots come out in push order: FIFO within a queue. Queues are taken in the order given,
//! each drained before the next: strict priority. A reservation that loses the race for the
//! head (another reserver claimed those slots first) reads it again, after a random pause of
//! up to 16 ms once it has lost twice in a row; after 128 lost races in a row it returns the
//! jobs it already holds, or, holding none, fails with a contention error (the worker tries
//! again). A give-up never leaves a job reserved behind the caller's back.
//!
//! **A claimed slot whose item is missing** belongs to a pusher between its `incr` and its
//! write, or was evicted. The reservation polls it for up to `missing_slot_wait`, then
//! writes a tombstone with `add` and skips it (logged at `warn`). A pusher whose slot write
//! then fails (its `add` finds the tombstone) takes a new slot at the tail: skipping never
//! loses a job and never waits forever. (Tombstones expire after an hour; a pusher stalled
//! longer than that between its two round trips would write behind the head.)
//!
//! **Leases and fencing.** `acknowledge`, `release`, `fail` and `extend` read the record with
//! its CAS token, check the lease token, and write or delete with `cas`: a stale token is
//! refused with `LeaseLost` (or `false`), and a concurrent change makes the step retry.
//!
//! **Timers: delayed jobs and expired leases.** Every time that matters later (a delayed
//! job's due time, a reservation's deadline) is listed by job id in a per-queue *timer
//! bucket* of one second (`{prefix}:q:{queue}:t:{second}`, appended to, with a count beside
//! it). A *sweep* (at most every 250 ms per queue per process, inside `reserve` and
//! `size`) reads the counts of the buckets from a shared cursor up to now (about a dozen
//! keys in one request), and for buckets with entries reads the records: due delayed jobs
//! move into new slots at the tail (in due-time order), and reserved jobs past their
//! deadline are reserved again for the caller (attempts + 1, new token; the old token is
//! fenced off). Buckets more than 10 seconds old are deleted once swept and the cursor
//! moves past them; expired jobs that could not be taken yet are listed again in the
//! current bucket. The bounds: a sweep looks at no more than 4096 buckets (a backlog after
//! long idleness is caught up over several calls), its cost does not grow with the number
//! of jobs waiting or reserved, only with the number due, and a lease that ran out is found
//! by the first sweep after its deadline. Workers' clocks must agree within 10 seconds
//! (a writer further behind may list a timer in a bucket already swept).
//!
//! **A reserver that dies** between claiming slots and reserving their jobs would strand
//! them: a *janitor*, run with the sweep, checks slots claimed more than 5 seconds earlier
//! (at most 65,536 per pass) and puts jobs still waiting in them back at the tail.
//!
//! **Sizes** are counters kept beside each transition (waiting and delayed per generation,
//! reserved); `clear` bumps the queue's generation, so waiting and delayed jobs of the old
//! generation count as deleted at once and their items are dropped when met. A transition
//! (push, reservation, release, promotion, acknowledgement, failure) sends its count updates
//! in the same request as the writes that make it, after them, as if its compare-and-swap or
//! delete wins, and undoes them for those that lost: every transition counts exactly once,
//! and a process killed between two requests leaves the counts right. The updates of
//! consecutive transitions of one job, made by different processes, can still reach memcached
//! in either order (a promoted job can be reserved, and counted out of `waiting`, before its
//! promoter's count is applied, when memcached reads that request in two parts), so each
//! counter holds its value plus 2^62: updates carry a sign and commute, and the count is
//! exact once they have all arrived (memcached's own `decr` stops at zero, which lost such
//! counts and left phantom jobs in earlier versions). While an update is in flight a count may
//! be off for a moment; below zero reads as zero. A process killed between a lost
//! compare-and-swap and its undo, or in the middle of writing a request, can leave a count
//! off by one; the jobs themselves are unaffected. The sweep repairs the *waiting* count:
//! when it finds every slot claimed, none claimed for the last 5 seconds, and the janitor's
//! pass over them done (so no job can be waiting), it sets a non-zero waiting count back to
//! zero with compare-and-swap, logged at `warn`. That assumes, as the janitor does, that no
//! live process stalls for 5 seconds in the middle of an operation (workers' clocks far
//! apart can shorten the wait; a count wrongly reset is repaired the same way once the
//! queue is idle again). Delayed and reserved counts are not repaired: their jobs sit in timer
//! buckets up to their due time or deadline, which no bounded sweep can count. (The counters
//! live under new keys since they carry a sign; counts kept by an earlier version of this
//! driver are not read, so stop old workers before starting new ones.)
//!
//! **Failed store.** Failed ids come from a counter; `failed_list` and `failed_count` scan the
//! id range in pipelined chunks of 1024 (their cost grows with the ids handed out since the
//! last `failed_flush`, which moves a low watermark). **Locks** are items written with `add`
//! holding owner and expiry (judged by the worker's clock, memcached's own TTL only
//! collects them); renewal and release use `cas`, so only the owner releases.
//!
//! # Operations: health, statistics, restart
//!
//! **`oldest_available`** (`runall health`, once per queue) runs a sweep of the queue's
//! timers (as `reserve` does, but every call), then reads the first slots past the head.
//! The answer is the earliest of: the availability time of the first live waiting jobs in
//! slot order (up to 32 of them; slots hold jobs in the order they became available), the
//! due time of delayed jobs the sweep moved into slots, and the deadline of expired
//! reservations the sweep found and left for a reserver. Cost: the sweep (bounded as above)
//! plus three or four round trips; at most 1024 slots past the head are looked at (after a
//! `clear` they may hold jobs that no longer count), none when the queue's waiting count is
//! zero. Where it is approximate: a job pushed with an availability time already in the
//! past, or a delayed job that no sweep moved into a slot until long after it was due,
//! sits behind younger jobs, so it is seen only by the call whose sweep moves it or once it
//! nears the head; records written by an earlier version of this driver carry no
//! availability time and are not counted. (Job records are now written in a second layout,
//! which that earlier version cannot read: stop old workers before starting new ones.)
//!
//! **Counters** (`add_counters`, `counters`: the workers' statistics, per-minute throughput
//! and the restart signal) are items `{prefix}:cv:{name}` holding the value plus 2^62, so
//! that memcached's unsigned `incr`/`decr` carry a sign: each delta is one atomic `ma`
//! command that also creates a missing counter (at 2^62 plus the delta). No read, no
//! compare-and-swap, no lost update, from any number of processes. A counter holds values
//! in [-2^62, 2^62) (±4.6e18, far beyond any statistic) and saturates outside it: a delta is
//! clamped into the range, a counter goes no lower than -2^62 (memcached's `decr` stops at
//! zero), and one driven above 2^62 - 1 by several deltas reads as 2^62 - 1 (and is back
//! where memcached may refuse its updates). The size counters use the same encoding.
//!
//! Why not plus 2^63, which covered all of `i64`: memcached (1.6.18) refuses `incr`/`decr`
//! of a stored value of 2^63 or more whenever a `-` byte follows the value in memory (its
//! number parser looks for a minus sign past the value's end), which is common once items
//! holding `-` have been freed nearby; values below 2^63 are never refused. Earlier versions
//! of this driver stored counters plus 2^63 under `{prefix}:c:{name}`, and such a refusal
//! failed a whole `add_counters` after memcached had applied the request's other updates,
//! so a worker, flushing its statistics again, counted those twice (a test here saw 206 of
//! 240 flushes refused). Those items are not read: statistics start again from zero after
//! an upgrade, and old and new workers on one store count in different places (neither
//! sees the other's restart signal, and each drops the other's names from the index), so
//! stop old workers before starting new ones.
//!
//! A counter written with a TTL gets memcached's expiry (whole seconds, rounded up, plus
//! one, so never early) and its exact expiry in milliseconds beside it
//! (`{prefix}:ce:{name}`), which `counters` honours; a write without a TTL makes it
//! permanent again. Unlike the in-memory driver, a counter written again in the second or
//! two between its exact expiry and memcached collecting it continues from its old value
//! instead of 0 (the throughput buckets, named by minute and kept two hours, are never
//! written that late).
//!
//! memcached cannot list keys, so the driver keeps an index. A name belongs to a *group*:
//! its first two `:`-separated parts (`stats:job`, `stats:queue`, `rate:{queue}`,
//! `control:restart`). A group's item (`{prefix}:cg:{group}`) lists its names, one per line;
//! the root (`{prefix}:cr`) lists the groups. A process appends a name the first time it
//! writes it (in the same request as the add, after it) and again once it may have been
//! dropped (after the name's TTL, at most 10 minutes). `counters(prefix)` reads the root,
//! the groups that can hold names with that prefix and their counters; it drops names
//! whose counter is gone (expired or evicted) and groups left empty, with compare-and-swap,
//! so a name written again meanwhile stays listed. Writers also compact a group after every
//! 256 appends, so a group nobody reads stays bounded. Bounds: a group holds its live
//! names plus at most about 256 more; every group, and the root, must fit in one item
//! (`item_size_max`, about 20,000 names of 50 bytes per MiB); an append that does not fit
//! is logged at `error`, and those counters count but are not listed until the writer
//! tries again (after the name's TTL, at most 10 minutes) and compaction has freed room. Cost of `counters`: one round trip when the prefix is a whole name alone in
//! its group (`control:restart`, which every worker reads every second), two for
//! `rate:{queue}:`, three for `stats:`, plus upkeep when something was dropped. A
//! connection lost in the middle of `add_counters` may count a flush twice (the worker
//! writes it again), and an evicted counter loses its count, like everything here.
//!
//! # No blocking on the runtime
//!
//! The driver speaks memcached's meta protocol itself over tokio's `TcpStream`: every call
//! is `async`, no thread ever blocks on a socket. (The `memcache` crate, 0.21, was
//! considered: its client blocks on an r2d2 pool and would need `spawn_blocking` for every
//! call, its tokio client lives in an experimental module, and its default `tls` feature
//! pulls in OpenSSL. The protocol is a few hundred lines here, needs no extra dependency, and
//! lets every operation pipeline its commands.) The only locks are `std` mutexes around small
//! in-process caches, never held across an `.await`. Each
//! operation sends its commands pipelined in one write (writing and reading concurrently, so
//! large batches cannot deadlock), from a bounded pool of connections. A reservation of a
//! batch costs about five round trips whatever its size; an acknowledgement of a batch three.
//!
//! Measured two ways. `tests/restart.rs` (`a_frozen_server_does_not_block_the_runtime`)
//! freezes a memcached with SIGSTOP for 1.5 s under eight busy reservers on a single-threaded
//! runtime: no call completes while it is frozen, and a 1 ms sleep on the same thread never
//! took more than a few milliseconds (3.3 ms on the test machine; a synchronous socket read
//! would have held the thread for the whole 1.5 s). The bench binary's stall column (see
//! BENCHMARKS.md) times the same ticker while a worker drains 20,000 jobs on one thread.
//!
//! # After a restart of memcached
//!
//! Pooled connections fail; the failed request is sent again once on a fresh connection if
//! the server never answered it, and the idle pool is dropped. The next `push`, `reserve` or
//! `wait` sees the epoch key missing, logs the state loss once, and carries on: new pushes
//! and reservations work at once. Leases from before the restart are refused (`LeaseLost`).
//!
//! # What was tested
//!
//! Against a real memcached 1.6.18, each case under its own key prefix:
//!
//! - the conformance suite of `queue-tests`: every storage and engine case passes
//!   (`reserve_by_name` reports itself not applicable), including 10,000 jobs taken by 8
//!   concurrent reservers with none delivered twice;
//! - `tests/behaviour.rs`: two independent stores (as two processes) reserving one queue
//!   while two others push, with no job twice and none lost; an expired lease found by the
//!   other store; a slot left empty by a pusher that died is skipped within the wait and a
//!   late write to it refused; slots claimed by a reserver that died come back through the
//!   janitor; the payload limit at push, and the largest payload failing into the failed
//!   store with a truncated reason; queue names and lock keys with spaces, colons,
//!   newlines, non-ASCII and 400 characters; selection by `memcache://` and `memcached://`;
//!   counters added from two stores at once with positive and negative deltas (exact sums,
//!   the edges of the range round-trip, values beyond it saturate); worker statistics
//!   flushed 240 times between jobs whose payloads are all `-` (their freed items lie beside
//!   new counters) with every flush accepted and every sum exact; counter names with odd
//!   characters, memcached's own expiry set
//!   and cleared, expired counters dropped from the index with their emptied group (and
//!   listed again when written later), a group kept bounded by writers alone, and
//!   `oldest_available` counting an expired lease from its deadline (seen by another
//!   store) and a due delayed job from its due time; 400 jobs sharing one lock taken by 24
//!   reservers on four stores (two of them talking through a proxy that holds back the count
//!   updates at the end of their requests), most of them released with a delay and promoted
//!   again, every job acknowledged once within its lease and the sizes exactly zero
//!   afterwards; a promotion whose count update reaches memcached after the reservation and
//!   acknowledgement of its job, with no phantom job left; a waiting count left too high or below zero by a simulated crash
//!   repaired once the queue is idle, and left alone on a queue with a job waiting;
//! - `tests/ops.rs`: the operations cases of `queue-tests` (`oldest_available`, `counters`,
//!   `engine_stats_and_restart`: statistics kept by a worker and the restart signal);
//! - `tests/restart.rs`: starts its own memcached on port 11311, kills it (pushes fail while
//!   it is down), starts it again, and checks that the driver reconnects, logs the state loss
//!   once at `error` level, refuses leases from before and pushes and reserves as usual;
//!   and freezes another (port 11312) with SIGSTOP under busy reservers on one thread, which
//!   keeps running other tasks on time (see "No blocking on the runtime");
//!
//! Throughput is measured by the workspace's bench binary, not by tests: see BENCHMARKS.md.

mod client;
mod error;
mod keys;
mod options;
mod record;
mod storage;

use std::sync::Arc;

use futures::future::BoxFuture;
use queue_core::{ConnectOptions, Result, Storage};

pub use error::MemcachedError;
pub use options::{MemcachedOptions, DEFAULT_PORT};
pub use storage::MemcachedStorage;

/// The driver's name, as [`Storage::driver`] reports it.
pub const DRIVER: &str = "memcached";

queue_core::__private::inventory::submit! {
    queue_core::DriverRegistration { schemes: &["memcache", "memcached"], connect: connect_url }
}

fn connect_url(
    url: String,
    options: ConnectOptions,
) -> BoxFuture<'static, Result<Arc<dyn Storage>>> {
    Box::pin(async move {
        let mut settings = MemcachedOptions::from_url(&url)?;
        if let Some(table) = options.table {
            if !settings.prefix_from_url() {
                settings = settings.prefix(table);
            }
        }
        if let Some(failed) = options.failed_table {
            if !settings.failed_prefix_from_url() {
                settings = settings.failed_prefix(failed);
            }
        }
        let storage = MemcachedStorage::connect(settings).await?;
        Ok(Arc::new(storage) as Arc<dyn Storage>)
    })
}
