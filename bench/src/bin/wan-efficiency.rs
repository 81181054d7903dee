//! Bytes and messages crossing region boundaries per write, against
//! all-to-all sending.
//!
//! Three regions of three nodes (real processes, gossip through the link
//! emulator at a small one-way delay). Phases, each measured as the change
//! of two counters — the emulator's UDP bytes and datagrams between distinct
//! regions (QUIC, TLS, keep-alives and membership included) and the nodes'
//! own `geocache_replication_*` counters with `scope="wan"`:
//!
//! 1. settle, then idle: no writes, to get the background rate per second
//!    (membership, keep-alives, anti-entropy);
//! 2. isolated writes, one at a time and far apart, spread over every node:
//!    the bytes of one write's delta message as the node counts them (the
//!    unit of all-to-all);
//! 3. the load: N writes spread over every node at a fixed total rate,
//!    until every node holds every key;
//! 4. idle again. The idle rate subtracted from phases 2 and 3 is that of
//!    phases 1 and 4 together; both are printed, so drift shows.
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
    /// Isolated writes (phase 2), 100 ms apart.
    #[arg(long, default_value_t = 54)]
    isolated: usize,
    /// Seconds of each idle phase.
    #[arg(long, default_value_t = 5)]
    idle_seconds: u64,
    /// Seconds to wait after membership converged, before measuring.
    #[arg(long, default_value_t = 5)]
    settle_seconds: u64,
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
const ISOLATED_GAP: Duration = Duration::from_millis(100);

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

    /// Both changes together (as if one phase).
    fn plus(&self, o: &Change) -> Change {
        Change {
            seconds: self.seconds + o.seconds,
            udp_bytes: self.udp_bytes + o.udp_bytes,
            udp_datagrams: self.udp_datagrams + o.udp_datagrams,
            delta_messages: self.delta_messages + o.delta_messages,
            delta_bytes: self.delta_bytes + o.delta_bytes,
            all_messages: self.all_messages + o.all_messages,
            all_bytes: self.all_bytes + o.all_bytes,
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

    eprintln!(
        "wan-efficiency: settling for {} s, then idle for {} s",
        args.settle_seconds, args.idle_seconds
    );
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    let s0 = snapshot(&cluster, &c).await?;
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let s1 = snapshot(&cluster, &c).await?;
    let idle_before = Change::between(&s0, &s1);

    eprintln!("wan-efficiency: {} isolated writes", args.isolated);
    for k in 0..args.isolated {
        put(&c, &cluster, k % n, &format!("iso-{k}"), &value).await?;
        tokio::time::sleep(ISOLATED_GAP).await;
    }
    expected += args.isolated as u64;
    converge(&cluster, &c, expected).await?;
    let s2 = snapshot(&cluster, &c).await?;

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
    eprintln!("wan-efficiency: idle for {} s", args.idle_seconds);
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let s4 = snapshot(&cluster, &c).await?;
    let idle_after = Change::between(&s3, &s4);
    let idle = idle_before.plus(&idle_after);
    let iso = Change::between(&s1, &s2).minus_idle(&idle);
    if iso.delta_messages < 1.0 {
        bail!("the isolated writes sent no WAN delta message: {iso:?}");
    }
    let load_raw = Change::between(&s2, &s3);
    let load = load_raw.minus_idle(&idle);

    let w = args.writes as f64;
    let remote = ((REGIONS.len() - 1) * NODES_PER_REGION) as f64;
    let per_delta_app = iso.delta_bytes / iso.delta_messages;
    let rate = |c: &Change| thousands(c.udp_bytes / c.seconds.max(f64::EPSILON));
    let mut s = String::new();
    s.push_str(&format!(
        "{} regions x {} nodes (real `geocache` release processes, gossip over QUIC through the user-space \
         link emulator, {} ms one way between regions). {} writes of {} B at {}/s in all, round-robin over \
         every node, until every node holds every key (phase of {:.1} s). Wire = UDP datagrams between \
         regions counted by the emulator (QUIC, TLS, keep-alives, membership included); node counters = \
         `geocache_replication_*{{scope=\"wan\"}}` summed over nodes. Idle (no writes; {:.1} s before and \
         {:.1} s after the writes, {} and {} B/s): **{} B/s** and {:.1} datagrams/s on the wire, {} B/s in \
         node counters; subtracted below for each phase's duration. All-to-all = each write sent by its \
         origin to the {} nodes of the other regions, each message the size of one isolated write's delta \
         message as counted by the node, measured in the same run ({} writes {} ms apart): {:.0} B. On the \
         wire each message also carries QUIC/TLS framing and draws acks, so all-to-all would cost about \
         the same multiple there; the wire rows give the absolute cost and its overhead over the node's \
         own count.\n\n",
        REGIONS.len(),
        NODES_PER_REGION,
        args.delay_ms,
        args.writes,
        args.value_bytes,
        args.writes_per_s,
        load.seconds,
        idle_before.seconds,
        idle_after.seconds,
        rate(&idle_before),
        rate(&idle_after),
        rate(&idle),
        idle.udp_datagrams / idle.seconds,
        thousands(idle.all_bytes / idle.seconds),
        remote,
        args.isolated,
        ISOLATED_GAP.as_millis(),
        per_delta_app,
    ));
    s.push_str("| per write | measured | all-to-all | **measured / all-to-all** |\n|---|---|---|---|\n");
    let row = |s: &mut String, what: &str, measured: f64, all: Option<f64>, digits: usize| {
        let (all, ratio) = match all {
            Some(a) if a > 0.0 => (format!("{a:.0}"), format!("**{:.2}**", measured / a)),
            _ => (String::new(), String::new()),
        };
        s.push_str(&format!("| {what} | {measured:.digits$} | {all} | {ratio} |\n"));
    };
    row(&mut s, "WAN delta messages (node counters)", load.delta_messages / w, Some(remote), 2);
    row(&mut s, "WAN delta bytes (node counters)", load.delta_bytes / w, Some(remote * per_delta_app), 0);
    row(&mut s, "WAN messages, all kinds (deltas, acks, sync)", load.all_messages / w, None, 2);
    row(&mut s, "WAN bytes, all kinds", load.all_bytes / w, None, 0);
    row(&mut s, "wire datagrams between regions, idle subtracted", load.udp_datagrams / w, None, 2);
    row(&mut s, "wire bytes between regions, idle subtracted", load.udp_bytes / w, None, 0);
    row(&mut s, "wire bytes between regions, raw", load_raw.udp_bytes / w, None, 0);
    s.push_str(&format!(
        "| wire bytes / node-counter bytes (all kinds), idle subtracted | {:.2} | | |\n",
        load.udp_bytes / load.all_bytes.max(f64::EPSILON)
    ));
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
