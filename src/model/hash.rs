//! Content hashing, used to recognise unchanged records and our own echoes.

use std::io::Write;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hex SHA-256 of the canonical JSON serialization of `value`.
///
/// Canonical form: compact JSON (no whitespace) with object keys sorted by
/// their UTF-8 bytes at every level, strings and numbers written by
/// `serde_json`. The keys are sorted explicitly here rather than relying on
/// `serde_json::Map` being a `BTreeMap`, so the hash stays stable even if some
/// dependency turns on serde_json's `preserve_order` feature.
///
/// Numbers hash by their JSON spelling: `1` and `1.0` differ. The canonical
/// entities avoid the issue by carrying amounts as decimal strings.
pub fn content_hash(value: &Value) -> String {
    text_hash(&canonical_json(value))
}

/// `value` in the canonical form [`content_hash`] hashes. The store keeps a
/// record's data as this text, so a writer that has it already (see
/// `RecordWrite::of`) hashes and stores one serialization.
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail.
    let _ = write_canonical(&mut out, value);
    // serde_json writes UTF-8, and so does the rest.
    String::from_utf8(out).expect("JSON text is UTF-8")
}

/// [`content_hash`] of a value given as its [`canonical_json`] text.
pub fn text_hash(canonical: &str) -> String {
    hex(&Sha256::digest(canonical.as_bytes()))
}

/// Hex SHA-256 of a record as a source sent it, read by the mapping whose
/// fingerprint is `fingerprint` (see `Mapping::fingerprint`): the same record
/// through the same mapping maps to the same result, so an equal hash tells
/// an unchanged record without mapping it. The record is taken in its
/// canonical form, so key order and whitespace do not count.
pub fn source_hash(fingerprint: &str, raw: &Value) -> String {
    let mut text = Vec::with_capacity(fingerprint.len() + 256);
    text.extend_from_slice(fingerprint.as_bytes());
    // A fingerprint is hex: the separator cannot occur in it.
    text.push(b'\n');
    // Writing into a Vec cannot fail.
    let _ = write_canonical(&mut text, raw);
    hex(&Sha256::digest(&text))
}

fn hex(digest: &[u8]) -> String {
    let mut out = String::with_capacity(digest.len() * 2);
    for &b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_canonical<W: Write>(w: &mut W, value: &Value) -> std::io::Result<()> {
    match value {
        Value::Array(items) => {
            w.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    w.write_all(b",")?;
                }
                write_canonical(w, item)?;
            }
            w.write_all(b"]")
        }
        Value::Object(map) => {
            // A BTreeMap (serde_json's default) iterates in key order
            // already; only an insertion-ordered map needs sorting.
            if map.keys().is_sorted() {
                write_object(w, map.iter())
            } else {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                write_object(w, entries.into_iter())
            }
        }
        scalar => serde_json::to_writer(w, scalar).map_err(std::io::Error::other),
    }
}

fn write_object<'a, W: Write>(
    w: &mut W,
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
) -> std::io::Result<()> {
    w.write_all(b"{")?;
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        serde_json::to_writer(&mut *w, k)?;
        w.write_all(b":")?;
        write_canonical(w, v)?;
    }
    w.write_all(b"}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_is_sha256_of_compact_sorted_json() {
        // sha256("{}")
        assert_eq!(
            content_hash(&json!({})),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let v = json!({"b": [1, "x", null, true], "a": {"d": 1.5, "c": "ü\n"}});
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&v).unwrap()); // BTreeMap order = sorted
        let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(content_hash(&v), want);
    }

    #[test]
    fn a_source_hash_is_of_the_fingerprint_and_the_canonical_record() {
        let a = json!({"id": "C1", "name": "Acme", "tags": ["x", "y"]});
        let same =
            serde_json::from_str::<Value>(r#"{ "tags": ["x","y"], "name": "Acme", "id": "C1" }"#)
                .unwrap();
        assert_eq!(source_hash("f1", &a), source_hash("f1", &same));
        let want: String = Sha256::digest(format!("f1\n{}", canonical_json(&a)))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(source_hash("f1", &a), want);
        // Another mapping, or another record: another hash.
        assert_ne!(source_hash("f2", &a), source_hash("f1", &a));
        let changed = json!({"id": "C1", "name": "Acme", "tags": ["y", "x"]});
        assert_ne!(source_hash("f1", &changed), source_hash("f1", &a));
    }

    #[test]
    fn the_canonical_text_is_what_is_hashed_and_reads_back_as_the_value() {
        let v = json!({"b": [1, "x", null, true], "a": {"d": 1.5, "c": "ü\n\"q\""}});
        let text = canonical_json(&v);
        assert_eq!(
            text,
            r#"{"a":{"c":"ü\n\"q\"","d":1.5},"b":[1,"x",null,true]}"#
        );
        assert_eq!(text_hash(&text), content_hash(&v));
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
    }

    #[test]
    fn key_order_does_not_matter_but_content_does() {
        let a: Value = serde_json::from_str(r#"{"x":1,"y":{"q":2,"p":3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "y": {"p":3, "q":2}, "x": 1 }"#).unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(
            content_hash(&a),
            content_hash(&json!({"x": 2, "y": {"q": 2, "p": 3}}))
        );
        assert_ne!(content_hash(&json!("12.30")), content_hash(&json!("12.3")));
        assert_ne!(content_hash(&json!([1, 2])), content_hash(&json!([2, 1])));
        assert_eq!(content_hash(&a).len(), 64);
    }
}
