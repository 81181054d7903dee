#!/usr/bin/env bash
# Every benchmark in turn; stops at the first failure.
#
#   bench/all.sh            (BENCH_QUICK=1 for a shortened pass that proves each works)
#
# Each script appends its table to docs/BENCHMARKS.md (BENCH_QUICK=1:
# target/bench-quick.md; BENCH_OUT=path overrides both) and ends by itself
# within 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPTS=(local-ops http-get replication-lag wan-efficiency memory sim-speed)
OUT="${BENCH_OUT:-docs/BENCHMARKS.md}"
[ "${BENCH_QUICK:-0}" = 1 ] && OUT="${BENCH_OUT:-target/bench-quick.md}"
started=$SECONDS
for s in "${SCRIPTS[@]}"; do
  echo "=== bench/$s.sh ($(date -u +%T) UTC)" >&2
  t=$SECONDS
  if ! "bench/$s.sh"; then
    echo "=== bench/$s.sh failed after $((SECONDS - t)) s; stopped (tables so far are in $OUT)" >&2
    exit 1
  fi
  echo "=== bench/$s.sh done in $((SECONDS - t)) s" >&2
done
echo "=== all ${#SCRIPTS[@]} benchmarks done in $((SECONDS - started)) s; tables appended to $OUT" >&2
