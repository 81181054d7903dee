# Shared by the bench/*.sh scripts (sourced, not run). Gives each script:
#
# - strict mode, the repository root as the working directory, a temp dir;
# - `bench_start NAME CMD...`: a background process recorded for cleanup; the
#   EXIT trap stops every one of them (TERM, then KILL after 5 s), also when
#   the script fails half way;
# - `bench_need CMD PACKAGE`: installs a Debian package only when CMD is missing;
# - `bench_free_port`: a TCP port on 127.0.0.1 that nothing listens on;
# - `bench_wait_until SECONDS WHAT CMD...`: retries CMD until it succeeds or
#   the deadline passes (every wait is bounded);
# - `bench_heading TITLE COMMAND` and `bench_publish FILE`: the section
#   header (date, commit, machine) and the append to docs/BENCHMARKS.md;
# - `bench_run_bin BIN TITLE ARGS...`: runs a geocache-bench bin, follows
#   its log and publishes the table it writes.
#
# BENCH_QUICK=1 shrinks every count and duration to prove a script works end
# to end; its tables go to target/bench-quick.md, not docs/BENCHMARKS.md.
# BENCH_OUT=path overrides where tables are appended.
#
# Everything runs on loopback: every address a script binds or connects to is
# in 127.0.0.0/8.

set -euo pipefail
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$BENCH_ROOT"
BENCH_QUICK="${BENCH_QUICK:-0}"
if [ "$BENCH_QUICK" = 1 ]; then
  BENCH_OUT="${BENCH_OUT:-$BENCH_ROOT/target/bench-quick.md}"
else
  BENCH_OUT="${BENCH_OUT:-$BENCH_ROOT/docs/BENCHMARKS.md}"
fi
BENCH_TMP=$(mktemp -d -t geocache-bench.XXXXXX)
BENCH_PIDS=()
BENCH_NAMES=()

bench_log() { echo "[$(basename "$0")] $*" >&2; }
bench_die() { bench_log "error: $*"; exit 1; }

bench_cleanup() {
  local status=$?
  local i pid deadline
  for i in "${!BENCH_PIDS[@]}"; do
    pid=${BENCH_PIDS[$i]}
    kill -TERM "$pid" 2>/dev/null || true
  done
  for i in "${!BENCH_PIDS[@]}"; do
    pid=${BENCH_PIDS[$i]}
    deadline=$((SECONDS + 5))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then
      bench_log "${BENCH_NAMES[$i]} (pid $pid) ignored TERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$BENCH_TMP"
  [ "$status" -eq 0 ] || bench_log "failed (exit $status)"
  exit "$status"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bench_start NAME CMD... — starts CMD in the background (stdout and stderr
# to $BENCH_TMP/NAME.log), records its pid for cleanup, sets BENCH_PID.
bench_start() {
  local name=$1
  shift
  : >"$BENCH_TMP/$name.log"
  "$@" >"$BENCH_TMP/$name.log" 2>&1 &
  BENCH_PID=$!
  BENCH_PIDS+=("$BENCH_PID")
  BENCH_NAMES+=("$name")
}

# bench_follow NAME PID — copies NAME's log to stderr while PID runs.
bench_follow() {
  tail -n +1 -f --pid="$2" "$BENCH_TMP/$1.log" >&2 &
  BENCH_PIDS+=("$!")
  BENCH_NAMES+=("tail of $1")
}

# bench_stop PID — stops one started process now (TERM, KILL after 5 s).
bench_stop() {
  local pid=$1 deadline=$((SECONDS + 5))
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# bench_need CMD PACKAGE — installs the Debian PACKAGE if CMD is missing.
bench_need() {
  "$BENCH_ROOT/scripts/need.sh" "$1" "$2" || bench_die "could not install $2 for $1"
}

# bench_free_port — prints a TCP port on 127.0.0.1 that nothing listens on,
# from a random start in 20000-59999. A race with another program is still
# possible; callers check that their server came up on it.
bench_free_port() {
  local port tries
  bench_need ss iproute2
  for tries in $(seq 1 200); do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    # Any TCP socket (listening or not) on that local port rules it out.
    if [ -z "$(ss -Htan "( sport = :$port )")" ]; then
      echo "$port"
      return 0
    fi
  done
  bench_die "no free TCP port found on 127.0.0.1 after $tries tries"
}

# bench_wait_until SECONDS WHAT CMD... — runs CMD every 50 ms until it
# succeeds; fails the script naming WHAT after SECONDS.
bench_wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || bench_die "timed out after ${limit}s waiting for $what"
    sleep 0.05
  done
}

# bench_geocache_start NAME ARGS... — starts `geocache serve --http
# 127.0.0.1:0 ARGS...`, waits (bounded) for the line naming its HTTP address
# and sets GEOCACHE_PID and GEOCACHE_HTTP (127.0.0.1:PORT).
bench_geocache_start() {
  local name=$1
  shift
  bench_need curl curl
  bench_start "$name" env RUST_LOG=warn ./target/release/geocache serve --http 127.0.0.1:0 "$@"
  GEOCACHE_PID=$BENCH_PID
  local deadline=$((SECONDS + 60))
  GEOCACHE_HTTP=""
  while [ -z "$GEOCACHE_HTTP" ]; do
    kill -0 "$GEOCACHE_PID" 2>/dev/null ||
      bench_die "geocache exited at start: $(tail -5 "$BENCH_TMP/$name.log")"
    [ "$SECONDS" -lt "$deadline" ] || bench_die "geocache did not print its address within 60 s"
    GEOCACHE_HTTP=$(sed -n 's/.*http=\([0-9.:]*\).*/\1/p' "$BENCH_TMP/$name.log" | head -1)
    [ -n "$GEOCACHE_HTTP" ] || sleep 0.05
  done
  bench_wait_until 30 "geocache /healthz" curl -sf "http://$GEOCACHE_HTTP/healthz"
}

# bench_floor_start [NAME [ARGS...]] — starts the floor server
# (`bench/src/bin/floor-server.rs`: tokio, moka and axum as the node has them,
# none of the node's work) on free loopback ports, waits (bounded) for its
# addresses and sets FLOOR_RESP and FLOOR_HTTP (127.0.0.1:PORT). NAME names
# its log (default floor); ARGS go to floor-server (`--like-store`).
bench_floor_start() {
  local name=${1:-floor}
  shift || true
  bench_start "$name" ./target/release/floor-server "$@"
  local pid=$BENCH_PID deadline=$((SECONDS + 30))
  FLOOR_RESP=""
  while [ -z "$FLOOR_RESP" ]; do
    kill -0 "$pid" 2>/dev/null || bench_die "floor-server exited at start: $(tail -5 "$BENCH_TMP/$name.log")"
    [ "$SECONDS" -lt "$deadline" ] || bench_die "floor-server did not print its addresses within 30 s"
    FLOOR_RESP=$(sed -n 's/.*resp=\([0-9.:]*\).*/\1/p' "$BENCH_TMP/$name.log" | head -1)
    [ -n "$FLOOR_RESP" ] || sleep 0.05
  done
  FLOOR_HTTP=$(sed -n 's/.*http=\([0-9.:]*\).*/\1/p' "$BENCH_TMP/$name.log" | head -1)
}

# bench_rss_bytes PID — resident memory of a process.
bench_rss_bytes() {
  awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$1/status"
}

# bench_pong PORT — whether a RESP server on 127.0.0.1:PORT answers PING.
bench_pong() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }

# bench_steady_rss PID — RSS once two readings 0.5 s apart differ by under
# 1 % (or after SECONDS, default 15).
bench_steady_rss() {
  local before after deadline=$((SECONDS + ${2:-15}))
  before=$(bench_rss_bytes "$1")
  while :; do
    sleep 0.5
    after=$(bench_rss_bytes "$1")
    awk -v a="$before" -v b="$after" 'BEGIN { d = b - a; if (d < 0) d = -d; exit !(d < a / 100) }' && break
    [ "$SECONDS" -lt "$deadline" ] || break
    before=$after
  done
  echo "$after"
}

# bench_median N... — the median (mean of the two middle values for an even count).
bench_median() {
  printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# bench_ratio A B — A / B with two decimals.
bench_ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f\n", a / b }'
}

# bench_thousands N — N rounded, with thousands separators (109,850).
bench_thousands() {
  awk -v n="$1" 'BEGIN { s = sprintf("%.0f", n); o = ""
    while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
    print s o }'
}

bench_machine() {
  local mem
  mem=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
  echo "$(nproc) cores $(uname -m), ${mem} RAM"
}

bench_commit() {
  local commit
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  # The tables this suite appends to docs/BENCHMARKS.md do not make the
  # measured code dirty.
  if [ -n "$(git status --porcelain --untracked-files=no -- . ':!docs/BENCHMARKS.md' 2>/dev/null)" ]; then
    commit="$commit+dirty"
  fi
  echo "$commit"
}

# bench_heading TITLE COMMAND — the first lines of a section.
bench_heading() {
  local quick=""
  [ "$BENCH_QUICK" = 1 ] && quick=" (BENCH_QUICK=1: shortened run, figures not meaningful)"
  echo "## $1 — \`$2\`"
  echo
  echo "$(date -u +%F), commit $(bench_commit), $(bench_machine)${quick}."
}

# bench_publish FILE — prints the section in FILE and appends it to BENCH_OUT.
bench_publish() {
  local file=$1
  echo
  cat "$file"
  mkdir -p "$(dirname "$BENCH_OUT")"
  { echo; cat "$file"; } >>"$BENCH_OUT"
  bench_log "table appended to $BENCH_OUT"
}

# bench_build_geocache — the release `geocache` binary and the bench bins,
# always built together: the workspace unifies dependency features per
# build, so building `geocache` alone would give a (slightly) different
# binary from the one the replication benchmarks run.
bench_build_geocache() {
  bench_build -p geocache-node -p geocache-bench --bin geocache --bin replication-lag --bin wan-efficiency --bin store-memory --bin strong-cas --bin floor-server
}

# bench_build ARGS... — `cargo build --release ARGS` (quiet), once per script.
bench_build() {
  bench_log "cargo build --release $*"
  cargo build --release -q "$@"
}

# bench_run_bin BIN TITLE ARGS... — runs ./target/release/BIN ARGS... (a
# geocache-bench bin that writes its markdown table to --out), shows its log
# as it goes, and publishes the table under a heading naming the script and
# the arguments.
bench_run_bin() {
  local bin=$1 title=$2 pid
  shift 2
  bench_start "$bin" "./target/release/$bin" "$@" --out "$BENCH_TMP/table.md"
  pid=$BENCH_PID
  bench_follow "$bin" "$pid"
  wait "$pid" || bench_die "$bin failed (log above)"
  {
    bench_heading "$title" "bench/$bin.sh"
    echo
    echo "\`$bin $*\`."
    cat "$BENCH_TMP/table.md"
  } >"$BENCH_TMP/section.md"
  bench_publish "$BENCH_TMP/section.md"
}
