//! The store's directory tree and every operation on it, all blocking:
//! [`FileStorage`](crate::FileStorage) runs each call on tokio's blocking pool.
//!
//! A job's state lives in its file's name and directory (see [`crate::format`]), so a plain
//! transition is one `rename(2)` of that file: when two processes rename the same file,
//! exactly one succeeds and the other gets `ENOENT`. A transition that also touches claims,
//! group counters, waiting jobs or other jobs runs under the store's lock with an intent in
//! `journal/` ([`journal`]), so it is atomic against other processes and finished after a
//! crash.
//!
//! The rooms: this file (layout, paths, file helpers), [`push`], [`reserve`], [`settle`],
//! [`journal`] (the store's lock and intents), [`claims`], [`groups`] (and the restart
//! signal), [`waiting`] (waiting jobs, and applying effects with no lease), [`failed`],
//! [`inspect`], [`records`] (single jobs by id, cancelling them, the records kept for them),
//! [`recovery`] (what a crash leaves behind), [`workers`] (the worker registry).

mod claims;
mod failed;
mod groups;
mod inspect;
mod journal;
mod push;
mod records;
mod recovery;
mod reserve;
mod settle;
mod waiting;
mod workers;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use queue_core::Unique;

use crate::error::FileError;
use crate::format::{queue_dir_name, ReadyName};
use crate::options::FileOptions;

pub(crate) use journal::crash_at;

type Result<T, E = FileError> = std::result::Result<T, E>;

/// How many job heads (name and claim, read for reserving by name, listing and clearing) a
/// process keeps before starting afresh.
const HEADS_KEPT: usize = 100_000;

fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Creates a directory with mode 0700 whatever the umask; false if it was already there.
fn make_dir(path: &Path) -> Result<bool> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {
            fs::set_permissions(path, Permissions::from_mode(0o700))
                .map_err(FileError::io("chmod", path))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(e) => Err(FileError::io("create directory", path)(e)),
    }
}

/// Creates a file with mode 0600 whatever the umask and writes `bytes` to it.
fn write_new(path: &Path, bytes: &[u8]) -> Result<File> {
    let io = |op| FileError::io(op, path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create"))?;
    file.set_permissions(Permissions::from_mode(0o600))
        .map_err(io("chmod"))?;
    file.write_all(bytes).map_err(io("write"))?;
    Ok(file)
}

fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A file's bytes, `None` if it is not there.
fn read_if_there(path: &Path) -> Result<Option<Vec<u8>>> {
    match read_file(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(FileError::io("read", path)(e)),
    }
}

/// Removes a file; false if it was not there.
fn remove_if_there(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if not_found(&e) => Ok(false),
        Err(e) => Err(FileError::io("remove", path)(e)),
    }
}

/// The regular files in a directory (none if it does not exist).
fn list(dir: &Path) -> Result<Vec<OsString>> {
    let io = |op| FileError::io(op, dir);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(io("list")(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if not_found(&e) => continue,
            Err(e) => return Err(io("list")(e)),
        };
        match entry.file_type() {
            Ok(t) if t.is_file() => names.push(entry.file_name()),
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(io("list")(e)),
        }
    }
    Ok(names)
}

/// Splits a listing into parsed names (sorted) and names this driver never writes.
fn parse_names<T: Ord>(
    names: Vec<OsString>,
    parse: impl Fn(&str) -> Option<T>,
) -> (Vec<T>, Vec<OsString>) {
    let mut good = Vec::with_capacity(names.len());
    let mut bad = Vec::new();
    for name in names {
        match name.to_str().and_then(&parse) {
            Some(parsed) => good.push(parsed),
            None => bad.push(name),
        }
    }
    good.sort_unstable();
    (good, bad)
}

/// The two directories of one queue.
#[derive(Debug, Clone)]
struct QueuePaths {
    dir: PathBuf,
    ready: PathBuf,
    reserved: PathBuf,
}

/// What this process remembers about one queue's `ready/` directory.
#[derive(Debug, Default)]
struct Listing {
    /// The directory as listed at `listed_at`, less what was taken since, plus what this
    /// process added since.
    ready: BTreeSet<ReadyName>,
    listed_at: Option<Instant>,
    /// The earliest lease deadline in `reserved/` still to come at the last look.
    next_deadline: Option<i64>,
    /// When this process last reserved from the queue: what was due then has been looked at,
    /// so an idle wait need not wake for it.
    checked_at: i64,
}

/// A reservation this process made: its file name in `reserved/` (which changes when the
/// lease is extended) and the job's claim (which never changes).
#[derive(Debug, Clone)]
struct Held {
    file: String,
    unique: Option<Unique>,
}

/// The store: its paths and what this process caches about it.
#[derive(Debug)]
pub(crate) struct Disk {
    root: PathBuf,
    jobs: PathBuf,
    failed: PathBuf,
    tmp: PathBuf,
    pub(crate) locks: PathBuf,
    claims: PathBuf,
    groups: PathBuf,
    /// Waiting jobs, one file per key.
    waiting: PathBuf,
    /// Records kept for jobs, one file per job and kind.
    records: PathBuf,
    /// The worker registry, one file per worker.
    workers: PathBuf,
    journal: PathBuf,
    control: PathBuf,
    fsync: bool,
    /// The store's lock (`control/lock`), for steps that touch several files.
    store_lock: journal::StoreLock,
    /// Queues whose directories this process knows exist.
    made: Mutex<HashSet<String>>,
    listings: Mutex<HashMap<String, Listing>>,
    /// Reservation token -> its file and claim, so settling does not list the directory or
    /// read the job. A miss falls back to listing; the file name is the truth.
    held: Mutex<HashMap<String, Held>>,
    /// Job id -> name and claim (read for reserving by name, listing, clearing). The claim
    /// never changes; the name changes when a push replaces the queued job (only a job with
    /// a claim), so the entries of jobs with a claim are dropped whenever `control/replaced`
    /// changes (see [`check_replaced`](Disk::check_replaced)).
    heads: Mutex<HashMap<String, crate::format::Head>>,
    /// `control/replaced` as this process last read it.
    replaced_seen: Mutex<Option<Vec<u8>>>,
    /// When this process last looked for what crashed steps left behind.
    swept_at: Mutex<Instant>,
}

fn guard<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps are caches of what is on disk; after a panic elsewhere they are still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Disk {
    /// Opens (and with `migrate` creates) the store, refusing a directory others can write,
    /// then finishes what crashed steps left behind.
    pub(crate) fn open(options: &FileOptions) -> Result<Disk> {
        options.validate()?;
        let root = options.root.clone();
        let mut created = false;
        match fs::metadata(&root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(FileError::NotADirectory { path: root }),
            Err(e) if not_found(&e) && options.migrate => {
                if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent)
                        .map_err(FileError::io("create directory", parent))?;
                }
                created = make_dir(&root)?;
            }
            Err(e) if not_found(&e) => return Err(FileError::Missing { path: root }),
            Err(e) => return Err(FileError::io("stat", &root)(e)),
        }
        let mode = fs::metadata(&root)
            .map_err(FileError::io("stat", &root))?
            .permissions()
            .mode();
        if mode & 0o022 != 0 {
            return Err(FileError::Insecure {
                path: root,
                mode: mode & 0o7777,
            });
        }
        let control = root.join("control");
        for dir in [
            "tmp", "locks", "claims", "groups", "waiting", "records", "workers", "journal",
            "control",
        ]
        .iter()
        .map(|d| root.join(d))
        .chain([root.join(&options.table), root.join(&options.failed_table)])
        {
            created |= make_dir(&dir)?;
        }
        let disk = Disk {
            jobs: root.join(&options.table),
            failed: root.join(&options.failed_table),
            tmp: root.join("tmp"),
            locks: root.join("locks"),
            claims: root.join("claims"),
            groups: root.join("groups"),
            waiting: root.join("waiting"),
            records: root.join("records"),
            workers: root.join("workers"),
            journal: root.join("journal"),
            store_lock: journal::StoreLock::open(&control.join("lock"))?,
            control,
            fsync: options.fsync,
            made: Mutex::default(),
            listings: Mutex::default(),
            held: Mutex::default(),
            heads: Mutex::default(),
            replaced_seen: Mutex::default(),
            swept_at: Mutex::new(Instant::now()),
            root,
        };
        if created {
            disk.sync_dir(&disk.root)?;
        }
        disk.recover()?;
        Ok(disk)
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        if self.fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(FileError::io("sync directory", dir))?;
        }
        Ok(())
    }

    fn sync_dirs<'a>(&self, dirs: impl IntoIterator<Item = &'a Path>) -> Result<()> {
        let mut seen: Vec<&Path> = Vec::new();
        for dir in dirs {
            if !seen.contains(&dir) {
                seen.push(dir);
                self.sync_dir(dir)?;
            }
        }
        Ok(())
    }

    fn paths(&self, queue: &str) -> Result<QueuePaths> {
        let name = queue_dir_name(queue).ok_or_else(|| FileError::NameTooLong {
            name: queue.to_owned(),
        })?;
        let dir = self.jobs.join(name);
        Ok(QueuePaths {
            ready: dir.join("ready"),
            reserved: dir.join("reserved"),
            dir,
        })
    }

    /// The directory of a queue's waiting jobs (made if missing), for watching it.
    pub(crate) fn ready_dir(&self, queue: &str) -> Result<PathBuf> {
        let paths = self.paths(queue)?;
        self.ensure_queue(queue, &paths)?;
        Ok(paths.ready)
    }

    /// Makes a queue's directories (durably) unless this process already knows they exist.
    fn ensure_queue(&self, queue: &str, paths: &QueuePaths) -> Result<()> {
        if guard(&self.made).contains(queue) {
            return Ok(());
        }
        let new_queue = make_dir(&paths.dir)?;
        let new_subdir = make_dir(&paths.ready)? | make_dir(&paths.reserved)?;
        if new_queue {
            self.sync_dir(&self.jobs)?;
        }
        if new_queue || new_subdir {
            self.sync_dir(&paths.dir)?;
        }
        guard(&self.made).insert(queue.to_owned());
        Ok(())
    }

    fn listings(&self) -> MutexGuard<'_, HashMap<String, Listing>> {
        guard(&self.listings)
    }

    /// Forgets a job this process knew in `ready/` (taken out of it by a replacing push).
    fn forget_ready(&self, queue: &str, name: &ReadyName) {
        if let Some(listing) = self.listings().get_mut(queue) {
            listing.ready.remove(name);
        }
    }

    /// Records a job this process put in `ready/`.
    fn remember_ready(&self, queue: &str, name: ReadyName) {
        if let Some(listing) = self.listings().get_mut(queue) {
            if listing.listed_at.is_some() {
                listing.ready.insert(name);
            }
        }
    }

    /// Renames `from` to `to` inside a queue's directories. `ENOENT` normally means another
    /// process moved `from` first; if `from` is still there, the queue's directories were
    /// removed under us (by hand), so they are made again and the rename tried once more.
    fn rename_into(
        &self,
        queue: &str,
        paths: &QueuePaths,
        from: &Path,
        to: &Path,
    ) -> io::Result<()> {
        match fs::rename(from, to) {
            Err(e) if not_found(&e) && fs::symlink_metadata(from).is_ok() => {
                guard(&self.made).remove(queue);
                self.ensure_queue(queue, paths).map_err(|_| e)?;
                fs::rename(from, to)
            }
            other => other,
        }
    }

    /// Replaces a file whole (a temporary file renamed over it): readers see the old bytes or
    /// the new, never a mix. Its directory is synced by the step that calls this.
    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let staged = self
            .tmp
            .join(format!("{}.replace", crate::format::new_id()));
        let file = write_new(&staged, bytes)?;
        if self.fsync {
            file.sync_data().map_err(FileError::io("sync", &staged))?;
        }
        drop(file);
        if let Err(e) = fs::rename(&staged, path) {
            let _ = fs::remove_file(&staged);
            return Err(FileError::io("rename", path)(e));
        }
        Ok(())
    }

    /// A job's name and claim, from memory or from its file's header; `None` if the file is
    /// gone or its header damaged.
    fn head(&self, dir: &Path, file: &str, id: &str) -> Option<crate::format::Head> {
        if let Some(head) = guard(&self.heads).get(id) {
            return Some(head.clone());
        }
        let head = read_head(&dir.join(file)).ok()??;
        let mut heads = guard(&self.heads);
        if heads.len() >= HEADS_KEPT {
            heads.clear();
        }
        heads.insert(id.to_owned(), head.clone());
        Some(head)
    }
}

impl Disk {
    /// Drops the cached heads of jobs with a claim if a push replaced a queued job (in any
    /// process) since the last look: one read of `control/replaced`. Called after the
    /// listing whose names are then looked up, so a new version seen in it was published
    /// before the generation was read.
    fn check_replaced(&self) -> Result<()> {
        let now = read_if_there(&self.control.join("replaced"))?;
        let mut seen = guard(&self.replaced_seen);
        if *seen != now {
            guard(&self.heads).retain(|_, head| head.unique.is_none());
            *seen = now;
        }
        Ok(())
    }

    /// Renews the replace generation, `control/replaced` (a fresh id), after a step published
    /// new versions of queued jobs. Not synced: it only tells live processes to drop names
    /// they cached, and every process starts with none.
    fn renew_replaced(&self, _: &journal::Locked<'_>) -> Result<()> {
        let path = self.control.join("replaced");
        let id = crate::format::new_id();
        let staged = self.tmp.join(format!("{id}.replace"));
        drop(write_new(&staged, id.as_bytes())?);
        if let Err(e) = fs::rename(&staged, &path) {
            let _ = fs::remove_file(&staged);
            return Err(FileError::io("rename", path)(e));
        }
        Ok(())
    }
}

/// Reads the header of a job file: the first 4 KiB, or the whole file when its header is
/// longer (a long name or claim key).
fn read_head(path: &Path) -> io::Result<Option<crate::format::Head>> {
    let mut file = File::open(path)?;
    let mut bytes = vec![0; 4096];
    let mut n = 0;
    while n < bytes.len() {
        match file.read(&mut bytes[n..])? {
            0 => break,
            read => n += read,
        }
    }
    bytes.truncate(n);
    if let Some(head) = crate::format::decode_head(&bytes) {
        return Ok(Some(head));
    }
    if n == 4096 {
        file.read_to_end(&mut bytes)?;
        return Ok(crate::format::decode_head(&bytes));
    }
    Ok(None)
}

/// Syncs freshly written files, from several threads for a large batch so that the file
/// system can fold their commits together.
fn sync_files(files: &[(File, PathBuf)]) -> Result<()> {
    /// Batches at least this large sync from several threads at once.
    const PARALLEL_SYNC: usize = 16;
    let sync = |chunk: &[(File, PathBuf)]| -> Result<()> {
        for (file, path) in chunk {
            file.sync_data().map_err(FileError::io("sync", path))?;
        }
        Ok(())
    };
    if files.len() < PARALLEL_SYNC {
        return sync(files);
    }
    let threads = 8.min(files.len() / PARALLEL_SYNC * 2).max(2);
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|c| scope.spawn(move || sync(c)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(FileError::Task("a sync thread panicked".into())))
            })
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    })
}
