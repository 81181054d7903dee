//! Hostile bytes against what a node reads from the network: RESP
//! requests, HTTP writes, and gossip messages from peers.
//!
//! These are the fuzz targets `resp_frame`, `http_write` and
//! `wire_message` (`fuzz/fuzz_targets/`) as property tests on stable, so
//! that plain `cargo test` keeps their properties: no input panics or
//! stalls a parser, what decodes round-trips, and the HTTP API never
//! answers a 500 and reads back what it accepted. The inputs are arbitrary
//! bytes, inputs shaped like the real thing, and valid encodings with a few
//! bytes flipped, inserted or deleted.
//!
//! The HTTP target drives the router in process; here it is served on a
//! loopback port instead, since calling the router directly needs `tower`,
//! which is not a dependency of this crate.
//!
//! `GEOCACHE_WRITE_FUZZ_SEEDS=1 cargo test -p geocache-node --test
//! hostile_bytes` rewrites these targets' seed corpus in `fuzz/corpus/`.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use bytes::{Bytes, BytesMut};
use geocache_crdt::codec::{self, WIRE_VERSION};
use geocache_crdt::{Delta, Doc, Dot, Hlc, Key, NodeId, Register, Stamp, Value, VersionVector};
use geocache_gossip::strong::{Ballot, StrongMessage, StrongRefusal, StrongState};
use geocache_gossip::wire::{Message, TransferResume};
use geocache_node::config::Config;
use geocache_node::resp::frame::{parse, FrameLimits};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Enough to find shallow bugs, few enough to stay well under ten seconds
/// per test in a debug build.
const CASES: u32 = 256;
const HOSTILE_BYTES_MAX: usize = 4096;

fn config() -> ProptestConfig {
    ProptestConfig { cases: CASES, ..ProptestConfig::default() }
}

// ---- mutation, shared by every target ----

/// One edit of a valid input.
#[derive(Clone, Debug)]
enum Edit {
    Flip { at: Index, bit: u8 },
    Insert { at: Index, byte: u8 },
    Delete { at: Index },
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert { at, byte }),
        any::<Index>().prop_map(|at| Edit::Delete { at }),
    ];
    prop::collection::vec(edit, 1..6)
}

fn mutated(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        match edit {
            Edit::Flip { at, bit } if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            Edit::Insert { at, byte } => {
                let i = at.index(bytes.len() + 1);
                bytes.insert(i, *byte);
            }
            Edit::Delete { at } if !bytes.is_empty() => {
                bytes.remove(at.index(bytes.len()));
            }
            _ => {}
        }
    }
    bytes
}

fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..HOSTILE_BYTES_MAX)
}

// ---- RESP: the `resp_frame` target ----

/// As the fuzz target: a bulk limit and a request limit far above what
/// these inputs reach, as a node's are.
const LIMITS: FrameLimits = FrameLimits { bulk_bytes_max: 1 << 20, request_bytes_max: 2 << 20 };

/// Takes every request off `data` as a connection does, checking that each
/// consumes bytes (or a client could spin the connection's loop); returns
/// the requests' words.
fn drain_requests(data: &[u8]) -> Vec<Vec<Bytes>> {
    let mut buf = BytesMut::from(data);
    let mut requests = Vec::new();
    loop {
        let before = buf.len();
        match parse(&mut buf, &LIMITS) {
            Ok(Some(request)) => {
                assert!(buf.len() < before, "a request was taken without consuming bytes");
                assert_eq!(request.args_from(0).len(), request.len());
                // The word past the end must be readable too (commands peek).
                let _ = request.arg(request.len());
                requests.push(request.args_from(0).cloned().collect());
            }
            Ok(None) | Err(_) => return requests,
        }
    }
}

fn multibulk(words: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        out.extend_from_slice(word);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn resp_words() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 1..6)
}

/// Bytes made of the pieces RESP is made of, so that headers, lengths and
/// quotes meet in every order; random bytes rarely even start with `*`.
fn resp_soup() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: [&str; 20] = [
        "*",
        "$",
        "\r\n",
        "\r",
        "\n",
        "0",
        "1",
        "3",
        "-1",
        "-",
        "9999999999999999999",
        "1048577",
        "PING",
        "SET",
        " ",
        "\"",
        "'",
        "\\",
        "\\x4",
        "\\x41",
    ];
    prop::collection::vec(any::<Index>(), 0..200)
        .prop_map(|picks| picks.iter().flat_map(|i| i.get(&PIECES).bytes()).collect())
}

const VALID_RESP: [&[u8]; 4] = [
    b"*1\r\n$4\r\nPING\r\n",
    b"*3\r\n$3\r\nSET\r\n$8\r\nuser:420\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$8\r\nuser:420\r\n",
    b"SET k \"a b\\x41\\n\" 'it\\'s'\r\nPING\n",
    b"*0\r\n\r\n*-1\r\n*2\r\n$4\r\nMGET\r\n$0\r\n\r\n",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn resp_parser_survives_arbitrary_bytes(data in hostile_bytes()) {
        drain_requests(&data);
    }

    #[test]
    fn resp_parser_survives_resp_shaped_soup(data in resp_soup()) {
        drain_requests(&data);
    }

    #[test]
    fn resp_parser_survives_mutated_requests(which in any::<Index>(), edits in edits()) {
        drain_requests(&mutated(which.get(&VALID_RESP).to_vec(), &edits));
    }

    #[test]
    fn pipelined_multibulk_requests_parse_back_to_their_words(requests in prop::collection::vec(resp_words(), 1..5)) {
        let pipeline: Vec<u8> = requests.iter().flat_map(|words| multibulk(words)).collect();
        let parsed = drain_requests(&pipeline);
        prop_assert_eq!(parsed.len(), requests.len());
        for (got, sent) in parsed.iter().zip(&requests) {
            prop_assert!(got.iter().map(|b| &b[..]).eq(sent.iter().map(|w| &w[..])), "{:?} != {:?}", got, sent);
        }
    }

    #[test]
    fn plain_inline_commands_parse_back_to_their_words(words in prop::collection::vec("[A-Za-z0-9:_.-]{1,8}", 1..6)) {
        let line = format!("{}\r\n", words.join(" "));
        let parsed = drain_requests(line.as_bytes());
        prop_assert_eq!(parsed.len(), 1);
        prop_assert!(parsed[0].iter().map(|b| &b[..]).eq(words.iter().map(|w| w.as_bytes())));
    }
}

// ---- gossip messages: the `wire_message` target ----

/// What a decoded message must satisfy: the codec sizes it right, and a
/// re-encode decodes to the same message (replicas forward what they got).
fn check_wire_bytes(data: &[u8]) {
    let Ok(message) = codec::decode::<Message>(data) else { return };
    let encoded = codec::encode(&message).expect("a decoded message encodes");
    assert_eq!(codec::encoded_len(&message).expect("a decoded message has a size"), encoded.len());
    let again = codec::decode::<Message>(&encoded).expect("a re-encoded message decodes");
    assert_eq!(again, message, "the message changed in a round trip");
}

fn stamp(ms: u64, node: u64) -> Stamp {
    Stamp::new(Hlc::new(ms, 0), NodeId(node))
}

fn bytes_register(value: &'static [u8], node: u64) -> Arc<Register> {
    let mut vv = VersionVector::new();
    vv.increment(NodeId(node));
    let dot = Dot { origin: NodeId(node), seq: 1 };
    Arc::new(Register::replace(
        Value::Bytes(Bytes::from_static(value)),
        stamp(1_000, node),
        vv,
        dot,
        Some(90_000),
    ))
}

fn valid_messages() -> Vec<Message> {
    let key = Key::new("default", Bytes::from_static(b"user:42"));
    let mut doc = Doc::new();
    doc.apply_merge_patch(&json!({"name": "ada", "langs": ["en", null]}), stamp(2_000, 2))
        .expect("a valid patch");
    let doc_register = Arc::new(Register::replace(
        Value::Doc(doc),
        stamp(2_000, 2),
        VersionVector::new(),
        Dot { origin: NodeId(2), seq: 1 },
        None,
    ));
    let mut edited = (*doc_register).clone();
    if let Value::Doc(doc) = &mut edited.value {
        doc.apply_merge_patch(&json!({"name": null, "n": 1}), stamp(3_000, 2)).expect("a valid patch");
    }
    edited.meta.stamp = stamp(3_000, 2);
    let put = Arc::new(Delta::for_write(NodeId(1), 1, key.clone(), None, &bytes_register(b"hello", 1)));
    let patch = Arc::new(Delta::for_write(NodeId(2), 1, key.clone(), None, &doc_register));
    // Only the automerge changes: what a document edit sends.
    let edit = Arc::new(Delta::for_write(NodeId(2), 2, key.clone(), Some(&doc_register), &Arc::new(edited)));
    vec![
        Message::SyncHint { from: NodeId(3) },
        Message::Acks { from: NodeId(2), applied: vec![(NodeId(1), 1), (NodeId(1), 2)] },
        Message::Deltas {
            from: NodeId(1),
            relay: true,
            ack: true,
            deltas: vec![put.clone(), patch.clone(), Arc::new(put.omitted())],
        },
        Message::Interest {
            from: NodeId(5),
            held: vec![key.clone(), Key::new("other", "k")],
            not_held: vec![Key::new("default", "gone")],
        },
        Message::SyncResponse {
            deltas: vec![patch, edit],
            beyond_backlog: vec![NodeId(4)],
            truncated: true,
            requester_watermark: 7,
        },
        Message::FullTransferRequest {
            from: NodeId(2),
            resume: Some(TransferResume { transfer: 3, next_chunk: 1 }),
        },
        Message::FullTransferChunk {
            from: NodeId(1),
            transfer: 3,
            continues: Some(2),
            index: 1,
            registers: vec![(key, bytes_register(b"v", 1)), (Key::new("default", "doc"), doc_register)],
            last: true,
            watermarks: vec![(NodeId(1), 9)],
            end_watermarks: vec![(NodeId(1), 10), (NodeId(2), 1)],
        },
        Message::Strong {
            from: NodeId(2),
            message: StrongMessage::Accept {
                id: 1 << 20,
                key: Key::new("strong", "counter"),
                ballot: Ballot::new(3, NodeId(2), 1_000),
                state: StrongState {
                    version: 4,
                    value: Some(Bytes::from_static(b"4")),
                    expires_at_ms: None,
                    hlc: geocache_crdt::Hlc::new(1_700_000_000_000, 2),
                    recent: vec![(NodeId(2), 1 << 20)],
                },
                next: Some(Ballot::new(4, NodeId(2), 1_000)),
            },
        },
        Message::Strong {
            from: NodeId(1),
            message: StrongMessage::Refused {
                id: 1 << 20,
                ballot: Ballot::new(3, NodeId(2), 1_000),
                why: StrongRefusal::Promised(Ballot::new(5, NodeId(3), 7)),
            },
        },
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn wire_decoding_survives_arbitrary_bytes(envelope in any::<bool>(), mut data in hostile_bytes()) {
        // Half behind the version byte, so that they reach the decoder.
        if envelope {
            data.insert(0, WIRE_VERSION);
        }
        check_wire_bytes(&data);
    }

    #[test]
    fn wire_decoding_survives_mutated_messages(which in any::<Index>(), edits in edits()) {
        let messages = valid_messages();
        let message = which.get(&messages);
        let encoded = codec::encode(message).expect("a message encodes");
        // The unmutated encoding must pass too, or mutating it proves little.
        prop_assert_eq!(&codec::decode::<Message>(&encoded).expect("a valid message decodes"), message);
        check_wire_bytes(&mutated(encoded, &edits));
    }
}

// ---- HTTP writes: the `http_write` target ----

/// The routes that write; the target ignores other input.
const WRITE_ROUTES: [&str; 3] = ["/v1/kv/", "/v1/doc/", "/api/"];

/// A write request in the fuzz input's text form (as the `http_write`
/// target reads it): a `METHOD TARGET` line, `Name: value` lines, an empty
/// line and the body.
#[derive(Debug)]
struct WriteInput {
    method: Method,
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

impl WriteInput {
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
            // consistent with the body.
            if ![header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::HOST, header::CONNECTION]
                .contains(&name)
            {
                headers.append(name, value);
            }
        }
        Some(WriteInput { method, target: target.to_owned(), headers, body: Bytes::copy_from_slice(body) })
    }
}

/// A node's HTTP API on a loopback port, served from its own runtime.
struct Node {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    client: reqwest::Client,
}

impl Node {
    fn start() -> Node {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let listener =
            runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let router = geocache_node::http::router(geocache_node::server::state(Config::default()));
        runtime.spawn(async move { axum::serve(listener, router).await });
        Node { runtime, addr, client: reqwest::Client::new() }
    }

    fn send(
        &self,
        method: Method,
        target: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> (StatusCode, HeaderMap, Bytes) {
        self.runtime.block_on(async {
            let url = format!("http://{}{target}", self.addr);
            let response = self
                .client
                .request(method, &url)
                .headers(headers.clone())
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("the node did not answer {url}: {e}"));
            let (status, headers) = (response.status(), response.headers().clone());
            let body =
                response.bytes().await.unwrap_or_else(|e| panic!("the node broke off its answer: {e}"));
            (status, headers, body)
        })
    }

    fn get(&self, path: &str) -> (StatusCode, HeaderMap, Bytes) {
        self.send(Method::GET, path, &HeaderMap::new(), Bytes::new())
    }

    /// The `http_write` target's properties: never a 5xx but the 504 of a
    /// durability this node cannot reach, and an accepted write reads back.
    /// Returns the write's status; `None` for a target no client can send.
    fn check_write(&self, input: &WriteInput) -> Option<StatusCode> {
        // The fuzz target skips these too: `Uri` refuses them.
        input.target.parse::<axum::http::Uri>().ok()?;
        let (status, headers, body) =
            self.send(input.method.clone(), &input.target, &input.headers, input.body.clone());
        assert!(
            !status.is_server_error() || status == StatusCode::GATEWAY_TIMEOUT,
            "{} {} answered {status}: {}",
            input.method,
            input.target,
            String::from_utf8_lossy(&body)
        );
        if !status.is_success() {
            return Some(status);
        }
        let path = input.target.split('?').next().unwrap_or_default();
        let is_kv = path.starts_with("/v1/kv/");
        let expires = headers.contains_key(header::CACHE_CONTROL);
        match input.method {
            Method::PUT if is_kv && !expires => {
                let (read_status, _, read_body) = self.get(path);
                assert_eq!(
                    read_status,
                    StatusCode::OK,
                    "PUT {path} answered {status} but does not read back"
                );
                assert_eq!(read_body, input.body, "PUT {path} reads back other bytes");
            }
            Method::DELETE if is_kv => {
                let (read_status, _, _) = self.get(path);
                assert_eq!(
                    read_status,
                    StatusCode::NOT_FOUND,
                    "DELETE {path} answered {status} but still reads"
                );
            }
            Method::PATCH if !expires => {
                let (read_status, _, read_body) = self.get(path);
                assert_eq!(
                    read_status,
                    StatusCode::OK,
                    "PATCH {path} answered {status} but does not read back"
                );
                assert_eq!(json(&read_body), json(&body), "PATCH {path} reads back another document");
            }
            Method::POST => {
                let (read_status, _, read_body) = self.get(path);
                assert_eq!(
                    read_status,
                    StatusCode::OK,
                    "POST {path} answered {status} but does not read back"
                );
                let (written, read) = (json(&body), json(&read_body));
                assert_eq!(read["value"], written["value"], "POST {path} reads back another value");
                assert_eq!(read["cas"], written["cas"], "POST {path} reads back another cas");
            }
            _ => {}
        }
        Some(status)
    }
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("a successful answer is JSON")
}

/// A write request in the text form, from parts a client might send:
/// valid and invalid namespaces, TTLs, ETags, durabilities and bodies.
fn write_text() -> impl Strategy<Value = Vec<u8>> {
    // Mostly a method its route takes, or nearly every case ends at 405.
    let method_and_route = prop_oneof![
        4 => prop::sample::select(vec![
            ("PUT", "/v1/kv/"),
            ("DELETE", "/v1/kv/"),
            ("PATCH", "/v1/doc/"),
            ("POST", "/api/"),
        ]),
        1 => (
            prop::sample::select(vec!["PUT", "PATCH", "POST", "DELETE"]),
            prop::sample::select(vec!["/v1/kv/", "/v1/doc/", "/api/"]),
        ),
    ];
    let namespace = prop_oneof![
        4 => Just("default"),
        1 => prop::sample::select(vec!["a_b-1", "Bad", "x%20y", ""]),
    ];
    let key = "[a-z0-9%/:._é-]{0,12}";
    let query = prop::sample::select(vec![
        "",
        "",
        "?ttl=30s",
        "?ttl=0",
        "?ttl=1h%2030m",
        "?ttl=99999999999999999999",
        "?ttl=-1",
        "?databaseHost=local",
        "?databaseHost=nowhere",
        "?unknown=1",
        "?ttl=1s&ttl=2s",
    ]);
    let content_type = prop::option::of(prop::sample::select(vec![
        "application/merge-patch+json",
        "application/json; charset=utf-8",
        "text/plain",
    ]));
    let header_name = prop::sample::select(vec![
        "Geocache-TTL",
        "If-Match",
        "If-None-Match",
        "Geocache-Durability",
        "Content-Type",
        "Authorization",
    ]);
    let header_value = prop_oneof![
        prop::sample::select(vec![
            "*",
            "\"1-010101\"",
            "1-010101",
            "1-",
            "W/\"1-00\"",
            "\"1-0101\"",
            "30s",
            "1ms",
            "0",
            "local",
            "region",
            "all",
        ])
        .prop_map(String::from),
        "[ -~é]{0,16}",
    ];
    let headers = prop::collection::vec((header_name, header_value), 0..3);
    let body = prop_oneof![
        Just(Vec::new()),
        prop::sample::select(vec![
            r#"{"value":{"a":[1,2]},"cas":0}"#,
            r#"{"value":"x","cas":9007199254740991}"#,
            r#"{"value":null}"#,
            r#"{"value":1,"cas":-1}"#,
            r#"{"name":"ada","n":null,"tags":["x",null]}"#,
            r#"[{"value":1}]"#,
            "{}",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        hostile_bytes(),
    ];
    (method_and_route, namespace, key, query, content_type, headers, body).prop_map(
        |((method, route), namespace, key, query, content_type, headers, body)| {
            let mut text = format!("{method} {route}{namespace}/{key}{query}\n");
            if let Some(media) = content_type {
                text.push_str(&format!("Content-Type: {media}\n"));
            }
            for (name, value) in headers {
                text.push_str(&format!("{name}: {value}\n"));
            }
            text.push('\n');
            let mut bytes = text.into_bytes();
            bytes.extend_from_slice(&body);
            bytes
        },
    )
}

const VALID_WRITES: [&str; 5] = [
    "PUT /v1/kv/default/greeting?ttl=30s\nContent-Type: text/plain\nIf-None-Match: *\n\nhello",
    "PUT /v1/kv/default/user:42\nGeocache-Durability: local\n\n\x00\x01 any bytes",
    "PATCH /v1/doc/default/profile\nContent-Type: application/merge-patch+json\n\n\
     {\"name\":\"ada\",\"langs\":[\"en\"],\"n\":null}",
    "POST /api/default/user:42\n\n{\"value\":{\"a\":[1,2]},\"cas\":0}",
    "DELETE /v1/kv/default/user:42\nIf-Match: *\n",
];

fn run_http(strategy: impl Strategy<Value = Vec<u8>>) {
    let node = Node::start();
    let mut runner = TestRunner::new(config());
    let outcome = runner.run(&strategy, |data| {
        if let Some(input) = WriteInput::parse(&data) {
            node.check_write(&input);
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[test]
fn http_writes_from_client_like_parts_never_fail_the_node() {
    run_http(write_text());
}

#[test]
fn http_writes_survive_mutated_requests() {
    run_http(
        (any::<Index>(), edits())
            .prop_map(|(which, edits)| mutated(which.get(&VALID_WRITES).as_bytes().to_vec(), &edits)),
    );
}

#[test]
fn valid_http_writes_succeed_and_read_back() {
    let node = Node::start();
    for text in VALID_WRITES {
        let input = WriteInput::parse(text.as_bytes()).expect("a valid write in the text form");
        let status = node.check_write(&input).expect("a valid request target");
        assert!(status.is_success(), "{text:?} answered {status}");
    }
}

// ---- the seed corpus ----

/// The fuzz targets' seeds this crate can make: (target, file, bytes).
fn fuzz_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (i, message) in valid_messages().iter().enumerate().skip(1).take(7) {
        seeds.push((
            "wire_message",
            format!("seed-{}-{i}", message.kind()),
            codec::encode(message).expect("encodes"),
        ));
    }
    for (i, request) in VALID_RESP.iter().enumerate() {
        seeds.push(("resp_frame", format!("seed-{i}.resp"), request.to_vec()));
    }
    for (i, write) in VALID_WRITES.iter().enumerate() {
        seeds.push(("http_write", format!("seed-{i}.http"), write.as_bytes().to_vec()));
    }
    seeds
}

fn is_valid_seed(target: &str, data: &[u8]) -> bool {
    match target {
        "wire_message" => codec::decode::<Message>(data).is_ok(),
        "resp_frame" => !drain_requests(data).is_empty(),
        "http_write" => WriteInput::parse(data).is_some(),
        other => panic!("no seeds for {other}"),
    }
}

/// The committed seeds must stay inputs the targets accept, or the fuzzer
/// starts from nothing once the wire format moves on.
#[test]
fn fuzz_seeds_are_valid_inputs() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let write = std::env::var_os("GEOCACHE_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, data) in fuzz_seeds() {
        assert!(is_valid_seed(target, &data), "the {target} seed {name} is not a valid input");
        let path = corpus.join(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().expect("a seed has a directory")).expect("mkdir");
            std::fs::write(&path, &data).expect("write a seed");
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e}; write the seeds with GEOCACHE_WRITE_FUZZ_SEEDS=1", path.display())
        });
        assert!(
            is_valid_seed(target, &committed),
            "{} is no longer a valid input; rewrite the seeds with GEOCACHE_WRITE_FUZZ_SEEDS=1",
            path.display()
        );
    }
}
