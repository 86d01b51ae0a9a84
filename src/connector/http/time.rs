//! Timestamps as systems write them: reading a record's `updated_at` and
//! writing the `{since}` of an incremental request.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use super::definition::TimeFormat;

/// A format, with the zone of naive times.
#[derive(Debug, Clone, Copy)]
pub struct TimeSpec {
    pub format: TimeFormat,
    pub zone: Tz,
}

/// `{since}` as it goes into a request: text, or a number in a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub enum Since {
    Text(String),
    Number(i64),
}

impl Since {
    pub fn text(&self) -> String {
        match self {
            Since::Text(t) => t.clone(),
            Since::Number(n) => n.to_string(),
        }
    }

    pub fn json(&self) -> Value {
        match self {
            Since::Text(t) => Value::String(t.clone()),
            Since::Number(n) => Value::from(*n),
        }
    }
}

impl TimeSpec {
    /// Reads a timestamp from a record value; the error says why not.
    pub fn parse(&self, value: &Value) -> Result<DateTime<Utc>, String> {
        match self.format {
            TimeFormat::Unix | TimeFormat::UnixMs => {
                let n = number(value).ok_or_else(|| {
                    format!("{} is not a number of {}", excerpt(value), self.unit())
                })?;
                let ms = if self.format == TimeFormat::Unix {
                    n * 1000.0
                } else {
                    n
                };
                from_ms(ms.floor() as i64)
                    .ok_or_else(|| format!("{} is out of range", excerpt(value)))
            }
            _ => {
                let text = value
                    .as_str()
                    .ok_or_else(|| format!("{} is not a string", excerpt(value)))?
                    .trim();
                self.parse_text(text).ok_or_else(|| {
                    format!("`{}` is not a {} time", cut(text), self.format.as_str())
                })
            }
        }
    }

    fn unit(&self) -> &'static str {
        if self.format == TimeFormat::Unix {
            "seconds"
        } else {
            "milliseconds"
        }
    }

    fn parse_text(&self, text: &str) -> Option<DateTime<Utc>> {
        match self.format {
            TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            TimeFormat::HttpDate => DateTime::parse_from_rfc2822(text)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            TimeFormat::MsJson => {
                // /Date(1552326816230+0000)/: the number is UTC milliseconds;
                // the offset only says where it was written.
                let inner = text.strip_prefix("/Date(")?.strip_suffix(")/")?;
                let digits_end = inner
                    .char_indices()
                    .find(|&(i, c)| i > 0 && (c == '+' || c == '-'))
                    .map_or(inner.len(), |(i, _)| i);
                let (ms, offset) = inner.split_at(digits_end);
                let offset_ok = offset.is_empty()
                    || (offset.len() == 5 && offset[1..].bytes().all(|b| b.is_ascii_digit()));
                if !offset_ok {
                    return None;
                }
                from_ms(ms.parse().ok()?)
            }
            TimeFormat::Naive => {
                let naive = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                    .iter()
                    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())?;
                Some(local_to_utc(self.zone, naive))
            }
            TimeFormat::Unix | TimeFormat::UnixMs => None,
        }
    }

    /// Writes `{since}`, rounded down to what the format can say (asking
    /// from a little earlier only re-reads).
    pub fn format(&self, at: DateTime<Utc>) -> Since {
        match self.format {
            TimeFormat::Rfc3339 => {
                Since::Text(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            }
            TimeFormat::HttpDate => Since::Text(at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
            TimeFormat::Unix => Since::Number(at.timestamp()),
            TimeFormat::UnixMs => Since::Number(at.timestamp_millis()),
            TimeFormat::MsJson => Since::Text(format!("/Date({}+0000)/", at.timestamp_millis())),
            TimeFormat::Naive => Since::Text(
                at.with_timezone(&self.zone)
                    .naive_local()
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string(),
            ),
        }
    }
}

/// A local time in `zone`: the earlier instant when the clocks went back
/// (so a cursor errs towards re-reading), the instant after the gap when
/// they went forward.
fn local_to_utc(zone: Tz, naive: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => {
            let later = naive + TimeDelta::hours(1);
            zone.from_local_datetime(&later)
                .earliest()
                .map_or_else(|| naive.and_utc(), |t| t.with_timezone(&Utc))
        }
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|n| n.is_finite())
}

fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

fn excerpt(value: &Value) -> String {
    cut(&value.to_string())
}

fn cut(text: &str) -> String {
    if text.len() > 40 {
        format!("{}…", &text[..text.floor_char_boundary(40)])
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(format: TimeFormat) -> TimeSpec {
        TimeSpec {
            format,
            zone: chrono_tz::Europe::Berlin,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn reads_every_format() {
        let cases = [
            (
                TimeFormat::Rfc3339,
                json!("2026-11-01T10:00:00.5+01:00"),
                "2026-11-01T09:00:00.5Z",
            ),
            (
                TimeFormat::HttpDate,
                json!("Sun, 01 Nov 2026 10:00:00 GMT"),
                "2026-11-01T10:00:00Z",
            ),
            (
                TimeFormat::Unix,
                json!(1_793_527_200),
                "2026-11-01T10:00:00Z",
            ),
            (
                TimeFormat::Unix,
                json!("1793527200"),
                "2026-11-01T10:00:00Z",
            ),
            (
                TimeFormat::UnixMs,
                json!(1_793_527_200_123_i64),
                "2026-11-01T10:00:00.123Z",
            ),
            (
                TimeFormat::MsJson,
                json!("/Date(1552326816230+0000)/"),
                "2019-03-11T17:53:36.230Z",
            ),
            (
                TimeFormat::MsJson,
                json!("/Date(1552326816230)/"),
                "2019-03-11T17:53:36.230Z",
            ),
            (
                TimeFormat::Naive,
                json!("2026-11-01 10:00:00.123456"),
                "2026-11-01T09:00:00.123456Z",
            ),
            (
                TimeFormat::Naive,
                json!("2026-07-01T10:00:00"),
                "2026-07-01T08:00:00Z",
            ),
        ];
        for (format, value, want) in cases {
            assert_eq!(
                spec(format).parse(&value),
                Ok(t(want)),
                "{format:?} {value}"
            );
        }
    }

    #[test]
    fn bad_values_say_why() {
        let e = spec(TimeFormat::Rfc3339)
            .parse(&json!("yesterday"))
            .unwrap_err();
        assert!(e.contains("`yesterday` is not a rfc3339 time"), "{e}");
        let e = spec(TimeFormat::UnixMs).parse(&json!(true)).unwrap_err();
        assert!(e.contains("not a number of milliseconds"), "{e}");
        assert!(
            spec(TimeFormat::MsJson)
                .parse(&json!("/Date(abc)/"))
                .is_err()
        );
        assert!(
            spec(TimeFormat::MsJson)
                .parse(&json!("/Date(1+00)/"))
                .is_err()
        );
        assert!(spec(TimeFormat::Naive).parse(&json!(12)).is_err());
        assert!(spec(TimeFormat::Unix).parse(&json!(1e300)).is_err());
    }

    #[test]
    fn daylight_saving_edges_err_towards_rereading() {
        // 2026-10-25 02:30 happens twice in Berlin: the earlier instant.
        let got = spec(TimeFormat::Naive)
            .parse(&json!("2026-10-25 02:30:00"))
            .unwrap();
        assert_eq!(got, t("2026-10-25T00:30:00Z"));
        // 2026-03-29 02:30 does not exist: the instant after the gap.
        let got = spec(TimeFormat::Naive)
            .parse(&json!("2026-03-29 02:30:00"))
            .unwrap();
        assert_eq!(got, t("2026-03-29T01:30:00Z"));
    }

    #[test]
    fn writes_since_in_every_format() {
        let at = t("2026-11-01T10:00:00.987Z");
        let got: Vec<Since> = [
            TimeFormat::Rfc3339,
            TimeFormat::HttpDate,
            TimeFormat::Unix,
            TimeFormat::UnixMs,
            TimeFormat::MsJson,
            TimeFormat::Naive,
        ]
        .into_iter()
        .map(|f| spec(f).format(at))
        .collect();
        assert_eq!(
            got,
            [
                Since::Text("2026-11-01T10:00:00.987Z".into()),
                Since::Text("Sun, 01 Nov 2026 10:00:00 GMT".into()),
                Since::Number(1_793_527_200),
                Since::Number(1_793_527_200_987),
                Since::Text("/Date(1793527200987+0000)/".into()),
                Since::Text("2026-11-01 11:00:00".into()),
            ]
        );
    }
}
