-- The reserved jobs of each queue, in lease order: a partial index that holds only them (a
-- few per worker slot), so counting or listing a queue's running jobs walks them alone,
-- never the queue's waiting ones (the dashboard's "10,000+" counts, `Inspect::size_at_most`).
CREATE INDEX IF NOT EXISTS {table}_reserved ON {table} (queue, due_at, id) WHERE reserved_until IS NOT NULL;
