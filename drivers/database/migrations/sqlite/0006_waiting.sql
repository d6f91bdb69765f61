-- Waiting jobs (chains, workflows, batch callbacks): each held under its key, in no queue,
-- until its dependencies left (`deps`) reach zero; the step that meets the last one deletes
-- it here and pushes the job to its queue. The job is kept as a push would store it:
-- `available_at` its due time when it was given one, else `delay` (ms) counted from its
-- release; `unique_key` and `unique_until` its claim, taken when it is released. A table of
-- rows (not WITHOUT ROWID): payloads may be large.
CREATE TABLE IF NOT EXISTS {waiting_table} (
    key TEXT PRIMARY KEY NOT NULL,
    deps INTEGER NOT NULL,
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    payload BLOB NOT NULL,
    available_at INTEGER,
    delay INTEGER NOT NULL,
    unique_key TEXT,
    unique_until TEXT,
    created_at INTEGER NOT NULL
);
