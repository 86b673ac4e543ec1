//! Held ops: dead letters and ops needing action. The app lists them, sends them again, edits
//! the record (which corrects an op needing action), or discards them into the journal.

use uuid::Uuid;

use super::write::derive_view;
use super::{Delta, Engine, counters};
use crate::error::{Error, Result};
use crate::store::{ConflictRecord, LocalRecord, OpState, OutboxOp, StoreTx};

impl Engine {
    /// The held ops, oldest first: each with its state (`dead_letter` or `needs_action`), its
    /// attempts, and the server's code and message in `last_error`.
    pub fn held_ops(&self) -> Result<Vec<OutboxOp>> {
        self.lock().store.held_ops()
    }

    /// Sends a held op again, as the next sync's work: its attempts start over. (An op refused
    /// for good was given a new op id when it was refused, so the server judges it afresh.)
    pub fn retry_op(&self, op_id: Uuid) -> Result<()> {
        self.change_held(op_id, &mut |tx, op, rec| {
            rec.op_unheld()?;
            let mut op = op.clone();
            op.state = OpState::Pending;
            op.attempts = 0;
            op.last_error = None;
            tx.update_op(&op)
        })?;
        self.wake_worker(super::worker::Wake::Write);
        Ok(())
    }

    /// Drops a held op. Its change is not lost silently: the journal keeps it (outcome
    /// `discarded`, the op's patch as the losing values, the server's message as the reason),
    /// and the record's view goes back to the server's state plus its other ops.
    pub fn discard_op(&self, op_id: Uuid) -> Result<()> {
        let now = self.inner.clock.now_ms();
        self.change_held(op_id, &mut |tx, op, rec| {
            tx.remove_op(op.seq)?;
            rec.op_removed(op.state)?;
            tx.insert_conflict(&ConflictRecord {
                id: 0,
                entity: op.entity.clone(),
                record_id: op.record_id.clone(),
                op_id: op.op_id,
                op: op.op,
                base: Default::default(),
                local: op.patch.clone(),
                server: Default::default(),
                server_version: op.base_version,
                server_deleted: false,
                fields: op.patch.keys().cloned().collect(),
                local_hlc: Some(op.hlc.clone()),
                server_meta: Default::default(),
                policy: op.state.as_str().to_owned(),
                outcome: "discarded".into(),
                losing: op.patch.clone(),
                reason: op.last_error.clone().unwrap_or_default(),
                created_ms: op.created_ms,
                resolved_ms: Some(now),
                trace_id: String::new(),
            })?;
            Ok(())
        })
    }

    /// Runs `f` on a held op and its record (whose counters `f` keeps) in one transaction, then
    /// derives the record's view.
    fn change_held(
        &self,
        op_id: Uuid,
        f: &mut dyn FnMut(&mut dyn StoreTx, &OutboxOp, &mut LocalRecord) -> Result<()>,
    ) -> Result<()> {
        let mut st = self.lock();
        let mut delta = Delta::default();
        st.store.transact(&mut |tx| {
            let op = tx
                .op(op_id)?
                .filter(|o| o.state.is_held())
                .ok_or_else(|| Error::InvalidInput(format!("no dead letter or op needing action with id {op_id}")))?;
            let Some(mut rec) = tx.record(&op.entity, &op.record_id)? else {
                return Err(Error::fatal("an outbox op without its record"));
            };
            let before = counters(&rec);
            f(tx, &op, &mut rec)?;
            let ops = tx.record_ops(&op.entity, &op.record_id)?;
            derive_view(&mut rec, &ops);
            if ops.is_empty() && rec.server_version == 0 && rec.conflicts == 0 {
                tx.remove_record(&rec.entity, &rec.record_id)?;
            } else {
                tx.put_record(&rec)?;
            }
            delta.track(before, &rec);
            Ok(())
        })?;
        self.apply_delta(&mut st, delta)
    }
}
