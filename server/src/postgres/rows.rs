//! Reading the PostgreSQL store's rows: the feed, records, stored pushes, counters and figures.

use std::collections::HashMap;

use converge_core::check::StoredRecord;
use converge_core::hlc::Hlc;
use converge_core::server_store::{FeedPage, RecordKey, StoredPush};
use converge_core::wire::{Change, OpOutcome};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use crate::TenantStats;
use crate::error::{Error, Result};

/// A u64 as PostgreSQL's BIGINT.
pub(crate) fn to_i64(v: u64, what: &'static str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::OutOfRange(what))
}

/// A BIGINT read back as u64.
pub(crate) fn to_u64(v: i64, what: &'static str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Corrupt(what))
}

/// The stored response to (tenant, user, key).
pub(crate) async fn stored_push(
    client: &impl GenericClient,
    tenant: &str,
    user: &str,
    key: &str,
) -> Result<Option<StoredPush>> {
    let stmt = client
        .prepare_cached(r#"SELECT body_hash, response FROM idempotency WHERE tenant = $1 AND "user" = $2 AND key = $3"#)
        .await?;
    match client.query_opt(&stmt, &[&tenant, &user, &key]).await? {
        None => Ok(None),
        Some(row) => {
            Ok(Some(StoredPush { body_hash: row.get(0), response: serde_json::from_str(row.get::<_, &str>(1))? }))
        }
    }
}

/// The outcomes stored under any of `op_ids` in this tenant.
pub(crate) async fn op_results(
    client: &impl GenericClient,
    tenant: &str,
    op_ids: &[Uuid],
) -> Result<HashMap<Uuid, OpOutcome>> {
    let stmt =
        client.prepare_cached("SELECT op_id, outcome FROM op_results WHERE tenant = $1 AND op_id = ANY($2)").await?;
    let mut found = HashMap::new();
    for row in client.query(&stmt, &[&tenant, &op_ids]).await? {
        found.insert(row.get::<_, Uuid>(0), serde_json::from_str(row.get::<_, &str>(1))?);
    }
    Ok(found)
}

/// The current state of each of `keys`, in their order (`None`: no such record).
pub(crate) async fn records(
    client: &impl GenericClient,
    tenant: &str,
    keys: &[RecordKey],
) -> Result<Vec<Option<StoredRecord>>> {
    let (entities, ids): (Vec<&str>, Vec<&str>) = keys.iter().map(|(e, r)| (e.as_str(), r.as_str())).unzip();
    let stmt = client
        .prepare_cached(
            "SELECT k.i, r.version, r.fields, r.meta, r.deleted, r.deleted_hlc
             FROM UNNEST($2::TEXT[], $3::TEXT[]) WITH ORDINALITY AS k (entity, record_id, i)
             JOIN records r ON r.tenant = $1 AND r.entity = k.entity AND r.record_id = k.record_id",
        )
        .await?;
    let mut found: Vec<Option<StoredRecord>> = vec![None; keys.len()];
    for row in client.query(&stmt, &[&tenant, &entities, &ids]).await? {
        let i = usize::try_from(row.get::<_, i64>(0) - 1).map_err(|_| Error::Corrupt("ordinality"))?;
        let (entity, record_id) = keys.get(i).ok_or(Error::Corrupt("ordinality"))?;
        let deleted_hlc = row
            .get::<_, Option<&str>>(5)
            .map(|h| h.parse::<Hlc>().map_err(|_| Error::Corrupt("records.deleted_hlc")))
            .transpose()?;
        found[i] = Some(StoredRecord {
            entity: entity.clone(),
            record_id: record_id.clone(),
            version: to_u64(row.get(1), "records.version")?,
            fields: serde_json::from_str(row.get::<_, &str>(2))?,
            meta: crate::meta::decode(row.get::<_, &str>(3))?,
            deleted: row.get(4),
            deleted_hlc,
        });
    }
    Ok(found)
}

/// The tenant's (sequence, horizon); zeros for a tenant that never wrote.
pub(crate) async fn counter(client: &impl GenericClient, tenant: &str) -> Result<(u64, u64)> {
    let stmt = client.prepare_cached("SELECT seq, horizon FROM counters WHERE tenant = $1").await?;
    let row = client.query_opt(&stmt, &[&tenant]).await?;
    let (seq, horizon): (i64, i64) = row.map_or((0, 0), |r| (r.get(0), r.get(1)));
    Ok((to_u64(seq, "counters.seq")?, to_u64(horizon, "counters.horizon")?))
}

/// One record as the feed shows it.
pub(crate) async fn record(
    client: &impl GenericClient,
    tenant: &str,
    entity: &str,
    record_id: &str,
) -> Result<Option<Change>> {
    let stmt = client
        .prepare_cached(
            "SELECT version, fields, deleted FROM records WHERE tenant = $1 AND entity = $2 AND record_id = $3",
        )
        .await?;
    let Some(row) = client.query_opt(&stmt, &[&tenant, &entity, &record_id]).await? else {
        return Ok(None);
    };
    Ok(Some(Change {
        entity: entity.to_owned(),
        record_id: record_id.to_owned(),
        version: to_u64(row.get(0), "records.version")?,
        fields: serde_json::from_str(row.get::<_, &str>(1))?,
        deleted: row.get(2),
    }))
}

/// Up to `limit` records whose feed position is after `after`, in feed order, with the tenant's
/// sequence and horizon, in one statement: one snapshot, so the page and the horizon agree, and
/// (pushes of a tenant commit one at a time, in sequence order) the page has no gap.
pub(crate) async fn changes(client: &impl GenericClient, tenant: &str, after: u64, limit: u32) -> Result<FeedPage> {
    let stmt = client
        .prepare_cached(
            "SELECT c.seq, c.horizon, r.entity, r.record_id, r.version, r.fields, r.deleted, r.seq
             FROM (SELECT seq, horizon FROM counters WHERE tenant = $1) c
             LEFT JOIN LATERAL (
                SELECT entity, record_id, version, fields, deleted, seq FROM records
                WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3) r ON TRUE",
        )
        .await?;
    let rows = client.query(&stmt, &[&tenant, &to_i64(after, "cursor")?, &(i64::from(limit) + 1)]).await?;
    let (seq, horizon) = match rows.first() {
        Some(row) => (to_u64(row.get(0), "counters.seq")?, to_u64(row.get(1), "counters.horizon")?),
        None => (0, 0),
    };
    if after > seq {
        return Err(Error::CursorAhead);
    }
    let mut changes = Vec::new();
    let mut last_seq = after;
    let mut has_more = false;
    for row in &rows {
        let Some(entity) = row.get::<_, Option<String>>(2) else { break };
        if changes.len() == limit as usize {
            has_more = true;
            break;
        }
        changes.push(Change {
            entity,
            record_id: row.get(3),
            version: to_u64(row.get(4), "records.version")?,
            fields: serde_json::from_str(row.get::<_, &str>(5))?,
            deleted: row.get(6),
        });
        last_seq = to_u64(row.get(7), "records.seq")?;
    }
    if !has_more {
        // Nothing follows up to the tenant's sequence in this snapshot (see the SQLite store).
        last_seq = seq;
    }
    Ok(FeedPage { changes, last_seq, has_more, horizon })
}

/// A tenant's figures, read in one statement.
pub(crate) async fn stats(client: &impl GenericClient, tenant: &str) -> Result<TenantStats> {
    let row = client
        .query_one(
            "SELECT COALESCE((SELECT seq FROM counters WHERE tenant = $1), 0),
                    COALESCE((SELECT horizon FROM counters WHERE tenant = $1), 0),
                    COALESCE(SUM(version), 0)::BIGINT, COUNT(*)
             FROM records WHERE tenant = $1",
            &[&tenant],
        )
        .await?;
    Ok(TenantStats {
        seq: to_u64(row.get(0), "counters.seq")?,
        horizon: to_u64(row.get(1), "counters.horizon")?,
        version_sum: to_u64(row.get(2), "sum of versions")?,
        records: to_u64(row.get(3), "record count")?,
    })
}
