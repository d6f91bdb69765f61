-- Waiting jobs (chains, workflows, batch callbacks): each held under its key, in no queue,
-- until its dependencies left (`deps`) reach zero; the step that meets the last one deletes
-- it here and pushes the job to its queue. The job is kept as a push would store it:
-- `available_at` its due time when it was given one, else `delay` (ms) counted from its
-- release; `unique_key` and `unique_until` its claim, taken when it is released. Keys are
-- bytes, at most 767.
CREATE TABLE IF NOT EXISTS {waiting_table} (
    `key` VARBINARY(767) NOT NULL,
    deps BIGINT NOT NULL,
    queue VARBINARY(255) NOT NULL,
    name BLOB NOT NULL,
    payload LONGBLOB NOT NULL,
    available_at BIGINT NULL,
    delay BIGINT NOT NULL,
    unique_key VARBINARY(512) NULL,
    unique_until VARBINARY(16) NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (`key`)
) ENGINE=InnoDB;
