//! One sync cycle: push the outbox in bounded batches, then pull the change feed to its end.

use std::sync::Arc;

use super::resolve::settle_conflict;
use super::write::derive_view;
use super::{Delta, Engine, Phase, StatusError, SyncReport, counters};
use crate::api::SyncApi;
use crate::error::{Code, Error, ErrorClass, Result};
use crate::model::{Op, apply_patch, json_size};
use crate::store::{OpState, OutboxOp};
use crate::wire::{Change, Mutation, OpOutcome, PullRequest, PushBatch, PushRequest, PushResponse};

impl Engine {
    /// Runs one sync cycle: pushes the whole outbox in batches (resending an unanswered batch
    /// first, with the same idempotency key), persisting each batch's outcomes in one local
    /// transaction, then pulls the change feed page by page, each page and its cursor in one
    /// transaction. Only one cycle runs at a time; a second caller waits for the first.
    pub async fn sync_once(&self) -> Result<SyncReport> {
        let api = self.inner.api.clone().ok_or_else(|| Error::Fatal("no sync API configured".into()))?;
        let _cycle = self.inner.cycle.lock().await;
        let mut report =
            SyncReport { trace_id: self.inner.ids.new_uuid().simple().to_string(), ..SyncReport::default() };
        self.set_phase(Phase::Syncing);
        tracing::debug!(trace_id = %report.trace_id, "sync cycle started");
        let result = self.run_cycle(api, &mut report).await;
        let now = self.inner.clock.now_ms();
        let outcome = self.finish_cycle(&result, now);
        self.refresh_summary()?;
        outcome?;
        tracing::info!(
            trace_id = %report.trace_id,
            batches = report.batches,
            accepted = report.accepted,
            conflicts = report.conflicts,
            rejected = report.rejected,
            pulled = report.pulled,
            "sync cycle done"
        );
        result.map(|()| report)
    }

    async fn run_cycle(&self, api: Arc<dyn SyncApi>, report: &mut SyncReport) -> Result<()> {
        while let Some((key, ops)) = self.take_batch()? {
            let batch =
                PushBatch { device_id: self.inner.device_id.clone(), mutations: ops.iter().map(to_mutation).collect() };
            report.batches += 1;
            match api.push(PushRequest { idempotency_key: key.clone(), batch }).await {
                Ok(resp) => self.apply_outcomes(&ops, &resp, report)?,
                Err(e) if e.code() == Some(Code::IdempotencyKeyReused) => {
                    tracing::warn!(batch = %key, "idempotency key reused with another body; resending under a new key");
                    self.release_batch(&ops, &e, false)?;
                }
                Err(e) if e.class() == ErrorClass::Rejected => {
                    tracing::warn!(batch = %key, code = ?e.code(), ops = ops.len(), "batch refused whole");
                    self.release_batch(&ops, &e, true)?;
                    report.rejected += ops.len() as u64;
                }
                Err(e) => {
                    self.count_attempt(&ops, &e)?;
                    return Err(e);
                }
            }
        }
        let mut restarted = false;
        loop {
            let cursor = self.lock().store.device_state()?.cursor;
            let page = match api.pull(PullRequest { cursor, limit: Some(self.inner.config.pull_limit) }).await {
                Err(e) if e.code() == Some(Code::CursorExpired) && !restarted => {
                    // The server cannot continue from our cursor: re-read the feed from the start.
                    // Pending ops stay in the outbox and stay on top of what arrives.
                    tracing::warn!(trace_id = %report.trace_id, "cursor expired; re-syncing from the start of the feed");
                    restarted = true;
                    self.lock().store.transact(&mut |tx| {
                        let mut device = tx.device_state()?;
                        device.cursor = None;
                        tx.set_device_state(&device)
                    })?;
                    continue;
                }
                other => other?,
            };
            report.pages += 1;
            report.pulled += page.changes.len() as u64;
            let has_more = page.has_more;
            self.apply_page(page.changes, page.cursor)?;
            if !has_more {
                return Ok(());
            }
        }
    }

    /// The batch to send: the one in flight (resent as it was), else up to `batch_size` pending
    /// ops, one per record, marked in flight under a new key in one transaction.
    fn take_batch(&self) -> Result<Option<(String, Vec<OutboxOp>)>> {
        let mut st = self.lock();
        let in_flight = st.store.in_flight()?;
        if let Some(key) = in_flight.first().and_then(|o| o.batch_id.clone()) {
            let ops = in_flight.into_iter().filter(|o| o.batch_id.as_deref() == Some(&key)).collect();
            return Ok(Some((key, ops)));
        }
        let mut ops = st.store.next_ops(self.inner.config.batch_size)?;
        if ops.is_empty() {
            return Ok(None);
        }
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
        let key = self.inner.ids.new_uuid().to_string();
        for op in &mut ops {
            op.state = OpState::InFlight;
            op.batch_id = Some(key.clone());
        }
        let seqs: Vec<i64> = ops.iter().map(|o| o.seq).collect();
        st.store.transact(&mut |tx| tx.mark_in_flight(&seqs, &key))?;
        Ok(Some((key, ops)))
    }

    /// Puts a batch's ops back: pending (to go out under a new key), or failed.
    fn release_batch(&self, ops: &[OutboxOp], err: &Error, failed: bool) -> Result<()> {
        let mut st = self.lock();
        let mut delta = Delta::default();
        st.store.transact(&mut |tx| {
            delta = Delta::default();
            for op in ops {
                let op = unsent(op, if failed { OpState::Failed } else { OpState::Pending }, err.to_string());
                if failed && let Some(mut rec) = tx.record(&op.entity, &op.record_id)? {
                    let before = counters(&rec);
                    rec.failed += 1;
                    tx.put_record(&rec)?;
                    delta.track(before, &rec);
                }
                tx.update_op(&op)?;
            }
            Ok(())
        })?;
        self.apply_delta(&mut st, delta)
    }

    fn count_attempt(&self, ops: &[OutboxOp], err: &Error) -> Result<()> {
        let mut st = self.lock();
        st.store.transact(&mut |tx| {
            for op in ops {
                let mut op = op.clone();
                op.attempts += 1;
                op.last_error = Some(err.to_string());
                tx.update_op(&op)?;
            }
            Ok(())
        })
    }

    /// Persists one batch's outcomes in one transaction.
    fn apply_outcomes(&self, ops: &[OutboxOp], resp: &PushResponse, report: &mut SyncReport) -> Result<()> {
        let outcomes = resp.outcomes();
        let now = self.inner.clock.now_ms();
        let mut guard = self.lock();
        let super::State { store, hlc, .. } = &mut *guard;
        let mut counts = (0u64, 0u64, 0u64);
        let mut delta = Delta::default();
        store.transact(&mut |tx| {
            counts = (0, 0, 0);
            delta = Delta::default();
            for op in ops {
                let Some(mut rec) = tx.record(&op.entity, &op.record_id)? else {
                    return Err(Error::Fatal("an outbox op without its record".into()));
                };
                let before = counters(&rec);
                match outcomes.get(&op.op_id) {
                    Some(OpOutcome::Accepted(a)) => {
                        counts.0 += 1;
                        tx.remove_op(op.seq)?;
                        rec.pending -= 1;
                        if op.op == Op::Delete {
                            rec.server_fields.clear();
                            rec.server_deleted = true;
                        } else {
                            apply_patch(&mut rec.server_fields, &op.patch);
                            rec.server_deleted = false;
                        }
                        rec.server_version = rec.server_version.max(a.version);
                        let mut later =
                            if rec.pending > 0 { tx.record_ops(&op.entity, &op.record_id)? } else { Vec::new() };
                        for l in later.iter_mut().filter(|l| l.base_version == op.base_version) {
                            l.base_version = a.version;
                            tx.update_op(l)?;
                        }
                        derive_view(&mut rec, &later);
                    }
                    Some(OpOutcome::Conflict(c)) => {
                        counts.1 += 1;
                        tx.remove_op(op.seq)?;
                        rec.pending -= 1;
                        let policy = self.policy_for(&op.entity);
                        settle_conflict(
                            tx,
                            &mut rec,
                            op,
                            c,
                            policy.as_ref(),
                            hlc,
                            now,
                            &report.trace_id,
                            &*self.inner.ids,
                        )?;
                    }
                    Some(OpOutcome::Rejected(r)) if !r.retryable => {
                        counts.2 += 1;
                        // A validation refusal needs the user to change the data; others fail.
                        let state = match r.code {
                            Code::InvalidRequest | Code::RecordTooLarge | Code::CheckModeTooWeak => {
                                OpState::NeedsAction
                            }
                            _ => OpState::Failed,
                        };
                        tx.update_op(&unsent(op, state, format!("{}: {}", r.code, r.message)))?;
                        rec.failed += 1;
                    }
                    other => {
                        let error = match other {
                            Some(OpOutcome::Rejected(r)) => format!("{}: {}", r.code, r.message),
                            _ => "the server's answer did not mention this op".into(),
                        };
                        let mut op = unsent(op, OpState::Pending, error);
                        op.attempts += 1;
                        tx.update_op(&op)?;
                    }
                }
                tx.put_record(&rec)?;
                delta.track(before, &rec);
            }
            let mut device = tx.device_state()?;
            device.hlc = Some(hlc.last().clone());
            tx.set_device_state(&device)
        })?;
        self.apply_delta(&mut guard, delta)?;
        report.accepted += counts.0;
        report.conflicts += counts.1;
        report.rejected += counts.2;
        Ok(())
    }

    /// Applies one page of the change feed and its cursor in one transaction. A change older than
    /// the record's confirmed version is skipped; pending local ops stay on top.
    fn apply_page(&self, changes: Vec<Change>, cursor: String) -> Result<()> {
        let mut st = self.lock();
        st.store.transact(&mut |tx| {
            for ch in &changes {
                let mut rec = match tx.record(&ch.entity, &ch.record_id)? {
                    Some(r) if ch.version < r.server_version => continue,
                    // Already known exactly (typically this device's own acknowledged change).
                    Some(r)
                        if ch.version == r.server_version
                            && ch.deleted == r.server_deleted
                            && ch.fields == r.server_fields =>
                    {
                        continue;
                    }
                    Some(r) => r,
                    None => super::write::new_local(&ch.entity, &ch.record_id),
                };
                rec.server_version = ch.version;
                rec.server_fields = ch.fields.clone();
                rec.server_deleted = ch.deleted;
                let ops = if rec.pending > 0 { tx.record_ops(&ch.entity, &ch.record_id)? } else { Vec::new() };
                derive_view(&mut rec, &ops);
                tx.put_record(&rec)?;
            }
            let mut device = tx.device_state()?;
            device.cursor = Some(cursor.clone());
            tx.set_device_state(&device)
        })
    }

    /// Records how the cycle ended in the store and the status.
    fn finish_cycle(&self, result: &Result<()>, now: u64) -> Result<()> {
        let mut st = self.lock();
        let mut device = st.store.device_state()?;
        let status_error = match result {
            Ok(()) => {
                device.last_success_ms = Some(now);
                device.last_error = None;
                None
            }
            Err(e) => {
                device.last_error = Some(e.to_string());
                Some(StatusError {
                    code: e.code().map(|c| c.to_string()),
                    message: e.to_string(),
                    class: e.class(),
                    at_ms: now,
                })
            }
        };
        st.store.transact(&mut |tx| tx.set_device_state(&device))?;
        if result.is_ok()
            && let Err(e) = st.store.checkpoint()
        {
            tracing::warn!(error = %e, "passive checkpoint failed");
        }
        drop(st);
        let phase = match result {
            Ok(()) => Phase::Idle,
            Err(Error::Offline(_)) => Phase::Offline,
            Err(e) => match e.class() {
                ErrorClass::Unauthorized => Phase::NeedsAuth,
                ErrorClass::Retryable => Phase::Idle,
                ErrorClass::Rejected | ErrorClass::Fatal => Phase::Failed,
            },
        };
        self.inner.status.send_modify(|s| {
            s.phase = phase;
            if result.is_ok() {
                s.last_success_ms = Some(now);
            }
            s.last_error = status_error.clone();
        });
        Ok(())
    }
}

/// An op taken out of its batch, in `state`, with the reason.
fn unsent(op: &OutboxOp, state: OpState, error: String) -> OutboxOp {
    OutboxOp { state, batch_id: None, last_error: Some(error), ..op.clone() }
}

fn to_mutation(op: &OutboxOp) -> Mutation {
    Mutation {
        op_id: op.op_id,
        entity: op.entity.clone(),
        record_id: op.record_id.clone(),
        op: op.op,
        base_version: op.base_version,
        patch: op.patch.clone(),
        hlc: op.hlc.clone(),
        check: op.check,
    }
}
