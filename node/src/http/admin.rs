//! Health, readiness, metrics, node info, and the JSON 404 and 405.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiError, NodeState};

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the node serves requests. (With replication, it will also
/// mean "caught up with its peers".)
pub async fn readyz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ready" }))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<NodeState>) -> Response {
    state.store.run_pending_tasks();
    let body = state.metrics.render(&state.store);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
        .into_response()
}

/// `GET /v1/node`: who this node is and what it holds.
pub async fn node(State(state): State<NodeState>) -> Json<serde_json::Value> {
    state.store.run_pending_tasks();
    let c = &state.config;
    Json(json!({
        "id": geocache_crdt::NodeId(c.node_id).to_string(),
        "origin": state.store.node().to_string(),
        "incarnation": state.incarnation,
        "region": c.region,
        "lat": c.lat,
        "lon": c.lon,
        "http": c.http.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "entries": state.store.entry_count(),
        "bytes": state.store.weighted_size_bytes(),
        "max_memory_bytes": c.max_memory.as_u64(),
    }))
}

/// Any other path.
pub async fn no_route() -> ApiError {
    ApiError::not_found("no such route; see docs/API.md")
}

/// A known path with a method it does not serve.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not serve that method",
    )
}

/// `GET /v1/cluster`: members this node sees, their RTT and lag, and its
/// per-origin watermarks.
pub async fn cluster(State(state): State<NodeState>) -> Json<serde_json::Value> {
    let me = state.store.node().to_string();
    match &state.cluster {
        Some(cluster) => {
            let view = cluster.view();
            Json(json!({
                "me": me,
                "region": state.config.region,
                "replicating": true,
                "members": view.members,
                "watermarks": view.watermarks,
                "stats": {
                    "applied": view.stats.applied,
                    "duplicates": view.stats.duplicates,
                    "unappliable": view.stats.unappliable,
                    "dropped": view.stats.dropped,
                    "relay_resends": view.stats.relay_resends,
                },
            }))
        }
        None => Json(json!({ "me": me, "region": state.config.region, "replicating": false, "members": [] })),
    }
}
