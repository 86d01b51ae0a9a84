-- The sync engine: identity keys, and outbox delivery results.

-- Normalised business keys (tax id, IBAN, email, invoice number …) of
-- canonical records, so a record arriving from a second system finds the
-- one the first system created instead of becoming a duplicate.
CREATE TABLE identity_keys (
    entity        TEXT NOT NULL,
    key_name      TEXT NOT NULL,
    key_value     TEXT NOT NULL,
    canonical_id  TEXT NOT NULL,
    PRIMARY KEY (entity, key_name, key_value, canonical_id)
);

CREATE INDEX identity_keys_by_record ON identity_keys (entity, canonical_id);

-- What a delivery produced: the target's id, and when it was delivered.
ALTER TABLE outbox ADD COLUMN external_id TEXT;
ALTER TABLE outbox ADD COLUMN delivered_at TEXT;

CREATE INDEX outbox_by_target ON outbox (target_system, status, next_attempt_at, id);

-- An alert is raised once per cause (the same statement, the same record),
-- however often the run that finds it repeats.
ALTER TABLE alerts ADD COLUMN cause TEXT;
CREATE UNIQUE INDEX alerts_once_per_cause ON alerts (rule, cause) WHERE cause IS NOT NULL;
