//! Converge's built-in merge policies, and closures as policies.
//!
//! A [`MergePolicy`] settles a conflict on the device, per entity type; it is pure and
//! deterministic, so every device settles the same conflict the same way:
//! - [`FieldMerge`] (`field_merge`, check `fields`), the default for user text: three-way per
//!   field, a line merge for text edited on both sides, otherwise the later edit by HLC, with a
//!   "merged update" notice;
//! - [`LastWriterWins`] (`lww`, check `lww`) for toggles and statuses: each field keeps its
//!   latest write;
//! - [`ServerAuthoritative`] (`server_authoritative`, check `record`) for orders and money: the
//!   server's state stands and the user reviews every conflict.
//!
//! [`builtin`] finds a built-in by name; [`policy_fn`] (or [`FnPolicy`]) turns a closure into a
//! policy registered the same way.

mod closure;
mod field_merge;
mod lww;
mod server_authoritative;
mod text;

use std::sync::Arc;

pub use closure::{FnPolicy, policy_fn};
pub use converge_core::{MergeInput, MergePolicy, Resolution};
pub use field_merge::FieldMerge;
pub use lww::LastWriterWins;
pub use server_authoritative::ServerAuthoritative;
pub use text::merge_lines;

/// The names of the built-in policies, as [`builtin`] accepts them.
pub const BUILTINS: [&str; 3] = [FieldMerge::NAME, LastWriterWins::NAME, ServerAuthoritative::NAME];

/// The built-in policy with this name (`field_merge`, `lww` or `server_authoritative`).
///
/// ```
/// let policy = converge_policies::builtin("lww").unwrap();
/// assert_eq!(policy.name(), "lww");
/// assert!(converge_policies::builtin("nope").is_none());
/// ```
pub fn builtin(name: &str) -> Option<Arc<dyn MergePolicy>> {
    match name {
        FieldMerge::NAME => Some(Arc::new(FieldMerge)),
        LastWriterWins::NAME => Some(Arc::new(LastWriterWins)),
        ServerAuthoritative::NAME => Some(Arc::new(ServerAuthoritative)),
        _ => None,
    }
}

/// The conflicting field names, each once, in the order given.
fn conflicting_fields(conflicting: &[String]) -> Vec<&str> {
    let mut fields: Vec<&str> = Vec::with_capacity(conflicting.len());
    for field in conflicting {
        if !fields.contains(&field.as_str()) {
            fields.push(field);
        }
    }
    fields
}

/// Sets a field, or removes it for `None`.
fn set_field(fields: &mut converge_core::Fields, field: &str, value: Option<serde_json::Value>) {
    match value {
        Some(v) => {
            fields.insert(field.to_owned(), v);
        }
        None => {
            fields.remove(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use converge_core::CheckMode;

    use super::*;

    #[test]
    fn builtins_are_found_by_name() {
        let modes = [CheckMode::Fields, CheckMode::Lww, CheckMode::Record];
        for (name, mode) in BUILTINS.into_iter().zip(modes) {
            let policy = builtin(name).unwrap();
            assert_eq!((policy.name(), policy.check_mode()), (name, mode));
        }
        assert!(builtin("review").is_none() && builtin("").is_none() && builtin("LWW").is_none());
    }

    #[test]
    fn conflicting_fields_are_deduplicated_in_order() {
        let given: Vec<String> = ["b", "a", "b", "c", "a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(conflicting_fields(&given), ["b", "a", "c"]);
    }
}
