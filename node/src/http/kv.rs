//! `/v1/kv/{ns}/{key}`: opaque values.

use crate::store::{Entry, ValueRef};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::request::{self, KeyQuery};
use super::{body_error, write_path_error, ApiError, NodeState};
use crate::store::{Condition, Ttl, Write, WriteOp};

/// Content types longer than this are refused: the type is stored with
/// every entry.
const CONTENT_TYPE_BYTES_MAX: usize = 255;

/// Headers every answer about a register carries: the ETag and, when it
/// expires, the remaining TTL as `Cache-Control: max-age`.
pub(super) fn register_headers(entry: &Entry, now_ms: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&request::etag_header(&entry.vv())) {
        headers.insert(header::ETAG, v);
    }
    if let Some(at) = entry.expires_at_ms() {
        let secs = at.saturating_sub(now_ms).div_ceil(1_000);
        if let Ok(v) = HeaderValue::from_str(&format!("max-age={secs}")) {
            headers.insert(header::CACHE_CONTROL, v);
        }
    }
    headers
}

/// `PUT`: store the body.
pub async fn put(
    State(state): State<NodeState>,
    Path((ns, key)): Path<(String, String)>,
    q: Result<Query<KeyQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request::WriteRequest { ns, key, ttl_ms, condition, durability, consistency } =
        request::write_request(&state, &ns, &key, q, &headers)?;
    let body = body.map_err(|e| body_error(e, state.config.value_bytes_max.as_u64()))?;
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(v) if v.len() > CONTENT_TYPE_BYTES_MAX => {
            return Err(ApiError::bad_request("bad_content_type", "Content-Type is longer than 255 bytes"))
        }
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("bad_content_type", "Content-Type is not ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    let ttl = state.ttl_policy(&ns).put(ttl_ms);
    // The store copies the body into the entry's own allocation.
    let write = Write { key, op: WriteOp::Put { value: body, content_type }, ttl, condition };
    let outcome = state.write_as(write, durability, consistency).await.map_err(write_path_error)?;
    let status = if outcome.previous.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    let entry = &outcome.entry;
    let headers = register_headers(entry, state.store.now_ms());
    let body = json!({ "etag": entry.vv().to_etag(), "expires_at_ms": entry.expires_at_ms() });
    Ok((status, headers, Json(body)).into_response())
}

/// `GET` and `HEAD`: the value as stored.
/// `X-Geocache-Conflict: lost-cas; etag="..."` when this node's last
/// compare-and-set of `key` succeeded and then lost to a concurrent write
/// made in another region (last-writer-wins kept that one; docs/API.md).
pub fn add_conflict_header(state: &NodeState, key: &geocache_crdt::Key, out: &mut HeaderMap) {
    if let Some(etag) = state.store.lost_cas(key) {
        if let Ok(v) = HeaderValue::from_str(&format!("lost-cas; etag=\"{etag}\"")) {
            out.insert("x-geocache-conflict", v);
        }
    }
}

pub async fn get(
    State(state): State<NodeState>,
    Path((ns, key)): Path<(String, String)>,
    // The request, not a `HeaderMap`: that extractor clones every header.
    whole: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = whole.into_parts();
    let headers = &parts.headers;
    let (_, key) = request::key(&state, &ns, &key)?;
    let wants_any = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == b"*");
    let cached_version = if wants_any { None } else { request::if_none_match(headers)? };
    let register = read(&state, &key, headers).await?;
    let register = register.ok_or_else(|| ApiError::not_found(format!("no value for {key}")))?;
    let mut out = register_headers(&register, state.store.now_ms());
    add_conflict_header(&state, &key, &mut out);
    if wants_any || cached_version.as_ref() == Some(&register.vv()) {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    // The body shares the entry's memory: no copy of the value.
    let (content_type, body) = match register.value() {
        ValueRef::Bytes(_) => {
            (register.content_type().unwrap_or("application/octet-stream"), register.bytes_value())
        }
        ValueRef::Doc(d) => ("application/json", Bytes::from(d.to_json().to_string())),
        ValueRef::Counter(c) => ("text/plain", Bytes::from(c.value().to_string())),
    };
    if let Ok(v) = HeaderValue::from_str(content_type) {
        out.insert(header::CONTENT_TYPE, v);
    }
    Ok((StatusCode::OK, out, body).into_response())
}

/// The visible entry of `key`: read here (filled first at a sidecar), or,
/// with `Geocache-Consistency: strong`, linearizably through a majority of
/// the strong acceptors (a namespace's `consistency` makes its writes
/// strong; its reads stay local unless asked).
///
/// # Errors
///
/// 400 for a bad header; 503 without a majority.
pub(super) async fn read(
    state: &NodeState,
    key: &geocache_crdt::Key,
    headers: &HeaderMap,
) -> Result<Option<Entry>, ApiError> {
    let strong = headers.get("geocache-consistency").is_some()
        && request::consistency(state, &key.namespace, headers)? == crate::config::Consistency::Strong;
    if strong {
        return state.read_strong(key).await.map_err(write_path_error);
    }
    state.fill_if_missing(key).await;
    Ok(state.store.get(key))
}

/// `DELETE`: write a tombstone. 204 when a value was deleted, 404 when
/// there was none here (the tombstone is written anyway, so the delete
/// still wins over older writes arriving from other regions).
pub async fn delete(
    State(state): State<NodeState>,
    Path((ns, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, key) = request::key(&state, &ns, &key)?;
    let condition = request::condition(&headers)?;
    let durability = request::durability(&headers)?;
    let consistency = request::consistency(&state, &key.namespace, &headers)?;
    if condition == Condition::IfAbsent {
        return Err(ApiError::bad_request("bad_precondition", "If-None-Match: * makes no sense on DELETE"));
    }
    let display = key.to_string();
    let write = Write { key, op: WriteOp::Delete, ttl: Ttl::Never, condition };
    let outcome = state.write_as(write, durability, consistency).await.map_err(write_path_error)?;
    if outcome.previous.is_some() {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("no value for {display}")))
    }
}
