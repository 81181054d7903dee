//! No write acked and lost in silence: a node SIGTERMed right after a
//! burst of acked writes leaves every one at its peer, and `all`
//! durability on a node that found no cluster times out saying so.

mod common;

use common::{free_udp_port, make_certs, temp_dir, Node};
use geocache_tests::link_emulator::{EmulatedNode, LinkEmulator, LinkSpec};
use std::time::{Duration, Instant};

/// Generous: the machine may be loaded.
const TIMEOUT: Duration = Duration::from_secs(60);
const WRITES: usize = 10_000;
/// The writer's drain deadline: generous, as a debug build on a loaded
/// machine applies a few thousand writes a second (the drain ends as soon
/// as the peer confirms). With `--drain-timeout 0s` this test loses
/// thousands of the writes.
const DRAIN_FLAGS: &[&str] = &["--drain-timeout", "60s"];

fn node(ip: &str, region: &str, id: &str, certs: &[String], seed: Option<&str>) -> (Node, String) {
    let gossip = format!("{ip}:{}", free_udp_port(ip));
    let mut args: Vec<String> = vec![
        "--gossip".into(),
        gossip.clone(),
        "--region".into(),
        region.into(),
        "--node-id".into(),
        id.into(),
        "--resp".into(),
        format!("{ip}:0"),
    ];
    if let Some(seed) = seed {
        args.extend(["--seeds".to_string(), seed.to_string()]);
    }
    args.extend(certs.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    (Node::start_at(ip, &refs), gossip)
}

async fn members(c: &reqwest::Client, node: &Node) -> usize {
    let view: serde_json::Value = c.get(node.url("/v1/cluster")).send().await.unwrap().json().await.unwrap();
    view["members"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sigtermed_right_after_acked_writes_leaves_every_one_at_its_peer() {
    let dir = temp_dir("shutdown-drain");
    let certs = make_certs(&dir, &["node-1", "node-2"]);
    // Behind the link emulator, 40 ms apart: when the signal comes, most
    // of the burst is still queued at the writer or on the way.
    let emulated: Vec<EmulatedNode> = ["montreal", "frankfurt"]
        .iter()
        .enumerate()
        .map(|(i, region)| EmulatedNode::on_loopback(region, 170, i as u8).expect("free UDP ports"))
        .collect();
    let emulator = LinkEmulator::start(emulated.clone(), 11).await.unwrap();
    emulator.set_link("montreal", "frankfurt", LinkSpec { delay_ms: 40, ..LinkSpec::default() });
    let start = |i: usize| {
        let mut args = emulated[i].serve_args(&emulated[0]);
        args.extend(["--node-id".to_string(), (i + 1).to_string()]);
        args.extend(["--resp".to_string(), format!("{}:0", emulated[i].real.ip())]);
        args.extend(DRAIN_FLAGS.iter().map(|s| s.to_string()));
        args.extend(certs[i].iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::start_at(&emulated[i].real.ip().to_string(), &refs)
    };
    let (writer, peer) = (start(0), start(1));
    let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let started = Instant::now();
    while members(&c, &writer).await < 1 || members(&c, &peer).await < 1 {
        assert!(started.elapsed() < TIMEOUT, "the two nodes never met");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 10,000 SETs in pipelines of 500, every one acked (local durability).
    let mut con = common::resp_connect(writer.resp.as_deref().unwrap()).await;
    for batch in (0..WRITES).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for n in batch {
            pipe.cmd("SET").arg(format!("drain:{n}")).arg(format!("v{n}")).ignore();
        }
        let () = pipe.query_async(&mut con).await.expect("every SET acked");
    }
    drop(con);
    // At once: no time for replication to catch up on its own.
    let status = writer.terminate();
    assert!(status.success(), "geocache exits cleanly on SIGTERM: {status}");
    let mut con = common::resp_connect(peer.resp.as_deref().unwrap()).await;
    let keys: Vec<String> = (0..WRITES).map(|n| format!("drain:{n}")).collect();
    let mut missing = Vec::new();
    for batch in keys.chunks(1_000) {
        let got: Vec<Option<String>> = redis::cmd("MGET").arg(batch).query_async(&mut con).await.unwrap();
        missing.extend(batch.iter().zip(got).filter(|(_, v)| v.is_none()).map(|(k, _)| k.clone()));
    }
    assert!(
        missing.is_empty(),
        "{} of {WRITES} acked writes never reached the peer, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test]
async fn all_durability_on_a_node_that_found_no_cluster_times_out_naming_the_level() {
    let dir = temp_dir("shutdown-alone");
    let certs = make_certs(&dir, &["node-1"]);
    // Its only seed is an address nothing listens on.
    let nobody = format!("127.0.0.84:{}", free_udp_port("127.0.0.84"));
    let (alone, _) = node("127.0.0.83", "montreal", "1", &certs[0], Some(&nobody));
    let c = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let r = c
        .put(alone.url("/v1/kv/t/everywhere"))
        .header("geocache-durability", "all")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::GATEWAY_TIMEOUT);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "durability_timeout");
    assert!(body["error"].as_str().unwrap().contains("reached local"), "{body}");
    // Applied here all the same.
    let r = c.get(alone.url("/v1/kv/t/everywhere")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}
