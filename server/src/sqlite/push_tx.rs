//! A push's write transaction on SQLite: `BEGIN IMMEDIATE` on the writer connection, held across
//! the service's calls by the store's writer token, each call run on the blocking pool.

use std::collections::HashMap;

use async_trait::async_trait;
use converge_core::server_store::{Loaded, PushTx, PushWrites, RecordKey};
use rusqlite::Connection;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use super::{SqliteServerStore, rows};
use crate::error::{Error, Result};

/// An open push transaction. Dropped without commit or rollback, it is rolled back on the
/// blocking pool before the next writer gets the connection.
pub(crate) struct SqlitePushTx {
    store: SqliteServerStore,
    /// The writer token; `None` once the transaction has ended.
    token: Option<OwnedMutexGuard<()>>,
    tenant: String,
    seq: u64,
}

impl SqlitePushTx {
    /// Takes the writer token, begins an immediate transaction and reads the tenant's counter
    /// (made if missing). SQLite's write lock covers the whole file, so the counter row is locked
    /// with it.
    pub(crate) async fn begin(store: SqliteServerStore, tenant: &str) -> Result<SqlitePushTx> {
        let token = store.writer.clone().lock_owned().await;
        let (owned, checkpointer) = (tenant.to_owned(), store.checkpointer.clone());
        let seq = blocking(&store, move |conn| {
            if let Some(c) = &checkpointer {
                c.restart_if_due(conn);
            }
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let counted = rows::ensure_counter(conn, &owned).and_then(|()| rows::counter(conn, &owned));
            if counted.is_err() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Ok(counted?.0)
        })
        .await?;
        Ok(SqlitePushTx { store, token: Some(token), tenant: tenant.to_owned(), seq })
    }

    async fn end(mut self: Box<Self>, sql: &'static str) -> Result<()> {
        let token = self.token.take();
        blocking(&self.store, move |conn| {
            let _token = token;
            let ended = conn.execute_batch(sql);
            if ended.is_err() && !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Ok(ended?)
        })
        .await
    }
}

/// Runs `f` with the writer connection on the blocking pool (the caller holds the token).
async fn blocking<T: Send + 'static>(
    store: &SqliteServerStore,
    f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
) -> Result<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.with_conn(f)).await.map_err(|e| Error::Task(e.to_string()))?
}

#[async_trait]
impl PushTx for SqlitePushTx {
    fn seq(&self) -> u64 {
        self.seq
    }

    async fn load(
        &mut self,
        user: &str,
        key: &str,
        op_ids: &[Uuid],
        records: &[RecordKey],
    ) -> converge_core::Result<Loaded> {
        let (tenant, user, key) = (self.tenant.clone(), user.to_owned(), key.to_owned());
        let (op_ids, records) = (op_ids.to_vec(), records.to_vec());
        Ok(blocking(&self.store, move |conn| {
            let stored = rows::stored_push(conn, &tenant, &user, &key)?;
            if stored.is_some() {
                return Ok(Loaded { stored, ..Loaded::default() });
            }
            let op_results = rows::op_results(conn, &tenant, op_ids.into_iter())?;
            let mut found = HashMap::with_capacity(records.len());
            for (entity, record_id) in records {
                if let Some(rec) = rows::load_record(conn, &tenant, &entity, &record_id)? {
                    found.insert((entity, record_id), rec);
                }
            }
            Ok(Loaded { stored: None, op_results, records: found })
        })
        .await?)
    }

    async fn write(&mut self, writes: PushWrites) -> converge_core::Result<()> {
        let tenant = self.tenant.clone();
        Ok(blocking(&self.store, move |conn| {
            let now = rows::to_i64(writes.now_ms, "now")?;
            for (rec, seq) in &writes.records {
                rows::save_record(conn, &tenant, rec, rows::to_i64(*seq, "seq")?, now)?;
            }
            for (op_id, outcome) in &writes.op_results {
                rows::insert_op_result(conn, &tenant, *op_id, outcome, now)?;
            }
            if let Some(seq) = writes.seq {
                rows::set_seq(conn, &tenant, seq)?;
            }
            rows::insert_push(conn, &tenant, &writes.user, &writes.key, &writes.push, now)
        })
        .await?)
    }

    async fn commit(self: Box<Self>) -> converge_core::Result<()> {
        let store = self.store.clone();
        self.end("COMMIT").await?;
        if let Some(c) = &store.checkpointer {
            c.committed();
        }
        Ok(())
    }

    async fn rollback(self: Box<Self>) -> converge_core::Result<()> {
        Ok(self.end("ROLLBACK").await?)
    }
}

impl Drop for SqlitePushTx {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else { return };
        let store = self.store.clone();
        let roll_back = move || {
            let _token = token;
            let _ = store.with_conn(|conn| {
                if !conn.is_autocommit() {
                    conn.execute_batch("ROLLBACK")?;
                }
                Ok(())
            });
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(roll_back)),
            Err(_) => roll_back(),
        }
    }
}
