//! `GET /v1/status`: this node's report (`?scope=node`), or the cluster
//! assembled from every reachable node's report (`status.rs`), as the
//! status page reads it.

use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::ApiError;
use crate::state::NodeState;
use crate::status::{assemble, ClusterStatus, Counters, MemberStatus, NodeStatus};

/// Most peers asked for their report per view; the rest show from
/// membership alone.
pub const PEERS_ASKED_MAX: usize = 64;
/// How long a peer has to answer: a node cut off or gone shows as such.
pub const PEER_ANSWER_TIMEOUT: Duration = Duration::from_millis(800);
/// Largest report accepted from a peer.
const REPORT_BYTES_MAX: usize = 1 << 20;

/// The query of `/v1/status`.
#[derive(Deserialize)]
pub struct StatusQuery {
    /// `node` for this node's report alone; `cluster` (the default) for
    /// the assembled view.
    scope: Option<String>,
}

/// `GET /v1/status`.
pub async fn status(
    State(state): State<NodeState>,
    Query(q): Query<StatusQuery>,
    headers: HeaderMap,
) -> Response {
    match q.scope.as_deref() {
        Some("node") => Json(own_report(&state)).into_response(),
        None | Some("cluster") => Json(&*cluster_view(&state, &headers).await).into_response(),
        Some(other) => {
            ApiError::bad_request("bad_scope", format!("scope must be node or cluster, not {other:?}"))
                .into_response()
        }
    }
}

/// The cluster as the reports of every reachable node show it; reused for
/// a moment between requests.
pub async fn cluster_view(state: &NodeState, headers: &HeaderMap) -> std::sync::Arc<ClusterStatus> {
    state.status_book.view(assemble_now(state, headers)).await
}

async fn assemble_now(state: &NodeState, headers: &HeaderMap) -> ClusterStatus {
    let own = own_report(state);
    let now = Instant::now();
    // Only members of this node's own membership (whose certificates it
    // checked) are remembered and asked, never addresses another node's
    // report names: the request carries the client's credential.
    state.status_book.saw(own.members.iter().cloned(), now);
    let mut targets = state.status_book.remembered();
    targets.sort_by(|a, b| (&a.region, &a.name).cmp(&(&b.region, &b.name)));
    targets.retain(|m| m.name != own.name);
    // Peers serve HTTPS when this node does; this node does not hold the
    // CA of their client certificates, so it shows them from membership.
    let ask = state.config.tls.is_none();
    let credential = headers.get(header::AUTHORIZATION).cloned();
    let mut asks = tokio::task::JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        if !ask || i >= PEERS_ASKED_MAX {
            break;
        }
        let client = state.forward.clone();
        let credential = credential.clone();
        let http = target.http;
        let name = target.name.clone();
        asks.spawn(async move {
            let report = ask_report(&client, http, credential).await.filter(|r| r.name == name);
            (i, report)
        });
    }
    let mut reports: Vec<Option<NodeStatus>> = vec![None; targets.len()];
    while let Some(done) = asks.join_next().await {
        if let Ok((i, report)) = done {
            reports[i] = report;
        }
    }
    let fetched: Vec<_> = targets.into_iter().zip(reports).collect();
    let mut view = assemble(&own, &fetched);
    for card in &mut view.nodes {
        if let Some(report) = &card.report {
            card.rates = state.status_book.rates(&card.name, report.counters, now);
        }
    }
    view
}

async fn ask_report(
    client: &reqwest::Client,
    http: std::net::SocketAddr,
    credential: Option<axum::http::HeaderValue>,
) -> Option<NodeStatus> {
    let mut request = client.get(format!("http://{http}/v1/status?scope=node")).timeout(PEER_ANSWER_TIMEOUT);
    if let Some(c) = credential {
        request = request.header(reqwest::header::AUTHORIZATION, c.as_bytes());
    }
    let mut response = request.send().await.ok()?;
    if !response.status().is_success()
        || response.content_length().is_some_and(|n| n > REPORT_BYTES_MAX as u64)
    {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > REPORT_BYTES_MAX {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).ok()
}

/// This node's report of itself.
pub fn own_report(state: &NodeState) -> NodeStatus {
    state.store.run_pending_tasks();
    let c = &state.config;
    let stats = state.store.stats();
    let view = state.cluster.as_ref().map(crate::cluster::Cluster::view);
    let members = view
        .as_ref()
        .map(|v| {
            v.members
                .iter()
                .map(|m| MemberStatus {
                    name: m.name.clone(),
                    region: m.region.clone(),
                    state: m.state.to_string(),
                    http: m.http,
                    lat: m.lat,
                    lon: m.lon,
                    rtt_ms: m.rtt_ms,
                    lag: m.lag_ms,
                    behind_writes: m.lag_writes,
                    heard_ms_ago: m.heard_ms_ago,
                })
                .collect()
        })
        .unwrap_or_default();
    NodeStatus {
        name: state.cluster.as_ref().map_or_else(
            || geocache_crdt::NodeId(c.node_id).to_string(),
            |cluster| cluster.name().to_string(),
        ),
        origin: state.store.node().to_string(),
        region: c.region.clone(),
        kind: if state.is_sidecar() { "sidecar" } else { "full" }.into(),
        lat: c.lat,
        lon: c.lon,
        http: state.http,
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: state.started.elapsed().as_secs(),
        counters: Counters {
            writes: state.store.seq(),
            remote_applied: view.as_ref().map_or(0, |v| v.stats.applied),
            hits: stats.hits.get(),
            misses: stats.misses.get(),
            conflicts: stats.conflicts.get(),
            evictions: stats.evictions.get(),
            expirations: stats.expirations.get(),
        },
        entries: state.store.entry_count(),
        memory_bytes: state.store.weighted_size_bytes(),
        max_memory_bytes: c.max_memory.as_u64(),
        members,
        settings: settings(c),
    }
}

/// The settings as `--print-config` shows them (no secret among them),
/// one line each; users by name only.
fn settings(config: &crate::config::Config) -> Vec<(String, String)> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(config) else { return Vec::new() };
    let mut out = Vec::with_capacity(fields.len() + 1);
    for (name, value) in fields {
        let shown = match (name.as_str(), value) {
            ("users", serde_json::Value::Array(users)) => users
                .iter()
                .filter_map(|u| u.get("name").and_then(serde_json::Value::as_str))
                .collect::<Vec<_>>()
                .join(", "),
            (_, serde_json::Value::String(s)) => s,
            (_, other) => other.to_string(),
        };
        out.push((name, shown));
    }
    out.push(("auth".into(), if config.access.is_on() { "on" } else { "off (open)" }.into()));
    out
}
