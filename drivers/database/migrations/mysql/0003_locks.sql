-- Locks around jobs (`without_overlapping`): a key held by an owner until it expires.
CREATE TABLE IF NOT EXISTS {locks_table} (
    `key` VARBINARY(767) NOT NULL,
    owner VARBINARY(255) NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (`key`)
) ENGINE=InnoDB;
