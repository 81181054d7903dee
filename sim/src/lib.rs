//! geocache-sim: a deterministic simulator of a whole geocache deployment.
//!
//! Regions on a map, nodes in them, a client workload and faults, driving
//! on every node the replication core the real node runs
//! (`geocache_gossip::core`: membership, replicator, full transfers,
//! durability) and the real write logic (`geocache_node::write`), with one
//! virtual clock and one seeded RNG. Same scenario and seed, same run, byte
//! for byte.
//!
//! # Layout
//!
//! - `scenario.rs`: the scenario file.
//! - `network.rs`: one-way delays from great-circle distances (geo).
//! - `key_space.rs`: the run's keys, numbered, and an index by number.
//! - `sim_store.rs`: a deterministic LRU store running the node's writes.
//! - `world.rs`: the scheduler and the pump between cores and network.
//! - `sim_node.rs`: a node (store and core) and the store seam.
//! - `links.rs`: partitions, loss, delay, slow nodes and senders' queues.
//! - `workload.rs`: the client operations.
//! - `faults.rs`: faults starting and ending, restarts.
//! - `oracle.rs`: what was written, and what replicas must show.
//! - `checks.rs`: the checkers.
//! - `report.rs`: the text and JSON report.
//! - `html.rs`: the HTML report with SVG plots.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checks;
pub mod crash_watch;
mod events;
mod faults;
pub mod html;
pub mod key_space;
pub mod links;
pub mod message_kinds;
pub mod network;
pub mod oracle;
pub mod pack_cache;
mod readouts;
pub mod report;
pub mod scenario;
pub mod sim_node;
pub mod sim_store;
pub mod strong_clients;
pub mod tallies;
mod workload;
pub mod world;

use report::Report;
use scenario::Scenario;
use world::World;

/// Runs one scenario with one seed and reports.
pub fn simulate(scenario: &Scenario, seed: u64, progress: &mut dyn FnMut(f64)) -> Report {
    simulate_with_html(scenario, seed, progress, false).0
}

/// As [`simulate`], with the HTML page too when `html` is set.
pub fn simulate_with_html(
    scenario: &Scenario,
    seed: u64,
    progress: &mut dyn FnMut(f64),
    html: bool,
) -> (Report, Option<String>) {
    let mut world = World::new(scenario.clone(), seed);
    world.run(progress);
    let checks = checks::run(&world);
    let report = Report::new(&world, checks);
    let page = html.then(|| html::render(&world, &report));
    // Freeing millions of backlog entries takes a while: let the other
    // core do it while the caller goes on.
    std::thread::spawn(move || drop(world));
    (report, page)
}
