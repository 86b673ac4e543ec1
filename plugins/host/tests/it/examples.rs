//! Each example plugin settles every case of its `cases.json`, and says who it is.

use converge_core::CheckMode;
use converge_core::MergePolicy;

use crate::cases;
use crate::support::{engine, load, repo};

fn run_cases(folder: &str, wasm: &str) {
    let engine = engine();
    let policy = load(engine, wasm);
    let path = repo().join("plugins/guests/examples").join(folder).join("cases.json");
    let cases = cases::parse(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(cases.policy, policy.name(), "cases.json names the plugin's policy");
    assert!(cases.cases.len() >= 8, "{folder}: a handful of cases");
    let failures: Vec<String> = cases
        .cases
        .iter()
        .filter_map(|case| {
            cases::check(&policy, case, cases.order_independent).err().map(|e| format!("{}: {e}", case.name))
        })
        .collect();
    assert!(failures.is_empty(), "{folder}: {} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn inventory_sums_deltas_in_every_case() {
    run_cases("inventory", "inventory");
}

#[test]
fn order_status_only_moves_forward_in_every_case() {
    run_cases("order-status", "order_status");
}

#[test]
fn text_rule_merges_tags_and_notes_in_every_case() {
    run_cases("text-rule", "text_rule");
}

#[test]
fn describe_names_each_example() {
    let engine = engine();
    for (wasm, name, entity, mode) in [
        ("inventory", "inventory", "items", CheckMode::Record),
        ("order_status", "order_status", "orders", CheckMode::Fields),
        ("text_rule", "text_rule", "notes", CheckMode::Fields),
    ] {
        let policy = load(engine, wasm);
        assert_eq!(policy.name(), name);
        assert_eq!(policy.version(), "1.0.0");
        assert_eq!(policy.entities(), [entity]);
        assert_eq!(policy.hash().len(), 64);
        assert!(policy.hash().starts_with(policy.short_hash()));
        assert_eq!(policy.check_mode(), mode, "the plugin's own check mode (fields unless it says otherwise)");
        assert_eq!(policy.with_check_mode(CheckMode::Lww).check_mode(), CheckMode::Lww, "the loader may override");
    }
}
