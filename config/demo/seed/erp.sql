-- The demo ERP: a customer table as many ERPs have one.
CREATE TABLE customer (
    customer_no  INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    vat_id       TEXT,
    email        TEXT,
    phone        TEXT,
    city         TEXT,
    country      TEXT,
    -- The idempotency key of the change that created the row (concord).
    concord_key  TEXT UNIQUE,
    -- Kept by the database, as ERPs do: set on insert, bumped on update.
    modified_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
CREATE TRIGGER customer_modified AFTER UPDATE ON customer
FOR EACH ROW WHEN NEW.modified_at = OLD.modified_at
BEGIN
    UPDATE customer SET modified_at = strftime('%Y-%m-%d %H:%M:%f', 'now')
    WHERE customer_no = NEW.customer_no;
END;
INSERT INTO customer (customer_no, name, vat_id, email, phone, city, country, modified_at) VALUES
  (10001, 'ACME Handels GmbH', 'DE123456789', 'ap@acme-handels.example', '+49 30 7654321', 'Berlin', 'DE', '2026-11-19 17:05:00'),
  (10002, 'Umbrella Pharma GmbH', 'DE 811 907 980', 'kreditoren@umbrella.example', '+49 89 4711 0', 'München', 'DE', '2026-11-18 11:20:00');
