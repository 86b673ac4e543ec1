//! Write a Converge merge policy in Rust and build it as a WebAssembly plugin.
//!
//! A plugin is a `cdylib` crate built for `wasm32-unknown-unknown`:
//!
//! ```no_run
//! use converge_plugin_sdk::*;
//!
//! struct KeepServer;
//!
//! impl Policy for KeepServer {
//!     fn describe() -> Description {
//!         Description { name: "keep_server".into(), version: "1.0.0".into(), entities: vec!["items".into()] }
//!     }
//!
//!     fn resolve(_input: Input) -> Outcome {
//!         Outcome::TakeServer
//!     }
//! }
//!
//! export_policy!(KeepServer);
//! # fn main() {}
//! ```
//!
//! The host (`converge-wasm`) turns the module into a component of the `converge:policy@0.1.0`
//! world (`plugins/wit/policy.wit`) with zero imports: a plugin gets no clock, randomness,
//! files or network, only the conflict. It must be deterministic: the same [`Input`] gives the
//! same [`Outcome`] on every device. It runs under a fuel and a memory limit; a plugin that
//! loops, allocates without bound or panics leaves the conflict for review.

extern crate self as converge_plugin_sdk;

use std::collections::BTreeMap;

pub use serde_json::{Map, Value};

/// A record's fields: a JSON object.
pub type Fields = serde_json::Map<String, serde_json::Value>;

/// The version and HLC of a server field's last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMeta {
    /// The record version that last changed the field.
    pub version: u64,
    /// The HLC of the write that set it, e.g. `1700000000000-0000-dev-a` (13 digits of
    /// milliseconds, 4 hex digits of counter, the device id): HLCs of one length order as text.
    pub hlc: String,
}

/// What a policy sees of a conflict.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// The entity type, e.g. `items`.
    pub entity: String,
    /// The record id.
    pub record_id: String,
    /// The confirmed server fields the local change was made on.
    pub base: Fields,
    /// The local intent: the changed fields only; `null` removes a field. Empty when the local
    /// change is a delete.
    pub local: Fields,
    /// The HLC of the local intent (its latest write).
    pub local_hlc: String,
    /// The server's fields now.
    pub server: Fields,
    /// Per server field, the version and HLC of its last change (may be empty if unknown).
    pub server_meta: BTreeMap<String, FieldMeta>,
    /// The server's record version now.
    pub server_version: u64,
    /// Whether the server has the record deleted.
    pub server_deleted: bool,
    /// The fields the server reported in conflict.
    pub conflicting: Vec<String>,
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Send the local intent again, on the server's version.
    TakeLocal,
    /// Keep the server's state; the local values go to the journal.
    TakeServer,
    /// Write these fields, on the server's version.
    Merged {
        /// The record's full fields after the merge (not a patch): a server field left out is
        /// removed. Usually the server's fields with the local intent and the settled values
        /// applied.
        fields: Fields,
        /// A notice for the UI, e.g. "merged update".
        notice: String,
    },
    /// Leave the conflict open for the user.
    NeedsReview {
        /// Why, for the user.
        reason: String,
    },
}

/// Who a policy is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// The policy's name, as the journal records it.
    pub name: String,
    /// The plugin's own version, e.g. `1.0.0`.
    pub version: String,
    /// The entity types it is written for.
    pub entities: Vec<String>,
}

/// How the server checks a policy's mutations for conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckMode {
    /// A conflict when a field the change sets was changed since its base to another value.
    #[default]
    Fields,
    /// A conflict when anything changed since the base (counters need it: two equal edits are
    /// two edits).
    Record,
    /// Never a conflict: per field, the later HLC wins.
    Lww,
}

impl CheckMode {
    fn as_str(self) -> &'static str {
        match self {
            CheckMode::Fields => "fields",
            CheckMode::Record => "record",
            CheckMode::Lww => "lww",
        }
    }
}

/// A merge policy. Both functions must be pure and deterministic.
pub trait Policy {
    /// Names the policy; called once when the host loads the plugin.
    fn describe() -> Description;
    /// Settles one conflict.
    fn resolve(input: Input) -> Outcome;
    /// How the server checks this policy's mutations (default: per field).
    fn check_mode() -> CheckMode {
        CheckMode::Fields
    }
}

/// Wires a [`Policy`] to the plugin's exports. Use it once, at the root of a `cdylib` crate.
#[macro_export]
macro_rules! export_policy {
    ($t:ty) => {
        #[doc(hidden)]
        pub struct __ConvergePolicyExport;

        impl $crate::__private::bindings::Guest for __ConvergePolicyExport {
            fn resolve(input: $crate::__private::bindings::Conflict) -> $crate::__private::bindings::Outcome {
                $crate::__private::resolve::<$t>(input)
            }

            fn describe() -> $crate::__private::bindings::Description {
                $crate::__private::describe::<$t>()
            }
        }

        $crate::__private::bindings::__converge_export!(__ConvergePolicyExport with_types_in $crate::__private::bindings);
    };
}

#[doc(hidden)]
pub mod __private {
    //! What [`export_policy!`](crate::export_policy) expands to; not part of the API.

    pub use wit_bindgen;

    use crate::{Description, FieldMeta, Fields, Input, Outcome, Policy};

    #[allow(missing_docs, unreachable_pub)]
    pub mod bindings {
        //! The guest side of `plugins/wit/policy.wit`.
        wit_bindgen::generate!({
            world: "policy-plugin",
            path: "../wit",
            pub_export_macro: true,
            export_macro_name: "__converge_export",
            runtime_path: "converge_plugin_sdk::__private::wit_bindgen::rt",
        });
    }

    fn fields(json: &str) -> Fields {
        serde_json::from_str(json).unwrap_or_default()
    }

    /// The conflict as the policy sees it.
    pub fn input(c: bindings::Conflict) -> Input {
        Input {
            base: fields(&c.base),
            local: fields(&c.local),
            server: fields(&c.server),
            server_meta: c
                .server_meta
                .into_iter()
                .map(|m| (m.field, FieldMeta { version: m.version, hlc: m.hlc }))
                .collect(),
            entity: c.entity,
            record_id: c.record_id,
            local_hlc: c.local_hlc,
            server_version: c.server_version,
            server_deleted: c.server_deleted,
            conflicting: c.conflicting,
        }
    }

    /// The policy's answer as the host reads it.
    pub fn outcome(o: Outcome) -> bindings::Outcome {
        match o {
            Outcome::TakeLocal => bindings::Outcome::TakeLocal,
            Outcome::TakeServer => bindings::Outcome::TakeServer,
            Outcome::Merged { fields, notice } => bindings::Outcome::Merged(bindings::Merged {
                fields: serde_json::Value::Object(fields).to_string(),
                notice,
            }),
            Outcome::NeedsReview { reason } => bindings::Outcome::NeedsReview(reason),
        }
    }

    /// `resolve`, wired.
    pub fn resolve<P: Policy>(c: bindings::Conflict) -> bindings::Outcome {
        outcome(P::resolve(input(c)))
    }

    /// `describe`, wired.
    pub fn describe<P: Policy>() -> bindings::Description {
        let Description { name, version, entities } = P::describe();
        bindings::Description { name, version, entities, check_mode: P::check_mode().as_str().to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::__private::{bindings, input, outcome};
    use super::*;

    #[test]
    fn the_conflict_reaches_the_policy_as_parsed_fields() {
        let c = bindings::Conflict {
            entity: "items".into(),
            record_id: "i1".into(),
            base: r#"{"qty":10}"#.into(),
            local: r#"{"qty":13,"gone":null}"#.into(),
            local_hlc: "1700000000001-0000-dev-a".into(),
            server: r#"{"qty":15}"#.into(),
            server_meta: vec![bindings::FieldMeta {
                field: "qty".into(),
                version: 2,
                hlc: "1700000000000-0000-dev-b".into(),
            }],
            server_version: 2,
            server_deleted: false,
            conflicting: vec!["qty".into()],
        };
        let i = input(c);
        assert_eq!(Value::Object(i.local.clone()), json!({"qty": 13, "gone": null}));
        assert_eq!(i.server_meta["qty"], FieldMeta { version: 2, hlc: "1700000000000-0000-dev-b".into() });
        assert_eq!(i.conflicting, ["qty"]);
    }

    #[test]
    fn merged_fields_travel_as_a_json_object() {
        let fields = json!({"qty": 18}).as_object().unwrap().clone();
        match outcome(Outcome::Merged { fields, notice: "summed".into() }) {
            bindings::Outcome::Merged(m) => assert_eq!(m.fields, r#"{"qty":18}"#),
            _ => panic!("not merged"),
        }
    }
}
