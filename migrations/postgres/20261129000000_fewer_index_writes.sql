-- Fewer index entries per record written: a first load wrote about twenty
-- index entries per record, and the writes set its pace.

-- No query reads records by amount.
DROP INDEX records_by_amount;

-- The outbox is read by its pending entries (delivery walks them in id
-- order, for one target or all) and its dead letters. Indexes of only those
-- entries take one entry per row written, and a delivered entry leaves them
-- instead of moving within them.
DROP INDEX outbox_by_status;
DROP INDEX outbox_by_target_id;
CREATE INDEX outbox_pending ON outbox (id) WHERE status = 'pending';
CREATE INDEX outbox_dead ON outbox (id) WHERE status = 'dead';
