#!/usr/bin/env bash
# CPU a node spends per remote write it applies: two real nodes in two
# regions over QUIC, load into one, the other's CPU seconds (from /proc)
# divided by the writes it applied.
#
#   bench/remote-apply.sh
#
# Node a (region a, RESP on) and node b (region b) on 127.0.0.2 and
# 127.0.0.3, direct gossip (no link emulator, so nothing but the node
# itself is counted), certificates from `geocache certs`. Once b sees a,
# redis-benchmark -t set -n N -r 10^9 -d 100 -P 16 -c 8 writes into a; when
# b holds as many entries as a, b's CPU time (utime + stime) over the run
# is divided by the entries it gained (waiting at most until its count
# stops moving: writes lost between the nodes are shown, not waited for). Rounds alternate with
# REFERENCE_BIN (another build of `geocache`, e.g. the last release) when
# it is set, so two builds are compared in the same run.
#
# Node b runs as a full node, as a sidecar alone in its region
# (`--sidecar`), and as one of four sidecars beside a full node f of its
# region (KINDS="full sidecar sidecars" by default), alternating in the
# same run. A sidecar holds none of a's keys, so it applies each write
# without storing it, and its count is the `applied` counter of
# /v1/cluster. Alone, b is its region's relay and gets every delta whole;
# beside f (the relay), f sends it each write with its body left out
# (gossip/src/interest.rs). In "sidecars" the figure is the median of the
# four sidecars' CPU per write; those four run with --backlog-bytes-max
# $SIDECAR_BACKLOG (8MiB), as docs/OPERATIONS.md advises for sidecars.
#
# BENCH_QUICK=1: N=20,000, one round.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

WRITES=400000
ROUNDS="${ROUNDS:-3}"
if [ "$BENCH_QUICK" = 1 ]; then WRITES=20000 ROUNDS=1; fi
REFERENCE_BIN="${REFERENCE_BIN:-}"
KINDS="${KINDS:-full sidecar sidecars}"
SIDECAR_BACKLOG="${SIDECAR_BACKLOG:-8MiB}"

bench_build_geocache
bench_need redis-benchmark redis-tools
bench_need redis-cli redis-tools
bench_need curl curl

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
entries() { curl -sf --max-time 10 "http://$1/v1/node" | sed -n 's/.*"entries":\([0-9]*\).*/\1/p'; }
# sees_all HTTP — a sidecar of "sidecars" sees node a, and node f as a full node.
sees_all() { sees "$1" a && [ "$(curl -sf --max-time 10 "http://$1/v1/cluster" | grep -o '"kind":"full"' | wc -l)" -ge 2 ]; }
sees() { curl -sf --max-time 10 "http://$1/v1/cluster" | grep -q "\"region\":\"$2\""; }
http_of() { sed -n 's/.*http=\([0-9.:]*\).*/\1/p' "$BENCH_TMP/$1.log" | head -1; }
has_address() { [ -n "$(http_of "$1")" ]; }
applied() { curl -sf --max-time 10 "http://$1/v1/cluster" | sed -n 's/.*"applied":\([0-9]*\).*/\1/p'; }
# count KIND HTTP — what node b has taken of a's writes.
count() { if [ "$1" = full ]; then entries "$2"; else applied "$2"; fi; }
caught_up() { [ "$(entries "$1")" = "$(count "$3" "$2")" ]; }

CERTS="$BENCH_TMP/certs"
./target/release/geocache certs init --out "$CERTS/ca" >/dev/null
for n in a b f c d e; do
  ./target/release/geocache certs issue --ca "$CERTS/ca" --node "node-$n" --out "$CERTS/$n" >/dev/null
done
HZ=$(getconf CLK_TCK)

# round BIN LABEL KIND — one measurement; appends "LABEL us_per_write applied cpu_s missing" to rounds.
round() {
  local bin=$1 label=$2 kind=$3 gport_a gport_b resp a b http_a http_b t1 e1 sidecar=() others=() n i
  [ "$kind" = sidecar ] && sidecar=(--sidecar)
  # As docs/OPERATIONS.md advises for sidecars: a small backlog.
  [ "$kind" = sidecars ] && sidecar=(--sidecar --backlog-bytes-max "$SIDECAR_BACKLOG")
  gport_a=$(bench_free_port)
  gport_b=$(bench_free_port)
  resp=$(bench_free_port)
  bench_start "a-$label" env RUST_LOG=warn "$bin" serve --http 127.0.0.2:0 --region a --node-id 1 \
    --gossip "127.0.0.2:$gport_a" --seeds "127.0.0.3:$gport_b" --resp "127.0.0.2:$resp" --max-memory 2GiB \
    --ca "$CERTS/a/ca.crt" --cert "$CERTS/a/node.crt" --key "$CERTS/a/node.key"
  a=$BENCH_PID
  bench_start "b-$label" env RUST_LOG=warn "$bin" serve --http 127.0.0.3:0 --region b --node-id 2 \
    --gossip "127.0.0.3:$gport_b" --seeds "127.0.0.2:$gport_a" --max-memory 2GiB "${sidecar[@]}" \
    --ca "$CERTS/b/ca.crt" --cert "$CERTS/b/node.crt" --key "$CERTS/b/node.key"
  b=$BENCH_PID
  if [ "$kind" = sidecars ]; then
    # f: the region's full node (its relay); c, d, e: three more sidecars.
    i=4
    for n in f c d e; do
      bench_start "$n-$label" env RUST_LOG=warn "$bin" serve --http "127.0.0.$i:0" --region b --node-id "$i" \
        --gossip "127.0.0.$i:$(bench_free_port)" --seeds "127.0.0.3:$gport_b" --max-memory 2GiB \
        $([ "$n" = f ] || echo --sidecar --backlog-bytes-max "$SIDECAR_BACKLOG") \
        --ca "$CERTS/$n/ca.crt" --cert "$CERTS/$n/node.crt" --key "$CERTS/$n/node.key"
      others+=("$BENCH_PID")
      i=$((i + 1))
    done
    for n in f c d e; do bench_wait_until 60 "node $n's address" has_address "$n-$label"; done
  fi
  bench_wait_until 60 "node a's address" has_address "a-$label"
  bench_wait_until 60 "node b's address" has_address "b-$label"
  http_a=$(http_of "a-$label")
  http_b=$(http_of "b-$label")
  bench_wait_until 60 "node b to see node a" sees "$http_b" a
  bench_wait_until 60 "RESP on node a" redis-cli -h 127.0.0.2 -p "$resp" ping
  local sidecars=("$b") https=("$http_b") t0s=() e0s=() h
  if [ "$kind" = sidecars ]; then
    sidecars+=("${others[@]:1}")
    for n in c d e; do https+=("$(http_of "$n-$label")"); done
    for h in "${https[@]}"; do bench_wait_until 60 "each sidecar to see nodes a and f" sees_all "$h"; done
  fi
  for i in "${!sidecars[@]}"; do
    e0s+=("$(count "$kind" "${https[$i]}")")
    t0s+=("$(ticks "${sidecars[$i]}")")
  done
  redis-benchmark -h 127.0.0.2 -p "$resp" -t set -n "$WRITES" -r 1000000000 -d 100 -P 16 -c 8 -q \
    >"$BENCH_TMP/load.out" 2>&1 || bench_die "redis-benchmark failed: $(tail -3 "$BENCH_TMP/load.out")"
  # Until b holds what a holds, or its count has not moved for 2 s (a
  # write lost on the way is issue 12's, counted in the table, not here).
  local last=-1 same=0 deadline=$((SECONDS + 120))
  while ! caught_up "$http_a" "$http_b" "$kind" && [ "$same" -lt 4 ] && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.5
    e1=$(count "$kind" "$http_b")
    if [ "$e1" = "$last" ]; then same=$((same + 1)); else same=0; fi
    last=$e1
  done
  local per=() pid
  for i in "${!sidecars[@]}"; do
    t1=$(ticks "${sidecars[$i]}")
    e1=$(count "$kind" "${https[$i]}")
    per+=("$(awk -v t="$((t1 - ${t0s[$i]}))" -v hz="$HZ" -v n="$((e1 - ${e0s[$i]}))" \
      'BEGIN { printf "%.2f", t / hz / n * 1e6 }')")
  done
  e1=$(count "$kind" "$http_b")
  local missing=$(($(entries "$http_a") - e1))
  for pid in "$a" "$b" "${others[@]}"; do bench_stop "$pid"; done
  [ "$kind" = sidecars ] && bench_log "$label: µs of CPU per write at each sidecar: ${per[*]}"
  awk -v l="$label" -v us="$(bench_median "${per[@]}")" -v n="$((e1 - ${e0s[0]}))" -v m="$missing" \
    'BEGIN { printf "%s %.2f %d %.2f %d\n", l, us, n, us * n / 1e6, m }' >>"$BENCH_TMP/rounds"
}

: >"$BENCH_TMP/rounds"
for r in $(seq 1 "$ROUNDS"); do
  for kind in $KINDS; do
    round ./target/release/geocache "geocache-$kind" "$kind"
    [ -n "$REFERENCE_BIN" ] && round "$REFERENCE_BIN" "reference-$kind" "$kind"
  done
  bench_log "round $r: $(tail -4 "$BENCH_TMP/rounds" | tr '\n' ';')"
done

row() {
  local label=$1 us
  grep -q "^$label " "$BENCH_TMP/rounds" || return 0
  us=$(bench_median $(awk -v l="$label" '$1 == l { print $2 }' "$BENCH_TMP/rounds"))
  applied=$(bench_median $(awk -v l="$label" '$1 == l { print $3 }' "$BENCH_TMP/rounds"))
  missing=$(bench_median $(awk -v l="$label" '$1 == l { print $5 }' "$BENCH_TMP/rounds"))
  echo "| $2 | $(bench_thousands "$applied") | $(bench_thousands "$missing") | **$us** |"
}
{
  bench_heading "CPU per applied remote write" "bench/remote-apply.sh"
  echo
  echo "Release nodes in two regions over QUIC on loopback (no emulator); redis-benchmark"
  echo "\`-t set -n $WRITES -r 1000000000 -d 100 -P 16 -c 8\` into node a; node b's CPU time"
  echo "(utime + stime, /proc) from before the load until it holds as many entries as a, divided by"
  echo "the entries it gained (as a sidecar, the writes it applied without storing them). Medians of"
  echo "$ROUNDS round(s), node b's kinds alternating. In \"sidecars\", region b is a full node f (its"
  echo "relay) and four sidecars b, c, d, e, and the figure is the median of the four (f sends them"
  echo "each write with its body left out, \`gossip/src/interest.rs\`; the four run with"
  echo "\`--backlog-bytes-max $SIDECAR_BACKLOG\`)."
  echo
  echo "| build | writes applied | writes a holds that b never got | µs of CPU per applied write |"
  echo "|---|---|---|---|"
  for kind in $KINDS; do
    row "geocache-$kind" "this commit, b: $kind"
    [ -n "$REFERENCE_BIN" ] && row "reference-$kind" "reference (\`$REFERENCE_BIN\`), b a $kind node"
  done
} >"$BENCH_TMP/section.md"
bench_publish "$BENCH_TMP/section.md"
