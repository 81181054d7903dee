//! Once replication has stopped (its task panicked), the node says so:
//! `/healthz` and `/readyz` answer 503 naming why, and writes are refused
//! with 503 instead of being acknowledged and never replicated. Reads go
//! on.

use geocache_node::config::{Config, ConfigLayer};
use reqwest::StatusCode;

#[tokio::test]
async fn a_node_whose_replication_stopped_is_unready_and_takes_no_writes() {
    let config = Config::resolve(ConfigLayer::default(), ConfigLayer::default()).unwrap();
    let state = geocache_node::server::state(config);
    let health = state.replication_health.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, geocache_node::http::router(state)).await });
    let c = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}{p}");

    assert_eq!(c.put(url("/v1/kv/t/k")).body("v").send().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(c.get(url("/readyz")).send().await.unwrap().status(), StatusCode::OK);

    health.fail("replication stopped: the core broke".into());
    for path in ["/readyz", "/healthz"] {
        let r = c.get(url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "replication_stopped");
        assert!(
            !body["error"].as_str().unwrap().contains("the core broke"),
            "open probes keep the reason to the log"
        );
    }
    let r = c.put(url("/v1/kv/t/k2")).body("v").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        c.get(url("/v1/kv/t/k2")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "not applied"
    );
    assert_eq!(c.get(url("/v1/kv/t/k")).send().await.unwrap().status(), StatusCode::OK, "reads go on");
}
