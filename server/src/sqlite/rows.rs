//! Reading and writing the store's rows inside a connection or transaction: records, op results,
//! idempotency keys and the per-tenant counter.

use converge_core::check::StoredRecord;
use converge_core::hlc::Hlc;
use converge_core::server_store::{FeedPage, StoredPush};
use converge_core::wire::{Change, OpOutcome};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::error::{Error, Result};

/// A u64 as SQLite's i64.
pub(crate) fn to_i64(v: u64, what: &'static str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::OutOfRange(what))
}

/// An i64 read back from SQLite as u64.
pub(crate) fn to_u64(v: i64, what: &'static str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Corrupt(what))
}

/// The stored response to (tenant, user, key).
pub(crate) fn stored_push(conn: &Connection, tenant: &str, user: &str, key: &str) -> Result<Option<StoredPush>> {
    let row = conn
        .prepare_cached("SELECT body_hash, response FROM idempotency WHERE tenant = ?1 AND user = ?2 AND key = ?3")?
        .query_row(params![tenant, user, key], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .optional()?;
    match row {
        None => Ok(None),
        Some((body_hash, response)) => Ok(Some(StoredPush { body_hash, response: serde_json::from_str(&response)? })),
    }
}

/// Stores the response to (tenant, user, key).
pub(crate) fn insert_push(
    conn: &Connection,
    tenant: &str,
    user: &str,
    key: &str,
    push: &StoredPush,
    now_ms: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO idempotency (tenant, user, key, body_hash, response, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![tenant, user, key, push.body_hash, serde_json::to_string(&push.response)?, now_ms])?;
    Ok(())
}

/// The outcomes stored under any of `op_ids` in this tenant, in one query.
pub(crate) fn op_results(
    conn: &Connection,
    tenant: &str,
    op_ids: impl Iterator<Item = Uuid>,
) -> Result<std::collections::HashMap<Uuid, OpOutcome>> {
    let ids = serde_json::to_string(&op_ids.map(|id| id.to_string()).collect::<Vec<_>>())?;
    let mut stmt = conn.prepare_cached(
        "SELECT op_id, outcome FROM op_results WHERE tenant = ?1 AND op_id IN (SELECT value FROM json_each(?2))",
    )?;
    let mut rows = stmt.query(params![tenant, ids])?;
    let mut found = std::collections::HashMap::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let id = id.parse::<Uuid>().map_err(|_| Error::Corrupt("op_results.op_id"))?;
        found.insert(id, serde_json::from_str(&row.get::<_, String>(1)?)?);
    }
    Ok(found)
}

/// Stores an op's final outcome.
pub(crate) fn insert_op_result(
    conn: &Connection,
    tenant: &str,
    op_id: Uuid,
    outcome: &OpOutcome,
    now_ms: i64,
) -> Result<()> {
    conn.prepare_cached("INSERT INTO op_results (tenant, op_id, outcome, created_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![tenant, op_id.to_string(), serde_json::to_string(outcome)?, now_ms])?;
    Ok(())
}

/// Makes sure the tenant has a counter row.
pub(crate) fn ensure_counter(conn: &Connection, tenant: &str) -> Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO counters (tenant) VALUES (?1)")?.execute([tenant])?;
    Ok(())
}

/// Sets the tenant's change sequence (the counter row must exist).
pub(crate) fn set_seq(conn: &Connection, tenant: &str, seq: u64) -> Result<()> {
    conn.prepare_cached("UPDATE counters SET seq = ?2 WHERE tenant = ?1")?
        .execute(params![tenant, to_i64(seq, "seq")?])?;
    Ok(())
}

/// The tenant's (sequence, horizon); zeros for a tenant that never wrote.
pub(crate) fn counter(conn: &Connection, tenant: &str) -> Result<(u64, u64)> {
    let row: Option<(i64, i64)> = conn
        .prepare_cached("SELECT seq, horizon FROM counters WHERE tenant = ?1")?
        .query_row([tenant], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, horizon) = row.unwrap_or((0, 0));
    Ok((to_u64(seq, "counters.seq")?, to_u64(horizon, "counters.horizon")?))
}

/// A record's stored state, for the conflict check.
pub(crate) fn load_record(
    conn: &Connection,
    tenant: &str,
    entity: &str,
    record_id: &str,
) -> Result<Option<StoredRecord>> {
    let row = conn
        .prepare_cached(
            "SELECT version, fields, meta, deleted, deleted_hlc FROM records
             WHERE tenant = ?1 AND entity = ?2 AND record_id = ?3",
        )?
        .query_row(params![tenant, entity, record_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, bool>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .optional()?;
    let Some((version, fields, meta, deleted, deleted_hlc)) = row else {
        return Ok(None);
    };
    let meta = crate::meta::decode(&meta)?;
    let deleted_hlc =
        deleted_hlc.map(|h| h.parse::<Hlc>().map_err(|_| Error::Corrupt("records.deleted_hlc"))).transpose()?;
    Ok(Some(StoredRecord {
        entity: entity.to_owned(),
        record_id: record_id.to_owned(),
        version: to_u64(version, "records.version")?,
        fields: serde_json::from_str(&fields)?,
        meta,
        deleted,
        deleted_hlc,
    }))
}

/// Writes a record's new state at feed position `seq`, changed at `now_ms`.
pub(crate) fn save_record(conn: &Connection, tenant: &str, rec: &StoredRecord, seq: i64, now_ms: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO records (tenant, entity, record_id, version, fields, meta, deleted, deleted_hlc, seq, changed_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (tenant, entity, record_id) DO UPDATE SET
            version = excluded.version, fields = excluded.fields, meta = excluded.meta,
            deleted = excluded.deleted, deleted_hlc = excluded.deleted_hlc, seq = excluded.seq,
            changed_ms = excluded.changed_ms",
    )?
    .execute(params![
        tenant,
        rec.entity,
        rec.record_id,
        to_i64(rec.version, "version")?,
        serde_json::to_string(&rec.fields)?,
        crate::meta::encode(&rec.meta)?,
        rec.deleted,
        rec.deleted_hlc.as_ref().map(Hlc::to_string),
        seq,
        now_ms,
    ])?;
    Ok(())
}

fn change_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, i64, String, bool)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn change(row: (String, String, i64, String, bool)) -> Result<Change> {
    let (entity, record_id, version, fields, deleted) = row;
    Ok(Change {
        entity,
        record_id,
        version: to_u64(version, "records.version")?,
        fields: serde_json::from_str(&fields)?,
        deleted,
    })
}

/// One record as the feed shows it.
pub(crate) fn record(conn: &Connection, tenant: &str, entity: &str, record_id: &str) -> Result<Option<Change>> {
    conn.prepare_cached(
        "SELECT entity, record_id, version, fields, deleted FROM records
         WHERE tenant = ?1 AND entity = ?2 AND record_id = ?3",
    )?
    .query_row(params![tenant, entity, record_id], change_from_row)
    .optional()?
    .map(change)
    .transpose()
}

/// Up to `limit` records whose feed position is after `after`, in feed order, with the tenant's
/// horizon. One read transaction, so the horizon and the rows come from the same snapshot: a
/// compaction that removes tombstones commits its horizon with them, so it is seen either whole
/// or not at all.
pub(crate) fn changes(conn: &Connection, tenant: &str, after: u64, limit: u32) -> Result<FeedPage> {
    let tx = conn.unchecked_transaction()?;
    let page = changes_in(&tx, tenant, after, limit)?;
    tx.commit()?;
    Ok(page)
}

fn changes_in(conn: &Connection, tenant: &str, after: u64, limit: u32) -> Result<FeedPage> {
    let (seq, horizon) = counter(conn, tenant)?;
    if after > seq {
        return Err(Error::CursorAhead);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT entity, record_id, version, fields, deleted, seq FROM records
         WHERE tenant = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![tenant, to_i64(after, "cursor")?, i64::from(limit) + 1], |r| {
        Ok((change_from_row(r)?, r.get::<_, i64>(5)?))
    })?;
    let mut changes = Vec::new();
    let mut last_seq = after;
    let mut has_more = false;
    for row in rows {
        let (row, seq) = row?;
        if changes.len() == limit as usize {
            has_more = true;
            break;
        }
        changes.push(change(row)?);
        last_seq = to_u64(seq, "records.seq")?;
    }
    if !has_more {
        // Nothing follows up to the tenant's sequence in this snapshot: continuing from there
        // keeps the cursor past the horizon even when compaction removed the feed's last changes.
        last_seq = seq;
    }
    Ok(FeedPage { changes, last_seq, has_more, horizon })
}
