//! The `bank` definition file: a drop folder of bank statement files.
//!
//! ```toml
//! name = "bank_statements"
//! driver = "bank"
//! path = "${statements_dir}"
//! glob = "*.xml"
//! format = "auto"
//! profiles = "config/bank-profiles"
//! page_size = 500
//! ```

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::bank::Format;
use crate::located::{LoadError, SourceFile};

/// The one entity a bank source yields.
pub const ENTITY: &str = "bank_transaction";

/// Largest page a definition may ask for.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// A `bank` system: statement files dropped into a folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankConfig {
    /// The system's name (the file is `connectors/NAME.toml`).
    pub name: String,
    /// Always `bank`.
    pub driver: String,
    /// What this system is, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// The drop folder. `${…}` placeholders are filled from the system
    /// instance or the environment; a relative path is relative to the
    /// directory concord runs in. Read files move to `done/` and unreadable
    /// ones to `failed/` inside it.
    pub path: Spanned<String>,
    /// Which file names in the folder are statements, as a glob (`*`, `?`,
    /// `[abc]`); default every file. Names starting with `.` are never read,
    /// so a writer can drop `.name.part` and rename it when complete.
    #[serde(default)]
    pub glob: Option<Spanned<String>>,
    /// `auto` (default: detected from each file's content, CSV by the
    /// profiles' headers), `camt053`, `camt054`, `camt052`, `mt940`,
    /// `mt942`, `bai2`, `ofx`, or `csv:PROFILE`.
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    /// Folder of CSV profiles (`*.toml`), needed for CSV exports; `${…}`
    /// allowed.
    #[serde(default)]
    pub profiles: Option<Spanned<String>>,
    /// Statement lines per page (default 500, at most 10,000).
    #[serde(default)]
    pub page_size: Option<Spanned<i64>>,
    /// Files changed less than this many milliseconds ago are left for the
    /// next pull, since they may still be being written (default 5000).
    #[serde(default)]
    pub settle_ms: Option<Spanned<i64>>,
}

/// How each file's format is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatChoice {
    /// Sniffed from the content; CSV by the profiles' headers.
    Auto,
    /// Every file is in this format.
    Fixed(Format),
}

/// Parses `auto`, `camt053` … `csv:PROFILE`.
pub fn parse_format(name: &str) -> Result<FormatChoice, String> {
    Ok(FormatChoice::Fixed(match name {
        "auto" => return Ok(FormatChoice::Auto),
        "camt053" => Format::Camt053,
        "camt054" => Format::Camt054,
        "camt052" => Format::Camt052,
        "mt940" => Format::Mt940,
        "mt942" => Format::Mt942,
        "bai2" => Format::Bai2,
        "ofx" => Format::Ofx,
        other => match other.strip_prefix("csv:") {
            Some(profile) if !profile.trim().is_empty() => Format::Csv(profile.to_owned()),
            _ => {
                return Err(format!(
                    "unknown format `{other}`: use auto, camt053, camt054, camt052, mt940, mt942, bai2, ofx or csv:PROFILE"
                ));
            }
        },
    }))
}

/// The definition with defaults applied, after [`check`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub path: String,
    pub glob: glob::Pattern,
    pub format: FormatChoice,
    pub profiles: Option<String>,
    pub page_size: usize,
    pub settle_ms: u64,
}

/// Reads and validates a definition without touching the file system.
pub fn check(source: &SourceFile) -> Result<(), Vec<LoadError>> {
    settings(source).map(|_| ())
}

/// [`check`], returning the settings.
pub fn settings(source: &SourceFile) -> Result<Settings, Vec<LoadError>> {
    let config: BankConfig = source.parse().map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut err = |span: Range<usize>, msg: String| errors.push(source.error(Some(span), msg));

    if config.path.get_ref().trim().is_empty() {
        err(
            config.path.span(),
            "`path` is empty: name the drop folder".into(),
        );
    }
    let glob = match &config.glob {
        None => glob::Pattern::new("*").expect("a valid pattern"),
        Some(g) => {
            let text = g.get_ref();
            if text.contains('/') || text.contains('\\') {
                err(
                    g.span(),
                    format!("`glob` matches file names in the folder, not paths: `{text}`"),
                );
            }
            match glob::Pattern::new(text) {
                Ok(p) => p,
                Err(e) => {
                    err(
                        g.span(),
                        format!("`glob` is not a valid pattern: {}", e.msg),
                    );
                    glob::Pattern::new("*").expect("a valid pattern")
                }
            }
        }
    };
    let format = match &config.format {
        None => FormatChoice::Auto,
        Some(f) => parse_format(f.get_ref()).unwrap_or_else(|msg| {
            err(f.span(), msg);
            FormatChoice::Auto
        }),
    };
    if let (FormatChoice::Fixed(Format::Csv(_)), None, Some(f)) =
        (&format, &config.profiles, &config.format)
    {
        err(
            f.span(),
            "a CSV format needs `profiles`, the folder its profile is in".into(),
        );
    }
    if let Some(p) = &config.profiles
        && p.get_ref().trim().is_empty()
    {
        err(
            p.span(),
            "`profiles` is empty: name the folder or leave it out".into(),
        );
    }
    let page_size = match &config.page_size {
        None => 500,
        Some(n) if (1..=MAX_PAGE_SIZE as i64).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            err(
                n.span(),
                format!(
                    "`page_size` must be 1 to {MAX_PAGE_SIZE}, not {}",
                    n.get_ref()
                ),
            );
            500
        }
    };
    let settle_ms = match &config.settle_ms {
        None => 5_000,
        Some(n) if (0..=86_400_000).contains(n.get_ref()) => *n.get_ref() as u64,
        Some(n) => {
            err(
                n.span(),
                format!(
                    "`settle_ms` must be 0 to 86400000 (a day), not {}",
                    n.get_ref()
                ),
            );
            5_000
        }
    };
    if errors.is_empty() {
        Ok(Settings {
            path: config.path.into_inner(),
            glob,
            format,
            profiles: config.profiles.map(Spanned::into_inner),
            page_size,
            settle_ms,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> SourceFile {
        SourceFile {
            path: "connectors/bank_statements.toml".into(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn a_minimal_definition_gets_defaults() {
        let s = settings(&source(
            "name = \"bank_statements\"\ndriver = \"bank\"\npath = \"${dir}\"\n",
        ))
        .unwrap();
        assert_eq!(s.format, FormatChoice::Auto);
        assert_eq!((s.page_size, s.settle_ms), (500, 5_000));
        assert!(s.glob.matches("anything.xml"));
    }

    #[test]
    fn every_problem_is_reported_at_its_place() {
        let text = "name = \"b\"\ndriver = \"bank\"\npath = \"\"\nglob = \"in/[x\"\n\
                    format = \"csv:sparkasse\"\npage_size = 0\nsettle_ms = -1\n";
        let errors = check(&source(text)).unwrap_err();
        let at: Vec<(usize, &str)> = errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        assert_eq!(errors.len(), 6, "{at:?}");
        assert_eq!(at[0].0, 3);
        assert!(at[1].1.contains("file names"), "{at:?}");
        assert!(at[2].1.contains("not a valid pattern"), "{at:?}");
        assert_eq!(at[3].0, 5);
        assert!(at[3].1.contains("needs `profiles`"), "{at:?}");
        assert_eq!((at[4].0, at[5].0), (6, 7));
    }

    #[test]
    fn unknown_keys_and_formats_are_refused() {
        let e = check(&source(
            "name = \"b\"\ndriver = \"bank\"\npath = \"x\"\nfolder = \"y\"\n",
        ))
        .unwrap_err();
        assert!(e[0].message.contains("unknown field `folder`"), "{e:?}");
        assert_eq!(e[0].line, 4);
        let e = check(&source(
            "name = \"b\"\ndriver = \"bank\"\npath = \"x\"\nformat = \"mt941\"\n",
        ))
        .unwrap_err();
        assert!(e[0].message.contains("unknown format `mt941`"), "{e:?}");
        assert_eq!(
            parse_format("csv:icbc"),
            Ok(FormatChoice::Fixed(Format::Csv("icbc".into())))
        );
        assert!(parse_format("csv:").is_err());
    }
}
