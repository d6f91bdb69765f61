//! Named counters (statistics, throughput buckets, the restart signal) and the index that
//! lists their names, which memcached cannot do itself.
//!
//! A counter is one item holding a signed counter ([`signed`]: its value plus 2^62 in
//! decimal), so memcached's unsigned `incr` and `decr` (`ma`) carry a sign: a positive delta
//! is an `incr`, a negative one a `decr`, and a missing counter is created by the same
//! command already holding 2^62 plus the delta. Every delta is one atomic server-side
//! operation: no read-modify-write, no lost update, whatever the number of processes. Values
//! range over [-2^62, 2^62) and saturate outside it. (Earlier versions added 2^63, which
//! memcached often refuses to `incr`/`decr`: a whole `add_counters` failed after the
//! request's other updates were applied. The counters moved to new keys.)
//!
//! Names are listed in *groups*, one item per group holding escaped names one per line; a
//! name's group is its first two `:`-separated parts (`stats:job`, `rate:{queue}`,
//! `control:restart`). The *root* lists the groups. Writers append a name the first time
//! they write it (and again after [`CACHE_FOR`], or after the name's TTL); readers dedupe the
//! lists and drop names whose counter item is gone, and groups left empty.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use queue_core::storage::duration_millis;
use queue_core::Result;
use tracing::{debug, error, warn};

use super::{now_ms, signed, MemcachedStorage, MAX_TTL, SCAN_CHUNK};
use crate::client::{Cmd, Reply, Status};
use crate::error::MemcachedError;
use crate::keys::{escape, unescape};

/// How long a process trusts that a name it appended is still listed (names are only ever
/// dropped once their counter is gone; this bounds how long an eviction can hide one).
pub(super) const CACHE_FOR: Duration = Duration::from_secs(600);
/// A group is compacted by a writer after every this many appends to it.
const COMPACT_EVERY: u64 = 256;
/// Tries of the compare-and-swap that rewrites the root.
const ROOT_TRIES: usize = 4;

/// The group a counter's name is listed in: its first two `:`-separated parts.
pub(super) fn group_of(name: &str) -> &str {
    match name.match_indices(':').nth(1) {
        Some((at, _)) => &name[..at],
        None => name,
    }
}

/// Whether group `group` may hold names that start with `prefix`. A group holds the name
/// equal to it and names that continue it with `:`.
fn group_may_match(group: &str, prefix: &str) -> bool {
    group.starts_with(prefix)
        || prefix
            .strip_prefix(group)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
}

/// memcached's expiry for a counter written with `ttl`: whole seconds, rounded up, plus one
/// (memcached's clock ticks once a second, so a relative TTL of n may end after n - 1).
/// The exact expiry is kept beside it; memcached's only collects the items.
fn memcached_ttl(ttl: Duration) -> u32 {
    let secs = ttl.as_secs().saturating_add(2);
    if secs <= MAX_TTL {
        secs as u32
    } else {
        // memcached reads values above 30 days as a Unix time.
        let unix = (now_ms().max(0) as u64 / 1000).saturating_add(secs);
        u32::try_from(unix).unwrap_or(u32::MAX)
    }
}

/// Escaped names, one per line, as they are appended to a list.
fn lines<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    names
        .into_iter()
        .map(|n| format!("{}\n", escape(n)))
        .collect::<String>()
        .into_bytes()
}

/// A list item: its distinct names, and whether it holds duplicates or garbage (then it is
/// worth rewriting).
fn parse_list(data: &[u8]) -> (BTreeSet<String>, bool) {
    let mut names = BTreeSet::new();
    let mut entries = 0;
    let mut garbage = false;
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        entries += 1;
        match std::str::from_utf8(line).ok().and_then(unescape) {
            Some(name) => {
                names.insert(name);
            }
            None => garbage = true,
        }
    }
    let messy = garbage || entries != names.len();
    (names, messy)
}

/// A group as read: its names, the CAS token to rewrite it with, and whether its list holds
/// duplicates or garbage.
struct GroupList {
    group: String,
    cas: Option<u64>,
    names: BTreeSet<String>,
    messy: bool,
}

impl MemcachedStorage {
    pub(super) async fn add_counters_impl(
        &self,
        deltas: &[(String, i64)],
        ttl: Option<Duration>,
    ) -> Result<()> {
        let mut merged: BTreeMap<&str, i64> = BTreeMap::new();
        for (name, delta) in deltas {
            let sum = merged.entry(name).or_default();
            *sum = sum.saturating_add(*delta);
        }
        if merged.is_empty() {
            return Ok(());
        }
        let keys = self.keys();
        let started = Instant::now();
        let (mc_ttl, expires) = match ttl {
            Some(ttl) => (
                memcached_ttl(ttl),
                Some(now_ms().saturating_add(duration_millis(ttl))),
            ),
            None => (0, None),
        };
        // Per counter: the atomic add, then its expiry (memcached's, and the exact one
        // beside it; a write without a TTL makes the counter permanent again).
        let mut cmds = Vec::with_capacity(merged.len() * 3 + 8);
        for (name, delta) in &merged {
            cmds.push(signed::add(keys.counter(name), *delta, mc_ttl));
            cmds.push(Cmd::touch(keys.counter(name), mc_ttl));
            cmds.push(match expires {
                Some(at) => Cmd::set_ttl(
                    keys.counter_expiry(name),
                    at.to_string().into_bytes(),
                    mc_ttl,
                ),
                None => Cmd::delete(keys.counter_expiry(name)),
            });
        }
        // Then, in the same request and after the adds (so a reader pruning a name whose
        // counter it found missing cannot drop a name written again meanwhile without its
        // compare-and-swap failing), list the names this process has not listed lately.
        let (new_names, new_groups) = {
            let mut local = self.local();
            local.counter_names.retain(|_, until| *until > started);
            local.counter_groups.retain(|_, until| *until > started);
            let mut names: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for name in merged.keys() {
                if !local.counter_names.contains_key(*name) {
                    names.entry(group_of(name)).or_default().push(name);
                }
            }
            let groups: Vec<&str> = names
                .keys()
                .copied()
                .filter(|g| !local.counter_groups.contains_key(*g))
                .collect();
            (names, groups)
        };
        let listing_at = cmds.len();
        for (group, names) in &new_names {
            cmds.push(Cmd::add(keys.counter_group(group), Vec::new(), 0));
            cmds.push(Cmd::append(
                keys.counter_group(group),
                lines(names.iter().copied()),
            ));
            cmds.push(Cmd::incr(keys.counter_appends(group), names.len() as u64));
        }
        let root_at = cmds.len();
        if !new_groups.is_empty() {
            cmds.push(Cmd::add(keys.counter_root(), Vec::new(), 0));
            cmds.push(Cmd::append(
                keys.counter_root(),
                lines(new_groups.iter().copied()),
            ));
        }
        let replies = self.run(cmds).await?;
        for reply in replies[..listing_at].iter().step_by(3) {
            reply.checked("add to a counter")?;
        }
        // The counts are in: from here on nothing may fail the call (a retry would count
        // twice). Listing problems are logged and repaired by later calls.
        let root_ok = new_groups.is_empty() || replies[root_at + 1].ok();
        let valid_for = ttl.map_or(CACHE_FOR, |t| t.min(CACHE_FOR));
        let until = started + valid_for;
        let mut compact = Vec::new();
        {
            let mut local = self.local();
            for (i, (group, names)) in new_names.iter().enumerate() {
                let append = &replies[listing_at + 3 * i + 1];
                let appended = replies[listing_at + 3 * i + 2].number().unwrap_or(0);
                let k = names.len() as u64;
                if appended / COMPACT_EVERY != appended.saturating_sub(k) / COMPACT_EVERY {
                    compact.push((*group).to_owned());
                }
                for name in names {
                    local.counter_names.insert((*name).to_owned(), until);
                }
                if !append.ok() {
                    // Not retried before the names' cache entries run out: a full group
                    // would otherwise be retried (and compacted) on every flush.
                    error!(
                        group = %group,
                        status = ?append.status,
                        "could not list counters in their group (it may be full): they count, but `counters` does not show them"
                    );
                    compact.push((*group).to_owned());
                    continue;
                }
                // A group is known listed while one of our names in it lives: a reader only
                // drops a group once every name in it is gone.
                let known = local.counter_groups.contains_key(*group);
                if known || root_ok {
                    let entry = local
                        .counter_groups
                        .entry((*group).to_owned())
                        .or_insert(until);
                    *entry = (*entry).max(until);
                }
            }
        }
        if !root_ok {
            error!(status = ?replies[root_at + 1].status, "could not list counter groups in the index");
        }
        compact.dedup();
        for group in compact {
            if let Err(e) = self.compact_group(&group).await {
                debug!(%group, error = %e, "could not compact a counter group; a later call will");
            }
        }
        Ok(())
    }

    pub(super) async fn counters_impl(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        let keys = self.keys();
        let own = group_of(prefix);
        // The common lookups (one counter by its full name, `control:restart` every second
        // in every worker) are answered by this one round trip.
        let first = self
            .run(vec![
                Cmd::gets(keys.counter_root()),
                Cmd::gets(keys.counter_group(own)),
                Cmd::get(keys.counter(prefix)),
                Cmd::get(keys.counter_expiry(prefix)),
            ])
            .await?;
        let Some(root) = first[0].value() else {
            return Ok(Vec::new());
        };
        let (groups, root_messy) = parse_list(root);
        let matching: Vec<&String> = groups
            .iter()
            .filter(|g| group_may_match(g, prefix))
            .collect();
        let others: Vec<&String> = matching.iter().copied().filter(|g| *g != own).collect();
        let fetched = self
            .run(
                others
                    .iter()
                    .map(|g| Cmd::gets(keys.counter_group(g)))
                    .collect(),
            )
            .await?;
        let mut lists = Vec::new();
        let mut gone_groups = BTreeSet::new();
        let replies = matching
            .iter()
            .filter(|g| **g == own)
            .map(|g| (*g, &first[1]))
            .chain(others.iter().copied().zip(&fetched));
        for (group, reply) in replies {
            match reply.value() {
                Some(data) => {
                    let (names, messy) = parse_list(data);
                    lists.push(GroupList {
                        group: group.clone(),
                        cas: reply.cas,
                        names,
                        messy,
                    });
                }
                None if reply.status == Status::Miss => {
                    gone_groups.insert(group.clone());
                }
                None => {}
            }
        }
        let wanted: BTreeSet<&str> = lists
            .iter()
            .flat_map(|l| l.names.iter())
            .map(String::as_str)
            .filter(|n| n.starts_with(prefix))
            .collect();
        // name -> (value reply, expiry reply)
        let mut found: BTreeMap<&str, (Reply, Reply)> = BTreeMap::new();
        if wanted.iter().all(|n| *n == prefix) {
            if wanted.contains(prefix) {
                found.insert(prefix, (first[2].clone(), first[3].clone()));
            }
        } else {
            let names: Vec<&str> = wanted.iter().copied().collect();
            for chunk in names.chunks(SCAN_CHUNK as usize / 2) {
                let replies = self
                    .run(
                        chunk
                            .iter()
                            .flat_map(|n| {
                                [Cmd::get(keys.counter(n)), Cmd::get(keys.counter_expiry(n))]
                            })
                            .collect(),
                    )
                    .await?;
                for (name, pair) in chunk.iter().zip(replies.chunks(2)) {
                    found.insert(name, (pair[0].clone(), pair[1].clone()));
                }
            }
        }
        let now = now_ms();
        let mut out = Vec::new();
        let mut missing: BTreeSet<&str> = BTreeSet::new();
        for (name, (value, expiry)) in &found {
            if value.status == Status::Miss {
                missing.insert(name);
                continue;
            }
            let Some(v) = signed::value(value) else {
                warn!(counter = %name, "skipping a counter whose item is not a number");
                continue;
            };
            let expired = expiry
                .value()
                .and_then(|e| std::str::from_utf8(e).ok()?.parse::<i64>().ok())
                .is_some_and(|at| at <= now);
            if !expired {
                out.push(((*name).to_owned(), v));
            }
        }
        // Upkeep, best effort: a failure here does not fail the read.
        let mut emptied = BTreeSet::new();
        for list in &lists {
            if !list.messy && !list.names.iter().any(|n| missing.contains(n.as_str())) {
                continue;
            }
            let keep: BTreeSet<&str> = list
                .names
                .iter()
                .map(String::as_str)
                .filter(|n| !missing.contains(n))
                .collect();
            match self.rewrite_group(list, &keep).await {
                Ok(true) => {
                    emptied.insert(list.group.clone());
                }
                Ok(false) => {}
                Err(e) => debug!(group = %list.group, error = %e, "could not tidy a counter group"),
            }
        }
        gone_groups.extend(emptied);
        if root_messy || !gone_groups.is_empty() {
            if let Err(e) = self.tidy_root(&gone_groups).await {
                debug!(error = %e, "could not tidy the counter index");
            }
        }
        Ok(out)
    }

    /// Rewrites a group's list to `keep` with its CAS token (deletes it when `keep` is
    /// empty); returns whether the group was deleted. A concurrent append makes the rewrite
    /// fail, harmlessly: the next reader tries again.
    async fn rewrite_group(&self, list: &GroupList, keep: &BTreeSet<&str>) -> Result<bool> {
        let Some(cas) = list.cas else {
            return Ok(false);
        };
        let key = self.keys().counter_group(&list.group);
        if keep.is_empty() {
            let replies = self.run(vec![Cmd::delete_cas(key, cas)]).await?;
            return Ok(replies[0].ok());
        }
        self.run(vec![Cmd::cas(key, lines(keep.iter().copied()), cas, 0)])
            .await?;
        Ok(false)
    }

    /// Dedupes the root and drops from it the `gone` groups whose item is still missing.
    ///
    /// The group items are checked after the root is read, in the same request: a writer
    /// lists a group in the root only after writing the group's item, so a root that already
    /// holds its entry is read together with the item present, and a root that does not yet
    /// hold it changes before our compare-and-swap.
    async fn tidy_root(&self, gone: &BTreeSet<String>) -> Result<()> {
        let keys = self.keys();
        let key = keys.counter_root();
        for _ in 0..ROOT_TRIES {
            let mut cmds = vec![Cmd::gets(key.clone())];
            cmds.extend(gone.iter().map(|g| Cmd::exists(keys.counter_group(g))));
            let replies = self.run(cmds).await?;
            let (Some(data), Some(cas)) = (replies[0].value(), replies[0].cas) else {
                return Ok(());
            };
            let drop: BTreeSet<&String> = gone
                .iter()
                .zip(&replies[1..])
                .filter(|(_, r)| r.status == Status::Miss)
                .map(|(g, _)| g)
                .collect();
            let (groups, messy) = parse_list(data);
            if !messy && !groups.iter().any(|g| drop.contains(g)) {
                return Ok(());
            }
            let keep = groups
                .iter()
                .filter(|g| !drop.contains(g))
                .map(String::as_str);
            let replies = self
                .run(vec![Cmd::cas(key.clone(), lines(keep), cas, 0)])
                .await?;
            match &replies[0].status {
                Status::Exists => continue,
                Status::Refused(m) => return Err(MemcachedError::Refused(m.clone()).into()),
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// Drops the names of a group whose counters are gone, and duplicates; run by writers
    /// every [`COMPACT_EVERY`] appends, so a group nobody reads stays bounded too.
    async fn compact_group(&self, group: &str) -> Result<()> {
        let keys = self.keys();
        let replies = self.run(vec![Cmd::gets(keys.counter_group(group))]).await?;
        let Some(data) = replies[0].value() else {
            return Ok(());
        };
        let (names, messy) = parse_list(data);
        let list = GroupList {
            group: group.to_owned(),
            cas: replies[0].cas,
            names,
            messy,
        };
        let all: Vec<&str> = list.names.iter().map(String::as_str).collect();
        let mut keep = BTreeSet::new();
        for chunk in all.chunks(SCAN_CHUNK as usize) {
            let replies = self
                .run(chunk.iter().map(|n| Cmd::exists(keys.counter(n))).collect())
                .await?;
            for (name, reply) in chunk.iter().zip(&replies) {
                if reply.status != Status::Miss {
                    keep.insert(*name);
                }
            }
        }
        if !list.messy && keep.len() == list.names.len() {
            return Ok(());
        }
        if self.rewrite_group(&list, &keep).await? {
            self.tidy_root(&BTreeSet::from([group.to_owned()])).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups() {
        assert_eq!(group_of("stats:job:x:processed"), "stats:job");
        assert_eq!(group_of("rate:q:123:failed"), "rate:q");
        assert_eq!(group_of("control:restart"), "control:restart");
        assert_eq!(group_of("plain"), "plain");
        assert_eq!(group_of(""), "");
        for (group, prefix, may) in [
            ("stats:job", "stats:", true),
            ("stats:job", "stats:job:", true),
            ("stats:job", "stats:job:a", true),
            ("stats:job", "stats:jobs", false),
            ("stats:jobs", "stats:job", true),
            ("control:restart", "control:restart", true),
            ("control:restart2", "control:restart", true),
            ("control", "control:restart", true),
            ("rate:q", "rate:q2:", false),
            ("rate:q", "", true),
        ] {
            assert_eq!(group_may_match(group, prefix), may, "{group} {prefix}");
        }
        // Every name is in a group that may match every prefix of it.
        for name in ["stats:job:x:processed", "a:b", "a", "a:b:c:d", ":", "::x"] {
            for cut in 0..=name.len() {
                assert!(
                    group_may_match(group_of(name), &name[..cut]),
                    "{name} {cut}"
                );
            }
        }
    }

    #[test]
    fn lists() {
        let (names, messy) = parse_list(&lines(["a b", "c:d", "a b"]));
        assert_eq!(names.into_iter().collect::<Vec<_>>(), vec!["a b", "c:d"]);
        assert!(messy);
        let (_, messy) = parse_list(&lines(["x", "y"]));
        assert!(!messy);
        let (names, messy) = parse_list(b"ok\n%zz\n\n");
        assert_eq!(names.len(), 1);
        assert!(messy);
    }

    #[test]
    fn signed_values() {
        // The range is [-2^62, 2^62): a counter is stored as its value plus 2^62.
        for v in [0i64, 1, -1, signed::MAX, signed::MIN, 42, -42] {
            let stored = (v + (1 << 62)) as u64;
            let reply = Reply {
                status: Status::Ok,
                data: Some(stored.to_string().into_bytes()),
                cas: None,
            };
            assert_eq!(signed::value(&reply), Some(v));
        }
    }
}
