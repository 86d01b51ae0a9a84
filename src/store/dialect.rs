//! The few places where SQLite and PostgreSQL need different Rust types.

use rust_decimal::Decimal;
use std::str::FromStr;

/// Per-backend column types. Money is the one that differs: PostgreSQL has
/// an exact NUMERIC that sqlx maps to `Decimal`; SQLite has no exact decimal
/// type, so amounts are kept as their decimal string (TEXT), never as REAL.
pub(crate) trait Dialect: sqlx::Database {
    type Amount;
    fn encode_amount(amount: Decimal) -> Self::Amount;
    fn decode_amount(stored: Self::Amount) -> Result<Decimal, String>;
}

impl Dialect for sqlx::Sqlite {
    type Amount = String;

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

    fn encode_amount(amount: Decimal) -> Decimal {
        amount
    }

    fn decode_amount(stored: Decimal) -> Result<Decimal, String> {
        Ok(stored)
    }
}
