//! `LastWriterWins`: each field keeps the value of its latest write, by HLC — for toggles,
//! statuses and other values where a merge means nothing.

use converge_core::{CheckMode, MergeInput, MergePolicy, Resolution};

use crate::set_field;

/// Last-writer-wins per field (check mode `lww`).
///
/// With the `lww` check the server itself keeps the latest write per field and never reports a
/// conflict for an update, so this policy runs when the server still answers with one (a record
/// deleted on the server, or a stricter check pinned by the server for the entity type). It
/// decides exactly as the server's `lww` check would:
/// - a local field (carrying the local HLC) replaces the server's value iff the server has no
///   HLC for that field or the local HLC is greater; HLCs order by time, counter, then device
///   id, so two devices never tie;
/// - a local delete (an empty local intent) stands iff it is later than every server field;
/// - a record deleted on the server stays deleted (`TakeServer`; the local values go to the
///   journal).
///
/// The answer is `TakeLocal` when every local change wins, `TakeServer` when none does, and
/// otherwise `Merged` with the per-field result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastWriterWins;

impl LastWriterWins {
    /// The policy's name.
    pub const NAME: &'static str = "lww";
}

impl MergePolicy for LastWriterWins {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn check_mode(&self) -> CheckMode {
        CheckMode::Lww
    }

    fn resolve(&self, input: &MergeInput<'_>) -> Resolution {
        if input.server_deleted {
            return Resolution::TakeServer;
        }
        let later = |field: &str| input.server_meta.get(field).is_none_or(|clock| *input.local_hlc > clock.hlc);
        if input.local.is_empty() {
            let delete_is_latest = input.server_meta.values().all(|clock| *input.local_hlc > clock.hlc);
            return if delete_is_latest { Resolution::TakeLocal } else { Resolution::TakeServer };
        }
        let mut fields = input.server.clone();
        let (mut won, mut lost) = (Vec::new(), Vec::new());
        for (field, value) in input.local {
            let value = Some(value).filter(|v| !v.is_null());
            if input.server.get(field).filter(|v| !v.is_null()) == value {
                continue;
            }
            if later(field) {
                set_field(&mut fields, field, value.cloned());
                won.push(field.as_str());
            } else {
                lost.push(field.as_str());
            }
        }
        match (won.is_empty(), lost.is_empty()) {
            (true, _) => Resolution::TakeServer,
            (false, true) => Resolution::TakeLocal,
            (false, false) => Resolution::Merged {
                fields,
                notice: format!(
                    "merged update: latest value kept per field; from this device: {}; from the server: {}",
                    won.join(", "),
                    lost.join(", ")
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use converge_core::wire::FieldClock;
    use converge_core::{Fields, Hlc};
    use serde_json::{Value, json};

    use super::*;

    fn obj(v: Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    fn clock(millis: u64, device: &str) -> FieldClock {
        FieldClock { version: 3, hlc: Hlc { millis, counter: 0, device: device.into() } }
    }

    fn resolve(local: Value, server: Value, meta: &[(&str, u64, &str)], deleted: bool) -> Resolution {
        let base = obj(json!({"done": false, "status": "open"}));
        let (local, server) = (obj(local), obj(server));
        let meta: BTreeMap<String, FieldClock> = meta.iter().map(|(k, m, d)| (k.to_string(), clock(*m, d))).collect();
        let local_hlc = Hlc { millis: 20, counter: 0, device: "b".into() };
        LastWriterWins.resolve(&MergeInput {
            entity: "tasks",
            record_id: "r1",
            base: &base,
            local: &local,
            local_hlc: &local_hlc,
            server: &server,
            server_meta: &meta,
            server_version: 3,
            server_deleted: deleted,
            conflicting: &["done".to_string()],
        })
    }

    #[test]
    fn each_field_keeps_its_latest_write() {
        let r = resolve(
            json!({"done": true, "status": "closed", "note": null}),
            json!({"done": false, "status": "review", "note": "x"}),
            &[("done", 10, "a"), ("status", 30, "a"), ("note", 20, "a")],
            false,
        );
        let Resolution::Merged { fields, notice } = r else { panic!("expected a merge, got {r:?}") };
        assert_eq!(Value::Object(fields), json!({"done": true, "status": "review"}));
        assert!(notice.contains("this device: done, note") && notice.contains("server: status"), "{notice}");
    }

    #[test]
    fn one_side_winning_everything_takes_that_side() {
        let meta = [("done", 10, "a"), ("status", 10, "a")];
        assert_eq!(resolve(json!({"done": true}), json!({"done": false}), &meta, false), Resolution::TakeLocal);
        let meta = [("done", 30, "a")];
        assert_eq!(resolve(json!({"done": true}), json!({"done": false}), &meta, false), Resolution::TakeServer);
        assert_eq!(resolve(json!({"done": true}), json!({"done": true}), &meta, false), Resolution::TakeServer);
        assert_eq!(resolve(json!({"done": true}), json!({}), &[], false), Resolution::TakeLocal, "no clock");
    }

    #[test]
    fn equal_times_are_ordered_by_device_id() {
        let r = resolve(json!({"done": true}), json!({"done": false}), &[("done", 20, "a")], false);
        assert_eq!(r, Resolution::TakeLocal, "\"b\" > \"a\"");
        let r = resolve(json!({"done": true}), json!({"done": false}), &[("done", 20, "c")], false);
        assert_eq!(r, Resolution::TakeServer);
    }

    #[test]
    fn a_server_delete_stands_and_a_local_delete_needs_to_be_latest() {
        assert_eq!(resolve(json!({"done": true}), json!({}), &[("done", 10, "a")], true), Resolution::TakeServer);
        let meta = [("done", 10, "a"), ("status", 19, "z")];
        assert_eq!(resolve(json!({}), json!({"done": false}), &meta, false), Resolution::TakeLocal);
        let meta = [("done", 10, "a"), ("status", 21, "a")];
        assert_eq!(resolve(json!({}), json!({"done": false}), &meta, false), Resolution::TakeServer);
    }

    #[test]
    fn name_and_check_mode() {
        assert_eq!(LastWriterWins.name(), "lww");
        assert_eq!(LastWriterWins.check_mode(), CheckMode::Lww);
    }
}
