//! The file driver's own errors, turned into [`queue_core::Error::Backend`] at the boundary.

use std::io;
use std::path::PathBuf;

/// What can go wrong with a store directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// A file system call failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done (`rename`, `read`, `list`, ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The store directory can be written by other users, who could then forge or steal jobs.
    #[error(
        "the store directory {} is writable by group or others (mode {mode:04o}): make it private with `chmod 700 {}`",
        .path.display(),
        .path.display()
    )]
    Insecure {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The store directory is missing and creating it was not asked for.
    #[error("the store directory {} does not exist (connect with migrate to create it)", .path.display())]
    Missing {
        /// The directory.
        path: PathBuf,
    },
    /// Something other than a directory is where the store should be.
    #[error("{} is not a directory", .path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A queue name too long to be a directory name.
    #[error("the queue name `{name}` is too long for the file driver (at most about 200 bytes once encoded)")]
    NameTooLong {
        /// The queue name.
        name: String,
    },
    /// A bad `file:` URL or option.
    #[error("invalid file store URL `{url}`: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A table name (a sub-directory name) that is not one plain path component.
    #[error("invalid directory name `{name}` for {what}: it must be one plain path component")]
    BadDirName {
        /// The name given.
        name: String,
        /// Which option it was.
        what: &'static str,
    },
    /// A file of the driver's own (an intent, a claim, a group's counters) that cannot be
    /// read back, or a step that found its files changed under the store's lock.
    #[error("{}: {reason}", .path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The blocking task that did the I/O panicked or was cancelled.
    #[error("the file I/O task failed: {0}")]
    Task(String),
}

impl FileError {
    /// An I/O error with what was done and where.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> FileError {
        let path = path.into();
        move |source| FileError::Io { op, path, source }
    }
}

impl From<FileError> for queue_core::Error {
    fn from(error: FileError) -> Self {
        queue_core::Error::backend(crate::DRIVER, error)
    }
}
