//! `MergePolicy`: how a conflict is settled on the device, per entity type.

use std::collections::BTreeMap;

use crate::hlc::Hlc;
use crate::model::{CheckMode, Fields, Version};
use crate::wire::FieldClock;

/// What a policy sees of a conflict.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeInput<'a> {
    /// The entity.
    pub entity: &'a str,
    /// The record id.
    pub record_id: &'a str,
    /// The confirmed server fields the local change was made on.
    pub base: &'a Fields,
    /// The local intent: the changed fields (`null` removes a field).
    pub local: &'a Fields,
    /// The HLC of the local intent (its latest write).
    pub local_hlc: &'a Hlc,
    /// The server's fields now.
    pub server: &'a Fields,
    /// Per server field, the version and HLC of its last change (may be empty if unknown).
    pub server_meta: &'a BTreeMap<String, FieldClock>,
    /// The server's version now.
    pub server_version: Version,
    /// Whether the server has the record deleted.
    pub server_deleted: bool,
    /// The fields the server reported in conflict.
    pub conflicting: &'a [String],
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Send the local intent again, on the server's version.
    TakeLocal,
    /// Keep the server's state; the local values go to the journal.
    TakeServer,
    /// Write these fields, on the server's version; the notice is shown to the user.
    Merged {
        /// The merged fields.
        fields: Fields,
        /// A notice for the UI, e.g. "merged update".
        notice: String,
    },
    /// Leave it open for the user to decide.
    NeedsReview {
        /// Why.
        reason: String,
    },
}

/// A merge policy: synchronous, pure and deterministic — the same input gives the same answer on
/// every device.
///
/// When it is called: by a sync cycle, once for each conflict the server answers on an op of the
/// policy's entity, on a thread of tokio's blocking pool, with neither the engine's lock nor a
/// store transaction held — so a slow policy (a WASM plugin near its fuel limit) delays only
/// that cycle, never the app's reads and writes. If the app wrote to the same record while the
/// policy ran, it is asked once more, about the record as it is then, inside the transaction
/// that stores the outcome. It may therefore be asked the same question twice and must answer
/// alike; it must not block on the engine (it is not given one). `check_mode` is read on every
/// local write of the entity, on the app's thread: keep it cheap.
pub trait MergePolicy: Send + Sync {
    /// The policy's name, as the journal records it.
    fn name(&self) -> &str;
    /// The check mode this policy's mutations carry.
    fn check_mode(&self) -> CheckMode {
        CheckMode::Fields
    }
    /// Settles a conflict.
    fn resolve(&self, input: &MergeInput<'_>) -> Resolution;
}

/// The default policy: every conflict stays open for review by the user.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReviewPolicy;

impl MergePolicy for ReviewPolicy {
    fn name(&self) -> &str {
        "review"
    }

    fn resolve(&self, input: &MergeInput<'_>) -> Resolution {
        Resolution::NeedsReview { reason: format!("{} field(s) changed on both sides", input.conflicting.len()) }
    }
}
