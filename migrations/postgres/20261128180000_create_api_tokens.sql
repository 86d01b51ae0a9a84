-- The admin API: bearer tokens with a role, and an audit trail of every
-- mutating call made with them.

-- Only a SHA-256 of each token is kept; the token is shown once at creation.
-- A revoked token keeps its row (the audit names it); its name may be reused.
CREATE TABLE api_tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT        NOT NULL,
    role        TEXT        NOT NULL,
    token_hash  TEXT        NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ
);

CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- Who did what through the API: one row per mutating call, whatever its outcome.
CREATE TABLE api_audit (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    token_name  TEXT        NOT NULL,
    role        TEXT        NOT NULL,
    method      TEXT        NOT NULL,
    path        TEXT        NOT NULL,
    status      BIGINT      NOT NULL,
    detail      JSONB
);

CREATE INDEX api_audit_by_time ON api_audit (at, id);
