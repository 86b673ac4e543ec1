//! The protocol's messages: push batches and their per-op outcomes, pull pages, records, limits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ApiError, Code};
use crate::hlc::{Hlc, validate_device_id};
use crate::model::{
    CheckMode, Fields, MAX_VERSION, Op, Version, validate_entity, validate_field_names, validate_record_id,
};

/// One change to one record, as a device sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Mutation {
    /// A stable id (UUID); the server applies each op id at most once, ever.
    pub op_id: Uuid,
    /// The entity type, e.g. `notes`.
    pub entity: String,
    /// The record id (a UUIDv7 made on the device).
    pub record_id: String,
    /// create, update or delete.
    pub op: Op,
    /// The server version this change was made on; 0 for a create.
    #[serde(deserialize_with = "crate::model::deserialize_version")]
    pub base_version: Version,
    /// The changed fields only; `null` removes a field. Empty for a delete.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub patch: Fields,
    /// The hybrid logical clock of the write.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "1764064800000-0000-ios-7f3a"))]
    pub hlc: Hlc,
    /// How the server checks for a conflict; `fields` when absent.
    #[serde(default)]
    pub check: CheckMode,
}

/// The body of `POST /v1/sync/mutations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PushBatch {
    /// The sending device.
    pub device_id: String,
    /// The mutations, applied in order.
    pub mutations: Vec<Mutation>,
}

/// A push: a batch and the idempotency key that names it.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRequest {
    /// Names the batch; the same key and body replay the stored response.
    pub idempotency_key: String,
    /// The batch.
    pub batch: PushBatch,
}

/// An op the server applied (or had applied before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    /// The op.
    pub op_id: Uuid,
    /// The entity.
    pub entity: String,
    /// The record.
    pub record_id: String,
    /// The record's version after the op.
    pub version: Version,
}

/// When a field last changed on the server: the record version and the write's HLC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FieldClock {
    /// The record version that last changed the field.
    pub version: Version,
    /// The HLC of the write that set it.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hlc: Hlc,
}

/// A record's state on the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerState {
    /// The current version.
    pub version: Version,
    /// The current fields (empty when deleted).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub fields: Fields,
    /// Whether the record is deleted.
    pub deleted: bool,
    /// Per field, when it last changed (lets merge policies pick a winner by HLC). Optional on
    /// the wire: absent means unknown.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, FieldClock>,
}

/// An op that conflicted with the server's state and was not applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConflictOutcome {
    /// The op.
    pub op_id: Uuid,
    /// The entity.
    pub entity: String,
    /// The record.
    pub record_id: String,
    /// The fields in conflict.
    pub fields: Vec<String>,
    /// The server's state of the record.
    pub server: ServerState,
}

/// An op the server refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rejected {
    /// The op.
    pub op_id: Uuid,
    /// The stable code, e.g. `not_found` or `record_too_large`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub code: Code,
    /// What was wrong.
    pub message: String,
    /// Whether sending the op again may succeed.
    pub retryable: bool,
}

/// The answer to a push: each op id in exactly one list.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushResponse {
    /// Applied ops.
    pub accepted: Vec<Accepted>,
    /// Conflicting ops.
    pub conflicts: Vec<ConflictOutcome>,
    /// Refused ops.
    pub rejected: Vec<Rejected>,
    /// Set when this is a stored response replayed for a repeated idempotency key.
    #[serde(skip)]
    pub replayed: bool,
}

/// One op's outcome, as the server stores it under its op id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OpOutcome {
    /// Applied.
    Accepted(Accepted),
    /// Conflicted.
    Conflict(ConflictOutcome),
    /// Refused.
    Rejected(Rejected),
}

impl PushResponse {
    /// Adds an outcome to its list.
    pub fn push(&mut self, outcome: OpOutcome) {
        match outcome {
            OpOutcome::Accepted(a) => self.accepted.push(a),
            OpOutcome::Conflict(c) => self.conflicts.push(c),
            OpOutcome::Rejected(r) => self.rejected.push(r),
        }
    }

    /// All outcomes, keyed by op id.
    pub fn outcomes(&self) -> std::collections::HashMap<Uuid, OpOutcome> {
        let a = self.accepted.iter().map(|a| (a.op_id, OpOutcome::Accepted(a.clone())));
        let c = self.conflicts.iter().map(|c| (c.op_id, OpOutcome::Conflict(c.clone())));
        let r = self.rejected.iter().map(|r| (r.op_id, OpOutcome::Rejected(r.clone())));
        a.chain(c).chain(r).collect()
    }
}

/// A request for the next page of the change feed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Where the last page ended; none to start from the beginning.
    pub cursor: Option<String>,
    /// Page size: default 500, at most 1000.
    pub limit: Option<u32>,
}

/// A record's latest state in the change feed (and the body of `GET /v1/records/..`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Change {
    /// The entity.
    pub entity: String,
    /// The record.
    pub record_id: String,
    /// The record's version.
    pub version: Version,
    /// The record's fields (empty when deleted).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub fields: Fields,
    /// Whether the record is deleted.
    pub deleted: bool,
}

/// A page of the change feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PullResponse {
    /// Changed records in change order, latest state per record.
    pub changes: Vec<Change>,
    /// Pass this back to get the next page.
    pub cursor: String,
    /// Whether more changes follow right away.
    pub has_more: bool,
}

/// A live change notice: the tenant's feed moved past the subscriber's cursor and now ends at
/// `cursor`. It carries no records; the client pulls as usual.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Notice {
    /// The cursor of the feed's end when the notice was sent (opaque).
    pub cursor: String,
}

/// Default and maximum page size of a pull.
pub const PULL_LIMIT_DEFAULT: u32 = 500;
/// The largest page a pull returns.
pub const PULL_LIMIT_MAX: u32 = 1000;

/// The server's limits (configurable; these defaults are the contract's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Mutations in one batch.
    pub max_batch: usize,
    /// Bytes in one request body.
    pub max_body_bytes: usize,
    /// Bytes of a record's fields as JSON after a patch.
    pub max_record_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_batch: 500, max_body_bytes: 1 << 20, max_record_bytes: 256 << 10 }
    }
}

/// An idempotency key as a regular expression: 1 to 255 printable ASCII characters, not starting
/// or ending with a space (HTTP trims those from a header's value before the server sees it).
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[\\x21-\\x7E]([\\x20-\\x7E]{0,253}[\\x21-\\x7E])?$";
/// A cursor as a regular expression: `c<seq>` or `c<seq>.<horizon>`. Any other string is
/// `invalid_request`; one of this shape that this server's feed never reached is `cursor_expired`.
pub const CURSOR_PATTERN: &str = "^c(0|[1-9][0-9]{0,17})(\\.[1-9][0-9]{0,17})?$";

/// Reads a cursor's shape, [`CURSOR_PATTERN`]: its feed position and horizon (0 when absent).
/// Whether this server's feed ever reached it is the server's to say.
pub fn parse_cursor(cursor: &str) -> Option<(u64, u64)> {
    // At most 18 digits: every such number fits the stores' signed 64-bit sequences.
    let number = |digits: &str| {
        let canonical = (1..=18).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        digits.parse::<u64>().ok().filter(|_| canonical)
    };
    let rest = cursor.strip_prefix('c')?;
    match rest.split_once('.') {
        None => Some((number(rest)?, 0)),
        Some((seq, horizon)) => Some((number(seq)?, number(horizon).filter(|h| *h > 0)?)),
    }
}

/// Checks an idempotency key: 1 to 255 printable ASCII characters.
pub fn validate_idempotency_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::new(Code::IdempotencyKeyMissing, "the Idempotency-Key header is required"));
    }
    if key.len() > 255 || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::invalid("an Idempotency-Key is 1-255 printable ASCII characters"));
    }
    Ok(())
}

impl PushBatch {
    /// Checks the whole batch's shape; an error refuses the batch whole.
    pub fn validate(&self, limits: &Limits) -> Result<(), ApiError> {
        if self.mutations.len() > limits.max_batch {
            return Err(ApiError::new(
                Code::BatchTooLarge,
                format!("{} mutations in one batch; at most {}", self.mutations.len(), limits.max_batch),
            ));
        }
        validate_device_id(&self.device_id).map_err(|e| ApiError::invalid(format!("device_id: {e}")))?;
        let mut seen = std::collections::HashSet::with_capacity(self.mutations.len());
        for (i, m) in self.mutations.iter().enumerate() {
            let at = |what: String| ApiError::invalid(format!("mutations[{i}]: {what}"));
            if !seen.insert(m.op_id) {
                return Err(at("op_id appears twice in the batch".into()));
            }
            validate_entity(&m.entity).map_err(|e| at(e.to_string()))?;
            validate_record_id(&m.record_id).map_err(|e| at(e.to_string()))?;
            if m.base_version > MAX_VERSION {
                return Err(at(format!("base_version is at most {MAX_VERSION}")));
            }
            match m.op {
                Op::Create if m.base_version != 0 => return Err(at("a create has base_version 0".into())),
                Op::Update | Op::Delete if m.base_version == 0 => {
                    return Err(at("an update or delete has the base_version it was made on (>= 1)".into()));
                }
                Op::Delete if !m.patch.is_empty() => return Err(at("a delete has an empty patch".into())),
                _ => {}
            }
            validate_field_names(&m.patch).map_err(|e| at(e.to_string()))?;
        }
        Ok(())
    }
}
