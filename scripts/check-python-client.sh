#!/usr/bin/env bash
# Runs the earlier users' Python client, geo-cache-client 0.1.2 from PyPI,
# against `geocache demo`: set/get with cas, closest server, databaseHost,
# three threads counting to 100 with cas retries, a cas mismatch; then the
# earlier system's own examples (../shared/earlier-client/), unchanged, at
# the client's defaults (localhost:5000): concurrency.py must end with
# `Final accumulator value: 250`, and replication.py, with XDCR_IP set to
# the other montreal node (the example reads the replica right after its
# write, so only a nearby node can have it that soon), with
# `Item was replicated successfully!`.
#
#   scripts/check-python-client.sh
#
# Not part of `cargo test` (it needs PyPI); the raw-HTTP tests in
# node/tests/legacy.rs send the same bytes that client sends.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=$(scripts/python-client.sh)
cargo build --release --bin geocache -q
./target/release/geocache demo >/dev/null 2>&1 &
DEMO=$!
trap 'kill "$DEMO" 2>/dev/null || true' EXIT
# Until every demo node sees the five others.
for _ in $(seq 1 600); do
  seen=0
  for ip in 2 3 4 5 6 7; do
    n=$(curl -sf "http://127.0.0.$ip:7070/v1/cluster" | grep -o '"state":"up"' | wc -l || true)
    [ "$n" -eq 5 ] && seen=$((seen + 1))
  done
  [ "$seen" -eq 6 ] && break
  sleep 0.1
done
"$PYTHON" scripts/python_client_check.py
EARLIER=../shared/earlier-client
out=$("$PYTHON" "$EARLIER/concurrency.py")
echo "$out" | tail -2
echo "$out" | grep -qx 'Final accumulator value: 250' || { echo "concurrency.py did not count to 250" >&2; exit 1; }
out=$(XDCR_IP=127.0.0.3 "$PYTHON" "$EARLIER/replication.py")
echo "$out" | tail -2
echo "$out" | grep -qx 'Item was replicated successfully!' || { echo "replication.py: no replica" >&2; exit 1; }
echo "the earlier examples ran unchanged against the demo"
