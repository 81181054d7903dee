//! Credentials on the HTTP port: `Authorization: Bearer <secret>`, checked
//! after routing (so the route says what the request needs) and before any
//! handler runs.
//!
//! 401 when no credential was sent (or it matches no user) and anonymous
//! clients may not do this; 403 when the credential does not reach this
//! far. While the data dir loads, data requests get 503 `loading`. `/healthz` and `/readyz` stay open for probes.

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::auth::{Decision, Need, Scope};
use crate::namespace::Namespace;
use crate::state::NodeState;

/// What a route needs, from its pattern and method (`Open`: the probes).
enum RouteNeed {
    Open,
    Namespace(Scope),
    Admin,
    Any,
}

fn route_need(pattern: &str, method: &Method) -> RouteNeed {
    let reads = method == Method::GET || method == Method::HEAD;
    let scope = if reads { Scope::Read } else { Scope::Write };
    match pattern {
        "/healthz" | "/readyz" => RouteNeed::Open,
        "/metrics" | "/v1/node" | "/v1/cluster" => RouteNeed::Admin,
        "/v1/kv/{ns}/{*key}" | "/v1/doc/{ns}/{*key}" | "/v1/counter/{ns}/{*key}" | "/api/{name}/{*key}" => {
            RouteNeed::Namespace(scope)
        }
        _ => RouteNeed::Any,
    }
}

/// The middleware: lets the request on, or answers 401 / 403 / 400.
pub async fn authorize(
    State(state): State<NodeState>,
    matched: MatchedPath,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    let need = route_need(matched.as_str(), request.method());
    if matches!(need, RouteNeed::Namespace(_)) && state.loading.load(std::sync::atomic::Ordering::Acquire) {
        let message = "the node is loading its data dir; retry shortly (GET /readyz says when it is ready)";
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "loading", message).into_response();
    }
    let access = &state.config.access;
    if !access.is_on() {
        return next.run(request).await;
    }
    let namespace;
    let need = match need {
        RouteNeed::Open => return next.run(request).await,
        RouteNeed::Admin => Need::Admin,
        RouteNeed::Any => Need::Any,
        RouteNeed::Namespace(scope) => {
            let name = params.iter().find(|(k, _)| *k == "ns" || *k == "name").map_or("", |(_, v)| v);
            namespace = match Namespace::new(name) {
                Ok(ns) => ns,
                Err(e) => return ApiError::bad_request("bad_namespace", e.to_string()).into_response(),
            };
            Need::In(&namespace, scope)
        }
    };
    let credential = request.headers().get(header::AUTHORIZATION);
    let user = match credential.map(bearer) {
        None => None,
        Some(Some(secret)) => match access.by_secret(secret) {
            Some(u) => Some(u),
            None => {
                state.metrics.auth_failures.inc();
                return unauthorized("the credential matches no user");
            }
        },
        Some(None) => return unauthorized("the Authorization header must be `Bearer <secret>`"),
    };
    match access.decide(user.as_deref(), need) {
        Decision::Allowed => next.run(request).await,
        Decision::Unauthenticated => {
            unauthorized("this needs credentials: send `Authorization: Bearer <secret>`")
        }
        Decision::Forbidden => {
            let who = user.as_ref().map_or("", |u| u.name.as_str());
            let what = match need {
                Need::In(ns, scope) => format!("{scope} in namespace {ns}"),
                Need::Admin => "the admin scope".to_string(),
                Need::Any | Need::Session(_) => "access".to_string(),
            };
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("user {who:?} may not {what}"))
                .into_response()
        }
    }
}

/// The secret of a `Bearer` credential (the scheme in any case).
fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let bytes = value.as_bytes();
    let scheme = bytes.get(..7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| bytes[7..].trim_ascii()).filter(|s| !s.is_empty())
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_takes_the_scheme_in_any_case_and_nothing_else() {
        assert_eq!(bearer(&HeaderValue::from_static("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&HeaderValue::from_static("bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&HeaderValue::from_static("Basic abc")), None);
        assert_eq!(bearer(&HeaderValue::from_static("Bearer ")), None);
    }
}
