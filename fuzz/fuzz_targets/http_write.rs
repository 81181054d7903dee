//! Fuzzes the HTTP write path as a client reaches it: `PUT /v1/kv`,
//! `PATCH /v1/doc`, `DELETE /v1/kv` and the earlier interface's
//! `POST /api`, through the node's real router (in process, no socket), on
//! a fresh node per input so that a crash reproduces from its input alone.
//! That covers the key, `?ttl=`, `Geocache-TTL`, `If-Match`,
//! `If-None-Match`, `Geocache-Durability`, `Content-Type`, the merge patch
//! and the legacy `{"value": .., "cas": ..}` body, none of which the
//! router exports as a function of its own.
//!
//! The input is a request in a plain text form, so that seeds can be
//! written by hand and crashes read at a glance:
//!
//! ```text
//! PUT /v1/kv/default/k?ttl=30s
//! Geocache-TTL: 5m
//! If-Match: "1-0101"
//!
//! the body, any bytes
//! ```
//!
//! The node must never answer 5xx other than 504 (a durability it cannot
//! reach without replication), and a write it accepted must read back.
#![no_main]

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use geocache_node::config::Config;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tower::ServiceExt;

/// The routes that write; anything else is not this target's business.
const WRITE_ROUTES: [&str; 3] = ["/v1/kv/", "/v1/doc/", "/api/"];

fuzz_target!(
    init: {
        // Peer documents are loaded under catch_unwind (crdt/src/doc.rs):
        // a panic inside automerge is a refused document there, as in a
        // node. libFuzzer's hook would abort on it first; the default hook
        // lets it unwind, and a panic that escapes still aborts
        // (libfuzzer-sys catches it around this target).
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
    let Some(input) = WriteInput::parse(data) else { return };
    let router = geocache_node::http::router(geocache_node::server::state(Config::default()));
    runtime().block_on(check_write(&router, input));
    }
);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
    })
}

/// A write request decoded from the fuzz input's text form.
struct WriteInput {
    method: Method,
    /// The request target: path and query.
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

impl WriteInput {
    /// `None` for input that is not a write request in the text form.
    fn parse(data: &[u8]) -> Option<WriteInput> {
        let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        };
        let mut lines = head.split(|&b| b == b'\n');
        let request_line = std::str::from_utf8(lines.next()?).ok()?;
        let (method, target) = request_line.split_once(' ')?;
        let method = Method::from_bytes(method.as_bytes()).ok()?;
        if ![Method::PUT, Method::PATCH, Method::POST, Method::DELETE].contains(&method) {
            return None;
        }
        if !WRITE_ROUTES.iter().any(|route| target.starts_with(route)) {
            return None;
        }
        let mut headers = HeaderMap::new();
        // Only the last line can be empty: a head ending in one newline.
        for line in lines.filter(|line| !line.is_empty()) {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = HeaderName::from_bytes(&line[..colon]).ok()?;
            let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii_start()).ok()?;
            // Framing headers belong to the transport, which keeps them
            // consistent with the body; a fuzzed one would only test that
            // this harness lies.
            if ![header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::HOST, header::CONNECTION]
                .contains(&name)
            {
                headers.append(name, value);
            }
        }
        Some(WriteInput { method, target: target.to_owned(), headers, body: Bytes::copy_from_slice(body) })
    }
}

async fn check_write(router: &Router, input: WriteInput) {
    let mut request = Request::builder().method(input.method.clone()).uri(input.target.as_str());
    for (name, value) in &input.headers {
        request = request.header(name, value);
    }
    // An unparseable request target never reaches a server.
    let Ok(request) = request.body(Body::from(input.body.clone())) else { return };
    let (status, headers, body) = send(router, request).await;
    assert!(
        !status.is_server_error() || status == StatusCode::GATEWAY_TIMEOUT,
        "{} {} answered {status}: {}",
        input.method,
        input.target,
        String::from_utf8_lossy(&body)
    );
    if !status.is_success() {
        return;
    }
    let path = input.target.split('?').next().unwrap_or_default();
    let is_kv = path.starts_with("/v1/kv/");
    let expires = headers.contains_key(header::CACHE_CONTROL);
    match input.method {
        Method::PUT if is_kv && !expires => {
            let (read_status, _, read_body) = get(router, path).await;
            assert_eq!(read_status, StatusCode::OK, "PUT {path} answered {status} but does not read back");
            assert_eq!(read_body, input.body, "PUT {path} reads back other bytes");
        }
        Method::DELETE if is_kv => {
            let (read_status, _, _) = get(router, path).await;
            assert_eq!(read_status, StatusCode::NOT_FOUND, "DELETE {path} answered {status} but still reads");
        }
        Method::PATCH if !expires => {
            let (read_status, _, read_body) = get(router, path).await;
            assert_eq!(read_status, StatusCode::OK, "PATCH {path} answered {status} but does not read back");
            assert_eq!(json(&read_body), json(&body), "PATCH {path} reads back another document");
        }
        Method::POST => {
            let (read_status, _, read_body) = get(router, path).await;
            assert_eq!(read_status, StatusCode::OK, "POST {path} answered {status} but does not read back");
            let (written, read) = (json(&body), json(&read_body));
            assert_eq!(read["value"], written["value"], "POST {path} reads back another value");
            assert_eq!(read["cas"], written["cas"], "POST {path} reads back another cas");
        }
        _ => {}
    }
}

async fn get(router: &Router, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    let request = Request::get(path).body(Body::empty()).expect("the path of an accepted request is valid");
    send(router, request).await
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let response = router.clone().oneshot(request).await.expect("the router is infallible");
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.expect("an in-memory body reads");
    (parts.status, parts.headers, body)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("a successful answer is JSON")
}
