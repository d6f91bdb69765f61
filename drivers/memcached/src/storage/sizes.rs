//! The size counters `size` reads: waiting and delayed jobs per generation, reserved jobs.
//!
//! Each transition of a job (push, reservation, release, promotion of a due job,
//! acknowledgement, failure) updates the counters in the same request as the write that makes
//! the transition, after it, as if it succeeds; those that did not are undone in a later
//! request. The updates of two transitions of one job, made by different processes, can still
//! reach memcached in either order (a promotion makes its job visible in a slot and then adds
//! one to `waiting`; a reserver that takes the job at once may subtract its one first), and
//! memcached's `decr` stops at zero, which would lose such a subtraction for good.
//!
//! So a counter holds its value plus [`OFFSET`] (2^62): a positive update is an `incr`, a
//! negative one a `decr`, a missing counter is created by the same command at the offset
//! plus the update, and updates commute. (Not 2^63: memcached 1.6.18 sometimes refuses
//! `incr`/`decr` of a stored value of 2^63 or more, when a `-` byte lies in memory after the
//! value.) Below zero, while an update is in flight, reads as zero.

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

    fn stored(v: u64) -> Reply {
        Reply {
            status: Status::Ok,
            data: Some(v.to_string().into_bytes()),
            cas: None,
        }
    }

    /// What memcached holds after `cmd` on a missing counter.
    fn created(cmd: &Cmd) -> u64 {
        match cmd {
            Cmd::Arith {
                vivify: Some(initial),
                ..
            } => *initial,
            other => panic!("not an arithmetic command: {other:?}"),
        }
    }

    #[test]
    fn signed_updates_read_clamped() {
        assert_eq!(count(&stored(created(&plus("k".into(), 3)))), 3);
        assert_eq!(
            count(&stored(created(&minus("k".into(), 2)))),
            0,
            "in flight"
        );
        assert_eq!(created(&minus("k".into(), 2)), OFFSET - 2);
        assert_eq!(count(&stored(OFFSET + 7)), 7);
        assert!(
            created(&plus("k".into(), u64::MAX)) < 1 << 63,
            "never refused"
        );
        assert_eq!(created(&minus("k".into(), u64::MAX)), 0);
        let missing = Reply {
            status: Status::Miss,
            data: None,
            cas: None,
        };
        assert_eq!(count(&missing), 0);
    }
}
