//! The restart signal (`runall restart`): one control key in the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use super::StopHandle;
use crate::error::Error;
use crate::storage::Storage;

/// Every second, reads the store's restart generation; stops the worker when it changed
/// since the first successful read. A failed read sets no baseline, so a backend that is
/// unreachable at start cannot make the worker stop as if restarted.
pub(super) async fn watch_restart(
    storage: Arc<dyn Storage>,
    stop: StopHandle,
    restarted: Arc<AtomicBool>,
) {
    let Some(control) = storage.capabilities().control else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut baseline = None;
    loop {
        tick.tick().await;
        match control.restart_generation().await {
            Ok(now) => match baseline {
                None => baseline = Some(now),
                Some(start) if start != now => {
                    info!("restart signal received: finishing running jobs and exiting");
                    restarted.store(true, Ordering::SeqCst);
                    stop.stop();
                    return;
                }
                Some(_) => {}
            },
            Err(Error::NotSupported { .. }) => return,
            Err(e) => debug!(error = %e, "could not read the restart signal; will retry"),
        }
    }
}
