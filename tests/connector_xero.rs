//! The Xero definition (`connectors/xero.toml`) through the `http` driver,
//! against Prism serving Xero's own OpenAPI spec.

mod support;
#[path = "support/prism.rs"]
mod prism;

#[test]
fn cutting_the_cycles_of_xeros_spec_leaves_none_and_keeps_every_schema() {
    let path = support::root().join(prism::XERO_SPEC);
    let Ok(text) = std::fs::read_to_string(&path) else {
        let _: Option<()> = support::skip(&format!("{} is missing", path.display()));
        return;
    };
    let mut doc = prism::read_yaml(&text).unwrap();
    let before = prism::schema_cycles(&doc);
    assert!(!before.is_empty(), "Xero's spec has no cycles any more: drop the cut");
    let names_before = doc["components"]["schemas"].as_object().unwrap().len();
    let cut = prism::cut_cycles(&mut doc).unwrap();
    assert_eq!(cut, before);
    assert_eq!(prism::schema_cycles(&doc), Vec::<Vec<String>>::new());
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let copies: usize = cut.iter().map(Vec::len).sum();
    assert_eq!(schemas.len(), names_before + copies);
    eprintln!("cut: {cut:?}");
}

#[test]
fn prism_starts() {
    let Some(p) = prism::shared() else { return };
    eprintln!("{} {:?}", p.base_url, p.cut);
}
