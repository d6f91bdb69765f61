//! What the driver's own tests share: the server URL, fresh prefixes, an admin connection,
//! and a sweep of keys that earlier runs left behind.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use queue_redis::{RedisOptions, RedisStorage};

/// Test prefixes start with this and the creation time in seconds, so a later run can
/// delete what an earlier one left without touching a run in progress.
const TAG: &str = "qtest";

/// Keys of runs older than this are swept.
const STALE: Duration = Duration::from_secs(600);

pub(crate) fn url() -> String {
    RedisOptions::from_env().get_url().to_owned()
}

/// A fresh prefix: `qtest<unix seconds>_<random>`.
pub(crate) fn prefix() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    queue_tests::unique(&format!("{TAG}{secs}"))
}

/// An admin connection to the test server, or `None` (after the skip notice) if it is down.
pub(crate) async fn admin() -> Option<redis::aio::MultiplexedConnection> {
    let url = url();
    let connected = async {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    match connected.await {
        Ok(mut conn) => {
            sweep(&mut conn).await;
            Some(conn)
        }
        Err(e) => queue_tests::server_missing(&url, e),
    }
}

/// Options for a fresh, isolated store.
pub(crate) fn options() -> RedisOptions {
    RedisOptions::from_env().prefix(prefix())
}

/// A fresh store, or `None` if the server is down.
pub(crate) async fn store() -> Option<RedisStorage> {
    admin().await?;
    Some(
        RedisStorage::connect(options())
            .await
            .expect("the redis driver connects"),
    )
}

/// Deletes the keys of test runs older than [`STALE`], once per process.
async fn sweep(conn: &mut redis::aio::MultiplexedConnection) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{TAG}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
        else {
            return;
        };
        let stale: Vec<&String> = keys
            .iter()
            .filter(|k| created(k).is_some_and(|t| now.saturating_sub(t) > STALE.as_secs()))
            .collect();
        if !stale.is_empty() {
            let _: redis::RedisResult<i64> =
                redis::cmd("UNLINK").arg(&stale).query_async(conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// The creation time a test key's prefix records.
fn created(key: &str) -> Option<u64> {
    let rest = &key[key.find(TAG)? + TAG.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if rest[digits.len()..].starts_with('_') {
        digits.parse().ok()
    } else {
        None
    }
}
