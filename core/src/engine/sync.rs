//! One sync cycle: push the outbox in bounded batches, then pull the change feed to its end.

use std::collections::HashSet;

use super::batch::Ahead;
use super::resolve::settle_conflict;
use super::write::derive_view;
use super::{Delta, Engine, Phase, StatusError, SyncReport, counters};
use crate::api::SyncApi;
use crate::crash;
use crate::error::{Code, Error, ErrorClass, Result};
use crate::model::{CheckMode, Op, Version, apply_patch};
use crate::store::{LocalRecord, OpState, OutboxOp};
use crate::wire::{Change, Mutation, OpOutcome, PullRequest, PushBatch, PushRequest, PushResponse};

impl Engine {
    /// Runs one sync cycle: pushes the whole outbox in batches (resending an unanswered batch
    /// first, with the same idempotency key), persisting each batch's outcomes in one local
    /// transaction, then pulls the change feed page by page, each page and its cursor in one
    /// transaction. Only one cycle runs at a time; a second caller waits for the first.
    pub async fn sync_once(&self) -> Result<SyncReport> {
        let api = self.inner.api.clone().ok_or_else(|| Error::fatal("no sync API configured"))?;
        let _cycle = self.inner.cycle.lock().await;
        let mut report =
            SyncReport { trace_id: self.inner.ids.new_uuid().simple().to_string(), ..SyncReport::default() };
        self.set_phase(Phase::Syncing);
        tracing::debug!(trace_id = %report.trace_id, "sync cycle started");
        api.trace(Some(&report.trace_id));
        let result = self.run_cycle(api.as_ref(), &mut report).await;
        api.trace(None);
        let now = self.inner.clock.now_ms();
        let outcome = self.finish_cycle(&result, now);
        self.refresh_summary()?;
        outcome?;
        match &result {
            Ok(()) => tracing::info!(
                trace_id = %report.trace_id,
                batches = report.batches,
                accepted = report.accepted,
                conflicts = report.conflicts,
                rejected = report.rejected,
                pulled = report.pulled,
                "sync cycle done"
            ),
            Err(e) => tracing::info!(
                trace_id = %report.trace_id,
                batches = report.batches,
                accepted = report.accepted,
                code = e.code().map(Code::as_str),
                class = ?e.class(),
                "sync cycle stopped"
            ),
        }
        result.map(|()| report)
    }

    async fn run_cycle(&self, api: &dyn SyncApi, report: &mut SyncReport) -> Result<()> {
        // Ops put back after a server error are not sent again in this cycle.
        let mut skip = HashSet::new();
        let mut deferred = None;
        let mut last_failed = false;
        // The next batch, when the previous one's acks marked it in flight.
        let mut next = None;
        loop {
            let (key, ops) = match next.take() {
                Some(batch) => batch,
                None => match self.take_batch(&skip)? {
                    Some(batch) => batch,
                    None => break,
                },
            };
            let batch =
                PushBatch { device_id: self.inner.device_id.clone(), mutations: ops.iter().map(to_mutation).collect() };
            report.batches += 1;
            // While the batch is on the wire, the next one is read from the outbox.
            let (result, ahead) = tokio::join!(api.push(PushRequest { idempotency_key: key.clone(), batch }), async {
                self.read_ahead(&skip)
            });
            crash::point("send.after_response");
            match result {
                Ok(resp) => {
                    next = self.apply_outcomes(&ops, &resp, report, ahead)?;
                    last_failed = false;
                }
                Err(e) if e.code() == Some(Code::IdempotencyKeyReused) => {
                    tracing::warn!(batch = %key, "idempotency key reused with another body; resending under a new key");
                    self.release_batch(&ops, &e, OpState::Pending)?;
                }
                Err(e) if ops.len() > 1 && matches!(e.code(), Some(Code::BatchTooLarge | Code::BodyTooLarge)) => {
                    // The server takes smaller batches than configured: halve and go on.
                    let smaller = ops.len() / 2;
                    tracing::warn!(batch = %key, ops = ops.len(), smaller, "batch too large for the server; sending smaller ones");
                    self.inner.batch_limit.store(smaller, std::sync::atomic::Ordering::Relaxed);
                    self.release_batch(&ops, &e, OpState::Pending)?;
                }
                Err(e) if e.class() == ErrorClass::Rejected => {
                    tracing::warn!(batch = %key, code = ?e.code(), ops = ops.len(), "batch refused whole");
                    // A lone op over the body limit is a record the user must make smaller.
                    let state = match e.code() {
                        Some(Code::BodyTooLarge) => OpState::NeedsAction,
                        _ => OpState::DeadLetter,
                    };
                    self.release_batch(&ops, &e, state)?;
                    report.rejected += ops.len() as u64;
                }
                Err(e) if e.code() == Some(Code::Internal) => {
                    // The server failed on this batch. Its ops go back under a new key with one
                    // more attempt, and travel alone from now on, so a poison op holds back only
                    // itself. A lone op that failed does not stop the cycle unless the batch
                    // before it failed too (then the server itself is in trouble).
                    tracing::warn!(batch = %key, ops = ops.len(), "server error on a batch; its ops go back to the queue");
                    report.rejected += self.count_failures(&ops, &e)?;
                    skip.extend(ops.iter().map(|o| o.seq));
                    if last_failed || ops.len() > 1 {
                        return Err(e);
                    }
                    last_failed = true;
                    deferred = Some(e);
                }
                // Offline, busy, rate limited, unauthorized: the batch stays in flight and is
                // resent as it is, with the same key, when the cycle runs again.
                Err(e) => return Err(e),
            }
        }
        self.pull_all(api, report).await?;
        deferred.map_or(Ok(()), Err)
    }

    async fn pull_all(&self, api: &dyn SyncApi, report: &mut SyncReport) -> Result<()> {
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
                        tx.set_device_state(&device)?;
                        tx.snapshot_begin()
                    })?;
                    continue;
                }
                other => other?,
            };
            crash::point("pull.after_fetch");
            report.pages += 1;
            report.pulled += page.changes.len() as u64;
            let has_more = page.has_more;
            self.apply_page(page.changes, page.cursor)?;
            crash::point("pull.after_commit");
            if !has_more {
                return self.finish_snapshot();
            }
        }
    }

    /// Persists one batch's outcomes in one transaction. The next batch, read `ahead` while this
    /// one was on the wire, is marked in flight in the same transaction if nothing was written
    /// to the store since (its data version did not move); it is returned, to go out next.
    fn apply_outcomes(
        &self,
        ops: &[OutboxOp],
        resp: &PushResponse,
        report: &mut SyncReport,
        ahead: Option<Ahead>,
    ) -> Result<Option<(String, Vec<OutboxOp>)>> {
        let outcomes = resp.outcomes();
        let now = self.inner.clock.now_ms();
        let max = self.inner.config.max_attempts;
        let ids = &*self.inner.ids;
        let mut guard = self.lock();
        let super::State { store, hlc, metrics, .. } = &mut *guard;
        let mut next_key = None;
        let mut counts = (0u64, 0u64, 0u64);
        let mut delta = Delta::default();
        let mut m = metrics.clone();
        store.transact(&mut |tx| {
            for op in ops {
                let outcome = outcomes.get(&op.op_id);
                if let Some(OpOutcome::Accepted(a)) = outcome {
                    counts.0 += 1;
                    m.acknowledged(&op.entity, false, op.created_ms, now, op.attempts);
                    // The common case, the record's only op: its view becomes the confirmed
                    // state in the store, without reading or writing its fields.
                    if tx.confirm_sole_op(&op.entity, &op.record_id, op.seq, a.version)? {
                        delta.pending -= 1;
                        continue;
                    }
                }
                let Some(mut rec) = tx.record(&op.entity, &op.record_id)? else {
                    return Err(Error::fatal("an outbox op without its record"));
                };
                let before = counters(&rec);
                match outcome {
                    Some(OpOutcome::Accepted(a)) => {
                        tx.remove_op(op.seq)?;
                        rec.op_removed(op.state)?;
                        let mut later =
                            if rec.pending > 0 { tx.record_ops(&op.entity, &op.record_id)? } else { Vec::new() };
                        for l in confirm_accepted(&mut rec, op, a.version, &mut later) {
                            tx.update_op(l)?;
                        }
                        derive_view(&mut rec, &later);
                    }
                    Some(OpOutcome::Conflict(c)) => {
                        counts.1 += 1;
                        m.acknowledged(&op.entity, true, op.created_ms, now, op.attempts);
                        tx.remove_op(op.seq)?;
                        rec.op_removed(op.state)?;
                        let policy = self.policy_for(&op.entity);
                        settle_conflict(tx, &mut rec, op, c, policy.as_ref(), hlc, now, &report.trace_id, ids)?;
                    }
                    Some(OpOutcome::Rejected(r)) if !r.retryable => {
                        counts.2 += 1;
                        // A validation refusal needs the user to change the data; others are dead
                        // letters. The server's answer for the op id is final: a retry is a new op.
                        let state = match r.code {
                            Code::InvalidRequest | Code::RecordTooLarge | Code::CheckModeTooWeak => {
                                OpState::NeedsAction
                            }
                            _ => OpState::DeadLetter,
                        };
                        let mut held = unsent(op, state, format!("{}: {}", r.code, r.message));
                        held.op_id = ids.new_uuid();
                        tx.update_op(&held)?;
                        rec.op_held();
                    }
                    other => {
                        let error = match other {
                            Some(OpOutcome::Rejected(r)) => format!("{}: {}", r.code, r.message),
                            _ => "the server's answer did not mention this op".into(),
                        };
                        let op = failed_attempt(op, error, max);
                        if op.state == OpState::DeadLetter {
                            counts.2 += 1;
                            rec.op_held();
                        }
                        tx.update_op(&op)?;
                    }
                }
                tx.put_record(&rec)?;
                delta.track(before, &rec);
            }
            let mut device = tx.device_state()?;
            device.hlc = Some(hlc.last().clone());
            device.metrics = m.clone();
            tx.set_device_state(&device)?;
            if let Some(a) = &ahead
                && a.still_current(&*tx)?
            {
                let key = ids.new_uuid().to_string();
                tx.mark_in_flight(&a.seqs(), &key)?;
                next_key = Some(key);
                crash::point("batch.before_commit");
            }
            crash::point("ack.before_commit");
            Ok(())
        })?;
        guard.metrics = m;
        crash::point("ack.after_commit");
        let next = next_key.zip(ahead).map(|(key, a)| a.into_batch(key));
        if next.is_some() {
            crash::point("batch.after_commit");
        }
        self.apply_delta(&mut guard, delta)?;
        report.accepted += counts.0;
        report.conflicts += counts.1;
        report.rejected += counts.2;
        Ok(next)
    }

    /// Applies one page of the change feed and its cursor in one transaction. A change older than
    /// the record's confirmed version is skipped; pending local ops stay on top.
    fn apply_page(&self, changes: Vec<Change>, cursor: String) -> Result<()> {
        let mut st = self.lock();
        st.store.transact(&mut |tx| {
            if tx.snapshot_active()? {
                for ch in &changes {
                    tx.snapshot_seen(&ch.entity, &ch.record_id)?;
                }
            }
            for ch in &changes {
                let mut rec = match tx.record(&ch.entity, &ch.record_id)? {
                    // A live record below a tombstone we hold was created again after the
                    // server compacted the tombstone away (its versions start over).
                    Some(r) if ch.version < r.server_version && (ch.deleted || !r.server_deleted) => continue,
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
            crash::point("pull.before_cursor");
            let mut device = tx.device_state()?;
            device.cursor = Some(cursor.clone());
            tx.set_device_state(&device)
        })
    }

    /// Ends a re-sync from the start: a confirmed record the feed never mentioned was deleted on
    /// the server and its tombstone compacted away, so it is deleted here too (pending ops stay
    /// on top). Done in bounded transactions, so memory stays flat.
    fn finish_snapshot(&self) -> Result<()> {
        let mut st = self.lock();
        if !st.store.snapshot_active()? {
            return Ok(());
        }
        let mut removed = 0usize;
        loop {
            let mut more = false;
            st.store.transact(&mut |tx| {
                let keys = tx.snapshot_take(1000)?;
                more = !keys.is_empty();
                for (entity, record_id) in &keys {
                    let Some(mut rec) = tx.record(entity, record_id)? else { continue };
                    rec.server_fields.clear();
                    rec.server_deleted = true;
                    let ops = if rec.pending > 0 { tx.record_ops(entity, record_id)? } else { Vec::new() };
                    derive_view(&mut rec, &ops);
                    tx.put_record(&rec)?;
                }
                removed += keys.len();
                Ok(())
            })?;
            if !more {
                break;
            }
        }
        tracing::info!(removed, "re-sync done; records the server no longer has are deleted here");
        Ok(())
    }

    /// Records how the cycle ended in the store and the status.
    fn finish_cycle(&self, result: &Result<()>, now: u64) -> Result<()> {
        let mut st = self.lock();
        st.metrics.cycle(result.is_ok());
        let mut device = st.store.device_state()?;
        device.metrics = st.metrics.clone();
        let status_error = match result {
            Ok(()) => {
                device.last_success_ms = Some(now);
                None
            }
            Err(e) => Some(StatusError::of(e, now)),
        };
        device.last_error = status_error.as_ref().and_then(|e| serde_json::to_string(e).ok());
        st.store.transact(&mut |tx| tx.set_device_state(&device))?;
        if result.is_ok()
            && let Err(e) = st.store.checkpoint()
        {
            tracing::warn!(error = %e.report(), "passive checkpoint failed");
        }
        drop(st);
        let phase = status_error.as_ref().map_or(Phase::Idle, StatusError::phase);
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

/// Takes an accepted op into the record's confirmed state and returns the later ops of the
/// record that were rebased on the answer's version, for the caller to write.
///
/// A version is only ever claimed with the state it names: the base an op carries is what the
/// server checks it against, so a base claimed without its state would let the op silently
/// overwrite changes the user never saw. The server applied the op on the version right before
/// the answer's, so:
/// - the record's confirmed state moves to the answer's version when the device held the version
///   before it (that state plus the op is the server's); otherwise others changed the record in
///   between: the op's effect joins the confirmed fields (the user's knowledge, the base a merge
///   starts from), the version stays, and the pull brings the server's state;
/// - a later op moves to the answer's version when it was made on the version before it (it saw
///   that state with this op on top, which is now the server's); otherwise it keeps its base, so
///   the server checks it against the changes it never saw.
///
/// Under `lww` the server orders writes by HLC and never reads a base: there the version is
/// claimed and later ops of the op's base move on regardless (an update after a create needs a
/// base of at least 1). A feed page already at (or past) the answer's version holds the op's
/// effect as the server applied it (an op answered late, after a server error) and stays.
pub(super) fn confirm_accepted<'a>(
    rec: &mut LocalRecord,
    op: &'a OutboxOp,
    version: Version,
    later: &'a mut [OutboxOp],
) -> impl Iterator<Item = &'a OutboxOp> + 'a {
    let lww = op.check == CheckMode::Lww;
    if version > rec.server_version {
        if op.op == Op::Delete {
            rec.server_fields.clear();
            rec.server_deleted = true;
        } else {
            apply_patch(&mut rec.server_fields, &op.patch);
            rec.server_deleted = false;
        }
        if version == rec.server_version + 1 || lww {
            rec.server_version = version;
        }
    }
    later.iter_mut().filter(move |l| version == l.base_version + 1 || (lww && l.base_version == op.base_version)).map(
        move |l| {
            l.base_version = version;
            &*l
        },
    )
}

/// An op put back after a send that got no final answer: one more attempt, and a dead letter
/// once out of attempts.
pub(super) fn failed_attempt(op: &OutboxOp, error: String, max_attempts: u32) -> OutboxOp {
    let mut op = unsent(op, OpState::Pending, error);
    op.attempts += 1;
    if op.attempts > max_attempts {
        op.state = OpState::DeadLetter;
    }
    op
}

/// An op taken out of its batch, in `state`, with the reason.
pub(super) fn unsent(op: &OutboxOp, state: OpState, error: String) -> OutboxOp {
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
