//! The earlier HTTP interface, kept byte-compatible for the Python client
//! `geo-cache-client` 0.1.2 that earlier users run: `GET /`,
//! `GET|POST /api/{name}/{key}` and `GET /api/closest/{lat}/{lon}`.
//!
//! Its shapes: values are JSON, returned as they were sent (the exact text
//! is stored); versions are `cas` integers below 2^53; `rc` is the status
//! code of the store that interface first ran on (0 ok, 4 too big,
//! 7 invalid, 12 cas mismatch, 13 not found). `?databaseHost=H` sends the
//! request to the node whose HTTP host or region is `H`.

use crate::strong_register::cas_of;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use geocache_crdt::CAS_TOKEN_MAX;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use std::net::SocketAddr;
use std::time::Duration;

use super::closest::{candidates, ranked};
use super::NodeState;
use crate::cluster::Durability;
use crate::locality::RankBy;
use crate::store::{Condition, Entry, ValueRef, Write, WriteError, WriteOp};
use crate::write_path::WritePathError;

/// `rc` of a success.
const RC_OK: u8 = 0;
/// `rc` of a value over the size limit.
const RC_TOO_BIG: u8 = 4;
/// `rc` of a request that is not valid.
const RC_INVALID: u8 = 7;
/// `rc` of a `cas` that is not the current version's.
const RC_CAS_MISMATCH: u8 = 12;
/// `rc` of a key with no value.
const RC_NOT_FOUND: u8 = 13;
/// How long a read or write sent on to another node (`databaseHost`) may
/// take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The query both `/api/{name}/{key}` methods take.
#[derive(Debug, Deserialize)]
pub struct LegacyQuery {
    #[serde(rename = "databaseHost")]
    database_host: Option<String>,
}

/// The body of a `POST`.
#[derive(Deserialize)]
struct PostBody<'a> {
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    cas: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Found<'a> {
    key: &'a str,
    value: &'a RawValue,
    cas: u64,
    rc: u8,
}

#[derive(Serialize)]
struct Stored<'a> {
    cas: u64,
    key: &'a str,
    value: &'a RawValue,
    rc: u8,
}

/// An error of this interface: its status and `{"key", "rc", "error"}`.
struct LegacyError {
    status: StatusCode,
    key: String,
    rc: u8,
    message: String,
}

impl LegacyError {
    fn invalid(key: &str, message: impl Into<String>) -> LegacyError {
        LegacyError {
            status: StatusCode::BAD_REQUEST,
            key: key.to_owned(),
            rc: RC_INVALID,
            message: message.into(),
        }
    }
}

impl IntoResponse for LegacyError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "key": self.key, "rc": self.rc, "error": self.message }))).into_response()
    }
}

/// `GET /`: the service is up, as the earlier client reads it; a browser
/// (it asks for HTML) is sent to the status page instead.
pub async fn root(headers: axum::http::HeaderMap) -> Response {
    let wants_html = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|t| t.trim().starts_with("text/html")));
    if wants_html {
        return axum::response::Redirect::to("/ui").into_response();
    }
    Json(json!({ "success": true })).into_response()
}

/// `GET /api/closest/{lat}/{lon}`: the host of the closest live node's HTTP
/// address. Clients keep their port and switch host, so every node of a
/// deployment serves HTTP on the same port.
pub async fn closest(State(state): State<NodeState>, Path((lat, lon)): Path<(String, String)>) -> Response {
    match ranked(&state, &lat, &lon, RankBy::Distance) {
        Ok(ranked) => match ranked.first() {
            Some(node) => Json(json!({ "ip": node.candidate.http.ip().to_string() })).into_response(),
            None => {
                (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "no live node" }))).into_response()
            }
        },
        Err(e) => e.into_response(),
    }
}

/// `GET /api/{name}/{key}`: the value and its `cas`.
pub async fn get(
    State(state): State<NodeState>,
    Path((name, key)): Path<(String, String)>,
    query: Result<Query<LegacyQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    match forward_target(&state, &key, query) {
        Err(e) => e.into_response(),
        Ok(Some(to)) => forward(&state, to, reqwest::Method::GET, &name, &key, &headers, None).await,
        Ok(None) => read(&state, &name, &key, &headers).await.unwrap_or_else(IntoResponse::into_response),
    }
}

/// `POST /api/{name}/{key}` with `{"value": any, "cas": optional int}`.
pub async fn post(
    State(state): State<NodeState>,
    Path((name, key)): Path<(String, String)>,
    query: Result<Query<LegacyQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let limit = state.config.value_bytes_max.as_u64();
            return LegacyError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                key,
                rc: RC_TOO_BIG,
                message: format!("the body exceeds the {limit}-byte value limit"),
            }
            .into_response();
        }
        Err(e) => return LegacyError::invalid(&key, e.body_text()).into_response(),
    };
    match forward_target(&state, &key, query) {
        Err(e) => e.into_response(),
        Ok(Some(to)) => forward(&state, to, reqwest::Method::POST, &name, &key, &headers, Some(body)).await,
        Ok(None) => {
            write(&state, &name, &key, &headers, &body).await.unwrap_or_else(IntoResponse::into_response)
        }
    }
}

async fn read(
    state: &NodeState,
    name: &str,
    key: &str,
    headers: &HeaderMap,
) -> Result<Response, LegacyError> {
    let (_, k) = super::request::key(state, name, key).map_err(|e| LegacyError::invalid(key, e.message))?;
    let found = super::kv::read(state, &k, headers).await.map_err(|e| LegacyError {
        status: e.status,
        key: key.to_owned(),
        rc: RC_INVALID,
        message: e.message,
    })?;
    let Some(register) = found else {
        return Ok((StatusCode::NOT_FOUND, Json(json!({ "key": key, "rc": RC_NOT_FOUND }))).into_response());
    };
    let value = json_value(&register);
    let body = Found { key, value: &value, cas: cas_of(&register.vv()), rc: RC_OK };
    Ok(Json(body).into_response())
}

async fn write(
    state: &NodeState,
    name: &str,
    key: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, LegacyError> {
    let (ns, k) = super::request::key(state, name, key).map_err(|e| LegacyError::invalid(key, e.message))?;
    let consistency = super::request::consistency(state, ns.as_str(), headers)
        .map_err(|e| LegacyError::invalid(key, e.message))?;
    // serde reads a struct from a JSON array too; this interface takes
    // objects only.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(LegacyError::invalid(key, "the body must be a JSON object like {\"value\": ...}"));
    }
    let parsed: PostBody<'_> = serde_json::from_slice(body).map_err(|e| {
        LegacyError::invalid(key, format!("the body is not a JSON object like {{\"value\": ...}}: {e}"))
    })?;
    let value = match parsed.value {
        Some(v) if v.get() != "null" => v,
        _ => return Err(LegacyError::invalid(key, "the body has no \"value\" (null is not a value)")),
    };
    let condition = match parsed.cas {
        None | Some(serde_json::Value::Null) => Condition::Always,
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(0) => Condition::Always,
            Some(token) if token <= CAS_TOKEN_MAX => Condition::IfCas(token),
            _ => {
                return Err(LegacyError::invalid(key, format!("cas must be an integer in 0..2^53, got {n}")))
            }
        },
        Some(other) => return Err(LegacyError::invalid(key, format!("cas must be an integer, got {other}"))),
    };
    let ttl = state.ttl_policy(&ns).put(None);
    let op = WriteOp::Put {
        value: Bytes::copy_from_slice(value.get().as_bytes()),
        content_type: Some("application/json".into()),
    };
    // Acknowledged locally, as that interface always was; replication
    // carries the write on.
    let write = Write { key: k, op, ttl, condition };
    let outcome = state.write_as(write, Durability::Local, consistency).await.map_err(|e| match e {
        WritePathError::Refused(WriteError::PreconditionFailed { .. }) => LegacyError {
            status: StatusCode::BAD_REQUEST,
            key: key.to_owned(),
            rc: RC_CAS_MISMATCH,
            message: "cas mismatch: the value changed since that cas was read (or it is gone)".into(),
        },
        stopped @ (WritePathError::ReplicationStopped(_)
        | WritePathError::DiskFailed(_)
        | WritePathError::StrongUnavailable(_)
        | WritePathError::StrongUnknown) => LegacyError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            key: key.to_owned(),
            rc: RC_INVALID,
            message: stopped.to_string(),
        },
        other => LegacyError::invalid(key, other.to_string()),
    })?;
    // The value and `cas` of one version, the one now held: a client's
    // next compare-and-set builds on both. For a strong write found made on
    // a retry after later changes by others, that is a later version than
    // its own, holding its change; echoing the request's value beside that
    // version's `cas` would have the client's next write undo the others'.
    let stored = json_value(&outcome.entry);
    let body = Stored { cas: cas_of(&outcome.entry.vv()), key, value: &stored, rc: RC_OK };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A register's value as JSON text: stored JSON as it was sent; other
/// bytes as a JSON string; a document as its JSON.
fn json_value(register: &Entry) -> Box<RawValue> {
    let text = match register.value() {
        ValueRef::Bytes(b) => match serde_json::from_slice::<&RawValue>(b) {
            Ok(raw) => return raw.to_owned(),
            Err(_) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()).to_string(),
        },
        ValueRef::Doc(d) => d.to_json().to_string(),
        ValueRef::Counter(c) => c.value().to_string(),
    };
    // Both texts are JSON that serde_json itself wrote.
    RawValue::from_string(text).unwrap_or_else(|_| Box::<RawValue>::default())
}

/// Where `databaseHost` sends the request: `None` to serve it here.
fn forward_target(
    state: &NodeState,
    key: &str,
    query: Result<Query<LegacyQuery>, QueryRejection>,
) -> Result<Option<SocketAddr>, LegacyError> {
    let Query(q) = query.map_err(|e| LegacyError::invalid(key, e.body_text()))?;
    let Some(host) = q.database_host.filter(|h| !h.is_empty()) else { return Ok(None) };
    let live = candidates(state);
    let is = |c: &crate::locality::Candidate| {
        c.http.ip().to_string() == host || c.http.to_string() == host || c.region == host
    };
    // This node first: a host naming its own region is served here.
    match live.iter().position(is) {
        Some(0) => Ok(None),
        Some(i) => Ok(Some(live[i].http)),
        None => Err(LegacyError::invalid(key, format!("databaseHost {host:?} names no live node or region"))),
    }
}

/// Sends the request on to the node at `to` and relays its answer, with
/// the client's credential: the node that serves it checks it again.
async fn forward(
    state: &NodeState,
    to: SocketAddr,
    method: reqwest::Method,
    name: &str,
    key: &str,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Response {
    // Nodes with TLS on their client ports would get the request (and the
    // client's credential) in clear from this plain-HTTP client.
    if state.config.tls.is_some() {
        return LegacyError::invalid(
            key,
            "databaseHost forwarding is off on nodes that serve TLS: ask that node directly",
        )
        .into_response();
    }
    let Ok(mut url) = reqwest::Url::parse(&format!("http://{to}/")) else {
        return LegacyError::invalid(key, "bad forward address").into_response();
    };
    if let Ok(mut path) = url.path_segments_mut() {
        path.clear().push("api").push(name).push(key);
    }
    let mut request = state.forward.request(method, url).timeout(FORWARD_TIMEOUT);
    if let Some(credential) = headers.get(header::AUTHORIZATION) {
        request = request.header("authorization", credential.as_bytes());
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => {
            return LegacyError {
                status: StatusCode::BAD_GATEWAY,
                key: key.to_owned(),
                rc: RC_INVALID,
                message: format!("databaseHost {to} did not answer: {e}"),
            }
            .into_response()
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    match answer.bytes().await {
        Ok(bytes) => (status, [("content-type", "application/json")], bytes).into_response(),
        Err(e) => LegacyError {
            status: StatusCode::BAD_GATEWAY,
            key: key.to_owned(),
            rc: RC_INVALID,
            message: format!("databaseHost {to} broke off its answer: {e}"),
        }
        .into_response(),
    }
}
