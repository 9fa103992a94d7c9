-- Issue 14: the shared limiter row keeps the answer-anchored window SQLite keeps in memory.
-- Each request an instance sends takes the account's next number (`seq`) and a row here, which
-- gets its answer time (PostgreSQL's clock) once the answer is in; a request may go only a
-- second after the answer to the one `limit` places before it, and after every earlier answer
-- (`horizon_us`, the latest answer among rows folded away). At most `limit` rows per account.
ALTER TABLE kommo_rate ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE kommo_rate ADD COLUMN horizon_us BIGINT;
CREATE TABLE kommo_rate_window (
    account_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    sent_us BIGINT NOT NULL,
    -- NULL while the request is in flight.
    answered_us BIGINT,
    PRIMARY KEY (account_id, seq)
);
