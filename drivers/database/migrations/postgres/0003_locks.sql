-- Locks around jobs (`without_overlapping`): a key held by an owner until it expires.
CREATE TABLE IF NOT EXISTS {locks_table} (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
