-- The durable work queue of `concord serve` (webhook events to process, job
-- runs, deliveries to make). Times are integer milliseconds since the Unix
-- epoch: the claim query compares them on every poll.

-- Work waiting or leased. A row is visible (claimable) once visible_at_ms
-- has passed: a claim pushes it forward by the lease, a nack by the retry
-- delay. A lease that runs out makes the row visible again by itself.
-- Claims take rows with FOR UPDATE SKIP LOCKED.
CREATE TABLE work_queue (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue           TEXT    NOT NULL,
    work_id         TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    payload         JSONB   NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    visible_at_ms   BIGINT  NOT NULL,
    lease_token     BIGINT,
    last_error      TEXT,
    enqueued_at_ms  BIGINT  NOT NULL,
    UNIQUE (queue, work_id)
);

CREATE INDEX work_queue_visible ON work_queue (queue, visible_at_ms, id);

-- Work that failed too often, with the reason; an operator requeues it.
CREATE TABLE work_dead (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue           TEXT    NOT NULL,
    work_id         TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    payload         JSONB   NOT NULL,
    attempts        BIGINT  NOT NULL,
    reason          TEXT    NOT NULL,
    enqueued_at_ms  BIGINT  NOT NULL,
    dead_at_ms      BIGINT  NOT NULL
);

CREATE INDEX work_dead_by_queue ON work_dead (queue, id);

-- Work whose effects are committed, written in the same transaction as
-- them: a redelivered item whose id is here is acknowledged, not redone.
CREATE TABLE work_done (
    work_id     TEXT    NOT NULL PRIMARY KEY,
    done_at_ms  BIGINT  NOT NULL
);

CREATE INDEX work_done_by_age ON work_done (done_at_ms);
