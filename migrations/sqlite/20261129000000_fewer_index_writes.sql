-- Fewer index entries per record written: a first load wrote about twenty
-- b-tree entries per record, and the writes, one transaction at a time, set
-- its pace.

-- No query reads records by amount.
DROP INDEX records_by_amount;

-- The outbox is read by its pending entries (delivery walks them in id
-- order, for one target or all) and its dead letters. Indexes of only those
-- entries take one entry per row written, and a delivered entry leaves them
-- instead of moving within them (status and next_attempt_at changed two
-- entries of two indexes per delivery).
DROP INDEX outbox_by_status;
DROP INDEX outbox_by_target_id;
CREATE INDEX outbox_pending ON outbox (id) WHERE status = 'pending';
CREATE INDEX outbox_dead ON outbox (id) WHERE status = 'dead';

-- Identity keys are found by their primary key: stored in it (WITHOUT
-- ROWID), not beside it.
CREATE TABLE identity_keys_by_key (
    entity        TEXT NOT NULL,
    key_name      TEXT NOT NULL,
    key_value     TEXT NOT NULL,
    canonical_id  TEXT NOT NULL,
    PRIMARY KEY (entity, key_name, key_value, canonical_id)
) WITHOUT ROWID;
INSERT INTO identity_keys_by_key (entity, key_name, key_value, canonical_id)
    SELECT entity, key_name, key_value, canonical_id FROM identity_keys;
DROP TABLE identity_keys;
ALTER TABLE identity_keys_by_key RENAME TO identity_keys;
CREATE INDEX identity_keys_by_record_key ON identity_keys (entity, canonical_id, key_name);
