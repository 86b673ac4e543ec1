//! A push's write transaction on SQLite, in two calls on the blocking pool: `load` begins an
//! immediate transaction on the writer connection and reads; `commit` writes the rows `write`
//! handed over and commits. The store's writer token, held from `begin` to the end, keeps every
//! other writer off the connection in between.

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
    /// The rows to write at commit.
    writes: Option<PushWrites>,
}

impl SqlitePushTx {
    /// Takes the writer token. SQLite's write lock covers the whole file, so the transaction
    /// `load` begins holds the tenant's counter row with everything else.
    pub(crate) async fn begin(store: SqliteServerStore, tenant: &str) -> SqlitePushTx {
        let token = store.writer.clone().lock_owned().await;
        SqlitePushTx { store, token: Some(token), tenant: tenant.to_owned(), writes: None }
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

/// Writes a push's rows (the transaction is open).
fn write(conn: &Connection, tenant: &str, writes: &PushWrites) -> Result<()> {
    let now = rows::to_i64(writes.now_ms, "now")?;
    for (rec, seq) in &writes.records {
        rows::save_record(conn, tenant, rec, rows::to_i64(*seq, "seq")?, now)?;
    }
    for (op_id, outcome) in &writes.op_results {
        rows::insert_op_result(conn, tenant, *op_id, outcome, now)?;
    }
    if let Some(seq) = writes.seq {
        rows::set_seq(conn, tenant, seq)?;
    }
    rows::insert_push(conn, tenant, &writes.user, &writes.key, &writes.push, now)
}

/// Ends the open transaction with `sql` (COMMIT or ROLLBACK); a COMMIT that fails leaves
/// nothing open behind it.
fn end(conn: &Connection, sql: &str) -> Result<()> {
    let ended = conn.execute_batch(sql);
    if ended.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    Ok(ended?)
}

#[async_trait]
impl PushTx for SqlitePushTx {
    async fn load(
        &mut self,
        user: &str,
        key: &str,
        op_ids: Vec<Uuid>,
        records: Vec<RecordKey>,
    ) -> converge_core::Result<Loaded> {
        let (tenant, user, key) = (self.tenant.clone(), user.to_owned(), key.to_owned());
        let checkpointer = self.store.checkpointer.clone();
        Ok(blocking(&self.store, move |conn| {
            // A long log is started over before the transaction, not inside it.
            if let Some(c) = &checkpointer {
                c.restart_if_due(conn);
            }
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let read = || -> Result<Loaded> {
                rows::ensure_counter(conn, &tenant)?;
                let seq = rows::counter(conn, &tenant)?.0;
                let stored = rows::stored_push(conn, &tenant, &user, &key)?;
                if stored.is_some() {
                    return Ok(Loaded { seq, stored, ..Loaded::default() });
                }
                let op_results = rows::op_results(conn, &tenant, op_ids.into_iter())?;
                let found = records
                    .iter()
                    .map(|(entity, record_id)| rows::load_record(conn, &tenant, entity, record_id))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Loaded { seq, stored: None, op_results, records: found })
            };
            let loaded = read();
            if loaded.is_err() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            loaded
        })
        .await?)
    }

    async fn write(&mut self, writes: PushWrites) -> converge_core::Result<()> {
        self.writes = Some(writes);
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> converge_core::Result<()> {
        let (token, writes, tenant) = (self.token.take(), self.writes.take(), std::mem::take(&mut self.tenant));
        let checkpointer = self.store.checkpointer.clone();
        blocking(&self.store, move |conn| {
            let _token = token;
            if let Some(writes) = &writes
                && let Err(e) = write(conn, &tenant, writes)
            {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
            end(conn, "COMMIT")?;
            if let Some(c) = &checkpointer {
                c.committed();
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    async fn rollback(mut self: Box<Self>) -> converge_core::Result<()> {
        let token = self.token.take();
        Ok(blocking(&self.store, move |conn| {
            let _token = token;
            end(conn, "ROLLBACK")
        })
        .await?)
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
