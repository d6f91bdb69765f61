-- Values kept by groups next to their counters (`Effect::Value`): a workflow node's output,
-- read by the nodes after it. One row per (group, name), replaced when written again;
-- deleted with the group's counters. At most 64 KiB each.
CREATE TABLE IF NOT EXISTS {values_table} (
    grp TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (grp, name)
);
