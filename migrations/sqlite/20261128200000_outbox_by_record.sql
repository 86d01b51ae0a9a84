-- Delivery asks which records already had a create tried at a target
-- (a create whose answer was lost must be found again, not sent twice):
-- an index by record keeps that look-up off a scan of the whole outbox.
CREATE INDEX outbox_by_record ON outbox (entity, canonical_id, target_system);
