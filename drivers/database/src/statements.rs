//! Every statement the store runs, written once with the pieces each database supplies
//! ([`Backend`]) and built once per store from its table names. sqlx prepares each text once
//! per connection and keeps it.
//!
//! The texts bind `?` in order (numbered `$1`, `$2`... for PostgreSQL). Lists travel as one
//! JSON array of arrays, unpacked by [`Backend::ROWS`] into a derived table `l`, so one text
//! serves any batch size. Times are the database's clock in milliseconds (`{now}`).

use queue_core::storage::RecordKey;

use crate::schema::Tables;
use crate::sql::sealed::Backend;
use crate::sql::Kind::{self, Int, Text};

/// The columns of a failed job, in the order `failed_from` reads them.
pub(crate) const FAILED_COLUMNS: &str =
    "id, job_id, queue, name, payload, error, attempts, failed_at, unique_key, unique_until";

/// The columns of a waiting job, in the order `waiting_job_from` reads them.
pub(crate) const WAITING_COLUMNS: &str =
    "queue, name, payload, available_at, delay, unique_key, unique_until";

/// Pastes the table names and the database's pieces into a text and numbers its `?`s where
/// the database wants `$1`, `$2`...
pub(crate) fn fill<DB: Backend>(tables: &Tables, sql: &str) -> String {
    // Unquoted names fold to lower case in PostgreSQL: the channel follows the table.
    let channel = format!("{}_added", tables.jobs().to_ascii_lowercase());
    let sql = tables
        .fill(sql)
        .replace("{channel}", &channel)
        .replace("{now}", DB::NOW)
        .replace("{for_update}", DB::FOR_UPDATE)
        .replace("{for_share}", DB::FOR_SHARE)
        .replace("{key}", DB::KEY)
        .replace("{text}", DB::TEXT)
        .replace("{blob}", DB::BLOB)
        .replace("{no_bytes}", DB::NO_BYTES);
    if DB::DIALECT != crate::Dialect::Postgres {
        return sql;
    }
    let mut out = String::with_capacity(sql.len() + 16);
    for (n, part) in sql.split('?').enumerate() {
        if n > 0 {
            out.push_str(&format!("${n}"));
        }
        out.push_str(part);
    }
    out
}

/// The statements of one store.
#[derive(Debug)]
pub(crate) struct Statements {
    /// `INSERT`s of jobs, by rows: per row queue, name, payload, absolute time or NULL,
    /// delay ms. Return the ids where the server can.
    push: Vec<(usize, String)>,
    /// The `INSERT` of one job with a claim: as `push`, then unique key, until, claim. A row
    /// whose claim is held is skipped (PostgreSQL, SQLite) or refused (MySQL).
    pub(crate) push_claimed: String,
    /// Deletes the current ones of `[id, token]` leases, returning them (not on MySQL).
    pub(crate) ack: String,
    /// The reserved jobs of `[id]`, locked: id, token, queue.
    pub(crate) lock_leases: String,
    /// Deletes the jobs `[id]`.
    pub(crate) delete: String,
    /// Puts jobs back to wait: `[id, delay ms, attempts given back (0 or 1)]`.
    pub(crate) wait: String,
    /// Copies jobs into the failed table: `[id, reason]`.
    pub(crate) fail: String,
    /// Renews leases: `[id, lease ms]`.
    pub(crate) extend: String,
    /// Wakes other processes' waiters for a JSON list of queues (PostgreSQL's `NOTIFY`).
    pub(crate) notify: Option<String>,
    /// The job holding a key. Binds: key.
    pub(crate) live_holder: String,
    /// For a push that replaces ([`Unique::replace`](queue_core::Unique::replace)): the job
    /// holding a key, read without a lock: id, queue, 1 when it is queued (not reserved: a
    /// job whose lease ran out is still reserved until a worker takes it again), 1 when the
    /// availability pushed is before its own. Binds: absolute time or NULL, delay ms, key.
    pub(crate) replace_holder: String,
    /// A queued job takes a push's name, payload and availability, if it still holds the
    /// key and is not reserved: a reservation that took the row since the read makes it
    /// change nothing (it waits for the reservation's commit, then checks the row as that
    /// left it). Binds: name, payload, absolute time or NULL, delay ms, id, key.
    pub(crate) replace: String,
    /// The failed job holding a key, other than one. Binds: key, failed id.
    pub(crate) failed_holder: String,
    /// Binds: id.
    pub(crate) delete_job: String,
    /// Whether a lock is held (1 or 0, no row for a free key) and its expiry, its row locked
    /// until the commit (so that an unlock's wake and a park never miss each other). Binds:
    /// key.
    pub(crate) lock_held: String,
    /// Brings a parked job's due time forward to its lock's expiry. Binds: expiry twice, id.
    pub(crate) due_by: String,
    /// Forgets a job's park. Binds: id.
    pub(crate) unpark: String,
    /// Parks a job put back on a lock (`Effect::Park`), with its due time as it is now.
    /// Binds: key, id.
    pub(crate) park: String,
    /// A job put back to park on a lock that is free: due now. Binds: id.
    pub(crate) due_now: String,
    /// The jobs parked on a lock, oldest first (16 at most): id, queue, due time as parked,
    /// and 1 if the job still waits as the park left it (not reserved since, not retried,
    /// not gone, its delay not over). Binds: key.
    pub(crate) parked: String,
    /// Makes a parked job due now if it still waits as the park left it. Binds: id, due
    /// time as parked.
    pub(crate) wake: String,
    /// A job's new payload (`Effect::Payload`). Binds: payload, id.
    pub(crate) set_payload: String,
    /// Binds: queue.
    pub(crate) size: String,
    /// The waiting and delayed jobs of a queue, at most `cap` rows counted of each, through
    /// the `(queue, due_at, id)` index. Binds: queue, cap, queue, cap.
    pub(crate) backlog_at_most: String,
    pub(crate) queues: String,
    /// Binds: queue.
    pub(crate) clear: String,
    /// Binds: queue.
    pub(crate) oldest_available: String,
    /// Milliseconds until the next job of a queue is due (negative: overdue). Binds: queue.
    pub(crate) next_due: String,
    /// A page of a queue's jobs, waiting, delayed and reserved. Binds: queue, due, id, limit.
    pub(crate) jobs: [String; 3],
    /// Binds: before id, limit.
    pub(crate) failed_list: String,
    /// Binds: id.
    pub(crate) failed_get: String,
    pub(crate) failed_count: String,
    /// A failed job to retry, locked. Binds: id.
    pub(crate) failed_take: String,
    /// Binds: id.
    pub(crate) failed_delete: String,
    pub(crate) failed_flush: String,
    /// Binds: cut-off ms.
    pub(crate) failed_prune: String,
    /// Binds: key, owner, ttl ms.
    pub(crate) lock: String,
    /// Binds: key, owner.
    pub(crate) unlock: String,
    /// The locks held, by key, after a key. Binds: after key, limit.
    pub(crate) locks_list: String,
    /// Deletes a lock whoever holds it, if it has not expired. Binds: key.
    pub(crate) lock_release: String,
    /// Deletes a lock that has expired. Binds: key.
    pub(crate) lock_expired: String,
    /// Adds `[group, name, delta]` to the counters, in the list's order.
    pub(crate) count: String,
    /// Binds: group.
    pub(crate) counters: String,
    /// A guard's check-and-set: changes the counter to the value set if it holds the one
    /// expected (a write waits for the one before it, then looks at the row as that left
    /// it). Binds: set, group, name, expect.
    pub(crate) guard_set: String,
    /// The same when the value set is the one expected: the row locked if it holds it.
    /// Binds: group, name, expect.
    pub(crate) guard_hold: String,
    /// A guard's counter that is missing (which holds 0), made: skipped (refused on MySQL)
    /// where the row is there. Binds: group, name, set.
    pub(crate) guard_new: String,
    /// A counter's value, read without a lock. Binds: group, name.
    pub(crate) guard_read: String,
    /// Binds: group.
    pub(crate) remove_group: String,
    /// Stores group values, replacing those of the same (group, name): `[group, name,
    /// value (hex)]`.
    pub(crate) values_put: String,
    /// A group's value. Binds: group, name.
    pub(crate) value: String,
    /// Deletes a group's values. Binds: group.
    pub(crate) remove_values: String,
    /// Group names from a first name (inclusive) and after a cursor: binds lower bound,
    /// cursor, limit.
    pub(crate) group_list: String,
    /// Stores waiting jobs, skipping a key that has one: `[key, deps, queue, name, payload
    /// (hex), due time or NULL, delay ms, unique key or NULL, until or NULL]`.
    pub(crate) hold: String,
    /// Adds to a waiting job's dependencies, returning what is left (not on MySQL: see
    /// [`Backend::add_deps`]). Binds: delta, key.
    pub(crate) deps: String,
    /// Deletes a waiting job, returning it ([`WAITING_COLUMNS`]), where the server can.
    /// Binds: key.
    pub(crate) release: String,
    /// A waiting job ([`WAITING_COLUMNS`]), for servers whose `DELETE` cannot return it.
    /// Binds: key.
    pub(crate) released: String,
    /// Deletes a waiting job. Binds: key.
    pub(crate) unhold: String,
    /// A waiting job's dependencies left. Binds: key.
    pub(crate) waiting: String,
    pub(crate) restart_generation: String,
    pub(crate) request_restart: String,
    /// A job by id ([`JOB_COLUMNS`]). Binds: id.
    pub(crate) job: String,
    /// A job by id to cancel, locked: [`JOB_COLUMNS`], then 1 when it is reserved under a
    /// lease that has not run out. Binds: id.
    pub(crate) cancel_take: String,
    /// The leases of `[id]` that are reserved, locked: id, token, and 1 when the job has an
    /// unexpired `cancel` record (what an extend reports).
    pub(crate) extend_leases: String,
    /// Writes a record, replacing one of the same key. Binds: job id, kind, value, ttl ms.
    pub(crate) record_put: String,
    /// The same, only while the lease is the job's current one (its row locked against a
    /// settle for the statement's length). Binds: job id, kind, value, ttl ms, id, token.
    pub(crate) record_put_fenced: String,
    /// Writes records, replacing those of the same keys: `[job id, kind, value (hex), ttl
    /// ms]`, no key twice.
    pub(crate) records_put: String,
    /// The unexpired records of `[index, job id, kind]`: index, value.
    pub(crate) records: String,
    /// Deletes up to [`PRUNE_CHUNK`] expired records.
    pub(crate) records_prune: String,
    /// Writes a worker's entry, replacing one of the same id. Binds: id, entry, ttl ms.
    pub(crate) worker_beat: String,
    /// The unexpired worker entries, by id: id, entry.
    pub(crate) workers: String,
    /// Deletes the expired worker entries.
    pub(crate) workers_prune: String,
    /// Deletes a worker's entry if it has not expired. Binds: id.
    pub(crate) worker_leave: String,
}

/// The columns of a job by id, in the order `summary_from` reads them: id, queue, name,
/// attempts, due time, unique key, state (0 waiting, 1 delayed, 2 reserved).
pub(crate) const JOB_COLUMNS: &str = "t.id, t.queue, t.name, t.attempts, t.due_at, t.unique_key, \
     CASE WHEN t.reserved_until IS NOT NULL THEN 2 WHEN t.available_at > {now} THEN 1 ELSE 0 END, \
     t.payload";

/// The most expired records one statement of a prune deletes.
pub(crate) const PRUNE_CHUNK: i64 = 1000;

/// The rows of the JSON list bound at this place, as the derived table `l` with these
/// columns.
pub(crate) fn rows<DB: Backend>(columns: &[(&str, Kind)]) -> String {
    let columns: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (name, kind))| {
            let column = if *kind == Int { DB::INT } else { DB::STR };
            column
                .replace("{i}", &i.to_string())
                .replace("{name}", name)
        })
        .collect();
    DB::ROWS.replace("{columns}", &columns.join(", "))
}

/// `UPDATE` `{table}` (as `t`) joined with `rows` (as `l`), setting `set`.
fn update_join<DB: Backend>(set: &str, rows: &str) -> String {
    DB::UPDATE_JOIN
        .replace("{set}", set)
        .replace("{rows}", rows)
}

impl Statements {
    pub(crate) fn new<DB: Backend>(tables: &Tables, returning: bool) -> Statements {
        let fill = |sql: &str| fill::<DB>(tables, sql);
        let ids = rows::<DB>(&[("id", Int)]);
        let add = |table: &str, conflict: &str| {
            DB::ADD
                .replace("{table}", table)
                .replace("{conflict}", conflict)
        };
        let insert = |rows: usize, claimed: bool| {
            let (columns, row) = match claimed {
                true => (
                    ", unique_key, unique_until, claim",
                    "(?, ?, ?, 0, COALESCE(?, {now} + ?), {now}, ?, ?, ?)",
                ),
                false => ("", "(?, ?, ?, 0, COALESCE(?, {now} + ?), {now})"),
            };
            let insert = format!(
                "INSERT INTO {{table}} (queue, name, payload, attempts, available_at, created_at{columns}) VALUES {}",
                vec![row; rows].join(", ")
            );
            let skip = if claimed { DB::SKIP_HELD } else { "" };
            match returning {
                true => fill(
                    &DB::RETURNING
                        .replace("{insert}", &insert)
                        .replace("{skip}", skip),
                ),
                false => fill(&insert),
            }
        };
        let push = sizes(DB::CHUNK)
            .into_iter()
            .map(|rows| (rows, insert(rows, false)))
            .collect();
        let state = |filter: &str| {
            fill(&format!(
                "SELECT id, queue, name, attempts, due_at, unique_key, payload FROM {{table}} \
                 WHERE queue = ? AND (due_at, id) > (?, ?) AND {filter} ORDER BY due_at, id LIMIT ?"
            ))
        };
        let failed = |filter: &str| {
            fill(&format!(
                "SELECT {FAILED_COLUMNS} FROM {{failed_table}} {filter}"
            ))
        };
        Statements {
            push,
            push_claimed: insert(1, true),
            ack: fill(&ack::<DB>()),
            lock_leases: fill(&format!(
                "SELECT t.id, t.token, t.queue FROM {{table}} t JOIN {ids} ON t.id = l.id \
                 WHERE t.reserved_until IS NOT NULL{{for_update}}"
            )),
            delete: fill(&DB::DELETE_JOIN.replace("{rows}", &ids)),
            wait: fill(&update_join::<DB>(
                "token = NULL, reserved_until = NULL, available_at = {now} + l.delay, \
                 attempts = CASE WHEN t.attempts > 0 THEN t.attempts - l.refund ELSE t.attempts END",
                &rows::<DB>(&[("id", Int), ("delay", Int), ("refund", Int)]),
            )),
            // A claim held until the job succeeds moves with it into the failed table.
            fail: fill(&format!(
                "INSERT INTO {{failed_table}} (job_id, queue, name, payload, error, attempts, failed_at, \
                 unique_key, unique_until, claim) \
                 SELECT CAST(t.id AS {{text}}), t.queue, COALESCE(t.name, ''), COALESCE(CAST(t.payload AS {{blob}}), {{no_bytes}}), \
                 l.reason, t.attempts, {{now}}, t.unique_key, t.unique_until, \
                 CASE WHEN t.unique_until = 'succeeded' THEN t.claim END \
                 FROM {{table}} t JOIN {} ON t.id = l.id",
                rows::<DB>(&[("id", Int), ("reason", Text)])
            )),
            extend: fill(&update_join::<DB>(
                "reserved_until = {now} + l.lease",
                &rows::<DB>(&[("id", Int), ("lease", Int)]),
            )),
            notify: DB::NOTIFY.map(fill),
            live_holder: fill("SELECT id FROM {table} WHERE claim = ?"),
            replace_holder: fill(
                "SELECT t.id, t.queue, CASE WHEN t.reserved_until IS NULL THEN 1 ELSE 0 END, \
                 CASE WHEN COALESCE(?, {now} + ?) < t.available_at THEN 1 ELSE 0 END \
                 FROM {table} t WHERE t.claim = ?",
            ),
            replace: fill(
                "UPDATE {table} SET name = ?, payload = ?, available_at = COALESCE(?, {now} + ?) \
                 WHERE id = ? AND claim = ? AND reserved_until IS NULL",
            ),
            failed_holder: fill("SELECT job_id FROM {failed_table} WHERE claim = ? AND id <> ?"),
            delete_job: fill("DELETE FROM {table} WHERE id = ?"),
            set_payload: fill("UPDATE {table} SET payload = ? WHERE id = ?"),
            lock_held: fill(
                "SELECT CASE WHEN t.expires_at > {now} THEN 1 ELSE 0 END, t.expires_at \
                 FROM {locks_table} t WHERE t.{key} = ?{for_update}",
            ),
            due_by: fill(
                "UPDATE {table} SET available_at = CASE WHEN available_at > ? THEN ? \
                 ELSE available_at END WHERE id = ?",
            ),
            unpark: fill("DELETE FROM {parked_table} WHERE job_id = ?"),
            park: fill(
                "INSERT INTO {parked_table} (gate, job_id, parked_until) \
                 SELECT ?, id, available_at FROM {table} WHERE id = ?",
            ),
            due_now: fill("UPDATE {table} SET available_at = {now} WHERE id = ?"),
            parked: fill(
                "SELECT p.job_id, COALESCE(t.queue, ''), p.parked_until, \
                 CASE WHEN t.reserved_until IS NULL AND t.available_at = p.parked_until \
                 AND t.available_at > {now} THEN 1 ELSE 0 END \
                 FROM {parked_table} p LEFT JOIN {table} t ON t.id = p.job_id \
                 WHERE p.gate = ? ORDER BY p.job_id LIMIT 16",
            ),
            wake: fill(
                "UPDATE {table} SET available_at = {now} \
                 WHERE id = ? AND reserved_until IS NULL AND available_at = ?",
            ),
            size: fill(
                "SELECT COUNT(CASE WHEN reserved_until IS NULL AND due_at <= {now} THEN 1 END), \
                 COUNT(CASE WHEN reserved_until IS NULL AND due_at > {now} THEN 1 END), \
                 COUNT(reserved_until) FROM {table} WHERE queue = ?",
            ),
            backlog_at_most: fill(
                "SELECT \
                 (SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE queue = ? \
                 AND due_at <= {now} AND reserved_until IS NULL LIMIT ?) w), \
                 (SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE queue = ? \
                 AND due_at > {now} AND reserved_until IS NULL LIMIT ?) d)",
            ),
            queues: fill(DB::QUEUES),
            clear: fill("DELETE FROM {table} WHERE queue = ? AND reserved_until IS NULL"),
            oldest_available: fill(
                "SELECT MIN(due_at) FROM {table} WHERE queue = ? AND due_at <= {now}",
            ),
            next_due: fill("SELECT MIN(due_at) - {now} FROM {table} WHERE queue = ?"),
            jobs: [
                state("reserved_until IS NULL AND due_at <= {now}"),
                state("reserved_until IS NULL AND due_at > {now}"),
                state("reserved_until IS NOT NULL"),
            ],
            failed_list: failed("WHERE id < ? ORDER BY id DESC LIMIT ?"),
            failed_get: failed("WHERE id = ?"),
            failed_count: fill("SELECT COUNT(*) FROM {failed_table}"),
            failed_take: fill(
                "SELECT t.queue, t.name, t.payload, t.unique_key, t.unique_until \
                 FROM {failed_table} t WHERE t.id = ?{for_update}",
            ),
            failed_delete: fill("DELETE FROM {failed_table} WHERE id = ?"),
            failed_flush: fill("DELETE FROM {failed_table}"),
            failed_prune: fill("DELETE FROM {failed_table} WHERE failed_at < ?"),
            lock: fill(DB::LOCK),
            unlock: fill("DELETE FROM {locks_table} WHERE {key} = ? AND owner = ?"),
            locks_list: fill(
                "SELECT {key}, owner, expires_at FROM {locks_table} \
                 WHERE {key} > ? AND expires_at > {now} ORDER BY {key} LIMIT ?",
            ),
            lock_release: fill("DELETE FROM {locks_table} WHERE {key} = ? AND expires_at > {now}"),
            lock_expired: fill("DELETE FROM {locks_table} WHERE {key} = ? AND expires_at <= {now}"),
            // In (group, name) order, as the list comes: two settles lock the rows they share
            // in the same order, so they never deadlock on them.
            count: fill(&format!(
                "INSERT INTO {{groups_table}} (grp, name, value) SELECT l.grp, l.name, l.delta FROM {} \
                 WHERE 1 = 1 ORDER BY l.grp, l.name {}",
                rows::<DB>(&[("grp", Text), ("name", Text), ("delta", Int)]),
                add("{groups_table}", "grp, name")
            )),
            counters: fill("SELECT name, value FROM {groups_table} WHERE grp = ? ORDER BY name"),
            // Never `SET value = value`: MySQL counts an `UPDATE` that leaves a row as it was
            // only under `CLIENT_FOUND_ROWS` (`guard_hold` serves that case).
            guard_set: fill(
                "UPDATE {groups_table} SET value = ? WHERE grp = ? AND name = ? AND value = ?",
            ),
            guard_hold: fill(
                "SELECT t.value FROM {groups_table} t \
                 WHERE t.grp = ? AND t.name = ? AND t.value = ?{for_update}",
            ),
            guard_new: fill(&format!(
                "INSERT INTO {{groups_table}} (grp, name, value) VALUES (?, ?, ?){}",
                DB::GUARD_NEW
            )),
            guard_read: fill("SELECT value FROM {groups_table} WHERE grp = ? AND name = ?"),
            remove_group: fill("DELETE FROM {groups_table} WHERE grp = ?"),
            values_put: fill(&format!(
                "INSERT INTO {{values_table}} (grp, name, value) \
                 SELECT l.v_grp, l.v_name, {} FROM {} WHERE 1 = 1{}",
                DB::UNHEX.replace("{x}", "l.v_value"),
                rows::<DB>(&[("v_grp", Text), ("v_name", Text), ("v_value", Text)]),
                DB::UPSERT_VALUE
            )),
            value: fill("SELECT value FROM {values_table} WHERE grp = ? AND name = ?"),
            remove_values: fill("DELETE FROM {values_table} WHERE grp = ?"),
            group_list: fill(
                "SELECT DISTINCT grp FROM {groups_table} WHERE grp >= ? AND grp > ? ORDER BY grp LIMIT ?",
            ),
            // In key order, as the list comes. `WHERE 1 = 1`: SQLite reads an `ON` right
            // after the `FROM` as a join's.
            hold: fill(&format!(
                "INSERT INTO {{waiting_table}} ({{key}}, deps, queue, name, payload, available_at, delay, \
                 unique_key, unique_until, created_at) \
                 SELECT l.w_key, l.w_deps, l.w_queue, l.w_name, {}, l.w_at, l.w_delay, l.w_unique, \
                 l.w_until, {{now}} FROM {} WHERE 1 = 1{}",
                DB::UNHEX.replace("{x}", "l.w_payload"),
                rows::<DB>(&[
                    ("w_key", Text),
                    ("w_deps", Int),
                    ("w_queue", Text),
                    ("w_name", Text),
                    ("w_payload", Text),
                    ("w_at", Int),
                    ("w_delay", Int),
                    ("w_unique", Text),
                    ("w_until", Text),
                ]),
                DB::HOLD_NEW
            )),
            deps: fill("UPDATE {waiting_table} SET deps = deps + ? WHERE {key} = ? RETURNING deps"),
            release: fill(&format!(
                "DELETE FROM {{waiting_table}} WHERE {{key}} = ? RETURNING {WAITING_COLUMNS}"
            )),
            released: fill(&format!(
                "SELECT {WAITING_COLUMNS} FROM {{waiting_table}} WHERE {{key}} = ?"
            )),
            unhold: fill("DELETE FROM {waiting_table} WHERE {key} = ?"),
            waiting: fill("SELECT deps FROM {waiting_table} WHERE {key} = ?"),
            restart_generation: fill("SELECT value FROM {control_table} WHERE name = 'restart'"),
            request_restart: fill(&format!(
                "INSERT INTO {{control_table}} (name, value) VALUES ('restart', 1) {}",
                add("{control_table}", "name")
            )),
            job: fill(&format!(
                "SELECT {JOB_COLUMNS} FROM {{table}} t WHERE t.id = ?"
            )),
            cancel_take: fill(&format!(
                "SELECT {JOB_COLUMNS}, CASE WHEN t.reserved_until > {{now}} THEN 1 ELSE 0 END \
                 FROM {{table}} t WHERE t.id = ?{{for_update}}"
            )),
            extend_leases: fill(&format!(
                "SELECT t.id, t.token, CASE WHEN EXISTS (SELECT 1 FROM {{records_table}} r \
                 WHERE r.job_id = CAST(t.id AS {{text}}) AND r.kind = '{cancel}' \
                 AND r.expires_at > {{now}}) THEN 1 ELSE 0 END \
                 FROM {{table}} t JOIN {ids} ON t.id = l.id \
                 WHERE t.reserved_until IS NOT NULL{{for_update}}",
                cancel = RecordKey::CANCEL,
            )),
            record_put: fill(&format!(
                "INSERT INTO {{records_table}} (job_id, kind, value, expires_at) \
                 VALUES (?, ?, ?, {{now}} + ?){}",
                DB::UPSERT_RECORD
            )),
            // `WHERE` in the `SELECT`: SQLite reads an `ON` right after the `FROM` as a
            // join's.
            record_put_fenced: fill(&format!(
                "INSERT INTO {{records_table}} (job_id, kind, value, expires_at) \
                 SELECT ?, ?, ?, {{now}} + ? FROM {{table}} t \
                 WHERE t.id = ? AND t.token = ? AND t.reserved_until IS NOT NULL{{for_share}}{}",
                DB::UPSERT_RECORD
            )),
            records_put: fill(&format!(
                "INSERT INTO {{records_table}} (job_id, kind, value, expires_at) \
                 SELECT l.r_job, l.r_kind, {}, {{now}} + l.r_ttl FROM {} WHERE 1 = 1{}",
                DB::UNHEX.replace("{x}", "l.r_value"),
                rows::<DB>(&[
                    ("r_job", Text),
                    ("r_kind", Text),
                    ("r_value", Text),
                    ("r_ttl", Int),
                ]),
                DB::UPSERT_RECORD
            )),
            records: fill(&format!(
                "SELECT l.i, r.value FROM {} JOIN {{records_table}} r \
                 ON r.job_id = l.r_job AND r.kind = l.r_kind WHERE r.expires_at > {{now}}",
                rows::<DB>(&[("i", Int), ("r_job", Text), ("r_kind", Text)]),
            )),
            records_prune: fill(&DB::PRUNE_RECORDS.replace("{chunk}", &PRUNE_CHUNK.to_string())),
            worker_beat: fill(&format!(
                "INSERT INTO {{workers_table}} (id, entry, expires_at) VALUES (?, ?, {{now}} + ?){}",
                DB::UPSERT_WORKER
            )),
            workers: fill(
                "SELECT id, entry FROM {workers_table} WHERE expires_at > {now} ORDER BY id",
            ),
            workers_prune: fill("DELETE FROM {workers_table} WHERE expires_at <= {now}"),
            worker_leave: fill("DELETE FROM {workers_table} WHERE id = ? AND expires_at > {now}"),
        }
    }

    /// The `INSERT` of `rows` jobs; `rows` is one of [`sizes`].
    pub(crate) fn push(&self, rows: usize) -> &str {
        self.push
            .iter()
            .find(|(size, _)| *size == rows)
            .map_or("", |(_, sql)| sql.as_str())
    }
}

/// Deletes the current ones of `[id, token]` leases, returning them: the acknowledgement of
/// a batch in one statement (not on MySQL, whose `DELETE` cannot say `RETURNING`).
pub(crate) fn ack<DB: Backend>() -> String {
    DB::ACK.replace("{rows}", &rows::<DB>(&[("id", Int), ("token", Text)]))
}

/// The row counts of the statements over many rows: `largest`, 100, then 10 down to 1.
/// Taken greedily, any count is a few statements, and only these texts are ever prepared.
fn sizes(largest: usize) -> Vec<usize> {
    let mut sizes = vec![largest, 100, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1];
    sizes.retain(|&n| n <= largest);
    sizes.dedup();
    sizes
}

/// The sizes, from [`sizes`], that `total` rows are split into, largest first.
pub(crate) fn chunk_sizes(total: usize, largest: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = total;
    for size in sizes(largest) {
        while left >= size {
            out.push(size);
            left -= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_add_up() {
        for total in [0, 1, 9, 10, 57, 100, 101, 1000, 1234] {
            let sizes = chunk_sizes(total, 1000);
            assert_eq!(sizes.iter().sum::<usize>(), total);
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]));
        }
        assert_eq!(chunk_sizes(57, 100), vec![10, 10, 10, 10, 10, 7]);
        assert_eq!(chunk_sizes(2100, 1000), vec![1000, 1000, 100]);
    }
}
