//! Conflicts: settled by the entity's policy when they arise, or later by the user's choice.
//! Every settlement leaves a journal row with the losing values.

use super::Engine;
use super::write::{derive_view, enqueue};
use crate::error::{Error, Result};
use crate::hlc::{Hlc, HlcClock, IdSource};
use crate::model::{CheckMode, Fields, Op, diff, effective_patch, merge_patches};
use crate::policy::{MergeInput, MergePolicy, Resolution};
use crate::store::{ConflictRecord, LocalRecord, OutboxOp, StoreTx};
use crate::wire::ConflictOutcome;

/// The user's decision on an open conflict.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Keep the server's state; the local values go to the journal.
    AcceptServer,
    /// Send the local intent again, on the server's current version.
    KeepLocal,
    /// Write these fields, on the server's current version.
    Merged(Fields),
}

impl Engine {
    /// Settles an open conflict. A settlement that changes the record becomes a new outbox op
    /// (new op id) based on the server version the conflict saw.
    pub fn resolve(&self, conflict_id: i64, choice: Choice) -> Result<()> {
        let now = self.inner.clock.now_ms();
        let ids = &*self.inner.ids;
        let mut guard = self.lock();
        let super::State { store, hlc, .. } = &mut *guard;
        store.transact(&mut |tx| {
            let mut conflict = tx
                .conflict(conflict_id)?
                .filter(ConflictRecord::is_open)
                .ok_or_else(|| Error::InvalidInput(format!("no open conflict with id {conflict_id}")))?;
            let Some(mut rec) = tx.record(&conflict.entity, &conflict.record_id)? else {
                return Err(Error::fatal("a conflict without its record"));
            };
            let check = self.policy_for(&conflict.entity).check_mode();
            let resolution = match &choice {
                Choice::AcceptServer => Resolution::TakeServer,
                Choice::KeepLocal => Resolution::TakeLocal,
                Choice::Merged(f) => Resolution::Merged { fields: f.clone(), notice: "merged by the user".into() },
            };
            rec.conflict_closed()?;
            if !apply_resolution(tx, &mut rec, &mut conflict, resolution, hlc, check, now, ids)? {
                return Err(Error::InvalidInput(conflict.reason.clone()));
            }
            tx.update_conflict(&conflict)?;
            let ops = tx.record_ops(&rec.entity, &rec.record_id)?;
            derive_view(&mut rec, &ops);
            tx.put_record(&rec)?;
            crate::crash::point("resolve.before_commit");
            Ok(())
        })?;
        drop(guard);
        crate::crash::point("resolve.after_commit");
        self.refresh_summary()
    }
}

impl Engine {
    /// Offers each open conflict that another policy left open (the default one, before the
    /// entity's own was registered, say) to the entity's policy now. Run at the start of every
    /// sync cycle, off the app's runtime. The policies run without the engine's lock; an answer
    /// is carried out only if its conflict is still open and as it was read, and a conflict the
    /// policy leaves open names it from then on, so it is offered once. Conflicts recorded
    /// before they kept their local HLC are left to the user. Returns how many were settled.
    pub(super) fn offer_open_conflicts(&self) -> Result<u64> {
        if self.status().open_conflicts == 0 {
            return Ok(0);
        }
        let open = self.lock().store.conflicts(true)?;
        let mut answers = Vec::new();
        for c in open {
            let policy = self.policy_for(&c.entity);
            let Some(local_hlc) = c.local_hlc.clone().filter(|_| policy.name() != c.policy) else { continue };
            let resolution = policy.resolve(&MergeInput {
                entity: &c.entity,
                record_id: &c.record_id,
                base: &c.base,
                local: &c.local,
                local_hlc: &local_hlc,
                server: &c.server,
                server_meta: &c.server_meta,
                server_version: c.server_version,
                server_deleted: c.server_deleted,
                conflicting: &c.fields,
            });
            answers.push((c, policy, resolution));
        }
        let mut settled = 0;
        for (seen, policy, resolution) in answers {
            let now = self.inner.clock.now_ms();
            let ids = &*self.inner.ids;
            let mut guard = self.lock();
            let super::State { store, hlc, .. } = &mut *guard;
            let mut done = false;
            store.transact(&mut |tx| {
                let Some(mut conflict) = tx.conflict(seen.id)?.filter(|c| *c == seen) else { return Ok(()) };
                let Some(mut rec) = tx.record(&conflict.entity, &conflict.record_id)? else { return Ok(()) };
                conflict.policy = policy.name().to_owned();
                let check = policy.check_mode();
                done = apply_resolution(tx, &mut rec, &mut conflict, resolution.clone(), hlc, check, now, ids)?;
                if done {
                    rec.conflict_closed()?;
                }
                tx.update_conflict(&conflict)?;
                let ops = tx.record_ops(&rec.entity, &rec.record_id)?;
                derive_view(&mut rec, &ops);
                tx.put_record(&rec)
            })?;
            settled += u64::from(done);
        }
        if settled > 0 {
            tracing::info!(settled, "open conflicts settled by policies registered since they arose");
            self.refresh_summary()?;
        }
        Ok(settled)
    }
}

/// A conflict's local side: the conflicting op and the record's later ops folded into one intent.
struct Intent {
    kind: Op,
    local: Fields,
    local_hlc: Hlc,
}

fn fold(op: &OutboxOp, later: &[OutboxOp]) -> Intent {
    let mut intent = Intent { kind: op.op, local: op.patch.clone(), local_hlc: op.hlc.clone() };
    for l in later.iter().filter(|l| l.seq != op.seq) {
        intent.local_hlc = intent.local_hlc.clone().max(l.hlc.clone());
        if l.op == Op::Delete {
            intent.kind = Op::Delete;
            intent.local.clear();
        } else {
            merge_patches(&mut intent.local, &l.patch);
            if intent.kind == Op::Delete {
                intent.kind = Op::Update;
            }
        }
    }
    intent
}

/// Asks `policy` about a conflict the server answered on `op`, given the record and its outbox
/// ops as read (`ops`: the op and the record's later ops, which fold into the local intent).
/// Pure: the same reads give the same question, so the answer can be sought outside the engine's
/// lock and used in the transaction that finds the same reads.
pub(super) fn ask_policy(
    rec: &LocalRecord,
    ops: &[OutboxOp],
    op: &OutboxOp,
    c: &ConflictOutcome,
    policy: &dyn MergePolicy,
) -> Resolution {
    let intent = fold(op, ops);
    let newer = c.server.version >= rec.server_version;
    let (server, server_version, server_deleted) = if newer {
        (&c.server.fields, c.server.version, c.server.deleted)
    } else {
        (&rec.server_fields, rec.server_version, rec.server_deleted)
    };
    policy.resolve(&MergeInput {
        entity: &op.entity,
        record_id: &op.record_id,
        base: &rec.server_fields,
        local: &intent.local,
        local_hlc: &intent.local_hlc,
        server,
        server_meta: &c.server.meta,
        server_version,
        server_deleted,
        conflicting: &c.fields,
    })
}

/// Records a conflict answered by the server on `op` (already out of the outbox): folds the
/// record's later ops into the local intent, takes the server's state as confirmed, and carries
/// out `resolution`, the answer of the policy named `policy` (see [`ask_policy`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn settle_conflict(
    tx: &mut dyn StoreTx,
    rec: &mut LocalRecord,
    op: &OutboxOp,
    c: &ConflictOutcome,
    (policy, check): (&str, CheckMode),
    resolution: Resolution,
    hlc: &mut HlcClock,
    now: u64,
    trace_id: &str,
    ids: &dyn IdSource,
) -> Result<()> {
    let later = tx.record_ops(&op.entity, &op.record_id)?;
    let Intent { kind, local, local_hlc } = fold(op, &later);
    for l in &later {
        tx.remove_op(l.seq)?;
        rec.op_removed(l.state)?;
    }
    // Later local writes must order after what the server has seen.
    if let Some(latest) = c.server.meta.values().map(|m| &m.hlc).max() {
        hlc.observe(latest);
    }
    let base = rec.server_fields.clone();
    if c.server.version >= rec.server_version {
        rec.server_version = c.server.version;
        rec.server_fields = c.server.fields.clone();
        rec.server_deleted = c.server.deleted;
    }
    let mut conflict = ConflictRecord {
        id: 0,
        entity: op.entity.clone(),
        record_id: op.record_id.clone(),
        op_id: op.op_id,
        op: kind,
        base,
        local,
        server: rec.server_fields.clone(),
        server_version: rec.server_version,
        server_deleted: rec.server_deleted,
        fields: c.fields.clone(),
        local_hlc: Some(local_hlc),
        server_meta: c.server.meta.clone(),
        policy: policy.to_owned(),
        outcome: "open".into(),
        losing: Fields::new(),
        reason: String::new(),
        created_ms: now,
        resolved_ms: None,
        trace_id: trace_id.to_owned(),
    };
    if !apply_resolution(tx, rec, &mut conflict, resolution, hlc, check, now, ids)? {
        rec.conflict_opened();
    }
    tx.insert_conflict(&conflict)?;
    let ops = tx.record_ops(&op.entity, &op.record_id)?;
    derive_view(rec, &ops);
    Ok(())
}

/// Values of local edits still pending on the record (the view differs from the server there)
/// that a settlement's `patch` is about to overwrite: they go to the journal too.
fn pending_overwritten(rec: &LocalRecord, server: &Fields, patch: &Fields) -> Vec<(String, serde_json::Value)> {
    patch
        .iter()
        .filter_map(|(k, v)| {
            let viewed = rec.fields.get(k)?;
            (server.get(k) != Some(viewed) && viewed != v).then(|| (k.clone(), viewed.clone()))
        })
        .collect()
}

/// Carries out a resolution on `conflict`. Returns `false` (and leaves the conflict open with a
/// reason) when it needs the user.
#[allow(clippy::too_many_arguments)]
fn apply_resolution(
    tx: &mut dyn StoreTx,
    rec: &mut LocalRecord,
    conflict: &mut ConflictRecord,
    resolution: Resolution,
    hlc: &mut HlcClock,
    check: CheckMode,
    now: u64,
    ids: &dyn IdSource,
) -> Result<bool> {
    let server = rec.server_fields.clone();
    let (outcome, losing) = match resolution {
        Resolution::NeedsReview { reason } => {
            conflict.reason = reason;
            return Ok(false);
        }
        Resolution::TakeServer => ("take_server", conflict.local.clone()),
        Resolution::TakeLocal if conflict.op == Op::Delete => {
            // The delete stands: what the server had, and any local edit still pending on top
            // of it (the delete absorbs it), goes to the journal.
            let mut lost = server;
            lost.extend(rec.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
            if !rec.server_deleted {
                enqueue(tx, rec, Op::Delete, Fields::new(), &hlc.tick(now), check, now, ids)?;
            }
            ("take_local", lost)
        }
        Resolution::TakeLocal | Resolution::Merged { .. } if rec.server_deleted => {
            conflict.reason = "the record was deleted on the server; accept the deletion (the local values \
                               stay in the journal) or create a new record"
                .into();
            return Ok(false);
        }
        Resolution::TakeLocal => {
            let patch = effective_patch(&server, &conflict.local);
            let mut lost: Fields = patch.keys().filter_map(|k| server.get(k).map(|v| (k.clone(), v.clone()))).collect();
            lost.extend(pending_overwritten(rec, &server, &patch));
            if !patch.is_empty() {
                enqueue(tx, rec, Op::Update, patch, &hlc.tick(now), check, now, ids)?;
            }
            ("take_local", lost)
        }
        Resolution::Merged { fields, notice } => {
            // Per side, what it changed that the merge did not keep; where both sides lost a
            // field, the server's value is listed (the local one stays in the row's `local`).
            // The server changed a field when it differs from the base or the server reported it
            // in conflict (a write of the base's value again is a write too); the local intent
            // holds only changed fields.
            let server_changed = |k: &str, v: &serde_json::Value| {
                conflict.base.get(k) != Some(v) || conflict.fields.iter().any(|f| f == k)
            };
            let mut lost = not_kept(&server, &conflict.base, &fields, server_changed);
            for (k, v) in not_kept(&conflict.local, &conflict.base, &fields, |_, _| true) {
                lost.entry(k).or_insert(v);
            }
            let patch = diff(&server, &fields);
            lost.extend(pending_overwritten(rec, &server, &patch));
            if !patch.is_empty() {
                enqueue(tx, rec, Op::Update, patch, &hlc.tick(now), check, now, ids)?;
            }
            conflict.reason = notice;
            ("merged", lost)
        }
    };
    conflict.outcome = outcome.to_owned();
    conflict.losing = losing;
    conflict.resolved_ms = Some(now);
    Ok(true)
}

/// The values of `side` that it `changed` and that `merged` did not keep. A value is kept when it
/// is there as it is, or, when it differs from `base`, when what it added is: the elements an
/// array gained, the lines a text gained, the entries an object changed (a union of tags, a
/// line merge).
fn not_kept(
    side: &Fields,
    base: &Fields,
    merged: &Fields,
    changed: impl Fn(&str, &serde_json::Value) -> bool,
) -> Fields {
    side.iter()
        .filter(|(k, v)| !v.is_null() && changed(k, v) && !kept(v, base.get(*k), merged.get(*k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn kept(value: &serde_json::Value, base: Option<&serde_json::Value>, merged: Option<&serde_json::Value>) -> bool {
    use serde_json::Value as V;
    let Some(merged) = merged else { return false };
    if value == merged {
        return true;
    }
    if base == Some(value) {
        // The base's value written again adds nothing to look for: only itself counts.
        return false;
    }
    match (value, merged) {
        (V::Array(v), V::Array(m)) => {
            let old = base.and_then(V::as_array);
            v.iter().filter(|x| old.is_none_or(|o| !o.contains(x))).all(|x| m.contains(x))
        }
        (V::String(v), V::String(m)) => {
            let old: Vec<&str> = base.and_then(V::as_str).map(|b| b.lines().collect()).unwrap_or_default();
            let merged_lines: Vec<&str> = m.lines().collect();
            v.lines().filter(|l| !old.contains(l)).all(|l| merged_lines.contains(&l))
        }
        (V::Object(v), V::Object(m)) => {
            let old = base.and_then(V::as_object);
            v.iter().filter(|(k, x)| old.is_none_or(|o| o.get(*k) != Some(*x))).all(|(k, x)| m.get(k) == Some(x))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::not_kept;
    use crate::model::Fields;

    fn f(v: serde_json::Value) -> Fields {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_merge_loses_only_what_it_did_not_keep() {
        let base = f(json!({"tags": ["a"], "notes": "l0\nl1", "qty": 1, "title": "t"}));
        let local = f(json!({"tags": ["a", "b"], "notes": "L0\nl1", "qty": 2}));
        let server = f(json!({"tags": ["a", "c"], "notes": "l0\nL1", "qty": 3, "title": "t"}));
        // Tags united, lines merged, the quantity taken from the server.
        let merged = f(json!({"tags": ["a", "b", "c"], "notes": "L0\nL1", "qty": 3, "title": "t"}));
        let all = |_: &str, _: &serde_json::Value| true;
        let differs = |k: &str, v: &serde_json::Value| base.get(k) != Some(v);
        assert_eq!(not_kept(&local, &base, &merged, all), f(json!({"qty": 2})), "only the quantity lost");
        assert_eq!(not_kept(&server, &base, &merged, differs), Fields::new(), "the server's changes all kept");
        let dropped = f(json!({"tags": ["a", "c"], "notes": "l0\nL1", "qty": 3, "title": "t"}));
        let lost = not_kept(&local, &base, &dropped, all);
        assert_eq!(lost, f(json!({"tags": ["a", "b"], "notes": "L0\nl1", "qty": 2})));
        // The server wrote the base's title again (seed 4576): a merge that drops it loses it.
        let retitled = f(json!({"tags": ["a", "c"], "notes": "l0\nL1", "qty": 3, "title": "mine"}));
        let written = |k: &str, v: &serde_json::Value| k == "title" || base.get(k) != Some(v);
        assert_eq!(not_kept(&server, &base, &retitled, written), f(json!({"title": "t"})));
    }
}
