//! One conflict as the engine hands it to a policy, the record the engine ends with for each
//! answer, and the same two edits met in the other arrival order.
//!
//! The final record follows `converge_core::engine::resolve` exactly: the policy's answer is
//! carried out on the server's state, and an answer the engine cannot carry out (keeping or
//! merging local values into a record deleted on the server) stays open for the user.

use std::collections::BTreeMap;

use converge_core::model::{apply_patch, diff, effective_patch};
use converge_core::wire::FieldClock;
use converge_core::{Fields, Hlc, MergeInput, Resolution, Version};
use serde::Serialize;
use serde_json::Value;

/// The HLC of the local intent when a case gives none.
pub const DEFAULT_LOCAL_HLC: &str = "1700000000000-0000-dev-a";
/// The HLC the swapped order gives the server's change when `server_meta` does not say when it
/// was written (the same instant as [`DEFAULT_LOCAL_HLC`], from device `dev-b`).
pub const DEFAULT_SERVER_HLC: &str = "1700000000000-0000-dev-b";
/// The entity when a case names none.
pub const DEFAULT_ENTITY: &str = "test";
/// The record id when a case names none.
pub const DEFAULT_RECORD_ID: &str = "r1";

/// The reason the engine keeps a conflict open when a policy keeps or merges local values into
/// a record deleted on the server (the text of `converge_core::engine::resolve`).
pub const DELETED_ON_SERVER: &str = "the record was deleted on the server; accept the deletion (the local values \
                                     stay in the journal) or create a new record";

/// A conflict: what the policy is given. An empty `local` is a local delete — that is how the
/// engine hands a delete to a policy (an update with nothing in it never conflicts).
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The entity type.
    pub entity: String,
    /// The record id.
    pub record_id: String,
    /// The server's fields the local change was made on.
    pub base: Fields,
    /// The local intent: the changed fields, `null` removing one; empty for a delete.
    pub local: Fields,
    /// The HLC of the local intent.
    pub local_hlc: Hlc,
    /// The server's fields now (empty when deleted there).
    pub server: Fields,
    /// Per server field, the version and HLC of its last change.
    pub server_meta: BTreeMap<String, FieldClock>,
    /// The server's version now.
    pub server_version: Version,
    /// Whether the server has the record deleted.
    pub server_deleted: bool,
    /// The fields the server reported in conflict.
    pub conflicting: Vec<String>,
}

/// How a conflict ends once the engine has carried out the policy's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FinalRecord {
    /// Settled: the record ends with these fields (`None`: deleted).
    Settled {
        /// The record's fields, `None` when it is deleted.
        record: Option<Fields>,
    },
    /// Left open for the user; meanwhile the record shows the server's state.
    Open {
        /// The server's fields, `None` when it has the record deleted.
        record: Option<Fields>,
        /// Why it waits for the user.
        reason: String,
    },
}

impl FinalRecord {
    /// The record's fields as they stand (`None`: deleted).
    pub fn record(&self) -> Option<&Fields> {
        match self {
            FinalRecord::Settled { record } | FinalRecord::Open { record, .. } => record.as_ref(),
        }
    }

    /// Whether the conflict waits for the user.
    pub fn is_open(&self) -> bool {
        matches!(self, FinalRecord::Open { .. })
    }

    /// Whether two arrival orders end alike: the same settled record, or both waiting for the
    /// user (who then decides; the view shows each order's server state meanwhile).
    pub fn same_end(&self, other: &FinalRecord) -> bool {
        match (self, other) {
            (FinalRecord::Settled { record: a }, FinalRecord::Settled { record: b }) => a == b,
            (FinalRecord::Open { .. }, FinalRecord::Open { .. }) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for FinalRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FinalRecord::Settled { record } => f.write_str(&record_text(record.as_ref())),
            FinalRecord::Open { record, reason } => {
                write!(f, "open for review ({reason:?}), showing the server's {}", record_text(record.as_ref()))
            }
        }
    }
}

/// A record for people: its compact JSON, or "deleted".
pub(crate) fn record_text(record: Option<&Fields>) -> String {
    match record {
        Some(fields) => Value::Object(fields.clone()).to_string(),
        None => "deleted".into(),
    }
}

impl Conflict {
    /// A conflict with the defaults of the cases format: entity `test`, record `r1`, the default
    /// local HLC, no server clocks, server version 2, not deleted, and the default conflicting
    /// fields ([`Conflict::default_conflicting`]).
    pub fn new(base: Fields, local: Fields, server: Fields) -> Conflict {
        let mut conflict = Conflict {
            entity: DEFAULT_ENTITY.into(),
            record_id: DEFAULT_RECORD_ID.into(),
            base,
            local,
            local_hlc: default_local_hlc(),
            server,
            server_meta: BTreeMap::new(),
            server_version: 2,
            server_deleted: false,
            conflicting: Vec::new(),
        };
        conflict.conflicting = conflict.default_conflicting();
        conflict
    }

    /// Whether the local intent is a delete (an empty `local`).
    pub fn local_deleted(&self) -> bool {
        self.local.is_empty()
    }

    /// The fields the server would report in conflict, as its checks do:
    /// - a local update against a live record: the keys of `local` whose server value differs
    ///   from the base value;
    /// - a local update against a record deleted on the server: every key of `local`;
    /// - a local delete: the fields the server changed since the base (none if it deleted the
    ///   record too).
    pub fn default_conflicting(&self) -> Vec<String> {
        if self.local_deleted() {
            if self.server_deleted {
                return Vec::new();
            }
            return diff(&self.base, &self.server).keys().cloned().collect();
        }
        if self.server_deleted {
            return self.local.keys().cloned().collect();
        }
        self.local.keys().filter(|k| self.server.get(*k) != self.base.get(*k)).cloned().collect()
    }

    /// The policy's input.
    pub fn input(&self) -> MergeInput<'_> {
        MergeInput {
            entity: &self.entity,
            record_id: &self.record_id,
            base: &self.base,
            local: &self.local,
            local_hlc: &self.local_hlc,
            server: &self.server,
            server_meta: &self.server_meta,
            server_version: self.server_version,
            server_deleted: self.server_deleted,
            conflicting: &self.conflicting,
        }
    }

    /// The record once the engine has carried out `resolution`, as `converge_core`'s engine does:
    /// - `NeedsReview`: open; the record shows the server's state;
    /// - `TakeServer`: the server's state (deleted if it is deleted there);
    /// - `TakeLocal` of a local delete: deleted;
    /// - `TakeLocal` or `Merged` against a record deleted on the server: open, with the engine's
    ///   reason ([`DELETED_ON_SERVER`]);
    /// - `TakeLocal`: the server's fields with the local intent applied (`null` removes);
    /// - `Merged`: exactly the merged fields (a `null` in them means "no such field").
    pub fn final_record(&self, resolution: &Resolution) -> FinalRecord {
        let server = (!self.server_deleted).then(|| self.server.clone());
        match resolution {
            Resolution::NeedsReview { reason } => FinalRecord::Open { record: server, reason: reason.clone() },
            Resolution::TakeServer => FinalRecord::Settled { record: server },
            Resolution::TakeLocal if self.local_deleted() => FinalRecord::Settled { record: None },
            Resolution::TakeLocal | Resolution::Merged { .. } if self.server_deleted => {
                FinalRecord::Open { record: None, reason: DELETED_ON_SERVER.into() }
            }
            Resolution::TakeLocal => {
                let mut fields = self.server.clone();
                apply_patch(&mut fields, &effective_patch(&self.server, &self.local));
                FinalRecord::Settled { record: Some(fields) }
            }
            Resolution::Merged { fields: merged, .. } => {
                let mut fields = self.server.clone();
                apply_patch(&mut fields, &diff(&self.server, merged));
                FinalRecord::Settled { record: Some(fields) }
            }
        }
    }

    /// The server's change: `None` for a delete, else the patch that turned the base into the
    /// server's fields.
    fn server_change(&self) -> Option<Fields> {
        (!self.server_deleted).then(|| diff(&self.base, &self.server))
    }

    /// The HLC of the server's change: the greatest `server_meta` HLC among the fields it wrote
    /// (every base field for a delete); `None` when `server_meta` names none of them.
    pub fn server_change_hlc(&self) -> Option<Hlc> {
        self.server_written().iter().filter_map(|k| self.server_meta.get(k)).map(|c| &c.hlc).max().cloned()
    }

    /// The fields the server's change wrote: those of its patch, or every base field for a delete.
    fn server_written(&self) -> Vec<String> {
        match self.server_change() {
            Some(patch) => patch.keys().cloned().collect(),
            None => self.base.keys().cloned().collect(),
        }
    }

    /// The same two edits arriving the other way round: the server's change becomes the local
    /// intent and the local intent reaches the server first.
    ///
    /// Derived as the policies' property tests do (`policies/tests/it/model.rs`):
    /// - the new local intent is the server's change (`diff(base, server)`, `null` for a removed
    ///   field), or a delete if the server deleted the record; its HLC is the greatest
    ///   `server_meta` HLC among the fields that change wrote;
    /// - the new server state is the base with the local intent applied (deleted for a local
    ///   delete), at the same server version;
    /// - the new `server_meta` is the old one without the fields the server's change wrote, plus
    ///   `{version: server_version, hlc: local_hlc}` for every field the local intent changes
    ///   (every base field for a delete, as a tombstone records it);
    /// - when `server_meta` names none of the fields the server's change wrote, its HLC is
    ///   unknown: the swapped intent gets [`DEFAULT_SERVER_HLC`] and the swapped `server_meta`
    ///   leaves the local change's fields out too, so neither order knows the other side's clock;
    /// - `conflicting` is the default for the swapped conflict ([`Conflict::default_conflicting`]).
    ///
    /// `None` when the server made no change (its fields are the base's): then the other order
    /// has no conflict at all, and the server simply takes the local intent
    /// ([`Conflict::local_taken`]).
    pub fn swapped(&self) -> Option<Conflict> {
        let change = self.server_change();
        if change.as_ref().is_some_and(Fields::is_empty) {
            return None;
        }
        let server_hlc = self.server_change_hlc();
        let mut server_meta = self.server_meta.clone();
        for k in self.server_written() {
            server_meta.remove(&k);
        }
        let (server, server_deleted, local_written): (Fields, bool, Vec<String>) = if self.local_deleted() {
            (Fields::new(), true, self.base.keys().cloned().collect())
        } else {
            let mut server = self.base.clone();
            apply_patch(&mut server, &self.local);
            (server, false, effective_patch(&self.base, &self.local).keys().cloned().collect())
        };
        if server_hlc.is_some() {
            for k in local_written {
                server_meta.insert(k, FieldClock { version: self.server_version, hlc: self.local_hlc.clone() });
            }
        }
        let mut swapped = Conflict {
            entity: self.entity.clone(),
            record_id: self.record_id.clone(),
            base: self.base.clone(),
            local: change.unwrap_or_default(),
            local_hlc: server_hlc.unwrap_or_else(default_server_hlc),
            server,
            server_meta,
            server_version: self.server_version,
            server_deleted,
            conflicting: Vec::new(),
        };
        swapped.conflicting = swapped.default_conflicting();
        Some(swapped)
    }

    /// The record when the server takes the local intent without a conflict: the base with the
    /// local intent applied, or deleted.
    pub fn local_taken(&self) -> FinalRecord {
        if self.local_deleted() {
            return FinalRecord::Settled { record: None };
        }
        let mut fields = self.base.clone();
        apply_patch(&mut fields, &self.local);
        FinalRecord::Settled { record: Some(fields) }
    }
}

/// [`DEFAULT_LOCAL_HLC`], parsed.
pub(crate) fn default_local_hlc() -> Hlc {
    DEFAULT_LOCAL_HLC.parse().expect("the default local HLC is valid")
}

fn default_server_hlc() -> Hlc {
    DEFAULT_SERVER_HLC.parse().expect("the default server HLC is valid")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    fn clock(version: Version, hlc: &str) -> FieldClock {
        FieldClock { version, hlc: hlc.parse().unwrap() }
    }

    #[test]
    fn the_final_record_follows_the_engine_for_every_answer() {
        let c = Conflict::new(
            obj(json!({"a": 1, "b": 1})),
            obj(json!({"a": 2, "b": null})),
            obj(json!({"a": 3, "b": 1, "c": 1})),
        );
        let settled = |v: Value| FinalRecord::Settled { record: Some(obj(v)) };
        assert_eq!(c.final_record(&Resolution::TakeLocal), settled(json!({"a": 2, "c": 1})));
        assert_eq!(c.final_record(&Resolution::TakeServer), settled(json!({"a": 3, "b": 1, "c": 1})));
        let merged = Resolution::Merged { fields: obj(json!({"a": 9, "x": null})), notice: String::new() };
        assert_eq!(c.final_record(&merged), settled(json!({"a": 9})), "a null in merged fields means no field");
        let review = Resolution::NeedsReview { reason: "why".into() };
        assert_eq!(
            c.final_record(&review),
            FinalRecord::Open { record: Some(obj(json!({"a": 3, "b": 1, "c": 1}))), reason: "why".into() }
        );
    }

    #[test]
    fn deletes_end_as_the_engine_carries_them_out() {
        let mut c = Conflict::new(obj(json!({"a": 1})), obj(json!({"a": 2})), Fields::new());
        c.server_deleted = true;
        assert_eq!(c.default_conflicting(), ["a"]);
        assert_eq!(c.final_record(&Resolution::TakeServer), FinalRecord::Settled { record: None });
        let open = FinalRecord::Open { record: None, reason: DELETED_ON_SERVER.into() };
        assert_eq!(c.final_record(&Resolution::TakeLocal), open);
        let merged = Resolution::Merged { fields: obj(json!({"a": 2})), notice: String::new() };
        assert_eq!(c.final_record(&merged), open);

        let here = Conflict::new(obj(json!({"a": 1, "b": 1})), Fields::new(), obj(json!({"a": 1, "b": 2})));
        assert!(here.local_deleted());
        assert_eq!(here.conflicting, ["b"], "a local delete conflicts with what the server changed");
        assert_eq!(here.final_record(&Resolution::TakeLocal), FinalRecord::Settled { record: None });
        assert_eq!(here.final_record(&merged), FinalRecord::Settled { record: Some(obj(json!({"a": 2}))) });
    }

    #[test]
    fn the_swapped_order_exchanges_the_edits_and_their_clocks() {
        let mut c = Conflict::new(
            obj(json!({"a": 1, "b": 1, "k": 0})),
            obj(json!({"a": 2, "n": true})),
            obj(json!({"a": 3, "k": 0})),
        );
        c.server_meta = [
            ("a".to_owned(), clock(2, "1700000000005-0000-dev-b")),
            ("b".to_owned(), clock(2, "1700000000004-0000-dev-b")),
            ("k".to_owned(), clock(1, "1600000000000-0000-dev-z")),
        ]
        .into_iter()
        .collect();
        let s = c.swapped().unwrap();
        assert_eq!(s.local, obj(json!({"a": 3, "b": null})));
        assert_eq!(s.local_hlc.to_string(), "1700000000005-0000-dev-b", "the latest clock of the server's change");
        assert_eq!(s.server, obj(json!({"a": 2, "b": 1, "k": 0, "n": true})));
        let meta: Vec<(&str, String)> = s.server_meta.iter().map(|(k, m)| (k.as_str(), m.hlc.to_string())).collect();
        assert_eq!(
            meta,
            [
                ("a", DEFAULT_LOCAL_HLC.to_owned()),
                ("k", "1600000000000-0000-dev-z".to_owned()),
                ("n", DEFAULT_LOCAL_HLC.to_owned())
            ]
        );
        assert_eq!(s.conflicting, ["a"], "b is back to its base value on the swapped server");
        assert_eq!(s.swapped().unwrap().local, obj(json!({"a": 2, "n": true})), "swapping twice restores the intent");

        c.server_meta.clear();
        let unknown = c.swapped().unwrap();
        assert_eq!(unknown.local_hlc.to_string(), DEFAULT_SERVER_HLC);
        assert!(unknown.server_meta.is_empty(), "neither order knows the other's clock");
    }

    #[test]
    fn swapping_deletes_and_no_change() {
        let mut c = Conflict::new(obj(json!({"a": 1})), obj(json!({"a": 2})), Fields::new());
        c.server_deleted = true;
        c.server_meta = [("a".to_owned(), clock(2, "1700000000009-0000-dev-b"))].into_iter().collect();
        let s = c.swapped().unwrap();
        assert!(s.local_deleted() && !s.server_deleted);
        assert_eq!(
            (s.local_hlc.to_string(), s.server.clone()),
            ("1700000000009-0000-dev-b".into(), obj(json!({"a": 2})))
        );
        let back = s.swapped().unwrap();
        assert!(back.server_deleted && back.server.is_empty() && back.local == obj(json!({"a": 2})));

        let unchanged = Conflict::new(obj(json!({"a": 1})), obj(json!({"a": 2})), obj(json!({"a": 1})));
        assert_eq!(unchanged.swapped(), None);
        assert_eq!(unchanged.local_taken(), FinalRecord::Settled { record: Some(obj(json!({"a": 2}))) });
    }

    #[test]
    fn two_open_ends_agree_and_open_differs_from_settled() {
        let open = |r: &str| FinalRecord::Open { record: None, reason: r.into() };
        let settled = FinalRecord::Settled { record: None };
        assert!(open("x").same_end(&open("y")));
        assert!(!open("x").same_end(&settled) && !settled.same_end(&open("x")));
        assert!(!settled.same_end(&FinalRecord::Settled { record: Some(Fields::new()) }));
        assert_eq!(settled.to_string(), "deleted");
    }
}
