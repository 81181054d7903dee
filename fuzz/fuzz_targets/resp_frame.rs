//! Fuzzes the RESP request parser the way a connection drives it: take
//! requests off the front of the read buffer until it needs more bytes or
//! refuses the input. Every request taken must consume bytes, or a client
//! could spin the connection's loop forever.
#![no_main]

use bytes::BytesMut;
use geocache_node::resp::frame::{parse, FrameLimits};
use libfuzzer_sys::fuzz_target;

/// Small, so that the fuzzer's inputs (4 KiB by default) reach the limits
/// as well as the grammar.
const LIMITS: FrameLimits = FrameLimits { bulk_bytes_max: 1 << 20, request_bytes_max: 2 << 20 };

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match parse(&mut buf, &LIMITS) {
            Ok(Some(request)) => {
                assert!(buf.len() < before, "a request was taken without consuming bytes");
                // Every argument must be readable, the past-the-end one too.
                for i in 0..=request.len() {
                    let _ = request.arg(i);
                }
                assert_eq!(request.args_from(0).len(), request.len());
            }
            Ok(None) | Err(_) => break,
        }
    }
});
