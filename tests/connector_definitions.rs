//! Every definition shipped in `connectors/` passes its driver's check, and
//! agrees with the mappings shipped for its system.

use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn every_shipped_definition_passes_its_check() {
    let (defs, errors) = concord::connector::check_dir(Path::new("connectors")).unwrap();
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(text.is_empty(), "{}", text.join("\n"));
    let names: BTreeSet<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    for want in ["xero", "hubspot", "erpnext"] {
        assert!(
            names.contains(want),
            "connectors/{want}.toml is missing: {names:?}"
        );
    }
}

/// The definition's entities, as a TOML table.
fn entities(system: &str) -> toml::Table {
    let text = std::fs::read_to_string(format!("connectors/{system}.toml")).unwrap();
    let mut doc: toml::Table = text.parse().unwrap();
    match doc.remove("entities") {
        Some(toml::Value::Table(t)) => t,
        other => panic!("{system}: entities is {other:?}"),
    }
}

/// Each shipped mapping `mappings/<system>/<entity>.<in|out>.toml` names a
/// system that has a definition with that entity, and an outbound mapping's
/// entity can be written.
#[test]
fn every_mapping_has_its_system_and_entity() {
    let mut checked = 0;
    for system in ["xero", "hubspot", "erpnext"] {
        let entities = entities(system);
        for file in std::fs::read_dir(format!("mappings/{system}")).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let Some((entity, direction)) = name
                .strip_suffix(".in.toml")
                .map(|e| (e, "in"))
                .or_else(|| name.strip_suffix(".out.toml").map(|e| (e, "out")))
            else {
                continue;
            };
            let mapping = concord::mapping::load_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            assert_eq!(mapping.system, system, "{}", path.display());
            let spec = entities.get(entity).unwrap_or_else(|| {
                panic!(
                    "{}: connectors/{system}.toml has no entity `{entity}`",
                    path.display()
                )
            });
            if direction == "out" {
                assert!(
                    spec.get("create").is_some() || spec.get("update").is_some(),
                    "{}: `{entity}` cannot be written",
                    path.display()
                );
            } else {
                assert!(
                    spec.get("list").is_some(),
                    "{}: `{entity}` cannot be listed",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} mappings found");
}

/// HubSpot returns only the properties a request names: every
/// `properties.X` an inbound mapping reads is named by the list request,
/// the search body and the single-record request of its entity.
#[test]
fn hubspot_requests_name_every_property_the_mappings_read() {
    let entities = entities("hubspot");
    for entity in ["company", "contact", "deal"] {
        let path = format!("mappings/hubspot/{entity}.in.toml");
        let mapping = concord::mapping::load_file(std::path::Path::new(&path)).unwrap();
        let wanted: BTreeSet<String> = mapping
            .source_paths()
            .iter()
            .filter_map(|p| p.strip_prefix("properties.").map(str::to_owned))
            .collect();
        assert!(!wanted.is_empty(), "{path} reads no properties");
        let spec = entities[entity].as_table().unwrap();
        let listed = |query: Option<&toml::Value>| -> BTreeSet<String> {
            query
                .and_then(|q| q.get("properties"))
                .and_then(|p| p.as_str())
                .map(|p| p.split(',').map(str::to_owned).collect())
                .unwrap_or_default()
        };
        for (what, names) in [
            ("list", listed(spec["list"].get("query"))),
            ("get", listed(spec["get"].get("query"))),
        ] {
            let missing: Vec<_> = wanted.difference(&names).collect();
            assert!(
                missing.is_empty(),
                "hubspot {entity} {what} does not ask for {missing:?}"
            );
        }
        if let Some(inc) = spec.get("incremental") {
            let body = &inc["request"]["body"];
            let names: BTreeSet<String> = body["properties"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            let missing: Vec<_> = wanted.difference(&names).collect();
            assert!(
                missing.is_empty(),
                "hubspot {entity} search does not ask for {missing:?}"
            );
        }
        // deal.in reads the associated company: only the list asks for it.
        if mapping
            .source_paths()
            .iter()
            .any(|p| p.starts_with("associations."))
        {
            assert_eq!(
                spec["list"]["query"]["associations"].as_str(),
                Some("companies")
            );
            assert!(
                spec.get("incremental").is_none(),
                "{entity}: search returns no associations"
            );
        }
    }
}
