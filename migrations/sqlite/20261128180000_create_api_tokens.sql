-- The admin API: bearer tokens with a role, and an audit trail of every
-- mutating call made with them.

-- Only a SHA-256 of each token is kept; the token is shown once at creation.
-- A revoked token keeps its row (the audit names it); its name may be reused.
CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT        NOT NULL,
    role        TEXT        NOT NULL,
    token_hash  TEXT        NOT NULL UNIQUE,
    created_at  TEXT        NOT NULL,
    last_used_at TEXT,
    revoked_at  TEXT
);

CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- Who did what through the API: one row per mutating call, whatever its outcome.
CREATE TABLE api_audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT        NOT NULL,
    token_name  TEXT        NOT NULL,
    role        TEXT        NOT NULL,
    method      TEXT        NOT NULL,
    path        TEXT        NOT NULL,
    status      INTEGER     NOT NULL,
    detail      TEXT
);

CREATE INDEX api_audit_by_time ON api_audit (at, id);
