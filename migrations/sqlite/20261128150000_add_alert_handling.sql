-- Data-quality alerts: who acknowledged an alert and why, and whether each
-- configured sink (webhook, AMQP) has it yet.

ALTER TABLE alerts ADD COLUMN acked_by TEXT;
ALTER TABLE alerts ADD COLUMN acked_at TEXT;
ALTER TABLE alerts ADD COLUMN note TEXT;
-- 'pending' until every configured sink has the alert, then 'done'.
ALTER TABLE alerts ADD COLUMN sink_state TEXT NOT NULL DEFAULT 'pending';
-- JSON array of the sinks that confirmed the alert.
ALTER TABLE alerts ADD COLUMN sinks_delivered TEXT NOT NULL DEFAULT '[]';
ALTER TABLE alerts ADD COLUMN sink_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN sink_error TEXT;

-- Alerts raised before sinks existed are not sent now.
UPDATE alerts SET sink_state = 'done';

CREATE INDEX alerts_by_sink_state ON alerts (sink_state, id);
CREATE INDEX alerts_by_rule ON alerts (rule, status);
