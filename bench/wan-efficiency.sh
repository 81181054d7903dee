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

bench_start wan-efficiency ./target/release/wan-efficiency "${ARGS[@]}" --out "$BENCH_TMP/table.md"
pid=$BENCH_PID
bench_follow wan-efficiency "$pid"
wait "$pid" || bench_die "wan-efficiency failed (log above)"
{
  bench_heading "WAN bytes and messages per write" "bench/wan-efficiency.sh"
  echo
  echo "\`wan-efficiency ${ARGS[*]}\`."
  cat "$BENCH_TMP/table.md"
} >"$BENCH_TMP/section.md"
bench_publish "$BENCH_TMP/section.md"
