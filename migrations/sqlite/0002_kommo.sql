-- Kommo: one connection per client account, keyed by the Kommo account id.

CREATE TABLE kommo_connections (
    client_id BLOB PRIMARY KEY REFERENCES clients (id) ON DELETE CASCADE,
    account_id INTEGER NOT NULL UNIQUE,
    -- The account host from the OAuth referer, e.g. acme.kommo.com: where its API lives.
    host TEXT NOT NULL,
    subdomain TEXT NOT NULL,
    account_name TEXT NOT NULL,
    currency TEXT,
    -- Both tokens sealed in the vault; NULL once revoked.
    access_token TEXT,
    refresh_token TEXT,
    access_expires_at INTEGER,
    -- Compare-and-set fencing for refreshes across instances (see kommo::tokens).
    token_version INTEGER NOT NULL DEFAULT 0,
    refresh_owner TEXT,
    refresh_until INTEGER,
    refreshed_at INTEGER NOT NULL,
    -- active | needs_reauth | revoked | payment_required | blocked
    health TEXT NOT NULL,
    health_reason TEXT,
    health_changed_at INTEGER NOT NULL,
    -- subscribed | manual
    webhook_status TEXT NOT NULL,
    webhook_detail TEXT,
    connected_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- OAuth `state` values: single use, short-lived, bound to a session and a client account.
CREATE TABLE oauth_states (
    state_hash BLOB PRIMARY KEY,
    client_id BLOB NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    session_id BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);

-- Installs from the Kommo Marketplace, waiting to be claimed by a client account.
CREATE TABLE kommo_installs (
    id BLOB PRIMARY KEY,
    host TEXT NOT NULL,
    account_id INTEGER,
    subdomain TEXT,
    account_name TEXT,
    -- pending (code not exchanged yet) | ready | failed | claimed
    status TEXT NOT NULL,
    detail TEXT,
    claimed_by BLOB,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX kommo_installs_by_account ON kommo_installs (account_id);

-- The shared rate limiter's state per Kommo account (GCRA theoretical arrival time, in
-- microseconds), used when several instances share PostgreSQL.
CREATE TABLE kommo_rate (
    account_id INTEGER PRIMARY KEY,
    tat_us INTEGER NOT NULL
);
