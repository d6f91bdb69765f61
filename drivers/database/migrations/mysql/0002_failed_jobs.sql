-- Jobs that used up their attempts or failed for good, newest last (by id).
CREATE TABLE IF NOT EXISTS {failed_table} (
    id BIGINT NOT NULL AUTO_INCREMENT,
    job_id VARCHAR(64) NOT NULL,
    queue VARBINARY(255) NOT NULL,
    name BLOB NOT NULL,
    payload LONGBLOB NOT NULL,
    error LONGTEXT CHARACTER SET utf8mb4 NOT NULL,
    attempts INT NOT NULL,
    failed_at BIGINT NOT NULL,
    PRIMARY KEY (id),
    -- Prune: failures older than a cut-off.
    KEY {failed_table}_failed_at (failed_at)
) ENGINE=InnoDB;
