//! Locality over a real cluster: `/v1/closest`, `/api/closest`, the earlier
//! interface's `databaseHost`, and the Rust client failing over when the
//! closest node dies.

mod common;

use common::{free_udp_port, make_numbered_certs, temp_dir, Node};
use geocache_node::client::{Client, PutOptions};
use serde_json::Value;
use std::time::{Duration, Instant};

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// (ip, region, lat, lon)
type Spec = (&'static str, &'static str, f64, f64);

const MONTREAL: Spec = ("127.0.0.71", "montreal", 45.50, -73.57);
const FRANKFURT: Spec = ("127.0.0.72", "frankfurt", 50.11, 8.68);
const SAO_PAULO: Spec = ("127.0.0.73", "sao-paulo", -23.55, -46.63);

/// Starts one node per spec; the first is every other's seed.
fn cluster(name: &str, specs: &[Spec]) -> Vec<Node> {
    let dir = temp_dir(name);
    let certs = make_numbered_certs(&dir, specs.len());
    let mut seed: Option<String> = None;
    let mut nodes = Vec::new();
    for (i, (ip, region, lat, lon)) in specs.iter().enumerate() {
        let gossip = format!("{ip}:{}", free_udp_port(ip));
        let mut args: Vec<String> = vec![
            "--gossip".into(),
            gossip.clone(),
            "--region".into(),
            region.to_string(),
            "--lat".into(),
            lat.to_string(),
            "--lon".into(),
            lon.to_string(),
            "--node-id".into(),
            (i + 1).to_string(),
        ];
        if let Some(seed) = &seed {
            args.push("--seeds".into());
            args.push(seed.clone());
        }
        args.extend(certs[i].iter().cloned());
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(Node::start_at(ip, &arg_refs));
        seed.get_or_insert(gossip);
    }
    nodes
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn json(c: &reqwest::Client, url: String) -> (u16, Value) {
    let r = c.get(url).header("content-type", "application/json").send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Waits until `check` holds for what `url` answers.
async fn wait_until(c: &reqwest::Client, url: String, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (_, v) = json(c, url.clone()).await;
        if check(&v) {
            return v;
        }
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "{what}: last answer {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_members(c: &reqwest::Client, nodes: &[Node]) {
    for n in nodes {
        let want = nodes.len() - 1;
        wait_until(c, n.url("/v1/cluster"), "members", |v| {
            v["members"].as_array().is_some_and(|m| m.len() == want && m.iter().all(|m| m["state"] == "up"))
        })
        .await;
    }
}

#[tokio::test]
async fn closest_answers_live_nodes_by_distance_or_rtt_and_routes_database_host() {
    let nodes = cluster("loc-closest", &[MONTREAL, FRANKFURT, SAO_PAULO]);
    let c = http();
    wait_for_members(&c, &nodes).await;
    let montreal = &nodes[0];

    // A client in Paris is sent to Frankfurt, by any node it asks.
    for n in &nodes {
        let (status, v) = json(&c, n.url("/v1/closest?lat=48.85&lon=2.35")).await;
        assert_eq!(status, 200);
        assert_eq!(v["region"], "frankfurt", "{v}");
        assert_eq!(v["http"], nodes[1].addr.as_str());
        let km = v["distance_km"].as_f64().unwrap();
        assert!((400.0..500.0).contains(&km), "Paris - Frankfurt is ~480 km: {km}");
        assert_eq!(v["candidates"].as_array().unwrap().len(), 3);
        let (_, ip) = json(&c, n.url("/api/closest/48.85/2.35")).await;
        assert_eq!(ip["ip"], "127.0.0.72");
    }
    // By RTT, the answering node is its own closest (0 ms), then measured
    // peers.
    let v = wait_until(&c, montreal.url("/v1/closest?lat=48.85&lon=2.35&by=rtt"), "rtts measured", |v| {
        v["candidates"].as_array().is_some_and(|c| c.iter().all(|c| c["rtt_ms"].is_u64()))
    })
    .await;
    assert_eq!(v["by"], "rtt");
    assert_eq!(v["region"], "montreal");
    assert_eq!(v["rtt_ms"], 0);

    // databaseHost: the read is served by the node named (by host or by
    // region), as its own request counter shows.
    let posted = c
        .post(montreal.url("/api/users/ada?databaseHost=127.0.0.73"))
        .json(&serde_json::json!({ "value": { "n": 1 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let api_gets = |v: &str| {
        v.lines()
            .find(|l| l.starts_with("geocache_ops_total{kind=\"api_get\",status=\"200\"}"))
            .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let metrics = |n: &Node| {
        let c = c.clone();
        let url = n.url("/metrics");
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let before = api_gets(&metrics(&nodes[2]).await);
    let (status, found) = json(&c, montreal.url("/api/users/ada?databaseHost=sao-paulo")).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["value"]["n"], 1);
    let (status, _) = json(&c, montreal.url("/api/users/ada?databaseHost=127.0.0.73")).await;
    assert_eq!(status, 200);
    assert_eq!(api_gets(&metrics(&nodes[2]).await), before + 2, "both reads served by sao-paulo");

    // Frankfurt dies: once noticed, no node sends a client there.
    let mut nodes = nodes;
    nodes.remove(1).kill();
    for n in &nodes {
        let v = wait_until(&c, n.url("/v1/closest?lat=48.85&lon=2.35"), "frankfurt left out", |v| {
            v["candidates"].as_array().is_some_and(|c| c.iter().all(|c| c["region"] != "frankfurt"))
        })
        .await;
        assert_eq!(v["region"], "montreal", "next closest to Paris: {v}");
        let (_, ip) = json(&c, n.url("/api/closest/48.85/2.35")).await;
        assert_eq!(ip["ip"], "127.0.0.71");
    }
}

#[tokio::test]
async fn the_client_keeps_working_when_its_closest_node_dies() {
    let nodes = cluster(
        "loc-client",
        &[
            ("127.0.0.74", "frankfurt", 50.11, 8.68),
            ("127.0.0.75", "montreal", 45.50, -73.57),
            ("127.0.0.76", "sao-paulo", -23.55, -46.63),
        ],
    );
    let c = http();
    wait_for_members(&c, &nodes).await;
    // A client in Paris, bootstrapped through São Paulo.
    let client = Client::near(nodes[2].addr.parse().unwrap(), 48.85, 2.35).await.unwrap();
    let order = client.nodes();
    assert_eq!(order[0].to_string(), nodes[0].addr, "Frankfurt first: {order:?}");
    assert_eq!(order[1].to_string(), nodes[1].addr, "then Montreal: {order:?}");

    let mut nodes = nodes;
    let count = 60u64;
    for i in 0..count {
        if i == 20 {
            // The closest node dies mid-run, once its writes (acknowledged
            // locally) have reached Montreal: this test is about failing
            // over, not about what `local` durability may lose.
            wait_until(&c, nodes[1].url("/api/default/counter"), "counter replicated", |v| v["value"] == 20)
                .await;
            nodes.remove(0).kill();
        }
        let key = format!("k{i}");
        client.put_with(&key, format!("v{i}"), PutOptions::ttl(Duration::from_secs(600))).await.unwrap();
        let got = client.get(&key).await.unwrap().expect("read back");
        assert_eq!(got.value, format!("v{i}").as_bytes());
        client
            .update("counter", |old| {
                let n: u64 = old.and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()).unwrap_or(0);
                Some((n + 1).to_string().into_bytes())
            })
            .await
            .unwrap();
    }
    assert_eq!(client.nodes()[0].to_string(), nodes[0].addr, "Montreal serves now");
    // Every counted update landed exactly once, whichever node took it
    // (the first 20 went to Frankfurt, replicated before it died).
    let started = Instant::now();
    loop {
        let got = client.get("counter").await.unwrap().map(|e| e.value);
        if got.as_deref() == Some(count.to_string().as_bytes()) {
            break;
        }
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "counter {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(client.delete("k0").await.unwrap());
    assert!(client.get("k0").await.unwrap().is_none());
}
