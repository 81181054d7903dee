//! `geocache demo`: one command starts three regions of two nodes; a write
//! in one region is read in another.

mod common;

use std::time::{Duration, Instant};

#[tokio::test]
async fn the_demo_replicates_across_regions() {
    let demo = common::DemoProcess::start();
    let urls: Vec<String> = demo.nodes.iter().map(|n| n.url.clone()).collect();
    let resps: Vec<String> = demo.nodes.iter().map(|n| n.resp.clone()).collect();
    assert!(resps[0].ends_with(":6379"), "{resps:?}");
    let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let r = c.put(format!("{}/v1/kv/demo/hello", urls[0])).body("hi").send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let started = Instant::now();
    for url in &urls {
        loop {
            let r = c.get(format!("{url}/v1/kv/demo/hello")).send().await.unwrap();
            if r.status() == reqwest::StatusCode::OK {
                assert_eq!(r.text().await.unwrap(), "hi");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{url} never got the write");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Locality answers from confirmed members only: wait until every node
    // has heard each other one speak for itself.
    for url in &urls {
        loop {
            let view: serde_json::Value =
                c.get(format!("{url}/v1/cluster")).send().await.unwrap().json().await.unwrap();
            let up =
                view["members"].as_array().map_or(0, |m| m.iter().filter(|m| m["state"] == "up").count());
            if up == urls.len() - 1 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{url} sees {up} members up: {view}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // The earlier client's locality: a client in Paris asking any node is
    // sent to a Frankfurt node's host, and reaches it on the same port.
    let frankfurt: Vec<&str> = urls[4..].iter().map(|u| common::host_of(u)).collect();
    for url in &urls {
        let v: serde_json::Value =
            c.get(format!("{url}/api/closest/48.85/2.35")).send().await.unwrap().json().await.unwrap();
        let ip = v["ip"].as_str().expect("an ip");
        assert!(frankfurt.contains(&ip), "{url} sent Paris to {ip}, not to {frankfurt:?}");
        let port = url.rsplit(':').next().unwrap();
        let root = c.get(format!("http://{ip}:{port}/")).send().await.unwrap();
        assert_eq!(root.json::<serde_json::Value>().await.unwrap(), serde_json::json!({ "success": true }));
    }
    // The earlier client's defaults: `localhost:5000` is a node, and the
    // host `/api/closest` names answers at that same port.
    let earlier = "http://127.0.0.1:5000";
    let r = c
        .post(format!("{earlier}/api/example/acc"))
        .json(&serde_json::json!({"value": 0}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "localhost:5000 serves the /api: {}", r.status());
    let v: serde_json::Value =
        c.get(format!("{earlier}/api/closest/45.50/-73.57")).send().await.unwrap().json().await.unwrap();
    let ip = v["ip"].as_str().expect("an ip");
    let got: serde_json::Value =
        c.get(format!("http://{ip}:5000/api/example/acc")).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["value"], 0, "montreal's closest node, at port 5000: {got}");
    // A RESP write in one region is read over RESP in another.
    let first = redis::Client::open(format!("redis://{}/", resps[0])).unwrap();
    let mut first = first.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET").arg("resp:hello").arg("hola").query_async(&mut first).await.unwrap();
    let last = redis::Client::open(format!("redis://{}/", resps[5])).unwrap();
    let mut last = last.get_multiplexed_async_connection().await.unwrap();
    loop {
        let got: Option<String> = redis::cmd("GET").arg("resp:hello").query_async(&mut last).await.unwrap();
        if got.as_deref() == Some("hola") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the RESP write never replicated");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
