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

-- Sales invoices (accounts receivable): what customers owe.
CREATE TABLE invoice (
    invoice_no   TEXT PRIMARY KEY,
    customer_no  INTEGER NOT NULL REFERENCES customer (customer_no),
    currency     TEXT NOT NULL,
    total        TEXT NOT NULL,
    open_amount  TEXT NOT NULL,
    issue_date   TEXT NOT NULL,
    due_date     TEXT NOT NULL
);
INSERT INTO invoice (invoice_no, customer_no, currency, total, open_amount, issue_date, due_date) VALUES
  ('RE-2026-000398', 10001, 'EUR',  '357.00',  '357.00', '2026-08-31', '2026-09-30'),
  ('RE-2026-000415', 10001, 'EUR', '1190.00', '1190.00', '2026-10-16', '2026-11-15'),
  ('RE-2026-000416', 10001, 'EUR',  '595.00',  '595.00', '2026-10-21', '2026-11-20'),
  ('RE-2026-000417', 10001, 'EUR', '2380.00', '2380.00', '2026-10-31', '2026-11-30'),
  ('RE-2026-000420', 10002, 'EUR', '4760.00', '4760.00', '2026-10-10', '2026-11-09'),
  ('RE-2026-000421', 10002, 'EUR',  '833.00',  '833.00', '2026-10-24', '2026-11-23'),
  ('RE-2026-000422', 10002, 'EUR', '1428.00', '1428.00', '2026-11-05', '2026-12-05');
