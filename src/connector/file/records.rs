//! Streams the records of one CSV, JSON-array or NDJSON file, one at a
//! time, never holding more than one record in memory.
//!
//! A record that cannot be read (a CSV line with the wrong number of
//! fields, a line that is not JSON, bytes that are not valid in the
//! encoding) comes out as [`Item::Bad`] and reading goes on. A problem that
//! ends the file (a header naming a column twice, a JSON array cut off)
//! comes out as one `Bad` item with `fatal` set, after which the reader
//! ends.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use super::decode::DecodeReader;
use super::definition::{Csv, Format};

/// Longest record kept (a longer one is rejected).
const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// Longest raw text carried in a reject.
const MAX_RAW: usize = 4096;

/// One record of a file, or why it could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Record {
        /// The line the record starts on (1-based).
        line: u64,
        data: Map<String, Value>,
    },
    Bad {
        line: u64,
        reason: String,
        raw: String,
        /// Nothing after it can be read.
        fatal: bool,
    },
}

type Source = DecodeReader<Box<dyn Read + Send>>;

enum Inner {
    Csv {
        reader: Box<csv::Reader<Source>>,
        headers: Option<Vec<String>>,
        layout: Csv,
    },
    Ndjson {
        reader: BufReader<Source>,
        line: u64,
    },
    Json {
        reader: BufReader<Source>,
        line: u64,
        state: JsonState,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonState {
    Start,
    Items,
    AfterItem,
    End,
}

/// The records of one file.
pub struct RecordReader {
    inner: Inner,
    malformed: Arc<AtomicU64>,
    encoding: &'static str,
    done: bool,
}

impl RecordReader {
    pub fn new(
        raw: Box<dyn Read + Send>,
        format: Format,
        encoding: &'static encoding_rs::Encoding,
        layout: &Csv,
    ) -> RecordReader {
        let decoded = DecodeReader::new(raw, encoding);
        let malformed = decoded.malformed();
        let inner = match format {
            Format::Csv => Inner::Csv {
                reader: Box::new(
                    csv::ReaderBuilder::new()
                        .delimiter(layout.delimiter)
                        .quote(layout.quote)
                        .has_headers(false)
                        .flexible(true)
                        .from_reader(decoded),
                ),
                headers: if layout.header {
                    None
                } else {
                    layout.columns.clone()
                },
                layout: layout.clone(),
            },
            Format::Ndjson => Inner::Ndjson {
                reader: BufReader::with_capacity(64 * 1024, decoded),
                line: 0,
            },
            Format::Json => Inner::Json {
                reader: BufReader::with_capacity(64 * 1024, decoded),
                line: 1,
                state: JsonState::Start,
            },
        };
        RecordReader {
            inner,
            malformed,
            encoding: encoding.name(),
            done: false,
        }
    }

    /// The next record, or `None` at the end of the file.
    pub fn next_item(&mut self) -> Option<Item> {
        if self.done {
            return None;
        }
        let item = match &mut self.inner {
            Inner::Csv {
                reader,
                headers,
                layout,
            } => next_csv(reader, headers, layout),
            Inner::Ndjson { reader, line } => next_ndjson(reader, line),
            Inner::Json {
                reader,
                line,
                state,
            } => next_json(reader, line, state),
        };
        match item {
            None => {
                self.done = true;
                None
            }
            Some(Item::Bad { fatal: true, .. }) => {
                self.done = true;
                item
            }
            Some(Item::Record { line, data }) => {
                // Undecodable bytes became U+FFFD: reject what holds them.
                if self.malformed.load(Ordering::Relaxed) > 0 {
                    let raw = Value::Object(data.clone()).to_string();
                    if raw.contains('\u{FFFD}') {
                        return Some(Item::Bad {
                            line,
                            reason: format!(
                                "holds bytes that are not valid {} (shown as U+FFFD)",
                                self.encoding
                            ),
                            raw: cut(&raw),
                            fatal: false,
                        });
                    }
                }
                Some(Item::Record { line, data })
            }
            other => other,
        }
    }
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_RAW {
        return s.to_owned();
    }
    format!(
        "{}… ({} bytes)",
        &s[..s.floor_char_boundary(MAX_RAW)],
        s.len()
    )
}

fn bad(line: u64, reason: impl Into<String>, raw: &str, fatal: bool) -> Item {
    Item::Bad {
        line,
        reason: reason.into(),
        raw: cut(raw),
        fatal,
    }
}

fn next_csv(
    reader: &mut csv::Reader<Source>,
    headers: &mut Option<Vec<String>>,
    layout: &Csv,
) -> Option<Item> {
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => return None,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                return Some(bad(line, format!("cannot read the CSV: {e}"), "", true));
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        let delimiter = (layout.delimiter as char).to_string();
        let raw = || record.iter().collect::<Vec<_>>().join(&delimiter);
        let Some(names) = headers.as_ref() else {
            // The header line.
            let mut names: Vec<String> = Vec::with_capacity(record.len());
            for (i, h) in record.iter().enumerate() {
                let h = h.trim();
                let name = match layout.rename.get(h) {
                    Some(to) => to.clone(),
                    None if h.is_empty() => format!("column_{}", i + 1),
                    None => h.to_owned(),
                };
                if names.contains(&name) {
                    return Some(bad(
                        line,
                        format!(
                            "the header names column `{name}` twice; rename one with `csv.rename`"
                        ),
                        &raw(),
                        true,
                    ));
                }
                names.push(name);
            }
            *headers = Some(names);
            continue;
        };
        if record.len() != names.len() {
            return Some(bad(
                line,
                format!(
                    "line has {} fields, the header has {}",
                    record.len(),
                    names.len()
                ),
                &raw(),
                false,
            ));
        }
        let data = names
            .iter()
            .zip(record.iter())
            .map(|(n, v)| {
                let v = if layout.trim { v.trim() } else { v };
                (n.clone(), Value::String(v.to_owned()))
            })
            .collect();
        return Some(Item::Record { line, data });
    }
}

/// Reads one line of at most [`MAX_RECORD_BYTES`]; `Err` carries a line
/// that was longer (its start) after skipping the rest of it.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Result<usize, ()>> {
    buf.clear();
    let n = reader
        .by_ref()
        .take(MAX_RECORD_BYTES as u64 + 1)
        .read_until(b'\n', buf)?;
    if buf.len() > MAX_RECORD_BYTES && buf.last() != Some(&b'\n') {
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let m = reader.by_ref().take(1 << 20).read_until(b'\n', &mut rest)?;
            if m == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
        return Ok(Err(()));
    }
    Ok(Ok(n))
}

fn next_ndjson(reader: &mut BufReader<Source>, line: &mut u64) -> Option<Item> {
    let mut buf = Vec::new();
    loop {
        *line += 1;
        match read_line(reader, &mut buf) {
            Err(e) => return Some(bad(*line, format!("cannot read the file: {e}"), "", true)),
            Ok(Err(())) => {
                return Some(bad(
                    *line,
                    format!("line is longer than {MAX_RECORD_BYTES} bytes"),
                    &String::from_utf8_lossy(&buf),
                    false,
                ));
            }
            Ok(Ok(0)) => return None,
            Ok(Ok(_)) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        return Some(match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(data)) => Item::Record { line: *line, data },
            Ok(other) => bad(
                *line,
                format!("line is {}, not a JSON object", kind(&other)),
                text,
                false,
            ),
            Err(e) => bad(*line, format!("line is not JSON: {e}"), text, false),
        });
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The next byte without consuming it.
fn peek(reader: &mut impl BufRead) -> std::io::Result<Option<u8>> {
    Ok(reader.fill_buf()?.first().copied())
}

fn skip_ws(reader: &mut impl BufRead, line: &mut u64) -> std::io::Result<()> {
    while let Some(b) = peek(reader)? {
        if !b.is_ascii_whitespace() {
            break;
        }
        if b == b'\n' {
            *line += 1;
        }
        reader.consume(1);
    }
    Ok(())
}

fn next_json(
    reader: &mut BufReader<Source>,
    line: &mut u64,
    state: &mut JsonState,
) -> Option<Item> {
    match json_step(reader, line, state) {
        Ok(item) => item,
        Err(e) => Some(bad(*line, format!("cannot read the file: {e}"), "", true)),
    }
}

fn json_step(
    reader: &mut BufReader<Source>,
    line: &mut u64,
    state: &mut JsonState,
) -> std::io::Result<Option<Item>> {
    loop {
        skip_ws(reader, line)?;
        let next = peek(reader)?;
        match (*state, next) {
            (JsonState::End, None) => return Ok(None),
            (JsonState::End, Some(_)) => {
                *state = JsonState::End;
                let mut rest = Vec::new();
                reader
                    .by_ref()
                    .take(MAX_RAW as u64)
                    .read_to_end(&mut rest)?;
                // Report once, then stop.
                let item = bad(
                    *line,
                    "text after the end of the JSON array",
                    &String::from_utf8_lossy(&rest),
                    true,
                );
                return Ok(Some(item));
            }
            (JsonState::Start, None) => return Ok(None), // an empty file
            (JsonState::Start, Some(b'[')) => {
                reader.consume(1);
                *state = JsonState::Items;
            }
            (JsonState::Start, Some(_)) => {
                let mut start = Vec::new();
                reader.by_ref().take(200).read_to_end(&mut start)?;
                return Ok(Some(bad(
                    *line,
                    "the file does not start with `[`: expected a JSON array of objects (use `format = \"ndjson\"` for one object per line)",
                    &String::from_utf8_lossy(&start),
                    true,
                )));
            }
            (JsonState::Items | JsonState::AfterItem, None) => {
                return Ok(Some(bad(
                    *line,
                    "the file ends inside the JSON array (no closing `]`): truncated?",
                    "",
                    true,
                )));
            }
            (_, Some(b']')) => {
                reader.consume(1);
                *state = JsonState::End;
            }
            (JsonState::AfterItem, Some(b',')) => {
                reader.consume(1);
                *state = JsonState::Items;
            }
            (JsonState::AfterItem, Some(c)) => {
                return Ok(Some(bad(
                    *line,
                    format!(
                        "expected `,` or `]` between array elements, found `{}`",
                        c as char
                    ),
                    "",
                    true,
                )));
            }
            (JsonState::Items, Some(_)) => {
                let start_line = *line;
                let (raw, complete) = scan_element(reader, line)?;
                *state = JsonState::AfterItem;
                let text = String::from_utf8_lossy(&raw);
                if !complete {
                    *state = JsonState::End;
                    return Ok(Some(bad(
                        start_line,
                        "the file ends inside this element: truncated?",
                        &text,
                        true,
                    )));
                }
                if raw.len() > MAX_RECORD_BYTES {
                    return Ok(Some(bad(
                        start_line,
                        format!("element is longer than {MAX_RECORD_BYTES} bytes"),
                        &text,
                        false,
                    )));
                }
                return Ok(Some(match serde_json::from_slice::<Value>(&raw) {
                    Ok(Value::Object(data)) => Item::Record {
                        line: start_line,
                        data,
                    },
                    Ok(other) => bad(
                        start_line,
                        format!("element is {}, not a JSON object", kind(&other)),
                        &text,
                        false,
                    ),
                    Err(e) => bad(
                        start_line,
                        format!("element is not JSON: {e}"),
                        &text,
                        false,
                    ),
                }));
            }
        }
    }
}

/// The bytes of one array element: balanced brackets outside strings, up
/// to the `,` or `]` that ends it (not consumed). `false` when the file
/// ends first. Keeps at most [`MAX_RECORD_BYTES`] + 1 bytes.
fn scan_element(reader: &mut impl BufRead, line: &mut u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            // A whole element may still end the (cut-off) file.
            let whole = depth == 0 && !in_string && matches!(out.first(), Some(b'{' | b'[' | b'"'));
            return Ok((out, whole));
        }
        let mut used = 0;
        let mut finished = false;
        for &b in buf {
            if !in_string && depth == 0 && (b == b',' || b == b']') && !out.is_empty() {
                finished = true;
                break;
            }
            used += 1;
            if b == b'\n' {
                *line += 1;
            }
            if out.len() <= MAX_RECORD_BYTES {
                out.push(b);
            }
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        reader.consume(used);
        if finished {
            while out.last().is_some_and(u8::is_ascii_whitespace) {
                out.pop();
            }
            return Ok((out, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(bytes: &[u8], format: Format, layout: &Csv) -> Vec<Item> {
        let mut r = RecordReader::new(
            Box::new(std::io::Cursor::new(bytes.to_vec())),
            format,
            encoding_rs::UTF_8,
            layout,
        );
        std::iter::from_fn(|| r.next_item()).collect()
    }

    fn summary(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Record { line, data } => format!("{line}:{}", Value::Object(data.clone())),
                Item::Bad { line, fatal, .. } => {
                    format!("{line}:bad{}", if *fatal { "!" } else { "" })
                }
            })
            .collect()
    }

    #[test]
    fn csv_with_quotes_renames_and_a_short_line() {
        let mut layout = Csv::default();
        layout.rename.insert("Invoice No".into(), "no".into());
        let text = "Invoice No,Note\n1,\"a, \"\"quoted\"\"\nnote\"\n2\n3,x\n";
        let got = summary(&items(text.as_bytes(), Format::Csv, &layout));
        assert_eq!(
            got,
            [
                r#"2:{"Note":"a, \"quoted\"\nnote","no":"1"}"#,
                "4:bad",
                r#"5:{"Note":"x","no":"3"}"#
            ]
        );
    }

    #[test]
    fn a_repeated_header_ends_the_file() {
        let got = summary(&items(b"a,a\n1,2\n", Format::Csv, &Csv::default()));
        assert_eq!(got, ["1:bad!"]);
    }

    #[test]
    fn ndjson_skips_blank_lines_and_rejects_bad_ones() {
        let got = summary(&items(
            b"{\"a\":1}\n\n[1]\n{\"a\":\n{\"b\":2}",
            Format::Ndjson,
            &Csv::default(),
        ));
        assert_eq!(got, [r#"1:{"a":1}"#, "3:bad", "4:bad", r#"5:{"b":2}"#]);
    }

    #[test]
    fn json_arrays_stream_and_a_truncated_one_says_so() {
        let text = b"[\n {\"a\": \"x,]}\"},\n {\"a\": tru},\n 7,\n {\"b\": [1, {\"c\": 2}]}\n]\n";
        let got = summary(&items(text, Format::Json, &Csv::default()));
        assert_eq!(
            got,
            [
                r#"2:{"a":"x,]}"}"#,
                "3:bad",
                "4:bad",
                r#"5:{"b":[1,{"c":2}]}"#
            ]
        );
        let got = summary(&items(
            b"[{\"a\":1},{\"a\":2},{\"a\":",
            Format::Json,
            &Csv::default(),
        ));
        assert_eq!(got, [r#"1:{"a":1}"#, r#"1:{"a":2}"#, "1:bad!"]);
        let got = summary(&items(b"[{\"a\":1}", Format::Json, &Csv::default()));
        assert_eq!(got, [r#"1:{"a":1}"#, "1:bad!"]);
        assert!(items(b"  ", Format::Json, &Csv::default()).is_empty());
        assert!(items(b"[]", Format::Json, &Csv::default()).is_empty());
        assert_eq!(
            summary(&items(b"{\"a\":1}", Format::Json, &Csv::default())),
            ["1:bad!"]
        );
    }

    #[test]
    fn undecodable_bytes_reject_their_record_only() {
        let mut r = RecordReader::new(
            Box::new(std::io::Cursor::new(b"a\nok\nb\xFFd\nfine\n".to_vec())),
            Format::Csv,
            encoding_rs::UTF_8,
            &Csv::default(),
        );
        let got = summary(&std::iter::from_fn(|| r.next_item()).collect::<Vec<_>>());
        assert_eq!(got, [r#"2:{"a":"ok"}"#, "3:bad", r#"4:{"a":"fine"}"#]);
    }
}
