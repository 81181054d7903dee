#!/usr/bin/env bash
# Makes sure a command exists, installing its Debian package if not:
#
#   scripts/need.sh redis-cli redis-tools
#
# Used by tests (through cargo test) and benchmarks, so a fresh machine
# needs nothing installed by hand.
set -euo pipefail
cmd=$1 package=$2
command -v "$cmd" >/dev/null && exit 0
echo "installing $package (Debian package, for $cmd)" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
command -v "$cmd" >/dev/null || { echo "$package installed but $cmd is still missing" >&2; exit 1; }
