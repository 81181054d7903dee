//! Credentials on the HTTP port: `Authorization: Bearer <secret>`, checked
//! after routing (so the route says what the request needs) and before any
//! handler runs. `Basic` (user name and secret) is taken too, so a browser
//! can open the status page: its 401 asks for Basic, which browsers prompt
//! for.
//!
//! 401 when no credential was sent (or it matches no user) and anonymous
//! clients may not do this; 403 when the credential does not reach this
//! far. While the data dir loads, data requests get 503 `loading`. `/healthz` and `/readyz` stay open for probes.

use axum::extract::{MatchedPath, RawPathParams, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
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
        "/metrics"
        | "/v1/node"
        | "/v1/cluster"
        | "/v1/status"
        | "/v1/admin/strong/refresh"
        | "/ui"
        | "/ui/live" => RouteNeed::Admin,
        "/v1/kv/{ns}/{*key}" | "/v1/doc/{ns}/{*key}" | "/v1/counter/{ns}/{*key}" | "/api/{name}/{*key}" => {
            RouteNeed::Namespace(scope)
        }
        _ => RouteNeed::Any,
    }
}

/// The answer to send instead of running `request` (its path parameters
/// `params`), if it may not go on: 401, 403, 400, or 503 while loading;
/// `None` lets it on, and a request that matched no route needs nothing.
/// Called by the front door (`http/mod.rs`).
pub fn refusal(state: &NodeState, params: &RawPathParams, request: &Request) -> Option<Response> {
    let matched = request.extensions().get::<MatchedPath>()?;
    let need = route_need(matched.as_str(), request.method());
    let page = matched.as_str().starts_with("/ui") && request.method() == Method::GET;
    if matches!(need, RouteNeed::Namespace(_)) && state.loading.load(std::sync::atomic::Ordering::Acquire) {
        let message = "the node is loading its data dir; retry shortly (GET /readyz says when it is ready)";
        return Some(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "loading", message).into_response());
    }
    let access = &state.config.access;
    if !access.is_on() {
        return None;
    }
    let namespace;
    let need = match need {
        RouteNeed::Open => return None,
        RouteNeed::Admin => Need::Admin,
        RouteNeed::Any => Need::Any,
        RouteNeed::Namespace(scope) => {
            let name = params.iter().find(|(k, _)| *k == "ns" || *k == "name").map_or("", |(_, v)| v);
            namespace = match Namespace::new(name) {
                Ok(ns) => ns,
                Err(e) => return Some(ApiError::bad_request("bad_namespace", e.to_string()).into_response()),
            };
            Need::In(&namespace, scope)
        }
    };
    let credential = request.headers().get(header::AUTHORIZATION);
    let user = match credential.map(parse_credential) {
        None => None,
        Some(Some(credential)) => {
            let user = match &credential {
                Credential::Bearer(secret) => access.by_secret(secret),
                // Basic only where a browser needs it: a browser resends it
                // to the whole host, so elsewhere it would let another site
                // write as the user (a cross-site form).
                Credential::Basic { user, secret } if page => access.by_name(user, secret),
                Credential::Basic { .. } => {
                    return Some(unauthorized("Basic credentials are taken on the status page only", page))
                }
            };
            match user {
                Some(u) => Some(u),
                None => {
                    state.metrics.auth_failures.inc();
                    return Some(unauthorized("the credential matches no user", page));
                }
            }
        }
        Some(None) => {
            return Some(unauthorized("the Authorization header must be `Bearer <secret>` (or Basic)", page))
        }
    };
    match access.decide(user.as_deref(), need) {
        Decision::Allowed => None,
        Decision::Unauthenticated => {
            Some(unauthorized("this needs credentials: send `Authorization: Bearer <secret>`", page))
        }
        Decision::Forbidden => {
            let who = user.as_ref().map_or("", |u| u.name.as_str());
            let what = match need {
                Need::In(ns, scope) => format!("{scope} in namespace {ns}"),
                Need::Admin => "the admin scope".to_string(),
                Need::Any | Need::Session(_) => "access".to_string(),
            };
            Some(
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("user {who:?} may not {what}"))
                    .into_response(),
            )
        }
    }
}

/// What an `Authorization` header carries.
#[derive(Debug, PartialEq)]
enum Credential<'a> {
    /// `Bearer <secret>`.
    Bearer(&'a [u8]),
    /// `Basic base64(user:secret)`.
    Basic { user: Vec<u8>, secret: Vec<u8> },
}

/// The credential of the header (the scheme in any case); `None` for any
/// other scheme or an empty one.
fn parse_credential(value: &HeaderValue) -> Option<Credential<'_>> {
    use base64::Engine as _;
    let bytes = value.as_bytes();
    let (scheme, rest) = bytes.split_at(bytes.iter().position(|b| *b == b' ')?);
    let rest = rest.trim_ascii();
    if rest.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(Credential::Bearer(rest));
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        return Some(Credential::Basic {
            user: decoded[..colon].to_vec(),
            secret: decoded[colon + 1..].to_vec(),
        });
    }
    None
}

/// 401; the status page's asks for Basic, so a browser prompts for it.
fn unauthorized(message: &str, page: bool) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    let challenge = if page { "Basic realm=\"geocache status page\", charset=\"UTF-8\"" } else { "Bearer" };
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_take_the_scheme_in_any_case_and_nothing_else() {
        let parse =
            |v: &'static str| parse_credential(&HeaderValue::from_static(v)).map(|c| format!("{c:?}"));
        let shown = |c: Credential<'_>| Some(format!("{c:?}"));
        assert_eq!(parse("Bearer abc"), shown(Credential::Bearer(b"abc")));
        assert_eq!(parse("bearer  abc "), shown(Credential::Bearer(b"abc")));
        assert_eq!(parse("Bearer "), None);
        assert_eq!(parse("Digest abc"), None);
        // "app1:s3:cret": the secret may hold a colon, the user may not.
        let basic = Credential::Basic { user: b"app1".to_vec(), secret: b"s3:cret".to_vec() };
        assert_eq!(parse("Basic YXBwMTpzMzpjcmV0"), shown(basic));
        assert_eq!(parse("Basic not*base64"), None);
        assert_eq!(parse("Basic YWJj"), None, "no colon");
    }
}
