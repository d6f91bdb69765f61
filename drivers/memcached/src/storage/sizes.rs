//! The size counters `size` reads (waiting and delayed jobs per generation, reserved jobs),
//! signed so that updates commute (see "How exact sizes are" in the crate docs).
//!
//! A counter holds its value plus [`OFFSET`] (2^62): a positive update is an `incr`, a
//! negative one a `decr`, and a missing counter is created by the same command at the offset
//! plus the update. (memcached's own `decr` stops at zero and would lose a subtraction that
//! arrives before its addition; and 1.6.18 sometimes refuses `incr`/`decr` of a value of
//! 2^63 or more, when a `-` byte lies in memory after the value.)

use crate::client::{Cmd, Reply};

/// A size counter is stored as its value plus this.
const OFFSET: u64 = 1 << 62;

/// The command that adds `n` jobs to the size counter `key`.
pub(super) fn plus(key: String, n: u64) -> Cmd {
    let n = n.min(OFFSET - 1);
    Cmd::arith(key, n, false, OFFSET + n)
}

/// The command that takes `n` jobs off the size counter `key`.
pub(super) fn minus(key: String, n: u64) -> Cmd {
    let n = n.min(OFFSET);
    Cmd::arith(key, n, true, OFFSET - n)
}

/// A size counter as read: missing or below zero (an update still in flight) is zero.
pub(super) fn count(reply: &Reply) -> u64 {
    reply
        .number()
        .map_or(0, |stored| stored.saturating_sub(OFFSET))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Status;

    /// What memcached holds after `cmd` on a missing counter, read back as a count.
    fn created(cmd: Cmd) -> (u64, u64) {
        let Cmd::Arith {
            vivify: Some(stored),
            ..
        } = cmd
        else {
            panic!("not a counter update: {cmd:?}");
        };
        let data = Some(stored.to_string().into_bytes());
        let reply = Reply {
            status: Status::Ok,
            data,
            cas: None,
        };
        (stored, count(&reply))
    }

    #[test]
    fn signed_updates_read_clamped() {
        assert_eq!(created(plus("k".into(), 3)), (OFFSET + 3, 3));
        assert_eq!(created(minus("k".into(), 2)), (OFFSET - 2, 0), "in flight");
        assert!(
            created(plus("k".into(), u64::MAX)).0 < 1 << 63,
            "never refused"
        );
        assert_eq!(created(minus("k".into(), u64::MAX)), (0, 0));
    }
}
