//! A push's write transaction on PostgreSQL: one pooled connection, `BEGIN`, the tenant's counter
//! row made if missing and locked, the reads and writes pipelined, and `pg_notify` for the other
//! nodes.

use async_trait::async_trait;
use converge_core::hlc::Hlc;
use converge_core::server_store::{Loaded, PushTx, PushWrites, RecordKey};
use deadpool_postgres::{GenericClient, Object};
use uuid::Uuid;

use super::{CHANNEL, rows};
use crate::error::Result;

/// An open push transaction. Dropped without commit or rollback, its connection leaves the pool
/// and closes, so PostgreSQL rolls the transaction back and no later request inherits it.
pub(crate) struct PgPushTx {
    client: Option<Object>,
    tenant: String,
    seq: u64,
}

impl PgPushTx {
    /// Begins a transaction (read committed: each statement sees what committed before it) and
    /// takes the counter row's lock, making the row if missing. A second push to the tenant, on
    /// any node, waits here until this one ends, then reads what it committed.
    pub(crate) async fn begin(client: Object, tenant: &str) -> Result<PgPushTx> {
        let mut tx = PgPushTx { client: Some(client), tenant: tenant.to_owned(), seq: 0 };
        let c = tx.client();
        let (make, lock) = tokio::try_join!(
            c.prepare_cached("INSERT INTO counters (tenant) VALUES ($1) ON CONFLICT (tenant) DO NOTHING"),
            c.prepare_cached("SELECT seq FROM counters WHERE tenant = $1 FOR UPDATE"),
        )?;
        // One round trip: the row made if missing, then locked (a lock, not a new row version).
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&tenant];
        // Pipelined statements after a failed one fail as "transaction aborted": wait for all and
        // report the first failure, the cause (a lock wait past `lock_timeout`, say).
        let (began, made, locked) =
            tokio::join!(c.batch_execute("BEGIN"), c.execute(&make, &params), c.query_one(&lock, &params));
        began?;
        made?;
        tx.seq = rows::to_u64(locked?.get(0), "counters.seq")?;
        Ok(tx)
    }

    fn client(&self) -> &Object {
        self.client.as_ref().expect("a push transaction is used after it ended")
    }

    async fn end(mut self: Box<Self>, sql: &str) -> Result<()> {
        self.client().batch_execute(sql).await?;
        // Back to the pool only once the transaction is over.
        drop(self.client.take());
        Ok(())
    }
}

#[async_trait]
impl PushTx for PgPushTx {
    async fn load(
        &mut self,
        user: &str,
        key: &str,
        op_ids: Vec<Uuid>,
        records: Vec<RecordKey>,
    ) -> converge_core::Result<Loaded> {
        let (c, tenant) = (self.client(), self.tenant.as_str());
        let (stored, op_results, records) = tokio::join!(
            rows::stored_push(c, tenant, user, key),
            rows::op_results(c, tenant, &op_ids),
            rows::records(c, tenant, &records),
        );
        Ok(Loaded { seq: self.seq, stored: stored?, op_results: op_results?, records: records? })
    }

    /// Every write is answered before [`PushTx::commit`] sends `COMMIT`: the commit is never
    /// pipelined ahead of a write that still waits for its statement.
    async fn write(&mut self, writes: PushWrites) -> converge_core::Result<()> {
        Ok(write(self.client(), &self.tenant, writes).await?)
    }

    async fn commit(self: Box<Self>) -> converge_core::Result<()> {
        Ok(self.end("COMMIT").await?)
    }

    async fn rollback(self: Box<Self>) -> converge_core::Result<()> {
        Ok(self.end("ROLLBACK").await?)
    }
}

impl Drop for PgPushTx {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

/// The push's rows in one statement per table, pipelined.
async fn write(c: &Object, tenant: &str, w: PushWrites) -> Result<()> {
    let now = rows::to_i64(w.now_ms, "now")?;
    let n = w.records.len();
    let (mut entity, mut record_id, mut version, mut fields, mut meta, mut deleted, mut deleted_hlc, mut seq) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (rec, at) in &w.records {
        entity.push(rec.entity.as_str());
        record_id.push(rec.record_id.as_str());
        version.push(rows::to_i64(rec.version, "version")?);
        fields.push(serde_json::to_string(&rec.fields)?);
        meta.push(crate::meta::encode(&rec.meta)?);
        deleted.push(rec.deleted);
        deleted_hlc.push(rec.deleted_hlc.as_ref().map(Hlc::to_string));
        seq.push(rows::to_i64(*at, "seq")?);
    }
    let op_ids: Vec<Uuid> = w.op_results.iter().map(|(id, _)| *id).collect();
    let outcomes = w.op_results.iter().map(|(_, o)| serde_json::to_string(o)).collect::<Result<Vec<_>, _>>()?;
    let response = serde_json::to_string(&w.push.response)?;
    let new_seq = w.seq.map(|s| rows::to_i64(s, "seq")).transpose()?;

    let (save, results, push, counter) = tokio::try_join!(
        c.prepare_cached(
            "INSERT INTO records (tenant, entity, record_id, version, fields, meta, deleted, deleted_hlc, seq, changed_ms)
             SELECT $1, * , $10 FROM UNNEST($2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[],
                                            $7::BOOLEAN[], $8::TEXT[], $9::BIGINT[])
             ON CONFLICT (tenant, entity, record_id) DO UPDATE SET
                version = excluded.version, fields = excluded.fields, meta = excluded.meta,
                deleted = excluded.deleted, deleted_hlc = excluded.deleted_hlc, seq = excluded.seq,
                changed_ms = excluded.changed_ms",
        ),
        c.prepare_cached(
            "INSERT INTO op_results (tenant, op_id, outcome, created_ms)
             SELECT $1, *, $4 FROM UNNEST($2::UUID[], $3::TEXT[])",
        ),
        c.prepare_cached(
            r#"INSERT INTO idempotency (tenant, "user", key, body_hash, response, created_ms)
               VALUES ($1, $2, $3, $4, $5, $6)"#,
        ),
        // The notice is delivered to every listening node when the transaction commits.
        c.prepare_cached(
            "WITH bumped AS (UPDATE counters SET seq = $2 WHERE tenant = $1) SELECT pg_notify($3, $1)"
        ),
    )?;
    let saving = async {
        if n > 0 {
            c.execute(
                &save,
                &[&tenant, &entity, &record_id, &version, &fields, &meta, &deleted, &deleted_hlc, &seq, &now],
            )
            .await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    let storing = async {
        if !op_ids.is_empty() {
            c.execute(&results, &[&tenant, &op_ids, &outcomes, &now]).await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    let counting = async {
        if let Some(s) = new_seq {
            c.execute(&counter, &[&tenant, &s, &CHANNEL]).await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    let push_params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&tenant, &w.user, &w.key, &w.push.body_hash, &response, &now];
    let pushing = c.execute(&push, &push_params);
    // The first failure in statement order is the cause (see `begin`).
    let (saved, stored, counted, pushed) = tokio::join!(saving, storing, counting, pushing);
    saved?;
    stored?;
    counted?;
    pushed?;
    Ok(())
}
