-- Named counters that every worker of the store adds to: statistics, throughput buckets
-- (which expire) and the restart signal. Names are bytes, so a prefix is a range.
CREATE TABLE IF NOT EXISTS {counters_table} (
    name VARBINARY(767) NOT NULL,
    value BIGINT NOT NULL,
    expires_at BIGINT NULL,
    PRIMARY KEY (name),
    -- Sweeping expired counters.
    KEY {counters_table}_expires_at (expires_at)
) ENGINE=InnoDB;
