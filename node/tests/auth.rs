//! Credentials, end to end on the real binary: HTTP bearer tokens with
//! scopes per namespace, `redis-cli` with and without `AUTH`, and the
//! earlier users' Python client in a namespace opened to anonymous
//! clients.

mod common;

use common::{temp_dir, Node};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const CONFIG: &str = r#"
[[users]]
name = "app1"
secret = "app1-writer-secret"
namespaces = ["a"]
scopes = ["read", "write"]

[[users]]
name = "reader"
secret = "reader-only-secret"
namespaces = ["a", "b"]
scopes = ["read"]

[[users]]
name = "ops"
secret = "ops-admin-secret"
namespaces = ["*"]
scopes = ["admin"]

[[users]]
name = "default"
secret = "default-user-secret"
namespaces = ["b"]
scopes = ["read", "write"]

[namespaces.example]
anonymous = ["read", "write"]
"#;

fn config_file(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    let path = dir.join("node.toml");
    std::fs::write(&path, CONFIG).expect("write config");
    path
}

async fn error_code(r: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status);
    let body: Value = r.json().await.expect("a JSON error body");
    body["code"].as_str().expect("a code").to_string()
}

#[tokio::test]
async fn http_scopes_bound_every_token_to_its_namespaces() {
    let config = config_file("auth-http");
    let node = Node::start(&["--config", config.to_str().unwrap()]);
    let http = Client::new();
    let put = |ns: &str, token: Option<&str>| {
        let mut r = http.put(node.url(&format!("/v1/kv/{ns}/k"))).body("v");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };

    let r = put("a", None).await.unwrap();
    assert_eq!(r.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"));
    assert_eq!(error_code(r, StatusCode::UNAUTHORIZED).await, "unauthorized");
    let r = put("a", Some("not-a-secret-at-all")).await.unwrap();
    assert_eq!(error_code(r, StatusCode::UNAUTHORIZED).await, "unauthorized");
    let r = put("a", Some("reader-only-secret")).await.unwrap();
    assert_eq!(error_code(r, StatusCode::FORBIDDEN).await, "forbidden");
    let r = put("b", Some("app1-writer-secret")).await.unwrap();
    assert_eq!(error_code(r, StatusCode::FORBIDDEN).await, "forbidden");
    let r = http.get(node.url("/v1/kv/b/k")).bearer_auth("app1-writer-secret").send().await.unwrap();
    assert_eq!(error_code(r, StatusCode::FORBIDDEN).await, "forbidden");

    assert_eq!(put("a", Some("app1-writer-secret")).await.unwrap().status(), StatusCode::CREATED);
    let r = http.get(node.url("/v1/kv/a/k")).bearer_auth("reader-only-secret").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "v");
    let r = http.delete(node.url("/v1/kv/a/k")).bearer_auth("reader-only-secret").send().await.unwrap();
    assert_eq!(error_code(r, StatusCode::FORBIDDEN).await, "forbidden");

    // The node's own routes need the admin scope; the probes stay open.
    for path in ["/v1/cluster", "/v1/node", "/metrics", "/v1/status", "/ui", "/ui/live"] {
        let r = http.get(node.url(path)).send().await.unwrap();
        assert_eq!(error_code(r, StatusCode::UNAUTHORIZED).await, "unauthorized", "{path}");
        let r = http.get(node.url(path)).bearer_auth("app1-writer-secret").send().await.unwrap();
        assert_eq!(error_code(r, StatusCode::FORBIDDEN).await, "forbidden", "{path}");
        let r = http.get(node.url(path)).bearer_auth("ops-admin-secret").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // A browser opens the status page with Basic, which its 401 asks for.
    let r = http.get(node.url("/ui")).send().await.unwrap();
    let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    assert!(challenge.as_deref().is_some_and(|c| c.starts_with("Basic ")), "{challenge:?}");
    let r = http.get(node.url("/ui")).basic_auth("ops", Some("ops-admin-secret")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("data-nodes=1"));
    let r = http.get(node.url("/ui")).basic_auth("reader", Some("ops-admin-secret")).send().await.unwrap();
    assert_eq!(error_code(r, StatusCode::UNAUTHORIZED).await, "unauthorized", "another user's secret");
    // Elsewhere Basic is refused: a browser would send it with another
    // site's forms too.
    let r = http
        .put(node.url("/v1/kv/a/k"))
        .basic_auth("app1", Some("app1-writer-secret"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, StatusCode::UNAUTHORIZED).await, "unauthorized", "Basic on a write");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http.get(node.url(path)).send().await.unwrap().status(), StatusCode::OK, "{path}");
    }
    // The namespace opened to anonymous clients takes writes without a
    // credential.
    let r = http.put(node.url("/v1/kv/example/k")).body("open").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let metrics = http
        .get(node.url("/metrics"))
        .bearer_auth("ops-admin-secret")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("geocache_auth_failures_total "))
        .expect("the auth failure counter");
    assert_eq!(failures, "2", "a wrong bearer secret and a wrong Basic pair were sent");
    for secret in ["app1-writer-secret", "not-a-secret-at-all", "reader-only-secret"] {
        assert!(!metrics.contains(secret), "no secret in the metrics");
    }
}

/// `redis-cli` with `args`, one command; its stdout and stderr together.
fn redis_cli(resp: &str, args: &[&str]) -> String {
    let (host, port) = resp.rsplit_once(':').expect("host:port");
    let out = Command::new("redis-cli")
        .args(["-h", host, "-p", port, "--no-auth-warning"])
        .args(args)
        .output()
        .expect("run redis-cli");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text.trim().to_string()
}

#[test]
fn redis_cli_needs_auth_and_acts_in_the_users_namespace() {
    common::need("redis-cli", "redis-tools");
    let config = config_file("auth-resp");
    let node = Node::start(&["--config", config.to_str().unwrap(), "--resp", "127.0.0.1:0"]);
    let resp = node.resp.as_deref().expect("resp address");

    assert!(redis_cli(resp, &["SET", "k", "v"]).starts_with("NOAUTH"), "no AUTH: NOAUTH");
    assert!(redis_cli(resp, &["PING"]).starts_with("NOAUTH"));
    let wrong = redis_cli(resp, &["--user", "app1", "--pass", "wrong-password", "GET", "k"]);
    assert!(wrong.contains("WRONGPASS"), "{wrong}");
    let ok = redis_cli(resp, &["--user", "app1", "--pass", "app1-writer-secret", "SET", "k", "from-app1"]);
    assert_eq!(ok, "OK");
    // The write landed in app1's namespace, `a`.
    let got = redis_cli(resp, &["--user", "reader", "--pass", "reader-only-secret", "GET", "k"]);
    assert_eq!(got, "from-app1", "reader's first namespace is a");
    let denied = redis_cli(resp, &["--user", "reader", "--pass", "reader-only-secret", "SET", "k", "x"]);
    assert!(denied.starts_with("NOPERM"), "{denied}");
    // `-a secret` is `AUTH secret`: the user named default, in namespace b.
    assert_eq!(redis_cli(resp, &["-a", "default-user-secret", "SET", "k", "in-b"]), "OK");
    let http_read = reqwest::blocking::Client::new()
        .get(node.url("/v1/kv/b/k"))
        .bearer_auth("reader-only-secret")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(http_read, "in-b");
    // HELLO with AUTH authenticates as Redis 6 clients do.
    let hello = redis_cli(resp, &["HELLO", "2", "AUTH", "app1", "app1-writer-secret"]);
    assert!(hello.contains("redis"), "{hello}");
    assert!(redis_cli(resp, &["HELLO", "2"]).starts_with("NOAUTH"));
    // INFO tells a tenant its versions and its own keyspace, never the
    // node's traffic; the admin scope sees the whole node.
    let tenant = redis_cli(resp, &["--user", "app1", "--pass", "app1-writer-secret", "INFO"]);
    assert!(tenant.contains("redis_version:") && tenant.contains("db0:keys=1"), "{tenant}");
    for node_wide in ["keyspace_hits", "connected_clients", "process_id", "total_commands_processed"] {
        assert!(!tenant.contains(node_wide), "{node_wide} shown to a tenant: {tenant}");
    }
    let admin = redis_cli(resp, &["--user", "ops", "--pass", "ops-admin-secret", "INFO"]);
    assert!(admin.contains("keyspace_hits:") && admin.contains("connected_clients:"), "{admin}");
}

#[test]
fn auth_without_users_is_an_error_as_in_redis() {
    let node = Node::start(&["--resp", "127.0.0.1:0"]);
    let resp = node.resp.as_deref().expect("resp address");
    common::need("redis-cli", "redis-tools");
    let answer = redis_cli(resp, &["AUTH", "whatever"]);
    assert!(answer.contains("without any password configured"), "{answer}");
    assert_eq!(redis_cli(resp, &["SET", "k", "v"]), "OK", "no users: open, as Redis without requirepass");
}

/// The earlier system's own example, unchanged, against a node with auth
/// on whose namespace `example` is opened to anonymous clients. It expects
/// the API on localhost:5000, the client's default.
#[test]
fn the_earlier_concurrency_example_runs_in_a_namespace_opened_for_it() {
    let root = common::repo_root();
    let python = common::earlier_client_python();
    let config = config_file("auth-python");
    let bin = Path::new(env!("CARGO_BIN_EXE_geocache"));
    let mut child = Command::new(bin)
        .args(["serve", "--http", "127.0.0.1:5000", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start geocache");
    let ready = (0..600).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        reqwest::blocking::get("http://127.0.0.1:5000/readyz").is_ok_and(|r| r.status().is_success())
    });
    assert!(ready, "the node on :5000 did not come up (is the port taken?)");
    let example = root.parent().unwrap().join("shared/earlier-client/concurrency.py");
    let run = Command::new(&python).arg(&example).output().expect("run concurrency.py");
    let final_read =
        reqwest::blocking::get("http://127.0.0.1:5000/api/example/acc").map(|r| r.json::<Value>());
    let _ = child.kill();
    let _ = child.wait();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("t1: Exiting"), "{stdout}");
    let acc = final_read.expect("read acc").expect("JSON");
    assert_eq!(acc["value"], 250, "{acc}");
}
