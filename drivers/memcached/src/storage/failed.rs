//! The failed store: records `F:f:ID` with ids from a counter (`F:next`). memcached cannot
//! list keys, so listing and counting scan the id range, newest first, in pipelined chunks
//! of [`SCAN_CHUNK`] existence checks, down to a low watermark (`F:low`) that `count` and
//! `flush` raise past ids known to be gone. A page costs the ids scanned to fill it.

use std::time::SystemTime;

use async_trait::async_trait;
use queue_core::storage::{from_unix_millis, unix_millis, FailedStore, Page, PageRequest};
use queue_core::{Availability, Error, FailedJob, NewJob, Pushed, Result, Storage as _};
use tracing::warn;

use super::claims::Holder;
use super::{MemcachedStorage, CAS_TRIES, FAILED_MARGIN, SCAN_CHUNK};
use crate::client::{Cmd, Reply, Status};
use crate::error::MemcachedError;
use crate::record::FailedRecord;
use crate::DRIVER;

fn failed_job(id: u64, record: FailedRecord) -> FailedJob {
    FailedJob {
        id: id.to_string(),
        job_id: record.job_id,
        queue: record.queue,
        name: record.name,
        payload: record.payload,
        error: record.error,
        attempts: record.attempts,
        failed_at: from_unix_millis(record.failed_at),
        unique: record.unique,
    }
}

/// The claims `records` hold (until they succeed), to release once they are deleted.
fn claims_of<'a>(
    records: impl IntoIterator<Item = (u64, &'a FailedRecord)>,
) -> Vec<(String, Holder)> {
    records
        .into_iter()
        .filter_map(|(id, r)| {
            let key = r.unique.as_ref()?.key.clone();
            Some((key, Holder::Failed(id, r.job_id.clone())))
        })
        .collect()
}

impl MemcachedStorage {
    /// The failed ids that may exist: `(low, next]`.
    async fn failed_range(&self) -> Result<(u64, u64)> {
        let keys = self.keys();
        let reads = vec![Cmd::get(keys.failed_next()), Cmd::get(keys.failed_low())];
        let replies = self.run(reads).await?;
        let next = replies[0].number().unwrap_or(0);
        let low = replies[1].number().unwrap_or(0).min(next);
        Ok((low, next))
    }

    /// The failed ids in `(low, high]` that exist, newest first, stopping after `want`.
    async fn failed_ids(&self, low: u64, high: u64, want: u64) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        let mut hi = high;
        while hi > low && (ids.len() as u64) < want {
            let lo = hi.saturating_sub(SCAN_CHUNK - 1).max(low + 1);
            let range: Vec<u64> = (lo..=hi).rev().collect();
            let cmds = range.iter().map(|id| Cmd::exists(self.keys().failed(*id)));
            let replies = self.run(cmds.collect()).await?;
            let found = range.iter().zip(&replies).filter(|(_, r)| r.ok());
            ids.extend(found.map(|(id, _)| *id));
            hi = lo - 1;
        }
        ids.truncate(usize::try_from(want).unwrap_or(usize::MAX));
        Ok(ids)
    }

    /// Moves the low watermark up (only ever up, and never into the newest
    /// [`FAILED_MARGIN`] ids below `next`), so scans skip ids known to be gone.
    async fn raise_failed_low(&self, to: u64, next: u64) -> Result<()> {
        let to = to.min(next.saturating_sub(FAILED_MARGIN));
        let key = self.keys().failed_low();
        for _ in 0..CAS_TRIES {
            let replies = self.run(vec![Cmd::gets(key.clone())]).await?;
            let value = to.to_string().into_bytes();
            let cmd = match (replies[0].number(), replies[0].cas) {
                (Some(low), _) if low >= to => return Ok(()),
                (Some(_), Some(cas)) => Cmd::cas(key.clone(), value, cas, 0),
                _ => Cmd::add(key.clone(), value, 0),
            };
            if self.run(vec![cmd]).await?[0].ok() {
                return Ok(());
            }
        }
        Ok(())
    }

    pub(super) fn decode_failed(&self, id: u64, reply: &Reply) -> Option<(u64, FailedRecord)> {
        let data = reply.value()?;
        match FailedRecord::decode(data) {
            Ok(record) => Some((reply.cas.unwrap_or(0), record)),
            Err(reason) => {
                warn!(key = %self.keys().failed(id), %reason, "skipping a corrupt failed-job record");
                None
            }
        }
    }

    async fn failed_records(&self, ids: &[u64]) -> Result<Vec<(u64, u64, FailedRecord)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(64) {
            let cmds = chunk.iter().map(|id| Cmd::gets(self.keys().failed(*id)));
            let replies = self.run(cmds.collect()).await?;
            for (id, reply) in chunk.iter().zip(&replies) {
                if let Some((cas, record)) = self.decode_failed(*id, reply) {
                    out.push((*id, cas, record));
                }
            }
        }
        Ok(out)
    }

    /// Deletes failed records read with their CAS tokens and releases their claims; returns
    /// how many it deleted.
    async fn delete_failed(&self, records: &[(u64, u64, FailedRecord)]) -> Result<u64> {
        let mut gone = Vec::new();
        for chunk in records.chunks(SCAN_CHUNK as usize) {
            let cmds = chunk
                .iter()
                .map(|(id, cas, _)| Cmd::delete_cas(self.keys().failed(*id), *cas));
            let replies = self.run(cmds.collect()).await?;
            let deleted = chunk.iter().zip(&replies).filter(|(_, r)| r.ok());
            gone.extend(deleted.map(|((id, _, r), _)| (*id, r)));
        }
        let count = gone.len() as u64;
        self.release_claims(claims_of(gone)).await?;
        Ok(count)
    }
}

#[async_trait]
impl FailedStore for MemcachedStorage {
    async fn list(&self, page: PageRequest) -> Result<Page<FailedJob>> {
        let (low, next) = self.failed_range().await?;
        let high = match &page.after {
            None => next,
            Some(cursor) => match cursor.parse::<u64>() {
                Ok(id) => id.saturating_sub(1).min(next),
                Err(_) => {
                    return Err(Error::Contract {
                        driver: DRIVER,
                        problem: format!("`{cursor}` is not a cursor of this failed store"),
                    })
                }
            },
        };
        let limit = page.limit.max(1);
        let ids = self.failed_ids(low, high, limit as u64).await?;
        let next = match ids.last() {
            Some(last) if ids.len() == limit => Some(last.to_string()),
            _ => None,
        };
        let records = self.failed_records(&ids).await?;
        let items = records.into_iter().map(|(id, _, r)| failed_job(id, r));
        Ok(Page {
            items: items.collect(),
            next,
        })
    }

    async fn get(&self, id: &str) -> Result<Option<FailedJob>> {
        let Ok(id) = id.parse::<u64>() else {
            return Ok(None);
        };
        let replies = self.run(vec![Cmd::get(self.keys().failed(id))]).await?;
        let record = self.decode_failed(id, &replies[0]);
        Ok(record.map(|(_, record)| failed_job(id, record)))
    }

    async fn count(&self) -> Result<u64> {
        let (low, next) = self.failed_range().await?;
        let ids = self.failed_ids(low, next, u64::MAX).await?;
        match ids.last() {
            Some(oldest) if *oldest > low + 1 => self.raise_failed_low(oldest - 1, next).await?,
            None if next > low => self.raise_failed_low(next, next).await?,
            _ => {}
        }
        Ok(ids.len() as u64)
    }

    async fn retry(&self, id: &str) -> Result<Option<Pushed>> {
        let Ok(id) = id.parse::<u64>() else {
            return Ok(None);
        };
        let key = self.keys().failed(id);
        for _ in 0..CAS_TRIES {
            let replies = self.run(vec![Cmd::gets(key.clone())]).await?;
            let Some((cas, record)) = self.decode_failed(id, &replies[0]) else {
                return Ok(None);
            };
            let data = replies[0].value().map(<[u8]>::to_vec).unwrap_or_default();
            // Taken out first: only one retry wins, and a key the failed job held is then
            // free for its new job. Put back if the job is not pushed.
            let deleted = self.run(vec![Cmd::delete_cas(key.clone(), cas)]).await?;
            match deleted[0].status {
                Status::Ok => {}
                Status::Exists => continue,
                _ => return Ok(None),
            }
            let job = NewJob {
                queue: record.queue,
                name: record.name,
                payload: record.payload,
                available: Availability::Now,
                unique: record.unique,
            };
            let pushed = self.push(vec![job]).await.map(|mut p| p.pop());
            if !matches!(pushed, Ok(Some(Pushed::Created(_)))) {
                self.run(vec![Cmd::add(key, data, 0)]).await?;
            }
            return pushed;
        }
        Err(MemcachedError::Contention(format!("retry failed job {id}")).into())
    }

    async fn forget(&self, id: &str) -> Result<bool> {
        let Ok(id) = id.parse::<u64>() else {
            return Ok(false);
        };
        let records = self.failed_records(&[id]).await?;
        Ok(self.delete_failed(&records).await? > 0)
    }

    async fn flush(&self) -> Result<u64> {
        let (low, next) = self.failed_range().await?;
        let ids = self.failed_ids(low, next, u64::MAX).await?;
        let deleted = self
            .delete_failed(&self.failed_records(&ids).await?)
            .await?;
        self.raise_failed_low(next, next).await?;
        Ok(deleted)
    }

    async fn prune(&self, before: SystemTime) -> Result<u64> {
        let cut = unix_millis(before);
        let (low, next) = self.failed_range().await?;
        let ids = self.failed_ids(low, next, u64::MAX).await?;
        let mut records = self.failed_records(&ids).await?;
        records.retain(|(_, _, r)| r.failed_at < cut);
        self.delete_failed(&records).await
    }
}
