//! A push's write transaction on SQLite, in two calls on the blocking pool: `load` begins an
//! immediate transaction on the writer connection and reads; `commit` writes the rows `write`
//! handed over and commits. The store's writer token, held from `begin` until no transaction is
//! left open, keeps every other writer off the connection in between.

use async_trait::async_trait;
use converge_core::server_store::{Loaded, PushTx, PushWrites, RecordKey};
use rusqlite::Connection;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use super::{SqliteServerStore, rows};
use crate::error::{Error, Result};

/// The writer connection, held for a push: the store's writer token, given up only once no
/// transaction is left open on the connection. It travels into each step on the blocking pool,
/// so a push whose future is dropped mid-step (a client that hung up) still leaves nothing open
/// for the next writer: the step ends, then the writer is dropped and rolls back.
struct Writer {
    store: SqliteServerStore,
    token: Option<OwnedMutexGuard<()>>,
}

impl Writer {
    /// Rolls back whatever is still open (on the blocking pool already) and lets the next writer
    /// in.
    fn release(mut self, conn: &Connection) {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        self.token = None;
    }
}

impl Drop for Writer {
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

/// An open push transaction. Dropped without commit or rollback, its writer rolls back on the
/// blocking pool before the next writer gets the connection.
pub(crate) struct SqlitePushTx {
    /// `None` only while a step has it, or once the transaction has ended.
    writer: Option<Writer>,
    tenant: String,
    /// The rows to write at commit.
    writes: Option<PushWrites>,
}

impl SqlitePushTx {
    /// Takes the writer token. SQLite's write lock covers the whole file, so the transaction
    /// `load` begins holds the tenant's counter row with everything else.
    pub(crate) async fn begin(store: SqliteServerStore, tenant: &str) -> SqlitePushTx {
        let token = store.writer.clone().lock_owned().await;
        SqlitePushTx { writer: Some(Writer { store, token: Some(token) }), tenant: tenant.to_owned(), writes: None }
    }

    fn writer(&mut self) -> Result<Writer> {
        self.writer.take().ok_or_else(|| Error::Task("the push transaction has ended".into()))
    }
}

/// Runs `f` with the writer connection on the blocking pool and gives the writer back; on an
/// error the writer is dropped there (rolling back).
async fn step<T: Send + 'static>(
    writer: Writer,
    f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
) -> Result<(T, Writer)> {
    let store = writer.store.clone();
    tokio::task::spawn_blocking(move || store.with_conn(f).map(|out| (out, writer)))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

/// Runs the last step `f` and releases the writer in the same call on the blocking pool.
async fn finish(writer: Writer, f: impl FnOnce(&mut Connection) -> Result<()> + Send + 'static) -> Result<()> {
    let store = writer.store.clone();
    tokio::task::spawn_blocking(move || {
        store.with_conn(|conn| {
            let out = f(conn);
            writer.release(conn);
            out
        })
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
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
        let writer = self.writer()?;
        let checkpointer = writer.store.checkpointer.clone();
        let (loaded, writer) = step(writer, move |conn| {
            // A long log is started over before the transaction, not inside it.
            if let Some(c) = &checkpointer {
                c.restart_if_due(conn);
            }
            conn.execute_batch("BEGIN IMMEDIATE")?;
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
        })
        .await?;
        self.writer = Some(writer);
        Ok(loaded)
    }

    async fn write(&mut self, writes: PushWrites) -> converge_core::Result<()> {
        self.writes = Some(writes);
        Ok(())
    }

    /// A write or a COMMIT that fails leaves nothing behind: the writer rolls back as it goes.
    async fn commit(mut self: Box<Self>) -> converge_core::Result<()> {
        let (writer, writes, tenant) = (self.writer()?, self.writes.take(), std::mem::take(&mut self.tenant));
        let checkpointer = writer.store.checkpointer.clone();
        Ok(finish(writer, move |conn| {
            if let Some(writes) = &writes {
                write(conn, &tenant, writes)?;
            }
            conn.execute_batch("COMMIT")?;
            if let Some(c) = &checkpointer {
                c.committed();
            }
            Ok(())
        })
        .await?)
    }

    async fn rollback(mut self: Box<Self>) -> converge_core::Result<()> {
        Ok(finish(self.writer()?, |conn| Ok(conn.execute_batch("ROLLBACK")?)).await?)
    }
}
