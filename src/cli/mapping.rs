//! `concord mapping …`: check, test and apply declarative mappings.

use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::mapping::{self, Lookups, Mapping, sidecar};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum MappingCommand {
    /// Compile mappings and report every error with its file, line and
    /// column. Exits 1 if any mapping has an error.
    Check {
        /// Mapping files or folders (default: mappings/).
        paths: Vec<PathBuf>,
    },
    /// Run the sidecar tests (*.test.toml) and show a diff for each failure.
    Test {
        /// Test files or folders (default: mappings/).
        paths: Vec<PathBuf>,
    },
    /// Map records from a file (or stdin) and write NDJSON. Failed records
    /// go to stderr as JSON lines with every reason; exits 1 if any failed.
    Apply(ApplyArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A mapping name (found under --mappings) or a mapping file.
    mapping: String,
    /// Input file, or - for stdin.
    #[arg(long, short = 'i', default_value = "-")]
    input: PathBuf,
    /// Output file, or - for stdout.
    #[arg(long, short = 'o', default_value = "-")]
    output: PathBuf,
    /// Input format; auto picks by file extension, else by the first byte.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    format: InputFormat,
    /// Where mapping names are looked up.
    #[arg(long, default_value = "mappings")]
    mappings: PathBuf,
    /// Records mapped (and lookups resolved) per batch.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InputFormat {
    Auto,
    Json,
    Ndjson,
    Csv,
}

pub async fn run(command: MappingCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        MappingCommand::Check { paths } => check(&default_paths(paths)),
        MappingCommand::Test { paths } => test(&default_paths(paths)),
        MappingCommand::Apply(args) => apply(args, settings).await,
    }
}

fn default_paths(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    if paths.is_empty() {
        vec![PathBuf::from("mappings")]
    } else {
        paths
    }
}

/// Several problems were already printed; this is the one-line verdict.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Reported(String);

fn check(paths: &[PathBuf]) -> anyhow::Result<()> {
    let mut ok = 0;
    let mut errors = Vec::new();
    for path in paths {
        let (mappings, errs) = mapping::load_dir(path);
        for m in &mappings {
            super::print(&format!(
                "ok    {}@{}  {} {} {}  {}\n",
                m.name,
                m.version,
                m.system,
                m.entity,
                m.direction.as_str(),
                m.file.display()
            ))?;
        }
        ok += mappings.len();
        errors.extend(errs);
    }
    let mut stderr = std::io::stderr().lock();
    for e in &errors {
        writeln!(stderr, "error: {e}")?;
    }
    if errors.is_empty() {
        super::print(&format!("{ok} mapping(s) compiled\n"))
    } else {
        Err(Reported(format!(
            "{} error(s) in mappings; {ok} mapping(s) compiled",
            errors.len()
        ))
        .into())
    }
}

fn test(paths: &[PathBuf]) -> anyhow::Result<()> {
    let (files, errors) = sidecar::find_tests(paths);
    for e in &errors {
        eprintln!("error: {e}");
    }
    let (mut passed, mut failed) = (0, 0);
    let mut out = String::new();
    for file in &files {
        for result in sidecar::run_file(file) {
            if result.passed {
                passed += 1;
                out += &format!("PASS  {} :: {}\n", file.display(), result.case);
            } else {
                failed += 1;
                out += &format!("FAIL  {} :: {}\n", file.display(), result.case);
                for line in &result.diff {
                    out += &format!("        {line}\n");
                }
            }
        }
    }
    out += &format!("\n{passed} passed, {failed} failed\n");
    super::print(&out)?;
    if failed > 0 || !errors.is_empty() {
        return Err(Reported(format!("{failed} sidecar test(s) failed")).into());
    }
    if passed == 0 {
        return Err(Reported("no sidecar tests found".into()).into());
    }
    Ok(())
}

/// Counts for the summary line.
#[derive(Debug, Default)]
struct Tally {
    read: u64,
    mapped: u64,
    failed: u64,
}

async fn apply(args: ApplyArgs, settings: &Settings) -> anyhow::Result<()> {
    let mapping = mapping::find(&args.mappings, &args.mapping).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "cannot load mapping {:?}:\n  {}",
            args.mapping,
            lines.join("\n  ")
        )
    })?;
    let format = resolve_format(args.format, &args.input);
    let total_bytes = if args.input.as_os_str() == "-" {
        None
    } else {
        std::fs::metadata(&args.input).ok().map(|m| m.len())
    };
    let reader: Box<dyn Read> = if args.input.as_os_str() == "-" {
        stdin_reader()
    } else {
        Box::new(
            std::fs::File::open(&args.input)
                .with_context(|| format!("cannot open input {}", args.input.display()))?,
        )
    };
    let progress = progress_bar(total_bytes);
    let reader = BufReader::with_capacity(1 << 20, CountingReader::new(reader, progress.clone()));
    let writer: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.output)
                .with_context(|| format!("cannot create output {}", args.output.display()))?,
        )
    };
    let mut out = BufWriter::with_capacity(1 << 20, writer);
    let mut failures = BufWriter::new(std::io::stderr().lock());

    let store = if mapping.has_lookups() {
        Some(
            super::open_store(settings)
                .await
                .context("lookups need the store")?,
        )
    } else {
        None
    };
    let started = Instant::now();
    let mut tally = Tally::default();
    let batch_size = args.batch.max(1);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut batch: Vec<(u64, Result<Raw, String>)> = Vec::with_capacity(batch_size);
    let mut records = read_records(reader, format)?;
    loop {
        batch.clear();
        batch.extend(records.by_ref().take(batch_size));
        if batch.is_empty() {
            break;
        }
        // Parsing and mapping run on every core, a slice of the batch each;
        // output keeps the input order.
        let parsed: Vec<(u64, Result<Value, String>)> =
            in_parallel(std::mem::take(&mut batch), workers, |(at, raw)| {
                (at, raw.and_then(|r| r.parse(at)))
            });
        let lookups = match &store {
            Some(store) => resolve(&mapping, store, &parsed).await?,
            None => Lookups::default(),
        };
        let rendered: Vec<Result<Vec<u8>, Vec<u8>>> =
            in_parallel(parsed, workers, |(at, record)| {
                let result = match record {
                    Ok(value) => mapping
                        .apply_canonical(&value, &lookups)
                        .map_err(|errors| json!({ "record": at, "errors": errors })),
                    Err(reason) => Err(json!({
                        "record": at,
                        "errors": [{ "field": "", "rule": "input", "message": reason }]
                    })),
                };
                match result {
                    Ok(mapped) => Ok(line_of(&mapped)),
                    Err(failure) => Err(line_of(&failure)),
                }
            });
        for item in rendered {
            tally.read += 1;
            match item {
                Ok(line) => {
                    tally.mapped += 1;
                    out.write_all(&line)?;
                }
                Err(line) => {
                    tally.failed += 1;
                    failures.write_all(&line)?;
                }
            }
        }
    }
    out.flush()?;
    failures.flush()?;
    drop(failures);
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{}: {} read, {} mapped, {} failed in {:.2} s ({:.0} records/s)",
        mapping.version_tag(),
        tally.read,
        tally.mapped,
        tally.failed,
        secs,
        tally.read as f64 / secs.max(1e-9)
    );
    if tally.failed > 0 {
        bail!(Reported(format!(
            "{} record(s) failed; reasons above",
            tally.failed
        )));
    }
    Ok(())
}

/// Standard input for bulk reading. On Unix, the descriptor itself: reading
/// through `Stdin`'s own small buffer halved `mapping apply` throughput.
fn stdin_reader() -> Box<dyn Read> {
    #[cfg(unix)]
    if let Ok(fd) = std::os::fd::AsFd::as_fd(&std::io::stdin()).try_clone_to_owned() {
        return Box::new(std::fs::File::from(fd));
    }
    Box::new(std::io::stdin().lock())
}

/// A JSON value as one NDJSON line.
fn line_of(value: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(value)
        .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()).into_bytes());
    line.push(b'\n');
    line
}

/// Maps `items` with `f` on up to `workers` threads, keeping their order.
fn in_parallel<T: Send, U: Send>(
    items: Vec<T>,
    workers: usize,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    if workers <= 1 || items.len() < 64 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(workers);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(workers);
    let mut items = items.into_iter();
    loop {
        let chunk: Vec<T> = items.by_ref().take(per).collect();
        if chunk.is_empty() {
            break;
        }
        chunks.push(chunk);
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(f).collect::<Vec<U>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// A record as read: a line still to parse, or an already parsed value.
enum Raw {
    Line(String),
    Value(Value),
}

impl Raw {
    fn parse(self, at: u64) -> Result<Value, String> {
        match self {
            Raw::Value(v) => Ok(v),
            Raw::Line(text) => {
                serde_json::from_str(&text).map_err(|e| format!("line {at}: not JSON: {e}"))
            }
        }
    }
}

/// Resolves every lookup of a batch with one store query per entity and
/// system.
async fn resolve(
    mapping: &Mapping,
    store: &crate::store::Store,
    batch: &[(u64, Result<Value, String>)],
) -> anyhow::Result<Lookups> {
    let records = batch.iter().filter_map(|(_, r)| r.as_ref().ok());
    crate::sync::engine::resolve_lookups(store, mapping, records, &Default::default()).await
}

fn resolve_format(format: InputFormat, input: &Path) -> InputFormat {
    if format != InputFormat::Auto {
        return format;
    }
    match input.extension().and_then(|e| e.to_str()) {
        Some("csv") => InputFormat::Csv,
        Some("ndjson" | "jsonl") => InputFormat::Ndjson,
        Some("json") => InputFormat::Json,
        _ => InputFormat::Auto,
    }
}

type Records = Box<dyn Iterator<Item = (u64, Result<Raw, String>)>>;

/// Input records, each with its line (NDJSON, CSV) or index (JSON array);
/// a record that cannot be read is an `Err` with the reason, and reading
/// goes on.
fn read_records(
    mut reader: BufReader<CountingReader>,
    format: InputFormat,
) -> anyhow::Result<Records> {
    let format = match format {
        InputFormat::Auto => {
            let head = reader.fill_buf()?;
            match head.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'[') => InputFormat::Json,
                Some(b'{') | None => InputFormat::Ndjson,
                Some(_) => InputFormat::Csv,
            }
        }
        other => other,
    };
    Ok(match format {
        InputFormat::Json => {
            let value: Value =
                serde_json::from_reader(reader).context("input is not a JSON array")?;
            let Value::Array(items) = value else {
                bail!("input JSON is not an array of records");
            };
            Box::new(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (i as u64 + 1, Ok(Raw::Value(v)))),
            )
        }
        InputFormat::Csv => {
            let mut csv = csv::ReaderBuilder::new()
                .flexible(false)
                .from_reader(reader);
            let headers = csv.headers().context("cannot read the CSV header")?.clone();
            Box::new(csv.into_records().enumerate().map(move |(i, row)| {
                // Line numbers count the header line; quoted newlines can
                // make them approximate, so the record number is given too.
                let line = i as u64 + 2;
                let record = row
                    .map_err(|e| format!("CSV record {}: {e}", i + 1))
                    .map(|row| {
                        let fields: serde_json::Map<String, Value> = headers
                            .iter()
                            .zip(row.iter())
                            .map(|(h, v)| (h.to_owned(), Value::String(v.to_owned())))
                            .collect();
                        Raw::Value(Value::Object(fields))
                    });
                (line, record)
            }))
        }
        InputFormat::Ndjson | InputFormat::Auto => Box::new(NdjsonRecords {
            reader,
            line: 0,
            buf: String::new(),
        }),
    })
}

struct NdjsonRecords {
    reader: BufReader<CountingReader>,
    line: u64,
    buf: String,
}

/// Lines longer than this are reported as errors rather than parsed.
const MAX_LINE: usize = 16 * 1024 * 1024;

impl Iterator for NdjsonRecords {
    type Item = (u64, Result<Raw, String>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            self.line += 1;
            match self.reader.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some((self.line, Err(format!("cannot read line: {e}")))),
            }
            let text = self.buf.trim();
            if text.is_empty() {
                continue;
            }
            if text.len() > MAX_LINE {
                return Some((
                    self.line,
                    Err(format!(
                        "line is {} bytes; the limit is {MAX_LINE}",
                        text.len()
                    )),
                ));
            }
            let line = if text.len() == self.buf.len() {
                std::mem::take(&mut self.buf)
            } else {
                text.to_owned()
            };
            return Some((self.line, Ok(Raw::Line(line))));
        }
    }
}

/// Counts bytes read for the progress bar.
struct CountingReader {
    inner: Box<dyn Read>,
    bar: Option<indicatif::ProgressBar>,
}

impl CountingReader {
    fn new(inner: Box<dyn Read>, bar: Option<indicatif::ProgressBar>) -> Self {
        CountingReader { inner, bar }
    }
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
        Ok(n)
    }
}

fn progress_bar(total: Option<u64>) -> Option<indicatif::ProgressBar> {
    let total = total?;
    // Only for people watching, and only when it will take a moment.
    if !std::io::stderr().is_terminal() || total < 8 * 1024 * 1024 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}
