//! Test helpers: a real `converge serve` child process on a loopback port, tokens, temp folders,
//! a fault-injecting HTTP proxy to put in front of it, a seeded generator, and PostgreSQL schemas.

pub mod pg;
mod proxy;
mod rng;

pub use proxy::{EVENTS_PATH, FAULTED_ROUTES, Fault, FaultProxy, Rates, Seen};
pub use rng::SplitMix64;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The secret the test servers sign tokens with.
pub const SECRET: &str = "test-secret-0123456789abcdef";

/// A `converge serve` child process on 127.0.0.1 with its SQLite file in a temp folder.
pub struct ServerProcess {
    bin: PathBuf,
    child: Option<Child>,
    /// The folder holding the server's database.
    pub dir: tempfile::TempDir,
    /// The listening port (kept across restarts).
    pub port: u16,
    /// The gRPC listening port (kept across restarts).
    pub grpc_port: u16,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    /// The `--db` value when it is not the SQLite file in `dir` (a PostgreSQL URL).
    db: Option<String>,
}

impl ServerProcess {
    /// Starts a server; `bin` is the `converge` binary (`env!("CARGO_BIN_EXE_converge")`).
    pub fn start(bin: &Path) -> Result<ServerProcess> {
        Self::start_with(bin, &[])
    }

    /// Starts a server with extra `serve` arguments (e.g. limits).
    pub fn start_with(bin: &Path, extra: &[&str]) -> Result<ServerProcess> {
        Self::start_with_env(bin, extra, &[])
    }

    /// Starts a server with extra `serve` arguments and environment variables (e.g. a crash
    /// point: `("CONVERGE_CRASH_AT", "server.apply.before_commit")`). Restarts keep them.
    pub fn start_with_env(bin: &Path, extra: &[&str], env: &[(&str, &str)]) -> Result<ServerProcess> {
        Self::launch(bin, None, extra, env)
    }

    /// Starts a server on the database `db` (a PostgreSQL URL, or several `--db` values joined
    /// by spaces for shards), with extra `serve` arguments and environment variables.
    pub fn start_on(bin: &Path, db: &str, extra: &[&str], env: &[(&str, &str)]) -> Result<ServerProcess> {
        Self::launch(bin, Some(db.to_owned()), extra, env)
    }

    fn launch(bin: &Path, db: Option<String>, extra: &[&str], env: &[(&str, &str)]) -> Result<ServerProcess> {
        let mut s = ServerProcess {
            bin: bin.to_path_buf(),
            child: None,
            dir: tempfile::tempdir()?,
            port: 0,
            grpc_port: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            db,
        };
        s.set_env(env);
        s.spawn()?;
        Ok(s)
    }

    fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// The server's database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("server.db")
    }

    /// The base URL of the HTTP API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The URL of the gRPC API.
    pub fn grpc_url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.grpc_port)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut command = Command::new(&self.bin);
        command.arg("serve");
        match &self.db {
            Some(dbs) => dbs.split(' ').for_each(|db| {
                command.arg("--db").arg(db);
            }),
            None => {
                command.arg("--db").arg(self.db_path());
            }
        }
        let mut child = command
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--grpc-listen")
            .arg(format!("127.0.0.1:{}", self.grpc_port))
            .arg("--jwt-secret")
            .arg(SECRET)
            .args(&self.extra)
            .env("CONVERGE_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut reader = BufReader::new(stdout);
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                let status = child.wait()?;
                bail!("converge serve exited before listening ({status})");
            }
            let port_after = |prefix: &str| -> Option<u16> {
                let rest = line.split(prefix).nth(1)?;
                rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
            };
            if let Some(port) = port_after("http://127.0.0.1:") {
                self.port = port;
            }
            if let Some(port) = port_after("grpc://127.0.0.1:") {
                self.grpc_port = port;
                break;
            }
            if line.starts_with("gRPC off") {
                break;
            }
            if Instant::now() > deadline {
                bail!("converge serve did not say it was listening");
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process with SIGKILL (no shutdown, no flush) and waits for it.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to end on its own (a crash point, say) and returns
    /// how it ended; fails if it is still running then, or was never started.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("the server is not running")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("converge serve still runs after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process again on the same port and database, with `env` instead of the
    /// environment variables it had.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        self.set_env(env);
        self.restart()
    }

    /// Starts the process again on the same port and database.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart failed ({e:#}); retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A token for a tenant and user, minted by `converge token`.
    pub fn token(&self, tenant: &str, user: &str) -> Result<String> {
        self.token_ttl(tenant, user, "1h")
    }

    /// A token with a given lifetime (e.g. `0s` for one that is already expired).
    pub fn token_ttl(&self, tenant: &str, user: &str, ttl: &str) -> Result<String> {
        converge(&self.bin, &["token", "--tenant", tenant, "--user", user, "--ttl", ttl, "--jwt-secret", SECRET])
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Runs the `converge` binary and returns its trimmed stdout; fails with its stderr.
pub fn converge(bin: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin).args(args).env("CONVERGE_LOG", "warn").output()?;
    if !out.status.success() {
        bail!("converge {:?} failed ({}): {}", args, out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Runs the `converge` binary and returns (success, stdout, stderr).
pub fn converge_status(bin: &Path, args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new(bin).args(args).env("CONVERGE_LOG", "warn").output()?;
    Ok((out.status.success(), String::from_utf8(out.stdout)?, String::from_utf8(out.stderr)?))
}

/// Parses a JSON object literal for tests.
pub fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().expect("a JSON object")
}
