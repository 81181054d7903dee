//! Sidecars over real QUIC on loopback: a region of one full node and four
//! sidecars, and a remote region where the writes are made.

mod common;

use common::{start_cluster, Member, Node};
use reqwest::{Client, StatusCode};
use std::time::{Duration, Instant};

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn cluster_view(c: &Client, node: &Node) -> serde_json::Value {
    c.get(node.url("/v1/cluster")).send().await.unwrap().json().await.unwrap()
}

async fn wait_for_members(c: &Client, members: &[Member]) {
    let started = Instant::now();
    for m in members {
        loop {
            let view = cluster_view(c, &m.node).await;
            let up =
                view["members"].as_array().map_or(0, |all| all.iter().filter(|p| p["state"] == "up").count());
            if up + 1 == members.len() {
                break;
            }
            assert!(started.elapsed() < CONVERGE_TIMEOUT, "{} never saw every member: {view}", m.node.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn put(c: &Client, node: &Node, key: &str, value: &str) {
    let r = c.put(node.url(&format!("/v1/kv/t/{key}"))).body(value.to_string()).send().await.unwrap();
    assert!(r.status().is_success(), "PUT {key}: {}", r.status());
}

async fn get(c: &Client, node: &Node, key: &str) -> Option<String> {
    let r = c.get(node.url(&format!("/v1/kv/t/{key}"))).send().await.unwrap();
    match r.status() {
        StatusCode::OK => Some(r.text().await.unwrap()),
        StatusCode::NOT_FOUND => None,
        other => panic!("GET {key}: {other}"),
    }
}

async fn stat(c: &Client, node: &Node, name: &str) -> u64 {
    cluster_view(c, node).await["stats"][name].as_u64().unwrap_or_else(|| panic!("no stat {name}"))
}

/// Waits until a counter of `/v1/cluster` (published about once a
/// second) is at least `at_least`.
async fn wait_stat(c: &Client, node: &Node, name: &str, at_least: u64) {
    let started = Instant::now();
    while stat(c, node, name).await < at_least {
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "{} never counted {at_least} {name}", node.base);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the full node of region a holds `key` at `value`.
async fn wait_at(c: &Client, node: &Node, key: &str, value: &str) {
    let started = Instant::now();
    while get(c, node, key).await.as_deref() != Some(value) {
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "{} never got {key}={value}", node.base);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_sidecar_stores_only_what_its_clients_use_fills_misses_and_never_serves_an_old_value() {
    let sidecar: &[&str] = &["--sidecar"];
    let (members, _) = start_cluster(
        "sidecar",
        &[
            ("127.0.0.161", "a", 1, &[]),
            ("127.0.0.162", "a", 2, sidecar),
            ("127.0.0.163", "a", 3, sidecar),
            ("127.0.0.166", "a", 5, sidecar),
            ("127.0.0.167", "a", 6, sidecar),
            ("127.0.0.164", "b", 4, &[]),
        ],
    );
    let c = client();
    wait_for_members(&c, &members).await;
    let (full, side, other_side, remote) =
        (&members[0].node, &members[1].node, &members[2].node, &members[5].node);
    let view = cluster_view(&c, side).await;
    assert_eq!(view["kind"], "sidecar", "{view}");

    // Writes in region b reach the sidecars and are not stored there.
    for n in 0..50 {
        put(&c, remote, &format!("k{n}"), &format!("v{n}")).await;
    }
    wait_at(&c, full, "k49", "v49").await;
    wait_stat(&c, side, "not_stored", 50).await;
    let node: serde_json::Value = c.get(side.url("/v1/node")).send().await.unwrap().json().await.unwrap();
    assert_eq!(node["entries"], 0, "a sidecar stores no remote write of a key it does not hold: {node}");

    // A miss fills from the full node of its region.
    assert_eq!(get(&c, side, "k7").await.as_deref(), Some("v7"));
    wait_stat(&c, side, "fills_found", 1).await;
    wait_stat(&c, full, "fills_answered", 1).await;
    assert_eq!(get(&c, side, "never-written").await, None, "a key no full node holds is a miss");

    // Held now: a remote update reaches it, and no read after the new
    // value is seen shows the old one.
    put(&c, remote, "k7", "v7-new").await;
    let started = Instant::now();
    loop {
        match get(&c, side, "k7").await.as_deref() {
            Some("v7-new") => break,
            Some("v7") => {}
            other => panic!("the sidecar served {other:?} for k7"),
        }
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "the sidecar never took the update of a key it holds");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for _ in 0..20 {
        assert_eq!(get(&c, side, "k7").await.as_deref(), Some("v7-new"));
    }

    // A sidecar that held nothing of the key fills the newest value, never
    // the one it was written over.
    put(&c, remote, "k8", "v8-new").await;
    wait_at(&c, full, "k8", "v8-new").await;
    assert_eq!(get(&c, other_side, "k8").await.as_deref(), Some("v8-new"));

    // Its own writes are held and replicate like any node's.
    put(&c, side, "mine", "m").await;
    wait_at(&c, remote, "mine", "m").await;
    assert_eq!(get(&c, side, "mine").await.as_deref(), Some("m"));
}

#[tokio::test]
async fn a_sidecar_flag_without_gossip_is_refused_naming_the_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geocache"))
        .args(["serve", "--sidecar", "--http", "127.0.0.165:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sidecar") && err.contains("--gossip"), "{err}");
}
