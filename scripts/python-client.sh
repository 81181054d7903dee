#!/usr/bin/env bash
# Prints the path of a Python with the earlier users' client,
# geo-cache-client 0.1.2 from PyPI, in a virtualenv made on first use:
#
#   "$(scripts/python-client.sh)" ../shared/earlier-client/concurrency.py
set -euo pipefail
VENV="${GEOCACHE_PYTHON_VENV:-${TMPDIR:-/tmp}/geocache-python-client}"
if ! [ -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import geo_cache_client' 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q geo-cache-client==0.1.2 requests >&2
fi
echo "$VENV/bin/python"
