//! What the test files share.

use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, SystemTime};

/// A fresh directory for one store, under cargo's scratch directory for tests. A store
/// outlives the factory that made it (the suite owns only the `Arc`), so the directories are
/// kept, and those older than an hour are swept at the start of the next run.
pub(crate) fn scratch_dir() -> PathBuf {
    static SWEEP: Once = Once::new();
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("queue-database");
    SWEEP.call_once(|| {
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < an_hour_ago);
            if old {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    std::fs::create_dir_all(&root).expect("the scratch directory can be created");
    tempfile::Builder::new()
        .prefix("store-")
        .tempdir_in(root)
        .expect("a fresh directory")
        .keep()
}
