//! What a push means, written once for every server store: the key replay, the op replay, the
//! conflict check and the feed numbering, inside the transaction the store opens.

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use converge_core::Scope;
use converge_core::check::{Decision, Rules, StoredRecord, decide};
use converge_core::server_store::{PushWrites, RecordKey, ServerStore, StoredPush};
use converge_core::wire::{Accepted, Mutation, OpOutcome, PushResponse};
use uuid::Uuid;

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
    let op_ids: Vec<Uuid> = mutations.iter().map(|m| m.op_id).collect();
    let mut wanted: Vec<RecordKey> = Vec::with_capacity(mutations.len());
    let mut seen_keys = HashSet::with_capacity(mutations.len());
    for m in &mutations {
        let k = (m.entity.clone(), m.record_id.clone());
        if seen_keys.insert(k.clone()) {
            wanted.push(k);
        }
    }
    let loaded = tx.load(&scope.user, key, &op_ids, &wanted).await?;
    if let Some(stored) = loaded.stored {
        tx.rollback().await?;
        return Ok(Err(stored));
    }
    let (mut records, mut answered) = (loaded.records, loaded.op_results);
    let first = tx.seq();
    let mut seq = first;
    let mut response = PushResponse::default();
    // The records changed, with the feed position of their last change.
    let mut changed: HashMap<RecordKey, u64> = HashMap::new();
    let mut op_results = Vec::new();
    for m in &mutations {
        if let Some(stored) = answered.get(&m.op_id) {
            response.push(stored.clone());
            continue;
        }
        let k = (m.entity.clone(), m.record_id.clone());
        let outcome = match decide(m, records.get(&k), rules) {
            Decision::Apply(rec) => {
                seq += 1;
                let version = rec.version;
                records.insert(k.clone(), rec);
                changed.insert(k, seq);
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
            // An op id twice in one batch (the service refuses such a batch) answers its first
            // outcome the second time, as a resend in a later batch would.
            answered.insert(m.op_id, outcome.clone());
            op_results.push((m.op_id, outcome.clone()));
        }
        response.push(outcome);
    }
    let mut written: Vec<(StoredRecord, u64)> =
        changed.into_iter().filter_map(|(k, at)| records.remove(&k).map(|rec| (rec, at))).collect();
    written.sort_by_key(|(_, at)| *at);
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
