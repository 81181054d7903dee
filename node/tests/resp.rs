//! The RESP2 port, driven by a real Redis client (the `redis` crate) and,
//! for bad input, by raw sockets, against the real binary.

mod common;

use common::{resp_connect as connect, Node};
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: the machine may be loaded.
const TIMEOUT: Duration = Duration::from_secs(30);

fn start(extra: &[&str]) -> (Node, String) {
    let mut args = vec!["--resp", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let node = Node::start(&args);
    let resp = node.resp.clone().expect("the node printed resp=ADDR");
    (node, resp)
}

/// Runs a command given as words.
async fn run<T: redis::FromRedisValue>(
    con: &mut MultiplexedConnection,
    words: &[&str],
) -> Result<T, RedisError> {
    let mut cmd = redis::cmd(words[0]);
    for w in &words[1..] {
        cmd.arg(*w);
    }
    tokio::time::timeout(TIMEOUT, cmd.query_async(con)).await.expect("answer in time")
}

/// Runs a command that must fail; its error as Redis wrote it.
async fn error(con: &mut MultiplexedConnection, words: &[&str]) -> String {
    let e = run::<Value>(con, words).await.expect_err(&format!("{words:?} should fail"));
    format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))
}

async fn ok(con: &mut MultiplexedConnection, words: &[&str]) {
    assert_eq!(run::<String>(con, words).await.unwrap(), "OK", "{words:?}");
}

async fn get(con: &mut MultiplexedConnection, key: &str) -> Option<String> {
    run(con, &["GET", key]).await.unwrap()
}

async fn int(con: &mut MultiplexedConnection, words: &[&str]) -> i64 {
    run(con, words).await.unwrap()
}

/// Sends raw bytes; returns what came back until the node closed the
/// connection or `TIMEOUT`, and whether it closed.
async fn raw(addr: &str, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The node may close before all is written: what it answered still
    // arrives.
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(TIMEOUT, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// Sends raw bytes and reads until `want` replies (lines starting with
/// `+`, `-`, `:`, `$` or `*` at top level are not parsed: callers send
/// commands whose replies are one line each).
async fn raw_lines(s: &mut TcpStream, bytes: &[u8], lines: usize) -> String {
    s.write_all(bytes).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.iter().filter(|&&b| b == b'\n').count() < lines {
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf)).await.expect("reply in time").expect("read");
        assert!(n > 0, "closed early after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn get_set_and_every_set_option() {
    let (_node, addr) = start(&[]);
    let mut c = connect(&addr).await;
    assert_eq!(run::<String>(&mut c, &["PING"]).await.unwrap(), "PONG");
    assert_eq!(run::<String>(&mut c, &["PING", "hi"]).await.unwrap(), "hi");
    assert_eq!(run::<String>(&mut c, &["ECHO", "hello world"]).await.unwrap(), "hello world");
    assert_eq!(get(&mut c, "missing").await, None);
    ok(&mut c, &["SET", "user:42", "Ada"]).await;
    assert_eq!(get(&mut c, "user:42").await.as_deref(), Some("Ada"));
    assert_eq!(get(&mut c, "user").await, None, "a colon is part of the key");

    // NX and XX.
    assert_eq!(run::<Option<String>>(&mut c, &["SET", "user:42", "x", "NX"]).await.unwrap(), None);
    ok(&mut c, &["SET", "fresh", "1", "nx"]).await;
    assert_eq!(run::<Option<String>>(&mut c, &["SET", "absent", "x", "XX"]).await.unwrap(), None);
    assert_eq!(get(&mut c, "absent").await, None);
    ok(&mut c, &["SET", "fresh", "2", "XX"]).await;
    assert_eq!(get(&mut c, "fresh").await.as_deref(), Some("2"));
    // GET: the old value, with or without a condition that holds.
    assert_eq!(
        run::<Option<String>>(&mut c, &["SET", "fresh", "3", "GET"]).await.unwrap().as_deref(),
        Some("2")
    );
    assert_eq!(run::<Option<String>>(&mut c, &["SET", "new", "v", "GET"]).await.unwrap(), None);
    assert_eq!(get(&mut c, "new").await.as_deref(), Some("v"));
    let refused: Option<String> = run(&mut c, &["SET", "fresh", "4", "NX", "GET"]).await.unwrap();
    assert_eq!(refused.as_deref(), Some("3"), "NX GET answers the value that stopped it");
    assert_eq!(get(&mut c, "fresh").await.as_deref(), Some("3"));

    // Expiry options and their TTLs.
    ok(&mut c, &["SET", "ex", "v", "EX", "100"]).await;
    let ttl = int(&mut c, &["TTL", "ex"]).await;
    assert!((99..=100).contains(&ttl), "{ttl}");
    ok(&mut c, &["SET", "px", "v", "PX", "100000"]).await;
    let pttl = int(&mut c, &["PTTL", "px"]).await;
    assert!((90_000..=100_000).contains(&pttl), "{pttl}");
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    ok(&mut c, &["SET", "exat", "v", "EXAT", &(now_s + 200).to_string()]).await;
    let ttl = int(&mut c, &["TTL", "exat"]).await;
    assert!((190..=201).contains(&ttl), "{ttl}");
    ok(&mut c, &["SET", "pxat", "v", "PXAT", &((now_s + 300) * 1000).to_string()]).await;
    let ttl = int(&mut c, &["TTL", "pxat"]).await;
    assert!((290..=301).contains(&ttl), "{ttl}");
    ok(&mut c, &["SET", "ex", "w", "KEEPTTL"]).await;
    let ttl = int(&mut c, &["TTL", "ex"]).await;
    assert!((90..=100).contains(&ttl), "KEEPTTL kept the expiry: {ttl}");
    assert_eq!(get(&mut c, "ex").await.as_deref(), Some("w"));
    ok(&mut c, &["SET", "ex", "x"]).await;
    assert_eq!(int(&mut c, &["TTL", "ex"]).await, -1, "a plain SET clears the expiry");
    ok(&mut c, &["SET", "past", "v"]).await;
    ok(&mut c, &["SET", "past", "v", "PXAT", "1000"]).await;
    assert_eq!(get(&mut c, "past").await, None, "an absolute time already past deletes the key");

    // Redis's errors, and the connection stays usable after each.
    for (words, want) in [
        (&["SET", "k", "v", "NX", "XX"][..], "ERR syntax error"),
        (&["SET", "k", "v", "EX", "10", "PX", "100"], "ERR syntax error"),
        (&["SET", "k", "v", "EX", "10", "KEEPTTL"], "ERR syntax error"),
        (&["SET", "k", "v", "KEEPTTL", "EX", "10"], "ERR syntax error"),
        (&["SET", "k", "v", "EX"], "ERR syntax error"),
        (&["SET", "k", "v", "SOON"], "ERR syntax error"),
        (&["SET", "k", "v", "EX", "0"], "ERR invalid expire time in 'set' command"),
        (&["SET", "k", "v", "PX", "-5"], "ERR invalid expire time in 'set' command"),
        (&["SET", "k", "v", "EX", "9223372036854775807"], "ERR invalid expire time in 'set' command"),
        (&["SET", "k", "v", "EX", "ten"], "ERR value is not an integer or out of range"),
        (&["GET"], "ERR wrong number of arguments for 'get' command"),
        (&["GET", "a", "b"], "ERR wrong number of arguments for 'get' command"),
        (&["SET", "k"], "ERR wrong number of arguments for 'set' command"),
    ] {
        assert_eq!(error(&mut c, words).await, want, "{words:?}");
    }
    assert_eq!(get(&mut c, "k").await, None, "no failed SET wrote");

    ok(&mut c, &["MSET", "a:1", "x", "a:2", "y"]).await;
    let values: Vec<Option<String>> = run(&mut c, &["MGET", "a:1", "nope", "a:2"]).await.unwrap();
    assert_eq!(values, [Some("x".to_string()), None, Some("y".to_string())]);
    assert_eq!(
        error(&mut c, &["MSET", "a", "1", "b"]).await,
        "ERR wrong number of arguments for 'mset' command"
    );
}

#[tokio::test]
async fn del_exists_expire_ttl_persist_and_dbsize() {
    let (_node, addr) = start(&[]);
    let mut c = connect(&addr).await;
    assert_eq!(int(&mut c, &["DBSIZE"]).await, 0);
    ok(&mut c, &["MSET", "a", "1", "b", "2", "c", "3"]).await;
    assert_eq!(int(&mut c, &["EXISTS", "a", "a", "b", "zz"]).await, 3, "a key named twice counts twice");
    assert_eq!(int(&mut c, &["DEL", "a", "b", "zz", "a"]).await, 2);
    assert_eq!(int(&mut c, &["EXISTS", "a", "b"]).await, 0);
    assert_eq!(int(&mut c, &["DBSIZE"]).await, 1, "tombstones are not counted");

    assert_eq!(int(&mut c, &["TTL", "missing"]).await, -2);
    assert_eq!(int(&mut c, &["PTTL", "missing"]).await, -2);
    assert_eq!(int(&mut c, &["TTL", "c"]).await, -1);
    assert_eq!(int(&mut c, &["EXPIRE", "missing", "10"]).await, 0);
    assert_eq!(int(&mut c, &["EXPIRE", "c", "100"]).await, 1);
    assert!((99..=100).contains(&int(&mut c, &["TTL", "c"]).await));
    assert_eq!(get(&mut c, "c").await.as_deref(), Some("3"), "EXPIRE keeps the value");
    assert_eq!(int(&mut c, &["EXPIRE", "c", "50", "GT"]).await, 0);
    assert_eq!(int(&mut c, &["EXPIRE", "c", "50", "LT"]).await, 1);
    assert_eq!(int(&mut c, &["EXPIRE", "c", "500", "NX"]).await, 0);
    assert_eq!(int(&mut c, &["EXPIRE", "c", "200", "XX"]).await, 1);
    assert!((199..=200).contains(&int(&mut c, &["TTL", "c"]).await));
    assert_eq!(int(&mut c, &["PERSIST", "c"]).await, 1);
    assert_eq!(int(&mut c, &["TTL", "c"]).await, -1);
    assert_eq!(int(&mut c, &["PERSIST", "c"]).await, 0);
    assert_eq!(int(&mut c, &["PERSIST", "missing"]).await, 0);
    assert_eq!(int(&mut c, &["EXPIRE", "c", "10", "XX"]).await, 0, "XX needs an expiry");
    assert_eq!(
        error(&mut c, &["EXPIRE", "c", "10", "NX", "XX"]).await,
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        error(&mut c, &["EXPIRE", "c", "10", "GT", "LT"]).await,
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(error(&mut c, &["EXPIRE", "c", "ten"]).await, "ERR value is not an integer or out of range");
    assert_eq!(error(&mut c, &["EXPIRE", "c", "10", "SOON"]).await, "ERR Unsupported option SOON");

    // PEXPIRE: gone once the time passes (polled, not slept).
    assert_eq!(int(&mut c, &["PEXPIRE", "c", "150"]).await, 1);
    let pttl = int(&mut c, &["PTTL", "c"]).await;
    assert!((1..=150).contains(&pttl), "{pttl}");
    let addr2 = addr.clone();
    wait_until("the key to expire", || {
        let addr = addr2.clone();
        async move { get(&mut connect(&addr).await, "c").await.is_none() }
    })
    .await;
    assert_eq!(int(&mut c, &["TTL", "c"]).await, -2);
    assert_eq!(int(&mut c, &["DBSIZE"]).await, 0);

    // A time not in the future deletes the key, as in Redis.
    ok(&mut c, &["SET", "d", "v"]).await;
    assert_eq!(int(&mut c, &["EXPIRE", "d", "0"]).await, 1);
    assert_eq!(get(&mut c, "d").await, None);
}

#[tokio::test]
async fn incr_from_three_connections_adds_up_exactly() {
    let (_node, addr) = start(&[]);
    const PER_CONNECTION: i64 = 300;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&addr).await;
            for _ in 0..PER_CONNECTION {
                int(&mut c, &["INCR", "counter"]).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = connect(&addr).await;
    assert_eq!(get(&mut c, "counter").await.as_deref(), Some("900"));
    assert_eq!(int(&mut c, &["INCRBY", "counter", "100"]).await, 1000);
    assert_eq!(int(&mut c, &["DECRBY", "counter", "1001"]).await, -1);
    assert_eq!(int(&mut c, &["DECR", "counter"]).await, -2);
    assert_eq!(int(&mut c, &["INCR", "new"]).await, 1);
    ok(&mut c, &["SET", "word", "abc"]).await;
    assert_eq!(error(&mut c, &["INCR", "word"]).await, "ERR value is not an integer or out of range");
    assert_eq!(error(&mut c, &["INCRBY", "new", "x"]).await, "ERR value is not an integer or out of range");
    ok(&mut c, &["SET", "big", &i64::MAX.to_string()]).await;
    assert_eq!(error(&mut c, &["INCR", "big"]).await, "ERR increment or decrement would overflow");
    assert_eq!(get(&mut c, "big").await, Some(i64::MAX.to_string()));
    ok(&mut c, &["SET", "ttl", "5", "EX", "100"]).await;
    assert_eq!(int(&mut c, &["INCR", "ttl"]).await, 6);
    assert!((99..=100).contains(&int(&mut c, &["TTL", "ttl"]).await), "INCR keeps the expiry");
}

#[tokio::test]
async fn a_thousand_pipelined_commands_answer_in_order() {
    let (_node, addr) = start(&[]);
    let mut c = connect(&addr).await;
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("SET").arg(format!("p:{i}")).arg(i);
    }
    for i in 0..500 {
        pipe.cmd("GET").arg(format!("p:{i}"));
    }
    let replies: Vec<Value> =
        tokio::time::timeout(TIMEOUT, pipe.query_async(&mut c)).await.expect("in time").expect("pipeline");
    assert_eq!(replies.len(), 1000);
    for (i, v) in replies[500..].iter().enumerate() {
        assert_eq!(redis::from_redis_value::<String>(v.clone()).unwrap(), i.to_string());
    }
    // The same over a raw socket, in one write, inline commands included.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut batch = Vec::new();
    for _ in 0..200 {
        batch.extend_from_slice(b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nPING\r\n");
    }
    let got = raw_lines(&mut s, &batch, 600).await;
    assert_eq!(got, "$2\r\nhi\r\n+PONG\r\n".repeat(200));
}

#[tokio::test]
async fn http_and_resp_read_each_others_writes() {
    let (node, addr) = start(&["--resp-namespace", "app"]);
    let mut c = connect(&addr).await;
    let http = reqwest::Client::builder().timeout(TIMEOUT).build().unwrap();
    ok(&mut c, &["SET", "user:42", "from resp"]).await;
    let r = http.get(node.url("/v1/kv/app/user:42")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/octet-stream", "stored without a content type");
    assert_eq!(r.text().await.unwrap(), "from resp");
    let r = http.get(node.url("/v1/kv/default/user:42")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND, "RESP writes only its namespace");

    let r = http.put(node.url("/v1/kv/app/session:7")).body("from http").send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    assert_eq!(get(&mut c, "session:7").await.as_deref(), Some("from http"));
    let r = http.put(node.url("/v1/kv/app/n?ttl=100s")).body("41").send().await.unwrap();
    assert!(r.status().is_success());
    assert_eq!(int(&mut c, &["INCR", "n"]).await, 42);
    assert_eq!(http.get(node.url("/v1/kv/app/n")).send().await.unwrap().text().await.unwrap(), "42");
    assert_eq!(int(&mut c, &["DEL", "session:7"]).await, 1);
    let r = http.get(node.url("/v1/kv/app/session:7")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);

    let metrics = http.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("geocache_resp_commands_total{command=\"incr\"} 1"), "{metrics}");
}

#[tokio::test]
async fn server_commands_that_clients_and_tools_send() {
    let (_node, addr) = start(&[]);
    let mut c = connect(&addr).await;
    let info: String = run(&mut c, &["INFO"]).await.unwrap();
    for field in
        ["redis_version:", "role:master", "connected_slaves:0", "total_commands_processed:", "tcp_port:"]
    {
        assert!(info.contains(field), "{field} in {info}");
    }
    let replication: String = run(&mut c, &["INFO", "replication"]).await.unwrap();
    assert!(replication.starts_with("# Replication\r\nrole:master"), "{replication}");
    assert!(!replication.contains("redis_version"));
    assert!(run::<String>(&mut c, &["INFO", "nosuch"]).await.unwrap().is_empty());
    assert!(int(&mut c, &["COMMAND", "COUNT"]).await > 20);
    assert_eq!(run::<Vec<Value>>(&mut c, &["COMMAND", "DOCS"]).await.unwrap(), []);
    assert_eq!(run::<Vec<Value>>(&mut c, &["COMMAND"]).await.unwrap(), []);
    ok(&mut c, &["SELECT", "0"]).await;
    assert_eq!(error(&mut c, &["SELECT", "1"]).await, "ERR DB index is out of range");
    assert_eq!(run::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]).await.unwrap(), None);
    ok(&mut c, &["CLIENT", "SETNAME", "tester"]).await;
    assert_eq!(
        run::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]).await.unwrap().as_deref(),
        Some("tester")
    );
    ok(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", "x"]).await;
    let save: Vec<String> = run(&mut c, &["CONFIG", "GET", "save"]).await.unwrap();
    assert_eq!(save, ["save", ""]);
    assert_eq!(
        run::<Vec<String>>(&mut c, &["CONFIG", "GET", "maxmemory"]).await.unwrap(),
        Vec::<String>::new()
    );
    let hello: Vec<Value> = run(&mut c, &["HELLO", "2"]).await.unwrap();
    assert_eq!(hello.len(), 14);
    assert_eq!(error(&mut c, &["HELLO", "3"]).await, "NOPROTO unsupported protocol version");
    assert_eq!(
        error(&mut c, &["FLY", "to", "the moon"]).await,
        "ERR unknown command 'FLY', with args beginning with: 'to' 'the moon' "
    );
    assert_eq!(run::<String>(&mut c, &["PING"]).await.unwrap(), "PONG", "still usable");

    let mut s = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(raw_lines(&mut s, b"QUIT\r\n", 1).await, "+OK\r\n");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut rest)).await.expect("closed in time").unwrap();
    assert_eq!(n, 0, "QUIT closes");
}

#[tokio::test]
async fn bad_input_is_refused_and_never_hurts_other_clients() {
    let (_node, addr) = start(&[]);
    let mut bystander = connect(&addr).await;
    ok(&mut bystander, &["SET", "k", "v"]).await;
    for (input, want) in [
        (&b"*1\r\n:5\r\n"[..], "-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"*1\r\n$99999999999\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$2000000\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*99999999\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*abc\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        (b"SET \"k v\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"),
        // Earlier pipelined commands are answered before the error.
        (b"PING\r\n*1\r\n$-5\r\n", "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"),
    ] {
        let started = Instant::now();
        let (got, closed) = raw(&addr, input).await;
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        assert!(closed, "closed after {:?}", String::from_utf8_lossy(input));
        assert!(started.elapsed() < TIMEOUT, "refused at once, not after buffering");
        let mut fresh = connect(&addr).await;
        assert_eq!(get(&mut fresh, "k").await.as_deref(), Some("v"));
    }
    // The error arrives even when the client goes on sending.
    let mut flood = b"*1\r\n$99999999999\r\n".to_vec();
    flood.extend_from_slice(&vec![b'z'; 100_000]);
    let (got, closed) = raw(&addr, &flood).await;
    assert_eq!(got, "-ERR Protocol error: invalid bulk length\r\n");
    assert!(closed);
    // A line of garbage is an unknown inline command: answered, and the
    // connection stays open.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let got = raw_lines(&mut s, b"\x00\x01garbage \xff\r\nPING\r\n", 2).await;
    assert!(got.starts_with("-ERR unknown command '"), "{got}");
    assert!(got.ends_with("+PONG\r\n"), "{got}");
    // 64 KiB without a newline is not a command.
    let (got, closed) = raw(&addr, &vec![b'x'; 70_000]).await;
    assert_eq!(got, "-ERR Protocol error: too big inline request\r\n");
    assert!(closed);
    assert_eq!(get(&mut bystander, "k").await.as_deref(), Some("v"), "the first client never noticed");
}

#[tokio::test]
async fn values_at_the_limit_pass_and_keys_over_it_are_refused() {
    let (_node, addr) = start(&["--value-bytes-max", "1KiB", "--key-bytes-max", "16B"]);
    let mut c = connect(&addr).await;
    ok(&mut c, &["SET", "k", &"v".repeat(1024)]).await;
    assert_eq!(get(&mut c, "k").await.map(|v| v.len()), Some(1024));
    assert_eq!(error(&mut c, &["SET", &"k".repeat(17), "v"]).await, "ERR key is 17 bytes; the limit is 16");
    let (got, closed) = raw(&addr, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1025\r\n").await;
    assert_eq!(got, "-ERR Protocol error: invalid bulk length\r\n");
    assert!(closed);
}

#[tokio::test]
async fn sigterm_stops_the_resp_port_with_http() {
    let (node, addr) = start(&[]);
    let mut c = connect(&addr).await;
    ok(&mut c, &["SET", "k", "v"]).await;
    let status = tokio::task::spawn_blocking(move || node.terminate()).await.unwrap();
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(&addr).await.is_err(), "the RESP port is closed");
}

#[test]
fn a_bad_resp_namespace_is_refused_naming_its_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geocache"))
        .args(["serve", "--resp", "127.0.0.1:0", "--resp-namespace", "Not Valid", "--print-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--resp-namespace"), "{stderr}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geocache"))
        .args(["serve", "--resp", "127.0.0.1:6390", "--print-config"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("resp = \"127.0.0.1:6390\"") && printed.contains("resp_namespace = \"default\""),
        "{printed}"
    );
}
