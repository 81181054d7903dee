#!/usr/bin/env bash
# GET/SET on one node's RESP port against redis-server, with redis-benchmark.
#
#   bench/local-ops.sh
#
# Installs redis-server and redis-tools (Debian) if missing, builds the
# release binary, starts redis-server (127.0.0.1, a free port, no
# persistence) and a geocache node with its RESP port on 127.0.0.1, then runs
#   redis-benchmark -t get,set -n 1000000 -r 100000 -d 100 -c 50 [-P 16] --csv
# against each, alternating, ROUNDS times (default 3). Reports ops/s per
# target and test (medians of the rounds) and geocache/redis.
#
# A third target runs in the same rounds: the floor server
# (`bench/src/bin/floor-server.rs`), tokio and moka as the node uses them
# with none of the node's work, so a gap to redis splits into what those
# crates cost (floor / redis) and what geocache adds (geocache / floor).
# A fourth, the floor with `--like-store` (moka configured as the store must
# configure it, and a SET that reads the value held before it inserts),
# shows what moka charges for what the store needs of it.
#
# Needs the RESP port (`geocache serve --resp`); fails saying so without it.
# BENCH_QUICK=1: 20,000 requests, 1 round.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

REQUESTS=1000000
ROUNDS="${ROUNDS:-3}"
if [ "$BENCH_QUICK" = 1 ]; then REQUESTS=20000 ROUNDS=1; fi
KEYSPACE=100000
VALUE_BYTES=100
CLIENTS=50
PIPELINES="1 16"

bench_build_geocache
if ! ./target/release/geocache serve --help | grep -q -- '--resp'; then
  bench_die "this geocache build has no \`serve --resp\` flag: the RESP port is not merged yet, so there is nothing to run redis-benchmark against"
fi
bench_need redis-server redis-server
bench_need redis-benchmark redis-tools

REDIS_PORT=$(bench_free_port)
bench_start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
  --daemonize no --logfile ''
bench_wait_until 30 "redis-server on port $REDIS_PORT" bench_pong "$REDIS_PORT"

RESP_PORT=$(bench_free_port)
bench_geocache_start geocache --resp "127.0.0.1:$RESP_PORT" --max-memory 2GiB
bench_wait_until 30 "geocache RESP on port $RESP_PORT" bench_pong "$RESP_PORT"

bench_floor_start floor
FLOOR_PORT=${FLOOR_RESP##*:}
bench_wait_until 30 "floor RESP on port $FLOOR_PORT" bench_pong "$FLOOR_PORT"
bench_floor_start floor-store --like-store
STORE_FLOOR_PORT=${FLOOR_RESP##*:}
bench_wait_until 30 "store-like floor RESP on port $STORE_FLOOR_PORT" bench_pong "$STORE_FLOOR_PORT"

declare -A OPS P50
for round in $(seq 1 "$ROUNDS"); do
  for pipeline in $PIPELINES; do
    for target in redis floor storefloor geocache; do
      port=$REDIS_PORT
      [ "$target" = geocache ] && port=$RESP_PORT
      [ "$target" = floor ] && port=$FLOOR_PORT
      [ "$target" = storefloor ] && port=$STORE_FLOOR_PORT
      bench_log "round $round/$ROUNDS: $target, -P $pipeline"
      out="$BENCH_TMP/rb-$target-$pipeline-$round.csv"
      timeout 240 redis-benchmark -h 127.0.0.1 -p "$port" -t get,set -n "$REQUESTS" -r "$KEYSPACE" \
        -d "$VALUE_BYTES" -c "$CLIENTS" -P "$pipeline" --csv >"$out" 2>"$out.err" ||
        bench_die "redis-benchmark against $target failed: $(cat "$out.err" "$out" | tail -5)"
      # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
      for test in SET GET; do
        rps=$(tr -d '"' <"$out" | awk -F, -v t="$test" '$1 == t {print $2}')
        p50=$(tr -d '"' <"$out" | awk -F, -v t="$test" '$1 == t {print $5}')
        [ -n "$rps" ] || bench_die "no $test line in redis-benchmark output: $(cat "$out")"
        OPS[$target,$test,$pipeline]="${OPS[$target,$test,$pipeline]:-} $rps"
        P50[$target,$test,$pipeline]="${P50[$target,$test,$pipeline]:-} $p50"
      done
    done
  done
done

# shellcheck disable=SC2086 # word splitting of the per-round lists is wanted
{
  bench_heading "GET/SET on one node vs redis-server" "bench/local-ops.sh"
  echo
  echo "\`redis-benchmark -t get,set -n $REQUESTS -r $KEYSPACE -d $VALUE_BYTES -c $CLIENTS [-P 16] --csv\`"
  echo "against $(redis-server --version | awk '{print $1, $2, $3}') (\`--save '' --appendonly no\`) and the"
  echo "geocache node's RESP port (release build, \`--max-memory 2GiB\`), alternating, $ROUNDS round(s);"
  echo "medians of the rounds. Client and servers share the same $(nproc) cores. The floor is"
  echo "\`floor-server\` (\`bench/src/bin/floor-server.rs\`): the node's runtime, allocator and moka map"
  echo "(byte-weighed, bounded) answering SET and GET, with none of the node's work. The store-like floor"
  echo "is the same with \`--like-store\`: per-entry expiry and an eviction listener configured (moka then"
  echo "locks each key it inserts), and a SET that reads the value held, under a striped lock, before it inserts."
  echo
  echo "| test | pipeline | redis ops/s | floor ops/s | store-like floor ops/s | geocache ops/s | **geocache / redis** | floor / redis | store-like floor / redis | geocache / store-like floor | redis p50 | geocache p50 |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for pipeline in $PIPELINES; do
    for test in SET GET; do
      r=$(bench_median ${OPS[redis,$test,$pipeline]})
      f=$(bench_median ${OPS[floor,$test,$pipeline]})
      s=$(bench_median ${OPS[storefloor,$test,$pipeline]})
      g=$(bench_median ${OPS[geocache,$test,$pipeline]})
      printf '| %s | %s | %s | %s | %s | %s | **%s** | %s | %s | %s | %s ms | %s ms |\n' "$test" "$pipeline" \
        "$(bench_thousands "$r")" "$(bench_thousands "$f")" "$(bench_thousands "$s")" "$(bench_thousands "$g")" \
        "$(bench_ratio "$g" "$r")" "$(bench_ratio "$f" "$r")" "$(bench_ratio "$s" "$r")" "$(bench_ratio "$g" "$s")" \
        "$(bench_median ${P50[redis,$test,$pipeline]})" "$(bench_median ${P50[geocache,$test,$pipeline]})"
    done
  done
} >"$BENCH_TMP/section.md"
bench_publish "$BENCH_TMP/section.md"
