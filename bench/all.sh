#!/usr/bin/env bash
# Every benchmark in turn; stops at the first failure.
#
#   bench/all.sh
#
# Each script appends its table to docs/BENCHMARKS.md (BENCH_QUICK=1:
# target/bench-quick.md; BENCH_OUT=path overrides both) and ends by itself
# within 10 minutes (enforced here: TERM at 600 s, the script's trap then
# stops what it started). SKIP="local-ops memory" leaves scripts out (e.g.
# before the RESP port exists); BENCH_QUICK=1 makes a short pass that only
# proves each script works.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPTS=(local-ops http-get replication-lag wan-efficiency memory memory-bound entries-at-budget remote-apply strong-cas sim-speed)
OUT="${BENCH_OUT:-docs/BENCHMARKS.md}"
[ "${BENCH_QUICK:-0}" = 1 ] && OUT="${BENCH_OUT:-target/bench-quick.md}"
SKIP=" ${SKIP:-} "
started=$SECONDS
ran=0
for s in "${SCRIPTS[@]}"; do
  if [[ "$SKIP" == *" $s "* ]]; then
    echo "=== bench/$s.sh skipped (SKIP)" >&2
    continue
  fi
  echo "=== bench/$s.sh ($(date -u +%T) UTC)" >&2
  t=$SECONDS
  if ! timeout -k 15 600 "bench/$s.sh"; then
    echo "=== bench/$s.sh failed after $((SECONDS - t)) s; stopped (tables so far are in $OUT)" >&2
    exit 1
  fi
  echo "=== bench/$s.sh done in $((SECONDS - t)) s" >&2
  ran=$((ran + 1))
done
echo "=== $ran benchmark(s) done in $((SECONDS - started)) s; tables appended to $OUT" >&2
