-- Each job attempt with the Kommo and Flutterwave calls it made (masked answers, capped), for
-- the timeline entry's detail; and why a client account is paused, as a code the alerts read.

CREATE TABLE job_attempts (
    id BLOB PRIMARY KEY,
    job_id BLOB NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    -- The job's attempt number when it ran (a replayed dead job counts from 1 again).
    attempt INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    -- done | retry | paused | dead | lost (the lease ran out) | abandoned (shutdown)
    ended TEXT NOT NULL,
    -- A JSON array of calls: vendor, method, path, status, duration_ms, answer (masked, cut).
    calls TEXT NOT NULL,
    -- Calls past the cap, counted and not kept.
    calls_dropped INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX job_attempts_by_job ON job_attempts (job_id, started_at);
-- Retention deletes the oldest attempts first.
CREATE INDEX job_attempts_by_finish ON job_attempts (finished_at);

-- flutterwave_key_refused | flutterwave_keys_missing | kommo_not_connected | kommo_revoked |
-- kommo_reauth | kommo_payment | settings; NULL for pauses made before the code existed.
ALTER TABLE client_pauses ADD COLUMN cause TEXT;
UPDATE client_pauses SET cause = 'flutterwave_key_refused' WHERE reason LIKE 'Flutterwave refused the secret key%';
