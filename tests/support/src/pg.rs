//! PostgreSQL for tests: the database `scripts/pg-env.sh` made (the README's test command runs
//! it), a fresh schema per test so tests never see each other's rows, and the restart cluster.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where the test database is, from `CONVERGE_TEST_PG`; panics saying how to get one.
pub fn base_url() -> String {
    env_or_panic("CONVERGE_TEST_PG")
}

fn env_or_panic(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need PostgreSQL. Run ./scripts/test.sh, which starts it, or \
             eval \"$(scripts/pg-env.sh)\" before cargo test (it starts PostgreSQL with pg_ctlcluster, \
             installing it with apt-get if missing)"
        )
    })
}

/// A URL of a new, empty schema in the test database (`base` is a URL from [`base_url`] or the
/// restart cluster's): connections made with it see only that schema.
pub fn fresh_url_in(base: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let schema = format!("t_{}_{}_{}", std::process::id(), n, nanos % 1_000_000_000);
    let (base_owned, create) = (base.to_owned(), format!("CREATE SCHEMA {schema}"));
    let made = std::thread::spawn(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&base_owned, tokio_postgres::NoTls)
                .await
                .with_context(|| format!("cannot connect to the test database {base_owned}: is PostgreSQL running?"))?;
            let driver = tokio::spawn(connection);
            client.batch_execute(&create).await?;
            drop(client);
            let _ = driver.await;
            Ok(())
        })
    })
    .join()
    .expect("the schema thread panicked");
    if let Err(e) = made {
        panic!("cannot make a test schema: {e:#}");
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

/// A URL of a new, empty schema in the test database.
pub fn fresh_url() -> String {
    fresh_url_in(&base_url())
}

/// The restart cluster's test database URL (`CONVERGE_TEST_PG_RESTART`).
pub fn restart_base_url() -> String {
    env_or_panic("CONVERGE_TEST_PG_RESTART")
}

/// Stops (`"stop"`) or starts (`"start"`) the restart cluster with `pg_ctlcluster`.
pub fn restart_cluster(action: &str) -> Result<()> {
    let cluster = env_or_panic("CONVERGE_TEST_PG_RESTART_CLUSTER");
    let mut args: Vec<&str> = cluster.split_whitespace().collect();
    args.push(action);
    if action == "stop" {
        args.extend(["--", "-m", "fast"]);
    }
    let out = Command::new("pg_ctlcluster").args(&args).output().context("cannot run pg_ctlcluster")?;
    if !out.status.success() {
        bail!("pg_ctlcluster {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
