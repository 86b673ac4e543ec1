//! The stored form of a record's per-field metadata: the fields one write changed share one
//! entry, `[[version, "hlc", ["a", "b"]], …]`, instead of an object per field that repeats the
//! version and the HLC. Files from schema version 2 and before hold the per-field form
//! (`{"a": {"v": 1, "hlc": "…"}, …}`), which is still read.

use std::collections::BTreeMap;

use converge_core::Version;
use converge_core::check::FieldMeta;
use converge_core::hlc::Hlc;

use crate::error::Result;

/// Encodes `meta` grouped by (version, HLC), the groups in the order of their first field.
pub(crate) fn encode(meta: &BTreeMap<String, FieldMeta>) -> Result<String> {
    let mut groups: Vec<(Version, &Hlc, Vec<&str>)> = Vec::new();
    for (field, m) in meta {
        match groups.iter_mut().find(|(v, hlc, _)| *v == m.v && **hlc == m.hlc) {
            Some((_, _, fields)) => fields.push(field),
            None => groups.push((m.v, &m.hlc, vec![field])),
        }
    }
    Ok(serde_json::to_string(&groups)?)
}

/// Decodes either stored form.
pub(crate) fn decode(stored: &str) -> Result<BTreeMap<String, FieldMeta>> {
    if stored.starts_with('{') {
        return Ok(serde_json::from_str(stored)?);
    }
    let groups: Vec<(Version, Hlc, Vec<String>)> = serde_json::from_str(stored)?;
    let mut meta = BTreeMap::new();
    for (v, hlc, fields) in groups {
        for field in fields {
            meta.insert(field, FieldMeta { v, hlc: hlc.clone() });
        }
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hlc(millis: u64, device: &str) -> Hlc {
        Hlc { millis, counter: 0, device: device.into() }
    }

    #[test]
    fn fields_of_one_write_share_an_entry_and_everything_reads_back() {
        let mut meta = BTreeMap::new();
        for f in ["body", "done", "title"] {
            meta.insert(f.to_owned(), FieldMeta { v: 1, hlc: hlc(1_764_064_800_000, "d1") });
        }
        meta.insert("n".to_owned(), FieldMeta { v: 2, hlc: hlc(1_764_064_800_005, "d2") });
        // Same version, another HLC: a group of its own.
        meta.insert("z".to_owned(), FieldMeta { v: 2, hlc: hlc(1_764_064_800_006, "d2") });
        let stored = encode(&meta).unwrap();
        assert_eq!(
            stored,
            r#"[[1,"1764064800000-0000-d1",["body","done","title"]],[2,"1764064800005-0000-d2",["n"]],[2,"1764064800006-0000-d2",["z"]]]"#
        );
        assert_eq!(decode(&stored).unwrap(), meta);
        assert_eq!(decode(&encode(&BTreeMap::new()).unwrap()).unwrap(), BTreeMap::new());
    }

    #[test]
    fn the_per_field_form_of_older_files_is_read() {
        let old = r#"{"n":{"v":2,"hlc":"1764064800005-0000-d2"},"title":{"v":1,"hlc":"1764064800000-0000-d1"}}"#;
        let meta = decode(old).unwrap();
        assert_eq!(meta["n"], FieldMeta { v: 2, hlc: hlc(1_764_064_800_005, "d2") });
        assert_eq!(meta["title"], FieldMeta { v: 1, hlc: hlc(1_764_064_800_000, "d1") });
        assert_eq!(decode("{}").unwrap(), BTreeMap::new());
        assert!(decode("[[1]]").is_err(), "a malformed entry is an error, not an empty map");
    }
}
