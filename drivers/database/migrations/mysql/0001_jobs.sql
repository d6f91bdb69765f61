-- Jobs waiting, delayed or reserved: one row per job. Times are milliseconds since the Unix
-- epoch, by the server's clock.
--
-- `available_at`: when the job became (or becomes) available: its due time, or for a job
--   taken again after a lease ran out, the moment the lease ran out.
-- `reserved_until`: the lease deadline while the job is reserved, NULL otherwise.
-- `token`: fences the current reservation: acknowledge, release, fail and extend name it.
-- `due_at`: when the job can next be taken: the lease deadline while reserved (a job whose
--   lease ran out is available again), otherwise `available_at`. One index on it serves
--   every reservation, fresh jobs and expired leases alike, first due first, with
--   `FOR UPDATE SKIP LOCKED`: as fast with a million jobs waiting as with a thousand.
-- Queue names, job names and tokens are bytes (VARBINARY, BLOB): compared exactly, with no
-- collation folding case or ignoring trailing spaces. Queue names are at most 255 bytes.
-- `name` and `payload` may be NULL in rows written by hand: they are read as empty, so the
-- worker fails such a job with a reason instead of wedging the queue.
CREATE TABLE IF NOT EXISTS {table} (
    id BIGINT NOT NULL AUTO_INCREMENT,
    queue VARBINARY(255) NOT NULL,
    name BLOB,
    payload LONGBLOB,
    attempts INT NOT NULL DEFAULT 0,
    available_at BIGINT NOT NULL DEFAULT (CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)),
    reserved_until BIGINT NULL,
    token VARBINARY(64) NULL,
    created_at BIGINT NOT NULL DEFAULT (CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)),
    due_at BIGINT AS (COALESCE(reserved_until, available_at)) STORED,
    PRIMARY KEY (id),
    -- Reserve: the next due jobs of a queue, in order.
    KEY {table}_due (queue, due_at, id)
) ENGINE=InnoDB;
