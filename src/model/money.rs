//! Exact money: ISO 4217 currencies, decimal amounts and IBANs.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::{ModelError, snippet};

/// Active ISO 4217 codes with their minor units (ISO 4217 list one).
///
/// Excluded on purpose: precious metals, bond-market units, SDR and testing
/// codes (XAU, XAG, XPD, XPT, XBA–XBD, XDR, XSU, XUA, XTS, XXX), which have no
/// minor unit and never appear on invoices. `ANG` is kept next to its
/// successor `XCG` (2025 changeover) because historic documents still carry
/// it. Sorted by code so lookups can binary-search.
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BOV", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHE", 2),
    ("CHF", 2),
    ("CHW", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("COU", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MXV", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("USN", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// An active ISO 4217 currency code.
///
/// Stored as three ASCII bytes so it is `Copy` and cheap to compare; it can
/// only be built from a code in the embedded table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses an upper-case ISO 4217 code such as `"EUR"`.
    ///
    /// Case-sensitive and untrimmed: normalising input is the caller's job.
    pub fn parse(code: &str) -> Result<Currency, ModelError> {
        match CURRENCIES.binary_search_by(|(c, _)| (*c).cmp(code)) {
            Ok(i) => {
                let b = CURRENCIES[i].0.as_bytes();
                Ok(Currency([b[0], b[1], b[2]]))
            }
            Err(_) => Err(ModelError::InvalidCurrency {
                code: snippet(code),
            }),
        }
    }

    /// The three-letter code.
    pub fn as_str(&self) -> &str {
        // Only built from table entries, which are ASCII.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Number of decimal places of the currency's minor unit (EUR 2, JPY 0, KWD 3).
    pub fn minor_units(&self) -> u32 {
        let code = self.as_str();
        CURRENCIES
            .binary_search_by(|(c, _)| (*c).cmp(code))
            .map(|i| CURRENCIES[i].1)
            .unwrap_or(2)
    }

    /// Every supported currency, in code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES
            .iter()
            .filter_map(|(c, _)| Currency::parse(c).ok())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

impl FromStr for Currency {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl TryFrom<String> for Currency {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Currency::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

/// Maximum number of decimal places an amount may carry.
///
/// Larger than any currency's minor unit because bank files and unit prices
/// legitimately carry more precision, but bounded so that garbage such as
/// `0.1000000000000000000001` is rejected rather than silently kept.
pub const MAX_SCALE: u32 = 10;

/// Parses a plain decimal string: optional sign, digits, optional `.digits`.
///
/// Rejects empty input, exponents, thousands separators, underscores, more
/// than [`MAX_SCALE`] decimals and values that do not fit in a `Decimal`.
pub(crate) fn parse_decimal(s: &str) -> Result<Decimal, ModelError> {
    let invalid = |reason: &str| ModelError::InvalidAmount {
        value: snippet(s),
        reason: reason.to_owned(),
    };
    if s.is_empty() {
        return Err(invalid("empty string"));
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || frac_part.is_some_and(|f| !all_digits(f)) {
        return Err(invalid(
            "expected a plain decimal like -1234.56 (digits, optional sign and decimal point)",
        ));
    }
    let scale = frac_part.map_or(0, str::len);
    if scale > MAX_SCALE as usize {
        return Err(ModelError::TooManyDecimals {
            value: snippet(s),
            max: MAX_SCALE,
        });
    }
    Decimal::from_str_exact(s).map_err(|_| invalid("too many significant digits for a decimal"))
}

/// Checks an already-built decimal against [`MAX_SCALE`].
pub(crate) fn check_scale(amount: Decimal) -> Result<Decimal, ModelError> {
    if amount.scale() > MAX_SCALE {
        Err(ModelError::TooManyDecimals {
            value: amount.to_string(),
            max: MAX_SCALE,
        })
    } else {
        Ok(amount)
    }
}

/// Serde helpers for amounts embedded in documents: strings only, validated
/// with the same grammar as [`Money::parse`]. JSON numbers are rejected
/// because a float may already have lost precision.
pub(crate) mod amount_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let s = String::deserialize(d)?;
        parse_decimal(&s).map_err(serde::de::Error::custom)
    }

    /// Same rules for `Option<Decimal>`.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.collect_str(d),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(s) => parse_decimal(&s)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

/// An exact amount in a currency.
///
/// Invariant: `amount.scale() <= MAX_SCALE`. The scale is preserved as given
/// (`12.30` stays `12.30`); call [`Money::round_to_currency`] to normalise.
/// Equality and hashing are numeric (`12.30 EUR == 12.3 EUR`, as for
/// `Decimal`); the JSON form, and so [`content_hash`](super::content_hash),
/// does distinguish them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyRepr", into = "MoneyRepr")]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

/// Wire form of [`Money`]: `{"amount": "12.30", "currency": "EUR"}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyRepr {
    #[serde(with = "amount_serde")]
    amount: Decimal,
    currency: Currency,
}

impl TryFrom<MoneyRepr> for Money {
    type Error = ModelError;
    fn try_from(r: MoneyRepr) -> Result<Self, Self::Error> {
        Money::new(r.amount, r.currency)
    }
}

impl From<Money> for MoneyRepr {
    fn from(m: Money) -> Self {
        MoneyRepr {
            amount: m.amount,
            currency: m.currency,
        }
    }
}

impl Money {
    /// Builds money, rejecting amounts with more than [`MAX_SCALE`] decimals.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Money, ModelError> {
        Ok(Money {
            amount: check_scale(amount)?,
            currency,
        })
    }

    /// Parses a plain decimal string such as `"-1234.56"` (see [`MAX_SCALE`]).
    pub fn parse(amount: &str, currency: Currency) -> Result<Money, ModelError> {
        Ok(Money {
            amount: parse_decimal(amount)?,
            currency,
        })
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Money {
        Money {
            amount: Decimal::ZERO,
            currency,
        }
    }

    /// The amount, with its original scale.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    fn same_currency(&self, other: &Money) -> Result<(), ModelError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(ModelError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    /// Exact sum; errors on different currencies or overflow.
    pub fn checked_add(&self, other: &Money) -> Result<Money, ModelError> {
        self.same_currency(other)?;
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or_else(|| self.overflow("+", other))?;
        Money::new(amount, self.currency)
    }

    /// Exact difference; errors on different currencies or overflow.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, ModelError> {
        self.same_currency(other)?;
        let amount = self
            .amount
            .checked_sub(other.amount)
            .ok_or_else(|| self.overflow("-", other))?;
        Money::new(amount, self.currency)
    }

    fn overflow(&self, op: &'static str, other: &Money) -> ModelError {
        ModelError::Overflow {
            op,
            left: self.amount.to_string(),
            right: other.amount.to_string(),
        }
    }

    /// The negated amount (never overflows: `Decimal` is sign-magnitude).
    #[allow(clippy::should_implement_trait)]
    pub fn neg(&self) -> Money {
        Money {
            amount: -self.amount,
            currency: self.currency,
        }
    }

    /// True when the amount is zero (at any scale).
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// True when the amount is strictly below zero.
    pub fn is_negative(&self) -> bool {
        self.amount.is_sign_negative() && !self.amount.is_zero()
    }

    /// Rounds to the currency's minor units with commercial rounding
    /// (half away from zero: 0.125 EUR → 0.13, −0.125 → −0.13), and pads the
    /// scale to exactly the minor units (`12.3` → `12.30`).
    pub fn round_to_currency(&self) -> Money {
        let dp = self.currency.minor_units();
        let mut amount = self
            .amount
            .round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
        // Padding only adds zeros; for values too large to pad, rescale keeps
        // the largest scale that fits, which changes no digits.
        if amount.scale() < dp {
            amount.rescale(dp);
        }
        Money {
            amount,
            currency: self.currency,
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// IBAN country codes with their total lengths (SWIFT IBAN registry).
/// Sorted by code so lookups can binary-search.
const IBAN_COUNTRIES: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HN", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

/// Longest raw input (with spaces) considered before rejecting outright.
const IBAN_MAX_INPUT: usize = 64;

/// A validated International Bank Account Number, stored compact and upper-case.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Iban(String);

impl Iban {
    /// Parses an IBAN, accepting ASCII whitespace and lower case
    /// (`de89 3704 …`), then checks country, length, characters and the
    /// ISO 7064 mod-97 checksum.
    pub fn parse(input: &str) -> Result<Iban, ModelError> {
        let err = |reason: String| ModelError::InvalidIban {
            value: snippet(input),
            reason,
        };
        if input.len() > IBAN_MAX_INPUT {
            return Err(err(format!("longer than {IBAN_MAX_INPUT} characters")));
        }
        let compact: String = input
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if let Some(bad) = compact.chars().find(|c| !c.is_ascii_alphanumeric()) {
            return Err(err(format!("invalid character {bad:?}")));
        }
        let bytes = compact.as_bytes();
        if bytes.len() < 4 {
            return Err(err("too short".into()));
        }
        if !(bytes[0].is_ascii_uppercase() && bytes[1].is_ascii_uppercase()) {
            return Err(err("must start with a two-letter country code".into()));
        }
        if !(bytes[2].is_ascii_digit() && bytes[3].is_ascii_digit()) {
            return Err(err("check digits must be two digits".into()));
        }
        let country = &compact[..2];
        let expected = match IBAN_COUNTRIES.binary_search_by(|(c, _)| (*c).cmp(country)) {
            Ok(i) => IBAN_COUNTRIES[i].1,
            Err(_) => return Err(err(format!("unknown iban country {country:?}"))),
        };
        if bytes.len() != expected {
            return Err(err(format!(
                "length {} does not match {expected} for country {country}",
                bytes.len()
            )));
        }
        if mod97(bytes) != 1 {
            return Err(err("checksum mismatch".into()));
        }
        Ok(Iban(compact))
    }

    /// The compact form, e.g. `DE89370400440532013000`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The two-letter country code.
    pub fn country(&self) -> &str {
        self.0.get(..2).unwrap_or("")
    }
}

/// ISO 7064 MOD 97-10 over the rearranged IBAN (first four chars moved to the
/// end, letters expanded to 10..=35). Input must be upper-case alphanumeric.
fn mod97(bytes: &[u8]) -> u32 {
    let (head, tail) = bytes.split_at(4);
    tail.iter().chain(head).fold(0u32, |acc, &b| {
        if b.is_ascii_digit() {
            (acc * 10 + u32::from(b - b'0')) % 97
        } else {
            (acc * 100 + u32::from(b - b'A') + 10) % 97
        }
    })
}

impl fmt::Display for Iban {
    /// Print format: groups of four separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, chunk) in self.0.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(std::str::from_utf8(chunk).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Iban {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Iban({})", self.0)
    }
}

impl FromStr for Iban {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Iban::parse(s)
    }
}

impl TryFrom<String> for Iban {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Iban::parse(&s)
    }
}

impl From<Iban> for String {
    fn from(i: Iban) -> String {
        i.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    #[test]
    fn currency_table_is_sorted_unique_and_well_formed() {
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(CURRENCIES.len() >= 150, "{}", CURRENCIES.len());
        for (c, _) in CURRENCIES {
            assert_eq!(c.len(), 3);
            assert!(c.bytes().all(|b| b.is_ascii_uppercase()));
        }
        assert_eq!(Currency::all().count(), CURRENCIES.len());
    }

    #[test]
    fn currency_parse_and_minor_units() {
        for (code, mu) in [
            ("EUR", 2),
            ("USD", 2),
            ("JPY", 0),
            ("KRW", 0),
            ("BHD", 3),
            ("KWD", 3),
            ("OMR", 3),
            ("JOD", 3),
            ("TND", 3),
            ("IQD", 3),
            ("LYD", 3),
            ("CLF", 4),
            ("UYW", 4),
        ] {
            let c = Currency::parse(code).unwrap();
            assert_eq!(c.as_str(), code);
            assert_eq!(c.minor_units(), mu, "{code}");
            assert_eq!(c.to_string(), code);
            assert_eq!(code.parse::<Currency>().unwrap(), c);
        }
    }

    #[test]
    fn currency_rejects_bad_codes() {
        for bad in [
            "", "eur", "Eur", "EURO", "EU", " EUR", "EUR ", "XXX", "XAU", "ZZZ", "€", "EÜR",
        ] {
            assert_eq!(
                Currency::parse(bad),
                Err(ModelError::InvalidCurrency { code: bad.into() }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn currency_serde_is_plain_string_and_validates() {
        assert_eq!(serde_json::to_string(&eur()).unwrap(), r#""EUR""#);
        assert_eq!(serde_json::from_str::<Currency>(r#""EUR""#).unwrap(), eur());
        let err = serde_json::from_str::<Currency>(r#""EURO""#).unwrap_err();
        assert!(err.to_string().contains("invalid currency code"), "{err}");
        assert!(serde_json::from_str::<Currency>("12").is_err());
    }

    #[test]
    fn money_parse_accepts_plain_decimals() {
        for (s, want) in [
            ("0", "0"),
            ("-1234.56", "-1234.56"),
            ("+5", "5"),
            ("12.30", "12.30"),
            ("0.0000000001", "0.0000000001"),
            (
                "9999999999999999999999999999",
                "9999999999999999999999999999",
            ),
        ] {
            let m = Money::parse(s, eur()).unwrap();
            assert_eq!(m.amount().to_string(), want, "{s}");
        }
    }

    #[test]
    fn money_parse_rejects_garbage() {
        for bad in [
            "", "-", "+", ".", "1.", ".5", "1e5", "1E5", "1,000.00", "1_000", "1 000", " 1", "1 ",
            "--1", "0x10", "NaN", "inf", "1.2.3", "١٢",
        ] {
            match Money::parse(bad, eur()) {
                Err(ModelError::InvalidAmount { value, .. }) => assert_eq!(value, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert_eq!(
            Money::parse("0.12345678901", eur()),
            Err(ModelError::TooManyDecimals {
                value: "0.12345678901".into(),
                max: MAX_SCALE
            })
        );
        // 30 digits do not fit in 96 bits.
        assert!(matches!(
            Money::parse("123456789012345678901234567890", eur()),
            Err(ModelError::InvalidAmount { .. })
        ));
        let huge = "9".repeat(10_000);
        match Money::parse(&huge, eur()) {
            Err(ModelError::InvalidAmount { value, .. }) => assert!(value.len() < 100),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn money_new_checks_scale() {
        assert!(Money::new(dec("1.0000000001"), eur()).is_ok());
        assert!(matches!(
            Money::new(dec("1.00000000001"), eur()),
            Err(ModelError::TooManyDecimals { max: 10, .. })
        ));
    }

    #[test]
    fn money_arithmetic() {
        let a = Money::parse("0.1", eur()).unwrap();
        let b = Money::parse("0.2", eur()).unwrap();
        assert_eq!(a.checked_add(&b).unwrap().amount(), dec("0.3"));
        assert_eq!(a.checked_sub(&b).unwrap().amount(), dec("-0.1"));
        let usd = Money::parse("1", Currency::parse("USD").unwrap()).unwrap();
        let err = a.checked_add(&usd).unwrap_err();
        assert_eq!(err.to_string(), "currency mismatch: EUR vs USD");
        assert!(a.checked_sub(&usd).is_err());
        let max = Money::new(Decimal::MAX, eur()).unwrap();
        assert!(matches!(
            max.checked_add(&max),
            Err(ModelError::Overflow { op: "+", .. })
        ));
        assert!(max.neg().checked_sub(&max).is_err());
        assert_eq!(a.neg().amount(), dec("-0.1"));
        assert!(a.neg().is_negative());
        assert!(!a.is_negative());
        assert!(Money::zero(eur()).is_zero());
        assert!(!Money::zero(eur()).neg().is_negative());
        assert!(Money::parse("-0.00", eur()).unwrap().is_zero());
    }

    #[test]
    fn money_rounding_is_commercial() {
        let r = |s: &str, c: &str| {
            Money::parse(s, Currency::parse(c).unwrap())
                .unwrap()
                .round_to_currency()
                .amount()
                .to_string()
        };
        assert_eq!(r("0.125", "EUR"), "0.13");
        assert_eq!(r("-0.125", "EUR"), "-0.13");
        assert_eq!(r("0.135", "EUR"), "0.14");
        assert_eq!(r("0.124", "EUR"), "0.12");
        assert_eq!(r("12.3", "EUR"), "12.30");
        assert_eq!(r("2.5", "JPY"), "3");
        assert_eq!(r("1.0005", "KWD"), "1.001");
        assert_eq!(r("1", "CLF"), "1.0000");
        // Too large to pad to 2 decimals: keep digits unchanged.
        assert_eq!(
            r("79228162514264337593543950335", "EUR"),
            "79228162514264337593543950335"
        );
    }

    #[test]
    fn money_display_and_serde() {
        let m = Money::parse("12.30", eur()).unwrap();
        assert_eq!(m.to_string(), "12.30 EUR");
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount":"12.30","currency":"EUR"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        for bad in [
            r#"{"amount":12.30,"currency":"EUR"}"#,
            r#"{"amount":"1e3","currency":"EUR"}"#,
            r#"{"amount":"0.12345678901","currency":"EUR"}"#,
            r#"{"amount":"1","currency":"eur"}"#,
            r#"{"amount":"1"}"#,
            r#"{"amount":"1","currency":"EUR","x":1}"#,
        ] {
            assert!(serde_json::from_str::<Money>(bad).is_err(), "{bad}");
        }
    }

    const VALID_IBANS: &[&str] = &[
        "DE89370400440532013000",
        "GB82WEST12345698765432",
        "NL91ABNA0417164300",
        "FR1420041010050500013M02606",
        "CH9300762011623852957",
    ];

    #[test]
    fn iban_table_is_sorted() {
        assert!(IBAN_COUNTRIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(IBAN_COUNTRIES.len(), 89);
    }

    #[test]
    fn iban_accepts_valid() {
        for s in VALID_IBANS {
            let i = Iban::parse(s).unwrap();
            assert_eq!(i.as_str(), *s);
            assert_eq!(i.country(), &s[..2]);
        }
        let i = Iban::parse(" de89 3704 0044 0532 0130 00 ").unwrap();
        assert_eq!(i.as_str(), "DE89370400440532013000");
        assert_eq!(i.to_string(), "DE89 3704 0044 0532 0130 00");
        assert_eq!(
            Iban::parse("FR1420041010050500013M02606")
                .unwrap()
                .to_string(),
            "FR14 2004 1010 0505 0001 3M02 606"
        );
    }

    #[test]
    fn iban_rejects_invalid() {
        let reason = |s: &str| match Iban::parse(s) {
            Err(ModelError::InvalidIban { value, reason }) => {
                assert_eq!(value, snippet(s));
                reason
            }
            other => panic!("{s:?} gave {other:?}"),
        };
        assert_eq!(reason("DE89370400440532013001"), "checksum mismatch");
        assert!(reason("DE8937040044053201300").starts_with("length 21"));
        assert!(reason("XX89370400440532013000").contains("unknown iban country"));
        assert!(reason("").contains("too short"));
        assert!(reason("DE").contains("too short"));
        assert!(reason("1E89370400440532013000").contains("country code"));
        assert!(reason("DEX9370400440532013000").contains("check digits"));
        assert!(reason("DE89-3704-0044-0532-0130-00").contains("invalid character"));
        assert!(reason("DE89370400440532013000ß").contains("invalid character"));
        assert!(reason(&"1".repeat(1000)).contains("longer than"));
        let e = Iban::parse("DE89370400440532013001").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid iban "DE89370400440532013001": checksum mismatch"#
        );
    }

    #[test]
    fn iban_serde() {
        let i = Iban::parse("de89 3704 0044 0532 0130 00").unwrap();
        assert_eq!(
            serde_json::to_string(&i).unwrap(),
            r#""DE89370400440532013000""#
        );
        assert_eq!(
            serde_json::from_str::<Iban>(r#""DE89 3704 0044 0532 0130 00""#).unwrap(),
            i
        );
        assert!(serde_json::from_str::<Iban>(r#""DE89370400440532013001""#).is_err());
    }

    fn currency_strategy() -> impl Strategy<Value = Currency> {
        prop::sample::select(Currency::all().collect::<Vec<_>>())
    }

    fn decimal_strategy() -> impl Strategy<Value = Decimal> {
        (any::<i64>(), 0..=MAX_SCALE).prop_map(|(m, s)| Decimal::new(m, s))
    }

    proptest! {
        #[test]
        fn add_succeeds_iff_same_currency(
            ca in currency_strategy(),
            cb in prop_oneof![currency_strategy(), Just(Currency::parse("EUR").unwrap())],
            a in decimal_strategy(),
            b in decimal_strategy(),
        ) {
            let ma = Money::new(a, ca).unwrap();
            let mb = Money::new(b, cb).unwrap();
            let sum = ma.checked_add(&mb);
            let diff = ma.checked_sub(&mb);
            if ca == cb {
                let sum = sum.unwrap();
                prop_assert_eq!(sum.amount(), a + b);
                prop_assert_eq!(sum.currency(), ca);
                prop_assert_eq!(diff.unwrap().amount(), a - b);
            } else {
                prop_assert_eq!(
                    sum,
                    Err(ModelError::CurrencyMismatch { left: ca, right: cb })
                );
                prop_assert!(diff.is_err());
            }
        }

        #[test]
        fn money_json_round_trip_preserves_scale(
            c in currency_strategy(),
            a in decimal_strategy(),
        ) {
            let m = Money::new(a, c).unwrap();
            let json = serde_json::to_string(&m).unwrap();
            let back: Money = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back.amount().scale(), a.scale());
            prop_assert_eq!(back, m);
        }

        #[test]
        fn money_parse_round_trips_display(a in decimal_strategy()) {
            let m = Money::parse(&a.to_string(), Currency::parse("EUR").unwrap()).unwrap();
            prop_assert_eq!(m.amount().to_string(), a.to_string());
        }

        #[test]
        fn twenty_eight_digit_amounts_round_trip_json(
            digits in "[1-9][0-9]{27}",
            scale in 0..=MAX_SCALE as usize,
            negative in any::<bool>(),
        ) {
            let (int, frac) = digits.split_at(28 - scale);
            let sign = if negative { "-" } else { "" };
            let s = if scale == 0 { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") };
            let m = Money::parse(&s, Currency::parse("EUR").unwrap()).unwrap();
            let json = serde_json::to_string(&m).unwrap();
            let back: Money = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back.amount().to_string(), s);
        }

        #[test]
        fn parse_decimal_never_panics(s in "[-+0-9.eE_, ]{0,40}") {
            let _ = parse_decimal(&s);
        }

        #[test]
        fn iban_single_digit_change_is_rejected(
            which in 0..VALID_IBANS.len(),
            pos in any::<prop::sample::Index>(),
            delta in 1u8..10,
        ) {
            let iban = VALID_IBANS[which];
            let digit_positions: Vec<usize> = iban
                .bytes()
                .enumerate()
                .filter(|(_, b)| b.is_ascii_digit())
                .map(|(i, _)| i)
                .collect();
            let p = digit_positions[pos.index(digit_positions.len())];
            let mut bytes = iban.as_bytes().to_vec();
            bytes[p] = b'0' + (bytes[p] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert_ne!(&changed, iban);
            prop_assert!(Iban::parse(&changed).is_err(), "{} accepted", changed);
        }

        #[test]
        fn iban_parse_never_panics(s in "\\PC{0,40}") {
            let _ = Iban::parse(&s);
        }
    }

    #[test]
    fn point_one_plus_point_two_is_point_three() {
        let a = Money::parse("0.1", eur()).unwrap();
        let b = Money::parse("0.2", eur()).unwrap();
        assert_eq!(
            a.checked_add(&b).unwrap(),
            Money::parse("0.3", eur()).unwrap()
        );
    }

    #[test]
    fn twenty_eight_digit_amount_round_trips_json() {
        let s = "1234567890123456789.012345678";
        let m = Money::parse(s, eur()).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, format!(r#"{{"amount":"{s}","currency":"EUR"}}"#));
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back.amount().to_string(), s);
        let s = "9999999999999999999999999999";
        let m = Money::parse(s, eur()).unwrap();
        let back: Money = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back.amount().to_string(), s);
    }
}
