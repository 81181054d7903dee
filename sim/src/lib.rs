//! geocache-sim: a deterministic simulator of a whole geocache deployment.
//!
//! Regions on a map, nodes in them, a client workload and faults, driving
//! the real membership (foca) and replicator (`geocache-gossip`) and the
//! real write logic
//! (`geocache_node::write`) with one virtual clock and one seeded RNG. Same
//! scenario and seed, same run, byte for byte.
//!
//! # Layout
//!
//! - `scenario.rs`: the scenario file.
//! - `network.rs`: one-way delays from great-circle distances (geo).
//! - `key_space.rs`: the run's keys, numbered, and an index by number.
//! - `sim_store.rs`: a deterministic LRU store running the node's writes.
//! - `world.rs`: the event loop, the workload, faults and the oracle.
//! - `checks.rs`: the checkers.
//! - `report.rs`: the text and JSON report.
//! - `html.rs`: the HTML report with SVG plots.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checks;
pub mod html;
pub mod key_space;
pub mod network;
pub mod report;
pub mod scenario;
pub mod sim_store;
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
