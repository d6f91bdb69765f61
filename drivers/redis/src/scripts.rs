//! The Lua scripts, one atomic operation each, loaded once and called by SHA (`EVALSHA`).
//!
//! Each script reads the time with `redis.call('TIME')`: due times and lease deadlines are
//! judged by the server's clock, so workers whose clocks drift still agree. (Redis 5 and
//! later replicate a script's effects, not the script, so reading the clock before a write
//! is allowed.)
//!
//! Every script touches the keys of one hash slot only, except `push`, `reserve`,
//! `acknowledge` and `due` given several queues, `fail` (a queue and the failed store) and
//! `failed_retry` (the failed store and a queue): on one server they run as they are; on
//! Redis Cluster the driver calls the first four once per queue and does `fail` and
//! `failed_retry` in steps with `failed_add` and `failed_claim` (see `storage.rs`).

use std::sync::LazyLock;

use redis::Script;

/// The driver's scripts.
pub(crate) struct Scripts {
    pub(crate) push: Script,
    pub(crate) reserve: Script,
    pub(crate) acknowledge: Script,
    pub(crate) extend: Script,
    pub(crate) release: Script,
    pub(crate) fail: Script,
    pub(crate) size: Script,
    pub(crate) clear: Script,
    pub(crate) due: Script,
    pub(crate) lock: Script,
    pub(crate) unlock: Script,
    pub(crate) failed_page: Script,
    pub(crate) failed_forget: Script,
    pub(crate) failed_prune: Script,
    pub(crate) failed_retry: Script,
    pub(crate) failed_add: Script,
    pub(crate) failed_claim: Script,
    pub(crate) oldest: Script,
    pub(crate) counters_add: Script,
    pub(crate) counters_read: Script,
}

/// Loaded on first use.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    push: Script::new(include_str!("../scripts/push.lua")),
    reserve: Script::new(include_str!("../scripts/reserve.lua")),
    acknowledge: Script::new(include_str!("../scripts/acknowledge.lua")),
    extend: Script::new(include_str!("../scripts/extend.lua")),
    release: Script::new(include_str!("../scripts/release.lua")),
    fail: Script::new(include_str!("../scripts/fail.lua")),
    size: Script::new(include_str!("../scripts/size.lua")),
    clear: Script::new(include_str!("../scripts/clear.lua")),
    due: Script::new(include_str!("../scripts/due.lua")),
    lock: Script::new(include_str!("../scripts/lock.lua")),
    unlock: Script::new(include_str!("../scripts/unlock.lua")),
    failed_page: Script::new(include_str!("../scripts/failed_page.lua")),
    failed_forget: Script::new(include_str!("../scripts/failed_forget.lua")),
    failed_prune: Script::new(include_str!("../scripts/failed_prune.lua")),
    failed_retry: Script::new(include_str!("../scripts/failed_retry.lua")),
    failed_add: Script::new(include_str!("../scripts/failed_add.lua")),
    failed_claim: Script::new(include_str!("../scripts/failed_claim.lua")),
    oldest: Script::new(include_str!("../scripts/oldest.lua")),
    counters_add: Script::new(include_str!("../scripts/counters_add.lua")),
    counters_read: Script::new(include_str!("../scripts/counters_read.lua")),
});
