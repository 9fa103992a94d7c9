-- Kommo's adaptive pace per account (issue #12). SQLite means one instance, which keeps the
-- pace in memory; the columns keep both schemas alike. See the PostgreSQL migration.
ALTER TABLE kommo_rate ADD COLUMN pace_from_us INTEGER;
ALTER TABLE kommo_rate ADD COLUMN pace_start_us INTEGER;
