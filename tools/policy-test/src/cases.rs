//! The cases file: conflicts and the answers a policy should give, read from JSON. Every format
//! error names the JSON path of the value at fault.
//!
//! ```json
//! {"policy": "inventory", "order_independent": true,
//!  "cases": [{"name": "...", "entity": "items", "base": {}, "local": {}, "server": {},
//!             "local_hlc": "1700000000000-0000-dev-a",
//!             "server_meta": {"qty": {"version": 2, "hlc": "1700000000001-0000-dev-b"}},
//!             "server_deleted": false, "conflicting": ["qty"],
//!             "expect": "take_local"}]}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use converge_core::wire::FieldClock;
use converge_core::{Fields, Hlc, Version};
use serde_json::{Map, Value};

use crate::conflict::{Conflict, DEFAULT_ENTITY, DEFAULT_RECORD_ID, default_local_hlc};
use crate::error::{Error, Result};

/// A cases file: the policy it is for, whether both arrival orders must end alike, and the cases.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFile {
    /// The name of the policy the cases are written for.
    pub policy: String,
    /// Whether every case must also end with the same record when the two edits arrive the other
    /// way round ([`Conflict::swapped`]).
    pub order_independent: bool,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

/// One case: a conflict and what the policy should make of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The case's name, unique in its file.
    pub name: String,
    /// The conflict the policy is given.
    pub conflict: Conflict,
    /// What should come out.
    pub expect: Expect,
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// `"take_local"`: the policy answers `TakeLocal`.
    TakeLocal,
    /// `"take_server"`: the policy answers `TakeServer`.
    TakeServer,
    /// `{"merged": {...}}`: the policy answers `Merged` with exactly these fields (any notice).
    Merged(Fields),
    /// `{"needs_review": "text"}`: the policy answers `NeedsReview` with a reason containing the
    /// text; `{"needs_review": null}`: with any reason.
    NeedsReview(Option<String>),
    /// `{"record": {...}}`: the conflict is settled (not left for review) and the record ends with
    /// exactly these fields; `{"record": null}`: it ends deleted.
    Record(Option<Fields>),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::TakeLocal => f.write_str("take_local"),
            Expect::TakeServer => f.write_str("take_server"),
            Expect::Merged(fields) => write!(f, "merged {}", Value::Object(fields.clone())),
            Expect::NeedsReview(None) => f.write_str("needs_review"),
            Expect::NeedsReview(Some(text)) => write!(f, "needs_review with a reason containing {text:?}"),
            Expect::Record(record) => write!(f, "settled, record {}", crate::conflict::record_text(record.as_ref())),
        }
    }
}

impl CaseFile {
    /// Reads a cases file from JSON text.
    pub fn from_json(text: &str) -> Result<CaseFile> {
        let doc: Value = serde_json::from_str(text).map_err(|e| Error::Json(e.to_string()))?;
        parse_file(&doc)
    }

    /// Reads a cases file from disk; errors name the file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<CaseFile> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|io| Error::Read { path: path.to_owned(), io })?;
        CaseFile::from_json(&text).map_err(|e| Error::InFile { file: path.to_owned(), inner: Box::new(e) })
    }
}

const FILE_KEYS: &[&str] = &["policy", "order_independent", "cases"];
const CASE_KEYS: &[&str] = &[
    "name",
    "entity",
    "record_id",
    "base",
    "local",
    "local_hlc",
    "server",
    "server_meta",
    "server_version",
    "server_deleted",
    "conflicting",
    "expect",
];
const EXPECT_FORMS: &str = "\"take_local\", \"take_server\", {\"merged\": {...}}, {\"needs_review\": \"text\" or null} \
                            or {\"record\": {...} or null}";

fn invalid(path: &str, message: impl Into<String>) -> Error {
    Error::Invalid { path: path.to_owned(), message: message.into() }
}

/// `path.key`, or `path["key"]` for a key that is not a plain identifier.
fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain { format!("{path}.{key}") } else { format!("{path}[{}]", Value::String(key.to_owned())) }
}

/// A short description of a JSON value's type, for "expected X, found Y".
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object<'a>(v: &'a Value, path: &str, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| invalid(path, format!("expected {what} (a JSON object), found {}", kind(v))))
}

fn only_keys(obj: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<()> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(&join(path, k), format!("unknown key; the keys here are: {}", allowed.join(", ")))),
        None => Ok(()),
    }
}

fn string(obj: &Map<String, Value>, path: &str, key: &str) -> Result<Option<String>> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(invalid(&join(path, key), "must not be empty")),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(&join(path, key), format!("expected a string, found {}", kind(other)))),
    }
}

fn required<T>(value: Option<T>, path: &str, key: &str) -> Result<T> {
    value.ok_or_else(|| invalid(path, format!("missing key {key:?}")))
}

fn boolean(obj: &Map<String, Value>, path: &str, key: &str) -> Result<bool> {
    match obj.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(invalid(&join(path, key), format!("expected true or false, found {}", kind(other)))),
    }
}

/// A record's fields: an object without `null` values (a stored record has no null fields).
fn record(v: &Value, path: &str) -> Result<Fields> {
    let fields = object(v, path, "a record's fields")?;
    if let Some(k) = fields.iter().find(|(_, v)| v.is_null()).map(|(k, _)| k) {
        return Err(invalid(&join(path, k), "a record has no null fields (null only removes a field in `local`)"));
    }
    Ok(fields.clone())
}

fn version(v: &Value, path: &str) -> Result<Version> {
    match v.as_u64() {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(invalid(path, format!("expected a version, a whole number from 1, found {v}"))),
    }
}

fn hlc(v: &Value, path: &str) -> Result<Hlc> {
    let Value::String(s) = v else {
        return Err(invalid(path, format!("expected an HLC string, found {}", kind(v))));
    };
    s.parse().map_err(|_| {
        invalid(
            path,
            format!(
                "{s:?} is not an HLC: write <13-digit unix ms>-<4 lowercase hex counter>-<device id>, e.g. \
                 \"1700000000000-0000-dev-a\""
            ),
        )
    })
}

fn parse_file(doc: &Value) -> Result<CaseFile> {
    let root = object(doc, "$", "a cases file")?;
    only_keys(root, "$", FILE_KEYS)?;
    let policy = required(string(root, "$", "policy")?, "$", "policy")?;
    let order_independent = boolean(root, "$", "order_independent")?;
    let cases_path = join("$", "cases");
    let list = match required(root.get("cases"), "$", "cases")? {
        Value::Array(list) if list.is_empty() => return Err(invalid(&cases_path, "no cases: give at least one")),
        Value::Array(list) => list,
        other => return Err(invalid(&cases_path, format!("expected an array of cases, found {}", kind(other)))),
    };
    let mut cases: Vec<Case> = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let path = format!("{cases_path}[{i}]");
        let case = parse_case(v, &path)?;
        if let Some(j) = cases.iter().position(|c| c.name == case.name) {
            return Err(invalid(&join(&path, "name"), format!("{:?} is also the name of $.cases[{j}]", case.name)));
        }
        cases.push(case);
    }
    Ok(CaseFile { policy, order_independent, cases })
}

fn parse_case(v: &Value, path: &str) -> Result<Case> {
    let c = object(v, path, "a case")?;
    only_keys(c, path, CASE_KEYS)?;
    let name = required(string(c, path, "name")?, path, "name")?;
    let server_deleted = boolean(c, path, "server_deleted")?;
    let base = record(required(c.get("base"), path, "base")?, &join(path, "base"))?;
    let local_path = join(path, "local");
    let local = object(required(c.get("local"), path, "local")?, &local_path, "the local intent")?.clone();
    let server_path = join(path, "server");
    let server = match c.get("server") {
        None if server_deleted => Fields::new(),
        None => return Err(invalid(path, "missing key \"server\" (it may be left out when server_deleted is true)")),
        Some(v) => record(v, &server_path)?,
    };
    if server_deleted && !server.is_empty() {
        return Err(invalid(&server_path, "a record deleted on the server has no fields: give {} or leave it out"));
    }
    let local_hlc = match c.get("local_hlc") {
        None => default_local_hlc(),
        Some(v) => hlc(v, &join(path, "local_hlc"))?,
    };
    let server_meta = match c.get("server_meta") {
        None => BTreeMap::new(),
        Some(v) => meta(v, &join(path, "server_meta"))?,
    };
    let latest = server_meta.values().map(|m| m.version).max().unwrap_or(0);
    let server_version = match c.get("server_version") {
        None => latest.max(2),
        Some(v) => {
            let at = join(path, "server_version");
            let n = version(v, &at)?;
            if n < latest {
                return Err(invalid(&at, format!("{n} is older than a change in server_meta (version {latest})")));
            }
            n
        }
    };
    let mut conflict = Conflict {
        entity: string(c, path, "entity")?.unwrap_or_else(|| DEFAULT_ENTITY.into()),
        record_id: string(c, path, "record_id")?.unwrap_or_else(|| DEFAULT_RECORD_ID.into()),
        base,
        local,
        local_hlc,
        server,
        server_meta,
        server_version,
        server_deleted,
        conflicting: Vec::new(),
    };
    conflict.conflicting = match c.get("conflicting") {
        None => conflict.default_conflicting(),
        Some(v) => field_names(v, &join(path, "conflicting"))?,
    };
    let expect = parse_expect(required(c.get("expect"), path, "expect")?, &join(path, "expect"))?;
    Ok(Case { name, conflict, expect })
}

fn meta(v: &Value, path: &str) -> Result<BTreeMap<String, FieldClock>> {
    let mut out = BTreeMap::new();
    for (field, clock) in object(v, path, "per field, {\"version\": N, \"hlc\": \"...\"}")? {
        let at = join(path, field);
        let clock_obj = object(clock, &at, "{\"version\": N, \"hlc\": \"...\"}")?;
        only_keys(clock_obj, &at, &["version", "hlc"])?;
        let version = version(required(clock_obj.get("version"), &at, "version")?, &join(&at, "version"))?;
        let hlc = hlc(required(clock_obj.get("hlc"), &at, "hlc")?, &join(&at, "hlc"))?;
        out.insert(field.clone(), FieldClock { version, hlc });
    }
    Ok(out)
}

fn field_names(v: &Value, path: &str) -> Result<Vec<String>> {
    let Value::Array(list) = v else {
        return Err(invalid(path, format!("expected an array of field names, found {}", kind(v))));
    };
    list.iter()
        .enumerate()
        .map(|(i, name)| match name {
            Value::String(s) => Ok(s.clone()),
            other => Err(invalid(&format!("{path}[{i}]"), format!("expected a field name, found {}", kind(other)))),
        })
        .collect()
}

fn parse_expect(v: &Value, path: &str) -> Result<Expect> {
    let wrong = |found: String| invalid(path, format!("expected {EXPECT_FORMS}, found {found}"));
    match v {
        Value::String(s) if s == "take_local" => Ok(Expect::TakeLocal),
        Value::String(s) if s == "take_server" => Ok(Expect::TakeServer),
        Value::String(s) => Err(wrong(format!("{s:?}"))),
        Value::Object(obj) if obj.len() == 1 => {
            let (key, value) = obj.iter().next().expect("one entry");
            let at = join(path, key);
            match (key.as_str(), value) {
                ("merged", v) => Ok(Expect::Merged(object(v, &at, "the merged fields")?.clone())),
                ("needs_review", Value::Null) => Ok(Expect::NeedsReview(None)),
                ("needs_review", Value::String(s)) => Ok(Expect::NeedsReview(Some(s.clone()))),
                ("needs_review", other) => {
                    Err(invalid(&at, format!("expected a text the reason contains, or null, found {}", kind(other))))
                }
                ("record", Value::Null) => Ok(Expect::Record(None)),
                ("record", v) => Ok(Expect::Record(Some(record(v, &at)?))),
                _ => Err(wrong(format!("an object with key {key:?}"))),
            }
        }
        other => Err(wrong(match other {
            Value::Object(obj) => format!("an object with {} keys", obj.len()),
            other => kind(other).to_owned(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn file(case: Value) -> String {
        json!({"policy": "p", "cases": [case]}).to_string()
    }

    fn error(text: &str) -> String {
        CaseFile::from_json(text).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_case_gets_the_documented_defaults() {
        let f = CaseFile::from_json(&file(json!({
            "name": "n", "base": {"a": 1, "b": 1}, "local": {"a": 2, "b": 3, "c": 1}, "server": {"a": 5, "b": 1},
            "expect": "take_local"
        })))
        .unwrap();
        assert_eq!((f.policy.as_str(), f.order_independent), ("p", false));
        let c = &f.cases[0].conflict;
        assert_eq!((c.entity.as_str(), c.record_id.as_str()), ("test", "r1"));
        assert_eq!(c.local_hlc.to_string(), "1700000000000-0000-dev-a");
        assert!(c.server_meta.is_empty() && !c.server_deleted);
        assert_eq!(c.server_version, 2);
        assert_eq!(c.conflicting, ["a"], "the local keys whose server value differs from the base");
        assert_eq!(f.cases[0].expect, Expect::TakeLocal);
    }

    #[test]
    fn every_key_is_read() {
        let f = CaseFile::from_json(
            &json!({"policy": "inventory", "order_independent": true, "cases": [{
                "name": "all", "entity": "items", "record_id": "i9", "base": {"q": 1}, "local": {"q": null},
                "local_hlc": "1700000000000-00af-phone", "server_meta": {"q": {"version": 7, "hlc": "1700000000001-0000-web"}},
                "server_version": 8, "server_deleted": true, "conflicting": ["q", "z"],
                "expect": {"needs_review": "gone"}
            }]})
            .to_string(),
        )
        .unwrap();
        assert!(f.order_independent);
        let c = &f.cases[0].conflict;
        assert_eq!((c.entity.as_str(), c.record_id.as_str(), c.server_version), ("items", "i9", 8));
        assert_eq!((c.local_hlc.counter, c.local_hlc.device.as_str()), (0xaf, "phone"));
        assert_eq!(c.server_meta["q"].version, 7);
        assert!(c.server_deleted && c.server.is_empty());
        assert_eq!(c.conflicting, ["q", "z"]);
        assert_eq!(f.cases[0].expect, Expect::NeedsReview(Some("gone".into())));
    }

    #[test]
    fn every_form_of_expect_is_read() {
        let read = |expect: Value| {
            let case = json!({"name": "n", "base": {}, "local": {"a": 1}, "server": {}, "expect": expect});
            CaseFile::from_json(&file(case)).map(|f| f.cases[0].expect.clone())
        };
        assert_eq!(read(json!("take_server")).unwrap(), Expect::TakeServer);
        assert_eq!(
            read(json!({"merged": {"a": 1}})).unwrap(),
            Expect::Merged(json!({"a": 1}).as_object().unwrap().clone())
        );
        assert_eq!(read(json!({"needs_review": null})).unwrap(), Expect::NeedsReview(None));
        assert_eq!(read(json!({"record": null})).unwrap(), Expect::Record(None));
        assert_eq!(
            read(json!({"record": {"a": 1}})).unwrap(),
            Expect::Record(Some(json!({"a": 1}).as_object().unwrap().clone()))
        );
        let bad = read(json!("take_both")).unwrap_err().to_string();
        assert!(
            bad.starts_with("$.cases[0].expect: expected \"take_local\"") && bad.contains("\"take_both\""),
            "{bad}"
        );
        let bad = read(json!({"merged": {}, "record": {}})).unwrap_err().to_string();
        assert!(bad.contains("an object with 2 keys"), "{bad}");
        let bad = read(json!({"record": {"a": null}})).unwrap_err().to_string();
        assert!(bad.starts_with("$.cases[0].expect.record.a: a record has no null fields"), "{bad}");
    }

    #[test]
    fn errors_name_the_json_path() {
        let base = json!({"name": "n", "base": {}, "local": {}, "server": {}, "expect": "take_local"});
        let with = |key: &str, v: Value| {
            let mut case = base.clone();
            case[key] = v;
            error(&file(case))
        };
        let e = with("local_hlc", json!("yesterday"));
        assert!(e.starts_with("$.cases[0].local_hlc: \"yesterday\" is not an HLC"), "{e}");
        let e = with("server_meta", json!({"my field": {"version": 0, "hlc": "1700000000000-0000-x"}}));
        assert!(e.starts_with("$.cases[0].server_meta[\"my field\"].version: expected a version"), "{e}");
        let e = with("server_meta", json!({"a": {"version": 2, "hlc": "1700000000000-0000-x", "when": 1}}));
        assert!(e.starts_with("$.cases[0].server_meta.a.when: unknown key"), "{e}");
        let e = with("conflicting", json!(["a", 3]));
        assert!(e.starts_with("$.cases[0].conflicting[1]: expected a field name, found a number"), "{e}");
        let e = with("server_deleted", json!("yes"));
        assert!(e.starts_with("$.cases[0].server_deleted: expected true or false, found a string"), "{e}");
        let e = with("servr", json!({}));
        assert!(e.starts_with("$.cases[0].servr: unknown key; the keys here are: name,"), "{e}");
        let e = with("base", json!([1]));
        assert!(e.starts_with("$.cases[0].base: expected a record's fields (a JSON object), found an array"), "{e}");
        let e = with("server_version", json!(0));
        assert!(e.starts_with("$.cases[0].server_version: expected a version, a whole number from 1, found 0"), "{e}");
    }

    #[test]
    fn file_level_mistakes_are_reported() {
        assert!(error("{\"policy\": ").starts_with("not valid JSON: EOF while parsing"), "{}", error("{"));
        assert_eq!(error("[]"), "$: expected a cases file (a JSON object), found an array");
        assert_eq!(error(r#"{"cases": []}"#), "$: missing key \"policy\"");
        assert_eq!(error(r#"{"policy": "p", "cases": []}"#), "$.cases: no cases: give at least one");
        assert_eq!(error(r#"{"policy": "p", "cases": {}}"#), "$.cases: expected an array of cases, found an object");
        let e = error(r#"{"policy": "p", "order_independent": 1, "cases": [1]}"#);
        assert_eq!(e, "$.order_independent: expected true or false, found a number");
        assert_eq!(
            error(r#"{"policy": "p", "cases": [1]}"#),
            "$.cases[0]: expected a case (a JSON object), found a number"
        );
        let case = json!({"name": "same", "base": {}, "local": {}, "server": {}, "expect": "take_local"});
        let e = error(&json!({"policy": "p", "cases": [case, case]}).to_string());
        assert_eq!(e, "$.cases[1].name: \"same\" is also the name of $.cases[0]");
        let e = error(&file(json!({"name": "n", "base": {}, "local": {}, "expect": "take_local"})));
        assert!(e.starts_with("$.cases[0]: missing key \"server\""), "{e}");
    }

    #[test]
    fn a_server_deleted_case_needs_no_server_fields_and_refuses_some() {
        let case = |server: Option<Value>| {
            let mut c = json!({"name": "n", "base": {"a": 1}, "local": {"a": 2}, "server_deleted": true, "expect": "take_server"});
            if let Some(s) = server {
                c["server"] = s;
            }
            CaseFile::from_json(&file(c))
        };
        assert!(case(None).unwrap().cases[0].conflict.server.is_empty());
        assert!(case(Some(json!({}))).is_ok());
        let e = case(Some(json!({"a": 1}))).unwrap_err().to_string();
        assert!(e.starts_with("$.cases[0].server: a record deleted on the server has no fields"), "{e}");
    }

    #[test]
    fn the_server_version_follows_the_clocks() {
        let case = |extra: Value| {
            let mut c =
                json!({"name": "n", "base": {"a": 1}, "local": {"a": 2}, "server": {"a": 3}, "expect": "take_server"});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            CaseFile::from_json(&file(c)).map(|f| f.cases[0].conflict.server_version)
        };
        let meta = json!({"a": {"version": 5, "hlc": "1700000000000-0000-x"}});
        assert_eq!(case(json!({"server_meta": meta})).unwrap(), 5);
        assert_eq!(case(json!({"server_meta": meta, "server_version": 9})).unwrap(), 9);
        let e = case(json!({"server_meta": meta, "server_version": 4})).unwrap_err().to_string();
        assert_eq!(e, "$.cases[0].server_version: 4 is older than a change in server_meta (version 5)");
    }
}
