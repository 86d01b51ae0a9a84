//! Files people write (mappings, connector definitions) and errors that
//! point into them by file, line and column.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Files larger than this are refused before parsing.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A problem in a file, located by line and column (1-based; 0 when the
/// file could not be read at all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct LoadError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The text of one file, to turn byte spans into lines and columns.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// Reads a file of at most 4 MiB.
    pub fn read(path: &Path) -> Result<SourceFile, LoadError> {
        let fail = |message: String| LoadError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(fail(format!(
                "file is {} bytes; such files are limited to {MAX_FILE_BYTES}",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        Ok(SourceFile {
            path: path.to_owned(),
            text,
        })
    }

    /// An error at a byte span of the text (or at its start).
    pub fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> LoadError {
        let (line, column) = match span {
            Some(span) => {
                let mut at = span.start.min(self.text.len());
                // Offsets computed inside escaped strings may land mid-character.
                while !self.text.is_char_boundary(at) {
                    at -= 1;
                }
                let before = &self.text[..at];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                (line, column)
            }
            None => (1, 1),
        };
        LoadError {
            file: self.path.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    /// Deserialises the whole file as TOML; the error points at the place.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, LoadError> {
        toml::from_str(&self.text).map_err(|e| self.error(e.span(), e.message().trim().to_owned()))
    }
}
