//! Every statement the SQLite store runs, built once per store from its table names.
//!
//! The texts are fixed per store, so sqlx prepares each once per connection and caches it.
//! Times are computed by SQLite (`NOW`), never by the process, in milliseconds since the
//! Unix epoch.

use crate::common::CHUNKS;
use crate::dialect::Tables;

/// SQLite's clock in milliseconds (`unixepoch('subsec')` needs SQLite 3.42; the bundled
/// library is 3.46). Within one statement every use returns the same instant.
const NOW: &str = "CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)";

/// The columns of a failed job, read so that no stored value can fail to decode: texts as
/// bytes (decoded leniently), numbers cast.
const FAILED_COLUMNS: &str = "id, CAST(job_id AS BLOB), CAST(queue AS BLOB), CAST(name AS BLOB), \
     CAST(payload AS BLOB), CAST(error AS BLOB), CAST(attempts AS INTEGER), CAST(failed_at AS INTEGER)";

/// The statements of one store.
#[derive(Debug)]
pub(crate) struct Statements {
    /// `INSERT`s of [`CHUNKS`] rows: (rows, text). Binds per row: queue, name, payload,
    /// absolute time or NULL, delay in ms.
    push: Vec<(usize, String)>,
    /// Reserves the next due jobs of a queue, in one statement. Binds: queue, name or NULL,
    /// lease ms, limit. Returns id, token, attempts, name, payload, available_at.
    pub(crate) reserve: String,
    /// Binds: id, token.
    pub(crate) acknowledge_one: String,
    /// Binds: id, token, lease ms.
    pub(crate) extend: String,
    /// Deletes the jobs of a JSON array of `[id, token]` pairs. Binds: pairs.
    pub(crate) acknowledge: String,
    /// Binds: id, token, delay ms, refund (bool).
    pub(crate) release: String,
    /// Copies a reserved job into the failed table. Binds: id, token, error.
    pub(crate) fail_copy: String,
    /// Binds: id, token.
    pub(crate) fail_delete: String,
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
    pub(crate) failed_retry: String,
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
    /// Since when the longest-available job of a queue is available (ms). Binds: queue.
    pub(crate) oldest_available: String,
    /// Adds a JSON array of `[name, delta]` to the counters. Binds: pairs, ttl ms or NULL.
    pub(crate) add_counters: String,
    /// Binds: prefix, upper bound of the prefix's range.
    pub(crate) counters: String,
    /// Deletes expired counters.
    pub(crate) counters_sweep: String,
}

impl Statements {
    /// The `INSERT` of `rows` jobs; `rows` is one of [`CHUNKS`].
    pub(crate) fn push(&self, rows: usize) -> &str {
        self.push
            .iter()
            .find(|(size, _)| *size == rows)
            .map_or("", |(_, sql)| sql.as_str())
    }

    pub(crate) fn new(tables: &Tables) -> Statements {
        let fill = |sql: &str| tables.fill(&sql.replace("NOW", NOW));
        let push = CHUNKS
            .iter()
            .map(|&rows| {
                let row = "(?, ?, ?, 0, COALESCE(?, NOW + ?), NOW)";
                let values = vec![row; rows].join(", ");
                (
                    rows,
                    fill(&format!(
                        "INSERT INTO {{table}} (queue, name, payload, attempts, available_at, created_at) \
                         VALUES {values} RETURNING id"
                    )),
                )
            })
            .collect();
        Statements {
            push,
            // `available_at = due_at` (the old row's value) records when the job became
            // available for this reservation, so sorting the RETURNING rows by it gives
            // back the order of the pick: RETURNING promises no order.
            reserve: fill(
                "UPDATE {table} SET attempts = CAST(attempts AS INTEGER) + 1, \
                 token = lower(hex(randomblob(16))), available_at = due_at, reserved_until = NOW + ?3 \
                 WHERE id IN (SELECT id FROM {table} \
                 WHERE queue = ?1 AND due_at <= NOW AND (?2 IS NULL OR name = ?2) \
                 ORDER BY due_at, id LIMIT ?4) \
                 RETURNING id, token, attempts, CAST(name AS BLOB), CAST(payload AS BLOB), available_at",
            ),
            acknowledge_one: fill(
                "DELETE FROM {table} WHERE id = ?1 AND token = ?2 AND reserved_until IS NOT NULL",
            ),
            extend: fill(
                "UPDATE {table} SET reserved_until = NOW + ?3 \
                 WHERE id = ?1 AND token = ?2 AND reserved_until IS NOT NULL",
            ),
            acknowledge: fill(
                "DELETE FROM {table} \
                 WHERE (id, token) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1)) \
                 AND reserved_until IS NOT NULL \
                 RETURNING id, token",
            ),
            release: fill(
                "UPDATE {table} SET token = NULL, reserved_until = NULL, available_at = NOW + ?3, \
                 attempts = CASE WHEN ?4 THEN MAX(CAST(attempts AS INTEGER) - 1, 0) ELSE attempts END \
                 WHERE id = ?1 AND token = ?2 AND reserved_until IS NOT NULL",
            ),
            fail_copy: fill(
                "INSERT INTO {failed_table} (job_id, queue, name, payload, error, attempts, failed_at) \
                 SELECT CAST(id AS TEXT), queue, COALESCE(CAST(name AS TEXT), ''), \
                 COALESCE(CAST(payload AS BLOB), X''), ?3, CAST(attempts AS INTEGER), NOW \
                 FROM {table} WHERE id = ?1 AND token = ?2 AND reserved_until IS NOT NULL",
            ),
            fail_delete: fill("DELETE FROM {table} WHERE id = ?1 AND token = ?2"),
            size: fill(
                "SELECT COALESCE(SUM(reserved_until IS NULL AND due_at <= NOW), 0), \
                 COALESCE(SUM(reserved_until IS NULL AND due_at > NOW), 0), \
                 COALESCE(SUM(reserved_until IS NOT NULL), 0) \
                 FROM {table} WHERE queue = ?1",
            ),
            queues: fill("SELECT CAST(queue AS BLOB) FROM {table} GROUP BY queue ORDER BY queue"),
            clear: fill("DELETE FROM {table} WHERE queue = ?1 AND reserved_until IS NULL"),
            failed_list: fill(&format!(
                "SELECT {FAILED_COLUMNS} FROM {{failed_table}} ORDER BY id DESC LIMIT ?1 OFFSET ?2"
            )),
            failed_get: fill(&format!(
                "SELECT {FAILED_COLUMNS} FROM {{failed_table}} WHERE id = ?1"
            )),
            failed_count: fill("SELECT COUNT(*) FROM {failed_table}"),
            failed_retry: fill(
                "INSERT INTO {table} (queue, name, payload, attempts, available_at, created_at) \
                 SELECT queue, name, payload, 0, NOW, NOW FROM {failed_table} WHERE id = ?1 \
                 RETURNING id",
            ),
            failed_delete: fill("DELETE FROM {failed_table} WHERE id = ?1"),
            failed_flush: fill("DELETE FROM {failed_table}"),
            failed_prune: fill("DELETE FROM {failed_table} WHERE failed_at < ?1"),
            lock: fill(
                "INSERT INTO {locks_table} (key, owner, expires_at) VALUES (?1, ?2, NOW + ?3) \
                 ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
                 WHERE {locks_table}.owner = excluded.owner OR {locks_table}.expires_at <= NOW",
            ),
            unlock: fill("DELETE FROM {locks_table} WHERE key = ?1 AND owner = ?2"),
            next_due: fill("SELECT MIN(due_at) - NOW FROM {table} WHERE queue = ?1"),
            oldest_available: fill(
                "SELECT MIN(due_at) FROM {table} WHERE queue = ?1 AND due_at <= NOW",
            ),
            // `WHERE true` tells the parser the ON CONFLICT belongs to the INSERT. A counter
            // whose time ran out starts again from zero.
            add_counters: fill(
                "INSERT INTO {counters_table} (name, value, expires_at) \
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), NOW + ?2 \
                 FROM json_each(?1) WHERE true \
                 ON CONFLICT (name) DO UPDATE SET \
                 value = CASE WHEN {counters_table}.expires_at <= NOW THEN excluded.value \
                 ELSE {counters_table}.value + excluded.value END, \
                 expires_at = excluded.expires_at",
            ),
            counters: fill(
                "SELECT CAST(name AS BLOB), value FROM {counters_table} \
                 WHERE name >= ?1 AND name < ?2 AND substr(name, 1, length(?1)) = ?1 \
                 AND (expires_at IS NULL OR expires_at > NOW) ORDER BY name",
            ),
            counters_sweep: fill(
                "DELETE FROM {counters_table} WHERE expires_at IS NOT NULL AND expires_at <= NOW",
            ),
        }
    }
}
