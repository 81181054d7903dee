#!/usr/bin/env bash
# Does `--max-memory` bound the process? A fresh node per row, filled past
# its budget, and its resident memory once steady against the promise
# RSS <= 1.15 x budget + 32 MiB.
#
#   bench/memory-bound.sh
#
# Rows: budgets 64 MiB and 1 GiB; over HTTP (wrk, bench/lua/fill.lua, 8
# connections, distinct keys) and over RESP (redis-benchmark -P 16, 8
# connections, random keys of a space of 10^9); values of 100 B, 4 KiB,
# 64 KiB, and a mix (1 KiB values, 4 in 10 writes with a 30 s TTL, 1 in 10
# a delete, which writes a tombstone). Each row writes 1.5x the budget's
# worth of entries (as the weigher counts them), so the store evicts;
# the row checks it did. Peak RSS is sampled every 0.2 s during the fill;
# steady RSS once two readings 0.5 s apart differ by under 1 %.
#
# BENCH_QUICK=1: the 64 MiB budget only. Exits 1 if a row breaks the
# promise (after publishing the table).
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

BUDGETS_MIB="${BUDGETS_MIB:-64 1024}"
[ "$BENCH_QUICK" = 1 ] && BUDGETS_MIB="64"
SIZES="${SIZES:-100 4096 65536 mix}"
CONNECTIONS=8

bench_build_geocache
bench_need redis-benchmark redis-tools
bench_need redis-cli redis-tools
bench_need wrk wrk
bench_need curl curl

mib() { awk -v b="$1" 'BEGIN { printf "%.1f\n", b / 1048576 }'; }

# count BUDGET_BYTES SIZE — writes for 1.5x the budget at the weigher's
# ~400 B of overhead per entry.
count() {
  local size=$2
  [ "$size" = mix ] && size=1024
  awk -v b="$1" -v s="$size" 'BEGIN { printf "%d\n", 1.5 * b / (s + 400) + 1 }'
}

# fill FRONT PORT SIZE N — N writes over HTTP (port = HTTP) or RESP.
fill() {
  local front=$1 port=$2 size=$3 n=$4 per
  if [ "$front" = http ]; then
    per=$(((n + CONNECTIONS - 1) / CONNECTIONS))
    local vsize=$size mix=0 deadline=$((SECONDS + 300))
    [ "$size" = mix ] && vsize=1024 mix=1
    # wrk stops sending once each thread has its count (fill.lua), but
    # runs out its duration: wait for the node to have answered them all,
    # then interrupt it (it prints its figures on SIGINT).
    SIZE=$vsize COUNT=$per MIX=$mix wrk -t "$CONNECTIONS" -c "$CONNECTIONS" -d 300s \
      -s bench/lua/fill.lua "http://127.0.0.1:$port" >"$BENCH_TMP/fill.out" 2>&1 &
    local wrk_pid=$!
    while [ "$(http_writes)" -lt $((per * CONNECTIONS)) ]; do
      kill -0 "$wrk_pid" 2>/dev/null || bench_die "wrk ended early: $(tail -3 "$BENCH_TMP/fill.out")"
      [ "$SECONDS" -lt "$deadline" ] || bench_die "the HTTP fill did not finish in 300 s"
      sleep 0.2
    done
    kill -INT "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" 2>/dev/null || true
    if [ "$mix" = 0 ] && grep -q "Non-2xx" "$BENCH_TMP/fill.out"; then
      bench_die "writes refused: $(grep Non-2xx "$BENCH_TMP/fill.out")"
    fi
  else
    local rb=(timeout 300 redis-benchmark -h 127.0.0.1 -p "$port" -c "$CONNECTIONS" -P 16 -r 1000000000 -q)
    if [ "$size" = mix ]; then
      local v
      v=$(head -c 1024 /dev/zero | tr '\0' v)
      "${rb[@]}" -n $((n / 2)) SET "key:__rand_int__" "$v" >"$BENCH_TMP/fill.out" 2>&1
      "${rb[@]}" -n $((n * 4 / 10)) SET "ttl:__rand_int__" "$v" EX 30 >>"$BENCH_TMP/fill.out" 2>&1
      "${rb[@]}" -n $((n / 10)) DEL "key:__rand_int__" >>"$BENCH_TMP/fill.out" 2>&1
    else
      "${rb[@]}" -t set -n "$n" -d "$size" >"$BENCH_TMP/fill.out" 2>&1
    fi || bench_die "redis-benchmark failed: $(tail -3 "$BENCH_TMP/fill.out")"
  fi
}

# http_writes — PUTs and DELETEs the node has answered.
http_writes() {
  curl -sf --max-time 10 "http://$GEOCACHE_HTTP/metrics" |
    awk '/^geocache_ops_total\{kind="(put|delete)"/ { n += $2 } END { printf "%d\n", n }'
}

metric() {
  curl -sf --max-time 10 "http://$GEOCACHE_HTTP/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}

ROWS="$BENCH_TMP/rows.md"
: >"$ROWS"
failed=0
for budget_mib in $BUDGETS_MIB; do
  budget=$((budget_mib * 1048576))
  limit=$(awk -v b="$budget" 'BEGIN { printf "%d\n", 1.15 * b + 32 * 1048576 }')
  for front in http resp; do
    for size in $SIZES; do
      resp_port=$(bench_free_port)
      bench_geocache_start "node-$front-$size" --max-memory "${budget_mib}MiB" --resp "127.0.0.1:$resp_port"
      pid=$GEOCACHE_PID
      bench_wait_until 30 "RESP on port $resp_port" bench_pong "$resp_port"
      port=${GEOCACHE_HTTP##*:}
      [ "$front" = resp ] && port=$resp_port
      n=$(count "$budget" "$size")
      bench_log "$front, budget ${budget_mib} MiB, values $size: $n writes"
      peak=0
      (
        while kill -0 "$pid" 2>/dev/null; do
          bench_rss_bytes "$pid"
          sleep 0.2
        done
      ) >"$BENCH_TMP/rss.samples" 2>/dev/null &
      sampler=$!
      fill "$front" "$port" "$size" "$n"
      kill "$sampler" 2>/dev/null || true
      wait "$sampler" 2>/dev/null || true
      peak=$(sort -n "$BENCH_TMP/rss.samples" | tail -1)
      rss=$(bench_steady_rss "$pid" 20)
      [ "${peak:-0}" -ge "$rss" ] || peak=$rss
      node=$(curl -sf --max-time 10 "http://$GEOCACHE_HTTP/v1/node")
      entries=$(echo "$node" | sed -n 's/.*"entries":\([0-9]*\).*/\1/p')
      weighed=$(echo "$node" | sed -n 's/.*"bytes":\([0-9]*\).*/\1/p')
      evictions=$(metric geocache_cache_evictions_total)
      bench_stop "$pid"
      [ "${evictions%.*}" -gt 0 ] 2>/dev/null ||
        bench_die "$front $size at ${budget_mib} MiB: no eviction, so the budget was not reached"
      verdict=ok
      if [ "$rss" -gt "$limit" ]; then
        verdict="**over**"
        failed=1
      fi
      printf '| %s MiB | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$budget_mib" "$front" "$size" \
        "$(bench_thousands "$n")" "$(bench_thousands "$entries")" "$(mib "$weighed")" "$(mib "$peak")" \
        "$(mib "$rss")" "$(bench_ratio "$rss" "$limit")" "$verdict" >>"$ROWS"
    done
  done
done

{
  bench_heading "Memory bound: RSS against --max-memory" "bench/memory-bound.sh"
  echo
  echo "A fresh node (release build) per row with \`--max-memory\` = budget, filled past it (1.5x the"
  echo "budget's worth of entries by the weigher): HTTP PUTs by wrk ($CONNECTIONS connections, distinct keys)"
  echo "or RESP SETs by redis-benchmark ($CONNECTIONS connections, -P 16). mix = 1 KiB values, 4 in 10 with"
  echo "a 30 s TTL, 1 in 10 writes a delete. Limit = 1.15 x budget + 32 MiB; RSS from /proc once"
  echo "steady, peak sampled every 0.2 s during the fill. Weighed = the store's own count."
  echo
  echo "| budget | front end | value | writes | entries held | weighed MiB | peak RSS MiB | steady RSS MiB | RSS / limit | |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  cat "$ROWS"
} >"$BENCH_TMP/section.md"
bench_publish "$BENCH_TMP/section.md"
[ "$failed" = 0 ] || bench_die "a row's RSS is over 1.15 x budget + 32 MiB"
