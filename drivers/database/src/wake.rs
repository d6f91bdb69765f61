//! Waking a store's idle waiters: each push (retry, release) of this process names its
//! queues here, and so does PostgreSQL's `LISTEN` connection for every other process's.
//!
//! Notifications are fire-and-forget: any sent while the `LISTEN` connection is down are
//! lost. So while it is down, waiters poll; and whenever it comes back (or goes away) every
//! waiter is woken once, in case a job arrived in between.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
#[cfg(feature = "postgres")]
use tokio::sync::watch;

/// "Every queue": sent when notifications may have been missed.
pub(crate) const EVERYONE: &str = "";

/// What the pushes and the listener share with the waiters.
#[derive(Debug)]
pub(crate) struct Waker {
    /// The queue of each wake-up, or [`EVERYONE`].
    events: broadcast::Sender<Arc<str>>,
    /// Whether other processes' pushes are heard now (PostgreSQL's `LISTEN` is in place).
    #[cfg(feature = "postgres")]
    listening: watch::Sender<bool>,
}

/// A waiter's subscription to the wake-ups.
pub(crate) struct Events(broadcast::Receiver<Arc<str>>);

impl Waker {
    pub(crate) fn new() -> Waker {
        Waker {
            events: broadcast::channel(1024).0,
            #[cfg(feature = "postgres")]
            listening: watch::channel(false).0,
        }
    }

    /// The wake-ups from now on.
    pub(crate) fn subscribe(&self) -> Events {
        Events(self.events.subscribe())
    }

    /// How many waits are subscribed now.
    #[cfg(feature = "sqlite")]
    pub(crate) fn waiters(&self) -> usize {
        self.events.receiver_count()
    }

    /// Wakes the waiters of `queue`.
    pub(crate) fn send(&self, queue: &str) {
        // No receiver is fine: nobody is waiting.
        let _ = self.events.send(Arc::from(queue));
    }

    /// Records whether other processes' pushes are heard, and wakes everyone: some may have
    /// been missed.
    #[cfg(feature = "postgres")]
    pub(crate) fn set_listening(&self, up: bool) {
        self.listening.send_replace(up);
        self.send(EVERYONE);
    }

    /// Whether other processes' pushes are heard, waiting up to `patience` for it (the first
    /// wait of a store starts its listener).
    #[cfg(feature = "postgres")]
    pub(crate) async fn listening(&self, patience: Duration) -> bool {
        let mut listening = self.listening.subscribe();
        let patience = patience.min(Duration::from_secs(2));
        let _ = tokio::time::timeout(patience, listening.wait_for(|up| *up)).await;
        let up = *self.listening.borrow();
        up
    }
}

impl Events {
    /// Returns when a wake-up names one of `queues` (or everyone).
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

/// How long an idle worker sleeps when nothing wakes it: the worker's `timeout`, but never
/// past the next due job (`due_in_ms`: milliseconds until it is due, negative when overdue).
/// Something overdue that the last reserve did not take (another job name, another worker's
/// row lock) must not turn the wait into a busy loop, so an overdue job still allows a short
/// pause.
pub(crate) fn idle_sleep(due_in_ms: Option<i64>, timeout: Duration) -> Duration {
    match due_in_ms {
        Some(due) => {
            let due = if due <= 0 { 25 } else { due.unsigned_abs() };
            timeout.min(Duration::from_millis(due))
        }
        None => timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps() {
        let t = Duration::from_secs(3);
        assert_eq!(idle_sleep(None, t), t);
        assert_eq!(idle_sleep(Some(-5), t), Duration::from_millis(25));
        assert_eq!(idle_sleep(Some(200), t), Duration::from_millis(200));
        assert_eq!(idle_sleep(Some(10_000), t), t);
    }

    #[tokio::test]
    async fn wakes_the_waiters_of_a_queue() {
        let waker = Waker::new();
        let mut events = waker.subscribe();
        waker.send("other");
        waker.send("mine");
        let queues = ["mine".to_owned()];
        tokio::time::timeout(Duration::from_secs(1), events.for_any_of(&queues))
            .await
            .expect("woken by its queue");
    }
}
