-- Agencies, their people, their client accounts, and the vault's data keys.
-- Timestamps are milliseconds since the Unix epoch; ids are UUIDs (16-byte blobs here).

CREATE TABLE users (
    id BLOB PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL
);

CREATE TABLE sessions (
    id BLOB PRIMARY KEY,
    user_id BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE agencies (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE memberships (
    agency_id BLOB NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
    user_id BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (agency_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);

CREATE TABLE invitations (
    id BLOB PRIMARY KEY,
    agency_id BLOB NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    token_hash BLOB NOT NULL UNIQUE,
    invited_by BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    accepted_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX invitations_by_agency ON invitations (agency_id, created_at);

CREATE TABLE api_keys (
    id BLOB PRIMARY KEY,
    agency_id BLOB NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    prefix TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    created_by BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX api_keys_by_agency ON api_keys (agency_id, created_at);

CREATE TABLE clients (
    id BLOB PRIMARY KEY,
    agency_id BLOB NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ingress_token_hash BLOB NOT NULL UNIQUE,
    settings TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX clients_by_agency ON clients (agency_id, created_at);

-- One data key per client account, wrapped by a master key. Deleting the account deletes it.
CREATE TABLE data_keys (
    client_id BLOB PRIMARY KEY REFERENCES clients (id) ON DELETE CASCADE,
    key_id TEXT NOT NULL,
    master_key_id TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    rewrapped_at INTEGER
);

CREATE TABLE client_secrets (
    client_id BLOB NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    sealed TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, name)
);

-- Kept after a client account is deleted (no foreign key on client_id): the record of who
-- deleted it is part of the history.
CREATE TABLE audit_log (
    id BLOB PRIMARY KEY,
    agency_id BLOB NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
    client_id BLOB,
    actor_kind TEXT NOT NULL,
    actor_id BLOB,
    actor_label TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX audit_log_by_agency ON audit_log (agency_id, id);
