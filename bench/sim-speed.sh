#!/usr/bin/env bash
# Simulator speed: wall time, simulated client ops per wall second and peak
# RSS of scenario runs.
#
#   bench/sim-speed.sh                       # five-regions, ten-by-twenty, sidecars
#   SCENARIOS=ten-by-twenty bench/sim-speed.sh
#
# Builds geocache-sim (release) first, so the build is not timed, then runs
#   geocache-sim run sim/scenarios/<scenario>.toml --seed 1 --json out.json
# ROUNDS times (default 1) under /usr/bin/time -v (Debian package `time`).
# Ops = reads + writes from the JSON report. ten-by-twenty is 10 regions x
# 20 nodes with faults (issue 15), sidecars the same with 18 sidecars per
# region: their virtual seconds per wall second are to be above 1.
#
# BENCH_QUICK=1: each scenario cut to 20 virtual seconds of workload.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-1}"
SCENARIOS="${SCENARIOS:-five-regions ten-by-twenty sidecars}"
bench_need /usr/bin/time time
bench_build -p geocache-sim --bin geocache-sim

json_field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p" "$2" | head -1; }

for name in $SCENARIOS; do
SCENARIO="sim/scenarios/$name.toml"
[ -f "$SCENARIO" ] || bench_die "no scenario $SCENARIO"
if [ "$BENCH_QUICK" = 1 ]; then
  sed '0,/^duration_s = .*/s//duration_s = 20/' "$SCENARIO" >"$BENCH_TMP/$name-quick.toml"
  SCENARIO="$BENCH_TMP/$name-quick.toml"
fi
WALLS=() RATES=() RSS=()
for round in $(seq 1 "$ROUNDS"); do
  bench_log "round $round/$ROUNDS: geocache-sim run $SCENARIO --seed 1"
  start=$(date +%s.%N)
  timeout 540 /usr/bin/time -v ./target/release/geocache-sim run "$SCENARIO" --seed 1 \
    --json "$BENCH_TMP/out.json" >"$BENCH_TMP/sim.out" 2>"$BENCH_TMP/time.out" ||
    bench_die "geocache-sim failed: $(tail -20 "$BENCH_TMP/sim.out" "$BENCH_TMP/time.out")"
  end=$(date +%s.%N)
  reads=$(json_field reads "$BENCH_TMP/out.json")
  writes=$(json_field writes "$BENCH_TMP/out.json")
  if [ -z "$reads" ] || [ -z "$writes" ]; then bench_die "no reads/writes in the JSON report"; fi
  wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f\n", b - a }')
  WALLS+=("$wall")
  RATES+=("$(awk -v r="$reads" -v w="$writes" -v t="$wall" 'BEGIN { printf "%.0f\n", (r + w) / t }')")
  RSS+=("$(awk -F': ' '/Maximum resident set size/ {print $2 * 1024}' "$BENCH_TMP/time.out")")
done
VIRTUAL=$(json_field virtual_s "$BENCH_TMP/out.json")

{
  bench_heading "Simulator speed" "bench/sim-speed.sh"
  echo
  echo "\`geocache-sim run $(basename "$SCENARIO") --seed 1 --json out.json\` (release build, single-threaded),"
  echo "$ROUNDS round(s), medians; $VIRTUAL virtual seconds, $reads reads and $writes writes per run."
  echo
  echo "| figure | median | rounds |"
  echo "|---|---|---|"
  echo "| wall time | $(bench_median "${WALLS[@]}") s | ${WALLS[*]} |"
  printf '| **simulated client ops per wall second** | **%s** | %s |\n' \
    "$(bench_thousands "$(bench_median "${RATES[@]}")")" "${RATES[*]}"
  printf '| peak RSS | %.0f MiB | |\n' "$(awk -v b="$(bench_median "${RSS[@]}")" 'BEGIN { print b / 1048576 }')"
  printf '| virtual seconds per wall second | %.2f | |\n' \
    "$(awk -v v="$VIRTUAL" -v w="$(bench_median "${WALLS[@]}")" 'BEGIN { print v / w }')"
} >"$BENCH_TMP/section.md"
bench_publish "$BENCH_TMP/section.md"
done
