//! The conformance kit: behaviour every driver must show, checked the same
//! way for each.
//!
//! A driver's integration test implements [`Harness`] over a real or local
//! system (a mock HTTP server, a database, a folder, a broker) and calls the
//! checks that apply to it:
//!
//! - [`pull_pages`]: every record exactly once, whatever the page boundaries,
//!   including records sharing one `updated_at` across a page boundary;
//! - [`resume_from_cursor`]: stop after a page, change the source, resume from
//!   the saved cursor: nothing is lost (re-reading the boundary is allowed);
//! - [`change_during_pull`]: records already read change while the pull goes
//!   on (in a list sorted by time they move to its end and shift the rest):
//!   that pull and the next, from its last cursor, lose nothing;
//! - [`redeliver_unacked`]: for consuming sources, a page never acknowledged
//!   is read again, an acknowledged one is not;
//! - [`idempotent_push`]: the same change pushed twice writes once;
//! - [`classify_errors`]: each fault the harness can stage surfaces as the
//!   right [`ErrorKind`], and no page is returned for a failed request;
//! - [`quarantine_malformed`]: unreadable records come back as the page's
//!   rejects, and the records around them still arrive.
//!
//! Every pull the kit drains must carry no rejects unless the harness placed
//! unreadable records on purpose.
//!
//! Each check returns `Err` with what differed, so a test reads
//! `conformance::pull_pages(&h).await.unwrap()`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use futures_util::StreamExt;
use serde_json::Value;

use super::{Change, Connector, Cursor, ErrorKind, Page, PushOutcome, RawRecord, Reject};

/// A record to place at the source, in the harness's own shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub id: String,
    pub updated_at: DateTime<Utc>,
    /// A field that changes when the record is updated.
    pub name: String,
}

/// A failure the harness can make the system show on its next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Credentials refused (and still refused after a refresh).
    Unauthorized,
    /// Too many requests, with a `Retry-After` of this many seconds.
    RateLimited { retry_after_secs: u64 },
    /// Down or overloaded (HTTP 503, connection refused, broker gone).
    Unavailable,
    /// No answer within the configured timeout.
    Timeout,
    /// An answer that cannot be read (truncated or not the expected format).
    Malformed,
}

impl Fault {
    /// The kind the driver must report for this fault.
    pub fn expected(self) -> ErrorKind {
        match self {
            Fault::Unauthorized => ErrorKind::Auth,
            Fault::RateLimited { retry_after_secs } => ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(retry_after_secs)),
            },
            Fault::Unavailable => ErrorKind::Unavailable,
            Fault::Timeout => ErrorKind::Timeout,
            Fault::Malformed => ErrorKind::InvalidData,
        }
    }
}

/// A driver under test, over a system the test controls.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The connector under test, configured with [`Harness::page_size`].
    fn connector(&self) -> Arc<dyn Connector>;
    /// The entity the checks pull and push.
    fn entity(&self) -> &str;
    /// Records per page the connector asks for.
    fn page_size(&self) -> usize;
    /// Replaces everything at the source with these records.
    async fn seed(&self, records: &[Seed]) -> anyhow::Result<()>;
    /// Adds or changes records at the source, leaving the others.
    async fn upsert(&self, records: &[Seed]) -> anyhow::Result<()>;
    /// The record bodies the system holds after pushes, by external id.
    async fn stored(&self) -> anyhow::Result<BTreeMap<String, Value>> {
        bail!("this harness does not support pushes")
    }
    /// A record body the system accepts on push, distinguished by `n`.
    fn push_body(&self, n: usize) -> Value {
        serde_json::json!({ "name": format!("pushed {n}") })
    }
    /// Which seed a pulled record is. Sources whose ids are the seeds' own
    /// answer with the external id; sources that derive ids (bank
    /// statement lines are keyed by their content) read it from the data.
    fn seed_id(&self, record: &RawRecord) -> String {
        record.external_id.as_str().to_owned()
    }
    /// Makes the system's next request(s) fail with `fault`; `false` when
    /// the harness cannot stage that fault.
    async fn inject(&self, fault: Fault) -> anyhow::Result<bool> {
        let _ = fault;
        Ok(false)
    }
    /// Undoes [`Harness::inject`].
    async fn heal(&self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Replaces everything at the source with `records` plus `malformed`
    /// unreadable records placed among them (a broken line, a value that
    /// does not parse); `false` when the source cannot hold such records.
    async fn seed_malformed(&self, records: &[Seed], malformed: usize) -> anyhow::Result<bool> {
        let _ = (records, malformed);
        Ok(false)
    }
}

/// `n` records; groups of three share an `updated_at`, so equal timestamps
/// straddle page boundaries for most page sizes.
pub fn seeds(n: usize) -> Vec<Seed> {
    let base = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
    (0..n)
        .map(|i| Seed {
            id: format!("R{i:06}"),
            updated_at: base + chrono::Duration::seconds((i / 3) as i64),
            name: format!("record {i}"),
        })
        .collect()
}

/// Reads a whole pull, acknowledging each page, and returns the pages'
/// record ids and cursors. Any reject fails it: the harness placed only
/// readable records.
async fn drain(
    h: &dyn Harness,
    connector: &dyn Connector,
    entity: &str,
    cursor: Option<Cursor>,
    limit: usize,
) -> anyhow::Result<(Vec<Vec<String>>, Vec<Cursor>)> {
    let (pages, cursors, rejects) = drain_with_rejects(h, connector, entity, cursor, limit).await?;
    if let Some(first) = rejects.first() {
        bail!(
            "{} readable records were rejected, first at {}: {}",
            rejects.len(),
            first.position,
            first.reason
        );
    }
    Ok((pages, cursors))
}

/// [`drain`], returning the rejects instead of failing on them.
async fn drain_with_rejects(
    h: &dyn Harness,
    connector: &dyn Connector,
    entity: &str,
    cursor: Option<Cursor>,
    limit: usize,
) -> anyhow::Result<(Vec<Vec<String>>, Vec<Cursor>, Vec<Reject>)> {
    let mut rejects = Vec::new();
    let mut stream = connector.pull(entity, cursor.clone());
    let mut pages = Vec::new();
    let mut cursors = Vec::new();
    let mut last = cursor.unwrap_or_default();
    while let Some(page) = stream.next().await {
        let page = page.with_context(|| format!("page {} of the pull", pages.len() + 1))?;
        check_cursor_forward(&last, &page.cursor, pages.len() + 1)?;
        last = page.cursor.clone();
        pages.push(ids(h, &page));
        cursors.push(page.cursor.clone());
        rejects.extend(page.rejects);
        if let Some(ack) = page.ack {
            ack.ack().await.context("acknowledging a page")?;
        }
        ensure!(
            pages.len() <= limit,
            "more than {limit} pages: the pull does not end"
        );
    }
    Ok((pages, cursors, rejects))
}

fn ids(h: &dyn Harness, page: &Page) -> Vec<String> {
    page.records.iter().map(|r| h.seed_id(r)).collect()
}

fn check_cursor_forward(before: &Cursor, after: &Cursor, page: usize) -> anyhow::Result<()> {
    if let (Some(b), Some(a)) = (before.updated_at, after.updated_at) {
        ensure!(
            (a, after.id.as_deref().unwrap_or("")) >= (b, before.id.as_deref().unwrap_or("")),
            "cursor went backwards at page {page}: {before:?} -> {after:?}"
        );
    }
    Ok(())
}

/// Every record exactly once, for record counts around the page size.
pub async fn pull_pages(h: &dyn Harness) -> anyhow::Result<()> {
    let size = h.page_size();
    ensure!(size >= 2, "use a page size of at least 2 for the kit");
    let connector = h.connector();
    for n in [0, 1, size - 1, size, size + 1, 2 * size, 2 * size + 3] {
        let records = seeds(n);
        h.seed(&records).await?;
        let (pages, cursors) = drain(h, connector.as_ref(), h.entity(), None, n + 3)
            .await
            .with_context(|| format!("pulling {n} records"))?;
        let got: Vec<String> = pages.concat();
        let unique: BTreeSet<&String> = got.iter().collect();
        ensure!(
            unique.len() == got.len(),
            "{n} records with page size {size}: {} duplicates in one pull",
            got.len() - unique.len()
        );
        let want: BTreeSet<String> = records.iter().map(|r| r.id.clone()).collect();
        let got: BTreeSet<String> = got.into_iter().collect();
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&want).take(5).collect();
        ensure!(
            missing.is_empty() && extra.is_empty(),
            "{n} records with page size {size}: missing {missing:?}, unexpected {extra:?}"
        );
        ensure!(
            pages.iter().all(|p| p.len() <= size),
            "{n} records: a page is larger than the page size {size}"
        );
        if let (Some(last), Some(newest)) = (cursors.last(), records.last())
            && last.updated_at.is_some()
        {
            ensure!(
                last.updated_at == Some(newest.updated_at),
                "{n} records: final cursor {last:?} is not at the newest record {}",
                newest.updated_at
            );
        }
    }
    Ok(())
}

/// Stop after the first page with a cursor, change the source, resume from
/// the saved cursor: every record changed or added after the cursor is
/// read, and nothing before it is lost.
pub async fn resume_from_cursor(h: &dyn Harness) -> anyhow::Result<()> {
    let size = h.page_size();
    let records = seeds(2 * size + size / 2);
    h.seed(&records).await?;
    let connector = h.connector();

    // Stop at the first page whose cursor says where it stands. Sources
    // read in no particular order (an API that lists by id) leave the
    // cursor where it was until their last page, so for them that is the
    // end of the first pull.
    let mut stream = connector.pull(h.entity(), None);
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut saved = Cursor::default();
    let mut pages = 0;
    while let Some(page) = stream.next().await {
        pages += 1;
        let page = page.with_context(|| format!("page {pages} of the first pull"))?;
        saved = page.cursor.clone();
        seen.extend(ids(h, &page));
        if let Some(ack) = page.ack {
            ack.ack().await?;
        }
        if saved.updated_at.is_some() || saved.token.is_some() {
            break;
        }
        ensure!(pages <= 10 * size, "the first pull does not end");
    }
    drop(stream);
    ensure!(pages > 0, "no first page");
    ensure!(
        saved.updated_at.is_some() || saved.token.is_some(),
        "no page of a whole pull has a cursor: {saved:?}"
    );

    // A record already read changes; one arrives with the cursor's own
    // timestamp; one arrives later.
    let read_one = records
        .iter()
        .find(|r| seen.contains(&r.id))
        .ok_or_else(|| anyhow!("nothing was read before the saved cursor"))?;
    let latest = records.last().map(|r| r.updated_at).unwrap();
    let at_cursor = saved.updated_at.unwrap_or(latest);
    let changes = vec![
        Seed {
            id: read_one.id.clone(),
            updated_at: latest + chrono::Duration::seconds(60),
            name: format!("{} (changed)", read_one.name),
        },
        Seed {
            id: "S-at-cursor".into(),
            updated_at: at_cursor,
            name: "arrived with the cursor's timestamp".into(),
        },
        Seed {
            id: "S-late".into(),
            updated_at: latest + chrono::Duration::seconds(120),
            name: "arrived later".into(),
        },
    ];
    h.upsert(&changes).await?;

    let (pages, _) = drain(
        h,
        connector.as_ref(),
        h.entity(),
        Some(saved.clone()),
        10 * size,
    )
    .await
    .context("resuming from the saved cursor")?;
    let resumed: Vec<String> = pages.concat();
    for c in &changes {
        ensure!(
            resumed.contains(&c.id),
            "resuming from {saved:?} did not read {} ({})",
            c.id,
            c.name
        );
    }
    seen.extend(resumed);
    let missing: Vec<_> = records
        .iter()
        .filter(|r| !seen.contains(&r.id))
        .map(|r| &r.id)
        .take(5)
        .collect();
    ensure!(missing.is_empty(), "lost across the resume: {missing:?}");
    Ok(())
}

/// Two records of the first page change while the pull goes on. In a list
/// sorted by time they move to its end, and every record behind them moves
/// up two places: a source that pages by position would step over records
/// at the next page boundary. That pull, and the next one from the last
/// cursor it gave, must read every record, and the changed ones again.
pub async fn change_during_pull(h: &dyn Harness) -> anyhow::Result<()> {
    let size = h.page_size();
    ensure!(size >= 2, "use a page size of at least 2 for the kit");
    let records = seeds(3 * size);
    h.seed(&records).await?;
    let connector = h.connector();

    let mut stream = connector.pull(h.entity(), None);
    let first = stream
        .next()
        .await
        .ok_or_else(|| anyhow!("no first page"))?
        .context("page 1 of the pull")?;
    let first_ids = ids(h, &first);
    check_cursor_forward(&Cursor::default(), &first.cursor, 1)?;
    let mut last = first.cursor.clone();
    if let Some(ack) = first.ack {
        ack.ack().await.context("acknowledging a page")?;
    }
    ensure!(
        first_ids.len() >= 2 && first_ids.len() < records.len(),
        "the first page holds {} of {} records; the check needs a page boundary after two",
        first_ids.len(),
        records.len()
    );
    let newest = records.last().map(|r| r.updated_at).unwrap();
    let changed: Vec<Seed> = first_ids[..2]
        .iter()
        .enumerate()
        .map(|(n, id)| Seed {
            id: id.clone(),
            updated_at: newest + chrono::Duration::seconds(60 + n as i64),
            name: format!("changed during the pull ({n})"),
        })
        .collect();
    h.upsert(&changed).await?;

    let mut later: Vec<String> = Vec::new();
    let mut pages = 1;
    while let Some(page) = stream.next().await {
        pages += 1;
        let page = page.with_context(|| format!("page {pages} of the pull"))?;
        check_cursor_forward(&last, &page.cursor, pages)?;
        last = page.cursor.clone();
        later.extend(ids(h, &page));
        if let Some(ack) = page.ack {
            ack.ack().await.context("acknowledging a page")?;
        }
        ensure!(pages <= 10 * size, "the pull does not end");
    }
    drop(stream);
    let (next, _) = drain(
        h,
        connector.as_ref(),
        h.entity(),
        Some(last.clone()),
        10 * size,
    )
    .await
    .with_context(|| format!("the next pull, from {last:?}"))?;
    later.extend(next.concat());

    let mut seen: BTreeSet<&String> = first_ids.iter().collect();
    seen.extend(later.iter());
    let missing: Vec<_> = records
        .iter()
        .map(|r| &r.id)
        .filter(|id| !seen.contains(id))
        .take(5)
        .collect();
    ensure!(
        missing.is_empty(),
        "lost while two records changed during the pull: {missing:?} (the pull ended at {last:?})"
    );
    for c in &changed {
        ensure!(
            later.contains(&c.id),
            "{} changed during the pull but was not read again",
            c.id
        );
    }
    Ok(())
}

/// For consuming sources: a page not acknowledged comes back; an
/// acknowledged page does not.
pub async fn redeliver_unacked(h: &dyn Harness) -> anyhow::Result<()> {
    let size = h.page_size();
    let records = seeds(size + 1);
    h.seed(&records).await?;
    let connector = h.connector();

    let first_ids = {
        let mut stream = connector.pull(h.entity(), None);
        let page = stream
            .next()
            .await
            .ok_or_else(|| anyhow!("no first page"))?
            .context("first page")?;
        ensure!(page.ack.is_some(), "a consuming source must attach an Ack");
        let first = ids(h, &page);
        if let Some(ack) = page.ack {
            ack.nack(true, "conformance: hand it back").await?;
        }
        first
    };
    // Pull again: the handed-back records come again, then everything is
    // acknowledged.
    let (pages, _) = drain(h, connector.as_ref(), h.entity(), None, 10 * size).await?;
    let again: BTreeSet<String> = pages.concat().into_iter().collect();
    for id in &first_ids {
        ensure!(
            again.contains(id),
            "{id} was handed back but not read again"
        );
    }
    let (pages, _) = drain(h, connector.as_ref(), h.entity(), None, 10 * size).await?;
    let third: Vec<String> = pages.concat();
    ensure!(
        third.is_empty(),
        "acknowledged records were read again: {:?}",
        &third[..third.len().min(5)]
    );
    Ok(())
}

/// The same change pushed twice (same idempotency key) writes once; an
/// update through the returned id changes that record.
pub async fn idempotent_push(h: &dyn Harness) -> anyhow::Result<()> {
    h.seed(&[]).await?;
    let connector = h.connector();
    let change = |n: usize, key: &str, id: Option<crate::model::ExternalId>| Change {
        idempotency_key: key.to_owned(),
        external_id: id,
        data: h.push_body(n),
    };
    let first = connector
        .push(
            h.entity(),
            vec![
                change(1, "customer:c1:1:target", None),
                change(2, "customer:c2:1:target", None),
            ],
        )
        .await
        .context("first push")?;
    ensure!(first.len() == 2, "2 changes, {} outcomes", first.len());
    let id1 = match &first[0] {
        PushOutcome::Created { external_id } | PushOutcome::Updated { external_id } => {
            external_id.clone()
        }
        other => bail!("first push: {other:?}"),
    };
    let again = connector
        .push(h.entity(), vec![change(1, "customer:c1:1:target", None)])
        .await
        .context("repeated push")?;
    match &again[..] {
        [PushOutcome::Created { external_id } | PushOutcome::Updated { external_id }]
            if *external_id == id1 => {}
        other => bail!("repeating a push with the same key gave {other:?}, expected id {id1}"),
    }
    let stored = h.stored().await?;
    ensure!(
        stored.len() == 2,
        "after pushing 2 records (one of them twice) the system holds {}",
        stored.len()
    );
    let update = connector
        .push(
            h.entity(),
            vec![change(3, "customer:c1:2:target", Some(id1.clone()))],
        )
        .await
        .context("update push")?;
    match &update[..] {
        [PushOutcome::Updated { external_id } | PushOutcome::Created { external_id }]
            if *external_id == id1 => {}
        other => bail!("update of {id1} gave {other:?}"),
    }
    let stored = h.stored().await?;
    ensure!(
        stored.len() == 2,
        "an update added a record: {}",
        stored.len()
    );
    let body = stored
        .get(id1.as_str())
        .ok_or_else(|| anyhow!("{id1} is gone after its update"))?;
    let want = h.push_body(3);
    for (k, v) in want.as_object().into_iter().flatten() {
        ensure!(
            body.get(k) == Some(v),
            "after the update {id1}.{k} is {:?}, expected {v}",
            body.get(k)
        );
    }
    Ok(())
}

/// Each fault the harness can stage surfaces with the right kind, and the
/// failed request yields no page.
pub async fn classify_errors(h: &dyn Harness) -> anyhow::Result<Vec<Fault>> {
    let size = h.page_size();
    h.seed(&seeds(size * 2)).await?;
    let mut tested = Vec::new();
    for fault in [
        Fault::Unauthorized,
        Fault::RateLimited {
            retry_after_secs: 7,
        },
        Fault::Unavailable,
        Fault::Timeout,
        Fault::Malformed,
    ] {
        if !h.inject(fault).await? {
            continue;
        }
        // Asked for after the fault is staged: a harness may stage it in
        // the connector's configuration (a closed port, a wrong password).
        let connector = h.connector();
        let mut stream = connector.pull(h.entity(), None);
        let result = stream.next().await;
        drop(stream);
        h.heal().await?;
        match result {
            Some(Err(e)) => {
                let want = fault.expected();
                let same = match (e.kind, want) {
                    (ErrorKind::RateLimited { retry_after }, ErrorKind::RateLimited { .. }) => {
                        ensure!(
                            retry_after == Some(Duration::from_secs(7)),
                            "{fault:?}: Retry-After not honoured: {retry_after:?}"
                        );
                        true
                    }
                    (a, b) => a == b,
                };
                ensure!(same, "{fault:?} surfaced as {} ({e})", e.kind);
                ensure!(
                    e.is_retryable() == want.is_retryable(),
                    "{fault:?}: retryable mismatch"
                );
            }
            Some(Ok(page)) => bail!(
                "{fault:?}: a page of {} records was returned",
                page.records.len()
            ),
            None => bail!("{fault:?}: the pull ended without an error"),
        }
        tested.push(fault);
    }
    ensure!(!tested.is_empty(), "the harness staged no fault at all");
    Ok(tested)
}

/// Unreadable records surface as rejects with a position and a reason; the
/// readable records around them arrive exactly once and the pull ends.
pub async fn quarantine_malformed(h: &dyn Harness) -> anyhow::Result<bool> {
    let size = h.page_size();
    let records = seeds(2 * size + 1);
    let malformed = 3;
    if !h.seed_malformed(&records, malformed).await? {
        return Ok(false);
    }
    let connector = h.connector();
    let (pages, _, rejects) =
        drain_with_rejects(h, connector.as_ref(), h.entity(), None, 10 * size)
            .await
            .context("pulling a source with unreadable records")?;
    let got: Vec<String> = pages.concat();
    let unique: BTreeSet<&String> = got.iter().collect();
    ensure!(unique.len() == got.len(), "records were read twice");
    let want: BTreeSet<&String> = records.iter().map(|r| &r.id).collect();
    ensure!(
        unique == want,
        "the readable records differ: missing {:?}, unexpected {:?}",
        want.difference(&unique).take(5).collect::<Vec<_>>(),
        unique.difference(&want).take(5).collect::<Vec<_>>()
    );
    ensure!(
        rejects.len() == malformed,
        "{malformed} unreadable records placed, {} rejected: {rejects:?}",
        rejects.len()
    );
    for r in &rejects {
        ensure!(
            !r.position.is_empty() && !r.reason.is_empty(),
            "a reject without a position or reason: {r:?}"
        );
    }
    Ok(true)
}
