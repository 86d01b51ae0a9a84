-- Payments concord writes for confirmed and manual allocations, to be pushed
-- to the ERP through the outbox ([reconcile.push]). One row per payment
-- record; an allocation confirmed, undone and confirmed again has two.
--
-- status: active (the payment stands: queued or delivered, as its outbox
-- entry says), cancelled (voided before it reached the ERP: its outbox
-- entry was cancelled with the undo), reversed (it reached the ERP, or may
-- have, and a person reversed it there before undoing the allocation).
CREATE TABLE allocation_payments (
    payment_id     TEXT    PRIMARY KEY,
    allocation_id  BIGINT  NOT NULL,
    system         TEXT    NOT NULL,
    outbox_key     TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    closed_by      TEXT,
    closed_at      TIMESTAMPTZ,
    close_note     TEXT
);

CREATE INDEX allocation_payments_by_allocation ON allocation_payments (allocation_id);
