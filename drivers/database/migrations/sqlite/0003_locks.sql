-- Locks around jobs (`without_overlapping`): a key held by an owner until it expires.
CREATE TABLE IF NOT EXISTS {locks_table} (
    key TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
