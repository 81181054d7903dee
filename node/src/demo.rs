//! `geocache demo`: a local cluster of three regions, two nodes each, on
//! loopback addresses, with an ephemeral CA. One process, six nodes, each
//! with its own store, HTTP API, RESP port and gossip endpoint.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use thiserror::Error;
use tokio::net::TcpListener;

use crate::cluster::{Cluster, ClusterOptions};
use crate::config::{Config, ConfigLayer};
use crate::server;
use geocache_crdt::NodeId;
use geocache_gossip::certs::Ca;
use geocache_gossip::peer::Peer;
use geocache_gossip::quic::ClusterTls;

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

/// A demo node that is serving.
#[derive(Clone, Debug)]
pub struct DemoNode {
    /// Its id.
    pub node: NodeId,
    /// Its region.
    pub region: &'static str,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its RESP address.
    pub resp: SocketAddr,
    /// Its gossip address.
    pub gossip: SocketAddr,
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

/// Starts the six nodes, serving until `shutdown` resolves (each node gets
/// its own clone). Returns once all of them listen.
pub async fn start(
    shutdown: tokio::sync::watch::Receiver<bool>,
    http_port: u16,
    resp_port: u16,
    gossip_port: u16,
) -> Result<Vec<DemoNode>, DemoError> {
    let ca = Ca::generate("geocache demo CA").map_err(|e| DemoError::Certs(e.to_string()))?;
    let seed = SocketAddr::new(loopback(0), gossip_port);
    let mut nodes = Vec::new();
    for (r, (region, lat, lon)) in REGIONS.iter().enumerate() {
        for n in 0..NODES_PER_REGION {
            let index = r * NODES_PER_REGION + n;
            let ip = loopback(index);
            let http = SocketAddr::new(ip, http_port);
            let resp = SocketAddr::new(ip, resp_port);
            let gossip = SocketAddr::new(ip, gossip_port);
            let node = NodeId(index as u64 + 1);
            let layer = ConfigLayer {
                node_id: Some(node.0),
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
            let cert = ca
                .issue_in(&format!("node-{}", node.0), Some(region))
                .map_err(|e| DemoError::Certs(e.to_string()))?;
            let tls = ClusterTls::from_node_cert(&cert).map_err(|e| DemoError::Certs(e.to_string()))?;
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
            let cluster = Cluster::start(
                state.store.clone(),
                ClusterOptions {
                    resume: None,
                    me,
                    bind: gossip,
                    seeds,
                    tls,
                    backlog_bytes_max: 64 << 20,
                    tombstone_retention_ms: state.config.tombstone_ttl.as_millis() as u64,
                    metrics: state.metrics.clone(),
                    health: state.replication_health.clone(),
                    fill_timeout: std::time::Duration::from_millis(200),
                },
            )
            .await
            .map_err(|e| DemoError::Cluster { addr: gossip, message: e.to_string() })?;
            state.cluster = Some(cluster);
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
            nodes.push(DemoNode { node, region, http, resp, gossip, earlier });
        }
    }
    Ok(nodes)
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
pub fn banner(nodes: &[DemoNode]) -> String {
    let mut out = String::from("geocache demo: 3 regions x 2 nodes on loopback, replicating over QUIC\n\n");
    for n in nodes {
        out.push_str(&format!(
            "  {:<10} node {}  http://{}  resp {}  (gossip {})\n",
            n.region, n.node, n.http, n.resp, n.gossip
        ));
    }
    if let (Some(first), Some(last)) = (nodes.first(), nodes.last()) {
        out.push_str(&format!(
            "\nTry it: write in {} and read in {}:\n\n  curl -X PUT http://{}/v1/kv/demo/hello --data-binary 'hi from {}'\n  curl http://{}/v1/kv/demo/hello\n  curl http://{}/v1/cluster\n\nOr with a Redis client (namespace `default`):\n\n  redis-cli -h {} -p {} SET greeting hi\n  redis-cli -h {} -p {} GET greeting\n",
            first.region,
            last.region,
            first.http,
            first.region,
            last.http,
            last.http,
            first.resp.ip(),
            first.resp.port(),
            last.resp.ip(),
            last.resp.port()
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
            "\nThe earlier Python client's examples run as they are: `Cache(name=...)` (localhost:{EARLIER_CLIENT_PORT}) reaches {} node {}; every node also answers at its address, port {EARLIER_CLIENT_PORT}.\n",
            first.region, first.node
        ));
    }
    if !taken.is_empty() {
        out.push_str(&format!(
            "\nNot serving the earlier client's port on: {} (the earlier examples need it; everything else works).\n",
            taken.join("; ")
        ));
    }
    out.push_str("\nCtrl-C stops the cluster.\n");
    out
}
