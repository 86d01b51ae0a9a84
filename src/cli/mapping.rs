//! `concord mapping …`: check, test and apply declarative mappings.

use std::borrow::Cow;
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
    let mut input = read_records(reader, format)?;
    let mut batch = Batch::default();
    loop {
        batch.clear();
        input.fill(&mut batch, batch_size);
        if batch.items.is_empty() {
            break;
        }
        // Parsing, mapping and rendering run on every core, a slice of the
        // batch at a time; output keeps the input order. With lookups, the
        // batch is parsed first so its lookups are resolved in one go.
        let rendered: Vec<Rendered> = match &store {
            None => {
                let lookups = Lookups::default();
                in_parallel(&batch.items, workers, |items| {
                    let mut out = Rendered::default();
                    for (at, item) in items {
                        out.add(&mapping, &lookups, *at, batch.parse(*at, item));
                    }
                    out
                })
            }
            Some(store) => {
                let parsed: Vec<(u64, Result<Cow<'_, Value>, String>)> =
                    in_parallel(&batch.items, workers, |items| {
                        items
                            .iter()
                            .map(|(at, item)| (*at, batch.parse(*at, item)))
                            .collect::<Vec<_>>()
                    })
                    .into_iter()
                    .flatten()
                    .collect();
                let lookups = resolve(&mapping, store, &parsed).await?;
                in_parallel(&parsed, workers, |items| {
                    let mut out = Rendered::default();
                    for (at, record) in items {
                        let record = match record {
                            Ok(value) => Ok(Cow::Borrowed(value.as_ref())),
                            Err(reason) => Err(reason.clone()),
                        };
                        out.add(&mapping, &lookups, *at, record);
                    }
                    out
                })
            }
        };
        for part in rendered {
            tally.read += part.mapped + part.failed;
            tally.mapped += part.mapped;
            tally.failed += part.failed;
            out.write_all(&part.lines)?;
            failures.write_all(&part.failure_lines)?;
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

/// Mapped records and failures of part of a batch, as NDJSON.
#[derive(Default)]
struct Rendered {
    lines: Vec<u8>,
    failure_lines: Vec<u8>,
    mapped: u64,
    failed: u64,
}

impl Rendered {
    /// Maps record `at` (or reports why it could not be read) and adds its
    /// line.
    fn add(
        &mut self,
        mapping: &Mapping,
        lookups: &Lookups,
        at: u64,
        record: Result<Cow<'_, Value>, String>,
    ) {
        let result = match record {
            Ok(value) => mapping
                .apply_canonical(&value, lookups)
                .map_err(|errors| json!({ "record": at, "errors": errors })),
            Err(reason) => Err(json!({
                "record": at,
                "errors": [{ "field": "", "rule": "input", "message": reason }]
            })),
        };
        match result {
            Ok(mapped) => {
                self.mapped += 1;
                write_line(&mut self.lines, &mapped);
            }
            Err(failure) => {
                self.failed += 1;
                write_line(&mut self.failure_lines, &failure);
            }
        }
    }
}

/// Appends `value` to `out` as one NDJSON line.
fn write_line(out: &mut Vec<u8>, value: &Value) {
    let start = out.len();
    if let Err(e) = serde_json::to_writer(&mut *out, value) {
        out.truncate(start);
        out.extend_from_slice(format!("{{\"error\":{:?}}}", e.to_string()).as_bytes());
    }
    out.push(b'\n');
}

/// Runs `f` on slices of `items` on up to `workers` threads (this one
/// included) and returns the results in the order of the slices. The
/// slices are small enough that a thread slowed by other work on the
/// machine leaves the rest to the others.
fn in_parallel<'a, T: Sync, U: Send>(
    items: &'a [T],
    workers: usize,
    f: impl Fn(&'a [T]) -> U + Sync,
) -> Vec<U> {
    if workers <= 1 || items.len() < 64 {
        return vec![f(items)];
    }
    let slices: Vec<&'a [T]> = items.chunks(items.len().div_ceil(workers * 4)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(slice) = slices.get(i) else {
                return done;
            };
            done.push((i, f(slice)));
        }
    };
    let mut results: Vec<(usize, U)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..workers).map(|_| scope.spawn(work)).collect();
        let mut results = work();
        for helper in helpers {
            results.extend(
                helper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        results
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, u)| u).collect()
}

/// Records read for one batch: NDJSON lines in one buffer (no allocation
/// per line), or records already parsed (JSON arrays, CSV).
#[derive(Default)]
struct Batch {
    text: Vec<u8>,
    items: Vec<(u64, Result<Item, String>)>,
}

enum Item {
    /// A line of `Batch::text`, checked to be UTF-8 and trimmed.
    Line(std::ops::Range<usize>),
    Value(Value),
}

impl Batch {
    fn clear(&mut self) {
        self.text.clear();
        self.items.clear();
    }

    /// The record of `item`, parsed if it is a line.
    fn parse<'a>(
        &'a self,
        at: u64,
        item: &'a Result<Item, String>,
    ) -> Result<Cow<'a, Value>, String> {
        match item {
            Ok(Item::Value(v)) => Ok(Cow::Borrowed(v)),
            Ok(Item::Line(range)) => serde_json::from_slice(&self.text[range.clone()])
                .map(Cow::Owned)
                .map_err(|e| format!("line {at}: not JSON: {e}")),
            Err(reason) => Err(reason.clone()),
        }
    }
}

/// Resolves every lookup of a batch with one store query per entity and
/// system.
async fn resolve(
    mapping: &Mapping,
    store: &crate::store::Store,
    batch: &[(u64, Result<Cow<'_, Value>, String>)],
) -> anyhow::Result<Lookups> {
    let records = batch
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().map(|v| &**v));
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

/// Where records come from.
enum Records {
    Ndjson(NdjsonRecords),
    /// Parsed records with their line (CSV) or index (JSON array); a record
    /// that cannot be read is an `Err` with the reason.
    Values(Box<dyn Iterator<Item = (u64, Result<Value, String>)>>),
}

impl Records {
    /// Adds up to `max` records to `batch`, none at the end of the input.
    /// A record that cannot be read is an `Err` with the reason, and
    /// reading goes on.
    fn fill(&mut self, batch: &mut Batch, max: usize) {
        match self {
            Records::Ndjson(lines) => lines.fill(batch, max),
            Records::Values(values) => batch.items.extend(
                values
                    .by_ref()
                    .take(max)
                    .map(|(at, v)| (at, v.map(Item::Value))),
            ),
        }
    }
}

/// Input records, each with its line (NDJSON, CSV) or index (JSON array).
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
            Records::Values(Box::new(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (i as u64 + 1, Ok(v))),
            ))
        }
        InputFormat::Csv => {
            let mut csv = csv::ReaderBuilder::new()
                .flexible(false)
                .from_reader(reader);
            let headers = csv.headers().context("cannot read the CSV header")?.clone();
            Records::Values(Box::new(csv.into_records().enumerate().map(
                move |(i, row)| {
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
                            Value::Object(fields)
                        });
                    (line, record)
                },
            )))
        }
        InputFormat::Ndjson | InputFormat::Auto => {
            Records::Ndjson(NdjsonRecords { reader, line: 0 })
        }
    })
}

struct NdjsonRecords {
    reader: BufReader<CountingReader>,
    line: u64,
}

/// Lines longer than this are reported as errors rather than parsed.
const MAX_LINE: usize = 16 * 1024 * 1024;

impl NdjsonRecords {
    /// Reads up to `max` non-blank lines into `batch`, straight into its
    /// text buffer.
    fn fill(&mut self, batch: &mut Batch, max: usize) {
        let mut added = 0;
        while added < max {
            let start = batch.text.len();
            self.line += 1;
            let item = match self.reader.read_until(b'\n', &mut batch.text) {
                Ok(0) => return,
                Ok(_) => match std::str::from_utf8(&batch.text[start..]) {
                    // As `BufRead::read_line` says it.
                    Err(_) => Err("cannot read line: stream did not contain valid UTF-8".into()),
                    Ok(text) => {
                        let trimmed = text.trim();
                        let from = start + (trimmed.as_ptr() as usize - text.as_ptr() as usize);
                        if trimmed.is_empty() {
                            batch.text.truncate(start);
                            continue;
                        } else if trimmed.len() > MAX_LINE {
                            Err(format!(
                                "line is {} bytes; the limit is {MAX_LINE}",
                                trimmed.len()
                            ))
                        } else {
                            Ok(Item::Line(from..from + trimmed.len()))
                        }
                    }
                },
                Err(e) => Err(format!("cannot read line: {e}")),
            };
            if item.is_err() {
                batch.text.truncate(start);
            }
            batch.items.push((self.line, item));
            added += 1;
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
