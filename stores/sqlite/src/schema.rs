//! The device store's schema, one migration per version, applied in order on open.

use rusqlite_migration::{M, Migrations};

/// Version 1: records, outbox, sync_state, conflicts.
const V1: &str = "
CREATE TABLE records (
    entity TEXT NOT NULL,
    record_id TEXT NOT NULL,
    server_version INTEGER NOT NULL,
    server_fields TEXT NOT NULL,
    server_deleted INTEGER NOT NULL,
    fields TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    pending INTEGER NOT NULL,
    conflicts INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    PRIMARY KEY (entity, record_id)
) WITHOUT ROWID;

CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    op_id TEXT NOT NULL,
    entity TEXT NOT NULL,
    record_id TEXT NOT NULL,
    op TEXT NOT NULL,
    patch TEXT NOT NULL,
    base_version INTEGER NOT NULL,
    hlc TEXT NOT NULL,
    check_mode TEXT NOT NULL,
    state TEXT NOT NULL,
    batch_id TEXT,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    created_ms INTEGER NOT NULL
);
CREATE INDEX outbox_by_record ON outbox (entity, record_id, seq);
CREATE INDEX outbox_in_flight ON outbox (batch_id, seq) WHERE batch_id IS NOT NULL;

CREATE TABLE sync_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    device_id TEXT NOT NULL,
    hlc TEXT,
    cursor TEXT,
    last_success_ms INTEGER,
    last_error TEXT
);

CREATE TABLE conflicts (
    id INTEGER PRIMARY KEY,
    entity TEXT NOT NULL,
    record_id TEXT NOT NULL,
    op_id TEXT NOT NULL,
    op TEXT NOT NULL,
    base TEXT NOT NULL,
    local TEXT NOT NULL,
    server TEXT NOT NULL,
    server_version INTEGER NOT NULL,
    server_deleted INTEGER NOT NULL,
    fields TEXT NOT NULL,
    policy TEXT NOT NULL,
    outcome TEXT NOT NULL,
    losing TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    resolved_ms INTEGER,
    trace_id TEXT NOT NULL
);
CREATE INDEX conflicts_by_outcome ON conflicts (outcome, id);
";

/// Version 2: refused ops are dead letters (the state was `failed`), a partial index finds the
/// held ops, and the sync metrics are kept with the sync state.
const V2: &str = "
UPDATE outbox SET state = 'dead_letter' WHERE state = 'failed';
CREATE INDEX outbox_held ON outbox (seq) WHERE state IN ('dead_letter', 'needs_action');
ALTER TABLE sync_state ADD COLUMN metrics TEXT;
";

/// Version 3: the confirmed records a re-sync from the start has not seen yet (a re-sync reads
/// the feed as a snapshot: what it never mentions was removed on the server).
const V3: &str = "
CREATE TABLE resync_unseen (
    entity TEXT NOT NULL,
    record_id TEXT NOT NULL,
    PRIMARY KEY (entity, record_id)
) WITHOUT ROWID;
";

/// Version 4: `records.server_fields` may be NULL, which means "the same as `fields`": the usual
/// synced record (no pending op) stored its fields twice, and the acknowledgement of an op
/// copied them within the row, growing it. SQLite cannot drop a NOT NULL in place, so the table
/// is rebuilt (in the migration's transaction), each row's copy replaced by NULL where equal.
const V4: &str = "
CREATE TABLE records_v4 (
    entity TEXT NOT NULL,
    record_id TEXT NOT NULL,
    server_version INTEGER NOT NULL,
    server_fields TEXT,
    server_deleted INTEGER NOT NULL,
    fields TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    pending INTEGER NOT NULL,
    conflicts INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    PRIMARY KEY (entity, record_id)
) WITHOUT ROWID;
INSERT INTO records_v4 SELECT entity, record_id, server_version, NULLIF(server_fields, fields), server_deleted,
    fields, deleted, pending, conflicts, failed FROM records;
DROP TABLE records;
ALTER TABLE records_v4 RENAME TO records;
";

/// Version 5: a conflict keeps the local intent's HLC and the server's field clocks, so an open
/// one can be offered to a policy registered later; `settings` keeps an app's (or the CLI's)
/// own small values beside its data.
const V5: &str = "
ALTER TABLE conflicts ADD COLUMN local_hlc TEXT;
ALTER TABLE conflicts ADD COLUMN server_meta TEXT;
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// All migrations, oldest first. Append; never edit a released one.
pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(V1), M::up(V2), M::up(V3), M::up(V4), M::up(V5)])
}

/// The newest schema version this build knows.
pub(crate) const LATEST: i64 = 5;

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }
}
