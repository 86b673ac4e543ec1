//! Record-change notices for the app: which records a committed transaction changed.
//!
//! The engine's store sits behind a [`Recorder`]: its `transact` wraps the transaction in a
//! [`Recording`] that notes every record written, and after the commit sends one
//! [`RecordChange`] per record to the receivers of [`Engine::watch_records`]. A rolled-back
//! transaction sends nothing; with no receiver nothing is noted at all.

use std::ops::{Deref, DerefMut};

use tokio::sync::broadcast;
use uuid::Uuid;

use super::Engine;
use crate::error::Result;
use crate::hlc::Hlc;
use crate::store::{ConflictRecord, DeviceState, LocalRecord, LocalStore, OutboxOp, StoreRead, StoreTx, Summary};

/// How many changes a slow receiver may fall behind before it is told it lagged.
const CAPACITY: usize = 1024;

/// A record changed: a local write, a pulled change, an acknowledgement or refusal that changed
/// its state, a settled conflict, a retried or discarded op. Read the record for what it is now.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordChange {
    /// The entity.
    pub entity: String,
    /// The record id.
    pub record_id: String,
}

impl Engine {
    /// A receiver of record changes: one [`RecordChange`] per record per committed transaction,
    /// in commit order, from the moment of this call. A receiver more than 1,024 changes
    /// behind gets `RecvError::Lagged` (re-read what it shows) and then the changes after.
    pub fn watch_records(&self) -> broadcast::Receiver<RecordChange> {
        self.lock().store.changes.subscribe()
    }
}

/// The engine's store, with record changes sent after each commit. Reads go through to the
/// store itself.
pub(super) struct Recorder {
    store: Box<dyn LocalStore>,
    changes: broadcast::Sender<RecordChange>,
}

impl Recorder {
    pub(super) fn new(store: Box<dyn LocalStore>) -> Recorder {
        Recorder { store, changes: broadcast::channel(CAPACITY).0 }
    }

    /// [`LocalStore::transact`], then one change per record written, when anyone listens.
    pub(super) fn transact(&mut self, f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()> {
        if self.changes.receiver_count() == 0 {
            return self.store.transact(f);
        }
        let mut touched = Vec::new();
        self.store.transact(&mut |tx| {
            touched.clear();
            f(&mut Recording { tx, touched: &mut touched })
        })?;
        let mut seen = std::collections::HashSet::new();
        for change in touched {
            if seen.insert(change.clone()) {
                // An error means every receiver is gone meanwhile: nothing to tell.
                let _ = self.changes.send(change);
            }
        }
        Ok(())
    }
}

impl Deref for Recorder {
    type Target = dyn LocalStore;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

impl DerefMut for Recorder {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.store
    }
}

/// A transaction that notes the records it writes.
struct Recording<'a> {
    tx: &'a mut dyn StoreTx,
    touched: &'a mut Vec<RecordChange>,
}

impl Recording<'_> {
    fn note(&mut self, entity: &str, record_id: &str) {
        self.touched.push(RecordChange { entity: entity.to_owned(), record_id: record_id.to_owned() });
    }
}

impl StoreRead for Recording<'_> {
    fn device_state(&self) -> Result<DeviceState> {
        self.tx.device_state()
    }
    fn max_outbox_hlc(&self) -> Result<Option<Hlc>> {
        self.tx.max_outbox_hlc()
    }
    fn record(&self, entity: &str, record_id: &str) -> Result<Option<LocalRecord>> {
        self.tx.record(entity, record_id)
    }
    fn list(&self, entity: &str) -> Result<Vec<LocalRecord>> {
        self.tx.list(entity)
    }
    fn record_ops(&self, entity: &str, record_id: &str) -> Result<Vec<OutboxOp>> {
        self.tx.record_ops(entity, record_id)
    }
    fn in_flight(&self) -> Result<Vec<OutboxOp>> {
        self.tx.in_flight()
    }
    fn next_ops(&self, limit: usize, first: &[String]) -> Result<Vec<OutboxOp>> {
        self.tx.next_ops(limit, first)
    }
    fn summary(&self) -> Result<Summary> {
        self.tx.summary()
    }
    fn oldest_pending_ms(&self) -> Result<Option<u64>> {
        self.tx.oldest_pending_ms()
    }
    fn held_ops(&self) -> Result<Vec<OutboxOp>> {
        self.tx.held_ops()
    }
    fn op(&self, op_id: Uuid) -> Result<Option<OutboxOp>> {
        self.tx.op(op_id)
    }
    fn conflicts(&self, open: bool) -> Result<Vec<ConflictRecord>> {
        self.tx.conflicts(open)
    }
    fn conflict(&self, id: i64) -> Result<Option<ConflictRecord>> {
        self.tx.conflict(id)
    }
    fn snapshot_active(&self) -> Result<bool> {
        self.tx.snapshot_active()
    }
    fn data_version(&self) -> Result<u64> {
        self.tx.data_version()
    }
}

impl StoreTx for Recording<'_> {
    fn put_record(&mut self, record: &LocalRecord) -> Result<()> {
        self.tx.put_record(record)?;
        self.note(&record.entity, &record.record_id);
        Ok(())
    }
    fn insert_new_record(&mut self, record: &LocalRecord) -> Result<bool> {
        let inserted = self.tx.insert_new_record(record)?;
        if inserted {
            self.note(&record.entity, &record.record_id);
        }
        Ok(inserted)
    }
    fn remove_record(&mut self, entity: &str, record_id: &str) -> Result<()> {
        self.tx.remove_record(entity, record_id)?;
        self.note(entity, record_id);
        Ok(())
    }
    fn insert_op(&mut self, op: &OutboxOp) -> Result<i64> {
        self.tx.insert_op(op)
    }
    fn update_op(&mut self, op: &OutboxOp) -> Result<()> {
        self.tx.update_op(op)
    }
    fn remove_op(&mut self, seq: i64) -> Result<()> {
        self.tx.remove_op(seq)
    }
    fn confirm_sole_op(&mut self, entity: &str, record_id: &str, seq: i64, version: u64) -> Result<bool> {
        let confirmed = self.tx.confirm_sole_op(entity, record_id, seq, version)?;
        if confirmed {
            self.note(entity, record_id);
        }
        Ok(confirmed)
    }
    fn mark_in_flight(&mut self, seqs: &[i64], batch_id: &str) -> Result<()> {
        self.tx.mark_in_flight(seqs, batch_id)
    }
    fn insert_conflict(&mut self, conflict: &ConflictRecord) -> Result<i64> {
        self.tx.insert_conflict(conflict)
    }
    fn update_conflict(&mut self, conflict: &ConflictRecord) -> Result<()> {
        self.tx.update_conflict(conflict)
    }
    fn set_device_state(&mut self, state: &DeviceState) -> Result<()> {
        self.tx.set_device_state(state)
    }
    fn snapshot_begin(&mut self) -> Result<()> {
        self.tx.snapshot_begin()
    }
    fn snapshot_seen(&mut self, entity: &str, record_id: &str) -> Result<()> {
        self.tx.snapshot_seen(entity, record_id)
    }
    fn snapshot_take(&mut self, limit: usize) -> Result<Vec<(String, String)>> {
        self.tx.snapshot_take(limit)
    }
}
