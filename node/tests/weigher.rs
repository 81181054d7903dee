//! The weigher tells the truth: a node filled over RESP with small values,
//! larger values with a TTL, and deletes (tombstones) grows its resident
//! memory by about what its store says it holds. The per-entry constants
//! in `geocache_node::weight` come from `bench/src/bin/store-memory.rs`;
//! this test fails when a change to the store's layout makes them wrong.

mod common;

use common::Node;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `commands` (RESP arrays) over one pipelined connection and reads
/// one `+OK` or `:n` reply per command.
async fn pipeline(addr: &str, commands: Vec<Vec<Vec<u8>>>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let count = commands.len();
    let mut out = Vec::new();
    for words in commands {
        out.extend_from_slice(format!("*{}\r\n", words.len()).as_bytes());
        for w in words {
            out.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
            out.extend_from_slice(&w);
            out.extend_from_slice(b"\r\n");
        }
    }
    let (mut r, mut w) = s.split();
    let write = async {
        w.write_all(&out).await.expect("write");
    };
    let read = async {
        let (mut lines, mut buf) = (0, vec![0u8; 64 * 1024]);
        while lines < count {
            let n = r.read(&mut buf).await.expect("read");
            assert!(n > 0, "the node closed after {lines} replies");
            assert!(!buf[..n].contains(&b'-'), "an error reply: {}", String::from_utf8_lossy(&buf[..n]));
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
        }
    };
    tokio::time::timeout(Duration::from_secs(300), async { tokio::join!(write, read) })
        .await
        .expect("in time");
}

fn set(key: String, value: &[u8], extra: &[&str]) -> Vec<Vec<u8>> {
    let mut words = vec![b"SET".to_vec(), key.into_bytes(), value.to_vec()];
    words.extend(extra.iter().map(|w| w.as_bytes().to_vec()));
    words
}

async fn weighed_bytes(node: &Node) -> u64 {
    let info: serde_json::Value =
        reqwest::get(node.url("/v1/node")).await.expect("GET /v1/node").json().await.expect("json");
    info["bytes"].as_u64().expect("bytes")
}

#[tokio::test]
async fn resident_memory_grows_by_what_the_store_weighs() {
    let node = Node::start(&["--resp", "127.0.0.1:0", "--max-memory", "1GiB"]);
    let addr = node.resp.clone().expect("resp address");
    let rss_before = node.rss_bytes();
    let weighed_before = weighed_bytes(&node).await;

    let small = vec![b's'; 100];
    pipeline(&addr, (0..60_000).map(|i| set(format!("small:{i}"), &small, &[])).collect()).await;
    let large = vec![b'l'; 4096];
    pipeline(&addr, (0..6_000).map(|i| set(format!("large:{i}"), &large, &["EX", "3600"])).collect()).await;
    let deletes = (0..20_000).map(|i| vec![b"DEL".to_vec(), format!("gone:{i}").into_bytes()]).collect();
    pipeline(&addr, deletes).await;

    // Let freed request buffers settle before reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grew = node.rss_bytes().saturating_sub(rss_before) as f64;
    let weighed = weighed_bytes(&node).await.saturating_sub(weighed_before) as f64;
    let ratio = grew / weighed;
    eprintln!(
        "RSS grew {:.1} MiB, the store weighs {:.1} MiB: ratio {ratio:.2}",
        grew / 1048576.0,
        weighed / 1048576.0
    );
    assert!((0.85..=1.15).contains(&ratio), "RSS grew {grew} B for {weighed} B weighed (ratio {ratio:.2})");
}
