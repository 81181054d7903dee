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
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let signal = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = server::serve(state, listener, None, signal).await {
                    tracing::error!(%http, error = %e, "demo node stopped");
                }
            });
            nodes.push(DemoNode { node, region, http, resp, gossip });
        }
    }
    Ok(nodes)
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
            "\nTry it: write in {} and read in {}:\n\n  curl -X PUT http://{}/v1/kv/demo/hello --data-binary 'hi from {}'\n  curl http://{}/v1/kv/demo/hello\n  curl http://{}/v1/cluster\n\nOr with a Redis client (namespace `default`):\n\n  redis-cli -h {} -p {} SET greeting hi\n  redis-cli -h {} -p {} GET greeting\n\nCtrl-C stops the cluster.\n",
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
    out
}
