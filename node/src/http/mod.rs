//! The HTTP API (axum): `/v1/kv`, `/v1/doc`, health, metrics and node info.
//!
//! Every error is JSON `{"error": ..., "code": ...}` with the right status,
//! unknown paths and methods included.

mod admin;
mod closest;
mod doc;
mod error;
mod kv;
mod legacy;
pub mod listener;
mod request;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use error::ApiError;

use crate::cluster::{Cluster, Durability};
use crate::config::Config;
use crate::metrics::{KindLabels, Metrics, OpLabels};
use crate::store::Store;
use crate::store::WriteOutcome;

/// What every handler shares: one `Arc`, because axum clones the state for
/// every request and a struct of `Arc`s cost an atomic increment and
/// decrement per field (perf: 4 % of an HTTP GET). Fields read through
/// `Deref`; set up before serving through `DerefMut` (`Arc::make_mut`,
/// which copies only if the state is already shared).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    /// The state from its parts.
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

impl std::ops::DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut AppParts {
        Arc::make_mut(&mut self.0)
    }
}

/// The parts of [`AppState`].
#[derive(Clone)]
pub struct AppParts {
    /// The node's entries.
    pub store: Arc<Store>,
    /// The resolved configuration.
    pub config: Arc<Config>,
    /// The exported metrics.
    pub metrics: Arc<Metrics>,
    /// When the node started, for its uptime.
    pub started: Instant,
    /// Replication, when the node gossips.
    pub cluster: Option<Cluster>,
    /// This life of the node: its start time in unix ms.
    pub incarnation: u64,
    /// The bound HTTP address (the configured one until bound).
    pub http: SocketAddr,
    /// Sends requests of the earlier interface on to another node
    /// (`databaseHost`).
    pub forward: reqwest::Client,
}

/// The router with every route, the body limit and the metrics layer.
pub fn router(state: AppState) -> Router {
    // Room for the value plus a little, so the handler can tell "value too
    // large" from the limit itself and answer 413 with a JSON body.
    let body_limit = usize::try_from(state.config.value_bytes_max.as_u64()).unwrap_or(usize::MAX);
    Router::new()
        .route("/v1/kv/{ns}/{*key}", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/v1/doc/{ns}/{*key}", get(doc::get).patch(doc::patch))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        .route("/v1/node", get(admin::node))
        .route("/v1/cluster", get(admin::cluster))
        .route("/v1/closest", get(closest::closest))
        .route("/", get(legacy::root))
        .route("/api/closest/{lat}/{lon}", get(legacy::closest))
        .route("/api/{name}/{*key}", get(legacy::get).post(legacy::post))
        .fallback(admin::no_route)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Counts every request by kind and status and times it.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // The kind is known before the request moves on: no copy of the path.
    let kind = kind_of(request.method(), request.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
    let response = next.run(request).await;
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

/// Hands a local write to replication and waits for its durability level.
/// Shared by every front end that writes.
/// 504 names the level reached when the wait times out.
async fn replicate(state: &AppState, outcome: &WriteOutcome, level: Durability) -> Result<(), ApiError> {
    let Some(cluster) = &state.cluster else {
        if level == Durability::Local {
            return Ok(());
        }
        return Err(durability_timeout(
            level,
            Durability::Local,
            "this node does not replicate (no --gossip)",
        ));
    };
    let Some(mut progress) = cluster.replicate(outcome, level).await else { return Ok(()) };
    let reached_in_time = {
        let wait = progress.wait_for(|reached| *reached >= level);
        matches!(tokio::time::timeout(state.config.durability_timeout, wait).await, Ok(Ok(_)))
    };
    if reached_in_time {
        return Ok(());
    }
    let reached = *progress.borrow();
    Err(durability_timeout(level, reached, "the write is applied here and replicating"))
}

fn durability_timeout(wanted: Durability, reached: Durability, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "durability_timeout",
        format!("durability {} not reached in time; reached {}: {why}", wanted.as_str(), reached.as_str()),
    )
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
