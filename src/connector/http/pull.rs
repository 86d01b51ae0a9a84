//! Pulls: pages requested one at a time as the consumer asks for them,
//! records read with their ids and timestamps, the cursor moved forward
//! only as far as is safe, and systems that page in circles stopped.
//!
//! Where the next page starts (the definition's `Pagination` tells users
//! the same):
//! - *keyset restart*: the same request again, filtered from the newest
//!   `updated_at` read, at the first page; records read already are
//!   dropped (older ones, and the ids read at that very time);
//! - *step*: the next page number, offset or token of the same request.
//!   Offsets of an `ordered` list overlap by one record: the page must hold
//!   the last record of the page before.
//!
//! Why an `ordered` pull loses nothing. Records come in `updated_at` order,
//! so a record can only be missed at a page boundary, and only when the
//! list shifted between the two requests (a record in front of the
//! boundary changed and moved to the end, or went away). The record that
//! crossed the boundary then lies, in that order, between the last record
//! of the earlier page and the first of the later one. A keyset restart
//! asks for everything from the newest time read, so nothing can lie
//! between. An offset step that finds the earlier page's last record in
//! its page reads on right after it, wherever the list moved it. Any other
//! step (page numbers, tokens and links under keyset, an offset whose check
//! failed) may hide a record, and that record is no older than the newest
//! one read before the step:
//! from that step on the pull *holds* its cursor there, so the next pull
//! (which asks from the cursor minus the look-back) reads it. Records
//! written late with an older time are the look-back's concern, as for
//! any pull.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use chrono::{DateTime, Utc};
use futures_util::stream;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

use super::HttpConnector;
use super::client::Call;
use super::definition::PaginationStyle;
use super::request::{Entity, IncrementalTpl, Paging, RequestTpl, Vars, value_text};
use super::time::Since;
use crate::connector::{ConnectorError, Cursor, Page, PageStream, RawRecord};

/// Empty pages in a row that still point to a next page: more means the
/// system pages without end.
const MAX_EMPTY_PAGES: usize = 50;

/// How far before the `{since}` it asked for a restarted page may begin:
/// systems that compare whole seconds (Xero's "accurate to the second")
/// return the rest of that second too.
const SINCE_SLACK: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

pub(super) fn stream<'a>(
    c: &'a HttpConnector,
    entity: &'a str,
    cursor: Option<Cursor>,
) -> PageStream<'a> {
    let pull = match Pull::new(c, entity, cursor) {
        Ok(p) => p,
        Err(e) => return stream::once(async move { Err(e) }).boxed(),
    };
    stream::unfold(Some(pull), |pull| async move {
        let mut pull = pull?;
        match pull.next().await {
            Ok(Some(page)) => Some((Ok(page), Some(pull))),
            Ok(None) => None,
            // A failed request ends the pull: no page for it, no guessing.
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed()
}

pub(super) struct Pull<'a> {
    c: &'a HttpConnector,
    entity: &'a Entity,
    name: &'a str,
    req: &'a RequestTpl,
    paging: &'a Paging,
    /// The incremental filter, when it applies to `req`; it is sent while
    /// `window` is set.
    filter: Option<&'a IncrementalTpl>,
    /// Whether next pages restart from the newest record read.
    keyset: bool,
    /// The `{since}` of the current request: the instant and its text.
    window: Option<(DateTime<Utc>, Since)>,
    since_header: Option<(HeaderName, HeaderValue)>,
    /// Records strictly before this were read by an earlier pull.
    drop_before: Option<DateTime<Utc>>,
    /// The current request is a keyset restart.
    restarted: bool,

    page: u64,
    offset: u64,
    token: Option<Value>,
    next_url: Option<Url>,
    /// An offset step: the record (id, time) the page must hold, the last
    /// of the page before.
    overlap: Option<(String, Option<DateTime<Utc>>)>,
    number: usize,
    done: bool,
    empty_run: usize,
    seen_positions: HashSet<String>,
    previous_ids: Option<u64>,
    previous_max: Option<DateTime<Utc>>,

    /// The newest `updated_at` read in this pull, and the ids read at it.
    newest: Option<DateTime<Utc>>,
    newest_ids: HashSet<String>,
    start: Cursor,
    running: Cursor,
    last_yielded: Cursor,
    /// Once a page boundary may have hidden a record: the cursor for the
    /// rest of the pull.
    held: Option<Cursor>,
}

impl<'a> Pull<'a> {
    pub(super) fn new(
        c: &'a HttpConnector,
        entity: &'a str,
        cursor: Option<Cursor>,
    ) -> Result<Pull<'a>, ConnectorError> {
        let e = c.entity(entity)?;
        let start = cursor.unwrap_or_default();
        let since_at = match &e.updated_at {
            Some(_) => start.since(c.look_back).or_else(|| {
                // An entity read only through its incremental request (a
                // search endpoint) starts from the beginning of time.
                e.list
                    .is_none()
                    .then_some(DateTime::<Utc>::UNIX_EPOCH)
                    .filter(|_| e.incremental.as_ref().is_some_and(|i| i.request.is_some()))
            }),
            None => None,
        };
        let inc = e.incremental.as_ref();
        let incremental = inc.filter(|_| since_at.is_some());
        let (req, paging, filter) = match (incremental, inc) {
            (Some(i), _) => match &i.request {
                Some(r) => (r, i.paging.as_ref().unwrap_or(&e.paging), Some(i)),
                None => (list(c, e, entity)?, &e.paging, Some(i)),
            },
            // A full pull of a list the filter narrows: keyset pages use it.
            (None, Some(i)) if i.request.is_none() => (list(c, e, entity)?, &e.paging, Some(i)),
            _ => (list(c, e, entity)?, &e.paging, None),
        };
        let keyset = e.updated_at.is_some() && paging.keyset_for(req, filter.is_some());
        let mut pull = Pull {
            c,
            entity: e,
            name: entity,
            req,
            paging,
            filter,
            keyset,
            window: None,
            since_header: None,
            drop_before: since_at,
            restarted: false,
            page: paging.start,
            offset: paging.start,
            token: None,
            next_url: None,
            overlap: None,
            number: 0,
            done: false,
            empty_run: 0,
            seen_positions: HashSet::new(),
            previous_ids: None,
            previous_max: None,
            newest: None,
            newest_ids: HashSet::new(),
            running: start.clone(),
            last_yielded: start.clone(),
            start,
            held: None,
        };
        if let (Some(_), Some(at)) = (incremental, since_at) {
            pull.open_window(at)?;
        }
        Ok(pull)
    }

    /// Filters the next requests from `at` on.
    fn open_window(&mut self, at: DateTime<Utc>) -> Result<(), ConnectorError> {
        let Some(f) = self.filter else {
            return Ok(());
        };
        let since = f.time.format(at);
        self.since_header = match &f.header {
            Some(name) => Some((
                name.clone(),
                HeaderValue::from_str(&since.text()).map_err(|_| {
                    ConnectorError::config(
                        &self.c.name,
                        "the incremental time cannot be sent in a header",
                    )
                })?,
            )),
            None => None,
        };
        self.window = Some((at, since));
        Ok(())
    }

    /// The request for the current position.
    pub(super) fn call(&self) -> Result<Call, ConnectorError> {
        let style = self.paging.style;
        let vars = Vars {
            since: self.window.as_ref().map(|(_, s)| s),
            page: (style == PaginationStyle::Page).then_some(self.page),
            offset: (style == PaginationStyle::Offset).then_some(self.offset),
            cursor: self.token.as_ref(),
            size: self.paging.size,
            ..Vars::default()
        };
        let url = match &self.next_url {
            // Link and next-URL pages: the system's URL as it is.
            Some(u) => u.clone(),
            None => {
                let mut extra: Vec<(&str, String)> = Vec::new();
                if let Some(p) = &self.paging.param {
                    match style {
                        PaginationStyle::Page => extra.push((p, self.page.to_string())),
                        PaginationStyle::Offset => extra.push((p, self.offset.to_string())),
                        PaginationStyle::Cursor => {
                            if let Some(t) = &self.token {
                                extra.push((p, value_text(t)));
                            }
                        }
                        _ => {}
                    }
                }
                if let (Some(p), Some(size)) = (&self.paging.size_param, self.paging.size) {
                    extra.push((p, size.to_string()));
                }
                // `incremental.query` replaces list parameters of the same
                // name while the filter is on.
                let filter_query: &[(String, super::request::Tpl)] =
                    match (self.filter, &self.window) {
                        (Some(f), Some(_)) => &f.query,
                        _ => &[],
                    };
                let overridden = |k: &str| filter_query.iter().any(|(e, _)| e == k);
                let query = self
                    .req
                    .query
                    .iter()
                    .filter(|(k, _)| !overridden(k))
                    .chain(filter_query.iter())
                    .map(|(k, t)| (k.as_str(), t));
                self.c.url(&self.req.path, query, &extra, &vars)?
            }
        };
        let mut call = Call::new(self.req.method.clone(), url);
        if let Some(b) = &self.req.body {
            call = call.json(&b.render(&vars).unwrap_or(Value::Null));
        }
        if let (Some((name, value)), Some(_)) = (&self.since_header, &self.window) {
            call.headers.push((name.clone(), value.clone()));
        }
        Ok(call)
    }

    fn invalid(&self, message: String) -> ConnectorError {
        ConnectorError::invalid_data(&self.c.name, message)
    }

    /// The cursor stays where it is for the rest of the pull: the page
    /// boundary just crossed may hide a record no older than it.
    fn hold(&mut self, what: &str, why: &str, expected: bool) {
        if self.held.is_some() {
            return;
        }
        self.held = Some(self.running.clone());
        let at = self
            .running
            .updated_at
            .map_or_else(|| "the start".to_owned(), |t| t.to_rfc3339());
        if expected {
            tracing::debug!(message = "The cursor stays where it is for the rest of this pull.", system = %self.c.name, entity = self.name, request = what, reason = why, cursor = %at);
        } else {
            tracing::warn!(message = "The cursor stays where it is for the rest of this pull; the next pull reads on from there.", system = %self.c.name, entity = self.name, request = what, reason = why, cursor = %at);
        }
    }

    /// The next page worth yielding, or `None` after the last.
    async fn next(&mut self) -> Result<Option<Page>, ConnectorError> {
        loop {
            if self.done {
                return Ok(None);
            }
            self.number += 1;
            let call = self.call()?;
            let what = format!("{} {}", call.method, self.c.client.shown(&call.url));
            let answer = self.c.client.send(&call).await.map_err(|f| f.error)?;
            let mut body = answer.body;

            // Where the next page is, read before the records are taken out.
            let next_position: Option<Value> = match self.paging.style {
                PaginationStyle::Cursor | PaginationStyle::NextUrl => self
                    .paging
                    .next
                    .as_deref()
                    .and_then(|p| body.pointer(p))
                    .filter(|v| !v.is_null() && v.as_str() != Some(""))
                    .cloned(),
                PaginationStyle::Link => next_link(&answer.headers).map(Value::String),
                _ => None,
            };

            let found = if self.req.records.is_empty() {
                Some(body.take())
            } else {
                body.pointer_mut(&self.req.records).map(Value::take)
            };
            let items = match found {
                Some(Value::Array(items)) => items,
                Some(other) => {
                    return Err(self.invalid(format!(
                        "`{}` in the answer to {what} is {}, not an array of records",
                        self.req.records,
                        super::json_type(&other)
                    )));
                }
                None => {
                    return Err(self.invalid(format!(
                        "the answer to {what} has no records at `{}`",
                        self.req.records
                    )));
                }
            };

            let count = items.len();
            let ordered = self.req.ordered;
            let mut ids = DefaultHasher::new();
            let mut listed = Vec::with_capacity(count);
            for (i, data) in items.into_iter().enumerate() {
                let record = self.c.record(self.entity, data).map_err(|m| {
                    self.invalid(format!("record {} of the answer to {what}: {m}", i + 1))
                })?;
                record.external_id.as_str().hash(&mut ids);
                if ordered
                    && let (Some(before), Some(at)) = (
                        listed.last().and_then(|r: &RawRecord| r.updated_at),
                        record.updated_at,
                    )
                    && at < before
                {
                    return Err(self.invalid(format!(
                        "record {} of the answer to {what} is from {at}, before the one above it ({before}): the records are not in ascending `updated_at` order as the definition says (`ordered = true`)",
                        i + 1
                    )));
                }
                listed.push(record);
            }

            let ids = ids.finish();
            // A restarted page may well begin with the page before (records
            // of the time it restarts from); only steps must move on.
            if count > 0 && !self.restarted && self.previous_ids == Some(ids) {
                return Err(self.invalid(format!(
                    "the answer to {what} repeats the previous page (the same {count} ids): the system ignores the paging, the pull stops"
                )));
            }
            self.previous_ids = Some(ids);
            // An offset step must find the last record of the page before;
            // records after it are new to this pull. Records before it came
            // back because something was written in front of them.
            let mut fresh = count;
            let mut checked_from = Some(0);
            if let Some((id, at)) = self.overlap.take() {
                match listed
                    .iter()
                    .position(|r| r.external_id.as_str() == id && r.updated_at == at)
                {
                    Some(i) => {
                        fresh = count - i - 1;
                        checked_from = Some(i);
                    }
                    None => {
                        checked_from = None;
                        self.hold(
                            &what,
                            "the page does not begin with the last record of the page before: the list changed in front of it",
                            false,
                        );
                    }
                }
            }

            let page_max = listed.iter().rev().find_map(|r| r.updated_at);
            if ordered {
                let page_min = listed.iter().find_map(|r| r.updated_at);
                if self.restarted {
                    // A restarted page begins at the time it asked for; one
                    // that begins well before ignores the filter, and keyset
                    // pages would read the list from its start again and again.
                    if let (Some((since, _)), Some(min)) = (&self.window, page_min)
                        && min + SINCE_SLACK < *since
                    {
                        return Err(self.invalid(format!(
                            "the answer to {what} begins with a record from {min}, before the {since} it asked for: the system does not apply the incremental filter, which keyset pages need (set `keyset = false` in the pagination)"
                        )));
                    }
                } else if let (Some(before), Some(min)) = (
                    self.previous_max,
                    checked_from.and_then(|i| listed[i..].iter().find_map(|r| r.updated_at)),
                ) && min < before
                {
                    return Err(self.invalid(format!(
                        "the answer to {what} has a record from {min}, before the previous page's {before}: the records are not in ascending `updated_at` order as the definition says (`ordered = true`)"
                    )));
                }
                if page_max.is_some() {
                    self.previous_max = page_max.max(self.previous_max);
                }
            }
            let last_listed = listed
                .last()
                .map(|r| (r.external_id.as_str().to_owned(), r.updated_at));

            let mut records = Vec::with_capacity(count);
            for record in listed {
                if let Some(at) = record.updated_at {
                    if self.drop_before.is_some_and(|s| at < s) {
                        continue;
                    }
                    if ordered {
                        // Read already in this pull: older than the newest
                        // record, or one of the ids read at its time.
                        match self.newest {
                            Some(n) if at < n => continue,
                            Some(n) if at == n => {
                                if !self
                                    .newest_ids
                                    .insert(record.external_id.as_str().to_owned())
                                {
                                    continue;
                                }
                            }
                            _ => {
                                self.newest = Some(at);
                                self.newest_ids.clear();
                                self.newest_ids
                                    .insert(record.external_id.as_str().to_owned());
                            }
                        }
                    }
                }
                self.running
                    .advance(record.updated_at, record.external_id.as_str());
                records.push(record);
            }
            let progress = !records.is_empty();
            if self.entity.fetch_each && progress {
                records = self.fetch_each(records).await?;
            }

            let last = self.advance(
                count,
                fresh,
                progress,
                last_listed,
                next_position,
                &call.url,
                &what,
            )?;
            if count == 0 && !last {
                self.empty_run += 1;
                if self.empty_run > MAX_EMPTY_PAGES {
                    return Err(self.invalid(format!(
                        "{MAX_EMPTY_PAGES} empty pages in a row, each pointing to another (last: {what}): the pull stops"
                    )));
                }
            } else {
                self.empty_run = 0;
            }
            self.done = last;

            // Unordered lists: a record not read yet may be older than the
            // newest read so far, so only the last page moves the cursor.
            let cursor = if let Some(held) = &self.held {
                held.clone()
            } else if ordered || last {
                self.running.clone()
            } else {
                self.start.clone()
            };
            if records.is_empty() && cursor == self.last_yielded {
                continue;
            }
            self.last_yielded = cursor.clone();
            return Ok(Some(Page {
                records,
                cursor,
                ack: None,
                ..Page::default()
            }));
        }
    }

    /// Each listed record as `get` returns it, `concurrency` at a time and
    /// in the list's order; records gone meanwhile are left out.
    async fn fetch_each(&self, listed: Vec<RawRecord>) -> Result<Vec<RawRecord>, ConnectorError> {
        let fetched: Vec<Option<RawRecord>> = stream::iter(listed.into_iter().map(|r| async move {
            let got = self.c.fetch(self.entity, self.name, &r.external_id).await?;
            if got.is_none() {
                tracing::debug!(message = "A listed record is gone; it is left out.", system = %self.c.name, entity = self.name, id = %r.external_id);
            }
            Ok::<_, ConnectorError>(got.map(|full| RawRecord {
                external_id: r.external_id,
                updated_at: full.updated_at.or(r.updated_at),
                data: full.data,
            }))
        }))
        .buffered(self.c.fetch_concurrency.max(1))
        .try_collect()
        .await?;
        Ok(fetched.into_iter().flatten().collect())
    }

    /// Moves to the next page; `true` when this one was the last.
    #[allow(clippy::too_many_arguments)]
    fn advance(
        &mut self,
        count: usize,
        fresh: usize,
        progress: bool,
        last_listed: Option<(String, Option<DateTime<Utc>>)>,
        next: Option<Value>,
        url: &Url,
        what: &str,
    ) -> Result<bool, ConnectorError> {
        self.restarted = false;
        let style = self.paging.style;
        let until_empty = self.paging.until_empty;
        let ended = |size: Option<u64>| {
            if until_empty {
                fresh == 0
            } else {
                count == 0 || size.is_some_and(|s| (count as u64) < s)
            }
        };
        match style {
            PaginationStyle::None => return Ok(true),
            PaginationStyle::Page | PaginationStyle::Offset if ended(self.paging.size) => {
                return Ok(true);
            }
            PaginationStyle::Cursor | PaginationStyle::Link | PaginationStyle::NextUrl
                if next.is_none() =>
            {
                return Ok(true);
            }
            _ => {}
        }

        // Keyset: ask again from the newest record read, when that moves
        // the request on; otherwise the page is full of records sharing
        // one `{since}` and the pull pages on within it.
        if self.keyset
            && progress
            && let (Some(newest), Some(f)) = (self.newest, self.filter)
        {
            let since = f.time.format(newest);
            if self.window.as_ref().is_none_or(|(_, s)| *s != since) {
                self.open_window(newest)?;
                self.page = self.paging.start;
                self.offset = self.paging.start;
                self.token = None;
                self.next_url = None;
                self.seen_positions.clear();
                self.overlap = None;
                self.restarted = true;
                return Ok(false);
            }
        }

        let crowded = if self.paging.size.is_some_and(|s| (count as u64) < s) {
            "the system answers with fewer records than asked, so the pull pages on within one `{since}`, and those pages cannot show that they left nothing out"
        } else {
            "more records share one `{since}` than a page holds, and the pages within it cannot show that they left nothing out"
        };
        match style {
            PaginationStyle::Page => {
                self.page += 1;
                if self.req.ordered {
                    let (why, expected) = if self.keyset {
                        (crowded, false)
                    } else {
                        (
                            "page numbers cannot show that the list did not shift between two pages (keyset pages can)",
                            true,
                        )
                    };
                    self.hold(what, why, expected);
                }
            }
            PaginationStyle::Offset => match last_listed {
                Some(last) if self.req.ordered && count >= 2 => {
                    self.offset += count as u64 - 1;
                    self.overlap = Some(last);
                }
                _ => {
                    self.offset += count as u64;
                    if self.req.ordered && count > 0 {
                        self.hold(what, "a page of one record cannot overlap the next", true);
                    }
                }
            },
            PaginationStyle::Cursor => {
                let Some(token) = next else {
                    return Ok(true);
                };
                let text = value_text(&token);
                if !self.seen_positions.insert(text.clone()) {
                    return Err(self.invalid(format!(
                        "the answer to {what} gives the next-page token `{}` a second time: the system pages in a circle, the pull stops",
                        cut(&text)
                    )));
                }
                if let (Some(before), Some(now)) =
                    (self.token.as_ref().and_then(numeric), numeric(&token))
                    && now <= before
                {
                    return Err(self.invalid(format!(
                        "the answer to {what} gives the next-page token {now}, not after the previous {before}: the pull stops"
                    )));
                }
                self.token = Some(token);
                if self.keyset {
                    self.hold(what, crowded, false);
                }
            }
            PaginationStyle::Link | PaginationStyle::NextUrl => {
                self.follow(next, url, what)?;
                if self.keyset {
                    self.hold(what, crowded, false);
                }
            }
            PaginationStyle::None => return Ok(true),
        }
        Ok(false)
    }

    /// `link` and `next_url`: the system's next page.
    fn follow(&mut self, next: Option<Value>, url: &Url, what: &str) -> Result<(), ConnectorError> {
        match next {
            None => Ok(()),
            Some(Value::String(link)) => {
                let next = url.join(&link).map_err(|e| {
                    self.invalid(format!(
                        "the next-page link in the answer to {what} is not a URL ({e})"
                    ))
                })?;
                if next.origin() != self.c.client.base.origin() {
                    return Err(self.invalid(format!(
                        "the next-page link in the answer to {what} leaves the system (to {}): credentials are only sent to the base URL's origin",
                        next.origin().ascii_serialization()
                    )));
                }
                if !self.seen_positions.insert(next.as_str().to_owned()) {
                    return Err(self.invalid(format!(
                        "the answer to {what} links to a page already read ({}): the pull stops",
                        self.c.client.shown(&next)
                    )));
                }
                self.next_url = Some(next);
                Ok(())
            }
            Some(other) => Err(self.invalid(format!(
                "the next-page URL in the answer to {what} is {}, not a string",
                super::json_type(&other)
            ))),
        }
    }
}

fn list<'e>(
    c: &HttpConnector,
    e: &'e Entity,
    name: &str,
) -> Result<&'e RequestTpl, ConnectorError> {
    e.list.as_ref().ok_or_else(|| {
        ConnectorError::config(
            &c.name,
            format!("`{name}` cannot be listed: the definition has no `list`"),
        )
    })
}

/// A token that is a whole number (as a number or as text).
fn numeric(v: &Value) -> Option<u128> {
    match v {
        Value::Number(n) => n.as_u64().map(u128::from),
        Value::String(s)
            if !s.is_empty() && s.len() < 39 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

fn cut(text: &str) -> &str {
    &text[..text.floor_char_boundary(60)]
}

/// The target of `rel="next"` in RFC 8288 `Link` headers.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(mut rest) = value.to_str() else {
            continue;
        };
        while let Some(open) = rest.find('<') {
            let close = open + rest[open..].find('>')?;
            let target = &rest[open + 1..close];
            let after = &rest[close + 1..];
            let params_end = after.find('<').unwrap_or(after.len());
            let is_next = after[..params_end].split(';').any(|param| {
                let param = param.trim().trim_end_matches(',').trim();
                param.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("rel")
                        && v.trim()
                            .trim_matches('"')
                            .split_whitespace()
                            .any(|r| r.eq_ignore_ascii_case("next"))
                })
            });
            if is_next {
                return Some(target.to_owned());
            }
            rest = &after[params_end..];
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    #[test]
    fn link_headers_give_the_next_page() {
        let mut h = HeaderMap::new();
        h.append(
            reqwest::header::LINK,
            HeaderValue::from_static(
                r#"<https://api.example.com/items?page=1>; rel="prev", <https://api.example.com/items?page=3&a=b,c>; rel="next last""#,
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.example.com/items?page=3&a=b,c")
        );
        let mut h = HeaderMap::new();
        h.append(
            reqwest::header::LINK,
            HeaderValue::from_static(r#"</x?page=1>; rel=prev"#),
        );
        assert_eq!(next_link(&h), None);
        h.append(
            reqwest::header::LINK,
            HeaderValue::from_static(r#"</x?page=2>; rel=next"#),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/x?page=2"));
    }

    #[test]
    fn numeric_tokens_are_recognised() {
        assert_eq!(numeric(&Value::from(12)), Some(12));
        assert_eq!(numeric(&Value::from("0042")), Some(42));
        assert_eq!(numeric(&Value::from("a1")), None);
        assert_eq!(numeric(&Value::from("")), None);
    }
}
