//! Connections kept at hand for the hot path (reserve, settle, extend, push).
//!
//! sqlx's pool pings every connection it gets back (and, by default, every one it hands
//! out) to make sure it is still usable: two extra round trips per statement, which is most
//! of the cost of a statement that commits without waiting for the disk. (sqlx-core
//! `src/pool/connection.rs`, `return_to_pool`: "test the connection on-release ... this is
//! simply a band-aid".) A connection that
//! just ran a statement successfully is known to be usable, so it is kept here and handed out
//! again as it is. Anything else (an error, a future dropped half-way, a connection idle for
//! a while) goes back to the pool, which checks it, and the next statement takes a checked
//! one. A connection the server dropped while it sat here fails one statement, which the
//! worker retries; connections idle longer than [`STALE_AFTER`] are pinged first.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, Database, Pool};

/// A connection kept longer than this is pinged before it is used again.
const STALE_AFTER: Duration = Duration::from_secs(20);

/// The connections kept at hand, on top of a pool.
pub(crate) struct Hot<DB: Database> {
    pool: Pool<DB>,
    idle: Mutex<Vec<(PoolConnection<DB>, Instant)>>,
    keep: usize,
    /// Close, rather than return to the pool, a connection lent and not kept: for
    /// connections whose state after a failure is unknown (a transaction may be open).
    discard: bool,
    /// Signalled when a connection is kept: a caller waiting for the pool may take it
    /// instead (the pool does not know about the connections kept here).
    kept: tokio::sync::Notify,
}

impl<DB: Database> std::fmt::Debug for Hot<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hot").field("keep", &self.keep).finish()
    }
}

/// A connection lent out by [`Hot::get`]: dereferences to the connection. Call
/// [`Lent::keep`] once the work on it succeeded, to have it kept at hand; dropped without
/// that, it goes back to the pool to be checked.
pub(crate) struct Lent<'a, DB: Database> {
    conn: Option<PoolConnection<DB>>,
    home: &'a Hot<DB>,
    /// Close the connection if it is dropped without being kept.
    discard: bool,
}

impl<DB: Database> Hot<DB> {
    /// Keeps up to `keep` connections of `pool` at hand.
    pub(crate) fn new(pool: Pool<DB>, keep: usize) -> Hot<DB> {
        Hot {
            pool,
            idle: Mutex::new(Vec::new()),
            keep,
            discard: false,
            kept: tokio::sync::Notify::new(),
        }
    }

    /// Like [`Hot::new`], but a connection lent and not kept (its work failed, or the future
    /// using it was dropped half-way) is closed instead of going back to the pool. For
    /// connections that run without autocommit, where a failure can leave a transaction
    /// open.
    #[cfg(feature = "mysql")]
    pub(crate) fn discarding(pool: Pool<DB>, keep: usize) -> Hot<DB> {
        let mut hot = Hot::new(pool, keep);
        hot.discard = true;
        hot
    }

    /// The pool underneath.
    pub(crate) fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// A connection: one kept at hand if there is one, else one from the pool, whichever
    /// comes first.
    ///
    /// The pool's `acquire` runs in a task of its own and is never cancelled: in sqlx 0.8 an
    /// acquire that finds no idle connection opens one inline, and dropping it half-way threw
    /// away a session the server had already forked, so the pool never grew and PostgreSQL
    /// spent both CPUs forking backends (thousands of abandoned sessions a run; the
    /// performance issue). When a kept connection wins the race, the acquire still finishes
    /// and its connection goes back to the pool for the next caller.
    pub(crate) async fn get(&self) -> Result<Lent<'_, DB>, sqlx::Error> {
        let mut acquire: Option<tokio::task::JoinHandle<Result<PoolConnection<DB>, sqlx::Error>>> =
            None;
        loop {
            // Registered before looking, so a connection kept right after is not missed.
            let kept = self.kept.notified();
            tokio::pin!(kept);
            kept.as_mut().enable();
            if let Some(conn) = self.take_kept().await {
                // An acquire under way finishes on its own; its connection returns to the pool.
                return Ok(self.lend(conn));
            }
            if acquire.is_none() && self.saturated() {
                // Every connection of the pool is out (SQLite's one writer, most often): one
                // comes back here (kept) or to the pool (a lent one dropped), and both wake
                // this wait. Asking the pool now would only queue a waiter that times out.
                // (A connection dropped to the pool reaches it a moment later, from a task
                // of sqlx's: the wait looks again after a few milliseconds regardless.)
                let _ = tokio::time::timeout(Duration::from_millis(5), kept).await;
                continue;
            }
            let task = acquire.get_or_insert_with(|| {
                let pool = self.pool.clone();
                tokio::spawn(async move { pool.acquire().await })
            });
            tokio::select! {
                joined = task => {
                    return match joined {
                        Ok(conn) => Ok(self.lend(conn?)),
                        Err(e) => Err(sqlx::Error::Io(std::io::Error::other(format!(
                            "acquiring a connection failed: {e}"
                        )))),
                    };
                }
                () = &mut kept => {}
            }
        }
    }

    /// A kept connection, pinged first if it sat for a while; `None` if none is kept.
    /// Whether the pool has no connection to give and may open none.
    fn saturated(&self) -> bool {
        self.pool.num_idle() == 0 && self.pool.size() >= self.pool.options().get_max_connections()
    }

    async fn take_kept(&self) -> Option<PoolConnection<DB>> {
        loop {
            let (mut conn, since) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            if since.elapsed() < STALE_AFTER || conn.ping().await.is_ok() {
                return Some(conn);
            }
            // Dead: dropping it hands it back to the pool, which closes it.
        }
    }

    fn lend(&self, conn: PoolConnection<DB>) -> Lent<'_, DB> {
        Lent {
            conn: Some(conn),
            home: self,
            discard: self.discard,
        }
    }

    /// Gives every kept connection back to the pool (before closing it).
    pub(crate) fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl<DB: Database> Drop for Hot<DB> {
    fn drop(&mut self) {
        // A pooled connection goes back to its pool from a spawned task, which needs a
        // tokio runtime; a store dropped outside one closes its kept connections here instead.
        if tokio::runtime::Handle::try_current().is_err() {
            let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
            for (conn, _) in idle {
                drop(conn.detach());
            }
        }
    }
}

impl<DB: Database> Lent<'_, DB> {
    /// From now on, close the connection if it is dropped without being kept: a transaction
    /// is open on it.
    pub(crate) fn discard_unless_kept(&mut self) {
        self.discard = true;
    }

    /// The work on the connection succeeded: keep it at hand for the next statement.
    pub(crate) fn keep(mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self.home.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.home.keep && !self.home.pool.is_closed() {
                idle.push((conn, Instant::now()));
            } else {
                drop(idle);
                drop(conn);
            }
            self.home.kept.notify_one();
        }
    }
}

impl<DB: Database> Drop for Lent<'_, DB> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.discard {
                // Closing the socket ends the session, and the server rolls back whatever
                // was open.
                drop(conn.detach());
            } else {
                drop(conn);
            }
            // Back to the pool, or closed (room for a new one): a waiter that found the
            // pool saturated may ask it now.
            self.home.kept.notify_one();
        }
    }
}

impl<DB: Database> Deref for Lent<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        // Only `keep` takes the connection out, and it consumes the `Lent`.
        self.conn
            .as_deref()
            .unwrap_or_else(|| unreachable!("a lent connection is present until kept"))
    }
}

impl<DB: Database> DerefMut for Lent<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.conn
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("a lent connection is present until kept"))
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    /// Dropping a store outside any tokio runtime (after the runtime that made it is gone)
    /// must not panic on its kept connections.
    #[test]
    fn dropped_outside_a_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let hot = runtime.block_on(async {
            let pool = sqlx::SqlitePool::connect("sqlite::memory:")
                .await
                .expect("an in-memory database");
            let hot = Hot::new(pool, 2);
            hot.get().await.expect("a connection").keep();
            assert_eq!(hot.idle.lock().unwrap().len(), 1, "the connection is kept");
            hot
        });
        drop(runtime);
        drop(hot);
    }
}
