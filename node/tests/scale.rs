//! Thirty real nodes on loopback in three regions: the cluster forms, sees
//! a killed node down, and takes its next life back, within the bounds
//! the simulator gives for the same shape (`sim/scenarios/three-by-ten.toml`;
//! figures in docs/SIMULATOR.md, "Thirty real nodes").

mod common;

use common::{free_udp_port, make_certs, temp_dir, Node};
use reqwest::Client;
use std::time::{Duration, Instant};

const NODES: usize = 30;
const REGIONS: [&str; 3] = ["montreal", "frankfurt", "tokyo"];
/// Generous for a loaded 2-core machine: the simulator forms this shape in
/// under a second and sees a crash down in about ten.
const FORM_TIMEOUT: Duration = Duration::from_secs(120);
const DOWN_TIMEOUT: Duration = Duration::from_secs(120);

fn ip(i: usize) -> String {
    format!("127.0.1.{}", 10 + i)
}

/// Members node `node` lists (up, suspect or unconfirmed: a member is
/// listed until it is declared down), with their state.
async fn listed(c: &Client, node: &Node) -> Option<Vec<(String, String)>> {
    let view: serde_json::Value = c.get(node.url("/v1/cluster")).send().await.ok()?.json().await.ok()?;
    let members = view["members"].as_array()?;
    let field = |m: &serde_json::Value, f: &str| m[f].as_str().unwrap_or_default().to_string();
    Some(members.iter().map(|m| (field(m, "gossip"), field(m, "state"))).collect())
}

/// Waits until every running node satisfies `ok` on the members it lists;
/// returns how long that took.
async fn wait_all(
    c: &Client,
    nodes: &[Option<Node>],
    timeout: Duration,
    what: &str,
    ok: impl Fn(&[(String, String)]) -> bool,
) -> Duration {
    let started = Instant::now();
    for node in nodes.iter().flatten() {
        loop {
            if listed(c, node).await.is_some_and(|m| ok(&m)) {
                break;
            }
            assert!(started.elapsed() < timeout, "{what}: {} not there after {timeout:?}", node.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    started.elapsed()
}

#[tokio::test]
async fn thirty_nodes_in_three_regions_form_see_a_crash_and_take_the_node_back() {
    let dir = temp_dir("scale");
    let names: Vec<String> = (0..NODES).map(|i| format!("node-{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let certs = make_certs(&dir, &name_refs);
    let gossip: Vec<String> = (0..NODES).map(|i| format!("{}:{}", ip(i), free_udp_port(&ip(i)))).collect();
    let args = |i: usize| -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--gossip".into(),
            gossip[i].clone(),
            "--region".into(),
            REGIONS[i % 3].into(),
            "--node-id".into(),
            (i + 1).to_string(),
        ];
        if i > 0 {
            // The first node of each region seeds the rest, as in the
            // simulator.
            a.push("--seeds".into());
            a.push(gossip[..3.min(i)].join(","));
        }
        a.extend(certs[i].iter().cloned());
        a
    };
    let start = |i: usize| {
        let a = args(i);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        Node::start_at(&ip(i), &refs)
    };
    let started = Instant::now();
    let mut nodes: Vec<Option<Node>> = (0..NODES).map(|i| Some(start(i))).collect();
    let c = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    // Listed (the simulator's formation), then every one up (confirmed by
    // a datagram of its own, not suspected).
    let listed_all = wait_all(&c, &nodes, FORM_TIMEOUT, "formation", |m| m.len() == NODES - 1).await;
    let all_up = |m: &[(String, String)]| m.len() == NODES - 1 && m.iter().all(|(_, state)| state == "up");
    let formed = listed_all + wait_all(&c, &nodes, FORM_TIMEOUT, "formation", all_up).await;
    eprintln!(
        "30 nodes: every node lists 29 {:.2} s and sees them all up {:.2} s after the last started ({:.2} s after the first)",
        listed_all.as_secs_f64(),
        formed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    let victim = 17;
    let gone = gossip[victim].clone();
    if let Some(n) = nodes[victim].take() {
        n.kill();
    }
    let down = wait_all(&c, &nodes, DOWN_TIMEOUT, "crash seen", |m| !m.iter().any(|(g, _)| *g == gone)).await;
    eprintln!("a killed node: every other node declared it down after {:.2} s", down.as_secs_f64());

    nodes[victim] = Some(start(victim));
    let back = wait_all(&c, &nodes, DOWN_TIMEOUT, "restart seen", all_up).await;
    eprintln!("its next life: every node sees 29 up again after {:.2} s", back.as_secs_f64());
}
