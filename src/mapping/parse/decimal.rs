//! Amounts: locale-aware decimal parsing and formatting, minor units, rounding.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};

use super::{ParseError, Reason, deserialize_from_str, normalize_fullwidth, serialize_display};

const NBSP: char = '\u{a0}';
const NNBSP: char = '\u{202f}';
/// Largest mantissa a `Decimal` holds: 2^96 - 1.
const MAX_MANTISSA: u128 = (1u128 << 96) - 1;
/// Largest scale a `Decimal` holds.
const MAX_SCALE: u32 = 28;

/// How digits left of the decimal separator are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grouping {
    /// No group separators allowed.
    None,
    /// Groups of three: `1,234,567`.
    Thousands,
    /// Indian lakh/crore grouping: `12,34,567`.
    Indian,
}

/// How a textual amount is written: decimal separator, group separators and
/// grouping rule. Build with the named constructors or [`FromStr`]
/// (`plain`, `en`, `de`, `fr`, `ch`, `in`, `auto`, `auto_en`, `auto_de`).
///
/// `auto` decides per value: if both `.` and `,` occur, the last one is the
/// decimal separator; a separator occurring more than once is a group
/// separator; a single separator is the decimal separator unless it is
/// *ambiguous* — exactly 3 digits after it and 1–3 digits (not starting with
/// `0`) before it, like `1,234` — which is an error unless `prefer` names the
/// decimal separator to assume (`auto_en` prefers `.`, `auto_de` prefers `,`).
/// Spaces and apostrophes are always group separators in `auto`, and either
/// thousands or Indian grouping is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecimalFormat {
    /// Name used in messages (`en`, `de`, …, `custom`).
    pub name: &'static str,
    /// Decimal separator (ignored by `auto`).
    pub decimal: char,
    /// Accepted group separators; the first is used by [`format_decimal`].
    pub groups: &'static [char],
    /// Grouping rule for the integer part.
    pub grouping: Grouping,
    /// Decide the separators per value (see above).
    pub auto: bool,
    /// For `auto`: the decimal separator to assume for ambiguous values.
    pub prefer: Option<char>,
    /// Accept currency symbols and ISO codes before or after the number.
    pub allow_currency: bool,
}

const GROUPS_COMMA: &[char] = &[','];
const GROUPS_DOT: &[char] = &['.'];
const GROUPS_FR: &[char] = &[NBSP, NNBSP, ' '];
const GROUPS_CH: &[char] = &['\'', '’'];
const AUTO_DOT_DECIMAL: &[char] = &[',', ' ', NBSP, NNBSP, '\'', '’'];
const AUTO_COMMA_DECIMAL: &[char] = &['.', ' ', NBSP, NNBSP, '\'', '’'];

impl DecimalFormat {
    /// `-1234.56`: `.` decimal, no grouping.
    pub const fn plain() -> Self {
        Self::custom('.', &[], Grouping::None).named("plain")
    }
    /// `1,234.56`.
    pub const fn en() -> Self {
        Self::custom('.', GROUPS_COMMA, Grouping::Thousands).named("en")
    }
    /// `1.234,56`.
    pub const fn de() -> Self {
        Self::custom(',', GROUPS_DOT, Grouping::Thousands).named("de")
    }
    /// `1 234,56` with NBSP (used when formatting), narrow NBSP or space.
    pub const fn fr() -> Self {
        Self::custom(',', GROUPS_FR, Grouping::Thousands).named("fr")
    }
    /// `1'234.56` or `1’234.56`.
    pub const fn ch() -> Self {
        Self::custom('.', GROUPS_CH, Grouping::Thousands).named("ch")
    }
    /// `1,23,456.78` (Indian grouping); named `in`.
    pub const fn indian() -> Self {
        Self::custom('.', GROUPS_COMMA, Grouping::Indian).named("in")
    }
    /// Decides separators per value; ambiguous values are errors.
    /// Formats like `plain`.
    pub const fn auto() -> Self {
        let mut f = Self::plain().named("auto");
        f.auto = true;
        f
    }
    /// Any other combination; named `custom` in messages.
    pub const fn custom(decimal: char, groups: &'static [char], grouping: Grouping) -> Self {
        DecimalFormat {
            name: "custom",
            decimal,
            groups,
            grouping,
            auto: false,
            prefer: None,
            allow_currency: true,
        }
    }
    /// Sets the name used in messages.
    pub const fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
    /// Sets whether currency symbols/codes are accepted.
    pub const fn with_currency(mut self, allow: bool) -> Self {
        self.allow_currency = allow;
        self
    }
    /// For `auto`: the decimal separator (`.` or `,`) assumed for ambiguous values.
    pub const fn with_prefer(mut self, decimal: char) -> Self {
        self.prefer = Some(decimal);
        self
    }

    fn expected(&self) -> Cow<'static, str> {
        if self.auto {
            return Cow::Borrowed("an amount");
        }
        let sample = if self.grouping == Grouping::Indian {
            Decimal::new(12345678, 2)
        } else {
            Decimal::new(123456, 2)
        };
        Cow::Owned(format!(
            "an amount in format {} ({})",
            self.name,
            format_decimal(sample, self)
        ))
    }
}

impl Default for DecimalFormat {
    fn default() -> Self {
        Self::plain()
    }
}

impl FromStr for DecimalFormat {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "plain" => Self::plain(),
            "en" => Self::en(),
            "de" => Self::de(),
            "fr" => Self::fr(),
            "ch" => Self::ch(),
            "in" => Self::indian(),
            "auto" => Self::auto(),
            "auto_en" => Self::auto().with_prefer('.').named("auto_en"),
            "auto_de" => Self::auto().with_prefer(',').named("auto_de"),
            _ => {
                return Err(ParseError::new(
                    s,
                    "a decimal format",
                    "expected plain, en, de, fr, ch, in, auto, auto_en or auto_de",
                ));
            }
        })
    }
}

impl fmt::Display for DecimalFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

deserialize_from_str!(DecimalFormat, "a decimal format name");

/// Multi-character and symbol currencies, longest first where prefixes overlap.
const CURRENCY_SYMBOLS: &[&str] = &[
    "US$", "USD$", "AU$", "A$", "CA$", "C$", "NZ$", "HK$", "S$", "NT$", "R$", "MX$", "CN¥", "JP¥",
    "RMB¥", "SFr.", "Fr.", "Rs.", "Rs", "kr.", "kr", "zł", "Kč", "Ft", "лв", "руб.", "$", "€", "£",
    "¥", "￥", "元", "円", "₹", "₩", "₽", "₺", "₪", "₫", "฿", "₱", "₦", "₴", "₸", "₼", "₾", "₲",
    "₡", "₵", "৳", "﷼",
];

/// ISO 4217 codes (plus the common `RMB` and `NTD`), sorted for binary search.
const CURRENCY_CODES: &[[u8; 3]] = &[
    *b"AED", *b"AFN", *b"ALL", *b"AMD", *b"ANG", *b"AOA", *b"ARS", *b"AUD", *b"AWG", *b"AZN",
    *b"BAM", *b"BBD", *b"BDT", *b"BGN", *b"BHD", *b"BIF", *b"BMD", *b"BND", *b"BOB", *b"BRL",
    *b"BSD", *b"BTN", *b"BWP", *b"BYN", *b"BZD", *b"CAD", *b"CDF", *b"CHF", *b"CLP", *b"CNH",
    *b"CNY", *b"COP", *b"CRC", *b"CUC", *b"CUP", *b"CVE", *b"CZK", *b"DJF", *b"DKK", *b"DOP",
    *b"DZD", *b"EGP", *b"ERN", *b"ETB", *b"EUR", *b"FJD", *b"FKP", *b"GBP", *b"GEL", *b"GHS",
    *b"GIP", *b"GMD", *b"GNF", *b"GTQ", *b"GYD", *b"HKD", *b"HNL", *b"HRK", *b"HTG", *b"HUF",
    *b"IDR", *b"ILS", *b"INR", *b"IQD", *b"IRR", *b"ISK", *b"JMD", *b"JOD", *b"JPY", *b"KES",
    *b"KGS", *b"KHR", *b"KMF", *b"KPW", *b"KRW", *b"KWD", *b"KYD", *b"KZT", *b"LAK", *b"LBP",
    *b"LKR", *b"LRD", *b"LSL", *b"LYD", *b"MAD", *b"MDL", *b"MGA", *b"MKD", *b"MMK", *b"MNT",
    *b"MOP", *b"MRU", *b"MUR", *b"MVR", *b"MWK", *b"MXN", *b"MYR", *b"MZN", *b"NAD", *b"NGN",
    *b"NIO", *b"NOK", *b"NPR", *b"NTD", *b"NZD", *b"OMR", *b"PAB", *b"PEN", *b"PGK", *b"PHP",
    *b"PKR", *b"PLN", *b"PYG", *b"QAR", *b"RMB", *b"RON", *b"RSD", *b"RUB", *b"RWF", *b"SAR",
    *b"SBD", *b"SCR", *b"SDG", *b"SEK", *b"SGD", *b"SHP", *b"SLE", *b"SLL", *b"SOS", *b"SRD",
    *b"SSP", *b"STN", *b"SVC", *b"SYP", *b"SZL", *b"THB", *b"TJS", *b"TMT", *b"TND", *b"TOP",
    *b"TRY", *b"TTD", *b"TWD", *b"TZS", *b"UAH", *b"UGX", *b"USD", *b"UYU", *b"UZS", *b"VES",
    *b"VND", *b"VUV", *b"WST", *b"XAF", *b"XCD", *b"XOF", *b"XPF", *b"YER", *b"ZAR", *b"ZMW",
    *b"ZWL",
];

#[cfg(test)]
pub(super) fn currency_codes_sorted() -> bool {
    CURRENCY_CODES.windows(2).all(|w| w[0] < w[1])
}

fn is_code(word: &[u8]) -> bool {
    match word {
        [a, b, c] => CURRENCY_CODES
            .binary_search(&[
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
                c.to_ascii_uppercase(),
            ])
            .is_ok(),
        _ => false,
    }
}

/// Length in bytes of a currency symbol or code at the start of `s`.
fn currency_prefix(s: &str) -> Option<usize> {
    let first = *s.as_bytes().first()?;
    for sym in CURRENCY_SYMBOLS
        .iter()
        .filter(|sym| sym.as_bytes()[0] == first)
    {
        if let Some(rest) = s.strip_prefix(sym) {
            let ends_in_letter = sym.chars().next_back().is_some_and(char::is_alphabetic);
            if !(ends_in_letter && rest.chars().next().is_some_and(char::is_alphabetic)) {
                return Some(sym.len());
            }
        }
    }
    let word = s.bytes().take_while(u8::is_ascii_alphabetic).count();
    is_code(&s.as_bytes()[..word]).then_some(word)
}

/// Length in bytes of a currency symbol or code at the end of `s`.
fn currency_suffix(s: &str) -> Option<usize> {
    let last = *s.as_bytes().last()?;
    for sym in CURRENCY_SYMBOLS
        .iter()
        .filter(|sym| sym.as_bytes()[sym.len() - 1] == last)
    {
        if let Some(rest) = s.strip_suffix(sym) {
            let starts_with_letter = sym.chars().next().is_some_and(char::is_alphabetic);
            if !(starts_with_letter && rest.chars().next_back().is_some_and(char::is_alphabetic)) {
                return Some(sym.len());
            }
        }
    }
    let b = s.as_bytes();
    let word = b
        .iter()
        .rev()
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    is_code(&b[b.len() - word..]).then_some(word)
}

/// Parses an amount written in `fmt` (see [`DecimalFormat`]).
///
/// Trims whitespace; accepts a leading `+`/`-` (also `−`), a trailing `-`
/// (`123.45-`), accounting parentheses `(123.45)`, one currency symbol or ISO
/// code before or after the number (unless `fmt.allow_currency` is false), and
/// full-width digits and punctuation. Keeps the scale as written (`12.50` has
/// scale 2). Rejects empty input, signs without digits, repeated decimal
/// separators, misplaced group separators, letters, exponents, values whose
/// digits do not fit a `Decimal` exactly (more than 28–29 significant digits,
/// above 79228162514264337593543950335) and more than 28 decimal places.
pub fn parse_decimal(input: &str, fmt: &DecimalFormat) -> Result<Decimal, ParseError> {
    parse_decimal_inner(input, fmt).map_err(|reason| ParseError::new(input, fmt.expected(), reason))
}

fn parse_decimal_inner(input: &str, fmt: &DecimalFormat) -> Result<Decimal, Reason> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err("empty input".into());
    }
    let s = normalize_fullwidth(trimmed);
    let (core, negative) = strip_affixes(&s, fmt)?;
    if core.is_empty() {
        return Err("no digits".into());
    }
    let (mantissa, scale) = if fmt.auto {
        parse_auto(core, fmt.prefer)?
    } else {
        let rule = match fmt.grouping {
            Grouping::None => GroupRule::None,
            Grouping::Thousands => GroupRule::Thousands,
            Grouping::Indian => GroupRule::Indian,
        };
        parse_core(core, fmt.decimal, fmt.groups, rule)?
    };
    Ok(Decimal::from_parts(
        mantissa as u32,
        (mantissa >> 32) as u32,
        (mantissa >> 64) as u32,
        negative && mantissa != 0,
        scale,
    ))
}

/// Strips whitespace, signs, parentheses and a currency around the number.
/// Returns the numeric core and whether the value is negative.
fn strip_affixes<'a>(s: &'a str, fmt: &DecimalFormat) -> Result<(&'a str, bool), Reason> {
    let mut sign: Option<bool> = None; // Some(true) = negative
    let mut open = false;
    let mut close = false;
    let mut currency = false;
    let mut take_currency = |found: usize| -> Result<usize, Reason> {
        if !fmt.allow_currency {
            return Err(format!("currency symbols are not allowed in format {}", fmt.name).into());
        }
        if currency {
            return Err("more than one currency".into());
        }
        currency = true;
        Ok(found)
    };
    let mut set_sign = |neg: bool| -> Result<(), Reason> {
        if sign.is_some() {
            return Err("more than one sign".into());
        }
        sign = Some(neg);
        Ok(())
    };

    let mut start = 0;
    while let Some(c) = s[start..].chars().next() {
        if c.is_ascii_digit() {
            break;
        }
        if c.is_whitespace() {
            start += c.len_utf8();
            continue;
        }
        match c {
            '+' | '-' | '−' => {
                set_sign(c != '+')?;
                start += c.len_utf8();
                continue;
            }
            '(' if !open => {
                open = true;
                start += 1;
                continue;
            }
            _ => {}
        }
        match currency_prefix(&s[start..]) {
            Some(n) => start += take_currency(n)?,
            None => break,
        }
    }

    let mut end = s.len();
    while let Some(c) = s[start..end].chars().next_back() {
        if c.is_ascii_digit() {
            break;
        }
        if c.is_whitespace() {
            end -= c.len_utf8();
            continue;
        }
        match c {
            '-' | '−' => {
                set_sign(true)?;
                end -= c.len_utf8();
                continue;
            }
            ')' if open && !close => {
                close = true;
                end -= 1;
                continue;
            }
            ')' => return Err("unbalanced parentheses".into()),
            _ => {}
        }
        match currency_suffix(&s[start..end]) {
            Some(n) => end -= take_currency(n)?,
            None => break,
        }
    }
    if open != close {
        return Err("unbalanced parentheses".into());
    }
    if open && sign.is_some() {
        return Err("both a sign and accounting parentheses".into());
    }
    Ok((&s[start..end], open || sign == Some(true)))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GroupRule {
    None,
    Thousands,
    Indian,
    Either,
}

/// `auto`: picks the decimal separator for this value, then parses.
fn parse_auto(core: &str, prefer: Option<char>) -> Result<(u128, u32), Reason> {
    let dot = core.rfind('.');
    let comma = core.rfind(',');
    let dot_decimal = match (dot, comma) {
        (Some(d), Some(c)) => d > c,
        (None, None) => true,
        (Some(p), None) | (None, Some(p)) => {
            let sep = core.as_bytes()[p];
            let repeated = core.bytes().filter(|&b| b == sep).count() > 1;
            let before = &core.as_bytes()[..p];
            let after = &core.as_bytes()[p + 1..];
            let ambiguous = !repeated
                && after.len() == 3
                && after.iter().all(u8::is_ascii_digit)
                && (1..=3).contains(&before.len())
                && before.iter().all(u8::is_ascii_digit)
                && before[0] != b'0';
            let sep_is_decimal = if repeated {
                false
            } else if ambiguous {
                match prefer {
                    Some(p) => p == sep as char,
                    None => {
                        return Err(format!(
                            "ambiguous: '{}' may be a decimal or a thousands separator \
                             (use format en or de, or auto_en / auto_de)",
                            sep as char
                        )
                        .into());
                    }
                }
            } else {
                true
            };
            (sep == b'.') == sep_is_decimal
        }
    };
    if dot_decimal {
        parse_core(core, '.', AUTO_DOT_DECIMAL, GroupRule::Either)
    } else {
        parse_core(core, ',', AUTO_COMMA_DECIMAL, GroupRule::Either)
    }
}

/// Treats the space-like and apostrophe-like separators as one kind each.
fn group_class(c: char) -> char {
    match c {
        NBSP | NNBSP => ' ',
        '’' => '\'',
        _ => c,
    }
}

/// Parses digits, one decimal separator and group separators into
/// (mantissa, scale), validating group positions.
fn parse_core(
    core: &str,
    decimal: char,
    groups: &[char],
    rule: GroupRule,
) -> Result<(u128, u32), Reason> {
    let mut mantissa: u128 = 0;
    let mut scale: u32 = 0;
    let mut any_digit = false;
    let mut in_fraction = false;
    let mut run: u32 = 0; // digits since the last separator
    let mut first_group: Option<u32> = None;
    let mut middles_3 = true;
    let mut middles_2 = true;
    let mut class: Option<char> = None;
    let mut after_group = false;

    let mut chars = core.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            mantissa = mantissa * 10 + u128::from(c as u8 - b'0');
            if mantissa > MAX_MANTISSA {
                return Err("more significant digits than a decimal holds (28, some 29)".into());
            }
            if in_fraction {
                scale += 1;
                if scale > MAX_SCALE {
                    return Err("more than 28 decimal places".into());
                }
            } else {
                run += 1;
            }
            any_digit = true;
            after_group = false;
        } else if c == decimal {
            if in_fraction {
                return Err("two decimal separators".into());
            }
            if after_group {
                return Err("group separator directly before the decimal separator".into());
            }
            check_groups(first_group, middles_3, middles_2, run, rule)?;
            in_fraction = true;
        } else if groups.contains(&c) {
            if in_fraction {
                return Err("group separator after the decimal separator".into());
            }
            if run == 0 {
                return Err("misplaced group separator".into());
            }
            let k = group_class(c);
            if *class.get_or_insert(k) != k {
                return Err("mixed group separators".into());
            }
            match first_group {
                None => first_group = Some(run),
                Some(_) => {
                    middles_3 &= run == 3;
                    middles_2 &= run == 2;
                }
            }
            run = 0;
            after_group = true;
        } else if matches!(c, 'e' | 'E')
            && any_digit
            && chars
                .peek()
                .is_some_and(|n| n.is_ascii_digit() || matches!(n, '+' | '-'))
        {
            return Err("exponent notation is not accepted".into());
        } else if let Some(letter) = core.chars().find(|c| c.is_alphabetic()) {
            return Err(format!("unexpected character {letter:?}").into());
        } else if matches!(c, '.' | ',' | '\'' | '’' | ' ' | NBSP | NNBSP) {
            return Err(format!("unexpected separator {c:?} for this format").into());
        } else {
            return Err(format!("unexpected character {c:?}").into());
        }
    }
    if !any_digit {
        return Err("no digits".into());
    }
    if after_group {
        return Err("misplaced group separator".into());
    }
    if !in_fraction {
        check_groups(first_group, middles_3, middles_2, run, rule)?;
    }
    Ok((mantissa, scale))
}

fn check_groups(
    first: Option<u32>,
    middles_3: bool,
    middles_2: bool,
    last: u32,
    rule: GroupRule,
) -> Result<(), Reason> {
    let Some(first) = first else { return Ok(()) };
    let thousands = (1..=3).contains(&first) && middles_3 && last == 3;
    let indian = (1..=2).contains(&first) && middles_2 && last == 3;
    let ok = match rule {
        GroupRule::None => true,
        GroupRule::Thousands => thousands,
        GroupRule::Indian => indian,
        GroupRule::Either => thousands || indian,
    };
    if ok {
        Ok(())
    } else if rule == GroupRule::Indian {
        Err("digit groups do not follow the Indian pattern (12,34,567)".into())
    } else {
        Err("digit groups must have 3 digits (1,234,567)".into())
    }
}

/// Formats `value` in `fmt` with its scale as is, grouping the integer part
/// (`auto` formats like `plain`; the first of `fmt.groups` is the separator).
/// Negative zero is written `0`. [`parse_decimal`] reads the result back.
pub fn format_decimal(value: Decimal, fmt: &DecimalFormat) -> String {
    let mantissa = value.mantissa().unsigned_abs();
    let scale = value.scale() as usize;
    let mut buf = [b'0'; 64];
    let mut n = mantissa;
    let mut len = 0;
    while n > 0 {
        buf[63 - len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
    }
    let len = len.max(scale + 1); // buffer is pre-filled with '0'
    let digits = &buf[64 - len..];
    let (int, frac) = digits.split_at(len - scale);

    let (decimal, group, rule) = if fmt.auto {
        ('.', None, Grouping::None)
    } else {
        (fmt.decimal, fmt.groups.first().copied(), fmt.grouping)
    };
    let mut out = String::with_capacity(len + len / 2 + 2);
    if value.is_sign_negative() && mantissa != 0 {
        out.push('-');
    }
    for (i, &d) in int.iter().enumerate() {
        let remaining = int.len() - i;
        if let Some(g) = group.filter(|_| i > 0) {
            let boundary = match rule {
                Grouping::None => false,
                Grouping::Thousands => remaining % 3 == 0,
                Grouping::Indian => remaining == 3 || (remaining > 3 && (remaining - 3) % 2 == 0),
            };
            if boundary {
                out.push(g);
            }
        }
        out.push(d as char);
    }
    if scale > 0 {
        out.push(decimal);
        out.extend(frac.iter().map(|&d| d as char));
    }
    out
}

/// `units` minor units at `scale` (`12345`, 2 → `123.45`). Exact for scale
/// ≤ 28; a larger scale yields the value rounded (half-even) to 28 places.
pub fn from_minor_units(units: i64, scale: u32) -> Decimal {
    if scale <= MAX_SCALE {
        return Decimal::new(units, scale);
    }
    let excess = scale - MAX_SCALE;
    let mut divisor = Decimal::ONE;
    for _ in 0..excess {
        match divisor.checked_mul(Decimal::TEN) {
            Some(d) => divisor = d,
            // |units| < 10^19, so the value is below 10^-37: rounds to zero.
            None => return Decimal::ZERO,
        }
    }
    Decimal::new(units, MAX_SCALE)
        .checked_div(divisor)
        .map(|d| d.round_dp(MAX_SCALE))
        .unwrap_or(Decimal::ZERO)
}

/// Parses a whole number of minor units (`"12345"`, 2 → `123.45`); a sign,
/// whitespace and full-width digits are accepted, separators and currencies
/// are not.
pub fn parse_minor_units(input: &str, scale: u32) -> Result<Decimal, ParseError> {
    const FMT: DecimalFormat = DecimalFormat::plain().with_currency(false);
    let err = |reason: &'static str| {
        ParseError::new(
            input,
            format!("an amount in minor units (scale {scale})"),
            reason,
        )
    };
    let mut d = parse_decimal_inner(input, &FMT).map_err(|reason| {
        ParseError::new(
            input,
            format!("an amount in minor units (scale {scale})"),
            reason,
        )
    })?;
    if d.scale() != 0 {
        return Err(err("minor units must be a whole number"));
    }
    if d.set_scale(scale).is_err() {
        return Err(err("scale over 28"));
    }
    Ok(d)
}

/// Rounding rules; names for [`FromStr`]: `half_up`, `half_even`, `down`,
/// `up`, `floor`, `ceiling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RoundingMode {
    /// Half away from zero (commercial rounding): 2.5 → 3, -2.5 → -3.
    #[default]
    HalfUp,
    /// Half to even (banker's rounding): 2.5 → 2, 3.5 → 4.
    HalfEven,
    /// Toward zero (truncate).
    Down,
    /// Away from zero.
    Up,
    /// Toward negative infinity.
    Floor,
    /// Toward positive infinity.
    Ceiling,
}

impl RoundingMode {
    fn strategy(self) -> RoundingStrategy {
        match self {
            RoundingMode::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
            RoundingMode::Down => RoundingStrategy::ToZero,
            RoundingMode::Up => RoundingStrategy::AwayFromZero,
            RoundingMode::Floor => RoundingStrategy::ToNegativeInfinity,
            RoundingMode::Ceiling => RoundingStrategy::ToPositiveInfinity,
        }
    }

    /// The name accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            RoundingMode::HalfUp => "half_up",
            RoundingMode::HalfEven => "half_even",
            RoundingMode::Down => "down",
            RoundingMode::Up => "up",
            RoundingMode::Floor => "floor",
            RoundingMode::Ceiling => "ceiling",
        }
    }
}

impl FromStr for RoundingMode {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Ok(
            match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
                "half_up" => RoundingMode::HalfUp,
                "half_even" => RoundingMode::HalfEven,
                "down" => RoundingMode::Down,
                "up" => RoundingMode::Up,
                "floor" => RoundingMode::Floor,
                "ceiling" => RoundingMode::Ceiling,
                _ => {
                    return Err(ParseError::new(
                        s,
                        "a rounding mode",
                        "expected half_up, half_even, down, up, floor or ceiling",
                    ));
                }
            },
        )
    }
}

impl fmt::Display for RoundingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

deserialize_from_str!(RoundingMode, "a rounding mode");
serialize_display!(RoundingMode);

/// Rounds `value` to `scale` decimal places (at most 28) with `mode`; the
/// result has exactly `scale` places (`round(12.5, 2, _)` = `12.50`) unless
/// that many digits do not fit a `Decimal`.
pub fn round(value: Decimal, scale: u32, mode: RoundingMode) -> Decimal {
    let scale = scale.min(MAX_SCALE);
    let mut r = value.round_dp_with_strategy(scale, mode.strategy());
    if r.scale() < scale {
        r.rescale(scale);
    }
    r
}
