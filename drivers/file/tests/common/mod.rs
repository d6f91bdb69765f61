//! Private temporary directories for stores.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use queue_core::Storage;
use queue_file::{FileOptions, FileStorage};
use tempfile::TempDir;

/// A private (0700) temporary directory, removed when dropped.
pub(crate) fn private_dir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("queue-file-test")
        .tempdir()
        .expect("a temporary directory");
    fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).expect("chmod 700");
    dir
}

/// This process's directory for stores that outlive their test function (the conformance
/// factory hands out only the store). It lives under cargo's target directory, and each run
/// removes what runs whose process has ended left behind.
fn process_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("queue-file-tests");
        fs::create_dir_all(&base).expect("the test directory");
        for entry in fs::read_dir(&base)
            .expect("list the test directory")
            .flatten()
        {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(&pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let dir = base.join(std::process::id().to_string());
        fs::create_dir_all(&dir).expect("this process's test directory");
        fs::set_permissions(&dir, Permissions::from_mode(0o700)).expect("chmod 700");
        dir
    })
}

/// A fresh store in a fresh private directory.
pub(crate) async fn open_fresh() -> (FileStorage, PathBuf) {
    let root = process_dir().join(queue_tests::unique("store"));
    let store = FileStorage::open(FileOptions::new(&root))
        .await
        .expect("the store opens");
    (store, root)
}

/// The conformance factory.
pub(crate) async fn store() -> Option<Arc<dyn Storage>> {
    Some(Arc::new(open_fresh().await.0))
}

/// Every path under `root`, itself included.
pub(crate) fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    if root.is_dir() {
        for entry in fs::read_dir(root).expect("list") {
            out.extend(walk(&entry.expect("entry").path()));
        }
    }
    out
}
