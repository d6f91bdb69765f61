//! The file driver of `queue-core`: a queue store in a directory, for one machine, with no
//! server to run. Any number of worker processes on that machine can share one store. Each job
//! is one file whose name holds its state, so most transitions are one atomic `rename(2)`;
//! the few that touch several files run under the store's lock with an intent that the next
//! process finishes if this one dies.
//!
//! # Use
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! use queue_core::{Queue, WorkerOptions};
//! use queue_file::{FileOptions, FileStorage};
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("queue");
//!
//! // Or `Queue::connect("file:///var/lib/myapp/queue")` in a binary that links this crate.
//! let store = FileStorage::open(FileOptions::new(&path)).await?;
//! let queue = Queue::new(store);
//! queue.listen("greet", |name: String, _ctx| async move {
//!     println!("hello, {name}");
//!     Ok(())
//! });
//! queue.dispatch_named("greet", serde_json::json!("world")).await?;
//! let summary = queue
//!     .worker(WorkerOptions::default().queues(["default"]).stop_when_empty())
//!     .run()
//!     .await?;
//! assert_eq!(summary.processed, 1);
//! # Ok(()) }
//! ```
//!
//! # URL and options
//!
//! `file:///abs/path/to/dir`, `file://relative/dir`, `file:relative/dir` or a plain path, with
//! optional `?fsync=false&table=jobs&failed_table=failed`. In code, [`FileOptions`]:
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `root` | | the store's directory |
//! | `fsync` | `true` | sync files and directories so that jobs survive a power loss |
//! | `table` | `jobs` | the sub-directory for jobs |
//! | `failed_table` | `failed` | the sub-directory for failed jobs |
//! | `migrate` | `true` | create the store's directory when it is missing |
//!
//! The scheme `file` is registered with `queue-core`, so `Queue::connect("file:///...")` works
//! in any binary that links this crate (`use queue_file as _;`).
//!
//! # Capabilities
//!
//! Everything the contract has: unique claims (replacing a queued job that holds the key when
//! a push asks to: debounce) and push effects, the failed store (pages by cursor, newest
//! first), inspection (sizes, queues, clearing, listing jobs by state by
//! cursor), groups (counters, waiting jobs released by their dependencies for chains,
//! workflows and batch callbacks, and applying effects with no lease), single jobs by id
//! (finding one, cancelling it, records kept for it), the restart signal, the worker registry
//! (`workers/`, below), reserving by job name, and wake-ups. Three work differently than on a server:
//!
//! - **Wake-ups** of other processes go through the file system: an idle worker wakes at
//!   once for a push, retry or release made through this process, within milliseconds for
//!   one made by another process (the `ready/` directories of its queues are watched:
//!   inotify on Linux, through the `notify` crate; at most one wake-up every 2 ms), and at
//!   the next due job or lease deadline it knows of. Where a directory cannot be watched,
//!   the worker polls at its `sleep`. A waiting job released by a settle or an apply is
//!   published into `ready/` as a push is, and wakes workers the same way.
//! - **Listing** reads whole directories: [`Inspect::size`](queue_core::storage::Inspect::size),
//!   a page of [`Inspect::jobs`](queue_core::storage::Inspect::jobs) or of the failed store
//!   costs in proportion to the queue, not to the page.
//! - **A job by id** is found by listing directories too: a job id names no queue, so
//!   [`Track::job`](queue_core::storage::Track::job) and
//!   [`Track::cancel`](queue_core::storage::Track::cancel) list the `ready/` and `reserved/`
//!   of every queue (twice before answering that the job is not there, as a job can move
//!   between two listings), at a cost in proportion to the store.
//!
//! **Jobs by id and records.** A job is in a queue while its file is in `ready/` (waiting,
//! or delayed while its time is to come) or `reserved/`; its file name gives its state, due
//! time (its available time, or its lease's deadline) and attempts, and its header its name
//! and claim. A cancel takes the store's lock and looks for the job. In `ready/`, or in
//! `reserved/` under a lease that ran out, the job's file is unlinked, or for a job with a
//! claim taken by one step of the journal that releases the claim with it: the unlink or
//! the take is the fence against a worker reserving or renewing the job at the same moment
//! (when two processes move one file, exactly one succeeds), and the loser looks again, so
//! a job is never both reserved and reported removed. Reserved under a live lease, the job
//! gets its `cancel` record, and every `extend` of its lease then reads that record and
//! reports `LeaseStatus::Cancelled` (renewing the lease all the same). A record is one file,
//! `records/JOB.KIND`, written whole (staged in `tmp/`, synced, renamed over the old one)
//! and only under the store's lock, so readers take no lock. The records of a settle
//! (`Effect::Record`) are staged before the lock and put by the settle's step of the
//! journal exactly when its move is taken (a stale lease writes none, a crash finishes them
//! with the job's transition). A `put_record` fenced by a lease checks, under the lock, that
//! the reservation with the lease's token is still in `reserved/`: that excludes every step
//! that takes the lock (a settle with effects or a claim, a fail, a cancel), but a
//! transition that takes no lock (an acknowledgement of a job without a claim or effects, a
//! retry or release without effects, an extension, a reservation of a job whose lease ran
//! out) can happen between that check and the write, so a fenced record can land just
//! after its lease stopped being the job's current one. An expired record is never read;
//! `prune_records` reads every record file and deletes the expired ones, each read again
//! under the lock, 500 per hold of it. A record file that does not read as one counts as
//! no record, is logged, and is left for an operator.
//!
//! A new payload in a settle (`Effect::Payload`, a retried encrypted job sealed again with the
//! active key) goes through the journal: the job's file with the new payload (same queue,
//! name and claim) is staged in `tmp/` before the lock, and the step that takes the
//! reservation puts it into `ready/` under the retry's name, then deletes the old file. A
//! crash before the reservation is taken leaves the job reserved with its old payload (back
//! after its lease); after, the next lock holder finishes the step: one version, the new one.
//!
//! Not supported: parking a job on a lock (`Effect::Park`, `capabilities().park` is false;
//! refused with `NotSupported`): a `without_overlapping` job whose key is busy looks again
//! after its delay (`lock_retry`, or its own `release_after`).
//!
//! A guarded apply (`Groups::apply_if`, how a schedule claims a tick) checks its counter
//! under the store's lock, after finishing what crashed steps left. Refused, it writes
//! nothing (the jobs it staged in `tmp/` are deleted) and returns `false`. Applied, it is one
//! step of the journal as `Groups::apply` is: the counter's new value is in its intent and
//! is set in the same write of the group's file as the step's counter deltas, so of any
//! number of processes racing on one value exactly one applies, and a crash finishes the
//! value and the effects together or neither.
//!
//! A push whose claim asks to **replace** (`Unique::replace`) looks at its key's holder under
//! the store's lock. Held by a job that is queued (its file in its queue's `ready/`: waiting
//! or delayed; a reserved job's file is in `reserved/`, a failed job's in the failed store),
//! that job's new version, a job file with the push's name and payload and the job's queue
//! and claim, is written to `tmp/` and synced, and one step of the journal takes the old file
//! out of `ready/` (a rename into `tmp/`: it fails if a worker reserved the job meanwhile,
//! and then the push is a duplicate) and renames the new version into `ready/` under the same
//! id and attempts with the push's due time (which wakes idle workers as a push does); the
//! claim file is not touched. The push reports `Pushed::Replaced`; held otherwise,
//! `Pushed::Duplicate`. Killed at any point, the job is
//! the old version or the new, once. The jobs of one call with one key come to one job, as in
//! the memory store: the first is pushed if the key is free and each later replacing one
//! replaces it. The holder's file is found in this process's listing of `ready/`, else by
//! listing the directory, so a replacing push costs in proportion to the holder's queue. A
//! process caches job names (for reserving by name and listing); each replacement renews
//! `control/replaced`, and a process that finds it changed forgets the names of jobs with a
//! claim, and a reservation by name that finds another name in the file it took puts the job
//! back as it was.
//!
//! # Layout on disk
//!
//! ```text
//! ROOT/                                   0700; refused if group or others can write it
//!   jobs/QUEUE/ready/AVAILABLE-ID-ATTEMPTS                   available or delayed jobs
//!   jobs/QUEUE/reserved/DEADLINE-ID-ATTEMPTS-TOKEN           reserved jobs
//!   failed/FAILED_AT-ID                   failed jobs; the file name is the record's id
//!   claims/KEY                            one file per held unique key: the holder (JSON)
//!   groups/GROUP                          a group's counters (JSON)
//!   waiting/KEY                           a waiting job: dependencies left, and the job
//!   records/JOB.KIND                      a record kept for a job: its expiry and value;
//!                                         also a group's value (`Effect::Value`, a workflow
//!                                         node's output): JOB is `values`, the group and
//!                                         the name, KIND `value`, never expiring, deleted
//!                                         with the group's counters (a listing of
//!                                         `records/` finds them)
//!   locks/KEY                             one file per held lock: owner and expiry
//!   workers/WORKER                        the worker registry: one file per live worker
//!                                         process, its id, expiry and entry (see below)
//!   control/lock                          the store's lock (an empty file, `flock`ed)
//!   control/restart                       the restart generation
//!   control/replaced                      renewed by each push that replaces a queued job
//!   journal/ID                            the intent of a step under the lock (JSON)
//!   tmp/                                  files being written, renamed into place when whole
//! ```
//!
//! - Directories are created 0700 and files 0600, whatever the umask.
//! - `QUEUE`, `KEY` (of a claim, a lock or a waiting job), `GROUP` and a record's `JOB` (the
//!   job id of its key) are the names with every byte other than ASCII letters, digits, `_`,
//!   `-` and `.` (and a leading `.`) written as `%XX`; the empty queue name is `%`; a name
//!   too long for a file name keeps a prefix and ends in a 128-bit hash. A record's `KIND`
//!   is 1 to 32 ASCII letters, digits, `-` and `_` (others are refused), so the last `.`
//!   of a record's file name ends its `JOB`.
//! - `AVAILABLE`, `DEADLINE` and `FAILED_AT` are milliseconds since the Unix epoch, zero-padded
//!   to 15 digits; `ID` is 24 hex digits that sort by creation; `ATTEMPTS` counts
//!   reservations; `TOKEN` fences a reservation. Listing `ready/` in name order is FIFO by
//!   available time, ties by push order.
//! - A job file holds only what its transitions never change (a push that replaces the
//!   job writes a new file, renamed over it in the journal's step):
//!
//!   ```text
//!   queue-file job v1
//!   queue: QUEUE
//!   name: NAME
//!   unique: KEY                 (only for a job pushed with a claim)
//!   until: terminal             (idem: started, succeeded or terminal)
//!   payload: LENGTH
//!
//!   PAYLOAD BYTES
//!   ```
//!
//!   Header values are UTF-8 with `%`, control characters and DEL written as `%XX`. A failed
//!   record is the same with `job-id`, `attempts`, `failed-at` and `error` lines added, so
//!   retrying it is one rename back into `ready/`.
//! - A waiting job (`Effect::Hold`) is the same with its own first line and fields first,
//!   and is in no queue (not reserved, not counted in a size, not listed) until it is
//!   released:
//!
//!   ```text
//!   queue-file waiting v1
//!   key: KEY                    (its key, written out)
//!   deps: N                     (dependencies left)
//!   available: now              (or `after MILLIS`, counted from its release, or `at MILLIS`)
//!   queue: QUEUE
//!   name: NAME
//!   ...                         (as a job file)
//!   ```
//!
//!   A dependency change (`Effect::Deps`, summed per key over the call) rewrites it whole;
//!   when its dependencies reach zero or below it is deleted and its job published into
//!   `ready/` as a push is, with its claim (dropped if another job holds the key), in the
//!   same step and before the call's fetch. `Effect::Skip` deletes it. A file that does not
//!   read as one (damaged, or written by hand) counts as no job waiting under its key: it
//!   stops no step, is logged, and is left for an operator (a hold of its key replaces it).
//! - A record file holds its key, its expiry (milliseconds since the Unix epoch: it is not
//!   read from then on) and its value:
//!
//!   ```text
//!   queue-file record v1
//!   job: JOB                    (the job id, written out)
//!   kind: status
//!   expires: 1717000000000
//!   payload: LENGTH
//!
//!   VALUE BYTES
//!   ```
//!
//!   A store made by an older version gets `records/` when it is opened; nothing else in its
//!   layout changes (the jobs table may no longer be named `records`).
//!
//! - **The worker registry** ([`Workers`](queue_core::storage::Workers), `runall workers`):
//!   `workers/WORKER` (the worker id as a key file name), one file per live worker, written by
//!   that worker alone every few seconds, whole (staged in `tmp/`, synced with `fsync`, renamed
//!   over the old one), so a reader takes no lock and sees the old entry or the new:
//!
//!   ```text
//!   queue-file worker v1
//!   id: HOST:PID:RANDOM
//!   expires: 1717000000000
//!   payload: LENGTH
//!
//!   ENTRY BYTES
//!   ```
//!
//!   Expiry is judged by each process's clock (the machine's: one machine shares a store).
//!   Listing, and every beat, deletes the files of expired entries; a worker that stalled
//!   past its time to live and beats at the very moment such a listing deletes its file is
//!   listed again at its next beat. A store made by an older version gets `workers/` when
//!   it is opened (the jobs table may no longer be named `workers`).
//!
//! # What each transition costs
//!
//! "Sync" is an `fdatasync` of a file or an `fsync` of a directory; with `fsync=false` there
//! are none, and everything else is the same.
//!
//! | transition | without the store's lock | syncs |
//! |---|---|---|
//! | push, no claims (a batch) | write to `tmp/`, one rename into `ready/` per job | each file, then each `ready/` once |
//! | reserve | one rename `ready/` (or an expired reservation) → `reserved/` per job, one read | none |
//! | extend | one rename within `reserved/` per lease, one open of its job's `cancel` record | none |
//! | settle Ack, no claim, no effects | one unlink | `reserved/` once per batch |
//! | settle Retry or Release, no effects | one rename back into `ready/` | `ready/` and `reserved/` once per batch |
//! | lock, unlock | the key's file rewritten under its own `flock` | none |
//! | put a record, mark a job cancelled | write to `tmp/`, then under the store's lock one rename into `records/` | the file, then `records/` |
//! | a worker's beat (every 10 s) | write to `tmp/`, one rename into `workers/`, a listing of `workers/` | the file |
//! | cancel a waiting or delayed job without a claim | under the store's lock, one unlink | its directory |
//!
//! Every other change is a **step of the journal**, one per call (a whole batch of
//! settlements is one step): settle Fail, settle Ack of a job with a claim, any settlement
//! with effects (records included: each one staged and synced in `tmp/` before the lock,
//! renamed into `records/` by the step), cancelling a job with a claim, push with claims (replacing queued jobs included: one move per job
//! replaced, taking its old file, its new version written and synced in `tmp/` under the
//! lock with one sync of `tmp/`), an apply of effects with no lease (`Groups::apply`, or
//! `Groups::apply_if` whose guard holds),
//! reserve of a job whose claim ends when it starts, retry from the failed store, and
//! clearing jobs with claims. A step costs, on top of its transitions: the store's lock; its
//! intent (a write, a sync, a rename, a sync of `journal/`); one rename per job it takes;
//! each claim, counter group and failed record written whole (a write, a sync, a rename); a
//! sync of each directory it touched; the intent's unlink. Follow-up, pushed and held jobs
//! are written and synced in `tmp/` before the lock is taken. A step with waiting-job effects
//! reads the waiting file of each key it names and decides its **plan** (what becomes of each
//! waiting job) under the lock: each waiting file it changes and each job it releases is
//! written whole (a write, a sync) and renamed into `waiting/` or published into `ready/`.
//! For a settle the plan can only be decided once its moves are taken (a stale settlement
//! applies none of its effects), so its intent is written a second time, with the plan (a
//! write, a sync, a rename, a sync of `journal/`); an apply's intent has its plan from the
//! start. Releasing the claim of a job reserved with `until = started` needs no
//! intent: one unlink under the lock, after the reservation. A retry of a failed job without
//! a claim is one rename under the lock; forgetting, flushing and pruning failed records are
//! unlinks under the lock and one sync of `failed/`.
//!
//! # The store's lock
//!
//! An exclusive `flock(2)` on `control/lock`, taken from the blocking pool and held only for
//! one step. It covers every change to `claims/`, `groups/`, `waiting/`, `records/`,
//! `control/restart`, `journal/` and `failed/`, every cancel, and every step listed above, so that checking a key and taking
//! it, adding to a counter, or meeting a waiting job's last dependency, is one step against
//! every other process. Plain transitions do not
//! take it: they never touch those files, and a job file can be moved by one process only
//! (when two rename the same file, exactly one succeeds; the other gets `ENOENT`). Whoever
//! takes the lock first finishes every intent left in `journal/`: a live process holds the
//! lock while its intent exists, so an intent a lock holder sees is one whose process died.
//!
//! A step takes each job by renaming it out of `reserved/` (found by its token) into
//! `tmp/ID.N.taken`: that rename is the fence (it fails if another worker took the job: the
//! lease is stale and nothing of the settlement is applied) and the commit (once it is done
//! the step happens). A worker whose reservation was recovered by another finds no file
//! with its token: its settlement is `Stale` and its renewal `Lost`.
//!
//! # Crashes
//!
//! A killed process never loses a job, applies a counter or a dependency change twice,
//! releases a waiting job twice, or leaves a claim without its job or a job whose claim
//! vanished early. The next process to take the lock (at open, at its next step, or in the
//! sweep every half minute that rides on `reserve`) finishes each intent from what is on
//! disk: moves whose `taken` file is there are completed with their effects; moves never
//! taken are dropped with their staged follow-ups, held jobs and records; a group's counter
//! file records the last intent applied to it, so its deltas are added once; claim changes
//! are conditional, publications and records happen once (their source is gone after); a
//! plan in the intent is carried out as it stands (a waiting file is put once, as its
//! staged file is gone after; deleting one is done once it is gone), and an intent without
//! one, whose moves
//! carry waiting-job effects, has nothing of it carried out yet, so its plan is decided then
//! from `waiting/` as it is.
//! Then what is left in `tmp/` is sorted: a job outside both stores (a `taken` file without
//! its intent; an older version's `*.failing` or `*.stray` file, once a minute old) goes to
//! the failed store with a reason; an older version's staged failed record goes into the
//! failed store; files of steps that never published anything are deleted (staged pushes,
//! holds and records after an hour). What a crash can still do:
//!
//! - a push without claims killed mid-batch may have published part of the batch (it did
//!   not return, so none of it was promised; a push that fails otherwise takes back what it
//!   published unless a worker already took it);
//! - a reservation of a job whose claim ends when it starts, killed before the release, keeps
//!   the key until the job is reserved again or leaves the queue;
//! - a job reserved by a process that died comes back when its lease runs out, its attempt
//!   counted.
//!
//! # Guarantees
//!
//! - **At least once.** A job runs until a worker acknowledges it; a job whose worker
//!   crashed (or hung past its lease) is reserved again after the lease.
//! - **No double delivery between live leases.** A job file is in one place at a time and only
//!   one process can move it, so two workers never hold valid leases on one job.
//! - **Atomic:** each job's transition with its effects, against other processes and crashes.
//!   Readers that take no lock (sizes, reservations, counters, `Groups::waiting`) may see a
//!   step half done, for instance a follow-up job before the counter delta of the same
//!   settlement, or a released job in its queue while its waiting file is still there.
//! - **Durability, with `fsync` on (the default).** A job is durable once `push` returns, also
//!   across a power loss on a file system and drive that honour `fsync` (ext4, xfs, btrfs on
//!   Linux; on macOS `fsync` does not flush the drive's cache). Intents are durable before
//!   their step moves anything; failed records, claims, counters and waiting jobs are synced
//!   before the intent goes. Reservations, lease extensions and locks are not synced: after a power loss
//!   a job reserved just before is simply available again, perhaps without that attempt
//!   counted.
//! - **Without `fsync`** a crash of the machine may lose recent jobs and changes; a crash of a
//!   process never does (the page cache survives it).
//! - **A damaged file never stops a queue.** A file in a queue with a name this driver does not
//!   write, or a job file whose header or payload is damaged (truncated, garbage, non-UTF-8
//!   header), is moved to the failed store with the reason and its bytes; workers carry on.
//! - **Clocks:** due times, leases and lock expiries are judged by the machine's clock
//!   (`SystemTime`), which all processes share. A clock stepped back delays jobs and leases;
//!   stepped forward, it ends leases early (the job may then run twice: at least once).
//! - **Order:** strict priority across the queues of a reserve; FIFO by available time within a
//!   queue. A process lists a queue's directory again when its listing has nothing due or is a
//!   second old; jobs pushed meanwhile by other processes are due later and so sort after the
//!   listed ones anyway.
//! - **Not supported:** NFS and other network file systems (their `rename`, `O_EXCL` and
//!   `flock` semantics are not those of a local file system), and stores shared between
//!   machines. Windows is not supported (Unix permissions, `flock`).
//!
//! # Tested
//!
//! The conformance suite of `queue-tests` (every storage and engine case, on a fresh 0700
//! directory each), plus: modes 0700/0600 under umasks 022, 000 and 277 (in child processes);
//! refusal of a group- or world-writable directory; stray, truncated, headerless and non-UTF-8
//! files written straight into a queue while a worker runs; six worker processes reserving
//! and acknowledging 2,000 jobs from one directory, each exactly once; four processes
//! settling 400 jobs with counter deltas, follow-ups of shared keys and the dependencies of
//! one waiting job, exact and released once; a settlement (acknowledged or failed, with a
//! counter, a follow-up and a record), a push with a claim, and a settlement and an apply with
//! waiting-job effects (a release with a claim, a dependency change, a skip, a hold, a
//! counter), a guarded apply and a push replacing a queued job, each killed at every point
//! of its step and finished by the next open, twice; two handles racing replacing pushes of
//! one key against a worker (never two jobs for the key, each delivered once); names cached
//! by another handle following a replacement; four processes racing through 60 ticks of a schedule with guarded
//! applies, each tick won once;
//! waiting-job files as documented, a delay counted from the release, a damaged waiting file
//! stopping nothing; the files older
//! versions left in `tmp/` when killed mid-fail, recovered at open; a worker process that
//! exits holding 50 jobs, which come back after their lease with the attempt counted; plain
//! paths completing while another process holds the store's lock; two handles on one
//! directory fencing each other; idle waits that end at the next due job; record files as
//! documented, a damaged one stopping nothing, and `records/` made in an older store.

#![cfg(unix)]

mod disk;
mod error;
mod format;
mod locks;
mod options;
mod storage;

use std::sync::Arc;

use futures::future::BoxFuture;
use queue_core::{ConnectOptions, Storage};

pub use error::FileError;
pub use options::FileOptions;
pub use storage::FileStorage;

/// Not public API: the fuzz target's entry into the on-disk format's parsers.
#[doc(hidden)]
pub use format::fuzz_parsers as __fuzz_parsers;

/// Not public API: makes this process abort, as if killed, when a step of the journal
/// reaches `point` (`written`, `taken`, `planned`, `applied`, `finalized`), for the crash
/// tests.
#[doc(hidden)]
pub fn __crash_at(point: &'static str) {
    disk::crash_at(point);
}

/// The driver's name, as [`Capabilities::driver`](queue_core::Capabilities::driver) reports
/// it.
pub const DRIVER: &str = "file";

queue_core::__private::inventory::submit! {
    queue_core::DriverRegistration { schemes: &["file"], connect: connect_url }
}

fn connect_url(
    url: String,
    options: ConnectOptions,
) -> BoxFuture<'static, queue_core::Result<Arc<dyn Storage>>> {
    Box::pin(async move {
        let mut file_options = FileOptions::from_url(&url)?;
        if let Some(table) = options.table {
            file_options.table = table;
        }
        if let Some(failed) = options.failed_table {
            file_options.failed_table = failed;
        }
        file_options.migrate = options.migrate;
        let store: Arc<dyn Storage> = Arc::new(FileStorage::open(file_options).await?);
        Ok(store)
    })
}
