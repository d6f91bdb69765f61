-- Waiting jobs (chains, workflows, batch callbacks): each held under its key, in no queue,
-- until its dependencies left (`deps`) reach zero; the step that meets the last one deletes
-- it here and pushes the job to its queue. The job is kept as a push would store it:
-- `available_at` its due time when it was given one, else `delay` (ms) counted from its
-- release; `unique_key` and `unique_until` its claim, taken when it is released.
CREATE TABLE IF NOT EXISTS {waiting_table} (
    key TEXT PRIMARY KEY,
    deps BIGINT NOT NULL,
    queue TEXT COLLATE "C" NOT NULL,
    name TEXT NOT NULL,
    payload BYTEA NOT NULL,
    available_at BIGINT,
    delay BIGINT NOT NULL,
    unique_key TEXT,
    unique_until TEXT,
    created_at BIGINT NOT NULL
);
