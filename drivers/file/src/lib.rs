//! The file driver of `queue-core`: a queue store in a directory, for one machine, with no
//! server to run. Any number of worker processes on that machine can share one store; each job
//! is one file, and every change of a job's state is one atomic `rename(2)`.
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
//! # Layout on disk
//!
//! ```text
//! ROOT/                                   0700; refused if group or others can write it
//!   tmp/                                  files being written, renamed into place when whole
//!   jobs/QUEUE/ready/AVAILABLE-ID-ATTEMPTS                   waiting or delayed jobs
//!   jobs/QUEUE/reserved/DEADLINE-ID-ATTEMPTS-TOKEN           reserved jobs
//!   failed/FAILED_AT-ID                   failed jobs; the file name is the failed id
//!   locks/KEY                             one file per held lock: owner and expiry
//!   counters/NAME                         worker statistics and the restart signal
//! ```
//!
//! - Directories are created 0700 and files 0600, whatever the umask.
//! - `QUEUE` and `KEY` are the names with every byte other than letters, digits, `_`, `-`
//!   and `.` (and a leading `.`) written as `%XX`; the empty queue name is `%`.
//! - `AVAILABLE`, `DEADLINE` and `FAILED_AT` are milliseconds since the Unix epoch, zero-padded
//!   to 15 digits; `ID` is 24 hex digits that sort by creation; `ATTEMPTS` counts
//!   reservations; `TOKEN` fences a reservation. Listing `ready/` in name order is FIFO by
//!   available time, ties by push order.
//! - A job file holds only what never changes:
//!
//!   ```text
//!   queue-file job v1
//!   queue: QUEUE
//!   name: NAME
//!   payload: LENGTH
//!
//!   PAYLOAD BYTES
//!   ```
//!
//!   Header values are UTF-8 with `%`, control characters and DEL written as `%XX`. A failed
//!   record is the same with `job-id`, `attempts`, `failed-at` and `error` lines added, so
//!   retrying it is one rename back into `ready/`.
//!
//! Every transition is one rename: push (`tmp/` to `ready/`), reserve (`ready/` to
//! `reserved/` with a new token and attempts + 1), extend (`reserved/` to `reserved/` with a new
//! deadline, same token), recovering an expired reservation (to a new token), release (back to
//! `ready/`), retrying a failed job (`failed/` to `ready/`). When two processes rename the same
//! file, exactly one succeeds; the other gets `ENOENT` and moves on. Acknowledging deletes the
//! file; failing claims it with a rename into `tmp/`, writes the failed record, then deletes it.
//! A worker whose reservation was recovered by another finds no file with its token: its
//! acknowledge returns `false`, its release, fail and extend [`LeaseLost`](queue_core::Error::LeaseLost).
//!
//! Locks: all changes to `locks/KEY` are made under an exclusive `flock(2)` of that file, so
//! checking the expiry and taking over are one step; a process that dies drops its `flock`.
//!
//! # Guarantees
//!
//! - **At least once.** A job runs until a worker acknowledges it; a job whose worker
//!   crashed (or hung past its lease) is reserved again after the lease, its attempt counted.
//! - **No double delivery between live leases.** A job file is in one place at a time and only
//!   one process can move it, so two workers never hold valid leases on one job.
//! - **Durability, with `fsync` on (the default).** A job is durable once `push` returns, also
//!   across a power loss on a file system and drive that honour `fsync` (ext4, xfs, btrfs on
//!   Linux; on macOS `fsync` does not flush the drive's cache): its file is synced before it
//!   is renamed into place and the directory is synced after. Failed records are written the
//!   same way before the job leaves its queue. Acknowledgements, releases, retries and the
//!   failed store's deletions are synced too, one directory sync per batch. Reservations,
//!   lease extensions, locks and counters are not: after a power loss a job reserved just
//!   before is simply available again, perhaps without that attempt counted.
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
//! - **Edges:** a crash in the microseconds between claiming a failing job and writing its
//!   failed record leaves the job in `tmp/` (`*.failing`), where an operator can find it; a
//!   failed `push` of a batch takes back what it published unless a worker already took it.
//! - **Waiting:** an idle worker sleeps its poll interval, but never past the next due job or
//!   lease deadline this process knows of, and wakes at once for jobs this process pushes.
//!
//! # Tested
//!
//! The conformance suite of `queue-tests` (every storage and engine case, on a fresh 0700
//! directory each), plus: modes 0700/0600 under umasks 022, 000 and 277 (in child processes);
//! refusal of a group- or world-writable directory; stray, truncated, headerless and non-UTF-8
//! files written straight into a queue while a worker runs; six worker processes reserving
//! and acknowledging 2,000 jobs from one directory, each exactly once; a worker process that
//! exits holding 50 jobs, which come back after their lease with the attempt counted; two
//! handles on one directory fencing each other; idle waits that end at the next due job.

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
/// reaches `point` (`written`, `taken`, `applied`, `finalized`), for the crash tests.
#[doc(hidden)]
pub fn __crash_at(point: &'static str) {
    disk::crash_at(point);
}

/// The driver's name, as [`Storage::driver`] reports it.
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
