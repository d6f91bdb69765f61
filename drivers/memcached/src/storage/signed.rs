//! Signed counters on memcached's unsigned ones: the encoding shared by the queue size
//! counters ([`sizes`](super::sizes)) and the named counters ([`counters`](super::counters)).
//!
//! memcached's `incr` and `decr` (`ma`) work on unsigned 64-bit decimals, and `decr` stops
//! at zero. A signed counter is stored as its value plus [`OFFSET`] (2^62): a positive delta
//! is an `incr`, a negative one a `decr`, and a missing counter is created by the same
//! command already holding [`OFFSET`] plus the delta. Every update is then one atomic
//! server-side command, whatever its sign, and updates commute.
//!
//! Why 2^62 and not 2^63 (which would cover all of `i64`): memcached (1.6.18) refuses `incr`
//! and `decr` of a stored value of 2^63 or more whenever a `-` byte follows the item's value
//! in memory before the next zero byte (its `safe_strtoull`, for a number that is negative as
//! a signed one, looks for a minus sign with `strchr`, which runs past the value's end into
//! whatever the slab chunk held before). That happens often: `tests/behaviour.rs` saw 206 of
//! 240 flushes of worker statistics refused with the 2^63 offset. Stored values below 2^63
//! are never checked, so with the offset at 2^62 every value in [`MIN`, `MAX`] is safe.
//!
//! Outside that range values saturate: a delta is clamped into it (so an update never
//! creates an item at 2^63 or more), memcached's `decr` stops at zero (a counter goes no
//! lower than [`MIN`]), and a stored value of 2^63 or more (a counter driven above [`MAX`]
//! by several updates) reads as [`MAX`]. Such a counter is back in memcached's refusal zone
//! and its further updates may be refused; nothing here counts anywhere near 4.6e18.

use crate::client::{Cmd, Reply};

/// A signed counter is stored as its value plus this.
pub(super) const OFFSET: u64 = 1 << 62;
/// The lowest value a signed counter holds (stored as 0).
pub(super) const MIN: i64 = -(OFFSET as i64);
/// The highest value a signed counter holds (stored as 2^63 - 1).
pub(super) const MAX: i64 = OFFSET as i64 - 1;

/// The command that adds `delta` (of either sign, clamped into [`MIN`, `MAX`]) to the
/// signed counter `key`, creating it if it is missing, with memcached's expiry `ttl` (in
/// seconds, 0: never) when it creates it.
pub(super) fn add(key: String, delta: i64, ttl: u32) -> Cmd {
    let delta = delta.clamp(MIN, MAX);
    let magnitude = delta.unsigned_abs();
    if delta >= 0 {
        Cmd::arith(key, magnitude, false, OFFSET + magnitude, ttl)
    } else {
        Cmd::arith(key, magnitude, true, OFFSET - magnitude, ttl)
    }
}

/// A signed counter's value, if present and well-formed; a stored value of 2^63 or more
/// reads as [`MAX`].
pub(super) fn value(reply: &Reply) -> Option<i64> {
    reply.number().map(decode)
}

fn decode(stored: u64) -> i64 {
    match i64::try_from(stored) {
        Ok(stored) => stored - OFFSET as i64,
        Err(_) => MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Status;

    fn reply(stored: u64) -> Reply {
        Reply {
            status: Status::Ok,
            data: Some(stored.to_string().into_bytes()),
            cas: None,
        }
    }

    /// What memcached holds after `add` on a missing counter.
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
    fn round_trips_within_the_range() {
        assert_eq!(MIN, -(1 << 62));
        assert_eq!(MAX, (1 << 62) - 1);
        for v in [0, 1, -1, 42, -42, MIN, MIN + 1, MAX, MAX - 1] {
            let stored = created(&add("k".into(), v, 0));
            assert!(
                stored < 1 << 63,
                "{v} stored as {stored}, which memcached may refuse"
            );
            assert_eq!(value(&reply(stored)), Some(v));
        }
    }

    #[test]
    fn saturates_outside_the_range() {
        assert_eq!(
            value(&reply(created(&add("k".into(), i64::MAX, 0)))),
            Some(MAX)
        );
        assert_eq!(
            value(&reply(created(&add("k".into(), i64::MIN, 0)))),
            Some(MIN)
        );
        assert_eq!(
            value(&reply(created(&add("k".into(), MAX + 1, 0)))),
            Some(MAX)
        );
        assert_eq!(
            value(&reply(created(&add("k".into(), MIN - 1, 0)))),
            Some(MIN)
        );
        // Updates of a counter already at the edge: memcached's `decr` stops at 0, and an
        // `incr` past 2^63 - 1 reads as the maximum.
        assert_eq!(value(&reply(0)), Some(MIN));
        for stored in [1 << 63, (1 << 63) + 5, u64::MAX] {
            assert_eq!(value(&reply(stored)), Some(MAX), "{stored}");
        }
        // An update never moves more than the width of the range in one command.
        for delta in [i64::MAX, i64::MIN] {
            match add("k".into(), delta, 7) {
                Cmd::Arith {
                    delta: magnitude,
                    decr,
                    ttl,
                    ..
                } => {
                    assert_eq!(decr, delta < 0);
                    assert_eq!(magnitude, if decr { OFFSET } else { OFFSET - 1 });
                    assert_eq!(ttl, 7);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn garbage_is_not_a_value() {
        let garbage = Reply {
            status: Status::Ok,
            data: Some(b"-5".to_vec()),
            cas: None,
        };
        assert_eq!(value(&garbage), None);
        let missing = Reply {
            status: Status::Miss,
            data: None,
            cas: None,
        };
        assert_eq!(value(&missing), None);
    }
}
