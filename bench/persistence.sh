#!/usr/bin/env bash
# What `--data-dir` costs and how fast a node comes back with its data.
#
#   bench/persistence.sh
#
# 1. Writes: `redis-benchmark -t set -n 400000 -r 100000 -d 100 -c 50
#    [-P 16]` against redis-server with `appendonly yes appendfsync
#    everysec`, a geocache node in memory, and a geocache node with
#    `--data-dir` at the default `--fsync 100ms`, alternating, ROUNDS times
#    (default 3); medians, and the ratios the issue asks for.
# 2. Restart: 1,000,000 distinct keys of 100 B through `redis-cli --pipe`
#    into a node with `--data-dir` (`--max-memory 1GiB`), then SIGKILL, then
#    the same command again: seconds from the start of the process to
#    `/readyz` 200, entries held, RSS and the data dir's size.
#
# BENCH_QUICK=1: 20,000 requests, 1 round, 50,000 keys.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

REQUESTS=400000
ROUNDS="${ROUNDS:-3}"
KEYS=1000000
if [ "$BENCH_QUICK" = 1 ]; then REQUESTS=20000 ROUNDS=1 KEYS=50000; fi
KEYSPACE=100000
CLIENTS=50
PIPELINES="1 16"

bench_build_geocache
bench_need redis-server redis-server
bench_need redis-benchmark redis-tools
bench_need redis-cli redis-tools
bench_need curl curl

REDIS_DIR="$BENCH_TMP/redis"
mkdir -p "$REDIS_DIR"
REDIS_PORT=$(bench_free_port)
bench_start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" --save '' \
  --appendonly yes --appendfsync everysec --daemonize no --logfile ''
bench_wait_until 30 "redis-server on port $REDIS_PORT" bench_pong "$REDIS_PORT"

MEMORY_PORT=$(bench_free_port)
bench_geocache_start memory --resp "127.0.0.1:$MEMORY_PORT" --max-memory 2GiB
bench_wait_until 30 "geocache (memory) RESP" bench_pong "$MEMORY_PORT"

DISK_PORT=$(bench_free_port)
bench_geocache_start disk --resp "127.0.0.1:$DISK_PORT" --max-memory 2GiB --data-dir "$BENCH_TMP/geocache-disk"
bench_wait_until 30 "geocache (data dir) RESP" bench_pong "$DISK_PORT"
bench_wait_until 60 "geocache (data dir) ready" curl -sf "http://$GEOCACHE_HTTP/readyz"

declare -A OPS P50
for round in $(seq 1 "$ROUNDS"); do
  for pipeline in $PIPELINES; do
    for target in redis memory disk; do
      case $target in
        redis) port=$REDIS_PORT ;;
        memory) port=$MEMORY_PORT ;;
        disk) port=$DISK_PORT ;;
      esac
      bench_log "round $round/$ROUNDS: $target, -P $pipeline"
      out="$BENCH_TMP/rb-$target-$pipeline-$round.csv"
      timeout 240 redis-benchmark -h 127.0.0.1 -p "$port" -t set -n "$REQUESTS" -r "$KEYSPACE" \
        -d 100 -c "$CLIENTS" -P "$pipeline" --csv >"$out" 2>"$out.err" ||
        bench_die "redis-benchmark against $target failed: $(cat "$out.err" "$out" | tail -5)"
      rps=$(tr -d '"' <"$out" | awk -F, '$1 == "SET" {print $2}')
      p50=$(tr -d '"' <"$out" | awk -F, '$1 == "SET" {print $5}')
      [ -n "$rps" ] || bench_die "no SET line in redis-benchmark output: $(cat "$out")"
      OPS[$target,$pipeline]="${OPS[$target,$pipeline]:-} $rps"
      P50[$target,$pipeline]="${P50[$target,$pipeline]:-} $p50"
    done
  done
done
DISK_BYTES=$(du -sb "$BENCH_TMP/geocache-disk" | awk '{print $1}')
bench_stop "$GEOCACHE_PID"

# The restart: a data dir holding KEYS entries, killed, started again.
RESTART_DIR="$BENCH_TMP/geocache-restart"
RESTART_PORT=$(bench_free_port)
restart_args=(--resp "127.0.0.1:$RESTART_PORT" --max-memory 1GiB --node-id 7 --data-dir "$RESTART_DIR")
bench_geocache_start restart-fill "${restart_args[@]}"
bench_wait_until 60 "geocache ready" curl -sf "http://$GEOCACHE_HTTP/readyz"
value=$(head -c 100 /dev/zero | tr '\0' 'v')
bench_log "writing $KEYS keys of 100 B"
awk -v n="$KEYS" -v v="$value" 'BEGIN { for (i = 0; i < n; i++) printf "*3\r\n$3\r\nSET\r\n$%d\r\nkey:%d\r\n$100\r\n%s\r\n", length("key:" i), i, v }' |
  timeout 300 redis-cli -h 127.0.0.1 -p "$RESTART_PORT" --pipe >"$BENCH_TMP/pipe.out" 2>&1 ||
  bench_die "redis-cli --pipe failed: $(tail -3 "$BENCH_TMP/pipe.out")"
held_before=$(curl -sf "http://$GEOCACHE_HTTP/v1/node" | sed -n 's/.*"entries":\([0-9]*\).*/\1/p')
rss_before=$(bench_rss_bytes "$GEOCACHE_PID")
kill -KILL "$GEOCACHE_PID"
wait "$GEOCACHE_PID" 2>/dev/null || true
RESTART_DISK=$(du -sb "$RESTART_DIR" | awk '{print $1}')

declare -a READY_S
for attempt in 1 2 3; do
  [ "$BENCH_QUICK" = 1 ] && [ "$attempt" -gt 1 ] && break
  t0=$(date +%s.%N)
  bench_geocache_start "restart-$attempt" "${restart_args[@]}"
  bench_wait_until 120 "geocache ready after the restart" curl -sf "http://$GEOCACHE_HTTP/readyz"
  t1=$(date +%s.%N)
  READY_S+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')")
  held_after=$(curl -sf "http://$GEOCACHE_HTTP/v1/node" | sed -n 's/.*"entries":\([0-9]*\).*/\1/p')
  rss_after=$(bench_rss_bytes "$GEOCACHE_PID")
  kill -KILL "$GEOCACHE_PID"
  wait "$GEOCACHE_PID" 2>/dev/null || true
done
[ "$held_after" = "$held_before" ] || bench_die "the restart held $held_after entries, $held_before before"

# shellcheck disable=SC2086 # word splitting of the per-round lists is wanted
{
  bench_heading "Persistence: writes with --data-dir, and a restart with 1M entries" "bench/persistence.sh"
  echo
  echo "\`redis-benchmark -t set -n $REQUESTS -r $KEYSPACE -d 100 -c $CLIENTS [-P 16] --csv\` against"
  echo "$(redis-server --version | awk '{print $1, $2, $3}') with \`appendonly yes appendfsync everysec\`, a geocache"
  echo "node in memory and one with \`--data-dir\` (default \`--fsync 100ms\`), release build, alternating,"
  echo "$ROUNDS round(s); medians. Client and servers share the same $(nproc) cores. The data dir held"
  echo "$(bench_thousands "$DISK_BYTES") bytes at the end (keyspace of $KEYSPACE keys, plus the backlog)."
  echo
  echo "| pipeline | redis AOF ops/s | geocache memory ops/s | geocache data dir ops/s | **data dir / memory** | **data dir / redis AOF** | p50 redis / memory / data dir |"
  echo "|---|---|---|---|---|---|---|"
  for pipeline in $PIPELINES; do
    r=$(bench_median ${OPS[redis,$pipeline]})
    m=$(bench_median ${OPS[memory,$pipeline]})
    d=$(bench_median ${OPS[disk,$pipeline]})
    printf '| %s | %s | %s | %s | **%s** | **%s** | %s / %s / %s ms |\n' "$pipeline" "$(bench_thousands "$r")" \
      "$(bench_thousands "$m")" "$(bench_thousands "$d")" "$(bench_ratio "$d" "$m")" "$(bench_ratio "$d" "$r")" \
      "$(bench_median ${P50[redis,$pipeline]})" "$(bench_median ${P50[memory,$pipeline]})" \
      "$(bench_median ${P50[disk,$pipeline]})"
  done
  echo
  echo "Restart: $(bench_thousands "$KEYS") keys of 100 B written through \`redis-cli --pipe\` into a node with"
  echo "\`--data-dir --max-memory 1GiB\`, SIGKILL, then the same command again (journal replayed, entries"
  echo "loaded); seconds from the start of the process to \`/readyz\` 200, ${#READY_S[@]} restart(s)."
  echo
  echo "| entries held before / after | ready after (median, runs) | RSS before kill / after restart | data dir bytes |"
  echo "|---|---|---|---|"
  printf '| %s / %s | **%s s** (%s) | %s / %s MiB | %s |\n' "$(bench_thousands "$held_before")" \
    "$(bench_thousands "$held_after")" "$(bench_median "${READY_S[@]}")" "$(printf '%.2f ' "${READY_S[@]}")" \
    "$((rss_before >> 20))" "$((rss_after >> 20))" "$(bench_thousands "$RESTART_DISK")"
} >"$BENCH_TMP/section.md"
bench_publish "$BENCH_TMP/section.md"
