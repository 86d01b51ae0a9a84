//! Positions in a table: the `(updated_at, id…)` values of a row as the
//! database holds them, composite external ids, and timestamps.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// One key value, in the form it is bound back to the database with: an
/// integer, a float (SQLite only) or text (everything else, in a canonical
/// text form the database casts back exactly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyVal {
    Int(i64),
    Real(f64),
    Text(String),
}

/// The position after a row: its cursor value, then its id values. Saved
/// as the cursor's token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub v: u8,
    pub key: Vec<KeyVal>,
}

impl Position {
    pub fn new(key: Vec<KeyVal>) -> Position {
        Position { v: 1, key }
    }

    pub fn to_token(&self) -> String {
        serde_json::to_string(self).expect("a position always serialises")
    }

    pub fn from_token(token: &str) -> Result<Position, String> {
        let p: Position = serde_json::from_str(token)
            .map_err(|e| format!("the cursor token is not a sql position: {e}"))?;
        if p.v != 1 {
            return Err(format!("the cursor token has version {}, expected 1", p.v));
        }
        Ok(p)
    }
}

/// Joins the values of a composite key into one external id: each value
/// with `%` and `/` percent-encoded, joined by `/`. A single value is used
/// as it is.
pub fn join_id(parts: &[String]) -> String {
    if let [one] = parts {
        return one.clone();
    }
    parts
        .iter()
        .map(|p| p.replace('%', "%25").replace('/', "%2F"))
        .collect::<Vec<_>>()
        .join("/")
}

/// Splits an external id written by [`join_id`] into `n` values.
pub fn split_id(id: &str, n: usize) -> Result<Vec<String>, String> {
    if n == 1 {
        return Ok(vec![id.to_owned()]);
    }
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() != n {
        return Err(format!(
            "`{id}` is not a composite id of {n} values joined by `/`"
        ));
    }
    parts
        .into_iter()
        .map(|p| percent_decode(p).ok_or_else(|| format!("`{id}` has a bad `%` escape")))
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("%25") => out.push('%'),
            Some("%2F") | Some("%2f") => out.push('/'),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// A wall-clock time in `tz` as an instant. In a gap (clocks moved forward)
/// the time is read with the offset before the gap; in a fold, the earlier.
pub fn local_to_utc(naive: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => {
            let before = naive - chrono::Duration::hours(3);
            let offset = tz
                .from_local_datetime(&before)
                .earliest()
                .map(|t| t.naive_utc() - before)
                .unwrap_or_default();
            Utc.from_utc_datetime(&(naive + offset))
        }
    }
}

/// An instant as a naive wall-clock time in `tz`.
pub fn utc_to_local(at: DateTime<Utc>, tz: Tz) -> NaiveDateTime {
    at.with_timezone(&tz).naive_local()
}

/// RFC 3339 in UTC with as many fraction digits as needed.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The canonical text of a naive timestamp, exact to the microsecond.
pub fn naive_text(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// Parses timestamp text as SQLite applications write it: ISO 8601 with
/// `T` or a space, optional fraction, optional `Z` or offset; or a date.
/// Text without an offset is in `tz`.
pub fn parse_timestamp_text(text: &str, tz: Tz) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, f) {
            return Some(t.with_timezone(&Utc));
        }
    }
    if let Some(naive) = text.strip_suffix('Z').or_else(|| text.strip_suffix(" UTC")) {
        return parse_naive(naive).map(|n| Utc.from_utc_datetime(&n));
    }
    parse_naive(text).map(|n| local_to_utc(n, tz))
}

fn parse_naive(text: &str) -> Option<NaiveDateTime> {
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, f) {
            return Some(t);
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

/// Shortest text that reads back as the same float (SQLite stores
/// `DECIMAL` values that fit as REAL).
pub fn float_text(f: f64) -> String {
    let s = f.to_string();
    if s.contains('e') || s.contains('E') {
        // Rust never prints exponents for f64 Display; kept for safety.
        format!("{f:?}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_ids_round_trip_whatever_they_hold() {
        for parts in [
            vec!["ACME".to_owned(), "10".to_owned()],
            vec!["a/b".to_owned(), "1%".to_owned()],
            vec!["".to_owned(), "%2F".to_owned(), "x".to_owned()],
        ] {
            let id = join_id(&parts);
            assert_eq!(split_id(&id, parts.len()).unwrap(), parts, "{id}");
        }
        assert_eq!(join_id(&["ACME".into(), "10".into()]), "ACME/10");
        assert_eq!(join_id(&["a/b".into()]), "a/b");
        assert!(split_id("a/b/c", 2).is_err());
        assert!(split_id("a%zz/b", 2).is_err());
    }

    #[test]
    fn timestamps_in_sqlite_text_forms() {
        let utc = chrono_tz::UTC;
        let want = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
        for text in [
            "2026-11-01T08:00:00Z",
            "2026-11-01 08:00:00",
            "2026-11-01 08:00:00.000",
            "2026-11-01T08:00:00+00:00",
            "2026-11-01 09:00:00+01:00",
            "2026-11-01T08:00",
        ] {
            assert_eq!(parse_timestamp_text(text, utc), Some(want), "{text}");
        }
        let berlin = chrono_tz::Europe::Berlin;
        assert_eq!(
            parse_timestamp_text("2026-11-01 09:00:00", berlin),
            Some(want)
        );
        assert_eq!(parse_timestamp_text("yesterday", utc), None);
    }

    #[test]
    fn local_times_in_a_gap_or_fold_still_convert() {
        let berlin = chrono_tz::Europe::Berlin;
        let gap = NaiveDate::from_ymd_opt(2026, 3, 29)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(rfc3339(local_to_utc(gap, berlin)), "2026-03-29T01:30:00Z");
        let fold = NaiveDate::from_ymd_opt(2026, 10, 25)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(rfc3339(local_to_utc(fold, berlin)), "2026-10-25T00:30:00Z");
    }

    #[test]
    fn positions_survive_the_token() {
        let p = Position::new(vec![
            KeyVal::Text("2026-11-01 08:00:00.000000".into()),
            KeyVal::Int(7),
        ]);
        assert_eq!(Position::from_token(&p.to_token()).unwrap(), p);
        assert!(Position::from_token("{\"file\":1}").is_err());
    }
}
