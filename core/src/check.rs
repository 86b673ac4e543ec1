//! The server's conflict checks (`fields`, `record`, `lww`), as a pure function of a mutation and
//! the record's stored state, so every server store decides exactly alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Code;
use crate::hlc::Hlc;
use crate::model::{CheckMode, Fields, Op, Version, json_size};
use crate::wire::{Accepted, ConflictOutcome, FieldClock, Limits, Mutation, OpOutcome, Rejected, ServerState};

/// Per-field metadata the server keeps: the version that last changed the field and its HLC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMeta {
    /// The record version that last changed this field.
    pub v: Version,
    /// The HLC of the write that set it.
    pub hlc: Hlc,
}

/// A record as the server stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// The entity.
    pub entity: String,
    /// The record id.
    pub record_id: String,
    /// +1 per change.
    pub version: Version,
    /// The current fields.
    pub fields: Fields,
    /// Per-field metadata, kept for removed fields too.
    pub meta: BTreeMap<String, FieldMeta>,
    /// A tombstone.
    pub deleted: bool,
    /// The HLC of the delete, for a tombstone.
    pub deleted_hlc: Option<Hlc>,
}

impl StoredRecord {
    /// The state a client sees.
    pub fn state(&self) -> ServerState {
        let meta =
            self.meta.iter().map(|(k, m)| (k.clone(), FieldClock { version: m.v, hlc: m.hlc.clone() })).collect();
        ServerState { version: self.version, fields: self.fields.clone(), deleted: self.deleted, meta }
    }

    /// Fields changed after `base`, sorted.
    fn changed_since(&self, base: Version) -> Vec<String> {
        self.meta.iter().filter(|(_, m)| m.v > base).map(|(k, _)| k.clone()).collect()
    }

    fn max_hlc(&self) -> Option<&Hlc> {
        self.meta.values().map(|m| &m.hlc).chain(self.deleted_hlc.as_ref()).max()
    }
}

/// The server's rules for mutations: size limits, and per entity the weakest check mode it
/// accepts (e.g. `orders` pinned to `record`, so no client can weaken it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    /// Size limits.
    pub limits: Limits,
    /// Per entity, the weakest check mode accepted (`lww` < `fields` < `record`).
    pub pins: BTreeMap<String, CheckMode>,
}

impl Rules {
    /// Rules with these limits and no pins.
    pub fn with_limits(limits: Limits) -> Rules {
        Rules { limits, pins: BTreeMap::new() }
    }
}

/// What to do with one mutation.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Write this new state of the record (its version already +1), then answer accepted.
    Apply(StoredRecord),
    /// Change nothing and answer this outcome.
    Answer(OpOutcome),
}

impl Decision {
    /// Whether the outcome should be stored under the op id: everything but retryable rejections.
    pub fn outcome_is_final(outcome: &OpOutcome) -> bool {
        !matches!(outcome, OpOutcome::Rejected(r) if r.retryable)
    }
}

/// Decides one mutation against the record's current state (`None`: never existed).
pub fn decide(m: &Mutation, current: Option<&StoredRecord>, rules: &Rules) -> Decision {
    let limits = &rules.limits;
    let accepted = |version| {
        Decision::Answer(OpOutcome::Accepted(Accepted {
            op_id: m.op_id,
            entity: m.entity.clone(),
            record_id: m.record_id.clone(),
            version,
        }))
    };
    let reject = |code: Code, message: &str| rejection(m, code, message);
    let conflict = |rec: &StoredRecord, mut fields: Vec<String>| {
        fields.sort();
        fields.dedup();
        Decision::Answer(OpOutcome::Conflict(ConflictOutcome {
            op_id: m.op_id,
            entity: m.entity.clone(),
            record_id: m.record_id.clone(),
            fields,
            server: rec.state(),
        }))
    };

    if let Some(pinned) = rules.pins.get(&m.entity)
        && m.check < *pinned
    {
        return reject(
            Code::CheckModeTooWeak,
            &format!("the server requires check mode {} or stricter for {}", pinned.as_str(), m.entity),
        );
    }

    let Some(cur) = current else {
        return match m.op {
            Op::Create => {
                let rec = StoredRecord {
                    entity: m.entity.clone(),
                    record_id: m.record_id.clone(),
                    version: 0,
                    fields: Fields::new(),
                    meta: BTreeMap::new(),
                    deleted: false,
                    deleted_hlc: None,
                };
                let keys: Vec<String> = m.patch.keys().cloned().collect();
                finish(rec, m, &keys, limits)
            }
            Op::Update | Op::Delete => reject(Code::NotFound, "the record does not exist"),
        };
    };

    if m.base_version > cur.version {
        return reject(Code::InvalidRequest, "base_version is newer than the server's version of the record");
    }
    if cur.deleted {
        return match m.op {
            Op::Delete => accepted(cur.version),
            Op::Create | Op::Update => conflict(cur, m.patch.keys().cloned().collect()),
        };
    }

    let next = cur.clone();
    match (m.op, m.check) {
        (Op::Create, CheckMode::Lww) | (Op::Update, CheckMode::Lww) => {
            // Fields whose HLC lost keep their value; the version moves all the same, so the
            // sender hears of the winning values through the feed.
            let keys: Vec<String> =
                m.patch.keys().filter(|k| cur.meta.get(*k).is_none_or(|meta| m.hlc > meta.hlc)).cloned().collect();
            finish(next, m, &keys, limits)
        }
        (Op::Create, _) => {
            let differing = m.patch.keys().filter(|k| cur.fields.get(*k) != m.patch.get(*k)).cloned();
            conflict(cur, differing.chain(cur.fields.keys().cloned()).collect())
        }
        (Op::Update, CheckMode::Fields) => {
            let conflicting: Vec<String> = m
                .patch
                .iter()
                .filter(|(k, v)| {
                    cur.meta.get(*k).is_some_and(|meta| meta.v > m.base_version)
                        && cur.fields.get(*k).unwrap_or(&serde_json::Value::Null) != *v
                })
                .map(|(k, _)| k.clone())
                .collect();
            if !conflicting.is_empty() {
                return conflict(cur, conflicting);
            }
            let keys: Vec<String> = m.patch.keys().cloned().collect();
            finish(next, m, &keys, limits)
        }
        (Op::Update, CheckMode::Record) => {
            if cur.version != m.base_version {
                return conflict(cur, cur.changed_since(m.base_version));
            }
            let keys: Vec<String> = m.patch.keys().cloned().collect();
            finish(next, m, &keys, limits)
        }
        (Op::Delete, CheckMode::Lww) => {
            if cur.max_hlc().is_some_and(|h| *h > m.hlc) {
                // A later write stands; the version still moves so the sender hears of it.
                return Decision::Apply(StoredRecord { version: next.version + 1, ..next });
            }
            Decision::Apply(tombstone(next, m))
        }
        (Op::Delete, _) => {
            if cur.version != m.base_version {
                return conflict(cur, cur.changed_since(m.base_version));
            }
            Decision::Apply(tombstone(next, m))
        }
    }
}

const TOO_LARGE: &str = "the record's fields would exceed the server's size limit";

/// A permanent per-op rejection.
fn rejection(m: &Mutation, code: Code, message: &str) -> Decision {
    Decision::Answer(OpOutcome::Rejected(Rejected {
        op_id: m.op_id,
        code,
        message: message.to_owned(),
        retryable: false,
    }))
}

/// Applies the patch's `keys` to `rec` as a new version, or rejects the op if the record would
/// be too large.
/// A key whose value does not change is still stamped with the new version and HLC: the write
/// happened, and a concurrent write based on an older version must see it (as a conflict under
/// `fields` and `record`, by HLC under `lww`) instead of silently undoing it.
fn finish(mut rec: StoredRecord, m: &Mutation, keys: &[String], limits: &Limits) -> Decision {
    let version = rec.version + 1;
    for k in keys {
        let v = &m.patch[k];
        if v.is_null() {
            rec.fields.remove(k);
        } else {
            rec.fields.insert(k.clone(), v.clone());
        }
        rec.meta.insert(k.clone(), FieldMeta { v: version, hlc: m.hlc.clone() });
    }
    if json_size(&rec.fields) > limits.max_record_bytes {
        return rejection(m, Code::RecordTooLarge, TOO_LARGE);
    }
    rec.version = version;
    Decision::Apply(rec)
}

fn tombstone(mut rec: StoredRecord, m: &Mutation) -> StoredRecord {
    rec.version += 1;
    for k in rec.fields.keys() {
        rec.meta.insert(k.clone(), FieldMeta { v: rec.version, hlc: m.hlc.clone() });
    }
    rec.fields.clear();
    rec.deleted = true;
    rec.deleted_hlc = Some(m.hlc.clone());
    rec
}

#[cfg(test)]
mod tests;
