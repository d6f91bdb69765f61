//! Every statement the MySQL/MariaDB store runs, built once per store from its table names.
//!
//! MySQL has no arrays to bind, so statements over a list of rows come in the fixed sizes of
//! [`CHUNKS`]: a batch is split greedily into a few of them, and only these texts are ever
//! prepared. Times are the server's clock in milliseconds (`NOW`, in UTC: the session's time
//! zone is set to `+00:00`).

use crate::common::CHUNKS;
use crate::dialect::Tables;

/// The server's clock in milliseconds since the Unix epoch. `NOW(3)` is the start of the
/// statement, the same for every row it touches.
const NOW: &str = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)";

/// One statement text per size of [`CHUNKS`].
#[derive(Debug)]
pub(crate) struct BySize(Vec<(usize, String)>);

impl BySize {
    fn new(make: impl Fn(usize) -> String) -> BySize {
        BySize(CHUNKS.iter().map(|&n| (n, make(n))).collect())
    }

    /// The text for `n` rows; `n` is one of [`CHUNKS`].
    pub(crate) fn get(&self, n: usize) -> &str {
        self.0
            .iter()
            .find(|(size, _)| *size == n)
            .map_or("", |(_, sql)| sql.as_str())
    }
}

fn repeat(part: &str, n: usize, separator: &str) -> String {
    vec![part; n].join(separator)
}

/// The statements of one store.
#[derive(Debug)]
pub(crate) struct Statements {
    /// Binds per row: queue, name, payload, absolute time or NULL, delay ms. With
    /// `RETURNING id` on MariaDB; on MySQL the ids follow from `LAST_INSERT_ID()`.
    pub(crate) push: BySize,
    /// The next due jobs of one queue, locked, skipping rows other workers hold. Binds:
    /// queue, name or NULL (twice), limit. Returns id, attempts, name, payload, due_at.
    pub(crate) reserve_pick: String,
    /// The same, from a place in the index on: only jobs due after `(due_at, id)`. Binds:
    /// queue, due_at, id, due_at, name or NULL (twice), limit.
    pub(crate) reserve_pick_after: String,
    /// Marks picked rows reserved and commits, as one text with `{prefix}` (a hex token),
    /// `{lease}` (ms) and `{ids}` (a list of integers) pasted in: nothing a user controls.
    pub(crate) reserve_mark: String,
    /// Binds: id, token.
    pub(crate) acknowledge_one: String,
    /// Deletes the current ones of a list of leases. Binds: every id, then per lease: id,
    /// token. With `RETURNING id, token` on MariaDB.
    pub(crate) acknowledge: BySize,
    /// The jobs of a list that still exist, by primary key (MySQL, after an acknowledgement
    /// that deleted fewer rows than it named). Binds: ids. Returns id, token.
    pub(crate) acknowledge_check: BySize,
    /// Binds: lease ms, id, token.
    pub(crate) extend: String,
    /// Binds: delay ms, refund, id, token.
    pub(crate) release: String,
    /// Binds: id, token.
    pub(crate) lock_reserved: String,
    /// Binds: error, id.
    pub(crate) fail_copy: String,
    /// Binds: id.
    pub(crate) delete: String,
    /// Binds: queue.
    pub(crate) size: String,
    pub(crate) queues: String,
    /// Binds: queue.
    pub(crate) clear: String,
    /// Binds: limit, offset.
    pub(crate) failed_list: String,
    /// Binds: id.
    pub(crate) failed_get: String,
    pub(crate) failed_count: String,
    /// Binds: failed id.
    pub(crate) failed_lock: String,
    /// Binds: failed id. With `RETURNING id` on MariaDB.
    pub(crate) failed_copy_back: String,
    /// Binds: failed id.
    pub(crate) failed_delete: String,
    pub(crate) failed_flush: String,
    /// Binds: cut-off ms.
    pub(crate) failed_prune: String,
    /// Binds: key, owner, ttl ms.
    pub(crate) lock: String,
    /// Binds: key, owner.
    pub(crate) unlock: String,
    /// Milliseconds until the next job of a queue is due (negative: overdue). Binds: queue.
    pub(crate) next_due: String,
    /// Binds: queue.
    pub(crate) oldest_available: String,
    /// Binds per counter: name, delta, ttl ms or NULL.
    pub(crate) add_counters: BySize,
    /// Binds: prefix, upper bound, prefix, prefix.
    pub(crate) counters: String,
    /// Up to a thousand expired counters, in name order, read without locking.
    pub(crate) counters_expired: String,
    /// Deletes those of a list of counters that are still expired, by primary key. Binds:
    /// names.
    pub(crate) counters_sweep: BySize,
    /// Binds: queue.
    pub(crate) total: String,
}

impl Statements {
    pub(crate) fn new(tables: &Tables, returning: bool) -> Statements {
        let fill = |sql: &str| tables.fill(&sql.replace("NOW", NOW));
        let returning_id = if returning { " RETURNING id" } else { "" };
        let leases = |n: usize| repeat("(id = ? AND token = ?)", n, " OR ");
        Statements {
            push: BySize::new(|n| {
                fill(&format!(
                    "INSERT INTO {{table}} (queue, name, payload, attempts, available_at, created_at) \
                     VALUES {}{returning_id}",
                    repeat("(?, ?, ?, 0, COALESCE(?, NOW + ?), NOW)", n, ", ")
                ))
            }),
            // Under READ COMMITTED, InnoDB locks only the rows it returns; SKIP LOCKED passes
            // over rows another transaction holds instead of waiting for them.
            // The index is forced: on a table whose statistics are not computed yet the
            // optimizer may prefer a scan and a sort, which would lock every due job of the
            // queue instead of the first few.
            reserve_pick: fill(
                "SELECT id, attempts, name, payload, due_at FROM {table} FORCE INDEX ({table}_due) \
                 WHERE queue = ? AND due_at <= NOW AND (? IS NULL OR name = ?) \
                 ORDER BY due_at, id LIMIT ? FOR UPDATE SKIP LOCKED",
            ),
            // InnoDB leaves the entries of taken and finished jobs in the index, marked
            // deleted, until its purge catches up: under a steady stream of jobs, thousands
            // of them sit at the front of a queue's range, and a pick from the front steps
            // over every one (a lookup of the row each). Starting after the last job this
            // store took seeks past them (written as two ranges of the index, which the
            // server seeks to directly; `due_at >= ?` with a filter on the id would walk
            // the whole group of jobs due at that same millisecond).
            reserve_pick_after: fill(
                "SELECT id, attempts, name, payload, due_at FROM {table} FORCE INDEX ({table}_due) \
                 WHERE queue = ? AND due_at <= NOW AND ((due_at = ? AND id > ?) OR due_at > ?) \
                 AND (? IS NULL OR name = ?) \
                 ORDER BY due_at, id LIMIT ? FOR UPDATE SKIP LOCKED",
            ),
            // Assignments run left to right: `available_at = due_at` comes first, while
            // `due_at` is still the old row's (when the job became available). Sent as one
            // text with the COMMIT, in one round trip: the values are pasted in, and none of
            // them comes from a user.
            reserve_mark: fill(
                "UPDATE {table} SET available_at = due_at, attempts = attempts + 1, \
                 token = CONCAT('{prefix}', '-', id), reserved_until = NOW + {lease} \
                 WHERE id IN ({ids}); COMMIT",
            ),
            acknowledge_one: fill(
                "DELETE FROM {table} WHERE id = ? AND token = ? AND reserved_until IS NOT NULL",
            ),
            // One statement, no transaction around it: it takes the rows' locks in the order
            // of the primary key and holds no other, so two of them (or one and a
            // reservation) seldom deadlock; the index entries it deletes are locked too, and
            // a deadlock InnoDB still reports is retried by the store. The list of ids lets
            // the server look each row up by primary key.
            acknowledge: BySize::new(|n| {
                fill(&format!(
                    "DELETE FROM {{table}} WHERE id IN ({}) AND reserved_until IS NOT NULL \
                     AND ({}){}",
                    repeat("?", n, ", "),
                    leases(n),
                    if returning { " RETURNING id, token" } else { "" }
                ))
            }),
            acknowledge_check: BySize::new(|n| {
                fill(&format!(
                    "SELECT id, token FROM {{table}} FORCE INDEX (PRIMARY) WHERE id IN ({})",
                    repeat("?", n, ", ")
                ))
            }),
            extend: fill(
                "UPDATE {table} SET reserved_until = NOW + ? \
                 WHERE id = ? AND token = ? AND reserved_until IS NOT NULL",
            ),
            release: fill(
                "UPDATE {table} SET available_at = NOW + ?, \
                 attempts = IF(?, GREATEST(attempts - 1, 0), attempts), \
                 token = NULL, reserved_until = NULL \
                 WHERE id = ? AND token = ? AND reserved_until IS NOT NULL",
            ),
            lock_reserved: fill(
                "SELECT id FROM {table} WHERE id = ? AND token = ? AND reserved_until IS NOT NULL FOR UPDATE",
            ),
            fail_copy: fill(
                "INSERT INTO {failed_table} (job_id, queue, name, payload, error, attempts, failed_at) \
                 SELECT CAST(id AS CHAR), queue, COALESCE(name, ''), COALESCE(payload, ''), ?, attempts, NOW \
                 FROM {table} WHERE id = ?",
            ),
            delete: fill("DELETE FROM {table} WHERE id = ?"),
            size: fill(
                "SELECT CAST(COALESCE(SUM(reserved_until IS NULL AND due_at <= NOW), 0) AS SIGNED), \
                 CAST(COALESCE(SUM(reserved_until IS NULL AND due_at > NOW), 0) AS SIGNED), \
                 CAST(COALESCE(SUM(reserved_until IS NOT NULL), 0) AS SIGNED) \
                 FROM {table} WHERE queue = ?",
            ),
            // `GROUP BY` on the index's first column is a loose index scan: one probe per
            // distinct queue, however many jobs.
            queues: fill("SELECT queue FROM {table} GROUP BY queue ORDER BY queue"),
            clear: fill("DELETE FROM {table} WHERE queue = ? AND reserved_until IS NULL"),
            failed_list: fill(
                "SELECT id, job_id, queue, name, payload, error, attempts, failed_at \
                 FROM {failed_table} ORDER BY id DESC LIMIT ? OFFSET ?",
            ),
            failed_get: fill(
                "SELECT id, job_id, queue, name, payload, error, attempts, failed_at \
                 FROM {failed_table} WHERE id = ?",
            ),
            failed_count: fill("SELECT COUNT(*) FROM {failed_table}"),
            failed_lock: fill("SELECT id FROM {failed_table} WHERE id = ? FOR UPDATE"),
            failed_copy_back: fill(&format!(
                "INSERT INTO {{table}} (queue, name, payload, attempts, available_at, created_at) \
                 SELECT queue, name, payload, 0, NOW, NOW FROM {{failed_table}} WHERE id = ?{returning_id}"
            )),
            failed_delete: fill("DELETE FROM {failed_table} WHERE id = ?"),
            failed_flush: fill("DELETE FROM {failed_table}"),
            failed_prune: fill("DELETE FROM {failed_table} WHERE failed_at < ?"),
            // One statement, no transaction: the owner changes only if the lock is free, ours
            // or expired; the expiry changes only if the owner is now ours (assignments run
            // left to right). Whether the lock was taken travels back in the insert id:
            // 0 for a fresh row, the new expiry when it was taken over or renewed, 1 when
            // another owner holds it (`LAST_INSERT_ID(expr)` sets the id the server reports).
            lock: fill(
                "INSERT INTO {locks_table} (`key`, owner, expires_at) VALUES (?, ?, NOW + ?) \
                 ON DUPLICATE KEY UPDATE \
                 owner = IF(owner = VALUES(owner) OR expires_at <= NOW, VALUES(owner), owner), \
                 expires_at = IF(owner = VALUES(owner), LAST_INSERT_ID(VALUES(expires_at)), \
                 expires_at + 0 * LAST_INSERT_ID(1))",
            ),
            unlock: fill("DELETE FROM {locks_table} WHERE `key` = ? AND owner = ?"),
            next_due: fill("SELECT MIN(due_at) - NOW FROM {table} WHERE queue = ?"),
            oldest_available: fill(
                "SELECT MIN(due_at) FROM {table} WHERE queue = ? AND due_at <= NOW",
            ),
            // A counter whose time ran out starts again from zero; `value` is assigned
            // before `expires_at` changes.
            add_counters: BySize::new(|n| {
                fill(&format!(
                    "INSERT INTO {{counters_table}} (name, value, expires_at) VALUES {} \
                     ON DUPLICATE KEY UPDATE \
                     value = IF(expires_at IS NOT NULL AND expires_at <= NOW, VALUES(value), value + VALUES(value)), \
                     expires_at = VALUES(expires_at)",
                    repeat("(?, ?, NOW + ?)", n, ", ")
                ))
            }),
            counters: fill(
                "SELECT name, value FROM {counters_table} \
                 WHERE name >= ? AND name < ? AND LEFT(name, LENGTH(?)) = ? \
                 AND (expires_at IS NULL OR expires_at > NOW) ORDER BY name",
            ),
            // The sweep reads the expired names through the `expires_at` index without a
            // lock, then deletes them through the primary key, in name order: the order in
            // which `add_counters` locks rows (primary key first, then its `expires_at`
            // entry, which the upsert moves). A `DELETE` through the `expires_at` index would
            // lock the other way round and deadlock with the upserts; the primary key is
            // forced, as the optimizer may prefer the other index for a short list.
            counters_expired: fill(
                "SELECT name FROM {counters_table} \
                 WHERE expires_at IS NOT NULL AND expires_at <= NOW ORDER BY name LIMIT 1000",
            ),
            counters_sweep: BySize::new(|n| {
                fill(&format!(
                    "DELETE c FROM {{counters_table}} AS c FORCE INDEX (PRIMARY) \
                     WHERE c.name IN ({}) AND c.expires_at IS NOT NULL AND c.expires_at <= NOW",
                    repeat("?", n, ", ")
                ))
            }),
            total: fill("SELECT COUNT(*) FROM {table} WHERE queue = ?"),
        }
    }
}
