//! Pushes: changes written one by one or in batches, with one outcome per
//! change.
//!
//! What becomes of a failure:
//! - the system refuses a record (400, 404, 409, 422, other 4xx, a 2xx whose
//!   body or result says it failed): `Rejected` with the system's words; a
//!   refused batch is split in halves until the refused records are alone;
//! - the system cannot take it now (429, 5xx, timeouts, broken connections
//!   after the retries), or credentials fail: `Err` for the whole push when
//!   nothing of it has been written yet, so the engine retries it as a
//!   whole; otherwise `RetryLater` for every change not written, and the
//!   push stops there instead of pressing on against a failing system. A
//!   timed-out write may have been done after all; the idempotency key
//!   (`idempotency_header`, or `{key}` in the body) makes the retry safe
//!   where the system honours it, and where it has no such thing, `lookup`
//!   finds the record a create with the same key made (stored there by
//!   `key_field`) before creating it again;
//! - a batch answered in part (HubSpot's 207): each record without a result
//!   is refused with the failure that names it (`item_errors`).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::client::{Call, Failure};
use super::definition::MatchBy;
use super::request::{Entity, ErrorCheck, LookupTpl, Vars, WriteTpl, value_text};
use super::{HttpConnector, extract_id};
use crate::connector::{Change, ConnectorError, ErrorKind, PushOutcome};
use crate::model::ExternalId;

pub(super) async fn push(
    c: &HttpConnector,
    entity: &str,
    mut changes: Vec<Change>,
) -> Result<Vec<PushOutcome>, ConnectorError> {
    let e = c.entity(entity)?;
    let mut outcomes: Vec<Option<PushOutcome>> = vec![None; changes.len()];
    let (updates, creates): (Vec<usize>, Vec<usize>) =
        (0..changes.len()).partition(|&i| changes[i].external_id.is_some());
    let mut stopped: Option<Failure> = None;

    for (update, indices) in [(false, creates), (true, updates)] {
        let tpl = if update {
            e.update.as_ref()
        } else {
            e.create.as_ref()
        };
        let Some(tpl) = tpl else {
            let what = if update { "update" } else { "create" };
            for i in indices {
                outcomes[i] = Some(PushOutcome::Rejected {
                    message: format!(
                        "{entity} records cannot be {what}d here: the definition has no `{what}`"
                    ),
                });
            }
            continue;
        };
        let mut indices = indices;
        if !update {
            if let Some(field) = &tpl.key_field {
                indices.retain(|&i| {
                    let ch = &mut changes[i];
                    match set_pointer(&mut ch.data, field, &ch.idempotency_key) {
                        Ok(()) => true,
                        Err(m) => {
                            outcomes[i] = Some(PushOutcome::Rejected { message: m });
                            false
                        }
                    }
                });
            }
            // Records an earlier try created already are not created again.
            if let Some(l) = &tpl.lookup {
                let mut rest = Vec::with_capacity(indices.len());
                for i in indices {
                    if let Some(f) = &stopped {
                        retry_later(&mut outcomes, &[i], f, c);
                        continue;
                    }
                    match lookup(c, e, l, &changes[i]).await {
                        Ok(Some(id)) => {
                            outcomes[i] = Some(PushOutcome::Created { external_id: id });
                        }
                        Ok(None) => rest.push(i),
                        Err(f) if refused(&f) => {
                            outcomes[i] = Some(PushOutcome::Rejected {
                                message: f.error.message.clone(),
                            });
                        }
                        Err(f) => {
                            if !written(&outcomes) {
                                return Err(f.error);
                            }
                            retry_later(&mut outcomes, &[i], &f, c);
                            stopped = Some(f);
                        }
                    }
                }
                indices = rest;
            }
        }
        // Batches of the configured size; a refused batch comes back as
        // two halves, processed first.
        let mut work: Vec<Vec<usize>> = indices
            .chunks(tpl.batch_size.max(1))
            .rev()
            .map(<[usize]>::to_vec)
            .collect();
        while let Some(batch) = work.pop() {
            if let Some(f) = &stopped {
                retry_later(&mut outcomes, &batch, f, c);
                continue;
            }
            match write(c, tpl, update, &changes, &batch).await {
                Ok(done) => {
                    for (i, o) in batch.iter().zip(done) {
                        outcomes[*i] = Some(o);
                    }
                }
                Err(f) if refused_batch(&f) && batch.len() > 1 => {
                    let (a, b) = batch.split_at(batch.len() / 2);
                    work.push(b.to_vec());
                    work.push(a.to_vec());
                }
                Err(f) if refused(&f) => {
                    for i in &batch {
                        // A create refused because its key is taken (a
                        // unique key field): the record an earlier try, or
                        // one racing it, made.
                        if !update
                            && let Some(l) = &tpl.lookup
                            && let Ok(Some(id)) = lookup(c, e, l, &changes[*i]).await
                        {
                            outcomes[*i] = Some(PushOutcome::Created { external_id: id });
                            continue;
                        }
                        outcomes[*i] = Some(PushOutcome::Rejected {
                            message: f.error.message.clone(),
                        });
                    }
                }
                Err(f) => {
                    if !written(&outcomes) {
                        return Err(f.error);
                    }
                    retry_later(&mut outcomes, &batch, &f, c);
                    stopped = Some(f);
                }
            }
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or(PushOutcome::Rejected {
                message: "no outcome was recorded for this change".into(),
            })
        })
        .collect())
}

/// Whether anything of this push has been written.
fn written(outcomes: &[Option<PushOutcome>]) -> bool {
    outcomes.iter().any(|o| {
        matches!(
            o,
            Some(PushOutcome::Created { .. } | PushOutcome::Updated { .. })
        )
    })
}

/// Writes `key` into a record at `pointer`, making the objects on the way.
fn set_pointer(data: &mut Value, pointer: &str, key: &str) -> Result<(), String> {
    let mut at = data;
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, path)) = parts.split_last() else {
        return Err("`key_field` points at the record itself".into());
    };
    for p in path {
        let Value::Object(map) = at else {
            return Err(format!(
                "the record has no object at `{pointer}` to hold its idempotency key"
            ));
        };
        at = map
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    match at {
        Value::Object(map) => {
            map.insert(last.clone(), Value::String(key.to_owned()));
            Ok(())
        }
        _ => Err(format!(
            "the record is not a JSON object, so its idempotency key cannot be stored at `{pointer}`"
        )),
    }
}

/// The id of a record an earlier push created with this change's key.
async fn lookup(
    c: &HttpConnector,
    e: &Entity,
    l: &LookupTpl,
    ch: &Change,
) -> Result<Option<ExternalId>, Failure> {
    let failure = |error: ConnectorError| Failure {
        error,
        status: None,
        retry_after: None,
        said: None,
    };
    let vars = Vars {
        key: Some(&ch.idempotency_key),
        ..Vars::default()
    };
    let url = c
        .url(
            &l.req.path,
            l.req.query.iter().map(|(k, t)| (k.as_str(), t)),
            &[],
            &vars,
        )
        .map_err(failure)?;
    let mut call = Call::new(l.req.method.clone(), url);
    if let Some(b) = &l.req.body {
        call = call.json(&b.render(&vars).unwrap_or(Value::Null));
    }
    let what = format!("{} {}", call.method, c.client.shown(&call.url));
    let mut answer = match c.client.send(&call).await {
        Ok(a) => a,
        Err(f) if f.error.kind == ErrorKind::NotFound => return Ok(None),
        Err(f) => return Err(f),
    };
    let found = if l.req.records.is_empty() {
        answer.body.take()
    } else {
        answer
            .body
            .pointer_mut(&l.req.records)
            .map(Value::take)
            .ok_or_else(|| {
                failure(ConnectorError::invalid_data(
                    &c.name,
                    format!(
                        "the answer to {what} (looking for a record already created) has nothing at `{}`",
                        l.req.records
                    ),
                ))
            })?
    };
    let record = match found {
        Value::Null => return Ok(None),
        Value::Array(mut a) => match a.len() {
            0 => return Ok(None),
            1 => a.swap_remove(0),
            n => {
                return Err(failure(ConnectorError::invalid_data(
                    &c.name,
                    format!(
                        "{what} finds {n} records created with the key `{}`: it is not unique at the system",
                        ch.idempotency_key
                    ),
                )));
            }
        },
        other => other,
    };
    extract_id(&record, l.id.as_deref().unwrap_or(&e.id))
        .map(Some)
        .map_err(|m| {
            failure(ConnectorError::invalid_data(
                &c.name,
                format!("the record {what} found: {m}"),
            ))
        })
}

/// A failure that is about the records, not the system's state.
fn refused(f: &Failure) -> bool {
    matches!(
        f.error.kind,
        ErrorKind::InvalidData | ErrorKind::NotFound | ErrorKind::Conflict
    )
}

/// A whole batch refused as invalid: some record in it is.
fn refused_batch(f: &Failure) -> bool {
    matches!(f.status.map(|s| s.as_u16()), Some(400 | 422))
}

fn retry_later(
    outcomes: &mut [Option<PushOutcome>],
    batch: &[usize],
    f: &Failure,
    c: &HttpConnector,
) {
    let delay = f
        .retry_after
        .unwrap_or(c.client.max_delay.max(Duration::from_secs(1)));
    for i in batch {
        outcomes[*i] = Some(PushOutcome::RetryLater {
            delay,
            message: f.error.message.clone(),
        });
    }
}

/// Sends one batch; one outcome per change of it.
async fn write(
    c: &HttpConnector,
    tpl: &WriteTpl,
    update: bool,
    changes: &[Change],
    batch: &[usize],
) -> Result<Vec<PushOutcome>, Failure> {
    let items: Vec<Value> = batch
        .iter()
        .map(|&i| {
            let ch = &changes[i];
            tpl.item
                .render(&Vars {
                    record: Some(&ch.data),
                    key: Some(&ch.idempotency_key),
                    id: ch.external_id.as_ref().map(|id| id.as_str()),
                    ..Vars::default()
                })
                .unwrap_or(Value::Null)
        })
        .collect();
    let single = tpl.batch_size == 1;
    let first = &changes[batch[0]];
    let records = Value::Array(items);
    let vars = if single {
        Vars {
            record: records.get(0),
            key: Some(&first.idempotency_key),
            id: first.external_id.as_ref().map(|id| id.as_str()),
            ..Vars::default()
        }
    } else {
        Vars {
            records: Some(&records),
            ..Vars::default()
        }
    };
    let url = c
        .url(
            &tpl.path,
            tpl.query.iter().map(|(k, t)| (k.as_str(), t)),
            &[],
            &vars,
        )
        .map_err(|e| Failure {
            error: e,
            status: None,
            retry_after: None,
            said: None,
        })?;
    let mut call =
        Call::new(tpl.method.clone(), url).json(&tpl.body.render(&vars).unwrap_or(Value::Null));
    if let Some(h) = &c.idempotency_header {
        let key = if batch.len() == 1 {
            first.idempotency_key.clone()
        } else {
            // A batch's key: the same changes in the same order, the same key.
            let mut hash = Sha256::new();
            for &i in batch {
                hash.update(changes[i].idempotency_key.as_bytes());
                hash.update(b"\n");
            }
            format!("batch-{:x}", hash.finalize())
        };
        if let Ok(v) = HeaderValue::from_str(&key) {
            call.headers.push((h.clone(), v));
        }
    }
    let what = format!("{} {}", call.method, c.client.shown(&call.url));
    let answer = match c.client.send(&call).await {
        Ok(a) => a,
        Err(f)
            if f.status.is_some_and(|s| s.is_success())
                && f.error.kind == ErrorKind::InvalidData =>
        {
            // A 2xx we cannot read, or one whose body says it failed.
            return Ok(batch
                .iter()
                .map(|_| PushOutcome::Rejected {
                    message: f.error.message.clone(),
                })
                .collect());
        }
        Err(f) => return Err(f),
    };

    let results: Vec<&Value> = match if tpl.results.is_empty() {
        Some(&answer.body)
    } else {
        answer.body.pointer(&tpl.results)
    } {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(v) => vec![v],
    };
    let said = c
        .client
        .error_check
        .as_ref()
        .and_then(|check| c.client.message_of(check, &answer.body));
    // Failures listed apart from the results: (the ids and keys named, the
    // message).
    let failures: Vec<(Vec<String>, String)> = match &tpl.item_errors {
        None => Vec::new(),
        Some(ie) => {
            let words = ErrorCheck {
                pointer: None,
                equals: None,
                message: ie.message.clone(),
            };
            answer
                .body
                .pointer(&ie.list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|f| {
                    let refs = ie
                        .refs
                        .iter()
                        .filter_map(|p| f.pointer(p))
                        .flat_map(|v| match v {
                            Value::Array(a) => a.iter().map(value_text).collect::<Vec<_>>(),
                            Value::Null => Vec::new(),
                            other => vec![value_text(other)],
                        })
                        .collect();
                    let message = c
                        .client
                        .message_of(&words, f)
                        .unwrap_or_else(|| "the system refused the record".into());
                    (refs, message)
                })
                .collect()
        }
    };

    Ok(batch
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let ch = &changes[i];
            let result = match tpl.match_by {
                MatchBy::Order => results.get(n).copied(),
                MatchBy::Id => {
                    let want = ch.external_id.as_ref().map(|id| id.as_str());
                    results.iter().copied().find(|r| {
                        tpl.id
                            .as_deref()
                            .and_then(|p| r.pointer(p))
                            .map(value_text)
                            .as_deref()
                            == want
                    })
                }
                MatchBy::Key => results.iter().copied().find(|r| {
                    tpl.key
                        .as_deref()
                        .and_then(|p| r.pointer(p))
                        .map(value_text)
                        .as_deref()
                        == Some(ch.idempotency_key.as_str())
                }),
            };
            let own = failures
                .iter()
                .find(|(refs, _)| {
                    refs.iter().any(|r| {
                        *r == ch.idempotency_key
                            || ch.external_id.as_ref().is_some_and(|id| id.as_str() == r)
                    })
                })
                .map(|(_, m)| m.as_str());
            outcome(
                c,
                tpl,
                update,
                ch,
                result,
                results.is_empty() && single,
                answer.status,
                &what,
                own.or(said.as_deref()),
            )
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn outcome(
    c: &HttpConnector,
    tpl: &WriteTpl,
    update: bool,
    change: &Change,
    result: Option<&Value>,
    no_results_expected: bool,
    status: StatusCode,
    what: &str,
    said: Option<&str>,
) -> PushOutcome {
    if let (Some(r), Some(check)) = (result, &tpl.result_error)
        && check.failed(r)
    {
        let message = c
            .client
            .message_of(check, r)
            .unwrap_or_else(|| "the system marked the record as failed".into());
        return PushOutcome::Rejected {
            message: format!("{what}: {message}"),
        };
    }
    let id = match (result, &tpl.id) {
        (Some(r), Some(p)) => match extract_id(r, p) {
            Ok(id) => Some(id),
            Err(m) if !update => {
                return PushOutcome::Rejected {
                    message: format!(
                        "{what} answered {status} but its result has {m}; the record may have been written"
                    ),
                };
            }
            Err(_) => None,
        },
        _ => None,
    };
    match (update, id, &change.external_id) {
        (true, Some(id), _) => PushOutcome::Updated { external_id: id },
        (true, None, Some(given)) if result.is_some() || no_results_expected => {
            PushOutcome::Updated {
                external_id: given.clone(),
            }
        }
        (false, Some(id), _) => PushOutcome::Created { external_id: id },
        _ => PushOutcome::Rejected {
            message: format!(
                "{what} answered {status} without a result for this record{}",
                said.map(|s| format!(": {s}")).unwrap_or_default()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_stored_at_their_pointer() {
        let mut record = json!({ "name": "Acme" });
        set_pointer(&mut record, "/custom_concord_key", "customer:1:1:erp").unwrap();
        assert_eq!(record["custom_concord_key"], "customer:1:1:erp");
        set_pointer(&mut record, "/meta/a~1b", "k").unwrap();
        assert_eq!(record["meta"]["a/b"], "k");
        let err = set_pointer(&mut json!(["not", "an object"]), "/k", "k").unwrap_err();
        assert!(err.contains("not a JSON object"), "{err}");
        let err = set_pointer(&mut json!({ "name": "x" }), "/name/k", "k").unwrap_err();
        assert!(err.contains("not a JSON object"), "{err}");
    }
}
