//! The byte budget holds: writing 4x `--max-memory` keeps the process's
//! resident memory under 1.15x `--max-memory` + 32 MiB (the promise
//! docs/OPERATIONS.md makes), and what goes first is the least recently
//! used.

mod common;

use common::Node;
use reqwest::StatusCode;
use std::time::Duration;

const MAX_MEMORY_MIB: u64 = 32;
const VALUE_BYTES: usize = 64 * 1024;

#[tokio::test]
async fn memory_stays_bounded_and_lru_keys_go_first() {
    let node = Node::start(&["--max-memory", "32MiB"]);
    let c = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let value = vec![b'v'; VALUE_BYTES];
    let total_bytes = 4 * MAX_MEMORY_MIB * 1024 * 1024;
    let writes = (total_bytes / VALUE_BYTES as u64) as usize;
    let hot = node.url("/v1/kv/app/hot");
    assert_eq!(c.put(&hot).body(value.clone()).send().await.unwrap().status(), StatusCode::CREATED);
    let mut rss_max = 0;
    for i in 0..writes {
        let r = c.put(node.url(&format!("/v1/kv/app/k{i}"))).body(value.clone()).send().await.unwrap();
        assert!(r.status().is_success(), "write {i}: {}", r.status());
        if i % 8 == 0 {
            let r = c.get(&hot).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "the hot key was evicted after {i} writes");
            r.bytes().await.unwrap();
        }
        if i % 256 == 0 {
            rss_max = rss_max.max(node.rss_bytes());
        }
    }
    rss_max = rss_max.max(node.rss_bytes());
    let limit = (MAX_MEMORY_MIB * 115 / 100 + 32) * 1024 * 1024;
    eprintln!("wrote {} MiB; RSS max {} MiB; limit {} MiB", total_bytes >> 20, rss_max >> 20, limit >> 20);
    assert!(rss_max < limit, "RSS {rss_max} over {limit}");

    // The oldest keys are gone, the newest are held, the hot one survived.
    assert_eq!(c.get(&hot).send().await.unwrap().status(), StatusCode::OK);
    for i in 0..64 {
        assert_eq!(
            c.get(node.url(&format!("/v1/kv/app/k{i}"))).send().await.unwrap().status(),
            StatusCode::NOT_FOUND
        );
    }
    for i in writes - 64..writes {
        assert_eq!(
            c.get(node.url(&format!("/v1/kv/app/k{i}"))).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    let metrics = c.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let evictions: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("geocache_cache_evictions_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("evictions metric");
    assert!(evictions as usize >= writes / 2, "only {evictions} evictions");
    let info: serde_json::Value = c.get(node.url("/v1/node")).send().await.unwrap().json().await.unwrap();
    assert!(info["bytes"].as_u64().unwrap() <= MAX_MEMORY_MIB << 20, "{info}");
}
