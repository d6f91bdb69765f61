//! The store's operations on its directory tree, all blocking: [`FileStorage`](crate::FileStorage)
//! runs each call on tokio's blocking pool.
//!
//! A job's state lives in its file's name and directory (see [`crate::format`]), so every
//! transition is one `rename(2)` of that file. When two processes rename the same file, exactly
//! one succeeds and the other gets `ENOENT`: that is the whole of the cross-process exclusion
//! for jobs.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use queue_core::storage::{duration_millis, from_unix_millis, new_token, unix_millis};
use queue_core::{
    Availability, Error, FailedJob, JobId, Lease, NewJob, QueueSize, ReserveRequest, Reserved,
};

use crate::error::FileError;
use crate::format::{
    clamp_ms, decode_failed, decode_job, decode_name, encode_failed, encode_job, new_id, now_ms,
    queue_dir_name, queue_from_dir_name, FailedFile, FailedName, JobFile, ReadyName, ReservedName,
};
use crate::options::FileOptions;

type Result<T, E = FileError> = std::result::Result<T, E>;

/// How long a process trusts its listing of a queue's `ready/` directory while it still holds
/// due jobs. Jobs other processes add later are due later, so they sort after the listed ones
/// anyway; the bound only limits how long a job pushed with a time in the past could wait.
const LISTING_AGE: Duration = Duration::from_secs(1);
/// Batches at least this large sync their files from several threads at once, so the file
/// system can commit them together.
const PARALLEL_SYNC: usize = 16;
/// How many entries of a queue's `ready/` directory a process keeps in memory: the first ones
/// in order, which are the next to reserve. Past them it lists the directory again.
const LISTING_MAX: usize = 10_000;
/// How many job names (read for reserving by name) a process keeps before starting afresh.
const NAMES_KEPT: usize = 100_000;

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
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> Result<File> {
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

/// The regular files in a directory (none if it does not exist).
pub(crate) fn list(dir: &Path) -> Result<Vec<OsString>> {
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

/// Splits a listing into parsed names and names this driver never writes.
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

/// The store: its paths and what this process caches about it.
#[derive(Debug)]
pub(crate) struct Disk {
    root: PathBuf,
    jobs: PathBuf,
    failed: PathBuf,
    pub(crate) tmp: PathBuf,
    pub(crate) locks: PathBuf,
    pub(crate) counters: PathBuf,
    fsync: bool,
    /// Queues whose directories this process knows exist.
    made: Mutex<HashSet<String>>,
    listings: Mutex<HashMap<String, Listing>>,
    /// Reservation token -> current file name in `reserved/`, so acknowledging does not list
    /// the directory. A miss falls back to listing; the file name is the truth.
    held: Mutex<HashMap<String, String>>,
    /// Job id -> job name, read for reserving by name (names never change).
    names: Mutex<HashMap<String, String>>,
}

fn guard<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps are caches of what is on disk; after a panic elsewhere they are still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Disk {
    /// Opens (and with `migrate` creates) the store, refusing a directory others can write.
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
        let disk = Disk {
            jobs: root.join(&options.table),
            failed: root.join(&options.failed_table),
            tmp: root.join("tmp"),
            locks: root.join("locks"),
            counters: root.join("counters"),
            root,
            fsync: options.fsync,
            made: Mutex::default(),
            listings: Mutex::default(),
            held: Mutex::default(),
            names: Mutex::default(),
        };
        disk.migrate(created)?;
        Ok(disk)
    }

    /// Creates the sub-directories that are missing.
    pub(crate) fn migrate(&self, mut created: bool) -> Result<()> {
        for dir in [
            &self.tmp,
            &self.jobs,
            &self.failed,
            &self.locks,
            &self.counters,
        ] {
            created |= make_dir(dir)?;
        }
        if created {
            self.sync_dir(&self.root)?;
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        if self.fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(FileError::io("sync directory", dir))?;
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

    // ----- push -----

    pub(crate) fn push(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        let now = now_ms();
        struct Staged {
            queue: String,
            paths: QueuePaths,
            name: ReadyName,
            tmp: PathBuf,
        }
        let mut staged: Vec<Staged> = Vec::with_capacity(jobs.len());
        let mut files = Vec::with_capacity(jobs.len());
        let result = (|| -> Result<()> {
            for job in &jobs {
                let paths = self.paths(&job.queue)?;
                self.ensure_queue(&job.queue, &paths)?;
                let at = match job.available {
                    Availability::Now => now,
                    Availability::After(d) => now.saturating_add(duration_millis(d)),
                    Availability::At(t) => unix_millis(t),
                };
                let id = new_id();
                let tmp = self.tmp.join(format!("{id}.push"));
                let file = write_new(&tmp, &encode_job(&job.queue, &job.name, &job.payload))?;
                staged.push(Staged {
                    queue: job.queue.clone(),
                    paths,
                    name: ReadyName {
                        at: clamp_ms(at),
                        id,
                        attempts: 0,
                    },
                    tmp: tmp.clone(),
                });
                files.push((file, tmp));
            }
            if self.fsync {
                sync_files(&files)?;
            }
            drop(std::mem::take(&mut files));
            Ok(())
        })();
        if let Err(e) = result {
            for s in &staged {
                let _ = fs::remove_file(&s.tmp);
            }
            return Err(e);
        }
        let mut dirs: Vec<&Path> = Vec::new();
        for (i, s) in staged.iter().enumerate() {
            let to = s.paths.ready.join(s.name.file_name());
            if let Err(e) = self.rename_into(&s.queue, &s.paths, &s.tmp, &to) {
                // All or nothing as far as we can: take back what was published (unless a
                // worker already took it) and drop what was not.
                for done in &staged[..i] {
                    let _ = fs::remove_file(done.paths.ready.join(done.name.file_name()));
                }
                for rest in &staged[i..] {
                    let _ = fs::remove_file(&rest.tmp);
                }
                return Err(FileError::io("rename", to)(e));
            }
            if !dirs.contains(&s.paths.ready.as_path()) {
                dirs.push(&s.paths.ready);
            }
        }
        for dir in dirs {
            self.sync_dir(dir)?;
        }
        let mut ids = Vec::with_capacity(staged.len());
        for s in staged {
            self.remember_ready(&s.queue, s.name.clone());
            ids.push(JobId(s.name.id));
        }
        Ok(ids)
    }

    // ----- reserve -----

    pub(crate) fn reserve(&self, request: &ReserveRequest) -> Result<Vec<Reserved>> {
        let now = now_ms();
        let deadline = clamp_ms(now.saturating_add(duration_millis(request.lease)));
        let limit = request.limit.max(1);
        let mut out = Vec::new();
        for queue in &request.queues {
            if out.len() >= limit {
                break;
            }
            let Ok(paths) = self.paths(queue) else {
                continue; // no job can have been pushed to it
            };
            let mut expired: VecDeque<ReservedName> = self.expired(queue, &paths, now)?.into();
            let mut named: Option<VecDeque<ReadyName>> = None;
            if let Some(name) = &request.name {
                named = Some(self.ready_named(queue, &paths, now, name)?.into());
                expired.retain(|r| {
                    self.job_name(&paths.reserved, &r.file_name(), &r.id)
                        .as_deref()
                        == Some(name)
                });
            }
            let mut relisted = false;
            while out.len() < limit {
                let ready = match &named {
                    Some(list) => list.front().cloned(),
                    None => self.peek_ready(queue, &paths, now, &mut relisted)?,
                };
                let take_ready = match (&ready, expired.front()) {
                    (Some(r), Some(e)) => (r.at, &r.id) <= (e.deadline, &e.id),
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                let token = new_token();
                let (from, to) = match (take_ready, ready) {
                    (true, Some(r)) => {
                        if let Some(list) = &mut named {
                            list.pop_front();
                        }
                        if let Some(listing) = self.listings().get_mut(queue) {
                            listing.ready.remove(&r);
                        }
                        let to = ReservedName {
                            deadline,
                            id: r.id.clone(),
                            attempts: r.attempts.saturating_add(1),
                            token,
                        };
                        (paths.ready.join(r.file_name()), to)
                    }
                    _ => {
                        let Some(e) = expired.pop_front() else { break };
                        let to = ReservedName {
                            deadline,
                            id: e.id.clone(),
                            attempts: e.attempts.saturating_add(1),
                            token,
                        };
                        (paths.reserved.join(e.file_name()), to)
                    }
                };
                match self.rename_into(queue, &paths, &from, &paths.reserved.join(to.file_name())) {
                    Ok(()) => {}
                    Err(e) if not_found(&e) => continue, // another worker took it
                    Err(e) => return Err(FileError::io("rename", from)(e)),
                }
                if let Some(job) = self.load_reserved(queue, &paths, to)? {
                    out.push(job);
                }
            }
            self.listings().entry(queue.clone()).or_default().checked_at = now;
        }
        Ok(out)
    }

    /// Reservations in `reserved/` whose lease ran out, oldest deadline first. Moves files
    /// with foreign names to the failed store.
    fn expired(&self, queue: &str, paths: &QueuePaths, now: i64) -> Result<Vec<ReservedName>> {
        let (names, bad) = parse_names(list(&paths.reserved)?, ReservedName::parse);
        for name in bad {
            self.bury_stray(queue, &paths.reserved, &name)?;
        }
        self.listings()
            .entry(queue.to_owned())
            .or_default()
            .next_deadline = names.iter().map(|r| r.deadline).find(|d| *d > now);
        Ok(names
            .into_iter()
            .take_while(|r| r.deadline <= now)
            .collect())
    }

    /// The first due job of a queue from this process's listing, listing `ready/` again when
    /// the listing is old or holds nothing due (at most once per reserve call).
    fn peek_ready(
        &self,
        queue: &str,
        paths: &QueuePaths,
        now: i64,
        relisted: &mut bool,
    ) -> Result<Option<ReadyName>> {
        let due = |l: &Listing| l.ready.first().is_some_and(|r| r.at <= now);
        {
            let listings = self.listings();
            if let Some(listing) = listings.get(queue) {
                let fresh = listing.listed_at.is_some_and(|t| t.elapsed() < LISTING_AGE);
                if *relisted || (fresh && due(listing)) {
                    return Ok(listing.ready.first().filter(|r| r.at <= now).cloned());
                }
            }
        }
        *relisted = true;
        self.relist(queue, paths)?;
        Ok(self
            .listings()
            .get(queue)
            .and_then(|l| l.ready.first().filter(|r| r.at <= now).cloned()))
    }

    /// Lists a queue's `ready/` directory into this process's listing (its first
    /// [`LISTING_MAX`] entries), moving files with foreign names to the failed store. Returns
    /// the whole listing, in order.
    fn relist(&self, queue: &str, paths: &QueuePaths) -> Result<Vec<ReadyName>> {
        let listed_at = Instant::now();
        let (names, bad) = parse_names(list(&paths.ready)?, ReadyName::parse);
        for name in bad {
            self.bury_stray(queue, &paths.ready, &name)?;
        }
        let mut listings = self.listings();
        let listing = listings.entry(queue.to_owned()).or_default();
        listing.ready = names.iter().take(LISTING_MAX).cloned().collect();
        listing.listed_at = Some(listed_at);
        Ok(names)
    }

    /// The due jobs of a queue with this name, in order (reading each job's header once).
    fn ready_named(
        &self,
        queue: &str,
        paths: &QueuePaths,
        now: i64,
        name: &str,
    ) -> Result<Vec<ReadyName>> {
        Ok(self
            .relist(queue, paths)?
            .into_iter()
            .take_while(|r| r.at <= now)
            .filter(|r| {
                self.job_name(&paths.ready, &r.file_name(), &r.id)
                    .as_deref()
                    == Some(name)
            })
            .collect())
    }

    /// A job's name, from memory or from its file's header.
    fn job_name(&self, dir: &Path, file: &str, id: &str) -> Option<String> {
        if let Some(name) = guard(&self.names).get(id) {
            return Some(name.clone());
        }
        let mut head = vec![0; 4096];
        let n = File::open(dir.join(file))
            .and_then(|mut f| f.read(&mut head))
            .ok()?;
        let name = decode_name(&head[..n])?;
        let mut names = guard(&self.names);
        if names.len() >= NAMES_KEPT {
            names.clear();
        }
        names.insert(id.to_owned(), name.clone());
        Some(name)
    }

    /// Reads a job this process just reserved. A damaged file goes to the failed store with
    /// the reason instead of stopping the queue.
    fn load_reserved(
        &self,
        queue: &str,
        paths: &QueuePaths,
        name: ReservedName,
    ) -> Result<Option<Reserved>> {
        let file_name = name.file_name();
        let path = paths.reserved.join(&file_name);
        let (bytes, problem) = match read_file(&path) {
            Ok(bytes) => match decode_job(&bytes) {
                Ok(job) => {
                    guard(&self.held).insert(name.token.clone(), file_name);
                    return Ok(Some(Reserved {
                        lease: Lease {
                            job_id: JobId(name.id),
                            queue: queue.to_owned(),
                            token: name.token,
                        },
                        name: job.name,
                        payload: job.payload,
                        attempts: name.attempts,
                    }));
                }
                Err(reason) => {
                    let problem = format!("the job file {} is damaged: {reason}; the failed record's payload is the whole file", path.display());
                    (bytes, problem)
                }
            },
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => (
                Vec::new(),
                format!("the job file {} could not be read: {e}", path.display()),
            ),
        };
        tracing::error!(queue, job = %name.id, "{problem}: moved to the failed store");
        self.write_failed(&FailedFile {
            job: JobFile {
                queue: queue.to_owned(),
                name: decode_name(&bytes).unwrap_or_default(),
                payload: bytes,
            },
            job_id: name.id,
            attempts: name.attempts,
            failed_at: now_ms(),
            error: problem,
        })?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(FileError::io("remove", path)(e)),
        }
        self.sync_dir(&paths.reserved)?;
        Ok(None)
    }

    /// Moves a file whose name this driver never writes out of a queue and into the failed
    /// store, so it can neither wedge the queue nor be lost.
    fn bury_stray(&self, queue: &str, dir: &Path, name: &OsStr) -> Result<()> {
        let from = dir.join(name);
        let claim = self.tmp.join(format!("{}.stray", new_id()));
        match fs::rename(&from, &claim) {
            Ok(()) => {}
            Err(e) if not_found(&e) => return Ok(()),
            Err(e) => return Err(FileError::io("rename", from)(e)),
        }
        let shown = from.display().to_string();
        let mut error = format!("{shown} is not a job file name this driver writes, so it was moved to the failed store");
        let job = match read_file(&claim) {
            Ok(bytes) => match decode_job(&bytes) {
                Ok(job) => job,
                Err(reason) => {
                    error.push_str(&format!("; its contents are not a job file either ({reason}): the payload is the whole file"));
                    JobFile {
                        queue: queue.to_owned(),
                        name: decode_name(&bytes).unwrap_or_default(),
                        payload: bytes,
                    }
                }
            },
            Err(e) => {
                error.push_str(&format!("; it could not be read: {e}"));
                JobFile {
                    queue: queue.to_owned(),
                    name: String::new(),
                    payload: Vec::new(),
                }
            }
        };
        tracing::error!(queue, file = %shown, "stray file moved to the failed store");
        self.write_failed(&FailedFile {
            job: JobFile {
                queue: queue.to_owned(),
                ..job
            },
            job_id: name.to_string_lossy().into_owned(),
            attempts: 0,
            failed_at: now_ms(),
            error,
        })?;
        fs::remove_file(&claim).map_err(FileError::io("remove", &claim))?;
        self.sync_dir(dir)
    }

    // ----- leases -----

    /// Runs `op` on the file of a current reservation; `None` if the lease is stale.
    fn with_reserved<T>(
        &self,
        lease: &Lease,
        paths: &QueuePaths,
        op_name: &'static str,
        mut op: impl FnMut(&Path, &ReservedName) -> io::Result<T>,
    ) -> Result<Option<T>> {
        let matches = |r: &ReservedName| r.id == lease.job_id.0 && r.token == lease.token;
        let known = guard(&self.held).get(&lease.token).cloned();
        if let Some(r) = known
            .as_deref()
            .and_then(ReservedName::parse)
            .filter(matches)
        {
            let path = paths.reserved.join(r.file_name());
            match op(&path, &r) {
                Ok(t) => return Ok(Some(t)),
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(FileError::io(op_name, path)(e)),
            }
        }
        let (names, _) = parse_names(list(&paths.reserved)?, ReservedName::parse);
        if let Some(r) = names.into_iter().find(matches) {
            let path = paths.reserved.join(r.file_name());
            return match op(&path, &r) {
                Ok(t) => Ok(Some(t)),
                Err(e) if not_found(&e) => Ok(None),
                Err(e) => Err(FileError::io(op_name, path)(e)),
            };
        }
        Ok(None)
    }

    fn lost(lease: &Lease) -> Error {
        Error::LeaseLost {
            job_id: lease.job_id.0.clone(),
        }
    }

    pub(crate) fn extend(&self, lease: &Lease, duration: Duration) -> Result<(), Error> {
        let paths = self.paths(&lease.queue).map_err(|_| Self::lost(lease))?;
        let deadline = clamp_ms(now_ms().saturating_add(duration_millis(duration)));
        let moved = self.with_reserved(lease, &paths, "rename", |path, r| {
            let to = ReservedName {
                deadline,
                ..r.clone()
            };
            fs::rename(path, paths.reserved.join(to.file_name())).map(|()| to)
        })?;
        let to = moved.ok_or_else(|| Self::lost(lease))?;
        guard(&self.held).insert(lease.token.clone(), to.file_name());
        Ok(())
    }

    pub(crate) fn acknowledge(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        let mut done = Vec::with_capacity(leases.len());
        let mut dirs: Vec<PathBuf> = Vec::new();
        for lease in leases {
            let Ok(paths) = self.paths(&lease.queue) else {
                done.push(false);
                continue;
            };
            let removed =
                self.with_reserved(lease, &paths, "remove", |path, _| fs::remove_file(path))?;
            guard(&self.held).remove(&lease.token);
            if removed.is_some() && !dirs.contains(&paths.reserved) {
                dirs.push(paths.reserved.clone());
            }
            done.push(removed.is_some());
        }
        for dir in &dirs {
            self.sync_dir(dir)?;
        }
        Ok(done)
    }

    pub(crate) fn release(
        &self,
        lease: &Lease,
        delay: Duration,
        refund_attempt: bool,
    ) -> Result<(), Error> {
        let paths = self.paths(&lease.queue).map_err(|_| Self::lost(lease))?;
        let at = clamp_ms(now_ms().saturating_add(duration_millis(delay)));
        let moved = self.with_reserved(lease, &paths, "rename", |path, r| {
            let to = ReadyName {
                at,
                id: r.id.clone(),
                attempts: if refund_attempt {
                    r.attempts.saturating_sub(1)
                } else {
                    r.attempts
                },
            };
            fs::rename(path, paths.ready.join(to.file_name())).map(|()| to)
        })?;
        guard(&self.held).remove(&lease.token);
        let to = moved.ok_or_else(|| Self::lost(lease))?;
        self.sync_dir(&paths.ready)?;
        self.sync_dir(&paths.reserved)?;
        self.remember_ready(&lease.queue, to);
        Ok(())
    }

    pub(crate) fn fail(&self, lease: &Lease, error: &str) -> Result<(), Error> {
        let paths = self.paths(&lease.queue).map_err(|_| Self::lost(lease))?;
        // Claim the file first: once it is out of reserved/ no other worker can take it. The
        // claim's name is made of the validated name parts, never of what the caller passed.
        let claimed = self.with_reserved(lease, &paths, "rename", |path, r| {
            let claim = self.tmp.join(format!("{}.{}.failing", r.id, r.token));
            fs::rename(path, &claim).map(|()| (r.clone(), claim))
        })?;
        guard(&self.held).remove(&lease.token);
        let (r, claim) = claimed.ok_or_else(|| Self::lost(lease))?;
        let bytes = read_file(&claim).map_err(FileError::io("read", &claim))?;
        let job = decode_job(&bytes).unwrap_or_else(|_| JobFile {
            queue: lease.queue.clone(),
            name: decode_name(&bytes).unwrap_or_default(),
            payload: bytes,
        });
        self.write_failed(&FailedFile {
            job: JobFile {
                queue: lease.queue.clone(),
                ..job
            },
            job_id: r.id,
            attempts: r.attempts,
            failed_at: now_ms(),
            error: error.to_owned(),
        })?;
        fs::remove_file(&claim).map_err(FileError::io("remove", &claim))?;
        self.sync_dir(&paths.reserved)?;
        Ok(())
    }

    // ----- sizes -----

    pub(crate) fn size(&self, queue: &str) -> Result<QueueSize> {
        let Ok(paths) = self.paths(queue) else {
            return Ok(QueueSize::default());
        };
        let now = now_ms();
        let mut size = QueueSize::default();
        for name in list(&paths.ready)? {
            // A stray file counts as waiting: the next reserve moves it to the failed store.
            match name.to_str().and_then(ReadyName::parse) {
                Some(r) if r.at > now => size.delayed += 1,
                _ => size.waiting += 1,
            }
        }
        size.reserved = list(&paths.reserved)?.len() as u64;
        Ok(size)
    }

    pub(crate) fn queues(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.jobs) {
            Ok(entries) => entries,
            Err(e) if not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(FileError::io("list", &self.jobs)(e)),
        };
        let mut queues = Vec::new();
        for entry in entries {
            let entry = entry.map_err(FileError::io("list", &self.jobs))?;
            let Some(queue) = entry.file_name().to_str().and_then(queue_from_dir_name) else {
                continue;
            };
            let dir = entry.path();
            let busy = |sub: &str| -> Result<bool> { Ok(!list(&dir.join(sub))?.is_empty()) };
            if busy("ready")? || busy("reserved")? {
                queues.push(queue);
            }
        }
        queues.sort();
        Ok(queues)
    }

    pub(crate) fn clear(&self, queue: &str) -> Result<u64> {
        let Ok(paths) = self.paths(queue) else {
            return Ok(0);
        };
        let mut removed = 0;
        for name in list(&paths.ready)? {
            let path = paths.ready.join(&name);
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(FileError::io("remove", path)(e)),
            }
        }
        self.listings().remove(queue);
        if removed > 0 {
            self.sync_dir(&paths.ready)?;
        }
        Ok(removed)
    }

    /// Since when the longest-waiting available job of a queue has been available: a due job
    /// in `ready/` or a reservation whose lease ran out.
    pub(crate) fn oldest_available(&self, queue: &str) -> Result<Option<SystemTime>> {
        let Ok(paths) = self.paths(queue) else {
            return Ok(None);
        };
        let now = now_ms();
        let ready = list(&paths.ready)?
            .iter()
            .filter_map(|n| n.to_str().and_then(ReadyName::parse))
            .map(|r| r.at)
            .filter(|at| *at <= now)
            .min();
        let expired = list(&paths.reserved)?
            .iter()
            .filter_map(|n| n.to_str().and_then(ReservedName::parse))
            .map(|r| r.deadline)
            .filter(|at| *at <= now)
            .min();
        Ok(ready.into_iter().chain(expired).min().map(from_unix_millis))
    }

    /// When the next job of these queues that the last reserve did not already look at is
    /// due, as far as this process's listings know. (Looking only at the first entry would
    /// make a worker that reserves by name spin on a due job of another name.)
    pub(crate) fn next_due(&self, queues: &[String]) -> Option<i64> {
        let listings = self.listings();
        queues
            .iter()
            .filter_map(|q| listings.get(q))
            .flat_map(|l| {
                let from = ReadyName {
                    at: l.checked_at,
                    id: String::new(),
                    attempts: 0,
                };
                [l.ready.range(from..).next().map(|r| r.at), l.next_deadline]
            })
            .flatten()
            .min()
    }

    // ----- failed store -----

    fn write_failed(&self, failed: &FailedFile) -> Result<FailedName> {
        let name = FailedName {
            at: clamp_ms(failed.failed_at),
            id: new_id(),
        };
        let tmp = self.tmp.join(format!("{}.failed", name.id));
        let file = write_new(&tmp, &encode_failed(failed))?;
        if self.fsync {
            file.sync_data().map_err(FileError::io("sync", &tmp))?;
        }
        drop(file);
        let to = self.failed.join(name.file_name());
        if let Err(e) = fs::rename(&tmp, &to) {
            let _ = fs::remove_file(&tmp);
            return Err(FileError::io("rename", to)(e));
        }
        self.sync_dir(&self.failed)?;
        Ok(name)
    }

    fn failed_names(&self) -> Result<Vec<FailedName>> {
        Ok(parse_names(list(&self.failed)?, FailedName::parse).0)
    }

    fn read_failed(&self, name: &FailedName) -> Result<Option<FailedJob>> {
        let path = self.failed.join(name.file_name());
        let bytes = match read_file(&path) {
            Ok(bytes) => bytes,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(FileError::io("read", path)(e)),
        };
        let job = match decode_failed(&bytes, name) {
            Ok(f) => FailedJob {
                id: name.file_name(),
                job_id: f.job_id,
                queue: f.job.queue,
                name: f.job.name,
                payload: f.job.payload,
                error: f.error,
                attempts: f.attempts,
                failed_at: from_unix_millis(f.failed_at),
            },
            Err(reason) => FailedJob {
                id: name.file_name(),
                job_id: String::new(),
                queue: String::new(),
                name: decode_name(&bytes).unwrap_or_default(),
                payload: bytes,
                error: format!(
                    "the failed record {} is damaged ({reason}); the payload is the whole file",
                    path.display()
                ),
                attempts: 0,
                failed_at: from_unix_millis(name.at),
            },
        };
        Ok(Some(job))
    }

    pub(crate) fn failed_list(&self, offset: u64, limit: u64) -> Result<Vec<FailedJob>> {
        let mut names = self.failed_names()?;
        names.reverse();
        let mut out = Vec::new();
        for name in names
            .iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            if out.len() as u64 >= limit {
                break;
            }
            if let Some(job) = self.read_failed(name)? {
                out.push(job);
            }
        }
        Ok(out)
    }

    pub(crate) fn failed_get(&self, id: &str) -> Result<Option<FailedJob>> {
        match FailedName::parse(id) {
            Some(name) => self.read_failed(&name),
            None => Ok(None),
        }
    }

    pub(crate) fn failed_count(&self) -> Result<u64> {
        Ok(self.failed_names()?.len() as u64)
    }

    /// One rename from `failed/` back into the queue's `ready/`: a failed record is a job file
    /// with a few more header lines, so retrying is atomic and happens once.
    pub(crate) fn failed_retry(&self, id: &str) -> Result<Option<JobId>> {
        let Some(name) = FailedName::parse(id) else {
            return Ok(None);
        };
        let path = self.failed.join(name.file_name());
        let bytes = match read_file(&path) {
            Ok(bytes) => bytes,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(FileError::io("read", path)(e)),
        };
        let failed = decode_failed(&bytes, &name).map_err(|reason| FileError::Io {
            op: "retry",
            path: path.clone(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the failed record is damaged: {reason}"),
            ),
        })?;
        let queue = failed.job.queue;
        let paths = self.paths(&queue)?;
        self.ensure_queue(&queue, &paths)?;
        let ready = ReadyName {
            at: clamp_ms(now_ms()),
            id: new_id(),
            attempts: 0,
        };
        match fs::rename(&path, paths.ready.join(ready.file_name())) {
            Ok(()) => {}
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(FileError::io("rename", path)(e)),
        }
        self.sync_dir(&paths.ready)?;
        self.sync_dir(&self.failed)?;
        let id = JobId(ready.id.clone());
        self.remember_ready(&queue, ready);
        Ok(Some(id))
    }

    fn remove_failed(&self, names: impl IntoIterator<Item = FailedName>) -> Result<u64> {
        let mut removed = 0;
        for name in names {
            let path = self.failed.join(name.file_name());
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(FileError::io("remove", path)(e)),
            }
        }
        if removed > 0 {
            self.sync_dir(&self.failed)?;
        }
        Ok(removed)
    }

    pub(crate) fn failed_forget(&self, id: &str) -> Result<bool> {
        match FailedName::parse(id) {
            Some(name) => Ok(self.remove_failed([name])? == 1),
            None => Ok(false),
        }
    }

    pub(crate) fn failed_flush(&self) -> Result<u64> {
        let names = self.failed_names()?;
        self.remove_failed(names)
    }

    pub(crate) fn failed_prune(&self, before: SystemTime) -> Result<u64> {
        let cutoff = unix_millis(before);
        let names = self.failed_names()?;
        self.remove_failed(names.into_iter().filter(|n| n.at < cutoff))
    }
}

/// Syncs freshly written files, from several threads for a large batch so that the file
/// system can fold their commits together.
fn sync_files(files: &[(File, PathBuf)]) -> Result<()> {
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
