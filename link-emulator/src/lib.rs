//! geocache-link-emulator: the distance between regions, made on one host.
//!
//! This kernel has no netem, so delay, jitter, loss and partitions between
//! regions are made in user space: [`relay::LinkEmulator`] stands between
//! the nodes' gossip sockets. [`delay_model::DelayModel`] gives the one-way
//! delay two coordinates are apart, the same figure the simulator uses, so
//! `geocache demo`, the tests and the simulator share one map.
//!
//! # Layout
//!
//! - `relay.rs`: the UDP relay and its per-pair link settings and counts.
//! - `delay_model.rs`: great-circle distance to one-way delay over fiber.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod delay_model;
pub mod relay;

pub use delay_model::DelayModel;
pub use relay::{EmulatedNode, LinkCounts, LinkEmulator, LinkSpec, IN_FLIGHT_MAX_COUNT};
