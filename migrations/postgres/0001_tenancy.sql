-- Agencies, their people, their client accounts, and the vault's data keys.
-- Timestamps are milliseconds since the Unix epoch; ids are UUIDs.

CREATE TABLE users (
    id UUID PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    password_changed_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE agencies (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE memberships (
    agency_id UUID NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (agency_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);

CREATE TABLE invitations (
    id UUID PRIMARY KEY,
    agency_id UUID NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    token_hash BYTEA NOT NULL UNIQUE,
    invited_by UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    accepted_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX invitations_by_agency ON invitations (agency_id, created_at);

CREATE TABLE api_keys (
    id UUID PRIMARY KEY,
    agency_id UUID NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    prefix TEXT NOT NULL,
    key_hash BYTEA NOT NULL UNIQUE,
    created_by UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_by_agency ON api_keys (agency_id, created_at);

CREATE TABLE clients (
    id UUID PRIMARY KEY,
    agency_id UUID NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ingress_token_hash BYTEA NOT NULL UNIQUE,
    settings TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX clients_by_agency ON clients (agency_id, created_at);

-- One data key per client account, wrapped by a master key. Deleting the account deletes it.
CREATE TABLE data_keys (
    client_id UUID PRIMARY KEY REFERENCES clients (id) ON DELETE CASCADE,
    key_id TEXT NOT NULL,
    master_key_id TEXT NOT NULL,
    wrapped BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    rewrapped_at BIGINT
);

CREATE TABLE client_secrets (
    client_id UUID NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    sealed TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, name)
);

-- Kept after a client account is deleted (no foreign key on client_id): the record of who
-- deleted it is part of the history.
CREATE TABLE audit_log (
    id UUID PRIMARY KEY,
    agency_id UUID NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
    client_id UUID,
    actor_kind TEXT NOT NULL,
    actor_id UUID,
    actor_label TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX audit_log_by_agency ON audit_log (agency_id, id);
