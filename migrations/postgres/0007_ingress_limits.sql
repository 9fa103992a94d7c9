-- Ignored webhooks (another Kommo account's, events pipepay does not act on) keep only a
-- bounded prefix of what was sent, with the SHA-256 and length of the whole, and are deleted
-- after PIPEPAY_RETENTION_DAYS: unsigned bodies cannot fill the database.
ALTER TABLE inbound_events ADD COLUMN payload_sha256 TEXT;
ALTER TABLE inbound_events ADD COLUMN payload_bytes BIGINT;
-- The retention pass's index is built by 0012, on its own.
