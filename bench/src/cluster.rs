//! Nodes in regions, each behind the link emulator, with a cluster CA.
//!
//! Node `i` binds gossip on `127.0.0.(base+i)` and is advertised through the
//! emulator on `127.0.0.(base+50+i)`; its HTTP API is on the first address,
//! port 0. Everything stays in 127.0.0.0/8.

use anyhow::{bail, Context, Result};
use geocache_tests::link_emulator::{EmulatedNode, LinkEmulator, LinkSpec};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::NodeProcess;

/// How long membership may take to converge.
pub const MEMBERS_TIMEOUT: Duration = Duration::from_secs(60);

/// A running cluster; its processes and emulator stop when it is dropped.
pub struct Cluster {
    /// The nodes, in the order of the specs.
    pub nodes: Vec<NodeProcess>,
    /// Each node's region.
    pub regions: Vec<String>,
    /// The emulator all gossip goes through.
    pub emulator: LinkEmulator,
    dir: PathBuf,
}

impl Cluster {
    /// Starts one node per entry of `regions` (node ids 1, 2, ...), with
    /// addresses from `127.0.0.base`; `base + 50 + regions.len()` must stay
    /// under 255.
    ///
    /// # Errors
    ///
    /// Certificates, a port, or a process that could not be set up.
    pub async fn start(bin: &Path, name: &str, base: u8, regions: &[&str]) -> Result<Cluster> {
        Cluster::start_with(bin, name, base, regions, |_, _| Vec::new()).await
    }

    /// As [`start`](Self::start), with node `i`'s extra flags from
    /// `extra(i, dir)` (`dir`: the cluster's temporary directory).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn start_with(
        bin: &Path,
        name: &str,
        base: u8,
        regions: &[&str],
        extra: impl Fn(usize, &Path) -> Vec<String>,
    ) -> Result<Cluster> {
        assert!(usize::from(base) + 50 + regions.len() < 255, "addresses past 127.0.0.254");
        let dir = std::env::temp_dir().join(format!("geocache-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let ca = dir.join("ca");
        let ca_s = ca.to_str().context("temp path is not UTF-8")?;
        NodeProcess::certs(bin, &["init", "--out", ca_s])?;
        let mut emulated = Vec::new();
        for (i, region) in regions.iter().enumerate() {
            emulated.push(EmulatedNode::on_loopback(region, base, u8::try_from(i)?)?);
        }
        let emulator = LinkEmulator::start(emulated.clone(), 7).await?;
        let mut nodes = Vec::new();
        for i in 0..regions.len() {
            let id = i + 1;
            let out = dir.join(format!("node-{id}"));
            let out_s = out.to_str().context("temp path is not UTF-8")?;
            NodeProcess::certs(
                bin,
                &["issue", "--ca", ca_s, "--node", &format!("node-{id}"), "--out", out_s],
            )?;
            let mut args = emulated[i].serve_args(&emulated[0]);
            args.extend([
                "--node-id".into(),
                id.to_string(),
                "--ca".into(),
                format!("{out_s}/ca.crt"),
                "--cert".into(),
                format!("{out_s}/node.crt"),
                "--key".into(),
                format!("{out_s}/node.key"),
            ]);
            args.extend(extra(i, &dir));
            nodes.push(NodeProcess::start(bin, &emulated[i].real.ip().to_string(), &args)?);
        }
        Ok(Cluster { nodes, regions: regions.iter().map(|r| r.to_string()).collect(), emulator, dir })
    }

    /// Sets every pair of distinct regions to `spec`.
    pub fn set_all_links(&self, spec: LinkSpec) {
        let mut names = self.regions.clone();
        names.sort();
        names.dedup();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                self.emulator.set_link(a, b, spec);
            }
        }
    }

    /// Waits (bounded) until every node lists every other as a member.
    ///
    /// # Errors
    ///
    /// A node that does not within [`MEMBERS_TIMEOUT`].
    pub async fn wait_for_members(&self, c: &reqwest::Client) -> Result<()> {
        let started = Instant::now();
        for node in &self.nodes {
            loop {
                let view: serde_json::Value = c.get(node.url("/v1/cluster")).send().await?.json().await?;
                if view["members"].as_array().is_some_and(|m| m.len() == self.nodes.len() - 1) {
                    break;
                }
                if started.elapsed() > MEMBERS_TIMEOUT {
                    bail!("{} does not see every member after {MEMBERS_TIMEOUT:?}: {view}", node.base);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Bytes and datagrams delivered between distinct regions so far.
    pub fn cross_region(&self) -> (u64, u64) {
        self.emulator
            .counts()
            .iter()
            .filter(|((from, to), _)| from != to)
            .fold((0, 0), |(b, d), (_, c)| (b + c.bytes, d + c.datagrams))
    }

    /// The sum over all nodes of the `/metrics` samples named `name` whose
    /// labels contain every one of `labels` (e.g. `scope="wan"`).
    ///
    /// # Errors
    ///
    /// A node that does not answer.
    pub async fn metric_sum(&self, c: &reqwest::Client, name: &str, labels: &[&str]) -> Result<f64> {
        let mut sum = 0.0;
        for node in &self.nodes {
            let text = c.get(node.url("/metrics")).send().await?.error_for_status()?.text().await?;
            sum += metric_in(&text, name, labels);
        }
        Ok(sum)
    }

    /// `entries` of `GET /v1/node` at node `i`.
    ///
    /// # Errors
    ///
    /// The node does not answer or the field is missing.
    pub async fn entries(&self, c: &reqwest::Client, i: usize) -> Result<u64> {
        let v: serde_json::Value = c.get(self.nodes[i].url("/v1/node")).send().await?.json().await?;
        v["entries"].as_u64().context("/v1/node has no entries")
    }
}

/// The sum of the samples named `name` in a Prometheus text exposition whose
/// labels contain every one of `labels`.
pub fn metric_in(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|want| rest.contains(want))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Processes first (their own Drop), then their certificates.
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::metric_in;

    #[test]
    fn sums_matching_samples() {
        let text = "# HELP x\n\
            geocache_replication_messages_total{scope=\"wan\",kind=\"deltas\"} 3\n\
            geocache_replication_messages_total{scope=\"lan\",kind=\"deltas\"} 5\n\
            geocache_replication_messages_total{scope=\"wan\",kind=\"acks\"} 7\n";
        let name = "geocache_replication_messages_total";
        assert_eq!(metric_in(text, name, &["scope=\"wan\"", "kind=\"deltas\""]), 3.0);
        assert_eq!(metric_in(text, name, &["scope=\"wan\""]), 10.0);
        assert_eq!(metric_in(text, name, &[]), 15.0);
    }
}
