//! Reading a request: the key, the TTL and the conditions.

use crate::config::Consistency;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use geocache_crdt::{Key, VersionVector};
use serde::Deserialize;
use std::time::Duration;

use super::{ApiError, NodeState};
use crate::cluster::Durability;
use crate::namespace::Namespace;
use crate::store::Condition;

/// The query string of key routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    /// TTL of the write: humantime (`30s`, `5m`, `1h 30m`) or seconds.
    pub ttl: Option<String>,
}

/// The namespace and key of a path, checked against the limits.
pub fn key(state: &NodeState, ns: &str, key: &str) -> Result<(Namespace, Key), ApiError> {
    let ns = Namespace::new(ns).map_err(|e| ApiError::bad_request("bad_namespace", e.to_string()))?;
    let limit = state.config.key_bytes_max.as_u64();
    if key.len() as u64 > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "key_too_large",
            format!("the key is {} bytes; the limit is {limit}", key.len()),
        ));
    }
    let k = Key::new(ns.as_arc().clone(), Bytes::copy_from_slice(key.as_bytes()));
    Ok((ns, k))
}

/// The TTL a write asks for (`?ttl=` wins over `Geocache-TTL`), checked
/// against the namespace's maximum. `None` when the write gives none.
pub fn ttl(
    state: &NodeState,
    ns: &Namespace,
    query: &KeyQuery,
    headers: &HeaderMap,
) -> Result<Option<u64>, ApiError> {
    let raw = match &query.ttl {
        Some(q) => Some(q.clone()),
        None => match headers.get("geocache-ttl") {
            Some(h) => Some(
                h.to_str()
                    .map_err(|_| ApiError::bad_request("bad_ttl", "Geocache-TTL is not ASCII"))?
                    .to_owned(),
            ),
            None => None,
        },
    };
    let Some(raw) = raw else { return Ok(None) };
    let raw = raw.trim();
    let ttl = match raw.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(raw).map_err(|e| {
            ApiError::bad_request("bad_ttl", format!("ttl {raw:?} is not a duration like 30s or 5m: {e}"))
        })?,
    };
    if ttl < Duration::from_millis(1) {
        return Err(ApiError::bad_request("bad_ttl", "ttl must be at least 1ms"));
    }
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let checked = state.ttl_policy(ns).check_ms(ms);
    Ok(Some(checked.map_err(|e| ApiError::bad_request("ttl_too_long", e.to_string()))?))
}

/// The condition of a write from `If-Match` and `If-None-Match`.
pub fn condition(headers: &HeaderMap) -> Result<Condition, ApiError> {
    let if_match = header_str(headers, "if-match")?;
    let if_none_match = header_str(headers, "if-none-match")?;
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request("bad_precondition", "give If-Match or If-None-Match, not both"))
        }
        (Some("*"), None) => Ok(Condition::IfPresent),
        (Some(etag), None) => Ok(Condition::IfMatch(parse_etag(etag)?)),
        (None, Some("*")) => Ok(Condition::IfAbsent),
        (None, Some(_)) => Err(ApiError::bad_request(
            "bad_precondition",
            "on a write, If-None-Match supports only * (add if absent)",
        )),
        (None, None) => Ok(Condition::Always),
    }
}

/// The version an `If-None-Match` on a read names, if any.
pub fn if_none_match(headers: &HeaderMap) -> Result<Option<VersionVector>, ApiError> {
    match header_str(headers, "if-none-match")? {
        Some(etag) => parse_etag(etag).map(Some),
        None => Ok(None),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| ApiError::bad_request("bad_etag", format!("{name} is not ASCII"))),
        None => Ok(None),
    }
}

/// Parses an ETag as HTTP sends it: `"1-…"` (quotes optional).
pub fn parse_etag(raw: &str) -> Result<VersionVector, ApiError> {
    if raw.starts_with("W/") {
        return Err(ApiError::bad_request(
            "bad_etag",
            "weak ETags are not supported; send the ETag as received",
        ));
    }
    let bare = raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(raw);
    VersionVector::parse_etag(bare)
        .map_err(|e| ApiError::bad_request("bad_etag", format!("invalid ETag {raw:?}: {e}")))
}

/// The ETag header value of a version vector.
pub fn etag_header(vv: &VersionVector) -> String {
    format!("\"{}\"", vv.to_etag())
}

/// The durability a write asks for (`Geocache-Durability`), `local` when
/// absent.
pub fn durability(headers: &HeaderMap) -> Result<Durability, ApiError> {
    match headers.get("geocache-durability") {
        None => Ok(Durability::Local),
        Some(v) => v.to_str().ok().and_then(Durability::parse).ok_or_else(|| {
            ApiError::bad_request("bad_durability", "Geocache-Durability must be local, disk, region or all")
        }),
    }
}

/// `Geocache-Consistency: strong|eventual`, else the namespace's setting.
///
/// # Errors
///
/// 400 for another value, or `strong` on a node without acceptors.
pub fn consistency(state: &NodeState, ns: &str, headers: &HeaderMap) -> Result<Consistency, ApiError> {
    let asked = match headers.get("geocache-consistency").map(|v| v.as_bytes()) {
        None => return Ok(state.consistency(ns)),
        Some(b"strong") => Consistency::Strong,
        Some(b"eventual") => Consistency::Eventual,
        Some(_) => {
            return Err(ApiError::bad_request(
                "bad_consistency",
                "Geocache-Consistency must be strong or eventual",
            ))
        }
    };
    if asked == Consistency::Strong && !state.has_strong() {
        return Err(ApiError::bad_request(
            "not_strong",
            "Geocache-Consistency: strong needs --strong-acceptors (and --gossip) on this node",
        ));
    }
    Ok(asked)
}

/// What every write request carries besides its body.
pub struct WriteRequest {
    /// The namespace.
    pub ns: Namespace,
    /// The key.
    pub key: Key,
    /// The TTL asked for, ms.
    pub ttl_ms: Option<u64>,
    /// `If-Match` / `If-None-Match`.
    pub condition: Condition,
    /// `Geocache-Durability`.
    pub durability: Durability,
    /// `Geocache-Consistency`, else the namespace's.
    pub consistency: Consistency,
}

/// Reads and checks the parts every write shares: key, query, TTL,
/// condition and durability.
pub fn write_request(
    state: &NodeState,
    ns: &str,
    key: &str,
    query: Result<axum::extract::Query<KeyQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
) -> Result<WriteRequest, ApiError> {
    let (ns, key) = self::key(state, ns, key)?;
    let query = query.map(|q| q.0).map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let ttl_ms = ttl(state, &ns, &query, headers)?;
    let condition = condition(headers)?;
    let durability = durability(headers)?;
    let consistency = consistency(state, ns.as_str(), headers)?;
    Ok(WriteRequest { ns, key, ttl_ms, condition, durability, consistency })
}
