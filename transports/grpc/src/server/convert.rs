//! Requests into core's wire types (a shape error names the mutation and field, without
//! values) and the service's answers into messages.

use converge_core::wire::{Change, Notice, PullResponse, PushBatch, PushResponse};
use converge_core::{ApiError, CheckMode, Mutation, Op};

use crate::convert::{Invalid, fields_from_text, fields_to_text, uuid};
use crate::pb;

/// A push request as the service takes it; a shape error names the mutation and field.
pub(crate) fn batch_from_pb(req: pb::PushRequest) -> Result<PushBatch, ApiError> {
    let mutations = req
        .mutations
        .into_iter()
        .enumerate()
        .map(|(i, m)| mutation_from_pb(m).map_err(|why| ApiError::invalid(format!("mutations[{i}].{why}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PushBatch { device_id: req.device_id, mutations })
}

fn mutation_from_pb(m: pb::Mutation) -> Result<Mutation, Invalid> {
    let op = match pb::Op::try_from(m.op) {
        Ok(pb::Op::Create) => Op::Create,
        Ok(pb::Op::Update) => Op::Update,
        Ok(pb::Op::Delete) => Op::Delete,
        Ok(pb::Op::Unspecified) | Err(_) => return Err("op: OP_CREATE, OP_UPDATE or OP_DELETE".into()),
    };
    let check = match pb::CheckMode::try_from(m.check) {
        Ok(pb::CheckMode::Unspecified | pb::CheckMode::Fields) => CheckMode::Fields,
        Ok(pb::CheckMode::Record) => CheckMode::Record,
        Ok(pb::CheckMode::Lww) => CheckMode::Lww,
        Err(_) => return Err("check: an unknown check mode".into()),
    };
    Ok(Mutation {
        op_id: uuid(&m.op_id).map_err(|why| format!("op_id {why}"))?,
        entity: m.entity,
        record_id: m.record_id,
        op,
        base_version: m.base_version,
        patch: fields_from_text(&m.patch).map_err(|why| format!("patch {why}"))?,
        hlc: m.hlc.parse().map_err(|e: converge_core::Error| format!("hlc: {e}"))?,
        check,
    })
}

/// The service's answer as the server sends it (moved, not copied: a batch's answer is
/// hundreds of strings).
pub(crate) fn push_response_to_pb(resp: PushResponse) -> pb::PushResponse {
    pb::PushResponse {
        accepted: resp
            .accepted
            .into_iter()
            .map(|a| pb::Accepted {
                op_id: a.op_id.to_string(),
                entity: a.entity,
                record_id: a.record_id,
                version: a.version,
            })
            .collect(),
        conflicts: resp
            .conflicts
            .into_iter()
            .map(|c| pb::Conflict {
                op_id: c.op_id.to_string(),
                entity: c.entity,
                record_id: c.record_id,
                fields: c.fields,
                server: Some(pb::ServerState {
                    version: c.server.version,
                    fields: fields_to_text(&c.server.fields),
                    deleted: c.server.deleted,
                    meta: c
                        .server
                        .meta
                        .into_iter()
                        .map(|(k, m)| (k, pb::FieldMeta { version: m.version, hlc: m.hlc.to_string() }))
                        .collect(),
                }),
            })
            .collect(),
        rejected: resp
            .rejected
            .into_iter()
            .map(|r| pb::Rejected {
                op_id: r.op_id.to_string(),
                code: r.code.as_str().to_owned(),
                message: r.message,
                retryable: r.retryable,
            })
            .collect(),
    }
}

/// A feed page as the server sends it.
pub(crate) fn pull_response_to_pb(page: PullResponse) -> pb::PullResponse {
    pb::PullResponse {
        changes: page
            .changes
            .into_iter()
            .map(|c| pb::Change {
                fields: fields_to_text(&c.fields),
                entity: c.entity,
                record_id: c.record_id,
                version: c.version,
                deleted: c.deleted,
            })
            .collect(),
        cursor: page.cursor,
        has_more: page.has_more,
    }
}

/// A record as the server sends it.
pub(crate) fn record_to_pb(c: Change) -> pb::Record {
    pb::Record {
        fields: fields_to_text(&c.fields),
        entity: c.entity,
        record_id: c.record_id,
        version: c.version,
        deleted: c.deleted,
    }
}

/// A notice as the server sends it.
pub(crate) fn notice_to_pb(n: Notice) -> pb::ChangeNotice {
    pb::ChangeNotice { cursor: n.cursor }
}

#[cfg(all(test, feature = "client"))]
mod tests {
    use super::*;
    use crate::client::convert::batch_to_pb;
    use converge_core::Code;
    use serde_json::json;

    fn batch() -> PushBatch {
        serde_json::from_value(json!({
            "device_id": "ios-1",
            "mutations": [
                {"op_id": "0190a1b2-0000-7000-8000-000000000001", "entity": "notes", "record_id": "r1",
                 "op": "create", "base_version": 0, "patch": {"title": "a", "n": 12345678901234567u64},
                 "hlc": "1764064800000-0000-ios-1", "check": "record"},
                {"op_id": "0190a1b2-0000-7000-8000-000000000002", "entity": "notes", "record_id": "r2",
                 "op": "delete", "base_version": 3, "hlc": "1764064800000-0001-ios-1"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn a_batch_survives_the_trip_exactly() {
        let b = batch();
        let pb = batch_to_pb(b.clone());
        assert_eq!(pb.mutations[1].patch, "", "an empty patch travels as \"\"");
        assert_eq!(batch_from_pb(pb).unwrap(), b);
    }

    #[test]
    fn shape_errors_name_the_mutation_and_field() {
        let mut pb = batch_to_pb(batch());
        pb.mutations[1].op = 0;
        assert!(batch_from_pb(pb).unwrap_err().detail.starts_with("mutations[1].op"));
        let mut pb = batch_to_pb(batch());
        pb.mutations[0].patch = "[1,2]".into();
        assert_eq!(batch_from_pb(pb).unwrap_err().detail, "mutations[0].patch is not a JSON object");
        let mut pb = batch_to_pb(batch());
        pb.mutations[0].patch = "{\"secret\": ".into();
        let e = batch_from_pb(pb).unwrap_err();
        assert!(!e.detail.contains("secret"), "{}", e.detail);
        let mut pb = batch_to_pb(batch());
        pb.mutations[0].check = 9;
        assert_eq!(batch_from_pb(pb).unwrap_err().code, Code::InvalidRequest);
        let mut pb = batch_to_pb(batch());
        pb.mutations[0].hlc = "yesterday".into();
        assert!(batch_from_pb(pb).unwrap_err().detail.starts_with("mutations[0].hlc"));
    }
}
