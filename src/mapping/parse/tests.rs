//! Unit and property tests for the value parsers.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn fmt(name: &str) -> DecimalFormat {
    name.parse().unwrap()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn zone(s: &str) -> Zone {
    s.parse().unwrap()
}

fn df(s: &str) -> DateFormat {
    s.parse().unwrap()
}

// ---------------------------------------------------------------- decimals

#[test]
fn decimal_accepts() {
    let cases: &[(&str, &str, &str)] = &[
        ("1,234.56", "en", "1234.56"),
        ("1.234,56", "de", "1234.56"),
        ("1\u{a0}234,56", "fr", "1234.56"),
        ("1 234,56", "fr", "1234.56"),
        ("1\u{202f}234\u{202f}567,5", "fr", "1234567.5"),
        ("1'234.56", "ch", "1234.56"),
        ("1’234’567.56", "ch", "1234567.56"),
        ("1,23,456.78", "in", "123456.78"),
        ("12,34,56,789", "in", "123456789"),
        ("1,234", "in", "1234"),
        ("-1234.56", "plain", "-1234.56"),
        ("+12", "plain", "12"),
        ("−7", "plain", "-7"),
        ("  42  ", "plain", "42"),
        ("12.50", "plain", "12.50"),
        (".5", "plain", "0.5"),
        ("12.", "plain", "12"),
        ("0", "en", "0"),
        ("-0", "en", "0"),
        ("1,234,567.891", "en", "1234567.891"),
        ("¥1,234.56", "en", "1234.56"),
        ("€ 12,50", "de", "12.50"),
        ("12,50 €", "de", "12.50"),
        ("12.50 EUR", "en", "12.50"),
        ("12.50eur", "en", "12.50"),
        ("US$5", "en", "5"),
        ("CN¥100", "en", "100"),
        ("￥88", "en", "88"),
        ("100元", "en", "100"),
        ("RMB 1,000.00", "en", "1000.00"),
        ("£3.20", "en", "3.20"),
        ("CHF 1'234.50", "ch", "1234.50"),
        ("Rs.1,23,456", "in", "123456"),
        ("(123.45)", "en", "-123.45"),
        ("123.45-", "en", "-123.45"),
        ("1.234,56-", "de", "-1234.56"),
        ("(€ 1,234.56)", "en", "-1234.56"),
        ("-€12.00", "en", "-12.00"),
        ("€-12", "en", "-12"),
        ("USD -5.00", "en", "-5.00"),
        ("１,２３４.５６", "en", "1234.56"),
        ("１２３", "plain", "123"),
        ("－５", "plain", "-5"),
        ("１，２３４．５６", "en", "1234.56"),
        (
            "0.0000000000000000000000000001",
            "plain",
            "0.0000000000000000000000000001",
        ),
        (
            "79228162514264337593543950335",
            "plain",
            "79228162514264337593543950335",
        ),
        ("000000000000000000000000000000001", "plain", "1"),
        // auto
        ("1,234.56", "auto", "1234.56"),
        ("1.234,56", "auto", "1234.56"),
        ("1,234,567", "auto", "1234567"),
        ("1.234.567", "auto", "1234567"),
        ("12,5", "auto", "12.5"),
        ("1,2345", "auto", "1.2345"),
        ("0,123", "auto", "0.123"),
        ("1234,567", "auto", "1234.567"),
        ("1 234,56", "auto", "1234.56"),
        ("1'234.56", "auto", "1234.56"),
        ("1,23,456.78", "auto", "123456.78"),
        ("1234", "auto", "1234"),
        ("€ 1.234,56", "auto", "1234.56"),
        ("1,234", "auto_en", "1234"),
        ("1,234", "auto_de", "1.234"),
        ("1.234", "auto_en", "1.234"),
        ("1.234", "auto_de", "1234"),
    ];
    for &(input, f, want) in cases {
        let got = parse_decimal(input, &fmt(f)).unwrap_or_else(|e| panic!("{input} / {f}: {e}"));
        assert_eq!(got.to_string(), want, "{input} / {f}");
    }
}

#[test]
fn decimal_keeps_scale() {
    let d = parse_decimal("12.50", &DecimalFormat::plain()).unwrap();
    assert_eq!(d.scale(), 2);
    assert_eq!(d, dec("12.5"));
}

#[test]
fn decimal_rejects() {
    let no_currency = DecimalFormat::en().with_currency(false);
    let cases: &[(&str, DecimalFormat, &str)] = &[
        ("", fmt("en"), "empty input"),
        ("   ", fmt("en"), "empty input"),
        ("-", fmt("en"), "no digits"),
        ("+", fmt("en"), "no digits"),
        ("EUR", fmt("en"), "no digits"),
        ("()", fmt("en"), "no digits"),
        (".", fmt("en"), "no digits"),
        ("1.2.3", fmt("en"), "two decimal separators"),
        ("1,2,3", fmt("de"), "two decimal separators"),
        (
            "12,34.5",
            fmt("de"),
            "group separator after the decimal separator",
        ),
        (
            "1.234,5",
            fmt("en"),
            "group separator after the decimal separator",
        ),
        ("1,23,456.78", fmt("en"), "3 digits"),
        ("12,34", fmt("en"), "3 digits"),
        ("1,2345", fmt("en"), "3 digits"),
        ("1234,567", fmt("en"), "3 digits"),
        ("1.23.456,7", fmt("de"), "3 digits"),
        ("123,456", fmt("in"), "Indian"),
        ("1,234,567", fmt("in"), "Indian"),
        (",123", fmt("en"), "misplaced group separator"),
        ("1,,234", fmt("en"), "misplaced group separator"),
        ("1,234,", fmt("en"), "misplaced group separator"),
        ("1,.5", fmt("en"), "directly before the decimal separator"),
        ("1 234'567", fmt("auto"), "mixed group separators"),
        ("12a", fmt("en"), "unexpected character 'a'"),
        ("abc", fmt("en"), "unexpected character"),
        ("12 XYZ", fmt("en"), "unexpected"),
        ("1e5", fmt("plain"), "exponent"),
        ("1.5E-3", fmt("plain"), "exponent"),
        ("1,234.56", fmt("plain"), "unexpected separator"),
        ("12 34", fmt("en"), "unexpected separator"),
        (
            "123456789012345678901234567890",
            fmt("plain"),
            "more significant digits",
        ),
        (
            "79228162514264337593543950336",
            fmt("plain"),
            "more significant digits",
        ),
        (
            "0.00000000000000000000000000001",
            fmt("plain"),
            "more than 28 decimal places",
        ),
        (
            "1.00000000000000000000000000000",
            fmt("plain"),
            "more significant digits",
        ),
        (
            "0.00000000000000000000000000000",
            fmt("plain"),
            "more than 28 decimal places",
        ),
        ("--5", fmt("plain"), "more than one sign"),
        ("-5-", fmt("plain"), "more than one sign"),
        ("(5", fmt("plain"), "unbalanced parentheses"),
        ("5)", fmt("plain"), "unbalanced parentheses"),
        (
            "(-5)",
            fmt("plain"),
            "both a sign and accounting parentheses",
        ),
        ("€5 $", fmt("en"), "more than one currency"),
        ("€5", no_currency, "currency symbols are not allowed"),
        ("1,234", fmt("auto"), "ambiguous"),
        ("1.234", fmt("auto"), "ambiguous"),
        ("-1.234 EUR", fmt("auto"), "ambiguous"),
    ];
    for (input, f, reason) in cases {
        match parse_decimal(input, f) {
            Ok(d) => panic!("{input:?} / {}: accepted as {d}", f.name),
            Err(e) => assert!(
                e.reason().contains(reason),
                "{input:?} / {}: {e} (wanted {reason:?})",
                f.name
            ),
        }
    }
}

#[test]
fn decimal_error_message() {
    let e = parse_decimal("12,34.5", &DecimalFormat::de()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"12,34.5\" is not an amount in format de (1.234,56): \
         group separator after the decimal separator"
    );
    let long = "9".repeat(100);
    let e = parse_decimal(&long, &DecimalFormat::plain()).unwrap_err();
    assert_eq!(e.input(), format!("{}…", "9".repeat(60)));
}

#[test]
fn decimal_format_names() {
    for name in [
        "plain", "en", "de", "fr", "ch", "in", "auto", "auto_en", "AUTO_DE",
    ] {
        assert!(name.parse::<DecimalFormat>().is_ok(), "{name}");
    }
    assert!("xx".parse::<DecimalFormat>().is_err());
    assert_eq!(fmt("auto_en").prefer, Some('.'));
    assert!(super::decimal::currency_codes_sorted());
}

#[test]
fn formats_decimals() {
    let cases: &[(&str, &str, &str)] = &[
        ("1234.56", "en", "1,234.56"),
        ("1234.56", "de", "1.234,56"),
        ("1234.56", "fr", "1\u{a0}234,56"),
        ("1234.56", "ch", "1'234.56"),
        ("123456.78", "in", "1,23,456.78"),
        ("1234567", "in", "12,34,567"),
        ("-1234567.5", "en", "-1,234,567.5"),
        ("-0.05", "en", "-0.05"),
        ("0", "en", "0"),
        ("0.00", "de", "0,00"),
        ("100", "en", "100"),
        ("1000", "en", "1,000"),
        ("-1234.56", "plain", "-1234.56"),
        ("1234.56", "auto", "1234.56"),
        ("12.50", "plain", "12.50"),
    ];
    for &(v, f, want) in cases {
        assert_eq!(format_decimal(dec(v), &fmt(f)), want, "{v} / {f}");
    }
    assert_eq!(format_decimal(-Decimal::ZERO, &fmt("en")), "0");
}

#[test]
fn minor_units() {
    assert_eq!(from_minor_units(12345, 2).to_string(), "123.45");
    assert_eq!(from_minor_units(-5, 2).to_string(), "-0.05");
    assert_eq!(from_minor_units(7, 0).to_string(), "7");
    assert_eq!(from_minor_units(i64::MIN, 2), dec("-92233720368547758.08"));
    assert_eq!(
        from_minor_units(123_456_789, 29),
        dec("0.0000000000000000000012345679")
    );
    assert_eq!(from_minor_units(5, 60), Decimal::ZERO);

    assert_eq!(parse_minor_units("12345", 2).unwrap().to_string(), "123.45");
    assert_eq!(parse_minor_units(" -5 ", 2).unwrap().to_string(), "-0.05");
    assert_eq!(parse_minor_units("0", 2).unwrap().to_string(), "0.00");
    assert_eq!(parse_minor_units("１２３", 2).unwrap().to_string(), "1.23");
    for (input, scale, reason) in [
        ("12.5", 2, "whole number"),
        ("12345", 29, "scale over 28"),
        ("€5", 2, "currency"),
        ("", 2, "empty"),
        ("1,234", 2, "unexpected"),
    ] {
        let e = parse_minor_units(input, scale).unwrap_err();
        assert!(e.reason().contains(reason), "{input}: {e}");
    }
}

#[test]
fn rounding() {
    use RoundingMode::*;
    let cases: &[(&str, u32, RoundingMode, &str)] = &[
        ("2.5", 0, HalfUp, "3"),
        ("-2.5", 0, HalfUp, "-3"),
        ("2.4", 0, HalfUp, "2"),
        ("2.5", 0, HalfEven, "2"),
        ("3.5", 0, HalfEven, "4"),
        ("2.45", 1, HalfEven, "2.4"),
        ("2.45", 1, HalfUp, "2.5"),
        ("1.239", 2, Down, "1.23"),
        ("-1.239", 2, Down, "-1.23"),
        ("1.231", 2, Up, "1.24"),
        ("-1.231", 2, Up, "-1.24"),
        ("-1.231", 2, Floor, "-1.24"),
        ("1.239", 2, Floor, "1.23"),
        ("-1.239", 2, Ceiling, "-1.23"),
        ("1.231", 2, Ceiling, "1.24"),
        ("12.5", 2, HalfUp, "12.50"),
        ("12", 2, HalfEven, "12.00"),
        ("1.5", 40, HalfUp, "1.5000000000000000000000000000"),
    ];
    for &(v, scale, mode, want) in cases {
        assert_eq!(
            round(dec(v), scale, mode).to_string(),
            want,
            "{v} {scale} {mode}"
        );
    }
    for mode in [HalfUp, HalfEven, Down, Up, Floor, Ceiling] {
        assert_eq!(mode.name().parse::<RoundingMode>().unwrap(), mode);
    }
    assert_eq!("Half-Even".parse::<RoundingMode>().unwrap(), HalfEven);
    assert!("nearest".parse::<RoundingMode>().is_err());
}

// ---------------------------------------------------------------- dates

#[test]
fn date_accepts() {
    let cases: &[(&str, &str, &str, NaiveDate)] = &[
        ("2026-11-28", "iso", "UTC", date(2026, 11, 28)),
        (" 2026-11-28 ", "iso", "UTC", date(2026, 11, 28)),
        ("2024-02-29", "iso", "UTC", date(2024, 2, 29)),
        (
            "2026-11-28T10:00:00",
            "iso",
            "Europe/Berlin",
            date(2026, 11, 28),
        ),
        ("2026-11-28 10:00", "iso", "UTC", date(2026, 11, 28)),
        (
            "2026-11-28T23:30:00-05:00",
            "iso",
            "UTC",
            date(2026, 11, 29),
        ),
        (
            "2026-03-31T23:30:00Z",
            "iso",
            "Europe/Berlin",
            date(2026, 4, 1),
        ),
        (
            "2026-03-31T23:30:00.123456789Z",
            "iso",
            "UTC",
            date(2026, 3, 31),
        ),
        ("2026-03-31T23:30:00+0200", "iso", "UTC", date(2026, 3, 31)),
        ("２０２６－１１－２８", "iso", "UTC", date(2026, 11, 28)),
        ("28.11.2026", "dd.mm.yyyy", "UTC", date(2026, 11, 28)),
        ("1.2.2026", "dd.mm.yyyy", "UTC", date(2026, 2, 1)),
        ("11/28/2026", "mm/dd/yyyy", "UTC", date(2026, 11, 28)),
        ("28/11/2026", "dd/mm/yyyy", "UTC", date(2026, 11, 28)),
        ("2026-11-28", "yyyy-mm-dd", "UTC", date(2026, 11, 28)),
        ("20261128", "yyyymmdd", "UTC", date(2026, 11, 28)),
        ("2026/11/28", "yyyy/mm/dd", "UTC", date(2026, 11, 28)),
        (
            "2026年11月28日",
            "yyyy年mm月dd日",
            "UTC",
            date(2026, 11, 28),
        ),
        (
            "２０２６年１１月２８日",
            "yyyy年mm月dd日",
            "UTC",
            date(2026, 11, 28),
        ),
        ("2026年1月5日", "%Y年%m月%d日", "UTC", date(2026, 1, 5)),
        (
            "28/11/2026 14:30",
            "%d/%m/%Y %H:%M",
            "UTC",
            date(2026, 11, 28),
        ),
        (
            "2026-11-28 23:30 +0000",
            "%Y-%m-%d %H:%M %z",
            "Asia/Shanghai",
            date(2026, 11, 29),
        ),
        ("1552326816", "unix", "UTC", date(2019, 3, 11)),
        ("1552326816", "unix", "Asia/Shanghai", date(2019, 3, 12)),
        ("1552326816.5", "unix", "UTC", date(2019, 3, 11)),
        ("1552326816230", "unix_ms", "UTC", date(2019, 3, 11)),
        ("/Date(1552326816230)/", "ms_json", "UTC", date(2019, 3, 11)),
        (
            "/Date(1552326816230+0000)/",
            "ms_json",
            "UTC",
            date(2019, 3, 11),
        ),
        (
            "/Date(1552326816230+0000)/",
            "ms_json",
            "Asia/Shanghai",
            date(2019, 3, 12),
        ),
        (
            "/Date(1552326816230-0500)/",
            "ms_json",
            "UTC",
            date(2019, 3, 11),
        ),
        (
            "\\/Date(1552326816230)\\/",
            "ms_json",
            "UTC",
            date(2019, 3, 11),
        ),
        ("45000", "excel", "UTC", date(2023, 3, 15)),
        ("45000.75", "excel", "UTC", date(2023, 3, 15)),
        ("1", "excel", "UTC", date(1900, 1, 1)),
        ("59", "excel", "UTC", date(1900, 2, 28)),
        ("61", "excel", "UTC", date(1900, 3, 1)),
        ("0", "excel_1904", "UTC", date(1904, 1, 1)),
        ("43538", "excel_1904", "UTC", date(2023, 3, 15)),
    ];
    for &(input, f, z, want) in cases {
        let got = parse_date(input, &df(f), &zone(z))
            .unwrap_or_else(|e| panic!("{input} / {f} / {z}: {e}"));
        assert_eq!(got, want, "{input} / {f} / {z}");
    }
}

#[test]
fn date_rejects() {
    let cases: &[(&str, &str, &str)] = &[
        ("", "iso", "empty input"),
        ("   ", "dd.mm.yyyy", "empty input"),
        ("2026-02-30", "iso", "February has 28 days in 2026"),
        ("2100-02-29", "iso", "February has 28 days in 2100"),
        ("2026-04-31", "iso", "April has 30 days in 2026"),
        ("2026-13-01", "iso", "month 13 does not exist"),
        ("2026-00-01", "iso", "month 0 does not exist"),
        ("2026-01-00", "iso", "day 0 does not exist"),
        (
            "0000-01-01",
            "iso",
            "year 0 is outside the accepted range 1900–2200",
        ),
        ("1899-12-31", "iso", "year 1899"),
        ("2201-01-01", "iso", "year 2201"),
        ("2026-11-28T25:00", "iso", "hour 25"),
        ("2026-11-28T10:61", "iso", "minute 61"),
        ("2026-11-28T10:00:60", "iso", "second 60"),
        ("2026-11-28X", "iso", "expected an ISO 8601 date"),
        ("28.11.2026", "iso", "expected an ISO 8601 date"),
        ("2026-11-28T10:00:00+25:00", "iso", "invalid UTC offset"),
        ("2026-11-28T10:00:00Zjunk", "iso", "invalid UTC offset"),
        ("30.02.2026", "dd.mm.yyyy", "February has 28 days in 2026"),
        ("28.13.2026", "dd.mm.yyyy", "out of range"),
        ("28.11.0000", "dd.mm.yyyy", "year 0"),
        ("28.11.2026 10:00", "dd.mm.yyyy", "extra characters"),
        ("2026-11-28", "dd.mm.yyyy", "does not match"),
        ("28.11.", "dd.mm.yyyy", "ends early"),
        ("abc", "unix", "expected a whole or decimal number"),
        ("1552326816230", "unix", "milliseconds given as seconds?"),
        ("12.5", "unix_ms", "whole number of milliseconds"),
        ("99999999999999999999", "unix_ms", "whole number"),
        ("/Date(abc)/", "ms_json", "expected /Date("),
        ("/Date(1552326816230+00)/", "ms_json", "invalid offset"),
        ("Date(1552326816230)", "ms_json", "expected /Date("),
        ("/Date(-62135596800000)/", "ms_json", "DateTime.MinValue"),
        ("/Date(-2208988800001)/", "ms_json", "year 1899"),
        ("60", "excel", "1900-02-29"),
        ("0", "excel", "1900-01-00"),
        ("-1", "excel", "negative"),
        ("99999999", "excel", "after 9999-12-31"),
        ("45000,5", "excel", "expected a serial"),
        ("2026-11-28", "excel", "expected a serial"),
    ];
    for &(input, f, reason) in cases {
        match parse_date(input, &df(f), &Zone::UTC) {
            Ok(d) => panic!("{input:?} / {f}: accepted as {d}"),
            Err(e) => assert!(
                e.reason().contains(reason),
                "{input:?} / {f}: {e} (wanted {reason:?})"
            ),
        }
    }
}

#[test]
fn date_error_message() {
    let e = parse_date("2026-02-30", &DateFormat::Iso, &Zone::UTC).unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"2026-02-30\" is not a date: February has 28 days in 2026"
    );
    let e = parse_date("x", &df("dd.mm.yyyy"), &Zone::UTC).unwrap_err();
    assert_eq!(e.expected(), "a date in format %d.%m.%Y");
}

#[test]
fn excel_60_is_an_error() {
    // Excel shows serial 60 as 1900-02-29, which does not exist.
    let e = parse_date("60", &DateFormat::ExcelSerial, &Zone::UTC).unwrap_err();
    assert!(e.to_string().contains("exists only in Excel"), "{e}");
}

#[test]
fn datetimes() {
    let berlin = zone("Europe/Berlin");
    let cases: &[(&str, &str, &Zone, DateTime<Utc>)] = &[
        (
            "2026-11-28T10:00:00Z",
            "iso",
            &berlin,
            utc(2026, 11, 28, 10, 0, 0),
        ),
        (
            "2026-11-28T10:00:00",
            "iso",
            &berlin,
            utc(2026, 11, 28, 9, 0, 0),
        ),
        (
            "2026-07-01T10:00:00",
            "iso",
            &berlin,
            utc(2026, 7, 1, 8, 0, 0),
        ),
        ("2026-11-28", "iso", &berlin, utc(2026, 11, 27, 23, 0, 0)),
        (
            "2026-11-28T10:00:00+05:30",
            "iso",
            &berlin,
            utc(2026, 11, 28, 4, 30, 0),
        ),
        // DST fold: 02:30 happens twice; the earlier (CEST, +02:00) wins.
        (
            "2026-10-25T02:30:00",
            "iso",
            &berlin,
            utc(2026, 10, 25, 0, 30, 0),
        ),
        (
            "28/11/2026 14:30",
            "%d/%m/%Y %H:%M",
            &berlin,
            utc(2026, 11, 28, 13, 30, 0),
        ),
        ("1552326816", "unix", &berlin, utc(2019, 3, 11, 17, 53, 36)),
        ("-1", "unix", &Zone::UTC, utc(1969, 12, 31, 23, 59, 59)),
        ("45000.5", "excel", &Zone::UTC, utc(2023, 3, 15, 12, 0, 0)),
        ("45000.5", "excel", &berlin, utc(2023, 3, 15, 11, 0, 0)),
        (
            "45000.5416666667",
            "excel",
            &Zone::UTC,
            utc(2023, 3, 15, 13, 0, 0),
        ),
        (
            "45000.99999999",
            "excel",
            &Zone::UTC,
            utc(2023, 3, 15, 23, 59, 59) + chrono::TimeDelta::milliseconds(999),
        ),
        (
            "45000.99999999",
            "excel",
            &Zone::UTC,
            utc(2023, 3, 15, 23, 59, 59) + chrono::TimeDelta::milliseconds(999),
        ),
        (
            "45000.999999999",
            "excel",
            &Zone::UTC,
            utc(2023, 3, 16, 0, 0, 0),
        ),
    ];
    for &(input, f, z, want) in cases {
        let got =
            parse_datetime(input, &df(f), z).unwrap_or_else(|e| panic!("{input} / {f} / {z}: {e}"));
        assert_eq!(got, want, "{input} / {f} / {z}");
    }
    let got = parse_datetime("/Date(1552326816230+0000)/", &DateFormat::MsJson, &berlin).unwrap();
    assert_eq!(got.timestamp_millis(), 1_552_326_816_230);
    let got = parse_datetime("1552326816.25", &DateFormat::UnixSeconds, &berlin).unwrap();
    assert_eq!(got.timestamp_millis(), 1_552_326_816_250);
    let got = parse_datetime("-1.25", &DateFormat::UnixSeconds, &berlin).unwrap();
    assert_eq!(got.timestamp_millis(), -1250);
    let got = parse_datetime("1552326816230", &DateFormat::UnixMillis, &berlin).unwrap();
    assert_eq!(got.timestamp_millis(), 1_552_326_816_230);
    // Midnight skipped in São Paulo on 2018-11-04: the day starts at 01:00 -02.
    let sp = zone("America/Sao_Paulo");
    assert_eq!(
        parse_datetime("2018-11-04", &DateFormat::Iso, &sp).unwrap(),
        utc(2018, 11, 4, 3, 0, 0)
    );
}

#[test]
fn dst_gap_is_an_error() {
    let e = parse_datetime(
        "2026-03-29T02:30:00",
        &DateFormat::Iso,
        &zone("Europe/Berlin"),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"2026-03-29T02:30:00\" is not a date-time: 2026-03-29 02:30:00 does not exist in \
         Europe/Berlin (skipped by a daylight-saving change)"
    );
    // The calendar date is still well defined.
    assert_eq!(
        parse_date(
            "2026-03-29T02:30:00",
            &DateFormat::Iso,
            &zone("Europe/Berlin")
        )
        .unwrap(),
        date(2026, 3, 29)
    );
    assert!(
        parse_datetime(
            "29.03.2026 02:30",
            &df("%d.%m.%Y %H:%M"),
            &zone("Europe/Berlin")
        )
        .is_err()
    );
}

#[test]
fn date_format_names() {
    for (name, want) in [
        ("iso", DateFormat::Iso),
        ("unix", DateFormat::UnixSeconds),
        ("unix_ms", DateFormat::UnixMillis),
        ("ms_json", DateFormat::MsJson),
        ("excel", DateFormat::ExcelSerial),
        ("EXCEL_1904", DateFormat::Excel1904),
    ] {
        assert_eq!(df(name), want, "{name}");
        assert_eq!(df(&want.to_string()), want);
    }
    assert_eq!(df("dd.mm.yyyy"), DateFormat::pattern("%d.%m.%Y").unwrap());
    assert_eq!(df("%d.%m.%Y").to_string(), "%d.%m.%Y");
    for bad in ["%Q", "%H:%M", "%Y-%m", "", "bogus", "%s"] {
        assert!(bad.parse::<DateFormat>().is_err(), "{bad}");
    }
}

#[test]
fn zones() {
    use chrono::FixedOffset;
    let fixed = |s: i32| Zone::Fixed(FixedOffset::east_opt(s).unwrap());
    for (name, want) in [
        ("UTC", Zone::UTC),
        ("Z", Zone::UTC),
        ("+01:00", fixed(3600)),
        ("-0500", fixed(-5 * 3600)),
        ("+08", fixed(8 * 3600)),
        ("UTC+05:30", fixed(19800)),
        ("Europe/Berlin", Zone::Iana(chrono_tz::Europe::Berlin)),
        ("Asia/Shanghai", Zone::Iana(chrono_tz::Asia::Shanghai)),
    ] {
        assert_eq!(zone(name), want, "{name}");
        assert_eq!(zone(&want.to_string()), want);
    }
    for bad in ["Mars/Olympus", "+25:00", "+1", "", "europe/berlin"] {
        assert!(bad.parse::<Zone>().is_err(), "{bad}");
    }
}

#[test]
fn formats_dates() {
    let d = date(2026, 11, 28);
    assert_eq!(format_date(d, &DateFormat::Iso), "2026-11-28");
    assert_eq!(format_date(d, &df("dd.mm.yyyy")), "28.11.2026");
    assert_eq!(format_date(d, &df("yyyy年mm月dd日")), "2026年11月28日");
    assert_eq!(
        format_date(d, &df("%d/%m/%Y %H:%M %z")),
        "28/11/2026 00:00 +0000"
    );
    assert_eq!(format_date(d, &DateFormat::UnixSeconds), "1795824000");
    assert_eq!(format_date(d, &DateFormat::UnixMillis), "1795824000000");
    assert_eq!(
        format_date(d, &DateFormat::MsJson),
        "/Date(1795824000000+0000)/"
    );
    assert_eq!(
        format_date(date(2023, 3, 15), &DateFormat::ExcelSerial),
        "45000"
    );
    assert_eq!(format_date(date(1900, 1, 1), &DateFormat::ExcelSerial), "1");
    assert_eq!(
        format_date(date(1900, 2, 28), &DateFormat::ExcelSerial),
        "59"
    );
    assert_eq!(
        format_date(date(1900, 3, 1), &DateFormat::ExcelSerial),
        "61"
    );
    assert_eq!(
        format_date(date(2023, 3, 15), &DateFormat::Excel1904),
        "43538"
    );

    let t = utc(2026, 11, 28, 10, 0, 0);
    let berlin = zone("Europe/Berlin");
    assert_eq!(
        format_datetime(t, &DateFormat::Iso, &berlin),
        "2026-11-28T11:00:00+01:00"
    );
    assert_eq!(
        format_datetime(t, &DateFormat::Iso, &Zone::UTC),
        "2026-11-28T10:00:00Z"
    );
    assert_eq!(
        format_datetime(t, &df("%d.%m.%Y %H:%M %Z"), &berlin),
        "28.11.2026 11:00 CET"
    );
    assert_eq!(
        format_datetime(t, &DateFormat::MsJson, &berlin),
        "/Date(1795860000000+0100)/"
    );
    assert_eq!(
        format_datetime(t, &DateFormat::MsJson, &zone("-05:30")),
        "/Date(1795860000000-0530)/"
    );
    assert_eq!(
        format_datetime(
            utc(2023, 3, 15, 12, 0, 0),
            &DateFormat::ExcelSerial,
            &Zone::UTC
        ),
        "45000.5"
    );
    assert_eq!(
        format_datetime(
            utc(2023, 3, 15, 0, 0, 0),
            &DateFormat::ExcelSerial,
            &Zone::UTC
        ),
        "45000"
    );
}

#[test]
fn datetime_round_trips() {
    let zones = [
        Zone::UTC,
        zone("Europe/Berlin"),
        zone("Asia/Shanghai"),
        zone("-03:30"),
    ];
    let formats = [
        "iso",
        "unix",
        "unix_ms",
        "ms_json",
        "excel",
        "excel_1904",
        "%d.%m.%Y %H:%M:%S %z",
    ];
    let t = Utc.timestamp_millis_opt(1_552_326_816_000).unwrap();
    for z in &zones {
        for f in formats {
            let f = df(f);
            let s = format_datetime(t, &f, z);
            assert_eq!(parse_datetime(&s, &f, z).unwrap(), t, "{s} / {f} / {z}");
        }
    }
}

// ---------------------------------------------------------------- contact

#[test]
fn emails() {
    let ok = [
        ("John.Doe@Example.COM", "john.doe@example.com"),
        ("  mailto:a@b.co  ", "a@b.co"),
        ("MAILTO:a@b.co?subject=hi", "a@b.co"),
        ("John Doe <JD@X.org>", "jd@x.org"),
        ("\"Doe, John\" <jd@x.org>", "jd@x.org"),
        ("<mailto:jd@x.org>", "jd@x.org"),
        ("user+tag@sub.example.co.uk", "user+tag@sub.example.co.uk"),
        ("o'brien@x-y.ie", "o'brien@x-y.ie"),
        ("Müller@Bücher.de", "müller@bücher.de"),
        ("ｗａｎｇ＠ｅｘａｍｐｌｅ．ｃｎ", "wang@example.cn"),
    ];
    for (input, want) in ok {
        assert_eq!(normalize_email(input).unwrap(), want, "{input}");
    }
    let long_local = format!("{}@x.org", "a".repeat(65));
    let bad: &[(&str, &str)] = &[
        ("", "empty input"),
        ("plainaddress", "no @"),
        ("a@b@c.de", "more than one @"),
        ("@b.co", "empty local part"),
        ("a@", "empty domain"),
        ("a@localhost", "no dot"),
        ("a b@c.de", "whitespace"),
        (&long_local, "longer than 64"),
        ("a@-b.com", "hyphen"),
        ("a@b..com", "empty label"),
        ("a@b.com.", "empty label"),
        (".a@b.com", "misplaced dot"),
        ("a..b@b.com", "misplaced dot"),
        ("a@b_c.com", "not allowed in the domain"),
        ("a(b)@c.com", "not allowed in the local part"),
        ("a@1.2.3.4", "numeric top-level"),
        ("Name <a@b.co", "unbalanced"),
        ("mailto:", "empty address"),
    ];
    for &(input, reason) in bad {
        let e = normalize_email(input).unwrap_err();
        assert!(
            e.reason().contains(reason),
            "{input:?}: {e} (wanted {reason:?})"
        );
    }
}

#[test]
fn phones() {
    let ok: &[(&str, Option<&str>, &str)] = &[
        ("+49 30 123456", None, "+4930123456"),
        ("030 123456", Some("DE"), "+4930123456"),
        ("+49 (0)30 123456", None, "+4930123456"),
        ("+49 (0) 30-123456", Some("FR"), "+4930123456"),
        ("0049 30 123456", None, "+4930123456"),
        ("+49 030 123456", None, "+4930123456"),
        ("(030) 123-456", Some("de"), "+4930123456"),
        ("030/123456", Some("DE"), "+4930123456"),
        ("030.123.456", Some("DE"), "+4930123456"),
        ("(0)30 123456", Some("DE"), "+4930123456"),
        ("0664 1234567", Some("AT"), "+436641234567"),
        ("044 668 18 00", Some("CH"), "+41446681800"),
        ("06 12 34 56 78", Some("FR"), "+33612345678"),
        ("020 7946 0958", Some("gb"), "+442079460958"),
        ("020 7946 0958", Some("UK"), "+442079460958"),
        ("02 1234 5678", Some("IT"), "+390212345678"),
        ("+39 02 1234 5678", None, "+390212345678"),
        ("912 345 678", Some("ES"), "+34912345678"),
        ("(555) 123-4567", Some("US"), "+15551234567"),
        ("1-555-123-4567", Some("US"), "+15551234567"),
        ("555.123.4567", Some("CA"), "+15551234567"),
        ("011 49 30 123456", Some("US"), "+4930123456"),
        ("0011 49 30 123456", Some("AU"), "+4930123456"),
        ("+1 555 123 4567 x123", None, "+15551234567"),
        ("+1 555 123 4567 ext. 123", None, "+15551234567"),
        ("+1 555 123 4567;ext=9", None, "+15551234567"),
        ("010-1234-5678", Some("KR"), "+821012345678"),
        ("138 0013 8000", Some("CN"), "+8613800138000"),
        ("＋８６ １３８ ００１３ ８０００", None, "+8613800138000"),
        ("8 495 123 45 67", Some("RU"), "+74951234567"),
        ("06 1 234 5678", Some("HU"), "+3612345678"),
        ("tel:+4930123456", None, "+4930123456"),
        ("+852 2123 4567", None, "+85221234567"),
    ];
    for &(input, c, want) in ok {
        let got = normalize_phone(input, c).unwrap_or_else(|e| panic!("{input} / {c:?}: {e}"));
        assert_eq!(got, want, "{input} / {c:?}");
    }
    let bad: &[(&str, Option<&str>, &str)] = &[
        ("", None, "empty input"),
        ("030 123456", None, "no default country"),
        ("030 123456", Some("XX"), "unknown country"),
        ("+49 30", None, "too few digits"),
        ("+49 30 1234 5678 9012 34", None, "too many digits"),
        ("1-800-FLOWERS", Some("US"), "unexpected character"),
        ("+49+30123456", None, "misplaced +"),
        ("+0 123 456789", None, "country codes do not start with 0"),
        ("abc", None, "unexpected character"),
        ("()", None, "no digits"),
        ("+49 30 123456 ext", None, "unexpected character"),
    ];
    for &(input, c, reason) in bad {
        let e = normalize_phone(input, c).unwrap_err();
        assert!(
            e.reason().contains(reason),
            "{input:?}: {e} (wanted {reason:?})"
        );
    }
    let (sorted, count) = super::contact::countries_sorted();
    assert!(sorted);
    assert!(count >= 60, "{count}");
    for iso in [
        "DE", "AT", "CH", "FR", "NL", "BE", "IT", "ES", "GB", "IE", "US", "CA", "CN", "HK", "TW",
        "JP", "KR", "SG", "IN", "AU", "NZ", "BR", "MX", "ZA", "AE", "SE", "NO", "DK", "FI", "PL",
        "CZ", "PT",
    ] {
        assert!(calling_code(iso).is_some(), "{iso}");
    }
}

// ---------------------------------------------------------------- booleans

#[test]
fn booleans() {
    for t in [
        "true", "TRUE", "True", "yes", "Y", "y", "1", "on", "ON", "ja", "Ja", "oui", "是", " t ",
        "１",
    ] {
        assert!(parse_bool(t).unwrap(), "{t}");
    }
    for f in [
        "false", "False", "no", "N", "0", "off", "nein", "NON", "否", "f", "０",
    ] {
        assert!(!parse_bool(f).unwrap(), "{f}");
    }
    for bad in ["", "maybe", "2", "yess", "真"] {
        assert!(parse_bool(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_bool("").unwrap_err().reason(), "empty input");
}

#[test]
fn serde_names() {
    #[derive(serde::Deserialize)]
    struct Cfg {
        amount: DecimalFormat,
        date: DateFormat,
        zone: Zone,
        rounding: RoundingMode,
    }
    // A minimal string-map deserializer is not available without serde_json;
    // exercise the visitors through serde's value deserializer.
    use serde::Deserialize;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error, MapDeserializer};
    let pairs = vec![
        ("amount", "de"),
        ("date", "dd.mm.yyyy"),
        ("zone", "Europe/Berlin"),
        ("rounding", "half_even"),
    ];
    let map = MapDeserializer::<_, Error>::new(
        pairs.into_iter().map(|(k, v)| (k, v.into_deserializer())),
    );
    let cfg = Cfg::deserialize(map).unwrap();
    assert_eq!(cfg.amount, DecimalFormat::de());
    assert_eq!(cfg.date, df("%d.%m.%Y"));
    assert_eq!(cfg.zone, zone("Europe/Berlin"));
    assert_eq!(cfg.rounding, RoundingMode::HalfEven);
}

// ---------------------------------------------------------------- properties

const ALL_DECIMAL_FORMATS: [&str; 9] = [
    "plain", "en", "de", "fr", "ch", "in", "auto", "auto_en", "auto_de",
];

fn date_formats() -> Vec<DateFormat> {
    [
        "iso",
        "unix",
        "unix_ms",
        "ms_json",
        "excel",
        "excel_1904",
        "dd.mm.yyyy",
        "yyyy年mm月dd日",
        "%d/%m/%Y %H:%M %z",
    ]
    .iter()
    .map(|f| df(f))
    .collect()
}

/// Strings from characters that matter to the parsers.
fn interesting() -> impl Strategy<Value = String> {
    let chars: Vec<char> =
        "0123456789.,'’ \u{a0}\u{202f}+-−()€$¥￥元EeRUSDMB:/TZx@<>年月日１２．，－"
            .chars()
            .collect();
    prop::collection::vec(prop::sample::select(chars), 0..32).prop_map(|v| v.into_iter().collect())
}

fn any_decimal() -> impl Strategy<Value = Decimal> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        0u32..=28,
    )
        .prop_map(|(lo, mid, hi, neg, scale)| Decimal::from_parts(lo, mid, hi, neg, scale))
}

fn small_decimal() -> impl Strategy<Value = Decimal> {
    (any::<i64>(), 0u32..=10).prop_map(|(m, s)| Decimal::new(m, s))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn nothing_panics(s in prop_oneof![any::<String>(), interesting()]) {
        for f in ALL_DECIMAL_FORMATS {
            let _ = parse_decimal(&s, &fmt(f));
        }
        let _ = parse_minor_units(&s, 2);
        for f in &date_formats() {
            for z in [Zone::UTC, Zone::Iana(chrono_tz::Europe::Berlin)] {
                let _ = parse_date(&s, f, &z);
                let _ = parse_datetime(&s, f, &z);
            }
        }
        let _ = normalize_email(&s);
        let _ = normalize_phone(&s, None);
        let _ = normalize_phone(&s, Some("US"));
        let _ = normalize_phone(&s, Some(&s));
        let _ = parse_bool(&s);
        let _ = s.parse::<DecimalFormat>();
        let _ = s.parse::<DateFormat>();
        let _ = s.parse::<Zone>();
        let _ = s.parse::<RoundingMode>();
    }

    #[test]
    fn numeric_functions_do_not_panic(
        d in any_decimal(),
        units in any::<i64>(),
        scale in 0u32..64,
        mode in prop::sample::select(vec![
            RoundingMode::HalfUp, RoundingMode::HalfEven, RoundingMode::Down,
            RoundingMode::Up, RoundingMode::Floor, RoundingMode::Ceiling,
        ]),
    ) {
        let _ = from_minor_units(units, scale);
        let r = round(d, scale, mode);
        prop_assert!(r.scale() <= 28);
        for f in ALL_DECIMAL_FORMATS {
            let _ = format_decimal(d, &fmt(f));
        }
    }

    #[test]
    fn decimal_round_trips(d in prop_oneof![any_decimal(), small_decimal()]) {
        for f in ["plain", "en", "de", "fr", "ch", "in"] {
            let f = fmt(f);
            let s = format_decimal(d, &f);
            let back = parse_decimal(&s, &f);
            prop_assert!(back.is_ok(), "{} / {}: {:?}", s, f.name, back);
            let back = back.unwrap();
            prop_assert_eq!(back, d, "{} / {}", s, f.name);
            prop_assert_eq!(back.scale(), d.scale(), "{} / {}", s, f.name);
        }
    }

    #[test]
    fn formatting_any_instant_does_not_panic(
        ms in DateTime::<Utc>::MIN_UTC.timestamp_millis()..=DateTime::<Utc>::MAX_UTC.timestamp_millis(),
        edge in prop::sample::select(vec![0u8, 1, 2]),
    ) {
        let t = match edge {
            1 => DateTime::<Utc>::MIN_UTC,
            2 => DateTime::<Utc>::MAX_UTC,
            _ => DateTime::from_timestamp_millis(ms).unwrap(),
        };
        for f in &date_formats() {
            for z in [Zone::UTC, zone("Pacific/Kiritimati"), zone("-12:00"), zone("+23:59")] {
                let s = format_datetime(t, f, &z);
                let _ = parse_datetime(&s, f, &z);
                let _ = parse_date(&s, f, &z);
            }
            let s = format_date(t.date_naive(), f);
            let _ = parse_date(&s, f, &Zone::UTC);
        }
    }

    #[test]
    fn dates_format_and_parse(days in -200_000i32..200_000, secs in 0i64..86_400) {
        let Some(d) = NaiveDate::from_num_days_from_ce_opt(730_000 + days) else { return Ok(()) };
        let t = d.and_hms_opt(0, 0, 0).unwrap().and_utc() + chrono::TimeDelta::seconds(secs);
        for f in &date_formats() {
            let s = format_date(d, f);
            let in_bounds = (MIN_YEAR..=MAX_YEAR).contains(&chrono::Datelike::year(&d));
            let back = parse_date(&s, f, &Zone::UTC);
            let before_1904 = d < NaiveDate::from_ymd_opt(1904, 1, 1).unwrap();
            if in_bounds && !(*f == DateFormat::Excel1904 && before_1904) {
                prop_assert_eq!(back.clone(), Ok(d), "{} / {}", s, f);
            }
            for z in [Zone::UTC, Zone::Iana(chrono_tz::America::New_York)] {
                let s = format_datetime(t, f, &z);
                let _ = parse_datetime(&s, f, &z);
            }
        }
    }
}

// ---------------------------------------------------------------- timing

/// `cargo test --release -- --ignored --nocapture timing`
#[test]
#[ignore]
fn timing() {
    use std::hint::black_box;
    use std::time::Instant;
    fn bench(name: &str, mut f: impl FnMut() -> bool) {
        const N: u32 = 2_000_000;
        for _ in 0..10_000 {
            black_box(f());
        }
        let start = Instant::now();
        let mut ok = 0u32;
        for _ in 0..N {
            ok += u32::from(black_box(f()));
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
        assert_eq!(ok, N, "{name} failed");
        println!("{name:<40} {ns:>7.1} ns/call");
    }
    let en = DecimalFormat::en();
    let de = DecimalFormat::de();
    let auto = DecimalFormat::auto();
    let iso = DateFormat::Iso;
    let pat = df("dd.mm.yyyy");
    let cn = df("yyyy年mm月dd日");
    let ms = DateFormat::MsJson;
    let berlin = zone("Europe/Berlin");
    bench("parse_decimal en \"1,234,567.89\"", || {
        parse_decimal(black_box("1,234,567.89"), &en).is_ok()
    });
    bench("parse_decimal de \"1.234.567,89\"", || {
        parse_decimal(black_box("1.234.567,89"), &de).is_ok()
    });
    bench("parse_decimal en \"12.50\"", || {
        parse_decimal(black_box("12.50"), &en).is_ok()
    });
    bench("parse_decimal en \"€ 1,234.56-\"", || {
        parse_decimal(black_box("€ 1,234.56-"), &en).is_ok()
    });
    bench("parse_decimal auto \"1.234,56\"", || {
        parse_decimal(black_box("1.234,56"), &auto).is_ok()
    });
    bench("parse_date iso \"2026-11-28\"", || {
        parse_date(black_box("2026-11-28"), &iso, &Zone::UTC).is_ok()
    });
    bench("parse_date iso \"…T23:30:00Z\" Berlin", || {
        parse_date(black_box("2026-03-31T23:30:00Z"), &iso, &berlin).is_ok()
    });
    bench("parse_date pattern \"28.11.2026\"", || {
        parse_date(black_box("28.11.2026"), &pat, &Zone::UTC).is_ok()
    });
    bench("parse_date pattern \"2026年11月28日\"", || {
        parse_date(black_box("2026年11月28日"), &cn, &Zone::UTC).is_ok()
    });
    bench("parse_date ms_json UTC", || {
        parse_date(black_box("/Date(1552326816230+0000)/"), &ms, &Zone::UTC).is_ok()
    });
    bench("parse_date ms_json Berlin", || {
        parse_date(black_box("/Date(1552326816230+0000)/"), &ms, &berlin).is_ok()
    });
    bench("parse_datetime iso local Berlin", || {
        parse_datetime(black_box("2026-11-28T10:00:00"), &iso, &berlin).is_ok()
    });
    bench("format_decimal en", || {
        !format_decimal(black_box(Decimal::new(123456789, 2)), &en).is_empty()
    });
    bench("normalize_phone DE", || {
        normalize_phone(black_box("030 123456"), Some("DE")).is_ok()
    });
    bench("normalize_email", || {
        normalize_email(black_box("John.Doe@Example.COM")).is_ok()
    });
    bench("parse_bool", || parse_bool(black_box("yes")).is_ok());
}
