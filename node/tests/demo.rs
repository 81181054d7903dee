//! `geocache demo`: one command starts three regions of two nodes; a write
//! in one region is read in another.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_demo_replicates_across_regions() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_geocache"))
        .arg("demo")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let mut urls = Vec::new();
    while urls.len() < 6 {
        urls.push(rx.recv_timeout(Duration::from_secs(60)).expect("the demo printed six nodes"));
    }
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
    let _ = child.kill();
    let _ = child.wait();
}
