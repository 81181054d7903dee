//! One client cannot make the node allocate without bound: a command
//! naming one large value a hundred thousand times, a pipeline of a
//! hundred such commands, and a client that stalls inside a request. The
//! node answers each with an error, its memory stays within budget + 64
//! MiB, and other clients are served meanwhile.

mod common;

use common::Node;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: the machine may be loaded.
const TIMEOUT: Duration = Duration::from_secs(60);
const BUDGET_MIB: u64 = 64;
const VALUE_BYTES: usize = 1 << 20;

fn command(words: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
        out.extend_from_slice(w);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads replies until `lines` lines have arrived; returns them.
async fn read_lines(s: &mut TcpStream, lines: usize) -> String {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got.iter().filter(|&&b| b == b'\n').count() < lines {
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf)).await.expect("reply in time").expect("read");
        assert!(n > 0, "closed early after {:?}", String::from_utf8_lossy(&got[..got.len().min(200)]));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

async fn ping(addr: &str) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&command(&[b"PING"])).await.expect("write");
    assert_eq!(read_lines(&mut s, 1).await, "+PONG\r\n");
}

#[tokio::test]
async fn a_huge_mget_is_refused_and_moves_neither_memory_nor_other_clients() {
    let budget = format!("{BUDGET_MIB}MiB");
    let node = Node::start(&["--resp", "127.0.0.1:0", "--max-memory", &budget, "--value-bytes-max", "2MiB"]);
    let addr = node.resp.clone().expect("resp address");
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    s.write_all(&command(&[b"SET", b"big", &vec![b'v'; VALUE_BYTES]])).await.expect("write");
    assert_eq!(read_lines(&mut s, 1).await, "+OK\r\n");

    // Within --reply-bytes-max (64 MiB): answered, the value shared, not copied.
    let mut ten: Vec<&[u8]> = vec![b"MGET"];
    ten.extend(std::iter::repeat_n(&b"big"[..], 10));
    s.write_all(&command(&ten)).await.expect("write");
    let mut reply = Vec::new();
    let want = 5 + 10 * (VALUE_BYTES + 12);
    let mut buf = vec![0u8; 64 * 1024];
    while reply.len() < want {
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf)).await.expect("in time").expect("read");
        assert!(n > 0);
        reply.extend_from_slice(&buf[..n]);
    }
    assert!(reply.starts_with(b"*10\r\n$1048576\r\nvvv"));
    assert_eq!(reply.len(), want);

    // 100,000 times the key: refused, and so is each of a pipeline of 100.
    let mut many: Vec<&[u8]> = vec![b"MGET"];
    many.extend(std::iter::repeat_n(&b"big"[..], 100_000));
    let one = command(&many);
    s.write_all(&one).await.expect("write");
    let answer = read_lines(&mut s, 1).await;
    assert!(
        answer.starts_with("-ERR the reply would be") && answer.contains("--reply-bytes-max"),
        "{answer}"
    );
    let rss_before = node.rss_bytes();
    let pipeline: Vec<u8> = one.iter().copied().cycle().take(one.len() * 100).collect();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move { w.write_all(&pipeline).await.expect("write pipeline") });
    let mut rss_max = 0;
    let mut errors = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while errors < 100 {
        let n = tokio::time::timeout(TIMEOUT, r.read(&mut buf)).await.expect("in time").expect("read");
        assert!(n > 0, "the node closed after {errors} errors");
        errors += buf[..n].iter().filter(|&&b| b == b'-').count();
        rss_max = rss_max.max(node.rss_bytes());
        if errors % 20 == 0 {
            ping(&addr).await;
        }
    }
    writer.await.expect("writer");
    let limit = (BUDGET_MIB + 64) << 20;
    eprintln!("RSS before {} MiB, max {} MiB", rss_before >> 20, rss_max >> 20);
    assert!(rss_max < limit, "RSS {rss_max} over budget + 64 MiB");
    ping(&addr).await;
}

#[tokio::test]
async fn a_client_stalling_inside_a_request_is_closed_at_the_header_timeout() {
    let node = Node::start(&["--resp", "127.0.0.1:0", "--header-timeout", "300ms"]);
    let addr = node.resp.clone().expect("resp address");
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nabc").await.expect("write");
    let mut got = Vec::new();
    let closed = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut got)).await.expect("closed in time");
    assert!(closed.is_ok());
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("--header-timeout"), "{got}");
    // An idle client (nothing half sent) is kept: --resp-idle-timeout is off.
    let mut idle = TcpStream::connect(&addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(600)).await;
    idle.write_all(&command(&[b"PING"])).await.expect("write");
    assert_eq!(read_lines(&mut idle, 1).await, "+PONG\r\n");
}

#[tokio::test]
async fn http_connections_past_the_limit_get_a_503_with_a_json_body() {
    let node = Node::start(&["--http-connections-max", "2"]);
    let held: Vec<TcpStream> = vec![
        TcpStream::connect(&node.addr).await.expect("connect"),
        TcpStream::connect(&node.addr).await.expect("connect"),
    ];
    // The accept loop takes the two permits in order; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(&node.addr).await.expect("connect");
    let mut got = Vec::new();
    tokio::time::timeout(TIMEOUT, third.read_to_end(&mut got)).await.expect("answered").expect("read");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("\"code\":\"connection_limit\"") && got.contains("--http-connections-max"), "{got}");
    drop(held);
    let started = std::time::Instant::now();
    loop {
        let r = reqwest::get(node.url("/healthz")).await;
        if r.as_ref().is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "a freed permit is not reused: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_http_client_stalling_in_its_headers_is_closed_at_the_header_timeout() {
    let node = Node::start(&["--header-timeout", "300ms"]);
    let mut s = TcpStream::connect(&node.addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut got)).await.expect("closed in time");
    assert!(started.elapsed() >= Duration::from_millis(250), "closed before the time-out");
    let metrics = reqwest::get(node.url("/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("geocache_http_connections_timed_out_total 1"), "{metrics}");
}

#[tokio::test]
async fn a_slow_download_longer_than_the_header_timeout_is_not_cut() {
    let node = Node::start(&[
        "--header-timeout",
        "300ms",
        "--value-bytes-max",
        "32MiB",
        "--durability-timeout",
        "100ms",
    ]);
    // Far more than the socket buffers take, so the server is still
    // writing when the stall time-out would run out.
    let value = vec![b'd'; 24 << 20];
    let put = reqwest::Client::new().put(node.url("/v1/kv/app/big")).body(value.clone()).send().await;
    assert!(put.expect("put").status().is_success());
    let mut s = TcpStream::connect(&node.addr).await.expect("connect");
    s.write_all(b"GET /v1/kv/app/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
    // Read slowly: the response takes well over the 300 ms stall time-out,
    // but bytes keep moving, so the connection stays.
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf)).await.expect("in time").expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() > Duration::from_millis(600),
        "the download was not slow: {:?}",
        started.elapsed()
    );
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got[..got.len().min(100)]));
    assert!(
        got.ends_with(&value[value.len() - 1024..]) && got.len() > value.len(),
        "cut after {} bytes",
        got.len()
    );
}
