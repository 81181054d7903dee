#!/usr/bin/env bash
# Latency of a strong compare-and-set across three regions 40 ms apart one
# way, with real processes over the user-space link emulator: a key that
# keeps its proposer (one round trip to the nearest majority), proposers
# that alternate (two), and in the same run a strong read and an eventual
# PUT for reference.
#
#   bench/strong-cas.sh
#
# Builds the release `geocache` and the `strong-cas` bin (crate
# geocache-bench); see bench/src/bin/strong-cas.rs.
#
# BENCH_QUICK=1: 10 requests per case.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

ARGS=(--delay-ms 40 --count 100)
[ "$BENCH_QUICK" = 1 ] && ARGS=(--delay-ms 40 --count 10)
bench_build_geocache

bench_run_bin strong-cas "Strong compare-and-set latency over the link emulator" "${ARGS[@]}"
