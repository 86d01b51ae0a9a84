-- concord serve: job schedules and inbox processing.

-- One row per scheduled job. last_fire_ms is the schedule occurrence (epoch
-- milliseconds) fired last, so missed occurrences after downtime collapse
-- into one run. The lease (owner and expiry) keeps a job from overlapping
-- itself and makes exactly one instance fire each occurrence when several
-- share a PostgreSQL store.
CREATE TABLE schedules (
    job             TEXT   PRIMARY KEY,
    last_fire_ms    BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until_ms  BIGINT NOT NULL DEFAULT 0
);

-- Inbox processing: when a failed event may be tried again, and which
-- worker holds a claimed event until when (a crashed worker's claims
-- expire and are taken up again).
ALTER TABLE inbox ADD COLUMN next_attempt_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE inbox ADD COLUMN claimed_by TEXT;
ALTER TABLE inbox ADD COLUMN claimed_until_ms BIGINT NOT NULL DEFAULT 0;
