//! One `geocache serve` child process, started on port 0 of a loopback
//! address: it prints the addresses it bound on stdout, and this reads them.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A started `geocache serve` and the addresses it printed. The caller owns
/// the child (kill it when done).
pub struct ServeProcess {
    /// The process.
    pub child: Child,
    /// Its HTTP address, `IP:PORT`.
    pub http: String,
    /// Its RESP address, when started with `--resp`.
    pub resp: Option<String>,
}

/// Runs `bin serve --http IP:0 ARGS`, with `RUST_LOG` from the environment
/// variable `log_var` (default `warn`), and waits at most `timeout` for the
/// line naming its `http=` (and `resp=`) address.
///
/// # Errors
///
/// The process could not start, or printed no address in time (it is
/// killed then).
pub fn spawn_serve<S: AsRef<OsStr>>(
    bin: &Path,
    http_ip: &str,
    args: &[S],
    log_var: &str,
    timeout: Duration,
) -> std::io::Result<ServeProcess> {
    spawn_serve_at(bin, &format!("{http_ip}:0"), args, log_var, timeout)
}

/// As [`spawn_serve`], with the HTTP API on `http` (`ip:port`): a node
/// restarted with its data dir comes back at the address it had.
pub fn spawn_serve_at<S: AsRef<OsStr>>(
    bin: &Path,
    http: &str,
    args: &[S],
    log_var: &str,
    timeout: Duration,
) -> std::io::Result<ServeProcess> {
    let mut child = Command::new(bin)
        .arg("serve")
        .args(["--http", http])
        .args(args)
        .env("RUST_LOG", std::env::var(log_var).unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err(std::io::Error::other("no stdout to read the address from"));
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(http) = line.split_whitespace().find_map(|w| w.strip_prefix("http=")) {
                let resp = line.split_whitespace().find_map(|w| w.strip_prefix("resp="));
                let _ = tx.send((http.to_owned(), resp.map(str::to_owned)));
            }
        }
    });
    match rx.recv_timeout(timeout) {
        Ok((http, resp)) => Ok(ServeProcess { child, http, resp }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "geocache serve printed no address"))
        }
    }
}
