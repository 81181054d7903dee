//! The earlier `/api` interface, driven with the raw HTTP requests the
//! Python client `geo-cache-client` 0.1.2 sends (through `requests`: a new
//! connection per call, its default headers, `content-type:
//! application/json` on every call, `json.dumps` bodies).

mod common;

use common::Node;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request as `requests` writes it; returns the status and the JSON
/// body.
fn python_client_call(node: &Node, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let (status, text) = raw_call(node, method, path, body.map(python_json_dumps));
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// One HTTP/1.1 request with `requests`' headers and any body text.
fn raw_call(node: &Node, method: &str, path: &str, payload: Option<String>) -> (u16, String) {
    let mut stream = TcpStream::connect(&node.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: python-requests/2.31.0\r\n\
         Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\
         content-type: application/json\r\n",
        node.addr
    );
    let has_body = payload.is_some();
    let payload = payload.unwrap_or_default();
    if has_body {
        request.push_str(&format!("Content-Length: {}\r\n", payload.len()));
    }
    request.push_str("\r\n");
    request.push_str(&payload);
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
            if name.eq_ignore_ascii_case("content-type") {
                assert!(value.contains("application/json"), "not JSON: {line}");
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// `json.dumps` with its default separators (", " and ": ").
fn python_json_dumps(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_json_dumps(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        Value::Array(items) => {
            format!("[{}]", items.iter().map(python_json_dumps).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}

#[test]
fn root_says_success() {
    let node = Node::start(&[]);
    assert_eq!(python_client_call(&node, "GET", "/", None), (200, json!({ "success": true })));
}

#[test]
fn set_then_get_returns_the_value_as_stored_with_its_cas() {
    let node = Node::start(&[]);
    let value = json!({ "name": "Ada", "tags": ["x", 1, 2.5, null], "nested": { "z": 1, "a": true } });
    let (status, stored) =
        python_client_call(&node, "POST", "/api/users/ada", Some(&json!({ "value": value })));
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["key"], "ada");
    assert_eq!(stored["value"], value);
    assert_eq!(stored["rc"], 0);
    let cas = stored["cas"].as_u64().expect("cas is an integer");
    assert!(cas > 0 && cas < (1 << 53), "cas {cas} must be exact in JavaScript");

    let (status, found) = python_client_call(&node, "GET", "/api/users/ada", None);
    assert_eq!(status, 200);
    assert_eq!(found, json!({ "key": "ada", "value": value, "cas": cas, "rc": 0 }));

    // The exact text sent is what comes back: key order and spacing kept.
    let (_, raw) = raw_call(&node, "GET", "/v1/kv/users/ada", None);
    assert!(raw.starts_with("{\"name\": \"Ada\""), "{raw}");

    // Any JSON value: numbers, strings, lists.
    for v in [json!(42), json!("text"), json!([1, 2]), json!(false), json!(0.5)] {
        let (status, _) = python_client_call(&node, "POST", "/api/users/v", Some(&json!({ "value": v })));
        assert_eq!(status, 201);
        assert_eq!(python_client_call(&node, "GET", "/api/users/v", None).1["value"], v);
    }
}

#[test]
fn a_missing_key_is_404_with_rc_13() {
    let node = Node::start(&[]);
    assert_eq!(
        python_client_call(&node, "GET", "/api/users/nobody", None),
        (404, json!({ "key": "nobody", "rc": 13 }))
    );
}

#[test]
fn bad_writes_are_400_with_an_error_body() {
    let node = Node::start(&[]);
    let cases = [
        json!({}),
        json!({ "value": null }),
        json!({ "cas": 1 }),
        json!({ "value": 1, "cas": -1 }),
        json!({ "value": 1, "cas": 9_007_199_254_740_992u64 }),
        json!({ "value": 1, "cas": 1.5 }),
        json!({ "value": 1, "cas": "12" }),
        json!([1, 2]),
    ];
    for body in cases {
        let (status, answer) = python_client_call(&node, "POST", "/api/users/k", Some(&body));
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["key"], "k");
        assert_eq!(answer["rc"], 7, "{body} -> {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{answer}");
    }
    // Not JSON at all.
    assert_eq!(raw_call(&node, "POST", "/api/users/k", Some("{not json".into())).0, 400);
    // Nothing was written by any of them.
    assert_eq!(python_client_call(&node, "GET", "/api/users/k", None).0, 404);
}

#[test]
fn cas_guards_writes() {
    let node = Node::start(&[]);
    let (_, first) = python_client_call(&node, "POST", "/api/c/k", Some(&json!({ "value": 1 })));
    let cas = first["cas"].as_u64().unwrap();
    let (status, second) =
        python_client_call(&node, "POST", "/api/c/k", Some(&json!({ "value": 2, "cas": cas })));
    assert_eq!(status, 201);
    assert_ne!(second["cas"], first["cas"], "a new version has a new cas");
    // The old cas no longer matches.
    let (status, refused) =
        python_client_call(&node, "POST", "/api/c/k", Some(&json!({ "value": 3, "cas": cas })));
    assert_eq!(status, 400);
    assert_eq!(refused["rc"], 12, "{refused}");
    assert_eq!(python_client_call(&node, "GET", "/api/c/k", None).1["value"], 2);
    // cas 0 means unconditional; a cas on a missing key never matches.
    assert_eq!(python_client_call(&node, "POST", "/api/c/k", Some(&json!({ "value": 4, "cas": 0 }))).0, 201);
    assert_eq!(
        python_client_call(&node, "POST", "/api/c/new", Some(&json!({ "value": 1, "cas": cas }))).0,
        400
    );
}

#[test]
fn three_workers_count_to_250_with_cas_retries() {
    const TARGET: u64 = 250;
    let node = Node::start(&[]);
    assert_eq!(python_client_call(&node, "POST", "/api/c/counter", Some(&json!({ "value": 0 }))).0, 201);
    let won = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let mut won = 0u64;
                    loop {
                        let (status, current) = python_client_call(&node, "GET", "/api/c/counter", None);
                        assert_eq!(status, 200);
                        let n = current["value"].as_u64().unwrap();
                        if n >= TARGET {
                            return won;
                        }
                        let body = json!({ "value": n + 1, "cas": current["cas"] });
                        match python_client_call(&node, "POST", "/api/c/counter", Some(&body)) {
                            (201, _) => won += 1,
                            (400, refused) => assert_eq!(refused["rc"], 12, "{refused}"),
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum::<u64>()
    });
    assert_eq!(python_client_call(&node, "GET", "/api/c/counter", None).1["value"], TARGET);
    assert_eq!(won, TARGET, "every successful increment counted once");
}

#[test]
fn closest_without_a_cluster_is_this_node() {
    let node = Node::start_at("127.0.0.71", &["--lat", "45.5", "--lon", "-73.6"]);
    assert_eq!(
        python_client_call(&node, "GET", "/api/closest/48.85/2.35", None),
        (200, json!({ "ip": "127.0.0.71" }))
    );
    let (status, bad) = python_client_call(&node, "GET", "/api/closest/100/2.35", None);
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().contains("lat"), "{bad}");
    let v = python_client_call(&node, "GET", "/v1/closest?lat=48.85&lon=2.35", None).1;
    assert_eq!(v["http"], node.addr.as_str());
    assert_eq!(v["rtt_ms"], 0);
    // Montreal - Paris is about 5,500 km.
    let km = v["distance_km"].as_f64().unwrap();
    assert!((5_300.0..5_700.0).contains(&km), "{km}");
    for bad in ["/v1/closest?lat=1", "/v1/closest?lat=1&lon=x", "/v1/closest?lat=1&lon=1&by=speed"] {
        let (status, answer) = python_client_call(&node, "GET", bad, None);
        assert_eq!(status, 400, "{bad}");
        assert!(answer["error"].is_string());
    }
    // A databaseHost that names no live node.
    let (status, answer) = python_client_call(&node, "GET", "/api/users/k?databaseHost=10.9.9.9", None);
    assert_eq!(status, 400, "{answer}");
}
