//! The QUIC transport and the certificate tooling, over real QUIC on loopback.
//!
//! Nodes bind 127.0.0.2-127.0.0.5 with port 0: loopback addresses stand in for separate
//! hosts. Nothing is ever sent outside 127.0.0.0/8. Waits are on conditions with
//! generous deadlines (a loaded 2-core machine), never bare sleeps, except where the
//! point is that nothing arrives.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use geocache_gossip::certs::{Ca, CertError, NodeCert, CLUSTER_SERVER_NAME};
use geocache_gossip::quic::{
    ClusterTls, Inbound, QuicConfig, QuicError, QuicTransport, RequestError, SendError, ALPN,
};
use tokio::sync::mpsc::Receiver;
use tokio::time::{timeout, Instant};

/// Longest wait for something that should happen.
const DEADLINE: Duration = Duration::from_secs(5);
/// How long to watch for something that must not happen.
const QUIET: Duration = Duration::from_secs(1);

fn addr(ip: &str) -> SocketAddr {
    format!("{ip}:0").parse().expect("test address")
}

fn tls(ca: &Ca, name: &str) -> ClusterTls {
    ClusterTls::from_node_cert(&ca.issue(name).expect("issue")).expect("cluster tls")
}

async fn node(ip: &str, ca: &Ca, name: &str) -> (QuicTransport, Receiver<Inbound>) {
    node_with(ip, ca, name, |_| {}).await
}

async fn node_with(
    ip: &str,
    ca: &Ca,
    name: &str,
    tweak: impl FnOnce(&mut QuicConfig),
) -> (QuicTransport, Receiver<Inbound>) {
    let mut config = QuicConfig::new(addr(ip), tls(ca, name));
    tweak(&mut config);
    QuicTransport::bind(config).await.expect("bind")
}

/// The next frame, skipping datagrams; panics after [`DEADLINE`].
async fn next_frame(rx: &mut Receiver<Inbound>) -> (SocketAddr, Bytes) {
    let found = timeout(DEADLINE, async {
        loop {
            match rx.recv().await.expect("inbound channel open") {
                Inbound::Frame { from, bytes, .. } => return (from, bytes),
                Inbound::Datagram { .. } => continue,
                Inbound::Request { .. } => panic!("unexpected request"),
            }
        }
    })
    .await;
    found.expect("a frame within the deadline")
}

/// Sends `payload` as a frame from `from` to `to` until one arrives at `rx` (earlier
/// frames may be lost in the scenarios using it); returns how many were sent.
async fn frame_gets_through(from: &QuicTransport, to: SocketAddr, rx: &mut Receiver<Inbound>) -> usize {
    let deadline = Instant::now() + DEADLINE;
    let mut sent = 0;
    while Instant::now() < deadline {
        from.send_frame(to, Bytes::from_static(b"probe")).expect("queue probe frame");
        sent += 1;
        let got = timeout(Duration::from_millis(200), async {
            loop {
                match rx.recv().await {
                    Some(Inbound::Frame { from: f, bytes, .. })
                        if f == from.local_addr() && bytes == "probe" =>
                    {
                        return true
                    }
                    Some(_) => continue,
                    None => return false,
                }
            }
        })
        .await;
        if got == Ok(true) {
            return sent;
        }
    }
    panic!("no frame from {} reached {to} within {DEADLINE:?}", from.local_addr());
}

/// Sends datagrams from `from` to `to` until one arrives at `rx`.
async fn datagram_gets_through(from: &QuicTransport, to: SocketAddr, rx: &mut Receiver<Inbound>) {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        from.send_datagram(to, Bytes::from_static(b"ping")).expect("queue datagram");
        let got = timeout(Duration::from_millis(100), async {
            while let Some(event) = rx.recv().await {
                if let Inbound::Datagram { from: f, bytes, .. } = event {
                    assert_eq!(f, from.local_addr(), "datagram attributed to its sender");
                    assert_eq!(bytes, "ping");
                    return;
                }
            }
        })
        .await;
        if got.is_ok() {
            return;
        }
    }
    panic!("no datagram from {} reached {to} within {DEADLINE:?}", from.local_addr());
}

/// Answers every request on `rx` with `answer` + the request, until the channel ends.
fn serve_requests(mut rx: Receiver<Inbound>, answer: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if let Inbound::Request { bytes, respond, .. } = event {
                let mut response = answer.as_bytes().to_vec();
                response.extend_from_slice(&bytes);
                let _ = respond.send(Bytes::from(response));
            }
        }
    })
}

/// Waits until `condition` holds, polling; panics after [`DEADLINE`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts nothing at all arrives on `rx` for [`QUIET`].
async fn assert_quiet(rx: &mut Receiver<Inbound>, what: &str) {
    if let Ok(Some(event)) = timeout(QUIET, rx.recv()).await {
        panic!("{what}: expected nothing, got {event:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Two nodes of one cluster.

#[tokio::test]
async fn datagrams_arrive_both_ways() {
    let ca = Ca::generate("test CA").expect("ca");
    let (a, mut a_rx) = node("127.0.0.2", &ca, "a").await;
    let (b, mut b_rx) = node("127.0.0.3", &ca, "b").await;
    // A has no connection yet: its datagrams wait in the queue while it dials.
    datagram_gets_through(&a, b.local_addr(), &mut b_rx).await;
    // B answers over the connection A opened.
    datagram_gets_through(&b, a.local_addr(), &mut a_rx).await;
    assert_eq!(a.connected_peers(), vec![b.local_addr()]);
    assert_eq!(b.connected_peers(), vec![a.local_addr()]);
    assert!(a.max_datagram_bytes(b.local_addr()).is_some_and(|max| max >= 1000));
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn two_thousand_frames_arrive_in_order() {
    let ca = Ca::generate("test CA").expect("ca");
    let (a, mut a_rx) = node("127.0.0.2", &ca, "a").await;
    let (b, mut b_rx) = node("127.0.0.3", &ca, "b").await;
    const FRAMES: u32 = 2_000;
    for i in 0..FRAMES {
        // Sizes vary, so frames straddle QUIC packets.
        let mut frame = i.to_be_bytes().to_vec();
        frame.resize(4 + (i as usize * 7) % 3000, 0xab);
        a.send_frame(b.local_addr(), Bytes::from(frame)).expect("queue frame");
    }
    for i in 0..FRAMES {
        let (from, bytes) = next_frame(&mut b_rx).await;
        assert_eq!(from, a.local_addr());
        assert_eq!(bytes.len(), 4 + (i as usize * 7) % 3000, "frame {i} length");
        assert_eq!(bytes[..4], i.to_be_bytes(), "frame {i} out of order");
    }
    // Frames the other way ride the same connection.
    b.send_frame(a.local_addr(), Bytes::from_static(b"back")).expect("queue");
    assert_eq!(next_frame(&mut a_rx).await, (b.local_addr(), Bytes::from_static(b"back")));
    assert_eq!(a.connected_peers(), vec![b.local_addr()]);
    assert_eq!(b.connected_peers(), vec![a.local_addr()]);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn request_response_round_trip_and_rtt() {
    let ca = Ca::generate("test CA").expect("ca");
    let (a, a_rx) = node("127.0.0.2", &ca, "a").await;
    let (b, b_rx) = node("127.0.0.3", &ca, "b").await;
    let _a_server = serve_requests(a_rx, "a:");
    let _b_server = serve_requests(b_rx, "b:");
    assert_eq!(a.rtt(b.local_addr()), None, "no connection yet");

    let response = a.request(b.local_addr(), Bytes::from_static(b"hello"), DEADLINE).await.expect("request");
    assert_eq!(response, "b:hello");
    let response = b.request(a.local_addr(), Bytes::from_static(b"back"), DEADLINE).await.expect("request");
    assert_eq!(response, "a:back");
    // Several at once, on one connection.
    let replies = futures_join(&a, b.local_addr(), 32).await;
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply, format!("b:{i}"));
    }
    let rtt = a.rtt(b.local_addr()).expect("rtt once connected");
    assert!(rtt < Duration::from_secs(1), "loopback rtt {rtt:?}");
    assert!(b.rtt(a.local_addr()).is_some());
    a.close().await;
    b.close().await;
}

async fn futures_join(from: &QuicTransport, to: SocketAddr, count: usize) -> Vec<Bytes> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let from = from.clone();
        tasks.spawn(async move {
            (i, from.request(to, Bytes::from(i.to_string()), DEADLINE).await.expect("request"))
        });
    }
    let mut replies = vec![Bytes::new(); count];
    while let Some(done) = tasks.join_next().await {
        let (i, reply) = done.expect("request task");
        replies[i] = reply;
    }
    replies
}

#[tokio::test]
async fn request_without_response_times_out_or_is_refused() {
    let ca = Ca::generate("test CA").expect("ca");
    let (a, _a_rx) = node("127.0.0.2", &ca, "a").await;
    let (b, mut b_rx) = node("127.0.0.3", &ca, "b").await;
    // B's application drops the responder: A hears a reset, not silence.
    let dropper = tokio::spawn(async move {
        while let Some(event) = b_rx.recv().await {
            drop(event);
        }
    });
    match a.request(b.local_addr(), Bytes::from_static(b"x"), DEADLINE).await {
        Err(RequestError::Stream { .. }) => {}
        other => panic!("expected a refused request, got {other:?}"),
    }
    dropper.abort();
    // A peer that never answers: the time-out bounds the wait.
    let (c, _c_rx_kept_but_unread) = node("127.0.0.4", &ca, "c").await;
    let started = Instant::now();
    match a.request(c.local_addr(), Bytes::from_static(b"x"), Duration::from_millis(500)).await {
        Err(RequestError::Timeout { .. }) => {}
        other => panic!("expected a time-out, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    for t in [a, b, c] {
        t.close().await;
    }
}

// ---------------------------------------------------------------------------------------
// Foreign certificates.

#[tokio::test]
async fn node_from_another_ca_is_refused_both_ways() {
    let ca = Ca::generate("cluster CA").expect("ca");
    let other_ca = Ca::generate("other CA").expect("ca");
    let (a, mut a_rx) = node("127.0.0.2", &ca, "a").await;
    let (b, mut b_rx) = node("127.0.0.3", &ca, "b").await;
    let (c, mut c_rx) = node("127.0.0.4", &other_ca, "c").await;

    for i in 0..20u8 {
        c.send_frame(a.local_addr(), Bytes::from(vec![i])).expect("queue frame");
        c.send_datagram(a.local_addr(), Bytes::from(vec![i])).expect("queue datagram");
        a.send_frame(c.local_addr(), Bytes::from(vec![i])).expect("queue frame");
    }
    match c.request(a.local_addr(), Bytes::from_static(b"let me in"), Duration::from_secs(2)).await {
        Err(RequestError::Connect { .. }) => {}
        other => panic!("expected the handshake to fail, got {other:?}"),
    }
    assert_quiet(&mut a_rx, "good node hearing from a foreign node").await;
    assert_quiet(&mut c_rx, "foreign node hearing from a good node").await;
    assert!(a.connected_peers().is_empty());
    assert!(c.connected_peers().is_empty());

    // The cluster is unaffected.
    frame_gets_through(&a, b.local_addr(), &mut b_rx).await;
    frame_gets_through(&b, a.local_addr(), &mut a_rx).await;
    for t in [a, b, c] {
        t.close().await;
    }
}

/// A client that trusts the cluster CA (so its side of the handshake completes) but
/// presents a certificate from another CA, or none: only the server's client
/// verification stands between it and the application.
#[tokio::test]
async fn server_refuses_client_certificate_from_another_ca() {
    let ca = Ca::generate("cluster CA").expect("ca");
    let other_ca = Ca::generate("other CA").expect("ca");
    let (a, mut a_rx) = node("127.0.0.2", &ca, "a").await;
    let intruder = other_ca.issue("intruder").expect("issue");

    for present_certificate in [true, false] {
        let endpoint = raw_client(&ca, present_certificate.then_some(&intruder));
        if let Ok(connecting) = endpoint.connect(a.local_addr(), CLUSTER_SERVER_NAME) {
            if let Ok(Ok(conn)) = timeout(DEADLINE, connecting).await {
                if let Ok(mut send) = conn.open_uni().await {
                    let _ = send.write_all(&[0, 0, 0, 3, b'b', b'a', b'd']).await;
                    let _ = send.finish();
                }
                let _ = conn.send_datagram(Bytes::from_static(b"bad"));
                // The server closes it once it has seen the certificate.
                timeout(DEADLINE, conn.closed()).await.expect("server closes the connection");
            }
        }
        endpoint.close(0u32.into(), b"done");
    }
    assert_quiet(&mut a_rx, "server hearing from a client with a foreign certificate").await;
    assert!(a.connected_peers().is_empty());
    eventually("refused handshakes counted", || a.stats().handshakes_failed_total >= 2).await;
    a.close().await;
}

fn raw_client(trusted: &Ca, identity: Option<&NodeCert>) -> quinn::Endpoint {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(trusted.cert_pem().as_bytes()).expect("ca pem")).expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(node) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(node.cert_pem.as_bytes()).expect("cert pem")],
                PrivateKeyDer::from_pem_slice(node.key_pem.as_bytes()).expect("key pem"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(config).expect("quic client config");
    let mut endpoint = quinn::Endpoint::client(addr("127.0.0.4")).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    endpoint
}

// ---------------------------------------------------------------------------------------
// Garbage on the port.

#[tokio::test]
async fn garbage_udp_does_not_disturb_connections() {
    const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
    let ca = Ca::generate("test CA").expect("ca");
    let (a, a_rx) = node("127.0.0.2", &ca, "a").await;
    let (b, mut b_rx) = node("127.0.0.3", &ca, "b").await;
    frame_gets_through(&a, b.local_addr(), &mut b_rx).await;

    let socket = UdpSocket::bind("127.0.0.5:0").expect("garbage socket");
    let mut rng = SplitMix64(SEED);
    for i in 0..3_000 {
        let len = 1 + (rng.next() % 1_500) as usize;
        let packet_words: Vec<u8> = (0..len.div_ceil(8)).flat_map(|_| rng.next().to_le_bytes()).collect();
        let mut packet = packet_words[..len].to_vec();
        match i % 3 {
            // Looks like a QUIC v1 long-header Initial.
            0 if len > 5 => packet[..5].copy_from_slice(&[0xc3, 0, 0, 0, 1]),
            // Looks like a short-header packet.
            1 => packet[0] = 0x40 | (packet[0] & 0x3f),
            _ => {}
        }
        let target = if i % 2 == 0 { a.local_addr() } else { b.local_addr() };
        socket.send_to(&packet, target).expect("send garbage");
    }

    // Established traffic still flows, both ways, all three kinds.
    frame_gets_through(&a, b.local_addr(), &mut b_rx).await;
    datagram_gets_through(&a, b.local_addr(), &mut b_rx).await;
    let _a_server = serve_requests(a_rx, "a:");
    let response = b.request(a.local_addr(), Bytes::from_static(b"still there?"), DEADLINE).await;
    assert_eq!(response.expect("request after garbage (SEED={SEED:#x})"), "a:still there?");
    assert_eq!(a.connected_peers(), vec![b.local_addr()]);
    a.close().await;
    b.close().await;
}

/// Seeded generator for the garbage (splitmix64): reproducible without a dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

// ---------------------------------------------------------------------------------------
// Bounds.

#[tokio::test]
async fn oversized_frames_are_refused() {
    let ca = Ca::generate("test CA").expect("ca");
    let (a, _a_rx) = node("127.0.0.2", &ca, "a").await;
    let (b, mut b_rx) = node_with("127.0.0.3", &ca, "b", |c| c.frame_bytes_max = 1024).await;
    let max = 16 * 1024 * 1024;

    // Outbound: refused by the send call, nothing queued.
    let too_big = Bytes::from(vec![0u8; max + 1]);
    assert_eq!(
        a.send_frame(b.local_addr(), too_big.clone()),
        Err(SendError::TooLarge { bytes: max + 1, max })
    );
    match a.request(b.local_addr(), too_big, DEADLINE).await {
        Err(RequestError::TooLarge { .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(a.connected_peers().is_empty(), "nothing was sent");

    // Inbound: B (limit 1 KiB) stops the stream at the length prefix; later frames
    // arrive on a new stream.
    a.send_frame(b.local_addr(), Bytes::from(vec![7u8; 4096])).expect("queue big frame");
    frame_gets_through(&a, b.local_addr(), &mut b_rx).await;
    eventually("oversized inbound frame counted", || b.stats().inbound_frames_refused_total == 1).await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn queue_fills_when_peer_is_not_listening() {
    let ca = Ca::generate("test CA").expect("ca");
    let (a, _a_rx) = node_with("127.0.0.2", &ca, "a", |c| {
        c.peer_queue_frames_max = 16;
        c.peer_queue_datagrams_max = 4;
    })
    .await;
    // Bound but never read: packets to it vanish, the handshake never completes.
    let silent = UdpSocket::bind("127.0.0.3:0").expect("silent socket");
    let dead = silent.local_addr().expect("addr");

    for i in 0..16u8 {
        a.send_frame(dead, Bytes::from(vec![i])).expect("frame fits the queue");
    }
    for _ in 0..100 {
        assert_eq!(a.send_frame(dead, Bytes::from_static(b"x")), Err(SendError::QueueFull { to: dead }));
    }
    for _ in 0..4 {
        a.send_datagram(dead, Bytes::from_static(b"d")).expect("datagram fits the queue");
    }
    assert_eq!(a.send_datagram(dead, Bytes::from_static(b"d")), Err(SendError::QueueFull { to: dead }));
    assert!(a.connected_peers().is_empty());
    assert_eq!(a.send_frame(a.local_addr(), Bytes::new()), Err(SendError::ToSelf { to: a.local_addr() }));

    // Closing does not wait for the pending handshake.
    let started = Instant::now();
    a.close().await;
    assert!(started.elapsed() < Duration::from_secs(3), "close took {:?}", started.elapsed());
    assert_eq!(a.send_frame(dead, Bytes::new()), Err(SendError::Closed));
}

#[tokio::test]
async fn sender_gives_up_on_a_dead_peer_and_drops_its_queue() {
    let ca = Ca::generate("test CA").expect("ca");
    let (a, _a_rx) = node_with("127.0.0.2", &ca, "a", |c| {
        c.peer_queue_frames_max = 8;
        c.idle_timeout_ms = 200; // also the handshake time-out
        c.keep_alive_ms = 50;
        c.connect_backoff_ms_max = 100;
        c.connect_attempts_max = 3;
    })
    .await;
    let silent = UdpSocket::bind("127.0.0.3:0").expect("silent socket");
    let dead = silent.local_addr().expect("addr");
    for i in 0..8u8 {
        a.send_frame(dead, Bytes::from(vec![i])).expect("queue");
    }
    assert!(matches!(a.send_frame(dead, Bytes::new()), Err(SendError::QueueFull { .. })));
    eventually("queue dropped after 3 failed attempts", || a.stats().outbound_frames_dropped_total == 8)
        .await;
    // A fresh sender takes new frames.
    a.send_frame(dead, Bytes::from_static(b"again")).expect("queue after give-up");
    a.close().await;
}

#[tokio::test]
async fn dropping_the_transport_ends_its_receiver() {
    let ca = Ca::generate("test CA").expect("ca");
    let (a, mut a_rx) = node("127.0.0.2", &ca, "a").await;
    let (b, mut b_rx) = node("127.0.0.3", &ca, "b").await;
    frame_gets_through(&a, b.local_addr(), &mut b_rx).await;
    drop(a);
    let ended = timeout(DEADLINE, async { while a_rx.recv().await.is_some() {} }).await;
    assert!(ended.is_ok(), "receiver ends once the transport is dropped");
    eventually("peer notices the close", || b.connected_peers().is_empty()).await;
    b.close().await;
    let ended = timeout(DEADLINE, async { while b_rx.recv().await.is_some() {} }).await;
    assert!(ended.is_ok(), "receiver ends after close");
}

#[tokio::test]
async fn bind_refuses_wildcard_and_bad_limits() {
    let ca = Ca::generate("test CA").expect("ca");
    let wildcard = QuicConfig::new("0.0.0.0:0".parse().expect("addr"), tls(&ca, "a"));
    assert!(matches!(QuicTransport::bind(wildcard).await, Err(QuicError::UnspecifiedBind { .. })));
    let wildcard6 = QuicConfig::new("[::]:0".parse().expect("addr"), tls(&ca, "a"));
    assert!(matches!(QuicTransport::bind(wildcard6).await, Err(QuicError::UnspecifiedBind { .. })));
    let mut zero_queue = QuicConfig::new(addr("127.0.0.2"), tls(&ca, "a"));
    zero_queue.peer_queue_frames_max = 0;
    assert!(matches!(
        QuicTransport::bind(zero_queue).await,
        Err(QuicError::InvalidConfig { field: "peer_queue_frames_max", .. })
    ));
    let mut keep_alive = QuicConfig::new(addr("127.0.0.2"), tls(&ca, "a"));
    keep_alive.keep_alive_ms = keep_alive.idle_timeout_ms;
    assert!(matches!(
        QuicTransport::bind(keep_alive).await,
        Err(QuicError::InvalidConfig { field: "keep_alive_ms", .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Certificates.

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("geocache-quic-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn ca_save_load_round_trip() {
    let dir = TempDir::new("ca-round-trip");
    let ca_dir = dir.path().join("nested/ca");
    let ca = Ca::generate("round trip CA").expect("generate");
    ca.save(&ca_dir).expect("save");
    #[cfg(unix)]
    assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);

    let loaded = Ca::load(&ca_dir).expect("load");
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    // A certificate issued by the loaded CA chains to the original certificate.
    let node = loaded.issue("node-7").expect("issue from loaded CA");
    assert_eq!(node.ca_pem, ca.cert_pem());
    ClusterTls::from_node_cert(&node).expect("issued by the loaded CA verifies against the CA");
}

#[test]
fn node_cert_save_load_round_trip() {
    let dir = TempDir::new("node-round-trip");
    let ca = Ca::generate("node CA").expect("generate");
    let node = ca.issue("node-1").expect("issue");
    node.save(dir.path()).expect("save");
    #[cfg(unix)]
    assert_eq!(mode(&dir.path().join("node.key")), 0o600);
    let loaded = NodeCert::load(dir.path()).expect("load");
    assert_eq!(loaded.cert_pem, node.cert_pem);
    assert_eq!(loaded.key_pem, node.key_pem);
    assert_eq!(loaded.ca_pem, node.ca_pem);
    ClusterTls::from_files(
        &dir.path().join("ca.crt"),
        &dir.path().join("node.crt"),
        &dir.path().join("node.key"),
    )
    .expect("tls from files");
    // Re-issuing (renewal) replaces the node files.
    ca.issue("node-1").expect("reissue").save(dir.path()).expect("save over");
    assert!(!format!("{loaded:?}").contains("PRIVATE KEY"), "Debug leaves the key out");
}

#[test]
fn invalid_node_names_are_rejected() {
    let ca = Ca::generate("names CA").expect("generate");
    let long = "a".repeat(64);
    for name in ["", "Node1", "node_1", "node.1", "-node", "node-", "nöde", "node 1", &long] {
        match ca.issue(name) {
            Err(CertError::InvalidNodeName { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name:?}: expected InvalidNodeName, got {other:?}"),
        }
    }
    for name in ["a", "node-1", "0", "eu-west-1-a", &"z".repeat(63)] {
        ca.issue(name).unwrap_or_else(|e| panic!("{name:?} should be valid: {e}"));
    }
    assert!(matches!(Ca::generate(""), Err(CertError::InvalidCommonName { .. })));
}

#[test]
fn ca_key_is_never_overwritten() {
    let dir = TempDir::new("ca-overwrite");
    let first = Ca::generate("first").expect("generate");
    first.save(dir.path()).expect("save");
    let key_before = std::fs::read(dir.path().join("ca.key")).expect("read key");
    let second = Ca::generate("second").expect("generate");
    match second.save(dir.path()) {
        Err(CertError::CaKeyExists { path }) => assert_eq!(path, dir.path().join("ca.key")),
        other => panic!("expected CaKeyExists, got {other:?}"),
    }
    assert_eq!(std::fs::read(dir.path().join("ca.key")).expect("read key"), key_before);
    assert_eq!(Ca::load(dir.path()).expect("load").cert_pem(), first.cert_pem(), "ca.crt untouched");
}

#[test]
fn mismatched_or_missing_ca_files_are_typed_errors() {
    let dir = TempDir::new("ca-mismatch");
    let a = TempDir::new("ca-mismatch-a");
    let b = TempDir::new("ca-mismatch-b");
    Ca::generate("a").expect("generate").save(a.path()).expect("save");
    Ca::generate("b").expect("generate").save(b.path()).expect("save");
    std::fs::create_dir_all(dir.path()).expect("mkdir");
    std::fs::copy(a.path().join("ca.crt"), dir.path().join("ca.crt")).expect("copy");
    std::fs::copy(b.path().join("ca.key"), dir.path().join("ca.key")).expect("copy");
    assert!(matches!(Ca::load(dir.path()), Err(CertError::KeyMismatch { .. })));

    std::fs::write(dir.path().join("ca.crt"), "not pem").expect("write");
    assert!(matches!(Ca::load(dir.path()), Err(CertError::InvalidPem { .. })));
    match Ca::load(&dir.path().join("missing")) {
        Err(CertError::Io { path, .. }) => assert!(path.ends_with("missing/ca.crt")),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn node_certificate_from_another_ca_is_rejected_up_front() {
    let ca = Ca::generate("cluster").expect("generate");
    let other = Ca::generate("other").expect("generate");
    let mut node = other.issue("node-1").expect("issue");
    node.ca_pem = ca.cert_pem().to_owned();
    assert!(matches!(ClusterTls::from_node_cert(&node), Err(QuicError::CertificateRejected(_))));
}
