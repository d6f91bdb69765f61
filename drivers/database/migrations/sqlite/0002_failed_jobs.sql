-- Jobs that used up their attempts or failed for good, newest last (by id).
CREATE TABLE IF NOT EXISTS {failed_table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    payload BLOB NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at INTEGER NOT NULL
);

-- Prune: failures older than a cut-off.
CREATE INDEX IF NOT EXISTS {failed_table}_failed_at ON {failed_table} (failed_at);
