//! Contact data: e-mail addresses and phone numbers.

use super::{ParseError, Reason, normalize_fullwidth};

/// Normalizes an e-mail address to `local@domain`, all lower-case.
///
/// Trims, folds full-width characters (`＠`), unwraps `Name <a@b.c>` and `mailto:` (dropping any `?query`), then
/// checks: exactly one `@`; a local part of 1–64 characters from the RFC 5322
/// atom set (or non-ASCII) with no leading, trailing or doubled dot; a domain
/// of at most 253 characters with a dot, labels of 1–63 letters, digits or
/// hyphens (not at the ends) or non-ASCII characters (IDN is kept as written,
/// not punycoded), and a non-numeric top-level label; no whitespace. The local
/// part is lower-cased too: nearly all mail systems and CRMs compare it
/// case-insensitively, and deduplication needs one spelling. Quoted local
/// parts and address literals (`a@[1.2.3.4]`) are rejected.
pub fn normalize_email(input: &str) -> Result<String, ParseError> {
    email_inner(input).map_err(|r| ParseError::new(input, "an e-mail address", r))
}

fn email_inner(input: &str) -> Result<String, Reason> {
    let normalized = normalize_fullwidth(input.trim());
    let mut s: &str = &normalized;
    if s.is_empty() {
        return Err("empty input".into());
    }
    if let Some(body) = s.strip_suffix('>') {
        let open = body.rfind('<').ok_or("unbalanced angle brackets")?;
        s = body[open + 1..].trim();
    } else if s.contains(['<', '>']) {
        return Err("unbalanced angle brackets".into());
    }
    if s.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("mailto:"))
    {
        s = &s[7..];
        if let Some(q) = s.find('?') {
            s = &s[..q];
        }
        s = s.trim();
    }
    if s.is_empty() {
        return Err("empty address".into());
    }
    if s.chars().any(char::is_whitespace) {
        return Err("contains whitespace".into());
    }
    if s.len() > 254 {
        return Err("longer than 254 characters".into());
    }
    let (local, domain) = s.split_once('@').ok_or("no @")?;
    if domain.contains('@') {
        return Err("more than one @".into());
    }
    if local.is_empty() {
        return Err("empty local part".into());
    }
    if local.chars().count() > 64 {
        return Err("local part longer than 64 characters".into());
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("misplaced dot in the local part".into());
    }
    if let Some(c) = local.chars().find(|&c| {
        !(c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) || !c.is_ascii())
    }) {
        return Err(format!("character {c:?} is not allowed in the local part").into());
    }
    check_domain(domain)?;
    let mut out = String::with_capacity(s.len());
    for part in [local, "@", domain] {
        if part.is_ascii() {
            out.extend(part.chars().map(|c| c.to_ascii_lowercase()));
        } else {
            out.extend(part.chars().flat_map(char::to_lowercase));
        }
    }
    Ok(out)
}

fn check_domain(domain: &str) -> Result<(), Reason> {
    if domain.is_empty() {
        return Err("empty domain".into());
    }
    if domain.len() > 253 {
        return Err("domain longer than 253 characters".into());
    }
    if !domain.contains('.') {
        return Err("domain has no dot".into());
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("empty label in the domain".into());
        }
        if label.len() > 63 {
            return Err("domain label longer than 63 characters".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("domain label starts or ends with a hyphen".into());
        }
        if let Some(c) = label
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii()))
        {
            return Err(format!("character {c:?} is not allowed in the domain").into());
        }
    }
    if domain
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("numeric top-level domain (address literals are not accepted)".into());
    }
    Ok(())
}

/// E.164 numbers have at most 15 digits; fewer than 8 is treated as junk.
const MIN_PHONE_DIGITS: usize = 8;
const MAX_PHONE_DIGITS: usize = 15;

/// A country's dialing rules.
struct Country {
    iso: [u8; 2],
    code: &'static str,
    /// National trunk prefixes to drop (`0`; `1` for NANP, `8` for RU/KZ …).
    trunk: &'static [&'static str],
    /// Drop the trunk prefix only when the national number has this many digits.
    trunk_len: Option<usize>,
    /// International call prefix when it is not `00`.
    intl: &'static str,
}

const fn c(iso: &[u8; 2], code: &'static str, trunk: &'static [&'static str]) -> Country {
    Country {
        iso: *iso,
        code,
        trunk,
        trunk_len: None,
        intl: "00",
    }
}

const Z: &[&str] = &["0"];
const N: &[&str] = &[];
const NANP: Country = Country {
    trunk_len: Some(11),
    intl: "011",
    ..c(b"US", "1", &["1"])
};
const RU_KZ: Country = Country {
    trunk_len: Some(11),
    ..c(b"RU", "7", &["8"])
};

/// ISO 3166 alpha-2 → calling code and trunk rules, sorted by `iso`.
const COUNTRIES: &[Country] = &[
    c(b"AE", "971", Z),
    c(b"AR", "54", Z),
    c(b"AT", "43", Z),
    Country {
        intl: "0011",
        ..c(b"AU", "61", Z)
    },
    c(b"BD", "880", Z),
    c(b"BE", "32", Z),
    c(b"BG", "359", Z),
    c(b"BR", "55", Z),
    Country {
        iso: *b"CA",
        ..NANP
    },
    c(b"CH", "41", Z),
    c(b"CL", "56", N),
    c(b"CN", "86", Z),
    c(b"CO", "57", N),
    c(b"CY", "357", N),
    c(b"CZ", "420", N),
    c(b"DE", "49", Z),
    c(b"DK", "45", N),
    c(b"EE", "372", N),
    c(b"EG", "20", Z),
    c(b"ES", "34", N),
    c(b"FI", "358", Z),
    c(b"FR", "33", Z),
    c(b"GB", "44", Z),
    c(b"GR", "30", N),
    c(b"HK", "852", N),
    c(b"HR", "385", Z),
    c(b"HU", "36", &["06"]),
    c(b"ID", "62", Z),
    c(b"IE", "353", Z),
    c(b"IL", "972", Z),
    c(b"IN", "91", Z),
    c(b"IS", "354", N),
    c(b"IT", "39", N),
    Country {
        intl: "010",
        ..c(b"JP", "81", Z)
    },
    c(b"KE", "254", Z),
    c(b"KR", "82", Z),
    Country {
        iso: *b"KZ",
        ..RU_KZ
    },
    c(b"LI", "423", N),
    Country {
        trunk_len: Some(9),
        ..c(b"LT", "370", &["8", "0"])
    },
    c(b"LU", "352", N),
    c(b"LV", "371", N),
    c(b"MA", "212", Z),
    c(b"MC", "377", N),
    c(b"MO", "853", N),
    c(b"MT", "356", N),
    c(b"MX", "52", N),
    c(b"MY", "60", Z),
    c(b"NG", "234", Z),
    c(b"NL", "31", Z),
    c(b"NO", "47", N),
    c(b"NZ", "64", Z),
    c(b"PE", "51", Z),
    c(b"PH", "63", Z),
    c(b"PK", "92", Z),
    c(b"PL", "48", N),
    c(b"PT", "351", N),
    c(b"QA", "974", N),
    c(b"RO", "40", Z),
    c(b"RS", "381", Z),
    RU_KZ,
    c(b"SA", "966", Z),
    c(b"SE", "46", Z),
    c(b"SG", "65", N),
    c(b"SI", "386", Z),
    c(b"SK", "421", Z),
    c(b"TH", "66", Z),
    c(b"TR", "90", Z),
    c(b"TW", "886", Z),
    c(b"UA", "380", Z),
    NANP,
    c(b"VN", "84", Z),
    c(b"ZA", "27", Z),
];

#[cfg(test)]
pub(super) fn countries_sorted() -> (bool, usize) {
    (
        COUNTRIES.windows(2).all(|w| w[0].iso < w[1].iso),
        COUNTRIES.len(),
    )
}

fn country(iso: &str) -> Option<&'static Country> {
    let key = match iso.trim().as_bytes() {
        [a, b] => [a.to_ascii_uppercase(), b.to_ascii_uppercase()],
        _ => return None,
    };
    let key = if &key == b"UK" { *b"GB" } else { key };
    COUNTRIES
        .binary_search_by(|c| c.iso.cmp(&key))
        .ok()
        .map(|i| &COUNTRIES[i])
}

/// The international calling code of an ISO 3166 alpha-2 country
/// (`"DE"` → `"49"`), for the ~70 countries in the embedded table.
pub fn calling_code(iso: &str) -> Option<&'static str> {
    country(iso).map(|c| c.code)
}

/// Normalizes a phone number to E.164 (`+4930123456`).
///
/// Ignores spaces, dots, dashes, slashes and parentheses, and the `(0)` trunk
/// marker after an international prefix (`+49 (0)30 …`). International
/// numbers start with `+`, `00`, or the default country's own international
/// prefix (`011` US/CA, `010` JP, `0011` AU); a trunk `0` written after the
/// country code (`+49 030 …`) is dropped for countries that dial one.
/// National numbers get `default_country`'s calling code and lose its trunk
/// prefix (`0`; none for IT, ES, PL …; `1` for US/CA when 11 digits; `8` for
/// RU/KZ). The result must have 8–15 digits. An extension (`x123`, `ext. 123`,
/// `#123`, `;ext=123`) is stripped: E.164 cannot carry it. Letters (vanity
/// numbers) are rejected.
pub fn normalize_phone(input: &str, default_country: Option<&str>) -> Result<String, ParseError> {
    phone_inner(input, default_country).map_err(|r| ParseError::new(input, "a phone number", r))
}

/// Is `rest` (starting at an extension marker) an extension like `x123`?
fn is_extension(rest: &str) -> bool {
    let lower = |n: usize| rest.get(..n).map(str::to_ascii_lowercase);
    let marker = ["extension", "ext.", "ext=", "ext", ";ext=", "x", "#", ","]
        .iter()
        .find(|m| lower(m.len()).as_deref() == Some(**m));
    let Some(marker) = marker else { return false };
    let tail = rest[marker.len()..].trim_start_matches([' ', '.', ':']);
    !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit())
}

fn phone_inner(input: &str, default_country: Option<&str>) -> Result<String, Reason> {
    let t = input.trim();
    if t.is_empty() {
        return Err("empty input".into());
    }
    let s = normalize_fullwidth(t);
    let s = match s.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("tel:") => &s[4..],
        _ => &s[..],
    };
    let mut digits = [0u8; 24];
    let mut n = 0;
    let mut plus = false;
    let mut iter = s.char_indices();
    while let Some((i, ch)) = iter.next() {
        match ch {
            '0'..='9' => {
                if n == digits.len() {
                    return Err("too many digits".into());
                }
                digits[n] = ch as u8;
                n += 1;
            }
            '+' if n == 0 && !plus => plus = true,
            '+' => return Err("misplaced +".into()),
            '(' if n > 0 && (plus || digits.starts_with(b"00")) && s[i..].starts_with("(0)") => {
                iter.nth(1); // skip "0)"
            }
            ' ' | '\u{a0}' | '\u{202f}' | '\t' | '.' | '-' | '‐' | '–' | '/' | '(' | ')' => {}
            _ if n > 0 && is_extension(&s[i..]) => break,
            _ => return Err(format!("unexpected character {ch:?}").into()),
        }
    }
    if n == 0 {
        return Err("no digits".into());
    }
    let digits = &digits[..n];
    let home = match default_country {
        Some(iso) => Some(country(iso).ok_or_else(|| format!("unknown country {iso:?}"))?),
        None => None,
    };

    let mut out = String::with_capacity(MAX_PHONE_DIGITS + 1);
    out.push('+');
    let international = if plus {
        Some(digits)
    } else if let Some(rest) = home.and_then(|h| digits.strip_prefix(h.intl.as_bytes())) {
        Some(rest)
    } else {
        digits.strip_prefix(b"00")
    };
    match international {
        Some(rest) => {
            if rest.first() == Some(&b'0') {
                return Err("country codes do not start with 0".into());
            }
            let (code_len, skip) = COUNTRIES
                .iter()
                .find(|c| rest.starts_with(c.code.as_bytes()))
                .map_or((0, 0), |c| {
                    let len = c.code.len();
                    // "+49 030 …": a trunk 0 written after the country code.
                    let trunk = c.trunk == Z && rest.get(len) == Some(&b'0');
                    (len, len + usize::from(trunk))
                });
            push_digits(&mut out, &rest[..code_len]);
            push_digits(&mut out, &rest[skip..]);
        }
        None => {
            let home =
                home.ok_or("national number without a country code and no default country")?;
            let nsn = home
                .trunk
                .iter()
                .filter(|_| home.trunk_len.is_none_or(|len| digits.len() == len))
                .find_map(|t| digits.strip_prefix(t.as_bytes()))
                .unwrap_or(digits);
            out.push_str(home.code);
            push_digits(&mut out, nsn);
        }
    }
    let count = out.len() - 1;
    if count < MIN_PHONE_DIGITS {
        return Err(format!(
            "too few digits ({count}; E.164 needs {MIN_PHONE_DIGITS}–{MAX_PHONE_DIGITS})"
        )
        .into());
    }
    if count > MAX_PHONE_DIGITS {
        return Err(
            format!("too many digits ({count}; E.164 allows at most {MAX_PHONE_DIGITS})").into(),
        );
    }
    Ok(out)
}

fn push_digits(out: &mut String, digits: &[u8]) {
    out.extend(digits.iter().map(|&d| d as char));
}
