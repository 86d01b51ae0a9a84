-- Delivery walks a target's pending outbox entries in id order, from where
-- the last batch ended; this index serves that walk without sorting every
-- pending entry per batch. It replaces outbox_by_target, whose
-- next_attempt_at column made each batch read all pending entries.
CREATE INDEX outbox_by_target_id ON outbox (target_system, status, id);
DROP INDEX outbox_by_target;
