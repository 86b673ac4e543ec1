//! `FieldMerge`: the default policy for user text — three-way per field, a line merge for text
//! edited on both sides, otherwise the later edit by HLC.

use converge_core::model::apply_patch;
use converge_core::{CheckMode, MergeInput, MergePolicy, Resolution};
use serde_json::Value;

use crate::text::merge_lines;
use crate::{conflicting_fields, set_field};

/// Field-level merge for user text (check mode `fields`).
///
/// Every local change the server did not report in conflict is kept, and so is every server
/// change. Each field changed on both sides is settled on its own:
/// - if only one side really changed it (the other still has the base value), that side's value;
/// - if base, local and server values are all strings, a line merge ([`merge_lines`]) when the
///   edits do not touch the same or adjacent lines;
/// - otherwise (other types, overlapping edits, a removal against a change) the later edit: the
///   local value wins iff the local HLC is greater than the server field's HLC; without the
///   server field's HLC the server's value stands.
///
/// The answer is `Merged` with a "merged update" notice naming each field and how it was settled,
/// or `TakeLocal` when no field needed settling. A record deleted on the server, or deleted here
/// but changed on the server, needs the user.
///
/// For two concurrent edits of one base, the final record is the same whichever edit reached the
/// server first, and resolving again with the result as the server state changes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldMerge;

impl FieldMerge {
    /// The policy's name.
    pub const NAME: &'static str = "field_merge";
}

/// How one conflicting field was settled; `None` when the local value stands unquestioned.
fn settle_field(input: &MergeInput<'_>, field: &str, local: Option<&Value>) -> (Option<Value>, Option<&'static str>) {
    let base = input.base.get(field).filter(|v| !v.is_null());
    let server = input.server.get(field).filter(|v| !v.is_null());
    if local == server || server == base {
        return (local.cloned(), None);
    }
    if local == base {
        return (server.cloned(), Some("kept the server's edit"));
    }
    if let (Some(Value::String(b)), Some(Value::String(l)), Some(Value::String(s))) = (base, local, server)
        && let Some(merged) = merge_lines(b, l, s)
    {
        return (Some(Value::String(merged)), Some("lines merged"));
    }
    match input.server_meta.get(field) {
        Some(clock) if *input.local_hlc > clock.hlc => (local.cloned(), Some("kept the later edit")),
        Some(_) => (server.cloned(), Some("kept the later edit")),
        None => (server.cloned(), Some("kept the server's value")),
    }
}

impl MergePolicy for FieldMerge {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn check_mode(&self) -> CheckMode {
        CheckMode::Fields
    }

    fn resolve(&self, input: &MergeInput<'_>) -> Resolution {
        if input.server_deleted {
            if input.local.is_empty() {
                return Resolution::TakeServer;
            }
            return Resolution::NeedsReview {
                reason: "the record was deleted on the server; accept the deletion (the local values stay in \
                         the journal) or create a new record"
                    .into(),
            };
        }
        let conflicting = conflicting_fields(input.conflicting);
        if input.local.is_empty() && !conflicting.is_empty() {
            return Resolution::NeedsReview {
                reason: format!(
                    "the record was deleted here but changed on the server ({}); keep it or delete it again",
                    conflicting.join(", ")
                ),
            };
        }
        let mut fields = input.server.clone();
        apply_patch(&mut fields, input.local);
        let mut notes = Vec::new();
        for field in conflicting {
            let Some(local) = input.local.get(field) else { continue };
            let (value, note) = settle_field(input, field, Some(local).filter(|v| !v.is_null()));
            set_field(&mut fields, field, value);
            if let Some(note) = note {
                notes.push(format!("{field} ({note})"));
            }
        }
        if notes.is_empty() {
            return Resolution::TakeLocal;
        }
        Resolution::Merged { fields, notice: format!("merged update: {}", notes.join(", ")) }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use converge_core::wire::FieldClock;
    use converge_core::{Fields, Hlc};
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    fn hlc(millis: u64, device: &str) -> Hlc {
        Hlc { millis, counter: 0, device: device.into() }
    }

    struct Case {
        base: Fields,
        local: Fields,
        local_hlc: Hlc,
        server: Fields,
        meta: BTreeMap<String, FieldClock>,
        deleted: bool,
        conflicting: Vec<String>,
    }

    impl Case {
        fn new(base: Value, local: Value, server: Value, conflicting: &[&str]) -> Case {
            Case {
                base: obj(base),
                local: obj(local),
                local_hlc: hlc(20, "here"),
                server: obj(server),
                meta: BTreeMap::new(),
                deleted: false,
                conflicting: conflicting.iter().map(|s| s.to_string()).collect(),
            }
        }

        fn server_hlc(mut self, field: &str, millis: u64) -> Case {
            self.meta.insert(field.into(), FieldClock { version: 5, hlc: hlc(millis, "there") });
            self
        }

        fn resolve(&self) -> Resolution {
            FieldMerge.resolve(&MergeInput {
                entity: "notes",
                record_id: "r1",
                base: &self.base,
                local: &self.local,
                local_hlc: &self.local_hlc,
                server: &self.server,
                server_meta: &self.meta,
                server_version: 5,
                server_deleted: self.deleted,
                conflicting: &self.conflicting,
            })
        }
    }

    fn merged(r: Resolution) -> (Value, String) {
        match r {
            Resolution::Merged { fields, notice } => (Value::Object(fields), notice),
            other => panic!("expected a merge, got {other:?}"),
        }
    }

    #[test]
    fn text_edited_on_separate_lines_is_merged_and_other_changes_kept() {
        let case = Case::new(
            json!({"title": "t", "body": "one\ntwo\nthree\n", "tags": 1}),
            json!({"body": "ONE\ntwo\nthree\n", "pinned": true, "tags": null}),
            json!({"title": "T", "body": "one\ntwo\nTHREE\n", "tags": 1}),
            &["body"],
        )
        .server_hlc("body", 30);
        let (fields, notice) = merged(case.resolve());
        assert_eq!(fields, json!({"title": "T", "body": "ONE\ntwo\nTHREE\n", "pinned": true}));
        assert_eq!(notice, "merged update: body (lines merged)");
    }

    #[test]
    fn overlapping_text_and_other_types_go_to_the_later_edit() {
        let base = json!({"title": "a\n", "body": "x\n", "n": 1});
        let local = json!({"title": "local\n", "body": "mine\n", "n": 2});
        let server = json!({"title": "server\n", "body": "theirs\n", "n": 3});
        let case = Case::new(base, local, server, &["body", "n", "title"])
            .server_hlc("title", 10)
            .server_hlc("body", 30)
            .server_hlc("n", 10);
        let (fields, notice) = merged(case.resolve());
        assert_eq!(fields, json!({"title": "local\n", "body": "theirs\n", "n": 2}));
        assert_eq!(
            notice,
            "merged update: body (kept the later edit), n (kept the later edit), title (kept the later edit)"
        );
    }

    #[test]
    fn equal_times_are_ordered_by_device_id() {
        let mut case = Case::new(json!({"n": 1}), json!({"n": 2}), json!({"n": 3}), &["n"]).server_hlc("n", 20);
        assert_eq!(merged(case.resolve()).0, json!({"n": 3}), "\"here\" < \"there\"");
        case.local_hlc.device = "zz".into();
        assert_eq!(merged(case.resolve()).0, json!({"n": 2}));
    }

    #[test]
    fn a_server_field_without_a_clock_stands() {
        let case = Case::new(json!({"n": 1}), json!({"n": 2}), json!({"n": 3}), &["n"]);
        let (fields, notice) = merged(case.resolve());
        assert_eq!(fields, json!({"n": 3}));
        assert_eq!(notice, "merged update: n (kept the server's value)");
    }

    #[test]
    fn a_removal_against_a_change_goes_to_the_later_edit() {
        let case = Case::new(json!({"s": "a\nb\n"}), json!({"s": null}), json!({"s": "a\nc\n"}), &["s"]);
        assert_eq!(merged(case.server_hlc("s", 30).resolve()).0, json!({"s": "a\nc\n"}));
        let case = Case::new(json!({"s": "a\nb\n"}), json!({"s": null}), json!({"s": "a\nc\n"}), &["s"]);
        assert_eq!(merged(case.server_hlc("s", 10).resolve()).0, json!({}));
        let case = Case::new(json!({"s": "a\nb\n"}), json!({"s": "a\nc\n"}), json!({}), &["s"]);
        assert_eq!(merged(case.server_hlc("s", 10).resolve()).0, json!({"s": "a\nc\n"}));
    }

    #[test]
    fn a_local_value_equal_to_the_base_lets_the_server_change_stand() {
        let case = Case::new(json!({"n": 1}), json!({"n": 1}), json!({"n": 3}), &["n"]).server_hlc("n", 10);
        let (fields, notice) = merged(case.resolve());
        assert_eq!(fields, json!({"n": 3}));
        assert_eq!(notice, "merged update: n (kept the server's edit)");
    }

    #[test]
    fn nothing_to_settle_takes_local() {
        let none = Case::new(json!({"n": 1}), json!({"n": 2}), json!({"n": 1, "m": 2}), &[]);
        assert_eq!(none.resolve(), Resolution::TakeLocal);
        let same = Case::new(json!({"n": 1}), json!({"n": 2}), json!({"n": 2}), &["n"]);
        assert_eq!(same.resolve(), Resolution::TakeLocal);
        let not_local = Case::new(json!({"n": 1}), json!({"m": 2}), json!({"n": 3}), &["n"]);
        assert_eq!(not_local.resolve(), Resolution::TakeLocal);
    }

    #[test]
    fn deletions_need_the_user() {
        let mut case = Case::new(json!({"n": 1}), json!({"n": 2}), json!({}), &["n"]);
        case.deleted = true;
        let Resolution::NeedsReview { reason } = case.resolve() else { panic!("expected review") };
        assert!(reason.contains("deleted on the server"), "{reason}");
        case.local = Fields::new();
        assert_eq!(case.resolve(), Resolution::TakeServer, "deleted on both sides");

        let here = Case::new(json!({"n": 1}), json!({}), json!({"n": 3}), &["n"]);
        let Resolution::NeedsReview { reason } = here.resolve() else { panic!("expected review") };
        assert!(reason.contains("deleted here") && reason.contains('n'), "{reason}");
    }

    #[test]
    fn name_and_check_mode() {
        assert_eq!(FieldMerge.name(), "field_merge");
        assert_eq!(FieldMerge.check_mode(), CheckMode::Fields);
    }
}
