//! The memcached driver of `queue-core`: queues in a memcached server, for deployments that
//! already run one and accept that **jobs live only in memory**.
//!
//! # Read this first
//!
//! - **Not durable** (`Capabilities::durable` is false): a restart of memcached, a
//!   `flush_all` or an eviction loses jobs, reservations, failed jobs, claims and locks. Size
//!   memcached so it never evicts (`-m` well above the peak; watch `evictions`).
//! - **At-least-once while memcached keeps the items**: a job is delivered until a worker
//!   acknowledges it; a job whose worker dies comes back when its lease runs out.
//! - **State loss is detected**: an epoch key written at connect is read with every push
//!   and reservation; when it is gone the driver logs at `error` once per loss and
//!   carries on ([`MemcachedStorage::state_losses`]). Leases from before are refused.
//! - One server; workers' clocks must agree within 10 seconds (due times and deadlines are
//!   judged by them: memcached's clock has whole seconds only).
//!
//! # Connecting
//!
//! `memcache://host[:port][?option=value&...]` (or `memcached://`; port 11211):
//!
//! | option | default | what |
//! |---|---|---|
//! | `prefix` | `queue` (or the config's `table`) | key prefix of everything |
//! | `failed_prefix` | `{prefix}_failed` (or `failed_table`) | key prefix of the failed store |
//! | `pool` | 16 | connections (concurrent round trips) |
//! | `timeout` | `5s` | one round trip, or connecting |
//! | `missing_slot_wait` | `1s` | how long a reservation waits for a slot a pusher has not written yet |
//! | `idle_poll` | `20ms` | the longest a waiting worker goes between two looks for jobs (memcached cannot notify; see below) |
//!
//! Needs memcached 1.6 (the meta protocol). Payloads up to `item_size_max` (read at connect)
//! minus about 5 KiB; a larger one is refused at push with `Error::PayloadTooLarge`.
//!
//! # What it can do
//!
//! Unique claims and push effects, the failed store (its ids scanned newest first, by
//! cursor), inspection (sizes, queues, clear, oldest available job), jobs by id
//! ([`Track`](queue_core::storage::Track): status, cancel, records and `Effect::Record`,
//! with the weaker points said in [Jobs by id](#jobs-by-id)), locks (items written
//! with `add`, holding owner and expiry, renewed and released with `cas` by their owner) and
//! the restart signal (one key, `{prefix}:restart`, increased by `incr`), the worker registry
//! (`runall workers`, with the weaker points said in [The worker
//! registry](#the-worker-registry)). memcached cannot notify, so a waiting worker
//! looks for jobs (one pipelined read of each queue's head and tail), 2 ms after it began
//! to wait and then twice as long each time up to
//! [`idle_poll`](crate::MemcachedOptions::idle_poll) (20 ms by default, never past
//! `--sleep`): a push by another process starts within about that. Not supported, with
//! [`Error::NotSupported`](queue_core::Error::NotSupported):
//!
//! - **group counters and waiting jobs (batches, chains, workflows)**, `Effect::Count`,
//!   `Effect::Hold`, `Effect::Deps` and `Effect::Skip`: a counter update or a dependency
//!   change would have to happen exactly once with the job's transition, and with single-key
//!   steps a crash between the two applies it twice or never. A settle carrying one is
//!   refused before anything changes; the store has no
//!   [`Groups`](queue_core::storage::Groups) capability (no `Groups::apply`, no
//!   `Groups::waiting`).
//! - **parking a job on a lock** (`Effect::Park`, `Capabilities::park`): the park and the
//!   unlock that wakes it would be separate single-key steps, so a wake-up could be lost; a
//!   `without_overlapping` job whose key is busy looks again after its delay instead.
//! - **reserving by job name** (`runall run NAME`): a slot queue cannot skip jobs.
//! - **replacing a queued job** (debounce: `Unique::replace`, `on_conflict = "replace"`):
//!   the queued job's payload, record and due-time entry are separate items, so rewriting
//!   them cannot be one step against a reservation. `Capabilities::replace` is false; a push
//!   asking for it is refused before anything is written.
//! - **listing jobs** (`Inspect::jobs`): memcached cannot list keys, and a delayed or
//!   reserved job is found only through the second it is due in.
//!
//! # What is atomic, and in what order
//!
//! memcached has atomic `incr`, `add` (store if absent), `cas` (store if unchanged since
//! read) and `delete` with a CAS token, each on one key, and nothing across keys. Every step
//! below is one such command; a request pipelines many, but each command stands alone. The
//! order makes every transition safe to replay and every crash between steps recoverable.
//!
//! **Push.** (1) `incr` allocates ids and slot numbers. (2) Each unique key is claimed
//! with `add` of `{prefix}:u:{key}` naming the job. (3) Timer entries of delayed jobs are
//! appended in a request of their own; if a bucket refuses one, the push fails, its slots get
//! tombstones and its claims are deleted: nothing of it is stored. (4) Payloads, then
//! records, then slot items (with `add`), then the size counts. A push of several jobs is not
//! all-or-none: an error in step 4 may leave some pushed.
//!
//! **Reserve.** One `cas` of the queue's `head` claims up to 256 slots (no two reservers ever
//! claim one); the lease deadlines are listed, then each record moves to *reserved* with
//! `cas` (attempts + 1, a fresh token), then claims held until the job starts are deleted.
//! If the deadline's bucket refuses the entries, the jobs go back to the tail at once and the
//! call fails. Queues are taken in the order given; slots come out in push order.
//!
//! **Settle.** Stale leases (the record's token differs) are reported `Stale` and nothing of
//! them is applied. For a current lease, push effects come first: the lease is renewed if it
//! ends within 15 s, then each follow-up is pushed with its claim (`add`), so a replay, or a
//! second run of the job after a crash, pushes nothing while the follow-up holds its key.
//! Then the transition, one `cas` or CAS-delete of the record: acknowledge deletes it;
//! retry and release list the new due time first and then move it; fail writes the failed
//! record first, then deletes the job. Last, the claim: deleted (compare-and-swap) by the
//! step its `until` names, or handed to the failed job for `until = succeeded`. A crash
//! between effects and transition leaves the follow-up pushed and the job to run again, as
//! any crash does; the reverse order (a transition without its push effects) never happens.
//! Record effects (`Effect::Record`) come *after* the transition, in the next request (see
//! [Jobs by id](#jobs-by-id)): a crash between leaves the transition without its record.
//! Acknowledgements of a batch go in one request; **extend** lists the new deadlines, then
//! renews each lease with `cas`.
//!
//! **Claims after a crash.** A claim is held only while the job it names holds the key in
//! its current record: waiting (reachable in its slot) or delayed and not cleared, reserved
//! unless held until it started, or in the failed store for `until = succeeded`. Otherwise
//! the next push of the key takes it over with `cas`. A claim younger than 15 s whose job
//! is not written yet still holds (its push may be in flight, its clock behind). So a crash between two steps
//! never blocks a key for ever, and a key is never given to a second job while its holder
//! holds it. `clear` releases the claims of the jobs it deletes this way.
//!
//! # Jobs by id
//!
//! [`Track`](queue_core::storage::Track) reads and changes a job through its state record
//! `{prefix}:j:{id}`, the item every reservation and settle changes with compare-and-swap.
//! A job's records are items of their own, `{prefix}:r:{id}:{kind}`.
//!
//! - **`job`** reads the record, and for a job not reserved its queue's generation (a job
//!   `clear` deleted is not found). A delayed job whose time has come but that no sweep has
//!   moved into a slot yet is reported waiting. Ids are the decimal numbers this store
//!   makes; anything else is `None`. (`Inspect::jobs` is still not supported: a job is
//!   found by its id only.)
//! - **`cancel`** of a waiting or delayed job, or of one reserved under a lease that ran
//!   out, is one compare-and-swap delete of its record, and a reservation is one
//!   compare-and-swap of the same record: whichever comes second fails, so a job is never
//!   both removed and reserved (the loser of the race looks again, and marks a job it
//!   finds reserved). After the delete, in later steps: its size count, its payload, its
//!   timer count, and its claim (deleted if it still names the job). A crash in between
//!   leaves a payload item behind, a size count off by one, and a claim that the next push
//!   of the key takes over (see "Claims after a crash"); the job itself is gone. Its slot or
//!   timer entry stays and is skipped.
//! - **Marking** a job reserved under a live lease writes its `cancel` record and reads the
//!   job's record again in the same request: if the job is still held under the same lease
//!   it is reported `Marked`; if not (it was settled or taken again in between), `cancel`
//!   looks again. The mark and the check are two commands, not one step: a mark can be
//!   left on a job that was settled or removed meanwhile (it is never read for it, and
//!   expires after `mark_for`). The mark is kept by job id, as on other drivers: a job
//!   retried while marked is reported cancelled by its next reservation's extends until the
//!   mark expires.
//! - **`extend`** reads the mark in the request that reads the records, before it renews
//!   them: a lease renewed whose job carries an unexpired mark is `LeaseStatus::Cancelled`.
//!   A mark written between that read and the renewal is reported on the next extend.
//! - **Records** hold their expiry (Unix ms) beside the value, and a record past it is
//!   never returned; memcached's own expiry only collects the item, one second later than
//!   the record's (memcached counts whole seconds), as an absolute Unix time when that is
//!   over 30 days away. The expiry is stamped by the writer's clock and judged by the
//!   reader's: they must agree, as everywhere in this driver. `prune_records` returns 0. Like
//!   every item here, a record may be evicted early, and is lost with memcached's state.
//!   A value larger than an item can hold is refused with `PayloadTooLarge` before anything
//!   is written.
//! - **Fenced `put_record` is a check, then a write** (this is weaker than on the SQL,
//!   Redis, file and memory drivers, where both are one step): the job's record is read and
//!   its lease compared, then the record is written. A lease lost between the two (the job
//!   settled, or taken again after its lease ran out) does not stop the write, which reports
//!   `true`: a stale worker's progress can land up to one round trip after its lease ended.
//!   A lease already stale when checked writes nothing.
//! - **`Effect::Record` is written right after the job's own step, not with it** (weaker
//!   than on the other drivers, where it is part of the settle's atomic step): the
//!   compare-and-swap of the transition (acknowledge, retry, release, or the delete that
//!   ends a failing job) and then, in the next request, the records of the settlements that
//!   applied. A stale lease writes none, and nor does a replay, which is stale. A crash or a
//!   lost connection between the two leaves **a transition without its record** (a job
//!   acknowledged whose `status` record was never written, and never will be: the settle
//!   cannot be replayed); never a record without its transition. If memcached refuses a
//!   record after the transition (out of memory), the settle returns the error although the
//!   transition stands.
//! - **`Effect::Payload` is written right after the job's own step too** (a retried
//!   encrypted job sealed again with the active key): the job's body item is replaced in
//!   the request after the compare-and-swap that puts the job back, only if it still exists.
//!   A worker that reserves the job in between reads the old payload: the same job's data
//!   under the old key, which it opens as before. A crash in between leaves the old payload.
//!
//! # The worker registry
//!
//! [`Workers`](queue_core::storage::Workers) (`runall workers`, `Queue::workers`): memcached
//! cannot list keys, so the ids of the workers live in one index item, `{prefix}:workers`
//! (one id per line), changed only by compare-and-swap, and each worker's entry is an item
//! of its own, `{prefix}:w:{id}`, holding its expiry (milliseconds, by the writing worker's
//! clock) and the entry, with a native expiry two seconds later.
//!
//! - A **beat** writes the entry (`set`), then reads the index and adds its id with
//!   compare-and-swap if it is not there.
//! - A **listing** reads the index, then every entry in one pipelined request; the ids whose
//!   entries are gone or expired are dropped from the index with compare-and-swap.
//! - **Leaving** deletes the entry and drops the id from the index.
//!
//! Weaker than on the other drivers: expiry is judged by the workers' clocks (which must
//! agree anyway, see above); an entry or the index lost by memcached (eviction, restart,
//! `flush_all`) leaves workers out of the list until their next beat (at most 10 s), which
//! writes them again; and a listing that drops an expired id at the very moment its worker
//! beats again (a worker that stalled past its time to live) leaves that worker out until
//! its next beat. An expired entry is never listed.
//!
//! # Recovery: timers, sweep, janitor
//!
//! Every delayed job's due time and every lease deadline is listed by job id in a per-queue
//! bucket of one second, spread over 16 sub-buckets by id (`{prefix}:q:{queue}:t:{second}:{k}`),
//! with a count per second: about 1.8 million entries per second per queue at the default
//! 1 MiB item size. A *sweep* (inside `reserve` and `size`, at most every 250 ms per queue
//! per process) reads the counts from a shared cursor up to now, promotes due delayed jobs
//! into slots at the tail and hands expired reservations to the caller (the old token is
//! fenced off). Buckets older than 10 s are deleted once swept. A *janitor*, run with the
//! sweep, checks slots claimed more than 5 s earlier and puts jobs still waiting in them back
//! at the tail: a reserver that died between claiming slots and reserving their jobs.
//! A claimed slot whose item is missing (a pusher between its `incr` and its write) is
//! waited for up to `missing_slot_wait`, then tombstoned with `add`; a late pusher is told
//! and takes a new slot.
//!
//! # How exact sizes are
//!
//! `Inspect::size` reads counters kept beside each transition (waiting and delayed per
//! generation, reserved), updated in the request that makes the transition, after it, and
//! undone when its compare-and-swap lost. Updates carry a sign (the value is stored plus 2^62)
//! so they commute across processes: exact once every update has arrived. A process killed
//! between a transition and its count, or mid-request, leaves a count off by the jobs of that
//! request, for good (`clear` starts the waiting and delayed counts of a queue afresh). The
//! jobs themselves are unaffected. `queues` lists queues ever pushed to whose counts are not
//! zero.
//!
//! # The client
//!
//! The driver speaks the meta protocol itself over tokio's `TcpStream` (`client.rs`): each
//! operation sends a batch of mixed commands (`mg`, `ms` with its own CAS token, `md`, `ma`)
//! in one write while reading the replies concurrently, from a bounded pool; it reads reply
//! lines up to 8 KiB and values up to the server's `item_size_max`. No crate does that: `memcache`
//! 0.21 blocks (an r2d2 pool; on `spawn_blocking` every round trip holds a thread, and it
//! sends one command per round trip but for multi-gets; its default `tls` feature pulls in
//! OpenSSL); `async-memcached` 0.9 has the meta protocol but one connection per `&mut`
//! client, pipelines only of one command kind with the same flags for every key (so no
//! per-item CAS), written whole before any reply is read; `memcache-async` 0.10 speaks only
//! the text protocol, one command per round trip but for multi-gets, and allocates whatever
//! value length the server announces. A reservation of a batch costs about five round trips whatever its size.
//! `tests/restart.rs` freezes memcached (SIGSTOP) under busy reservers on a one-thread
//! runtime: other tasks keep running on time.
//!
//! After a restart of memcached, pooled connections fail; a request the server never
//! answered is sent once more on a fresh connection, and the next push or reservation
//! notices the lost epoch. The restart generation reads 0 again: workers take the change
//! for a restart signal, and restart.

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

/// The driver's name, as [`Capabilities::driver`](queue_core::Capabilities) reports it.
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
            if !settings.url_prefix {
                settings = settings.prefix(table);
            }
        }
        if let Some(failed) = options.failed_table {
            if !settings.url_failed_prefix {
                settings = settings.failed_prefix(failed);
            }
        }
        let storage = MemcachedStorage::connect(settings).await?;
        Ok(Arc::new(storage) as Arc<dyn Storage>)
    })
}
