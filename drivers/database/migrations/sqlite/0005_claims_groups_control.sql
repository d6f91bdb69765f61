-- The storage contract v2: unique claims, group counters and the control key; the old
-- statistics counters go.
--
-- `unique_key`, `unique_until`: the job's unique claim as pushed, kept after its release (a
--   failed job is claimed again when it is retried). `claim`: the key while the job holds
--   it, NULL once released: the unique index makes a key held by one job at most.
ALTER TABLE {table} ADD COLUMN unique_key TEXT;
ALTER TABLE {table} ADD COLUMN unique_until TEXT;
ALTER TABLE {table} ADD COLUMN claim TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS {table}_claim ON {table} (claim) WHERE claim IS NOT NULL;
-- A job that fails for good keeps a claim held until it succeeds.
ALTER TABLE {failed_table} ADD COLUMN unique_key TEXT;
ALTER TABLE {failed_table} ADD COLUMN unique_until TEXT;
ALTER TABLE {failed_table} ADD COLUMN claim TEXT;
CREATE INDEX IF NOT EXISTS {failed_table}_claim ON {failed_table} (claim) WHERE claim IS NOT NULL;
-- Counters of groups (batches, workflows), changed with the settle of a job.
CREATE TABLE IF NOT EXISTS {groups_table} (
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (grp, name)
) WITHOUT ROWID;
-- Store-wide control keys: the restart generation.
CREATE TABLE IF NOT EXISTS {control_table} (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
DROP TABLE IF EXISTS {counters_table};
