//! The `file` definition format: files or drop folders that hold each
//! entity, and folders that pushes write to.
//!
//! ```toml
//! name = "erp_export"
//! driver = "file"
//!
//! [entities.invoice]
//! folder = "/data/drop/invoices"   # or `path = "/data/erp/invoices.csv"`
//! pattern = "*.csv"
//! format = "csv"
//! encoding = "gb18030"
//! id = "InvoiceNo"
//! updated_at = { field = "Modified", format = "%Y-%m-%d %H:%M:%S", timezone = "Asia/Shanghai" }
//! csv = { delimiter = ";", rename = { "Invoice No" = "InvoiceNo" } }
//! push = { folder = "/data/out/invoices", format = "ndjson" }
//! ```

use std::collections::BTreeMap;
use std::ops::Range;

use chrono::format::{Item, StrftimeItems};
use serde::Deserialize;
use toml::Spanned;

use crate::located::{LoadError, SourceFile};

/// Largest accepted `page_size`.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// A `file` definition file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDefinition {
    /// The system's name; the file is `connectors/NAME.toml`.
    pub name: String,
    /// Always `"file"`.
    pub driver: String,
    /// What the system is, for people reading the definition.
    #[serde(default)]
    pub description: Option<String>,
    /// The entities, by concord entity name.
    #[serde(default)]
    pub entities: BTreeMap<String, Spanned<EntityDef>>,
}

/// The files of one entity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityDef {
    /// One file, read whole on every pull and read again only when it
    /// changes (its size or modification time). Paths may hold `${…}`
    /// placeholders; relative paths are relative to concord's working
    /// folder.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// Instead of `path`: a drop folder. Each file matching `pattern` is
    /// read once; when every page of it is committed it moves to `done/`
    /// beside it, and when the sync engine gives up on it, to `failed/`
    /// with `<file>.reason.txt` saying why. A file that is only partly
    /// committed stays and is read on from where the commit stopped.
    #[serde(default)]
    pub folder: Option<Spanned<String>>,
    /// Which files of the folder to read: a glob on the file name (`*`,
    /// `?`, `[abc]`), default `*`. Files are read in name order; names
    /// starting with `.` are never read (temporary files).
    #[serde(default)]
    pub pattern: Option<Spanned<String>>,
    /// Files modified less than this many seconds ago are left for the next
    /// pull, in case they are still being written (default 2).
    #[serde(default = "default_min_age")]
    pub min_age_secs: u64,
    /// `csv`, `json` (one array of objects) or `ndjson` (one object per
    /// line). Default: from the file extension of `path` or `pattern`.
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    /// The text encoding: `utf-8` (default), `gbk`, `gb18030`, `utf-16le`,
    /// `utf-16be`, `shift_jis`, `windows-1252` … (WHATWG labels). A byte
    /// order mark in the file wins over this setting and is removed.
    #[serde(default)]
    pub encoding: Option<Spanned<String>>,
    /// Records per page (default 500, at most 10,000).
    #[serde(default = "default_page_size")]
    pub page_size: Spanned<usize>,
    /// The field holding the record's id. Without it a record's id is
    /// `<file name>:<line>`, the line where the record starts (1-based;
    /// for CSV counting the header line), which is only stable while the
    /// file is not rewritten.
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    /// The field holding when the record last changed, and how to read it.
    /// Without it records have no `updated_at`.
    #[serde(default)]
    pub updated_at: Option<Spanned<UpdatedAtDef>>,
    /// How CSV files are laid out.
    #[serde(default)]
    pub csv: Option<Spanned<CsvDef>>,
    /// Where pushes write; without it the entity is read-only.
    #[serde(default)]
    pub push: Option<Spanned<PushDef>>,
}

/// `updated_at = { field = "Modified", format = "%d.%m.%Y %H:%M" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatedAtDef {
    /// The field (after renaming).
    pub field: String,
    /// A chrono format (`%Y-%m-%d %H:%M:%S`), or `rfc3339` (default), or
    /// `unix` (seconds since 1970). A format without a zone is read in
    /// `timezone`; one with only a date means midnight.
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    /// The IANA zone of times without one (default `UTC`).
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
}

/// `csv = { … }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvDef {
    /// The field separator, one ASCII character (default `,`; `\t` for
    /// tabs).
    #[serde(default)]
    pub delimiter: Option<Spanned<String>>,
    /// The quote character, one ASCII character (default `"`); a quote
    /// inside a quoted field is written twice.
    #[serde(default)]
    pub quote: Option<Spanned<String>>,
    /// Whether the first line names the columns (default true).
    #[serde(default = "yes")]
    pub header: bool,
    /// The column names when there is no header line, in order.
    #[serde(default)]
    pub columns: Option<Vec<Spanned<String>>>,
    /// Renames header columns: `{ "Invoice No." = "invoice_no" }`.
    /// Columns not listed keep their header name.
    #[serde(default)]
    pub rename: BTreeMap<String, Spanned<String>>,
    /// Removes spaces around fields (default false).
    #[serde(default)]
    pub trim: bool,
}

/// `push = { folder = "…", format = "ndjson" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushDef {
    /// The folder pushed files are written to (created when missing). Each
    /// push writes one file, `<prefix>-<UTC time>-<hash>.<ext>`, whole or
    /// not at all (written beside, flushed to disk, then renamed). The hash
    /// is taken over the batch's idempotency keys: a batch pushed again
    /// while its file is still in the folder is not written twice.
    pub folder: Spanned<String>,
    /// `ndjson` (default) or `csv`.
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    /// The file name prefix (default: the entity name).
    #[serde(default)]
    pub prefix: Option<Spanned<String>>,
    /// CSV only, required there: the columns, in order (a header line is
    /// written). Missing fields are empty; objects and lists are written as
    /// JSON text.
    #[serde(default)]
    pub columns: Option<Vec<Spanned<String>>>,
    /// A field (NDJSON) or last column (CSV) that receives each change's
    /// idempotency key, so whoever reads the files can recognise a record
    /// written twice.
    #[serde(default)]
    pub idempotency_field: Option<Spanned<String>>,
    /// `utf-8` (default), `gbk` or `gb18030`. A record with a character the
    /// encoding cannot hold is rejected.
    #[serde(default)]
    pub encoding: Option<Spanned<String>>,
    /// Starts UTF-8 files with a byte order mark, for spreadsheet programs
    /// (default false).
    #[serde(default)]
    pub bom: bool,
}

fn default_min_age() -> u64 {
    2
}
fn default_page_size() -> Spanned<usize> {
    Spanned::new(0..0, 500)
}
fn yes() -> bool {
    true
}

/// A record format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
    Ndjson,
}

impl Format {
    fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "csv" | "tsv" | "txt" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
        }
    }
}

/// Where an entity's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    File(String),
    Folder { folder: String, pattern: String },
}

/// How `updated_at` is read.
#[derive(Debug, Clone)]
pub struct UpdatedAt {
    pub field: String,
    pub format: TimeFormat,
    pub timezone: chrono_tz::Tz,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    Rfc3339,
    Unix,
    Pattern(String),
}

/// A validated CSV layout.
#[derive(Debug, Clone)]
pub struct Csv {
    pub delimiter: u8,
    pub quote: u8,
    pub header: bool,
    pub columns: Option<Vec<String>>,
    pub rename: BTreeMap<String, String>,
    pub trim: bool,
}

impl Default for Csv {
    fn default() -> Csv {
        Csv {
            delimiter: b',',
            quote: b'"',
            header: true,
            columns: None,
            rename: BTreeMap::new(),
            trim: false,
        }
    }
}

/// A validated `push`.
#[derive(Debug, Clone)]
pub struct Push {
    pub folder: String,
    pub format: Format,
    pub prefix: String,
    pub columns: Vec<String>,
    pub idempotency_field: Option<String>,
    pub encoding: &'static encoding_rs::Encoding,
    pub bom: bool,
}

/// One entity, validated.
#[derive(Debug, Clone)]
pub struct Entity {
    pub name: String,
    pub place: Place,
    pub min_age_secs: u64,
    pub format: Format,
    pub encoding: &'static encoding_rs::Encoding,
    pub page_size: usize,
    pub id: Option<String>,
    pub updated_at: Option<UpdatedAt>,
    pub csv: Csv,
    pub push: Option<Push>,
}

/// Parses and validates a definition without any I/O, reporting every
/// problem with its place.
pub fn load(source: &SourceFile) -> Result<BTreeMap<String, Entity>, Vec<LoadError>> {
    let def: FileDefinition = source.parse().map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut err = |span: Range<usize>, msg: String| errors.push(source.error(Some(span), msg));
    if def.entities.is_empty() {
        err(
            0..0,
            "no entities: add at least one `[entities.NAME]` table".into(),
        );
    }
    let mut out = BTreeMap::new();
    for (name, spanned) in &def.entities {
        if let Some(e) = entity(name, spanned, &mut err) {
            out.insert(name.clone(), e);
        }
    }
    if def.driver != "file" {
        errors.push(source.error(None, format!("driver is `{}`, not `file`", def.driver)));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn one_ascii(
    s: &Spanned<String>,
    what: &str,
    err: &mut dyn FnMut(Range<usize>, String),
) -> Option<u8> {
    let v = s.get_ref();
    let v = if v == "\\t" { "\t" } else { v.as_str() };
    match v.as_bytes() {
        [b] if b.is_ascii() && *b != b'\n' && *b != b'\r' => Some(*b),
        _ => {
            err(
                s.span(),
                format!("`{what}` must be one ASCII character other than a line break, not {v:?}"),
            );
            None
        }
    }
}

fn encoding(
    s: Option<&Spanned<String>>,
    err: &mut dyn FnMut(Range<usize>, String),
) -> &'static encoding_rs::Encoding {
    let Some(s) = s else {
        return encoding_rs::UTF_8;
    };
    encoding_rs::Encoding::for_label(s.get_ref().trim().as_bytes()).unwrap_or_else(|| {
        err(
            s.span(),
            format!(
                "`encoding` `{}` is not known; use a label such as utf-8, gbk, gb18030, utf-16le, utf-16be, shift_jis, windows-1252",
                s.get_ref()
            ),
        );
        encoding_rs::UTF_8
    })
}

fn timezone(
    s: Option<&Spanned<String>>,
    err: &mut dyn FnMut(Range<usize>, String),
) -> chrono_tz::Tz {
    match s {
        None => chrono_tz::UTC,
        Some(tz) => tz.get_ref().parse().unwrap_or_else(|_| {
            err(
                tz.span(),
                format!(
                    "`timezone` `{}` is not an IANA time zone name such as `Asia/Shanghai`",
                    tz.get_ref()
                ),
            );
            chrono_tz::UTC
        }),
    }
}

fn entity(
    name: &str,
    spanned: &Spanned<EntityDef>,
    err: &mut dyn FnMut(Range<usize>, String),
) -> Option<Entity> {
    let e = spanned.get_ref();
    let at = |what: &str| format!("entity `{name}`: {what}");
    let mut ok = true;
    let place = match (&e.path, &e.folder) {
        (Some(p), None) => {
            if e.pattern.is_some() {
                err(
                    p.span(),
                    at("`pattern` applies to a `folder`, not a `path`"),
                );
                ok = false;
            }
            if p.get_ref().trim().is_empty() {
                err(p.span(), at("`path` is empty"));
                ok = false;
            }
            Place::File(p.get_ref().clone())
        }
        (None, Some(f)) => {
            let pattern = e
                .pattern
                .as_ref()
                .map_or("*".to_owned(), |p| p.get_ref().clone());
            if let Some(p) = &e.pattern {
                if let Err(g) = glob::Pattern::new(p.get_ref()) {
                    err(p.span(), at(&format!("`pattern` is not a glob: {}", g.msg)));
                    ok = false;
                } else if p.get_ref().contains('/') {
                    err(
                        p.span(),
                        at("`pattern` matches file names in the folder: no `/`"),
                    );
                    ok = false;
                }
            }
            if f.get_ref().trim().is_empty() {
                err(f.span(), at("`folder` is empty"));
                ok = false;
            }
            Place::Folder {
                folder: f.get_ref().clone(),
                pattern,
            }
        }
        (Some(_), Some(f)) => {
            err(f.span(), at("give `path` or `folder`, not both"));
            return None;
        }
        (None, None) => {
            err(
                spanned.span(),
                at("missing `path` (one file) or `folder` (a drop folder)"),
            );
            return None;
        }
    };
    let format = match &e.format {
        Some(f) => Format::parse(f.get_ref()).unwrap_or_else(|| {
            err(
                f.span(),
                at(&format!(
                    "`format` `{}` is not csv, json or ndjson",
                    f.get_ref()
                )),
            );
            ok = false;
            Format::Csv
        }),
        None => {
            let name = match &place {
                Place::File(p) => p.as_str(),
                Place::Folder { pattern, .. } => pattern.as_str(),
            };
            match name
                .rsplit_once('.')
                .and_then(|(_, ext)| Format::parse(ext))
            {
                Some(f) => f,
                None => {
                    err(
                        spanned.span(),
                        at("set `format` (csv, json or ndjson): the file extension does not tell"),
                    );
                    ok = false;
                    Format::Csv
                }
            }
        }
    };
    let enc = encoding(e.encoding.as_ref(), err);
    let page_size = *e.page_size.get_ref();
    if page_size == 0 || page_size > MAX_PAGE_SIZE {
        err(
            e.page_size.span(),
            at(&format!(
                "`page_size` must be between 1 and {MAX_PAGE_SIZE}"
            )),
        );
        ok = false;
    }
    if let Some(id) = &e.id
        && id.get_ref().is_empty()
    {
        err(
            id.span(),
            at("`id` is empty: leave it out to use file:line ids"),
        );
        ok = false;
    }
    let updated_at = e.updated_at.as_ref().map(|u| {
        let ud = u.get_ref();
        if ud.field.is_empty() {
            err(u.span(), at("`updated_at.field` is empty"));
            ok = false;
        }
        let format = match &ud.format {
            None => TimeFormat::Rfc3339,
            Some(f) if f.get_ref() == "rfc3339" => TimeFormat::Rfc3339,
            Some(f) if f.get_ref() == "unix" => TimeFormat::Unix,
            Some(f) => {
                if StrftimeItems::new(f.get_ref()).any(|i| matches!(i, Item::Error)) {
                    err(
                        f.span(),
                        at(&format!(
                            "`updated_at.format` `{}` is not a valid chrono format",
                            f.get_ref()
                        )),
                    );
                    ok = false;
                }
                TimeFormat::Pattern(f.get_ref().clone())
            }
        };
        UpdatedAt {
            field: ud.field.clone(),
            format,
            timezone: timezone(ud.timezone.as_ref(), err),
        }
    });
    let mut csv = Csv::default();
    if let Some(c) = &e.csv {
        let cd = c.get_ref();
        if format != Format::Csv {
            err(
                c.span(),
                at("`csv` settings apply only to `format = \"csv\"`"),
            );
            ok = false;
        }
        if let Some(d) = &cd.delimiter {
            csv.delimiter = one_ascii(d, "csv.delimiter", err).unwrap_or(b',');
        }
        if let Some(q) = &cd.quote {
            csv.quote = one_ascii(q, "csv.quote", err).unwrap_or(b'"');
        }
        if csv.delimiter == csv.quote {
            err(
                c.span(),
                at("`csv.delimiter` and `csv.quote` are the same character"),
            );
            ok = false;
        }
        csv.header = cd.header;
        csv.trim = cd.trim;
        match (&cd.columns, cd.header) {
            (None, false) => {
                err(
                    c.span(),
                    at("`csv.header = false` needs `csv.columns` to name the columns"),
                );
                ok = false;
            }
            (Some(cols), _) => {
                let mut seen: Vec<String> = Vec::new();
                for col in cols {
                    if col.get_ref().is_empty() || seen.contains(col.get_ref()) {
                        err(
                            col.span(),
                            at(&format!(
                                "column `{}` is empty or listed twice",
                                col.get_ref()
                            )),
                        );
                        ok = false;
                    }
                    seen.push(col.get_ref().clone());
                }
                if cd.header {
                    err(
                        c.span(),
                        at(
                            "`csv.columns` names the columns of files without a header: set `header = false` (or use `rename`)",
                        ),
                    );
                    ok = false;
                }
                csv.columns = Some(seen);
            }
            (None, true) => {}
        }
        let mut targets: Vec<&String> = Vec::new();
        for (from, to) in &cd.rename {
            if to.get_ref().is_empty() || targets.contains(&to.get_ref()) {
                err(
                    to.span(),
                    at(&format!(
                        "`csv.rename`: `{from}` is renamed to an empty or repeated name `{}`",
                        to.get_ref()
                    )),
                );
                ok = false;
            }
            targets.push(to.get_ref());
            csv.rename.insert(from.clone(), to.get_ref().clone());
        }
    }
    let push = e.push.as_ref().and_then(|p| push(name, p, err));
    if e.push.is_some() && push.is_none() {
        ok = false;
    }
    ok.then(|| Entity {
        name: name.to_owned(),
        place,
        min_age_secs: e.min_age_secs,
        format,
        encoding: enc,
        page_size,
        id: e.id.as_ref().map(|i| i.get_ref().clone()),
        updated_at,
        csv,
        push,
    })
}

fn push(
    name: &str,
    p: &Spanned<PushDef>,
    err: &mut dyn FnMut(Range<usize>, String),
) -> Option<Push> {
    let pd = p.get_ref();
    let at = |what: &str| format!("entity `{name}`: {what}");
    let mut ok = true;
    let format = match &pd.format {
        None => Format::Ndjson,
        Some(f) => match Format::parse(f.get_ref()) {
            Some(Format::Json) | None => {
                err(f.span(), at("`push.format` must be ndjson or csv"));
                ok = false;
                Format::Ndjson
            }
            Some(f) => f,
        },
    };
    if pd.folder.get_ref().trim().is_empty() {
        err(pd.folder.span(), at("`push.folder` is empty"));
        ok = false;
    }
    let prefix = match &pd.prefix {
        Some(pr) => {
            let v = pr.get_ref();
            if v.is_empty()
                || v.starts_with('.')
                || !v
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                err(
                    pr.span(),
                    at("`push.prefix` may hold letters, digits, `_`, `-` and `.` (not first)"),
                );
                ok = false;
            }
            v.clone()
        }
        None => name.to_owned(),
    };
    let columns: Vec<String> = pd
        .columns
        .iter()
        .flatten()
        .map(|c| c.get_ref().clone())
        .collect();
    if format == Format::Csv && columns.is_empty() {
        err(
            p.span(),
            at("`push.format = \"csv\"` needs `push.columns`, the columns in order"),
        );
        ok = false;
    }
    if format == Format::Ndjson && pd.columns.is_some() {
        err(
            p.span(),
            at("`push.columns` applies to CSV; NDJSON writes the records as they are"),
        );
        ok = false;
    }
    let enc = encoding(pd.encoding.as_ref(), err);
    if enc != encoding_rs::UTF_8 && enc != encoding_rs::GBK && enc != encoding_rs::GB18030 {
        if let Some(s) = &pd.encoding {
            err(
                s.span(),
                at("`push.encoding` must be utf-8, gbk or gb18030"),
            );
        }
        ok = false;
    }
    if pd.bom && enc != encoding_rs::UTF_8 {
        err(p.span(), at("`push.bom` applies to UTF-8 only"));
        ok = false;
    }
    ok.then(|| Push {
        folder: pd.folder.get_ref().clone(),
        format,
        prefix,
        columns,
        idempotency_field: pd.idempotency_field.as_ref().map(|f| f.get_ref().clone()),
        encoding: enc,
        bom: pd.bom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn src(text: &str) -> SourceFile {
        SourceFile {
            path: PathBuf::from("connectors/drop.toml"),
            text: text.to_owned(),
        }
    }

    #[test]
    fn a_drop_folder_definition_loads() {
        let text = "name = \"drop\"\ndriver = \"file\"\n[entities.invoice]\nfolder = \"/in\"\npattern = \"*.csv\"\nencoding = \"GBK\"\nid = \"no\"\nupdated_at = { field = \"changed\", format = \"%Y-%m-%d %H:%M\", timezone = \"Asia/Shanghai\" }\ncsv = { delimiter = \";\", rename = { \"Invoice No\" = \"no\" } }\npush = { folder = \"/out\", format = \"csv\", columns = [\"no\", \"total\"] }\n";
        let e = &load(&src(text)).unwrap()["invoice"];
        assert_eq!(e.format, Format::Csv);
        assert_eq!(e.encoding, encoding_rs::GBK);
        assert_eq!(e.csv.delimiter, b';');
        assert_eq!(e.csv.rename["Invoice No"], "no");
        assert_eq!(e.push.as_ref().unwrap().columns, ["no", "total"]);
    }

    #[test]
    fn every_problem_is_reported_at_its_place() {
        let text = "name = \"drop\"\ndriver = \"file\"\n[entities.a]\nfolder = \"/in\"\npattern = \"[\"\nencoding = \"klingon\"\npage_size = 0\ncsv = { delimiter = \"ab\", header = false }\nupdated_at = { field = \"t\", format = \"%Q\" }\npush = { folder = \"/out\", format = \"csv\" }\n";
        let errors = load(&src(text)).unwrap_err();
        let lines: Vec<(usize, &str)> = errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        for (line, needle) in [
            (5, "glob"),
            (6, "klingon"),
            (7, "page_size"),
            (8, "one ASCII character"),
            (8, "needs `csv.columns`"),
            (9, "chrono format"),
            (10, "needs `push.columns`"),
        ] {
            assert!(
                lines.iter().any(|(l, m)| *l == line && m.contains(needle)),
                "no {needle:?} at line {line}: {lines:#?}"
            );
        }
    }

    #[test]
    fn the_format_comes_from_the_extension_when_unset() {
        let text = "name = \"x\"\ndriver = \"file\"\n[entities.a]\npath = \"/in/a.ndjson\"\n[entities.b]\npath = \"/in/b.dat\"\n";
        let errors = load(&src(text)).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("entity `b`: set `format`"));
    }
}
