//! Masking of sensitive values for viewers.
//!
//! Two nets, both applied to every JSON answer a viewer gets:
//! - **by field name**: every value under a key named in
//!   `[api] sensitive_fields` (bank accounts, IBANs, tax ids, e-mail
//!   addresses, phone numbers by default), at any depth — canonical records,
//!   source records as received (quarantine), merge bases of links — and the
//!   sides of a conflict whose field path ends in such a name;
//! - **by shape**: any IBAN-shaped token in any string (alert reasons,
//!   errors, free-text fields), whatever the key.
//!
//! A masked value keeps what a person needs to tell values apart: an IBAN
//! its country, check digits and last four (`DE89••••••••••••••3000`), an
//! e-mail address its first letter and domain (`j•••@acme.example`),
//! anything else its last four characters (`•••••••6789`).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

const DOT: char = '•';

/// An IBAN, compact or printed in groups of four.
static IBAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
        .expect("a valid pattern")
});

/// Which values to mask.
#[derive(Debug, Clone)]
pub struct Masker {
    fields: BTreeSet<String>,
}

/// Field names compare without case, `_` or `-`: `tax_id`, `TaxId` and
/// `tax-id` are one name.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

impl Masker {
    pub fn new<S: AsRef<str>>(fields: &[S]) -> Masker {
        Masker {
            fields: fields.iter().map(|f| normalize(f.as_ref())).collect(),
        }
    }

    /// Whether a field (a name or the last segment of a path such as
    /// `billing.email` or `bank_accounts[0]`) is sensitive.
    pub fn is_sensitive(&self, path: &str) -> bool {
        let leaf = path.rsplit('.').next().unwrap_or(path);
        let leaf = leaf.split('[').next().unwrap_or(leaf);
        self.fields.contains(&normalize(leaf))
    }

    /// Masks sensitive fields and IBAN-shaped tokens throughout `value`.
    pub fn mask(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if self.is_sensitive(key) {
                        mask_all(v);
                    } else {
                        self.mask(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.mask(v)),
            Value::String(s) if IBAN.is_match(s) => *s = mask_text(s),
            _ => {}
        }
    }
}

/// Masks every scalar in `value` (the whole value is sensitive).
pub fn mask_all(value: &mut Value) {
    match value {
        Value::Object(map) => map.values_mut().for_each(mask_all),
        Value::Array(items) => items.iter_mut().for_each(mask_all),
        Value::String(s) => *s = mask_str(s),
        Value::Number(n) => *value = Value::String(mask_str(&n.to_string())),
        Value::Bool(_) | Value::Null => {}
    }
}

/// IBAN-shaped tokens in free text, masked.
pub fn mask_text(text: &str) -> String {
    IBAN.replace_all(text, |c: &regex::Captures| mask_str(&c[0]))
        .into_owned()
}

/// One sensitive value, masked.
pub fn mask_str(s: &str) -> String {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let chars: Vec<char> = compact.chars().collect();
    if let Some((local, domain)) = compact.split_once('@')
        && !local.is_empty()
        && domain.contains('.')
    {
        let first = local.chars().next().expect("not empty");
        return format!("{first}{DOT}{DOT}{DOT}@{domain}");
    }
    let iban_like = chars.len() >= 15
        && chars[..2].iter().all(char::is_ascii_uppercase)
        && chars[2..4].iter().all(char::is_ascii_digit);
    if iban_like {
        let dots = DOT.to_string().repeat(chars.len() - 8);
        let head: String = chars[..4].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        return format!("{head}{dots}{tail}");
    }
    if chars.len() <= 4 {
        return DOT.to_string().repeat(4);
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{}{tail}", DOT.to_string().repeat(chars.len() - 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn masker() -> Masker {
        Masker::new(&crate::api::ApiSettings::default().sensitive_fields)
    }

    #[test]
    fn ibans_keep_country_check_digits_and_last_four() {
        assert_eq!(mask_str("DE89370400440532013000"), "DE89••••••••••••••3000");
        assert_eq!(
            mask_str("DE89 3704 0044 0532 0130 00"),
            "DE89••••••••••••••3000"
        );
    }

    #[test]
    fn emails_keep_first_letter_and_domain() {
        assert_eq!(mask_str("jane.doe@acme.example"), "j•••@acme.example");
    }

    #[test]
    fn other_values_keep_last_four() {
        assert_eq!(mask_str("DE123456789"), "•••••••6789");
        assert_eq!(mask_str("123"), "••••");
    }

    #[test]
    fn sensitive_fields_are_masked_at_any_depth_and_spelling() {
        let mut v = json!({
            "name": "Acme GmbH",
            "tax_id": "DE123456789",
            "bank_accounts": ["DE89370400440532013000", "GB29NWBK60161331926819"],
            "billing": { "Email": "ap@acme.example", "city": "Berlin" },
            "raw": { "VatNumber": 123456789, "TaxId": "X" },
            "note": "paid from DE89 3704 0044 0532 0130 00 yesterday",
        });
        let m = Masker::new(&["tax_id", "bank_accounts", "email", "vat_number"]);
        m.mask(&mut v);
        assert_eq!(v["name"], "Acme GmbH");
        assert_eq!(v["tax_id"], "•••••••6789");
        assert_eq!(v["bank_accounts"][0], "DE89••••••••••••••3000");
        assert_eq!(v["bank_accounts"][1], "GB29••••••••••••••6819");
        assert_eq!(v["billing"]["Email"], "a•••@acme.example");
        assert_eq!(v["billing"]["city"], "Berlin");
        assert_eq!(v["raw"]["VatNumber"], "•••••6789");
        assert_eq!(v["raw"]["TaxId"], "••••");
        assert_eq!(v["note"], "paid from DE89••••••••••••••3000 yesterday");
    }

    #[test]
    fn paths_are_judged_by_their_last_segment() {
        let m = masker();
        assert!(m.is_sensitive("billing.email"));
        assert!(m.is_sensitive("bank_accounts[1]"));
        assert!(m.is_sensitive("tax_id"));
        assert!(!m.is_sensitive("name"));
        assert!(!m.is_sensitive("email_opt_in"));
    }

    #[test]
    fn canonical_ids_and_plain_words_are_left_alone() {
        let mut v = json!({ "id": "01937a4e-8f2b-7c3d-9e4f-0123456789ab", "status": "OPEN", "number": "INV-2026-0001" });
        let before = v.clone();
        masker().mask(&mut v);
        assert_eq!(v, before);
    }
}
