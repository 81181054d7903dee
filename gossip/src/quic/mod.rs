//! The quinn transport.
