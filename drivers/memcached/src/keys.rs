//! The key layout. Every key is `{prefix}:...`; user-chosen parts (prefixes, queue names,
//! lock keys) are percent-escaped so keys never hold spaces or control characters, and long
//! parts are shortened with a stable hash so keys stay under memcached's 250 bytes.
//!
//! | key | what |
//! |---|---|
//! | `P:epoch` | a random token written at connect; its loss means memcached lost the state |
//! | `P:ids` | the job id counter |
//! | `P:queues` | the names of queues ever pushed to, one per line |
//! | `P:j:ID` | a job's state record ([`JobRecord`](crate::record::JobRecord)) |
//! | `P:b:ID` | a job's payload (written once) |
//! | `P:q:Q:head`, `P:q:Q:tail` | slots claimed so far / allocated so far |
//! | `P:q:Q:s:N` | slot N: the id of a waiting job (or `-`, a skipped slot) |
//! | `P:q:Q:gen` | the queue's generation, bumped by `clear` |
//! | `P:q:Q:sw:G`, `P:q:Q:sd:G`, `P:q:Q:sr` | waiting / delayed (per generation) / reserved counts, each plus 2^62 (so updates carry a sign and commute) |
//! | `P:q:Q:t:B:K`, `P:q:Q:tc:B` | timer bucket B (one second), sub-bucket K (job id mod 16): ids whose due time or lease deadline falls in it; and the second's count |
//! | `P:q:Q:cur` | the first timer bucket not yet fully swept |
//! | `P:q:Q:jan` | the janitor's progress over claimed slots |
//! | `P:u:KEY` | a unique claim: the job (or failed job) holding KEY, and when it was written |
//! | `P:lock:K` | a lock: owner and expiry |
//! | `P:r:ID:KIND` | a record of job ID ([`Track`](queue_core::storage::Track)): its expiry and value, with a native expiry too |
//! | `P:restart` | the restart generation (`runall restart` increments it) |
//! | `P:workers` | the worker registry's index: the ids of the workers, one per line (changed by compare-and-swap) |
//! | `P:w:ID` | a worker's entry ([`Workers`](queue_core::storage::Workers)): its expiry and the entry, with a native expiry too |
//! | `F:next`, `F:low`, `F:f:ID` | the failed store: id counter, lowest live id, records |

/// Keys that fit comfortably: the longest user part kept as is.
const MAX_PART: usize = 100;

/// Percent-escapes everything outside `[A-Za-z0-9_.~-]`; reversible with [`unescape`].
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'~' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape`]; `None` if `text` is not an escaped string.
pub(crate) fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// FNV-1a, 128 bits: stable across processes, builds and platforms (unlike std's hasher).
fn fnv128(text: &str) -> u128 {
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in text.bytes() {
        hash ^= u128::from(b);
        hash = hash.wrapping_mul(0x0000000001000000000000000000013B);
    }
    hash
}

/// A user part as it appears in keys: escaped, and shortened with a hash when long.
pub(crate) fn part(text: &str) -> String {
    let escaped = escape(text);
    if escaped.len() <= MAX_PART {
        return escaped;
    }
    let mut cut = 60;
    while !escaped.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{:032x}", &escaped[..cut], fnv128(text))
}

/// Methods that name keys: `name(args) => "suffix"` is `{base}:suffix`.
macro_rules! keys {
    ($base:ident; $($name:ident($($arg:ident: $ty:ty),*) => $suffix:literal;)*) => {
        $(pub(crate) fn $name(&self, $($arg: $ty),*) -> String {
            format!(concat!("{}:", $suffix), self.$base, $($arg = $arg),*)
        })*
    };
}

/// The keys of one store.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    p: String,
    f: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, failed_prefix: &str) -> Keys {
        let (p, f) = (part(prefix), part(failed_prefix));
        Keys { p, f }
    }

    keys! { p;
        epoch() => "epoch";
        ids() => "ids";
        queues() => "queues";
        restart() => "restart";
        workers() => "workers";
        job(id: u64) => "j:{id}";
        body(id: u64) => "b:{id}";
    }

    keys! { f;
        failed(id: u64) => "f:{id}";
        failed_next() => "next";
        failed_low() => "low";
    }

    pub(crate) fn lock(&self, key: &str) -> String {
        format!("{}:lock:{}", self.p, part(key))
    }

    /// The record `kind` of the job `job_id` (both escaped: any id and kind make a key, so
    /// reading a key no driver would write finds nothing rather than failing).
    pub(crate) fn record(&self, job_id: &str, kind: &str) -> String {
        format!("{}:r:{}:{}", self.p, part(job_id), part(kind))
    }

    /// The worker registry's entry of the worker `id`.
    pub(crate) fn worker(&self, id: &str) -> String {
        format!("{}:w:{}", self.p, part(id))
    }

    pub(crate) fn claim(&self, key: &str) -> String {
        format!("{}:u:{}", self.p, part(key))
    }

    pub(crate) fn queue(&self, queue: &str) -> QueueKeys {
        let base = format!("{}:q:{}", self.p, part(queue));
        QueueKeys { base }
    }
}

/// The keys of one queue.
#[derive(Debug, Clone)]
pub(crate) struct QueueKeys {
    base: String,
}

impl QueueKeys {
    keys! { base;
        head() => "head";
        tail() => "tail";
        gen() => "gen";
        cursor() => "cur";
        janitor() => "jan";
        reserved() => "sr";
        slot(n: u64) => "s:{n}";
        waiting(gen: u64) => "sw:{gen}";
        delayed(gen: u64) => "sd:{gen}";
        timer(bucket: i64, sub: u64) => "t:{bucket}:{sub}";
        timer_count(bucket: i64) => "tc:{bucket}";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        for s in ["plain", "with space", "a:b/c%d", "żółw 🐢\n\r", ""] {
            assert_eq!(unescape(&escape(s)).as_deref(), Some(s));
            assert!(!escape(s).bytes().any(|b| b <= b' ' || b >= 0x7f));
        }
        let long = "x".repeat(1000);
        let k = Keys::new("p", "f").queue(&long).timer_count(i64::MAX);
        assert!(k.len() < 250, "{}", k.len());
        assert_ne!(part(&long), part(&"x".repeat(999)));
        let keys = Keys::new("p", "f");
        assert_eq!(keys.record("12", "status"), "p:r:12:status");
        assert_ne!(keys.record("1:2", "x"), keys.record("1", "2:x"));
        assert!(keys.record(&long, &long).len() < 250);
    }
}
