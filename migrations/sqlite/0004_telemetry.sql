-- An agency's own OTLP/HTTP endpoint for its client accounts' spans. Headers (API keys of the
-- agency's monitoring vendor) are sealed in the vault.
CREATE TABLE agency_telemetry (
    agency_id BLOB PRIMARY KEY REFERENCES agencies (id) ON DELETE CASCADE,
    endpoint TEXT NOT NULL,
    headers TEXT,
    updated_at INTEGER NOT NULL
);

-- A redelivered webhook finds the job its original caused, to link their traces.
CREATE INDEX jobs_by_event ON jobs (client_id, event_id);
