//! A small checker for the examples' `cases.json` (the format the policy-test runner reads):
//! each case's expectation, and, for an order-independent policy, the same final record when
//! the two sides are swapped.

use std::collections::BTreeMap;

use converge_core::model::{apply_patch, diff};
use converge_core::wire::FieldClock;
use converge_core::{Fields, Hlc, MergeInput, MergePolicy, Resolution};
use serde_json::Value;

const DEFAULT_LOCAL_HLC: &str = "1700000000000-0000-dev-a";
const DEFAULT_SERVER_VERSION: u64 = 2;

/// One case of a `cases.json`.
pub(crate) struct Case {
    pub(crate) name: String,
    entity: String,
    base: Fields,
    local: Fields,
    server: Fields,
    local_hlc: Hlc,
    server_meta: BTreeMap<String, FieldClock>,
    server_deleted: bool,
    conflicting: Vec<String>,
    expect: Value,
}

/// A parsed `cases.json`.
pub(crate) struct Cases {
    pub(crate) policy: String,
    pub(crate) order_independent: bool,
    pub(crate) cases: Vec<Case>,
}

fn object(v: &Value, what: &str) -> Fields {
    v.as_object().cloned().unwrap_or_else(|| panic!("{what} must be a JSON object"))
}

/// Fields changed on both sides (the server's `fields` check): patched here, changed on the
/// server since the base, to another value.
fn both_changed(base: &Fields, local: &Fields, server: &Fields) -> Vec<String> {
    local.keys().filter(|k| server.get(*k) != base.get(*k) && server.get(*k) != local.get(*k)).cloned().collect()
}

pub(crate) fn parse(text: &str) -> Cases {
    let doc: Value = serde_json::from_str(text).expect("cases.json is JSON");
    let cases = doc["cases"].as_array().expect("cases is an array");
    Cases {
        policy: doc["policy"].as_str().expect("policy is a string").to_owned(),
        order_independent: doc["order_independent"].as_bool().unwrap_or(false),
        cases: cases
            .iter()
            .map(|c| {
                let name = c["name"].as_str().expect("a case has a name").to_owned();
                let (base, local, server) = (
                    object(&c["base"], &format!("{name}: base")),
                    object(&c["local"], &format!("{name}: local")),
                    object(&c["server"], &format!("{name}: server")),
                );
                let server_meta = c
                    .get("server_meta")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| {
                                let hlc = v["hlc"].as_str().expect("meta hlc").parse().expect("meta hlc is an HLC");
                                (k.clone(), FieldClock { version: v["version"].as_u64().expect("meta version"), hlc })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let conflicting = match c.get("conflicting").and_then(Value::as_array) {
                    Some(list) => list.iter().map(|v| v.as_str().expect("a field name").to_owned()).collect(),
                    None => both_changed(&base, &local, &server),
                };
                Case {
                    entity: c["entity"].as_str().expect("entity").to_owned(),
                    local_hlc: c
                        .get("local_hlc")
                        .and_then(Value::as_str)
                        .unwrap_or(DEFAULT_LOCAL_HLC)
                        .parse()
                        .expect("local_hlc is an HLC"),
                    server_deleted: c.get("server_deleted").and_then(Value::as_bool).unwrap_or(false),
                    expect: c["expect"].clone(),
                    name,
                    base,
                    local,
                    server,
                    server_meta,
                    conflicting,
                }
            })
            .collect(),
    }
}

fn resolve(policy: &dyn MergePolicy, case: &Case) -> Resolution {
    policy.resolve(&MergeInput {
        entity: &case.entity,
        record_id: "r1",
        base: &case.base,
        local: &case.local,
        local_hlc: &case.local_hlc,
        server: &case.server,
        server_meta: &case.server_meta,
        server_version: DEFAULT_SERVER_VERSION,
        server_deleted: case.server_deleted,
        conflicting: &case.conflicting,
    })
}

/// The record after the resolution, as the engine would write it (`None`: left for review).
fn record(case: &Case, resolution: &Resolution) -> Option<Fields> {
    match resolution {
        Resolution::TakeServer => Some(case.server.clone()),
        Resolution::TakeLocal => {
            let mut fields = case.server.clone();
            apply_patch(&mut fields, &case.local);
            Some(fields)
        }
        Resolution::Merged { fields, .. } => Some(fields.clone()),
        Resolution::NeedsReview { .. } => None,
    }
}

/// Checks one case; `Err` says what differs.
pub(crate) fn check(policy: &dyn MergePolicy, case: &Case, order_independent: bool) -> Result<(), String> {
    let got = resolve(policy, case);
    let ok = match &case.expect {
        Value::String(s) if s == "take_local" => got == Resolution::TakeLocal,
        Value::String(s) if s == "take_server" => got == Resolution::TakeServer,
        Value::Object(o) if o.contains_key("merged") => {
            matches!(&got, Resolution::Merged { fields, .. } if Value::Object(fields.clone()) == o["merged"])
        }
        Value::Object(o) if o.contains_key("needs_review") => match (&got, &o["needs_review"]) {
            (Resolution::NeedsReview { .. }, Value::Null) => true,
            (Resolution::NeedsReview { reason }, Value::String(part)) => reason.contains(part.as_str()),
            _ => false,
        },
        Value::Object(o) if o.contains_key("record") => {
            record(case, &got).is_some_and(|fields| Value::Object(fields) == o["record"])
        }
        other => return Err(format!("unknown expectation {other}")),
    };
    if !ok {
        return Err(format!("expected {}, got {got:?}", case.expect));
    }
    if order_independent && !case.server_deleted && !case.local.is_empty() {
        // The other order: the server has the local change, and the server's change arrives.
        let mut server = case.base.clone();
        apply_patch(&mut server, &case.local);
        let local = diff(&case.base, &case.server);
        let swapped = Case {
            name: case.name.clone(),
            entity: case.entity.clone(),
            base: case.base.clone(),
            conflicting: both_changed(&case.base, &local, &server),
            local,
            server,
            local_hlc: case.local_hlc.clone(),
            server_meta: BTreeMap::new(),
            server_deleted: false,
            expect: Value::Null,
        };
        let other = resolve(policy, &swapped);
        if record(case, &got) != record(&swapped, &other) {
            return Err(format!("not order independent: {got:?} one way, {other:?} the other"));
        }
    }
    Ok(())
}
