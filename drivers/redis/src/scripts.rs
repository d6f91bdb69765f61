//! The Lua scripts, one atomic operation each, loaded once and called by SHA (`EVALSHA`).
//!
//! The scripts read the time with `redis.call('TIME')`: due times and lease deadlines are
//! judged by the server's clock, so workers whose clocks drift still agree. (Redis 5 and
//! later replicate a script's effects, not the script, so reading the clock anywhere in a
//! script is allowed.)
//!
//! The scripts share pieces of `scripts/lib/`, put in front of each script that uses them:
//! `head.lua` (the call's head: claim prefix, registry, queue table; the clock; releasing
//! claims), `push.lua` (pushing with claims), `reserve.lua`, `paging.lua` (cursors). A
//! script includes only what it uses, and `push.lua`, the hottest, none: Redis runs a
//! script's whole chunk on every call, so every definition costs on every call.
//!
//! A script touches the keys of one hash slot only when it is given one queue and no claim,
//! group or failed-store key: on Redis Cluster the driver calls it that way (per queue),
//! refuses claims and groups, and fails and retries jobs in steps with `failed_add` and
//! `failed_claim` (see `storage/cluster.rs`). On one server each call is one script.

use std::sync::LazyLock;

use redis::Script;

/// A script with the `lib/` pieces it uses in front of it.
macro_rules! script {
    ([$($lib:literal),*], $file:literal) => {
        Script::new(concat!(
            $(include_str!(concat!("../scripts/lib/", $lib, ".lua")),)*
            include_str!(concat!("../scripts/", $file))
        ))
    };
}

/// The driver's scripts.
pub(crate) struct Scripts {
    pub(crate) push: Script,
    pub(crate) settle: Script,
    pub(crate) extend: Script,
    pub(crate) clear: Script,
    pub(crate) track: Script,
    pub(crate) record: Script,
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
    pub(crate) workers_beat: Script,
    pub(crate) workers_list: Script,
    pub(crate) workers_leave: Script,
}

/// Loaded on first use.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    push: script!([], "push.lua"),
    settle: script!(["head", "push", "reserve"], "settle.lua"),
    extend: script!(["head"], "extend.lua"),
    clear: script!(["head"], "clear.lua"),
    track: script!(["head"], "track.lua"),
    record: script!([], "record.lua"),
    jobs: script!(["paging"], "jobs.lua"),
    failed_page: script!(["paging"], "failed_page.lua"),
    failed_forget: script!(["head"], "failed_forget.lua"),
    failed_prune: script!(["head"], "failed_prune.lua"),
    failed_retry: script!(["head", "push"], "failed_retry.lua"),
    failed_add: script!([], "failed_add.lua"),
    failed_claim: script!([], "failed_claim.lua"),
    size: script!([], "size.lua"),
    oldest: script!([], "oldest.lua"),
    due: script!([], "due.lua"),
    lock: script!([], "lock.lua"),
    unlock: script!([], "unlock.lua"),
    workers_beat: script!([], "workers_beat.lua"),
    workers_list: script!([], "workers_list.lua"),
    workers_leave: script!([], "workers_leave.lua"),
});
