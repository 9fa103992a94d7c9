-- Mail and alerts: the outbox (each row is its own durable delivery job), one-time links sent by
-- mail (password resets, address checks), verified addresses, alert settings and incidents.

ALTER TABLE users ADD COLUMN email_verified_at BIGINT;

CREATE TABLE outbox (
    id UUID PRIMARY KEY,
    -- The agency whose mail or webhook this is (its owners see it on the outbox page); NULL for
    -- a person's own mail (a reset or an address check), which only the development page shows.
    agency_id UUID REFERENCES agencies (id) ON DELETE CASCADE,
    -- email | webhook
    channel TEXT NOT NULL,
    -- An email address, or the webhook's URL.
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- The mail's text, or the webhook's JSON body.
    body TEXT NOT NULL,
    -- 1: the body carries a one-time link (reset, address check, invitation): it is blanked once
    -- sent, so the database never holds a usable link for long. Kept while mail is not configured.
    secret_body BIGINT NOT NULL DEFAULT 0,
    -- ready | sending | sent | unsent (no SMTP configured) | dead
    state TEXT NOT NULL,
    -- Also the fencing token: only the attempt that claimed a row may finish it.
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    lease_until BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    sent_at BIGINT
);
CREATE INDEX outbox_due ON outbox (state, run_at);
CREATE INDEX outbox_by_agency ON outbox (agency_id, created_at);

CREATE TABLE email_tokens (
    -- SHA-256 of the token; the token itself is only in the mail.
    token_hash BYTEA PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- reset | verify
    purpose TEXT NOT NULL,
    -- The address the link was sent to: a check proves this address, not a later one.
    email TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX email_tokens_by_user ON email_tokens (user_id, purpose);

CREATE TABLE alert_settings (
    agency_id UUID PRIMARY KEY REFERENCES agencies (id) ON DELETE CASCADE,
    -- 1: mail the owners, 0: do not.
    email_owners BIGINT NOT NULL,
    webhook_url TEXT,
    -- Sealed for the agency (vault); signs the webhook's body.
    webhook_secret TEXT,
    updated_at BIGINT NOT NULL
);

CREATE TABLE incidents (
    id UUID PRIMARY KEY,
    agency_id UUID NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
    client_id UUID NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    closed_at BIGINT
);
-- One open incident per client account and kind: a condition still true opens nothing new.
CREATE UNIQUE INDEX incidents_open ON incidents (client_id, kind) WHERE closed_at IS NULL;
CREATE INDEX incidents_by_agency ON incidents (agency_id, opened_at);
