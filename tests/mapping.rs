//! The mapping engine end to end: files on disk, compiled, applied.

use std::path::{Path, PathBuf};

use concord::mapping::{self, Lookups, Mapping, sidecar};
use concord::model::EntityKind;
use serde_json::{Value, json};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn compile(text: &str) -> Mapping {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "m.toml", text);
    mapping::load_file(&path).unwrap_or_else(|e| panic!("{e:#?}"))
}

fn load_errors(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "m.toml", text);
    match mapping::load_file(&path) {
        Ok(_) => panic!("expected load errors"),
        Err(errors) => errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
            .collect(),
    }
}

const ORDER: &str = r#"
[mapping]
name = "erp-order-in"
version = 2
system = "erp"
entity = "order"
direction = "in"

[defaults]
decimal = "de"
date = "dd.mm.yyyy"
zone = "Europe/Berlin"

[fields]
number = { from = ["OrderNo", "Beleg"], pipe = ["trim", "upper"], required = true }
customer = { from = "KundenNr", pipe = [{ lookup = "customer" }] }
currency = { from = "Waehrung", default = "EUR" }
order_date = { from = "Datum", pipe = ["date"] }
status = { from = "Status", pipe = [{ table = "status" }] }
total = { expr = "Netto + Steuer" }
"extra.sales_rep" = { all = ["Vertreter.Vorname", "Vertreter.Name"], pipe = [{ join = " " }] }
"extra.channel" = { value = "erp" }
"extra.rush" = { from = "Eilig", pipe = ["bool"], when = "Prioritaet == 'A'" }

[fields.lines]
each = "Positionen"
required = true
[fields.lines.fields]
sku = { from = "Artikel", pipe = ["trim"] }
quantity = { from = "Menge", pipe = ["decimal"], required = true }
unit_price = { from = "Preis", pipe = ["decimal"] }
total = { from = "Wert", pipe = ["decimal"] }
"extra.gross" = { expr = "round(Preis_Netto * 1.19, 2)" }

[tables.status]
map = { O = "open", G = "shipped", S = "cancelled" }
fallback = { default = "unknown" }

[[validate]]
name = "lines_add_up"
rule = "sum(lines[*].total) == total"

[[validate]]
field = "lines[*].quantity"
min = "0.001"
"#;

fn order_input() -> Value {
    json!({
        "OrderNo": " so-1001 ",
        "KundenNr": "K-77",
        "Datum": "28.11.2026",
        "Status": "O",
        "Netto": "30.5",
        "Steuer": "5.795",
        "Vertreter": { "Vorname": "Ada", "Name": "Lovelace" },
        "Prioritaet": "A",
        "Eilig": "ja",
        "Positionen": [
            { "Artikel": " A-1 ", "Menge": "2", "Preis": "10,25", "Wert": "20,50", "Preis_Netto": "10.25" },
            { "Artikel": "B-2", "Menge": "1,5", "Preis": "10,53", "Wert": "15,795" }
        ]
    })
}

#[test]
fn inbound_order_maps_every_kind_of_rule() {
    let m = compile(ORDER);
    assert_eq!(m.version_tag(), "erp-order-in@2");
    assert!(m.has_lookups());
    let input = order_input();
    let keys = m.lookup_keys(&input);
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].entity, keys[0].value.as_str()),
        (EntityKind::Customer, "K-77")
    );

    let mut lookups = Lookups::default();
    lookups.insert(
        EntityKind::Customer,
        "erp",
        "K-77",
        "0192f0c4-7a51-7cc2-9f0e-3d1c5b7a9e10",
    );
    let out = m
        .apply_canonical(&input, &lookups)
        .unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(
        out,
        json!({
            "number": "SO-1001",
            "customer": "0192f0c4-7a51-7cc2-9f0e-3d1c5b7a9e10",
            "currency": "EUR",
            "order_date": "2026-11-28",
            "status": "open",
            "total": "36.295",
            "sales_rep": "Ada Lovelace",
            "channel": "erp",
            "rush": true,
            "lines": [
                { "sku": "A-1", "quantity": "2", "unit_price": "10.25", "total": "20.50", "gross": "12.20" },
                { "sku": "B-2", "quantity": "1.5", "unit_price": "10.53", "total": "15.795" }
            ]
        })
    );
}

#[test]
fn every_error_of_a_record_is_reported() {
    let m = compile(ORDER);
    let input = json!({
        "Datum": "30.02.2026",
        "Netto": "x",
        "Steuer": "1",
        "Positionen": [{ "Menge": "-1", "Preis": "1" }, { "Preis": "2" }]
    });
    let errors = m.apply(&input, &Lookups::default()).unwrap_err();
    let got: Vec<(String, String)> = errors
        .iter()
        .map(|e| (e.field.clone(), e.rule.clone()))
        .collect();
    for want in [
        ("number", "required"),
        ("order_date", "date"),
        ("total", "expr"),
        ("lines[1].quantity", "required"),
        ("lines[0].quantity", "min"),
    ] {
        assert!(
            got.iter().any(|(f, r)| f == want.0 && r == want.1),
            "missing {want:?} in {got:?}"
        );
    }
    let date = errors.iter().find(|e| e.rule == "date").unwrap();
    assert_eq!(date.value.as_deref(), Some("\"30.02.2026\""));
}

#[test]
fn table_fallback_and_when() {
    let m = compile(ORDER);
    let mut input = order_input();
    input["Status"] = json!("X");
    input["Prioritaet"] = json!("B");
    input.as_object_mut().unwrap().remove("KundenNr");
    let out = m.apply_canonical(&input, &Lookups::default()).unwrap();
    assert_eq!(out["status"], "unknown");
    assert!(out.get("rush").is_none());
    assert!(out.get("customer").is_none());
}

#[test]
fn outbound_mapping_writes_the_systems_shape() {
    let m = compile(
        r#"
[mapping]
name = "erp-invoice-out"
version = 1
system = "erp"
entity = "invoice"
direction = "out"

[fields]
"Beleg.Nummer" = { from = "number" }
Kunde = { from = "customer", pipe = [{ lookup = "customer" }] }
Betrag = { from = "total", pipe = ["number"] }
BetragText = { from = "total", pipe = [{ format_decimal = "de" }] }
Datum = { from = "issue_date", pipe = [{ format_date = "dd.mm.yyyy" }] }
Xero = { from = "due_date", pipe = [{ format_date = "ms_json" }] }
"#,
    );
    let mut lookups = Lookups::default();
    lookups.insert(EntityKind::Customer, "erp", "cid-1", "K-77");
    let out = m
        .apply_canonical(
            &json!({
                "number": "INV-1", "customer": "cid-1", "currency": "EUR",
                "total": "1234.50", "open_amount": "1234.50",
                "issue_date": "2026-11-28", "due_date": "2026-12-28", "status": "open"
            }),
            &lookups,
        )
        .unwrap();
    assert_eq!(
        out,
        json!({
            "Beleg": { "Nummer": "INV-1" },
            "Kunde": "K-77",
            "Betrag": 1234.5,
            "BetragText": "1.234,50",
            "Datum": "28.11.2026",
            "Xero": "/Date(1798416000000+0000)/"
        })
    );
}

#[test]
fn load_errors_are_located_and_all_reported() {
    let errors = load_errors(
        r#"[mapping]
name = "broken"
version = 1
system = "erp"
entity = "invoice"
direction = "in"

[fields]
number = { from = "No", pipe = ["trim", "frobnicate"] }
totl = { from = "Total" }
total = { from = "Total", pipe = ["decimal", "upper"] }
reference = { from = "Ref", pipe = [{ replace = { pattern = "(", with = "" } }] }
issue_date = { from = "D", pipe = ["decimal"] }
status = { from = "S", pipe = [{ use = "a" }] }
due_date = { from = "D", when = "Type == " }

[pipelines.a]
steps = [{ use = "b" }]
[pipelines.b]
steps = [{ use = "a" }]
"#,
    );
    let all = errors.join("\n");
    for want in [
        "9:41: frobnicate: unknown transform \"frobnicate\"",
        "10:1: target \"totl\": unknown field \"totl\"",
        "11:9: field \"total\": type mismatch: upper cannot take the decimal that decimal makes",
        "12:37: replace: invalid regex",
        "13:14: field \"issue_date\": type mismatch: the canonical field is date, but decimal makes decimal",
        "20:10: use: pipelines use each other in a cycle: a → b → a",
        "15:39: in \"Type == \": at character 5: expression ends too early",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

#[test]
fn toml_syntax_and_unknown_keys_are_located() {
    let errors = load_errors(
        "[mapping]\nname = \"x\"\nversion = 1\nsystem = \"erp\"\nentity = \"invoice\"\ndirection = \"in\"\n\n[fields]\nnumber = { form = \"No\" }\n",
    );
    assert!(errors[0].starts_with("9:"), "{errors:?}");
    assert!(errors[0].contains("unknown field `form`"), "{errors:?}");
    let errors = load_errors("[mapping\nname = 1\n");
    assert!(errors[0].starts_with("1:"), "{errors:?}");
    let errors = load_errors(
        "[mapping]\nname = \"x\"\nversion = 1\nsystem = \"erp\"\nentity = \"invoyce\"\ndirection = \"in\"\n[fields]\nnumber = { from = \"No\" }\n",
    );
    assert!(errors[0].starts_with("5:10: unknown entity"), "{errors:?}");
}

#[test]
fn includes_share_tables_and_catch_cycles() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/a.shared.toml",
        "include = [\"b.shared.toml\"]\n[tables.t]\nmap = { A = \"open\" }\n",
    );
    write(
        dir.path(),
        "common/b.shared.toml",
        "[pipelines.clean]\nsteps = [\"trim\", \"upper\"]\n",
    );
    let path = write(
        dir.path(),
        "erp/m.toml",
        "[mapping]\nname = \"m\"\nversion = 1\nsystem = \"erp\"\nentity = \"invoice\"\ndirection = \"in\"\ninclude = [\"../common/a.shared.toml\"]\n[fields]\nnumber = { from = \"No\", pipe = [{ use = \"clean\" }] }\nstatus = { from = \"S\", pipe = [{ table = \"t\" }] }\n",
    );
    let m = mapping::load_file(&path).unwrap_or_else(|e| panic!("{e:#?}"));
    let out = m
        .apply(&json!({ "No": " inv-1 ", "S": "A" }), &Lookups::default())
        .unwrap();
    assert_eq!(out, json!({ "number": "INV-1", "status": "open" }));

    write(
        dir.path(),
        "common/b.shared.toml",
        "include = [\"a.shared.toml\"]\n",
    );
    let errors = mapping::load_file(&path).unwrap_err();
    assert!(
        errors.iter().any(|e| e.message.contains("cycle")),
        "{errors:#?}"
    );
}

#[test]
fn sidecar_tests_pass_and_fail_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "m.toml",
        "[mapping]\nname = \"m\"\nversion = 1\nsystem = \"erp\"\nentity = \"customer\"\ndirection = \"in\"\n[fields]\nname = { from = \"N\", required = true }\nemail = { from = \"E\", pipe = [\"email\"] }\n",
    );
    let test = write(
        dir.path(),
        "m.test.toml",
        r#"
[[case]]
name = "good"
input = { N = "Acme", E = " AP@Acme.Example " }
expect = { name = "Acme", email = "ap@acme.example" }

[[case]]
name = "wrong expectation"
input = { N = "Acme" }
expect = { name = "Acme GmbH" }

[[case]]
name = "missing name"
input = { E = "x@y.z" }
errors = [{ field = "name", rule = "required" }]
"#,
    );
    let results = sidecar::run_file(&test);
    assert_eq!(results.len(), 3);
    assert!(results[0].passed, "{:?}", results[0]);
    assert!(!results[1].passed);
    assert_eq!(
        results[1].diff,
        vec!["name: expected \"Acme GmbH\", got \"Acme\"".to_owned()]
    );
    assert!(results[2].passed, "{:?}", results[2]);
}

/// Every mapping shipped in mappings/ compiles and passes its sidecar tests.
#[test]
fn shipped_mappings_compile_and_pass_their_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let (mappings, errors) = mapping::load_dir(&root);
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(!mappings.is_empty());
    let (tests, errors) = sidecar::find_tests(&[root]);
    assert!(errors.is_empty(), "{errors:#?}");
    let mut failed = Vec::new();
    let mut ran = 0;
    for file in &tests {
        for r in sidecar::run_file(file) {
            ran += 1;
            if !r.passed {
                failed.push(format!(
                    "{} :: {}\n  {}",
                    r.file.display(),
                    r.case,
                    r.diff.join("\n  ")
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(
        ran >= mappings.len(),
        "every mapping needs sidecar cases: {ran} cases"
    );
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,24}".prop_map(Value::String),
            "[0-9.,\\- ]{0,12}".prop_map(Value::String),
            "/Date\\([0-9\\-+]{0,16}\\)/".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[A-Za-z]{1,12}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn shipped() -> Vec<Mapping> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        mapping::load_dir(&root).0
    }

    /// Records shaped like each mapping's sources, with arbitrary values.
    fn shaped(m: &Mapping) -> Vec<String> {
        m.source_paths()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn shipped_mappings_never_panic(value in json_value(), fill in json_value()) {
            for m in shipped() {
                let _ = m.apply_canonical(&value, &Lookups::default());
                // The same arbitrary value at every path the mapping reads.
                let mut record = json!({});
                for path in shaped(&m) {
                    if let Ok(p) = concord::model::FieldPath::parse(&path) {
                        let _ = p.set(&mut record, fill.clone());
                    }
                }
                let _ = m.lookup_keys(&record);
                let _ = m.apply_canonical(&record, &Lookups::default());
            }
        }
    }
}

mod regression {
    //! Bugs found while writing the shipped mappings, one test each.
    use super::*;

    const HEAD_IN: &str = "[mapping]\nname = \"m\"\nversion = 1\nsystem = \"crm\"\nentity = \"customer\"\ndirection = \"in\"\n";
    const HEAD_OUT: &str = "[mapping]\nname = \"m\"\nversion = 1\nsystem = \"crm\"\nentity = \"customer\"\ndirection = \"out\"\n";

    #[test]
    fn rules_on_extra_fields_fire() {
        let m = compile(&format!(
            "{HEAD_IN}[fields]\nname = {{ from = \"N\" }}\n\"extra.kind\" = {{ from = \"Kind\" }}\n[[validate]]\nfield = \"extra.kind\"\nenum = [\"ok\"]\n[[validate]]\nrule = \"extra.kind != 'worse'\"\n"
        ));
        assert!(
            m.apply(&json!({ "N": "a", "Kind": "ok" }), &Lookups::default())
                .is_ok()
        );
        let errors = m
            .apply(&json!({ "N": "a", "Kind": "worse" }), &Lookups::default())
            .unwrap_err();
        let rules: Vec<&str> = errors.iter().map(|e| e.rule.as_str()).collect();
        assert_eq!(rules, vec!["enum", "rule"], "{errors:?}");
    }

    #[test]
    fn outbound_reads_extra_fields() {
        let m = compile(&format!(
            "{HEAD_OUT}[fields]\n\"properties.name\" = {{ from = \"name\" }}\n\"properties.domain\" = {{ from = \"extra.domain\" }}\n\"properties.tag\" = {{ expr = \"concat('d:', extra.domain)\" }}\n"
        ));
        let out = m
            .apply(
                &json!({ "name": "Acme", "domain": "acme.example" }),
                &Lookups::default(),
            )
            .unwrap();
        assert_eq!(
            out,
            json!({ "properties": { "name": "Acme", "domain": "acme.example", "tag": "d:acme.example" } })
        );
    }

    #[test]
    fn list_fields_take_whole_lists_and_single_elements() {
        let m = compile(&format!(
            "{HEAD_IN}[fields]\nname = {{ from = \"N\" }}\nbank_accounts = {{ from = \"Ibans\", pipe = [{{ split = \",\" }}, \"trim\"] }}\n"
        ));
        let out = m
            .apply_canonical(
                &json!({ "N": "a", "Ibans": "DE89370400440532013000, GB82WEST12345698765432" }),
                &Lookups::default(),
            )
            .unwrap();
        assert_eq!(
            out["bank_accounts"],
            json!(["DE89370400440532013000", "GB82WEST12345698765432"])
        );
        let m = compile(&format!(
            "{HEAD_IN}[fields]\nname = {{ from = \"N\" }}\n\"bank_accounts[0]\" = {{ from = \"Iban\", pipe = [\"trim\"] }}\n"
        ));
        let out = m
            .apply_canonical(
                &json!({ "N": "a", "Iban": " DE89370400440532013000" }),
                &Lookups::default(),
            )
            .unwrap();
        assert_eq!(out["bank_accounts"], json!(["DE89370400440532013000"]));
    }

    #[test]
    fn every_element_rules_fail_on_one_bad_element() {
        let m = compile(
            "[mapping]\nname = \"m\"\nversion = 1\nsystem = \"erp\"\nentity = \"order\"\ndirection = \"in\"\n[fields]\nnumber = { from = \"No\" }\ncurrency = { value = \"EUR\" }\n[fields.lines]\neach = \"Items\"\nfields = { quantity = { from = \"Q\", pipe = [\"decimal\"] }, unit_price = { value = \"1\" } }\n[[validate]]\nname = \"positive_quantities\"\nrule = \"lines[*].quantity > 0\"\n",
        );
        let errors = m
            .apply(
                &json!({ "No": "1", "Items": [{ "Q": 1 }, { "Q": -5 }] }),
                &Lookups::default(),
            )
            .unwrap_err();
        assert_eq!(errors[0].rule, "positive_quantities");
        assert!(
            m.apply(
                &json!({ "No": "1", "Items": [{ "Q": 1 }] }),
                &Lookups::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn two_fields_writing_one_place_are_a_load_error() {
        let errors = load_errors(&format!(
            "{HEAD_IN}[fields]\nname = {{ from = \"A\" }}\n'[\"name\"]' = {{ from = \"B\" }}\n"
        ));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("one of them would be lost")),
            "{errors:?}"
        );
    }

    #[test]
    fn missing_values_pass_tables_without_a_default() {
        let m = compile(&format!(
            "{HEAD_IN}[fields]\nname = {{ from = \"N\" }}\nstatus = {{ from = \"S\", pipe = [{{ table = \"t\" }}] }}\n[tables.t]\nmap = {{ A = \"active\" }}\n"
        ));
        let out = m.apply(&json!({ "N": "a" }), &Lookups::default()).unwrap();
        assert!(out.get("status").is_none());
        assert!(
            m.apply(&json!({ "N": "a", "S": "Z" }), &Lookups::default())
                .is_err()
        );
    }
}
