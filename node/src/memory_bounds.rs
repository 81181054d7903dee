//! What a node may hold in memory at worst, term by term, from its
//! configuration: the figure `geocache serve --print-config` prints beside
//! `--max-memory`, and docs/OPERATIONS.md explains.
//!
//! `--max-memory` bounds the store (keys, values, tombstones, moka's own
//! structures, by the measured weigher). Everything else that grows with
//! load has a bound of its own, and they add up here.

use bytesize::ByteSize;
use std::fmt::Write;

use crate::config::Config;
use crate::resp;

/// The process without data: binary, runtime, allocator, moka's fixed
/// tables; and the allocator's slack over the store's weight. The
/// promise `RSS <= 1.15 x --max-memory + 32 MiB`, for a node whose
/// clients are within the connection terms below, is measured by
/// `bench/memory-bound.sh`.
pub const PROCESS_BASE_BYTES: u64 = 32 << 20;

/// The allocator's slack over the weigher, at most (measured 3-5 % at
/// 1 GiB, `bench/memory-bound.sh`).
pub const STORE_SLACK_PERCENT: u64 = 15;

/// What an HTTP connection holds besides a request's body: hyper's read
/// and write buffers and the headers.
const HTTP_CONNECTION_BYTES: u64 = 64 << 10;

/// What a strong slot or held promise costs besides its key and value: two
/// ballots, the version and stamps, the names of the last 16 proposers,
/// and the map's node.
const STRONG_SLOT_OVERHEAD_BYTES: u64 = 512;

/// One bound that adds to the total.
#[derive(Clone, Debug)]
pub struct Term {
    /// What it bounds.
    pub what: &'static str,
    /// How it is computed, with the flags that set it.
    pub how: String,
    /// Bytes.
    pub bytes: u64,
}

/// Every term for `config`, in the order they are printed.
pub fn terms(config: &Config) -> Vec<Term> {
    let max_memory = config.max_memory.as_u64();
    let value = config.value_bytes_max.as_u64();
    let key = config.key_bytes_max.as_u64();
    let mut out = vec![
        Term { what: "store", how: "--max-memory".into(), bytes: max_memory },
        Term {
            what: "store slack",
            how: format!("{STORE_SLACK_PERCENT} % of --max-memory (allocator size classes, moka)"),
            bytes: max_memory * STORE_SLACK_PERCENT / 100,
        },
        Term { what: "process", how: "binary, runtime, allocator".into(), bytes: PROCESS_BASE_BYTES },
    ];
    if config.data_dir.is_some() {
        use crate::persistence::{CACHE_BYTES, WRITE_BUFFER_BYTES};
        out.push(Term {
            what: "data dir",
            how: "--data-dir: fjall's block cache and write buffers".into(),
            bytes: CACHE_BYTES + WRITE_BUFFER_BYTES,
        });
    }
    if let Some(replication) = &config.replication {
        out.push(Term {
            what: "replication backlog",
            how: "--backlog-bytes-max".into(),
            bytes: replication.backlog_bytes_max.as_u64(),
        });
        out.push(Term {
            what: "replication send queues",
            how: "all peers together (QuicConfig::queued_bytes_max)".into(),
            bytes: geocache_gossip::quic::QUEUED_BYTES_MAX_DEFAULT as u64,
        });
    }
    if let Some(replication) = &config.replication {
        use geocache_gossip::interest::{
            INTEREST_BYTES_PER_KEY, INTEREST_KEYS_TOTAL_MAX, INTEREST_PENDING_BYTES_MAX,
        };
        if replication.kind == geocache_gossip::peer::NodeKind::Sidecar {
            out.push(Term {
                what: "interest untold to full nodes",
                how: "--sidecar: keys held, not yet told to the region's full nodes".into(),
                bytes: INTEREST_PENDING_BYTES_MAX as u64,
            });
        } else {
            out.push(Term {
                what: "sidecars' keys tracked",
                how: format!(
                    "{INTEREST_KEYS_TOTAL_MAX} keys x {INTEREST_BYTES_PER_KEY} B, over the region's sidecars"
                ),
                bytes: (INTEREST_KEYS_TOTAL_MAX * INTEREST_BYTES_PER_KEY) as u64,
            });
        }
    }
    if !config.strong_acceptors.is_empty() && config.replication.is_some() {
        use crate::strong::{ACCEPTOR_KEY_COUNT_MAX, STRONG_VALUE_BYTES_MAX};
        // A slot or a held promise: the key, the value, two ballots, the
        // last proposers' names and the map's node.
        let each = key + STRONG_VALUE_BYTES_MAX as u64 + STRONG_SLOT_OVERHEAD_BYTES;
        let keys = ACCEPTOR_KEY_COUNT_MAX as u64;
        let prepared = geocache_gossip::strong::ProposerConfig::default().prepared_key_count_max as u64;
        if config.data_dir.is_some() {
            out.push(Term {
                what: "strong acceptor slots",
                how: format!("--strong-acceptors: {keys} keys x (value <= 16 KiB + key + {STRONG_SLOT_OVERHEAD_BYTES} B)"),
                bytes: keys * each,
            });
        }
        out.push(Term {
            what: "strong proposer's held promises",
            how: format!("--strong-acceptors: {prepared} keys x (value <= 16 KiB + key + {STRONG_SLOT_OVERHEAD_BYTES} B)"),
            bytes: prepared * each,
        });
    }
    let http_each = value + HTTP_CONNECTION_BYTES;
    out.push(Term {
        what: "HTTP requests in flight",
        how: format!(
            "--http-connections-max {} x (--value-bytes-max + {})",
            config.http_connections_max,
            ByteSize::b(HTTP_CONNECTION_BYTES).display().iec()
        ),
        bytes: config.http_connections_max as u64 * http_each,
    });
    if config.resp.is_some() {
        let request = value + key + resp::REQUEST_OVERHEAD_BYTES;
        let buffers = (resp::connection::READ_CHUNK_BYTES + resp::connection::WRITE_FLUSH_BYTES) as u64;
        out.push(Term {
            what: "RESP requests in flight",
            how: format!(
                "--resp-connections-max {} x (one request {} + buffers {})",
                config.resp_connections_max,
                ByteSize::b(request).display().iec(),
                ByteSize::b(buffers).display().iec()
            ),
            bytes: config.resp_connections_max as u64 * (request + buffers),
        });
    }
    out
}

/// The worst-case total, as TOML comments for `--print-config`.
pub fn report(config: &Config) -> String {
    let terms = terms(config);
    let total: u64 = terms.iter().map(|t| t.bytes).sum();
    let mut out =
        String::from("\n# Memory, worst case (docs/OPERATIONS.md): every term at its bound at once.\n");
    for t in &terms {
        let _ = writeln!(
            out,
            "#   {:<26} {:>12}   {}",
            t.what,
            ByteSize::b(t.bytes).display().iec().to_string(),
            t.how
        );
    }
    let _ = writeln!(
        out,
        "#   {:<26} {:>12}   set the container's memory limit at least this",
        "total",
        ByteSize::b(total).display().iec().to_string()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigLayer;

    #[test]
    fn the_total_adds_every_bound_and_names_its_flags() {
        let layer = ConfigLayer {
            max_memory: Some(ByteSize::mib(64)),
            http_connections_max: Some(64),
            value_bytes_max: Some(ByteSize::kib(64)),
            ..Default::default()
        };
        let config = Config::resolve(ConfigLayer::default(), layer).unwrap();
        let terms = terms(&config);
        let total: u64 = terms.iter().map(|t| t.bytes).sum();
        let mib = 1u64 << 20;
        // 64 MiB + 15 % + 32 MiB + 64 x (64 KiB + 64 KiB); no RESP, no replication.
        assert_eq!(total, 64 * mib + 64 * mib * 15 / 100 + 32 * mib + 64 * (128 << 10));
        assert!(terms.iter().all(|t| !t.what.starts_with("RESP") && !t.what.starts_with("replication")));
        let report = report(&config);
        assert!(report.contains("--http-connections-max 64") && report.contains("113.6 MiB"), "{report}");
        assert!(!report.contains("strong"), "no strong keys, no strong terms");
    }

    #[test]
    fn strong_acceptors_add_their_slots_and_held_promises() {
        let layer = ConfigLayer {
            gossip: Some("127.0.0.1:7946".parse().unwrap()),
            ca: Some("ca.crt".into()),
            cert: Some("node.crt".into()),
            key: Some("node.key".into()),
            data_dir: Some("data".into()),
            strong_acceptors: Some(vec!["a".into(), "b".into(), "c".into()]),
            ..Default::default()
        };
        let config = Config::resolve(ConfigLayer::default(), layer).unwrap();
        let terms = terms(&config);
        let each = (1 << 10) + (16 << 10) + STRONG_SLOT_OVERHEAD_BYTES;
        let slots = terms.iter().find(|t| t.what == "strong acceptor slots").expect("slots counted");
        assert_eq!(slots.bytes, 65_536 * each);
        assert!(terms.iter().any(|t| t.what == "strong proposer's held promises"));
    }
}
