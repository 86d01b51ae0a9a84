//! The `file` driver: CSV, JSON-array and NDJSON files, single files or
//! drop folders, and folders that pushes write files into.
//!
//! **Reading.** Files are streamed page by page (never loaded whole) and
//! decoded from their encoding as they stream. A page holds at most
//! `page_size` records of one file; its cursor's token names the file (with
//! its size and modification time) and how many records of it are behind
//! the page, so a resumed pull skips what was committed. Records that cannot
//! be read come with the page as [`Reject`]s (`invoices.csv:17` and why),
//! never silently dropped, and the rest of the file is still read.
//!
//! **Drop folders** consume what they read: each page carries an [`Ack`].
//! When every page of a file is acknowledged the file moves to `done/`
//! beside it (or to `failed/` when it ended in a problem that stopped its
//! reading, such as a cut-off JSON array); a page handed back with
//! `nack(requeue = false)` moves the file to `failed/` with
//! `<file>.reason.txt`. Moves are renames within the folder, so they are
//! atomic; a name already taken in `done/` gets a `.1`, `.2` … before its
//! extension. One concord process should own a drop folder.
//!
//! **External ids** come from the entity's `id` field, or are
//! `<file name>:<line>` (the line the record starts on).
//!
//! **Writing.** A push writes one NDJSON or CSV file per batch into the
//! entity's `push.folder`: written to a hidden temporary file in that
//! folder, flushed to disk, then renamed, so readers never see half a file
//! and no temporary file is left behind. The name holds a hash of the
//! batch's idempotency keys; pushing the same batch again while its file
//! is still there writes nothing and answers the same.

mod decode;
pub mod definition;
mod records;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures_util::stream;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use self::definition::{Entity, Format, Place, Push, TimeFormat, UpdatedAt};
use self::records::{Item, RecordReader};
use super::{
    Ack, Capabilities, Change, Connector, ConnectorError, Cursor, Definition, Driver,
    EntityCapabilities, ErrorKind, Instance, Page, PageStream, PushOutcome, RawRecord, Reject,
};
use crate::located::{LoadError, SourceFile};
use crate::model::ExternalId;

/// The driver, registered in [`super::DRIVERS`].
pub static DRIVER: Driver = Driver {
    name: "file",
    summary: "CSV, JSON and NDJSON files and drop folders",
    check,
    open,
};

fn check(source: &SourceFile) -> Result<(), Vec<LoadError>> {
    definition::load(source).map(|_| ())
}

fn open(def: &Definition, instance: &Instance) -> Result<Arc<dyn Connector>, ConnectorError> {
    let entities = definition::load(&def.source).map_err(|errors| {
        ConnectorError::config(
            &instance.name,
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    Ok(Arc::new(FileConnector::new(
        &instance.name,
        entities,
        instance,
    )?))
}

/// An entity with its paths expanded.
#[derive(Debug)]
struct Resolved {
    e: Entity,
    place: Located,
    push_folder: Option<PathBuf>,
}

#[derive(Debug)]
enum Located {
    File(PathBuf),
    Folder {
        dir: PathBuf,
        pattern: glob::Pattern,
    },
}

/// How far the sync engine has committed one file of a drop folder.
#[derive(Debug, Default)]
struct Progress {
    fingerprint: String,
    /// Records `[0, acked)` are committed.
    acked: u64,
    /// Committed ranges after a gap (acknowledged out of order).
    pending: BTreeMap<u64, u64>,
    /// The number of records, once the last page was read.
    total: Option<u64>,
    /// Why reading stopped early, when it did.
    fatal: Option<String>,
}

type ProgressMap = Arc<Mutex<HashMap<PathBuf, Progress>>>;

/// Files of one system.
pub struct FileConnector {
    system: String,
    entities: BTreeMap<String, Resolved>,
    progress: ProgressMap,
}

impl std::fmt::Debug for FileConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileConnector")
            .field("system", &self.system)
            .finish_non_exhaustive()
    }
}

/// Where a pull stands in a file: saved as the cursor's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Token {
    file: String,
    /// Size and modification time: a different file under the same name
    /// starts from its beginning.
    fp: String,
    /// Records of the file behind the cursor.
    offset: u64,
    /// The whole file was read.
    #[serde(default)]
    done: bool,
}

impl FileConnector {
    pub fn new(
        system: &str,
        entities: BTreeMap<String, Entity>,
        instance: &Instance,
    ) -> Result<FileConnector, ConnectorError> {
        let expand = |p: &str| -> Result<PathBuf, ConnectorError> {
            Ok(PathBuf::from(instance.expand(p)?.expose_secret()))
        };
        let mut out = BTreeMap::new();
        for (name, e) in entities {
            let place = match &e.place {
                Place::File(p) => Located::File(expand(p)?),
                Place::Folder { folder, pattern } => Located::Folder {
                    dir: expand(folder)?,
                    pattern: glob::Pattern::new(pattern).map_err(|g| {
                        ConnectorError::config(
                            system,
                            format!("entity `{name}`: `pattern`: {}", g.msg),
                        )
                    })?,
                },
            };
            let push_folder = match &e.push {
                Some(p) => Some(expand(&p.folder)?),
                None => None,
            };
            out.insert(
                name,
                Resolved {
                    e,
                    place,
                    push_folder,
                },
            );
        }
        Ok(FileConnector {
            system: system.to_owned(),
            entities: out,
            progress: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn entity(&self, name: &str) -> Result<&Resolved, ConnectorError> {
        self.entities.get(name).ok_or_else(|| {
            ConnectorError::config(
                &self.system,
                format!(
                    "no entity `{name}` in this definition; it has: {}",
                    self.entities.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    fn io_error(&self, doing: &str, path: &Path, e: io::Error) -> ConnectorError {
        let kind = match e.kind() {
            io::ErrorKind::PermissionDenied => ErrorKind::Auth,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Unavailable,
        };
        ConnectorError::new(
            kind,
            &self.system,
            format!("{doing} {}: {e}", path.display()),
        )
        .with_source(e)
    }

    /// Opens the next file of a pull, or `None` when there is none.
    async fn next_file(
        &self,
        r: &Resolved,
        st: &mut PullState,
    ) -> Result<Option<OpenFile>, ConnectorError> {
        loop {
            let (path, fp) = match &r.place {
                Located::File(path) => {
                    if st.single_done {
                        return Ok(None);
                    }
                    st.single_done = true;
                    let fp =
                        fingerprint(path).map_err(|e| self.io_error("cannot read", path, e))?;
                    (path.clone(), fp)
                }
                Located::Folder { dir, pattern } => {
                    if st.queue.is_empty() {
                        let listed = list_folder(dir, pattern, r.e.min_age_secs, &st.seen)
                            .map_err(|e| self.io_error("cannot list the drop folder", dir, e))?;
                        if listed.is_empty() {
                            return Ok(None);
                        }
                        for (p, _) in &listed {
                            st.seen.insert(p.clone());
                        }
                        st.queue.extend(
                            listed
                                .into_iter()
                                .filter(|(_, fp)| fp.is_some())
                                .map(|(p, fp)| (p, fp.unwrap_or_default())),
                        );
                        if st.queue.is_empty() {
                            continue;
                        }
                    }
                    st.queue.pop_front().expect("not empty")
                }
            };
            let name = file_name(&path);
            let mut skip = match &st.token {
                Some(t) if t.file == name && t.fp == fp => {
                    if t.done && matches!(r.place, Located::File(_)) {
                        return Ok(None); // unchanged since it was read
                    }
                    t.offset
                }
                _ => 0,
            };
            if matches!(r.place, Located::Folder { .. }) {
                let mut map = self.progress.lock().expect("progress lock");
                let p = map.entry(path.clone()).or_default();
                if p.fingerprint != fp {
                    *p = Progress {
                        fingerprint: fp.clone(),
                        ..Progress::default()
                    };
                }
                skip = skip.max(p.acked);
                p.acked = skip;
                p.pending.retain(|&s, _| s >= skip);
            }
            let file = match File::open(&path) {
                Ok(f) => f,
                // Moved away meanwhile (a drop folder shared by mistake).
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && matches!(r.place, Located::Folder { .. }) =>
                {
                    continue;
                }
                Err(e) => return Err(self.io_error("cannot open", &path, e)),
            };
            let mut reader = RecordReader::new(
                Box::new(io::BufReader::new(file)),
                r.e.format,
                r.e.encoding,
                &r.e.csv,
            );
            let skipped = tokio::task::spawn_blocking(move || {
                let mut n = 0;
                let mut fatal = None;
                while n < skip {
                    match reader.next_item() {
                        Some(Item::Bad {
                            fatal: true,
                            reason,
                            ..
                        }) => {
                            fatal = Some(reason);
                            n += 1;
                        }
                        Some(_) => n += 1,
                        None => break,
                    }
                }
                (reader, n, fatal)
            })
            .await
            .map_err(|e| {
                ConnectorError::unavailable(&self.system, format!("reading {name}: {e}"))
            })?;
            let (reader, index, fatal) = skipped;
            if let Some(f) = fatal {
                self.progress
                    .lock()
                    .expect("progress lock")
                    .entry(path.clone())
                    .or_default()
                    .fatal = Some(f);
            }
            return Ok(Some(OpenFile {
                path,
                name,
                fp,
                reader,
                index,
                lookahead: None,
            }));
        }
    }

    async fn page(&self, r: &Resolved, st: &mut PullState) -> Result<Option<Page>, ConnectorError> {
        loop {
            if st.current.is_none() {
                st.current = self.next_file(r, st).await?;
                if st.current.is_none() {
                    return Ok(None);
                }
            }
            let mut file = st.current.take().expect("a file is open");
            let size = r.e.page_size;
            let read = tokio::task::spawn_blocking(move || {
                let mut items = Vec::with_capacity(size);
                if let Some(i) = file.lookahead.take() {
                    items.push(i);
                }
                while items.len() < size {
                    match file.reader.next_item() {
                        Some(i) => items.push(i),
                        None => break,
                    }
                }
                file.lookahead = file.reader.next_item();
                (file, items)
            })
            .await
            .map_err(|e| {
                ConnectorError::unavailable(&self.system, format!("reading a file: {e}"))
            })?;
            let (mut file, items) = read;
            let start = file.index;
            file.index += items.len() as u64;
            let last = file.lookahead.is_none();
            let mut records = Vec::with_capacity(items.len());
            let mut rejects = Vec::new();
            let mut fatal = None;
            for item in items {
                match item {
                    Item::Record { line, data } => {
                        match self.record(&r.e, &file.name, line, data) {
                            Ok(rec) => records.push(rec),
                            Err(reject) => rejects.push(reject),
                        }
                    }
                    Item::Bad {
                        line,
                        reason,
                        raw,
                        fatal: f,
                    } => {
                        if f {
                            fatal = Some(format!("{}:{line}: {reason}", file.name));
                        }
                        rejects.push(Reject {
                            position: format!("{}:{line}", file.name),
                            reason,
                            raw,
                        });
                    }
                }
            }
            let folder = matches!(r.place, Located::Folder { .. });
            if start == file.index && !(last && folder) {
                // Nothing left of a file read to its end before.
                continue;
            }
            let token = Token {
                file: file.name.clone(),
                fp: file.fp.clone(),
                offset: file.index,
                done: last,
            };
            let ack: Option<Box<dyn Ack>> = match r.place {
                Located::Folder { .. } => {
                    let mut map = self.progress.lock().expect("progress lock");
                    let p = map.entry(file.path.clone()).or_default();
                    if let Some(f) = fatal {
                        p.fatal = Some(f);
                    }
                    if last {
                        p.total = Some(file.index);
                    }
                    Some(Box::new(FolderAck {
                        system: self.system.clone(),
                        progress: self.progress.clone(),
                        path: file.path.clone(),
                        fp: file.fp.clone(),
                        start,
                        end: file.index,
                    }))
                }
                Located::File(_) => None,
            };
            if !last {
                st.current = Some(file);
            }
            let cursor = Cursor {
                updated_at: None,
                id: None,
                token: Some(serde_json::to_string(&token).expect("a token serialises")),
            };
            return Ok(Some(Page {
                records,
                rejects,
                cursor,
                ack,
                notices: Vec::new(),
            }));
        }
    }

    /// A record read: its id and `updated_at`, or why they are unusable.
    fn record(
        &self,
        e: &Entity,
        file: &str,
        line: u64,
        data: Map<String, Value>,
    ) -> Result<RawRecord, Reject> {
        let reject = |reason: String, data: &Map<String, Value>| Reject {
            position: format!("{file}:{line}"),
            reason,
            raw: Value::Object(data.clone()).to_string(),
        };
        let id = match &e.id {
            None => format!("{file}:{line}"),
            Some(field) => match data.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                None | Some(Value::Null) => {
                    return Err(reject(
                        format!("no id: field `{field}` is missing or empty"),
                        &data,
                    ));
                }
                Some(other) => {
                    return Err(reject(
                        format!("id field `{field}` is {other}, not a string or number"),
                        &data,
                    ));
                }
            },
        };
        let external_id = ExternalId::parse(&id)
            .map_err(|err| reject(format!("the id is not usable: {err}"), &data))?;
        let updated_at = match &e.updated_at {
            None => None,
            Some(u) => parse_updated_at(u, &data).map_err(|m| reject(m, &data))?,
        };
        Ok(RawRecord {
            external_id,
            updated_at,
            data: Value::Object(data),
        })
    }
}

fn parse_updated_at(
    u: &UpdatedAt,
    data: &Map<String, Value>,
) -> Result<Option<DateTime<Utc>>, String> {
    let text = match data.get(&u.field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(format!("updated_at field `{}` is {other}", u.field)),
    };
    let bad = |e: String| format!("updated_at `{text}` does not match the format: {e}");
    let local = |n: NaiveDateTime| {
        let naive = n;
        use chrono::TimeZone as _;
        u.timezone
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| format!("updated_at `{text}` does not exist in {}", u.timezone))
    };
    Ok(Some(match &u.format {
        TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| bad(e.to_string()))?,
        TimeFormat::Unix => {
            let secs: i64 = text
                .parse()
                .map_err(|e: std::num::ParseIntError| bad(e.to_string()))?;
            DateTime::from_timestamp(secs, 0).ok_or_else(|| bad("out of range".into()))?
        }
        TimeFormat::Pattern(p) => {
            if let Ok(t) = DateTime::parse_from_str(&text, p) {
                t.with_timezone(&Utc)
            } else if let Ok(n) = NaiveDateTime::parse_from_str(&text, p) {
                local(n)?
            } else {
                let d = NaiveDate::parse_from_str(&text, p).map_err(|e| bad(e.to_string()))?;
                local(d.and_hms_opt(0, 0, 0).expect("midnight"))?
            }
        }
    }))
}

/// A file being read by a pull.
struct OpenFile {
    path: PathBuf,
    name: String,
    fp: String,
    reader: RecordReader,
    /// Records of the file consumed so far (read or skipped).
    index: u64,
    /// The record after the last page, read to know whether that page was
    /// the file's last.
    lookahead: Option<Item>,
}

struct PullState {
    token: Option<Token>,
    queue: VecDeque<(PathBuf, String)>,
    seen: HashSet<PathBuf>,
    current: Option<OpenFile>,
    single_done: bool,
    done: bool,
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn fingerprint(path: &Path) -> io::Result<String> {
    let meta = fs::metadata(path)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}-{mtime}", meta.len()))
}

/// Files of the folder matching the pattern and not seen yet, in name
/// order; files too young to read have no fingerprint.
fn list_folder(
    dir: &Path,
    pattern: &glob::Pattern,
    min_age_secs: u64,
    seen: &HashSet<PathBuf>,
) -> io::Result<Vec<(PathBuf, Option<String>)>> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !pattern.matches(&name) {
            continue;
        }
        let path = entry.path();
        if seen.contains(&path) {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) if m.is_file() => m,
            _ => continue,
        };
        let young = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age < Duration::from_secs(min_age_secs));
        let fp = if young {
            None
        } else {
            Some(fingerprint(&path)?)
        };
        out.push((path, fp));
    }
    out.sort();
    Ok(out)
}

/// Moves `path` into `sub/` beside it without replacing anything there;
/// returns the new path.
fn move_into(path: &Path, sub: &str) -> io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new(".")).join(sub);
    fs::create_dir_all(&dir)?;
    let name = file_name(path);
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_owned(), format!(".{e}")),
        _ => (name.clone(), String::new()),
    };
    let mut target = dir.join(&name);
    let mut n = 0;
    while target.exists() {
        n += 1;
        target = dir.join(format!("{stem}.{n}{ext}"));
    }
    fs::rename(path, &target)?;
    sync_dir(&dir);
    Ok(target)
}

fn sync_dir(dir: &Path) {
    // Makes renames durable; not every platform can open a folder.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `path` whole or not at all.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.{}.tmp", file_name(path), std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Acknowledges one page of a drop-folder file.
struct FolderAck {
    system: String,
    progress: ProgressMap,
    path: PathBuf,
    fp: String,
    start: u64,
    end: u64,
}

impl FolderAck {
    fn fail(&self, doing: &str, e: io::Error) -> ConnectorError {
        ConnectorError::unavailable(
            &self.system,
            format!("{doing} {}: {e}", self.path.display()),
        )
        .with_source(e)
    }
}

#[async_trait]
impl Ack for FolderAck {
    async fn ack(self: Box<Self>) -> Result<(), ConnectorError> {
        let finished = {
            let mut map = self.progress.lock().expect("progress lock");
            let Some(p) = map.get_mut(&self.path) else {
                return Ok(()); // already moved
            };
            if p.fingerprint != self.fp {
                return Ok(()); // the file was replaced meanwhile
            }
            if self.end > self.start || self.start == p.acked {
                p.pending.insert(self.start, self.end);
            }
            while let Some(end) = p.pending.remove(&p.acked) {
                p.acked = p.acked.max(end);
            }
            if p.total == Some(p.acked) {
                let fatal = p.fatal.clone();
                map.remove(&self.path);
                Some(fatal)
            } else {
                None
            }
        };
        match finished {
            None => Ok(()),
            Some(None) => match move_into(&self.path, "done") {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(self.fail("cannot move to done/", e)),
            },
            Some(Some(reason)) => self.to_failed(&format!(
                "{reason}\nThe records before this point were imported; nothing after it was read.\n"
            )),
        }
    }

    async fn nack(self: Box<Self>, requeue: bool, reason: &str) -> Result<(), ConnectorError> {
        if requeue {
            // The records are read again by the next pull: the committed
            // offset did not move.
            return Ok(());
        }
        let committed = {
            let mut map = self.progress.lock().expect("progress lock");
            map.remove(&self.path).map_or(0, |p| p.acked)
        };
        self.to_failed(&format!(
            "{reason}\nSet aside at records {}..{}; the first {committed} records were imported.\n",
            self.start, self.end
        ))
    }
}

impl FolderAck {
    fn to_failed(&self, reason: &str) -> Result<(), ConnectorError> {
        let target = match move_into(&self.path, "failed") {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.fail("cannot move to failed/", e)),
        };
        let note = target.with_file_name(format!("{}.reason.txt", file_name(&target)));
        write_atomically(&note, reason.as_bytes())
            .map_err(|e| self.fail("cannot write the reason beside", e))
    }
}

/// One pushed record, rendered.
enum Rendered {
    Line(Vec<u8>),
    Rejected(String),
}

fn csv_field(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn render(p: &Push, change: &Change) -> Rendered {
    let Value::Object(data) = &change.data else {
        return Rendered::Rejected("the record is not a JSON object".into());
    };
    let text = match p.format {
        Format::Csv => {
            let mut fields: Vec<String> =
                p.columns.iter().map(|c| csv_field(data.get(c))).collect();
            if p.idempotency_field.is_some() {
                fields.push(change.idempotency_key.clone());
            }
            csv_line(&fields)
        }
        _ => {
            let mut data = data.clone();
            if let Some(f) = &p.idempotency_field {
                data.insert(f.clone(), Value::String(change.idempotency_key.clone()));
            }
            format!("{}\n", Value::Object(data))
        }
    };
    match encode(p, &text) {
        Ok(bytes) => Rendered::Line(bytes),
        Err(c) => Rendered::Rejected(format!("{c:?} cannot be written in {}", p.encoding.name())),
    }
}

fn csv_line(fields: &[String]) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let _ = w.write_record(fields);
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// The text in the push encoding; `Err` with the first character it cannot
/// hold.
fn encode(p: &Push, text: &str) -> Result<Vec<u8>, char> {
    if p.encoding == encoding_rs::UTF_8 {
        return Ok(text.as_bytes().to_vec());
    }
    let mut enc = p.encoding.new_encoder();
    let mut out = vec![
        0;
        enc.max_buffer_length_from_utf8_without_replacement(text.len())
            .unwrap_or(text.len() * 4)
    ];
    let (result, read, written) = enc.encode_from_utf8_without_replacement(text, &mut out, true);
    match result {
        encoding_rs::EncoderResult::Unmappable(c) => Err(c),
        _ if read < text.len() => Err('\u{FFFD}'),
        _ => {
            out.truncate(written);
            Ok(out)
        }
    }
}

#[async_trait]
impl Connector for FileConnector {
    fn name(&self) -> &str {
        &self.system
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            entities: self
                .entities
                .iter()
                .map(|(name, r)| {
                    (
                        name.clone(),
                        EntityCapabilities {
                            pull: true,
                            incremental: true,
                            get: false,
                            push: r.e.push.is_some(),
                            webhooks: false,
                        },
                    )
                })
                .collect(),
        }
    }

    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        for r in self.entities.values() {
            match &r.place {
                Located::File(p) => {
                    fs::metadata(p).map_err(|e| self.io_error("cannot read", p, e))?;
                }
                Located::Folder { dir, .. } => {
                    fs::read_dir(dir)
                        .map_err(|e| self.io_error("cannot list the drop folder", dir, e))?;
                }
            }
            if let Some(out) = &r.push_folder {
                fs::create_dir_all(out)
                    .map_err(|e| self.io_error("cannot create the push folder", out, e))?;
            }
        }
        Ok(())
    }

    fn pull<'a>(&'a self, entity: &'a str, cursor: Option<Cursor>) -> PageStream<'a> {
        let start = (|| {
            let r = self.entity(entity)?;
            let token = match cursor.as_ref().and_then(|c| c.token.as_deref()) {
                Some(t) => Some(serde_json::from_str::<Token>(t).map_err(|e| {
                    ConnectorError::config(
                        &self.system,
                        format!("entity `{entity}`: the cursor token is not a file position: {e}"),
                    )
                })?),
                None => None,
            };
            Ok((r, token))
        })();
        let (r, token) = match start {
            Ok(s) => s,
            Err(e) => return Box::pin(stream::once(async move { Err(e) })),
        };
        let state = PullState {
            token,
            queue: VecDeque::new(),
            seen: HashSet::new(),
            current: None,
            single_done: false,
            done: false,
        };
        Box::pin(stream::unfold(state, move |mut st| async move {
            if st.done {
                return None;
            }
            match self.page(r, &mut st).await {
                Ok(Some(page)) => Some((Ok(page), st)),
                Ok(None) => None,
                Err(e) => {
                    st.done = true;
                    Some((Err(e), st))
                }
            }
        }))
    }

    async fn push(
        &self,
        entity: &str,
        changes: Vec<Change>,
    ) -> Result<Vec<PushOutcome>, ConnectorError> {
        let r = self.entity(entity)?;
        let (Some(p), Some(folder)) = (r.e.push.clone(), r.push_folder.clone()) else {
            return Err(ConnectorError::config(
                &self.system,
                format!("entity `{entity}` has no `push`: it cannot be written"),
            ));
        };
        let id_field = r.e.id.clone();
        let system = self.system.clone();
        tokio::task::spawn_blocking(move || {
            write_batch(&system, &folder, &p, id_field.as_deref(), &changes)
        })
        .await
        .map_err(|e| ConnectorError::unavailable(&self.system, format!("writing a file: {e}")))?
    }
}

/// Writes one push batch as one file; see the module documentation.
fn write_batch(
    system: &str,
    folder: &Path,
    p: &Push,
    id_field: Option<&str>,
    changes: &[Change],
) -> Result<Vec<PushOutcome>, ConnectorError> {
    let fail = |doing: &str, e: io::Error| {
        let kind = if e.kind() == io::ErrorKind::PermissionDenied {
            ErrorKind::Auth
        } else {
            ErrorKind::Unavailable
        };
        ConnectorError::new(kind, system, format!("{doing} {}: {e}", folder.display()))
            .with_source(e)
    };
    fs::create_dir_all(folder).map_err(|e| fail("cannot create", e))?;
    let mut hash = Sha256::new();
    for c in changes {
        hash.update(c.idempotency_key.as_bytes());
        hash.update(b"\n");
    }
    let hash: String = hash
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let ext = p.format.extension();
    let suffix = format!("-{hash}.{ext}");
    let existing = fs::read_dir(folder)
        .map_err(|e| fail("cannot list", e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&format!("{}-", p.prefix)) && n.ends_with(&suffix));
    let name = existing.clone().unwrap_or_else(|| {
        format!(
            "{}-{}{suffix}",
            p.prefix,
            Utc::now().format("%Y%m%dT%H%M%S%3fZ")
        )
    });

    let mut body = Vec::new();
    let mut line = 1u64;
    if p.bom {
        body.extend_from_slice(b"\xEF\xBB\xBF");
    }
    if p.format == Format::Csv {
        let mut header = p.columns.clone();
        header.extend(p.idempotency_field.iter().cloned());
        match encode(p, &csv_line(&header)) {
            Ok(b) => body.extend(b),
            Err(c) => {
                return Err(ConnectorError::config(
                    system,
                    format!(
                        "a column name holds {c:?}, which {} cannot hold",
                        p.encoding.name()
                    ),
                ));
            }
        }
        line += 1;
    }
    let mut outcomes = Vec::with_capacity(changes.len());
    let mut written = 0;
    for change in changes {
        match render(p, change) {
            Rendered::Rejected(message) => outcomes.push(PushOutcome::Rejected { message }),
            Rendered::Line(bytes) => {
                body.extend(bytes);
                let by_field = id_field.and_then(|f| match change.data.get(f) {
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                });
                let id = by_field.unwrap_or_else(|| format!("{name}:{line}"));
                outcomes.push(match &change.external_id {
                    Some(known) => PushOutcome::Updated {
                        external_id: known.clone(),
                    },
                    None => match ExternalId::parse(&id) {
                        Ok(external_id) => PushOutcome::Created { external_id },
                        Err(e) => PushOutcome::Rejected {
                            message: format!("the record's id is not usable: {e}"),
                        },
                    },
                });
                line += 1;
                written += 1;
            }
        }
    }
    if written > 0 && existing.is_none() {
        write_atomically(&folder.join(&name), &body)
            .map_err(|e| fail("cannot write a file in", e))?;
    }
    Ok(outcomes)
}
