-- Records kept for single jobs (`Track`): a job's status once finished, its progress while
-- it runs, the mark that asks to cancel it. One row per (job id, kind), replaced when
-- written again; `expires_at` (ms, the server's clock) is the end of its time to live: a
-- row past it is never read, and `prune_records` deletes it. Records outlive their job.
CREATE TABLE IF NOT EXISTS {records_table} (
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (job_id, kind)
);
-- Pruning: the expired records, first expired first.
CREATE INDEX IF NOT EXISTS {records_table}_expires ON {records_table} (expires_at);
