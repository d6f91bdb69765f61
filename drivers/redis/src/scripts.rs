//! The Lua scripts, one atomic operation each, loaded once and called by SHA (`EVALSHA`).
//!
//! Each script reads the time with `redis.call('TIME')`: due times and lease deadlines are
//! judged by the server's clock, so workers whose clocks drift still agree. (Redis 5 and
//! later replicate a script's effects, not the script, so reading the clock before a write
//! is allowed.)
//!
//! The scripts that push, settle, reserve, clear or release claims share `lib.lua` (the
//! call's head, pushing with claims, reserving, cursor paging), put in front of each.
//!
//! Every script touches the keys of one hash slot only, except `push` and `settle` given
//! several queues, claims or group counters, `settle` failing a job (a queue and the failed
//! store) and `failed_retry` (the failed store and a queue): on one server they run as they
//! are; on Redis Cluster the driver calls them once per queue, refuses claims and group
//! counters, and fails and retries jobs in steps with `failed_add` and `failed_claim` (see
//! `storage/cluster.rs`).

use std::sync::LazyLock;

use redis::Script;

/// A script with `lib.lua` in front of it.
macro_rules! with_lib {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../scripts/lib.lua"),
            include_str!(concat!("../scripts/", $file))
        ))
    };
}

/// A script on its own.
macro_rules! alone {
    ($file:literal) => {
        Script::new(include_str!(concat!("../scripts/", $file)))
    };
}

/// The driver's scripts.
pub(crate) struct Scripts {
    pub(crate) push: Script,
    pub(crate) settle: Script,
    pub(crate) extend: Script,
    pub(crate) clear: Script,
    pub(crate) jobs: Script,
    pub(crate) failed_page: Script,
    pub(crate) failed_forget: Script,
    pub(crate) failed_prune: Script,
    pub(crate) failed_retry: Script,
    pub(crate) failed_add: Script,
    pub(crate) failed_claim: Script,
    pub(crate) size: Script,
    pub(crate) oldest: Script,
    pub(crate) due: Script,
    pub(crate) lock: Script,
    pub(crate) unlock: Script,
}

/// Loaded on first use.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    push: with_lib!("push.lua"),
    settle: with_lib!("settle.lua"),
    extend: with_lib!("extend.lua"),
    clear: with_lib!("clear.lua"),
    jobs: with_lib!("jobs.lua"),
    failed_page: with_lib!("failed_page.lua"),
    failed_forget: with_lib!("failed_forget.lua"),
    failed_prune: with_lib!("failed_prune.lua"),
    failed_retry: with_lib!("failed_retry.lua"),
    failed_add: alone!("failed_add.lua"),
    failed_claim: alone!("failed_claim.lua"),
    size: alone!("size.lua"),
    oldest: alone!("oldest.lua"),
    due: alone!("due.lua"),
    lock: alone!("lock.lua"),
    unlock: alone!("unlock.lua"),
});
