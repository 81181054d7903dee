//! A user-space UDP relay between nodes: per region pair delay, jitter and
//! loss, partitions, and counts of what crosses each pair.
//!
//! Each node binds its gossip socket at a real address and advertises a
//! proxy address owned by the emulator. A datagram from node `j` to node
//! `i`'s proxy is held for the link's delay and then sent to `i`'s real
//! address *from `j`'s proxy*, so every node sees every peer at the peer's
//! advertised address, as the gossip transport requires.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Datagrams held at once across all links; past this, new ones are
/// dropped (and counted), so a flood cannot grow memory.
pub const IN_FLIGHT_MAX_COUNT: u64 = 100_000;

/// How one region pair behaves (both directions).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkSpec {
    /// One-way delay.
    pub delay_ms: u64,
    /// Uniform extra delay in `[0, jitter_ms]`.
    pub jitter_ms: u64,
    /// Share of datagrams dropped, 0.0 to 1.0.
    pub loss: f64,
    /// Whether the pair is cut off.
    pub partitioned: bool,
}

/// A node behind the emulator.
#[derive(Clone, Debug)]
pub struct EmulatedNode {
    /// Its region.
    pub region: String,
    /// The address its gossip socket binds.
    pub real: SocketAddr,
    /// The address the emulator listens on for it (its advertised address).
    pub proxy: SocketAddr,
}

impl EmulatedNode {
    /// Node `index` of a cluster on loopback: its gossip socket on
    /// 127.0.0.(base+index), advertised through the emulator on
    /// 127.0.0.(base+50+index), each on a free UDP port.
    ///
    /// # Errors
    ///
    /// The IO error of finding a free port.
    pub fn on_loopback(region: &str, base: u8, index: u8) -> std::io::Result<EmulatedNode> {
        let free = |last: u8| -> std::io::Result<SocketAddr> {
            std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, last], 0)))?.local_addr()
        };
        let real = free(base.saturating_add(index))?;
        let proxy = free(base.saturating_add(50).saturating_add(index))?;
        Ok(EmulatedNode { region: region.to_owned(), real, proxy })
    }

    /// The `geocache serve` flags that put this node behind the emulator:
    /// gossip bound on `real`, advertised as `proxy`, its region, and
    /// `--seeds` through `seed`'s proxy unless this node is the seed.
    pub fn serve_args(&self, seed: &EmulatedNode) -> Vec<String> {
        let mut args = vec![
            "--gossip".to_owned(),
            self.real.to_string(),
            "--advertise".to_owned(),
            self.proxy.to_string(),
            "--region".to_owned(),
            self.region.clone(),
        ];
        if seed.proxy != self.proxy {
            args.push("--seeds".to_owned());
            args.push(seed.proxy.to_string());
        }
        args
    }
}

/// Counts for one directed region pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Datagrams delivered.
    pub datagrams: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Datagrams dropped (loss, partition, or the in-flight bound).
    pub dropped: u64,
}

struct Shared {
    links: Mutex<BTreeMap<(String, String), LinkSpec>>,
    counts: Mutex<BTreeMap<(String, String), LinkCounts>>,
    in_flight: AtomicU64,
    rng: Mutex<u64>,
}

impl Shared {
    fn spec(&self, a: &str, b: &str) -> LinkSpec {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.get(&key(a, b)).copied().unwrap_or_default()
    }

    /// splitmix64: seeded, so a run's losses and jitter repeat.
    fn random(&self) -> u64 {
        let mut s = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn count(&self, from: &str, to: &str, bytes: usize, delivered: bool) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let c = counts.entry((from.to_string(), to.to_string())).or_default();
        if delivered {
            c.datagrams += 1;
            c.bytes += bytes as u64;
        } else {
            c.dropped += 1;
        }
    }
}

fn key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// The running emulator; its tasks stop when it is dropped.
pub struct LinkEmulator {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl LinkEmulator {
    /// Binds a proxy socket per node and starts relaying. Links default to
    /// no delay, no loss; `seed` drives loss and jitter.
    ///
    /// # Errors
    ///
    /// The IO error of a proxy address that cannot be bound.
    pub async fn start(nodes: Vec<EmulatedNode>, seed: u64) -> std::io::Result<LinkEmulator> {
        let shared = Arc::new(Shared {
            links: Mutex::new(BTreeMap::new()),
            counts: Mutex::new(BTreeMap::new()),
            in_flight: AtomicU64::new(0),
            rng: Mutex::new(seed),
        });
        let mut sockets = Vec::new();
        for n in &nodes {
            sockets.push(Arc::new(UdpSocket::bind(n.proxy).await?));
        }
        // Who a datagram comes from, by the real address it was sent from.
        let by_real: Arc<BTreeMap<SocketAddr, usize>> =
            Arc::new(nodes.iter().enumerate().map(|(i, n)| (n.real, i)).collect());
        let nodes = Arc::new(nodes);
        let sockets = Arc::new(sockets);
        let mut tasks = Vec::new();
        for to in 0..nodes.len() {
            let (shared, nodes, sockets, by_real) =
                (shared.clone(), nodes.clone(), sockets.clone(), by_real.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok((len, src)) = sockets[to].recv_from(&mut buf).await else { continue };
                    let Some(&from) = by_real.get(&src) else { continue };
                    let (rf, rt) = (nodes[from].region.clone(), nodes[to].region.clone());
                    let spec = shared.spec(&rf, &rt);
                    let lost = spec.loss > 0.0 && (shared.random() as f64 / u64::MAX as f64) < spec.loss;
                    if spec.partitioned
                        || lost
                        || shared.in_flight.load(Ordering::Relaxed) >= IN_FLIGHT_MAX_COUNT
                    {
                        shared.count(&rf, &rt, len, false);
                        continue;
                    }
                    let jitter = if spec.jitter_ms > 0 { shared.random() % (spec.jitter_ms + 1) } else { 0 };
                    let delay = Duration::from_millis(spec.delay_ms + jitter);
                    let data = buf[..len].to_vec();
                    let out = sockets[from].clone();
                    let dest = nodes[to].real;
                    shared.in_flight.fetch_add(1, Ordering::Relaxed);
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let sent = out.send_to(&data, dest).await.is_ok();
                        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                        shared.count(&rf, &rt, data.len(), sent);
                    });
                }
            }));
        }
        Ok(LinkEmulator { shared, tasks })
    }

    /// Sets how the pair of regions behaves (both directions).
    pub fn set_link(&self, a: &str, b: &str, spec: LinkSpec) {
        self.shared.links.lock().unwrap_or_else(|e| e.into_inner()).insert(key(a, b), spec);
    }

    /// How the pair of regions behaves now.
    pub fn link(&self, a: &str, b: &str) -> LinkSpec {
        self.shared.spec(a, b)
    }

    /// Cuts the pair off.
    pub fn partition(&self, a: &str, b: &str) {
        let mut spec = self.shared.spec(a, b);
        spec.partitioned = true;
        self.set_link(a, b, spec);
    }

    /// Restores the pair.
    pub fn heal(&self, a: &str, b: &str) {
        let mut spec = self.shared.spec(a, b);
        spec.partitioned = false;
        self.set_link(a, b, spec);
    }

    /// Counts per directed region pair `(from, to)`.
    pub fn counts(&self) -> BTreeMap<(String, String), LinkCounts> {
        self.shared.counts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for LinkEmulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
