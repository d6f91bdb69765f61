//! Unique claims: one item per key (`P:u:KEY`) naming the job that holds it, written with
//! `add` and taken over with compare-and-swap once its holder no longer holds the key in its
//! own record (see "Claims after a crash" in the crate docs).

use std::collections::HashMap;

use queue_core::{JobId, Result, Until};
use tracing::debug;

use super::{
    now_ms, parse_slot, MemcachedStorage, BUCKET_MS, CAS_TRIES, JANITOR_AFTER_MS, LAG_BUCKETS,
};
use crate::client::{Cmd, Status};
use crate::error::MemcachedError;
use crate::record::JobState;

/// A claim younger than this is never taken over when its holder cannot be found: the push
/// that wrote it may still be writing the job. The bound the janitor assumes for a stalled
/// process, plus how far the writer's clock may be behind.
const CLAIM_GRACE_MS: i64 = JANITOR_AFTER_MS + LAG_BUCKETS * BUCKET_MS;

/// Who holds a key, as its claim item says (`j ID AT` or `f FAILED_ID AT JOB_ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Holder {
    /// A job in a queue, by id.
    Job(u64),
    /// A failed job that held its key until it succeeds: its failed id and its queue id.
    Failed(u64, String),
}

impl Holder {
    fn encode(&self, at: i64) -> Vec<u8> {
        match self {
            Holder::Job(id) => format!("j {id} {at}"),
            Holder::Failed(id, job_id) => format!("f {id} {at} {job_id}"),
        }
        .into_bytes()
    }

    /// The holder and when the claim was written.
    fn parse(value: &[u8]) -> Option<(Holder, i64)> {
        let mut parts = std::str::from_utf8(value).ok()?.splitn(4, ' ');
        let (kind, id, at) = (parts.next()?, parts.next()?.parse().ok()?, parts.next()?);
        let holder = match kind {
            "j" => Holder::Job(id),
            "f" => Holder::Failed(id, parts.next()?.to_owned()),
            _ => return None,
        };
        Some((holder, at.parse().ok()?))
    }

    /// The id a duplicate reports: the holder's id in its queue.
    fn job_id(&self) -> JobId {
        match self {
            Holder::Job(id) => JobId(id.to_string()),
            Holder::Failed(_, job_id) => JobId(job_id.clone()),
        }
    }
}

/// What a batch of claims came to.
#[derive(Debug)]
pub(super) struct Claimed {
    /// Per key asked for, in order: `None` if the job got it, else the holder's id.
    pub(super) taken: Vec<Option<JobId>>,
    /// The claim items written, with their CAS tokens (to give back if the push fails).
    pub(super) won: Vec<(String, u64)>,
}

impl MemcachedStorage {
    /// Claims each key for its job. A key asked for twice in one batch goes to the first;
    /// the later ones are duplicates of whoever holds it.
    pub(super) async fn claim(&self, wanted: &[(&str, u64)]) -> Result<Claimed> {
        let now = now_ms();
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, (key, _)) in wanted.iter().enumerate() {
            first.entry(key).or_insert(i);
        }
        let firsts: Vec<usize> = (0..wanted.len())
            .filter(|i| first[wanted[*i].0] == *i)
            .collect();
        let cmds = firsts.iter().map(|i| {
            let (key, id) = wanted[*i];
            Cmd::add(self.keys().claim(key), Holder::Job(id).encode(now), 0)
        });
        let replies = self.run(cmds.collect()).await?;
        let mut outcome: HashMap<&str, std::result::Result<u64, JobId>> = HashMap::new();
        for (i, reply) in firsts.iter().zip(&replies) {
            let (key, id) = wanted[*i];
            let result = match &reply.status {
                Status::Ok => Ok(reply.cas.unwrap_or(0)),
                Status::Refused(m) => return Err(MemcachedError::Refused(m.clone()).into()),
                _ => self.take_over(key, id).await?,
            };
            outcome.insert(key, result);
        }
        let mut claimed = Claimed {
            taken: Vec::with_capacity(wanted.len()),
            won: Vec::new(),
        };
        for (i, (key, _)) in wanted.iter().enumerate() {
            let holder = match &outcome[key] {
                Ok(cas) if first[key] == i => {
                    claimed.won.push((self.keys().claim(key), *cas));
                    None
                }
                Ok(_) => Some(JobId(wanted[first[key]].1.to_string())),
                Err(holder) => Some(holder.clone()),
            };
            claimed.taken.push(holder);
        }
        Ok(claimed)
    }

    /// A held key: the CAS token of the claim written for `id` if its holder is gone, or the
    /// id of the job holding it.
    async fn take_over(&self, key: &str, id: u64) -> Result<std::result::Result<u64, JobId>> {
        let item = self.keys().claim(key);
        for _ in 0..CAS_TRIES {
            let now = now_ms();
            let ours = Holder::Job(id).encode(now);
            let replies = self.run(vec![Cmd::gets(item.clone())]).await?;
            let cmd = match (replies[0].value(), replies[0].cas) {
                (None, _) => Cmd::add(item.clone(), ours, 0),
                (Some(value), Some(cas)) => {
                    if let Some((holder, at)) = Holder::parse(value) {
                        if self.holds(key, &holder, now - at < CLAIM_GRACE_MS).await? {
                            return Ok(Err(holder.job_id()));
                        }
                        debug!(
                            key,
                            ?holder,
                            "taking over a claim its holder no longer holds"
                        );
                    }
                    Cmd::cas(item.clone(), ours, cas, 0)
                }
                (Some(_), None) => {
                    return Err(
                        MemcachedError::Protocol("a claim read without its CAS".into()).into(),
                    )
                }
            };
            let replies = self.run(vec![cmd]).await?;
            match &replies[0].status {
                Status::Ok => return Ok(Ok(replies[0].cas.unwrap_or(0))),
                Status::Refused(m) => return Err(MemcachedError::Refused(m.clone()).into()),
                _ => continue, // another pusher moved first: look again
            }
        }
        Err(MemcachedError::Contention(format!("claim the key {key:?}")).into())
    }

    /// Whether `holder` still holds `key`. A job holds it while its record names the key and
    /// its state keeps it: waiting or delayed (not cleared), or reserved unless the claim was
    /// only until it started. A waiting job must also be reachable: in its slot, or in a slot
    /// no reserver has claimed yet. When the record is missing or the waiting job cannot be
    /// reached, a `young` claim still holds: its push may not have written everything yet.
    pub(super) async fn holds(&self, key: &str, holder: &Holder, young: bool) -> Result<bool> {
        let id = match holder {
            Holder::Failed(id, _) => {
                let replies = self.run(vec![Cmd::get(self.keys().failed(*id))]).await?;
                let failed = self.decode_failed(*id, &replies[0]);
                return Ok(failed.is_some_and(|(_, f)| f.unique.is_some_and(|u| u.key == key)));
            }
            Holder::Job(id) => *id,
        };
        let replies = self.run(vec![Cmd::get(self.keys().job(id))]).await?;
        let Some((_, first)) = self.decode_job(id, &replies[0]) else {
            return Ok(young);
        };
        // The slot is read before the record again: a reserver deletes the slot only after
        // its record changed, so a record still waiting in an empty slot is not being taken.
        let qk = self.keys().queue(&first.queue);
        let mut cmds = vec![Cmd::get(qk.gen()), Cmd::get(qk.head())];
        let slot = match first.state {
            JobState::Waiting { slot } => {
                cmds.push(Cmd::get(qk.slot(slot)));
                Some(slot)
            }
            _ => None,
        };
        cmds.push(Cmd::get(self.keys().job(id)));
        let replies = self.run(cmds).await?;
        let (gen, head) = (
            replies[0].number().unwrap_or(0),
            replies[1].number().unwrap_or(0),
        );
        let Some((_, record)) = replies.last().and_then(|r| self.decode_job(id, r)) else {
            return Ok(young);
        };
        let Some(unique) = record.unique.filter(|u| u.key == key) else {
            return Ok(false);
        };
        Ok(match record.state {
            JobState::Reserved { .. } => unique.until != Until::Started,
            _ if record.gen < gen => false, // cleared
            JobState::Delayed { .. } => true,
            JobState::Waiting { slot: n } if Some(n) == slot => {
                let in_slot = replies[2].value().and_then(parse_slot) == Some(id);
                in_slot || n > head || young
            }
            JobState::Waiting { .. } => true, // moved to another slot between the reads
        })
    }

    /// Deletes each claim still held by its holder (compare-and-swap: a claim taken over
    /// since stays with its new holder).
    pub(super) async fn release_claims(&self, claims: Vec<(String, Holder)>) -> Result<()> {
        if claims.is_empty() {
            return Ok(());
        }
        let reads = claims
            .iter()
            .map(|(key, _)| Cmd::gets(self.keys().claim(key)));
        let replies = self.run(reads.collect()).await?;
        let deletes = claims
            .iter()
            .zip(&replies)
            .filter_map(|((key, holder), reply)| {
                let (current, _) = Holder::parse(reply.value()?)?;
                let cas = reply.cas.filter(|_| current == *holder)?;
                Some(Cmd::delete_cas(self.keys().claim(key), cas))
            });
        self.run(deletes.collect()).await?;
        Ok(())
    }

    /// Hands the claim on `key` from `from` to `to` if `from` still has it (a job moving into
    /// the failed store with its key).
    pub(super) async fn move_claim(&self, key: &str, from: Holder, to: Holder) -> Result<()> {
        let item = self.keys().claim(key);
        let replies = self.run(vec![Cmd::gets(item.clone())]).await?;
        let reply = &replies[0];
        if let (Some((current, _)), Some(cas)) = (reply.value().and_then(Holder::parse), reply.cas)
        {
            if current == from {
                self.run(vec![Cmd::cas(item, to.encode(now_ms()), cas, 0)])
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_values() {
        for holder in [Holder::Job(12), Holder::Failed(3, "12 x".into())] {
            assert_eq!(Holder::parse(&holder.encode(77)), Some((holder, 77)));
        }
        assert_eq!(Holder::Failed(3, "12".into()).job_id(), JobId("12".into()));
        for garbage in [&b""[..], b"j", b"j 1", b"x 1 2", b"j one 2", b"f 1 2"] {
            assert_eq!(Holder::parse(garbage), None, "{garbage:?}");
        }
    }
}
