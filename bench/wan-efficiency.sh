#!/usr/bin/env bash
# Bytes and messages crossing region boundaries per write, against
# all-to-all sending, with 3 regions x 3 real nodes over the link emulator.
#
#   bench/wan-efficiency.sh
#
# Builds the release `geocache` and the `wan-efficiency` bin (crate
# geocache-bench): an idle phase (the background rate, subtracted), isolated
# writes (the size of one write's message), then 1,000 writes of 100 B over
# every node; see bench/src/bin/wan-efficiency.rs.
#
# BENCH_QUICK=1: 100 writes, 2 s settle and idle, 18 isolated writes.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

ARGS=(--writes 1000 --value-bytes 100 --writes-per-s 200 --isolated 54 --idle-seconds 5 --settle-seconds 10 --delay-ms 5)
[ "$BENCH_QUICK" = 1 ] &&
  ARGS=(--writes 100 --value-bytes 100 --writes-per-s 200 --isolated 18 --idle-seconds 2 --settle-seconds 2 --delay-ms 5)
bench_build_geocache

bench_run_bin wan-efficiency "WAN bytes and messages per write" "${ARGS[@]}"
