//! Replication through the user-space link emulator: real `geocache`
//! processes whose gossip traffic crosses per-region delay and partitions.

mod common;

use common::emulated::{emulated_cluster, wait_for_members};
use common::{make_certs, temp_dir, Node};
use geocache_tests::link_emulator::{EmulatedNode, LinkEmulator, LinkSpec};
use reqwest::{Client, StatusCode};
use std::time::{Duration, Instant};

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// These tests measure timing over the emulator; run one at a time so the
/// others' processes do not starve it on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn get(c: &Client, node: &Node, key: &str) -> Option<String> {
    let r = c.get(node.url(&format!("/v1/kv/t/{key}"))).send().await.unwrap();
    if r.status() == StatusCode::OK {
        Some(r.text().await.unwrap())
    } else {
        None
    }
}

/// Time until `key` reads `value` at `node`, polling every millisecond.
async fn visible_after(c: &Client, node: &Node, key: &str, value: &str, since: Instant) -> Duration {
    loop {
        if get(c, node, key).await.as_deref() == Some(value) {
            return since.elapsed();
        }
        assert!(since.elapsed() < CONVERGE_TIMEOUT, "{} never got {key}", node.base);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Pushed, not pulled: a write crosses the link without waiting for an
/// anti-entropy round (1 s). How close to the link's delay it gets is a
/// benchmark figure (`bench/replication-lag.sh`, p50 / delay 1.08 at 40
/// ms), not a timed assertion on a shared machine.
async fn a_write_crosses_a_40ms_link_when_pushed_not_at_the_next_sync_round() {
    let _serial = SERIAL.lock().await;
    let e = emulated_cluster(
        "emu-lag",
        100,
        &[("montreal", 1), ("montreal", 2), ("frankfurt", 3), ("frankfurt", 4)],
        &[],
    )
    .await;
    e.emulator.set_link("montreal", "frankfurt", LinkSpec { delay_ms: 40, ..LinkSpec::default() });
    let c = client();
    wait_for_members(&c, &e.nodes).await;
    // Warm up: connections and relays are set up before measuring.
    c.put(e.nodes[0].url("/v1/kv/t/warm")).body("w").send().await.unwrap();
    for n in &e.nodes {
        visible_after(&c, n, "warm", "w", Instant::now()).await;
    }
    let mut lags = Vec::new();
    for i in 0..15 {
        let key = format!("k{i}");
        let started = Instant::now();
        let r = c.put(e.nodes[0].url(&format!("/v1/kv/t/{key}"))).body("v").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let (a, b) = tokio::join!(
            visible_after(&c, &e.nodes[2], &key, "v", started),
            visible_after(&c, &e.nodes[3], &key, "v", started)
        );
        lags.push(a.max(b));
    }
    lags.sort();
    let median = lags[lags.len() / 2];
    eprintln!("remote visibility over a 40 ms link: median {median:?}, max {:?}", lags.last().unwrap());
    assert!(
        median < Duration::from_millis(500),
        "median {median:?}: waited for a sync round? (all: {lags:?})"
    );
    assert!(median >= Duration::from_millis(40), "faster than the link? {median:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heal_converges_deletes_stay_deleted_and_conflicts_are_counted() {
    let _serial = SERIAL.lock().await;
    let e = emulated_cluster(
        "emu-part",
        110,
        &[("montreal", 1), ("montreal", 2), ("frankfurt", 3), ("frankfurt", 4)],
        &[],
    )
    .await;
    e.emulator.set_link("montreal", "frankfurt", LinkSpec { delay_ms: 10, ..LinkSpec::default() });
    let c = client();
    wait_for_members(&c, &e.nodes).await;
    for k in ["doomed", "shared", "kept"] {
        c.put(e.nodes[0].url(&format!("/v1/kv/t/{k}"))).body("before").send().await.unwrap();
    }
    for n in &e.nodes {
        visible_after(&c, n, "kept", "before", Instant::now()).await;
    }

    e.emulator.partition("montreal", "frankfurt");
    for i in 0..20 {
        c.put(e.nodes[1].url(&format!("/v1/kv/t/west-{i}"))).body("w").send().await.unwrap();
        c.put(e.nodes[3].url(&format!("/v1/kv/t/east-{i}"))).body("e").send().await.unwrap();
    }
    assert_eq!(
        c.delete(e.nodes[2].url("/v1/kv/t/doomed")).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    c.put(e.nodes[0].url("/v1/kv/t/shared")).body("west").send().await.unwrap();
    c.put(e.nodes[3].url("/v1/kv/t/shared")).body("east").send().await.unwrap();
    // Long enough for membership to declare the other side down.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(get(&c, &e.nodes[0], "east-0").await, None, "the partition held");
    e.emulator.heal("montreal", "frankfurt");

    let keys: Vec<String> = (0..20)
        .flat_map(|i| [format!("west-{i}"), format!("east-{i}")])
        .chain(["doomed", "shared", "kept"].map(String::from))
        .collect();
    let started = Instant::now();
    loop {
        let mut views = Vec::new();
        for n in &e.nodes {
            let mut view = Vec::new();
            for k in &keys {
                view.push(get(&c, n, k).await);
            }
            views.push(view);
        }
        let converged = views.iter().all(|v| v == &views[0]) && views[0].iter().take(40).all(Option::is_some);
        if converged {
            let doomed = keys.iter().position(|k| k == "doomed").unwrap();
            assert_eq!(views[0][doomed], None, "the delete stayed");
            let shared = keys.iter().position(|k| k == "shared").unwrap();
            assert!(matches!(views[0][shared].as_deref(), Some("west") | Some("east")));
            break;
        }
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "no convergence: {views:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut conflicts = 0;
    for n in &e.nodes {
        let text = c.get(n.url("/metrics")).send().await.unwrap().text().await.unwrap();
        conflicts += text
            .lines()
            .find_map(|l| l.strip_prefix("geocache_conflicts_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    assert!(conflicts >= 1, "the concurrent writes to `shared` were not counted");
    eprintln!("converged {:?} after healing; conflicts counted: {conflicts}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_beyond_the_backlog_catches_up_by_full_transfer() {
    let _serial = SERIAL.lock().await;
    let e = emulated_cluster(
        "emu-full",
        120,
        &[("montreal", 1), ("frankfurt", 2)],
        &["--backlog-bytes-max", "4KiB"],
    )
    .await;
    let c = client();
    wait_for_members(&c, &e.nodes).await;
    let mut e = e;
    let restarted = e.nodes.remove(1);
    restarted.kill();
    for i in 0..200 {
        let r = c.put(e.nodes[0].url(&format!("/v1/kv/t/k{i}"))).body(vec![b'x'; 200]).send().await.unwrap();
        assert!(r.status().is_success());
    }
    c.delete(e.nodes[0].url("/v1/kv/t/k7")).send().await.unwrap();
    // Same identity and addresses, an empty store; the 4 KiB backlog no
    // longer reaches its first writes, so only a full transfer brings them.
    let back = e.start(1);
    for i in [0, 1, 100, 199] {
        visible_after(&c, &back, &format!("k{i}"), &"x".repeat(200), Instant::now()).await;
    }
    assert_eq!(get(&c, &back, "k7").await, None, "the delete came with the transfer");
    let text = c.get(e.nodes[0].url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l
                .starts_with("geocache_replication_messages_total{scope=\"wan\",kind=\"full_transfer\"}")),
        "no full transfer was sent:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// `INCR` is a counter, not a last-writer-wins string: three regions 40
/// ms apart increment one key at once, each on its own node, and every
/// node ends at the exact total (a read-modify-write of a string lost 17
/// of 250 this way, issue 16).
async fn concurrent_incr_in_three_regions_ends_at_the_exact_total_everywhere() {
    let _serial = SERIAL.lock().await;
    let regions = ["montreal", "frankfurt", "tokyo"];
    let dir = temp_dir("emu-counters");
    let certs = make_certs(&dir, &["node-1", "node-2", "node-3"]);
    let emulated: Vec<EmulatedNode> = (0..3)
        .map(|i| EmulatedNode::on_loopback(regions[i], 130, i as u8).expect("free UDP ports"))
        .collect();
    let emulator = LinkEmulator::start(emulated.clone(), 7).await.unwrap();
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        emulator.set_link(regions[a], regions[b], LinkSpec { delay_ms: 40, ..LinkSpec::default() });
    }
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            let ip = emulated[i].real.ip().to_string();
            let mut args = emulated[i].serve_args(&emulated[0]);
            args.extend(["--node-id".to_owned(), (i + 1).to_string()]);
            args.extend(["--resp".to_owned(), format!("{ip}:0")]);
            args.extend(certs[i].iter().cloned());
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            Node::start_at(&ip, &refs)
        })
        .collect();
    let c = client();
    wait_for_members(&c, &nodes).await;
    const EACH: i64 = 100;
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let addr = node.resp.clone().expect("resp address");
        tasks.push(tokio::spawn(async move {
            let mut conn = common::resp_connect(&addr).await;
            for n in 0..EACH {
                // Node 2 also decrements, so both sums of an origin are used.
                let (cmd, by) = if i == 1 && n % 4 == 0 { ("DECRBY", 2) } else { ("INCRBY", 3) };
                let _: i64 = redis::cmd(cmd).arg("hits").arg(by).query_async(&mut conn).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = 3 * EACH * 3 - (EACH / 4) * (3 + 2);
    for node in &nodes {
        let started = Instant::now();
        let mut conn = common::resp_connect(node.resp.as_ref().unwrap()).await;
        loop {
            let v: Option<String> = redis::cmd("GET").arg("hits").query_async(&mut conn).await.unwrap();
            if v.as_deref() == Some(total.to_string().as_str()) {
                break;
            }
            assert!(started.elapsed() < CONVERGE_TIMEOUT, "{} reads {v:?}, want {total}", node.base);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // HTTP reads the same counter as its decimal text.
        let r = c.get(node.url("/v1/kv/default/hits")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), total.to_string());
    }
    drop(emulator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Two regions 40 ms apart compare-and-set one version at once: both
/// succeed where they were made (the default consistency), one loses to
/// last-writer-wins, and its node counts it and says so on the next read.
async fn a_cas_that_lost_across_regions_is_counted_and_shown_on_the_next_read() {
    let _serial = SERIAL.lock().await;
    let e = emulated_cluster("emu-cas-lost", 140, &[("montreal", 1), ("frankfurt", 2)], &[]).await;
    e.emulator.set_link("montreal", "frankfurt", LinkSpec { delay_ms: 40, ..LinkSpec::default() });
    let c = client();
    wait_for_members(&c, &e.nodes).await;
    let url = |i: usize| e.nodes[i].url("/v1/kv/t/acc");
    c.put(url(0)).body("0").send().await.unwrap();
    visible_after(&c, &e.nodes[1], "acc", "0", Instant::now()).await;
    let etag = c.get(url(0)).send().await.unwrap().headers()["etag"].to_str().unwrap().to_string();
    let (a, b) = tokio::join!(
        c.put(url(0)).header("if-match", &etag).body("1 from montreal").send(),
        c.put(url(1)).header("if-match", &etag).body("1 from frankfurt").send()
    );
    assert_eq!(a.unwrap().status(), StatusCode::OK, "each CAS holds where it was made");
    assert_eq!(b.unwrap().status(), StatusCode::OK);
    // Both regions converge on one of them.
    let started = Instant::now();
    let winner = loop {
        let (x, y) = (get(&c, &e.nodes[0], "acc").await, get(&c, &e.nodes[1], "acc").await);
        if x == y {
            break x.unwrap();
        }
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "never converged: {x:?} {y:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let loser = if winner.ends_with("montreal") { 1 } else { 0 };
    let r = c.get(url(loser)).send().await.unwrap();
    let conflict = r.headers().get("x-geocache-conflict").map(|v| v.to_str().unwrap().to_string());
    assert!(conflict.as_deref().is_some_and(|v| v.starts_with("lost-cas; etag=")), "{conflict:?}");
    let r = c.get(url(1 - loser)).send().await.unwrap();
    assert!(r.headers().get("x-geocache-conflict").is_none(), "the winner lost nothing");
    let metrics = c.get(e.nodes[loser].url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("geocache_cas_lost_total{namespace=\"t\"} 1"), "{metrics}");
    // The next write of the key here settles it.
    c.put(url(loser)).body("2").send().await.unwrap();
    let r = c.get(url(loser)).send().await.unwrap();
    assert!(r.headers().get("x-geocache-conflict").is_none());
}
