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
}

impl Dialect for sqlx::Sqlite {
    type Amount = String;
    const LINKS_BY_CANONICAL: &'static str = "links INDEXED BY links_by_canonical";
    const SYSTEM_BY_CANONICAL: &'static str = "system";
    const OUTBOX_BY_TARGET: &'static str = "outbox INDEXED BY outbox_pending";

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

    fn encode_amount(amount: Decimal) -> Decimal {
        amount
    }

    fn decode_amount(stored: Decimal) -> Result<Decimal, String> {
        Ok(stored)
    }
}
