//! `/v1/doc/{ns}/{key}`: JSON documents that merge field by field.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::kv::{add_conflict_header, register_headers};
use super::request::{self, KeyQuery};
use super::{body_error, write_path_error, ApiError, NodeState};
use crate::store::{Write, WriteOp};

/// `PATCH` with a JSON merge patch (RFC 7396). Without a TTL the document
/// keeps its expiry (a new one gets the namespace default).
pub async fn patch(
    State(state): State<NodeState>,
    Path((ns, key)): Path<(String, String)>,
    q: Result<Query<KeyQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request::WriteRequest { ns, key, ttl_ms, condition, durability, consistency } =
        request::write_request(&state, &ns, &key, q, &headers)?;
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = media.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/merge-patch+json")
        && !media.eq_ignore_ascii_case("application/json")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the patch as Content-Type: application/merge-patch+json",
        ));
    }
    let body = body.map_err(|e| body_error(e, state.config.value_bytes_max.as_u64()))?;
    let patch: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_json", format!("the body is not JSON: {e}")))?;
    let ttl = state.ttl_policy(&ns).keep(ttl_ms);
    let write = Write { key, op: WriteOp::Patch(patch), ttl, condition };
    let outcome = state.write_as(write, durability, consistency).await.map_err(write_path_error)?;
    let status = if outcome.previous.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    let entry = &outcome.entry;
    let json = entry.doc().map(|d| d.to_json()).unwrap_or_default();
    Ok((status, register_headers(entry, state.store.now_ms()), Json(json)).into_response())
}

/// `GET`: the document as JSON; 409 when the key holds bytes.
pub async fn get(
    State(state): State<NodeState>,
    Path((ns, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (_, key) = request::key(&state, &ns, &key)?;
    state.fill_if_missing(&key).await;
    let register =
        state.store.get(&key).ok_or_else(|| ApiError::not_found(format!("no document for {key}")))?;
    let doc = register.doc().ok_or_else(|| {
        ApiError::new(StatusCode::CONFLICT, "not_a_document", format!("{key} holds bytes; read it at /v1/kv"))
    })?;
    let mut out = register_headers(&register, state.store.now_ms());
    add_conflict_header(&state, &key, &mut out);
    Ok((StatusCode::OK, out, Json(doc.to_json())).into_response())
}
