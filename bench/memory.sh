#!/usr/bin/env bash
# Resident memory per entry: a geocache node against redis-server holding
# the same N distinct keys, loaded the same way.
#
#   bench/memory.sh
#
# For each value size (100 B and 1 KiB): start a fresh redis-server and a
# fresh geocache node (RESP port, --max-memory high enough that nothing is
# evicted), read their RSS, push N=1,000,000 `SET key:<i> <value>` commands
# to each with `redis-cli --pipe`, check that each holds exactly N entries
# (redis DBSIZE, geocache `GET /v1/node` .entries), read the RSS again once it
# is steady. Reports bytes per entry ((after - before) / N), the ratio
# geocache/redis, and the data bytes per entry (key + value) as the floor.
# The floor server (`bench/src/bin/floor-server.rs`: a bare moka map keyed
# and valued by boxed bytes, byte-weighed, in the node's runtime and
# allocator) is loaded the same way in the same run: what moka itself
# costs per entry, below which no store on moka goes.
#
# Needs the RESP port (`geocache serve --resp`); fails saying so without it.
# BENCH_QUICK=1: N=20,000.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

ENTRIES=1000000
[ "$BENCH_QUICK" = 1 ] && ENTRIES=20000
SIZES="${SIZES:-100 1024}"
MAX_MEMORY=16GiB

bench_build_geocache
if ! ./target/release/geocache serve --help | grep -q -- '--resp'; then
  bench_die "this geocache build has no \`serve --resp\` flag: the RESP port is not merged yet, so there is no way to load it like redis"
fi
bench_need redis-server redis-server
bench_need redis-cli redis-tools
bench_need curl curl


# commands SIZE — N SET commands in RESP, keys key:0 .. key:N-1.
commands() {
  awk -v n="$ENTRIES" -v size="$1" 'BEGIN {
    v = sprintf("%" size "s", ""); gsub(/ /, "v", v)
    for (i = 0; i < n; i++) {
      k = "key:" i
      printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, size, v
    }
  }'
}

# key + value bytes over all entries, divided by N.
data_per_entry() {
  awk -v n="$ENTRIES" -v size="$1" 'BEGIN { for (i = 0; i < n; i++) t += length("key:" i) + size; printf "%.1f\n", t / n }'
}

# load PORT SIZE — pushes the commands; fails unless every reply was OK.
load() {
  local out="$BENCH_TMP/pipe.out"
  commands "$2" | timeout 300 redis-cli -h 127.0.0.1 -p "$1" --pipe >"$out" 2>&1 ||
    bench_die "redis-cli --pipe to port $1 failed: $(tail -3 "$out")"
  grep -q "errors: 0, replies: $ENTRIES" "$out" || bench_die "redis-cli --pipe to port $1: $(tail -3 "$out")"
}

dbsize_of() { redis-cli -h 127.0.0.1 -p "$1" dbsize; }
geocache_entries() { curl -sf --max-time 30 "http://$GEOCACHE_HTTP/v1/node" | sed -n 's/.*"entries":\([0-9]*\).*/\1/p'; }

# measure LABEL PID PORT COUNT — waits for the RESP server PID on PORT, reads
# its steady RSS into RSS_BEFORE, loads it, checks that `COUNT PORT` says
# every entry is held (nothing evicted), reads RSS_AFTER and stops it.
measure() {
  local label=$1 pid=$2 port=$3 count
  bench_wait_until 30 "$label RESP on port $port" bench_pong "$port"
  RSS_BEFORE=$(bench_steady_rss "$pid")
  bench_log "$label: loading $ENTRIES x $size B"
  load "$port" "$size"
  count=$("$4" "$port")
  [ "$count" = "$ENTRIES" ] ||
    bench_die "$label holds ${count:-?} entries, not $ENTRIES (evicted? raise MAX_MEMORY=$MAX_MEMORY)"
  RSS_AFTER=$(bench_steady_rss "$pid")
  bench_stop "$pid"
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB\n", b / 1048576 }'; }

ROWS="$BENCH_TMP/rows.md"
: >"$ROWS"
for size in $SIZES; do
  floor=$(data_per_entry "$size")

  port=$(bench_free_port)
  bench_start "redis-$size" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --daemonize no --logfile ''
  measure redis-server "$BENCH_PID" "$port" dbsize_of
  r0=$RSS_BEFORE r1=$RSS_AFTER

  port=$(bench_free_port)
  bench_geocache_start "geocache-$size" --resp "127.0.0.1:$port" --max-memory "$MAX_MEMORY"
  measure geocache "$GEOCACHE_PID" "$port" geocache_entries
  g0=$RSS_BEFORE g1=$RSS_AFTER

  bench_floor_start
  measure floor "$BENCH_PID" "${FLOOR_RESP##*:}" dbsize_of
  f0=$RSS_BEFORE f1=$RSS_AFTER

  rper=$(awk -v a="$r0" -v b="$r1" -v n="$ENTRIES" 'BEGIN { printf "%.1f\n", (b - a) / n }')
  gper=$(awk -v a="$g0" -v b="$g1" -v n="$ENTRIES" 'BEGIN { printf "%.1f\n", (b - a) / n }')
  fper=$(awk -v a="$f0" -v b="$f1" -v n="$ENTRIES" 'BEGIN { printf "%.1f\n", (b - a) / n }')
  {
    printf '| %s B | redis-server | %s | %s | %s | %s | %s |\n' "$size" "$(mib "$r0")" "$(mib "$r1")" \
      "$rper" "$floor" "$(bench_ratio "$rper" "$floor")"
    printf '| %s B | geocache | %s | %s | %s | %s | %s |\n' "$size" "$(mib "$g0")" "$(mib "$g1")" \
      "$gper" "$floor" "$(bench_ratio "$gper" "$floor")"
    printf '| %s B | moka floor | %s | %s | %s | %s | %s |\n' "$size" "$(mib "$f0")" "$(mib "$f1")" \
      "$fper" "$floor" "$(bench_ratio "$fper" "$floor")"
    printf '| %s B | **geocache / redis** | | | **%s** | | |\n' "$size" "$(bench_ratio "$gper" "$rper")"
    printf '| %s B | moka floor / redis | | | %s | | |\n' "$size" "$(bench_ratio "$fper" "$rper")"
    printf '| %s B | geocache / moka floor | | | %s | | |\n' "$size" "$(bench_ratio "$gper" "$fper")"
  } >>"$ROWS"
done

{
  bench_heading "Memory per entry vs redis-server" "bench/memory.sh"
  echo
  echo "$ENTRIES distinct keys (\`key:0\` ..), each set once by \`redis-cli --pipe\` (the same RESP"
  echo "stream to both) into a fresh $(redis-server --version | awk '{print $1, $2, $3}') (\`--save ''"
  echo "--appendonly no\`) and a fresh geocache node (release build, \`--max-memory $MAX_MEMORY\`, nothing"
  echo "evicted: entry counts checked). Bytes per entry = (RSS after - RSS before) / entries, RSS from"
  echo "/proc once steady. Data = key + value bytes per entry, the floor. The moka floor is"
  echo "\`floor-server\` (\`bench/src/bin/floor-server.rs\`) loaded by the same stream: a bare"
  echo "\`moka::sync::Cache<Box<[u8]>, Arc<[u8]>>\` (byte weigher, \`insert\`) on mimalloc, no metadata."
  echo
  echo "| value | target | RSS before | RSS after | bytes / entry | data / entry | bytes / data |"
  echo "|---|---|---|---|---|---|---|"
  cat "$ROWS"
} >"$BENCH_TMP/section.md"
bench_publish "$BENCH_TMP/section.md"
