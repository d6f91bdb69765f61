-- Jobs waiting, delayed or reserved: one row per job. Times are milliseconds since the Unix
-- epoch, by SQLite's clock.
--
-- `available_at`: when the job became (or becomes) available: its due time, or for a job
--   taken again after a lease ran out, the moment the lease ran out.
-- `reserved_until`: the lease deadline while the job is reserved, NULL otherwise.
-- `token`: fences the current reservation: acknowledge, release, fail and extend name it.
-- `due_at`: when the job can next be taken: the lease deadline while reserved (a job whose
--   lease ran out is available again), otherwise `available_at`. One index on it serves
--   every reservation, fresh jobs and expired leases alike, first due first.
-- `name` and `payload` may be NULL in rows written by hand: they are read as empty, so the
-- worker fails such a job with a reason instead of wedging the queue.
CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    name TEXT,
    payload BLOB,
    attempts INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL DEFAULT (CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)),
    reserved_until INTEGER,
    token TEXT,
    created_at INTEGER NOT NULL DEFAULT (CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)),
    due_at INTEGER GENERATED ALWAYS AS (COALESCE(reserved_until, available_at)) VIRTUAL
);

-- Reserve: the next due jobs of a queue, in order.
CREATE INDEX IF NOT EXISTS {table}_due ON {table} (queue, due_at, id);
