//! The server store's schema and its one migration path (version in `PRAGMA user_version`).

use rusqlite::{Connection, TransactionBehavior};
use rusqlite_migration::{M, Migrations};

use crate::error::{Error, Result};

/// Version 1: records with their feed position, op results, idempotency keys, per-tenant counters.
/// Every table is keyed by tenant first.
const V1: &str = "
CREATE TABLE counters (
    tenant  TEXT    NOT NULL PRIMARY KEY,
    seq     INTEGER NOT NULL DEFAULT 0,
    horizon INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE records (
    tenant      TEXT    NOT NULL REFERENCES counters (tenant),
    entity      TEXT    NOT NULL,
    record_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    fields      TEXT    NOT NULL,
    meta        TEXT    NOT NULL,
    deleted     INTEGER NOT NULL,
    deleted_hlc TEXT,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (tenant, entity, record_id)
) STRICT, WITHOUT ROWID;

CREATE UNIQUE INDEX records_feed ON records (tenant, seq);

CREATE TABLE op_results (
    tenant     TEXT    NOT NULL,
    op_id      TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, op_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE idempotency (
    tenant     TEXT    NOT NULL,
    user       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    body_hash  TEXT    NOT NULL,
    response   TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, user, key)
) STRICT, WITHOUT ROWID;
";

/// Version 2: compaction. `records.changed_ms` is when the record last changed (the clock that
/// stamps `op_results.created_ms`); rows from version 1 get 0, "as old as can be", so the first
/// compaction after the upgrade removes the tombstones it cannot date (advancing the horizon as
/// always). Two indexes find what compaction removes without scanning: tombstones by age
/// (partial: only a change that makes or ends a tombstone writes it) and pushes by age (one row
/// per batch). Op results are found through the push that stored them, so an op costs no extra
/// index entry.
const V2: &str = "
ALTER TABLE records ADD COLUMN changed_ms INTEGER NOT NULL DEFAULT 0;

CREATE INDEX records_tombstones ON records (tenant, changed_ms) WHERE deleted = 1;

CREATE INDEX idempotency_age ON idempotency (tenant, created_ms);
";

/// Version 3: `records.meta` holds the fields one write changed as one entry (see `meta.rs`). A
/// build that knows only version 2 could not read that, so the version moves; no table changes,
/// and rows written before are still read as they are.
const V3: &str = "-- records.meta: [[version, hlc, [field, ...]], ...]";

const MIGRATIONS: &[M<'static>] = &[M::up(V1), M::up(V2), M::up(V3)];

/// The newest schema version this build knows.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Brings the schema to the latest version in immediate transactions; a file written by a newer
/// build is refused and left untouched.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > LATEST {
        return Err(Error::SchemaTooNew { found, known: LATEST });
    }
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    let result = Migrations::from_slice(MIGRATIONS).to_latest(conn);
    conn.set_transaction_behavior(TransactionBehavior::Deferred);
    Ok(result?)
}

/// Brings a fresh file to `version` exactly as the build that knew only that version did: for
/// tests that upgrade an old file.
#[cfg(test)]
pub(crate) fn migrate_to(conn: &mut Connection, version: usize) -> Result<()> {
    Ok(Migrations::from_slice(&MIGRATIONS[..version]).to_latest(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        Migrations::from_slice(MIGRATIONS).validate().unwrap();
    }

    #[test]
    fn migrating_twice_is_a_no_op_and_sets_user_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, LATEST);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", LATEST + 1).unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(matches!(err, Error::SchemaTooNew { found, known } if found == LATEST + 1 && known == LATEST));
        // Nothing was created.
        let tables: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)).unwrap();
        assert_eq!(tables, 0);
    }
}
