//! `GET /v1/closest?lat=&lon=[&by=rtt]`: the live node a client at a
//! position should use.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, NodeState};
use crate::locality::{self, Candidate, Position, RankBy, Ranked};

/// The query of `/v1/closest`.
#[derive(Debug, Deserialize)]
pub struct ClosestQuery {
    lat: Option<String>,
    lon: Option<String>,
    by: Option<String>,
}

/// The live nodes this node sees, itself first: members suspected of having
/// failed are left out, and members declared down are no longer members.
pub(super) fn candidates(state: &NodeState) -> Vec<Candidate> {
    let c = &state.config;
    let mut out = vec![Candidate {
        origin: state.store.node().to_string(),
        region: c.region.clone(),
        lat: c.lat,
        lon: c.lon,
        http: state.http,
        rtt_ms: Some(0),
    }];
    if let Some(cluster) = &state.cluster {
        out.extend(cluster.members().into_iter().filter(|m| m.state == "up").map(|m| Candidate {
            origin: m.origin,
            region: m.region,
            lat: m.lat,
            lon: m.lon,
            http: m.http,
            rtt_ms: m.rtt_ms,
        }));
    }
    out
}

/// The live nodes ranked for a client at `lat`/`lon`, closest first.
pub(super) fn ranked(state: &NodeState, lat: &str, lon: &str, by: RankBy) -> Result<Vec<Ranked>, ApiError> {
    let from = Position::parse(lat, lon).map_err(|e| ApiError::bad_request("bad_position", e.to_string()))?;
    Ok(locality::rank(candidates(state), from, by))
}

/// `GET /v1/closest`: the closest live node and every candidate in order.
pub async fn closest(
    State(state): State<NodeState>,
    query: Result<Query<ClosestQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let (Some(lat), Some(lon)) = (q.lat, q.lon) else {
        return Err(ApiError::bad_request("bad_position", "give both lat and lon, in degrees"));
    };
    let by = match q.by.as_deref() {
        None => RankBy::Distance,
        Some(raw) => RankBy::parse(raw).ok_or_else(|| {
            ApiError::bad_request("bad_rank", format!("by must be distance or rtt, got {raw:?}"))
        })?,
    };
    let ranked = ranked(&state, &lat, &lon, by)?;
    // The closest node's fields at the top level, then every candidate in
    // order for a client that wants somewhere to fail over to. The answering
    // node is always a candidate, so the list is never empty.
    let mut body = match ranked.first().map(serde_json::to_value) {
        Some(Ok(serde_json::Value::Object(map))) => map,
        _ => serde_json::Map::new(),
    };
    body.insert("by".into(), json!(by));
    body.insert("candidates".into(), json!(ranked));
    Ok(Json(serde_json::Value::Object(body)))
}
