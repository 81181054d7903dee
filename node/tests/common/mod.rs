//! Starts the real `geocache` binary on a free loopback port.

#![allow(dead_code)]

pub mod emulated;

use std::process::{Child, Command};
use std::time::Duration;

/// How long a node may take to start on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a RESP connection may take on a loaded machine.
const RESP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running node; killed when dropped.
pub struct Node {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The RESP address (`127.0.0.1:PORT`) when started with `--resp`.
    pub resp: Option<String>,
}

impl Node {
    /// Starts `geocache serve` with `args` on port 0 and waits for the line
    /// that names the bound address.
    pub fn start(args: &[&str]) -> Node {
        Node::start_at("127.0.0.1", args)
    }

    /// As [`Node::start`], with the HTTP API on `ip` (a loopback address
    /// standing for a host).
    pub fn start_at(ip: &str, args: &[&str]) -> Node {
        Node::start_on(&format!("{ip}:0"), args)
    }

    /// As [`Node::start`], with the HTTP API on `http` (`ip:port`).
    pub fn start_on(http: &str, args: &[&str]) -> Node {
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_geocache"));
        let started = geocache_tests::serve_process::spawn_serve_at(
            bin,
            http,
            args,
            "GEOCACHE_TEST_LOG",
            START_TIMEOUT,
        )
        .expect("geocache started and printed its address");
        Node {
            child: started.child,
            base: format!("http://{}", started.http),
            addr: started.http,
            resp: started.resp,
        }
    }

    /// The process id, to read its memory.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Resident memory of the process, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// Kills the process for real (SIGKILL): no shutdown path runs.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the process (SIGKILL) and waits, keeping the handle (a node
    /// that stays down while the others carry on).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits: the node must stop by itself.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().expect("wait for geocache");
        std::mem::forget(self);
        status
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A RESP connection to `addr` with the `redis` crate, made within 30 s.
pub async fn resp_connect(addr: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    // Replies may take long on a loaded machine (and a strong write a few
    // round trips): the crate's default of 500 ms is too short.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(RESP_CONNECT_TIMEOUT));
    tokio::time::timeout(RESP_CONNECT_TIMEOUT, client.get_multiplexed_async_connection_with_config(&config))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// A free TCP port on `ip` (bound then released).
pub fn free_tcp_port(ip: &str) -> u16 {
    std::net::TcpListener::bind(format!("{ip}:0")).expect("bind tcp").local_addr().expect("addr").port()
}

/// A free UDP port on `ip` (bound then released).
pub fn free_udp_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind(format!("{ip}:0")).expect("bind udp").local_addr().expect("addr").port()
}

/// Makes a cluster CA in `dir` and a certificate for each node name, with
/// the real CLI; returns each node's `--ca/--cert/--key` flags.
pub fn make_certs(dir: &std::path::Path, names: &[&str]) -> Vec<Vec<String>> {
    let run = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_geocache")).args(args).output().expect("run geocache certs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ca = dir.join("ca");
    run(&["certs", "init", "--out", ca.to_str().unwrap()]);
    names
        .iter()
        .map(|name| {
            let out = dir.join(name);
            run(&[
                "certs",
                "issue",
                "--ca",
                ca.to_str().unwrap(),
                "--node",
                name,
                "--out",
                out.to_str().unwrap(),
            ]);
            vec![
                "--ca".to_string(),
                out.join("ca.crt").to_str().unwrap().to_string(),
                "--cert".to_string(),
                out.join("node.crt").to_str().unwrap().to_string(),
                "--key".to_string(),
                out.join("node.key").to_str().unwrap().to_string(),
            ]
        })
        .collect()
}

/// Certificates for `count` nodes named `node-0`, `node-1`, ... (see
/// [`make_certs`]).
pub fn make_numbered_certs(dir: &std::path::Path, count: usize) -> Vec<Vec<String>> {
    let names: Vec<String> = (0..count).map(|i| format!("node-{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    make_certs(dir, &name_refs)
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("geocache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Makes sure `cmd` exists, installing Debian's `package` through the
/// project's own `scripts/need.sh` when it does not.
pub fn need(cmd: &str, package: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/need.sh");
    let status = Command::new(script).args([cmd, package]).status().expect("run scripts/need.sh");
    assert!(status.success(), "{package} could not be installed for {cmd}");
}

/// A node of a cluster started by [`start_cluster`].
pub struct Member {
    /// The process.
    pub node: Node,
    /// Its gossip address.
    pub gossip: String,
}

/// Starts nodes `(ip, region, id, extra flags)`, each with its own
/// certificate; the first is every other's seed. Also returns each node's
/// certificate flags, to start another with.
pub fn start_cluster(name: &str, specs: &[(&str, &str, u64, &[&str])]) -> (Vec<Member>, Vec<Vec<String>>) {
    let dir = temp_dir(name);
    let names: Vec<String> = specs.iter().map(|(_, _, id, _)| format!("node-{id}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let certs = make_certs(&dir, &name_refs);
    let mut members: Vec<Member> = Vec::new();
    for (i, (ip, region, id, extra)) in specs.iter().enumerate() {
        let gossip = format!("{ip}:{}", free_udp_port(ip));
        let mut args: Vec<String> = vec![
            "--gossip".into(),
            gossip.clone(),
            "--region".into(),
            region.to_string(),
            "--node-id".into(),
            id.to_string(),
        ];
        if let Some(seed) = members.first() {
            args.push("--seeds".into());
            args.push(seed.gossip.clone());
        }
        args.extend(certs[i].iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        members.push(Member { node: Node::start_at(ip, &arg_refs), gossip });
    }
    (members, certs)
}

/// A node as `geocache demo`'s banner names it.
pub struct DemoNodeLine {
    /// Its name (`montreal-1`).
    pub name: String,
    /// `http://IP:PORT`.
    pub url: String,
    /// `IP:PORT` of its RESP port.
    pub resp: String,
}

/// `geocache demo`, running until dropped.
pub struct DemoProcess {
    child: Child,
    /// Its nodes, in the banner's order (region by region).
    pub nodes: Vec<DemoNodeLine>,
}

impl DemoProcess {
    /// Starts the demo and returns once its banner (printed when the
    /// cluster formed) is out.
    pub fn start() -> DemoProcess {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(env!("CARGO_BIN_EXE_geocache"))
            .arg("demo")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start the demo");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Owned from here, so a failed wait still stops the demo.
        let mut demo = DemoProcess { child, nodes: Vec::new() };
        loop {
            let line = rx.recv_timeout(Duration::from_secs(90)).expect("the demo printed its banner");
            if line.starts_with("Watch it:") {
                break;
            }
            // A node's line: `NAME  http://IP:PORT  resp IP:PORT  (life ...)`.
            let words: Vec<&str> = line.split_whitespace().collect();
            if let (Some(name), Some(url)) = (words.first(), words.iter().find(|w| w.starts_with("http://")))
            {
                let resp = words.iter().position(|w| *w == "resp").and_then(|i| words.get(i + 1));
                let resp = resp.expect("each node line names its RESP address").to_string();
                demo.nodes.push(DemoNodeLine { name: name.to_string(), url: url.to_string(), resp });
            }
        }
        assert_eq!(demo.nodes.len(), 6, "six node lines in the banner");
        demo
    }

    /// The URL of the node named `name`.
    pub fn url(&self, name: &str) -> &str {
        &self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}")).url
    }

    /// Runs `geocache demo ARGS` (partition, heal) against it; panics on a
    /// failure, with its stderr.
    pub fn control(&self, args: &[&str]) {
        let out = Command::new(env!("CARGO_BIN_EXE_geocache"))
            .arg("demo")
            .args(args)
            .output()
            .expect("run geocache demo");
        assert!(out.status.success(), "geocache demo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `IP` of `http://IP:PORT` or `http://IP:PORT/path`.
pub fn host_of(url: &str) -> &str {
    let rest = url.trim_start_matches("http://");
    rest.split([':', '/']).next().unwrap_or(rest)
}

/// The repository's root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// A Python with the earlier users' client installed
/// (`scripts/python-client.sh`, which makes its virtualenv on first use).
pub fn earlier_client_python() -> String {
    let out = Command::new(repo_root().join("scripts/python-client.sh")).output().expect("python-client.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("a UTF-8 path").trim().to_string()
}
