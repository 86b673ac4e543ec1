//! Compaction of the PostgreSQL store: old tombstones (with the horizon advanced past them, under
//! the tenant's counter row lock), old op results and old stored pushes, in bounded transactions.

use converge_core::server_store::CompactStats;
use deadpool_postgres::GenericClient;

use super::PgServerStore;
use crate::error::Result;

/// Rows removed per transaction, at most: a push waits at most about one chunk behind it.
pub(crate) const CHUNK: u32 = 10_000;

/// Every tenant with a counter row (a push makes the row before it stores anything).
pub(crate) async fn tenants(client: &impl GenericClient) -> Result<Vec<String>> {
    let rows = client.query("SELECT tenant FROM counters ORDER BY tenant", &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// See [`converge_core::server_store::ServerStore::compact`].
pub(crate) async fn compact(store: &PgServerStore, older_than_ms: u64, chunk: u32) -> Result<CompactStats> {
    let cutoff = i64::try_from(older_than_ms).unwrap_or(i64::MAX);
    let chunk = i64::from(chunk);
    let mut stats = CompactStats::default();
    let tenant_list = tenants(&store.client().await?).await?;
    for tenant in tenant_list {
        let mut removed_here = false;
        loop {
            let n = tombstones(store, &tenant, cutoff, chunk).await?;
            stats.tombstones += n;
            removed_here |= n > 0;
            if n < chunk as u64 {
                break;
            }
        }
        for (table, counted) in [("op_results", 0), ("idempotency", 1)] {
            loop {
                let client = store.client().await?;
                let sql = format!(
                    "DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                        SELECT ctid FROM {table} WHERE tenant = $1 AND created_ms < $2 LIMIT $3))"
                );
                let n = client.execute(sql.as_str(), &[&tenant, &cutoff, &chunk]).await?;
                if counted == 0 {
                    stats.op_results += n;
                } else {
                    stats.idempotency_keys += n;
                }
                removed_here |= n > 0;
                if n < chunk as u64 {
                    break;
                }
            }
        }
        if removed_here {
            stats.tenants += 1;
        }
    }
    Ok(stats)
}

/// Removes up to `chunk` tombstones older than `cutoff` and advances the horizon to the greatest
/// removed sequence, in one transaction holding the counter row's lock (so no push of the tenant
/// commits between the removal and the horizon). The horizon never moves back.
async fn tombstones(store: &PgServerStore, tenant: &str, cutoff: i64, chunk: i64) -> Result<u64> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT 1 FROM counters WHERE tenant = $1 FOR UPDATE", &[&tenant]).await?;
    let row = tx
        .query_one(
            "WITH gone AS (
                DELETE FROM records WHERE tenant = $1 AND deleted AND (entity, record_id) IN (
                    SELECT entity, record_id FROM records
                    WHERE tenant = $1 AND deleted AND changed_ms < $2 LIMIT $3)
                RETURNING seq)
             SELECT COUNT(*), COALESCE(MAX(seq), 0)::BIGINT FROM gone",
            &[&tenant, &cutoff, &chunk],
        )
        .await?;
    let (removed, last_seq): (i64, i64) = (row.get(0), row.get(1));
    if removed > 0 {
        tx.execute("UPDATE counters SET horizon = GREATEST(horizon, $2) WHERE tenant = $1", &[&tenant, &last_seq])
            .await?;
    }
    tx.commit().await?;
    Ok(u64::try_from(removed).unwrap_or(0))
}
