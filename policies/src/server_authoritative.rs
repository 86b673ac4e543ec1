//! `ServerAuthoritative`: for orders, payments and money — the server's state stands and the
//! user decides about the local change.

use converge_core::{CheckMode, MergeInput, MergePolicy, Resolution};

use crate::conflicting_fields;

/// Server-authoritative with review by the user (check mode `record`: any change on the server
/// since the local edit's base is a conflict).
///
/// Every conflict stays open (`NeedsReview`) with a reason naming the fields changed on the
/// server; meanwhile the view shows the server's state and the local intent waits in the
/// conflicts table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerAuthoritative;

impl ServerAuthoritative {
    /// The policy's name.
    pub const NAME: &'static str = "server_authoritative";
}

impl MergePolicy for ServerAuthoritative {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn check_mode(&self) -> CheckMode {
        CheckMode::Record
    }

    fn resolve(&self, input: &MergeInput<'_>) -> Resolution {
        let fields = conflicting_fields(input.conflicting);
        let what = if input.server_deleted { "deleted on the server" } else { "changed on the server" };
        let reason = if fields.is_empty() {
            format!("the record was {what} since this edit; review it before sending the edit again")
        } else {
            format!(
                "the record was {what} since this edit ({}); review it before sending the edit again",
                fields.join(", ")
            )
        };
        Resolution::NeedsReview { reason }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use converge_core::{Fields, Hlc};

    use super::*;

    fn reason(conflicting: &[&str], deleted: bool) -> String {
        let f = Fields::new();
        let conflicting: Vec<String> = conflicting.iter().map(|s| s.to_string()).collect();
        let input = MergeInput {
            entity: "orders",
            record_id: "o1",
            base: &f,
            local: &f,
            local_hlc: &Hlc::zero("d"),
            server: &f,
            server_meta: &BTreeMap::new(),
            server_version: 2,
            server_deleted: deleted,
            conflicting: &conflicting,
        };
        match ServerAuthoritative.resolve(&input) {
            Resolution::NeedsReview { reason } => reason,
            other => panic!("expected review, got {other:?}"),
        }
    }

    #[test]
    fn always_asks_the_user_naming_the_fields() {
        let r = reason(&["total", "status", "total"], false);
        assert!(r.contains("changed on the server") && r.contains("(total, status)"), "{r}");
        let r = reason(&["total"], true);
        assert!(r.contains("deleted on the server") && r.contains("total"), "{r}");
        assert!(reason(&[], false).contains("changed on the server since this edit;"));
    }

    #[test]
    fn name_and_check_mode() {
        assert_eq!(ServerAuthoritative.name(), "server_authoritative");
        assert_eq!(ServerAuthoritative.check_mode(), CheckMode::Record);
    }
}
