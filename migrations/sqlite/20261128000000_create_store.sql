-- concord store, SQLite flavour. Money is TEXT holding an exact decimal
-- string (sqlx has no Decimal for SQLite); timestamps are RFC 3339 TEXT in UTC.

-- The head of each canonical record. Its data lives once, in record_versions.
CREATE TABLE records (
    entity        TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    content_hash  TEXT    NOT NULL,
    amount        TEXT,
    currency      TEXT,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    PRIMARY KEY (entity, id)
) WITHOUT ROWID;

CREATE INDEX records_by_amount ON records (entity, currency, amount);

-- Every version of every record, with where it came from.
CREATE TABLE record_versions (
    entity           TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    data             TEXT    NOT NULL,
    content_hash     TEXT    NOT NULL,
    source_system    TEXT,
    cause            TEXT    NOT NULL,
    actor            TEXT,
    event_id         TEXT,
    mapping_version  TEXT,
    at               TEXT    NOT NULL,
    PRIMARY KEY (entity, id, version)
) WITHOUT ROWID;

-- Which record a system's external id is, and what we last synced with it.
CREATE TABLE links (
    entity             TEXT    NOT NULL,
    system             TEXT    NOT NULL,
    external_id        TEXT    NOT NULL,
    canonical_id       TEXT    NOT NULL,
    synced_version     INTEGER,
    synced_data        TEXT,
    synced_hash        TEXT,
    remote_updated_at  TEXT,
    updated_at         TEXT    NOT NULL,
    PRIMARY KEY (entity, system, external_id)
) WITHOUT ROWID;

CREATE UNIQUE INDEX links_by_canonical ON links (entity, canonical_id, system);

CREATE TABLE cursors (
    system      TEXT NOT NULL,
    entity      TEXT NOT NULL,
    cursor      TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (system, entity)
) WITHOUT ROWID;

-- Inbound events (webhooks, queue messages), de-duplicated by their key.
CREATE TABLE inbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key  TEXT    NOT NULL UNIQUE,
    system           TEXT    NOT NULL,
    entity           TEXT,
    payload          TEXT    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    received_at      TEXT    NOT NULL,
    processed_at     TEXT
);

CREATE INDEX inbox_by_status ON inbox (status, id);

-- Changes to deliver. Names (record, version, target); the payload is rendered
-- at delivery time so each record's data is written once.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key  TEXT    NOT NULL UNIQUE,
    entity           TEXT    NOT NULL,
    canonical_id     TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    target_system    TEXT    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT    NOT NULL,
    last_error       TEXT,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL
);

CREATE INDEX outbox_by_status ON outbox (status, next_attempt_at, id);

-- Records that could not be taken in, with every reason.
CREATE TABLE quarantine (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    system        TEXT    NOT NULL,
    entity        TEXT    NOT NULL,
    external_id   TEXT,
    raw           TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    rule          TEXT,
    field_path    TEXT,
    status        TEXT    NOT NULL DEFAULT 'open',
    at            TEXT    NOT NULL
);

CREATE INDEX quarantine_by_status ON quarantine (status, id);

CREATE TABLE conflicts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    entity         TEXT    NOT NULL,
    canonical_id   TEXT    NOT NULL,
    field_path     TEXT    NOT NULL,
    base           TEXT,
    ours           TEXT,
    theirs         TEXT,
    source_system  TEXT    NOT NULL,
    status         TEXT    NOT NULL DEFAULT 'open',
    resolution     TEXT,
    resolved_by    TEXT,
    created_at     TEXT    NOT NULL,
    resolved_at    TEXT
);

CREATE INDEX conflicts_by_status ON conflicts (status, id);
CREATE INDEX conflicts_by_record ON conflicts (entity, canonical_id);

CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rule        TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    entity      TEXT,
    record_ids  TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    amount      TEXT,
    currency    TEXT,
    status      TEXT    NOT NULL DEFAULT 'open',
    created_at  TEXT    NOT NULL,
    resolved_at TEXT
);

CREATE INDEX alerts_by_status ON alerts (status, id);
