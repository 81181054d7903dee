//! `/v1/counter/{ns}/{key}`: integers whose increments from every region
//! all count (RESP `INCR` and friends write the same counters).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::kv::register_headers;
use super::request::{self, KeyQuery};
use super::{body_error, write_path_error, ApiError, NodeState};
use crate::store::{Write, WriteOp};
use crate::write::integer_value;

/// `POST` with the increment as a decimal integer in the body (negative
/// to decrement; an empty body adds 1). Answers `{"value": n}` after it.
/// A key holding an integer as bytes becomes a counter starting there.
/// Without a TTL the counter keeps its expiry (a new one gets the
/// namespace default).
pub async fn add(
    State(state): State<NodeState>,
    Path((ns, key)): Path<(String, String)>,
    q: Result<Query<KeyQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request::WriteRequest { ns, key, ttl_ms, condition, durability, consistency } =
        request::write_request(&state, &ns, &key, q, &headers)?;
    let body = body.map_err(|e| body_error(e, state.config.value_bytes_max.as_u64()))?;
    let by = parse_increment(&body)?;
    let ttl = state.ttl_policy(&ns).keep(ttl_ms);
    let write = Write { key, op: WriteOp::Add(by), ttl, condition };
    let outcome = state.write_as(write, durability, consistency).await.map_err(write_path_error)?;
    let status = if outcome.previous.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    let value = integer_value(&outcome.entry).unwrap_or(0);
    Ok((status, register_headers(&outcome.entry, state.store.now_ms()), Json(json!({ "value": value })))
        .into_response())
}

/// `GET`: `{"value": n}`; 404 when absent, 409 when the key holds a
/// document or bytes that are not an integer.
pub async fn get(
    State(state): State<NodeState>,
    Path((ns, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, key) = request::key(&state, &ns, &key)?;
    let entry = super::kv::read(&state, &key, &headers).await?;
    let entry = entry.ok_or_else(|| ApiError::not_found(format!("no counter for {key}")))?;
    let value = integer_value(&entry).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_a_counter",
            format!("{key} holds a value that is not an integer"),
        )
    })?;
    Ok((StatusCode::OK, register_headers(&entry, state.store.now_ms()), Json(json!({ "value": value })))
        .into_response())
}

fn parse_increment(body: &[u8]) -> Result<i64, ApiError> {
    let text = std::str::from_utf8(body).unwrap_or("").trim();
    if text.is_empty() {
        return Ok(1);
    }
    text.parse().map_err(|_| {
        ApiError::bad_request(
            "bad_increment",
            format!(
                "the body must be a signed 64-bit integer in decimal, not {:?}",
                text.chars().take(40).collect::<String>()
            ),
        )
    })
}
