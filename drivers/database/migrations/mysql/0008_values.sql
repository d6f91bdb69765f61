-- Values kept by groups next to their counters (`Effect::Value`): a workflow node's output,
-- read by the nodes after it. One row per (group, name), replaced when written again;
-- deleted with the group's counters. At most 64 KiB each (a MEDIUMBLOB: a BLOB holds one
-- byte less).
CREATE TABLE IF NOT EXISTS {values_table} (
    grp VARBINARY(512) NOT NULL,
    name VARBINARY(255) NOT NULL,
    value MEDIUMBLOB NOT NULL,
    PRIMARY KEY (grp, name)
) ENGINE=InnoDB;
