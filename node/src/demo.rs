//! `geocache demo`: a local cluster of three regions, two nodes each, on
//! loopback addresses, with an ephemeral CA. One process, six nodes, each
//! with its own store, HTTP API, RESP port and gossip endpoint, and the
//! link emulator between them: each region pair is as far apart as the
//! fiber between their cities (the simulator's delay model), so a write
//! in montreal reaches frankfurt after ~44 ms, as it would for real.
//! `geocache demo partition A B` cuts a pair through the demo's control
//! port (`demo_control.rs`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::net::TcpListener;

use crate::cluster::{Cluster, ClusterOptions};
use crate::config::{Config, ConfigLayer};
use crate::server;
use geocache_gossip::certs::Ca;
use geocache_gossip::peer::Peer;
use geocache_gossip::quic::ClusterTls;
use geocache_link_emulator::{DelayModel, EmulatedNode, LinkEmulator, LinkSpec};

/// The demo's regions: name, latitude, longitude.
pub const REGIONS: [(&str, f64, f64); 3] =
    [("montreal", 45.50, -73.57), ("sao-paulo", -23.55, -46.63), ("frankfurt", 50.11, 8.68)];
/// Nodes per region.
pub const NODES_PER_REGION: usize = 2;
/// The HTTP port every demo node shares, each on its own loopback address.
pub const HTTP_PORT: u16 = 7070;
/// The RESP (Redis protocol) port every demo node shares.
pub const RESP_PORT: u16 = 6379;
/// The gossip port every demo node shares.
pub const GOSSIP_PORT: u16 = 7946;
/// The port the earlier Python client assumes (`Cache(port=5000)`, at
/// `localhost`): every demo node also serves its HTTP API there, on its own
/// address, and the first one on 127.0.0.1 too, so that client's own
/// examples run unchanged, and the hosts `/api/closest` names are
/// reachable at the port the client keeps.
pub const EARLIER_CLIENT_PORT: u16 = 5000;
/// Where the running demo takes `geocache demo partition` and `heal`, on
/// 127.0.0.1.
pub const CONTROL_PORT: u16 = 7199;
/// How long the banner waits for every node to see every other one up.
const FORMATION_WAIT: Duration = Duration::from_secs(30);

/// Where the demo listens.
#[derive(Clone, Copy, Debug)]
pub struct DemoOptions {
    /// Each node's HTTP port, on its own address.
    pub http_port: u16,
    /// Each node's RESP port.
    pub resp_port: u16,
    /// Each node's gossip port (its real socket, and the emulator's proxy
    /// for it on another address).
    pub gossip_port: u16,
    /// The control port on 127.0.0.1.
    pub control_port: u16,
    /// Whether region pairs get the delay of their distance (otherwise
    /// none; partitions work either way).
    pub distances: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            http_port: HTTP_PORT,
            resp_port: RESP_PORT,
            gossip_port: GOSSIP_PORT,
            control_port: CONTROL_PORT,
            distances: true,
        }
    }
}

/// The one-way delay the demo puts between two of its regions, ms: the
/// simulator's fiber model over their coordinates, to the millisecond
/// (the emulator's resolution). Same region: none.
pub fn modelled_delay_ms(a: &str, b: &str) -> Option<u64> {
    let at = |name: &str| REGIONS.iter().find(|r| r.0 == name).map(|r| (r.1, r.2));
    let (pa, pb) = (at(a)?, at(b)?);
    if a == b {
        return Some(0);
    }
    Some(DelayModel::default().one_way_ms(pa, pb).round() as u64)
}

/// The running demo: its nodes and the links between them.
pub struct Demo {
    /// The nodes, region by region.
    pub nodes: Vec<DemoNode>,
    /// The emulated links; partitions are set here.
    pub links: Arc<LinkEmulator>,
    /// The options it runs with.
    pub options: DemoOptions,
}

/// A demo node that is serving.
#[derive(Clone)]
pub struct DemoNode {
    /// Its name (`montreal-1`): in its certificate, its logs, `/v1/cluster`
    /// and the status page.
    pub name: String,
    /// This life's origin id, under which it writes and gossips.
    pub life: geocache_crdt::NodeId,
    /// Its region.
    pub region: &'static str,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its RESP address.
    pub resp: SocketAddr,
    /// Its gossip address (where peers reach it: the emulator's proxy).
    pub gossip: SocketAddr,
    /// Its replication, to wait for the cluster to form.
    pub cluster: Cluster,
    /// Where it also serves the earlier client's port
    /// ([`EARLIER_CLIENT_PORT`]), and the addresses it could not take.
    pub earlier: Vec<Result<SocketAddr, String>>,
}

/// The demo could not start.
#[derive(Debug, Error)]
pub enum DemoError {
    /// Certificates could not be made.
    #[error("making the demo CA: {0}")]
    Certs(String),
    /// A port is taken.
    #[error("cannot listen on {addr}: {source} (is another demo running?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The link emulator could not start.
    #[error("starting the link emulator: {0}")]
    Links(std::io::Error),
    /// Replication could not start.
    #[error("starting replication on {addr}: {message}")]
    Cluster {
        /// The gossip address.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
}

fn loopback(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + index as u8))
}

/// The address node `index` is reached at by its peers: the emulator's
/// proxy for it, 50 addresses above its own.
fn proxy(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 52 + index as u8))
}

/// Starts the six nodes and the links between them, serving until
/// `shutdown` resolves (each node gets its own clone). Returns once all of
/// them listen.
pub async fn start(
    shutdown: tokio::sync::watch::Receiver<bool>,
    options: DemoOptions,
) -> Result<Demo, DemoError> {
    let ca = Ca::generate("geocache demo CA").map_err(|e| DemoError::Certs(e.to_string()))?;
    let emulated: Vec<EmulatedNode> = (0..REGIONS.len() * NODES_PER_REGION)
        .map(|index| EmulatedNode {
            region: REGIONS[index / NODES_PER_REGION].0.to_string(),
            real: SocketAddr::new(loopback(index), options.gossip_port),
            proxy: SocketAddr::new(proxy(index), options.gossip_port),
        })
        .collect();
    let links = LinkEmulator::start(emulated.clone(), 1).await.map_err(DemoError::Links)?;
    for (a, ..) in REGIONS {
        for (b, ..) in REGIONS {
            let delay_ms = if options.distances { modelled_delay_ms(a, b).unwrap_or(0) } else { 0 };
            if a < b {
                links.set_link(a, b, LinkSpec { delay_ms, ..LinkSpec::default() });
            }
        }
    }
    let seed = emulated[0].proxy;
    let mut nodes = Vec::new();
    for (r, (region, lat, lon)) in REGIONS.iter().enumerate() {
        for n in 0..NODES_PER_REGION {
            let index = r * NODES_PER_REGION + n;
            let ip = loopback(index);
            let http = SocketAddr::new(ip, options.http_port);
            let resp = SocketAddr::new(ip, options.resp_port);
            let name = format!("{region}-{}", n + 1);
            let layer = ConfigLayer {
                node_id: Some(index as u64 + 1),
                region: Some(region.to_string()),
                lat: Some(*lat),
                lon: Some(*lon),
                http: Some(http),
                resp: Some(resp),
                max_memory: Some(bytesize::ByteSize::mib(64)),
                ..ConfigLayer::default()
            };
            let config = Config::resolve(ConfigLayer::default(), layer)
                .map_err(|e| DemoError::Certs(e.to_string()))?;
            let listener =
                TcpListener::bind(http).await.map_err(|source| DemoError::Bind { addr: http, source })?;
            let resp_listener =
                TcpListener::bind(resp).await.map_err(|source| DemoError::Bind { addr: resp, source })?;
            let mut state = server::state(config);
            let cert = ca.issue_in(&name, Some(region)).map_err(|e| DemoError::Certs(e.to_string()))?;
            let tls = ClusterTls::from_node_cert(&cert).map_err(|e| DemoError::Certs(e.to_string()))?;
            let gossip = emulated[index].proxy;
            let me = Peer {
                node: state.store.node(),
                name: tls.identity().name.clone(),
                region: region.to_string(),
                lat: *lat,
                lon: *lon,
                gossip,
                http,
                incarnation: state.incarnation,
                kind: geocache_gossip::peer::NodeKind::Full,
            };
            let seeds = if index == 0 { Vec::new() } else { vec![seed] };
            let bind = emulated[index].real;
            let cluster = Cluster::start(
                state.store.clone(),
                ClusterOptions {
                    resume: None,
                    me,
                    bind,
                    seeds,
                    tls,
                    backlog_bytes_max: 64 << 20,
                    tombstone_retention_ms: state.config.tombstone_ttl.as_millis() as u64,
                    metrics: state.metrics.clone(),
                    health: state.replication_health.clone(),
                    fill_timeout: std::time::Duration::from_millis(200),
                    // The demo's nodes keep their data in memory, where an
                    // acceptor's promises would not outlive a crash.
                    strong: None,
                    acceptor_slots: Vec::new(),
                },
            )
            .await
            .map_err(|e| DemoError::Cluster { addr: bind, message: e.to_string() })?;
            state.cluster = Some(cluster.clone());
            let life = state.store.node();
            let resp_state = state.clone();
            let resp_stop = shutdown.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::resp::serve(resp_state, resp_listener, None, resp_stop).await {
                    tracing::error!(%resp, error = %e, "demo node's RESP port stopped");
                }
            });
            // The earlier client's port, as an extra door to the same node:
            // a taken port only loses the earlier examples, not the demo.
            let mut earlier = Vec::new();
            let mut earlier_addrs = vec![SocketAddr::new(ip, EARLIER_CLIENT_PORT)];
            if index == 0 {
                earlier_addrs.push(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), EARLIER_CLIENT_PORT));
            }
            for addr in earlier_addrs {
                match TcpListener::bind(addr).await {
                    Ok(extra) => {
                        serve_until(state.clone(), extra, shutdown.clone());
                        earlier.push(Ok(addr));
                    }
                    Err(e) => earlier.push(Err(format!("{addr}: {e}"))),
                }
            }
            serve_until(state, listener, shutdown.clone());
            nodes.push(DemoNode { name, life, region, http, resp, gossip, cluster, earlier });
        }
    }
    Ok(Demo { nodes, links: Arc::new(links), options })
}

impl Demo {
    /// Waits until every node sees every other one up (at most
    /// [`FORMATION_WAIT`]); false if the time ran out.
    pub async fn formed(&self) -> bool {
        let started = Instant::now();
        let others = self.nodes.len().saturating_sub(1);
        loop {
            let all = self
                .nodes
                .iter()
                .all(|n| n.cluster.view().members.iter().filter(|m| m.state == "up").count() == others);
            if all {
                return true;
            }
            if started.elapsed() > FORMATION_WAIT {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The modelled one-way delay of every region pair, ms, when the demo
    /// runs with distances.
    pub fn delays(&self) -> BTreeMap<(String, String), u64> {
        let mut out = BTreeMap::new();
        for (a, ..) in REGIONS {
            for (b, ..) in REGIONS {
                if a < b && self.options.distances {
                    out.insert((a.to_string(), b.to_string()), modelled_delay_ms(a, b).unwrap_or(0));
                }
            }
        }
        out
    }
}

/// Serves `state`'s HTTP API on `listener` until `shutdown` says so.
fn serve_until(
    state: crate::state::NodeState,
    listener: TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let addr = listener.local_addr().ok();
        let signal = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = server::serve(state, listener, None, signal).await {
            tracing::error!(?addr, error = %e, "demo node stopped");
        }
    });
}

/// What the demo prints once it runs.
pub fn banner(demo: &Demo, formed: bool) -> String {
    let nodes = &demo.nodes;
    let mut out = String::from("geocache demo: 3 regions x 2 nodes on loopback, replicating over QUIC\n\n");
    for n in nodes {
        out.push_str(&format!("  {:<12} http://{}  resp {}  (life {})\n", n.name, n.http, n.resp, n.life));
    }
    let delays = demo.delays();
    if delays.is_empty() {
        out.push_str("\nRegions are not apart: no emulated delay between them (--no-distances).\n");
    } else {
        let pairs: Vec<String> = delays.iter().map(|((a, b), ms)| format!("{a}-{b} {ms} ms")).collect();
        out.push_str(&format!(
            "\nBetween regions, the link emulator puts the fiber delay of the distance, one way: {}.\n",
            pairs.join(", ")
        ));
    }
    if !formed {
        out.push_str("\nNot every node sees every other one up yet; they go on trying.\n");
    }
    if let (Some(first), Some(last)) = (nodes.first(), nodes.last()) {
        out.push_str(&format!(
            "\nWatch it: http://{}/ui\n\nTry it: write in {} and read in {}:\n\n  curl -X PUT http://{}/v1/kv/demo/hello --data-binary 'hi from {}'\n  curl http://{}/v1/kv/demo/hello\n\nOr with a Redis client (namespace `default`):\n\n  redis-cli -h {} -p {} SET greeting hi\n  redis-cli -h {} -p {} GET greeting\n\nCut two regions apart for 20 s, and watch them heal:\n\n  geocache demo partition {} {} --for 20s\n",
            first.http,
            first.region,
            last.region,
            first.http,
            first.region,
            last.http,
            first.resp.ip(),
            first.resp.port(),
            last.resp.ip(),
            last.resp.port(),
            first.region,
            last.region,
        ));
    }
    let served: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.earlier.iter().filter_map(|e| e.as_ref().ok()))
        .map(|a| a.to_string())
        .collect();
    let taken: Vec<&str> = nodes
        .iter()
        .flat_map(|n| n.earlier.iter().filter_map(|e| e.as_ref().err()))
        .map(String::as_str)
        .collect();
    if let Some(first) = nodes.first().filter(|_| !served.is_empty()) {
        out.push_str(&format!(
            "\nThe earlier Python client's examples run as they are: `Cache(name=...)` (localhost:{EARLIER_CLIENT_PORT}) reaches {}; every node also answers at its address, port {EARLIER_CLIENT_PORT}.\n",
            first.name
        ));
    }
    if !taken.is_empty() {
        out.push_str(&format!(
            "\nNot serving the earlier client's port on: {} (the earlier examples need it; everything else works).\n",
            taken.join("; ")
        ));
    }
    out.push_str("\nLogs: warnings only (RUST_LOG=info for more). Ctrl-C stops the cluster.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_regions_are_as_far_apart_as_their_fiber() {
        assert_eq!(modelled_delay_ms("montreal", "montreal"), Some(0));
        let mf = modelled_delay_ms("montreal", "frankfurt").unwrap();
        assert!((40..48).contains(&mf), "{mf}");
        assert_eq!(modelled_delay_ms("frankfurt", "montreal"), Some(mf));
        assert!(modelled_delay_ms("sao-paulo", "frankfurt").unwrap() > mf);
        assert_eq!(modelled_delay_ms("montreal", "atlantis"), None);
    }
}
