-- Issue 14: the answer-anchored window on the shared limiter row. SQLite means one instance,
-- which keeps the window in memory; the table and columns keep both schemas alike. See the
-- PostgreSQL migration.
ALTER TABLE kommo_rate ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE kommo_rate ADD COLUMN horizon_us INTEGER;
CREATE TABLE kommo_rate_window (
    account_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    sent_us INTEGER NOT NULL,
    answered_us INTEGER,
    PRIMARY KEY (account_id, seq)
);
