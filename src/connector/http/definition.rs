//! The definition file of an `http` system: what a user writes in
//! `connectors/NAME.toml`, and its pure check.
//!
//! A definition says where the system is (`base_url`), how to authenticate
//! (`[auth]`), how fast and how patiently to talk to it (`timeout_secs`,
//! `rate_limit`, `retry`, `concurrency`), and per entity how to list, fetch,
//! create and update records (`[entities.NAME]`). Values may name instance
//! values or environment variables as `${name}`; those are filled in when an
//! instance is opened and never appear in errors or logs. `${name:-value}`
//! ships a value an instance may replace (a token URL a sandbox or a test
//! points elsewhere).
//!
//! Requests are built from *templates*: `path`, `query` values and `body`
//! strings may hold request-time placeholders in single braces, filled for
//! each request:
//!
//! | placeholder | where | value |
//! | --- | --- | --- |
//! | `{id}` | `get`, `update` | the record's external id (escaped for a path) |
//! | `{since}` | `incremental` | the cursor's timestamp minus `look_back_secs` (on keyset pages after the first: the newest record's), in `incremental.format` |
//! | `{page}` | `pagination.style = "page"` | the page number |
//! | `{offset}` | `pagination.style = "offset"` | the number of records before this page |
//! | `{cursor}` | `pagination.style = "cursor"` | the token from the previous response; left out on the first page |
//! | `{size}` | any pagination | `pagination.size` |
//! | `{record}`, `{records}`, `{key}` | `create`, `update` | the record, the batch of records, the change's idempotency key |
//! | `{key}` | `create.lookup` | the change's idempotency key |
//!
//! In a `body`, a string that is exactly one placeholder is replaced by the
//! value with its JSON type (a number for `{size}`, the whole record for
//! `{record}`); a key whose placeholder has no value (`{cursor}` on the
//! first page) is left out. `${…}` is never confused with `{…}`: the former
//! is filled once from the instance, the latter on every request. A `{`
//! not followed by a placeholder name and `}` is an ordinary character.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::connector::valid_name;
use crate::located::{LoadError, SourceFile};

// ---------------------------------------------------------------------------
// The file

/// A whole `http` definition file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpDefinition {
    /// The system's name; the file is `connectors/NAME.toml`.
    pub name: String,
    /// Always `http` for this driver.
    pub driver: String,
    /// What the system is, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// Where the API lives; paths are appended to it. An instance's
    /// `base_url` replaces it (a sandbox, a mock). May hold `${…}`.
    pub base_url: Spanned<String>,
    /// Seconds one request may take, body included (default 30; fractions
    /// allowed).
    #[serde(default)]
    pub timeout_secs: Option<Spanned<f64>>,
    /// Responses larger than this many bytes are refused as `InvalidData`
    /// without being read further (default 32 MiB).
    #[serde(default)]
    pub max_response_bytes: Option<Spanned<u64>>,
    /// Requests in flight at once per instance (default 4).
    #[serde(default)]
    pub concurrency: Option<Spanned<u32>>,
    /// Requests allowed per instance, shared by every job using it.
    #[serde(default)]
    pub rate_limit: Option<Spanned<RateLimit>>,
    /// How failed requests that may succeed later are retried.
    #[serde(default)]
    pub retry: Option<Spanned<RetryPolicy>>,
    /// Incremental pulls ask for records changed since the cursor minus this
    /// many seconds, so records written late with an older timestamp are
    /// still read (default 60).
    #[serde(default)]
    pub look_back_secs: Option<Spanned<u64>>,
    /// The request header that carries a change's idempotency key on pushes
    /// (`Idempotency-Key`). Without it, keys are not sent.
    #[serde(default)]
    pub idempotency_header: Option<Spanned<String>>,
    /// How requests authenticate (default: not at all).
    #[serde(default)]
    pub auth: Option<Spanned<Auth>>,
    /// Headers sent with every request; values may hold `${…}`.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// How the system reports failures inside its responses.
    #[serde(default)]
    pub error: Option<Spanned<ErrorRule>>,
    /// The cheap request `concord connectors check --live` and the
    /// scheduler's health probe send (default: the first page of the first
    /// entity that can be listed).
    #[serde(default)]
    pub healthcheck: Option<Spanned<Healthcheck>>,
    /// The entities, by the name jobs use (`invoice`, `customer`).
    pub entities: BTreeMap<String, Spanned<EntitySpec>>,
}

/// `rate_limit = { per_second = 10 }` or `{ per_minute = 60, burst = 5 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second.
    #[serde(default)]
    pub per_second: Option<Spanned<u32>>,
    /// Requests per minute.
    #[serde(default)]
    pub per_minute: Option<Spanned<u32>>,
    /// Requests that may go at once after a quiet spell (default 1: evenly
    /// spaced).
    #[serde(default)]
    pub burst: Option<Spanned<u32>>,
}

/// `retry = { max_attempts = 5, initial_delay_ms = 200, max_delay_ms = 30000 }`.
///
/// Only failures that may pass are retried (rate limits, 5xx, broken
/// connections, timeouts), with exponentially growing delays and jitter. A
/// `Retry-After` from the system replaces the computed delay; when it asks
/// for longer than `max_delay_ms` the request is not retried here and the
/// error (with the delay) goes to the scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Tries in total, the first included (default 5; 1 = no retry).
    #[serde(default)]
    pub max_attempts: Option<Spanned<u32>>,
    /// The delay before the second try (default 200).
    #[serde(default)]
    pub initial_delay_ms: Option<Spanned<u64>>,
    /// The longest delay between two tries (default 30000).
    #[serde(default)]
    pub max_delay_ms: Option<Spanned<u64>>,
}

/// How requests authenticate. `kind` decides which other keys apply.
///
/// ```toml
/// auth = { kind = "bearer", token = "${token}" }
/// auth = { kind = "basic", username = "${user}", password = "${password}" }
/// auth = { kind = "api_key", in = "header", name = "Authorization", value = "token ${api_key}:${api_secret}" }
/// auth = { kind = "api_key", in = "query", name = "api_key", value = "${api_key}" }
/// [auth]
/// kind = "oauth2_client_credentials"
/// token_url = "https://identity.xero.com/connect/token"
/// client_id = "${client_id}"
/// client_secret = "${client_secret}"
/// scopes = ["accounting.transactions"]
/// auth_style = "basic"   # client credentials in an Authorization header; "body" sends them as form fields
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub kind: Spanned<AuthKind>,
    /// `bearer`: the token.
    #[serde(default)]
    pub token: Option<Spanned<String>>,
    /// `basic`: the user name.
    #[serde(default)]
    pub username: Option<Spanned<String>>,
    /// `basic`: the password.
    #[serde(default)]
    pub password: Option<Spanned<String>>,
    /// `api_key`: sent in a `header` or as a `query` parameter.
    #[serde(default, rename = "in")]
    pub location: Option<Spanned<KeyLocation>>,
    /// `api_key`: the header or query parameter name.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// `api_key`: its value (a template: `token ${api_key}:${api_secret}`).
    #[serde(default)]
    pub value: Option<Spanned<String>>,
    /// `oauth2_client_credentials`: where tokens are issued.
    #[serde(default)]
    pub token_url: Option<Spanned<String>>,
    /// `oauth2_client_credentials`: the client id.
    #[serde(default)]
    pub client_id: Option<Spanned<String>>,
    /// `oauth2_client_credentials`: the client secret.
    #[serde(default)]
    pub client_secret: Option<Spanned<String>>,
    /// `oauth2_client_credentials`: scopes to ask for (none by default).
    #[serde(default)]
    pub scopes: Vec<Spanned<String>>,
    /// `oauth2_client_credentials`: `basic` (default) or `body`.
    #[serde(default)]
    pub auth_style: Option<Spanned<ClientAuthStyle>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    None,
    Bearer,
    Basic,
    ApiKey,
    Oauth2ClientCredentials,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    Header,
    Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthStyle {
    #[default]
    Basic,
    Body,
}

/// How the system says a request failed inside a response body.
///
/// ```toml
/// [error]
/// pointer = "/Status"        # a 2xx response with a value here failed …
/// equals = "ERROR"           # … when the value equals this (any value when left out)
/// message = ["/Message", "/Elements/0/ValidationErrors/0/Message"]
/// ```
///
/// `message` pointers are also tried on error responses (4xx, 5xx) to find
/// the system's own words; the first that holds a value wins, else a short
/// excerpt of the body is used.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// JSON pointer whose presence means the request or record failed.
    #[serde(default)]
    pub pointer: Option<Spanned<String>>,
    /// Only when the value at `pointer` equals this.
    #[serde(default)]
    pub equals: Option<Spanned<toml::Value>>,
    /// Where the system's message is, tried in order.
    #[serde(default)]
    pub message: Vec<Spanned<String>>,
}

/// `healthcheck = { path = "/Organisation" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    #[serde(default)]
    pub method: Option<Spanned<Method>>,
    pub path: Spanned<String>,
    #[serde(default)]
    pub query: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

// ---------------------------------------------------------------------------
// Entities

/// One entity of the system: `[entities.invoice]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySpec {
    /// JSON pointer to the record's id (`/InvoiceID`); numbers are read as
    /// their decimal text.
    pub id: Spanned<String>,
    /// Where the record says when it last changed. Needed for incremental
    /// pulls and for cursors.
    #[serde(default)]
    pub updated_at: Option<Spanned<TimeField>>,
    /// How to list records (a full pull, or every pull without
    /// `incremental`).
    #[serde(default)]
    pub list: Option<Spanned<ListRequest>>,
    /// How `list` pages (default: one request, no pages).
    #[serde(default)]
    pub pagination: Option<Spanned<Pagination>>,
    /// How to ask only for records changed since the cursor.
    #[serde(default)]
    pub incremental: Option<Spanned<Incremental>>,
    /// How to fetch one record by id (for webhooks that name records).
    #[serde(default)]
    pub get: Option<Spanned<GetRequest>>,
    /// Fetch each listed record by id (`get`) before passing it on, for
    /// systems whose lists leave parts of a record out (ERPNext lists never
    /// carry child tables). One request per record, `concurrency` at a
    /// time and within the rate limit; where the pull stands is still
    /// taken from the list. A record gone by the time it is fetched
    /// (deleted meanwhile) is left out. Default `false`.
    #[serde(default)]
    pub fetch_each: Option<Spanned<bool>>,
    /// How to create records (changes without an external id).
    #[serde(default)]
    pub create: Option<Spanned<WriteRequest>>,
    /// How to update records (changes with an external id).
    #[serde(default)]
    pub update: Option<Spanned<WriteRequest>>,
}

/// `updated_at = { pointer = "/modified", format = "naive", timezone = "Europe/Berlin" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeField {
    pub pointer: Spanned<String>,
    /// Default `rfc3339`.
    #[serde(default)]
    pub format: Option<Spanned<TimeFormat>>,
    /// The IANA zone of `naive` times (`Europe/Berlin`); required for them.
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
}

/// How a timestamp is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// `2026-11-01T10:00:00Z`, `2026-11-01T10:00:00.123+01:00`.
    Rfc3339,
    /// `Sun, 01 Nov 2026 10:00:00 GMT` (HTTP headers).
    HttpDate,
    /// Seconds since 1970 (a number or a numeric string).
    Unix,
    /// Milliseconds since 1970 (a number or a numeric string).
    UnixMs,
    /// Microsoft JSON dates: `/Date(1552326816230+0000)/`.
    MsJson,
    /// `2026-11-01 10:00:00.123456` (or with `T`) in `timezone`.
    Naive,
}

impl TimeFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeFormat::Rfc3339 => "rfc3339",
            TimeFormat::HttpDate => "http_date",
            TimeFormat::Unix => "unix",
            TimeFormat::UnixMs => "unix_ms",
            TimeFormat::MsJson => "ms_json",
            TimeFormat::Naive => "naive",
        }
    }

    /// Whether `{since}` in this format is a JSON number in a body.
    pub fn is_numeric(self) -> bool {
        matches!(self, TimeFormat::Unix | TimeFormat::UnixMs)
    }
}

/// `list = { path = "/Invoices", records = "/Invoices", query = { order = "UpdatedDateUTC" }, ordered = true }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// Default `GET`; JSON-RPC style lists use `POST` with a `body`.
    #[serde(default)]
    pub method: Option<Spanned<Method>>,
    /// Appended to `base_url`; may hold pagination placeholders.
    pub path: Spanned<String>,
    /// Query parameters; values may hold placeholders.
    #[serde(default)]
    pub query: BTreeMap<String, Spanned<String>>,
    /// A JSON body (a TOML table), sent as `application/json`.
    #[serde(default)]
    pub body: Option<Spanned<toml::Value>>,
    /// JSON pointer to the array of records in a response (default: the
    /// response is the array). A response without it is `InvalidData`.
    #[serde(default)]
    pub records: Option<Spanned<String>>,
    /// Whether the system returns records in ascending `updated_at` order
    /// (because this request asks it to; an answer out of that order is
    /// refused). Then every page moves the cursor, and next pages can start
    /// from the newest record read ([`Pagination`]'s keyset pages);
    /// otherwise only the last page does, so a pull cut short starts over
    /// instead of skipping records not read yet. Default `false`.
    #[serde(default)]
    pub ordered: Option<Spanned<bool>>,
}

/// How a list pages. `style` decides which other keys apply:
///
/// ```toml
/// pagination = { style = "page", param = "page", start = 1, size_param = "pageSize", size = 100 }
/// pagination = { style = "offset", param = "limit_start", size_param = "limit_page_length", size = 100 }
/// pagination = { style = "cursor", param = "after", next = "/paging/next/after", size_param = "limit", size = 100 }
/// pagination = { style = "link", size_param = "per_page", size = 100 }         # RFC 8288 Link: <…>; rel="next"
/// pagination = { style = "next_url", next = "/paging/next/link", size = 100 }  # next page's URL in the body
/// ```
///
/// `page` and `offset` end at a page shorter than `size` (or, with
/// `end = "empty_page"`, at an empty page); `cursor` ends
/// when the response has no next token, `link` without a `rel="next"`
/// link, `next_url` without a URL. `param` and `size_param` add query
/// parameters; a request may also place `{page}`, `{offset}`, `{cursor}` or
/// `{size}` in its path, query or body instead (a JSON-RPC body, a search
/// body with `after`). Next pages from `link` and `next_url` must stay on
/// the origin of `base_url`, so credentials never go elsewhere.
///
/// **Pages of a list that changes while it is read.** In a list sorted by
/// `updated_at`, a record edited during a pull moves to the end and every
/// record behind it moves up one place: the next page number or offset
/// then steps over the record that crossed the page boundary, and a cursor
/// moved past it would lose it for good. Pulls of `ordered` lists avoid
/// that in one of two ways:
///
/// - *keyset* (`keyset = true`): each next page asks again through the
///   incremental filter (`header`, `query` or `request`), from the
///   `updated_at` of the newest record read, with the page number or
///   offset back at `start` and no cursor token or link, and drops the records it
///   has read already (older ones, and those of that same time it has
///   seen). Where a page starts is then said by the request, not by a
///   position, so nothing can be stepped over. The filter must include
///   records changed at exactly `{since}` (`>=`). Only when more records
///   share one `{since}` than a page holds does the pull page on within
///   that time; `offset` pages then overlap (below), while `page`
///   numbers, tokens and links cannot show that they left nothing out, so the
///   cursor stays at that time for the rest of the pull and the next pull
///   reads on from there (a warning says so).
/// - *checked positions* (without keyset): `offset` pages overlap by one
///   record — each asks from the last record of the page before and checks
///   that it comes first. When it does not, the list changed in front of
///   the page, and the cursor stays where it was before that page for the
///   rest of the pull (the next pull reads the rest again: nothing is
///   lost, some records come twice). `page` numbers cannot be checked, so
///   the cursor moves only as far as the first page: safe, but each pull
///   reads everything after it again.
///
/// `keyset` defaults to on for `page` and `offset` where it can work: the
/// request is `ordered` and the entity's incremental filter applies to it
/// (its `incremental` has no `request` of its own, or this is that
/// request's `pagination`). `cursor` tokens and `link` / `next_url` pages
/// are trusted to be positions that do not shift; set `keyset = true`
/// where one is an offset or page number in disguise (HubSpot's search
/// `after = 200`, a `Link` to `?page=3`): the next page is then asked for
/// through the filter, and the system's token or link is followed only
/// within one crowded `{since}`. Lists that are not `ordered` keep their
/// order when a record changes (id or creation order) and move the cursor
/// only on their last page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pagination {
    pub style: Spanned<PaginationStyle>,
    /// The query parameter for the page number, offset or cursor token.
    #[serde(default)]
    pub param: Option<Spanned<String>>,
    /// `page`: the first page's number (default 1); `offset`: the first
    /// offset (default 0).
    #[serde(default)]
    pub start: Option<Spanned<u64>>,
    /// The query parameter for the page size.
    #[serde(default)]
    pub size_param: Option<Spanned<String>>,
    /// Records per page to ask for; required for `page` and `offset`, and
    /// no more than the system's own maximum (a system that silently
    /// returns fewer would end the pull early).
    #[serde(default)]
    pub size: Option<Spanned<u64>>,
    /// `cursor`: JSON pointer to the next token; `next_url`: to the next
    /// page's URL.
    #[serde(default)]
    pub next: Option<Spanned<String>>,
    /// `page` and `offset`: what ends the pull — `short_page` (default: a
    /// page with fewer than `size` records) or `empty_page` (for systems
    /// that may return fewer than asked before the end, at the cost of one
    /// more request).
    #[serde(default)]
    pub end: Option<Spanned<PageEnd>>,
    /// Whether each next page restarts from the newest record read through
    /// the incremental filter (see above).
    #[serde(default)]
    pub keyset: Option<Spanned<bool>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageEnd {
    #[default]
    ShortPage,
    EmptyPage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaginationStyle {
    None,
    Page,
    Offset,
    Cursor,
    Link,
    NextUrl,
}

impl PaginationStyle {
    pub fn as_str(self) -> &'static str {
        match self {
            PaginationStyle::None => "none",
            PaginationStyle::Page => "page",
            PaginationStyle::Offset => "offset",
            PaginationStyle::Cursor => "cursor",
            PaginationStyle::Link => "link",
            PaginationStyle::NextUrl => "next_url",
        }
    }
}

/// How to ask only for records changed since the cursor; used when a pull
/// starts from a cursor with a timestamp. At least one of `header`, a
/// `{since}` in `query`, or a `{since}` in `request` says where the time
/// goes.
///
/// ```toml
/// incremental = { header = "If-Modified-Since", format = "http_date" }
/// incremental = { query = { filters = '[["modified",">=","{since}"]]' }, format = "naive", timezone = "Europe/Berlin" }
/// [entities.company.incremental]          # a different request altogether
/// format = "unix_ms"
/// pagination = { style = "cursor", next = "/paging/next/after", size = 100 }
/// [entities.company.incremental.request]
/// method = "POST"
/// path = "/crm/v3/objects/companies/search"
/// records = "/results"
/// ordered = true
/// body = { filterGroups = [{ filters = [{ propertyName = "hs_lastmodifieddate", operator = "GTE", value = "{since}" }] }], sorts = [{ propertyName = "hs_lastmodifieddate", direction = "ASCENDING" }], limit = "{size}", after = "{cursor}" }
/// ```
///
/// Records the system returns from before `{since}` are dropped (they were
/// read by an earlier pull); records between `{since}` and the cursor are
/// read again, which is harmless. Keyset pages (see [`Pagination`]) also
/// use the filter to say where each next page starts: it must then include
/// records changed at exactly `{since}` (`>=`, `GTE`) and compare the same
/// time the entity's `updated_at` reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// How `{since}` is written.
    pub format: Spanned<TimeFormat>,
    /// The zone of `naive` times (default: `updated_at.timezone`).
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// A header that carries `{since}` (`If-Modified-Since`).
    #[serde(default)]
    pub header: Option<Spanned<String>>,
    /// Query parameters added to the list request (replacing ones of the
    /// same name); values may hold `{since}`.
    #[serde(default)]
    pub query: BTreeMap<String, Spanned<String>>,
    /// A different request for incremental pulls (a search endpoint).
    #[serde(default)]
    pub request: Option<Spanned<ListRequest>>,
    /// How `request` pages (default: the entity's `pagination`).
    #[serde(default)]
    pub pagination: Option<Spanned<Pagination>>,
}

/// `get = { path = "/Invoices/{id}", records = "/Invoices" }`.
///
/// `records` points at the record, or at an array holding it (an empty
/// array or a 404 means there is no such record).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    #[serde(default)]
    pub method: Option<Spanned<Method>>,
    pub path: Spanned<String>,
    #[serde(default)]
    pub query: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub body: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub records: Option<Spanned<String>>,
}

/// How records are written: `create` (no external id yet) or `update`.
///
/// ```toml
/// create = { method = "PUT", path = "/Invoices", body = { Invoices = "{records}" }, batch_size = 50, results = "/Invoices", id = "/InvoiceID" }
/// update = { method = "PUT", path = "/api/resource/Customer/{id}", results = "/data", id = "/name" }
/// [entities.company.update]
/// path = "/crm/v3/objects/companies/batch/update"
/// batch_size = 100
/// item = { id = "{id}", properties = "{record}" }
/// body = { inputs = "{records}" }
/// results = "/results"
/// id = "/id"
/// match = "id"
/// ```
///
/// Each change becomes an *item* (`item`, default the record itself);
/// `batch_size` items go in one request, whose `body` holds them as
/// `{records}` (or, with `batch_size = 1`, the one item as `{record}`;
/// that is also the default body). `results` points at the response's
/// per-item results (an array, or one object for a single item); `id`
/// at the id within one result. `match` pairs results with items:
/// `order` (the n-th result is the n-th item), `id` (a result's id is the
/// item's external id, for updates) or `key` (the result holds the
/// change's idempotency key at `key`, which the item put there with
/// `{key}`). `result_error` marks a result as failed (Xero's
/// `HasErrors`), which rejects that record only.
///
/// A batch the system refuses with 400 or 422 is split in halves and
/// retried until the refused records are alone, so one bad record does not
/// reject its neighbours; this assumes the system writes nothing of a
/// batch it refuses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    /// Default `POST`.
    #[serde(default)]
    pub method: Option<Spanned<Method>>,
    pub path: Spanned<String>,
    #[serde(default)]
    pub query: BTreeMap<String, Spanned<String>>,
    /// The request body (default `"{record}"`).
    #[serde(default)]
    pub body: Option<Spanned<toml::Value>>,
    /// One change as it goes into the body (default `"{record}"`).
    #[serde(default)]
    pub item: Option<Spanned<toml::Value>>,
    /// Changes per request (default 1).
    #[serde(default)]
    pub batch_size: Option<Spanned<u32>>,
    /// JSON pointer to the results in the response (default: the whole
    /// response).
    #[serde(default)]
    pub results: Option<Spanned<String>>,
    /// JSON pointer to the record's id within one result. Required for
    /// `create`; an update without it keeps the id it was given.
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    /// How results pair with items (default `order`).
    #[serde(default, rename = "match")]
    pub match_by: Option<Spanned<MatchBy>>,
    /// `match = "key"`: JSON pointer to the echoed idempotency key within
    /// one result.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// Marks a result as a failure of its record.
    #[serde(default)]
    pub result_error: Option<Spanned<ErrorRule>>,
    /// Failures the system lists apart from the results (HubSpot's 207
    /// `errors`), each naming the records it is about, so that each
    /// refused record gets its own message.
    #[serde(default)]
    pub item_errors: Option<Spanned<ItemErrors>>,
    /// `create` only: a request that finds a record already created with a
    /// change's idempotency key (`{key}`), for systems without idempotency
    /// keys or upserts. Sent before each create: a record found is the
    /// outcome (`Created` with its id) and nothing is written; sent again
    /// after a refused create (a unique key field refuses the second of two
    /// tries racing), so they end with the one record.
    #[serde(default)]
    pub lookup: Option<Spanned<Lookup>>,
    /// `create` only: the JSON pointer at which the idempotency key is
    /// written into each record (`{record}`) before it is sent
    /// (`/custom_concord_key`), where `lookup` finds it later.
    #[serde(default)]
    pub key_field: Option<Spanned<String>>,
}

/// `item_errors = { list = "/errors", refs = ["/context/ids"], message = ["/message"] }`.
///
/// Each entry of the array at `list` is one failure; the values at its
/// `refs` pointers (a string or an array of strings) are the ids or
/// idempotency keys of the records it is about. A record without a result
/// takes the message of the failure that names it, else the response's
/// overall message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemErrors {
    /// JSON pointer to the array of failures.
    pub list: Spanned<String>,
    /// JSON pointers, within one failure, to the ids or keys it names.
    pub refs: Vec<Spanned<String>>,
    /// JSON pointers, within one failure, to its message; the first with a
    /// value wins.
    pub message: Vec<Spanned<String>>,
}

/// `lookup = { path = "/api/resource/Customer", query = { filters = '[["custom_concord_key", "=", "{key}"]]' }, records = "/data", id = "/name" }`.
///
/// `{key}` is the change's idempotency key, placed as it is (concord's keys
/// hold letters, digits, `-`, `_` and `:`). The answer holds no record (an
/// empty array, `null`, a 404: create it) or one (already created).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    #[serde(default)]
    pub method: Option<Spanned<Method>>,
    pub path: Spanned<String>,
    #[serde(default)]
    pub query: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub body: Option<Spanned<toml::Value>>,
    /// JSON pointer to the record, or to an array holding it (default: the
    /// whole answer).
    #[serde(default)]
    pub records: Option<Spanned<String>>,
    /// JSON pointer to the id within the record found (default: the
    /// entity's `id`).
    #[serde(default)]
    pub id: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchBy {
    #[default]
    Order,
    Id,
    Key,
}

// ---------------------------------------------------------------------------
// Defaults and limits

pub const DEFAULT_TIMEOUT_SECS: f64 = 30.0;
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;
pub const DEFAULT_CONCURRENCY: u32 = 4;
pub const DEFAULT_LOOK_BACK_SECS: u64 = 60;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_INITIAL_DELAY_MS: u64 = 200;
pub const DEFAULT_MAX_DELAY_MS: u64 = 30_000;
const MAX_PAGE_SIZE: u64 = 100_000;
const MAX_BATCH_SIZE: u32 = 10_000;
const MAX_CONCURRENCY: u32 = 256;

impl HttpDefinition {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(
            self.timeout_secs
                .as_ref()
                .map_or(DEFAULT_TIMEOUT_SECS, |t| *t.get_ref()),
        )
    }

    pub fn max_response_bytes(&self) -> u64 {
        self.max_response_bytes
            .as_ref()
            .map_or(DEFAULT_MAX_RESPONSE_BYTES, |v| *v.get_ref())
    }

    pub fn concurrency(&self) -> u32 {
        self.concurrency
            .as_ref()
            .map_or(DEFAULT_CONCURRENCY, |v| *v.get_ref())
    }

    pub fn look_back(&self) -> Duration {
        Duration::from_secs(
            self.look_back_secs
                .as_ref()
                .map_or(DEFAULT_LOOK_BACK_SECS, |v| *v.get_ref()),
        )
    }

    /// `(max_attempts, initial delay, max delay)`.
    pub fn retry_policy(&self) -> (u32, Duration, Duration) {
        let r = self.retry.as_ref().map(|r| r.get_ref());
        let attempts = r
            .and_then(|r| r.max_attempts.as_ref())
            .map_or(DEFAULT_MAX_ATTEMPTS, |v| *v.get_ref());
        let initial = r
            .and_then(|r| r.initial_delay_ms.as_ref())
            .map_or(DEFAULT_INITIAL_DELAY_MS, |v| *v.get_ref());
        let max = r
            .and_then(|r| r.max_delay_ms.as_ref())
            .map_or(DEFAULT_MAX_DELAY_MS, |v| *v.get_ref());
        (
            attempts,
            Duration::from_millis(initial),
            Duration::from_millis(max),
        )
    }
}

// ---------------------------------------------------------------------------
// Templates

/// A piece of a template: literal text (which may still hold `${…}`), or a
/// request-time placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Placeholder(String),
}

/// Splits a template into text and `{name}` placeholders. `${…}` and `$${`
/// stay in the text (they are instance values); a `{` that does not start
/// `{name}` is plain text. Fails on an unclosed or malformed `${…}`.
pub fn split_template(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if text[i..].starts_with("$${") {
            literal.push_str("$${");
            i += 3;
        } else if text[i..].starts_with("${") {
            let end = text[i + 2..]
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{}`", hint(text)))?;
            let inner = &text[i + 2..i + 2 + end];
            let key = inner.split_once(":-").map_or(inner, |(k, _)| k);
            if !crate::connector::valid_placeholder_name(key) {
                return Err(format!("`${{{key}}}` is not a valid value name"));
            }
            literal.push_str(&text[i..i + 3 + end]);
            i += 3 + end;
        } else if bytes[i] == b'{'
            && let Some(len) = placeholder_len(&text[i + 1..])
        {
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Placeholder(text[i + 1..i + 1 + len].to_owned()));
            i += len + 2;
        } else {
            let ch = text[i..].chars().next().unwrap_or('\0');
            literal.push(ch);
            i += ch.len_utf8().max(1);
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

/// The length of `name` when `rest` starts with `name}` (lowercase letters
/// and `_`).
fn placeholder_len(rest: &str) -> Option<usize> {
    let len = rest
        .bytes()
        .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
        .count();
    (len > 0 && rest.as_bytes().get(len) == Some(&b'}')).then_some(len)
}

fn hint(text: &str) -> String {
    if text.len() > 60 {
        format!("{}…", &text[..text.floor_char_boundary(60)])
    } else {
        text.to_owned()
    }
}

/// Every request-time placeholder in a template.
pub fn placeholders(text: &str) -> BTreeSet<String> {
    split_template(text)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| match p {
            Piece::Placeholder(n) => Some(n),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Whether a JSON pointer is well formed (`""` or `/a/b~1c`).
pub fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() {
        return Ok(());
    }
    if !pointer.starts_with('/') {
        return Err(format!(
            "`{}` is not a JSON pointer: it must be empty or start with `/` (e.g. `/{}`)",
            hint(pointer),
            hint(pointer)
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "`{}` is not a JSON pointer: `~` must be followed by 0 (for `~`) or 1 (for `/`)",
                hint(pointer)
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The check

/// Validates a definition without any I/O, reporting every problem.
pub fn check(source: &SourceFile) -> Result<(), Vec<LoadError>> {
    let def: HttpDefinition = source.parse().map_err(|e| vec![e])?;
    let mut c = Checker {
        source,
        errors: Vec::new(),
    };
    c.definition(&def);
    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(c.errors)
    }
}

/// Parses a definition that [`check`] accepted.
pub fn parse(source: &SourceFile) -> Result<HttpDefinition, Vec<LoadError>> {
    check(source)?;
    source.parse().map_err(|e| vec![e])
}

struct Checker<'a> {
    source: &'a SourceFile,
    errors: Vec<LoadError>,
}

const PAGE_PLACEHOLDERS: &[&str] = &["page", "size"];
const OFFSET_PLACEHOLDERS: &[&str] = &["offset", "size"];
const CURSOR_PLACEHOLDERS: &[&str] = &["cursor", "size"];
const SIZE_PLACEHOLDER: &[&str] = &["size"];

impl Checker<'_> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(self.source.error(Some(span), message));
    }

    fn definition(&mut self, def: &HttpDefinition) {
        self.base_url(&def.base_url);
        if let Some(t) = &def.timeout_secs {
            let v = *t.get_ref();
            if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
                self.err(
                    t.span(),
                    "`timeout_secs` must be more than 0 and at most 3600",
                );
            }
        }
        if let Some(v) = &def.max_response_bytes
            && *v.get_ref() == 0
        {
            self.err(v.span(), "`max_response_bytes` must be positive");
        }
        if let Some(v) = &def.concurrency
            && !(1..=MAX_CONCURRENCY).contains(v.get_ref())
        {
            self.err(
                v.span(),
                format!("`concurrency` must be between 1 and {MAX_CONCURRENCY}"),
            );
        }
        if let Some(r) = &def.rate_limit {
            self.rate_limit(r);
        }
        if let Some(r) = &def.retry {
            self.retry(r);
        }
        if let Some(h) = &def.idempotency_header {
            self.header_name(h.get_ref(), h.span());
        }
        if let Some(a) = &def.auth {
            self.auth(a);
        }
        for (name, value) in &def.headers {
            self.header_name(name, value.span());
            self.instance_template(value, "a header value");
        }
        if let Some(e) = &def.error {
            self.error_rule(e, "error");
        }
        if let Some(h) = &def.healthcheck {
            let h = h.get_ref();
            self.path(&h.path, &[], "healthcheck.path");
            self.query(&h.query, &[], "healthcheck.query");
        }
        if def.entities.is_empty() {
            self.err(
                def.base_url.span(),
                "the definition has no `[entities.NAME]`",
            );
        }
        for (name, entity) in &def.entities {
            if !valid_name(name) {
                self.err(
                    entity.span(),
                    format!(
                        "entity name `{name}` must be 1-64 lowercase letters, digits, `_` or `-`"
                    ),
                );
            }
            self.entity(name, entity);
        }
    }

    fn base_url(&mut self, url: &Spanned<String>) {
        if let Err(e) = split_template(url.get_ref()) {
            self.err(url.span(), e);
            return;
        }
        if !placeholders(url.get_ref()).is_empty() {
            self.err(
                url.span(),
                "`base_url` cannot hold request placeholders like `{id}`; use `${name}` for instance values",
            );
        }
        self.url(url, "base_url");
    }

    /// An absolute http(s) URL, checked with every `${…}` replaced by a
    /// stand-in.
    fn url(&mut self, url: &Spanned<String>, what: &str) {
        let probe = stand_in(url.get_ref());
        match url::Url::parse(&probe) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                if u.query().is_some() || u.fragment().is_some() {
                    self.err(
                        url.span(),
                        format!("`{what}` must not have a query or fragment; use `query`"),
                    );
                }
            }
            Ok(u) => self.err(
                url.span(),
                format!(
                    "`{what}` must be an http or https URL, not `{}:`",
                    u.scheme()
                ),
            ),
            Err(e) => self.err(url.span(), format!("`{what}` is not a valid URL ({e})")),
        }
    }

    fn rate_limit(&mut self, r: &Spanned<RateLimit>) {
        let rl = r.get_ref();
        match (&rl.per_second, &rl.per_minute) {
            (Some(_), Some(m)) => self.err(m.span(), "give `per_second` or `per_minute`, not both"),
            (None, None) => self.err(r.span(), "`rate_limit` needs `per_second` or `per_minute`"),
            _ => {}
        }
        for v in [&rl.per_second, &rl.per_minute, &rl.burst]
            .into_iter()
            .flatten()
        {
            if *v.get_ref() == 0 {
                self.err(v.span(), "must be positive");
            }
        }
    }

    fn retry(&mut self, r: &Spanned<RetryPolicy>) {
        let rp = r.get_ref();
        if let Some(a) = &rp.max_attempts
            && !(1..=100).contains(a.get_ref())
        {
            self.err(a.span(), "`max_attempts` must be between 1 and 100");
        }
        if let Some(d) = &rp.initial_delay_ms
            && *d.get_ref() == 0
        {
            self.err(d.span(), "`initial_delay_ms` must be positive");
        }
        if let (Some(i), Some(m)) = (&rp.initial_delay_ms, &rp.max_delay_ms)
            && m.get_ref() < i.get_ref()
        {
            self.err(m.span(), "`max_delay_ms` is below `initial_delay_ms`");
        }
        if let Some(m) = &rp.max_delay_ms
            && *m.get_ref() > 24 * 3600 * 1000
        {
            self.err(m.span(), "`max_delay_ms` is more than a day");
        }
    }

    fn auth(&mut self, a: &Spanned<Auth>) {
        let auth = a.get_ref();
        let kind = *auth.kind.get_ref();
        let mut allowed: Vec<&str> = vec!["kind"];
        let mut need = |this: &mut Self, field: &Option<Spanned<String>>, name: &'static str| {
            allowed.push(name);
            match field {
                Some(v) => this.instance_template(v, name),
                None => this.err(
                    a.span(),
                    format!("auth kind `{}` needs `{name}`", auth_kind_name(kind)),
                ),
            }
        };
        match kind {
            AuthKind::None => {}
            AuthKind::Bearer => need(self, &auth.token, "token"),
            AuthKind::Basic => {
                need(self, &auth.username, "username");
                need(self, &auth.password, "password");
            }
            AuthKind::ApiKey => {
                need(self, &auth.name, "name");
                need(self, &auth.value, "value");
                allowed.push("in");
                match (&auth.location, &auth.name) {
                    (None, _) => self.err(
                        a.span(),
                        "auth kind `api_key` needs `in` (\"header\" or \"query\")",
                    ),
                    (Some(l), Some(n)) if *l.get_ref() == KeyLocation::Header => {
                        self.header_name(n.get_ref(), n.span())
                    }
                    (Some(_), Some(n)) if n.get_ref().is_empty() => {
                        self.err(n.span(), "the query parameter name is empty")
                    }
                    _ => {}
                }
            }
            AuthKind::Oauth2ClientCredentials => {
                need(self, &auth.token_url, "token_url");
                need(self, &auth.client_id, "client_id");
                need(self, &auth.client_secret, "client_secret");
                allowed.extend(["scopes", "auth_style"]);
                if let Some(u) = &auth.token_url {
                    self.url(u, "token_url");
                }
                for s in &auth.scopes {
                    if s.get_ref().is_empty() || s.get_ref().contains(char::is_whitespace) {
                        self.err(s.span(), "a scope is one word without spaces");
                    }
                }
            }
        }
        // Keys that do not belong to the kind are mistakes, not leftovers.
        let present: [(&str, Option<Range<usize>>); 11] = [
            ("token", auth.token.as_ref().map(Spanned::span)),
            ("username", auth.username.as_ref().map(Spanned::span)),
            ("password", auth.password.as_ref().map(Spanned::span)),
            ("in", auth.location.as_ref().map(Spanned::span)),
            ("name", auth.name.as_ref().map(Spanned::span)),
            ("value", auth.value.as_ref().map(Spanned::span)),
            ("token_url", auth.token_url.as_ref().map(Spanned::span)),
            ("client_id", auth.client_id.as_ref().map(Spanned::span)),
            (
                "client_secret",
                auth.client_secret.as_ref().map(Spanned::span),
            ),
            ("scopes", auth.scopes.first().map(Spanned::span)),
            ("auth_style", auth.auth_style.as_ref().map(Spanned::span)),
        ];
        for (key, span) in present {
            if let Some(span) = span
                && !allowed.contains(&key)
            {
                self.err(
                    span,
                    format!(
                        "`{key}` does not apply to auth kind `{}`",
                        auth_kind_name(kind)
                    ),
                );
            }
        }
    }

    fn header_name(&mut self, name: &str, span: Range<usize>) {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.err(span, format!("`{}` is not a valid header name", hint(name)));
        }
    }

    /// A value that may hold `${…}` but no request placeholders.
    fn instance_template(&mut self, value: &Spanned<String>, what: &str) {
        match split_template(value.get_ref()) {
            Err(e) => self.err(value.span(), e),
            Ok(pieces) => {
                if let Some(Piece::Placeholder(p)) =
                    pieces.iter().find(|p| matches!(p, Piece::Placeholder(_)))
                {
                    self.err(
                        value.span(),
                        format!(
                            "{what} cannot hold the request placeholder `{{{p}}}`; instance values are written `${{name}}`"
                        ),
                    );
                }
            }
        }
        if value.get_ref().chars().any(|c| c.is_control()) {
            self.err(value.span(), format!("{what} holds a control character"));
        }
    }

    fn pointer(&mut self, p: &Spanned<String>) {
        if let Err(e) = check_pointer(p.get_ref()) {
            self.err(p.span(), e);
        }
    }

    fn error_rule(&mut self, e: &Spanned<ErrorRule>, what: &str) {
        let rule = e.get_ref();
        if let Some(p) = &rule.pointer {
            self.pointer(p);
        }
        if let Some(eq) = &rule.equals
            && rule.pointer.is_none()
        {
            self.err(eq.span(), format!("`{what}.equals` needs `pointer`"));
        }
        for m in &rule.message {
            self.pointer(m);
        }
        if rule.pointer.is_none() && rule.message.is_empty() {
            self.err(e.span(), format!("`{what}` needs `pointer` or `message`"));
        }
    }

    /// Request placeholders in a template, each one allowed here.
    fn template(
        &mut self,
        value: &Spanned<String>,
        allowed: &[&str],
        what: &str,
    ) -> BTreeSet<String> {
        match split_template(value.get_ref()) {
            Err(e) => {
                self.err(value.span(), e);
                BTreeSet::new()
            }
            Ok(pieces) => {
                let mut found = BTreeSet::new();
                for p in pieces {
                    if let Piece::Placeholder(name) = p {
                        if !allowed.contains(&name.as_str()) {
                            self.err(value.span(), unknown_placeholder(&name, allowed, what));
                        }
                        found.insert(name);
                    }
                }
                found
            }
        }
    }

    fn path(&mut self, path: &Spanned<String>, allowed: &[&str], what: &str) -> BTreeSet<String> {
        let p = path.get_ref();
        if !p.is_empty() && !p.starts_with('/') {
            self.err(path.span(), format!("`{what}` must start with `/`"));
        }
        if p.contains('?') || p.contains('#') {
            self.err(
                path.span(),
                format!("`{what}` must not hold `?` or `#`; put parameters in `query`"),
            );
        }
        if p.chars().any(|c| c.is_control()) {
            self.err(path.span(), format!("`{what}` holds a control character"));
        }
        self.template(path, allowed, what)
    }

    fn query(
        &mut self,
        query: &BTreeMap<String, Spanned<String>>,
        allowed: &[&str],
        what: &str,
    ) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for (key, value) in query {
            if key.is_empty() {
                self.err(
                    value.span(),
                    format!("`{what}` has an empty parameter name"),
                );
            }
            found.extend(self.template(value, allowed, &format!("{what}.{key}")));
        }
        found
    }

    fn body(
        &mut self,
        body: &Spanned<toml::Value>,
        allowed: &[&str],
        what: &str,
    ) -> BTreeSet<String> {
        let mut strings = Vec::new();
        collect_strings(body.get_ref(), &mut strings);
        let mut found = BTreeSet::new();
        for s in strings {
            match split_template(s) {
                Err(e) => self.err(body.span(), format!("`{what}`: {e}")),
                Ok(pieces) => {
                    for p in pieces {
                        if let Piece::Placeholder(name) = p {
                            if !allowed.contains(&name.as_str()) {
                                self.err(body.span(), unknown_placeholder(&name, allowed, what));
                            }
                            found.insert(name);
                        }
                    }
                }
            }
        }
        if let toml::Value::Datetime(_) = body.get_ref() {
            self.err(
                body.span(),
                format!("`{what}` must be a table, array or string"),
            );
        }
        found
    }

    fn method_has_body(
        &mut self,
        method: Option<&Spanned<Method>>,
        body: Option<&Spanned<toml::Value>>,
        what: &str,
    ) {
        if let (Some(m), Some(b)) = (method, body)
            && matches!(m.get_ref(), Method::Get | Method::Delete)
        {
            let _ = m;
            self.err(
                b.span(),
                format!(
                    "`{what}` sends a body with {}; use POST, PUT or PATCH",
                    m.get_ref().as_str()
                ),
            );
        }
        if let (None, Some(b)) = (method, body) {
            self.err(
                b.span(),
                format!("`{what}` has a body but no `method`; a body needs POST, PUT or PATCH"),
            );
        }
    }

    fn entity(&mut self, name: &str, e: &Spanned<EntitySpec>) {
        let spec = e.get_ref();
        self.pointer(&spec.id);
        if let Some(u) = &spec.updated_at {
            let t = u.get_ref();
            self.pointer(&t.pointer);
            self.time_zone(
                t.format.as_ref().map(|f| *f.get_ref()),
                t.timezone.as_ref(),
                u.span(),
                &format!("entities.{name}.updated_at"),
            );
            if let Some(f) = &t.format
                && *f.get_ref() == TimeFormat::HttpDate
            {
                // Allowed: some systems write Last-Modified style dates.
            }
        }
        let searchable = spec
            .incremental
            .as_ref()
            .is_some_and(|i| i.get_ref().request.is_some());
        if spec.list.is_none()
            && !searchable
            && spec.get.is_none()
            && spec.create.is_none()
            && spec.update.is_none()
        {
            self.err(
                e.span(),
                format!("entity `{name}` has none of `list`, `get`, `create`, `update`"),
            );
        }

        let list_placeholders = spec
            .pagination
            .as_ref()
            .map(|p| self.pagination(p, &format!("entities.{name}.pagination")))
            .unwrap_or(&[]);
        if let Some(list) = &spec.list {
            let used = self.list_request(list, list_placeholders, &format!("entities.{name}.list"));
            if let Some(p) = &spec.pagination {
                self.pagination_used(p, &used);
            }
            if let Some(o) = &list.get_ref().ordered
                && *o.get_ref()
                && spec.updated_at.is_none()
            {
                self.err(o.span(), "`ordered` needs the entity's `updated_at`");
            }
            if let Some(p) = &spec.pagination {
                let ordered = is_true(&list.get_ref().ordered);
                let filter = match spec.incremental.as_ref().map(|i| i.get_ref()) {
                    None => Err(
                        "the entity's `incremental` filter, which says where each next page starts",
                    ),
                    Some(i) if i.request.is_some() => Err(
                        "the incremental filter on `list`, but `incremental.request` is another request (set `keyset` in `incremental.pagination`)",
                    ),
                    Some(_) => Ok(()),
                };
                self.keyset(p, ordered, filter);
            }
        } else if let Some(p) = &spec.pagination {
            self.err(p.span(), "`pagination` without `list`");
        }

        if let Some(inc) = &spec.incremental {
            self.incremental(name, spec, inc, list_placeholders);
        }

        if let Some(g) = &spec.get {
            let g = g.get_ref();
            let what = format!("entities.{name}.get");
            let mut used = self.path(&g.path, &["id"], &format!("{what}.path"));
            used.extend(self.query(&g.query, &["id"], &format!("{what}.query")));
            if let Some(b) = &g.body {
                used.extend(self.body(b, &["id"], &format!("{what}.body")));
            }
            self.method_has_body(g.method.as_ref(), g.body.as_ref(), &what);
            if !used.contains("id") {
                self.err(
                    g.path.span(),
                    format!("`{what}` does not use `{{id}}` anywhere"),
                );
            }
            if let Some(r) = &g.records {
                self.pointer(r);
            }
        }
        if let Some(f) = &spec.fetch_each
            && *f.get_ref()
        {
            if spec.get.is_none() {
                self.err(
                    f.span(),
                    "`fetch_each` fetches each listed record with `get`, which the entity does not have",
                );
            }
            if spec.list.is_none() && !searchable {
                self.err(
                    f.span(),
                    "`fetch_each` applies to pulls, and the entity has no `list` or `incremental.request`",
                );
            }
        }
        if let Some(c) = &spec.create {
            self.write(c, false, &format!("entities.{name}.create"));
        }
        if let Some(u) = &spec.update {
            self.write(u, true, &format!("entities.{name}.update"));
        }
    }

    fn time_zone(
        &mut self,
        format: Option<TimeFormat>,
        zone: Option<&Spanned<String>>,
        span: Range<usize>,
        what: &str,
    ) {
        if let Some(z) = zone {
            if z.get_ref().contains("${") {
                // The instance's zone (the site's setting), checked when an
                // instance is opened; a default must be a zone already.
                self.instance_template(z, &format!("`{what}.timezone`"));
                let default = z
                    .get_ref()
                    .strip_prefix("${")
                    .and_then(|t| t.strip_suffix('}'))
                    .filter(|t| !t.contains("${"))
                    .and_then(|t| t.split_once(":-"))
                    .map(|(_, d)| d);
                if let Some(d) = default
                    && chrono_tz::Tz::from_str(d).is_err()
                {
                    self.err(
                        z.span(),
                        format!(
                            "`{}` is not an IANA time zone (like `Europe/Berlin`)",
                            hint(d)
                        ),
                    );
                }
            } else if chrono_tz::Tz::from_str(z.get_ref()).is_err() {
                self.err(
                    z.span(),
                    format!(
                        "`{}` is not an IANA time zone (like `Europe/Berlin`)",
                        hint(z.get_ref())
                    ),
                );
            }
            if format != Some(TimeFormat::Naive) {
                self.err(
                    z.span(),
                    format!("`{what}.timezone` only applies to format `naive`"),
                );
            }
        } else if format == Some(TimeFormat::Naive) {
            self.err(
                span,
                format!("`{what}` has format `naive`, which needs `timezone` (the zone the system writes times in)"),
            );
        }
    }

    fn list_request(
        &mut self,
        r: &Spanned<ListRequest>,
        allowed: &[&str],
        what: &str,
    ) -> BTreeSet<String> {
        let list = r.get_ref();
        let mut used = self.path(&list.path, allowed, &format!("{what}.path"));
        used.extend(self.query(&list.query, allowed, &format!("{what}.query")));
        if let Some(b) = &list.body {
            used.extend(self.body(b, allowed, &format!("{what}.body")));
        }
        self.method_has_body(list.method.as_ref(), list.body.as_ref(), what);
        if let Some(rec) = &list.records {
            self.pointer(rec);
        }
        used
    }

    /// Checks the fields that apply to the style and returns the
    /// placeholders a request may use with it.
    fn pagination(&mut self, p: &Spanned<Pagination>, what: &str) -> &'static [&'static str] {
        let pg = p.get_ref();
        let style = *pg.style.get_ref();
        let misplaced = |this: &mut Self, key: &str, span: Option<Range<usize>>| {
            if let Some(span) = span {
                this.err(
                    span,
                    format!(
                        "`{key}` does not apply to pagination style `{}`",
                        style.as_str()
                    ),
                );
            }
        };
        for n in [&pg.param, &pg.size_param].into_iter().flatten() {
            if n.get_ref().is_empty() {
                self.err(n.span(), format!("`{what}`: a parameter name is empty"));
            }
        }
        if let Some(s) = &pg.size
            && !(1..=MAX_PAGE_SIZE).contains(s.get_ref())
        {
            self.err(
                s.span(),
                format!("`size` must be between 1 and {MAX_PAGE_SIZE}"),
            );
        }
        if let (Some(a), Some(b)) = (&pg.param, &pg.size_param)
            && a.get_ref() == b.get_ref()
        {
            self.err(b.span(), "`size_param` is the same parameter as `param`");
        }
        if let Some(n) = &pg.next {
            self.pointer(n);
        }
        match style {
            PaginationStyle::None => {
                for (key, span) in [
                    ("param", pg.param.as_ref().map(Spanned::span)),
                    ("start", pg.start.as_ref().map(Spanned::span)),
                    ("size_param", pg.size_param.as_ref().map(Spanned::span)),
                    ("size", pg.size.as_ref().map(Spanned::span)),
                    ("next", pg.next.as_ref().map(Spanned::span)),
                    ("end", pg.end.as_ref().map(Spanned::span)),
                    ("keyset", pg.keyset.as_ref().map(Spanned::span)),
                ] {
                    misplaced(self, key, span);
                }
                &[]
            }
            PaginationStyle::Page | PaginationStyle::Offset => {
                misplaced(self, "next", pg.next.as_ref().map(Spanned::span));
                if pg.size.is_none() {
                    self.err(
                        p.span(),
                        format!(
                            "pagination style `{}` needs `size`: a page shorter than it ends the pull",
                            style.as_str()
                        ),
                    );
                }
                if style == PaginationStyle::Page {
                    PAGE_PLACEHOLDERS
                } else {
                    OFFSET_PLACEHOLDERS
                }
            }
            PaginationStyle::Cursor => {
                misplaced(self, "start", pg.start.as_ref().map(Spanned::span));
                misplaced(self, "end", pg.end.as_ref().map(Spanned::span));
                if pg.next.is_none() {
                    self.err(
                        p.span(),
                        "pagination style `cursor` needs `next`: the JSON pointer to the next token",
                    );
                }
                CURSOR_PLACEHOLDERS
            }
            PaginationStyle::Link | PaginationStyle::NextUrl => {
                misplaced(self, "start", pg.start.as_ref().map(Spanned::span));
                misplaced(self, "end", pg.end.as_ref().map(Spanned::span));
                misplaced(self, "param", pg.param.as_ref().map(Spanned::span));
                if style == PaginationStyle::Link {
                    misplaced(self, "next", pg.next.as_ref().map(Spanned::span));
                } else if pg.next.is_none() {
                    self.err(
                        p.span(),
                        "pagination style `next_url` needs `next`: the JSON pointer to the next page's URL",
                    );
                }
                SIZE_PLACEHOLDER
            }
        }
    }

    /// `keyset = true` needs a request that can say where each page starts:
    /// sorted by `updated_at` and filtered by the incremental time.
    fn keyset(&mut self, p: &Spanned<Pagination>, ordered: bool, filter: Result<(), &str>) {
        let Some(k) = &p.get_ref().keyset else {
            return;
        };
        if !*k.get_ref() {
            return;
        }
        if !ordered {
            self.err(
                k.span(),
                "`keyset` needs a request sorted by `updated_at` (`ordered = true`): each next page asks from the newest record read",
            );
        }
        if let Err(why) = filter {
            self.err(k.span(), format!("`keyset` needs {why}"));
        }
    }

    /// The page position must reach the request somewhere.
    fn pagination_used(&mut self, p: &Spanned<Pagination>, used: &BTreeSet<String>) {
        let pg = p.get_ref();
        let position = match pg.style.get_ref() {
            PaginationStyle::Page => "page",
            PaginationStyle::Offset => "offset",
            PaginationStyle::Cursor => "cursor",
            _ => return,
        };
        if pg.param.is_none() && !used.contains(position) {
            self.err(
                p.span(),
                format!(
                    "the page position goes nowhere: set `param`, or use `{{{position}}}` in the request's path, query or body"
                ),
            );
        }
    }

    fn incremental(
        &mut self,
        name: &str,
        spec: &EntitySpec,
        inc: &Spanned<Incremental>,
        list_placeholders: &'static [&'static str],
    ) {
        let what = format!("entities.{name}.incremental");
        let i = inc.get_ref();
        if spec.updated_at.is_none() {
            self.err(
                inc.span(),
                format!(
                    "`{what}` needs the entity's `updated_at`: the cursor is a record's timestamp"
                ),
            );
        }
        let zone = i.timezone.as_ref().or_else(|| {
            spec.updated_at
                .as_ref()
                .and_then(|u| u.get_ref().timezone.as_ref())
                .filter(|_| *i.format.get_ref() == TimeFormat::Naive)
        });
        self.time_zone(Some(*i.format.get_ref()), zone, inc.span(), &what);

        let mut since_used = false;
        if let Some(h) = &i.header {
            self.header_name(h.get_ref(), h.span());
            since_used = true;
        }
        let mut placeholders = list_placeholders;
        if let Some(p) = &i.pagination {
            placeholders = self.pagination(p, &format!("{what}.pagination"));
            if i.request.is_none() {
                self.err(
                    p.span(),
                    format!("`{what}.pagination` only applies with `{what}.request`"),
                );
            }
        }
        let mut with_since: Vec<&str> = placeholders.to_vec();
        with_since.push("since");
        let used_q = self.query(&i.query, &with_since, &format!("{what}.query"));
        since_used |= used_q.contains("since");
        match &i.request {
            Some(r) => {
                let used = self.list_request(r, &with_since, &format!("{what}.request"));
                since_used |= used.contains("since");
                let mut all = used.clone();
                all.extend(used_q);
                if let Some(p) = i.pagination.as_ref().or(spec.pagination.as_ref()) {
                    self.pagination_used(p, &all);
                }
                if let Some(o) = &r.get_ref().ordered
                    && *o.get_ref()
                    && spec.updated_at.is_none()
                {
                    self.err(o.span(), "`ordered` needs the entity's `updated_at`");
                }
                if let Some(p) = &i.pagination {
                    self.keyset(p, is_true(&r.get_ref().ordered), Ok(()));
                }
            }
            None => {
                if spec.list.is_none() {
                    self.err(
                        inc.span(),
                        format!("`{what}` without `request` changes the entity's `list`, which is missing"),
                    );
                }
            }
        }
        if !since_used {
            self.err(
                inc.span(),
                format!(
                    "`{what}` never sends the time: set `header`, or use `{{since}}` in `query` or in `request`"
                ),
            );
        }
    }

    fn write(&mut self, w: &Spanned<WriteRequest>, update: bool, what: &str) {
        let wr = w.get_ref();
        let batch = wr.batch_size.as_ref().map_or(1, |b| *b.get_ref());
        if let Some(b) = &wr.batch_size
            && !(1..=MAX_BATCH_SIZE).contains(b.get_ref())
        {
            self.err(
                b.span(),
                format!("`batch_size` must be between 1 and {MAX_BATCH_SIZE}"),
            );
        }
        let id_here: &[&str] = if update && batch == 1 { &["id"] } else { &[] };
        let mut used = self.path(&wr.path, id_here, &format!("{what}.path"));
        used.extend(self.query(&wr.query, id_here, &format!("{what}.query")));
        let item_allowed: &[&str] = if update {
            &["record", "key", "id"]
        } else {
            &["record", "key"]
        };
        let item_used = match &wr.item {
            Some(item) => {
                let found = self.body(item, item_allowed, &format!("{what}.item"));
                if !found.contains("record") {
                    self.err(
                        item.span(),
                        format!("`{what}.item` does not place `{{record}}`"),
                    );
                }
                found
            }
            None => BTreeSet::from(["record".to_owned()]),
        };
        let body_allowed: Vec<&str> = if batch == 1 {
            let mut v = vec!["record", "key"];
            if update {
                v.push("id");
            }
            v
        } else {
            vec!["records"]
        };
        match &wr.body {
            Some(b) => {
                let found = self.body(b, &body_allowed, &format!("{what}.body"));
                let want = if batch == 1 { "record" } else { "records" };
                if !found.contains(want) {
                    self.err(
                        b.span(),
                        format!("`{what}.body` does not place `{{{want}}}` (batch_size {batch})"),
                    );
                }
                used.extend(found);
            }
            None if batch > 1 => self.err(
                w.span(),
                format!(
                    "`{what}` sends batches of {batch}: give a `body` that places `{{records}}`"
                ),
            ),
            None => {}
        }
        if let Some(m) = &wr.method
            && matches!(m.get_ref(), Method::Get | Method::Delete)
        {
            self.err(
                m.span(),
                format!("`{what}` writes a body: use POST, PUT or PATCH"),
            );
        }
        used.extend(item_used.iter().cloned());
        if update && !used.contains("id") {
            self.err(
                wr.path.span(),
                format!("`{what}` does not use `{{id}}` (in `path`, `query`, `body` or `item`)"),
            );
        }
        for p in [&wr.results, &wr.id, &wr.key].into_iter().flatten() {
            self.pointer(p);
        }
        if !update && wr.id.is_none() {
            self.err(
                w.span(),
                format!("`{what}` needs `id`: the JSON pointer to the new record's id in a result"),
            );
        }
        let by = wr
            .match_by
            .as_ref()
            .map_or(MatchBy::Order, |m| *m.get_ref());
        match by {
            MatchBy::Key => {
                if wr.key.is_none() {
                    self.err(w.span(), format!("`{what}` matches results by `key`: give `key`, the JSON pointer to the echoed idempotency key"));
                }
                if !item_used.contains("key") {
                    self.err(
                        w.span(),
                        format!(
                            "`{what}` matches results by `key` but `item` does not place `{{key}}`"
                        ),
                    );
                }
            }
            MatchBy::Id => {
                if !update {
                    if let Some(m) = &wr.match_by {
                        self.err(
                            m.span(),
                            "`match = \"id\"` only applies to `update`: new records have no id yet",
                        );
                    }
                } else if wr.id.is_none() {
                    self.err(
                        w.span(),
                        format!("`{what}` matches results by `id`: give `id`"),
                    );
                }
            }
            MatchBy::Order => {
                if let Some(k) = &wr.key {
                    self.err(k.span(), "`key` only applies with `match = \"key\"`");
                }
            }
        }
        if let Some(e) = &wr.result_error {
            self.error_rule(e, &format!("{what}.result_error"));
        }
        if let Some(ie) = &wr.item_errors {
            let ie_ref = ie.get_ref();
            self.pointer(&ie_ref.list);
            for p in ie_ref.refs.iter().chain(&ie_ref.message) {
                self.pointer(p);
            }
            if ie_ref.refs.is_empty() {
                self.err(
                    ie.span(),
                    format!("`{what}.item_errors` needs `refs`: where a failure names its records"),
                );
            }
            if ie_ref.message.is_empty() {
                self.err(
                    ie.span(),
                    format!("`{what}.item_errors` needs `message`: where a failure says why"),
                );
            }
        }
        if let Some(k) = &wr.key_field {
            if update {
                self.err(
                    k.span(),
                    "`key_field` applies to `create`: it stores the key `lookup` finds new records by",
                );
            }
            if k.get_ref().is_empty() {
                self.err(
                    k.span(),
                    "`key_field` must point into the record, not be it",
                );
            } else {
                self.pointer(k);
            }
        }
        if let Some(l) = &wr.lookup {
            if update {
                self.err(
                    l.span(),
                    "`lookup` applies to `create`: updates name their record already",
                );
            }
            let lk = l.get_ref();
            let lwhat = format!("{what}.lookup");
            let mut found = self.path(&lk.path, &["key"], &format!("{lwhat}.path"));
            found.extend(self.query(&lk.query, &["key"], &format!("{lwhat}.query")));
            if let Some(b) = &lk.body {
                found.extend(self.body(b, &["key"], &format!("{lwhat}.body")));
            }
            self.method_has_body(lk.method.as_ref(), lk.body.as_ref(), &lwhat);
            if !found.contains("key") {
                self.err(
                    lk.path.span(),
                    format!("`{lwhat}` does not use `{{key}}`: it finds records by their idempotency key"),
                );
            }
            for p in [&lk.records, &lk.id].into_iter().flatten() {
                self.pointer(p);
            }
            if !update && wr.key_field.is_none() && !used.contains("key") {
                self.err(
                    l.span(),
                    format!("`{lwhat}` finds records by their idempotency key, but `{what}` never sends it: set `key_field`, or place `{{key}}` in `item` or `body`"),
                );
            }
        }
    }
}

fn is_true(flag: &Option<Spanned<bool>>) -> bool {
    flag.as_ref().is_some_and(|f| *f.get_ref())
}

fn auth_kind_name(kind: AuthKind) -> &'static str {
    match kind {
        AuthKind::None => "none",
        AuthKind::Bearer => "bearer",
        AuthKind::Basic => "basic",
        AuthKind::ApiKey => "api_key",
        AuthKind::Oauth2ClientCredentials => "oauth2_client_credentials",
    }
}

fn unknown_placeholder(name: &str, allowed: &[&str], what: &str) -> String {
    if allowed.is_empty() {
        format!("`{what}` cannot hold `{{{name}}}`: no request placeholders apply here")
    } else {
        let list: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
        format!(
            "`{what}`: unknown placeholder `{{{name}}}`; here only {} apply",
            list.join(", ")
        )
    }
}

fn collect_strings<'v>(v: &'v toml::Value, out: &mut Vec<&'v str>) {
    match v {
        toml::Value::String(s) => out.push(s),
        toml::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        toml::Value::Table(t) => t.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// `text` with every `${…}` replaced by its default or a harmless
/// stand-in, to check the shape of URLs whose parts come from instance
/// values.
fn stand_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        match rest[at..].find('}') {
            Some(end) => {
                let inner = &rest[at + 2..at + end];
                out.push_str(inner.split_once(":-").map_or("value", |(_, d)| d));
                rest = &rest[at + end + 1..];
            }
            None => {
                out.push_str(&rest[at..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn check_text(text: &str) -> Result<(), Vec<LoadError>> {
        check(&SourceFile {
            path: PathBuf::from("connectors/demo.toml"),
            text: text.to_owned(),
        })
    }

    fn errors(text: &str) -> Vec<String> {
        match check_text(text) {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    const GOOD: &str = r#"
name = "demo"
driver = "http"
base_url = "https://${host}/api"
[auth]
kind = "bearer"
token = "${token}"
[entities.customer]
id = "/id"
updated_at = { pointer = "/updated", format = "rfc3339" }
list = { path = "/customers", records = "/items", ordered = true }
pagination = { style = "page", param = "page", size_param = "per_page", size = 50 }
incremental = { query = { since = "{since}" }, format = "rfc3339" }
get = { path = "/customers/{id}" }
create = { path = "/customers", id = "/id" }
update = { method = "PUT", path = "/customers/{id}" }
"#;

    #[test]
    fn a_good_definition_passes() {
        assert_eq!(errors(GOOD), Vec::<String>::new());
    }

    #[test]
    fn the_example_definition_passes() {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("connectors/examples/example_http.toml");
        let source = SourceFile::read(&path).unwrap();
        assert_eq!(
            check(&source).err().unwrap_or_default(),
            Vec::<LoadError>::new()
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let text = r#"name = "demo"
driver = "http"
base_url = "ftp://example.com"
rate_limit = { per_second = 0 }
[auth]
kind = "basic"
username = "u"
token = "t"
[entities.customer]
id = "id"
list = { path = "/customers/{id}" }
pagination = { style = "page", param = "page" }
get = { path = "/customers" }
"#;
        let errs = errors(text);
        let want = [
            "demo.toml:3:12: `base_url` must be an http or https URL, not `ftp:`",
            "demo.toml:4:29: must be positive",
            "needs `password`",
            "demo.toml:8:9: `token` does not apply to auth kind `basic`",
            "demo.toml:10:6: `id` is not a JSON pointer",
            "demo.toml:11:17: `entities.customer.list.path`: unknown placeholder `{id}`",
            "demo.toml:12:14: pagination style `page` needs `size`",
            "demo.toml:13:16: `entities.customer.get` does not use `{id}` anywhere",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.contains(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn unknown_keys_and_formats_are_refused_with_their_place() {
        let errs = errors(&GOOD.replace("ordered = true", "orderd = true"));
        assert!(errs[0].contains("unknown field `orderd`"), "{errs:?}");
        let errs =
            errors(&GOOD.replace("format = \"rfc3339\" }\nlist", "format = \"iso\" }\nlist"));
        assert!(errs[0].contains("unknown variant `iso`"), "{errs:?}");
        assert!(errs[0].contains("demo.toml:10:47"), "{errs:?}");
    }

    #[test]
    fn pagination_fields_must_fit_the_style() {
        let errs = errors(&GOOD.replace(
            r#"pagination = { style = "page", param = "page", size_param = "per_page", size = 50 }"#,
            r#"pagination = { style = "cursor", size = 0, start = 3 }"#,
        ));
        let joined = errs.join("\n");
        assert!(joined.contains("`size` must be between 1"), "{joined}");
        assert!(
            joined.contains("`start` does not apply to pagination style `cursor`"),
            "{joined}"
        );
        assert!(joined.contains("needs `next`"), "{joined}");
        assert!(
            joined.contains("the page position goes nowhere"),
            "{joined}"
        );
    }

    #[test]
    fn incremental_needs_a_place_for_the_time_and_a_zone_for_naive_times() {
        let errs = errors(&GOOD.replace(
            r#"incremental = { query = { since = "{since}" }, format = "rfc3339" }"#,
            r#"incremental = { query = { since = "x" }, format = "naive" }"#,
        ));
        let joined = errs.join("\n");
        assert!(joined.contains("never sends the time"), "{joined}");
        assert!(joined.contains("needs `timezone`"), "{joined}");
    }

    #[test]
    fn writes_place_their_records_and_ids() {
        let errs = errors(&GOOD.replace(
            r#"create = { path = "/customers", id = "/id" }"#,
            r#"create = { path = "/customers/{id}", batch_size = 10, match = "key" }"#,
        ));
        let joined = errs.join("\n");
        assert!(
            joined.contains("create.path`: unknown placeholder `{id}`")
                || joined.contains("create.path` cannot hold `{id}`"),
            "{joined}"
        );
        assert!(
            joined.contains("give a `body` that places `{records}`"),
            "{joined}"
        );
        assert!(joined.contains("needs `id`"), "{joined}");
        assert!(joined.contains("give `key`"), "{joined}");
    }

    #[test]
    fn keyset_pages_need_an_ordered_filtered_request_and_say_where_not() {
        let text = r#"name = "demo"
driver = "http"
base_url = "https://api.example.com"
[entities.a]
id = "/id"
updated_at = { pointer = "/t" }
list = { path = "/a" }
pagination = { style = "page", param = "p", size = 10, keyset = true }
[entities.b]
id = "/id"
updated_at = { pointer = "/t" }
list = { path = "/b", ordered = true }
pagination = { style = "none", keyset = false }
incremental = { query = { s = "{since}" }, format = "rfc3339" }
[entities.c]
id = "/id"
updated_at = { pointer = "/t" }
list = { path = "/c", ordered = true }
pagination = { style = "offset", param = "o", size = 10, keyset = true }
incremental = { format = "unix_ms", request = { method = "POST", path = "/c/search", body = { since = "{since}", offset = "{offset}" } }, pagination = { style = "offset", size = 10, keyset = true } }
"#;
        let errs = errors(text);
        let want = [
            "demo.toml:8:65: `keyset` needs a request sorted by `updated_at`",
            "demo.toml:8:65: `keyset` needs the entity's `incremental` filter",
            "demo.toml:13:41: `keyset` does not apply to pagination style `none`",
            "demo.toml:19:67: `keyset` needs the incremental filter on `list`, but `incremental.request` is another request",
            "demo.toml:20:192: `keyset` needs a request sorted by `updated_at`",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.contains(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
        // Where it can work, it passes (and is the default).
        assert_eq!(
            errors(&GOOD.replace("size = 50 }", "size = 50, keyset = true }")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn fetch_each_lookup_key_field_and_item_errors_are_checked_with_their_place() {
        let text = r#"name = "demo"
driver = "http"
base_url = "https://api.example.com"
[entities.a]
id = "/id"
list = { path = "/a" }
fetch_each = true
create = { path = "/a", id = "/id", lookup = { path = "/a", query = { q = "x" } }, item_errors = { list = "errors", refs = [], message = [] } }
update = { method = "PUT", path = "/a/{id}", key_field = "/k", lookup = { path = "/a", query = { k = "{key}" } } }
[entities.b]
id = "/id"
create = { path = "/b", id = "/id", key_field = "", lookup = { path = "/b/{key}", id = "name" } }
"#;
        let errs = errors(text);
        let want = [
            "demo.toml:7:14: `fetch_each` fetches each listed record with `get`",
            "demo.toml:8:55: `entities.a.create.lookup` does not use `{key}`",
            "demo.toml:8:46: `entities.a.create.lookup` finds records by their idempotency key, but `entities.a.create` never sends it",
            "demo.toml:8:107: `errors` is not a JSON pointer",
            "demo.toml:8:98: `entities.a.create.item_errors` needs `refs`",
            "demo.toml:8:98: `entities.a.create.item_errors` needs `message`",
            "demo.toml:9:58: `key_field` applies to `create`",
            "demo.toml:9:73: `lookup` applies to `create`",
            "demo.toml:12:49: `key_field` must point into the record",
            "demo.toml:12:88: `name` is not a JSON pointer",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.contains(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn instance_values_may_carry_defaults_which_are_checked() {
        let oauth = |url: &str| {
            GOOD.replace(
                "[auth]\nkind = \"bearer\"\ntoken = \"${token}\"",
                &format!(
                    "[auth]\nkind = \"oauth2_client_credentials\"\ntoken_url = \"{url}\"\nclient_id = \"${{id}}\"\nclient_secret = \"${{secret}}\""
                ),
            )
        };
        assert_eq!(
            errors(&oauth("${token_url:-https://id.example.com/token}")),
            Vec::<String>::new()
        );
        let errs = errors(&oauth("${token_url:-ftp://id.example.com/token}"));
        assert!(
            errs[0].contains("`token_url` must be an http or https URL"),
            "{errs:?}"
        );
        let zone = |tz: &str| {
            GOOD.replace(
                r#"updated_at = { pointer = "/updated", format = "rfc3339" }"#,
                &format!(r#"updated_at = {{ pointer = "/updated", format = "naive", timezone = "{tz}" }}"#),
            )
            .replace(
                r#"format = "rfc3339" }
get"#,
                r#"format = "naive" }
get"#,
            )
        };
        assert_eq!(errors(&zone("${timezone}")), Vec::<String>::new());
        assert_eq!(
            errors(&zone("${timezone:-Europe/Berlin}")),
            Vec::<String>::new()
        );
        let errs = errors(&zone("${timezone:-Mars/Olympus}"));
        assert!(
            errs[0].contains("`Mars/Olympus` is not an IANA time zone"),
            "{errs:?}"
        );
        let errs = errors(&zone("${time zone}"));
        assert!(errs[0].contains("is not a valid value name"), "{errs:?}");
    }

    #[test]
    fn templates_tell_instance_values_from_request_placeholders() {
        assert_eq!(
            split_template("/a/{id}?x=${key}&y=$${z}{\"q\":1}").unwrap(),
            vec![
                Piece::Text("/a/".into()),
                Piece::Placeholder("id".into()),
                Piece::Text("?x=${key}&y=$${z}{\"q\":1}".into()),
            ]
        );
        assert!(split_template("${unclosed").is_err());
        assert!(split_template("${bad key}").is_err());
        assert_eq!(
            placeholders(r#"[["modified",">=","{since}"]]"#),
            BTreeSet::from(["since".to_owned()])
        );
    }

    #[test]
    fn pointers_are_checked() {
        assert!(check_pointer("").is_ok());
        assert!(check_pointer("/a~1b/0").is_ok());
        assert!(check_pointer("a").is_err());
        assert!(check_pointer("/a~2").is_err());
        assert!(check_pointer("/a~").is_err());
    }

    /// The systems concord ships for can be described, and pass the check.
    #[test]
    fn xero_hubspot_and_erpnext_can_be_described() {
        let xero = r#"
name = "xero"
driver = "http"
base_url = "https://api.xero.com/api.xro/2.0"
rate_limit = { per_minute = 60, burst = 5 }
idempotency_header = "Idempotency-Key"
auth = { kind = "oauth2_client_credentials", token_url = "https://identity.xero.com/connect/token", client_id = "${client_id}", client_secret = "${client_secret}", scopes = ["accounting.transactions"] }
headers = { "xero-tenant-id" = "${tenant_id}" }
error = { message = ["/Elements/0/ValidationErrors/0/Message", "/Message"] }
healthcheck = { path = "/Organisation" }
[entities.invoice]
id = "/InvoiceID"
updated_at = { pointer = "/UpdatedDateUTC", format = "ms_json" }
list = { path = "/Invoices", records = "/Invoices", query = { where = 'Type=="ACCREC"', order = "UpdatedDateUTC ASC" }, ordered = true }
pagination = { style = "page", param = "page", size_param = "pageSize", size = 1000, end = "empty_page" }
incremental = { header = "If-Modified-Since", format = "http_date" }
get = { path = "/Invoices/{id}", records = "/Invoices" }
create = { method = "PUT", path = "/Invoices", query = { summarizeErrors = "false" }, batch_size = 50, body = { Invoices = "{records}" }, results = "/Invoices", id = "/InvoiceID", result_error = { pointer = "/HasErrors", equals = true, message = ["/ValidationErrors/0/Message"] } }
update = { method = "POST", path = "/Invoices/{id}", body = { Invoices = ["{record}"] }, results = "/Invoices", id = "/InvoiceID" }
"#;
        let hubspot = r#"
name = "hubspot"
driver = "http"
base_url = "https://api.hubapi.com"
auth = { kind = "bearer", token = "${token}" }
rate_limit = { per_second = 10 }
error = { message = ["/message"] }
[entities.company]
id = "/id"
updated_at = { pointer = "/properties/hs_lastmodifieddate", format = "rfc3339" }
list = { path = "/crm/v3/objects/companies", records = "/results", query = { properties = "name,domain,hs_lastmodifieddate" } }
pagination = { style = "cursor", param = "after", next = "/paging/next/after", size_param = "limit", size = 100 }
[entities.company.incremental]
format = "unix_ms"
pagination = { style = "cursor", next = "/paging/next/after", size = 100 }
[entities.company.incremental.request]
method = "POST"
path = "/crm/v3/objects/companies/search"
records = "/results"
ordered = true
body = { filterGroups = [{ filters = [{ propertyName = "hs_lastmodifieddate", operator = "GTE", value = "{since}" }] }], sorts = [{ propertyName = "hs_lastmodifieddate", direction = "ASCENDING" }], properties = ["name", "domain", "hs_lastmodifieddate"], limit = "{size}", after = "{cursor}" }
[entities.company.create]
path = "/crm/v3/objects/companies/batch/create"
batch_size = 100
item = { properties = "{record}", objectWriteTraceId = "{key}" }
body = { inputs = "{records}" }
results = "/results"
id = "/id"
match = "key"
key = "/objectWriteTraceId"
[entities.company.update]
path = "/crm/v3/objects/companies/batch/update"
batch_size = 100
item = { id = "{id}", properties = "{record}" }
body = { inputs = "{records}" }
results = "/results"
id = "/id"
match = "id"
"#;
        let erpnext = r#"
name = "erpnext"
driver = "http"
base_url = "https://${site}"
auth = { kind = "api_key", in = "header", name = "Authorization", value = "token ${api_key}:${api_secret}" }
error = { message = ["/_server_messages", "/exception", "/exc_type"] }
[entities.invoice]
id = "/name"
updated_at = { pointer = "/modified", format = "naive", timezone = "Europe/Berlin" }
list = { path = "/api/resource/Sales Invoice", records = "/data", query = { fields = '["*"]', order_by = "modified asc" }, ordered = true }
pagination = { style = "offset", param = "limit_start", size_param = "limit_page_length", size = 100 }
incremental = { query = { filters = '[["modified",">=","{since}"]]' }, format = "naive" }
get = { path = "/api/resource/Sales Invoice/{id}", records = "/data" }
[entities.customer]
id = "/name"
create = { path = "/api/resource/Customer", results = "/data", id = "/name" }
update = { method = "PUT", path = "/api/resource/Customer/{id}", results = "/data", id = "/name" }
"#;
        for text in [xero, hubspot, erpnext] {
            assert_eq!(errors(text), Vec::<String>::new());
        }
    }

    #[test]
    fn odd_input_never_panics() {
        for text in [
            "",
            "name = 1",
            "[entities]\n",
            "base_url = \"\u{1F600}${\"",
            GOOD,
        ] {
            let _ = check_text(text);
            let _ = split_template(text);
        }
    }
}
