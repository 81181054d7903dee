//! The HTTP API (axum): `/v1/kv`, `/v1/doc`, `/v1/counter`, health, metrics and node info.
//!
//! Every error is JSON `{"error": ..., "code": ...}` with the right status,
//! unknown paths and methods included.

mod admin;
mod authorize;
mod closest;
mod counter;
mod doc;
mod error;
mod kv;
mod legacy;
pub mod listener;
mod request;
mod status;
mod strong_refresh;
mod ui;

use axum::extract::{DefaultBodyLimit, MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::RequestExt;
use axum::Router;
use std::time::Instant;

pub use error::ApiError;

use crate::metrics::{KindLabels, OpLabels};
use crate::state::NodeState;
use crate::store::WriteError;
use crate::write_path::WritePathError;

/// The router with every route, the body limit and the metrics layer.
pub fn router(state: NodeState) -> Router {
    // Room for the value plus a little, so the handler can tell "value too
    // large" from the limit itself and answer 413 with a JSON body.
    let body_limit = usize::try_from(state.config.value_bytes_max.as_u64()).unwrap_or(usize::MAX);
    Router::new()
        .route("/v1/kv/{ns}/{*key}", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/v1/doc/{ns}/{*key}", get(doc::get).patch(doc::patch))
        .route("/v1/counter/{ns}/{*key}", get(counter::get).post(counter::add))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        .route("/v1/node", get(admin::node))
        .route("/v1/cluster", get(admin::cluster))
        .route("/v1/closest", get(closest::closest))
        .route("/v1/status", get(status::status))
        .route("/v1/admin/strong/refresh", post(strong_refresh::refresh))
        .route("/ui", get(ui::page))
        .route("/ui/live", get(ui::live))
        .route("/", get(legacy::root))
        .route("/api/closest/{lat}/{lon}", get(legacy::closest))
        .route("/api/{name}/{*key}", get(legacy::get).post(legacy::post))
        .fallback(admin::no_route)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), front_door))
        .with_state(state)
}

/// The one middleware every request passes: credentials, for a request
/// that matched a route (`authorize.rs`), then the handler, then the
/// count and the time of it. One layer rather than one for each: a layer
/// costs a clone of the route's service and a boxed future per request,
/// ~0.8 µs here (`bench/http-get.sh`).
async fn front_door(State(state): State<NodeState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let matched = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    // The kind is known before the request moves on: no copy of the path.
    let kind = kind_of(request.method(), matched);
    let refusal = if matched.is_some() {
        // A matched route has its parameters.
        match request.extract_parts::<RawPathParams>().await {
            Ok(params) => authorize::refusal(&state, &params, &request),
            Err(rejection) => Some(rejection.into_response()),
        }
    } else {
        // The fallback (404) needs no credentials.
        None
    };
    let response = match refusal {
        None => next.run(request).await,
        Some(refused) => refused,
    };
    // What this request wrote reaches the OS before its answer leaves.
    if let Some(disk) = state.store.disk() {
        disk.wait_os().await;
    }
    let status = response.status();
    state.metrics.ops.get_or_create(&OpLabels { kind, status: status.as_u16() }).inc();
    state
        .metrics
        .request_seconds
        .get_or_create(&KindLabels { kind })
        .observe(started.elapsed().as_secs_f64());
    response
}

fn kind_of(method: &Method, path: Option<&str>) -> &'static str {
    let Some(path) = path else { return "admin" };
    if path == "/api/{name}/{*key}" {
        return if method == Method::POST { "api_post" } else { "api_get" };
    }
    if path.starts_with("/v1/counter/") {
        return if method == Method::POST { "counter_add" } else { "counter_get" };
    }
    match (path.starts_with("/v1/kv/"), path.starts_with("/v1/doc/"), method) {
        (true, _, &Method::GET) => "get",
        (true, _, &Method::HEAD) => "head",
        (true, _, &Method::PUT) => "put",
        (true, _, &Method::DELETE) => "delete",
        (_, true, &Method::GET) | (_, true, &Method::HEAD) => "doc_get",
        (_, true, &Method::PATCH) => "patch",
        _ => "admin",
    }
}

/// The HTTP answer to a write that did not succeed as asked: 412 for a
/// condition that does not hold, 422 for an invalid patch, 504 naming the
/// durability reached when the wait timed out.
fn write_path_error(e: WritePathError) -> ApiError {
    match e {
        WritePathError::Refused(WriteError::PreconditionFailed { current }) => ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            match current {
                Some(etag) => format!("the current version is \"{etag}\""),
                None => "the key holds no value".to_string(),
            },
        ),
        WritePathError::Refused(WriteError::Doc(e)) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_patch", e.to_string())
        }
        WritePathError::Refused(e @ (WriteError::NotInteger | WriteError::NotCounter)) => {
            ApiError::new(StatusCode::CONFLICT, "not_a_counter", e.to_string())
        }
        WritePathError::Refused(WriteError::Counter(e)) => {
            ApiError::new(StatusCode::CONFLICT, "counter_refused", e.to_string())
        }
        timeout @ WritePathError::DurabilityTimeout { .. } => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "durability_timeout", timeout.to_string())
        }
        stopped @ WritePathError::ReplicationStopped(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "replication_stopped", stopped.to_string())
        }
        e @ WritePathError::NoDataDir => ApiError::bad_request("no_data_dir", e.to_string()),
        e @ WritePathError::DiskFailed(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "disk_failed", e.to_string())
        }
        e @ WritePathError::StrongUnavailable(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "strong_unavailable", e.to_string())
        }
        e @ WritePathError::StrongUnknown => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "strong_outcome_unknown", e.to_string())
        }
        e @ (WritePathError::StrongUnsupported(_) | WritePathError::StrongNotConfigured) => {
            ApiError::bad_request("not_strong", e.to_string())
        }
    }
}

/// 413 for bodies over the limit, 400 for other body failures.
fn body_error(rejection: axum::extract::rejection::BytesRejection, limit: u64) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!("the body exceeds the {limit}-byte value limit"),
        )
    } else {
        ApiError::bad_request("bad_body", rejection.body_text())
    }
}
