#!/usr/bin/env bash
# Replication visibility lag across regions at one-way delays of 10, 40 and
# 80 ms (and 0, the overhead reference), with real processes over the
# user-space link emulator.
#
#   bench/replication-lag.sh
#
# Builds the release `geocache` and the `replication-lag` bin (crate
# geocache-bench), which starts three regions of one node each per delay,
# writes 50 writes/s for 10 s in one region and polls in the others; see
# bench/src/bin/replication-lag.rs.
#
# BENCH_QUICK=1: delays 0 and 40 ms, 2 s of writes.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

ARGS=(--delays-ms "0,10,40,80" --writes-per-s 50 --seconds 10 --poll-ms 1)
[ "$BENCH_QUICK" = 1 ] && ARGS=(--delays-ms "0,40" --writes-per-s 50 --seconds 2 --poll-ms 1)
bench_build_geocache

bench_run_bin replication-lag "Replication visibility lag over the link emulator" "${ARGS[@]}"
