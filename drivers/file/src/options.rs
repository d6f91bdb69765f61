//! [`FileOptions`]: where the store lives and how careful it is.

use std::path::{Component, Path, PathBuf};

use crate::error::FileError;

/// The driver's own sub-directories, which no table may be named. `counters` held the
/// statistics of older versions: a store made by one may still have it.
const RESERVED: [&str; 9] = [
    "tmp", "locks", "claims", "groups", "journal", "control", "counters", "records", "workers",
];

/// How to open a file store.
///
/// ```
/// use queue_file::FileOptions;
///
/// let options = FileOptions::from_url("file:///var/lib/myapp/queue?fsync=false").unwrap();
/// assert_eq!(options.root, std::path::Path::new("/var/lib/myapp/queue"));
/// assert!(!options.fsync);
///
/// let options = FileOptions::new("queue-data").table("jobs").failed_table("dead");
/// assert!(options.fsync, "durable by default");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileOptions {
    /// The store's directory. Created (mode 0700) when missing if [`migrate`](Self::migrate) is
    /// on; refused if other users can write to it.
    pub root: PathBuf,
    /// Sync files and directories so that a pushed job survives a power loss once `push`
    /// returns (default `true`). Off, a crash of the machine may lose recent changes; a crash
    /// of a process loses nothing either way.
    pub fsync: bool,
    /// The sub-directory for jobs (default `jobs`).
    pub table: String,
    /// The sub-directory for failed jobs (default `failed`).
    pub failed_table: String,
    /// Create the store directory when it is missing (default `true`).
    pub migrate: bool,
}

impl FileOptions {
    /// Options for a store in `root`, with the defaults.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileOptions {
            root: root.into(),
            fsync: true,
            table: "jobs".to_owned(),
            failed_table: "failed".to_owned(),
            migrate: true,
        }
    }

    /// Reads a URL: `file:///abs/path`, `file://relative/path`, `file:path` or a plain path,
    /// with optional query parameters `fsync=true|false`, `table=NAME`, `failed_table=NAME`.
    /// `%XX` escapes in the path are decoded.
    pub fn from_url(url: &str) -> Result<Self, FileError> {
        let bad = |reason: &str| FileError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("file://")
            .or_else(|| url.strip_prefix("file:"))
            .unwrap_or(url);
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let path = decode(path).ok_or_else(|| bad("the path is not UTF-8 once %-decoded"))?;
        if path.is_empty() {
            return Err(bad("no directory given"));
        }
        let mut options = FileOptions::new(path);
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value =
                decode(value).ok_or_else(|| bad("a query value is not UTF-8 once %-decoded"))?;
            match key {
                "fsync" => {
                    options.fsync = match value.as_str() {
                        "true" | "1" | "on" | "yes" => true,
                        "false" | "0" | "off" | "no" => false,
                        _ => return Err(bad("fsync must be true or false")),
                    }
                }
                "table" => options.table = value,
                "failed_table" => options.failed_table = value,
                other => {
                    return Err(bad(&format!(
                        "unknown parameter `{other}` (known: fsync, table, failed_table)"
                    )))
                }
            }
        }
        Ok(options)
    }

    /// Sets whether files and directories are synced (see [`fsync`](Self::fsync)).
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// Sets the jobs sub-directory.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// Sets the failed-jobs sub-directory.
    pub fn failed_table(mut self, name: impl Into<String>) -> Self {
        self.failed_table = name.into();
        self
    }

    /// Sets whether a missing store directory is created.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Checks the sub-directory names: each must be one plain component, distinct from the
    /// others and from the driver's own directories.
    pub(crate) fn validate(&self) -> Result<(), FileError> {
        for (name, what) in [
            (&self.table, "the jobs table"),
            (&self.failed_table, "the failed table"),
        ] {
            let mut components = Path::new(name).components();
            let plain = matches!(components.next(), Some(Component::Normal(_)))
                && components.next().is_none();
            if !plain || name.contains('/') || RESERVED.contains(&name.as_str()) {
                return Err(FileError::BadDirName {
                    name: name.clone(),
                    what,
                });
            }
        }
        if self.table == self.failed_table {
            return Err(FileError::BadDirName {
                name: self.failed_table.clone(),
                what: "the failed table (it must differ from the jobs table)",
            });
        }
        Ok(())
    }
}

/// `%XX` escapes decoded; `None` if the result is not UTF-8.
fn decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|cow| cow.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = FileOptions::from_url("file:///abs/dir").unwrap();
        assert_eq!(o.root, Path::new("/abs/dir"));
        assert!(o.fsync);
        assert_eq!(
            FileOptions::from_url("file://rel/dir").unwrap().root,
            Path::new("rel/dir")
        );
        assert_eq!(
            FileOptions::from_url("file:rel").unwrap().root,
            Path::new("rel")
        );
        assert_eq!(
            FileOptions::from_url("/plain/path").unwrap().root,
            Path::new("/plain/path")
        );
        assert_eq!(
            FileOptions::from_url("file:///a%20b").unwrap().root,
            Path::new("/a b")
        );
        let o = FileOptions::from_url("file:///x?fsync=false&table=t&failed_table=f").unwrap();
        assert_eq!(
            (o.fsync, o.table.as_str(), o.failed_table.as_str()),
            (false, "t", "f")
        );
        assert!(FileOptions::from_url("file://").is_err());
        assert!(FileOptions::from_url("file:///x?fsync=maybe").is_err());
        assert!(FileOptions::from_url("file:///x?colour=red").is_err());
        assert!(FileOptions::from_url("file:///x%ff").is_err(), "not UTF-8");
    }

    #[test]
    fn table_names() {
        assert!(FileOptions::new("/x").validate().is_ok());
        for bad in [
            "", ".", "..", "a/b", "/abs", "tmp", "locks", "journal", "counters", "records",
            "workers",
        ] {
            assert!(
                FileOptions::new("/x").table(bad).validate().is_err(),
                "{bad}"
            );
        }
        assert!(FileOptions::new("/x")
            .table("same")
            .failed_table("same")
            .validate()
            .is_err());
    }
}
