//! Push batches: taking the next one from the outbox (or reading it ahead while the previous one
//! is on the wire), and putting a batch's ops back after it failed.

use std::collections::HashSet;

use super::sync::{failed_attempt, unsent};
use super::{Delta, Engine, counters};
use crate::crash;
use crate::error::{Code, Result};
use crate::model::json_size;
use crate::store::{LocalStore, OpState, OutboxOp, StoreRead, StoreTx};

/// The next batch, read while the one before it was on the wire. Its ops are the first of their
/// records, so the previous batch's acks (which touch only that batch's records) leave them as
/// they are; any other write since might not (a local write absorbs into an unsent op), so the
/// batch is only used if each of its ops is still its record's first op, exactly as read.
///
/// The store's data version is a shortcut: unmoved, nothing was written and the ops are as read.
/// It also moves on commits that change no row the engine reads (a background checkpointer
/// starting the log over), so when it moved the ops are compared: whether the batch is kept
/// depends on the store's contents only, never on what another thread did when.
pub(super) struct Ahead {
    /// The store's [`data_version`](crate::store::StoreRead::data_version) before it was read.
    data_version: u64,
    ops: Vec<OutboxOp>,
}

impl Ahead {
    /// Whether every op is still as it was read, `tx` being the transaction that is to mark them.
    pub(super) fn still_current(&self, tx: &dyn StoreRead) -> Result<bool> {
        if tx.data_version()? == self.data_version {
            return Ok(true);
        }
        for op in &self.ops {
            if tx.record_ops(&op.entity, &op.record_id)?.first() != Some(op) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The ops' outbox positions.
    pub(super) fn seqs(&self) -> Vec<i64> {
        seqs(&self.ops)
    }

    /// The ops under batch `key`, in flight.
    pub(super) fn into_batch(self, key: String) -> Batch {
        mark(self.ops, key)
    }
}

/// A batch: its idempotency key and its ops, in flight.
pub(super) type Batch = (String, Vec<OutboxOp>);

/// The outbox positions of `ops`.
fn seqs(ops: &[OutboxOp]) -> Vec<i64> {
    ops.iter().map(|o| o.seq).collect()
}

/// `ops` under batch `key`, in flight.
fn mark(mut ops: Vec<OutboxOp>, key: String) -> Batch {
    for op in &mut ops {
        op.state = OpState::InFlight;
        op.batch_id = Some(key.clone());
    }
    (key, ops)
}

impl Engine {
    /// The batch to send: the one in flight (resent as it was), else the next one (see
    /// [`Engine::select_batch`]) marked in flight under a new key in one transaction.
    pub(super) fn take_batch(&self, skip: &HashSet<i64>) -> Result<Option<Batch>> {
        let mut st = self.lock();
        let in_flight = st.store.in_flight()?;
        if let Some(key) = in_flight.first().and_then(|o| o.batch_id.clone()) {
            let ops = in_flight.into_iter().filter(|o| o.batch_id.as_deref() == Some(&key)).collect();
            return Ok(Some((key, ops)));
        }
        let ops = self.select_batch(&*st.store, skip)?;
        if ops.is_empty() {
            return Ok(None);
        }
        let (key, ops) = mark(ops, self.inner.ids.new_uuid().to_string());
        let seqs = seqs(&ops);
        st.store.transact(&mut |tx| {
            tx.mark_in_flight(&seqs, &key)?;
            crash::point("batch.before_commit");
            Ok(())
        })?;
        crash::point("batch.after_commit");
        Ok(Some((key, ops)))
    }

    /// Reads the batch that would go out after the one in flight, to be marked with that one's
    /// acks (see [`Ahead`]). `None` when there is none, or the outbox could not be read (the
    /// next batch is then taken as usual, and meets the same error there).
    pub(super) fn read_ahead(&self, skip: &HashSet<i64>) -> Option<Ahead> {
        let st = self.lock();
        // Read before the ops: a commit after it, even one before the ops were read, then shows
        // as a change.
        let read = st.store.data_version().and_then(|v| Ok((v, self.select_batch(&*st.store, skip)?)));
        match read {
            Ok((data_version, ops)) if !ops.is_empty() => Some(Ahead { data_version, ops }),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(code = e.code().map(Code::as_str), "reading the next batch ahead failed");
                None
            }
        }
    }

    /// Up to `batch_size` pending ops not in flight, the first of each record, in outbox order
    /// (critical entity types first, in batches of their own), within the server's body limit.
    /// An op that failed before goes alone; ops in `skip` wait for the next cycle.
    fn select_batch(&self, store: &dyn LocalStore, skip: &HashSet<i64>) -> Result<Vec<OutboxOp>> {
        let limit = self.inner.batch_limit.load(std::sync::atomic::Ordering::Relaxed).max(1);
        let critical = &self.inner.critical;
        let mut ops = store.next_ops(limit + skip.len(), critical)?;
        ops.retain(|o| !skip.contains(&o.seq));
        if ops.first().is_some_and(|o| critical.contains(&o.entity)) {
            let n = ops.iter().take_while(|o| critical.contains(&o.entity)).count();
            ops.truncate(n);
        }
        match ops.first() {
            None => return Ok(ops),
            Some(head) if head.attempts > 0 => ops.truncate(1),
            Some(_) => ops.retain(|o| o.attempts == 0),
        }
        ops.truncate(limit);
        // Keep the request body under the server's limit; one op always fits (records are capped).
        let mut bytes = 0;
        let fits = ops
            .iter()
            .take_while(|op| {
                bytes += json_size(&op.patch) + 256;
                bytes <= self.inner.config.max_batch_bytes
            })
            .count();
        ops.truncate(fits.max(1));
        Ok(ops)
    }

    /// Puts a batch's ops back: pending (to go out under a new key), or dead letters, with
    /// `reason` (the error's code and message).
    pub(super) fn release_batch(&self, ops: &[OutboxOp], reason: &str, state: OpState) -> Result<()> {
        let ids = &*self.inner.ids;
        let mut st = self.lock();
        let mut delta = Delta::default();
        st.store.transact(&mut |tx| {
            for op in ops {
                let mut op = unsent(op, state, reason.to_owned());
                if state.is_held() {
                    // The server's answer for the old op id is final; a retry is a new op.
                    op.op_id = ids.new_uuid();
                    hold_on_record(tx, &op, &mut delta)?;
                }
                tx.update_op(&op)?;
            }
            Ok(())
        })?;
        self.apply_delta(&mut st, delta)
    }

    /// Puts a batch's ops back after a server error, each with one more attempt; an op out of
    /// attempts becomes a dead letter. Returns how many did.
    pub(super) fn count_failures(&self, ops: &[OutboxOp], reason: &str) -> Result<u64> {
        let max = self.inner.config.max_attempts;
        let mut st = self.lock();
        let mut delta = Delta::default();
        let mut dead = 0;
        st.store.transact(&mut |tx| {
            for op in ops {
                let op = failed_attempt(op, reason.to_owned(), max);
                if op.state == OpState::DeadLetter && hold_on_record(tx, &op, &mut delta)? {
                    dead += 1;
                }
                tx.update_op(&op)?;
            }
            Ok(())
        })?;
        self.apply_delta(&mut st, delta)?;
        Ok(dead)
    }
}

/// Counts one more held op on `op`'s record, noting the change in `delta`; `false` if the record
/// is not there.
fn hold_on_record(tx: &mut dyn StoreTx, op: &OutboxOp, delta: &mut Delta) -> Result<bool> {
    let Some(mut rec) = tx.record(&op.entity, &op.record_id)? else { return Ok(false) };
    let before = counters(&rec);
    rec.op_held();
    tx.put_record(&rec)?;
    delta.track(before, &rec);
    Ok(true)
}
