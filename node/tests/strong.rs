//! Strong consistency across regions with real processes: three regions
//! behind the link emulator, one strong acceptor per region (each with its
//! data dir), and namespaces whose writes are linearizable
//! (`consistency = "strong"`, docs/API.md "Three guarantees").

mod common;

use common::emulated::{emulated_cluster_with, wait_for_members, Emulated};
use common::{repo_root, temp_dir, Node};
use geocache_tests::link_emulator::LinkSpec;
use reqwest::{Client, StatusCode};
use std::process::Command;
use std::time::{Duration, Instant};

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
const REGIONS: [&str; 3] = ["montreal", "frankfurt", "tokyo"];

/// Timing over the emulator: one cluster at a time on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `example` is the earlier client's namespace; `s` the one RESP and the
/// HTTP tests write; `t` keeps the default consistency.
const CONFIG: &str = r#"
[namespaces.example]
consistency = "strong"

[namespaces.s]
consistency = "strong"
"#;

/// Three nodes, one per region, `delay_ms` apart, each an acceptor with
/// its own data dir, RESP on namespace `s`.
async fn strong_cluster(name: &str, base: u8, delay_ms: u64) -> Emulated {
    let dir = temp_dir(&format!("{name}-dirs"));
    let config = dir.join("node.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    let specs: Vec<(&str, u64)> = REGIONS.iter().zip(1..).map(|(r, id)| (*r, id)).collect();
    let e = emulated_cluster_with(name, base, &specs, |i| {
        let ip = format!("127.0.0.{}", base as usize + i);
        [
            "--config",
            config.to_str().unwrap(),
            "--strong-acceptors",
            "node-1,node-2,node-3",
            "--strong-acceptor-bootstrap",
            "--data-dir",
            dir.join(format!("data-{i}")).to_str().unwrap(),
            "--resp",
            &format!("{ip}:0"),
            "--resp-namespace",
            "s",
        ]
        .map(str::to_owned)
        .to_vec()
    })
    .await;
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        e.emulator.set_link(REGIONS[a], REGIONS[b], LinkSpec { delay_ms, ..LinkSpec::default() });
    }
    e
}

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Waits until `url` answers `want` (status and body).
async fn reads_at(c: &Client, url: &str, want: &str) {
    let started = Instant::now();
    loop {
        let r = c.get(url).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        if status == StatusCode::OK && body == want {
            return;
        }
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "{url} reads {status} {body}, want {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// The earlier system's own counting example, unchanged, with each of its
/// three threads on a node of its own region, 40 ms apart: under
/// `consistency = "strong"` every acknowledged `cas` write counts, and
/// every node ends at exactly 250 (the default consistency ended at 233).
async fn the_earlier_counting_example_with_a_thread_per_region_counts_exactly_250() {
    let _serial = SERIAL.lock().await;
    let e = strong_cluster("strong-count", 160, 40).await;
    let c = client();
    wait_for_members(&c, &e.nodes).await;
    let python = common::earlier_client_python();
    let example = repo_root().parent().unwrap().join("shared/earlier-client/concurrency.py");
    let addresses: Vec<String> = e.nodes.iter().map(|n| n.addr.to_string()).collect();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(repo_root().join("scripts/earlier-client-per-region.py"))
            .arg(&example)
            .args(&addresses)
            .output()
            .expect("run concurrency.py")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    for node in &e.nodes {
        let metrics = c.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let outcomes: Vec<&str> =
            metrics.lines().filter(|l| l.starts_with("geocache_strong_changes_total")).collect();
        eprintln!("{}: {outcomes:?}", node.base);
    }
    assert!(
        run.status.success(),
        "{stderr}\n{}",
        stdout.lines().filter(|l| !l.contains(".set: {")).collect::<Vec<_>>().join("\n")
    );
    // The example's own last line reads its node locally, so it may show
    // the count before the last write from another region arrived (reads
    // stay local: stale by the replication lag, docs/API.md); every node
    // reaches 250 below.
    assert!(stdout.contains("Final accumulator value: "), "{stdout}");
    let acked = stdout.lines().filter(|l| l.contains(".set: {")).count();
    assert_eq!(acked, 250, "each thread counts its acknowledged writes");
    for node in &e.nodes {
        let started = Instant::now();
        loop {
            let r = c.get(node.url("/api/example/acc")).send().await.unwrap();
            let v: serde_json::Value = r.json().await.unwrap();
            if v["value"] == 250 {
                break;
            }
            if started.elapsed() > CONVERGE_TIMEOUT || v["value"].as_i64().is_none_or(|n| n >= 250) {
                let mut seen = Vec::new();
                for n in &e.nodes {
                    let local = c.get(n.url("/api/example/acc")).send().await.unwrap().text().await.unwrap();
                    let strong = c
                        .get(n.url("/api/example/acc"))
                        .header("geocache-consistency", "strong")
                        .send()
                        .await
                        .unwrap()
                        .text()
                        .await
                        .unwrap();
                    seen.push(format!("{}: local {local} strong {strong}", n.base));
                }
                panic!(
                    "{} reads {v}:\n{}\n{}",
                    node.base,
                    seen.join("\n"),
                    stdout.lines().rev().take(30).collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// `INCR` from three regions at once on a strong namespace ends at the
/// exact total on every node; and two compare-and-sets of one version in
/// two regions never both succeed.
async fn strong_incr_counts_exactly_and_two_cas_of_one_version_never_both_win() {
    let _serial = SERIAL.lock().await;
    let e = strong_cluster("strong-incr", 170, 40).await;
    let c = client();
    wait_for_members(&c, &e.nodes).await;
    const EACH: i64 = 20;
    let mut tasks = Vec::new();
    for node in &e.nodes {
        let addr = node.resp.clone().expect("resp address");
        tasks.push(tokio::spawn(async move {
            let mut conn = common::resp_connect(&addr).await;
            for _ in 0..EACH {
                loop {
                    let r: redis::RedisResult<i64> =
                        redis::cmd("INCR").arg("hits").query_async(&mut conn).await;
                    match r {
                        Ok(_) => break,
                        // No majority in time: nothing was written; retry.
                        Err(e) if e.code() == Some("TRYAGAIN") && !e.to_string().contains("unknown") => {}
                        Err(e) => panic!("INCR: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = (3 * EACH).to_string();
    for node in &e.nodes {
        reads_at(&c, &node.url("/v1/kv/s/hits"), &total).await;
    }
    // A duel: both regions read version v, both compare-and-set it.
    let url = |i: usize| e.nodes[i].url("/v1/kv/s/duel");
    assert!(c.put(url(0)).body("start").send().await.unwrap().status().is_success());
    for round in 0..5 {
        let r = c.get(url(0)).header("geocache-consistency", "strong").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        let (a, b) = tokio::join!(
            c.put(url(0)).header("if-match", &etag).body(format!("montreal {round}")).send(),
            c.put(url(1)).header("if-match", &etag).body(format!("frankfurt {round}")).send()
        );
        let statuses = [a.unwrap().status(), b.unwrap().status()];
        let won = statuses.iter().filter(|s| s.is_success()).count();
        assert_eq!(won, 1, "round {round}: exactly one CAS of {etag} wins: {statuses:?}");
        assert!(statuses.contains(&StatusCode::PRECONDITION_FAILED), "{statuses:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A region cut off from the other two has no majority: its strong writes
/// answer 503 (and RESP `-TRYAGAIN`) and change nothing, while it still
/// serves local reads; the majority side keeps writing; after the heal the
/// cut-off region writes again and reads what the majority wrote.
async fn a_region_cut_off_gets_503_for_strong_writes_and_serves_local_reads() {
    let _serial = SERIAL.lock().await;
    let e = strong_cluster("strong-cut", 180, 10).await;
    let c = client();
    wait_for_members(&c, &e.nodes).await;
    let url = |i: usize| e.nodes[i].url("/v1/kv/s/k");
    assert_eq!(c.put(url(2)).body("before").send().await.unwrap().status(), StatusCode::CREATED);
    reads_at(&c, &url(0), "before").await;
    e.emulator.partition("tokyo", "montreal");
    e.emulator.partition("tokyo", "frankfurt");
    let r = c.put(url(2)).body("from the minority").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = r.json().await.unwrap();
    // Unknown when its accept left (this node held the key's next ballot
    // promised): its own acceptor took it, so it may yet be chosen.
    let code = body["code"].as_str().unwrap_or_default();
    assert!(["strong_unavailable", "strong_outcome_unknown"].contains(&code), "{body}");
    let mut conn = common::resp_connect(e.nodes[2].resp.as_ref().unwrap()).await;
    let set: redis::RedisResult<String> = redis::cmd("SET").arg("k").arg("x").query_async(&mut conn).await;
    assert_eq!(set.unwrap_err().code(), Some("TRYAGAIN"));
    reads_at(&c, &url(2), "before").await;
    assert_eq!(c.put(url(0)).body("majority").send().await.unwrap().status(), StatusCode::OK);
    let strong_read = c.get(url(2)).header("geocache-consistency", "strong").send().await.unwrap();
    assert_eq!(strong_read.status(), StatusCode::SERVICE_UNAVAILABLE, "no linearizable read either");
    e.emulator.heal("tokyo", "montreal");
    e.emulator.heal("tokyo", "frankfurt");
    let r = c.get(url(2)).header("geocache-consistency", "strong").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "majority", "the minority's write was never made");
    assert_eq!(c.put(url(2)).body("after").send().await.unwrap().status(), StatusCode::OK);
    reads_at(&c, &url(1), "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Every node killed and started again with its data dir: the acceptors'
/// promises and versions are back, so a compare-and-set of the version
/// read before the restart succeeds once, and a second one fails.
async fn strong_versions_survive_a_restart_of_every_node() {
    let _serial = SERIAL.lock().await;
    let mut e = strong_cluster("strong-restart", 190, 5).await;
    let c = client();
    wait_for_members(&c, &e.nodes).await;
    let url = |nodes: &[Node], i: usize| nodes[i].url("/v1/kv/s/v");
    for n in 0..3 {
        assert!(c.put(url(&e.nodes, n)).body(format!("v{n}")).send().await.unwrap().status().is_success());
    }
    let r = c.get(url(&e.nodes, 0)).header("geocache-consistency", "strong").send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    for node in std::mem::take(&mut e.nodes) {
        node.kill();
    }
    e.nodes = (0..3).map(|i| e.start(i)).collect();
    wait_for_members(&c, &e.nodes).await;
    let r = c.get(url(&e.nodes, 1)).header("geocache-consistency", "strong").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag, "the same version after the restart");
    assert_eq!(r.text().await.unwrap(), "v2");
    let first = c.put(url(&e.nodes, 1)).header("if-match", &etag).body("next").send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = c.put(url(&e.nodes, 2)).header("if-match", &etag).body("again").send().await.unwrap();
    assert_eq!(second.status(), StatusCode::PRECONDITION_FAILED);
}

/// The flags of `e`'s node `i` with `--strong-acceptors` set to `list`, and
/// `--strong-acceptor-bootstrap` when `bootstrap`.
fn with_acceptors(e: &mut Emulated, i: usize, list: &str, bootstrap: bool) {
    let args = &mut e.launch[i].1;
    if let Some(at) = args.iter().position(|a| a == "--strong-acceptors") {
        args[at + 1] = list.to_string();
    } else {
        args.extend(["--strong-acceptors".to_string(), list.to_string()]);
    }
    args.retain(|a| a != "--strong-acceptor-bootstrap");
    if bootstrap {
        args.push("--strong-acceptor-bootstrap".to_string());
    }
}

/// Restarts node `i` of `e` with its current flags and data dir.
async fn restart(c: &Client, e: &mut Emulated, i: usize) {
    e.nodes[i].stop();
    e.nodes[i] = e.start(i);
    let started = Instant::now();
    while !c.get(e.nodes[i].url("/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "node {i} not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until each of `live` sees each other of `live` up.
async fn wait_for_up(c: &Client, e: &Emulated, live: &[usize]) {
    let started = Instant::now();
    for &i in live {
        loop {
            let view: serde_json::Value =
                c.get(e.nodes[i].url("/v1/cluster")).send().await.unwrap().json().await.unwrap();
            let up: Vec<String> = view["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["state"] == "up")
                .map(|m| m["name"].as_str().unwrap_or_default().to_string())
                .collect();
            if live.iter().filter(|&&j| j != i).all(|j| up.contains(&format!("node-{}", j + 1))) {
                break;
            }
            assert!(started.elapsed() < CONVERGE_TIMEOUT, "node {i} sees {view}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Replacing an acceptor, as docs/OPERATIONS.md says: acceptors node-1..3,
/// then every node on node-1..4 (node-4 bootstrapped), a refresh, then
/// every node on node-1,2,4 and node-3 gone. Half the keys were written
/// while node-2 was cut off (so only node-1 and node-3 held them); with
/// node-1 cut off at the end, node-2 and node-4 alone must still give every
/// key its value and version. A wiped acceptor restarted without the
/// bootstrap flag stays mute.
async fn the_acceptor_set_changes_by_the_documented_procedure_without_losing_a_version() {
    let _serial = SERIAL.lock().await;
    let dir = temp_dir("strong-change-dirs");
    let regions = ["montreal", "frankfurt", "tokyo", "sydney"];
    let specs: Vec<(&str, u64)> = regions.iter().zip(1..).map(|(r, id)| (*r, id)).collect();
    let mut e = emulated_cluster_with("strong-change", 200, &specs, |i| {
        let mut args = vec![
            "--strong-acceptors".to_string(),
            "node-1,node-2,node-3".to_string(),
            "--data-dir".to_string(),
            dir.join(format!("data-{i}")).display().to_string(),
        ];
        if i < 3 {
            args.push("--strong-acceptor-bootstrap".to_string());
        }
        args
    })
    .await;
    for (a, b) in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)] {
        e.emulator.set_link(regions[a], regions[b], LinkSpec { delay_ms: 5, ..LinkSpec::default() });
    }
    let c = client();
    wait_for_members(&c, &e.nodes).await;
    let put = |nodes: &[Node], i: usize, key: &str, value: &str| {
        c.put(nodes[i].url(&format!("/v1/kv/s/{key}")))
            .header("geocache-consistency", "strong")
            .body(value.to_string())
            .send()
    };
    for other in ["montreal", "tokyo", "sydney"] {
        e.emulator.partition("frankfurt", other);
    }
    for k in 0..5 {
        assert!(put(&e.nodes, 0, &format!("k{k}"), &format!("v{k}")).await.unwrap().status().is_success());
    }
    for other in ["montreal", "tokyo", "sydney"] {
        e.emulator.heal("frankfurt", other);
    }
    let mut etags = Vec::new();
    for k in 0..10 {
        let r = put(&e.nodes, 2, &format!("k{k}"), &format!("v{k}")).await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        etags.push(r.headers()["etag"].to_str().unwrap().to_string());
    }
    // Step 1: every node on the four, the new one bootstrapped.
    for i in 0..4 {
        with_acceptors(&mut e, i, "node-1,node-2,node-3,node-4", i == 3);
        restart(&c, &mut e, i).await;
    }
    wait_for_up(&c, &e, &[0, 1, 2, 3]).await;
    // Step 2: refresh through the four, on the old acceptors.
    for i in [0, 2] {
        let r = c.post(e.nodes[i].url("/v1/admin/strong/refresh")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["refreshed"].as_u64().unwrap() >= 10, "{body}");
    }
    // Step 3: every node left on the new three; node-3 leaves.
    e.nodes[2].stop();
    for i in [0, 1, 3] {
        with_acceptors(&mut e, i, "node-1,node-2,node-4", false);
        restart(&c, &mut e, i).await;
    }
    wait_for_up(&c, &e, &[0, 1, 3]).await;
    for other in ["frankfurt", "tokyo", "sydney"] {
        e.emulator.partition("montreal", other);
    }
    for (k, etag) in etags.iter().enumerate() {
        let r = c
            .get(e.nodes[1].url(&format!("/v1/kv/s/k{k}")))
            .header("geocache-consistency", "strong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "k{k}");
        assert_eq!(r.headers()["etag"].to_str().unwrap(), etag, "k{k}: the same version");
        assert_eq!(r.text().await.unwrap(), format!("v{k}"));
    }
    let cas = |i: usize| {
        c.put(e.nodes[i].url("/v1/kv/s/k0"))
            .header("geocache-consistency", "strong")
            .header("if-match", &etags[0])
            .body("next")
            .send()
    };
    assert_eq!(cas(1).await.unwrap().status(), StatusCode::OK);
    assert_eq!(cas(3).await.unwrap().status(), StatusCode::PRECONDITION_FAILED);
    // A wiped acceptor, restarted without the flag, stays mute: with it
    // and node-2 the only ones node-4 reaches, there is no majority.
    for other in ["frankfurt", "tokyo", "sydney"] {
        e.emulator.heal("montreal", other);
    }
    e.nodes[1].stop();
    let wiped = dir.join("data-1");
    std::fs::remove_dir_all(&wiped).unwrap();
    restart(&c, &mut e, 1).await;
    wait_for_up(&c, &e, &[0, 1, 3]).await;
    e.emulator.partition("montreal", "sydney");
    let r = put(&e.nodes, 3, "k1", "while node-2 is mute").await.unwrap();
    let status = r.status();
    let view = c.get(e.nodes[3].url("/v1/cluster")).send().await.unwrap().text().await.unwrap();
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a wiped acceptor must not answer: {}\n{view}",
        r.text().await.unwrap()
    );
}
