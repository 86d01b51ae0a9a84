//! A definition compiled for one instance: templates split once, `${…}`
//! filled from the instance, ready to render a request per page or record.

use std::collections::BTreeMap;
use std::str::FromStr;

use secrecy::ExposeSecret;
use serde_json::Value;

use super::definition::{
    self, ErrorRule, HttpDefinition, MatchBy, Method, PaginationStyle, Piece, TimeFormat,
};
use super::time::{Since, TimeSpec};
use crate::connector::{ConnectorError, Instance};

/// A request-time placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    Id,
    Since,
    Page,
    Offset,
    Cursor,
    Size,
    Record,
    Records,
    Key,
}

impl Var {
    fn parse(name: &str) -> Option<Var> {
        Some(match name {
            "id" => Var::Id,
            "since" => Var::Since,
            "page" => Var::Page,
            "offset" => Var::Offset,
            "cursor" => Var::Cursor,
            "size" => Var::Size,
            "record" => Var::Record,
            "records" => Var::Records,
            "key" => Var::Key,
            _ => return None,
        })
    }
}

/// The values of one request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Vars<'a> {
    pub id: Option<&'a str>,
    pub since: Option<&'a Since>,
    pub page: Option<u64>,
    pub offset: Option<u64>,
    pub cursor: Option<&'a Value>,
    pub size: Option<u64>,
    pub record: Option<&'a Value>,
    pub records: Option<&'a Value>,
    pub key: Option<&'a str>,
}

impl Vars<'_> {
    fn text(&self, var: Var) -> Option<String> {
        match var {
            Var::Id => self.id.map(str::to_owned),
            Var::Since => self.since.map(Since::text),
            Var::Page => self.page.map(|n| n.to_string()),
            Var::Offset => self.offset.map(|n| n.to_string()),
            Var::Cursor => self.cursor.map(value_text),
            Var::Size => self.size.map(|n| n.to_string()),
            Var::Record => self.record.map(Value::to_string),
            Var::Records => self.records.map(Value::to_string),
            Var::Key => self.key.map(str::to_owned),
        }
    }

    fn json(&self, var: Var) -> Option<Value> {
        match var {
            Var::Id => self.id.map(|s| Value::String(s.to_owned())),
            Var::Since => self.since.map(Since::json),
            Var::Page => self.page.map(Value::from),
            Var::Offset => self.offset.map(Value::from),
            Var::Cursor => self.cursor.cloned(),
            Var::Size => self.size.map(Value::from),
            Var::Record => self.record.cloned(),
            Var::Records => self.records.cloned(),
            Var::Key => self.key.map(|s| Value::String(s.to_owned())),
        }
    }
}

/// A token or id as text: strings as they are, anything else as JSON.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Text(String),
    Var(Var),
}

/// A string template.
#[derive(Debug, Clone, Default)]
pub struct Tpl(Vec<Seg>);

impl Tpl {
    /// The text, or `None` when a placeholder has no value. With
    /// `path_escape`, values are escaped as one path segment.
    pub fn render(&self, vars: &Vars<'_>, path_escape: bool) -> Option<String> {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Seg::Text(t) => out.push_str(t),
                Seg::Var(v) => {
                    let value = vars.text(*v)?;
                    if path_escape {
                        escape_segment(&value, &mut out);
                    } else {
                        out.push_str(&value);
                    }
                }
            }
        }
        Some(out)
    }
}

/// Percent-escapes everything but RFC 3986 unreserved characters, so an id
/// like `SINV-0001/2` or `Sales Invoice` stays one path segment.
fn escape_segment(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// A JSON body template.
#[derive(Debug, Clone)]
pub enum JsonTpl {
    Literal(Value),
    Text(Tpl),
    /// A string that is exactly one placeholder: replaced with its JSON value.
    Whole(Var),
    Array(Vec<JsonTpl>),
    Object(Vec<(String, JsonTpl)>),
}

impl JsonTpl {
    /// The JSON, or `None` when a whole-value placeholder has no value
    /// (its key or element is then left out).
    pub fn render(&self, vars: &Vars<'_>) -> Option<Value> {
        match self {
            JsonTpl::Literal(v) => Some(v.clone()),
            JsonTpl::Text(t) => t.render(vars, false).map(Value::String),
            JsonTpl::Whole(v) => vars.json(*v),
            JsonTpl::Array(items) => Some(Value::Array(
                items.iter().filter_map(|i| i.render(vars)).collect(),
            )),
            JsonTpl::Object(fields) => Some(Value::Object(
                fields
                    .iter()
                    .filter_map(|(k, v)| v.render(vars).map(|v| (k.clone(), v)))
                    .collect(),
            )),
        }
    }

    pub fn whole(var: Var) -> JsonTpl {
        JsonTpl::Whole(var)
    }
}

/// A request to list, fetch or check.
#[derive(Debug, Clone)]
pub struct RequestTpl {
    pub method: reqwest::Method,
    pub path: Tpl,
    pub query: Vec<(String, Tpl)>,
    pub body: Option<JsonTpl>,
    pub records: String,
    pub ordered: bool,
}

#[derive(Debug, Clone)]
pub struct Paging {
    pub style: PaginationStyle,
    pub param: Option<String>,
    pub start: u64,
    pub size_param: Option<String>,
    pub size: Option<u64>,
    pub next: Option<String>,
    pub until_empty: bool,
    /// `keyset` as written; `None` leaves it to the style.
    pub keyset: Option<bool>,
}

impl Paging {
    /// Whether pages of `req` restart from the newest record read, given
    /// that the incremental filter applies to it (`filtered`).
    pub fn keyset_for(&self, req: &RequestTpl, filtered: bool) -> bool {
        let default = matches!(self.style, PaginationStyle::Page | PaginationStyle::Offset);
        let possible = self.style != PaginationStyle::None;
        possible && req.ordered && filtered && self.keyset.unwrap_or(default)
    }

    fn single() -> Paging {
        Paging {
            style: PaginationStyle::None,
            param: None,
            start: 0,
            size_param: None,
            size: None,
            next: None,
            until_empty: false,
            keyset: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct IncrementalTpl {
    pub time: TimeSpec,
    pub header: Option<reqwest::header::HeaderName>,
    pub query: Vec<(String, Tpl)>,
    pub request: Option<RequestTpl>,
    pub paging: Option<Paging>,
}

#[derive(Debug, Clone)]
pub struct ErrorCheck {
    pub pointer: Option<String>,
    pub equals: Option<Value>,
    pub message: Vec<String>,
}

impl ErrorCheck {
    /// Whether `body` says it failed.
    pub fn failed(&self, body: &Value) -> bool {
        match (&self.pointer, &self.equals) {
            (Some(p), Some(want)) => body.pointer(p) == Some(want),
            (Some(p), None) => body.pointer(p).is_some_and(|v| !v.is_null()),
            (None, _) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WriteTpl {
    pub method: reqwest::Method,
    pub path: Tpl,
    pub query: Vec<(String, Tpl)>,
    pub body: JsonTpl,
    pub item: JsonTpl,
    pub batch_size: usize,
    pub results: String,
    pub id: Option<String>,
    pub match_by: MatchBy,
    pub key: Option<String>,
    pub result_error: Option<ErrorCheck>,
    pub item_errors: Option<ItemErrorsTpl>,
    pub lookup: Option<LookupTpl>,
    pub key_field: Option<String>,
}

/// Failures listed apart from the results, each naming its records.
#[derive(Debug, Clone)]
pub struct ItemErrorsTpl {
    pub list: String,
    pub refs: Vec<String>,
    pub message: Vec<String>,
}

/// The request that finds a record already created with a key.
#[derive(Debug, Clone)]
pub struct LookupTpl {
    pub req: RequestTpl,
    /// Within the record found; default the entity's id.
    pub id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Entity {
    pub id: String,
    pub updated_at: Option<(String, TimeSpec)>,
    pub list: Option<RequestTpl>,
    pub paging: Paging,
    pub incremental: Option<IncrementalTpl>,
    pub get: Option<RequestTpl>,
    pub create: Option<WriteTpl>,
    pub update: Option<WriteTpl>,
    /// Fetch each listed record with `get` before passing it on.
    pub fetch_each: bool,
}

/// Turns definition parts into templates, filling `${…}` from the instance
/// and remembering every value filled in so messages can hide them.
pub struct Compiler<'a> {
    pub instance: &'a Instance,
    pub system: String,
    /// Values filled in from the instance; never shown.
    pub secrets: Vec<String>,
}

impl Compiler<'_> {
    /// Fills `${…}` in `text`.
    pub fn expand(&mut self, text: &str) -> Result<String, ConnectorError> {
        if !text.contains("${") {
            return Ok(text.replace("$${", "${"));
        }
        let mut rest = text;
        while let Some(at) = rest.find("${") {
            let escaped = at > 0 && rest.as_bytes()[at - 1] == b'$';
            let Some(end) = rest[at..].find('}') else {
                break;
            };
            if !escaped {
                let one = self.instance.expand(&rest[at..at + end + 1])?;
                let value = one.expose_secret();
                // Short values (a region, a flag) are no secrets worth
                // garbling messages for.
                if value.len() >= 4 && !self.secrets.iter().any(|s| s == value) {
                    self.secrets.push(value.to_owned());
                }
            }
            rest = &rest[at + end + 1..];
        }
        Ok(self.instance.expand(text)?.expose_secret().to_owned())
    }

    pub fn tpl(&mut self, text: &str) -> Result<Tpl, ConnectorError> {
        let pieces = definition::split_template(text)
            .map_err(|e| ConnectorError::config(&self.system, e))?;
        let mut segs = Vec::with_capacity(pieces.len());
        for p in pieces {
            segs.push(match p {
                Piece::Text(t) => Seg::Text(self.expand(&t)?),
                Piece::Placeholder(name) => Seg::Var(Var::parse(&name).ok_or_else(|| {
                    ConnectorError::config(
                        &self.system,
                        format!("unknown placeholder `{{{name}}}`"),
                    )
                })?),
            });
        }
        Ok(Tpl(segs))
    }

    pub fn json(&mut self, value: &toml::Value) -> Result<JsonTpl, ConnectorError> {
        Ok(match value {
            toml::Value::String(s) => {
                let t = self.tpl(s)?;
                match t.0.as_slice() {
                    [Seg::Var(v)] => JsonTpl::Whole(*v),
                    [Seg::Text(text)] => JsonTpl::Literal(Value::String(text.clone())),
                    [] => JsonTpl::Literal(Value::String(String::new())),
                    _ => JsonTpl::Text(t),
                }
            }
            toml::Value::Integer(i) => JsonTpl::Literal(Value::from(*i)),
            toml::Value::Float(f) => JsonTpl::Literal(
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            ),
            toml::Value::Boolean(b) => JsonTpl::Literal(Value::Bool(*b)),
            toml::Value::Datetime(d) => JsonTpl::Literal(Value::String(d.to_string())),
            toml::Value::Array(a) => {
                JsonTpl::Array(a.iter().map(|v| self.json(v)).collect::<Result<_, _>>()?)
            }
            toml::Value::Table(t) => JsonTpl::Object(
                t.iter()
                    .map(|(k, v)| Ok((k.clone(), self.json(v)?)))
                    .collect::<Result<_, ConnectorError>>()?,
            ),
        })
    }

    fn query(
        &mut self,
        query: &BTreeMap<String, toml::Spanned<String>>,
    ) -> Result<Vec<(String, Tpl)>, ConnectorError> {
        query
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.tpl(v.get_ref())?)))
            .collect()
    }

    fn list(&mut self, r: &definition::ListRequest) -> Result<RequestTpl, ConnectorError> {
        Ok(RequestTpl {
            method: method(r.method.as_ref().map(|m| *m.get_ref())),
            path: self.tpl(r.path.get_ref())?,
            query: self.query(&r.query)?,
            body: r
                .body
                .as_ref()
                .map(|b| self.json(b.get_ref()))
                .transpose()?,
            records: pointer(r.records.as_ref()),
            ordered: r.ordered.as_ref().is_some_and(|o| *o.get_ref()),
        })
    }

    fn error_check(&mut self, e: &ErrorRule) -> ErrorCheck {
        ErrorCheck {
            pointer: e.pointer.as_ref().map(|p| p.get_ref().clone()),
            equals: e
                .equals
                .as_ref()
                .and_then(|v| self.json(v.get_ref()).ok())
                .and_then(|t| t.render(&Vars::default())),
            message: e.message.iter().map(|m| m.get_ref().clone()).collect(),
        }
    }

    pub fn error_rule(&mut self, def: &HttpDefinition) -> Option<ErrorCheck> {
        def.error.as_ref().map(|e| self.error_check(e.get_ref()))
    }

    pub fn healthcheck(
        &mut self,
        def: &HttpDefinition,
    ) -> Result<Option<RequestTpl>, ConnectorError> {
        let Some(h) = &def.healthcheck else {
            return Ok(None);
        };
        let h = h.get_ref();
        Ok(Some(RequestTpl {
            method: method(h.method.as_ref().map(|m| *m.get_ref())),
            path: self.tpl(h.path.get_ref())?,
            query: self.query(&h.query)?,
            body: None,
            records: String::new(),
            ordered: false,
        }))
    }

    pub fn entity(&mut self, spec: &definition::EntitySpec) -> Result<Entity, ConnectorError> {
        let updated_at = match &spec.updated_at {
            None => None,
            Some(u) => {
                let u = u.get_ref();
                Some((
                    u.pointer.get_ref().clone(),
                    self.time_spec(
                        u.format
                            .as_ref()
                            .map_or(TimeFormat::Rfc3339, |f| *f.get_ref()),
                        u.timezone.as_ref().map(|z| z.get_ref().as_str()),
                    )?,
                ))
            }
        };
        let incremental = match &spec.incremental {
            None => None,
            Some(i) => {
                let i = i.get_ref();
                let zone = i.timezone.as_ref().or_else(|| {
                    spec.updated_at
                        .as_ref()
                        .and_then(|u| u.get_ref().timezone.as_ref())
                });
                Some(IncrementalTpl {
                    time: self
                        .time_spec(*i.format.get_ref(), zone.map(|z| z.get_ref().as_str()))?,
                    header: i
                        .header
                        .as_ref()
                        .map(|h| reqwest::header::HeaderName::from_str(h.get_ref()))
                        .transpose()
                        .map_err(|e| ConnectorError::config(&self.system, e.to_string()))?,
                    query: self.query(&i.query)?,
                    request: i
                        .request
                        .as_ref()
                        .map(|r| self.list(r.get_ref()))
                        .transpose()?,
                    paging: i.pagination.as_ref().map(|p| paging(p.get_ref())),
                })
            }
        };
        let get = match &spec.get {
            None => None,
            Some(g) => {
                let g = g.get_ref();
                Some(RequestTpl {
                    method: method(g.method.as_ref().map(|m| *m.get_ref())),
                    path: self.tpl(g.path.get_ref())?,
                    query: self.query(&g.query)?,
                    body: g
                        .body
                        .as_ref()
                        .map(|b| self.json(b.get_ref()))
                        .transpose()?,
                    records: pointer(g.records.as_ref()),
                    ordered: false,
                })
            }
        };
        Ok(Entity {
            id: spec.id.get_ref().clone(),
            updated_at,
            list: spec
                .list
                .as_ref()
                .map(|l| self.list(l.get_ref()))
                .transpose()?,
            paging: spec
                .pagination
                .as_ref()
                .map_or_else(Paging::single, |p| paging(p.get_ref())),
            incremental,
            get,
            create: spec
                .create
                .as_ref()
                .map(|w| self.write(w.get_ref()))
                .transpose()?,
            update: spec
                .update
                .as_ref()
                .map(|w| self.write(w.get_ref()))
                .transpose()?,
            fetch_each: spec.fetch_each.as_ref().is_some_and(|f| *f.get_ref()),
        })
    }

    /// A time format with its zone; a zone from the instance (`${timezone}`)
    /// is checked here, as the definition's own zones are by the check.
    fn time_spec(
        &mut self,
        format: TimeFormat,
        zone: Option<&str>,
    ) -> Result<TimeSpec, ConnectorError> {
        let zone = match zone {
            // Only naive times have a zone; UTC stands in for "none".
            None => chrono_tz::UTC,
            Some(text) => {
                let name = self.expand(text)?;
                chrono_tz::Tz::from_str(name.trim()).map_err(|_| {
                    ConnectorError::config(
                        &self.system,
                        format!(
                            "the time zone of `{text}` is not an IANA time zone (like `Europe/Berlin`)"
                        ),
                    )
                })?
            }
        };
        Ok(TimeSpec { format, zone })
    }

    fn write(&mut self, w: &definition::WriteRequest) -> Result<WriteTpl, ConnectorError> {
        Ok(WriteTpl {
            method: method(Some(
                w.method.as_ref().map_or(Method::Post, |m| *m.get_ref()),
            )),
            path: self.tpl(w.path.get_ref())?,
            query: self.query(&w.query)?,
            body: match &w.body {
                Some(b) => self.json(b.get_ref())?,
                None => JsonTpl::whole(Var::Record),
            },
            item: match &w.item {
                Some(i) => self.json(i.get_ref())?,
                None => JsonTpl::whole(Var::Record),
            },
            batch_size: w.batch_size.as_ref().map_or(1, |b| *b.get_ref() as usize),
            results: pointer(w.results.as_ref()),
            id: w.id.as_ref().map(|p| p.get_ref().clone()),
            match_by: w.match_by.as_ref().map_or(MatchBy::Order, |m| *m.get_ref()),
            key: w.key.as_ref().map(|p| p.get_ref().clone()),
            result_error: w
                .result_error
                .as_ref()
                .map(|e| self.error_check(e.get_ref())),
            item_errors: w.item_errors.as_ref().map(|ie| {
                let ie = ie.get_ref();
                ItemErrorsTpl {
                    list: ie.list.get_ref().clone(),
                    refs: ie.refs.iter().map(|p| p.get_ref().clone()).collect(),
                    message: ie.message.iter().map(|p| p.get_ref().clone()).collect(),
                }
            }),
            lookup: match &w.lookup {
                None => None,
                Some(l) => {
                    let l = l.get_ref();
                    Some(LookupTpl {
                        req: RequestTpl {
                            method: method(l.method.as_ref().map(|m| *m.get_ref())),
                            path: self.tpl(l.path.get_ref())?,
                            query: self.query(&l.query)?,
                            body: l
                                .body
                                .as_ref()
                                .map(|b| self.json(b.get_ref()))
                                .transpose()?,
                            records: pointer(l.records.as_ref()),
                            ordered: false,
                        },
                        id: l.id.as_ref().map(|p| p.get_ref().clone()),
                    })
                }
            },
            key_field: w.key_field.as_ref().map(|p| p.get_ref().clone()),
        })
    }
}

fn method(m: Option<Method>) -> reqwest::Method {
    match m.unwrap_or(Method::Get) {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
        Method::Delete => reqwest::Method::DELETE,
    }
}

fn pointer(p: Option<&toml::Spanned<String>>) -> String {
    p.map(|p| p.get_ref().clone()).unwrap_or_default()
}

fn paging(p: &definition::Pagination) -> Paging {
    let style = *p.style.get_ref();
    Paging {
        style,
        param: p.param.as_ref().map(|s| s.get_ref().clone()),
        start: p
            .start
            .as_ref()
            .map_or(if style == PaginationStyle::Page { 1 } else { 0 }, |s| {
                *s.get_ref()
            }),
        size_param: p.size_param.as_ref().map(|s| s.get_ref().clone()),
        size: p.size.as_ref().map(|s| *s.get_ref()),
        next: p.next.as_ref().map(|s| s.get_ref().clone()),
        until_empty: p.end.as_ref().map(|e| *e.get_ref()) == Some(definition::PageEnd::EmptyPage),
        keyset: p.keyset.as_ref().map(|k| *k.get_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compiler(instance: &Instance) -> Compiler<'_> {
        Compiler {
            instance,
            system: "demo".into(),
            secrets: Vec::new(),
        }
    }

    #[test]
    fn paths_escape_ids_and_fill_instance_values() {
        let inst = Instance::bare("demo").with_var("site", "acme-corp");
        let mut c = compiler(&inst);
        let t = c.tpl("/${site}/api/resource/Sales Invoice/{id}").unwrap();
        let got = t.render(
            &Vars {
                id: Some("SINV 1/2"),
                ..Vars::default()
            },
            true,
        );
        assert_eq!(
            got.as_deref(),
            Some("/acme-corp/api/resource/Sales Invoice/SINV%201%2F2")
        );
        assert_eq!(c.secrets, ["acme-corp"]);
        assert_eq!(t.render(&Vars::default(), true), None);
    }

    #[test]
    fn bodies_keep_types_and_drop_missing_values() {
        let inst = Instance::bare("demo");
        let mut c = compiler(&inst);
        let body: toml::Value = toml::from_str(
            r#"limit = "{size}"
after = "{cursor}"
filters = [{ value = "{since}", label = "since {since}" }]
literal = "{not a placeholder}"
"#,
        )
        .unwrap();
        let t = c.json(&body).unwrap();
        let since = Since::Number(1_700_000_000_000);
        let got = t
            .render(&Vars {
                size: Some(100),
                since: Some(&since),
                ..Vars::default()
            })
            .unwrap();
        assert_eq!(
            got,
            json!({
                "limit": 100,
                "filters": [{ "value": 1_700_000_000_000_i64, "label": "since 1700000000000" }],
                "literal": "{not a placeholder}"
            })
        );
        let cursor = json!("abc");
        let got = t
            .render(&Vars {
                size: Some(5),
                since: Some(&since),
                cursor: Some(&cursor),
                ..Vars::default()
            })
            .unwrap();
        assert_eq!(got["after"], json!("abc"));
    }
}
