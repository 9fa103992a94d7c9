-- The retention pass finds old ignored events without reading the others. (SQLite has one
-- instance, which migrates before it serves, so a plain build blocks no one.)
CREATE INDEX IF NOT EXISTS inbound_events_by_outcome ON inbound_events (outcome, received_at);
