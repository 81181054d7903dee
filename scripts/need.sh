#!/usr/bin/env bash
# Makes sure a command exists, installing its Debian package if not:
#
#   scripts/need.sh redis-cli redis-tools
#
# Used by tests (through cargo test) and benchmarks, so a fresh machine
# needs nothing installed by hand. Tests run in parallel and several may
# need a package at once: installs take one lock in turn (two apt-gets at
# once made one fail on dpkg's lock on a fresh machine), and each looks
# again for the command once it holds the lock.
set -euo pipefail
cmd=$1 package=$2
command -v "$cmd" >/dev/null && exit 0
exec 9>"${TMPDIR:-/tmp}/geocache-need.lock"
flock -w 600 9 || { echo "waited 600 s for another install to finish" >&2; exit 1; }
command -v "$cmd" >/dev/null && exit 0
echo "installing $package (Debian package, for $cmd)" >&2
apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$package" >/dev/null
command -v "$cmd" >/dev/null || { echo "$package installed but $cmd is still missing" >&2; exit 1; }
