-- The worker registry (`Workers`): one row per live worker process, written when it starts
-- and again every few seconds, deleted when it stops cleanly. `entry` is the worker's own
-- description (JSON, opaque to the store); `expires_at` (ms, the server's clock) is the end
-- of its time to live: a row past it is never listed, and listing deletes it. Ids sort by
-- their bytes (`COLLATE "C"`).
CREATE TABLE IF NOT EXISTS {workers_table} (
    id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    entry BYTEA NOT NULL,
    expires_at BIGINT NOT NULL
);
