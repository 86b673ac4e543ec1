//! The model the properties run on: random records and concurrent edits, and a server that
//! applies, checks and reports them the way `converge_core::check` does.

use std::collections::BTreeMap;

use converge_core::model::{apply_patch, diff};
use converge_core::wire::FieldClock;
use converge_core::{Fields, Hlc, MergeInput, MergePolicy, Resolution, Version};
use proptest::prelude::*;
use serde_json::{Value, json};

/// The field names records use.
pub(crate) const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];
/// The server version both concurrent edits were made on.
pub(crate) const BASE_VERSION: Version = 3;

/// A record's state on the server: fields, per-field clocks (kept for removed fields), version.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Server {
    pub(crate) fields: Fields,
    pub(crate) meta: BTreeMap<String, FieldClock>,
    pub(crate) version: Version,
}

impl Server {
    /// Applies a patch like the server: only keys whose value changes are written and get the
    /// write's clock; the version goes up if anything changed.
    pub(crate) fn apply(&mut self, patch: &Fields, hlc: &Hlc) {
        let next = self.version + 1;
        let mut changed = false;
        for (k, v) in patch {
            let differs = match self.fields.get(k) {
                Some(cur) => cur != v,
                None => !v.is_null(),
            };
            if differs {
                changed = true;
                self.meta.insert(k.clone(), FieldClock { version: next, hlc: hlc.clone() });
            }
        }
        apply_patch(&mut self.fields, patch);
        if changed {
            self.version = next;
        }
    }

    /// The `fields` check: patched keys changed on the server after `base_version` to a value
    /// other than the patch's, sorted.
    pub(crate) fn conflicting(&self, patch: &Fields, base_version: Version) -> Vec<String> {
        patch
            .iter()
            .filter(|(k, v)| {
                self.meta.get(*k).is_some_and(|m| m.version > base_version)
                    && self.fields.get(*k).unwrap_or(&Value::Null) != *v
            })
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// A base record and two concurrent edits of it, from devices "a" and "c".
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) base: Server,
    pub(crate) a: Fields,
    pub(crate) hlc_a: Hlc,
    pub(crate) c: Fields,
    pub(crate) hlc_c: Hlc,
}

/// One device's conflict: what its policy is given.
#[derive(Debug, Clone)]
pub(crate) struct Conflict {
    pub(crate) base: Fields,
    pub(crate) local: Fields,
    pub(crate) local_hlc: Hlc,
    pub(crate) server: Server,
    pub(crate) conflicting: Vec<String>,
}

impl Conflict {
    /// The device holding `local` finds `server`, which took the other edit first.
    pub(crate) fn new(base: &Server, local: &Fields, local_hlc: &Hlc, server: Server) -> Conflict {
        Conflict {
            base: base.fields.clone(),
            local: local.clone(),
            local_hlc: local_hlc.clone(),
            conflicting: server.conflicting(local, base.version),
            server,
        }
    }

    /// The policy's answer.
    pub(crate) fn resolve(&self, policy: &dyn MergePolicy) -> Resolution {
        policy.resolve(&MergeInput {
            entity: "notes",
            record_id: "r1",
            base: &self.base,
            local: &self.local,
            local_hlc: &self.local_hlc,
            server: &self.server.fields,
            server_meta: &self.server.meta,
            server_version: self.server.version,
            server_deleted: false,
            conflicting: &self.conflicting,
        })
    }

    /// The record once the engine has carried out `resolution` and the server took it; `None`
    /// while it waits for the user.
    pub(crate) fn outcome(&self, resolution: &Resolution) -> Option<Fields> {
        match resolution {
            Resolution::TakeLocal => {
                let mut fields = self.server.fields.clone();
                apply_patch(&mut fields, &self.local);
                Some(fields)
            }
            Resolution::TakeServer => Some(self.server.fields.clone()),
            Resolution::Merged { fields, .. } => Some(fields.clone()),
            Resolution::NeedsReview { .. } => None,
        }
    }

    /// The same conflict met again with `result` as the server's state, `meta` unchanged.
    pub(crate) fn again_same_clocks(&self, result: &Fields) -> Conflict {
        let server = Server { fields: result.clone(), ..self.server.clone() };
        Conflict { server, ..self.clone() }
    }

    /// The same conflict met again after the device wrote `result` as a new op: the server took
    /// the changed fields with a later clock of the device, and reports conflicts afresh.
    pub(crate) fn again_after_write(&self, result: &Fields, base_version: Version) -> Conflict {
        let mut server = self.server.clone();
        let later = Hlc { millis: self.local_hlc.millis + 1000, counter: 0, device: self.local_hlc.device.clone() };
        server.apply(&diff(&self.server.fields, result), &later);
        Conflict {
            conflicting: server.conflicting(&self.local, base_version),
            server,
            base: self.base.clone(),
            local: self.local.clone(),
            local_hlc: self.local_hlc.clone(),
        }
    }
}

impl Scenario {
    /// `first` reaches the server, then `second`'s device settles its conflict with it.
    pub(crate) fn conflict(&self, first: (&Fields, &Hlc), second: (&Fields, &Hlc)) -> Conflict {
        let mut server = self.base.clone();
        server.apply(first.0, first.1);
        Conflict::new(&self.base, second.0, second.1, server)
    }

    /// Edit A first, C's device merges.
    pub(crate) fn a_first(&self) -> Conflict {
        self.conflict((&self.a, &self.hlc_a), (&self.c, &self.hlc_c))
    }

    /// Edit C first, A's device merges.
    pub(crate) fn c_first(&self) -> Conflict {
        self.conflict((&self.c, &self.hlc_c), (&self.a, &self.hlc_a))
    }

    /// The scenario with both edits reduced to the keys they really change.
    pub(crate) fn effective(&self) -> Scenario {
        let only_changes = |patch: &Fields| -> Fields {
            patch
                .iter()
                .filter(|(k, v)| self.base.fields.get(*k).unwrap_or(&Value::Null) != *v)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        Scenario { a: only_changes(&self.a), c: only_changes(&self.c), ..self.clone() }
    }
}

/// A line-based text of `lines` lines from a 4-letter alphabet, maybe without a final newline.
fn text(lines: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    (proptest::collection::vec(0usize..4, lines), any::<bool>()).prop_map(|(lines, last_newline)| {
        let mut s: String = lines.iter().map(|i| format!("{}\n", ["a", "b", "c", "d"][*i])).collect();
        if !last_newline {
            s.pop();
        }
        s
    })
}

/// One or two line edits (remove, replace, insert) of `base`.
fn edited(base: String) -> impl Strategy<Value = String> {
    proptest::collection::vec((0u8..3, any::<prop::sample::Index>(), 0usize..4), 1..3).prop_map(move |edits| {
        let mut lines: Vec<String> = base.split_inclusive('\n').map(str::to_owned).collect();
        for (op, at, letter) in edits {
            let new = format!("{}\n", ["x", "y", "a", "b"][letter]);
            match op {
                0 if !lines.is_empty() => {
                    lines.remove(at.index(lines.len()));
                }
                1 if !lines.is_empty() => {
                    let i = at.index(lines.len());
                    lines[i] = new;
                }
                _ => lines.insert(at.index(lines.len() + 1), new),
            }
        }
        lines.concat()
    })
}

/// A field value: text (most often), a small number or a bool.
pub(crate) fn value() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => text(0..10).prop_map(Value::String),
        1 => (-2i64..3).prop_map(|n| json!(n)),
        1 => any::<bool>().prop_map(Value::Bool),
    ]
    .boxed()
}

/// A patch entry for a field whose base value is `base`: mostly a real change (a line edit for
/// text), sometimes a removal or a write of the base value itself.
fn change(base: Option<Value>) -> BoxedStrategy<Value> {
    match base {
        Some(Value::String(s)) => prop_oneof![
            6 => edited(s.clone()).prop_map(Value::String),
            1 => value(),
            1 => Just(Value::Null),
            1 => Just(Value::String(s)),
        ]
        .boxed(),
        Some(v) => prop_oneof![3 => value(), 1 => Just(Value::Null), 1 => Just(v)].boxed(),
        None => prop_oneof![4 => value(), 1 => Just(Value::Null)].boxed(),
    }
}

/// A patch of `base`: each key changed with probability ~1/2.
fn patch(base: &Fields) -> BoxedStrategy<Fields> {
    let entries: Vec<_> = KEYS.iter().map(|k| proptest::option::of(change(base.get(*k).cloned()))).collect();
    entries
        .prop_map(|values| {
            KEYS.iter().zip(values).filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect::<Fields>()
        })
        .boxed()
}

/// An HLC of `device` in a narrow window, so equal times and counters are common.
fn hlc(device: &'static str) -> impl Strategy<Value = Hlc> {
    (50u64..53, 0u16..2).prop_map(move |(millis, counter)| Hlc { millis, counter, device: device.into() })
}

/// The base record on the server: random fields, and clocks older than both edits (the
/// devices saw them) for some of the keys, removed ones included.
fn base() -> impl Strategy<Value = Server> {
    let fields = proptest::collection::vec(proptest::option::of(value()), KEYS.len());
    let clocks = proptest::collection::vec(proptest::option::weighted(0.8, (0u64..50, 1..=BASE_VERSION)), KEYS.len());
    (fields, clocks).prop_map(|(values, clocks)| {
        let fields = KEYS.iter().zip(values).filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect();
        let meta = KEYS
            .iter()
            .zip(clocks)
            .filter_map(|(k, c)| c.map(|(millis, version)| (k, millis, version)))
            .map(|(k, millis, version)| {
                (k.to_string(), FieldClock { version, hlc: Hlc { millis, counter: 0, device: "b".into() } })
            })
            .collect();
        Server { fields, meta, version: BASE_VERSION }
    })
}

/// A base record and two concurrent edits of it.
pub(crate) fn scenario() -> impl Strategy<Value = Scenario> {
    base().prop_flat_map(|base| {
        let (a, c) = (patch(&base.fields), patch(&base.fields));
        (Just(base), a, hlc("a"), c, hlc("c")).prop_map(|(base, a, hlc_a, c, hlc_c)| Scenario {
            base,
            a,
            hlc_a,
            c,
            hlc_c,
        })
    })
}

/// One text field edited line by line on both sides: the case where line merges happen.
pub(crate) fn text_scenario() -> impl Strategy<Value = Scenario> {
    (text(2..10), 0u64..50).prop_flat_map(|(text, millis)| {
        let clock = FieldClock { version: BASE_VERSION, hlc: Hlc { millis, counter: 0, device: "b".into() } };
        let base = Server {
            fields: [("t".to_owned(), Value::String(text.clone()))].into_iter().collect(),
            meta: [("t".to_owned(), clock)].into_iter().collect(),
            version: BASE_VERSION,
        };
        let one = |t: String| [("t".to_owned(), Value::String(t))].into_iter().collect::<Fields>();
        (Just(base), edited(text.clone()).prop_map(one), hlc("a"), edited(text).prop_map(one), hlc("c"))
            .prop_map(|(base, a, hlc_a, c, hlc_c)| Scenario { base, a, hlc_a, c, hlc_c })
    })
}
