//! Latency of a strong compare-and-set across regions.
//!
//! Three regions of one node each, every pair at `--delay-ms` one way;
//! each node is a strong acceptor with its own data dir. Sequential
//! compare-and-sets (`PUT` with `If-Match` and `Geocache-Consistency:
//! strong`), each against the version the previous one returned:
//!
//! - *keeps its proposer*: every CAS at node a, so a's proposer holds the
//!   key's next ballot and goes straight to accept: one round trip to the
//!   nearest majority (a's own acceptor and the nearest other).
//! - *alternating proposers*: CAS at a, then b, then a...: each one
//!   prepares first, two round trips.
//! - references in the same run: an eventual `PUT` at a (acked locally),
//!   and a strong read at a node that does not hold the key's ballot.
//!
//! Prints a markdown table (or writes it to `--out`).

use anyhow::{bail, Context, Result};
use clap::Parser;
use geocache_bench::cluster::Cluster;
use geocache_bench::process::geocache_bin;
use geocache_bench::stats::{ms, quantile};
use geocache_tests::link_emulator::LinkSpec;
use std::time::{Duration, Instant};

/// Strong compare-and-set latency over the link emulator.
#[derive(Parser)]
struct Args {
    /// One-way delay between every pair of regions, ms.
    #[arg(long, default_value_t = 40)]
    delay_ms: u64,
    /// Compare-and-sets per case.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Write the markdown table here instead of stdout.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// What the run measured.
struct Run {
    cases: Vec<Case>,
    /// The transport's round trip between node a and the others (QUIC's
    /// estimate, `rtt_ms` in `/v1/cluster`), ms: the emulator's delay plus
    /// the relays' and the stack's own time.
    measured_rtt_ms: Vec<u64>,
}

struct Case {
    name: &'static str,
    target: &'static str,
    latencies: Vec<Duration>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut measured = None;
    geocache_bench::run_bounded(Duration::from_secs(540), async {
        measured = Some(run(&geocache_bin()?, &args).await?);
        Ok(())
    })
    .await?;
    let table = table(&measured.context("the run ended early")?, &args);
    match &args.out {
        Some(path) => std::fs::write(path, table).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{table}"),
    }
    Ok(())
}

async fn run(bin: &std::path::Path, args: &Args) -> Result<Run> {
    let cluster = Cluster::start_with(bin, "strong-cas", 150, &["a", "b", "c"], |i, dir| {
        vec![
            "--strong-acceptors".into(),
            "node-1,node-2,node-3".into(),
            "--strong-acceptor-bootstrap".into(),
            "--data-dir".into(),
            dir.join(format!("data-{i}")).display().to_string(),
        ]
    })
    .await?;
    cluster.set_all_links(LinkSpec { delay_ms: args.delay_ms, ..LinkSpec::default() });
    let c = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    cluster.wait_for_members(&c).await?;
    let url = |i: usize, key: &str| cluster.nodes[i].url(&format!("/v1/kv/bench/{key}"));

    let mut cases = Vec::new();
    // Warm-up: connections, and the first (two round trip) write of each key.
    let mut kept = strong_put(&c, &url(0, "kept"), None).await?.1;
    let mut moving = strong_put(&c, &url(0, "moving"), None).await?.1;
    let latencies = cas_chain(&c, |_| url(0, "kept"), &mut kept, args.count).await?;
    cases.push(Case {
        name: "strong CAS, key keeps its proposer (node a)",
        target: "≤ 1 RTT + 5 ms",
        latencies,
    });
    let latencies = cas_chain(&c, |n| url(1 - n % 2, "moving"), &mut moving, args.count).await?;
    cases.push(Case {
        name: "strong CAS, proposers alternate (a, b, a, ...)",
        target: "≤ 2 RTT + 5 ms",
        latencies,
    });
    let mut latencies = Vec::new();
    for _ in 0..args.count {
        let started = Instant::now();
        let r = c.get(url(2, "kept")).header("geocache-consistency", "strong").send().await?;
        if !r.status().is_success() {
            bail!("strong GET: {}", r.status());
        }
        latencies.push(started.elapsed());
    }
    cases.push(Case { name: "strong read at node c (reference)", target: "—", latencies });
    let mut latencies = Vec::new();
    for n in 0..args.count {
        let started = Instant::now();
        let r = c.put(url(0, "eventual")).body(n.to_string()).send().await?;
        if !r.status().is_success() {
            bail!("PUT: {}", r.status());
        }
        latencies.push(started.elapsed());
    }
    cases.push(Case { name: "eventual PUT at node a (reference)", target: "—", latencies });
    for case in &mut cases {
        case.latencies.sort();
    }
    let view: serde_json::Value = c.get(cluster.nodes[0].url("/v1/cluster")).send().await?.json().await?;
    let measured_rtt_ms =
        view["members"].as_array().into_iter().flatten().filter_map(|m| m["rtt_ms"].as_u64()).collect();
    Ok(Run { cases, measured_rtt_ms })
}

/// `count` strong compare-and-sets, the `n`th at `url(n)`, each against
/// the version the one before returned (starting at `etag`); their
/// latencies.
async fn cas_chain(
    c: &reqwest::Client,
    url: impl Fn(usize) -> String,
    etag: &mut String,
    count: usize,
) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(count);
    for n in 0..count {
        let (took, next) = strong_put(c, &url(n), Some(etag)).await?;
        latencies.push(took);
        *etag = next;
    }
    Ok(latencies)
}

/// A strong `PUT`, conditional on `etag` when given; its latency and the
/// new version's ETag.
async fn strong_put(c: &reqwest::Client, url: &str, etag: Option<&str>) -> Result<(Duration, String)> {
    let mut request = c.put(url).header("geocache-consistency", "strong").body("v");
    if let Some(etag) = etag {
        request = request.header("if-match", etag);
    }
    let started = Instant::now();
    let r = request.send().await?;
    let took = started.elapsed();
    if !r.status().is_success() {
        bail!("strong PUT {url}: {} {}", r.status(), r.text().await.unwrap_or_default());
    }
    let etag = r.headers().get("etag").context("no ETag")?.to_str()?.to_string();
    Ok((took, etag))
}

fn table(run: &Run, args: &Args) -> String {
    let rtt = 2.0 * args.delay_ms as f64;
    let measured = run.measured_rtt_ms.iter().max().copied().unwrap_or(0);
    let mut s = format!(
        "Three regions of one node each (real `geocache` release processes, gossip over QUIC through the \
         user-space link emulator), every pair {} ms apart one way (RTT {rtt:.0} ms); each node is a strong \
         acceptor with its own data dir (slots flushed before every answer). {} sequential requests per \
         row over HTTP on loopback, each compare-and-set against the version the previous one returned. \
         The nearest majority is a node's own acceptor and one other: one round trip. The transport \
         measured a round trip of {measured} ms between node a and the others (QUIC's estimate: the \
         emulator's delay plus its relays and the stack).\n\n",
        args.delay_ms, args.count
    );
    s.push_str("| case | p50 | p99 | max | **p50 / RTT** | p50 / measured RTT | target |\n|---|---|---|---|---|---|---|\n");
    for case in &run.cases {
        let p50 = quantile(&case.latencies, 0.5);
        s.push_str(&format!(
            "| {} | {} | {} | {} | **{:.2}** | {:.2} | {} |\n",
            case.name,
            ms(p50),
            ms(quantile(&case.latencies, 0.99)),
            ms(case.latencies.last().copied().unwrap_or_default()),
            p50.as_secs_f64() * 1_000.0 / rtt,
            p50.as_secs_f64() * 1_000.0 / (measured.max(1) as f64),
            case.target,
        ));
    }
    s
}
