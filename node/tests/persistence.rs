//! Persistence (`--data-dir`) with real processes killed for real
//! (SIGKILL): nothing acknowledged is lost, no delete comes back, and a
//! restarted node continues its life without a full transfer.

mod common;

use common::{free_tcp_port, free_udp_port, make_numbered_certs, temp_dir, Node};
use reqwest::{Client, StatusCode};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long replication may take to settle on a loaded machine.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);

/// One node of a test cluster, with what it needs to start again as itself.
struct Member {
    http: String,
    args: Vec<String>,
    node: Option<Node>,
}

impl Member {
    fn start(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.node = Some(Node::start_on(&self.http, &args));
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn kill(&mut self) {
        if let Some(node) = self.node.take() {
            node.kill();
        }
    }
}

/// Nodes `(ip, region)`, each with its own data dir under `dir`; the first
/// is every other's seed. Not started.
fn members(dir: &Path, specs: &[(&str, &str)], extra: &[&str]) -> Vec<Member> {
    let certs = make_numbered_certs(dir, specs.len());
    let mut seed: Option<String> = None;
    specs
        .iter()
        .enumerate()
        .map(|(i, (ip, region))| {
            let gossip = format!("{ip}:{}", free_udp_port(ip));
            let mut args: Vec<String> = vec![
                "--gossip".into(),
                gossip.clone(),
                "--region".into(),
                region.to_string(),
                "--data-dir".into(),
                dir.join(format!("data-{i}")).to_str().unwrap().to_string(),
            ];
            if let Some(seed) = &seed {
                args.extend(["--seeds".to_string(), seed.clone()]);
            }
            seed.get_or_insert(gossip);
            args.extend(certs[i].iter().cloned());
            args.extend(extra.iter().map(|s| s.to_string()));
            Member { http: format!("{ip}:{}", free_tcp_port(ip)), args, node: None }
        })
        .collect()
}

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

async fn json(c: &Client, url: &str) -> serde_json::Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

async fn wait_for_members(c: &Client, m: &Member, count: usize) {
    let started = Instant::now();
    loop {
        let view = json(c, &m.url("/v1/cluster")).await;
        if view["members"].as_array().is_some_and(|v| v.len() >= count) {
            return;
        }
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "{} never saw {count} members: {view}", m.http);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_ready(c: &Client, m: &Member) {
    wait_ready_at(c, &m.http).await;
}

/// Waits until the node at `http` has loaded its data dir.
async fn wait_ready_at(c: &Client, http: &str) {
    let started = Instant::now();
    loop {
        if c.get(format!("http://{http}/readyz")).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
            return;
        }
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "{http} never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Full transfers this node sent and received, by its own count.
async fn full_transfers(c: &Client, m: &Member) -> (u64, u64) {
    let view = json(c, &m.url("/v1/cluster")).await;
    let t = &view["stats"];
    (t["transfers_sent"].as_u64().unwrap(), t["transfers_received"].as_u64().unwrap())
}

/// What key `i` of the test must read as after the run.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    Value,
    Deleted,
    Expired,
}

fn expect(i: usize) -> Expect {
    if i % 10 == 3 {
        Expect::Deleted
    } else if i % 7 == 5 {
        Expect::Expired
    } else {
        Expect::Value
    }
}

/// Waits until every key of `0..count` reads as [`expect`] says at `m`.
async fn wait_for_every_key(c: &Client, m: &Member, count: usize) {
    let started = Instant::now();
    let mut pending: Vec<usize> = (0..count).collect();
    loop {
        let mut reads = tokio::task::JoinSet::new();
        let mut still = Vec::new();
        for &i in &pending {
            let (c, url) = (c.clone(), m.url(&format!("/v1/kv/p/k{i}")));
            reads.spawn(async move {
                let r = c.get(url).send().await.unwrap();
                let ok = match expect(i) {
                    Expect::Value => {
                        r.status() == StatusCode::OK && r.text().await.unwrap() == format!("v{i}")
                    }
                    Expect::Deleted | Expect::Expired => r.status() == StatusCode::NOT_FOUND,
                };
                (i, ok)
            });
            if reads.len() >= 32 {
                if let Some((i, ok)) = reads.join_next().await.map(Result::unwrap) {
                    if !ok {
                        still.push(i);
                    }
                }
            }
        }
        while let Some((i, ok)) = reads.join_next().await.map(Result::unwrap) {
            if !ok {
                still.push(i);
            }
        }
        if still.is_empty() {
            return;
        }
        still.sort_unstable();
        assert!(
            started.elapsed() < CONVERGE_TIMEOUT,
            "{}: {} keys never read as written, e.g. k{} ({:?})",
            m.http,
            still.len(),
            still[0],
            expect(still[0])
        );
        pending = still;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_killed_at_once_restarts_with_every_acked_write_and_no_full_transfer() {
    let dir = temp_dir("persist-all");
    let mut ms = members(
        &dir,
        &[("127.0.0.61", "montreal"), ("127.0.0.62", "frankfurt"), ("127.0.0.63", "singapore")],
        &[],
    );
    for m in ms.iter_mut() {
        m.start();
    }
    let c = client();
    for m in &ms {
        wait_for_members(&c, m, 2).await;
    }
    const WRITES: usize = 5_000;
    let urls: Arc<Vec<String>> = Arc::new(ms.iter().map(|m| m.url("")).collect());
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let (c, urls, next) = (c.clone(), urls.clone(), next.clone());
        writers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= WRITES {
                    return;
                }
                let base = &urls[i % urls.len()];
                let ttl = if expect(i) == Expect::Expired { "?ttl=2s" } else { "" };
                let r = c
                    .put(format!("{base}/v1/kv/p/k{i}{ttl}"))
                    .header("geocache-durability", "disk")
                    .body(format!("v{i}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED, "k{i}: {}", r.text().await.unwrap());
                if expect(i) == Expect::Deleted {
                    let r = c
                        .delete(format!("{base}/v1/kv/p/k{i}"))
                        .header("geocache-durability", "disk")
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "delete k{i}: {}", r.status());
                }
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    // Every node dies at once, with whatever was still on its way.
    for m in ms.iter_mut() {
        m.kill();
    }
    for m in ms.iter_mut() {
        m.start();
    }
    for m in &ms {
        wait_ready(&c, m).await;
    }
    for m in &ms {
        wait_for_every_key(&c, m, WRITES).await;
    }
    for m in &ms {
        assert_eq!(full_transfers(&c, m).await, (0, 0), "{}: no full transfer was needed", m.http);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_under_load_catches_up_through_the_backlog() {
    let dir = temp_dir("persist-one");
    let mut ms = members(&dir, &[("127.0.0.64", "montreal"), ("127.0.0.65", "frankfurt")], &[]);
    for m in ms.iter_mut() {
        m.start();
    }
    let c = client();
    for m in &ms {
        wait_for_members(&c, m, 1).await;
    }
    // A steady load into the first node; every write it acknowledged is
    // counted.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let load = {
        let (c, url, stop, acked) = (c.clone(), ms[0].url(""), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = c.put(format!("{url}/v1/kv/p/load-{i}")).body(format!("v{i}")).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
                i += 1;
                acked.store(i, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    ms[1].kill();
    tokio::time::sleep(Duration::from_secs(10)).await;
    ms[1].start();
    wait_ready(&c, &ms[1]).await;
    // Its own writes after the restart reach the peer.
    for j in 0..20 {
        let r = c.put(ms[1].url(&format!("/v1/kv/p/after-{j}"))).body("a").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let written = acked.load(Ordering::Relaxed);
    assert!(written > 100, "the load ran ({written} writes)");
    let started = Instant::now();
    for i in 0..written {
        loop {
            let r = c.get(ms[1].url(&format!("/v1/kv/p/load-{i}"))).send().await.unwrap();
            if r.status() == StatusCode::OK {
                break;
            }
            assert!(
                started.elapsed() < CONVERGE_TIMEOUT,
                "load-{i} of {written} never reached the restarted node"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for j in 0..20 {
        loop {
            let r = c.get(ms[0].url(&format!("/v1/kv/p/after-{j}"))).send().await.unwrap();
            if r.status() == StatusCode::OK {
                break;
            }
            assert!(started.elapsed() < CONVERGE_TIMEOUT, "after-{j} never reached the peer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for m in &ms {
        assert_eq!(full_transfers(&c, m).await, (0, 0), "{}: caught up without a full transfer", m.http);
    }
}

/// Starts `geocache serve` on `dir` and returns its exit status and stderr.
fn serve_once(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geocache"))
        .arg("serve")
        .args(args)
        .arg("--print-config")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Starts a node on `dir` that must refuse it; returns what it said.
fn refused(http: &str, dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["serve", "--http", http, "--data-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geocache")).args(&args).output().unwrap();
    assert!(!out.status.success(), "the node refused the data dir");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn garble(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len() as usize;
    garble_at(path, len / 3);
}

/// Flips 64 bytes from `from` on.
fn garble_at(path: &Path, from: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    for b in bytes.iter_mut().skip(from).take(64) {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_damaged_or_foreign_data_dir_is_refused_with_the_file_named() {
    let dir = temp_dir("persist-garbled");
    let data = dir.join("data");
    let ip = "127.0.0.66";
    let http = format!("{ip}:{}", free_tcp_port(ip));
    let data_arg = data.to_str().unwrap().to_string();
    // Two lives, so the engine has written tables as well as its journal.
    for life in 0..2 {
        let c = client();
        let node = Node::start_on(&http, &["--data-dir", &data_arg]);
        wait_ready_at(&c, &http).await;
        for i in 0..50 {
            let r = c.put(node.url(&format!("/v1/kv/p/k{life}-{i}"))).body("v").send().await.unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }
        assert!(node.terminate().success());
    }
    // Another node (another node id) may not take it.
    let said = refused(&http, &data, &["--node-id", "77"]);
    assert!(said.contains("belongs to node"), "{said}");
    // The flag without a data dir is refused by name.
    let (ok, said) = serve_once(&["--fsync", "always"]);
    assert!(!ok && said.contains("--fsync"), "{said}");

    let files = files_under(&data);
    let version = files.iter().find(|p| p.ends_with("fjall/version")).expect("fjall's version file");
    let manifest = files
        .iter()
        .find(|p| {
            p.parent().is_some_and(|d| d.parent().is_some_and(|k| k.ends_with("keyspaces")))
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('v'))
        })
        .expect("a keyspace manifest");
    for damaged in [version, manifest] {
        let copy = dir.join("copy");
        let _ = std::fs::remove_dir_all(&copy);
        std::process::Command::new("cp")
            .args(["-r", data.to_str().unwrap(), copy.to_str().unwrap()])
            .status()
            .unwrap();
        let relative = damaged.strip_prefix(&data).unwrap();
        garble(&copy.join(relative));
        let said = refused(&http, &copy, &[]);
        assert!(
            said.contains(&copy.join(relative).display().to_string()) && said.contains("is damaged"),
            "names {}: {said}",
            relative.display()
        );
    }
    // A damaged journal is cut where the damage starts (a torn write's
    // repair): the node starts, says so, and writes under a new origin so
    // that no sequence number it may have sent is used twice.
    let copy = dir.join("copy");
    let _ = std::fs::remove_dir_all(&copy);
    std::process::Command::new("cp")
        .args(["-r", data.to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap();
    let c = client();
    let node = Node::start_on(&http, &["--data-dir", copy.to_str().unwrap()]);
    wait_ready_at(&c, &http).await;
    let before = json(&c, &node.url("/v1/node")).await;
    // Killed, so its journal keeps what it wrote (a clean stop would have
    // flushed the journal into tables).
    node.kill();
    let journal = files_under(&copy.join("journal"))
        .into_iter()
        .rfind(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .expect("the journal holds the last life's writes");
    let written = std::fs::metadata(&journal).unwrap().len() as usize;
    garble_at(&journal, written / 2);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geocache"))
        .args(["serve", "--http", &http, "--data-dir", copy.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = out.id();
    let started = Instant::now();
    let c = client();
    while !c.get(format!("http://{http}/readyz")).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "the node started on a cut journal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = client();
    let after = json(&c, &format!("http://{http}/v1/node")).await;
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let output = out.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains(&journal.display().to_string()) && said.contains("cut"), "{said}");
    assert_ne!(before["origin"], after["origin"], "a new origin after the cut: {before} {after}");
}

#[tokio::test]
async fn disk_durability_over_http_and_waitaof_over_resp() {
    let dir = temp_dir("persist-levels");
    let data = dir.join("data");
    let with =
        Node::start(&["--data-dir", data.to_str().unwrap(), "--resp", "127.0.0.1:0", "--fsync", "never"]);
    let without = Node::start(&["--resp", "127.0.0.1:0"]);
    let c = client();
    wait_ready_at(&c, &with.addr).await;
    let r =
        c.put(with.url("/v1/kv/p/d")).header("geocache-durability", "disk").body("v").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "flushed at once, even with --fsync never");
    let r = c
        .put(without.url("/v1/kv/p/d"))
        .header("geocache-durability", "disk")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "no_data_dir", "{body}");
    assert_eq!(
        c.get(without.url("/v1/kv/p/d")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "nothing written"
    );

    let mut conn = common::resp_connect(with.resp.as_deref().unwrap()).await;
    let _: () = redis::cmd("SET").arg("k").arg("v").query_async(&mut conn).await.unwrap();
    let reached: Vec<i64> =
        redis::cmd("WAITAOF").arg(1).arg(0).arg(5_000).query_async(&mut conn).await.unwrap();
    assert_eq!(reached, vec![1, 0], "the SET is on the device");
    let mut plain = common::resp_connect(without.resp.as_deref().unwrap()).await;
    let refused: redis::RedisResult<Vec<i64>> =
        redis::cmd("WAITAOF").arg(1).arg(0).arg(0).query_async(&mut plain).await;
    assert!(refused.unwrap_err().to_string().contains("--data-dir"));
    let none: Vec<i64> = redis::cmd("WAITAOF").arg(0).arg(0).arg(0).query_async(&mut plain).await.unwrap();
    assert_eq!(none, vec![0, 0]);

    // `--fsync always`: every write waits for the device, and concurrent
    // ones share its flushes (none times out).
    let always = Node::start(&["--data-dir", dir.join("always").to_str().unwrap(), "--fsync", "always"]);
    wait_ready_at(&c, &always.addr).await;
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (c, url) = (c.clone(), always.url(&format!("/v1/kv/p/a{i}")));
        writes.spawn(async move { c.put(url).body("v").send().await.unwrap().status() });
    }
    while let Some(status) = writes.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::CREATED);
    }
    let node = json(&c, &always.url("/v1/node")).await;
    assert_eq!(node["data_dir"]["fsync"], "always", "{node}");
}
