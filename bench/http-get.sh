#!/usr/bin/env bash
# Load on one node: wrk against GET /v1/kv of a warm key set.
#
#   bench/http-get.sh [seconds] [connections]
#
# Installs wrk (Debian) if missing, builds the release binary, starts one
# node on a loopback port, writes 1,000 keys of 100 bytes, then runs wrk with
# 2 threads and 64 keep-alive connections (defaults) reading random keys.
# Prints requests/s and latency percentiles with the machine's core count.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN="${1:-10}"
CONNECTIONS="${2:-64}"
KEYS=1000
PORT="${GEOCACHE_BENCH_PORT:-17480}"

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --bin geocache -q

./target/release/geocache serve --http "127.0.0.1:${PORT}" >/dev/null 2>&1 &
NODE_PID=$!
trap 'kill "$NODE_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  curl -sf "http://127.0.0.1:${PORT}/healthz" >/dev/null && break
  sleep 0.05
done

WORK=$(mktemp -d)
VALUE=$(head -c 100 /dev/zero | tr '\0' 'v')
# Preload through one curl process with many URLs (keep-alive).
{
  for i in $(seq 0 $((KEYS - 1))); do
    # "next" resets the options, or curl would send every body so far.
    [ "$i" -gt 0 ] && echo next
    printf 'url = "http://127.0.0.1:%s/v1/kv/bench/key:%s"\n-X PUT\n--data-binary "%s"\n-o /dev/null\n' "$PORT" "$i" "$VALUE"
  done
} > "$WORK/preload.curl"
curl -s --config "$WORK/preload.curl"
LEN=$(curl -s "http://127.0.0.1:${PORT}/v1/kv/bench/key:$((KEYS - 1))" | wc -c)
[ "$LEN" -eq 100 ] || { echo "preload failed: value is $LEN bytes" >&2; exit 1; }

cat > "$WORK/get.lua" <<LUA
math.randomseed(42)
request = function()
  return wrk.format("GET", "/v1/kv/bench/key:" .. math.random(0, ${KEYS} - 1))
end
LUA

echo "http-get: $(nproc) cores, wrk -t2 -c${CONNECTIONS} -d${SECONDS_RUN}s, ${KEYS} keys x 100 B, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%F)"
wrk -t2 -c"${CONNECTIONS}" -d"${SECONDS_RUN}s" --latency -s "$WORK/get.lua" "http://127.0.0.1:${PORT}" | tee "$WORK/wrk.out"
RPS=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")
P50=$(awk '$1=="50%" {print $2}' "$WORK/wrk.out")
P99=$(awk '$1=="99%" {print $2}' "$WORK/wrk.out")
ERRORS=$(awk '/Non-2xx/ {print $4}' "$WORK/wrk.out")
echo
echo "| target | requests/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|"
echo "| geocache GET /v1/kv | ${RPS} | ${P50} | ${P99} | ${ERRORS:-0} |"
rm -rf "$WORK"
