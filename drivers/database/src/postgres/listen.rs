//! Waking idle workers: one dedicated connection per store `LISTEN`s on the store's channel
//! and hands each notification (the queue a job was pushed to) to every waiting worker.
//!
//! Notifications are fire-and-forget: any sent while the connection is down are lost. So
//! while it is down, waiters poll; and whenever it comes back (or goes away) every waiter is
//! woken once, in case a job arrived in between.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{broadcast, watch};

/// "Every queue": sent when notifications may have been missed.
const EVERYONE: &str = "";

/// What the listener shares with the waiters.
#[derive(Debug)]
pub(crate) struct Wake {
    /// The queue of each notification, or [`EVERYONE`].
    events: broadcast::Sender<Arc<str>>,
    /// Whether the `LISTEN` is in place now.
    listening: watch::Sender<bool>,
}

/// A waiter's subscription to the notifications.
pub(crate) struct Events(broadcast::Receiver<Arc<str>>);

impl Wake {
    pub(crate) fn new() -> Wake {
        Wake {
            events: broadcast::channel(1024).0,
            listening: watch::channel(false).0,
        }
    }

    /// A subscription to the notifications from now on, if the listener is (or, within a
    /// moment, becomes) connected; `None` means the caller must poll.
    pub(crate) async fn subscribe(&self, patience: Duration) -> Option<Events> {
        let mut listening = self.listening.subscribe();
        if !*listening.borrow_and_update() {
            // The first wait of a store starts the listener: give it a moment to connect.
            let patience = patience.min(Duration::from_secs(2));
            let _ = tokio::time::timeout(patience, listening.wait_for(|up| *up)).await;
        }
        let events = Events(self.events.subscribe());
        if *self.listening.borrow() {
            Some(events)
        } else {
            None
        }
    }

    fn send(&self, queue: &str) {
        // No receiver is fine: nobody is waiting.
        let _ = self.events.send(Arc::from(queue));
    }
}

impl Events {
    /// Returns when a notification names one of `queues` (or everyone).
    pub(crate) async fn for_any_of(&mut self, queues: &[String]) {
        loop {
            match self.0.recv().await {
                Ok(queue) => {
                    if &*queue == EVERYONE || queues.iter().any(|q| **q == *queue) {
                        return;
                    }
                }
                // Missed some: one of them may have been ours.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

/// Keeps a `LISTEN` on `channel` alive for as long as the store lives (the store aborts the
/// task when dropped), reconnecting with a backoff when the connection is lost.
pub(crate) async fn listen_loop(connect: PgConnectOptions, channel: String, wake: Arc<Wake>) {
    // A pool of its own, so the listening connection never takes one of the store's.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(connect);
    let mut backoff = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.ignore_pool_close_event(true);
            listener.eager_reconnect(false);
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        let mut listener = match listener {
            Ok(listener) => listener,
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(%error, channel, retry_in = ?backoff, "could not LISTEN for dispatches: idle workers poll until it works");
                } else {
                    tracing::debug!(%error, channel, retry_in = ?backoff, "could not LISTEN for dispatches");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(channel, "listening for dispatches again");
        }
        failures = 0;
        backoff = Duration::from_millis(100);
        wake.listening.send_replace(true);
        wake.send(EVERYONE);
        let error = loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => wake.send(notification.payload()),
                Ok(None) => break None,
                Err(error) => break Some(error),
            }
        };
        wake.listening.send_replace(false);
        wake.send(EVERYONE);
        match error {
            Some(error) => {
                tracing::warn!(%error, channel, "lost the LISTEN connection: reconnecting")
            }
            None => tracing::warn!(channel, "lost the LISTEN connection: reconnecting"),
        }
        drop(listener);
    }
}
