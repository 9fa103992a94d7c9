-- The pipeline: webhooks received, the durable job queue, payment links, notices, activity.

-- Every webhook (per lead entity for Kommo), deduplicated per client account.
CREATE TABLE inbound_events (
    id UUID PRIMARY KEY,
    client_id UUID NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    -- queued | ignored
    outcome TEXT NOT NULL,
    detail TEXT,
    UNIQUE (client_id, dedup_key)
);

CREATE TABLE jobs (
    id UUID PRIMARY KEY,
    client_id UUID NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    event_id UUID,
    payload TEXT NOT NULL,
    -- ready | running | done | dead | paused
    state TEXT NOT NULL,
    -- Also the fencing token: a worker may finish a job only at the attempt it claimed.
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    last_error TEXT,
    trace TEXT,
    dedup_key TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_claimable ON jobs (state, run_at);
CREATE INDEX jobs_by_client ON jobs (client_id, state, run_at);
CREATE UNIQUE INDEX jobs_dedup ON jobs (client_id, dedup_key);

-- When each client account last had a job claimed: the queue serves the least recently
-- served first, so one busy client account cannot starve the others.
CREATE TABLE queue_turns (
    client_id UUID PRIMARY KEY REFERENCES clients (id) ON DELETE CASCADE,
    served_at BIGINT NOT NULL
);

-- Client accounts whose jobs wait for a person (Kommo revoked, keys missing...).
CREATE TABLE client_pauses (
    client_id UUID PRIMARY KEY REFERENCES clients (id) ON DELETE CASCADE,
    reason TEXT NOT NULL,
    since BIGINT NOT NULL
);

CREATE TABLE payment_links (
    id UUID PRIMARY KEY,
    client_id UUID NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    lead_id BIGINT NOT NULL,
    pipeline_id BIGINT NOT NULL,
    tx_ref TEXT NOT NULL UNIQUE,
    -- Exact decimal text.
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    link TEXT,
    -- creating | open | uncertain | failed | superseded | cancelled | paid
    state TEXT NOT NULL,
    note_posted_at BIGINT,
    field_written_at BIGINT,
    transaction_id BIGINT,
    paid_amount TEXT,
    paid_currency TEXT,
    payment_type TEXT,
    flw_ref TEXT,
    closed_at BIGINT,
    paid_note_posted_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX payment_links_by_lead ON payment_links (client_id, lead_id, created_at);
CREATE INDEX payment_links_by_state ON payment_links (state, client_id);

-- Notes that must be posted at most once (missing details, a failed attempt, a mismatch).
CREATE TABLE lead_notices (
    client_id UUID NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    notice_key TEXT NOT NULL,
    posted_at BIGINT,
    PRIMARY KEY (client_id, notice_key)
);

CREATE TABLE activity (
    id UUID PRIMARY KEY,
    client_id UUID NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    lead_id BIGINT,
    tx_ref TEXT,
    job_id UUID,
    detail TEXT NOT NULL
);
CREATE INDEX activity_by_client ON activity (client_id, id);
