//! The `bank` driver: bank statement files dropped into a folder, pulled
//! as canonical bank transaction records.
//!
//! Each pull reads the folder's statement files, oldest first, and yields
//! their lines as pages of [`RawRecord`]s whose data is the canonical
//! [`BankTransaction`](crate::model::BankTransaction) JSON and whose
//! external id is the line's [`line_keys`](crate::bank::line_keys) key, so
//! importing a statement twice (or an intraday report and the end-of-day
//! statement repeating its lines) adds nothing the second time.
//!
//! # A file is imported whole or not at all
//! A bank's file is the truth about an account; half of it is not. Every
//! file is therefore read twice, both times streaming:
//!
//! 1. the first reading checks the whole file parses (and computes nothing
//!    it keeps but counters);
//! 2. only then does the second reading yield its lines as pages.
//!
//! A file that does not parse yields no record at all: the pull yields a
//! page without records carrying a [`Notice::SetAside`] with the parser's
//! located reason, and acknowledging that page moves the file to `failed/`
//! beside a `NAME.reason.txt`. The pull goes on with the next file, so one
//! broken file never blocks the folder.
//!
//! # Consumed on acknowledgement
//! Pages never span two files. A file moves to `done/` when every page of
//! it has been acknowledged; a page handed back (`nack` with requeue) or
//! never acknowledged leaves the file in place to be read again, whole, by
//! the next pull (its lines' keys make the re-read harmless). A page set
//! aside (`nack` without requeue) moves the whole file to `failed/` with the
//! reason given. The cursor has no meaning for a drop folder and passes
//! through unchanged.
//!
//! # Statement balances
//! The last page of each file carries one [`Notice::Statement`] per
//! statement in it: header, line count, stated balances, the
//! opening + Σ lines = closing check and the statement's fingerprint, so the
//! sync engine can raise `statement_balance_mismatch` in the same
//! transaction that commits the lines.
//!
//! # Memory
//! camt, MT940/942 and BAI2 files are parsed as streams on a blocking
//! thread that hands lines over through a channel of one page, so a 500 MB
//! statement needs a few pages of memory plus 16 bytes per distinct line
//! (to number repeated lines the way [`line_keys`](crate::bank::line_keys)
//! does). OFX and CSV files are read whole, up to
//! [`MAX_WHOLE_FILE`](crate::bank::MAX_WHOLE_FILE).
//!
//! One pull at a time per folder: two daemons sharing a drop folder would
//! both read its files (harmlessly, but twice).

pub mod definition;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};
use futures_util::StreamExt;
use futures_util::stream;
use secrecy::ExposeSecret;
use tokio::sync::mpsc;

use super::{
    Ack, Capabilities, Connector, ConnectorError, Cursor, Definition, Driver, EntityCapabilities,
    ErrorKind, Instance, Notice, Page, PageStream, RawRecord,
};
use crate::bank::{
    self, BankError, CsvProfile, Format, StatementDigest, StatementEnd, StatementEvent,
    StatementHeader, StatementSummary, StreamError,
};
use crate::model::{BankTransaction, ExternalId};
use definition::{ENTITY, FormatChoice, Settings};

pub static DRIVER: Driver = Driver {
    name: "bank",
    summary: "bank statement files (camt.052/053/054, MT940/942, BAI2, OFX, CSV) from a drop folder",
    check: definition::check,
    open,
};

/// Where read files go, inside the drop folder.
pub const DONE_DIR: &str = "done";
/// Where unreadable files go, with a `NAME.reason.txt` beside each.
pub const FAILED_DIR: &str = "failed";

/// Bytes sniffed to detect a file's format.
const HEAD_BYTES: u64 = 64 * 1024;

fn open(def: &Definition, instance: &Instance) -> Result<Arc<dyn Connector>, ConnectorError> {
    let settings = definition::settings(&def.source).map_err(|errors| {
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        ConnectorError::config(&instance.name, all.join("; "))
    })?;
    Ok(Arc::new(BankConnector::new(
        &instance.name,
        settings,
        instance,
    )?))
}

/// A drop folder of statement files.
#[derive(Debug)]
pub struct BankConnector {
    shared: Arc<Shared>,
}

/// What a pull and its page acknowledgements need, outliving the pull.
#[derive(Debug)]
struct Shared {
    name: String,
    folder: PathBuf,
    glob: glob::Pattern,
    format: FormatChoice,
    profiles: Option<PathBuf>,
    page_size: usize,
    settle: Duration,
}

impl BankConnector {
    /// A connector over a checked definition's settings; `${…}` in the
    /// paths are filled from `instance`.
    pub fn new(
        name: &str,
        settings: Settings,
        instance: &Instance,
    ) -> Result<BankConnector, ConnectorError> {
        let folder = PathBuf::from(instance.expand(&settings.path)?.expose_secret());
        let profiles = match &settings.profiles {
            Some(p) => Some(PathBuf::from(instance.expand(p)?.expose_secret())),
            None => None,
        };
        Ok(BankConnector {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                folder,
                glob: settings.glob,
                format: settings.format,
                profiles,
                page_size: settings.page_size,
                settle: Duration::from_millis(settings.settle_ms),
            }),
        })
    }
}

#[async_trait]
impl Connector for BankConnector {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.entities.insert(
            ENTITY.to_owned(),
            EntityCapabilities {
                pull: true,
                ..EntityCapabilities::default()
            },
        );
        caps
    }

    /// The folder exists, `done/` and `failed/` can be made in it, and the
    /// CSV profiles (when configured) read.
    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        let shared = self.shared.clone();
        blocking(&self.shared.name, move || {
            shared.check_folder()?;
            for sub in [DONE_DIR, FAILED_DIR] {
                let dir = shared.folder.join(sub);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| shared.io_error(&format!("cannot create {}", dir.display()), e))?;
            }
            shared.load_profiles().map(|_| ())
        })
        .await
    }

    fn pull<'a>(&'a self, entity: &'a str, cursor: Option<Cursor>) -> PageStream<'a> {
        if entity != ENTITY {
            let err = ConnectorError::config(
                &self.shared.name,
                format!("a bank source has one entity, `{ENTITY}`, not `{entity}`"),
            );
            return stream::once(async move { Err(err) }).boxed();
        }
        let pull = Pull {
            shared: self.shared.clone(),
            cursor: cursor.unwrap_or_default(),
            started: false,
            done: false,
            files: VecDeque::new(),
            profiles: Arc::new(Vec::new()),
            current: None,
        };
        stream::unfold(pull, |mut pull| async move {
            let next = pull.next_page().await;
            next.map(|page| (page, pull))
        })
        .boxed()
    }
}

impl Shared {
    fn io_error(&self, what: &str, e: std::io::Error) -> ConnectorError {
        use std::io::ErrorKind as Io;
        let kind = match e.kind() {
            // A wrong path or missing rights will not fix themselves.
            Io::NotFound | Io::PermissionDenied | Io::NotADirectory => ErrorKind::Config,
            _ => ErrorKind::Unavailable,
        };
        ConnectorError::new(kind, &self.name, format!("{what}: {e}")).with_source(e)
    }

    fn check_folder(&self) -> Result<(), ConnectorError> {
        let meta = std::fs::metadata(&self.folder).map_err(|e| {
            self.io_error(
                &format!("cannot read the drop folder {}", self.folder.display()),
                e,
            )
        })?;
        if !meta.is_dir() {
            return Err(ConnectorError::config(
                &self.name,
                format!("the drop folder {} is not a folder", self.folder.display()),
            ));
        }
        Ok(())
    }

    /// The CSV profiles, and the fixed format's profile is among them.
    fn load_profiles(&self) -> Result<Vec<CsvProfile>, ConnectorError> {
        let mut profiles = Vec::new();
        if let Some(dir) = &self.profiles {
            let entries = std::fs::read_dir(dir).map_err(|e| {
                self.io_error(
                    &format!("cannot read the CSV profiles folder {}", dir.display()),
                    e,
                )
            })?;
            let mut paths: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            paths.sort();
            for path in paths {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.io_error(&format!("cannot read CSV profile {}", path.display()), e)
                })?;
                let profile: CsvProfile = toml::from_str(&text).map_err(|e| {
                    ConnectorError::config(
                        &self.name,
                        format!("invalid CSV profile {}: {}", path.display(), e.message()),
                    )
                })?;
                profiles.push(profile);
            }
        }
        if let FormatChoice::Fixed(Format::Csv(name)) = &self.format
            && !profiles.iter().any(|p| &p.name == name)
        {
            let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
            return Err(ConnectorError::config(
                &self.name,
                format!(
                    "no CSV profile `{name}` in {}; found: {names:?}",
                    self.profiles
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            ));
        }
        Ok(profiles)
    }

    /// The statement files ready to read, oldest first.
    fn list(&self) -> Result<VecDeque<PathBuf>, ConnectorError> {
        self.check_folder()?;
        let what = || format!("cannot list the drop folder {}", self.folder.display());
        let entries = std::fs::read_dir(&self.folder).map_err(|e| self.io_error(&what(), e))?;
        let now = SystemTime::now();
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.io_error(&what(), e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                tracing::warn!(
                    message = "Skipped a file whose name is not UTF-8.",
                    system = %self.name,
                    file = ?file_name
                );
                continue;
            };
            if name.starts_with('.') || !self.glob.matches(name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if now.duration_since(modified).unwrap_or_default() < self.settle {
                continue;
            }
            files.push((modified, name.to_owned()));
        }
        files.sort();
        Ok(files
            .into_iter()
            .map(|(_, name)| self.folder.join(name))
            .collect())
    }

    /// Moves `file` into `sub` (`done` or `failed`) without overwriting a
    /// file already there; returns where it went.
    fn archive(&self, file: &Path, sub: &str) -> Result<PathBuf, ConnectorError> {
        let dir = self.folder.join(sub);
        std::fs::create_dir_all(&dir)
            .map_err(|e| self.io_error(&format!("cannot create {}", dir.display()), e))?;
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let (stem, ext) = match name.rsplit_once('.') {
            Some((s, e)) if !s.is_empty() => (s, Some(e)),
            _ => (name, None),
        };
        let mut target = dir.join(name);
        let mut n = 1;
        while target.exists() {
            target = dir.join(match ext {
                Some(ext) => format!("{stem}-{n}.{ext}"),
                None => format!("{stem}-{n}"),
            });
            n += 1;
        }
        std::fs::rename(file, &target).map_err(|e| {
            self.io_error(
                &format!("cannot move {} to {}", file.display(), target.display()),
                e,
            )
        })?;
        Ok(target)
    }

    /// Moves `file` to `failed/` and writes the reason beside it.
    fn fail(&self, file: &Path, reason: &str) -> Result<(), ConnectorError> {
        let target = self.archive(file, FAILED_DIR)?;
        let mut note = target.clone().into_os_string();
        note.push(".reason.txt");
        let note = PathBuf::from(note);
        std::fs::write(&note, format!("{reason}\n"))
            .map_err(|e| self.io_error(&format!("cannot write {}", note.display()), e))?;
        tracing::warn!(
            message = "Moved an unreadable bank file aside.",
            system = %self.name,
            file = %target.display(),
            %reason
        );
        Ok(())
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    system: &str,
    f: impl FnOnce() -> Result<T, ConnectorError> + Send + 'static,
) -> Result<T, ConnectorError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ConnectorError::unavailable(
            system,
            format!("a file task failed: {e}"),
        ))
    })
}

/// One pull over the folder.
struct Pull {
    shared: Arc<Shared>,
    cursor: Cursor,
    started: bool,
    done: bool,
    files: VecDeque<PathBuf>,
    profiles: Arc<Vec<CsvProfile>>,
    current: Option<FileRead>,
}

impl Pull {
    async fn next_page(&mut self) -> Option<Result<Page, ConnectorError>> {
        if self.done {
            return None;
        }
        let result = self.advance().await;
        match result {
            Ok(Some(page)) => Some(Ok(page)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                self.current = None;
                Some(Err(e))
            }
        }
    }

    async fn advance(&mut self) -> Result<Option<Page>, ConnectorError> {
        if !self.started {
            self.started = true;
            let shared = self.shared.clone();
            let (profiles, files) = blocking(&self.shared.name, move || {
                Ok((shared.load_profiles()?, shared.list()?))
            })
            .await?;
            self.profiles = Arc::new(profiles);
            self.files = files;
        }
        loop {
            if let Some(read) = &mut self.current {
                let page = read.next_page(&self.cursor).await?;
                if read.finished {
                    self.current = None;
                }
                return Ok(Some(page));
            }
            let Some(path) = self.files.pop_front() else {
                return Ok(None);
            };
            let shared = self.shared.clone();
            let profiles = self.profiles.clone();
            let check_path = path.clone();
            let plan = blocking(&self.shared.name, move || {
                Ok(plan_file(&shared, &profiles, &check_path))
            })
            .await?;
            match plan {
                Plan::Gone => continue,
                Plan::Io(e) => {
                    return Err(self
                        .shared
                        .io_error(&format!("cannot read {}", path.display()), e));
                }
                Plan::Bad(reason) => return Ok(Some(self.failure_page(path, reason))),
                Plan::Good { format, stamp } => {
                    self.current = Some(FileRead::start(
                        self.shared.clone(),
                        path,
                        format,
                        self.profiles.clone(),
                        stamp,
                    ));
                }
            }
        }
    }

    /// A page without records for a file that cannot be read; its
    /// acknowledgement moves the file to `failed/`.
    fn failure_page(&self, path: PathBuf, reason: String) -> Page {
        let name = file_name(&path);
        Page {
            records: Vec::new(),
            rejects: Vec::new(),
            cursor: self.cursor.clone(),
            notices: vec![Notice::SetAside {
                item: name.clone(),
                to: format!("{FAILED_DIR}/{name}"),
                reason: reason.clone(),
            }],
            ack: Some(Box::new(FailedFileAck {
                shared: self.shared.clone(),
                path,
                reason,
            })),
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Size and modification time, to notice a file changing between readings.
type Stamp = (u64, Option<SystemTime>);

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.len(), meta.modified().ok()))
}

/// What the first reading of a file found.
enum Plan {
    /// Removed since the folder was listed.
    Gone,
    /// Could not be read (a transient I/O failure): the pull stops.
    Io(std::io::Error),
    /// Not a statement this source can read: set it aside.
    Bad(String),
    /// Parses as `format`; read it again for its lines.
    Good { format: Format, stamp: Stamp },
}

/// The first reading: which format, and does the whole file parse.
fn plan_file(shared: &Shared, profiles: &[CsvProfile], path: &Path) -> Plan {
    let before = match stamp(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Plan::Gone,
        Err(e) => return Plan::Io(e),
    };
    let format = match &shared.format {
        FormatChoice::Fixed(f) => f.clone(),
        FormatChoice::Auto => {
            let mut head = Vec::new();
            let read = File::open(path).and_then(|f| f.take(HEAD_BYTES).read_to_end(&mut head));
            if let Err(e) = read {
                return Plan::Io(e);
            }
            match bank::detect(&head) {
                Some(f) => f,
                None => match bank::csv::detect_profile(&head, profiles) {
                    Some(p) => Format::Csv(p.name.clone()),
                    None => {
                        return Plan::Bad(if profiles.is_empty() {
                            "not a camt, MT940/942, BAI2 or OFX file (and no CSV profiles are configured)".to_owned()
                        } else {
                            format!(
                                "not a camt, MT940/942, BAI2 or OFX file, and none of the {} CSV profile(s) matches its header",
                                profiles.len()
                            )
                        });
                    }
                },
            }
        }
    };
    match read_file(path, &format, profiles, &mut |_| Ok(())) {
        Ok(()) => Plan::Good {
            format,
            stamp: before,
        },
        Err(ReadError::Bad(reason)) => Plan::Bad(reason),
        Err(ReadError::Io(e)) => Plan::Io(e),
        Err(ReadError::Stopped) => Plan::Io(std::io::Error::other("reading stopped")),
    }
}

/// What a reading of a file hands on.
enum Out {
    Line(RawRecord),
    Statement(Box<StatementSummary>),
}

enum ReadError {
    /// The content is not a valid statement: the parser's located reason.
    Bad(String),
    /// Reading failed.
    Io(std::io::Error),
    /// The receiver went away (the pull was dropped).
    Stopped,
}

/// Reads a whole file as `format`, handing on each line as a record and
/// each statement's summary at its end. Streams camt, MT940/942 and BAI2.
fn read_file(
    path: &Path,
    format: &Format,
    profiles: &[CsvProfile],
    emit: &mut dyn FnMut(Out) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let file = File::open(path).map_err(ReadError::Io)?;
    if let Format::Csv(name) = format {
        let Some(profile) = profiles.iter().find(|p| &p.name == name) else {
            return Err(ReadError::Bad(format!("no CSV profile `{name}`")));
        };
        let size = file.metadata().map_err(ReadError::Io)?.len();
        if size > bank::MAX_WHOLE_FILE as u64 {
            return Err(ReadError::Bad(format!(
                "CSV files are read whole; this one is {size} bytes, more than {}",
                bank::MAX_WHOLE_FILE
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        BufReader::new(file)
            .read_to_end(&mut bytes)
            .map_err(ReadError::Io)?;
        let statements = bank::csv::parse_csv(&bytes, profile).map_err(bank_error)?;
        drop(bytes);
        for st in statements {
            let mut sink = Digester::default();
            sink.event(
                StatementEvent::Header(StatementHeader {
                    format: st.format,
                    id: st.id,
                    account: st.account,
                    servicer: st.servicer,
                    currency: st.currency,
                    sequence: st.sequence,
                    created_at: st.created_at,
                    message_id: st.message_id,
                }),
                emit,
            )?;
            for t in st.transactions {
                sink.event(StatementEvent::Transaction(Box::new(t)), emit)?;
            }
            sink.event(
                StatementEvent::End(StatementEnd {
                    balances: st.balances,
                    warnings: st.warnings,
                }),
                emit,
            )?;
        }
        return Ok(());
    }
    let mut sink = Digester::default();
    let reader = BufReader::with_capacity(64 * 1024, file);
    bank::parse_reader(reader, format.clone(), |event| sink.event(event, emit)).map_err(|e| match e
    {
        StreamError::Parse(e) => bank_error(e),
        StreamError::Sink(e) => e,
    })
}

fn bank_error(e: BankError) -> ReadError {
    match e.kind() {
        bank::ErrorKind::Io(_) => ReadError::Io(std::io::Error::other(e.to_string())),
        _ => ReadError::Bad(e.to_string()),
    }
}

/// Turns parser events into records keyed by [`StatementDigest`].
#[derive(Default)]
struct Digester {
    current: Option<StatementDigest>,
}

impl Digester {
    fn event(
        &mut self,
        event: StatementEvent,
        emit: &mut dyn FnMut(Out) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        match event {
            StatementEvent::Header(h) => {
                self.current = Some(StatementDigest::new(h));
                Ok(())
            }
            StatementEvent::Transaction(t) => {
                let Some(digest) = self.current.as_mut() else {
                    return Err(ReadError::Bad("a line outside any statement".into()));
                };
                let key = digest.line(&t);
                let record = record(key, &t)?;
                emit(Out::Line(record))
            }
            StatementEvent::End(end) => match self.current.take() {
                Some(digest) => emit(Out::Statement(Box::new(digest.finish(end)))),
                None => Err(ReadError::Bad("a statement end without its start".into())),
            },
        }
    }
}

fn record(key: String, t: &BankTransaction) -> Result<RawRecord, ReadError> {
    let external_id = ExternalId::parse(&key).map_err(|e| {
        ReadError::Bad(format!(
            "line of {} booked {} has no usable key: {e}",
            t.account, t.booking_date
        ))
    })?;
    let data = serde_json::to_value(t)
        .map_err(|e| ReadError::Bad(format!("a line cannot be written as JSON: {e}")))?;
    Ok(RawRecord {
        external_id,
        updated_at: Some(DateTime::<Utc>::from_naive_utc_and_offset(
            t.booking_date.and_time(NaiveTime::MIN),
            Utc,
        )),
        data,
    })
}

/// The second reading of a file that parsed: a blocking thread streams
/// its lines through a channel of one page.
struct FileRead {
    shared: Arc<Shared>,
    name: String,
    rx: mpsc::Receiver<Out>,
    reader: Option<tokio::task::JoinHandle<Result<(), ReadError>>>,
    lookahead: Option<RawRecord>,
    statements: Vec<Notice>,
    progress: Arc<Mutex<Progress>>,
    path: PathBuf,
    finished: bool,
}

impl FileRead {
    fn start(
        shared: Arc<Shared>,
        path: PathBuf,
        format: Format,
        profiles: Arc<Vec<CsvProfile>>,
        before: Stamp,
    ) -> FileRead {
        let (tx, rx) = mpsc::channel(shared.page_size);
        let read_path = path.clone();
        let reader = tokio::task::spawn_blocking(move || {
            match stamp(&read_path) {
                Ok(now) if now == before => {}
                Ok(_) => {
                    return Err(ReadError::Io(std::io::Error::other(
                        "the file changed while it was being read; it is read again on the next pull",
                    )));
                }
                Err(e) => return Err(ReadError::Io(e)),
            }
            read_file(&read_path, &format, &profiles, &mut |out| {
                tx.blocking_send(out).map_err(|_| ReadError::Stopped)
            })
        });
        FileRead {
            name: file_name(&path),
            shared,
            rx,
            reader: Some(reader),
            lookahead: None,
            statements: Vec::new(),
            progress: Arc::new(Mutex::new(Progress::default())),
            path,
            finished: false,
        }
    }

    /// The file's next page; the last one carries its statements.
    async fn next_page(&mut self, cursor: &Cursor) -> Result<Page, ConnectorError> {
        let size = self.shared.page_size;
        let mut records = Vec::with_capacity(size);
        records.extend(self.lookahead.take());
        loop {
            match self.rx.recv().await {
                Some(Out::Line(r)) if records.len() == size => {
                    self.lookahead = Some(r);
                    break;
                }
                Some(Out::Line(r)) => records.push(r),
                Some(Out::Statement(summary)) => self.statements.push(Notice::Statement {
                    source: self.name.clone(),
                    summary,
                }),
                None => {
                    self.finish().await?;
                    break;
                }
            }
        }
        let last = self.finished;
        {
            let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            p.yielded += 1;
            p.complete = last;
        }
        Ok(Page {
            records,
            rejects: Vec::new(),
            cursor: cursor.clone(),
            notices: if last {
                std::mem::take(&mut self.statements)
            } else {
                Vec::new()
            },
            ack: Some(Box::new(FileAck {
                shared: self.shared.clone(),
                path: self.path.clone(),
                progress: self.progress.clone(),
            })),
        })
    }

    /// The reading thread ended: did it read the whole file?
    async fn finish(&mut self) -> Result<(), ConnectorError> {
        let Some(reader) = self.reader.take() else {
            return Ok(());
        };
        let what = format!("cannot read {}", self.path.display());
        match reader.await {
            Ok(Ok(())) => {
                self.finished = true;
                Ok(())
            }
            Ok(Err(ReadError::Io(e))) => Err(self.shared.io_error(&what, e)),
            // It parsed a moment ago: the file was replaced meanwhile.
            Ok(Err(ReadError::Bad(reason))) => Err(ConnectorError::unavailable(
                &self.shared.name,
                format!("{what}: it changed while it was being read: {reason}"),
            )),
            Ok(Err(ReadError::Stopped)) => Err(ConnectorError::unavailable(
                &self.shared.name,
                format!("{what}: reading stopped"),
            )),
            Err(e) => Err(ConnectorError::unavailable(
                &self.shared.name,
                format!("{what}: {e}"),
            )),
        }
    }
}

/// How the pages of one file were answered.
#[derive(Debug, Default)]
struct Progress {
    yielded: usize,
    acked: usize,
    /// The file's last page has been yielded.
    complete: bool,
    /// A page was handed back or set aside: the file is not done.
    handed_back: bool,
    /// The file has been moved.
    settled: bool,
}

/// Acknowledges one page of a file; the last acknowledgement of a file
/// whose pages were all acknowledged moves it to `done/`.
struct FileAck {
    shared: Arc<Shared>,
    path: PathBuf,
    progress: Arc<Mutex<Progress>>,
}

#[async_trait]
impl Ack for FileAck {
    async fn ack(self: Box<Self>) -> Result<(), ConnectorError> {
        let move_it = {
            let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            p.acked += 1;
            let all = p.complete && p.acked == p.yielded && !p.handed_back && !p.settled;
            p.settled |= all;
            all
        };
        if !move_it {
            return Ok(());
        }
        let shared = self.shared.clone();
        let path = self.path.clone();
        let result = blocking(&self.shared.name, move || {
            shared.archive(&path, DONE_DIR).map(|_| ())
        })
        .await;
        if result.is_err() {
            // Not moved: the file is read again next time, harmlessly.
            self.progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .settled = false;
        }
        result
    }

    async fn nack(self: Box<Self>, requeue: bool, reason: &str) -> Result<(), ConnectorError> {
        let set_aside = {
            let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            p.handed_back = true;
            let first = !requeue && !p.settled;
            p.settled |= first;
            first
        };
        if !set_aside {
            return Ok(());
        }
        let shared = self.shared.clone();
        let path = self.path.clone();
        let reason = format!("set aside by the sync engine: {reason}");
        blocking(&self.shared.name, move || shared.fail(&path, &reason)).await
    }
}

/// Acknowledges the page reporting an unreadable file: moves it to
/// `failed/` with its reason.
struct FailedFileAck {
    shared: Arc<Shared>,
    path: PathBuf,
    reason: String,
}

#[async_trait]
impl Ack for FailedFileAck {
    async fn ack(self: Box<Self>) -> Result<(), ConnectorError> {
        let FailedFileAck {
            shared,
            path,
            reason,
        } = *self;
        let name = shared.name.clone();
        blocking(&name, move || shared.fail(&path, &reason)).await
    }

    async fn nack(self: Box<Self>, requeue: bool, _reason: &str) -> Result<(), ConnectorError> {
        if requeue { Ok(()) } else { self.ack().await }
    }
}
