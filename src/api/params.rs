//! Request values whose rules the OpenAPI document states exactly as the
//! server enforces them: row ids in bodies, list limits, points in time.
//! A client generated from `/openapi.json`, or a fuzzer driven by it, finds
//! no request the document allows and the server refuses, or the reverse.

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AnyOfBuilder, Array, ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};

/// The largest row id a request may name: 2^53 − 1, the largest integer
/// every JSON client reads exactly.
pub const MAX_ID: i64 = (1 << 53) - 1;

/// Rows a list answers at most, and the largest `limit` accepted.
pub const LIST_LIMIT: u32 = 10_000;

/// Row ids in a request body: JSON integers from 1 to [`MAX_ID`]. As in
/// JSON Schema, `7.0` is the integer 7.
pub fn ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    let numbers = Vec::<serde_json::Number>::deserialize(d)?;
    numbers
        .iter()
        .map(|n| {
            id(n).ok_or_else(|| {
                D::Error::custom(format!(
                    "ids: {n} is not a row id (an integer 1 to {MAX_ID})"
                ))
            })
        })
        .collect()
}

fn id(n: &serde_json::Number) -> Option<i64> {
    let v = match n.as_i64() {
        Some(v) => v,
        None => {
            let f = n.as_f64()?;
            // Exact below 2^53, so the cast loses nothing once in range.
            if f.fract() != 0.0 || !(1.0..=MAX_ID as f64).contains(&f) {
                return None;
            }
            f as i64
        }
    };
    (1..=MAX_ID).contains(&v).then_some(v)
}

fn id_item() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(MAX_ID))
}

/// The schema of [`ids`]: any number of them.
pub fn ids_schema() -> Array {
    ArrayBuilder::new().items(id_item()).build()
}

/// The schema of [`ids`] where at least one is needed.
pub fn some_ids_schema() -> Array {
    ArrayBuilder::new()
        .items(id_item())
        .min_items(Some(1))
        .build()
}

/// A `limit` query parameter: absent means `default`; 1 to [`LIST_LIMIT`].
pub fn limit(given: Option<u32>, default: u32) -> Result<u32, String> {
    match given {
        None => Ok(default),
        Some(n) if (1..=LIST_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(format!("limit {n}: expected 1 to {LIST_LIMIT}")),
    }
}

/// The schema of a point in time given as an RFC 3339 time or a date.
pub fn time_schema() -> RefOr<Schema> {
    let string = |format| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
    };
    Schema::AnyOf(
        AnyOfBuilder::new()
            .item(string(KnownFormat::DateTime))
            .item(string(KnownFormat::Date))
            .description(Some(
                "RFC 3339 time (`2026-11-01T00:00:00Z`) or date (`2026-11-01`, midnight UTC)",
            ))
            .build(),
    )
    .into()
}

/// [`time_schema`]'s values: an RFC 3339 time, or a date read as midnight
/// UTC.
pub fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Req {
        #[serde(deserialize_with = "ids")]
        ids: Vec<i64>,
    }

    fn read(json: &str) -> Result<Vec<i64>, String> {
        serde_json::from_str::<Req>(json)
            .map(|r| r.ids)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ids_are_json_schema_integers_in_range() {
        assert_eq!(
            read(r#"{"ids": [1, 7.0, 9007199254740991]}"#),
            Ok(vec![1, 7, MAX_ID])
        );
        for bad in ["0", "-3", "7.5", "9007199254740992", "1e300", "-3333.0"] {
            let err = read(&format!(r#"{{"ids": [{bad}]}}"#)).unwrap_err();
            assert!(err.contains("is not a row id"), "{bad}: {err}");
        }
        assert!(read(r#"{"ids": ["1"]}"#).is_err());
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(None, 1000), Ok(1000));
        assert_eq!(limit(Some(1), 1000), Ok(1));
        assert_eq!(limit(Some(LIST_LIMIT), 1000), Ok(LIST_LIMIT));
        assert_eq!(
            limit(Some(0), 1000),
            Err("limit 0: expected 1 to 10000".to_owned())
        );
        assert!(limit(Some(LIST_LIMIT + 1), 1000).is_err());
    }

    #[test]
    fn times_are_rfc3339_or_dates() {
        let t = |s| parse_time(s).map(|t| t.to_rfc3339());
        assert_eq!(t("2026-11-01"), Some("2026-11-01T00:00:00+00:00".into()));
        assert_eq!(
            t("2026-11-01T10:00:00+01:00"),
            Some("2026-11-01T09:00:00+00:00".into())
        );
        assert_eq!(t(""), None);
        assert_eq!(t("2026-13-01"), None);
    }
}
