//! geocache-crdt: the data types that make geocache replicas converge.
//!
//! Every cache entry is a [`Register`]: a last-writer-wins register ordered by
//! a hybrid logical clock ([`Hlc`]), carrying a [`VersionVector`] for
//! compare-and-set, an absolute expiry and a tombstone flag. JSON documents
//! ([`Doc`]) merge field by field through automerge. Local writes leave as
//! [`Delta`]s, and the [`codec`] puts every message on the wire inside a
//! versioned envelope.
//!
//! Nothing here reads the wall clock, opens a socket or draws randomness: the
//! time is always passed in. That is what lets the simulator and the real
//! runtime drive the same code.
//!
//! # Layout
//!
//! - `node_id.rs`: [`NodeId`], the identity of a writer.
//! - `hlc.rs`: [`Hlc`] stamps and the [`HlcClock`] that issues them.
//! - `stamp.rs`: [`Stamp`], the total order of last-writer-wins, and [`Dot`].
//! - `version_vector.rs`: [`VersionVector`], its compact encoding and ETag form.
//! - `doc.rs`: [`Doc`], a JSON object as an automerge document, with RFC 7396
//!   merge patches.
//! - `doc_bounds.rs`: what a peer's document may be (uncompressed, bounded
//!   depth).
//! - `counter.rs`: [`Counter`], an integer whose concurrent increments all
//!   count.
//! - `value.rs`: [`Value`], opaque bytes, a document or a counter.
//! - `key.rs`: [`Key`], a namespace and a key name.
//! - `register.rs`: [`Register`] and its merge.
//! - `delta.rs`: [`Delta`], what one write sends to the other replicas.
//! - `codec.rs`: the wire codec (serde + postcard in a versioned envelope).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
mod counter;
mod delta;
mod doc;
mod doc_bounds;
mod hlc;
mod key;
mod node_id;
mod register;
mod stamp;
mod value;
mod version_vector;

pub use codec::CodecError;
pub use counter::{Counter, CounterError, COUNTER_ORIGINS_MAX};
pub use delta::{Delta, DeltaBody, DeltaError, DocChanges};
pub use doc::{Doc, DocError};
pub use hlc::{ClockSkewError, Hlc, HlcClock, DEFAULT_MAX_CLOCK_SKEW_MS, HLC_MS_CEILING};
pub use key::Key;
pub use node_id::NodeId;
pub use register::{Register, RegisterMeta};
pub use stamp::{Dot, Stamp};
pub use value::Value;
pub use version_vector::{EtagError, VersionVector, CAS_TOKEN_MAX, WRITERS_KEPT};
