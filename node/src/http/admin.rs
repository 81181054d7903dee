//! Health, readiness, metrics, node info, and the JSON 404 and 405.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiError, NodeState};

/// `GET /healthz`: the process is up and replicating; 503 once
/// replication stopped, so an orchestrator restarts the node.
pub async fn healthz(State(state): State<NodeState>) -> Response {
    match state.replication_health.failure() {
        None => Json(json!({ "status": "ok" })).into_response(),
        Some(_) => failed(),
    }
}

/// `GET /readyz`: the node serves requests; 503 once replication stopped.
/// Not ready either while the data dir is loading, or once it failed.
pub async fn readyz(State(state): State<NodeState>) -> Response {
    if state.replication_health.failure().is_some() {
        return failed();
    }
    if state.store.disk().is_some_and(|d| d.failure().is_some()) {
        let error = "the data dir failed a write; the reason is in the node's log; restart the node";
        let body = json!({ "status": "failed", "error": error, "code": "disk_failed" });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    if state.loading.load(std::sync::atomic::Ordering::Acquire) {
        let body = json!({ "status": "loading", "error": "loading the data dir", "code": "loading" });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({ "status": "ready" })).into_response()
}

/// The probes are open to anyone, so they say what stopped, not the panic
/// message (which is in the node's log).
fn failed() -> Response {
    let error = "replication stopped; the reason is in the node's log; restart the node";
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "failed", "error": error, "code": "replication_stopped" })),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<NodeState>) -> Response {
    state.store.run_pending_tasks();
    let members = state.cluster.as_ref().map(crate::cluster::Cluster::members).unwrap_or_default();
    let body = state.metrics.render(&state.store, &members);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
        .into_response()
}

/// `GET /v1/node`: who this node is and what it holds.
pub async fn node(State(state): State<NodeState>) -> Json<serde_json::Value> {
    state.store.run_pending_tasks();
    let c = &state.config;
    Json(json!({
        "node_id": geocache_crdt::NodeId(c.node_id).to_string(),
        "origin": state.store.node().to_string(),
        "incarnation": state.incarnation,
        "clock_ms": state.store.clock().ms(),
        "region": c.region,
        "lat": c.lat,
        "lon": c.lon,
        "http": c.http.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "entries": state.store.entry_count(),
        "bytes": state.store.weighted_size_bytes(),
        "max_memory_bytes": c.max_memory.as_u64(),
        "data_dir": state.store.disk().map(|d| json!({
            "dir": d.dir().display().to_string(),
            "fsync": d.policy().to_string(),
            "disk_bytes": d.disk_bytes(),
            "loading": state.loading.load(std::sync::atomic::Ordering::Acquire),
        })),
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
    // The node id is configured and lasts across restarts; the origin is
    // this life's id, under which it writes and gossips.
    let origin = state.store.node().to_string();
    let node_id = geocache_crdt::NodeId(state.config.node_id).to_string();
    match &state.cluster {
        Some(cluster) => {
            let view = cluster.view();
            // Sidecar interest (`gossip/src/interest.rs`): deltas sent or
            // taken with their body left out.
            let omitted = json!({
                "sent": view.interest.omitted_sent,
                "applied": view.interest.omitted_applied,
                "held_dropped": view.interest.omitted_held_dropped,
                "refused": view.interest.omitted_refused,
                "overflows": view.interest.overflows,
            });
            Json(json!({
                "omitted": omitted,
                "node_id": node_id,
                "origin": origin,
                "me": origin,
                "region": state.config.region,
                "kind": if state.is_sidecar() { "sidecar" } else { "full" },
                "replicating": true,
                "members": view.members,
                "watermarks": view.watermarks,
                "stats": {
                    "applied": view.stats.applied,
                    "duplicates": view.stats.duplicates,
                    "unappliable": view.stats.unappliable,
                    "dropped": view.stats.dropped,
                    "relay_resends": view.stats.relay_resends,
                    "unreached_resends": view.stats.unreached_resends,
                    "repairs_sent": view.stats.repairs_sent,
                    "repairs_merged": view.stats.repairs_merged,
                    "repairs_dropped": view.stats.repairs_dropped,
                    "refused_frames": view.stats.refused_frames,
                    "sync_hints": view.stats.sync_hints,
                    "sync_truncated": view.stats.sync_truncated,
                    "watermark_jumps": view.stats.watermark_jumps,
                    "origins_refused": view.stats.origins_refused,
                    "answers_dropped": view.answers_dropped,
                    "transfers_received": view.transfers.received_whole,
                    "transfers_sent": view.transfers.sent_started,
                    "transfer_resumes": view.transfers.resumes_asked,
                    "transfers_abandoned": view.transfers.abandoned,
                    "transfer_stray_chunks": view.transfers.stray_chunks,
                    "not_stored": view.stats.not_stored,
                    "fills_asked": view.fills.asked,
                    "fills_found": view.fills.found,
                    "fills_absent": view.fills.absent,
                    "fills_behind": view.fills.behind,
                    "fills_timed_out": view.fills.timed_out,
                    "fills_no_full_node": view.fills.no_full_node,
                    "fills_busy": view.fills.refused_busy,
                    "fills_answered": view.fills.answered,
                },
                "refusals": view
                    .refusals
                    .by_reason()
                    .into_iter()
                    .map(|(reason, n)| (reason.to_string(), json!(n)))
                    .collect::<serde_json::Map<String, serde_json::Value>>(),
            }))
        }
        None => Json(json!({
            "node_id": node_id,
            "origin": origin,
            "me": origin,
            "region": state.config.region,
            "replicating": false,
            "members": [],
        })),
    }
}
