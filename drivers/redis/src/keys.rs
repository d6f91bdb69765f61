//! Key names: where every piece of the queue lives in Redis.
//!
//! With the prefix `P` (default `queue`) and a queue `Q`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{P:Q}:pending` | sorted set | jobs not reserved, scored by available time (Unix ms) |
//! | `{P:Q}:reserved` | sorted set | reserved jobs, scored by lease deadline (Unix ms) |
//! | `{P:Q}:job:<member>` | hash | one job: `n` name, `p` payload, `a` attempts, `t` token while reserved, `u` unique key and `w` until when it holds it (`started`, `succeeded`, `terminal`), `k` the lock it is parked on |
//! | `{P:Q}:seq` | string | the queue's id counter |
//! | `{P:Q}:record:<member>:<kind>` | string | a record of one job ([`Track`](queue_core::storage::Track)): its status, progress, the `cancel` mark; kept with a `PX` expiry, in the job's slot so the scripts that settle, extend and cancel the job write and read it |
//! | `{P:Q}:notify` | pub/sub channel | published on push, retry and release, to wake idle workers |
//! | `{P}:queues` | set | every queue ever pushed to (for `queues()`) |
//! | `{P}:claim:<key>` | string | a unique claim: the id of the job holding it |
//! | `{P}:group:<group>` | hash | a group's counters, by name (those `apply_if` guards included) |
//! | `{P}:values:<group>` | hash | a group's values ([`Effect::Value`](queue_core::Effect::Value): a workflow node's output), by name |
//! | `{P}:waiting:<key>` | hash | the job waiting under `key`: `d` dependencies left, `q` its queue, `v` when it is available once released (as the push scripts take it: '' now, `+<ms>` after a delay, `<ms>` a Unix time), `n`, `p`, and `u`/`w` its claim |
//! | `{P}:restart` | string | the restart generation |
//! | `{P}:workers` | sorted set | the worker registry ([`Workers`](queue_core::storage::Workers)): each live worker's id, scored by when its entry expires (Unix ms, the server's clock) |
//! | `{P}:workers:entries` | hash | the worker registry's entries, by worker id |
//! | `{F}:failed:seq` | string | the failed store's id counter (`F` defaults to `P`) |
//! | `{F}:failed:index` | sorted set | failed jobs scored by failed time (Unix ms) |
//! | `{F}:failed:job:<member>` | hash | one failed job: `j` its id in its queue, `q`, `n`, `p`, `e` error, `a`, `f` failed at, `u`/`w` its claim as pushed (`r`: a retry's claim on it, Unix ms, on Redis Cluster only) |
//! | `P:lock:{K}` | string | the lock `K`: its owner, with a TTL |
//! | `P:parked:{K}` | sorted set | the jobs parked on the lock `K` ([`Effect::Park`](queue_core::Effect::Park), one server only), scored by when they parked: each the job's 16-digit member then its queue's `pending` key; the job's hash holds `k`, the lock's key, while it waits parked |
//!
//! A member is the queue's sequence number zero-padded to 16 digits, so members with the
//! same score sort in push order. The public [`JobId`](queue_core::JobId) is the queue's
//! name, a slash and the number without padding (`emails/17`): unique in the store, since
//! two queues never share a name, while the job's keys stay in its queue's hash slot. The
//! number is all digits, so the id splits at its last slash whatever the queue's name holds.
//! The Lua scripts derive `{P:Q}:job:` (and `{P:Q}:record:`) from the `pending` key by
//! dropping its last seven characters and `{F}:failed:job:` from the index by dropping five; keep the
//! suffixes in step with them.

/// The key names of one store.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    failed: String,
}

/// The widest id a member holds (16 digits).
const MAX_ID: u64 = 9_999_999_999_999_999;

impl Keys {
    pub(crate) fn new(prefix: &str, failed: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            failed: failed.to_owned(),
        }
    }

    fn queue(&self, queue: &str, suffix: &str) -> String {
        format!("{{{}:{}}}:{}", self.prefix, queue, suffix)
    }

    pub(crate) fn pending(&self, queue: &str) -> String {
        self.queue(queue, "pending")
    }

    pub(crate) fn reserved(&self, queue: &str) -> String {
        self.queue(queue, "reserved")
    }

    pub(crate) fn seq(&self, queue: &str) -> String {
        self.queue(queue, "seq")
    }

    pub(crate) fn job(&self, queue: &str, member: &str) -> String {
        format!("{{{}:{}}}:job:{}", self.prefix, queue, member)
    }

    /// The record `kind` of the job `member` of `queue` (the scripts build it the same way
    /// from the queue's base).
    pub(crate) fn record(&self, queue: &str, member: &str, kind: &str) -> String {
        format!("{{{}:{}}}:record:{}:{}", self.prefix, queue, member, kind)
    }

    pub(crate) fn channel(&self, queue: &str) -> String {
        self.queue(queue, "notify")
    }

    pub(crate) fn registry(&self) -> String {
        format!("{{{}}}:queues", self.prefix)
    }

    pub(crate) fn failed_seq(&self) -> String {
        format!("{{{}}}:failed:seq", self.failed)
    }

    pub(crate) fn failed_index(&self) -> String {
        format!("{{{}}}:failed:index", self.failed)
    }

    pub(crate) fn failed_job(&self, member: &str) -> String {
        format!("{{{}}}:failed:job:{}", self.failed, member)
    }

    /// What every claim key starts with (the scripts add the unique key).
    pub(crate) fn claim_prefix(&self) -> String {
        format!("{{{}}}:claim:", self.prefix)
    }

    pub(crate) fn claim(&self, key: &str) -> String {
        format!("{}{key}", self.claim_prefix())
    }

    pub(crate) fn group(&self, group: &str) -> String {
        format!("{{{}}}:group:{group}", self.prefix)
    }

    pub(crate) fn values(&self, group: &str) -> String {
        format!("{{{}}}:values:{group}", self.prefix)
    }

    pub(crate) fn waiting(&self, key: &str) -> String {
        format!("{{{}}}:waiting:{key}", self.prefix)
    }

    pub(crate) fn restart(&self) -> String {
        format!("{{{}}}:restart", self.prefix)
    }

    /// The worker registry's expiry index.
    pub(crate) fn workers(&self) -> String {
        format!("{{{}}}:workers", self.prefix)
    }

    /// The worker registry's entries (in the index's slot).
    pub(crate) fn worker_entries(&self) -> String {
        format!("{{{}}}:workers:entries", self.prefix)
    }

    pub(crate) fn lock(&self, key: &str) -> String {
        format!("{}:lock:{{{}}}", self.prefix, key)
    }

    /// The jobs parked on the lock `key`, in the lock's slot.
    pub(crate) fn parked(&self, key: &str) -> String {
        format!("{}:parked:{{{}}}", self.prefix, key)
    }
}

/// The member of an id (a job's or a failed job's): `None` if it is not one of ours.
pub(crate) fn member(id: &str) -> Option<String> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = id.parse().ok()?;
    (n <= MAX_ID).then(|| format!("{n:016}"))
}

/// The queue and the member a public job id names (`<queue>/<number>`): `None` for an id
/// this store could never have made.
pub(crate) fn split_job_id(id: &str) -> Option<(&str, String)> {
    let (queue, number) = id.rsplit_once('/')?;
    Some((queue, member(number)?))
}

/// The public id of the job `member` of `queue`: `<queue>/<number>`.
pub(crate) fn job_id(queue: &str, member: &str) -> String {
    format!("{queue}/{}", id_of(member))
}

/// The member a public job id names, if it is an id of a job of `queue`: `None` for
/// anything else (another queue's id, a malformed id), which callers treat as a lost lease.
pub(crate) fn job_member(queue: &str, id: &str) -> Option<String> {
    let (of, number) = id.rsplit_once('/')?;
    if of != queue {
        return None;
    }
    member(number)
}

/// The id of a member: the number without its padding.
pub(crate) fn id_of(member: &str) -> String {
    let trimmed = member.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_ids() {
        assert_eq!(member("17").as_deref(), Some("0000000000000017"));
        assert_eq!(id_of("0000000000000017"), "17");
        assert_eq!(member("+17"), None);
        assert_eq!(member(""), None);
        assert_eq!(member("no-such-id"), None);
        assert_eq!(member("99999999999999999"), None);
    }

    #[test]
    fn job_ids_name_their_queue() {
        assert_eq!(job_id("emails", "0000000000000017"), "emails/17");
        assert_eq!(
            job_member("emails", "emails/17").as_deref(),
            Some("0000000000000017")
        );
        // Queue names may hold slashes: the number follows the last one.
        assert_eq!(job_id("a/b", "0000000000000001"), "a/b/1");
        assert_eq!(
            job_member("a/b", "a/b/1").as_deref(),
            Some("0000000000000001")
        );
        assert_eq!(job_member("a", "a/b/1"), None);
        assert_eq!(job_id("", "0000000000000002"), "/2");
        assert_eq!(job_member("", "/2").as_deref(), Some("0000000000000002"));
        assert_eq!(
            split_job_id("a/b/1"),
            Some(("a/b", "0000000000000001".to_owned()))
        );
        for bad in ["", "17", "not an id", "emails/", "emails/x", "emails/+1"] {
            assert_eq!(split_job_id(bad), None, "{bad:?}");
        }
        for bad in [
            "",
            "17",
            "emails",
            "emails/",
            "emails/x",
            "other/17",
            "emails/+1",
            "emails/1 ",
        ] {
            assert_eq!(job_member("emails", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn scripts_derive_the_job_base_from_pending() {
        let keys = Keys::new("queue", "queue");
        let pending = keys.pending("emails");
        let base = &pending[..pending.len() - "pending".len()];
        assert_eq!(format!("{base}job:0001"), keys.job("emails", "0001"));
        assert_eq!(format!("{base}notify"), keys.channel("emails"));
        assert_eq!(
            format!("{base}record:0001:cancel"),
            keys.record("emails", "0001", "cancel")
        );
        let index = keys.failed_index();
        let base = &index[..index.len() - "index".len()];
        assert_eq!(format!("{base}job:0001"), keys.failed_job("0001"));
        assert_eq!(keys.lock("report"), "queue:lock:{report}");
        assert_eq!(pending, "{queue:emails}:pending");
        assert_eq!(keys.claim("k"), "{queue}:claim:k");
        assert_eq!(keys.waiting("wf/a"), "{queue}:waiting:wf/a");
    }
}
