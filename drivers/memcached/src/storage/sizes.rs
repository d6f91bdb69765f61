//! The size counters `size` reads (waiting and delayed jobs per generation, reserved jobs),
//! and the correction of a waiting count left off by a process that stopped mid-transition.
//!
//! Each transition of a job (push, reservation, release, promotion of a due job,
//! acknowledgement, failure) updates the counters with commands of its own, sent in the same
//! request as the compare-and-swap or write that makes the transition, after it, as if it
//! succeeds (those that did not are undone in a later request). Still, the updates of two
//! transitions of one job, made by different processes, can reach memcached in either order:
//! a promotion makes its job visible in a slot and then adds one to `waiting`, and if
//! memcached reads that request in two parts, a reserver that takes the job at once may
//! subtract its one first (the undo of a lost race comes later still). memcached's `decr`
//! stops at zero, so with plain counters such a subtraction was lost whenever the count was
//! zero, and the addition then left a job counted that did not exist (earlier versions sent
//! the counts in a separate request: 25 phantom waiting jobs in an empty queue after the
//! chaos harness's `without-overlapping` scenario).
//!
//! So a size counter is a signed counter ([`signed`]: its value plus 2^62, kept below 2^63,
//! where memcached never refuses `incr`/`decr`): `incr` and `decr` then carry a sign, every
//! update creates a missing counter whatever its sign, and updates commute. Once every
//! update has arrived the count is exact, in whatever order they came; a count read while
//! one is in flight may be off for that moment (below zero reads as zero).

use tracing::warn;

use super::{signed, MemcachedStorage, JANITOR_AFTER_MS};
use crate::client::{Cmd, Reply};
use crate::keys::QueueKeys;
use queue_core::Result;

/// The command that adds `n` jobs to the size counter `key`.
pub(super) fn plus(key: String, n: u64) -> Cmd {
    signed::add(key, i64::try_from(n).unwrap_or(i64::MAX), 0)
}

/// The command that takes `n` jobs off the size counter `key`.
pub(super) fn minus(key: String, n: u64) -> Cmd {
    signed::add(key, i64::try_from(n).map_or(i64::MIN, |n| -n), 0)
}

/// A size counter as read: missing or below zero (an update still in flight) is zero.
pub(super) fn count(reply: &Reply) -> u64 {
    signed::value(reply).map_or(0, |v| u64::try_from(v).unwrap_or(0))
}

/// Where the janitor stands, as it records it (`{prefix}:q:{queue}:jan`): every claimed slot
/// up to `checked` has been looked at by the pass that started at `mark_ms`, when the head
/// was at `mark`. `cas` is the record's CAS token as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JanitorMark {
    pub(super) checked: u64,
    pub(super) mark: u64,
    pub(super) mark_ms: i64,
    pub(super) cas: Option<u64>,
}

impl JanitorMark {
    pub(super) fn parse(reply: &Reply) -> Option<JanitorMark> {
        let text = std::str::from_utf8(reply.value()?).ok()?;
        let mut parts = text.split(';').map(|p| p.parse::<i64>().ok());
        let (checked, mark, mark_ms) = (parts.next()??, parts.next()??, parts.next()??);
        Some(JanitorMark {
            checked: checked.max(0) as u64,
            mark: mark.max(0) as u64,
            mark_ms,
            cas: reply.cas,
        })
    }
}

impl MemcachedStorage {
    /// Sets the waiting count of `queue` back to zero if it is off while the queue provably
    /// holds no waiting job: every slot is claimed (`head == tail`), no slot was claimed for
    /// at least [`JANITOR_AFTER_MS`] (the head is where the janitor marked it that long ago),
    /// and the janitor's pass from then has looked at every claimed slot (so no orphan of a
    /// dead reserver is waiting either). This assumes what the janitor assumes: that no live
    /// process stays stalled that long in the middle of an operation. A count off because a
    /// process died between a transition and its count update is thus repaired once the
    /// queue has been idle a few seconds. The count was read (with its CAS token) before the
    /// janitor's record, the head and the tail, and the write is a compare-and-swap: any
    /// update since makes it fail, and later updates belong to later transitions, which land
    /// on the corrected count.
    #[allow(clippy::too_many_arguments)] // one call site in `sweep`, which read all of these
    pub(super) async fn settle_waiting(
        &self,
        queue: &str,
        qk: &QueueKeys,
        gen: u64,
        now: i64,
        janitor: Option<JanitorMark>,
        head: Option<u64>,
        tail: u64,
        waiting: &Reply,
    ) -> Result<()> {
        let (Some(jan), Some(head)) = (janitor, head) else {
            return Ok(());
        };
        let idle = head == tail
            && jan.mark == head
            && jan.checked == head
            && now.saturating_sub(jan.mark_ms) >= JANITOR_AFTER_MS;
        let (Some(was), Some(cas)) = (signed::value(waiting), waiting.cas) else {
            return Ok(());
        };
        if !idle || was == 0 {
            return Ok(());
        }
        let replies = self
            .run(vec![Cmd::cas(
                qk.waiting(gen),
                signed::OFFSET.to_string().into_bytes(),
                cas,
                0,
            )])
            .await?;
        if replies[0].ok() {
            warn!(
                %queue,
                was,
                "corrected the queue's waiting count to 0: no job has been waiting for a while \
                 (a process stopped between moving a job and counting it)"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Status;

    fn stored(v: i64) -> Reply {
        Reply {
            status: Status::Ok,
            data: Some((signed::OFFSET as i64 + v).to_string().into_bytes()),
            cas: None,
        }
    }

    #[test]
    fn counts_read_clamped() {
        assert_eq!(count(&stored(3)), 3);
        assert_eq!(count(&stored(0)), 0);
        assert_eq!(count(&stored(-2)), 0, "an update in flight");
        let missing = Reply {
            status: Status::Miss,
            data: None,
            cas: None,
        };
        assert_eq!(count(&missing), 0);
        assert_eq!(signed::value(&stored(-7)), Some(-7));
    }

    #[test]
    fn janitor_marks() {
        let reply = |s: &str| Reply {
            status: Status::Ok,
            data: Some(s.as_bytes().to_vec()),
            cas: Some(1),
        };
        assert_eq!(
            JanitorMark::parse(&reply("3;7;1700000000000")),
            Some(JanitorMark {
                checked: 3,
                mark: 7,
                mark_ms: 1_700_000_000_000,
                cas: Some(1),
            })
        );
        assert_eq!(JanitorMark::parse(&reply("3;7")), None);
        assert_eq!(JanitorMark::parse(&reply("x;7;1")), None);
    }
}
