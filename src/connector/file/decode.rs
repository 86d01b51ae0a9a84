//! A reader that turns a file in any encoding into UTF-8 as it streams,
//! removing a byte order mark (which wins over the configured encoding)
//! and counting undecodable bytes so the records holding them can be
//! rejected instead of silently altered.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use encoding_rs::{CoderResult, Decoder, Encoding};

const CHUNK: usize = 64 * 1024;

/// UTF-8 out of bytes in `encoding`.
pub struct DecodeReader<R> {
    inner: R,
    decoder: Decoder,
    input: Box<[u8]>,
    in_start: usize,
    in_end: usize,
    eof: bool,
    finished: bool,
    output: Vec<u8>,
    out_pos: usize,
    malformed: Arc<AtomicU64>,
}

impl<R: Read> DecodeReader<R> {
    pub fn new(inner: R, encoding: &'static Encoding) -> DecodeReader<R> {
        DecodeReader {
            inner,
            // BOM sniffing: a UTF-8 or UTF-16 BOM selects that encoding.
            decoder: encoding.new_decoder(),
            input: vec![0; CHUNK].into_boxed_slice(),
            in_start: 0,
            in_end: 0,
            eof: false,
            finished: false,
            output: Vec::with_capacity(CHUNK * 3 + 16),
            out_pos: 0,
            malformed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many undecodable byte sequences were replaced by U+FFFD so far.
    pub fn malformed(&self) -> Arc<AtomicU64> {
        self.malformed.clone()
    }
}

impl<R: Read> Read for DecodeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_pos < self.output.len() {
                let n = buf.len().min(self.output.len() - self.out_pos);
                buf[..n].copy_from_slice(&self.output[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            if self.finished {
                return Ok(0);
            }
            if self.in_start == self.in_end && !self.eof {
                let n = self.inner.read(&mut self.input)?;
                self.in_start = 0;
                self.in_end = n;
                self.eof = n == 0;
            }
            let src = &self.input[self.in_start..self.in_end];
            let cap = self
                .decoder
                .max_utf8_buffer_length(src.len())
                .unwrap_or(CHUNK * 3)
                .max(16);
            self.output.clear();
            self.output.resize(cap, 0);
            let (result, read, written, replaced) =
                self.decoder.decode_to_utf8(src, &mut self.output, self.eof);
            self.in_start += read;
            self.output.truncate(written);
            self.out_pos = 0;
            if replaced {
                let n = std::str::from_utf8(&self.output)
                    .map(|s| s.matches('\u{FFFD}').count())
                    .unwrap_or(1);
                self.malformed.fetch_add(n.max(1) as u64, Ordering::Relaxed);
            }
            if self.eof && result == CoderResult::InputEmpty && self.in_start == self.in_end {
                self.finished = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8], enc: &'static Encoding) -> (String, u64) {
        let mut r = DecodeReader::new(bytes, enc);
        let bad = r.malformed();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        (s, bad.load(Ordering::Relaxed))
    }

    #[test]
    fn boms_select_the_encoding_and_are_removed() {
        assert_eq!(decode(b"\xEF\xBB\xBFa,b", encoding_rs::UTF_8).0, "a,b");
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("名,b".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(decode(&le, encoding_rs::UTF_8).0, "名,b");
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("名,b".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(decode(&be, encoding_rs::GBK).0, "名,b");
    }

    #[test]
    fn gbk_decodes_and_bad_bytes_are_counted() {
        let (gbk, _, _) = encoding_rs::GBK.encode("客户,金额");
        assert_eq!(decode(&gbk, encoding_rs::GBK), ("客户,金额".to_owned(), 0));
        let (s, bad) = decode(b"ok\xFF\xFEok", encoding_rs::UTF_8);
        assert!(s.contains('\u{FFFD}'));
        assert!(bad >= 1);
    }

    #[test]
    fn characters_split_across_chunks_survive() {
        let text = "é".repeat(CHUNK);
        assert_eq!(decode(text.as_bytes(), encoding_rs::UTF_8), (text, 0));
    }
}
