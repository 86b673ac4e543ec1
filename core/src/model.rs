//! The data model: entities, record ids, fields, operations and check modes.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A record's fields: a JSON object.
pub type Fields = serde_json::Map<String, serde_json::Value>;

/// A server record version: 0 means "not on the server", +1 per change.
pub type Version = u64;

/// The largest version or base_version the wire accepts (the largest integer JSON carries exactly).
pub const MAX_VERSION: Version = (1 << 53) - 1;

/// Reads a version: a JSON integer, or a number without a fraction (JSON does not tell `3.0` from
/// `3`, and neither does the OpenAPI document's `integer`), from 0 to [`MAX_VERSION`].
pub fn deserialize_version<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Version, D::Error> {
    use serde::de::{Unexpected, Visitor};
    struct Whole;
    impl Visitor<'_> for Whole {
        type Value = Version;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a whole number from 0 to {MAX_VERSION}")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Version, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Version, E> {
            Version::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Version, E> {
            // Every whole number up to MAX_VERSION is exact in an f64.
            if v.fract() == 0.0 && (0.0..=MAX_VERSION as f64).contains(&v) {
                Ok(v as Version)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }
    d.deserialize_u64(Whole)
}

/// What a mutation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Make a new record with the patch as its fields (base_version 0).
    Create,
    /// Change the fields in the patch; a `null` removes a field.
    Update,
    /// Delete the record (a tombstone stays on the server).
    Delete,
}

impl Op {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Op> {
        match s {
            "create" => Ok(Op::Create),
            "update" => Ok(Op::Update),
            "delete" => Ok(Op::Delete),
            _ => Err(Error::InvalidInput(format!("unknown op {s:?}"))),
        }
    }
}

/// How the server decides whether a mutation conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CheckMode {
    /// Never a conflict: each field keeps the value with the highest HLC.
    Lww,
    /// Conflict only if a patched field changed on the server since base_version to another value.
    #[default]
    Fields,
    /// Conflict on any change since base_version.
    Record,
}

impl CheckMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckMode::Fields => "fields",
            CheckMode::Record => "record",
            CheckMode::Lww => "lww",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<CheckMode> {
        match s {
            "fields" => Ok(CheckMode::Fields),
            "record" => Ok(CheckMode::Record),
            "lww" => Ok(CheckMode::Lww),
            _ => Err(Error::InvalidInput(format!("unknown check mode {s:?}"))),
        }
    }
}

/// An entity name as a regular expression (the OpenAPI document's pattern); [`validate_entity`]
/// accepts exactly these.
pub const ENTITY_PATTERN: &str = "^[A-Za-z][A-Za-z0-9_-]{0,63}$";
/// A record id as a regular expression; [`validate_record_id`] accepts exactly these.
pub const RECORD_ID_PATTERN: &str = "^[A-Za-z0-9._:-]{1,128}$";
/// The longest field name, in characters.
pub const MAX_FIELD_NAME_CHARS: usize = 256;

/// Checks an entity name: 1 to 64 characters of `a-z A-Z 0-9 _ -`, starting with a letter.
pub fn validate_entity(entity: &str) -> Result<()> {
    let ok = !entity.is_empty()
        && entity.len() <= 64
        && entity.as_bytes()[0].is_ascii_alphabetic()
        && entity.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput("an entity name is 1-64 characters of a-z A-Z 0-9 _ -, starting with a letter".into()))
    }
}

/// Checks a record id: 1 to 128 characters of `a-z A-Z 0-9 . _ : -` (a UUIDv7 fits).
pub fn validate_record_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok { Ok(()) } else { Err(Error::InvalidInput("a record id is 1-128 characters of a-z A-Z 0-9 . _ : -".into())) }
}

/// Checks the field names of a patch: each 1 to 256 characters.
pub fn validate_field_names(fields: &Fields) -> Result<()> {
    match fields.keys().find(|k| k.is_empty() || k.chars().count() > MAX_FIELD_NAME_CHARS) {
        Some(k) => Err(Error::InvalidInput(format!(
            "a field name is 1-{MAX_FIELD_NAME_CHARS} characters (got {})",
            k.chars().count()
        ))),
        None => Ok(()),
    }
}

/// A new record id: a UUIDv7, so ids made on different devices never collide and sort by time.
pub fn new_record_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Applies a patch to fields: each key is set, and a `null` removes the key.
pub fn apply_patch(fields: &mut Fields, patch: &Fields) {
    for (k, v) in patch {
        if v.is_null() {
            fields.remove(k);
        } else {
            fields.insert(k.clone(), v.clone());
        }
    }
}

/// Folds a later patch into an earlier one (the later value wins, `null`s kept).
pub fn merge_patches(earlier: &mut Fields, later: &Fields) {
    for (k, v) in later {
        earlier.insert(k.clone(), v.clone());
    }
}

/// The patch that turns `from` into `to`: changed and new keys, and `null` for removed ones.
pub fn diff(from: &Fields, to: &Fields) -> Fields {
    let mut patch = Fields::new();
    for (k, v) in to {
        if from.get(k) != Some(v) {
            patch.insert(k.clone(), v.clone());
        }
    }
    for k in from.keys() {
        if !to.contains_key(k) {
            patch.insert(k.clone(), serde_json::Value::Null);
        }
    }
    patch
}

/// Keeps only the keys of `patch` that would change `fields`.
pub fn effective_patch(fields: &Fields, patch: &Fields) -> Fields {
    patch
        .iter()
        .filter(|(k, v)| match fields.get(*k) {
            Some(cur) => cur != *v,
            None => !v.is_null(),
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What went wrong reading or writing JSON, without serde_json's own message, which quotes the
/// offending value (a record's contents, which never reach a log): `json (data) at line 1,
/// column 9`.
pub fn json_error_without_values(e: &serde_json::Error) -> String {
    let category = match e.classify() {
        serde_json::error::Category::Io => "io",
        serde_json::error::Category::Syntax => "syntax",
        serde_json::error::Category::Data => "data",
        serde_json::error::Category::Eof => "eof",
    };
    format!("json ({category}) at line {}, column {}", e.line(), e.column())
}

/// The size of fields as compact JSON, the measure of the record size limit.
pub fn json_size(fields: &Fields) -> usize {
    /// Counts the bytes written to it instead of keeping them.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, fields) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: serde_json::Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_version_is_any_whole_json_number_in_range() {
        #[derive(Debug, serde::Deserialize)]
        struct V(#[serde(deserialize_with = "deserialize_version")] Version);
        let read = |s: &str| serde_json::from_str::<V>(s).map(|v| v.0);
        assert_eq!(read("0").unwrap(), 0);
        assert_eq!(read("3.0").unwrap(), 3);
        assert_eq!(read("-0.0").unwrap(), 0);
        assert_eq!(read("9007199254740991.0").unwrap(), MAX_VERSION);
        assert_eq!(read("1e3").unwrap(), 1000);
        for bad in ["3.5", "-1", "-1.0", "1e300", "\"3\"", "null", "true"] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_errors_are_told_without_the_values() {
        let e = serde_json::from_str::<u32>("\"secret-value\"").unwrap_err();
        assert!(e.to_string().contains("secret"), "serde_json quotes it: the reason for this function");
        assert_eq!(json_error_without_values(&e), "json (data) at line 1, column 14");
    }

    #[test]
    fn json_size_is_the_length_of_the_compact_json() {
        let f = obj(json!({"a": "x\"y\n", "é": [1, 2.5, null], "n": {"deep": true}}));
        assert_eq!(json_size(&f), serde_json::to_string(&f).unwrap().len());
        assert_eq!(json_size(&Fields::new()), 2);
    }

    #[test]
    fn patches_set_remove_and_diff() {
        let mut f = obj(json!({"a": 1, "b": 2}));
        apply_patch(&mut f, &obj(json!({"a": 3, "b": null, "c": 4})));
        assert_eq!(f, obj(json!({"a": 3, "c": 4})));
        let d = diff(&obj(json!({"a": 1, "b": 2})), &obj(json!({"a": 1, "c": 5})));
        assert_eq!(d, obj(json!({"b": null, "c": 5})));
        let e = effective_patch(&obj(json!({"a": 1})), &obj(json!({"a": 1, "b": null, "c": 2})));
        assert_eq!(e, obj(json!({"c": 2})));
        let mut p = obj(json!({"a": 1, "b": 2}));
        merge_patches(&mut p, &obj(json!({"b": null})));
        assert_eq!(p, obj(json!({"a": 1, "b": null})));
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_entity("notes").is_ok());
        assert!(validate_entity("1notes").is_err());
        assert!(validate_entity("").is_err());
        assert!(validate_record_id(&new_record_id()).is_ok());
        assert!(validate_record_id("a/b").is_err());
        assert_eq!(Op::parse("create").unwrap(), Op::Create);
        assert!(CheckMode::parse("strict").is_err());
    }
}
