//! `POST /v1/admin/strong/refresh`: the step of changing the strong
//! acceptor set that gives every key's state to the new set.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, NodeState};

/// How many strong reads a refresh runs at once.
const REFRESH_CONCURRENCY: usize = 16;

/// `POST /v1/admin/strong/refresh`: reads every key this node's strong
/// acceptor holds a slot for, linearizably, through the acceptor set this
/// node runs with; each read writes the key's state back at a majority of
/// that set. The step of changing the acceptor set that brings a new
/// acceptor the state of every key (docs/OPERATIONS.md, "Changing the
/// strong acceptors"). Answers `{"keys", "refreshed", "failed"}`; 503 when
/// some key could not be read (run it again).
pub async fn refresh(State(state): State<NodeState>) -> Response {
    let Some(cluster) = state.cluster.clone().filter(|_| state.has_strong()) else {
        return ApiError::bad_request("not_strong", "this node has no --strong-acceptors").into_response();
    };
    let keys = cluster.acceptor_keys().await;
    let total = keys.len();
    let mut failed = 0usize;
    let mut reads = tokio::task::JoinSet::new();
    for key in keys {
        while reads.len() >= REFRESH_CONCURRENCY {
            if reads.join_next().await.is_some_and(|done| !matches!(done, Ok(true))) {
                failed += 1;
            }
        }
        let state = state.clone();
        reads.spawn(async move { state.read_strong(&key).await.is_ok() });
    }
    while let Some(done) = reads.join_next().await {
        if !matches!(done, Ok(true)) {
            failed += 1;
        }
    }
    let status = if failed == 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({ "keys": total, "refreshed": total - failed, "failed": failed });
    (status, Json(body)).into_response()
}
