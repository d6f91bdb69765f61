//! The progress bar of `runall work --stop-when-empty` on a terminal.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::storage::{Storage, StorageExt};
use crate::worker::ProgressHandle;

/// Draws `[#####.....] done/total  failed  rate/s  ETA` on stderr until aborted, counting
/// what `queues` hold (`None`: every queue of the store).
pub(crate) async fn draw(
    storage: Arc<dyn Storage>,
    queues: Option<Vec<String>>,
    progress: ProgressHandle,
) {
    let started = Instant::now();
    loop {
        let p = progress.get();
        let mut remaining = 0;
        if let Ok(inspect) = storage.inspect() {
            let queues = match &queues {
                Some(queues) => queues.clone(),
                None => crate::worker::every_queue(&[], inspect.queues().await.unwrap_or_default()),
            };
            for q in &queues {
                if let Ok(size) = inspect.size(q).await {
                    remaining += size.total();
                }
            }
        }
        let done = p.processed + p.failed;
        let total = done + remaining;
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 && remaining > 0 {
            humantime::format_duration(Duration::from_secs((remaining as f64 / rate).ceil() as u64))
                .to_string()
        } else {
            "-".into()
        };
        let width = 30usize;
        let filled = if total == 0 {
            width
        } else {
            (done as usize * width) / total as usize
        };
        let bar: String = "#".repeat(filled.min(width)) + &".".repeat(width - filled.min(width));
        {
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r[{bar}] {done}/{total} done  {} failed  {rate:.0}/s  ETA {eta}   ",
                p.failed
            );
            let _ = err.flush();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
