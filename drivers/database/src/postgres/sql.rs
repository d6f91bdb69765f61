//! Every statement the PostgreSQL store runs, built once per store from its table names.
//!
//! Each operation is one statement (one round trip, its own transaction): lists travel as
//! arrays (`unnest`), so one text serves any batch size and is prepared once per
//! connection. Times are the server's clock in milliseconds (`NOW`).

use crate::dialect::Tables;

/// The server's clock in milliseconds since the Unix epoch, at the start of the statement.
/// `statement_timestamp()` is stable within a statement, so the planner can compare an
/// index column with it (`clock_timestamp()` is volatile and could not), and unlike `now()`
/// it moves on between the statements of a long transaction (a dispatch inside the
/// application's transaction).
const NOW: &str = "(EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT";

/// The statements of one store.
#[derive(Debug)]
pub(crate) struct Statements {
    /// Binds: queues, names, payloads, absolute times (NULL: use the delay), delays in ms.
    /// Notifies each queue's channel. Returns the ids in order.
    pub(crate) push: String,
    /// Reserves up to a limit over queues in priority order. Binds: queues, name or NULL,
    /// lease ms, limit. Returns id, queue, token, attempts, name, payload, available_at.
    pub(crate) reserve: String,
    /// Binds: id, token.
    pub(crate) acknowledge_one: String,
    /// Binds: ids, tokens. Returns the deleted (id, token).
    pub(crate) acknowledge: String,
    /// Binds: id, token, lease ms.
    pub(crate) extend: String,
    /// Binds: id, token, delay ms, refund. Returns how many rows were put back (0 or 1).
    pub(crate) release: String,
    /// Moves a reserved job to the failed table. Binds: id, token, error.
    pub(crate) fail: String,
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
    /// Binds: failed id. Returns the new job's id.
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
    /// Milliseconds until the next job of any of the queues is due (negative: overdue).
    /// Binds: queues.
    pub(crate) next_due: String,
    /// Binds: queue.
    pub(crate) oldest_available: String,
    /// Binds: names, deltas, ttl ms or NULL.
    pub(crate) add_counters: String,
    /// Binds: prefix, upper bound of the prefix's range.
    pub(crate) counters: String,
    pub(crate) counters_sweep: String,
    /// Binds: queue. For a size limit checked inside the application's transaction.
    pub(crate) total: String,
}

impl Statements {
    pub(crate) fn new(tables: &Tables, channel: &str) -> Statements {
        let fill = |sql: &str| {
            tables
                .fill(&sql.replace("NOW", NOW))
                .replace("{channel}", channel)
        };
        Statements {
            // Ids are drawn in the order the rows are produced (ORDER BY the position in the
            // arrays), so sorting them gives the jobs' order. The notification is part of the
            // statement, so it is sent if and only if the insert commits: a dispatch inside a
            // transaction that rolls back wakes nobody. PostgreSQL folds identical
            // notifications of one transaction into one.
            push: fill(
                "WITH ins AS ( \
                   INSERT INTO {table} (queue, name, payload, attempts, available_at, created_at) \
                   SELECT j.queue, j.name, j.payload, 0, COALESCE(j.at, NOW + j.delay), NOW \
                   FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int8[], $5::int8[]) \
                     WITH ORDINALITY AS j(queue, name, payload, at, delay, position) \
                   ORDER BY j.position \
                   RETURNING id, queue \
                 ), woke AS ( \
                   SELECT count(pg_notify('{channel}', q.queue)) AS n \
                   FROM (SELECT DISTINCT queue FROM ins) q \
                 ) \
                 SELECT ins.id FROM ins, woke ORDER BY ins.id",
            ),
            // The queues are taken in order by a nested loop over the array; each queue's
            // next due jobs come from the `(queue, due_at, id)` index, first due first,
            // skipping rows another worker holds (SKIP LOCKED: no worker ever waits for
            // another). The outer LIMIT stops the loop as soon as the batch is full, so no
            // row beyond it is locked. The update finds the picked rows by primary key.
            // `available_at = due_at` (the old row's value) records when the job became
            // available for this reservation.
            reserve: fill(
                "WITH picked AS ( \
                   SELECT j.id FROM unnest($1::text[]) WITH ORDINALITY AS q(queue_name, position) \
                   CROSS JOIN LATERAL ( \
                     SELECT id FROM {table} \
                     WHERE queue = q.queue_name AND due_at <= NOW \
                       AND ($2::text IS NULL OR name = $2::text) \
                     ORDER BY due_at, id \
                     LIMIT $4 \
                     FOR UPDATE SKIP LOCKED \
                   ) j \
                   LIMIT $4 \
                 ) \
                 UPDATE {table} t SET attempts = t.attempts + 1, token = gen_random_uuid()::text, \
                   available_at = t.due_at, reserved_until = NOW + $3 \
                 WHERE t.id = ANY(ARRAY(SELECT id FROM picked)) \
                 RETURNING t.id, t.queue, t.token, t.attempts, t.name, t.payload, t.available_at",
            ),
            acknowledge_one: fill(
                "DELETE FROM {table} WHERE id = $1 AND token = $2 AND reserved_until IS NOT NULL",
            ),
            acknowledge: fill(
                "DELETE FROM {table} t USING unnest($1::int8[], $2::text[]) AS l(id, token) \
                 WHERE t.id = l.id AND t.token = l.token AND t.reserved_until IS NOT NULL \
                 RETURNING t.id, t.token",
            ),
            extend: fill(
                "UPDATE {table} SET reserved_until = NOW + $3 \
                 WHERE id = $1 AND token = $2 AND reserved_until IS NOT NULL",
            ),
            release: fill(
                "WITH back AS ( \
                   UPDATE {table} SET token = NULL, reserved_until = NULL, available_at = NOW + $3, \
                     attempts = CASE WHEN $4 THEN GREATEST(attempts - 1, 0) ELSE attempts END \
                   WHERE id = $1 AND token = $2 AND reserved_until IS NOT NULL \
                   RETURNING queue \
                 ) \
                 SELECT count(*) FROM back, LATERAL (SELECT pg_notify('{channel}', back.queue)) n",
            ),
            fail: fill(
                "WITH gone AS ( \
                   DELETE FROM {table} WHERE id = $1 AND token = $2 AND reserved_until IS NOT NULL \
                   RETURNING id, queue, name, payload, attempts \
                 ) \
                 INSERT INTO {failed_table} (job_id, queue, name, payload, error, attempts, failed_at) \
                 SELECT id::text, queue, COALESCE(name, ''), COALESCE(payload, ''::bytea), $3, attempts, NOW \
                 FROM gone",
            ),
            size: fill(
                "SELECT count(*) FILTER (WHERE reserved_until IS NULL AND due_at <= NOW), \
                   count(*) FILTER (WHERE reserved_until IS NULL AND due_at > NOW), \
                   count(*) FILTER (WHERE reserved_until IS NOT NULL) \
                 FROM {table} WHERE queue = $1",
            ),
            // A loose index scan: one index probe per distinct queue, however many jobs.
            queues: fill(
                "WITH RECURSIVE q AS ( \
                   (SELECT queue FROM {table} ORDER BY queue LIMIT 1) \
                   UNION ALL \
                   SELECT (SELECT t.queue FROM {table} t WHERE t.queue > q.queue ORDER BY t.queue LIMIT 1) \
                   FROM q WHERE q.queue IS NOT NULL \
                 ) \
                 SELECT queue FROM q WHERE queue IS NOT NULL",
            ),
            clear: fill("DELETE FROM {table} WHERE queue = $1 AND reserved_until IS NULL"),
            failed_list: fill(
                "SELECT id, job_id, queue, name, payload, error, attempts, failed_at \
                 FROM {failed_table} ORDER BY id DESC LIMIT $1 OFFSET $2",
            ),
            failed_get: fill(
                "SELECT id, job_id, queue, name, payload, error, attempts, failed_at \
                 FROM {failed_table} WHERE id = $1",
            ),
            failed_count: fill("SELECT count(*) FROM {failed_table}"),
            failed_retry: fill(
                "WITH f AS ( \
                   DELETE FROM {failed_table} WHERE id = $1 RETURNING queue, name, payload \
                 ), ins AS ( \
                   INSERT INTO {table} (queue, name, payload, attempts, available_at, created_at) \
                   SELECT queue, name, payload, 0, NOW, NOW FROM f \
                   RETURNING id, queue \
                 ) \
                 SELECT ins.id FROM ins, LATERAL (SELECT pg_notify('{channel}', ins.queue)) n",
            ),
            failed_delete: fill("DELETE FROM {failed_table} WHERE id = $1"),
            failed_flush: fill("DELETE FROM {failed_table}"),
            failed_prune: fill("DELETE FROM {failed_table} WHERE failed_at < $1"),
            lock: fill(
                "INSERT INTO {locks_table} AS l (key, owner, expires_at) VALUES ($1, $2, NOW + $3) \
                 ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
                 WHERE l.owner = excluded.owner OR l.expires_at <= NOW",
            ),
            unlock: fill("DELETE FROM {locks_table} WHERE key = $1 AND owner = $2"),
            // One index probe per queue (a MIN over `queue = ANY(...)` would read every row).
            next_due: fill(
                "SELECT min(d.due) - NOW FROM unnest($1::text[]) AS q(queue_name), \
                 LATERAL (SELECT min(due_at) AS due FROM {table} WHERE queue = q.queue_name) d",
            ),
            oldest_available: fill(
                "SELECT min(due_at) FROM {table} WHERE queue = $1 AND due_at <= NOW",
            ),
            // Names are summed first (one row may not be updated twice in a statement) and
            // taken in order (two batches lock their rows in the same order: no deadlock). A
            // counter whose time ran out starts again from zero.
            add_counters: fill(
                "INSERT INTO {counters_table} AS c (name, value, expires_at) \
                 SELECT d.name, sum(d.delta)::BIGINT, NOW + $3 \
                 FROM unnest($1::text[], $2::int8[]) AS d(name, delta) \
                 GROUP BY d.name ORDER BY d.name \
                 ON CONFLICT (name) DO UPDATE SET \
                 value = CASE WHEN c.expires_at <= NOW THEN excluded.value ELSE c.value + excluded.value END, \
                 expires_at = excluded.expires_at",
            ),
            counters: fill(
                "SELECT name, value FROM {counters_table} \
                 WHERE name >= $1 AND name < $2 AND starts_with(name, $1) \
                 AND (expires_at IS NULL OR expires_at > NOW) ORDER BY name",
            ),
            // The expired rows are locked in name order first, the order in which
            // `add_counters` locks rows: deleting them in the order of the `expires_at` index
            // could take two rows the other way round from an upsert and deadlock with it.
            counters_sweep: fill(
                "DELETE FROM {counters_table} WHERE name IN ( \
                   SELECT name FROM {counters_table} \
                   WHERE expires_at IS NOT NULL AND expires_at <= NOW \
                   ORDER BY name FOR UPDATE \
                 )",
            ),
            total: fill("SELECT count(*) FROM {table} WHERE queue = $1"),
        }
    }
}
