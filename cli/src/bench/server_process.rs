//! A `converge serve` child process of this same binary on a loopback port, so the memory the
//! long-offline legs sample is the device side's alone.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use converge_connect::Transport;

use super::memory;
use crate::serve::DEV_SECRET;

/// The child server; killed when stopped or dropped.
pub(super) struct ServerProcess {
    child: Child,
    /// The base URL of the HTTP API.
    pub(super) url: String,
    /// The URL of the gRPC API.
    pub(super) grpc_url: String,
}

impl ServerProcess {
    /// Runs `converge serve --db <db> --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0` and reads
    /// the bound addresses from the lines it prints when it listens.
    pub(super) fn spawn(db: &Path) -> Result<ServerProcess> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let mut child = Command::new(&exe)
            .arg("serve")
            .arg("--db")
            .arg(db)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--grpc-listen")
            .arg("127.0.0.1:0")
            .env("CONVERGE_JWT_SECRET", DEV_SECRET)
            .env("CONVERGE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run {} serve", exe.display()))?;
        let stdout = child.stdout.take().context("no stdout from the server process")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let mut url = None;
        let grpc_url = loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                let status = child.wait()?;
                bail!("the server process exited before listening ({status})");
            }
            let addr = |scheme: &str| {
                let rest = line.split(scheme).nth(1)?;
                Some(format!("{scheme}{}", rest.chars().take_while(|c| !c.is_whitespace()).collect::<String>()))
            };
            if let Some(http) = addr("http://") {
                url = Some(http);
            }
            if let Some(grpc) = addr("grpc://") {
                break grpc;
            }
        };
        let url = url.context("the server printed its gRPC address before its HTTP one")?;
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        Ok(ServerProcess { child, url, grpc_url })
    }

    /// The URL of `transport`'s API.
    pub(super) fn url_of(&self, transport: Transport) -> &str {
        match transport {
            Transport::Http => &self.url,
            Transport::Grpc => &self.grpc_url,
        }
    }

    /// The child's peak resident set so far (`VmHWM`), in KiB.
    pub(super) fn peak_rss_kib(&self) -> Option<u64> {
        memory::status_kib(Some(self.child.id()), "VmHWM")
    }

    /// Kills the child and waits for it.
    pub(super) fn stop(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
