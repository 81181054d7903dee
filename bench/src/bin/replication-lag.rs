//! Visibility lag across regions at several one-way delays.
//!
//! For each delay: three regions of one node each (a, b, c), every pair of
//! regions at that one-way delay in the link emulator. A writer writes to
//! one key at node a at a fixed rate, the value being a sequence number;
//! one reader per other region polls that key at its node. A write's lag is
//! from just before its PUT is sent to the completion of the first GET at a
//! reader that returns it (or a later write: then it is counted as
//! superseded, and its lag is an upper bound).
//!
//! Prints a markdown table (or writes it to `--out`).

use anyhow::{bail, Context, Result};
use clap::Parser;
use geocache_bench::cluster::Cluster;
use geocache_bench::process::geocache_bin;
use geocache_bench::stats::{ms, quantile};
use geocache_tests::link_emulator::LinkSpec;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Visibility lag over the link emulator at several one-way delays.
#[derive(Parser)]
struct Args {
    /// One-way delays between every pair of regions, ms; 0 gives the
    /// overhead of the write, the replication path and the polling.
    #[arg(long, value_delimiter = ',', default_value = "0,10,40,80")]
    delays_ms: Vec<u64>,
    /// Writes per second at the writer.
    #[arg(long, default_value_t = 50)]
    writes_per_s: u64,
    /// Seconds of writing per delay.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// How long a reader sleeps between two GETs.
    #[arg(long, default_value_t = 1)]
    poll_ms: u64,
    /// Write the markdown table here instead of stdout.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

const VISIBLE_TIMEOUT: Duration = Duration::from_secs(30);

struct Row {
    delay_ms: u64,
    lags: Vec<Duration>,
    writes: usize,
    superseded: usize,
    put_p50: Duration,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut rows = Vec::new();
    geocache_bench::run_bounded(Duration::from_secs(540), async {
        let bin = geocache_bin()?;
        for &delay_ms in &args.delays_ms {
            eprintln!("replication-lag: one-way delay {delay_ms} ms");
            rows.push(one_delay(&bin, delay_ms, &args).await?);
        }
        Ok(())
    })
    .await?;
    let table = table(&rows, &args);
    match &args.out {
        Some(path) => std::fs::write(path, table).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{table}"),
    }
    Ok(())
}

async fn one_delay(bin: &std::path::Path, delay_ms: u64, args: &Args) -> Result<Row> {
    let cluster = Cluster::start(bin, "lag", 150, &["a", "b", "c"]).await?;
    cluster.set_all_links(LinkSpec { delay_ms, ..LinkSpec::default() });
    let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    cluster.wait_for_members(&c).await?;
    let url = |i: usize| cluster.nodes[i].url("/v1/kv/bench/lag");

    // Warm up: connections and relays set up before measuring.
    put(&c, &url(0), "0").await?;
    for i in 1..3 {
        let started = Instant::now();
        while get(&c, &url(i)).await? != Some(0) {
            if started.elapsed() > VISIBLE_TIMEOUT {
                bail!("warm-up write never reached node {i}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    let writes = (args.writes_per_s * args.seconds) as usize;
    // sent[s] / seen[r][s]: instants of write s (1-based; 0 is the warm-up).
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; writes + 1]));
    let stop = Arc::new(AtomicBool::new(false));
    let poll = Duration::from_millis(args.poll_ms);
    let mut readers = Vec::new();
    for i in 1..3 {
        let (url, stop) = (url(i), stop.clone());
        // One client per reader: its own keep-alive connection.
        let rc = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        readers.push(tokio::spawn(async move {
            let mut seen: Vec<Option<(Instant, bool)>> = vec![None; writes + 1];
            let mut last = 0usize;
            while !stop.load(Ordering::Relaxed) && last < writes {
                if let Some(v) = get(&rc, &url).await? {
                    let now = Instant::now();
                    let v = usize::try_from(v)?.min(writes);
                    for (s, slot) in seen.iter_mut().enumerate().take(v + 1).skip(last + 1) {
                        *slot = Some((now, s < v));
                    }
                    last = last.max(v);
                }
                tokio::time::sleep(poll).await;
            }
            anyhow::Ok(seen)
        }));
    }

    let mut put_lat = Vec::with_capacity(writes);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.writes_per_s as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for s in 1..=writes {
        tick.tick().await;
        let t = Instant::now();
        sent.lock().unwrap_or_else(|e| e.into_inner())[s] = Some(t);
        put(&c, &url(0), &s.to_string()).await?;
        put_lat.push(t.elapsed());
    }
    let deadline = tokio::time::sleep(VISIBLE_TIMEOUT);
    tokio::pin!(deadline);
    let mut lags = Vec::new();
    let mut superseded = 0;
    let sent = sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (i, r) in readers.into_iter().enumerate() {
        let seen = tokio::select! {
            r = r => r??,
            _ = &mut deadline => {
                stop.store(true, Ordering::Relaxed);
                bail!("reader {} did not see the last write within {VISIBLE_TIMEOUT:?}", i + 1)
            }
        };
        for s in 1..=writes {
            let (Some(t0), Some((t1, sup))) = (sent[s], seen[s]) else {
                bail!("write {s} was never seen by reader {}", i + 1);
            };
            lags.push(t1.saturating_duration_since(t0));
            superseded += usize::from(sup);
        }
    }
    lags.sort();
    put_lat.sort();
    Ok(Row { delay_ms, lags, writes, superseded, put_p50: quantile(&put_lat, 0.5) })
}

async fn put(c: &reqwest::Client, url: &str, body: &str) -> Result<()> {
    let r = c.put(url).body(body.to_string()).send().await?;
    if !r.status().is_success() {
        bail!("PUT {url}: {}", r.status());
    }
    Ok(())
}

async fn get(c: &reqwest::Client, url: &str) -> Result<Option<u64>> {
    let r = c.get(url).send().await?;
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let text = r.error_for_status()?.text().await?;
    Ok(Some(text.trim().parse().with_context(|| format!("value {text:?}"))?))
}

fn table(rows: &[Row], args: &Args) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Three regions of one node each (real `geocache` release processes, gossip over QUIC through the \
         user-space link emulator), every pair of regions at the one-way delay of the row. One writer at \
         region a writes {} times at {} writes/s to one key (the value is a sequence number); a reader in \
         each other region polls that key at its node over HTTP, sleeping {} ms between GETs (tokio timer: \
         1-2 ms between polls). Lag = from just before the PUT is sent to the end of the first GET at a \
         reader that returns that write or a later one; so it includes the HTTP write (PUT p50 in the \
         table) and overstates by up to one poll interval plus one GET. A write first seen through a later \
         one is counted as superseded (its lag is an upper bound). Samples = writes x 2 readers.\n\n",
        args.writes_per_s * args.seconds,
        args.writes_per_s,
        args.poll_ms
    ));
    s.push_str(
        "| one-way delay | samples | PUT p50 | lag p50 | lag p99 | lag max | p50 - delay | **p50 / delay** | p99 / delay | superseded |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let (p50, p99) = (quantile(&r.lags, 0.5), quantile(&r.lags, 0.99));
        let d = Duration::from_millis(r.delay_ms);
        let ratio = |x: Duration| {
            if r.delay_ms == 0 {
                "—".to_string()
            } else {
                format!("{:.2}", x.as_secs_f64() / d.as_secs_f64())
            }
        };
        let over = p50.as_secs_f64() * 1_000.0 - r.delay_ms as f64;
        s.push_str(&format!(
            "| {} ms | {} | {} | {} | {} | {} | {over:.2} ms | **{}** | {} | {} of {} |\n",
            r.delay_ms,
            r.lags.len(),
            ms(r.put_p50),
            ms(p50),
            ms(p99),
            ms(r.lags.last().copied().unwrap_or_default()),
            ratio(p50),
            ratio(p99),
            r.superseded,
            r.writes * 2,
        ));
    }
    s
}
