-- Named counters that every worker of the store adds to: statistics, throughput buckets
-- (which expire) and the restart signal. Names sort by bytes, so a prefix is a range.
CREATE TABLE IF NOT EXISTS {counters_table} (
    name TEXT COLLATE "C" PRIMARY KEY,
    value BIGINT NOT NULL,
    expires_at BIGINT
);

-- Sweeping expired counters.
CREATE INDEX IF NOT EXISTS {counters_table}_expires_at ON {counters_table} (expires_at)
    WHERE expires_at IS NOT NULL;
