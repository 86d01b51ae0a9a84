//! Running jobs: ingest pages from a source, deliver the outbox to targets.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chrono::Utc;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;

use super::identity::key_value;
use super::merge::{self, Origin};
use super::{Endpoint, JobSettings};
use crate::connector::{
    self, Change, Connector, ConnectorError, Cursor, Definition, Page, PushOutcome, RawRecord,
};
use crate::mapping::{self, Direction, LookupKey, Lookups, Mapping};
use crate::model::{CanonicalId, Entity, EntityKind, content_hash};
use crate::settings::Settings;
use crate::store::{
    Batch, CursorWrite, Delivery, IdentityKeyWrite, LinkWrite, NewAlert, NewConflict, OutboxEntry,
    OutboxWrite, Provenance, QuarantineItem, RecordWrite, Severity, SourceHashWrite, Store,
    StoreError,
};

/// The longest wait a target's answer (Retry-After) can set for an entry.
const LONGEST_ASKED_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// How often a page is retried when another writer changed one of its
/// records between our read and our commit.
const VERSION_RETRIES: usize = 3;

/// Pages from this many records on are mapped on two threads (below, a
/// thread costs more than it saves).
const TWO_THREADS_FROM: usize = 64;

/// `f` of each item, in order; on two threads when `two` and there are
/// [`TWO_THREADS_FROM`] items or more. For a page's mapping and hashing: on
/// one thread it held back a re-run that finds everything unchanged, which
/// does little else. While a page of writes commits, the second thread
/// would take a core from the commit, which sets the pace then (a first
/// load of 1,000,000 records took in 36-38 s that way, against 34 s).
fn on_two_threads<T: Sync, R: Send>(items: &[T], two: bool, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if !two || items.len() < TWO_THREADS_FROM {
        return items.iter().map(&f).collect();
    }
    let (first, second) = items.split_at(items.len() / 2);
    std::thread::scope(|scope| {
        // Where no thread can be had (a process or container limit), all
        // on this one.
        let other = std::thread::Builder::new()
            .spawn_scoped(scope, || second.iter().map(&f).collect::<Vec<R>>())
            .ok();
        let mut out: Vec<R> = first.iter().map(&f).collect();
        match other.map(|t| t.join()) {
            Some(Ok(rest)) => out.extend(rest),
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => out.extend(second.iter().map(&f)),
        }
        out
    })
}

/// The conflict field that stands for "which record is this?".
pub const IDENTITY_FIELD: &str = "(identity)";

/// Records written by one run above which the store's planner statistics
/// are refreshed before delivery reads them back.
const LARGE_LOAD: usize = 10_000;

/// Records written by one run at which the store's planner statistics are
/// first refreshed while it reads (then at each doubling).
const FIRST_REFRESH: usize = 2_000;

/// Options of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Ignore the saved cursor and read the source from the beginning.
    pub full: bool,
    /// Compute and report every change, write nothing, acknowledge nothing.
    pub dry_run: bool,
    /// Skip delivery to targets after ingesting.
    pub no_deliver: bool,
    /// Re-read the source from this time on (instead of the saved cursor).
    pub since: Option<chrono::DateTime<Utc>>,
}

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobReport {
    pub job: String,
    pub pages: usize,
    pub pulled: usize,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub quarantined: usize,
    pub conflicts: usize,
    pub delivered: usize,
    pub delivery_skipped: usize,
    pub retry_later: usize,
    pub dead_lettered: usize,
    /// Held back: the record has an open conflict with the target.
    pub held: usize,
    /// Changes read from a target before writing to it (two-way syncs).
    pub merged_from_targets: usize,
    /// Dry runs: each change, per record and field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<PlannedChange>,
}

/// One record's change in a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedChange {
    pub external_id: String,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub from: Option<Value>,
    pub to: Option<Value>,
}

/// Jobs, their systems and mappings, over one store.
pub struct Engine {
    store: Store,
    settings: Settings,
    definitions: BTreeMap<String, Definition>,
    /// Why the definitions folder could not be read, if it could not.
    definitions_error: Option<String>,
    mappings: BTreeMap<String, Arc<Mapping>>,
    connectors: Mutex<HashMap<String, Arc<dyn Connector>>>,
}

impl Engine {
    /// Loads definitions and mappings and checks every job against them.
    /// Fails, before anything connects, naming each problem.
    pub fn new(settings: Settings, store: Store) -> anyhow::Result<Engine> {
        Self::with_connectors(settings, store, HashMap::new())
    }

    /// [`Engine::new`] with some systems' connectors given instead of
    /// opened from their definitions (tests, embedding).
    pub fn with_connectors(
        settings: Settings,
        store: Store,
        connectors: HashMap<String, Arc<dyn Connector>>,
    ) -> anyhow::Result<Engine> {
        let mut problems = Vec::new();
        // An unreadable folder matters only to the systems that need a
        // definition from it; their checks below say so.
        let (definitions, definitions_error) = match connector::check_dir(&settings.connectors.dir)
        {
            Ok((defs, errors)) => {
                problems.extend(errors.iter().map(ToString::to_string));
                (
                    defs.into_iter().map(|d| (d.name.clone(), d)).collect(),
                    None,
                )
            }
            Err(e) => (BTreeMap::new(), Some(e.message)),
        };
        let (loaded, errors) = if settings.jobs.is_empty() && settings.reconcile.push.is_none() {
            (Vec::new(), Vec::new())
        } else {
            mapping::load_dir(&settings.mappings.dir)
        };
        problems.extend(errors.iter().map(ToString::to_string));
        let mappings: BTreeMap<String, Arc<Mapping>> = loaded
            .into_iter()
            .map(|m| (m.name.clone(), Arc::new(m)))
            .collect();
        let engine = Engine {
            store,
            settings,
            definitions,
            definitions_error,
            mappings,
            connectors: Mutex::new(connectors),
        };
        for job in &engine.settings.jobs {
            if let Err(e) = engine.check_job(job) {
                problems.push(format!("job {}: {e}", job.name));
            }
        }
        if let Err(e) = engine.check_payment_push() {
            problems.push(format!("reconcile.push: {e}"));
        }
        problems.extend(engine.shared_id_spaces());
        if !problems.is_empty() {
            bail!("the configuration cannot run:\n  {}", problems.join("\n  "));
        }
        Ok(engine)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The jobs configured, in order.
    pub fn jobs(&self) -> &[JobSettings] {
        &self.settings.jobs
    }

    fn job(&self, name: &str) -> anyhow::Result<&JobSettings> {
        self.settings
            .jobs
            .iter()
            .find(|j| j.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.settings.jobs.iter().map(|j| j.name.as_str()).collect();
                anyhow!(
                    "no job named {name:?}; configured jobs: {}",
                    known.join(", ")
                )
            })
    }

    /// The definition behind a system instance.
    fn definition_of(&self, system: &str) -> anyhow::Result<&Definition> {
        let settings = self
            .settings
            .systems
            .get(system)
            .ok_or_else(|| anyhow!("no system {system:?} in [systems]"))?;
        self.definitions.get(&settings.connector).ok_or_else(|| {
            anyhow!(
                "system {system:?} uses connector {:?}, which is not defined in {}{}",
                settings.connector,
                self.settings.connectors.dir.display(),
                self.definitions_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )
        })
    }

    fn mapping(&self, endpoint: &Endpoint, direction: Direction) -> anyhow::Result<Arc<Mapping>> {
        let m = self.mappings.get(&endpoint.mapping).ok_or_else(|| {
            anyhow!(
                "no mapping named {:?} in {}",
                endpoint.mapping,
                self.settings.mappings.dir.display()
            )
        })?;
        if m.direction != direction {
            bail!(
                "mapping {:?} maps {}, but this end of the job needs one that maps {}",
                m.name,
                m.direction.as_str(),
                direction.as_str()
            );
        }
        let connector = &self
            .settings
            .systems
            .get(&endpoint.system)
            .ok_or_else(|| anyhow!("no system {:?} in [systems]", endpoint.system))?
            .connector;
        if &m.system != connector {
            bail!(
                "mapping {:?} is for system {:?}, but {:?} is a {:?} system",
                m.name,
                m.system,
                endpoint.system,
                connector
            );
        }
        Ok(m.clone())
    }

    /// Links are keyed by (canonical entity, system instance, external id).
    /// When jobs use two entities of one instance as the same canonical
    /// entity (HubSpot companies and contacts as customers), their ids are
    /// separate spaces at the system — company 123 and contact 123 are
    /// different records — but would share one in the links, and a contact
    /// could be taken for a company. Such configurations are refused with
    /// the remedy: a second instance of the same connector per entity.
    fn shared_id_spaces(&self) -> Vec<String> {
        let mut uses: BTreeMap<(&str, EntityKind), BTreeSet<&str>> = BTreeMap::new();
        for job in &self.settings.jobs {
            for end in std::iter::once(&job.source).chain(&job.targets) {
                if let Some(m) = self.mappings.get(&end.mapping) {
                    uses.entry((end.system.as_str(), m.entity))
                        .or_default()
                        .insert(end.entity.as_str());
                }
            }
        }
        uses.into_iter()
            .filter(|(_, entities)| entities.len() > 1)
            .map(|((system, kind), entities)| {
                let entities: Vec<&str> = entities.into_iter().collect();
                format!(
                    "systems.{system}: jobs use its entities {} all as {kind}; each has its own ids at the system, but links to {kind} would share one id space for {system}, so records of one could be taken for records of another. Declare one [systems] instance per entity (the same connector and credentials, e.g. {system}_{}) and use each in the jobs of its entity",
                    entities.join(", "),
                    entities[1]
                )
            })
            .collect()
    }

    fn check_job(&self, job: &JobSettings) -> anyhow::Result<()> {
        let attached = self.connectors.lock().expect("connector cache");
        for end in std::iter::once(&job.source).chain(&job.targets) {
            if !attached.contains_key(&end.system) {
                self.definition_of(&end.system)?;
            }
        }
        drop(attached);
        let source = self.mapping(&job.source, Direction::In)?;
        for target in &job.targets {
            let m = self.mapping(target, Direction::Out)?;
            if m.entity != source.entity {
                bail!(
                    "target mapping {:?} writes {}, but the source mapping {:?} reads {}",
                    m.name,
                    m.entity,
                    source.name,
                    source.entity
                );
            }
        }
        Ok(())
    }

    /// The connector of a system instance, opened on first use.
    pub fn connector(&self, system: &str) -> anyhow::Result<Arc<dyn Connector>> {
        if let Some(c) = self.connectors.lock().expect("connector cache").get(system) {
            return Ok(c.clone());
        }
        let def = self.definition_of(system)?;
        let instance = self.settings.systems[system].instance(system);
        let opened = (def.driver.open)(def, &instance)?;
        self.connectors
            .lock()
            .expect("connector cache")
            .insert(system.to_owned(), opened.clone());
        Ok(opened)
    }

    /// Runs one job: ingests everything new at the source, then delivers
    /// the outbox to the job's targets.
    pub async fn run_job(&self, name: &str, options: RunOptions) -> anyhow::Result<JobReport> {
        self.run_job_observed(name, options, &|_| {}).await
    }

    /// [`Engine::run_job`], calling `observe` with the running totals after
    /// each committed page (for progress displays).
    pub async fn run_job_observed(
        &self,
        name: &str,
        options: RunOptions,
        observe: &(dyn Fn(&JobReport) + Sync),
    ) -> anyhow::Result<JobReport> {
        let job = self.job(name)?;
        let mut report = JobReport {
            job: job.name.clone(),
            ..JobReport::default()
        };
        self.ingest(job, options, &mut report, observe)
            .await
            .with_context(|| {
                format!(
                    "job {}: reading {} {}",
                    job.name, job.source.system, job.source.entity
                )
            })?;
        if !options.dry_run && report.created + report.updated >= LARGE_LOAD {
            self.store.refresh_statistics().await?;
        }
        if !options.dry_run && !options.no_deliver {
            for target in &job.targets {
                // Pull before push: a target that is also a source (a
                // two-way sync) is read first, so that its own recent
                // changes are merged instead of overwritten.
                for reverse in self.settings.jobs.iter().filter(|j| {
                    j.name != job.name
                        && j.source.system == target.system
                        && self.mappings.get(&j.source.mapping).map(|m| m.entity)
                            == self.mappings.get(&target.mapping).map(|m| m.entity)
                }) {
                    let mut quiet = JobReport::default();
                    self.ingest(reverse, RunOptions::default(), &mut quiet, &|_| {})
                        .await
                        .with_context(|| {
                            format!(
                                "job {}: reading {} before writing to it",
                                job.name, target.system
                            )
                        })?;
                    report.merged_from_targets += quiet.created + quiet.updated;
                    report.conflicts += quiet.conflicts;
                }
                self.deliver(job, target, &mut report)
                    .await
                    .with_context(|| {
                        format!("job {}: delivering to {}", job.name, target.system)
                    })?;
                observe(&report);
            }
        }
        if !options.dry_run {
            crate::metrics::job_run(&job.source.system, &report);
        }
        Ok(report)
    }

    async fn ingest(
        &self,
        job: &JobSettings,
        options: RunOptions,
        report: &mut JobReport,
        observe: &(dyn Fn(&JobReport) + Sync),
    ) -> anyhow::Result<()> {
        let source = self.connector(&job.source.system)?;
        let mapping = self.mapping(&job.source, Direction::In)?;
        let cursor = if let Some(since) = options.since {
            Some(Cursor {
                updated_at: Some(since),
                ..Cursor::default()
            })
        } else if options.full {
            None
        } else {
            match self
                .store
                .load_cursor(&job.source.system, &job.source.entity)
                .await?
            {
                None => None,
                Some(text) => Some(Cursor::from_json(&text).with_context(|| {
                    format!(
                        "the saved cursor of {} {} is not readable: {text:?}",
                        job.source.system, job.source.entity
                    )
                })?),
            }
        };
        let mut pages = ReadAhead::new(source.pull(&job.source.entity, cursor));
        // A mapping with look-ups may read what the previous page writes,
        // and a dry run writes nothing: both go page by page.
        let overlap = !options.dry_run && !mapping.has_lookups();
        let mut prepared: Option<Prepared> = None;
        // A first load into empty tables: the planner's statistics say
        // "empty" until refreshed, and PostgreSQL then scans whole tables
        // for each page's look-ups. Refreshed at 2,000 written records and
        // each doubling after.
        let mut refresh_at = FIRST_REFRESH;
        // A dry run answers its pages when it ends, handing each back: a
        // page handed back at once would come round again (a queue
        // delivers it anew) and the run would never end. Unanswered pages
        // fill a queue's prefetch window, so a dry run previews that much.
        let mut dry_run_pages: Vec<Box<dyn connector::Ack>> = Vec::new();
        let result: anyhow::Result<()> = async {
            loop {
                // The next page is mapped and merged while the previous one
                // commits (the store works on its own thread meanwhile), and
                // the page after it is read from the source (unless pages wait
                // for their acknowledgement: `needs_no_ack`). A re-run that
                // finds everything unchanged commits next to nothing, and would
                // otherwise wait for each page's read in turn.
                let (committed, next, prepared_before) = match prepared.take() {
                    None => {
                        let page = pages.next().await;
                        let read_ahead = overlap && needs_no_ack(&page);
                        // The read first: it starts the source's work, which
                        // then goes on beside the mapping.
                        let ((), next) = tokio::join!(
                            pages.read_ahead(read_ahead),
                            self.prepare(job, &mapping, page, options, None)
                        );
                        (None, next, false)
                    }
                    Some(current) => {
                        let busy = overlap.then(|| InFlight::of(&current.batch));
                        let ahead = if overlap { pages.take_ahead() } else { None };
                        let (committed, next) = match ahead {
                            // The page read ahead is prepared while this one
                            // commits, and the page after it read meanwhile.
                            Some(page) => {
                                let read_ahead = needs_no_ack(&page);
                                let ((), committed, next) = tokio::join!(
                                    pages.read_ahead(read_ahead),
                                    self.commit_prepared(job, &mapping, current, options),
                                    self.prepare(job, &mapping, page, options, busy.as_ref())
                                );
                                (committed, next)
                            }
                            // None read ahead (pages that wait for their
                            // acknowledgement): the next is read and prepared
                            // while this one commits.
                            None => tokio::join!(
                                self.commit_prepared(job, &mapping, current, options),
                                async {
                                    if overlap {
                                        let page = pages.next().await;
                                        self.prepare(job, &mapping, page, options, busy.as_ref())
                                            .await
                                    } else {
                                        Ok(None)
                                    }
                                }
                            ),
                        };
                        (Some(committed?), next, true)
                    }
                };
                // A committed page is acknowledged even when reading the next
                // one failed (that error is returned below).
                if let Some((page, stats)) = committed {
                    stats.add_to(report);
                    let written = report.created + report.updated;
                    if !options.dry_run && written >= refresh_at {
                        self.store.refresh_statistics().await?;
                        refresh_at = written.saturating_mul(2);
                    }
                    if let Some(ack) = page.ack {
                        if options.dry_run {
                            dry_run_pages.push(ack);
                        } else {
                            ack.ack().await?;
                        }
                    }
                    observe(report);
                }
                let next = match next? {
                    None if !overlap && prepared_before => {
                        let page = pages.next().await;
                        self.prepare(job, &mapping, page, options, None).await?
                    }
                    next => next,
                };
                match next {
                    None => return Ok(()),
                    Some(mut next) => {
                        report.pages += 1;
                        report.pulled += next.page.records.len() + next.page.rejects.len();
                        if next.batch_is_stale {
                            // It touched what the previous page was writing:
                            // prepared again, now that that page is committed.
                            let (batch, stats) = self
                                .page_batch(job, &mapping, &next.page, options.dry_run, None)
                                .await?
                                .expect("nothing is in flight");
                            next.batch = batch;
                            next.stats = stats;
                            next.batch_is_stale = false;
                        }
                        prepared = Some(next);
                    }
                }
            }
        }
        .await;
        let mut handed_back = Ok(());
        for ack in dry_run_pages {
            if let Err(e) = ack.nack(true, "dry run").await {
                handed_back = handed_back.and(Err(e));
            }
        }
        result?;
        Ok(handed_back?)
    }

    /// Turns a pulled page (`None`: the source has no more) into a batch.
    /// `busy` is what a batch still being committed writes: a page that
    /// touches it comes back marked stale, to be prepared again once that
    /// commit is done.
    async fn prepare(
        &self,
        job: &JobSettings,
        mapping: &Mapping,
        page: Option<Result<Page, ConnectorError>>,
        options: RunOptions,
        busy: Option<&InFlight>,
    ) -> anyhow::Result<Option<Prepared>> {
        let Some(page) = page else {
            return Ok(None);
        };
        let page = page?;
        Ok(Some(
            match self
                .page_batch(job, mapping, &page, options.dry_run, busy)
                .await?
            {
                Some((batch, stats)) => Prepared {
                    page,
                    batch,
                    stats,
                    batch_is_stale: false,
                },
                None => Prepared {
                    page,
                    batch: Batch::default(),
                    stats: PageStats::default(),
                    batch_is_stale: true,
                },
            },
        ))
    }

    /// One page's batch with the source's unreadable records and notices;
    /// `None` when it touches `busy`.
    async fn page_batch(
        &self,
        job: &JobSettings,
        mapping: &Mapping,
        page: &Page,
        dry_run: bool,
        busy: Option<&InFlight>,
    ) -> anyhow::Result<Option<(Batch, PageStats)>> {
        let Some((mut batch, mut stats)) = self
            .ingest_page_guarded(
                job,
                mapping,
                &page.records,
                Some(&page.cursor),
                dry_run,
                busy,
            )
            .await?
        else {
            return Ok(None);
        };
        batch
            .alerts
            .extend(notice_alerts(&job.source.system, &page.notices));
        // Records the source could not read: kept, with where and why.
        stats.quarantined += page.rejects.len();
        for reject in &page.rejects {
            batch.quarantine.push(QuarantineItem {
                system: job.source.system.clone(),
                entity: mapping.entity,
                external_id: None,
                raw: Value::String(reject.raw.clone()),
                reason: format!("{}: {}", reject.position, reject.reason),
                rule: Some("unreadable".into()),
                field_path: None,
            });
        }
        Ok(Some((batch, stats)))
    }

    /// Commits a prepared page (nothing, on a dry run), preparing it again
    /// when a record changed under it. Returns the page (for its ack) and
    /// its figures.
    async fn commit_prepared(
        &self,
        job: &JobSettings,
        mapping: &Mapping,
        prepared: Prepared,
        options: RunOptions,
    ) -> anyhow::Result<(Page, PageStats)> {
        let Prepared {
            page,
            mut batch,
            mut stats,
            ..
        } = prepared;
        if options.dry_run {
            return Ok((page, stats));
        }
        let mut attempt = 0;
        loop {
            // On a task of its own: the next page is prepared on this one
            // meanwhile, and its mapping (thousands of records without a
            // pause) no longer holds back the commit's next statement.
            //
            // The answer comes before the batch is freed: freeing its
            // thousands of small values takes a while, and the next page
            // need not wait for it.
            let store = self.store.clone();
            let (answer, result) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(async move {
                let _ = answer.send(store.commit(&batch).await);
                drop(batch);
            });
            let result = match result.await {
                Ok(result) => result,
                Err(_) => match task.await {
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    _ => anyhow::bail!("the commit of a page was cancelled"),
                },
            };
            match result {
                Ok(_) => return Ok((page, stats)),
                Err(StoreError::VersionConflict { .. }) if attempt < VERSION_RETRIES => {
                    attempt += 1;
                    tracing::debug!(message = "A record changed under the page; reading it again.", job = %job.name, attempt);
                    (batch, stats) = self
                        .page_batch(job, mapping, &page, false, None)
                        .await?
                        .expect("nothing is in flight");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Turns one page into a batch: mapped, identified, merged.
    async fn ingest_page(
        &self,
        job: &JobSettings,
        mapping: &Mapping,
        records: &[RawRecord],
        cursor: Option<&Cursor>,
        dry_run: bool,
    ) -> anyhow::Result<(Batch, PageStats)> {
        Ok(self
            .ingest_page_guarded(job, mapping, records, cursor, dry_run, None)
            .await?
            .expect("nothing is in flight"))
    }

    /// [`Engine::ingest_page`], or `None` as soon as the page touches a
    /// record, link or identity key that `busy` (a batch being committed)
    /// writes: read now, it would be read before that write.
    async fn ingest_page_guarded(
        &self,
        job: &JobSettings,
        mapping: &Mapping,
        records: &[RawRecord],
        cursor: Option<&Cursor>,
        dry_run: bool,
        busy: Option<&InFlight>,
    ) -> anyhow::Result<Option<(Batch, PageStats)>> {
        let kind = mapping.entity;
        let system = job.source.system.as_str();
        let mut batch = Batch::default();
        let mut stats = PageStats::default();

        // The same record twice in one page: the later read wins.
        let mut latest: BTreeMap<&str, &RawRecord> = BTreeMap::new();
        for r in records {
            latest.insert(r.external_id.as_str(), r);
        }
        let records: Vec<&RawRecord> = latest.into_values().collect();
        if let Some(busy) = busy
            && records
                .iter()
                .any(|r| busy.has_link(system, r.external_id.as_str()))
        {
            return Ok(None);
        }

        let rename = BTreeMap::from([(mapping.system.clone(), system.to_owned())]);
        let lookups = resolve_lookups(
            &self.store,
            mapping,
            records.iter().map(|r| &r.data),
            &rename,
        )
        .await?;

        // A record as it arrived, with the mapping that reads it, hashed:
        // when the source sends it again unchanged, the hash tells so
        // without mapping it. (Not with look-ups: their results may change
        // while the record does not.)
        let two = busy.is_none_or(|b| b.records == 0);
        let fingerprint = mapping.fingerprint();
        let hash_sources = |records: &[&RawRecord]| -> Vec<Option<String>> {
            match fingerprint {
                Some(fingerprint) => on_two_threads(records, two, |raw| {
                    Some(crate::model::source_hash(fingerprint, &raw.data))
                }),
                None => vec![None; records.len()],
            }
        };
        // The records to map, each with its source hash, and the hashes of
        // their links (a record without a link has none).
        let mut to_map: Vec<(&RawRecord, Option<String>)> = Vec::with_capacity(records.len());
        let heads: HashMap<String, crate::store::LinkHashes> = if fingerprint.is_some() && two {
            // The page before wrote no records (a re-run, most likely):
            // hashes first, and the store answers only for the records that
            // did not arrive so before: nothing, for an unchanged page.
            let source_hashes = hash_sources(&records);
            let arrivals: Vec<(String, String)> = records
                .iter()
                .zip(&source_hashes)
                .filter_map(|(r, h)| Some((r.external_id.to_string(), h.clone()?)))
                .collect();
            let mut changed = self.store.changed_arrivals(kind, system, &arrivals).await?;
            let mut heads = HashMap::with_capacity(changed.len());
            for (raw, source_hash) in records.iter().copied().zip(source_hashes) {
                match changed.remove(raw.external_id.as_str()) {
                    None => stats.unchanged += 1,
                    Some(link) => {
                        if let Some(link) = link {
                            heads.insert(raw.external_id.to_string(), link);
                        }
                        to_map.push((raw, source_hash));
                    }
                }
            }
            heads
        } else {
            // Writing (a first load, most likely): the links' hashes are
            // read while the source hashes are computed, as the look-up
            // needs only the external ids and the store answers on its own
            // thread.
            let ids: Vec<String> = records.iter().map(|r| r.external_id.to_string()).collect();
            let lookup = {
                let store = self.store.clone();
                let system = system.to_owned();
                tokio::spawn(async move { store.synced_hashes(kind, &system, &ids).await })
            };
            let source_hashes = hash_sources(&records);
            let heads: HashMap<String, crate::store::LinkHashes> = match lookup.await {
                Ok(found) => found?,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => anyhow::bail!("the look-up of a page's links was cancelled"),
            };
            for (raw, source_hash) in records.iter().copied().zip(source_hashes) {
                if source_hash.is_some()
                    && heads
                        .get(raw.external_id.as_str())
                        .is_some_and(|h| h.source == source_hash)
                {
                    stats.unchanged += 1;
                    continue;
                }
                to_map.push((raw, source_hash));
            }
            heads
        };
        // Each other record mapped and its result hashed (the hash their
        // link will hold).
        let results = on_two_threads(&to_map, two, |(raw, _)| {
            mapping.apply_canonical(&raw.data, &lookups).map(|v| {
                let hash = content_hash(&v);
                (v, hash)
            })
        });
        let mut mapped: Vec<(&RawRecord, Value, String, Option<String>)> =
            Vec::with_capacity(to_map.len());
        for ((raw, source_hash), result) in to_map.into_iter().zip(results) {
            match result {
                Ok((v, hash)) => mapped.push((raw, v, hash, source_hash)),
                Err(errors) => {
                    let first = errors.first();
                    let reason = errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ");
                    stats.plan(
                        dry_run,
                        raw,
                        "quarantine",
                        None,
                        Vec::new(),
                        Some(reason.clone()),
                    );
                    batch.quarantine.push(QuarantineItem {
                        system: system.to_owned(),
                        entity: kind,
                        external_id: Some(raw.external_id.to_string()),
                        raw: raw.data.clone(),
                        reason,
                        rule: first.map(|e| e.rule.clone()),
                        field_path: first.map(|e| e.field.clone()),
                    });
                    stats.quarantined += 1;
                }
            }
        }

        // Unchanged since we last saw them (by the hash of what they map
        // to): nothing to do but remember how they arrived. Only the links
        // of the others are read whole, with their merge base.
        let mut changed: Vec<(&RawRecord, Value, String, Option<String>)> = Vec::new();
        for (raw, theirs, hash, source_hash) in mapped {
            if let Some(h) = heads.get(raw.external_id.as_str())
                && h.synced.as_deref() == Some(hash.as_str())
            {
                stats.unchanged += 1;
                if let Some(source_hash) = source_hash
                    && h.source.as_ref() != Some(&source_hash)
                {
                    batch.source_hashes.push(SourceHashWrite {
                        entity: kind,
                        system: system.to_owned(),
                        external_id: raw.external_id.to_string(),
                        synced_hash: hash,
                        source_hash,
                    });
                }
                continue;
            }
            changed.push((raw, theirs, hash, source_hash));
        }
        let relinked: Vec<String> = changed
            .iter()
            .map(|(r, _, _, _)| r.external_id.to_string())
            .filter(|id| heads.contains_key(id))
            .collect();
        let links: HashMap<String, crate::store::Link> = if relinked.is_empty() {
            HashMap::new()
        } else {
            self.store
                .find_links(kind, system, &relinked)
                .await?
                .into_iter()
                .map(|l| (l.external_id.clone(), l))
                .collect()
        };
        type Work<'r, 'l> = (
            &'r RawRecord,
            Value,
            String,
            Option<&'l crate::store::Link>,
            Option<String>,
        );
        let work: Vec<Work<'_, '_>> = changed
            .into_iter()
            .map(|(raw, theirs, hash, source_hash)| {
                let link = links.get(raw.external_id.as_str());
                (raw, theirs, hash, link, source_hash)
            })
            .collect();

        // Identity: records not linked yet, by business keys.
        let unlinked: Vec<&Value> = work
            .iter()
            .filter(|(_, _, _, l, _)| l.is_none())
            .map(|(_, v, _, _, _)| v)
            .collect();
        let mut known_keys: HashMap<(String, String), BTreeSet<CanonicalId>> = HashMap::new();
        for key in &job.identity {
            let values: Vec<String> = unlinked
                .iter()
                .filter_map(|v| key_value(v, key))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if values.is_empty() {
                continue;
            }
            if let Some(busy) = busy
                && values.iter().any(|v| busy.has_key(key, v))
            {
                return Ok(None);
            }
            for (value, id) in self.store.find_identities(kind, key, &values).await? {
                known_keys
                    .entry((key.clone(), value))
                    .or_default()
                    .insert(id);
            }
        }

        // Current canonical records: those linked, and identity candidates.
        let mut wanted: BTreeSet<CanonicalId> = work
            .iter()
            .filter_map(|(_, _, _, l, _)| l.map(|l| l.canonical_id.clone()))
            .collect();
        for ids in known_keys.values() {
            wanted.extend(ids.iter().cloned());
        }
        if let Some(busy) = busy
            && wanted.iter().any(|id| busy.canonical_ids.contains(id))
        {
            return Ok(None);
        }
        let wanted: Vec<CanonicalId> = wanted.into_iter().collect();
        let mut ours = self.store.get_records(kind, &wanted).await?;
        // Which candidates this system already links (to another record).
        let already_linked: HashMap<CanonicalId, String> = self
            .store
            .external_links(kind, system, &wanted)
            .await?
            .into_iter()
            .map(|l| (l.canonical_id, l.external_id))
            .collect();

        let policies = self.settings.merge.get(&kind).cloned().unwrap_or_default();
        let scope = mapping.target_paths();
        // When the source is also written to by some job (a two-way sync),
        // a merge that leaves it behind (its change lost to a policy, or
        // another system's change it lacks) sends the result back to it.
        let source_is_target = self.settings.jobs.iter().any(|j| {
            j.targets.iter().any(|t| {
                t.system == system
                    && self
                        .mappings
                        .get(&t.mapping)
                        .is_some_and(|m| m.entity == kind)
            })
        });
        let mapping_version = mapping.version_tag();
        // Records created earlier in this page, by business key.
        let mut created_keys: HashMap<(String, String), CanonicalId> = HashMap::new();
        // Canonical records this page already claimed for this system.
        let mut claimed: HashMap<CanonicalId, String> = HashMap::new();

        for (raw, theirs, theirs_hash, link, source_hash) in work {
            let external_id = raw.external_id.to_string();
            let theirs_origin = Origin {
                system: system.to_owned(),
                at: raw.updated_at,
            };
            let provenance = Provenance {
                mapping_version: Some(mapping_version.clone()),
                ..Provenance::pull(system)
            };
            // Which canonical record is this?
            let target: Option<CanonicalId> = match link {
                Some(l) => Some(l.canonical_id.clone()),
                None => {
                    let mut found: Option<BTreeSet<CanonicalId>> = None;
                    let mut via = String::new();
                    for key in &job.identity {
                        let Some(value) = key_value(&theirs, key) else {
                            continue;
                        };
                        let mut ids = known_keys
                            .get(&(key.clone(), value.clone()))
                            .cloned()
                            .unwrap_or_default();
                        if let Some(id) = created_keys.get(&(key.clone(), value.clone())) {
                            ids.insert(id.clone());
                        }
                        if !ids.is_empty() {
                            via = format!("{key} = {value}");
                            found = Some(ids);
                            break;
                        }
                    }
                    match found {
                        None => None,
                        Some(ids) if ids.len() == 1 => {
                            let id = ids.into_iter().next().expect("one id");
                            let taken = already_linked.get(&id).or_else(|| claimed.get(&id));
                            if let Some(other) = taken.filter(|other| **other != external_id) {
                                let reason = format!(
                                    "{system} {external_id} matches record {id} by {via}, which is already linked to {system} {other}: a duplicate in {system}?"
                                );
                                self.identity_conflict(
                                    &mut batch,
                                    &mut stats,
                                    dry_run,
                                    raw,
                                    &theirs,
                                    kind,
                                    system,
                                    &[id],
                                    reason,
                                );
                                continue;
                            }
                            Some(id)
                        }
                        Some(ids) => {
                            let ids: Vec<CanonicalId> = ids.into_iter().collect();
                            let reason = format!(
                                "{system} {external_id} matches {} records by {via}: {}",
                                ids.len(),
                                ids.iter()
                                    .map(CanonicalId::as_str)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            );
                            self.identity_conflict(
                                &mut batch, &mut stats, dry_run, raw, &theirs, kind, system, &ids,
                                reason,
                            );
                            continue;
                        }
                    }
                }
            };
            let existing = target.as_ref().and_then(|id| ours.get(id));
            let (id, expected, new_value, conflicts, fields) = match existing {
                None => {
                    let id = target.unwrap_or_else(CanonicalId::new);
                    // Field diffs are shown by dry runs only.
                    let fields = if dry_run {
                        diff(None, &theirs)
                    } else {
                        Vec::new()
                    };
                    (id, 0, theirs.clone(), Vec::new(), fields)
                }
                Some(current) => {
                    let ours_origin = Origin {
                        system: current
                            .source_system
                            .clone()
                            .unwrap_or_else(|| "operator".into()),
                        at: Some(current.updated_at),
                    };
                    let base = link.and_then(|l| l.synced_data.as_ref());
                    let merged = merge::merge(
                        base,
                        &current.data,
                        &ours_origin,
                        &theirs,
                        &theirs_origin,
                        &policies,
                        Some(&scope),
                    );
                    let fields = if dry_run {
                        diff(Some(&current.data), &merged.value)
                    } else {
                        Vec::new()
                    };
                    (
                        current.id.clone(),
                        current.version,
                        merged.value,
                        merged.conflicts,
                        fields,
                    )
                }
            };
            for c in &conflicts {
                batch.conflicts.push(NewConflict {
                    entity: kind,
                    canonical_id: id.clone(),
                    field_path: c.field.clone(),
                    base: c.base.clone(),
                    ours: c.ours.clone(),
                    theirs: c.theirs.clone(),
                    source_system: system.to_owned(),
                });
            }
            stats.conflicts += conflicts.len();
            let changed = expected == 0 || existing.is_some_and(|c| c.data != new_value);
            let mut version = existing.map_or(0, |c| c.version);
            // Does the source now hold the canonical record (as far as its
            // mapping reaches)? Only then may its link claim the version.
            // A new record is the source's record.
            let in_sync =
                existing.is_none() || merge::same_in_scope(&new_value, &theirs, Some(&scope));
            if changed {
                let entity = match Entity::from_value(kind, new_value.clone()) {
                    Ok(e) => e,
                    Err(e) => {
                        let reason = format!("the merged record is not a valid {kind}: {e}");
                        stats.plan(
                            dry_run,
                            raw,
                            "quarantine",
                            Some(&id),
                            Vec::new(),
                            Some(reason.clone()),
                        );
                        batch.quarantine.push(QuarantineItem {
                            system: system.to_owned(),
                            entity: kind,
                            external_id: Some(external_id.clone()),
                            raw: raw.data.clone(),
                            reason,
                            rule: Some("canonical".into()),
                            field_path: None,
                        });
                        stats.quarantined += 1;
                        continue;
                    }
                };
                let write = RecordWrite::of(&entity, id.clone(), expected, provenance);
                // Later duplicates in this page see the new version as
                // stored: its data and that data's hash.
                let written = (
                    write.data.clone(),
                    write
                        .content_hash
                        .clone()
                        .expect("RecordWrite::of hashes its data"),
                );
                batch.records.push(write);
                version = expected + 1;
                for target in &job.targets {
                    batch.outbox.push(OutboxWrite {
                        entity: kind,
                        canonical_id: id.clone(),
                        version,
                        target_system: target.system.clone(),
                    });
                }
                for key in &job.identity {
                    let value = key_value(&new_value, key);
                    if let Some(v) = &value {
                        created_keys.insert((key.clone(), v.clone()), id.clone());
                    }
                    batch.identity_keys.push(IdentityKeyWrite {
                        entity: kind,
                        key_name: key.clone(),
                        key_value: value,
                        canonical_id: id.clone(),
                    });
                }
                if expected == 0 {
                    stats.created += 1;
                    stats.plan(dry_run, raw, "create", Some(&id), fields, None);
                } else {
                    stats.updated += 1;
                    stats.plan(dry_run, raw, "update", Some(&id), fields, None);
                }
                let (data, content_hash) = written;
                ours.insert(
                    id.clone(),
                    crate::store::StoredRecord {
                        entity: kind,
                        id: id.clone(),
                        version,
                        content_hash,
                        amount: entity.principal_amount(),
                        data,
                        source_system: Some(system.to_owned()),
                        created_at: Utc::now(),
                        updated_at: Utc::now(),
                    },
                );
            } else {
                stats.unchanged += 1;
                if !conflicts.is_empty() {
                    stats.plan(
                        dry_run,
                        raw,
                        "conflict",
                        Some(&id),
                        Vec::new(),
                        Some(format!(
                            "{} field(s) wait for the operator",
                            conflicts.len()
                        )),
                    );
                }
            }
            if !in_sync && source_is_target && version > 0 {
                batch.outbox.push(OutboxWrite {
                    entity: kind,
                    canonical_id: id.clone(),
                    version,
                    target_system: system.to_owned(),
                });
            }
            claimed.insert(id.clone(), external_id.clone());
            let synced_version = if in_sync {
                Some(version)
            } else {
                link.and_then(|l| l.synced_version)
            };
            batch.links.push(LinkWrite {
                entity: kind,
                system: system.to_owned(),
                external_id,
                canonical_id: id,
                synced_version,
                synced_data: Some(theirs),
                synced_hash: Some(theirs_hash),
                remote_updated_at: raw.updated_at,
                source_hash,
            });
        }
        if let Some(cursor) = cursor {
            batch.cursors.push(CursorWrite {
                system: system.to_owned(),
                entity: job.source.entity.clone(),
                cursor: cursor.to_json(),
            });
        }
        Ok(Some((batch, stats)))
    }

    /// A record that could be one of several canonical records (or one
    /// already taken): the operator decides; nothing is guessed.
    #[allow(clippy::too_many_arguments)]
    fn identity_conflict(
        &self,
        batch: &mut Batch,
        stats: &mut PageStats,
        dry_run: bool,
        raw: &RawRecord,
        theirs: &Value,
        kind: EntityKind,
        system: &str,
        candidates: &[CanonicalId],
        reason: String,
    ) {
        stats.plan(
            dry_run,
            raw,
            "conflict",
            None,
            Vec::new(),
            Some(reason.clone()),
        );
        batch.conflicts.push(NewConflict {
            entity: kind,
            canonical_id: candidates[0].clone(),
            field_path: IDENTITY_FIELD.to_owned(),
            base: Some(
                serde_json::json!({ "external_id": raw.external_id.as_str(), "reason": reason }),
            ),
            ours: Some(Value::from(
                candidates
                    .iter()
                    .map(|c| Value::from(c.as_str()))
                    .collect::<Vec<_>>(),
            )),
            theirs: Some(theirs.clone()),
            source_system: system.to_owned(),
        });
        batch.alerts.push(NewAlert {
            rule: "ambiguous_identity".into(),
            severity: Severity::Warning,
            entity: Some(kind),
            record_ids: candidates.iter().map(|c| c.to_string()).collect(),
            reason,
            amount: None,
            cause: Some(format!("{system}:{}", raw.external_id)),
        });
        stats.conflicts += 1;
    }

    /// Delivers the job's entity to one target: the latest version of each
    /// record, once, with its idempotency key.
    async fn deliver(
        &self,
        job: &JobSettings,
        target: &Endpoint,
        report: &mut JobReport,
    ) -> anyhow::Result<()> {
        let mapping = self.mapping(target, Direction::Out)?;
        let connector = self.connector(&target.system)?;
        // The next batch is read and rendered while the current one is
        // sent and settled (the store reads on another connection
        // meanwhile). Not when the mapping looks up links: a record may
        // look up one the current batch is delivering.
        let read_ahead = !mapping.has_lookups();
        // The pass walks the outbox in id order; it starts over only when
        // it put entries back that are due at once (a retry without delay).
        let mut after = 0_i64;
        let mut again = false;
        let mut next = self.plan_delivery(target, &mapping, after).await?;
        loop {
            let Some(plan) = next.take() else {
                if std::mem::take(&mut again) {
                    after = 0;
                    next = self.plan_delivery(target, &mapping, after).await?;
                    continue;
                }
                return Ok(());
            };
            after = plan.last_id;
            let touched = plan.touched.clone();
            let (sent, ahead) = tokio::join!(
                self.send_planned(job, target, connector.as_ref(), plan, report),
                async {
                    if read_ahead {
                        Some(self.plan_delivery(target, &mapping, after).await)
                    } else {
                        None
                    }
                }
            );
            let sent = sent?;
            if sent.paused {
                return Ok(());
            }
            again |= sent.due_again;
            next = match (sent.rewind_to, ahead) {
                // An entry now linked is sent again as an update in this pass.
                (Some(first), _) => {
                    after = after.min(first - 1);
                    self.plan_delivery(target, &mapping, after).await?
                }
                // Read before this batch settled the links and outbox
                // entries of a record it shares: read again.
                (None, Some(Ok(Some(ahead)))) if ahead.touched.is_disjoint(&touched) => Some(ahead),
                (None, Some(Ok(None))) => None,
                (None, _) => self.plan_delivery(target, &mapping, after).await?,
            };
        }
    }

    /// Reads the target's next due outbox entries after `after` and turns
    /// them into what to send and what to settle without sending. `None`
    /// when nothing is due. Reads only: a plan may be thrown away.
    async fn plan_delivery(
        &self,
        target: &Endpoint,
        mapping: &Mapping,
        after: i64,
    ) -> anyhow::Result<Option<DeliveryPlan>> {
        let kind = mapping.entity;
        let limit = u32::try_from(self.settings.delivery.batch_size.max(1)).unwrap_or(100);
        let due = self
            .store
            .outbox_due_after(&target.system, Some(kind), after, limit)
            .await?;
        let Some(last_id) = due.iter().map(|e| e.id).max() else {
            return Ok(None);
        };
        let touched: BTreeSet<CanonicalId> = due.iter().map(|e| e.canonical_id.clone()).collect();
        let ids: Vec<CanonicalId> = touched.iter().cloned().collect();
        // Three look-ups at once, on three of the store's connections.
        let (heads, links, held) = tokio::join!(
            self.store.get_records(kind, &ids),
            self.store.external_links(kind, &target.system, &ids),
            self.store.open_conflicts_from(kind, &target.system, &ids),
        );
        let mut heads = heads?;
        let links: HashMap<CanonicalId, crate::store::Link> = links?
            .into_iter()
            .map(|l| (l.canonical_id.clone(), l))
            .collect();
        let held: BTreeSet<CanonicalId> = held?.into_iter().collect();
        let mut plan = DeliveryPlan {
            last_id,
            touched,
            ..DeliveryPlan::default()
        };
        let mut newest: HashMap<&CanonicalId, i64> = HashMap::new();
        for e in &due {
            let m = newest.entry(&e.canonical_id).or_insert(e.version);
            *m = (*m).max(e.version);
        }
        let mut sendable: Vec<&OutboxEntry> = Vec::new();
        for entry in &due {
            let Some(head) = heads.get(&entry.canonical_id) else {
                plan.settle(
                    entry.id,
                    Delivery::Dead {
                        error: "the record no longer exists".into(),
                    },
                );
                plan.dead_lettered += 1;
                continue;
            };
            // One delivery per record, and always of its current (head)
            // version: an older version never overwrites a newer one at
            // the target, and a change that arrived meanwhile from
            // another system is not lost.
            if entry.version < newest[&entry.canonical_id] {
                plan.settle(entry.id, Delivery::Superseded);
                plan.skipped += 1;
                continue;
            }
            // Writing now would overwrite the target's side of a conflict
            // the operator has not decided yet.
            if held.contains(&entry.canonical_id) {
                let hold = Delivery::Hold {
                    at: Utc::now() + chrono::Duration::minutes(10),
                    reason: format!(
                        "{} an open conflict with {} waits for the operator",
                        crate::store::HELD_PREFIX,
                        target.system
                    ),
                };
                plan.settle(entry.id, hold);
                plan.held += 1;
                continue;
            }
            // The target already holds exactly this (it sent it to us).
            if let Some(l) = links.get(&entry.canonical_id)
                && (l.synced_version == Some(head.version)
                    || l.synced_hash.as_deref() == Some(head.content_hash.as_str()))
            {
                // Holding the head's content, the link names the head.
                let holds_head = l.synced_hash.as_deref() == Some(head.content_hash.as_str());
                let link = link_at_head(l, head, holds_head);
                plan.settle(entry.id, Delivery::Delivered { link });
                plan.skipped += 1;
                continue;
            }
            sendable.push(entry);
        }
        if sendable.is_empty() {
            return Ok(Some(plan));
        }
        let rename = BTreeMap::from([(mapping.system.clone(), target.system.clone())]);
        // What the target was last known to hold, rendered the same way,
        // tells whether this version changes anything there.
        let known = |id: &CanonicalId| links.get(id).and_then(|l| l.synced_data.as_ref());
        let lookups = resolve_lookups(
            &self.store,
            mapping,
            sendable.iter().flat_map(|e| {
                std::iter::once(&heads[&e.canonical_id].data).chain(known(&e.canonical_id))
            }),
            &rename,
        )
        .await?;
        for entry in sendable {
            let head = &heads[&entry.canonical_id];
            match mapping.apply(&head.data, &lookups) {
                Ok(data)
                    if known(&entry.canonical_id)
                        .is_some_and(|k| mapping.apply(k, &lookups).as_ref() == Ok(&data)) =>
                {
                    // Nothing the target shows would change (a field it
                    // does not carry changed): no write, no echo.
                    let link = link_at_head(&links[&entry.canonical_id], head, false);
                    plan.settle(entry.id, Delivery::Delivered { link });
                    plan.skipped += 1;
                }
                Ok(data) => {
                    let external_id = links
                        .get(&entry.canonical_id)
                        .and_then(|l| crate::model::ExternalId::parse(&l.external_id).ok());
                    let write = OutboxWrite {
                        entity: kind,
                        canonical_id: entry.canonical_id.clone(),
                        version: head.version,
                        target_system: target.system.clone(),
                    };
                    // An update's key names the version actually sent; a
                    // create's names the record, so that a create whose
                    // answer was lost is found again by a newer version.
                    let key = if external_id.is_some() {
                        write.idempotency_key()
                    } else {
                        write.create_key()
                    };
                    plan.changes.push(Change {
                        idempotency_key: key,
                        external_id,
                        data,
                    });
                    // Each record is sent once per batch (at its newest
                    // version), so its head moves into the plan.
                    let head = heads
                        .remove(&entry.canonical_id)
                        .expect("one entry per record is sent");
                    plan.pending.push((entry.clone(), head));
                }
                Err(errors) => {
                    let error = format!(
                        "mapping {} cannot render this record: {}",
                        mapping.name,
                        errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    );
                    plan.settle(entry.id, Delivery::Dead { error });
                    plan.dead_lettered += 1;
                }
            }
        }
        // Creates of records an older version of which was sent before,
        // answer unknown: the target may hold that older version. (A
        // first version has no older one: first loads ask nothing.)
        let creates: Vec<CanonicalId> = plan
            .changes
            .iter()
            .zip(&plan.pending)
            .filter(|(c, (_, h))| c.external_id.is_none() && h.version > 1)
            .map(|(_, (e, _))| e.canonical_id.clone())
            .collect();
        if !creates.is_empty() {
            plan.tried = self
                .store
                .outbox_tried_creates(kind, &target.system, &creates)
                .await?;
        }
        Ok(Some(plan))
    }

    /// Sends a plan's changes and settles every entry it read, in one
    /// transaction.
    async fn send_planned(
        &self,
        job: &JobSettings,
        target: &Endpoint,
        connector: &dyn Connector,
        plan: DeliveryPlan,
        report: &mut JobReport,
    ) -> anyhow::Result<Sent> {
        let kind = plan.pending.first().map(|(e, _)| e.entity);
        let DeliveryPlan {
            mut settles,
            changes,
            pending,
            tried,
            dead_lettered,
            skipped,
            held,
            ..
        } = plan;
        report.dead_lettered += dead_lettered;
        report.delivery_skipped += skipped;
        report.held += held;
        let mut sent = Sent::default();
        if let Some(kind) = kind {
            let count = changes.len();
            let started = std::time::Instant::now();
            let outcomes = connector.push(&target.entity, changes).await;
            crate::metrics::push(
                &job.name,
                &target.system,
                started.elapsed(),
                &outcomes,
                count,
            );
            match outcomes {
                Ok(outcomes) if outcomes.len() == count => {
                    for ((entry, head), outcome) in pending.into_iter().zip(outcomes) {
                        let settle = match outcome {
                            PushOutcome::Created { external_id }
                                if tried
                                    .get(&entry.canonical_id)
                                    .is_some_and(|&v| v < head.version) =>
                            {
                                // Found by its create key, made by an earlier
                                // try with an older version: send this
                                // version again, as an update.
                                Delivery::Linked {
                                    link: LinkWrite {
                                        entity: kind,
                                        system: target.system.clone(),
                                        external_id: external_id.to_string(),
                                        canonical_id: entry.canonical_id.clone(),
                                        synced_version: None,
                                        synced_data: None,
                                        synced_hash: None,
                                        remote_updated_at: None,
                                        source_hash: None,
                                    },
                                }
                            }
                            PushOutcome::Created { external_id }
                            | PushOutcome::Updated { external_id } => {
                                report.delivered += 1;
                                Delivery::Delivered {
                                    link: LinkWrite {
                                        entity: kind,
                                        system: target.system.clone(),
                                        external_id: external_id.to_string(),
                                        canonical_id: entry.canonical_id.clone(),
                                        synced_version: Some(head.version),
                                        // The head version itself: named,
                                        // not copied.
                                        synced_data: None,
                                        synced_hash: Some(head.content_hash),
                                        remote_updated_at: None,
                                        source_hash: None,
                                    },
                                }
                            }
                            PushOutcome::Rejected { message } => {
                                report.dead_lettered += 1;
                                Delivery::Dead {
                                    error: format!("rejected by {}: {message}", target.system),
                                }
                            }
                            PushOutcome::RetryLater { delay, message } => {
                                self.retry(&entry, Some(delay), message, report)
                            }
                        };
                        settles.push((entry.id, settle));
                    }
                }
                Ok(outcomes) => {
                    self.store.outbox_settle_many(&settles).await?;
                    bail!(
                        "{} answered {} outcomes for {count} changes; nothing is marked delivered",
                        target.system,
                        outcomes.len()
                    );
                }
                Err(e) => {
                    for (entry, _) in &pending {
                        let settle = if e.is_retryable() {
                            self.retry(entry, e.retry_after(), e.to_string(), report)
                        } else {
                            report.dead_lettered += 1;
                            Delivery::Dead {
                                error: e.to_string(),
                            }
                        };
                        settles.push((entry.id, settle));
                    }
                    if e.is_retryable() {
                        self.store.outbox_settle_many(&settles).await?;
                        // The target is struggling: leave the rest for the
                        // next run instead of hammering it.
                        tracing::warn!(message = "Delivery paused.", job = %job.name, target = %target.system, error = %e);
                        sent.paused = true;
                        return Ok(sent);
                    }
                }
            }
        }
        let now = Utc::now();
        sent.due_again = settles
            .iter()
            .any(|(_, d)| matches!(d, Delivery::Retry { at, .. } if *at <= now));
        sent.rewind_to = settles
            .iter()
            .filter(|(_, d)| matches!(d, Delivery::Linked { .. }))
            .map(|(id, _)| *id)
            .min();
        // On a task of its own, as a page's commit: the next batch is read
        // and rendered on this one meanwhile.
        let store = self.store.clone();
        tokio::spawn(async move { store.outbox_settle_many(&settles).await })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Ok(sent)
    }

    /// The next attempt for an entry, or dead letters once attempts run out.
    fn retry(
        &self,
        entry: &OutboxEntry,
        asked: Option<Duration>,
        error: String,
        report: &mut JobReport,
    ) -> Delivery {
        let d = &self.settings.delivery;
        let attempts = u32::try_from(entry.attempts)
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        if attempts >= d.max_attempts {
            report.dead_lettered += 1;
            return Delivery::Dead {
                error: format!("gave up after {attempts} attempts: {error}"),
            };
        }
        report.retry_later += 1;
        let backoff = d
            .initial_retry_secs
            .saturating_mul(1u64 << attempts.min(20))
            .min(d.max_retry_secs);
        // Spread retries so that entries failed together do not return together.
        let jitter = (entry.id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % (backoff / 4 + 1);
        // A target's own wait (Retry-After) is taken up to a day: a wait
        // of years is a target's mistake, not a reason to stop delivering
        // (nor, past the calendar's end, to fail the run).
        let delay = asked.map_or(Duration::from_secs(backoff.saturating_add(jitter)), |d| {
            d.min(LONGEST_ASKED_WAIT)
        });
        let now = Utc::now();
        let at = chrono::Duration::from_std(delay)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or_else(|| {
                now + chrono::Duration::from_std(LONGEST_ASKED_WAIT).expect("a day")
            });
        Delivery::Retry { at, error }
    }
}

/// A target's link, unchanged but for now standing for the record's head
/// version: naming it when the target holds the head's content
/// (`holds_head`), else keeping the link's own copy of what it holds.
fn link_at_head(
    link: &crate::store::Link,
    head: &crate::store::StoredRecord,
    holds_head: bool,
) -> LinkWrite {
    LinkWrite {
        entity: link.entity,
        system: link.system.clone(),
        external_id: link.external_id.clone(),
        canonical_id: link.canonical_id.clone(),
        synced_version: Some(head.version),
        synced_data: if holds_head {
            None
        } else {
            link.synced_data.clone()
        },
        synced_hash: holds_head.then(|| head.content_hash.clone()),
        remote_updated_at: link.remote_updated_at,
        source_hash: None,
    }
}

/// One delivery batch, read and rendered, not yet sent.
#[derive(Default)]
struct DeliveryPlan {
    /// The highest outbox id read: where the next batch starts.
    last_id: i64,
    /// The records whose entries the batch read.
    touched: BTreeSet<CanonicalId>,
    /// Entries settled without sending (superseded, held, already there,
    /// unrenderable), and then those sent.
    settles: Vec<(i64, Delivery)>,
    /// What to send, beside the entry and head version each sends.
    changes: Vec<Change>,
    pending: Vec<(OutboxEntry, crate::store::StoredRecord)>,
    /// For records created again, the oldest version an earlier create
    /// tried (the one a target that found that create holds).
    tried: HashMap<CanonicalId, i64>,
    dead_lettered: usize,
    skipped: usize,
    held: usize,
}

impl DeliveryPlan {
    fn settle(&mut self, id: i64, delivery: Delivery) {
        self.settles.push((id, delivery));
    }
}

/// How sending a batch ended, for the pass that sent it.
#[derive(Default)]
struct Sent {
    /// The target asked to wait: the pass stops.
    paused: bool,
    /// An entry was put back due at once: the pass walks again.
    due_again: bool,
    /// The first entry now linked, to send again as an update.
    rewind_to: Option<i64>,
}

/// A decision that cannot be applied as given: the chosen value does not
/// fit the record (wrong type for the field, a path through a scalar, a
/// candidate for a field conflict). Nothing was written; the operator can
/// decide again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDecision(pub String);

/// What the operator decides about a conflict.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// The incoming system's value (or, for identity, a new record).
    Theirs,
    /// Keep the canonical value.
    Ours,
    /// A value of the operator's (field conflicts).
    Value(Value),
    /// For identity conflicts: the candidate the record is.
    Link(CanonicalId),
    /// For field conflicts: the value a system holds (what it last synced
    /// with the record); the system that raised the conflict means theirs.
    System(String),
}

impl Engine {
    /// Systems that receive changes of `kind` (job targets).
    fn targets_for(&self, kind: EntityKind) -> BTreeSet<String> {
        self.settings
            .jobs
            .iter()
            .flat_map(|j| &j.targets)
            .filter(|t| {
                self.mappings
                    .get(&t.mapping)
                    .is_some_and(|m| m.entity == kind)
            })
            .map(|t| t.system.clone())
            .collect()
    }

    /// The job that reads `kind` from `system`, if one does.
    fn job_reading(&self, system: &str, kind: EntityKind) -> Option<&JobSettings> {
        self.settings.jobs.iter().find(|j| {
            j.source.system == system
                && self
                    .mappings
                    .get(&j.source.mapping)
                    .is_some_and(|m| m.entity == kind)
        })
    }

    /// Settles a conflict: writes the decided value as a new version (by the
    /// operator, with `note`), closes the conflict in the same transaction,
    /// and queues the result for every system that receives the entity.
    /// Returns the version written (or the current one when nothing changed).
    pub async fn resolve_conflict(
        &self,
        id: i64,
        choice: Choice,
        actor: &str,
        note: Option<&str>,
    ) -> anyhow::Result<i64> {
        let conflict = self
            .store
            .conflict(id)
            .await?
            .ok_or_else(|| anyhow!("no conflict {id}"))?;
        if conflict.status != "open" {
            bail!(
                "conflict {id} is {} already{}",
                conflict.status,
                conflict
                    .resolved_by
                    .as_ref()
                    .map(|a| format!(" (by {a})"))
                    .unwrap_or_default()
            );
        }
        let kind = conflict.entity;
        let choice = match choice {
            Choice::System(s) if s == conflict.source_system => Choice::Theirs,
            other => other,
        };
        let mut batch = Batch::default();
        let described;
        let (target_id, base_record, new_value, link) = if conflict.field_path == IDENTITY_FIELD {
            let theirs = conflict
                .theirs
                .clone()
                .ok_or_else(|| anyhow!("conflict {id} lost its record"))?;
            let external_id = conflict
                .base
                .as_ref()
                .and_then(|b| b["external_id"].as_str())
                .ok_or_else(|| anyhow!("conflict {id} does not name the external record"))?
                .to_owned();
            let candidates: Vec<String> = conflict
                .ours
                .as_ref()
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            // Answered since this conflict was opened: by the resolution
            // of another conflict about the same record (each changed
            // arrival of the unlinked record opens one), or by a run. Deciding again would
            // move the link and leave the record it named, already
            // delivered, behind as a duplicate.
            if let Some(linked) = self
                .store
                .find_link(kind, &conflict.source_system, &external_id)
                .await?
            {
                let to = linked.canonical_id;
                if choice != Choice::Link(to.clone()) {
                    bail!(
                        "{} {external_id} is linked to {to} already (decided since conflict {id} was opened); `--take {to}` closes this conflict",
                        conflict.source_system
                    );
                }
                let version = self
                    .store
                    .get_record(kind, &to)
                    .await?
                    .map_or(0, |r| r.version);
                batch
                    .resolved_conflicts
                    .push(crate::store::ConflictResolution {
                        id,
                        resolution: format!(
                            "{} {external_id} was linked to {to} already{}",
                            conflict.source_system,
                            note.map(|n| format!(": {n}")).unwrap_or_default()
                        ),
                        actor: actor.to_owned(),
                    });
                self.store.commit(&batch).await?;
                return Ok(version);
            }
            let link_to = |id: CanonicalId, data: Value| LinkWrite {
                entity: kind,
                system: conflict.source_system.clone(),
                external_id: external_id.clone(),
                canonical_id: id,
                synced_version: None,
                synced_data: Some(data),
                synced_hash: None,
                remote_updated_at: None,
                source_hash: None,
            };
            match choice {
                Choice::Link(candidate) => {
                    if !candidates.iter().any(|c| c == candidate.as_str()) {
                        bail!(
                            "{candidate} is not one of the candidates: {}",
                            candidates.join(", ")
                        );
                    }
                    let current = self
                        .store
                        .get_record(kind, &candidate)
                        .await?
                        .ok_or_else(|| anyhow!("{kind} {candidate} no longer exists"))?;
                    let taken = self
                        .store
                        .external_links(
                            kind,
                            &conflict.source_system,
                            std::slice::from_ref(&candidate),
                        )
                        .await?;
                    if let Some(other) = taken.iter().find(|l| l.external_id != external_id) {
                        bail!(
                            "{candidate} is already linked to {} {}: one canonical record has one record per system. Take `theirs` to keep {external_id} apart, or merge the duplicates in {} first",
                            conflict.source_system,
                            other.external_id,
                            conflict.source_system
                        );
                    }
                    let policies = self.settings.merge.get(&kind).cloned().unwrap_or_default();
                    let ours_origin = Origin {
                        system: current
                            .source_system
                            .clone()
                            .unwrap_or_else(|| "operator".into()),
                        at: Some(current.updated_at),
                    };
                    let theirs_origin = Origin {
                        system: conflict.source_system.clone(),
                        at: None,
                    };
                    let merged = merge::merge(
                        None,
                        &current.data,
                        &ours_origin,
                        &theirs,
                        &theirs_origin,
                        &policies,
                        None,
                    );
                    described = format!(
                        "linked {} {external_id} to {candidate}",
                        conflict.source_system
                    );
                    let link = link_to(candidate.clone(), theirs);
                    (candidate, Some(current), merged.value, Some(link))
                }
                Choice::Theirs => {
                    let new_id = CanonicalId::new();
                    described = format!(
                        "created {new_id} for {} {external_id}",
                        conflict.source_system
                    );
                    let link = link_to(new_id.clone(), theirs.clone());
                    (new_id, None, theirs, Some(link))
                }
                other => bail!(
                    "conflict {id} asks which record {} {external_id} is: take a candidate id ({}) or `theirs` for a new record, not {other:?}",
                    conflict.source_system,
                    candidates.join(", ")
                ),
            }
        } else {
            let current = self
                .store
                .get_record(kind, &conflict.canonical_id)
                .await?
                .ok_or_else(|| anyhow!("{kind} {} no longer exists", conflict.canonical_id))?;
            let path = crate::model::FieldPath::parse(&conflict.field_path)?;
            let mut data = current.data.clone();
            let value = match choice {
                Choice::Theirs => {
                    described = format!("took {}'s value", conflict.source_system);
                    conflict.theirs.clone()
                }
                Choice::Ours => {
                    described = "kept the canonical value".to_owned();
                    path.get(&current.data).cloned()
                }
                Choice::Value(v) => {
                    described = format!("set {}", serde_json::to_string(&v)?);
                    Some(v)
                }
                Choice::System(system) => {
                    let held = self.held_by(kind, &conflict.canonical_id, &system).await?;
                    described = format!("took {system}'s value");
                    path.get(&held).cloned()
                }
                Choice::Link(_) => {
                    return Err(InvalidDecision(format!(
                        "conflict {id} is about field {}, not identity",
                        conflict.field_path
                    ))
                    .into());
                }
            };
            match value {
                Some(v) => {
                    path.set(&mut data, v)
                        .map_err(|e| InvalidDecision(format!("{e:#}")))?;
                }
                None => {
                    path.remove(&mut data);
                }
            }
            (conflict.canonical_id.clone(), Some(current), data, None)
        };
        let entity = Entity::from_value(kind, new_value.clone()).map_err(|e| {
            InvalidDecision(format!("the decided record is not a valid {kind}: {e}"))
        })?;
        let expected = base_record.as_ref().map_or(0, |r| r.version);
        let changed = base_record.as_ref().is_none_or(|r| r.data != new_value);
        let mut version = expected;
        if changed {
            let provenance = Provenance {
                event_id: Some(format!("conflict:{id}")),
                ..Provenance::operator(actor)
            };
            batch.records.push(RecordWrite::of(
                &entity,
                target_id.clone(),
                expected,
                provenance,
            ));
            version = expected + 1;
        }
        // Everyone who receives this entity gets the decision, including
        // the system whose value lost (delivery skips those that hold it).
        for system in self.targets_for(kind) {
            batch.outbox.push(OutboxWrite {
                entity: kind,
                canonical_id: target_id.clone(),
                version,
                target_system: system,
            });
        }
        if let Some(mut link) = link {
            link.synced_version = None;
            batch.links.push(link);
            if let Some(job) = self.job_reading(&conflict.source_system, kind) {
                for key in &job.identity {
                    batch.identity_keys.push(IdentityKeyWrite {
                        entity: kind,
                        key_name: key.clone(),
                        key_value: key_value(&new_value, key),
                        canonical_id: target_id.clone(),
                    });
                }
            }
        }
        batch
            .resolved_conflicts
            .push(crate::store::ConflictResolution {
                id,
                resolution: match note {
                    Some(n) => format!("{described}: {n}"),
                    None => described,
                },
                actor: actor.to_owned(),
            });
        self.store.commit(&batch).await?;
        Ok(version)
    }

    /// What `system` holds of a record: what it last synced with it (its
    /// link's copy, or the version the link names).
    async fn held_by(
        &self,
        kind: EntityKind,
        id: &CanonicalId,
        system: &str,
    ) -> anyhow::Result<Value> {
        let links = self.store.links_of(kind, id).await?;
        let Some(link) = links.into_iter().find(|l| l.system == system) else {
            return Err(InvalidDecision(format!(
                "{system} is not linked to {kind} {id}: it holds no value to take (take theirs, ours or a value)"
            ))
            .into());
        };
        if let Some(data) = link.synced_data {
            return Ok(data);
        }
        let version = link.synced_version.ok_or_else(|| {
            InvalidDecision(format!(
                "what {system} holds of {kind} {id} is not known yet (take theirs, ours or a value)"
            ))
        })?;
        self.store
            .get_version(kind, id, version)
            .await?
            .ok_or_else(|| anyhow!("{kind} {id} has no version {version}, which {system} names"))
    }

    /// Maps quarantined records again with the current mappings (after a
    /// fix) and takes in those that now pass; those that still fail are
    /// quarantined anew with today's reasons. Returns the report.
    pub async fn replay_quarantine(&self, ids: &[i64]) -> anyhow::Result<JobReport> {
        let items = self.store.quarantined_open(ids, 10_000).await?;
        if !ids.is_empty() {
            let found: BTreeSet<i64> = items.iter().map(|q| q.id).collect();
            let missing: Vec<String> = ids
                .iter()
                .filter(|i| !found.contains(i))
                .map(ToString::to_string)
                .collect();
            if !missing.is_empty() {
                bail!("not open in quarantine: {}", missing.join(", "));
            }
        }
        let mut report = JobReport {
            job: "replay quarantine".into(),
            ..JobReport::default()
        };
        let mut groups: BTreeMap<String, Vec<&crate::store::QuarantinedRecord>> = BTreeMap::new();
        for item in &items {
            let job = self
                .job_reading(&item.item.system, item.item.entity)
                .ok_or_else(|| {
                    anyhow!(
                        "quarantined record {} came from {} {}, which no configured job reads",
                        item.id,
                        item.item.system,
                        item.item.entity
                    )
                })?;
            groups.entry(job.name.clone()).or_default().push(item);
        }
        for (name, items) in groups {
            let job = self.job(&name)?;
            let mapping = self.mapping(&job.source, Direction::In)?;
            let records: Vec<RawRecord> = items
                .iter()
                .map(|q| RawRecord {
                    external_id: q
                        .item
                        .external_id
                        .as_deref()
                        .and_then(|e| crate::model::ExternalId::parse(e).ok())
                        .unwrap_or_else(|| {
                            crate::model::ExternalId::parse(&format!("quarantine-{}", q.id))
                                .expect("a valid id")
                        }),
                    updated_at: None,
                    data: q.item.raw.clone(),
                })
                .collect();
            let (mut batch, stats) = self
                .ingest_page(job, &mapping, &records, None, false)
                .await?;
            batch.replayed_quarantine = items.iter().map(|q| q.id).collect();
            self.store.commit(&batch).await?;
            report.pulled += records.len();
            stats.add_to(&mut report);
        }
        Ok(report)
    }

    /// Takes in records that arrived outside a pull (webhook events) for
    /// job `name`: mapped, identified, merged and committed as one page (no
    /// cursor moves), then delivered to the job's targets when `deliver`.
    pub async fn ingest_records(
        &self,
        name: &str,
        records: &[RawRecord],
        deliver: bool,
    ) -> anyhow::Result<JobReport> {
        self.ingest_records_marked(name, records, deliver, &[])
            .await
    }

    /// [`Engine::ingest_records`] for a work item: `work_id` is marked done
    /// in the same transaction as the records
    /// ([`crate::store::Batch::processed_work`]). `None` when it was done
    /// before: nothing is committed, but what is due is still delivered
    /// (when `deliver`), so a delivery that failed after the commit is
    /// retried with the redelivered copy.
    pub async fn ingest_records_once(
        &self,
        name: &str,
        records: &[RawRecord],
        deliver: bool,
        work_id: &str,
    ) -> anyhow::Result<Option<JobReport>> {
        match self
            .ingest_records_marked(name, records, deliver, &[work_id.to_owned()])
            .await
        {
            Ok(report) => Ok(Some(report)),
            Err(e)
                if matches!(
                    e.downcast_ref::<StoreError>(),
                    Some(StoreError::AlreadyProcessed { .. })
                ) =>
            {
                if deliver {
                    let job = self.job(name)?;
                    let mut report = JobReport {
                        job: job.name.clone(),
                        ..JobReport::default()
                    };
                    for target in &job.targets {
                        self.deliver(job, target, &mut report).await?;
                    }
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn ingest_records_marked(
        &self,
        name: &str,
        records: &[RawRecord],
        deliver: bool,
        processed_work: &[String],
    ) -> anyhow::Result<JobReport> {
        let job = self.job(name)?;
        let mapping = self.mapping(&job.source, Direction::In)?;
        let mut report = JobReport {
            job: job.name.clone(),
            pages: 1,
            pulled: records.len(),
            ..JobReport::default()
        };
        let mut attempt = 0;
        loop {
            let (mut batch, stats) = self
                .ingest_page(job, &mapping, records, None, false)
                .await?;
            batch.processed_work = processed_work.to_vec();
            match self.store.commit(&batch).await {
                Ok(_) => {
                    stats.add_to(&mut report);
                    break;
                }
                Err(StoreError::VersionConflict { .. }) if attempt < VERSION_RETRIES => {
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if deliver {
            for target in &job.targets {
                self.deliver(job, target, &mut report).await?;
            }
        }
        Ok(report)
    }

    /// Delivers what is due to every target of every job (after a replay
    /// of dead letters, say).
    pub async fn deliver_all(&self, only: Option<&str>) -> anyhow::Result<JobReport> {
        let mut report = JobReport {
            job: "delivery".into(),
            ..JobReport::default()
        };
        for job in &self.settings.jobs {
            for target in &job.targets {
                if only.is_some_and(|o| o != target.system) {
                    continue;
                }
                self.deliver(job, target, &mut report)
                    .await
                    .with_context(|| {
                        format!("job {}: delivering to {}", job.name, target.system)
                    })?;
            }
        }
        if let Some(push) = &self.settings.reconcile.push
            && only.is_none_or(|o| o == push.system)
        {
            self.deliver_payments(&mut report).await?;
        }
        Ok(report)
    }
}

/// The name payments from reconciliation are delivered under (logs,
/// metrics), as if by a job.
pub const PAYMENT_PUSH: &str = "reconcile-push";

impl Engine {
    /// `[reconcile.push]` names a system with a definition and an outbound
    /// mapping of canonical payments for it.
    fn check_payment_push(&self) -> anyhow::Result<()> {
        let Some(push) = &self.settings.reconcile.push else {
            return Ok(());
        };
        let attached = self
            .connectors
            .lock()
            .expect("connector cache")
            .contains_key(&push.system);
        if !attached {
            self.definition_of(&push.system)?;
        }
        let m = self.mapping(&push.endpoint(), Direction::Out)?;
        if m.entity != EntityKind::Payment {
            bail!(
                "mapping {:?} writes {}, but payments are pushed",
                m.name,
                m.entity
            );
        }
        Ok(())
    }

    /// Delivers the payments reconciliation queued (`[reconcile.push]`)
    /// through the same path as a job's target: head version rendered with
    /// the outbound mapping, pushed with its idempotency key, settled,
    /// retried or dead-lettered. Then checks that no payment reached the
    /// ERP after its allocation was undone. Nothing when push is off.
    pub async fn deliver_payments(&self, report: &mut JobReport) -> anyhow::Result<()> {
        let Some(push) = &self.settings.reconcile.push else {
            return Ok(());
        };
        let target = push.endpoint();
        let job = JobSettings {
            name: PAYMENT_PUSH.to_owned(),
            schedule: None,
            timezone: None,
            source: target.clone(),
            targets: Vec::new(),
            identity: Vec::new(),
            batch_size: self.settings.delivery.batch_size.max(1),
        };
        self.deliver(&job, &target, report)
            .await
            .with_context(|| format!("{PAYMENT_PUSH}: delivering payments to {}", push.system))?;
        crate::reconcile::push::check_after_delivery(&self.store).await?;
        Ok(())
    }
}

/// Alerts for what a source reported besides records: statements that do
/// not add up, input it set aside. Each is raised once per cause.
fn notice_alerts(system: &str, notices: &[crate::connector::Notice]) -> Vec<NewAlert> {
    use crate::connector::Notice;
    notices
        .iter()
        .filter_map(|n| match n {
            Notice::Statement { source, summary } => {
                let check = summary.balance_check.as_ref().filter(|c| !c.is_ok())?;
                Some(NewAlert {
                    rule: "statement_balance_mismatch".into(),
                    severity: Severity::Warning,
                    entity: Some(EntityKind::BankTransaction),
                    record_ids: vec![summary.fingerprint.clone()],
                    reason: format!(
                        "{system}: {} statement {} of account {} from {source}: {}",
                        summary.format,
                        summary.id.as_deref().unwrap_or("(no id)"),
                        summary.account,
                        crate::bank::check_line(&summary.balance_check)
                    ),
                    amount: crate::model::Money::new(check.difference, check.currency).ok(),
                    cause: Some(summary.fingerprint.clone()),
                })
            }
            Notice::SetAside { item, to, reason } => Some(NewAlert {
                rule: "input_set_aside".into(),
                severity: Severity::Warning,
                entity: None,
                record_ids: vec![item.clone()],
                reason: format!(
                    "{system}: {item} could not be read and was moved to {to}: {reason}"
                ),
                amount: None,
                cause: Some(format!("{system}:{item}")),
            }),
        })
        .collect()
}

/// A page pulled and turned into a batch, not committed yet.
struct Prepared {
    page: Page,
    batch: Batch,
    stats: PageStats,
    /// Prepared while an earlier page was committing, and touching what
    /// that page writes: to be prepared again.
    batch_is_stale: bool,
}

/// A source's pages with one read ahead: the next page is read while the
/// current one is mapped and committed, and held (one page: memory stays
/// flat) until asked for. Nothing read ahead is acknowledged before its
/// turn.
struct ReadAhead<'a> {
    pages: connector::PageStream<'a>,
    /// `Some(None)`: the source has no more.
    ahead: Option<Option<Result<Page, ConnectorError>>>,
}

impl<'a> ReadAhead<'a> {
    fn new(pages: connector::PageStream<'a>) -> ReadAhead<'a> {
        ReadAhead { pages, ahead: None }
    }

    /// The page read ahead, or else the source's next.
    async fn next(&mut self) -> Option<Result<Page, ConnectorError>> {
        match self.ahead.take() {
            Some(page) => page,
            None => self.pages.next().await,
        }
    }

    /// The page read ahead, if one was.
    fn take_ahead(&mut self) -> Option<Option<Result<Page, ConnectorError>>> {
        self.ahead.take()
    }

    /// Reads the next page into the slot, when `wanted` and it is empty.
    async fn read_ahead(&mut self, wanted: bool) {
        if wanted && self.ahead.is_none() {
            self.ahead = Some(self.pages.next().await);
        }
    }
}

/// A page read (not the end, not an error) that needs no acknowledgement,
/// after which the source may be read ahead. A page to acknowledge holds
/// something at the source until it is committed: a queue hands out only
/// its prefetch window of such messages, and its pull ends when it has none
/// to give. The page committing and the page prepared already take two
/// pages of that window, all of it by default (the amqp driver's
/// `prefetch`); reading a third would end the run early.
fn needs_no_ack(page: &Option<Result<Page, ConnectorError>>) -> bool {
    matches!(page, Some(Ok(page)) if page.ack.is_none())
}

/// What a batch being committed writes, for the page prepared meanwhile to
/// keep clear of.
struct InFlight {
    /// Records the batch writes.
    records: usize,
    links: HashSet<(String, String)>,
    keys: HashSet<(String, String)>,
    canonical_ids: HashSet<CanonicalId>,
}

impl InFlight {
    fn of(batch: &Batch) -> InFlight {
        InFlight {
            records: batch.records.len(),
            links: batch
                .links
                .iter()
                .map(|l| (l.system.clone(), l.external_id.clone()))
                .collect(),
            keys: batch
                .identity_keys
                .iter()
                .filter_map(|k| Some((k.key_name.clone(), k.key_value.clone()?)))
                .collect(),
            canonical_ids: batch
                .records
                .iter()
                .map(|r| r.id.clone())
                .chain(batch.links.iter().map(|l| l.canonical_id.clone()))
                .chain(batch.conflicts.iter().map(|c| c.canonical_id.clone()))
                .collect(),
        }
    }

    fn has_link(&self, system: &str, external_id: &str) -> bool {
        self.links
            .contains(&(system.to_owned(), external_id.to_owned()))
    }

    fn has_key(&self, name: &str, value: &str) -> bool {
        self.keys.contains(&(name.to_owned(), value.to_owned()))
    }
}

/// Counters of one page, added to the report once the page is committed.
#[derive(Default)]
struct PageStats {
    created: usize,
    updated: usize,
    unchanged: usize,
    quarantined: usize,
    conflicts: usize,
    changes: Vec<PlannedChange>,
}

impl PageStats {
    fn plan(
        &mut self,
        dry_run: bool,
        raw: &RawRecord,
        action: &'static str,
        id: Option<&CanonicalId>,
        fields: Vec<FieldChange>,
        reason: Option<String>,
    ) {
        if dry_run {
            self.changes.push(PlannedChange {
                external_id: raw.external_id.to_string(),
                action,
                canonical_id: id.map(ToString::to_string),
                fields,
                reason,
            });
        }
    }

    fn add_to(self, report: &mut JobReport) {
        report.created += self.created;
        report.updated += self.updated;
        report.unchanged += self.unchanged;
        report.quarantined += self.quarantined;
        report.conflicts += self.conflicts;
        report.changes.extend(self.changes);
    }
}

/// Field-by-field differences between two canonical records.
fn diff(before: Option<&Value>, after: &Value) -> Vec<FieldChange> {
    let empty = Value::Object(Default::default());
    let before = before.unwrap_or(&empty);
    let a: BTreeMap<String, &Value> = crate::model::leaves(before)
        .into_iter()
        .map(|(p, v)| (p.to_string(), v))
        .collect();
    let b: BTreeMap<String, &Value> = crate::model::leaves(after)
        .into_iter()
        .map(|(p, v)| (p.to_string(), v))
        .collect();
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| FieldChange {
            field: k.clone(),
            from: a.get(k).map(|v| (*v).clone()),
            to: b.get(k).map(|v| (*v).clone()),
        })
        .collect()
}

/// Resolves every lookup a batch of records needs, with one store query per
/// entity and system. `rename` maps a definition name used in the mapping
/// (`xero`) to the instance whose links answer it (`xero_main`).
///
/// The keys are collected before the returned future starts, so the future
/// holds no iterator and is `Send` (the daemon runs it on spawned tasks).
pub fn resolve_lookups<'a>(
    store: &'a Store,
    mapping: &'a Mapping,
    records: impl Iterator<Item = &'a Value>,
    rename: &'a BTreeMap<String, String>,
) -> impl Future<Output = anyhow::Result<Lookups>> + Send + 'a {
    let keys: Vec<LookupKey> = if mapping.has_lookups() {
        records.flat_map(|r| mapping.lookup_keys(r)).collect()
    } else {
        Vec::new()
    };
    resolve_lookup_keys(store, mapping, keys, rename)
}

async fn resolve_lookup_keys(
    store: &Store,
    mapping: &Mapping,
    mut keys: Vec<LookupKey>,
    rename: &BTreeMap<String, String>,
) -> anyhow::Result<Lookups> {
    let mut lookups = Lookups::default();
    if keys.is_empty() {
        return Ok(lookups);
    }
    keys.sort_by(|a, b| {
        (a.entity.as_str(), &a.system, &a.value).cmp(&(b.entity.as_str(), &b.system, &b.value))
    });
    keys.dedup();
    let mut i = 0;
    while i < keys.len() {
        let (entity, system) = (keys[i].entity, keys[i].system.clone());
        let group: Vec<String> = keys[i..]
            .iter()
            .take_while(|k| k.entity == entity && k.system == system)
            .map(|k| k.value.clone())
            .collect();
        i += group.len();
        let instance = rename.get(&system).unwrap_or(&system);
        match mapping.direction {
            Direction::In => {
                for link in store.find_links(entity, instance, &group).await? {
                    lookups.insert(
                        entity,
                        &system,
                        &link.external_id,
                        link.canonical_id.as_str(),
                    );
                }
            }
            Direction::Out => {
                let ids: Vec<CanonicalId> = group
                    .iter()
                    .filter_map(|v| CanonicalId::parse(v).ok())
                    .collect();
                for link in store.external_links(entity, instance, &ids).await? {
                    lookups.insert(
                        entity,
                        &system,
                        link.canonical_id.as_str(),
                        &link.external_id,
                    );
                }
            }
        }
    }
    Ok(lookups)
}
