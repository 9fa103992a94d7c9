-- Who runs the background duties (reconciliation scheduling, idle token refresh, retention).
-- Several instances on one database each try to hold the one row; the holder renews it on a
-- heartbeat and the others take it over only once it has lapsed, so a duty runs on one
-- instance at a time and survives that instance dying.
CREATE TABLE background_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms INTEGER NOT NULL
);
