//! One `geocache serve` child process.

use anyhow::{bail, Context, Result};
use geocache_tests::serve_process::spawn_serve;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// How long a node may take to print its address on a loaded machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `geocache` binary: `$GEOCACHE_BIN`, else `target/release/geocache`
/// of this workspace.
pub fn geocache_bin() -> Result<PathBuf> {
    let path = match std::env::var_os("GEOCACHE_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/geocache"),
    };
    if !path.is_file() {
        bail!(
            "no geocache binary at {} (cargo build --release --bin geocache, or set GEOCACHE_BIN)",
            path.display()
        );
    }
    Ok(path)
}

/// A running node; killed (SIGKILL) when dropped.
pub struct NodeProcess {
    child: Child,
    /// `http://IP:PORT` of its HTTP API.
    pub base: String,
}

impl NodeProcess {
    /// Runs `bin certs ...` and fails with its stderr.
    ///
    /// # Errors
    ///
    /// The command could not run or failed.
    pub fn certs(bin: &Path, args: &[&str]) -> Result<()> {
        let out = Command::new(bin).arg("certs").args(args).output().context("running geocache certs")?;
        if !out.status.success() {
            bail!("geocache certs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Starts `bin serve --http IP:0 ARGS` and waits (bounded) for the line
    /// that names the bound HTTP address.
    ///
    /// # Errors
    ///
    /// The process could not start, or exited or stayed silent past
    /// [`START_TIMEOUT`].
    pub fn start(bin: &Path, http_ip: &str, args: &[String]) -> Result<NodeProcess> {
        let started = spawn_serve(bin, http_ip, args, "GEOCACHE_BENCH_LOG", START_TIMEOUT)
            .with_context(|| format!("{} serve {args:?}", bin.display()))?;
        Ok(NodeProcess { child: started.child, base: format!("http://{}", started.http) })
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
