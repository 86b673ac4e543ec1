//! Storing a push batch's outcomes: acknowledged ops join the confirmed state, conflicts are
//! settled by their entity's policy (asked outside the engine's lock first), refusals are held.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::batch::{Ahead, Batch};
use super::resolve::{ask_policy, settle_conflict};
use super::sync::{failed_attempt, unsent};
use super::write::derive_view;
use super::{Delta, Engine, counters};
use crate::crash;
use crate::error::{Code, Error, Result};
use crate::model::{CheckMode, Op, Version, apply_patch};
use crate::policy::{MergePolicy, Resolution};
use crate::store::{LocalRecord, OpState, OutboxOp};
use crate::wire::{OpOutcome, PushResponse};

/// A policy's answer to a conflict, and the record and outbox ops it was asked about.
pub(super) struct Asked {
    rec: LocalRecord,
    ops: Vec<OutboxOp>,
    policy: Arc<dyn MergePolicy>,
    resolution: Resolution,
}

/// How many ops of a batch were accepted, conflicted and refused for good.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    pub(super) accepted: u64,
    pub(super) conflicts: u64,
    pub(super) rejected: u64,
}

impl Engine {
    /// Asks the policies about the conflicts of a batch's answer, each about its record as read
    /// now. The reads take the engine's lock briefly; the policies run without it, so a slow
    /// policy (a WASM plugin near its fuel limit) never holds up the app's writes.
    pub(super) fn ask_policies(&self, ops: &[OutboxOp], resp: &PushResponse) -> Result<HashMap<Uuid, Asked>> {
        let mut asked = HashMap::new();
        if resp.conflicts.is_empty() {
            return Ok(asked);
        }
        let conflicting: Vec<&OutboxOp> =
            ops.iter().filter(|o| resp.conflicts.iter().any(|c| c.op_id == o.op_id)).collect();
        let mut reads = Vec::with_capacity(conflicting.len());
        {
            let st = self.lock();
            for op in &conflicting {
                let Some(rec) = st.store.record(&op.entity, &op.record_id)? else { continue };
                reads.push((*op, rec, st.store.record_ops(&op.entity, &op.record_id)?));
            }
        }
        for (op, rec, record_ops) in reads {
            let Some(c) = resp.conflicts.iter().find(|c| c.op_id == op.op_id) else { continue };
            let policy = self.policy_for(&op.entity);
            let resolution = ask_policy(&rec, &record_ops, op, c, policy.as_ref());
            asked.insert(op.op_id, Asked { rec, ops: record_ops, policy, resolution });
        }
        Ok(asked)
    }

    /// Persists one batch's outcomes in one transaction. The conflicts' policies were asked
    /// before, outside the engine's lock ([`Engine::ask_policies`]); an answer is used when the
    /// transaction reads its record as the policy saw it, else (the user wrote to that record
    /// meanwhile) the policy is asked again here. The next batch, read `ahead` while this one was
    /// on the wire, is marked in flight in the same transaction if its ops are unchanged; it is
    /// returned, to go out next, with the counts of accepted, conflicting and refused ops.
    pub(super) fn apply_outcomes(
        &self,
        ops: &[OutboxOp],
        resp: &PushResponse,
        mut asked: HashMap<Uuid, Asked>,
        trace_id: &str,
        ahead: Option<Ahead>,
    ) -> Result<(Option<Batch>, Counts)> {
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
                        let record_ops = tx.record_ops(&op.entity, &op.record_id)?;
                        let (policy, resolution) = match asked.remove(&op.op_id) {
                            Some(a) if a.rec == rec && a.ops == record_ops => (a.policy, a.resolution),
                            _ => {
                                let policy = self.policy_for(&op.entity);
                                let resolution = ask_policy(&rec, &record_ops, op, c, policy.as_ref());
                                (policy, resolution)
                            }
                        };
                        tx.remove_op(op.seq)?;
                        rec.op_removed(op.state)?;
                        let named = (policy.name(), policy.check_mode());
                        settle_conflict(tx, &mut rec, op, c, named, resolution, hlc, now, trace_id, ids)?;
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
        Ok((next, Counts { accepted: counts.0, conflicts: counts.1, rejected: counts.2 }))
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
