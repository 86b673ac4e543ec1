//! Local writes: each is one store transaction (record view + outbox row), with no network.

use super::{Engine, RecordView};
use crate::error::{Error, Result};
use crate::hlc::{Hlc, IdSource};
use crate::model::{
    CheckMode, Fields, Op, apply_patch, diff, effective_patch, json_size, merge_patches, validate_entity,
    validate_field_names, validate_record_id,
};
use crate::store::{LocalRecord, OpState, OutboxOp, StoreTx};

/// The largest record the engine writes locally: the server's default limit, so a write that
/// would surely be refused fails at once instead.
pub(crate) const MAX_RECORD_BYTES: usize = 256 << 10;

enum Intent<'a> {
    Put(&'a Fields),
    Patch(&'a Fields),
    Delete,
}

impl Engine {
    /// Creates a record with a new id (a UUIDv7) and returns it.
    pub fn create(&self, entity: &str, fields: Fields) -> Result<RecordView> {
        self.put(entity, &self.inner.ids.new_uuid().to_string(), fields)
    }

    /// Sets a record to exactly `fields`: creates it if absent, otherwise records the difference.
    pub fn put(&self, entity: &str, record_id: &str, fields: Fields) -> Result<RecordView> {
        self.write(entity, record_id, Intent::Put(&fields))
            .and_then(|v| v.ok_or_else(|| Error::fatal("a put left no record")))
    }

    /// Changes only the fields in `patch` (`null` removes a field); the record must exist.
    pub fn patch(&self, entity: &str, record_id: &str, patch: Fields) -> Result<RecordView> {
        self.write(entity, record_id, Intent::Patch(&patch))
            .and_then(|v| v.ok_or_else(|| Error::fatal("a patch left no record")))
    }

    /// Deletes a record.
    pub fn delete(&self, entity: &str, record_id: &str) -> Result<()> {
        self.write(entity, record_id, Intent::Delete).map(|_| ())
    }

    fn write(&self, entity: &str, record_id: &str, intent: Intent<'_>) -> Result<Option<RecordView>> {
        validate_entity(entity)?;
        validate_record_id(record_id)?;
        if let Intent::Put(f) | Intent::Patch(f) = intent {
            validate_field_names(f)?;
        }
        let check = self.policy_for(entity).check_mode();
        let ids = &*self.inner.ids;
        let now = self.inner.clock.now_ms();
        let mut st = self.lock();
        let hlc = st.hlc.tick(now);
        let mut out = None;
        let mut delta = 0i64;
        let mut held_changed = false;
        st.store.transact(&mut |tx| {
            // The common case of a put, a new record, is two inserts and no lookup.
            if let Intent::Put(f) = &intent {
                let mut rec = new_local(entity, record_id);
                rec.fields = strip_nulls(f);
                check_size(&rec.fields)?;
                // The row goes in counting the create that follows it.
                rec.op_added();
                if tx.insert_new_record(&rec)? {
                    let patch = rec.fields.clone();
                    tx.insert_op(&new_op(&rec, Op::Create, patch, &hlc, check, now, ids))?;
                    delta = 1;
                    out = Some(RecordView::from(&rec));
                    crate::crash::point("write.before_commit");
                    return Ok(());
                }
            }
            let existing = tx.record(entity, record_id)?;
            let (op, patch, mut rec) = match (&intent, existing) {
                (Intent::Put(f), None) => (Op::Create, strip_nulls(f), new_local(entity, record_id)),
                (Intent::Put(f), Some(r)) if !r.deleted => (Op::Update, diff(&r.fields, f), r),
                (Intent::Patch(p), Some(r)) if !r.deleted => (Op::Update, effective_patch(&r.fields, p), r),
                (Intent::Delete, Some(r)) if !r.deleted => (Op::Delete, Fields::new(), r),
                (Intent::Put(_), Some(_)) => {
                    return Err(Error::InvalidInput(format!(
                        "{entity}/{record_id} was deleted; create a new record instead"
                    )));
                }
                _ => return Err(Error::NotFound { entity: entity.into(), record_id: record_id.into() }),
            };
            if op == Op::Update && patch.is_empty() {
                out = Some(RecordView::from(&rec));
                return Ok(());
            }
            if op == Op::Delete {
                rec.deleted = true;
                rec.fields.clear();
            } else {
                apply_patch(&mut rec.fields, &patch);
                check_size(&rec.fields)?;
            }
            let (before, failed_before) = (rec.pending, rec.failed);
            if !enqueue(tx, &mut rec, op, patch, &hlc, check, now, ids)? {
                out = None;
                delta = -1;
                held_changed = rec.failed != failed_before;
                return Ok(());
            }
            delta = i64::from(rec.pending) - i64::from(before);
            held_changed = rec.failed != failed_before;
            out = Some(RecordView::from(&rec));
            tx.put_record(&rec)?;
            crate::crash::point("write.before_commit");
            Ok(())
        })?;
        crate::crash::point("write.after_commit");
        self.wake_worker(super::worker::Wake::Write);
        if held_changed {
            drop(st);
            self.refresh_summary()?;
            return Ok(out);
        }
        st.summary.pending = st.summary.pending.saturating_add_signed(delta);
        if st.summary.pending == 0 {
            st.summary.oldest_pending_ms = None;
        } else if st.summary.oldest_pending_ms.is_none() {
            st.summary.oldest_pending_ms = Some(now);
        }
        let summary = st.summary;
        drop(st);
        self.publish(summary);
        Ok(out)
    }
}

fn check_size(fields: &Fields) -> Result<()> {
    if json_size(fields) > MAX_RECORD_BYTES {
        return Err(Error::InvalidInput(format!("the record would be over {MAX_RECORD_BYTES} bytes as JSON")));
    }
    Ok(())
}

fn strip_nulls(f: &Fields) -> Fields {
    f.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(super) fn new_local(entity: &str, record_id: &str) -> LocalRecord {
    LocalRecord {
        entity: entity.to_owned(),
        record_id: record_id.to_owned(),
        server_version: 0,
        server_fields: Fields::new(),
        server_deleted: false,
        fields: Fields::new(),
        deleted: false,
        pending: 0,
        conflicts: 0,
        failed: 0,
    }
}

/// Adds an op for `rec` to the outbox, folding it into the record's last op when that one has
/// never been sent, or was refused as needing action (the user's edit is the correction: the
/// op goes out again). Updates `rec.pending` and `rec.failed`; the caller writes `rec`. Returns
/// `false` when a create and a delete cancelled out and the record, never sent, was removed.
#[allow(clippy::too_many_arguments)]
pub(super) fn enqueue(
    tx: &mut dyn StoreTx,
    rec: &mut LocalRecord,
    op: Op,
    patch: Fields,
    hlc: &Hlc,
    check: CheckMode,
    now_ms: u64,
    ids: &dyn IdSource,
) -> Result<bool> {
    if rec.pending > 0
        && let Some(mut last) = tx.record_ops(&rec.entity, &rec.record_id)?.pop()
        // An op that got a server error may have been applied under its op id: later edits
        // must not fold into it (the server would answer the old outcome and drop them).
        && ((last.state == OpState::Pending && last.attempts == 0) || last.state == OpState::NeedsAction)
        && last.batch_id.is_none()
    {
        let was_held = last.state == OpState::NeedsAction;
        match (last.op, op) {
            (Op::Create, Op::Update) => {
                apply_patch(&mut last.patch, &patch);
            }
            (Op::Update, Op::Update) => merge_patches(&mut last.patch, &patch),
            (Op::Update, Op::Delete) => {
                last.op = Op::Delete;
                last.patch.clear();
            }
            (Op::Create, Op::Delete) => {
                tx.remove_op(last.seq)?;
                rec.op_removed(last.state)?;
                if rec.pending == 0 && rec.server_version == 0 && rec.conflicts == 0 && rec.failed == 0 {
                    tx.remove_record(&rec.entity, &rec.record_id)?;
                    return Ok(false);
                }
                return Ok(true);
            }
            _ => {
                let new = new_op(rec, op, patch, hlc, check, now_ms, ids);
                return append(tx, rec, &new);
            }
        }
        if was_held {
            last.state = OpState::Pending;
            last.attempts = 0;
            last.last_error = None;
            rec.op_unheld()?;
        }
        last.hlc = hlc.clone();
        last.check = check;
        tx.update_op(&last)?;
        return Ok(true);
    }
    let new = new_op(rec, op, patch, hlc, check, now_ms, ids);
    append(tx, rec, &new)
}

/// Adds `op` to the outbox as `rec`'s newest op.
fn append(tx: &mut dyn StoreTx, rec: &mut LocalRecord, op: &OutboxOp) -> Result<bool> {
    tx.insert_op(op)?;
    rec.op_added();
    Ok(true)
}

/// A new pending op of `rec`, made on its confirmed version.
fn new_op(
    rec: &LocalRecord,
    op: Op,
    patch: Fields,
    hlc: &Hlc,
    check: CheckMode,
    now_ms: u64,
    ids: &dyn IdSource,
) -> OutboxOp {
    OutboxOp {
        seq: 0,
        op_id: ids.new_uuid(),
        entity: rec.entity.clone(),
        record_id: rec.record_id.clone(),
        op,
        patch,
        base_version: rec.server_version,
        hlc: hlc.clone(),
        check,
        state: OpState::Pending,
        batch_id: None,
        attempts: 0,
        last_error: None,
        created_ms: now_ms,
    }
}

/// Re-derives the view: the confirmed server state with the record's outbox ops applied in order.
pub(super) fn derive_view(rec: &mut LocalRecord, ops: &[OutboxOp]) {
    rec.fields = rec.server_fields.clone();
    rec.deleted = rec.server_deleted;
    for op in ops {
        match op.op {
            Op::Create | Op::Update => {
                apply_patch(&mut rec.fields, &op.patch);
                rec.deleted = false;
            }
            Op::Delete => {
                rec.fields.clear();
                rec.deleted = true;
            }
        }
    }
}
