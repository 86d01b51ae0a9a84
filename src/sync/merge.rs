//! Three-way, field-level merge of an incoming record into the canonical one.
//!
//! - *base*: what concord last synced with the incoming system (its link's
//!   `synced_data`), `None` when the record was never synced with it;
//! - *ours*: the current canonical record;
//! - *theirs*: the incoming record, already mapped to the canonical shape.
//!
//! A field unchanged by theirs keeps ours; a field changed only by theirs
//! takes theirs; a field both changed to different values is settled by its
//! [`Policy`]: a system priority, the latest change, or the operator
//! (`manual`), in which case only that field waits in the conflict queue and
//! the rest of the record still flows.
//!
//! Fields are compared as *units*: objects are descended key by key, while
//! arrays (order lines, tags) and scalars are compared whole — merging array
//! elements by position would pair the wrong lines as soon as one system
//! inserts a line.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{FieldPath, Segment};

/// How a field changed on both sides is settled.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Policy {
    /// `{ priority = ["erp_main", "crm_main"] }`: the first listed system
    /// that took part wins. Systems not listed rank below every listed one.
    Priority { priority: Vec<String> },
    /// `"latest"` or `"manual"`.
    Named(NamedPolicy),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NamedPolicy {
    /// The side changed most recently (by source timestamp) wins; ties go
    /// to the entity's priority list, then to ours.
    Latest,
    /// The operator decides; the field waits in the conflict queue.
    Manual,
}

impl Policy {
    pub const LATEST: Policy = Policy::Named(NamedPolicy::Latest);
    pub const MANUAL: Policy = Policy::Named(NamedPolicy::Manual);
}

/// Policies for one entity: `[merge.customer]` in the config.
///
/// ```toml
/// [merge.customer]
/// policy = { priority = ["erp_main", "crm_main"] }
/// fields = { email = { priority = ["crm_main"] }, credit_limit = "manual" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MergePolicies {
    /// For every field without an override. Default: `latest`.
    #[serde(default = "default_policy")]
    pub policy: Policy,
    /// Overrides by field path; an override on `billing` covers
    /// `billing.city`. The most specific path wins.
    #[serde(default)]
    pub fields: BTreeMap<String, Policy>,
}

fn default_policy() -> Policy {
    Policy::LATEST
}

impl Default for MergePolicies {
    fn default() -> Self {
        MergePolicies {
            policy: Policy::LATEST,
            fields: BTreeMap::new(),
        }
    }
}

impl MergePolicies {
    /// Checks the field paths parse; returns the offending path and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for path in self.fields.keys() {
            FieldPath::parse(path).map_err(|e| (path.clone(), e.to_string()))?;
        }
        for policy in std::iter::once(&self.policy).chain(self.fields.values()) {
            if let Policy::Priority { priority } = policy
                && priority.is_empty()
            {
                return Err((
                    "policy".into(),
                    "a priority list needs at least one system".into(),
                ));
            }
        }
        Ok(())
    }

    /// The policy for a field: the most specific override, else the default.
    pub fn for_field(&self, path: &FieldPath) -> &Policy {
        self.fields
            .iter()
            .filter_map(|(p, policy)| {
                let p = FieldPath::parse(p).ok()?;
                path.starts_with(&p).then_some((p.segments().len(), policy))
            })
            .max_by_key(|(len, _)| *len)
            .map_or(&self.policy, |(_, policy)| policy)
    }

    /// The entity-wide priority list, used to break `latest` ties.
    fn tie_breaker(&self) -> Option<&[String]> {
        match &self.policy {
            Policy::Priority { priority } => Some(priority),
            Policy::Named(_) => None,
        }
    }
}

/// Who wrote a side, and when (the source system's timestamp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub system: String,
    pub at: Option<DateTime<Utc>>,
}

/// Which side a settled field took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    Ours,
    Theirs,
}

/// A field both sides changed, settled by policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settled {
    pub field: String,
    pub winner: Winner,
    /// `priority` or `latest`, and why.
    pub reason: String,
}

/// A field both sides changed that waits for the operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldConflict {
    pub field: String,
    pub base: Option<Value>,
    pub ours: Option<Value>,
    pub theirs: Option<Value>,
}

/// The outcome of a merge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Merged {
    /// The new canonical record (ours where a conflict waits).
    pub value: Value,
    /// Fields that took theirs.
    pub taken: Vec<String>,
    /// Fields both sides changed, settled by policy.
    pub settled: Vec<Settled>,
    /// Fields waiting for the operator.
    pub conflicts: Vec<FieldConflict>,
}

impl Merged {
    /// Whether the canonical record changes.
    pub fn changes(&self, ours: &Value) -> bool {
        &self.value != ours
    }
}

/// Merges `theirs` into `ours` against `base`, field by field. With a
/// `scope`, only fields under those paths are considered (the fields the
/// incoming system's mapping can produce).
pub fn merge(
    base: Option<&Value>,
    ours: &Value,
    ours_origin: &Origin,
    theirs: &Value,
    theirs_origin: &Origin,
    policies: &MergePolicies,
    scope: Option<&[FieldPath]>,
) -> Merged {
    let empty = Value::Object(Default::default());
    let base_units = in_scope(units(base.unwrap_or(&empty)), scope);
    let our_units = in_scope(units(ours), scope);
    let their_units = in_scope(units(theirs), scope);
    let paths: BTreeSet<&String> = base_units
        .keys()
        .chain(our_units.keys())
        .chain(their_units.keys())
        .collect();

    let mut take: Vec<(FieldPath, Option<Value>)> = Vec::new();
    let mut merged = Merged {
        value: ours.clone(),
        taken: Vec::new(),
        settled: Vec::new(),
        conflicts: Vec::new(),
    };
    for key in paths {
        let b = base_units.get(key).map(|(_, v)| *v);
        let o = our_units.get(key).map(|(_, v)| *v);
        let t = their_units.get(key).map(|(_, v)| *v);
        let path = base_units
            .get(key)
            .or_else(|| our_units.get(key))
            .or_else(|| their_units.get(key))
            .map(|(p, _)| p.clone())
            .expect("the key came from one of the maps");
        if t == o {
            continue; // agree already
        }
        // Without a base, a field theirs lacks is not a deletion: the
        // system may simply not carry it.
        if base.is_none() && t.is_none() {
            continue;
        }
        if t == b {
            continue; // theirs did not change it
        }
        if o == b {
            take.push((path, t.cloned()));
            merged.taken.push(key.clone());
            continue;
        }
        // Both changed it, differently.
        match decide(
            policies.for_field(&path),
            policies,
            ours_origin,
            theirs_origin,
        ) {
            Some((winner, reason)) => {
                if winner == Winner::Theirs {
                    take.push((path, t.cloned()));
                }
                merged.settled.push(Settled {
                    field: key.clone(),
                    winner,
                    reason,
                });
            }
            None => merged.conflicts.push(FieldConflict {
                field: key.clone(),
                base: b.cloned(),
                ours: o.cloned(),
                theirs: t.cloned(),
            }),
        }
    }
    // Removals first (deepest first), then sets (shallowest first), so that
    // a field that turned from an object into a scalar, or back, lands whole.
    take.sort_by_key(|(p, v)| (v.is_some(), p.segments().len()));
    let (removals, sets): (Vec<_>, Vec<_>) = take.into_iter().partition(|(_, v)| v.is_none());
    for (path, _) in removals.iter().rev() {
        path.remove(&mut merged.value);
        prune_empty_parents(&mut merged.value, path);
    }
    for (path, value) in sets {
        if let Some(value) = value {
            // The path came from a JSON document: setting it cannot fail
            // unless ours holds a scalar where theirs holds an object, in
            // which case theirs' whole object replaces it.
            if path.set(&mut merged.value, value.clone()).is_err() {
                replace_at_first_scalar(&mut merged.value, &path, value);
            }
        }
    }
    merged
}

/// Whether two records agree on every field in `scope` (on everything
/// when `None`): whether a system holding `b` already holds `a`.
pub fn same_in_scope(a: &Value, b: &Value, scope: Option<&[FieldPath]>) -> bool {
    let a = in_scope(units(a), scope);
    let b = in_scope(units(b), scope);
    a.len() == b.len()
        && a.iter()
            .all(|(k, (_, v))| b.get(k).is_some_and(|(_, w)| v == w))
}

/// Applies a policy to a field both sides changed; `None` means manual.
fn decide(
    policy: &Policy,
    policies: &MergePolicies,
    ours: &Origin,
    theirs: &Origin,
) -> Option<(Winner, String)> {
    match policy {
        Policy::Named(NamedPolicy::Manual) => None,
        Policy::Priority { priority } => Some(by_priority(priority, ours, theirs)),
        Policy::Named(NamedPolicy::Latest) => match (ours.at, theirs.at) {
            (Some(o), Some(t)) if t > o => Some((
                Winner::Theirs,
                format!("latest: {} changed it last", theirs.system),
            )),
            (Some(o), Some(t)) if o > t => Some((
                Winner::Ours,
                format!("latest: {} changed it last", ours.system),
            )),
            _ => match policies.tie_breaker() {
                Some(priority) => {
                    let (winner, reason) = by_priority(priority, ours, theirs);
                    Some((
                        winner,
                        format!("latest (tie or no timestamp), then {reason}"),
                    ))
                }
                None => Some((
                    Winner::Ours,
                    "latest (tie or no timestamp): kept ours".into(),
                )),
            },
        },
    }
}

fn by_priority(priority: &[String], ours: &Origin, theirs: &Origin) -> (Winner, String) {
    let rank = |s: &str| priority.iter().position(|p| p == s).unwrap_or(usize::MAX);
    if rank(&theirs.system) < rank(&ours.system) {
        (
            Winner::Theirs,
            format!("priority: {} ranks above {}", theirs.system, ours.system),
        )
    } else {
        (
            Winner::Ours,
            format!("priority: {} ranks above {}", ours.system, theirs.system),
        )
    }
}

/// The units under (or above) one of the scope's paths.
fn in_scope<'a>(
    units: BTreeMap<String, (FieldPath, &'a Value)>,
    scope: Option<&[FieldPath]>,
) -> BTreeMap<String, (FieldPath, &'a Value)> {
    match scope {
        None => units,
        Some(scope) => units
            .into_iter()
            .filter(|(_, (p, _))| scope.iter().any(|s| p.starts_with(s) || s.starts_with(p)))
            .collect(),
    }
}

/// Every unit of a record by its path text: objects are descended, arrays
/// and scalars are units; empty objects count as a unit.
fn units(value: &Value) -> BTreeMap<String, (FieldPath, &Value)> {
    fn walk<'a>(
        v: &'a Value,
        prefix: &mut Vec<Segment>,
        out: &mut BTreeMap<String, (FieldPath, &'a Value)>,
    ) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    prefix.push(Segment::Key(k.clone()));
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if let Some(p) = FieldPath::from_segments(prefix.clone()) {
                    out.insert(p.to_string(), (p, v));
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// After removing `a.b.c`, drops `a.b` and `a` if they became empty.
fn prune_empty_parents(root: &mut Value, path: &FieldPath) {
    let mut parent = path.parent();
    while let Some(p) = parent {
        match p.get(root) {
            Some(Value::Object(m)) if m.is_empty() => {
                p.remove(root);
            }
            _ => break,
        }
        parent = p.parent();
    }
}

/// Sets `value` at `path`, replacing the first non-object on the way.
fn replace_at_first_scalar(root: &mut Value, path: &FieldPath, value: Value) {
    let segments = path.segments();
    for depth in 1..=segments.len() {
        let Some(prefix) = FieldPath::from_segments(segments[..depth].to_vec()) else {
            continue;
        };
        match prefix.get(root) {
            Some(Value::Object(_)) => continue,
            _ => {
                let mut nested = value;
                for seg in segments[depth..].iter().rev() {
                    if let Segment::Key(k) = seg {
                        let mut m = serde_json::Map::new();
                        m.insert(k.clone(), nested);
                        nested = Value::Object(m);
                    }
                }
                let _ = prefix.set(root, nested);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn at(s: &str) -> Option<DateTime<Utc>> {
        Some(s.parse().unwrap())
    }

    fn erp(t: &str) -> Origin {
        Origin {
            system: "erp_main".into(),
            at: at(t),
        }
    }

    fn crm(t: &str) -> Origin {
        Origin {
            system: "crm_main".into(),
            at: at(t),
        }
    }

    fn policies(toml: &str) -> MergePolicies {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn unchanged_by_theirs_keeps_ours_and_changed_only_by_theirs_takes_it() {
        let base = json!({"name": "Acme", "email": "a@acme.test", "billing": {"city": "Bern"}});
        let ours = json!({"name": "Acme AG", "email": "a@acme.test", "billing": {"city": "Bern"}});
        let theirs =
            json!({"name": "Acme", "email": "ap@acme.test", "billing": {"city": "Zürich"}});
        let m = merge(
            Some(&base),
            &ours,
            &erp("2026-11-01T10:00:00Z"),
            &theirs,
            &crm("2026-11-02T10:00:00Z"),
            &MergePolicies::default(),
            None,
        );
        assert_eq!(
            m.value,
            json!({"name": "Acme AG", "email": "ap@acme.test", "billing": {"city": "Zürich"}})
        );
        assert_eq!(m.taken, ["billing.city", "email"]);
        assert!(m.settled.is_empty() && m.conflicts.is_empty());
    }

    #[test]
    fn both_changed_priority_latest_and_manual() {
        let base = json!({"name": "Acme", "email": "a@x.test", "credit_limit": "1000.00"});
        let ours = json!({"name": "Acme AG", "email": "b@x.test", "credit_limit": "2000.00"});
        let theirs = json!({"name": "ACME", "email": "c@x.test", "credit_limit": "5000.00"});
        let p = policies(
            r#"policy = { priority = ["erp_main", "crm_main"] }
               fields = { email = { priority = ["crm_main"] }, credit_limit = "manual" }"#,
        );
        // ours was written by the ERP, theirs comes from the CRM.
        let m = merge(
            Some(&base),
            &ours,
            &erp("2026-11-02T00:00:00Z"),
            &theirs,
            &crm("2026-11-03T00:00:00Z"),
            &p,
            None,
        );
        assert_eq!(m.value["name"], "Acme AG", "erp ranks above crm");
        assert_eq!(m.value["email"], "c@x.test", "email override: crm first");
        assert_eq!(
            m.value["credit_limit"], "2000.00",
            "manual keeps ours while waiting"
        );
        assert_eq!(
            m.conflicts,
            vec![FieldConflict {
                field: "credit_limit".into(),
                base: Some(json!("1000.00")),
                ours: Some(json!("2000.00")),
                theirs: Some(json!("5000.00")),
            }]
        );
        assert_eq!(m.settled.len(), 2);

        let latest = MergePolicies::default();
        let m = merge(
            Some(&base),
            &ours,
            &erp("2026-11-02T00:00:00Z"),
            &theirs,
            &crm("2026-11-03T00:00:00Z"),
            &latest,
            None,
        );
        assert_eq!(m.value, theirs, "theirs is newer everywhere");
        let m = merge(
            Some(&base),
            &ours,
            &erp("2026-11-04T00:00:00Z"),
            &theirs,
            &crm("2026-11-03T00:00:00Z"),
            &latest,
            None,
        );
        assert_eq!(m.value, ours, "ours is newer everywhere");
    }

    #[test]
    fn latest_ties_fall_back_to_priority_then_ours() {
        let base = json!({"phone": "1"});
        let ours = json!({"phone": "2"});
        let theirs = json!({"phone": "3"});
        let same = "2026-11-02T00:00:00Z";
        let p = policies(r#"policy = "latest""#);
        let m = merge(
            Some(&base),
            &ours,
            &erp(same),
            &theirs,
            &crm(same),
            &p,
            None,
        );
        assert_eq!(m.value["phone"], "2");
        let mut p = policies(r#"policy = { priority = ["crm_main"] }"#);
        p.fields.insert("phone".into(), Policy::LATEST);
        let m = merge(
            Some(&base),
            &ours,
            &erp(same),
            &theirs,
            &crm(same),
            &p,
            None,
        );
        assert_eq!(m.value["phone"], "3", "{:?}", m.settled);
    }

    #[test]
    fn arrays_are_compared_whole() {
        let base = json!({"lines": [{"sku": "A", "qty": "1"}]});
        let ours = json!({"lines": [{"sku": "A", "qty": "1"}, {"sku": "B", "qty": "1"}]});
        let theirs = json!({"lines": [{"sku": "A", "qty": "2"}]});
        let m = merge(
            Some(&base),
            &ours,
            &erp("2026-11-01T00:00:00Z"),
            &theirs,
            &crm("2026-11-02T00:00:00Z"),
            &policies(r#"policy = "manual""#),
            None,
        );
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].field, "lines");
        assert_eq!(m.value, ours);
    }

    #[test]
    fn deletions_and_shape_changes() {
        let base = json!({"billing": {"city": "Bern", "zip": "3000"}, "note": "x"});
        let ours = base.clone();
        let theirs = json!({"billing": "PO Box 1"});
        let m = merge(
            Some(&base),
            &ours,
            &erp("2026-11-01T00:00:00Z"),
            &theirs,
            &crm("2026-11-02T00:00:00Z"),
            &MergePolicies::default(),
            None,
        );
        assert_eq!(m.value, theirs);
        // And back from a scalar to an object.
        let m = merge(
            Some(&theirs),
            &theirs,
            &erp("2026-11-01T00:00:00Z"),
            &base,
            &crm("2026-11-02T00:00:00Z"),
            &MergePolicies::default(),
            None,
        );
        assert_eq!(m.value, base);
    }

    #[test]
    fn without_a_base_missing_fields_are_not_deletions() {
        let ours = json!({"name": "Acme", "tax_id": "CHE-1"});
        let theirs = json!({"name": "Acme", "email": "a@acme.test"});
        let m = merge(
            None,
            &ours,
            &erp("2026-11-01T00:00:00Z"),
            &theirs,
            &crm("2026-11-02T00:00:00Z"),
            &MergePolicies::default(),
            None,
        );
        assert_eq!(
            m.value,
            json!({"name": "Acme", "tax_id": "CHE-1", "email": "a@acme.test"})
        );
    }

    #[test]
    fn scope_limits_the_merge_to_what_the_mapping_produces() {
        let base = json!({"name": "Acme", "billing": {"city": "Bern"}});
        let ours =
            json!({"name": "Acme", "tax_id": "CHE-1", "billing": {"city": "Bern", "zip": "3000"}});
        let theirs = json!({"name": "Acme AG", "billing": {"city": "Bern"}});
        let scope = [
            FieldPath::parse("name").unwrap(),
            FieldPath::parse("billing.city").unwrap(),
        ];
        let m = merge(
            Some(&base),
            &ours,
            &erp("2026-11-01T00:00:00Z"),
            &theirs,
            &crm("2026-11-02T00:00:00Z"),
            &MergePolicies::default(),
            Some(&scope),
        );
        assert_eq!(
            m.value,
            json!({"name": "Acme AG", "tax_id": "CHE-1", "billing": {"city": "Bern", "zip": "3000"}})
        );
        // Without the scope, zip and tax_id would count as deleted by theirs? No:
        // they were absent from base too, so they are ours' additions and stay.
        let m = merge(
            Some(&ours),
            &ours,
            &erp("2026-11-01T00:00:00Z"),
            &theirs,
            &crm("2026-11-02T00:00:00Z"),
            &MergePolicies::default(),
            None,
        );
        assert_eq!(
            m.value, theirs,
            "unscoped, fields theirs dropped since the base are deleted"
        );
        let m = merge(
            Some(&ours),
            &ours,
            &erp("2026-11-01T00:00:00Z"),
            &theirs,
            &crm("2026-11-02T00:00:00Z"),
            &MergePolicies::default(),
            Some(&scope),
        );
        assert_eq!(
            m.value["tax_id"], "CHE-1",
            "scoped, a field the mapping never writes is kept"
        );
    }

    #[test]
    fn most_specific_override_wins() {
        let p = policies(
            r#"fields = { billing = "manual", "billing.city" = { priority = ["crm_main"] } }"#,
        );
        assert_eq!(
            p.for_field(&FieldPath::parse("billing.zip").unwrap()),
            &Policy::MANUAL
        );
        assert!(matches!(
            p.for_field(&FieldPath::parse("billing.city").unwrap()),
            Policy::Priority { .. }
        ));
        assert_eq!(
            p.for_field(&FieldPath::parse("name").unwrap()),
            &Policy::LATEST
        );
        assert!(toml::from_str::<MergePolicies>("policy = \"sometimes\"").is_err());
        assert!(
            policies("fields = { \"a..b\" = \"manual\" }")
                .validate()
                .is_err()
        );
    }

    fn small_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .prop_map(|v| match v {
            Value::Object(_) => v,
            other => json!({"v": other}),
        })
    }

    proptest! {
        #[test]
        fn merge_laws(base in small_json(), ours in small_json(), theirs in small_json()) {
            let o = erp("2026-11-01T00:00:00Z");
            let t = crm("2026-11-02T00:00:00Z");
            let p = MergePolicies::default();
            // Theirs unchanged: ours stays.
            prop_assert_eq!(merge(Some(&base), &ours, &o, &base, &t, &p, None).value, ours.clone());
            // Ours unchanged: theirs arrives whole.
            prop_assert_eq!(merge(Some(&base), &base, &o, &theirs, &t, &p, None).value, theirs.clone());
            // Merging the result again changes nothing (the sync settles).
            let once = merge(Some(&base), &ours, &o, &theirs, &t, &p, None);
            let twice = merge(Some(&theirs), &once.value, &o, &theirs, &t, &p, None);
            prop_assert_eq!(twice.value, once.value);
            prop_assert!(twice.conflicts.is_empty());
        }
    }
}
