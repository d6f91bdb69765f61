-- Jobs parked on a lock (`Effect::Park`: a `without_overlapping` job put back while its key
-- was busy): the unlock of `gate` makes the one parked longest ago (lowest id) due at once.
-- `parked_until` is the job's `available_at` as the park left it: a row whose job has moved
-- on since (reserved again, retried, gone) no longer matches, and the next unlock of its key
-- deletes it. A table of its own, so that upgrading never alters the jobs table.
CREATE TABLE IF NOT EXISTS {parked_table} (
    job_id BIGINT PRIMARY KEY,
    gate TEXT COLLATE "C" NOT NULL,
    parked_until BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS {parked_table}_gate ON {parked_table} (gate, job_id);
