//! Dates and times: ISO 8601, strftime patterns, Unix, .NET JSON and Excel
//! serials, interpreted in a fixed offset or an IANA zone.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use chrono::format::{Item, ParseErrorKind, Parsed, StrftimeItems};
use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    SecondsFormat, TimeDelta, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use super::{ParseError, Reason, deserialize_from_str, normalize_fullwidth, serialize_display};

/// Earliest year a parsed date may have.
pub const MIN_YEAR: i32 = 1900;
/// Latest year a parsed date may have.
pub const MAX_YEAR: i32 = 2200;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

const fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(y, m, d) {
        Some(date) => date,
        None => panic!("invalid constant date"),
    }
}

/// Day 0 of Excel's 1900 system for serials from 61 on (Excel counts a
/// non-existent 1900-02-29 as serial 60).
const EXCEL_1900_EPOCH: NaiveDate = ymd(1899, 12, 30);
const EXCEL_1900_LEAP_BUG: NaiveDate = ymd(1900, 3, 1);
const EXCEL_1904_EPOCH: NaiveDate = ymd(1904, 1, 1);
/// Excel's last date, 9999-12-31.
const EXCEL_MAX_SERIAL: u64 = 2_958_465;
/// `DateTime.MinValue` (0001-01-01) in .NET JSON, used for "no date".
const DOTNET_MIN_MS: i64 = -62_135_596_800_000;
const MS_PER_DAY: u128 = 86_400_000;

/// A validated chrono strftime pattern, pre-parsed once.
#[derive(Debug, Clone)]
pub struct DatePattern {
    source: String,
    items: Vec<Item<'static>>,
}

impl DatePattern {
    /// Parses and validates `pattern` (e.g. `%d.%m.%Y`, `%Y年%m月%d日`): it must
    /// be valid strftime and read back a full date from its own output.
    pub fn new(pattern: &str) -> Result<Self, ParseError> {
        let err = |reason: &'static str| ParseError::new(pattern, "a date pattern", reason);
        let items = StrftimeItems::new(pattern)
            .parse_to_owned()
            .map_err(|_| err("invalid strftime specifier"))?;
        let sample = FixedOffset::east_opt(3600)
            .and_then(|o| o.with_ymd_and_hms(2026, 11, 28, 10, 11, 12).single())
            .ok_or_else(|| err("internal sample date failed"))?;
        let mut text = String::new();
        write!(text, "{}", sample.format_with_items(items.iter()))
            .map_err(|_| err("cannot format a date"))?;
        let mut parsed = Parsed::new();
        let reads_back = chrono::format::parse(&mut parsed, &text, items.iter()).is_ok()
            && parsed.to_naive_date().ok() == Some(sample.date_naive());
        if !reads_back {
            return Err(err(
                "does not identify a calendar date (needs year, month and day)",
            ));
        }
        Ok(DatePattern {
            source: pattern.to_owned(),
            items,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl PartialEq for DatePattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for DatePattern {}

/// How a date or date-time is written.
///
/// [`FromStr`] names: `iso`, `unix`, `unix_ms`, `ms_json`, `excel`,
/// `excel_1904`, aliases `dd.mm.yyyy`, `mm/dd/yyyy`, `dd/mm/yyyy`,
/// `dd-mm-yyyy`, `yyyy-mm-dd`, `yyyy/mm/dd`, `yyyymmdd`, `yyyy年mm月dd日`,
/// and any string containing `%` as a strftime pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DateFormat {
    /// `2026-11-28`, `2026-11-28T10:00:00[.fff]` (local to the zone) or with
    /// `Z`/`±hh:mm`/`±hhmm`/`±hh`; `T` may be a space.
    Iso,
    /// A strftime pattern, validated at construction.
    Pattern(DatePattern),
    /// Seconds since 1970-01-01T00:00Z, optionally with a fraction.
    UnixSeconds,
    /// Milliseconds since 1970-01-01T00:00Z.
    UnixMillis,
    /// `/Date(1552326816230)/` or `/Date(1552326816230+0000)/` (.NET, Xero); the
    /// number is UTC milliseconds, the optional offset is checked and ignored.
    MsJson,
    /// Excel 1900 date system: 1 = 1900-01-01, 61 = 1900-03-01; the fraction
    /// is the local time of day. Serial 60 (Excel's fictitious 1900-02-29) and
    /// 0 (`1900-01-00`) are errors.
    ExcelSerial,
    /// Excel 1904 date system: 0 = 1904-01-01.
    Excel1904,
}

impl DateFormat {
    /// A validated strftime pattern format.
    pub fn pattern(pattern: &str) -> Result<Self, ParseError> {
        DatePattern::new(pattern).map(DateFormat::Pattern)
    }

    fn expected(&self, datetime: bool) -> Cow<'static, str> {
        let what = if datetime { "a date-time" } else { "a date" };
        Cow::Borrowed(match self {
            DateFormat::Iso => what,
            DateFormat::Pattern(p) => {
                return Cow::Owned(format!("{what} in format {}", p.source));
            }
            DateFormat::UnixSeconds => "a Unix time in seconds",
            DateFormat::UnixMillis => "a Unix time in milliseconds",
            DateFormat::MsJson => "a .NET JSON date (/Date(ms)/)",
            DateFormat::ExcelSerial => "an Excel serial date",
            DateFormat::Excel1904 => "an Excel 1904 serial date",
        })
    }
}

impl FromStr for DateFormat {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let t = s.trim();
        if t.contains('%') {
            return DateFormat::pattern(t);
        }
        let alias = |p: &str| DateFormat::pattern(p);
        match t.to_lowercase().as_str() {
            "iso" | "iso8601" | "rfc3339" => Ok(DateFormat::Iso),
            "unix" | "unix_s" | "epoch" => Ok(DateFormat::UnixSeconds),
            "unix_ms" | "epoch_ms" => Ok(DateFormat::UnixMillis),
            "ms_json" | "dotnet_json" => Ok(DateFormat::MsJson),
            "excel" | "excel_1900" => Ok(DateFormat::ExcelSerial),
            "excel_1904" => Ok(DateFormat::Excel1904),
            "dd.mm.yyyy" => alias("%d.%m.%Y"),
            "mm/dd/yyyy" => alias("%m/%d/%Y"),
            "dd/mm/yyyy" => alias("%d/%m/%Y"),
            "dd-mm-yyyy" => alias("%d-%m-%Y"),
            "yyyy-mm-dd" => alias("%Y-%m-%d"),
            "yyyy/mm/dd" => alias("%Y/%m/%d"),
            "yyyymmdd" => alias("%Y%m%d"),
            "yyyy年mm月dd日" => alias("%Y年%m月%d日"),
            _ => Err(ParseError::new(
                s,
                "a date format",
                "expected iso, unix, unix_ms, ms_json, excel, excel_1904, an alias like \
                 dd.mm.yyyy or a strftime pattern containing %",
            )),
        }
    }
}

impl fmt::Display for DateFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DateFormat::Iso => "iso",
            DateFormat::Pattern(p) => &p.source,
            DateFormat::UnixSeconds => "unix",
            DateFormat::UnixMillis => "unix_ms",
            DateFormat::MsJson => "ms_json",
            DateFormat::ExcelSerial => "excel",
            DateFormat::Excel1904 => "excel_1904",
        })
    }
}

deserialize_from_str!(DateFormat, "a date format");
serialize_display!(DateFormat);

/// A time zone: a fixed offset or an IANA zone.
///
/// [`FromStr`] accepts `UTC`, `GMT`, `Z`, `+01:00`, `-0500`, `+08`,
/// `UTC+01:00`, and IANA names like `Europe/Berlin` (case-sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// A fixed UTC offset.
    Fixed(FixedOffset),
    /// An IANA zone with its daylight-saving rules.
    Iana(Tz),
}

impl Zone {
    /// UTC.
    pub const UTC: Zone = Zone::Fixed(FixedOffset::east_opt(0).unwrap());

    /// The UTC offset in effect at `instant`.
    pub fn offset_at(&self, instant: DateTime<Utc>) -> FixedOffset {
        match self {
            Zone::Fixed(o) => *o,
            Zone::Iana(tz) => tz.offset_from_utc_datetime(&instant.naive_utc()).fix(),
        }
    }

    /// The local date and time of `instant` in this zone.
    /// (Saturates to the UTC time at the very ends of chrono's range.)
    pub fn local(&self, instant: DateTime<Utc>) -> NaiveDateTime {
        let utc = instant.naive_utc();
        utc.checked_add_offset(self.offset_at(instant))
            .unwrap_or(utc)
    }

    /// Whether the local time of `instant` is representable (false only
    /// within a day of chrono's range limits, ±262,000 years).
    fn representable(&self, instant: DateTime<Utc>) -> bool {
        instant
            .naive_utc()
            .checked_add_offset(self.offset_at(instant))
            .is_some()
    }

    /// The calendar date of `instant` in this zone.
    pub fn date_of(&self, instant: DateTime<Utc>) -> NaiveDate {
        self.local(instant).date()
    }

    /// The instant of a local time: `None` in a DST gap; in a DST fold the
    /// earlier instant.
    pub fn to_utc(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let r: LocalResult<DateTime<Utc>> = match self {
            Zone::Fixed(o) => o.from_local_datetime(&local).map(|d| d.to_utc()),
            Zone::Iana(tz) => tz.from_local_datetime(&local).map(|d| d.to_utc()),
        };
        match r {
            LocalResult::Single(t) => Some(t),
            LocalResult::Ambiguous(a, b) => Some(a.min(b)),
            LocalResult::None => None,
        }
    }

    fn resolve(&self, local: NaiveDateTime) -> Result<DateTime<Utc>, Reason> {
        self.to_utc(local).ok_or_else(|| {
            format!("{local} does not exist in {self} (skipped by a daylight-saving change)").into()
        })
    }

    /// First instant of `date`: local midnight, or the end of the DST gap
    /// when midnight is skipped.
    fn start_of_day(&self, date: NaiveDate) -> Result<DateTime<Utc>, Reason> {
        let midnight = date.and_time(NaiveTime::MIN);
        if let Some(t) = self.to_utc(midnight) {
            return Ok(t);
        }
        let before = midnight
            .checked_sub_signed(TimeDelta::days(1))
            .map(|d| self.offset_at(d.and_utc()).local_minus_utc());
        before
            .and_then(|off| midnight.checked_sub_signed(TimeDelta::seconds(off.into())))
            .map(|d| d.and_utc())
            .ok_or_else(|| "date out of range".into())
    }
}

impl Default for Zone {
    fn default() -> Self {
        Zone::UTC
    }
}

fn parse_offset(s: &str) -> Option<FixedOffset> {
    let b = s.as_bytes();
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = |r: &[u8]| -> Option<i32> {
        r.iter().try_fold(0i32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i32::from(c - b'0'))
        })
    };
    let (h, m) = match &b[1..] {
        [h1, h2] => (digits(&[*h1, *h2])?, 0),
        [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?),
        _ => return None,
    };
    if h > 23 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

impl FromStr for Zone {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let t = s.trim();
        if matches!(t, "Z" | "z" | "UTC" | "utc" | "GMT" | "gmt") {
            return Ok(Zone::UTC);
        }
        let offset = t
            .strip_prefix("UTC")
            .or_else(|| t.strip_prefix("GMT"))
            .unwrap_or(t);
        if let Some(o) = parse_offset(offset) {
            return Ok(Zone::Fixed(o));
        }
        t.parse::<Tz>().map(Zone::Iana).map_err(|_| {
            ParseError::new(
                s,
                "a time zone",
                "expected an IANA name like Europe/Berlin, UTC or an offset like +01:00",
            )
        })
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Fixed(o) if o.local_minus_utc() == 0 => f.write_str("UTC"),
            Zone::Fixed(o) => write!(f, "{o}"),
            Zone::Iana(tz) => f.write_str(tz.name()),
        }
    }
}

deserialize_from_str!(Zone, "a time zone");
serialize_display!(Zone);

/// What an input denotes before a zone is applied.
enum Moment {
    Date(NaiveDate),
    Local(NaiveDateTime),
    Instant(DateTime<Utc>),
}

/// Parses the calendar date of `input` in `zone`.
///
/// A date is taken as written; a local date-time gives its date part; an
/// instant (ISO with offset, Unix, .NET JSON, patterns with `%z`) is converted
/// to `zone` first. Years outside [`MIN_YEAR`]..=[`MAX_YEAR`] are rejected.
pub fn parse_date(input: &str, fmt: &DateFormat, zone: &Zone) -> Result<NaiveDate, ParseError> {
    date_inner(input, fmt, zone).map_err(|r| ParseError::new(input, fmt.expected(false), r))
}

fn date_inner(input: &str, fmt: &DateFormat, zone: &Zone) -> Result<NaiveDate, Reason> {
    let date = match parse_moment(input, fmt)? {
        Moment::Date(d) => d,
        Moment::Local(l) => l.date(),
        Moment::Instant(t) => zone.date_of(t),
    };
    check_year(date, fmt)?;
    Ok(date)
}

/// Parses an instant. Local times (ISO without offset, patterns without `%z`,
/// Excel serials) are interpreted in `zone`: a time in a DST gap is an error,
/// a time in a DST fold takes the earlier instant. A date without time is the
/// first instant of that day in `zone`.
pub fn parse_datetime(
    input: &str,
    fmt: &DateFormat,
    zone: &Zone,
) -> Result<DateTime<Utc>, ParseError> {
    datetime_inner(input, fmt, zone).map_err(|r| ParseError::new(input, fmt.expected(true), r))
}

fn datetime_inner(input: &str, fmt: &DateFormat, zone: &Zone) -> Result<DateTime<Utc>, Reason> {
    match parse_moment(input, fmt)? {
        Moment::Date(d) => {
            check_year(d, fmt)?;
            zone.start_of_day(d)
        }
        Moment::Local(l) => {
            check_year(l.date(), fmt)?;
            zone.resolve(l)
        }
        Moment::Instant(t) => {
            check_year(zone.date_of(t), fmt)?;
            Ok(t)
        }
    }
}

fn check_year(date: NaiveDate, fmt: &DateFormat) -> Result<(), Reason> {
    let y = date.year();
    if (MIN_YEAR..=MAX_YEAR).contains(&y) {
        return Ok(());
    }
    let hint = match fmt {
        DateFormat::UnixSeconds if y > MAX_YEAR => " (milliseconds given as seconds?)",
        DateFormat::UnixMillis if y < 1971 => " (seconds given as milliseconds?)",
        _ => "",
    };
    Err(format!("year {y} is outside the accepted range {MIN_YEAR}–{MAX_YEAR}{hint}").into())
}

/// Checks year bounds, month and day with specific messages.
fn check_ymd(y: i32, m: u32, d: u32) -> Result<NaiveDate, Reason> {
    if !(MIN_YEAR..=MAX_YEAR).contains(&y) {
        return Err(format!("year {y} is outside the accepted range {MIN_YEAR}–{MAX_YEAR}").into());
    }
    if !(1..=12).contains(&m) {
        return Err(format!("month {m} does not exist").into());
    }
    if d == 0 {
        return Err("day 0 does not exist".into());
    }
    match NaiveDate::from_ymd_opt(y, m, d) {
        Some(date) => Ok(date),
        None => {
            let days = days_in_month(y, m);
            Err(format!("{} has {days} days in {y}", MONTHS[m as usize - 1]).into())
        }
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn parse_moment(input: &str, fmt: &DateFormat) -> Result<Moment, Reason> {
    let t = input.trim();
    if t.is_empty() {
        return Err("empty input".into());
    }
    let s = normalize_fullwidth(t);
    match fmt {
        DateFormat::Iso => parse_iso(&s),
        DateFormat::Pattern(p) => parse_pattern(&s, p),
        DateFormat::UnixSeconds => {
            let n = Number::parse(&s).ok_or("expected a whole or decimal number of seconds")?;
            let mut secs = i64::try_from(n.int).map_err(|_| "out of range")?;
            let mut nanos = n.frac_scaled(9) as u32;
            if n.negative {
                secs = -secs;
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
            }
            instant(DateTime::from_timestamp(secs, nanos))
        }
        DateFormat::UnixMillis => {
            let n = Number::parse(&s)
                .filter(|n| n.frac_len == 0)
                .ok_or("expected a whole number of milliseconds")?;
            let ms = i64::try_from(n.int).map_err(|_| "out of range")?;
            instant(DateTime::from_timestamp_millis(if n.negative {
                -ms
            } else {
                ms
            }))
        }
        DateFormat::MsJson => parse_ms_json(&s),
        DateFormat::ExcelSerial | DateFormat::Excel1904 => {
            parse_excel(&s, *fmt == DateFormat::Excel1904)
        }
    }
}

fn instant(t: Option<DateTime<Utc>>) -> Result<Moment, Reason> {
    t.map(Moment::Instant).ok_or_else(|| "out of range".into())
}

/// An unsigned decimal number with an optional sign: `int.frac`.
struct Number {
    negative: bool,
    int: u64,
    /// Up to 18 fraction digits; further digits are dropped.
    frac: u64,
    frac_len: u32,
}

impl Number {
    fn parse(s: &str) -> Option<Number> {
        let (negative, rest) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (int_s, frac_s) = match rest.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (rest, None),
        };
        if int_s.is_empty() || int_s.len() > 18 || !int_s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let int = int_s.parse().ok()?;
        let (mut frac, mut frac_len) = (0u64, 0u32);
        if let Some(f) = frac_s {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            for b in f.bytes().take(18) {
                frac = frac * 10 + u64::from(b - b'0');
                frac_len += 1;
            }
        }
        Some(Number {
            negative,
            int,
            frac,
            frac_len,
        })
    }

    /// The fraction as a whole number of 10^-digits units, truncated.
    fn frac_scaled(&self, digits: u32) -> u64 {
        if self.frac_len <= digits {
            self.frac * 10u64.pow(digits - self.frac_len)
        } else {
            self.frac / 10u64.pow(self.frac_len - digits)
        }
    }

    /// The fraction times `unit`, rounded half up.
    fn frac_of(&self, unit: u128) -> u128 {
        let den = 10u128.pow(self.frac_len);
        (u128::from(self.frac) * unit * 2 + den) / (2 * den)
    }
}

fn parse_ms_json(s: &str) -> Result<Moment, Reason> {
    const SHAPE: &str = "expected /Date(milliseconds)/ or /Date(milliseconds+hhmm)/";
    let inner = s
        .strip_prefix("/Date(")
        .and_then(|r| r.strip_suffix(")/"))
        .or_else(|| {
            s.strip_prefix("\\/Date(")
                .and_then(|r| r.strip_suffix(")\\/"))
        })
        .ok_or(SHAPE)?;
    let split = inner
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == '+' || c == '-')
        .map_or(inner.len(), |(i, _)| i);
    let (ms_s, offset) = inner.split_at(split);
    if !offset.is_empty() && (offset.len() != 5 || parse_offset(offset).is_none()) {
        return Err("invalid offset; expected +hhmm".into());
    }
    let n = Number::parse(ms_s)
        .filter(|n| n.frac_len == 0 && !ms_s.starts_with('+'))
        .ok_or(SHAPE)?;
    let ms = i64::try_from(n.int).map_err(|_| "out of range")?;
    let ms = if n.negative { -ms } else { ms };
    if ms == DOTNET_MIN_MS {
        return Err("this is .NET DateTime.MinValue (0001-01-01), which stands for no date".into());
    }
    instant(DateTime::from_timestamp_millis(ms))
}

fn parse_excel(s: &str, system_1904: bool) -> Result<Moment, Reason> {
    let n = Number::parse(s).ok_or("expected a serial day number like 45000 or 45000.5")?;
    if n.negative && (n.int > 0 || n.frac > 0) {
        return Err("negative serials are not dates in Excel".into());
    }
    if n.int > EXCEL_MAX_SERIAL {
        return Err("serial is after 9999-12-31".into());
    }
    let mut days = n.int;
    let mut ms = n.frac_of(MS_PER_DAY);
    if ms == MS_PER_DAY {
        days += 1;
        ms = 0;
    }
    let date = if system_1904 {
        EXCEL_1904_EPOCH.checked_add_days(chrono::Days::new(days))
    } else {
        match days {
            0 => return Err("serial 0 is Excel's empty date 1900-01-00".into()),
            60 => {
                return Err(
                    "serial 60 is 1900-02-29, which exists only in Excel (1900 was not a leap year)"
                        .into(),
                );
            }
            1..=59 => EXCEL_1900_EPOCH.checked_add_days(chrono::Days::new(days + 1)),
            _ => EXCEL_1900_EPOCH.checked_add_days(chrono::Days::new(days)),
        }
    }
    .ok_or("out of range")?;
    if ms == 0 {
        return Ok(Moment::Date(date));
    }
    let secs = (ms / 1000) as u32;
    let time = NaiveTime::from_num_seconds_from_midnight_opt(secs, (ms % 1000) as u32 * 1_000_000)
        .ok_or("out of range")?;
    Ok(Moment::Local(date.and_time(time)))
}

/// Byte cursor for the ISO parser.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let chunk = self.b.get(self.i..self.i + n)?;
        let mut v = 0;
        for &c in chunk {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        self.i += n;
        Some(v)
    }
    fn eat(&mut self, c: u8) -> bool {
        let hit = self.b.get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn done(&self) -> bool {
        self.i >= self.b.len()
    }
}

fn parse_iso(s: &str) -> Result<Moment, Reason> {
    const SHAPE: &str =
        "expected an ISO 8601 date like 2026-11-28 or date-time like 2026-11-28T10:00:00Z";
    let mut c = Cursor {
        b: s.as_bytes(),
        i: 0,
    };
    fn field(c: &mut Cursor, n: usize, sep: Option<u8>) -> Result<u32, Reason> {
        if sep.is_some_and(|sep| !c.eat(sep)) {
            return Err(SHAPE.into());
        }
        c.digits(n).ok_or_else(|| SHAPE.into())
    }
    let y = field(&mut c, 4, None)?;
    let m = field(&mut c, 2, Some(b'-'))?;
    let d = field(&mut c, 2, Some(b'-'))?;
    let date = check_ymd(y as i32, m, d)?;
    if c.done() {
        return Ok(Moment::Date(date));
    }
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        return Err(SHAPE.into());
    }
    let h = field(&mut c, 2, None)?;
    let mi = field(&mut c, 2, Some(b':'))?;
    let mut sec = 0;
    let mut nano = 0;
    if c.peek() == Some(b':') {
        sec = field(&mut c, 2, Some(b':'))?;
        if c.eat(b'.') || c.eat(b',') {
            let mut n = 0;
            while let Some(b) = c.peek().filter(u8::is_ascii_digit) {
                if n < 9 {
                    nano = nano * 10 + u32::from(b - b'0');
                }
                n += 1;
                c.i += 1;
            }
            if n == 0 {
                return Err(SHAPE.into());
            }
            nano *= 10u32.pow(9u32.saturating_sub(n));
        }
    }
    if h > 23 {
        return Err(format!("hour {h} is out of range").into());
    }
    if mi > 59 {
        return Err(format!("minute {mi} is out of range").into());
    }
    if sec > 59 {
        return Err(format!("second {sec} is out of range (leap seconds are not accepted)").into());
    }
    let time = NaiveTime::from_hms_nano_opt(h, mi, sec, nano).ok_or(SHAPE)?;
    let local = date.and_time(time);
    if c.done() {
        return Ok(Moment::Local(local));
    }
    let rest = &s[c.i..];
    let offset = match rest {
        "Z" | "z" => FixedOffset::east_opt(0),
        _ => parse_offset(rest),
    }
    .ok_or("invalid UTC offset; expected Z, +hh:mm, +hhmm or +hh")?;
    let t = offset
        .from_local_datetime(&local)
        .single()
        .ok_or("out of range")?;
    Ok(Moment::Instant(t.to_utc()))
}

fn parse_pattern(s: &str, p: &DatePattern) -> Result<Moment, Reason> {
    let mut parsed = Parsed::new();
    if let Err(e) = chrono::format::parse(&mut parsed, s, p.items.iter()) {
        return Err(match e.kind() {
            ParseErrorKind::OutOfRange => {
                "a field is out of range (month 1–12, day 1–31, hour 0–23, minute 0–59)".into()
            }
            ParseErrorKind::TooShort => format!("ends early for pattern {}", p.source).into(),
            ParseErrorKind::TooLong => {
                format!("has extra characters after pattern {}", p.source).into()
            }
            ParseErrorKind::Impossible => "contradictory fields".into(),
            _ => format!("does not match pattern {}", p.source).into(),
        });
    }
    if let (Some(y), Some(m), Some(d)) = (parsed.year(), parsed.month(), parsed.day()) {
        check_ymd(y, m, d)?;
    }
    let date = parsed
        .to_naive_date()
        .map_err(|_| "fields do not form a valid date (e.g. the weekday does not match)")?;
    if parsed.offset().is_some() {
        let t = parsed.to_datetime().map_err(|_| "invalid date-time")?;
        return Ok(Moment::Instant(t.to_utc()));
    }
    if parsed.hour_div_12().is_some() || parsed.hour_mod_12().is_some() {
        let time = parsed
            .to_naive_time()
            .map_err(|_| "incomplete or invalid time of day")?;
        return Ok(Moment::Local(date.and_time(time)));
    }
    Ok(Moment::Date(date))
}

/// Formats a date for outbound mappings. Instant formats (Unix, .NET JSON)
/// write midnight UTC of the date; `iso` writes `2026-11-28`; patterns with
/// time fields write midnight (offset fields `+0000`); Excel formats write
/// the serial day number (1900 system: dates before 1900-01-01 give 0 or less).
pub fn format_date(date: NaiveDate, fmt: &DateFormat) -> String {
    let midnight = date.and_time(NaiveTime::MIN).and_utc();
    match fmt {
        DateFormat::Iso => date.to_string(),
        DateFormat::Pattern(p) => write_items(&midnight, &p.items),
        DateFormat::UnixSeconds => midnight.timestamp().to_string(),
        DateFormat::UnixMillis => midnight.timestamp_millis().to_string(),
        DateFormat::MsJson => format!("/Date({}+0000)/", midnight.timestamp_millis()),
        DateFormat::ExcelSerial | DateFormat::Excel1904 => {
            excel_days(date, *fmt == DateFormat::Excel1904).to_string()
        }
    }
}

fn excel_days(date: NaiveDate, system_1904: bool) -> i64 {
    if system_1904 {
        (date - EXCEL_1904_EPOCH).num_days()
    } else {
        let days = (date - EXCEL_1900_EPOCH).num_days();
        if date < EXCEL_1900_LEAP_BUG {
            days - 1
        } else {
            days
        }
    }
}

/// Formats an instant for outbound mappings, in `zone` where the format has
/// local fields: `iso` writes RFC 3339 with the zone's offset (`Z` for zero)
/// and fractional seconds only when present; `ms_json` writes UTC milliseconds
/// with the zone's offset as `±hhmm`; Excel formats write the local serial
/// with up to 10 fraction digits; Unix formats ignore the zone (seconds are
/// truncated toward the past).
pub fn format_datetime(dt: DateTime<Utc>, fmt: &DateFormat, zone: &Zone) -> String {
    let zone = if zone.representable(dt) {
        zone
    } else {
        &Zone::UTC
    };
    match fmt {
        DateFormat::Iso => match zone {
            Zone::Fixed(o) => dt
                .with_timezone(o)
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            Zone::Iana(tz) => dt
                .with_timezone(tz)
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        },
        DateFormat::Pattern(p) => match zone {
            Zone::Fixed(o) => write_items(&dt.with_timezone(o), &p.items),
            Zone::Iana(tz) => write_items(&dt.with_timezone(tz), &p.items),
        },
        DateFormat::UnixSeconds => dt.timestamp().to_string(),
        DateFormat::UnixMillis => dt.timestamp_millis().to_string(),
        DateFormat::MsJson => {
            let off = zone.offset_at(dt).local_minus_utc();
            let sign = if off < 0 { '-' } else { '+' };
            let off = off.unsigned_abs() / 60;
            format!(
                "/Date({}{sign}{:02}{:02})/",
                dt.timestamp_millis(),
                off / 60,
                off % 60
            )
        }
        DateFormat::ExcelSerial | DateFormat::Excel1904 => {
            let local = zone.local(dt);
            let days = excel_days(local.date(), *fmt == DateFormat::Excel1904);
            let ms = i64::from(local.num_seconds_from_midnight()) * 1000
                + i64::from(local.nanosecond().min(999_999_999) / 1_000_000);
            if ms == 0 {
                return days.to_string();
            }
            Decimal::from(ms)
                .checked_div(Decimal::from(MS_PER_DAY as i64))
                .map(|f| f.round_dp(10))
                .and_then(|f| f.checked_add(Decimal::from(days)))
                .map(|v| v.normalize().to_string())
                .unwrap_or_else(|| days.to_string())
        }
    }
}

fn write_items<T: TimeZone>(dt: &DateTime<T>, items: &[Item<'static>]) -> String
where
    T::Offset: fmt::Display,
{
    let mut s = String::new();
    if write!(s, "{}", dt.format_with_items(items.iter())).is_err() {
        s.clear();
        s.push_str(&dt.to_rfc3339());
    }
    s
}
