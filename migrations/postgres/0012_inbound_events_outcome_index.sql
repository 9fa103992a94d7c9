-- The retention pass finds old ignored events without reading the others.
-- inbound_events is the busiest table, and building this index blocks webhook inserts while it
-- runs. On a large database, build it before upgrading, without blocking, and this step is a
-- no-op (README, "Production checklist"):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS inbound_events_by_outcome
--       ON inbound_events (outcome, received_at);
-- (Not CONCURRENTLY here: it waits for every open transaction, including that of an instance
-- waiting on the migration lock, and the two deadlock.)
CREATE INDEX IF NOT EXISTS inbound_events_by_outcome ON inbound_events (outcome, received_at);
