#!/usr/bin/env bash
# HTTP GET on one node against nginx serving static files of the same size.
#
#   bench/http-get.sh [seconds] [connections]       (defaults: 10 s, 64)
#
# Installs wrk and nginx (Debian) if missing, builds the release binary,
# starts one geocache node and one nginx on loopback ports, writes 1,000 keys
# of 100 bytes into geocache and the same 1,000 paths as 100-byte files for
# nginx, then runs the same wrk load (2 threads, keep-alive connections,
# random keys, seeded) against each, alternating, ROUNDS times (default 3).
# Reports requests/s, p50 and p99 per target (medians of the rounds) and
# geocache/nginx. The floor server (`bench/src/bin/floor-server.rs`: axum,
# tokio and moka as the node has them, none of the node's work) runs in the
# same rounds, so the gap to nginx splits into what those crates cost and
# what geocache adds on them.
#
# nginx is configured to be fair, not crippled: one worker per core (the
# node's runtime also uses one thread per core), access_log off, sendfile,
# open_file_cache, and no cap on requests per keep-alive connection (hyper,
# under the node, has none).
#
# BENCH_QUICK=1: 1 round of 2 s.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

SECONDS_RUN="${1:-10}"
CONNECTIONS="${2:-64}"
ROUNDS="${ROUNDS:-3}"
if [ "$BENCH_QUICK" = 1 ]; then SECONDS_RUN=2 ROUNDS=1; fi
KEYS=1000
VALUE_BYTES=100

bench_need wrk wrk
bench_need curl curl
bench_need nginx nginx
bench_build_geocache

# geocache and the floor, each preloaded through one curl process with many
# URLs (keep-alive).
VALUE=$(head -c "$VALUE_BYTES" /dev/zero | tr '\0' 'v')
preload() {
  local name=$1 port=$2
  {
    for i in $(seq 0 $((KEYS - 1))); do
      # "next" resets the options, or curl would send every body so far.
      [ "$i" -gt 0 ] && echo next
      printf 'url = "http://127.0.0.1:%s/v1/kv/bench/key:%s"\n-X PUT\n--data-binary "%s"\n-o /dev/null\n' \
        "$port" "$i" "$VALUE"
    done
  } >"$BENCH_TMP/preload-$name.curl"
  curl -s --max-time 120 --config "$BENCH_TMP/preload-$name.curl"
  for i in 0 $((KEYS - 1)); do
    LEN=$(curl -s --max-time 5 "http://127.0.0.1:${port}/v1/kv/bench/key:$i" | wc -c)
    [ "$LEN" -eq "$VALUE_BYTES" ] || bench_die "$name preload failed: key:$i is $LEN bytes"
  done
}
bench_geocache_start geocache
GC_PORT=${GEOCACHE_HTTP##*:}
preload geocache "$GC_PORT"
bench_floor_start
FLOOR_PORT=${FLOOR_HTTP##*:}
preload floor "$FLOOR_PORT"

# nginx: the same paths as files of the same size, own config and prefix.
NGINX_PORT=$(bench_free_port)
WWW="$BENCH_TMP/www"
mkdir -p "$WWW/v1/kv/bench" "$BENCH_TMP/nginx"
for i in $(seq 0 $((KEYS - 1))); do printf '%s' "$VALUE" >"$WWW/v1/kv/bench/key:$i"; done
cat >"$BENCH_TMP/nginx.conf" <<NGINX
daemon off;
master_process on;
user root;
worker_processes $(nproc);
pid $BENCH_TMP/nginx/nginx.pid;
error_log $BENCH_TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  open_file_cache max=2000;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $BENCH_TMP/nginx/body;
  proxy_temp_path $BENCH_TMP/nginx/proxy;
  fastcgi_temp_path $BENCH_TMP/nginx/fastcgi;
  uwsgi_temp_path $BENCH_TMP/nginx/uwsgi;
  scgi_temp_path $BENCH_TMP/nginx/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WWW;
  }
}
NGINX
nginx -t -q -c "$BENCH_TMP/nginx.conf" -p "$BENCH_TMP/nginx" || bench_die "nginx rejected its config"
bench_start nginx nginx -c "$BENCH_TMP/nginx.conf" -p "$BENCH_TMP/nginx"
NGINX_PID=$BENCH_PID
bench_wait_until 30 "nginx on port $NGINX_PORT" curl -sf "http://127.0.0.1:${NGINX_PORT}/v1/kv/bench/key:0"
kill -0 "$NGINX_PID" 2>/dev/null || bench_die "nginx exited: $(cat "$BENCH_TMP/nginx.log")"
LEN=$(curl -s --max-time 5 "http://127.0.0.1:${NGINX_PORT}/v1/kv/bench/key:$((KEYS - 1))" | wc -c)
[ "$LEN" -eq "$VALUE_BYTES" ] || bench_die "nginx serves $LEN bytes, not $VALUE_BYTES"

cat >"$BENCH_TMP/get.lua" <<LUA
math.randomseed(42)
request = function()
  return wrk.format("GET", "/v1/kv/bench/key:" .. math.random(0, ${KEYS} - 1))
end
LUA

# wrk prints latencies as 542.00us, 1.99ms, 1.02s: to microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000
    else if (u == "m") f = 60000000; else { print "bad latency " v > "/dev/stderr"; exit 1 }
    printf "%.0f\n", n * f }'
}
fmt_us() { awk -v us="$1" 'BEGIN { if (us >= 1000) printf "%.2f ms\n", us / 1000; else printf "%.0f µs\n", us }'; }

declare -A RPS P50 P99 ERR
TIMEOUT=$((SECONDS_RUN + 60))
for round in $(seq 1 "$ROUNDS"); do
  for target in geocache floor nginx; do
    port=$GC_PORT
    [ "$target" = nginx ] && port=$NGINX_PORT
    [ "$target" = floor ] && port=$FLOOR_PORT
    bench_log "round $round/$ROUNDS: $target (wrk -t2 -c$CONNECTIONS -d${SECONDS_RUN}s)"
    out="$BENCH_TMP/wrk-$target-$round.out"
    timeout "$TIMEOUT" wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_RUN}s" --latency -s "$BENCH_TMP/get.lua" \
      "http://127.0.0.1:${port}" >"$out" || bench_die "wrk failed against $target: $(cat "$out")"
    rps=$(awk '/Requests\/sec/ {print $2}' "$out")
    [ -n "$rps" ] || bench_die "no Requests/sec in wrk output: $(cat "$out")"
    RPS[$target]="${RPS[$target]:-} $rps"
    P50[$target]="${P50[$target]:-} $(to_us "$(awk '$1 == "50%" {print $2}' "$out")")"
    P99[$target]="${P99[$target]:-} $(to_us "$(awk '$1 == "99%" {print $2}' "$out")")"
    errors=$(awk '/Non-2xx/ {print $4}' "$out")
    ERR[$target]=$((${ERR[$target]:-0} + ${errors:-0}))
  done
done

# shellcheck disable=SC2086 # word splitting of the per-round lists is wanted
{
  bench_heading "HTTP GET, one node vs nginx" "bench/http-get.sh $SECONDS_RUN $CONNECTIONS"
  echo
  echo "wrk -t2 -c$CONNECTIONS -d${SECONDS_RUN}s, keep-alive, random keys of $KEYS, $VALUE_BYTES-byte values;"
  echo "geocache \`GET /v1/kv\` (release build, warm keys) and nginx $(nginx -v 2>&1 | sed 's/.*nginx\///')"
  echo "(static files of the same size, $(nproc) workers, access_log off) alternating, $ROUNDS round(s);"
  echo "medians of the rounds. wrk, the server and the node share the same $(nproc) cores. The floor is"
  echo "\`floor-server\` (\`bench/src/bin/floor-server.rs\`): axum, tokio, mimalloc and a moka map as the node"
  echo "has them, answering \`GET /v1/kv\` with none of the node's work."
  echo
  echo "| target | requests/s | p50 | p99 | non-2xx |"
  echo "|---|---|---|---|---|"
  for target in geocache floor nginx; do
    label="geocache GET /v1/kv"
    [ "$target" = nginx ] && label="nginx static file"
    [ "$target" = floor ] && label="floor (axum + moka) GET /v1/kv"
    printf '| %s | %s | %s | %s | %s |\n' "$label" "$(bench_thousands "$(bench_median ${RPS[$target]})")" \
      "$(fmt_us "$(bench_median ${P50[$target]})")" "$(fmt_us "$(bench_median ${P99[$target]})")" \
      "${ERR[$target]}"
  done
  printf '| **geocache / nginx** | **%s** | %s | %s | |\n' \
    "$(bench_ratio "$(bench_median ${RPS[geocache]})" "$(bench_median ${RPS[nginx]})")" \
    "$(bench_ratio "$(bench_median ${P50[geocache]})" "$(bench_median ${P50[nginx]})")" \
    "$(bench_ratio "$(bench_median ${P99[geocache]})" "$(bench_median ${P99[nginx]})")"
  printf '| floor / nginx | %s | %s | %s | |\n' \
    "$(bench_ratio "$(bench_median ${RPS[floor]})" "$(bench_median ${RPS[nginx]})")" \
    "$(bench_ratio "$(bench_median ${P50[floor]})" "$(bench_median ${P50[nginx]})")" \
    "$(bench_ratio "$(bench_median ${P99[floor]})" "$(bench_median ${P99[nginx]})")"
  printf '| geocache / floor | %s | %s | %s | |\n' \
    "$(bench_ratio "$(bench_median ${RPS[geocache]})" "$(bench_median ${RPS[floor]})")" \
    "$(bench_ratio "$(bench_median ${P50[geocache]})" "$(bench_median ${P50[floor]})")" \
    "$(bench_ratio "$(bench_median ${P99[geocache]})" "$(bench_median ${P99[floor]})")"
} >"$BENCH_TMP/section.md"
bench_publish "$BENCH_TMP/section.md"
