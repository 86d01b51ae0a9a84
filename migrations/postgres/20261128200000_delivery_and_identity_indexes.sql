-- Delivery asks which records already had a create tried at a target
-- (a create whose answer was lost must be found again, not sent twice):
-- an index by record keeps that look-up off a scan of the whole outbox.
CREATE INDEX outbox_by_record ON outbox (entity, canonical_id, target_system);

-- Replacing a record's identity key deletes by (entity, canonical_id,
-- key_name). With only (entity, canonical_id) indexed, SQLite's planner
-- took the primary key's (entity, key_name) prefix instead and scanned every
-- key of that name: one scan per record written, so a first load slowed
-- down as the store grew. An index on all three columns is the exact match.
CREATE INDEX identity_keys_by_record_key ON identity_keys (entity, canonical_id, key_name);
DROP INDEX identity_keys_by_record;
