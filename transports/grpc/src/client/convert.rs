//! Batches into messages, and a server's answers into core's wire types (anything unreadable
//! is a protocol error, named without values).

use std::collections::BTreeMap;

use converge_core::wire::{
    Accepted, Change, ConflictOutcome, FieldClock, PullResponse, PushBatch, PushResponse, Rejected, ServerState,
};
use converge_core::{CheckMode, Code, Op};

use crate::convert::{Invalid, fields_from_text, fields_to_text, uuid};
use crate::pb;

/// A batch as the client sends it (moved, not copied).
pub(crate) fn batch_to_pb(batch: PushBatch) -> pb::PushRequest {
    let mutations = batch
        .mutations
        .into_iter()
        .map(|m| pb::Mutation {
            op_id: m.op_id.to_string(),
            entity: m.entity,
            record_id: m.record_id,
            op: match m.op {
                Op::Create => pb::Op::Create,
                Op::Update => pb::Op::Update,
                Op::Delete => pb::Op::Delete,
            } as i32,
            base_version: m.base_version,
            patch: if m.patch.is_empty() { String::new() } else { fields_to_text(&m.patch) },
            hlc: m.hlc.to_string(),
            check: match m.check {
                CheckMode::Fields => pb::CheckMode::Fields,
                CheckMode::Record => pb::CheckMode::Record,
                CheckMode::Lww => pb::CheckMode::Lww,
            } as i32,
        })
        .collect();
    pb::PushRequest { device_id: batch.device_id, mutations }
}

/// A server's push answer as core's type.
pub(crate) fn push_response_from_pb(resp: pb::PushResponse) -> Result<PushResponse, Invalid> {
    let accepted = resp
        .accepted
        .into_iter()
        .map(|a| {
            Ok(Accepted {
                op_id: uuid(&a.op_id).map_err(|why| format!("accepted.op_id {why}"))?,
                entity: a.entity,
                record_id: a.record_id,
                version: a.version,
            })
        })
        .collect::<Result<_, Invalid>>()?;
    let conflicts = resp.conflicts.into_iter().map(conflict_from_pb).collect::<Result<_, Invalid>>()?;
    let rejected = resp
        .rejected
        .into_iter()
        .map(|r| {
            Ok(Rejected {
                op_id: uuid(&r.op_id).map_err(|why| format!("rejected.op_id {why}"))?,
                code: Code::parse(&r.code).ok_or_else(|| "rejected.code: an unknown code".to_owned())?,
                message: r.message,
                retryable: r.retryable,
            })
        })
        .collect::<Result<_, Invalid>>()?;
    Ok(PushResponse { accepted, conflicts, rejected, replayed: false })
}

fn conflict_from_pb(c: pb::Conflict) -> Result<ConflictOutcome, Invalid> {
    let server = c.server.ok_or("a conflict without the server's state")?;
    let meta = server
        .meta
        .into_iter()
        .map(|(k, m)| {
            let hlc = m.hlc.parse().map_err(|_| "conflicts.server.meta: a malformed hlc".to_owned())?;
            Ok((k, FieldClock { version: m.version, hlc }))
        })
        .collect::<Result<BTreeMap<_, _>, Invalid>>()?;
    Ok(ConflictOutcome {
        op_id: uuid(&c.op_id).map_err(|why| format!("conflicts.op_id {why}"))?,
        entity: c.entity,
        record_id: c.record_id,
        fields: c.fields,
        server: ServerState {
            version: server.version,
            fields: fields_from_text(&server.fields).map_err(|why| format!("conflicts.server.fields {why}"))?,
            deleted: server.deleted,
            meta,
        },
    })
}

fn change(entity: String, record_id: String, version: u64, fields: &str, deleted: bool) -> Result<Change, Invalid> {
    let fields = fields_from_text(fields).map_err(|why| format!("fields {why}"))?;
    Ok(Change { entity, record_id, version, fields, deleted })
}

/// A server's feed page as core's type.
pub(crate) fn pull_response_from_pb(page: pb::PullResponse) -> Result<PullResponse, Invalid> {
    let changes = page
        .changes
        .into_iter()
        .map(|c| change(c.entity, c.record_id, c.version, &c.fields, c.deleted))
        .collect::<Result<_, Invalid>>()?;
    Ok(PullResponse { changes, cursor: page.cursor, has_more: page.has_more })
}

/// A server's record as core's type.
pub(crate) fn record_from_pb(r: pb::Record) -> Result<Change, Invalid> {
    change(r.entity, r.record_id, r.version, &r.fields, r.deleted)
}
