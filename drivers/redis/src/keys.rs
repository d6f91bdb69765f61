//! Key names: where every piece of the queue lives in Redis.
//!
//! With the prefix `P` (default `queue`) and a queue `Q`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{P:Q}:pending` | sorted set | jobs not reserved, scored by available time (Unix ms) |
//! | `{P:Q}:reserved` | sorted set | reserved jobs, scored by lease deadline (Unix ms) |
//! | `{P:Q}:job:<member>` | hash | one job: `n` name, `p` payload, `a` attempts, `t` token while reserved |
//! | `{P:Q}:seq` | string | the queue's id counter |
//! | `{P:Q}:notify` | pub/sub channel | published on push and release, to wake idle workers |
//! | `{P}:queues` | set | every queue ever pushed to (for `queues()`) |
//! | `{F}:failed:seq` | string | the failed store's id counter (`F` defaults to `P`) |
//! | `{F}:failed:index` | sorted set | failed jobs scored by failed time (Unix ms) |
//! | `{F}:failed:job:<member>` | hash | one failed job |
//! | `P:lock:{K}` | string | the lock `K`: its owner, with a TTL |
//!
//! A member is the id zero-padded to 16 digits, so members with the same score sort in
//! push order. The Lua scripts derive `{P:Q}:job:` from the `pending` key by dropping its
//! last seven characters and `{F}:failed:job:` from the index by dropping five; keep the
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

    pub(crate) fn lock(&self, key: &str) -> String {
        format!("{}:lock:{{{}}}", self.prefix, key)
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
    fn scripts_derive_the_job_base_from_pending() {
        let keys = Keys::new("queue", "queue");
        let pending = keys.pending("emails");
        let base = &pending[..pending.len() - "pending".len()];
        assert_eq!(format!("{base}job:0001"), keys.job("emails", "0001"));
        assert_eq!(format!("{base}notify"), keys.channel("emails"));
        let index = keys.failed_index();
        let base = &index[..index.len() - "index".len()];
        assert_eq!(format!("{base}job:0001"), keys.failed_job("0001"));
        assert_eq!(keys.lock("report"), "queue:lock:{report}");
        assert_eq!(pending, "{queue:emails}:pending");
    }
}
