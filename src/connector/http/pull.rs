//! Pulls: pages requested one at a time as the consumer asks for them,
//! records read with their ids and timestamps, the cursor moved forward
//! only as far as is safe, and systems that page in circles stopped.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

use super::HttpConnector;
use super::client::Call;
use super::definition::PaginationStyle;
use super::request::{Entity, Paging, RequestTpl, Tpl, Vars, value_text};
use super::time::Since;
use crate::connector::{ConnectorError, Cursor, Page, PageStream};

/// Empty pages in a row that still point to a next page: more means the
/// system pages without end.
const MAX_EMPTY_PAGES: usize = 50;

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
    req: &'a RequestTpl,
    paging: &'a Paging,
    /// `incremental.query`: replaces list parameters of the same name.
    extra_query: &'a [(String, Tpl)],
    since_header: Option<(HeaderName, HeaderValue)>,
    since: Option<Since>,
    /// Records strictly before this were read by an earlier pull.
    drop_before: Option<DateTime<Utc>>,

    page: u64,
    offset: u64,
    token: Option<Value>,
    next_url: Option<Url>,
    number: usize,
    done: bool,
    empty_run: usize,
    seen_positions: HashSet<String>,
    previous_ids: Option<u64>,
    previous_max: Option<DateTime<Utc>>,

    start: Cursor,
    running: Cursor,
    last_yielded: Cursor,
}

impl<'a> Pull<'a> {
    pub(super) fn new(
        c: &'a HttpConnector,
        entity: &str,
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
        let incremental = e.incremental.as_ref().filter(|_| since_at.is_some());
        let (req, paging, extra_query) = match incremental {
            Some(i) => match &i.request {
                Some(r) => (
                    r,
                    i.paging.as_ref().unwrap_or(&e.paging),
                    i.query.as_slice(),
                ),
                None => (list(c, e, entity)?, &e.paging, i.query.as_slice()),
            },
            None => (list(c, e, entity)?, &e.paging, &[][..]),
        };
        let since = incremental.zip(since_at).map(|(i, at)| i.time.format(at));
        let since_header = match (incremental.and_then(|i| i.header.clone()), &since) {
            (Some(name), Some(s)) => Some((
                name,
                HeaderValue::from_str(&s.text()).map_err(|_| {
                    ConnectorError::config(
                        &c.name,
                        "the incremental time cannot be sent in a header",
                    )
                })?,
            )),
            _ => None,
        };
        Ok(Pull {
            c,
            entity: e,
            req,
            paging,
            extra_query,
            since_header,
            since,
            drop_before: since_at,
            page: paging.start,
            offset: paging.start,
            token: None,
            next_url: None,
            number: 0,
            done: false,
            empty_run: 0,
            seen_positions: HashSet::new(),
            previous_ids: None,
            previous_max: None,
            running: start.clone(),
            last_yielded: start.clone(),
            start,
        })
    }

    /// The request for the current position.
    pub(super) fn call(&self) -> Result<Call, ConnectorError> {
        let style = self.paging.style;
        let vars = Vars {
            since: self.since.as_ref(),
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
                let overridden = |k: &str| self.extra_query.iter().any(|(e, _)| e == k);
                let query = self
                    .req
                    .query
                    .iter()
                    .filter(|(k, _)| !overridden(k))
                    .chain(self.extra_query.iter())
                    .map(|(k, t)| (k.as_str(), t));
                self.c.url(&self.req.path, query, &extra, &vars)?
            }
        };
        let mut call = Call::new(self.req.method.clone(), url);
        if let Some(b) = &self.req.body {
            call = call.json(&b.render(&vars).unwrap_or(Value::Null));
        }
        if let Some((name, value)) = &self.since_header {
            call.headers.push((name.clone(), value.clone()));
        }
        Ok(call)
    }

    fn invalid(&self, message: String) -> ConnectorError {
        ConnectorError::invalid_data(&self.c.name, message)
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
            let mut ids = DefaultHasher::new();
            let mut page_min: Option<DateTime<Utc>> = None;
            let mut page_max: Option<DateTime<Utc>> = None;
            let mut records = Vec::with_capacity(count);
            for (i, data) in items.into_iter().enumerate() {
                let record = self.c.record(self.entity, data).map_err(|m| {
                    self.invalid(format!("record {} of the answer to {what}: {m}", i + 1))
                })?;
                record.external_id.as_str().hash(&mut ids);
                if let Some(at) = record.updated_at {
                    page_min = Some(page_min.map_or(at, |m| m.min(at)));
                    page_max = Some(page_max.map_or(at, |m| m.max(at)));
                    if self.drop_before.is_some_and(|s| at < s) {
                        continue;
                    }
                }
                self.running
                    .advance(record.updated_at, record.external_id.as_str());
                records.push(record);
            }

            let ids = ids.finish();
            if count > 0 && self.previous_ids == Some(ids) {
                return Err(self.invalid(format!(
                    "the answer to {what} repeats the previous page (the same {count} ids): the system ignores the paging, the pull stops"
                )));
            }
            self.previous_ids = Some(ids);
            if self.req.ordered {
                if let (Some(before), Some(min)) = (self.previous_max, page_min)
                    && min < before
                {
                    return Err(self.invalid(format!(
                        "the answer to {what} has a record from {min}, before the previous page's {before}: the records are not in ascending `updated_at` order as the definition says (`ordered = true`)"
                    )));
                }
                if page_max.is_some() {
                    self.previous_max = page_max.max(self.previous_max);
                }
            }

            let last = self.advance(count, next_position, &call.url, &what)?;
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
            let cursor = if self.req.ordered || last {
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

    /// Moves to the next page; `true` when this one was the last.
    fn advance(
        &mut self,
        count: usize,
        next: Option<Value>,
        url: &Url,
        what: &str,
    ) -> Result<bool, ConnectorError> {
        let until_empty = self.paging.until_empty;
        let short = |size: Option<u64>| {
            count == 0 || (!until_empty && size.is_some_and(|s| (count as u64) < s))
        };
        Ok(match self.paging.style {
            PaginationStyle::None => true,
            PaginationStyle::Page => {
                self.page += 1;
                short(self.paging.size)
            }
            PaginationStyle::Offset => {
                self.offset += count as u64;
                short(self.paging.size)
            }
            PaginationStyle::Cursor => match next {
                None => true,
                Some(token) => {
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
                    false
                }
            },
            PaginationStyle::Link | PaginationStyle::NextUrl => match next {
                None => true,
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
                    false
                }
                Some(other) => {
                    return Err(self.invalid(format!(
                        "the next-page URL in the answer to {what} is {}, not a string",
                        super::json_type(&other)
                    )));
                }
            },
        })
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
