-- concord store, PostgreSQL flavour. Money is NUMERIC (exact, no fixed scale);
-- timestamps are TIMESTAMPTZ; documents are JSONB.

-- The head of each canonical record. Its data lives once, in record_versions.
CREATE TABLE records (
    entity        TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version       BIGINT  NOT NULL,
    content_hash  TEXT    NOT NULL,
    amount        NUMERIC,
    currency      TEXT,
    created_at    TIMESTAMPTZ    NOT NULL,
    updated_at    TIMESTAMPTZ    NOT NULL,
    PRIMARY KEY (entity, id)
);

CREATE INDEX records_by_amount ON records (entity, currency, amount);

-- Every version of every record, with where it came from.
CREATE TABLE record_versions (
    entity           TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    version          BIGINT  NOT NULL,
    data             JSONB    NOT NULL,
    content_hash     TEXT    NOT NULL,
    source_system    TEXT,
    cause            TEXT    NOT NULL,
    actor            TEXT,
    event_id         TEXT,
    mapping_version  TEXT,
    at               TIMESTAMPTZ    NOT NULL,
    PRIMARY KEY (entity, id, version)
);

-- Which record a system's external id is, and what we last synced with it.
CREATE TABLE links (
    entity             TEXT    NOT NULL,
    system             TEXT    NOT NULL,
    external_id        TEXT    NOT NULL,
    canonical_id       TEXT    NOT NULL,
    synced_version     BIGINT ,
    synced_data        JSONB,
    synced_hash        TEXT,
    remote_updated_at  TIMESTAMPTZ,
    updated_at         TIMESTAMPTZ    NOT NULL,
    PRIMARY KEY (entity, system, external_id)
);

CREATE UNIQUE INDEX links_by_canonical ON links (entity, canonical_id, system);

CREATE TABLE cursors (
    system      TEXT NOT NULL,
    entity      TEXT NOT NULL,
    cursor      TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (system, entity)
);

-- Inbound events (webhooks, queue messages), de-duplicated by their key.
CREATE TABLE inbox (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key  TEXT    NOT NULL UNIQUE,
    system           TEXT    NOT NULL,
    entity           TEXT,
    payload          JSONB    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending',
    attempts         BIGINT  NOT NULL DEFAULT 0,
    last_error       TEXT,
    received_at      TIMESTAMPTZ    NOT NULL,
    processed_at     TIMESTAMPTZ
);

CREATE INDEX inbox_by_status ON inbox (status, id);

-- Changes to deliver. Names (record, version, target); the payload is rendered
-- at delivery time so each record's data is written once.
CREATE TABLE outbox (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key  TEXT    NOT NULL UNIQUE,
    entity           TEXT    NOT NULL,
    canonical_id     TEXT    NOT NULL,
    version          BIGINT  NOT NULL,
    target_system    TEXT    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending',
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ    NOT NULL,
    last_error       TEXT,
    created_at       TIMESTAMPTZ    NOT NULL,
    updated_at       TIMESTAMPTZ    NOT NULL
);

CREATE INDEX outbox_by_status ON outbox (status, next_attempt_at, id);

-- Records that could not be taken in, with every reason.
CREATE TABLE quarantine (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    system        TEXT    NOT NULL,
    entity        TEXT    NOT NULL,
    external_id   TEXT,
    raw           JSONB    NOT NULL,
    reason        TEXT    NOT NULL,
    rule          TEXT,
    field_path    TEXT,
    status        TEXT    NOT NULL DEFAULT 'open',
    at            TIMESTAMPTZ    NOT NULL
);

CREATE INDEX quarantine_by_status ON quarantine (status, id);

CREATE TABLE conflicts (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity         TEXT    NOT NULL,
    canonical_id   TEXT    NOT NULL,
    field_path     TEXT    NOT NULL,
    base           JSONB,
    ours           JSONB,
    theirs         JSONB,
    source_system  TEXT    NOT NULL,
    status         TEXT    NOT NULL DEFAULT 'open',
    resolution     JSONB,
    resolved_by    TEXT,
    created_at     TIMESTAMPTZ    NOT NULL,
    resolved_at    TIMESTAMPTZ
);

CREATE INDEX conflicts_by_status ON conflicts (status, id);
CREATE INDEX conflicts_by_record ON conflicts (entity, canonical_id);

CREATE TABLE alerts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule        TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    entity      TEXT,
    record_ids  JSONB    NOT NULL,
    reason      TEXT    NOT NULL,
    amount      NUMERIC,
    currency    TEXT,
    status      TEXT    NOT NULL DEFAULT 'open',
    created_at  TIMESTAMPTZ    NOT NULL,
    resolved_at TIMESTAMPTZ
);

CREATE INDEX alerts_by_status ON alerts (status, id);
