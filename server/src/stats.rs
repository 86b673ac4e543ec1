//! Per-tenant figures every server store can report, for tests, checks and operators.

/// A tenant's figures, for tests and inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TenantStats {
    /// The tenant's change sequence: the number of changes ever applied.
    pub seq: u64,
    /// The sum of all the tenant's record versions. Each applied change adds one to a version and
    /// one to the sequence, so this equals `seq` unless a change was lost or applied twice (or
    /// compaction removed tombstones, whose versions leave the sum with them).
    pub version_sum: u64,
    /// How many records (tombstones included) the tenant has.
    pub records: u64,
    /// The oldest sequence a cursor may still name.
    pub horizon: u64,
}
