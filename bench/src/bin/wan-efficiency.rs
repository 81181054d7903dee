//! Bytes and messages crossing region boundaries per write, against
//! all-to-all sending.
//!
//! Three regions of three nodes (real processes, gossip through the link
//! emulator at a small one-way delay). Phases, each measured as the change
//! of two counters — the emulator's UDP bytes and datagrams between distinct
//! regions (QUIC, TLS, keep-alives and membership included) and the nodes'
//! own `geocache_replication_*` counters with `scope="wan"`:
//!
//! 1. idle: no writes, to get the background rate per second;
//! 2. isolated writes, one at a time and far apart, spread over every node:
//!    what one delta message of one write costs (the unit of all-to-all);
//! 3. the load: N writes spread over every node at a fixed total rate,
//!    until every node holds every key.
//!
//! All-to-all: each write sent by its origin to every node of the other
//! regions, `(regions - 1) x nodes per region` messages of the isolated size.

use anyhow::{bail, Context, Result};
use clap::Parser;
use geocache_bench::cluster::Cluster;
use geocache_bench::process::geocache_bin;
use geocache_bench::stats::thousands;
use geocache_tests::link_emulator::LinkSpec;
use std::time::{Duration, Instant};

/// WAN bytes and messages per write over the link emulator.
#[derive(Parser)]
struct Args {
    /// Writes in the load phase.
    #[arg(long, default_value_t = 1000)]
    writes: usize,
    /// Value size, bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Writes per second in all during the load phase.
    #[arg(long, default_value_t = 200)]
    writes_per_s: u64,
    /// Isolated writes (phase 2), 200 ms apart.
    #[arg(long, default_value_t = 18)]
    isolated: usize,
    /// Seconds of the idle phase.
    #[arg(long, default_value_t = 5)]
    idle_seconds: u64,
    /// One-way delay between every pair of regions, ms.
    #[arg(long, default_value_t = 5)]
    delay_ms: u64,
    /// Write the markdown table here instead of stdout.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

const REGIONS: [&str; 3] = ["a", "b", "c"];
const NODES_PER_REGION: usize = 3;
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
const ISOLATED_GAP: Duration = Duration::from_millis(200);

/// Counters at one instant.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    at: Option<Instant>,
    udp_bytes: f64,
    udp_datagrams: f64,
    delta_messages: f64,
    delta_bytes: f64,
    all_messages: f64,
    all_bytes: f64,
}

/// The change between two snapshots.
#[derive(Clone, Copy, Debug, Default)]
struct Change {
    seconds: f64,
    udp_bytes: f64,
    udp_datagrams: f64,
    delta_messages: f64,
    delta_bytes: f64,
    all_messages: f64,
    all_bytes: f64,
}

impl Change {
    fn between(a: &Snapshot, b: &Snapshot) -> Change {
        let seconds = match (a.at, b.at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        Change {
            seconds,
            udp_bytes: b.udp_bytes - a.udp_bytes,
            udp_datagrams: b.udp_datagrams - a.udp_datagrams,
            delta_messages: b.delta_messages - a.delta_messages,
            delta_bytes: b.delta_bytes - a.delta_bytes,
            all_messages: b.all_messages - a.all_messages,
            all_bytes: b.all_bytes - a.all_bytes,
        }
    }

    /// This change minus what the idle rate would have sent in as long.
    fn minus_idle(&self, idle: &Change) -> Change {
        let k = if idle.seconds > 0.0 { self.seconds / idle.seconds } else { 0.0 };
        Change {
            seconds: self.seconds,
            udp_bytes: self.udp_bytes - k * idle.udp_bytes,
            udp_datagrams: self.udp_datagrams - k * idle.udp_datagrams,
            delta_messages: self.delta_messages - k * idle.delta_messages,
            delta_bytes: self.delta_bytes - k * idle.delta_bytes,
            all_messages: self.all_messages - k * idle.all_messages,
            all_bytes: self.all_bytes - k * idle.all_bytes,
        }
    }
}

async fn snapshot(cluster: &Cluster, c: &reqwest::Client) -> Result<Snapshot> {
    let wan = "scope=\"wan\"";
    let deltas = "kind=\"deltas\"";
    let (udp_bytes, udp_datagrams) = cluster.cross_region();
    let messages = "geocache_replication_messages_total";
    let bytes = "geocache_replication_sent_bytes_total";
    Ok(Snapshot {
        at: Some(Instant::now()),
        udp_bytes: udp_bytes as f64,
        udp_datagrams: udp_datagrams as f64,
        delta_messages: cluster.metric_sum(c, messages, &[wan, deltas]).await?,
        delta_bytes: cluster.metric_sum(c, bytes, &[wan, deltas]).await?,
        all_messages: cluster.metric_sum(c, messages, &[wan]).await?,
        all_bytes: cluster.metric_sum(c, bytes, &[wan]).await?,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut table = String::new();
    geocache_bench::run_bounded(Duration::from_secs(540), async {
        table = run(&args).await?;
        Ok(())
    })
    .await?;
    match &args.out {
        Some(path) => std::fs::write(path, table).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{table}"),
    }
    Ok(())
}

async fn run(args: &Args) -> Result<String> {
    let bin = geocache_bin()?;
    let regions: Vec<&str> = REGIONS.iter().flat_map(|r| std::iter::repeat_n(*r, NODES_PER_REGION)).collect();
    let cluster = Cluster::start(&bin, "wan", 150, &regions).await?;
    cluster.set_all_links(LinkSpec { delay_ms: args.delay_ms, ..LinkSpec::default() });
    let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    eprintln!("wan-efficiency: waiting for membership of {} nodes", regions.len());
    cluster.wait_for_members(&c).await?;
    let n = cluster.nodes.len();
    let value = vec![b'v'; args.value_bytes];

    // Warm up: one write from every node, visible everywhere.
    for i in 0..n {
        put(&c, &cluster, i, &format!("warm-{i}"), &value).await?;
    }
    let mut expected = n as u64;
    converge(&cluster, &c, expected).await?;

    eprintln!("wan-efficiency: idle for {} s", args.idle_seconds);
    let s0 = snapshot(&cluster, &c).await?;
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let s1 = snapshot(&cluster, &c).await?;
    let idle = Change::between(&s0, &s1);

    eprintln!("wan-efficiency: {} isolated writes", args.isolated);
    for k in 0..args.isolated {
        put(&c, &cluster, k % n, &format!("iso-{k}"), &value).await?;
        tokio::time::sleep(ISOLATED_GAP).await;
    }
    expected += args.isolated as u64;
    converge(&cluster, &c, expected).await?;
    let s2 = snapshot(&cluster, &c).await?;
    let iso = Change::between(&s1, &s2).minus_idle(&idle);
    if iso.delta_messages < 1.0 {
        bail!("the isolated writes sent no WAN delta message: {iso:?}");
    }

    eprintln!("wan-efficiency: {} writes at {}/s", args.writes, args.writes_per_s);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.writes_per_s as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = tokio::task::JoinSet::new();
    for w in 0..args.writes {
        tick.tick().await;
        let (c, url, body) =
            (c.clone(), cluster.nodes[w % n].url(&format!("/v1/kv/bench/w-{w}")), value.clone());
        in_flight.spawn(async move {
            let r = c.put(&url).body(body).send().await?;
            if !r.status().is_success() {
                bail!("PUT {url}: {}", r.status());
            }
            anyhow::Ok(())
        });
        while let Some(done) = in_flight.try_join_next() {
            done??;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    expected += args.writes as u64;
    converge(&cluster, &c, expected).await?;
    let s3 = snapshot(&cluster, &c).await?;
    let load_raw = Change::between(&s2, &s3);
    let load = load_raw.minus_idle(&idle);

    let w = args.writes as f64;
    let remote = ((REGIONS.len() - 1) * NODES_PER_REGION) as f64;
    let per_delta_app = iso.delta_bytes / iso.delta_messages;
    let per_delta_wire = iso.udp_bytes / iso.delta_messages;
    let mut s = String::new();
    s.push_str(&format!(
        "{} regions x {} nodes (real `geocache` release processes, gossip over QUIC through the user-space \
         link emulator, {} ms one way between regions). {} writes of {} B at {}/s in all, round-robin over \
         every node, until every node holds every key (phase of {:.1} s). Wire = UDP datagrams between \
         regions counted by the emulator (QUIC, TLS, keep-alives, membership included); node counters = \
         `geocache_replication_*{{scope=\"wan\"}}` summed over nodes. Idle (no writes, {:.1} s): **{} B/s** \
         and {:.1} datagrams/s on the wire, {} B/s in node counters; subtracted below for the phase's \
         duration. All-to-all = each write sent by its origin to the {} nodes of the other regions, each \
         message the size of one isolated write's delta message, measured in the same run ({} writes {} \
         ms apart): {:.0} B in node counters, {:.0} B on the wire (its acks and QUIC framing included).\n\n",
        REGIONS.len(),
        NODES_PER_REGION,
        args.delay_ms,
        args.writes,
        args.value_bytes,
        args.writes_per_s,
        load.seconds,
        idle.seconds,
        thousands(idle.udp_bytes / idle.seconds),
        idle.udp_datagrams / idle.seconds,
        thousands(idle.all_bytes / idle.seconds),
        remote,
        args.isolated,
        ISOLATED_GAP.as_millis(),
        per_delta_app,
        per_delta_wire,
    ));
    s.push_str("| per write | measured | all-to-all | **measured / all-to-all** |\n|---|---|---|---|\n");
    let ratio = |a: f64, b: f64| format!("{:.2}", a / b);
    s.push_str(&format!(
        "| WAN delta messages (node counters) | {:.2} | {:.0} | **{}** |\n",
        load.delta_messages / w,
        remote,
        ratio(load.delta_messages / w, remote)
    ));
    s.push_str(&format!(
        "| WAN delta bytes (node counters) | {:.0} | {:.0} | **{}** |\n",
        load.delta_bytes / w,
        remote * per_delta_app,
        ratio(load.delta_bytes / w, remote * per_delta_app)
    ));
    s.push_str(&format!(
        "| WAN messages, all kinds (deltas, acks, sync) | {:.2} | | |\n",
        load.all_messages / w
    ));
    s.push_str(&format!("| WAN bytes, all kinds | {:.0} | | |\n", load.all_bytes / w));
    s.push_str(&format!(
        "| wire datagrams between regions, idle subtracted | {:.2} | | |\n",
        load.udp_datagrams / w
    ));
    s.push_str(&format!(
        "| **wire bytes between regions, idle subtracted** | {:.0} | {:.0} | **{}** |\n",
        load.udp_bytes / w,
        remote * per_delta_wire,
        ratio(load.udp_bytes / w, remote * per_delta_wire)
    ));
    s.push_str(&format!("| wire bytes between regions, raw | {:.0} | | |\n", load_raw.udp_bytes / w));
    Ok(s)
}

async fn put(c: &reqwest::Client, cluster: &Cluster, i: usize, key: &str, value: &[u8]) -> Result<()> {
    let url = cluster.nodes[i].url(&format!("/v1/kv/bench/{key}"));
    let r = c.put(&url).body(value.to_vec()).send().await?;
    if !r.status().is_success() {
        bail!("PUT {url}: {}", r.status());
    }
    Ok(())
}

/// Waits (bounded) until every node holds at least `expected` entries.
async fn converge(cluster: &Cluster, c: &reqwest::Client, expected: u64) -> Result<()> {
    let started = Instant::now();
    for i in 0..cluster.nodes.len() {
        loop {
            let have = cluster.entries(c, i).await?;
            if have >= expected {
                break;
            }
            if started.elapsed() > CONVERGE_TIMEOUT {
                bail!("node {i} holds {have} of {expected} entries after {CONVERGE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}
