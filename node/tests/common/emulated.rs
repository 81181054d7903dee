//! Clusters of real `geocache` processes behind the user-space link
//! emulator, node `i` in region `specs[i]`.

use super::{make_certs, temp_dir, Node};
use geocache_tests::link_emulator::{EmulatedNode, LinkEmulator};
use reqwest::Client;
use std::time::{Duration, Instant};

/// How long a cluster may take to form on a loaded machine.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// The processes, the emulator between them, and how to start each again.
pub struct Emulated {
    /// The nodes, by index.
    pub nodes: Vec<Node>,
    /// The links between regions.
    pub emulator: LinkEmulator,
    /// Each node's HTTP address and flags, to restart it as it was.
    pub launch: Vec<(String, Vec<String>)>,
}

impl Emulated {
    /// Starts node `i` again with its flags (its store starts empty
    /// unless its flags name a data dir).
    pub fn start(&self, i: usize) -> Node {
        let (ip, args) = &self.launch[i];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::start_at(ip, &refs)
    }
}

/// Nodes `(region, id)` named `node-{id}`, node `i` binding gossip on
/// 127.0.0.(base+i) and advertised through the emulator on
/// 127.0.0.(base+50+i), each with `extra` flags.
pub async fn emulated_cluster(name: &str, base: u8, specs: &[(&str, u64)], extra: &[&str]) -> Emulated {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    emulated_cluster_with(name, base, specs, |_| extra.clone()).await
}

/// As [`emulated_cluster`], with node `i`'s extra flags from `extra(i)`.
pub async fn emulated_cluster_with(
    name: &str,
    base: u8,
    specs: &[(&str, u64)],
    extra: impl Fn(usize) -> Vec<String>,
) -> Emulated {
    let dir = temp_dir(name);
    let names: Vec<String> = specs.iter().map(|(_, id)| format!("node-{id}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let certs = make_certs(&dir, &refs);
    let emulated: Vec<EmulatedNode> = (0..specs.len())
        .map(|i| EmulatedNode::on_loopback(specs[i].0, base, i as u8).expect("free UDP ports"))
        .collect();
    let emulator = LinkEmulator::start(emulated.clone(), 7).await.unwrap();
    let mut launch = Vec::new();
    for (i, (_, id)) in specs.iter().enumerate() {
        let mut args = emulated[i].serve_args(&emulated[0]);
        args.extend(["--node-id".to_owned(), id.to_string()]);
        args.extend(certs[i].iter().cloned());
        args.extend(extra(i));
        launch.push((emulated[i].real.ip().to_string(), args));
    }
    let mut e = Emulated { nodes: Vec::new(), emulator, launch };
    e.nodes = (0..specs.len()).map(|i| e.start(i)).collect();
    e
}

/// Waits until every node sees all the others.
pub async fn wait_for_members(c: &Client, nodes: &[Node]) {
    let started = Instant::now();
    for node in nodes {
        loop {
            let view: serde_json::Value =
                c.get(node.url("/v1/cluster")).send().await.unwrap().json().await.unwrap();
            if view["members"].as_array().is_some_and(|m| m.len() == nodes.len() - 1) {
                break;
            }
            assert!(started.elapsed() < FORM_TIMEOUT, "{} sees {view}", node.base);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
