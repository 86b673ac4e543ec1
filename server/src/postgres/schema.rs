//! The PostgreSQL schema and its migrations (refinery, history in `refinery_schema_history`),
//! run by one node at a time under an advisory lock.

use refinery::{Migration, Runner};

use crate::error::{Error, Result};

/// Version 1: the same rows as the SQLite store's schema version 3, every table keyed by tenant
/// first, and the shard's id. Op results have an index by age here: PostgreSQL's compaction
/// deletes them by age directly. No foreign key from records to counters: a push makes the
/// counter row before anything else in its transaction, and the key's check costs about 4 µs per
/// record written (measured; 40 % of the insert).
const V1: &str = r#"
CREATE TABLE shard (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    one BOOLEAN NOT NULL DEFAULT TRUE UNIQUE CHECK (one)
);
INSERT INTO shard DEFAULT VALUES;

CREATE TABLE counters (
    tenant  TEXT   NOT NULL PRIMARY KEY,
    seq     BIGINT NOT NULL DEFAULT 0,
    horizon BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE records (
    tenant      TEXT    NOT NULL,
    entity      TEXT    NOT NULL,
    record_id   TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    fields      TEXT    NOT NULL,
    meta        TEXT    NOT NULL,
    deleted     BOOLEAN NOT NULL,
    deleted_hlc TEXT,
    seq         BIGINT  NOT NULL,
    changed_ms  BIGINT  NOT NULL,
    PRIMARY KEY (tenant, entity, record_id)
);
CREATE UNIQUE INDEX records_feed ON records (tenant, seq);
CREATE INDEX records_tombstones ON records (tenant, changed_ms) WHERE deleted;

CREATE TABLE op_results (
    tenant     TEXT   NOT NULL,
    op_id      UUID   NOT NULL,
    outcome    TEXT   NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, op_id)
);
CREATE INDEX op_results_age ON op_results (tenant, created_ms);

CREATE TABLE idempotency (
    tenant     TEXT   NOT NULL,
    "user"     TEXT   NOT NULL,
    key        TEXT   NOT NULL,
    body_hash  TEXT   NOT NULL,
    response   TEXT   NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, "user", key)
);
CREATE INDEX idempotency_age ON idempotency (tenant, created_ms);
"#;

/// The migrations, oldest first: (refinery name, SQL).
const MIGRATIONS: &[(&str, &str)] = &[("V1__initial", V1)];

/// The newest schema version this build knows.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// One key for the advisory lock every node takes while it migrates.
const LOCK: i64 = 0x636f_6e76_6572_6765; // "converge"

/// Brings the schema to the latest version; a database migrated by a newer build is refused and
/// left untouched.
pub(crate) async fn migrate(client: &mut tokio_postgres::Client) -> Result<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK]).await?;
    let migrated = migrate_locked(client).await;
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK]).await;
    migrated?;
    unlocked?;
    Ok(())
}

async fn migrate_locked(client: &mut tokio_postgres::Client) -> Result<()> {
    let history: Option<String> =
        client.query_one("SELECT to_regclass('refinery_schema_history')::TEXT", &[]).await?.get(0);
    let found: i64 = match history {
        None => 0,
        Some(_) => {
            client.query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM refinery_schema_history", &[]).await?.get(0)
        }
    };
    if found > LATEST {
        return Err(Error::SchemaTooNew { found, known: LATEST });
    }
    let migrations = MIGRATIONS
        .iter()
        .map(|(name, sql)| Migration::unapplied(name, sql))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Runner::new(&migrations).run_async(client).await?;
    Ok(())
}
