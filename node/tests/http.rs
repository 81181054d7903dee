//! The HTTP API, against the real binary on a loopback port.

mod common;

use common::Node;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

async fn etag_of(c: &Client, url: &str) -> String {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.headers()["etag"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn set_get_delete() {
    let node = Node::start(&[]);
    let c = client();
    let url = node.url("/v1/kv/app/user:1");
    let r = c.put(&url).header("content-type", "text/plain").body("v1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.put(&url).body("v2").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("cache-control").is_none(), "no TTL, no max-age");
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.text().await.unwrap(), "v2");
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(c.delete(&url).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(c.get(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(c.head(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(c.delete(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    // Keys keep slashes and colons.
    let nested = node.url("/v1/kv/app/a/b:c");
    assert_eq!(c.put(&nested).body("x").send().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(c.get(&nested).send().await.unwrap().text().await.unwrap(), "x");
    assert!(node.terminate().success(), "SIGTERM stops the node cleanly");
}

#[tokio::test]
async fn ttl_expiry() {
    let node = Node::start(&[]);
    let c = client();
    let url = node.url("/v1/kv/app/short");
    let written = Instant::now();
    let r = c.put(format!("{url}?ttl=1s")).body("v").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.get(&url).send().await.unwrap();
    if written.elapsed() < Duration::from_millis(900) {
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["cache-control"], "max-age=1");
    }
    // The header form, and a namespace default from the config.
    let r = c.put(node.url("/v1/kv/app/hdr")).header("geocache-ttl", "1h").body("v").send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "max-age=3600");
    loop {
        let status = c.get(&url).send().await.unwrap().status();
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(written.elapsed() < Duration::from_secs(30), "the entry outlived its TTL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(written.elapsed() >= Duration::from_millis(1_000), "expired early: {:?}", written.elapsed());
}

#[tokio::test]
async fn namespace_ttl_policy_from_the_config_file() {
    let dir = std::env::temp_dir().join(format!("geocache-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.toml");
    std::fs::write(&file, "[namespaces.sessions]\ndefault_ttl = \"2m\"\nmax_ttl = \"10m\"\n").unwrap();
    let node = Node::start(&["--config", file.to_str().unwrap()]);
    let c = client();
    let r = c.put(node.url("/v1/kv/sessions/a")).body("v").send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "max-age=120");
    let r = c.put(node.url("/v1/kv/sessions/a?ttl=11m")).body("v").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "ttl_too_long");
}

#[tokio::test]
async fn cas_race_has_exactly_one_winner() {
    let node = Node::start(&[]);
    let c = client();
    let url = node.url("/v1/kv/app/counter");
    c.put(&url).body("0").send().await.unwrap();
    for round in 0..20 {
        let etag = etag_of(&c, &url).await;
        let (a, b) = tokio::join!(
            c.put(&url).header("if-match", &etag).body(format!("a{round}")).send(),
            c.put(&url).header("if-match", &etag).body(format!("b{round}")).send(),
        );
        let mut statuses = [a.unwrap().status(), b.unwrap().status()];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::OK, StatusCode::PRECONDITION_FAILED], "round {round}");
    }
    // If-Match: * writes only over an existing value.
    assert_eq!(c.put(&url).header("if-match", "*").body("x").send().await.unwrap().status(), StatusCode::OK);
    let missing = node.url("/v1/kv/app/missing");
    let r = c.put(&missing).header("if-match", "*").body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    // A stale ETag on DELETE.
    let etag = etag_of(&c, &url).await;
    c.put(&url).body("newer").send().await.unwrap();
    let r = c.delete(&url).header("if-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    // 304 while unchanged.
    let etag = etag_of(&c, &url).await;
    let r = c.get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn add_if_absent() {
    let node = Node::start(&[]);
    let c = client();
    let url = node.url("/v1/kv/app/lock");
    let add = || c.put(&url).header("if-none-match", "*").body("me").send();
    assert_eq!(add().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(add().await.unwrap().status(), StatusCode::PRECONDITION_FAILED);
    c.delete(&url).send().await.unwrap();
    assert_eq!(add().await.unwrap().status(), StatusCode::CREATED, "a deleted key is absent");
}

#[tokio::test]
async fn doc_patch_merges() {
    let node = Node::start(&[]);
    let c = client();
    let url = node.url("/v1/doc/app/profile");
    let patch = |body: Value| {
        c.patch(&url).header("content-type", "application/merge-patch+json").body(body.to_string()).send()
    };
    let r = patch(json!({"name": "ada", "address": {"city": "london", "zip": "n1"}})).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = patch(json!({"address": {"zip": null}, "age": 36})).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc, json!({"name": "ada", "age": 36, "address": {"city": "london"}}));
    // The same entry read as a value answers the JSON.
    let r = c.get(node.url("/v1/kv/app/profile")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    // CAS on documents.
    let etag = etag_of(&c, &url).await;
    patch(json!({"age": 37})).await.unwrap();
    let r = c
        .patch(&url)
        .header("content-type", "application/merge-patch+json")
        .header("if-match", etag)
        .body("{\"age\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
}

async fn expect_error(r: reqwest::Response, status: StatusCode, code: &str) {
    assert_eq!(r.status(), status, "{code}");
    let body: Value = r.json().await.unwrap_or_else(|e| panic!("{code}: body is not JSON: {e}"));
    assert_eq!(body["code"], code);
    assert!(body["error"].as_str().is_some_and(|s| !s.is_empty()), "{code}: no message");
}

#[tokio::test]
async fn every_error_status() {
    let node = Node::start(&["--value-bytes-max", "1KiB", "--key-bytes-max", "16B", "--max-ttl", "1h"]);
    let c = client();
    let kv = |path: &str| node.url(&format!("/v1/kv/{path}"));
    use StatusCode as S;
    expect_error(c.put(kv("Bad_NS/k")).body("v").send().await.unwrap(), S::BAD_REQUEST, "bad_namespace")
        .await;
    expect_error(c.put(kv("app/k?ttl=forever")).body("v").send().await.unwrap(), S::BAD_REQUEST, "bad_ttl")
        .await;
    expect_error(c.put(kv("app/k?ttl=0")).body("v").send().await.unwrap(), S::BAD_REQUEST, "bad_ttl").await;
    expect_error(c.put(kv("app/k?ttl=2h")).body("v").send().await.unwrap(), S::BAD_REQUEST, "ttl_too_long")
        .await;
    expect_error(c.put(kv("app/k?tll=1s")).body("v").send().await.unwrap(), S::BAD_REQUEST, "bad_query")
        .await;
    expect_error(
        c.put(kv("app/k")).header("if-match", "\"nonsense\"").body("v").send().await.unwrap(),
        S::BAD_REQUEST,
        "bad_etag",
    )
    .await;
    expect_error(
        c.put(kv("app/k"))
            .header("if-match", "*")
            .header("if-none-match", "*")
            .body("v")
            .send()
            .await
            .unwrap(),
        S::BAD_REQUEST,
        "bad_precondition",
    )
    .await;
    expect_error(c.get(kv("app/absent")).send().await.unwrap(), S::NOT_FOUND, "not_found").await;
    expect_error(c.get(node.url("/v2/nothing")).send().await.unwrap(), S::NOT_FOUND, "not_found").await;
    expect_error(
        c.post(kv("app/k")).body("v").send().await.unwrap(),
        S::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let r = c.put(kv("app/k")).header("if-none-match", "*").body("v").send().await.unwrap();
    assert_eq!(r.status(), S::CREATED);
    expect_error(
        c.put(kv("app/k")).header("if-none-match", "*").body("v").send().await.unwrap(),
        S::PRECONDITION_FAILED,
        "precondition_failed",
    )
    .await;
    expect_error(
        c.put(kv("app/big")).body(vec![b'x'; 1025]).send().await.unwrap(),
        S::PAYLOAD_TOO_LARGE,
        "value_too_large",
    )
    .await;
    expect_error(
        c.put(kv("app/a-key-of-seventeen")).body("v").send().await.unwrap(),
        S::PAYLOAD_TOO_LARGE,
        "key_too_large",
    )
    .await;
    let doc = node.url("/v1/doc/app/d");
    expect_error(
        c.patch(&doc).header("content-type", "text/plain").body("{}").send().await.unwrap(),
        S::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let merge =
        |body: &'static str| c.patch(&doc).header("content-type", "application/merge-patch+json").body(body);
    expect_error(merge("[1]").send().await.unwrap(), S::UNPROCESSABLE_ENTITY, "bad_patch").await;
    expect_error(merge("{not json").send().await.unwrap(), S::BAD_REQUEST, "bad_json").await;
    let deep = format!("{}1{}", "{\"a\":".repeat(70), "}".repeat(70));
    let r =
        c.patch(&doc).header("content-type", "application/merge-patch+json").body(deep).send().await.unwrap();
    expect_error(r, S::UNPROCESSABLE_ENTITY, "bad_patch").await;
    expect_error(c.get(node.url("/v1/doc/app/k")).send().await.unwrap(), S::CONFLICT, "not_a_document").await;
    // After all that, the node still serves.
    assert_eq!(c.get(node.url("/healthz")).send().await.unwrap().status(), S::OK);
}

#[tokio::test]
async fn metrics_and_node_info() {
    let node = Node::start(&["--region", "frankfurt", "--lat", "50.11", "--lon", "8.68", "--node-id", "42"]);
    let c = client();
    c.put(node.url("/v1/kv/app/k")).body("v").send().await.unwrap();
    c.get(node.url("/v1/kv/app/k")).send().await.unwrap();
    c.get(node.url("/v1/kv/app/nope")).send().await.unwrap();
    let text = c.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        "geocache_ops_total{kind=\"put\",status=\"201\"} 1",
        "geocache_ops_total{kind=\"get\",status=\"404\"} 1",
        "geocache_cache_hits_total 1",
        "geocache_cache_misses_total 1",
        "geocache_entries 1",
        "geocache_cache_evictions_total 0",
        "geocache_cache_expirations_total 0",
        "geocache_http_request_duration_seconds_bucket",
        "geocache_memory_bytes ",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let info: Value = c.get(node.url("/v1/node")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["node_id"], "000000000000002a");
    assert_eq!(info["region"], "frankfurt");
    assert_eq!(info["lat"], 50.11);
    assert_eq!(info["entries"], 1);
    assert_eq!(c.get(node.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn counters_add_read_start_from_an_integer_and_refuse_what_is_not_one() {
    let node = Node::start(&[]);
    let c = client();
    let url = node.url("/v1/counter/app/hits");
    let r = c.get(&url).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = c.post(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "an empty body adds 1");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"value": 1}));
    // Twenty concurrent increments of 5 and one of -6.
    let adds: Vec<_> = (0..21)
        .map(|i| {
            let (c, url) = (c.clone(), url.clone());
            let body = if i == 20 { " -6\n" } else { "5" };
            tokio::spawn(async move { c.post(&url).body(body).send().await.unwrap().status() })
        })
        .collect();
    for add in adds {
        assert_eq!(add.await.unwrap(), StatusCode::OK);
    }
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"value": 1 + 100 - 6}));
    // The same counter through /v1/kv, as its decimal text.
    assert_eq!(c.get(node.url("/v1/kv/app/hits")).send().await.unwrap().text().await.unwrap(), "95");
    // An integer written as bytes becomes a counter starting there.
    c.put(node.url("/v1/kv/app/n")).body("41").send().await.unwrap();
    let r = c.post(node.url("/v1/counter/app/n")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"value": 42}));
    // A delete resets it.
    c.delete(node.url("/v1/kv/app/n")).send().await.unwrap();
    let r = c.post(node.url("/v1/counter/app/n")).body("2").send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"value": 2}));
    // Bad input: a clear 4xx with a JSON body.
    let r = c.post(&url).body("1.5").send().await.unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "bad_increment").await;
    let r = c.post(&url).body(i64::MAX.to_string()).send().await.unwrap();
    expect_error(r, StatusCode::CONFLICT, "counter_refused").await;
    c.put(node.url("/v1/kv/app/text")).body("ten").send().await.unwrap();
    let r = c.post(node.url("/v1/counter/app/text")).send().await.unwrap();
    expect_error(r, StatusCode::CONFLICT, "not_a_counter").await;
    let r = c.get(node.url("/v1/counter/app/text")).send().await.unwrap();
    expect_error(r, StatusCode::CONFLICT, "not_a_counter").await;
}

/// deploy/grafana-dashboard.json asks only for metrics a node exports.
#[tokio::test]
async fn the_grafana_dashboard_reads_metrics_the_node_exports() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let node = Node::start(&[]);
    let text = client().get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "a dashboard worth opening");
    let mut asked = std::collections::BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("each panel queries");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            let mut rest = expr;
            while let Some(at) = rest.find("geocache_") {
                let name: String =
                    rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[at + name.len()..];
                asked.insert(name);
            }
        }
    }
    assert!(asked.len() >= 15, "{asked:?}");
    let metrics_source =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs"))
            .unwrap();
    for name in &asked {
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        // A family with labels is exported once its first label set is
        // (a lost CAS, a refused peer): until then it must be registered.
        let registered = [family, family.trim_end_matches("_bytes"), family.trim_end_matches("_seconds")]
            .iter()
            .any(|base| metrics_source.contains(&format!("\"{base}\"")));
        assert!(
            text.contains(&format!("# TYPE {family} ")) || registered,
            "the dashboard asks for {name}, neither exported nor registered:\n{text}"
        );
    }
}

/// The status page and its JSON on a node alone; `GET /` still answers
/// the earlier client, and sends a browser to the page.
#[tokio::test]
async fn the_status_page_and_its_json() {
    let node = Node::start(&["--region", "frankfurt", "--lat", "50.11", "--lon", "8.68"]);
    let c = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    c.put(node.url("/v1/kv/app/k")).body("v").send().await.unwrap();
    let r = c.get(node.url("/")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "success": true }));
    let r = c.get(node.url("/")).header("accept", "text/html,application/xhtml+xml").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui");

    let page = c.get(node.url("/ui")).send().await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let page = page.text().await.unwrap();
    assert!(page.contains("data-nodes=1 data-regions=1"), "{page}");
    assert!(!page.contains("http://") && !page.contains("https://"), "the page loads nothing from elsewhere");
    let live = c.get(node.url("/ui/live")).send().await.unwrap().text().await.unwrap();
    assert!(
        live.starts_with("<section") && page.contains(&live[..200]),
        "the page's live part is the page's"
    );

    let report: Value = c.get(node.url("/v1/status?scope=node")).send().await.unwrap().json().await.unwrap();
    assert_eq!(report["region"], "frankfurt");
    assert_eq!(report["counters"]["writes"], 1);
    assert!(report["settings"].as_array().unwrap().iter().any(|s| s[0] == "max_memory"));
    let view: Value = c.get(node.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["nodes"][0]["state"], "self");
    assert_eq!(view["regions"][0]["name"], "frankfurt");
    let r = c.get(node.url("/v1/status?scope=everything")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "bad_scope");
}
