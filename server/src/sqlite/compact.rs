//! Compaction of the SQLite server store: old tombstones (with the horizon advanced past them),
//! and old pushes (idempotency responses with the op results they list), removed in bounded
//! write transactions.
//!
//! Op results have no index by age: one would cost every op of every push an extra B-tree
//! insert (about 10% more CPU per push, measured). They are found through the push that stored
//! them instead: `apply_batch` stores each final op outcome and the batch's response, which lists
//! every op id of the batch, in one transaction with one timestamp, so a response and the op
//! results it created have the same `created_ms` and expire together. The only index by age is
//! on `idempotency`, one row per batch.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::Result;

/// Rows removed per write transaction, about: at most this many tombstones, or pushes until
/// their op results reach this many (one push is at most a batch, 500 ops by default). A chunk
/// takes milliseconds, so a push waits at most about that long behind compaction however large
/// the backlog: the writer is released between chunks.
pub(crate) const CHUNK: u32 = 10_000;

/// What compaction removes, one kind at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Deleted records, by `records.changed_ms`.
    Tombstones,
    /// Stored responses to idempotency keys by `idempotency.created_ms`, each with the op
    /// results of the op ids it lists.
    Pushes,
}

impl Kind {
    pub(crate) const ALL: [Kind; 2] = [Kind::Tombstones, Kind::Pushes];

    /// A query that finds one row of this kind older than `?2` in tenant `?1` (through an index).
    pub(crate) fn probe(self) -> &'static str {
        match self {
            Kind::Tombstones => "SELECT 1 FROM records WHERE tenant = ?1 AND deleted = 1 AND changed_ms < ?2 LIMIT 1",
            Kind::Pushes => "SELECT 1 FROM idempotency WHERE tenant = ?1 AND created_ms < ?2 LIMIT 1",
        }
    }
}

/// Removes up to `?3` tombstones older than `?2` in tenant `?1` (found through the partial index,
/// removed by primary key) and returns their sequences. The outer `deleted = 1` makes sure no
/// live record is ever removed.
pub(crate) const REMOVE_TOMBSTONES: &str = "
    DELETE FROM records WHERE tenant = ?1 AND deleted = 1 AND (entity, record_id) IN (
        SELECT entity, record_id FROM records
        WHERE tenant = ?1 AND deleted = 1 AND changed_ms < ?2 LIMIT ?3)
    RETURNING seq";

/// The oldest pushes of tenant `?1` stored before `?2`, oldest first.
pub(crate) const OLD_PUSHES: &str = "
    SELECT user, key, response FROM idempotency
    WHERE tenant = ?1 AND created_ms < ?2 ORDER BY created_ms";

/// What one chunk removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Removed {
    pub(crate) tombstones: u64,
    pub(crate) op_results: u64,
    pub(crate) idempotency_keys: u64,
    /// Whether the chunk was full, so more may be left.
    pub(crate) full: bool,
}

/// Every tenant with a counter row. `apply_batch` makes the row before it stores anything, so no
/// tenant's rows are missed.
pub(crate) fn tenants(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT tenant FROM counters ORDER BY tenant")?;
    let tenants = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    Ok(tenants)
}

/// The kinds that have something older than `cutoff_ms` in `tenant` (a read: the writer is only
/// taken for tenants with work to do).
pub(crate) fn due(conn: &Connection, tenant: &str, cutoff_ms: i64) -> Result<Vec<Kind>> {
    let mut due = Vec::new();
    for kind in Kind::ALL {
        let found: Option<i64> =
            conn.prepare_cached(kind.probe())?.query_row(params![tenant, cutoff_ms], |r| r.get(0)).optional()?;
        if found.is_some() {
            due.push(kind);
        }
    }
    Ok(due)
}

/// Removes one chunk of `kind` older than `cutoff_ms` from `tenant` in one immediate transaction.
pub(crate) fn chunk(conn: &mut Connection, kind: Kind, tenant: &str, cutoff_ms: i64, chunk: u32) -> Result<Removed> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let removed = match kind {
        Kind::Tombstones => tombstones(&tx, tenant, cutoff_ms, chunk)?,
        Kind::Pushes => pushes(&tx, tenant, cutoff_ms, chunk)?,
    };
    tx.commit()?;
    Ok(removed)
}

/// Removes up to `chunk` tombstones and advances the horizon past them (same transaction).
fn tombstones(tx: &Connection, tenant: &str, cutoff_ms: i64, chunk: u32) -> Result<Removed> {
    let mut removed = 0;
    let mut last_seq: i64 = 0;
    {
        let mut stmt = tx.prepare_cached(REMOVE_TOMBSTONES)?;
        let mut rows = stmt.query(params![tenant, cutoff_ms, chunk])?;
        while let Some(row) = rows.next()? {
            removed += 1;
            last_seq = last_seq.max(row.get(0)?);
        }
    }
    if removed > 0 {
        // The safety rule: a cursor before a removed tombstone's sequence could still need it, so
        // the horizon moves to the greatest removed sequence in the same transaction. Every such
        // cursor now expires (its client re-syncs from the start); a cursor at or after the
        // horizon had already passed every removed tombstone. MAX keeps the horizon from moving
        // back; a tombstone's sequence is never past the tenant's sequence.
        tx.prepare_cached("UPDATE counters SET horizon = MAX(horizon, ?2) WHERE tenant = ?1")?
            .execute(params![tenant, last_seq])?;
    }
    Ok(Removed { tombstones: removed, full: removed == u64::from(chunk), ..Removed::default() })
}

/// The op ids a stored response lists (its other members are skipped, not kept).
#[derive(Deserialize)]
struct ListedOps {
    accepted: Vec<Listed>,
    conflicts: Vec<Listed>,
    rejected: Vec<Listed>,
}

#[derive(Deserialize)]
struct Listed {
    op_id: Uuid,
}

/// Removes the oldest pushes, until their op ids reach `chunk`, with their op results.
fn pushes(tx: &Connection, tenant: &str, cutoff_ms: i64, chunk: u32) -> Result<Removed> {
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut op_ids: Vec<Uuid> = Vec::new();
    let mut full = false;
    {
        let mut stmt = tx.prepare_cached(OLD_PUSHES)?;
        let mut rows = stmt.query(params![tenant, cutoff_ms])?;
        while let Some(row) = rows.next()? {
            if op_ids.len() >= chunk as usize || keys.len() >= chunk as usize {
                full = true;
                break;
            }
            let listed: ListedOps = serde_json::from_str(&row.get::<_, String>(2)?)?;
            op_ids.extend(listed.accepted.iter().chain(&listed.conflicts).chain(&listed.rejected).map(|o| o.op_id));
            keys.push((row.get(0)?, row.get(1)?));
        }
    }
    // An op id answered from an earlier push's result is listed too; its result is older still,
    // so the age condition removes it as well. A retryable rejection has no result: nothing to do.
    let mut op_results = 0;
    let mut remove_op =
        tx.prepare_cached("DELETE FROM op_results WHERE tenant = ?1 AND op_id = ?2 AND created_ms < ?3")?;
    for op_id in &op_ids {
        op_results += remove_op.execute(params![tenant, op_id.to_string(), cutoff_ms])? as u64;
    }
    let mut remove_key = tx.prepare_cached("DELETE FROM idempotency WHERE tenant = ?1 AND user = ?2 AND key = ?3")?;
    for (user, key) in &keys {
        remove_key.execute(params![tenant, user, key])?;
    }
    Ok(Removed { tombstones: 0, op_results, idempotency_keys: keys.len() as u64, full })
}
