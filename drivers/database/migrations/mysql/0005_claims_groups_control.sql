-- The storage contract v2: unique claims, group counters and the control key; the old
-- statistics counters go.
--
-- `unique_key`, `unique_until`: the job's unique claim as pushed, kept after its release (a
--   failed job is claimed again when it is retried). `claim`: the key while the job holds
--   it, NULL once released: the unique index makes a key held by one job at most. Keys are
--   at most 512 bytes.
ALTER TABLE {table} ADD COLUMN unique_key VARBINARY(512) NULL,
    ADD COLUMN unique_until VARBINARY(16) NULL,
    ADD COLUMN claim VARBINARY(512) NULL,
    ADD UNIQUE KEY {table}_claim (claim);
-- A job that fails for good keeps a claim held until it succeeds.
ALTER TABLE {failed_table} ADD COLUMN unique_key VARBINARY(512) NULL,
    ADD COLUMN unique_until VARBINARY(16) NULL,
    ADD COLUMN claim VARBINARY(512) NULL,
    ADD KEY {failed_table}_claim (claim);
-- Counters of groups (batches, workflows), changed with the settle of a job. Names are
-- bytes, sorted as such.
CREATE TABLE IF NOT EXISTS {groups_table} (
    grp VARBINARY(512) NOT NULL,
    name VARBINARY(255) NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (grp, name)
) ENGINE=InnoDB;
-- Store-wide control keys: the restart generation.
CREATE TABLE IF NOT EXISTS {control_table} (
    name VARBINARY(64) NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (name)
) ENGINE=InnoDB;
DROP TABLE IF EXISTS {counters_table};
