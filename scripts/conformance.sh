#!/usr/bin/env bash
# Starts `ember all-in-one` on a fresh data directory and a free port, runs the client
# conformance harness (../shared/conformance) against it, and stops it.
#   scripts/conformance.sh [path/to/ember]
# Every check runs; CONFORMANCE_SKIP (comma-separated check names) skips some.
set -euo pipefail
cd "$(dirname "$0")/.."
EMBER="${1:-target/debug/ember}"
SHARED="${SHARED_DIR:-../shared}"
export CONFORMANCE_VENV="${CONFORMANCE_VENV:-$PWD/target/conformance-venv}"
export CONFORMANCE_SKIP="${CONFORMANCE_SKIP:-}"
export CONFORMANCE_TIMEOUT="${CONFORMANCE_TIMEOUT:-60}"

data="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
EMBER_LOG=warn "$EMBER" all-in-one --data-dir "$data" --listen "127.0.0.1:$port" > "$data/ember.log" 2>&1 &
pid=$!
# The NBD export daemon outlives all-in-one on purpose (attached volumes stay reachable
# across a restart); the run's own one goes with its data directory.
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
      for f in "$data"/volumes/*/.ember/nbd/qsd.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
      rm -rf "$data"' EXIT
for _ in $(seq 1 300); do
  python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
    "http://127.0.0.1:$port/healthcheck" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$data/ember.log"; echo "ember all-in-one exited"; exit 1; }
  sleep 0.1
done
status=0
"$SHARED/conformance/run.sh" "http://127.0.0.1:$port" || status=$?
if [ "$status" -ne 0 ]; then
  echo "# ember's log:"; tail -n 50 "$data/ember.log"
fi
exit "$status"
