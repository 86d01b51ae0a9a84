//! Value parsers for the mapping engine: amounts, dates and times, e-mail
//! addresses, phone numbers and booleans.
//!
//! Everything here is called per field per record, so the happy paths avoid
//! allocation (except where a `String` is the result) and never build tables or
//! patterns per call. No function panics on any input; failures are
//! [`ParseError`]s whose message names the input and the problem.

mod contact;
mod date;
mod decimal;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

pub use contact::{calling_code, normalize_email, normalize_phone};
pub use date::{
    DateFormat, DatePattern, MAX_YEAR, MIN_YEAR, Zone, format_date, format_datetime, parse_date,
    parse_datetime,
};
pub use decimal::{
    DecimalFormat, Grouping, RoundingMode, format_decimal, from_minor_units, parse_decimal,
    parse_minor_units, round,
};

/// Inputs longer than this many characters are cut in error messages.
const MAX_INPUT_IN_MESSAGE: usize = 60;

/// Why a value could not be parsed. Cheap to build only on the error path.
type Reason = Cow<'static, str>;

/// A value that could not be parsed.
///
/// Displays as `"<input>" is not <expected>: <reason>`, for example
/// `"2026-02-30" is not a date: February has 28 days in 2026`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not {expected}: {reason}")]
pub struct ParseError {
    input: String,
    expected: Cow<'static, str>,
    reason: Reason,
}

impl ParseError {
    /// Builds an error; `input` is cut to 60 characters.
    pub fn new(
        input: &str,
        expected: impl Into<Cow<'static, str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        let input = match input.char_indices().nth(MAX_INPUT_IN_MESSAGE) {
            Some((cut, _)) => format!("{}…", &input[..cut]),
            None => input.to_owned(),
        };
        ParseError {
            input,
            expected: expected.into(),
            reason: reason.into(),
        }
    }

    /// The offending input (cut to 60 characters).
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What the input was expected to be, e.g. `a date`.
    pub fn expected(&self) -> &str {
        &self.expected
    }

    /// Why it was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Maps full-width ASCII variants (U+FF01–U+FF5E, as Chinese and Japanese
/// systems emit: `１２３`, `，`, `．`, `－`) and the ideographic space to ASCII.
/// Borrows unless there is something to map.
pub(crate) fn normalize_fullwidth(s: &str) -> Cow<'_, str> {
    if s.is_ascii() || !s.chars().any(is_fullwidth) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(fold_fullwidth).collect())
}

fn is_fullwidth(c: char) -> bool {
    matches!(c, '\u{ff01}'..='\u{ff5e}' | '\u{3000}')
}

fn fold_fullwidth(c: char) -> char {
    match c {
        '\u{ff01}'..='\u{ff5e}' => char::from_u32(c as u32 - 0xfee0).unwrap_or(c),
        '\u{3000}' => ' ',
        _ => c,
    }
}

/// Parses a boolean: `true/false`, `t/f`, `yes/no`, `y/n`, `1/0`, `on/off`,
/// `ja/nein`, `j`, `oui/non`, `是/否` (ASCII words case-insensitive,
/// surrounding whitespace ignored, full-width digits accepted).
pub fn parse_bool(input: &str) -> Result<bool, ParseError> {
    let s = input.trim();
    let b = s.as_bytes();
    let yes = |w: &str| b.eq_ignore_ascii_case(w.as_bytes());
    let value = match b.len() {
        0 => return Err(ParseError::new(input, "a boolean", "empty input")),
        1 => match b[0].to_ascii_lowercase() {
            b't' | b'y' | b'1' | b'j' => Some(true),
            b'f' | b'n' | b'0' => Some(false),
            _ => None,
        },
        _ if yes("true") || yes("yes") || yes("on") || yes("ja") || yes("oui") => Some(true),
        _ if yes("false") || yes("no") || yes("off") || yes("nein") || yes("non") => Some(false),
        _ => match s {
            "是" | "１" => Some(true),
            "否" | "０" => Some(false),
            _ => None,
        },
    };
    value.ok_or_else(|| {
        ParseError::new(
            input,
            "a boolean",
            "expected true/false, yes/no, y/n, 1/0, on/off, ja/nein, oui/non or 是/否",
        )
    })
}

/// Implements `Deserialize` through `FromStr`, so mapping configs can name
/// formats, zones and rounding modes as strings.
macro_rules! deserialize_from_str {
    ($ty:ty, $what:literal) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}
pub(crate) use deserialize_from_str;

/// Implements `Serialize` through `Display`.
macro_rules! serialize_display {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}
pub(crate) use serialize_display;
