//! What a push means, written once for every server store: the key replay, the op replay, the
//! conflict check and the feed numbering, inside the transaction the store opens.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use converge_core::Code;
use converge_core::Scope;
use converge_core::check::{Decision, Rules, StoredRecord, decide};
use converge_core::server_store::{Loaded, PushWrites, ServerStore, StoredPush};
use converge_core::wire::{Accepted, Mutation, OpOutcome, PushResponse, Rejected};

/// Applies a batch in one transaction of `store`. For each mutation in order: an op id seen
/// before (in this tenant) answers its stored outcome and changes nothing; otherwise
/// [`decide`] decides, an applied change takes the next number of the tenant's change sequence,
/// and a final outcome is stored under the op id. The response is stored under (tenant, user,
/// key) with `body_hash` in the same transaction. If the key was stored before (by a push that
/// committed while this one waited for the tenant's lock, on any node), nothing is applied and
/// the stored push is returned as `Err(stored)`.
pub(crate) async fn apply_batch(
    store: &dyn ServerStore,
    scope: &Scope,
    key: &str,
    body_hash: &str,
    mutations: Vec<Mutation>,
    rules: &Rules,
) -> converge_core::Result<Result<PushResponse, StoredPush>> {
    let mut tx = store.begin_push(&scope.tenant).await?;
    // Each record the batch names once, and for each mutation the index of its record.
    let mut index: HashMap<(&str, &str), usize> = HashMap::with_capacity(mutations.len());
    let mut wanted = Vec::with_capacity(mutations.len());
    let slots: Vec<usize> = mutations
        .iter()
        .map(|m| {
            *index.entry((m.entity.as_str(), m.record_id.as_str())).or_insert_with(|| {
                wanted.push((m.entity.clone(), m.record_id.clone()));
                wanted.len() - 1
            })
        })
        .collect();
    let op_ids = mutations.iter().map(|m| m.op_id).collect();
    let (first, mut records, mut answered) = match tx.load(&scope.user, key, op_ids, wanted).await? {
        Loaded { stored: Some(stored), .. } => {
            tx.rollback().await?;
            return Ok(Err(stored));
        }
        Loaded { seq, records, op_results, .. } => (seq, records, op_results),
    };
    let mut seq = first;
    let mut response = PushResponse::default();
    // Per record: the feed position of its last change in this batch.
    let mut changed: Vec<Option<u64>> = vec![None; records.len()];
    // The op ids this batch answers for good, in `answered` with the stored ones: an op id twice
    // in one batch (the service refuses such a batch) answers its first outcome again, as a
    // resend would.
    let mut new_final = Vec::new();
    for (m, &slot) in mutations.iter().zip(&slots) {
        if let Some(stored) = answered.get(&m.op_id) {
            response.push(stored.clone());
            continue;
        }
        if !scope.access.allows_entity(&m.entity) {
            // Not stored under the op id: the same op may be sent again with a token that may.
            response.push(OpOutcome::Rejected(Rejected {
                op_id: m.op_id,
                code: Code::Forbidden,
                message: "the token may not write this entity type".to_owned(),
                retryable: false,
            }));
            continue;
        }
        let outcome = match decide(m, records[slot].as_ref(), rules) {
            Decision::Apply(rec) => {
                seq += 1;
                let version = rec.version;
                records[slot] = Some(rec);
                changed[slot] = Some(seq);
                OpOutcome::Accepted(Accepted {
                    op_id: m.op_id,
                    entity: m.entity.clone(),
                    record_id: m.record_id.clone(),
                    version,
                })
            }
            Decision::Answer(outcome) => outcome,
        };
        if Decision::outcome_is_final(&outcome) {
            new_final.push(m.op_id);
            answered.insert(m.op_id, outcome.clone());
        }
        response.push(outcome);
    }
    let op_results = new_final.into_iter().filter_map(|id| Some((id, answered.remove(&id)?))).collect();
    let mut written: Vec<(StoredRecord, u64)> =
        records.into_iter().zip(changed).filter_map(|(rec, at)| Some((rec?, at?))).collect();
    written.sort_unstable_by_key(|(_, at)| *at);
    tx.write(PushWrites {
        user: scope.user.clone(),
        key: key.to_owned(),
        push: StoredPush { body_hash: body_hash.to_owned(), response: response.clone() },
        records: written,
        op_results,
        seq: (seq != first).then_some(seq),
        now_ms: now_ms(),
    })
    .await?;
    // Kill -9 tests: dying here leaves the whole batch (ops and stored response) uncommitted;
    // dying after the commit leaves it applied with no answer sent, for the resend to replay.
    converge_core::crash::point("server.apply.before_commit");
    tx.commit().await?;
    converge_core::crash::point("server.apply.after_commit");
    Ok(Ok(response))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}
