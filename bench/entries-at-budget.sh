#!/usr/bin/env bash
# How many entries a budget holds: redis-server with `--maxmemory 64mb
# --maxmemory-policy allkeys-lru` and a geocache node with `--max-memory
# 64MiB`, fed the same stream in the same run.
#
#   bench/entries-at-budget.sh
#
# 1,000,000 `SET key:<i> <100 B>` by `redis-cli --pipe` into each (fresh
# processes), then the keys each still holds (DBSIZE; geocache's walks the
# store and counts visible entries) and its RSS once steady.
# BENCH_QUICK=1: 200,000 commands.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

COMMANDS=1000000
[ "$BENCH_QUICK" = 1 ] && COMMANDS=200000
VALUE_BYTES=100

bench_build_geocache
bench_need redis-server redis-server
bench_need redis-cli redis-tools
bench_need curl curl

mib() { awk -v b="$1" 'BEGIN { printf "%.1f\n", b / 1048576 }'; }

awk -v n="$COMMANDS" -v size="$VALUE_BYTES" 'BEGIN {
  v = sprintf("%" size "s", ""); gsub(/ /, "v", v)
  for (i = 0; i < n; i++) {
    k = "key:" i
    printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, size, v
  }
}' >"$BENCH_TMP/stream.resp"

# load PORT — the stream, every reply checked.
load() {
  timeout 300 redis-cli -h 127.0.0.1 -p "$1" --pipe <"$BENCH_TMP/stream.resp" >"$BENCH_TMP/pipe.out" 2>&1 ||
    bench_die "redis-cli --pipe to port $1 failed: $(tail -3 "$BENCH_TMP/pipe.out")"
  grep -q "errors: 0, replies: $COMMANDS" "$BENCH_TMP/pipe.out" ||
    bench_die "redis-cli --pipe to port $1: $(tail -3 "$BENCH_TMP/pipe.out")"
}

# held PID PORT — loads the stream into the server on PORT, then prints
# "keys rss".
held() {
  bench_wait_until 30 "RESP on port $2" bench_pong "$2"
  load "$2"
  sleep 1
  echo "$(redis-cli -h 127.0.0.1 -p "$2" dbsize) $(bench_rss_bytes "$1")"
  bench_stop "$1"
}

port=$(bench_free_port)
bench_start redis redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no \
  --logfile '' --maxmemory 64mb --maxmemory-policy allkeys-lru
read -r redis_keys redis_rss <<<"$(held "$BENCH_PID" "$port")"
port=$(bench_free_port)
bench_geocache_start geocache --resp "127.0.0.1:$port" --max-memory 64MiB
read -r geo_keys geo_rss <<<"$(held "$GEOCACHE_PID" "$port")"

{
  bench_heading "Entries held at a 64 MiB budget vs redis-server" "bench/entries-at-budget.sh"
  echo
  echo "$(bench_thousands "$COMMANDS") \`SET key:<i> <$VALUE_BYTES B>\` by \`redis-cli --pipe\`, the same stream into"
  echo "$(redis-server --version | awk '{print $1, $2, $3}') (\`--maxmemory 64mb --maxmemory-policy allkeys-lru\`) and a"
  echo "geocache node (\`--max-memory 64MiB\`); keys held by DBSIZE, RSS from /proc after the load."
  echo
  echo "| target | keys held | RSS MiB |"
  echo "|---|---|---|"
  echo "| redis-server | $(bench_thousands "$redis_keys") | $(mib "$redis_rss") |"
  echo "| geocache | $(bench_thousands "$geo_keys") | $(mib "$geo_rss") |"
  echo "| **geocache / redis** | **$(bench_ratio "$geo_keys" "$redis_keys")** | $(bench_ratio "$geo_rss" "$redis_rss") |"
} >"$BENCH_TMP/section.md"
bench_publish "$BENCH_TMP/section.md"
