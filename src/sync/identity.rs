//! Business keys: how a record not yet linked finds the canonical record
//! another system created.

use serde_json::Value;

use crate::model::FieldPath;

/// The normalised value of business key `name` in a canonical record, if
/// present: case, spaces and separators do not tell two keys apart
/// (`CHE-123.456.789` = `che123456789`), and emails compare
/// case-insensitively. Empty values are no key.
pub fn key_value(record: &Value, name: &str) -> Option<String> {
    let path = FieldPath::parse(name).ok()?;
    let text = match path.get(record)? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let normalised = if text.contains('@') {
        text.trim().to_lowercase()
    } else {
        text.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    (!normalised.is_empty()).then_some(normalised)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_ignore_case_spaces_and_separators() {
        let a = json!({"tax_id": "CHE-123.456.789 MWST", "email": " AP@Acme.Example ", "n": 42, "blank": " - "});
        assert_eq!(key_value(&a, "tax_id").as_deref(), Some("che123456789mwst"));
        assert_eq!(key_value(&a, "email").as_deref(), Some("ap@acme.example"));
        assert_eq!(key_value(&a, "n").as_deref(), Some("42"));
        assert_eq!(key_value(&a, "blank"), None);
        assert_eq!(key_value(&a, "missing"), None);
        let b = json!({"billing": {"iban": "DE89 3704 0044 0532 0130 00"}});
        assert_eq!(
            key_value(&b, "billing.iban").as_deref(),
            Some("de89370400440532013000")
        );
    }
}
