//! TLS on the HTTP port, as a client outside the host uses it: `curl
//! --cacert` against a node whose certificate (`geocache certs issue
//! --host`) names the address it is reached by.

mod common;

use common::{temp_dir, Node};
use std::path::PathBuf;
use std::process::Command;

fn geocache(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_geocache")).args(args).output().expect("run geocache");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "30"]).args(args).output().expect("run curl");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A cluster CA and a certificate for node-1 reached at 127.0.0.1, made
/// with the real CLI under a fresh `name` directory: (CA certificate,
/// node certificate, node key).
fn issue_tls_cert(name: &str, extra: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let dir = temp_dir(name);
    let ca = dir.join("ca");
    let node_dir = dir.join("node");
    geocache(&["certs", "init", "--out", ca.to_str().unwrap()]);
    let mut args =
        vec!["certs", "issue", "--ca", ca.to_str().unwrap(), "--node", "node-1", "--host", "127.0.0.1"];
    args.extend_from_slice(extra);
    args.extend(["--out", node_dir.to_str().unwrap()]);
    geocache(&args);
    (ca.join("ca.crt"), node_dir.join("node.crt"), node_dir.join("node.key"))
}

#[test]
fn curl_with_the_cluster_ca_reaches_the_node_over_tls_and_plain_http_does_not() {
    common::need("curl", "curl");
    let (ca_cert, cert, key) = issue_tls_cert("tls", &["--region", "local", "--host", "localhost"]);
    let node = Node::start(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let https = |path: &str| format!("https://{}{path}", node.addr);

    let (ok, out) = curl(&[
        "--cacert",
        ca_cert.to_str().unwrap(),
        "-X",
        "PUT",
        "--data-binary",
        "secret",
        &https("/v1/kv/t/k"),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = curl(&["--cacert", ca_cert.to_str().unwrap(), &https("/v1/kv/t/k")]);
    assert!(ok && out == "secret", "{out}");
    // Without the CA, curl refuses the certificate; in clear, the node
    // answers nothing a client could take for HTTP.
    let (ok, _) = curl(&[&https("/healthz")]);
    assert!(!ok, "curl must not trust a certificate of an unknown CA");
    let (ok, out) = curl(&[&format!("http://{}/healthz", node.addr)]);
    assert!(!ok || !out.contains("ok"), "{out}");
    // The node still serves TLS after a client broke off in clear.
    let (ok, out) = curl(&["--cacert", ca_cert.to_str().unwrap(), &https("/healthz")]);
    assert!(ok, "{out}");
}

#[test]
fn redis_cli_with_tls_reaches_the_resp_port_pipelined_and_not() {
    common::need("redis-cli", "redis-tools");
    let (cacert, cert, key) = issue_tls_cert("tls-resp", &[]);
    let node = Node::start(&[
        "--resp",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let (host, port) = node.resp.as_deref().unwrap().rsplit_once(':').unwrap();
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["--tls", "--cacert", cacert.to_str().unwrap(), "-h", host, "-p", port]).args(args);
        cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        } else {
            drop(child.stdin.take());
        }
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().trim().to_string()
    };
    assert_eq!(cli(&["SET", "k", "over-tls"], None), "OK");
    assert_eq!(cli(&["GET", "k"], None), "over-tls");
    // 2,000 commands in one pipeline: TLS records carry many commands, and
    // none may wait behind a socket that has nothing more to say.
    let mut pipeline = String::new();
    for i in 0..2_000 {
        pipeline.push_str(&format!("SET p{i} {i}\r\n"));
    }
    let piped = cli(&["--pipe"], Some(&pipeline));
    assert!(piped.contains("errors: 0, replies: 2000"), "{piped}");
    assert_eq!(cli(&["GET", "p1999"], None), "1999");
}

#[test]
fn half_a_tls_setting_is_refused_naming_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_geocache"))
        .args(["serve", "--tls-cert", "/nonexistent.crt", "--print-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert needs --tls-key"));
}
