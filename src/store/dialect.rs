//! The few places where SQLite and PostgreSQL need different Rust types or
//! SQL.

use rust_decimal::Decimal;
use std::str::FromStr;

/// Per-backend column types. Money is the one that differs: PostgreSQL has
/// an exact NUMERIC that sqlx maps to `Decimal`; SQLite has no exact decimal
/// type, so amounts are kept as their decimal string (TEXT), never as REAL.
pub(crate) trait Dialect: sqlx::Database {
    type Amount;
    fn encode_amount(amount: Decimal) -> Self::Amount;
    fn decode_amount(stored: Self::Amount) -> Result<Decimal, String>;
    /// `links` as read by canonical id. SQLite's planner, without
    /// statistics, prefers the primary key's `(entity, system)` prefix of
    /// this WITHOUT ROWID table to the secondary index, and so reads every
    /// link of the system per look-up: first loads became quadratic.
    const LINKS_BY_CANONICAL: &'static str;
    /// The system column as compared beside a canonical id. PostgreSQL has
    /// no index hints, and with statistics taken before a target's links
    /// existed it estimates "links of this system" at one row and walks
    /// the primary key's `(entity, system)` prefix, reading every link of
    /// the system per look-up (62 ms for 500 ids at 100,000 links). As an
    /// expression the column cannot lead that index, so the look-up takes
    /// `links_by_canonical`, as on SQLite.
    const SYSTEM_BY_CANONICAL: &'static str;
    /// `outbox` as read in id order per target, for the same reason: the
    /// index of pending entries by id walks them in order instead of
    /// sorting every pending entry per batch.
    const OUTBOX_BY_TARGET: &'static str;
    /// The rows a query selects as one JSON text: an array holding, per
    /// row, the array of `items` (SQL expressions), in `order` (an ORDER BY
    /// list; empty for any order); `[]` when there are none.
    ///
    /// Read row by row, a thousand rows cost more than the query itself:
    /// sqlx copies every value of every row and, on SQLite, hands each row
    /// from its worker thread to the task (a look-up of 100 record heads
    /// took 0.95 ms that way, 0.5 ms as one JSON text).
    fn json_rows(items: &str, order: &str) -> String;
    /// A JSON column (TEXT on SQLite, JSONB on PostgreSQL) as a JSON value
    /// inside [`Dialect::json_rows`], not as a string holding JSON.
    fn json_value(column: &str) -> String;
    /// An amount column inside [`Dialect::json_rows`]: its exact decimal
    /// as a string, never a JSON number (which readers may take as a
    /// float).
    fn amount_text(column: &str) -> String;
    /// What follows a bound JSON text so that the column takes it as
    /// JSON (a JSONB cast on PostgreSQL; SQLite keeps the text).
    const JSON_TEXT: &'static str;
}

impl Dialect for sqlx::Sqlite {
    type Amount = String;
    const LINKS_BY_CANONICAL: &'static str = "links INDEXED BY links_by_canonical";
    const SYSTEM_BY_CANONICAL: &'static str = "system";
    const OUTBOX_BY_TARGET: &'static str = "outbox INDEXED BY outbox_pending";
    const JSON_TEXT: &'static str = "";

    fn json_rows(items: &str, order: &str) -> String {
        format!(
            "COALESCE(json_group_array(json_array({items}){}), '[]')",
            order_by(order)
        )
    }

    fn json_value(column: &str) -> String {
        format!("json({column})")
    }

    fn amount_text(column: &str) -> String {
        column.to_owned()
    }

    /// Normalised (`100.50` → `100.5`) so that equal amounts are equal text
    /// and an index on the column finds them; the record's JSON keeps the
    /// scale the source gave.
    fn encode_amount(amount: Decimal) -> String {
        amount.normalize().to_string()
    }

    fn decode_amount(stored: String) -> Result<Decimal, String> {
        Decimal::from_str(&stored).map_err(|e| format!("{stored:?} is not a decimal: {e}"))
    }
}

impl Dialect for sqlx::Postgres {
    type Amount = Decimal;
    const LINKS_BY_CANONICAL: &'static str = "links";
    const SYSTEM_BY_CANONICAL: &'static str = "(system || '')";
    const OUTBOX_BY_TARGET: &'static str = "outbox";
    const JSON_TEXT: &'static str = "::jsonb";

    fn json_rows(items: &str, order: &str) -> String {
        format!(
            "COALESCE(json_agg(json_build_array({items}){})::text, '[]')",
            order_by(order)
        )
    }

    fn json_value(column: &str) -> String {
        column.to_owned()
    }

    fn amount_text(column: &str) -> String {
        format!("({column})::text")
    }

    fn encode_amount(amount: Decimal) -> Decimal {
        amount
    }

    fn decode_amount(stored: Decimal) -> Result<Decimal, String> {
        Ok(stored)
    }
}

fn order_by(order: &str) -> String {
    if order.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {order}")
    }
}
