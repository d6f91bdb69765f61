-- Named counters that every worker of the store adds to: statistics, throughput buckets
-- (which expire) and the restart signal.
CREATE TABLE IF NOT EXISTS {counters_table} (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL,
    expires_at INTEGER
) WITHOUT ROWID;

-- Sweeping expired counters.
CREATE INDEX IF NOT EXISTS {counters_table}_expires_at ON {counters_table} (expires_at)
    WHERE expires_at IS NOT NULL;
