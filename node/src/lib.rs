//! geocache-node: one geocache node.
//!
//! The store (a bounded LRU with TTL over CRDT registers), the HTTP and RESP
//! front ends, the configuration and the `geocache` command line will live
//! here. The store issue builds them.
//!
//! # Layout
//!
//! Empty for now.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
