//! Row mapping: the reads and writes of `StoreRead` / `StoreTx` over one SQLite connection.

use converge_core::store::{ConflictRecord, DeviceState, LocalRecord, OpState, OutboxOp, Summary};
use converge_core::{CheckMode, Fields, Hlc, Op};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::{Error, Result};

const RECORD_COLS: &str =
    "entity, record_id, server_version, server_fields, server_deleted, fields, deleted, pending, conflicts, failed";
const OP_COLS: &str = "seq, op_id, entity, record_id, op, patch, base_version, hlc, check_mode, state, batch_id, \
                       attempts, last_error, created_ms";
const CONFLICT_COLS: &str = "id, entity, record_id, op_id, op, base, local, server, server_version, server_deleted, \
                             fields, policy, outcome, losing, reason, created_ms, resolved_ms, trace_id, local_hlc, \
                             server_meta";

fn fields(s: &str) -> Result<Fields> {
    Ok(serde_json::from_str(s)?)
}

fn json(f: &Fields) -> String {
    serde_json::to_string(f).unwrap_or_else(|_| "{}".to_owned())
}

fn malformed(what: &str) -> Error {
    Error::Malformed(what.to_owned())
}

/// Runs a query and maps every row with `f`.
fn collect<T>(conn: &Connection, sql: &str, p: impl rusqlite::Params, f: fn(&Row<'_>) -> Result<T>) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(p)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(f(row)?);
    }
    Ok(out)
}

/// Runs a query and maps its first row, if any, with `f`.
fn first<T>(conn: &Connection, sql: &str, p: impl rusqlite::Params, f: fn(&Row<'_>) -> Result<T>) -> Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(p)?;
    rows.next()?.map(f).transpose()
}

fn record_from(r: &Row<'_>) -> Result<LocalRecord> {
    let view = fields(&r.get::<_, String>(5)?)?;
    Ok(LocalRecord {
        entity: r.get(0)?,
        record_id: r.get(1)?,
        server_version: r.get::<_, i64>(2)? as u64,
        // NULL: the confirmed fields are the view's (see `put_record`).
        server_fields: match r.get::<_, Option<String>>(3)? {
            Some(s) => fields(&s)?,
            None => view.clone(),
        },
        server_deleted: r.get(4)?,
        fields: view,
        deleted: r.get(6)?,
        pending: r.get(7)?,
        conflicts: r.get(8)?,
        failed: r.get(9)?,
    })
}

fn op_from(r: &Row<'_>) -> Result<OutboxOp> {
    Ok(OutboxOp {
        seq: r.get(0)?,
        op_id: r.get::<_, String>(1)?.parse().map_err(|_| malformed("outbox.op_id"))?,
        entity: r.get(2)?,
        record_id: r.get(3)?,
        op: Op::parse(&r.get::<_, String>(4)?).map_err(|_| malformed("outbox.op"))?,
        patch: fields(&r.get::<_, String>(5)?)?,
        base_version: r.get::<_, i64>(6)? as u64,
        hlc: r.get::<_, String>(7)?.parse::<Hlc>().map_err(|_| malformed("outbox.hlc"))?,
        check: CheckMode::parse(&r.get::<_, String>(8)?).map_err(|_| malformed("outbox.check_mode"))?,
        state: OpState::parse(&r.get::<_, String>(9)?).ok_or_else(|| malformed("outbox.state"))?,
        batch_id: r.get(10)?,
        attempts: r.get(11)?,
        last_error: r.get(12)?,
        created_ms: r.get::<_, i64>(13)? as u64,
    })
}

fn conflict_from(r: &Row<'_>) -> Result<ConflictRecord> {
    Ok(ConflictRecord {
        id: r.get(0)?,
        entity: r.get(1)?,
        record_id: r.get(2)?,
        op_id: r.get::<_, String>(3)?.parse().map_err(|_| malformed("conflicts.op_id"))?,
        op: Op::parse(&r.get::<_, String>(4)?).map_err(|_| malformed("conflicts.op"))?,
        base: fields(&r.get::<_, String>(5)?)?,
        local: fields(&r.get::<_, String>(6)?)?,
        server: fields(&r.get::<_, String>(7)?)?,
        server_version: r.get::<_, i64>(8)? as u64,
        server_deleted: r.get(9)?,
        fields: serde_json::from_str(&r.get::<_, String>(10)?)?,
        policy: r.get(11)?,
        outcome: r.get(12)?,
        losing: fields(&r.get::<_, String>(13)?)?,
        reason: r.get(14)?,
        created_ms: r.get::<_, i64>(15)? as u64,
        resolved_ms: r.get::<_, Option<i64>>(16)?.map(|v| v as u64),
        trace_id: r.get(17)?,
        local_hlc: match r.get::<_, Option<String>>(18)? {
            Some(h) => Some(h.parse().map_err(|_| malformed("conflicts.local_hlc"))?),
            None => None,
        },
        server_meta: match r.get::<_, Option<String>>(19)? {
            Some(m) => serde_json::from_str(&m)?,
            None => Default::default(),
        },
    })
}

fn ops(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<OutboxOp>> {
    collect(conn, sql, p, op_from)
}

pub(crate) fn device_state(conn: &Connection) -> Result<DeviceState> {
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, hlc, cursor, last_success_ms, last_error, metrics FROM sync_state WHERE id = 1",
    )?;
    let (device_id, hlc, cursor, last_success, last_error, metrics) = stmt.query_row([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    Ok(DeviceState {
        device_id,
        hlc: hlc.map(|h| h.parse()).transpose().map_err(|_| malformed("sync_state.hlc"))?,
        cursor,
        last_success_ms: last_success.map(|v| v as u64),
        last_error,
        metrics: metrics.map(|m| serde_json::from_str(&m)).transpose()?.unwrap_or_default(),
    })
}

pub(crate) fn set_device_state(conn: &Connection, s: &DeviceState) -> Result<()> {
    conn.prepare_cached(
        "UPDATE sync_state SET device_id = ?1, hlc = ?2, cursor = ?3, last_success_ms = ?4, last_error = ?5, \
         metrics = ?6 WHERE id = 1",
    )?
    .execute(params![
        s.device_id,
        s.hlc.as_ref().map(|h| h.to_string()),
        s.cursor,
        s.last_success_ms.map(|v| v as i64),
        s.last_error,
        serde_json::to_string(&s.metrics)?,
    ])?;
    Ok(())
}

pub(crate) fn max_outbox_hlc(conn: &Connection) -> Result<Option<Hlc>> {
    let max: Option<String> = conn.prepare_cached("SELECT MAX(hlc) FROM outbox")?.query_row([], |r| r.get(0))?;
    max.map(|h| h.parse()).transpose().map_err(|_| malformed("outbox.hlc"))
}

pub(crate) fn record(conn: &Connection, entity: &str, record_id: &str) -> Result<Option<LocalRecord>> {
    let sql = format!("SELECT {RECORD_COLS} FROM records WHERE entity = ?1 AND record_id = ?2");
    first(conn, &sql, params![entity, record_id], record_from)
}

pub(crate) fn list(conn: &Connection, entity: &str) -> Result<Vec<LocalRecord>> {
    let sql = format!("SELECT {RECORD_COLS} FROM records WHERE entity = ?1 AND deleted = 0 ORDER BY record_id");
    collect(conn, &sql, params![entity], record_from)
}

pub(crate) fn record_ops(conn: &Connection, entity: &str, record_id: &str) -> Result<Vec<OutboxOp>> {
    let sql = format!("SELECT {OP_COLS} FROM outbox WHERE entity = ?1 AND record_id = ?2 ORDER BY seq");
    ops(conn, &sql, params![entity, record_id])
}

pub(crate) fn in_flight(conn: &Connection) -> Result<Vec<OutboxOp>> {
    // Ordered as the partial index is, so the lookup never scans the whole outbox.
    let sql = format!("SELECT {OP_COLS} FROM outbox WHERE batch_id IS NOT NULL ORDER BY batch_id, seq");
    ops(conn, &sql, [])
}

pub(crate) fn next_ops(conn: &Connection, limit: usize, first: &[String]) -> Result<Vec<OutboxOp>> {
    // The ops of `first`'s entity types lead, each group in outbox order.
    let order = if first.is_empty() {
        String::new()
    } else {
        let marks: Vec<String> = (0..first.len()).map(|i| format!("?{}", i + 2)).collect();
        format!("o.entity NOT IN ({}), ", marks.join(", "))
    };
    let sql = format!(
        "SELECT {OP_COLS} FROM outbox o WHERE o.state = 'pending' AND o.batch_id IS NULL AND NOT EXISTS \
         (SELECT 1 FROM outbox p WHERE p.entity = o.entity AND p.record_id = o.record_id AND p.seq < o.seq) \
         ORDER BY {order}o.seq LIMIT ?1"
    );
    let limit = limit as i64;
    let params: Vec<&dyn rusqlite::ToSql> = std::iter::once(&limit as &dyn rusqlite::ToSql)
        .chain(first.iter().map(|e| e as &dyn rusqlite::ToSql))
        .collect();
    ops(conn, &sql, params.as_slice())
}

pub(crate) fn summary(conn: &Connection) -> Result<Summary> {
    let (pending, needs_action, dead, oldest): (i64, i64, i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(state NOT IN ('dead_letter', 'needs_action')), 0), \
             COALESCE(SUM(state = 'needs_action'), 0), COALESCE(SUM(state = 'dead_letter'), 0), \
             MIN(CASE WHEN state NOT IN ('dead_letter', 'needs_action') THEN created_ms END) FROM outbox",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    let open: i64 =
        conn.prepare_cached("SELECT COUNT(*) FROM conflicts WHERE outcome = 'open'")?.query_row([], |r| r.get(0))?;
    Ok(Summary {
        pending: pending as u64,
        needs_action: needs_action as u64,
        dead_letters: dead as u64,
        oldest_pending_ms: oldest.map(|v| v as u64),
        open_conflicts: open as u64,
    })
}

pub(crate) fn oldest_pending_ms(conn: &Connection) -> Result<Option<u64>> {
    let t: Option<i64> = conn
        .prepare_cached(
            "SELECT created_ms FROM outbox WHERE state NOT IN ('dead_letter', 'needs_action') ORDER BY seq LIMIT 1",
        )?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(t.map(|v| v as u64))
}

pub(crate) fn held_ops(conn: &Connection) -> Result<Vec<OutboxOp>> {
    // Worded as the partial index is, so only held ops are read.
    let sql = format!("SELECT {OP_COLS} FROM outbox WHERE state IN ('dead_letter', 'needs_action') ORDER BY seq");
    ops(conn, &sql, [])
}

pub(crate) fn op(conn: &Connection, op_id: uuid::Uuid) -> Result<Option<OutboxOp>> {
    let sql = format!("SELECT {OP_COLS} FROM outbox WHERE op_id = ?1");
    first(conn, &sql, params![op_id.to_string()], op_from)
}

pub(crate) fn conflicts(conn: &Connection, open: bool) -> Result<Vec<ConflictRecord>> {
    let cond = if open { "outcome = 'open'" } else { "outcome <> 'open'" };
    let sql = format!("SELECT {CONFLICT_COLS} FROM conflicts WHERE {cond} ORDER BY id");
    collect(conn, &sql, [], conflict_from)
}

pub(crate) fn conflict(conn: &Connection, id: i64) -> Result<Option<ConflictRecord>> {
    let sql = format!("SELECT {CONFLICT_COLS} FROM conflicts WHERE id = ?1");
    first(conn, &sql, params![id], conflict_from)
}

/// Writes a record row. Its confirmed fields are stored as NULL when they equal the view's, as
/// they do for every record with nothing pending: the row holds its fields once.
pub(crate) fn put_record(conn: &Connection, r: &LocalRecord, replace: bool) -> Result<bool> {
    let sql = if replace {
        "INSERT OR REPLACE INTO records (entity, record_id, server_version, server_fields, server_deleted, fields, \
         deleted, pending, conflicts, failed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    } else {
        "INSERT INTO records (entity, record_id, server_version, server_fields, server_deleted, fields, \
         deleted, pending, conflicts, failed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING"
    };
    let n = conn.prepare_cached(sql)?.execute(params![
        r.entity,
        r.record_id,
        r.server_version as i64,
        (r.server_fields != r.fields).then(|| json(&r.server_fields)),
        r.server_deleted,
        json(&r.fields),
        r.deleted,
        r.pending,
        r.conflicts,
        r.failed
    ])?;
    Ok(n == 1)
}

pub(crate) fn remove_record(conn: &Connection, entity: &str, record_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM records WHERE entity = ?1 AND record_id = ?2")?
        .execute(params![entity, record_id])?;
    Ok(())
}

pub(crate) fn insert_op(conn: &Connection, o: &OutboxOp) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO outbox (op_id, entity, record_id, op, patch, base_version, hlc, check_mode, state, batch_id, \
         attempts, last_error, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        o.op_id.to_string(),
        o.entity,
        o.record_id,
        o.op.as_str(),
        json(&o.patch),
        o.base_version as i64,
        o.hlc.to_string(),
        o.check.as_str(),
        o.state.as_str(),
        o.batch_id,
        o.attempts,
        o.last_error,
        o.created_ms as i64
    ])?;
    Ok(conn.last_insert_rowid())
}

pub(crate) fn update_op(conn: &Connection, o: &OutboxOp) -> Result<()> {
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET op = ?2, patch = ?3, base_version = ?4, hlc = ?5, check_mode = ?6, state = ?7, \
             batch_id = ?8, attempts = ?9, last_error = ?10, op_id = ?11 WHERE seq = ?1",
        )?
        .execute(params![
            o.seq,
            o.op.as_str(),
            json(&o.patch),
            o.base_version as i64,
            o.hlc.to_string(),
            o.check.as_str(),
            o.state.as_str(),
            o.batch_id,
            o.attempts,
            o.last_error,
            o.op_id.to_string()
        ])?;
    if n == 1 { Ok(()) } else { Err(malformed("update of an outbox op that is not there")) }
}

pub(crate) fn mark_in_flight(conn: &Connection, seqs: &[i64], batch_id: &str) -> Result<()> {
    let marked = conn
        .prepare_cached(
            "UPDATE outbox SET state = 'in_flight', batch_id = ?2 WHERE seq IN (SELECT value FROM json_each(?1))",
        )?
        .execute(params![serde_json::to_string(seqs)?, batch_id])?;
    if marked != seqs.len() {
        return Err(malformed("an outbox op to send is not there"));
    }
    Ok(())
}

pub(crate) fn remove_op(conn: &Connection, seq: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?.execute(params![seq])?;
    Ok(())
}

pub(crate) fn confirm_sole_op(
    conn: &Connection,
    entity: &str,
    record_id: &str,
    seq: i64,
    version: u64,
) -> Result<bool> {
    // The view is the confirmed state with the record's outbox ops applied; with one op, the
    // view is what the server now holds. A record whose counters say it has other ops, an
    // open conflict or a held op takes the general path.
    let confirmed = conn
        .prepare_cached(
            "UPDATE records SET server_version = ?3, server_fields = NULL, server_deleted = deleted, pending = 0 \
             WHERE entity = ?1 AND record_id = ?2 AND pending = 1 AND conflicts = 0 AND failed = 0 \
             AND server_version + 1 = ?3",
        )?
        .execute(params![entity, record_id, version as i64])?;
    if confirmed == 0 {
        return Ok(false);
    }
    // The record's only op must be this one; otherwise the counters lied and the whole
    // transaction is refused rather than confirming the wrong op.
    let removed = conn
        .prepare_cached("DELETE FROM outbox WHERE seq = ?1 AND entity = ?2 AND record_id = ?3")?
        .execute(params![seq, entity, record_id])?;
    if removed == 1 { Ok(true) } else { Err(malformed("an acknowledged op is not the record's outbox op")) }
}

pub(crate) fn write_conflict(conn: &Connection, c: &ConflictRecord, insert: bool) -> Result<i64> {
    let sql = if insert {
        "INSERT INTO conflicts (entity, record_id, op_id, op, base, local, server, server_version, server_deleted, \
         fields, policy, outcome, losing, reason, created_ms, resolved_ms, trace_id, local_hlc, server_meta) \
         VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20) RETURNING id"
    } else {
        "UPDATE conflicts SET entity = ?2, record_id = ?3, op_id = ?4, op = ?5, base = ?6, local = ?7, server = ?8, \
         server_version = ?9, server_deleted = ?10, fields = ?11, policy = ?12, outcome = ?13, losing = ?14, \
         reason = ?15, created_ms = ?16, resolved_ms = ?17, trace_id = ?18, local_hlc = ?19, server_meta = ?20 \
         WHERE id = ?1 RETURNING id"
    };
    let id = conn.prepare_cached(sql)?.query_row(
        params![
            if insert { None } else { Some(c.id) },
            c.entity,
            c.record_id,
            c.op_id.to_string(),
            c.op.as_str(),
            json(&c.base),
            json(&c.local),
            json(&c.server),
            c.server_version as i64,
            c.server_deleted,
            serde_json::to_string(&c.fields)?,
            c.policy,
            c.outcome,
            json(&c.losing),
            c.reason,
            c.created_ms as i64,
            c.resolved_ms.map(|v| v as i64),
            c.trace_id,
            c.local_hlc.as_ref().map(ToString::to_string),
            serde_json::to_string(&c.server_meta)?
        ],
        |r| r.get(0),
    )?;
    Ok(id)
}

pub(crate) fn snapshot_begin(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "DELETE FROM resync_unseen; INSERT INTO resync_unseen (entity, record_id) \
         SELECT entity, record_id FROM records WHERE server_version > 0 AND server_deleted = 0;",
    )?;
    Ok(())
}

pub(crate) fn snapshot_active(conn: &Connection) -> Result<bool> {
    Ok(conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM resync_unseen)")?.query_row([], |r| r.get(0))?)
}

pub(crate) fn snapshot_seen(conn: &Connection, entity: &str, record_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM resync_unseen WHERE entity = ?1 AND record_id = ?2")?
        .execute(params![entity, record_id])?;
    Ok(())
}

pub(crate) fn snapshot_take(conn: &Connection, limit: usize) -> Result<Vec<(String, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT entity, record_id FROM resync_unseen ORDER BY entity, record_id LIMIT ?1")?;
    let keys = stmt
        .query_map(params![limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<(String, String)>>>()?;
    for (e, r) in &keys {
        snapshot_seen(conn, e, r)?;
    }
    Ok(keys)
}
