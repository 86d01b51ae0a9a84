-- Reconciliation in store mode: which bank transaction pays which invoice,
-- how sure concord is, and who decided; payer accounts and names learnt
-- from confirmed matches.

-- status: auto (matched without review), suggested (waits for a person),
-- confirmed, rejected, manual (made by a person), undone (an automatic
-- match a person took back; never made again automatically).
CREATE TABLE allocations (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  TEXT    NOT NULL,
    invoice_id      TEXT    NOT NULL,
    invoice_number  TEXT    NOT NULL,
    customer_id     TEXT,
    amount          NUMERIC NOT NULL,
    currency        TEXT    NOT NULL,
    write_off       NUMERIC,
    status          TEXT    NOT NULL,
    confidence      DOUBLE PRECISION NOT NULL,
    stage           TEXT,
    reasons         JSONB   NOT NULL,
    run_id          TEXT,
    actor           TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE INDEX allocations_by_transaction ON allocations (transaction_id);
CREATE INDEX allocations_by_invoice ON allocations (invoice_id);
CREATE INDEX allocations_by_status ON allocations (status, id);

-- Every change of an allocation's status: who, when, why.
CREATE TABLE allocation_history (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    allocation_id  BIGINT  NOT NULL,
    from_status    TEXT,
    to_status      TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    note           TEXT,
    at             TIMESTAMPTZ NOT NULL
);

CREATE INDEX allocation_history_by_allocation ON allocation_history (allocation_id, id);

-- kind: account or name.
CREATE TABLE payer_aliases (
    customer_id    TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    value          TEXT    NOT NULL,
    allocation_id  BIGINT,
    actor          TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (customer_id, kind, value)
);
