//! The worker registry ([`Workers`]): memcached cannot list keys, so the ids live in one
//! index item, `P:workers` (one escaped id per line), changed only by compare-and-swap; each
//! worker's entry is an item of its own, `P:w:ID`, holding its expiry (milliseconds, the
//! writer's clock) and the entry, with a native expiry a little later.
//!
//! A beat writes the entry, then adds the id to the index if it is not there (so an index
//! lost to an eviction or a restart is rebuilt by the next beats). A listing reads the index
//! and every entry in one pipelined request, and drops from the index the ids whose entries
//! are gone or expired. What this cannot promise, said in the crate docs: a listing that
//! drops an expired id while its worker beats again has the worker left out until its next
//! beat, and entries lost by memcached (eviction, restart) are missing until then too.

use std::time::Duration;

use async_trait::async_trait;
use queue_core::storage::{duration_millis, Workers};
use queue_core::Result;

use super::{now_ms, MemcachedStorage, CAS_TRIES, MAX_TTL};
use crate::client::{Cmd, Status};
use crate::error::MemcachedError;
use crate::keys::{escape, unescape};

/// The ids of an index item (escaped, one per line), unescaped; lines that are not ids are
/// left out.
fn parse_index(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(unescape)
        .collect()
}

fn encode_index(ids: &[String]) -> Vec<u8> {
    ids.iter()
        .map(|id| format!("{}\n", escape(id)))
        .collect::<String>()
        .into_bytes()
}

/// An entry item: its expiry (Unix ms) and the entry; `None` if it is not one.
fn parse_entry(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let at = bytes.iter().position(|b| *b == b'\n')?;
    let expires = std::str::from_utf8(&bytes[..at]).ok()?.parse().ok()?;
    Some((expires, &bytes[at + 1..]))
}

impl MemcachedStorage {
    /// Changes the index with compare-and-swap until `change` returns `None` (nothing to
    /// change) or its write lands: `change` takes the ids there now.
    async fn change_index(&self, change: impl Fn(&[String]) -> Option<Vec<String>>) -> Result<()> {
        let key = self.keys().workers();
        for _ in 0..CAS_TRIES {
            let replies = self.run(vec![Cmd::gets(key.clone())]).await?;
            let (ids, cas) = match (replies[0].value(), replies[0].cas) {
                (Some(bytes), Some(cas)) => (parse_index(bytes), Some(cas)),
                (Some(_), None) => {
                    return Err(MemcachedError::Protocol(
                        "the worker index was read without its CAS token".into(),
                    )
                    .into())
                }
                (None, _) => (Vec::new(), None),
            };
            let Some(new) = change(&ids) else {
                return Ok(());
            };
            let cmd = match cas {
                Some(cas) => Cmd::cas(key.clone(), encode_index(&new), cas, 0),
                None => Cmd::add(key.clone(), encode_index(&new), 0),
            };
            match &self.run(vec![cmd]).await?[0].status {
                Status::Ok => return Ok(()),
                Status::Refused(m) => return Err(MemcachedError::Refused(m.clone()).into()),
                // Another process changed it first: look again.
                _ => continue,
            }
        }
        Err(MemcachedError::Protocol(format!(
            "the worker index kept changing: gave up after {CAS_TRIES} tries"
        ))
        .into())
    }
}

#[async_trait]
impl Workers for MemcachedStorage {
    /// The entry written (one `set`), then the index read, and changed by compare-and-swap
    /// only if the id is not in it yet.
    async fn beat(&self, id: &str, entry: &[u8], ttl: Duration) -> Result<()> {
        let expires = now_ms().saturating_add(duration_millis(ttl));
        let mut value = format!("{expires}\n").into_bytes();
        value.extend_from_slice(entry);
        // memcached's own expiry only collects the item: the expiry in the value decides.
        let native = match ttl.as_secs().saturating_add(2) {
            secs if secs > MAX_TTL => 0,
            secs => secs as u32,
        };
        let replies = self
            .run(vec![Cmd::set_ttl(self.keys().worker(id), value, native)])
            .await?;
        if let Status::Refused(m) = &replies[0].status {
            return Err(MemcachedError::Refused(m.clone()).into());
        }
        self.change_index(|ids| {
            (!ids.iter().any(|known| known == id)).then(|| {
                let mut ids = ids.to_vec();
                ids.push(id.to_owned());
                ids
            })
        })
        .await
    }

    /// One request for the index, one pipelined request for every entry, then the ids of
    /// entries gone or expired dropped from the index by compare-and-swap.
    async fn workers(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let replies = self.run(vec![Cmd::get(self.keys().workers())]).await?;
        let ids = replies[0].value().map(parse_index).unwrap_or_default();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let cmds = ids
            .iter()
            .map(|id| Cmd::get(self.keys().worker(id)))
            .collect();
        let replies = self.run(cmds).await?;
        let now = now_ms();
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, reply) in ids.into_iter().zip(&replies) {
            match reply.value().and_then(parse_entry) {
                Some((expires, entry)) if expires > now => live.push((id, entry.to_vec())),
                _ => dead.push(id),
            }
        }
        if !dead.is_empty() {
            self.change_index(|ids| {
                let kept: Vec<String> = ids
                    .iter()
                    .filter(|id| !dead.contains(id))
                    .cloned()
                    .collect();
                (kept.len() < ids.len()).then_some(kept)
            })
            .await?;
        }
        live.sort_by(|a, b| a.0.cmp(&b.0));
        live.dedup_by(|a, b| a.0 == b.0);
        Ok(live)
    }

    /// The entry read and deleted, then the id dropped from the index.
    async fn leave(&self, id: &str) -> Result<bool> {
        let key = self.keys().worker(id);
        let replies = self
            .run(vec![Cmd::get(key.clone()), Cmd::delete(key)])
            .await?;
        let live = replies[0]
            .value()
            .and_then(parse_entry)
            .is_some_and(|(expires, _)| expires > now_ms());
        self.change_index(|ids| {
            ids.iter()
                .any(|known| known == id)
                .then(|| ids.iter().filter(|known| *known != id).cloned().collect())
        })
        .await?;
        Ok(live)
    }
}
