//! One sync cycle: push the outbox in bounded batches, then pull the change feed to its end.

use std::collections::HashSet;

use super::write::derive_view;
use super::{Engine, Phase, StatusError, SyncProgress, SyncReport};
use crate::api::SyncApi;
use crate::crash;
use crate::error::{Code, Error, ErrorClass, Result};
use crate::store::{OpState, OutboxOp};
use crate::wire::{Change, Mutation, PullRequest, PushBatch, PushRequest};

impl Engine {
    /// Runs one sync cycle: pushes the whole outbox in batches (resending an unanswered batch
    /// first, with the same idempotency key), persisting each batch's outcomes in one local
    /// transaction, then pulls the change feed page by page, each page and its cursor in one
    /// transaction. A refused token is refreshed once through the engine's `AuthProvider` and
    /// the cycle resumed. Only one cycle runs at a time; a second caller waits for the first.
    pub async fn sync_once(&self) -> Result<SyncReport> {
        let api = self.inner.api.clone().ok_or_else(|| Error::fatal("no sync API configured"))?;
        let _cycle = self.inner.cycle.lock().await;
        let mut report =
            SyncReport { trace_id: self.inner.ids.new_uuid().simple().to_string(), ..SyncReport::default() };
        self.set_phase(Phase::Syncing);
        let to_push = self.status().pending;
        self.set_progress(Some(SyncProgress { to_push, ..SyncProgress::default() }));
        tracing::debug!(trace_id = %report.trace_id, "sync cycle started");
        let trace_id = report.trace_id.clone();
        let mut result = crate::api::in_cycle(trace_id.clone(), self.run_cycle(api.as_ref(), &mut report)).await;
        // A refused token: ask the auth provider for a new one, once, and resume the cycle (an
        // in-flight batch goes again under its key). If that fails too, the user must sign in.
        if let (Err(e), Some(auth)) = (&result, &self.inner.auth)
            && e.class() == ErrorClass::Unauthorized
        {
            match auth.refresh().await {
                Ok(_) => {
                    tracing::info!(trace_id = %report.trace_id, "token refreshed; resuming the cycle");
                    result = crate::api::in_cycle(trace_id, self.run_cycle(api.as_ref(), &mut report)).await;
                }
                Err(re) => tracing::warn!(
                    trace_id = %report.trace_id,
                    code = re.code().map(|c| c.as_str()),
                    "token refresh failed; sync needs auth"
                ),
            }
        }
        let now = self.inner.clock.now_ms();
        let status_error = result.as_ref().err().map(|e| StatusError::of(e, now));
        let outcome = self.off_runtime(move |e| e.finish_cycle(status_error, now)).await;
        self.set_progress(None);
        self.off_runtime(Engine::refresh_summary).await?;
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
        // Conflicts left open by another policy go to the entity's policy now (their settlement
        // may add ops to send).
        self.off_runtime(Engine::offer_open_conflicts).await?;
        // Ops put back after a server error are not sent again in this cycle.
        let mut skip = HashSet::new();
        let mut deferred = None;
        let mut last_failed = false;
        // The next batch, when the previous one's acks marked it in flight.
        let mut next = None;
        loop {
            let (key, ops) = match next.take() {
                Some(batch) => batch,
                None => {
                    let skip = skip.clone();
                    match self.off_runtime(move |e| e.take_batch(&skip)).await? {
                        Some(batch) => batch,
                        None => break,
                    }
                }
            };
            let batch =
                PushBatch { device_id: self.inner.device_id.clone(), mutations: ops.iter().map(to_mutation).collect() };
            report.batches += 1;
            // While the batch is on the wire, the next one is read from the outbox.
            let ahead_skip = skip.clone();
            let (result, ahead) = tokio::join!(
                api.push(PushRequest { idempotency_key: key.clone(), batch }),
                self.off_runtime(move |e| Ok(e.read_ahead(&ahead_skip)))
            );
            crash::point("send.after_response");
            match result {
                Ok(resp) => {
                    let (ahead, trace_id) = (ahead.ok().flatten(), report.trace_id.clone());
                    let (after, counts) = self
                        .off_runtime(move |e| {
                            let asked = e.ask_policies(&ops, &resp)?;
                            e.apply_outcomes(&ops, &resp, asked, &trace_id, ahead)
                        })
                        .await?;
                    next = after;
                    self.advance_progress(|p| p.pushed += counts.accepted + counts.conflicts + counts.rejected);
                    report.accepted += counts.accepted;
                    report.conflicts += counts.conflicts;
                    report.rejected += counts.rejected;
                    last_failed = false;
                }
                Err(e) if e.code() == Some(Code::IdempotencyKeyReused) => {
                    tracing::warn!(batch = %key, "idempotency key reused with another body; resending under a new key");
                    let reason = e.to_string();
                    self.off_runtime(move |en| en.release_batch(&ops, &reason, OpState::Pending)).await?;
                }
                Err(e) if ops.len() > 1 && matches!(e.code(), Some(Code::BatchTooLarge | Code::BodyTooLarge)) => {
                    // The server takes smaller batches than configured: halve and go on.
                    let smaller = ops.len() / 2;
                    tracing::warn!(batch = %key, ops = ops.len(), smaller, "batch too large for the server; sending smaller ones");
                    self.inner.batch_limit.store(smaller, std::sync::atomic::Ordering::Relaxed);
                    let reason = e.to_string();
                    self.off_runtime(move |en| en.release_batch(&ops, &reason, OpState::Pending)).await?;
                }
                Err(e) if e.code() == Some(Code::Forbidden) => {
                    // The token may not push at all: the ops wait, pending, for one that may.
                    tracing::warn!(batch = %key, ops = ops.len(), "the token may not push; the ops stay pending");
                    let reason = e.to_string();
                    self.off_runtime(move |en| en.release_batch(&ops, &reason, OpState::Pending)).await?;
                    return Err(e);
                }
                Err(e) if e.class() == ErrorClass::Rejected => {
                    tracing::warn!(batch = %key, code = ?e.code(), ops = ops.len(), "batch refused whole");
                    // A lone op over the body limit is a record the user must make smaller.
                    let state = match e.code() {
                        Some(Code::BodyTooLarge) => OpState::NeedsAction,
                        _ => OpState::DeadLetter,
                    };
                    report.rejected += ops.len() as u64;
                    let reason = e.to_string();
                    self.off_runtime(move |en| en.release_batch(&ops, &reason, state)).await?;
                }
                Err(e) if e.code() == Some(Code::Internal) => {
                    // The server failed on this batch. Its ops go back under a new key with one
                    // more attempt, and travel alone from now on, so a poison op holds back only
                    // itself. A lone op that failed does not stop the cycle unless the batch
                    // before it failed too (then the server itself is in trouble).
                    tracing::warn!(batch = %key, ops = ops.len(), "server error on a batch; its ops go back to the queue");
                    skip.extend(ops.iter().map(|o| o.seq));
                    let (lone, reason) = (ops.len() == 1, e.to_string());
                    report.rejected += self.off_runtime(move |en| en.count_failures(&ops, &reason)).await?;
                    if last_failed || !lone {
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
            let cursor = self.off_runtime(|e| Ok(e.lock().store.device_state()?.cursor)).await?;
            let page = match api.pull(PullRequest { cursor, limit: Some(self.inner.config.pull_limit) }).await {
                Err(e) if e.code() == Some(Code::CursorExpired) && !restarted => {
                    // The server cannot continue from our cursor: re-read the feed from the start.
                    // Pending ops stay in the outbox and stay on top of what arrives.
                    tracing::warn!(trace_id = %report.trace_id, "cursor expired; re-syncing from the start of the feed");
                    restarted = true;
                    self.off_runtime(|e| {
                        e.lock().store.transact(&mut |tx| {
                            let mut device = tx.device_state()?;
                            device.cursor = None;
                            tx.set_device_state(&device)?;
                            tx.snapshot_begin()
                        })
                    })
                    .await?;
                    continue;
                }
                other => other?,
            };
            crash::point("pull.after_fetch");
            report.pages += 1;
            report.pulled += page.changes.len() as u64;
            let pulled = report.pulled;
            self.advance_progress(|p| p.pulled = pulled);
            let has_more = page.has_more;
            self.off_runtime(move |e| e.apply_page(page.changes, page.cursor)).await?;
            crash::point("pull.after_commit");
            if !has_more {
                return self.off_runtime(Engine::finish_snapshot).await;
            }
        }
    }

    /// Sets the running cycle's progress in the status.
    fn set_progress(&self, progress: Option<SyncProgress>) {
        self.inner.status.send_modify(|s| s.progress = progress);
    }

    /// Moves the running cycle's progress on.
    fn advance_progress(&self, f: impl FnOnce(&mut SyncProgress)) {
        self.inner.status.send_modify(|s| {
            if let Some(p) = &mut s.progress {
                f(p);
            }
        });
    }

    /// Runs store work (and the policies it asks) on tokio's blocking pool, so an app's async
    /// runtime is never blocked by SQLite or a slow policy. A panic there is a fatal error.
    pub(super) async fn off_runtime<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| Error::fatal_from("a store task of the sync cycle failed", e))?
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

    /// Records how the cycle ended (`status_error`: how it failed) in the store and the status.
    fn finish_cycle(&self, status_error: Option<StatusError>, now: u64) -> Result<()> {
        let ok = status_error.is_none();
        let mut st = self.lock();
        st.metrics.cycle(ok);
        let mut device = st.store.device_state()?;
        device.metrics = st.metrics.clone();
        if ok {
            device.last_success_ms = Some(now);
        }
        device.last_error = status_error.as_ref().and_then(|e| serde_json::to_string(e).ok());
        st.store.transact(&mut |tx| tx.set_device_state(&device))?;
        if ok && let Err(e) = st.store.checkpoint() {
            tracing::warn!(error = %e.report(), "passive checkpoint failed");
        }
        drop(st);
        let phase = status_error.as_ref().map_or(Phase::Idle, StatusError::phase);
        self.inner.status.send_modify(|s| {
            s.phase = phase;
            s.progress = None;
            if ok {
                s.last_success_ms = Some(now);
            }
            s.last_error = status_error.clone();
        });
        Ok(())
    }
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
