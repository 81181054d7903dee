//! The cluster CA and node certificates.
