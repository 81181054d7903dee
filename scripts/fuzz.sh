#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a while and sums up:
#
#   scripts/fuzz.sh [seconds] [target...]
#
# seconds: per target, 60 by default; targets: all of them by default.
# Each target grows its corpus in fuzz/corpus/<target>/ (the committed
# seeds are named seed-*; what libFuzzer adds is git-ignored). Prints one
# line per target with its executions and whether it crashed, and exits 1
# if any did; the crashing input is then in fuzz/artifacts/<target>/, and
# `cargo +nightly fuzz run <target> <that file>` replays it. Exits 2 when
# there is no nightly toolchain, which cargo-fuzz needs for its sanitizer
# and coverage flags.
set -euo pipefail

seconds=${1:-60}
shift || true
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [seconds] [target...]  (seconds per target, default 60)" >&2
    exit 64
fi
cd "$(dirname "$0")/../fuzz"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain; cargo-fuzz needs one. Install it with:" >&2
    echo "    rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

logs=target/fuzz-logs
mkdir -p "$logs"
# One build up front, so that a compile error is not reported as a crash.
build() { cargo +nightly fuzz build "$@" >>"$logs/build.log" 2>&1; }
: >"$logs/build.log"
built=1
if (($# > 0)); then
    for target in "${targets[@]}"; do build "$target" || { built=0; break; }; done
else
    build || built=0
fi
if ((!built)); then
    cat "$logs/build.log" >&2
    echo "fuzz.sh: the fuzz targets do not build" >&2
    exit 1
fi

crashed=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="$logs/$target.log"
    # -timeout: an input that runs this long counts as a hang, a crash here.
    if cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status=CRASHED
        crashed=1
    fi
    executions=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    if [[ -z $executions ]]; then
        # No final stats (a crash): the last progress line, `#N ...`.
        executions=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    fi
    line=$(printf '%-14s %-8s %12s executions' "$target" "$status" "${executions:-?}")
    if [[ $status == CRASHED ]]; then
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        line+="  input: ${artifact:-none written} (log: fuzz/$log)"
    fi
    echo "$line"
done
exit "$crashed"
